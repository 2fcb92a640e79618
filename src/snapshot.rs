//! The compiled runtime form of one configuration: router, routes, upstream groups and
//! listener settings. Built off the request path, swapped atomically by reload, and read
//! by every request through one `ArcSwap` load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;

use crate::config::model::{self, Action, Config, Limits, UpstreamProtocol};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{Metrics, RouteMetrics, TargetMetrics};
use crate::router::{Router, RouterError};
use crate::upstream::balancer::Balancer;

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
}

pub struct CompiledRoute {
    pub name: Arc<str>,
    pub action: Action,
    /// Index into `Snapshot::upstreams` for proxy routes.
    pub upstream: Option<usize>,
    pub websocket: bool,
    pub metrics: RouteMetrics,
}

pub struct UpstreamGroup {
    pub name: Arc<str>,
    pub targets: Vec<UpstreamTarget>,
    pub balancer: Balancer,
    pub client: ClientProfile,
    pub request_timeout: Duration,
}

pub struct UpstreamTarget {
    pub address: SocketAddr,
    /// `ip:port`, ready for the upstream request URI.
    pub authority: Authority,
    /// Same text, for logs.
    pub label: Arc<str>,
    pub metrics: TargetMetrics,
}

/// Settings that decide which pooled upstream client a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientProfile {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

pub struct ListenerSettings {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub h2c: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
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
    ) -> Result<Snapshot, SnapshotError> {
        let router = Router::build(&config.routes)?;
        let upstreams: Vec<Arc<UpstreamGroup>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(upstream_group(u, metrics)))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| CompiledRoute {
                name: Arc::from(r.name.as_str()),
                upstream: match &r.action {
                    Action::Proxy(p) => upstreams.iter().position(|u| *u.name == *p.upstream),
                    Action::Redirect(_) => None,
                },
                action: r.action.clone(),
                websocket: r.websocket,
                metrics: metrics.route(&r.name),
            })
            .collect();
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
                    tls,
                    trusted_proxies: l.trusted_proxies.clone(),
                    limits: l.limits,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        Ok(Snapshot {
            access_log: access_log.filter(|_| config.access_log.enabled),
            unmatched: metrics.route(""),
            metrics_on: config.metrics_enabled,
            config,
            router,
            routes,
            upstreams,
            listeners,
        })
    }
}

fn upstream_group(u: &model::Upstream, metrics: &Metrics) -> UpstreamGroup {
    let targets = u
        .targets
        .iter()
        .map(|t| {
            let text = t.address.to_string();
            UpstreamTarget {
                address: t.address,
                authority: Authority::try_from(text.as_str())
                    .unwrap_or_else(|_| Authority::from_static("invalid")),
                metrics: metrics.target(&u.name, &text),
                label: Arc::from(text),
            }
        })
        .collect();
    UpstreamGroup {
        name: Arc::from(u.name.as_str()),
        targets,
        balancer: Balancer::with_targets(&u.balancer, &u.targets),
        client: ClientProfile {
            protocol: u.protocol,
            connect_timeout: u.connect_timeout,
            idle_timeout: u.keepalive_idle,
            max_idle: u.keepalive_max_idle,
        },
        request_timeout: u.request_timeout,
    }
}
