//! The compiled runtime form of one configuration: router, routes, upstream groups and
//! listener settings. Built off the request path, swapped atomically by reload, and read
//! by every request through one `ArcSwap` load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;

use crate::auth::gate::{Authenticators, Gate};
use crate::auth::oidc::credentials::UpstreamToken;
use crate::config::model::{self, Action, Config, Limits, RetryPolicy, RouteTimeouts};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{Metrics, ResilienceMetrics, RouteMetrics, TargetMetrics};
use crate::router::{Router, RouterError};
use crate::upstream::balancer::Balancer;
use crate::upstream::health::{ActiveThresholds, GroupHealth, TargetHealth};
use crate::upstream::limit::GroupLimiter;
use crate::upstream::pool::ClientProfile;
use crate::upstream::retry::{Backoff, BudgetSettings, RetryBudget};
use crate::upstream::sticky::StickySessions;
use crate::upstream::tls::TlsClient;

/// Why a validated config could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("routes: {0}")]
    Router(#[from] RouterError),
    #[error("listeners[{index}].tls: {source}")]
    Tls {
        index: usize,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("rate_limiting: {0}")]
    RateLimit(#[from] crate::ratelimit::RateLimitError),
    #[error("{0}")]
    Access(#[from] crate::auth::gate::GateError),
    #[error("geo: {0}")]
    Geo(#[from] crate::geo::GeoDbError),
    #[error("history: {0}")]
    History(String),
    #[error("ai: {0}")]
    Ai(String),
    #[error("upstreams.{group}.tls: {source}")]
    UpstreamTls {
        group: String,
        #[source]
        source: crate::upstream::tls::UpstreamTlsError,
    },
    #[error("queues.{name}: {source}")]
    Queue {
        name: String,
        #[source]
        source: crate::queue::QueueError,
    },
}

/// Everything the request path reads, for one configuration generation.
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub routes: Vec<CompiledRoute>,
    pub upstreams: Vec<Arc<UpstreamGroup>>,
    pub listeners: Vec<ListenerSettings>,
    /// Metrics of requests that matched no route (`route=""`).
    pub unmatched: RouteMetrics,
    /// `metrics.enabled`: when off, requests record nothing.
    pub metrics_on: bool,
    /// Present when the access log is on.
    pub access_log: Option<Arc<AccessLog>>,
    pub resilience: ResilienceMetrics,
    /// Consumers and authentication methods.
    pub auth: Authenticators,
    /// The HTTP cache, when a route caches.
    pub cache: Option<Arc<crate::cache::service::CacheService>>,
    /// The job queues (`queues`), opened when the gateway runs (not for a config check).
    pub queues: Vec<Arc<crate::queue::Queue>>,
    /// Open WebSocket tunnels (kept across reloads).
    pub tunnels: Arc<crate::tunnel::Tunnels>,
    /// Client locations, when the config has a `geo` section.
    pub geo: Option<Arc<crate::geo::Geo>>,
    /// Distributed tracing, when the config has a `tracing` section (and the gateway runs).
    pub tracer: Option<Arc<crate::observe::trace::Tracer>>,
    /// Access-log sampling at high rates (`access_log.sample_success`).
    pub log_sampling: Option<Arc<crate::observe::access_log::LogSampling>>,
    /// The traffic history (`history`), when the gateway runs.
    pub history: Option<Arc<crate::observe::history::History>>,
}

pub struct CompiledRoute {
    pub name: Arc<str>,
    /// The route's number in the traffic history.
    pub history: crate::observe::history::Number,
    pub action: Action,
    /// Upstream groups of a proxy route (indices into `Snapshot::upstreams`) with their
    /// split weights; one entry for a plain route.
    pub split: Vec<(usize, u32)>,
    /// Sum of the split weights.
    pub split_total: u32,
    pub split_header: Option<http::HeaderName>,
    /// Shadow group and the share of requests mirrored to it (0..=1).
    pub mirror: Option<(usize, f64)>,
    pub websocket: bool,
    /// The limits of the route's WebSocket tunnels, on a route that forwards upgrades.
    pub tunnel: Option<crate::config::model::TunnelSettings>,
    pub metrics: RouteMetrics,
    pub timeouts: RouteTimeouts,
    pub retry: Option<RouteRetry>,
    pub max_body_bytes: Option<u64>,
    /// Rate-limit policies applied, in order.
    pub rate_limits: Vec<Arc<crate::ratelimit::Policy>>,
    /// Their `RateLimit-Policy` field, for answers given before they are checked.
    pub rate_limit_policy: Option<http::HeaderValue>,
    /// The access phase (CORS, IP rules, auth, validation), when the route has one.
    pub gate: Option<Gate>,
    /// Request headers removed before forwarding: those the gateway sets from a verified
    /// credential (claims, consumer), so a client cannot pose as one.
    pub reserved_headers: Vec<http::HeaderName>,
    /// Caching rules, when the route caches.
    pub cache: Option<crate::cache::service::RouteCacheRules>,
    /// Header transforms of the upstream request (`request_headers`).
    pub request_edits: Option<crate::transform::Edits>,
    /// Header transforms of the response to the client (`response_headers`).
    pub response_edits: Option<crate::transform::Edits>,
    /// The queue the route stores requests in, or whose jobs it answers for.
    pub queue: Option<QueueRoute>,
    /// Where a `publish` route writes requests (absent in a config check).
    pub publish: Option<crate::queue::publish::Publisher>,
    /// What an `ai` route answers from (docs/ai-gateway.md).
    pub ai: Option<Arc<crate::ai::Service>>,
    /// Some part of the route reads the client's location (a condition, `geo_upstreams`,
    /// the `geo.headers`, a placeholder, a rate-limit or cache key, the access log): it is
    /// looked up once per request, after routing if routing did not already.
    pub uses_geo: bool,
    /// Groups for clients of given locations (indices into `Snapshot::upstreams`), tried in
    /// order before `split`.
    pub geo_upstreams: Vec<(crate::geo::Condition, usize)>,
    /// Requests by client country (`geo.metrics_countries`), when configured.
    pub geo_counts: Option<crate::geo::CountryCounts>,
}

/// A route's queue, compiled.
pub struct QueueRoute {
    pub queue: Arc<crate::queue::Queue>,
    /// Status URLs are `status_path/ID` (no trailing slash).
    pub status_path: Arc<str>,
    pub role: crate::config::model::QueueRole,
}

/// A route's retry policy with its budget (shared by every worker).
pub struct RouteRetry {
    pub policy: RetryPolicy,
    pub budget: RetryBudget,
    pub backoff: Backoff,
}

pub struct UpstreamGroup {
    pub name: Arc<str>,
    pub targets: Vec<UpstreamTarget>,
    pub balancer: Balancer,
    pub client: ClientProfile,
    pub request_timeout: Duration,
    /// Health, ejection, circuit and draining state of the targets; survives reloads.
    pub health: Arc<GroupHealth>,
    pub limiter: Option<GroupLimiter>,
    pub sticky: Option<StickySessions>,
    /// Preference for targets near this instance, when the group has `locality`.
    pub locality: Option<crate::upstream::locality::Locality>,
    /// The group's own token (`client_credentials`), sent as `Authorization: Bearer`.
    pub credentials: Option<Arc<UpstreamToken>>,
}

pub struct UpstreamTarget {
    pub address: SocketAddr,
    /// `ip:port`, ready for the upstream request URI.
    pub authority: Authority,
    /// Same text, for logs.
    pub label: Arc<str>,
    pub metrics: TargetMetrics,
    /// The target's number in the traffic history.
    pub history: crate::observe::history::Number,
}

pub struct ListenerSettings {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub h2c: model::H2cMode,
    /// Which server speaks HTTP/2 to clients (`h2_server`).
    pub h2_server: model::H2Server,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    /// A client's `traceparent` is continued (`trust_trace_context`).
    pub trust_trace_context: bool,
}

impl Snapshot {
    /// Compiles a validated config. Loads TLS certificates, so it does file I/O: call it off
    /// the request path.
    ///
    /// `access_log` is the log to use when the config turns it on (the caller keeps one open
    /// file across reloads).
    pub fn build(
        config: Config,
        metrics: &Metrics,
        access_log: Option<Arc<AccessLog>>,
        kept: &Kept,
    ) -> Result<Snapshot, SnapshotError> {
        let router = Router::build(&config.routes)?;
        let metrics_on = config.metrics_enabled;
        let geo = match &config.geo {
            Some(g) => Some(Arc::new(crate::geo::Geo::build(g)?)),
            None => None,
        };
        let states = &kept.targets;
        let policies = kept.rate_limits.compile(&config)?;
        let auth = Authenticators::build(&config.access, &kept.background)?;
        // Targets given by name count with the addresses they last resolved to.
        let targets: Vec<Vec<model::Target>> = config
            .upstreams
            .iter()
            .map(|u| kept.dns.expand(&u.targets, &u.dns_targets))
            .collect();
        let upstreams = config
            .upstreams
            .iter()
            .zip(&targets)
            .map(|(u, t)| {
                let mut group = upstream_group(u, t, metrics, states)?;
                group.locality = u.locality.map(|l| {
                    let picks = metrics.locality_picks(&u.name);
                    crate::upstream::locality::Locality::new(&config.locality, t, l, picks)
                });
                Ok(Arc::new(group))
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        states.keep_only(&config.upstreams, &targets);
        let index_of = |name: &str| upstreams.iter().position(|u| *u.name == *name);
        let queues = match &kept.queues {
            Some(open) => config
                .queues
                .iter()
                .map(|q| {
                    let runtime = match q.backend {
                        crate::config::model::QueueBackend::Redis { .. }
                        | crate::config::model::QueueBackend::Nats { .. }
                        | crate::config::model::QueueBackend::RabbitMq { .. } => {
                            kept.background.handle().ok().flatten()
                        }
                        crate::config::model::QueueBackend::Embedded { .. } => None,
                    };
                    open.get(q, &metrics.queues, runtime)
                        .map_err(|source| SnapshotError::Queue {
                            name: q.name.clone(),
                            source,
                        })
                })
                .collect::<Result<Vec<_>, SnapshotError>>()?,
            None => Vec::new(),
        };
        let routes = config
            .routes
            .iter()
            .map(|r| -> Result<CompiledRoute, SnapshotError> {
                let gate = Gate::build(&r.name, &r.access, &auth)?;
                let mut reserved_headers: Vec<http::HeaderName> =
                    gate.iter().flat_map(Gate::forwarded_headers).collect();
                reserved_headers.extend(auth.consumer_header.clone());
                let (split, split_header, mirror, geo_upstreams) = match &r.action {
                    Action::Proxy(p) => (
                        p.upstreams
                            .iter()
                            .filter_map(|w| Some((index_of(&w.name)?, w.weight)))
                            .collect(),
                        p.split_header.clone(),
                        p.mirror
                            .as_ref()
                            .and_then(|m| Some((index_of(&m.upstream)?, m.percent / 100.0))),
                        p.geo_upstreams
                            .iter()
                            .filter_map(|g| {
                                let group = index_of(&g.upstream)?;
                                Some((crate::geo::Condition::new(&g.when), group))
                            })
                            .collect::<Vec<_>>(),
                    ),
                    Action::Redirect(_) | Action::Respond(_) => {
                        (Vec::new(), None, None, Vec::new())
                    }
                };
                let rate_limits: Vec<_> = r
                    .rate_limits
                    .iter()
                    .filter_map(|name| policies.get(name).cloned())
                    .collect();
                let geo_counts = config
                    .geo
                    .as_ref()
                    .filter(|g| !g.metrics_countries.is_empty() && metrics_on)
                    .map(|g| {
                        crate::geo::CountryCounts::new(&g.metrics_countries, |country| {
                            metrics.geo_requests(&r.name, country)
                        })
                    });
                // A group that prefers the client's zone needs its location.
                let by_client = |i: &usize| {
                    (upstreams.get(*i))
                        .and_then(|g| g.locality.as_ref())
                        .is_some_and(crate::upstream::locality::Locality::by_client)
                };
                let uses_geo = geo.as_ref().is_some_and(|g| {
                    route_uses_geo(r, &rate_limits, !g.headers.is_empty())
                        || config.access_log.enabled
                        || geo_counts.is_some()
                        || split.iter().map(|(i, _)| i).any(by_client)
                        || geo_upstreams.iter().map(|(_, i)| i).any(by_client)
                });
                Ok(CompiledRoute {
                    uses_geo,
                    geo_upstreams,
                    geo_counts,
                    name: Arc::from(r.name.as_str()),
                    history: Default::default(),
                    split_total: split.iter().map(|(_, w): &(usize, u32)| *w).sum(),
                    split,
                    split_header,
                    mirror,
                    action: r.action.clone(),
                    websocket: r.websocket,
                    tunnel: r.websocket.then_some(r.tunnel),
                    metrics: metrics.route(&r.name),
                    timeouts: r.timeouts.clone(),
                    retry: r.retry.as_ref().map(route_retry),
                    max_body_bytes: r.max_body_bytes,
                    rate_limit_policy: crate::ratelimit::policy_field(&rate_limits),
                    rate_limits,
                    gate,
                    reserved_headers,
                    cache: r.cache.as_ref().map(|c| {
                        crate::cache::service::RouteCacheRules::new(&r.name, c, &metrics.cache)
                    }),
                    request_edits: r.request_headers.as_ref().map(crate::transform::Edits::new),
                    response_edits: r
                        .response_headers
                        .as_ref()
                        .map(crate::transform::Edits::new),
                    publish: r.publish.as_ref().and_then(|p| {
                        let runtime = kept.background.handle().ok().flatten()?;
                        crate::queue::publish::Publisher::new(
                            p.clone(),
                            config.redis.as_ref(),
                            runtime,
                        )
                    }),
                    ai: match &r.ai {
                        None => None,
                        Some(a) => {
                            let budgets = a
                                .budgets
                                .iter()
                                .filter_map(|b| {
                                    Some(crate::ai::budget::Budget {
                                        policy: policies.get(&b.policy)?.clone(),
                                        counts: b.counts,
                                        estimate_output: b.estimate_output,
                                    })
                                })
                                .collect();
                            let m = metrics.ai.clone();
                            let svc = crate::ai::Service::new(&r.name, a.clone(), m, budgets);
                            Some(Arc::new(svc.map_err(SnapshotError::Ai)?))
                        }
                    },
                    queue: r.queue.as_ref().and_then(|q| {
                        let queue = queues.iter().find(|o| o.settings.name == q.queue)?;
                        Some(QueueRoute {
                            queue: queue.clone(),
                            status_path: Arc::from(q.status_path.as_str()),
                            role: q.role,
                        })
                    }),
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| {
                let tls = match &l.tls {
                    Some(t) => Some(
                        crate::tls::server_config(t)
                            .map_err(|source| SnapshotError::Tls { index, source })?,
                    ),
                    None => None,
                };
                Ok(ListenerSettings {
                    name: Arc::from(l.name.as_str()),
                    address: l.address,
                    h2c: l.h2c,
                    h2_server: l.h2_server,
                    tls,
                    trusted_proxies: l.trusted_proxies.clone(),
                    limits: l.limits,
                    trust_trace_context: l.trust_trace_context,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let cache = routes.iter().any(|r| r.cache.is_some()).then(|| {
            let runtime = match &config.cache.redis {
                Some(_) => kept.background.handle().ok().flatten(),
                None => None,
            };
            kept.caches.service(
                &config.cache,
                config.redis.as_ref(),
                runtime.as_ref(),
                &metrics.cache,
            )
        });
        // The exporter runs where identity-provider fetches do; a config check starts none.
        let tracer = match &config.tracing {
            Some(t) => kept.background.handle().ok().flatten().map(|runtime| {
                crate::observe::trace::Tracer::start(t, &runtime, metrics.traces.clone())
            }),
            None => None,
        };
        let log_sampling = config.access_log.sample_success.map(|(above, ratio)| {
            Arc::new(crate::observe::access_log::LogSampling::new(
                above,
                ratio,
                metrics.access_log_sampled_out.clone(),
            ))
        });
        let history = match &config.history {
            Some(h) => kept.history(h, config.data_dir.as_deref())?,
            None => None,
        };
        Ok(Snapshot {
            geo,
            tracer,
            log_sampling,
            history,
            cache,
            queues,
            access_log: access_log.filter(|_| config.access_log.enabled),
            unmatched: metrics.route(""),
            metrics_on: config.metrics_enabled,
            resilience: metrics.resilience.clone(),
            tunnels: kept.tunnels.clone(),
            config,
            router,
            routes,
            upstreams,
            listeners,
            auth,
        })
    }
}

/// State that outlives snapshots and that each new snapshot builds on.
pub struct Kept {
    pub targets: TargetStates,
    pub rate_limits: crate::ratelimit::RateLimiter,
    /// Runs identity-provider fetches (JWKS), started when a config first needs it.
    pub background: crate::background::Background,
    /// The cache store, kept while its size settings stay the same.
    pub caches: crate::cache::service::Caches,
    /// Open job queues; `None` where nothing runs (a config check), so no store is opened.
    pub queues: Option<crate::queue::Queues>,
    /// Open WebSocket tunnels: counts, route limits, the shutdown's close signal.
    pub tunnels: Arc<crate::tunnel::Tunnels>,
    /// The last good addresses of targets given by name.
    pub dns: crate::upstream::dns::DnsTargets,
    /// The traffic history, opened by the first configuration that has one (its retention
    /// and store stay those of the first until a restart).
    pub history: Mutex<Option<Arc<crate::observe::history::History>>>,
}

impl Kept {
    /// The history for a configuration with `history`: the open one, or a new one; none
    /// where nothing runs (a config check).
    fn history(
        &self,
        settings: &crate::config::model::HistorySettings,
        data_dir: Option<&std::path::Path>,
    ) -> Result<Option<Arc<crate::observe::history::History>>, SnapshotError> {
        let Some(runtime) = self.background.handle().ok().flatten() else {
            return Ok(None);
        };
        let mut open = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = &*open {
            return Ok(Some(h.clone()));
        }
        let h = crate::observe::history::History::start(settings, data_dir, &runtime)
            .map_err(|e| SnapshotError::History(e.to_string()))?;
        *open = Some(h.clone());
        Ok(Some(h))
    }
}

/// Target state that outlives snapshots: health, ejections, circuit and draining flags of
/// each (group, address), so a reload neither forgets a sick target nor un-drains one.
#[derive(Default)]
pub struct TargetStates {
    map: Mutex<HashMap<(String, SocketAddr), Arc<TargetHealth>>>,
}

impl TargetStates {
    fn get(&self, group: &str, addr: SocketAddr) -> Arc<TargetHealth> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((group.to_owned(), addr))
            .or_insert_with(|| Arc::new(TargetHealth::new()))
            .clone()
    }

    /// Forgets targets no longer configured (their in-flight requests keep their own Arc).
    fn keep_only(&self, upstreams: &[model::Upstream], targets: &[Vec<model::Target>]) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(group, addr), _| {
                upstreams.iter().zip(targets).any(|(u, targets)| {
                    u.name == *group && targets.iter().any(|t| t.address == *addr)
                })
            });
    }
}

/// Whether some part of a route reads the client's location; `headers`: the `geo` section
/// sets fields on every upstream request.
fn route_uses_geo(
    r: &model::Route,
    rate_limits: &[Arc<crate::ratelimit::Policy>],
    headers: bool,
) -> bool {
    use model::{TemplatePart, Var};
    let proxy = match &r.action {
        Action::Proxy(p) => Some(p),
        Action::Redirect(_) | Action::Respond(_) => None,
    };
    let in_edits = |e: &Option<model::HeaderEdits>| {
        e.iter()
            .flat_map(|e| e.set.iter().chain(&e.add))
            .any(|(_, t)| {
                t.0.iter()
                    .any(|p| matches!(p, TemplatePart::Var(Var::Geo(_))))
            })
    };
    r.matcher.geo.is_some()
        || proxy.is_some_and(|p| headers || !p.geo_upstreams.is_empty())
        || in_edits(&r.request_headers)
        || in_edits(&r.response_headers)
        || rate_limits.iter().any(|p| p.uses_geo())
        || r.cache.as_ref().is_some_and(|c| !c.key_geo.is_empty())
}

fn route_retry(p: &RetryPolicy) -> RouteRetry {
    RouteRetry {
        budget: RetryBudget::new(BudgetSettings {
            ratio: p.budget_ratio,
            min_per_second: p.budget_min_per_second,
            ttl: Duration::from_secs(10),
        }),
        backoff: Backoff {
            base: p.backoff_base,
            max: p.backoff_max,
        },
        policy: p.clone(),
    }
}

fn upstream_group(
    u: &model::Upstream,
    targets: &[model::Target],
    metrics: &Metrics,
    states: &TargetStates,
) -> Result<UpstreamGroup, SnapshotError> {
    let tls = match &u.tls {
        Some(t) => {
            let client =
                TlsClient::build(t, u.protocol).map_err(|source| SnapshotError::UpstreamTls {
                    group: u.name.clone(),
                    source,
                })?;
            if !t.verify {
                tracing::warn!(
                    upstream = %u.name,
                    "upstream tls verification is off (tls.verify: false): any certificate is accepted"
                );
            }
            Some(Arc::new(client))
        }
        None => None,
    };
    let addresses: Vec<SocketAddr> = targets.iter().map(|t| t.address).collect();
    let health = GroupHealth::new(
        addresses.iter().map(|a| states.get(&u.name, *a)).collect(),
        u.passive_check.clone(),
        u.circuit_breaker.clone(),
        u.active_check.as_ref().map(|a| ActiveThresholds {
            healthy: a.healthy_threshold,
            unhealthy: a.unhealthy_threshold,
        }),
    );
    let compiled = targets
        .iter()
        .map(|t| {
            let text = t.address.to_string();
            UpstreamTarget {
                address: t.address,
                authority: Authority::try_from(text.as_str())
                    .unwrap_or_else(|_| Authority::from_static("invalid")),
                metrics: metrics.target(&u.name, &text),
                label: Arc::from(text),
                history: Default::default(),
            }
        })
        .collect();
    Ok(UpstreamGroup {
        name: Arc::from(u.name.as_str()),
        targets: compiled,
        balancer: Balancer::with_targets(&u.balancer, targets),
        client: ClientProfile {
            protocol: u.protocol,
            connect_timeout: u.connect_timeout,
            idle_timeout: u.keepalive_idle,
            max_idle: u.keepalive_max_idle,
            tls,
        },
        request_timeout: u.request_timeout,
        health: Arc::new(health),
        limiter: u
            .max_concurrent_requests
            .map(|max| GroupLimiter::new(max, u.queue_size, u.queue_timeout)),
        sticky: u
            .sticky
            .as_ref()
            .map(|s| StickySessions::new(s, &u.name, &addresses)),
        locality: None,
        credentials: match &u.client_credentials {
            Some(c) => Some(Arc::new(UpstreamToken::new(c.clone()).map_err(
                |message| {
                    SnapshotError::Access(crate::auth::gate::GateError {
                        at: format!("upstreams.{}.client_credentials", u.name),
                        message,
                    })
                },
            )?)),
            None => None,
        },
    })
}
