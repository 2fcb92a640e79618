//! Prometheus metrics of the gateway: counters, gauges and latency histograms, with per-route
//! and per-target handles resolved at config load so the request path never hashes a name.
//!
//! Exposed metrics (OpenMetrics text, served with [`CONTENT_TYPE`]):
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_requests_total` | counter | `route`, `method`, `status` |
//! | `ferrogate_request_duration_seconds` | histogram | `route` |
//! | `ferrogate_upstream_requests_total` | counter | `upstream`, `target`, `status` |
//! | `ferrogate_upstream_duration_seconds` | histogram | `upstream`, `target` |
//! | `ferrogate_connections_open` | gauge | `listener` |
//! | `ferrogate_connections_total` | counter | `listener` |
//! | `ferrogate_config_reloads_total` | counter | `result` (`ok` or `failed`) |
//! | `ferrogate_config_version` | gauge | none: the configuration version running (0 without versions) |
//! | `ferrogate_dns_resolutions_total` | counter | `target` (the name as configured), `result` (`same`, `changed`, `failed`) |
//! | `ferrogate_locality_picks_total` | counter | `upstream`, `tier` (`zone`, `region`, `any`) |
//! | `ferrogate_geo_requests_total` | counter | `route`, `country` (a code of `geo.metrics_countries`, `other` or `unknown`) |
//! | `ferrogate_dns_stale` | gauge | `target`: 1 while its last good addresses stand in for a failed resolution |
//!
//! and the resilience, rate-limit and tunnel metrics listed in `metrics/resilience.rs`,
//! `metrics/ratelimit.rs` and `metrics/tunnel.rs`.
//!
//! Label values stay bounded: `route`, `upstream`, `target` and `listener` come from the
//! config, `method` is one of the nine standard methods or `other`, `status` is the numeric
//! status (`0` on upstream series when no response arrived). Series of routes or targets
//! removed by a reload stay at their last value until the process restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use http::Method;

mod ai;
mod alerts;
mod ratelimit;
mod resilience;
mod trace;
mod tunnel;
pub use ai::{AiExchange, AiMetrics};
pub use alerts::AlertMetrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
pub use ratelimit::{PolicyCounters, RateLimitMetrics};
pub use resilience::{ResilienceMetrics, TargetState};
pub use trace::TraceMetrics;
pub use tunnel::TunnelMetrics;

/// Content type of [`Metrics::encode`]: the crate writes OpenMetrics text, ending in `# EOF`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram buckets, in nanoseconds (0.5 ms to 10 s); a last
/// `+Inf` bucket follows.
const BUCKET_BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_NS.len() + 1;

/// Slots of the per-handle counter cache. A route sees a handful of (method, status) pairs;
/// pairs beyond this fall back to the shared family map, which is slower but still correct.
const CACHE_SLOTS: usize = 32;
const _: () = assert!(
    CACHE_SLOTS.is_power_of_two(),
    "the probe start takes the top bits"
);

/// Methods with their own `method` label value; everything else is `other`.
static KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// All gateway metrics and the registry that encodes them. Shared by every worker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `ferrogate_requests_total{route,method,status}`: downstream requests answered.
    requests: Family<RequestLabels, Counter>,
    /// `ferrogate_request_duration_seconds{route}`: time from request head to the end of
    /// the response body.
    request_duration: Family<RouteLabels, LatencyHistogram>,
    /// `ferrogate_upstream_requests_total{upstream,target,status}`: forwarding attempts;
    /// `status="0"` when no response arrived (connect error, reset, timeout).
    upstream_requests: Family<UpstreamLabels, Counter>,
    /// `ferrogate_upstream_duration_seconds{upstream,target}`: time of one forwarding
    /// attempt until the response head (or the failure).
    upstream_duration: Family<TargetLabels, LatencyHistogram>,
    /// `ferrogate_connections_open{listener}`: downstream connections open now.
    connections_open: Family<ListenerLabels, Gauge>,
    /// `ferrogate_connections_total{listener}`: downstream connections accepted.
    connections_total: Family<ListenerLabels, Counter>,
    /// Listener handles by name, so opening a connection does not allocate a label.
    listeners: RwLock<HashMap<Arc<str>, ListenerMetrics>>,
    /// `ferrogate_config_reloads_total{result="ok"}`.
    reloads_ok: Counter,
    /// `ferrogate_config_reloads_total{result="failed"}`.
    reloads_failed: Counter,
    /// `ferrogate_config_version`: the configuration version running.
    config_version: Gauge,
    /// `ferrogate_dns_resolutions_total{target,result}`: resolutions of targets given by
    /// name (`same`, `changed`, `failed`).
    dns_resolutions: Family<DnsLabels, Counter>,
    /// `ferrogate_dns_stale{target}`: 1 while a name's last resolution failed and its last
    /// good set is in use.
    dns_stale: Family<DnsTargetLabels, Gauge>,
    /// `ferrogate_locality_picks_total{upstream,tier}`: targets chosen by locality-aware
    /// groups, by tier (`zone`, `region`, `any`).
    locality_picks: Family<LocalityLabels, Counter>,
    /// `ferrogate_geo_requests_total{route,country}`: requests by client country, for the
    /// countries `geo.metrics_countries` names (`other`, `unknown` for the rest).
    geo_requests: Family<GeoLabels, Counter>,
    /// Health, retry, queue, mirror and connection-limit metrics (`resilience.rs`).
    pub resilience: ResilienceMetrics,
    /// Metrics of `ai` routes (`ai.rs`).
    pub ai: AiMetrics,
    /// Rate-limit and Redis metrics (`ratelimit.rs`).
    pub rate_limits: RateLimitMetrics,
    /// HTTP cache metrics (`cache::service`).
    pub cache: crate::cache::service::CacheMetrics,
    /// Job queue metrics (`queue::metrics`).
    pub queues: crate::queue::QueueMetrics,
    /// WebSocket tunnel metrics (`tunnel.rs`).
    pub tunnels: TunnelMetrics,
    /// Span export metrics (`trace.rs`).
    pub traces: TraceMetrics,
    /// Alerting metrics (`alerts.rs`).
    pub alerts: AlertMetrics,
    /// `ferrogate_access_log_sampled_out_total`: access-log lines left out by
    /// `access_log.sample_success`.
    pub access_log_sampled_out: Counter,
}

/// Request metrics of one route. Cheap to clone; counts survive reloads because handles of
/// the same route name share their series.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    inner: Arc<RouteCells>,
}

/// Forwarding metrics of one upstream target. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    inner: Arc<TargetCells>,
}

/// Connection metrics of one listener. Cheap to clone; holding one avoids the name lookup
/// of [`Metrics::connection_opened`].
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    open: Gauge,
    total: Counter,
}

#[derive(Debug)]
struct RouteCells {
    route: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    duration: LatencyHistogram,
    /// Counters by `method index << 16 | status`.
    by_outcome: CounterCache,
}

#[derive(Debug)]
struct TargetCells {
    upstream: Arc<str>,
    target: Arc<str>,
    requests: Family<UpstreamLabels, Counter>,
    duration: LatencyHistogram,
    /// Counters by status.
    by_status: CounterCache,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
    target: Arc<str>,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    upstream: Arc<str>,
    target: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DnsLabels {
    target: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DnsTargetLabels {
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GeoLabels {
    route: String,
    country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LocalityLabels {
    upstream: String,
    tier: &'static str,
}

/// A fixed-bucket latency histogram on atomics. The crate's own histogram takes a mutex on
/// every observation, which all workers would share per route.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram {
    cells: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per-bucket (not cumulative) counts; the encoder accumulates them.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of observations in nanoseconds (wraps after centuries of summed latency).
    sum_ns: AtomicU64,
}

/// A small open-addressing table of counter handles, filled once per key and then read
/// without locks.
#[derive(Debug, Default)]
struct CounterCache {
    slots: [OnceLock<(u32, Counter)>; CACHE_SLOTS],
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<RouteLabels, LatencyHistogram>::default();
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        let upstream_duration = Family::<TargetLabels, LatencyHistogram>::default();
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_total = Family::<ListenerLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        // Both reload series exist from the start, so an alert on `failed` sees a 0 first.
        let reloads_ok = reloads.get_or_create_owned(&ReloadLabels { result: "ok" });
        let reloads_failed = reloads.get_or_create_owned(&ReloadLabels { result: "failed" });

        // Counter names get their `_total` suffix, and unit names their `_seconds`, from the
        // encoder.
        registry.register(
            "ferrogate_requests",
            "Downstream requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "ferrogate_request_duration",
            "Downstream request duration, from request head to the end of the response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register(
            "ferrogate_upstream_requests",
            "Upstream forwarding attempts, by target and status (0 when no response arrived)",
            upstream_requests.clone(),
        );
        registry.register_with_unit(
            "ferrogate_upstream_duration",
            "Upstream attempt duration, until the response head or the failure",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        registry.register(
            "ferrogate_connections_open",
            "Downstream connections open now",
            connections_open.clone(),
        );
        registry.register(
            "ferrogate_connections",
            "Downstream connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "ferrogate_config_reloads",
            "Configuration reloads, by result",
            reloads,
        );
        let config_version = Gauge::default();
        registry.register(
            "ferrogate_config_version",
            "The configuration version running (admin API versions; 0 without them)",
            config_version.clone(),
        );

        let dns_resolutions = Family::<DnsLabels, Counter>::default();
        registry.register(
            "ferrogate_dns_resolutions",
            "Resolutions of upstream targets given by name, by result (same, changed, failed)",
            dns_resolutions.clone(),
        );
        let dns_stale = Family::<DnsTargetLabels, Gauge>::default();
        registry.register(
            "ferrogate_dns_stale",
            "1 while a target name's last resolution failed and its last good addresses are used",
            dns_stale.clone(),
        );

        let locality_picks = Family::<LocalityLabels, Counter>::default();
        registry.register(
            "ferrogate_locality_picks",
            "Targets chosen by locality-aware groups, by tier (zone, region, any)",
            locality_picks.clone(),
        );

        let geo_requests = Family::<GeoLabels, Counter>::default();
        registry.register(
            "ferrogate_geo_requests",
            "Requests by route and client country (the countries geo.metrics_countries names)",
            geo_requests.clone(),
        );

        let resilience = ResilienceMetrics::default();
        resilience.register(&mut registry);
        let rate_limits = RateLimitMetrics::default();
        rate_limits.register(&mut registry);
        let ai = AiMetrics::default();
        ai.register(&mut registry);
        let cache = crate::cache::service::CacheMetrics::default();
        cache.register(&mut registry);
        let queues = crate::queue::QueueMetrics::default();
        queues.register(&mut registry);
        let tunnels = TunnelMetrics::default();
        tunnels.register(&mut registry);
        let traces = TraceMetrics::default();
        traces.register(&mut registry);
        let alerts = AlertMetrics::default();
        alerts.register(&mut registry);
        let access_log_sampled_out = Counter::default();
        registry.register(
            "ferrogate_access_log_sampled_out",
            "Access-log lines of successful requests left out at high rates",
            access_log_sampled_out.clone(),
        );

        Metrics {
            ai,
            tunnels,
            traces,
            alerts,
            access_log_sampled_out,
            resilience,
            rate_limits,
            cache,
            queues,
            registry,
            requests,
            request_duration,
            upstream_requests,
            upstream_duration,
            connections_open,
            connections_total,
            listeners: RwLock::new(HashMap::new()),
            reloads_ok,
            reloads_failed,
            config_version,
            dns_resolutions,
            dns_stale,
            locality_picks,
            geo_requests,
        }
    }

    /// The handle of a route; call it when compiling a snapshot, not per request.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let route: Arc<str> = Arc::from(route);
        let duration = self.request_duration.get_or_create_owned(&RouteLabels {
            route: route.clone(),
        });
        RouteMetrics {
            inner: Arc::new(RouteCells {
                route,
                requests: self.requests.clone(),
                duration,
                by_outcome: CounterCache::default(),
            }),
        }
    }

    /// The handle of one target of an upstream; call it when compiling a snapshot.
    pub fn target(&self, upstream: &str, target: &str) -> TargetMetrics {
        let upstream: Arc<str> = Arc::from(upstream);
        let target: Arc<str> = Arc::from(target);
        let duration = self.upstream_duration.get_or_create_owned(&TargetLabels {
            upstream: upstream.clone(),
            target: target.clone(),
        });
        TargetMetrics {
            inner: Arc::new(TargetCells {
                upstream,
                target,
                requests: self.upstream_requests.clone(),
                duration,
                by_status: CounterCache::default(),
            }),
        }
    }

    /// The handle of a listener. Allocates only the first time a name is seen.
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let known = self
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(listener)
            .cloned();
        if let Some(handle) = known {
            return handle;
        }
        let mut map = self
            .listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let name: Arc<str> = Arc::from(listener);
        let labels = ListenerLabels {
            listener: name.clone(),
        };
        map.entry(name)
            .or_insert_with(|| ListenerMetrics {
                open: self.connections_open.get_or_create_owned(&labels),
                total: self.connections_total.get_or_create_owned(&labels),
            })
            .clone()
    }

    /// Counts a downstream connection accepted on `listener` (by name); pair each call with
    /// one [`Metrics::connection_closed`] of the same name.
    pub fn connection_opened(&self, listener: &str) {
        self.listener(listener).opened();
    }

    /// Counts the end of a connection counted by [`Metrics::connection_opened`].
    pub fn connection_closed(&self, listener: &str) {
        self.listener(listener).closed();
    }

    /// Counts one resolution of an upstream target name; `result` is `same`, `changed` or
    /// `failed`.
    pub fn dns_resolved(&self, target: &str, result: &'static str) {
        let labels = DnsLabels {
            target: target.to_owned(),
            result,
        };
        self.dns_resolutions.get_or_create(&labels).inc();
        let stale = DnsTargetLabels {
            target: target.to_owned(),
        };
        self.dns_stale
            .get_or_create(&stale)
            .set(i64::from(result == "failed"));
    }

    /// The pick counters of a locality-aware group, per tier (`zone`, `region`, `any`).
    pub fn locality_picks(&self, upstream: &str) -> [Counter; 3] {
        crate::upstream::locality::TIERS.map(|tier| {
            self.locality_picks
                .get_or_create(&LocalityLabels {
                    upstream: upstream.to_owned(),
                    tier,
                })
                .clone()
        })
    }

    /// The per-country request counter of `route` for `country` (a code, `other` or
    /// `unknown`); resolved when a snapshot is built.
    pub fn geo_requests(&self, route: &str, country: &str) -> Counter {
        self.geo_requests
            .get_or_create(&GeoLabels {
                route: route.to_owned(),
                country: country.to_owned(),
            })
            .clone()
    }

    /// Counts one reload attempt, successful or not.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc();
        } else {
            self.reloads_failed.inc();
        }
    }

    /// Records the configuration version now running.
    pub fn set_config_version(&self, version: u64) {
        self.config_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// The exposition for a scrape, in OpenMetrics text (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let result = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        debug_assert!(result.is_ok(), "writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl RouteMetrics {
    /// Records one answered request. Lock-free and allocation-free once the route has seen
    /// this (method, status) pair.
    pub fn observe(&self, method: &Method, status: u16, duration: Duration) {
        let cells = &*self.inner;
        let (index, method) = method_label(method);
        let labels = || RequestLabels {
            route: cells.route.clone(),
            method,
            status,
        };
        let key = (u32::from(index) << 16) | u32::from(status);
        match cells
            .by_outcome
            .get_or_claim(key, || cells.requests.get_or_create_owned(&labels()))
        {
            Some(counter) => {
                counter.inc();
            }
            None => {
                cells.requests.get_or_create(&labels()).inc();
            }
        }
        cells.duration.observe(duration);
    }
}

impl TargetMetrics {
    /// Records one forwarding attempt; `status` 0 means no response arrived.
    pub fn observe(&self, status: u16, duration: Duration) {
        let cells = &*self.inner;
        let labels = || UpstreamLabels {
            upstream: cells.upstream.clone(),
            target: cells.target.clone(),
            status,
        };
        match cells.by_status.get_or_claim(u32::from(status), || {
            cells.requests.get_or_create_owned(&labels())
        }) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                cells.requests.get_or_create(&labels()).inc();
            }
        }
        cells.duration.observe(duration);
    }
}

impl ListenerMetrics {
    pub fn opened(&self) {
        self.open.inc();
        self.total.inc();
    }

    pub fn closed(&self) {
        self.open.dec();
    }
}

impl LatencyHistogram {
    fn observe(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are "less than or equal": the first bound >= ns.
        let index = BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns);
        if let Some(bucket) = self.cells.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.cells.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKETS];
        let mut count = 0u64;
        for (i, (bound, n)) in buckets.iter_mut().enumerate() {
            if let Some(ns) = BUCKET_BOUNDS_NS.get(i) {
                *bound = *ns as f64 / 1e9;
            }
            *n = self.cells.buckets[i].load(Ordering::Relaxed);
            count += *n;
        }
        // The count is the bucket total, so `_count` always equals the `+Inf` bucket even
        // while other threads observe.
        let sum = self.cells.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl CounterCache {
    /// The counter cached for `key`, claiming a free slot with `make` on first use; `None`
    /// when every slot on the probe path holds another key.
    fn get_or_claim(&self, key: u32, make: impl Fn() -> Counter) -> Option<&Counter> {
        // Fibonacci hashing: the top bits of the product spread nearby keys (status codes).
        let top_bits = 32 - CACHE_SLOTS.trailing_zeros();
        let start = (key.wrapping_mul(0x9E37_79B9) >> top_bits) as usize;
        for step in 0..CACHE_SLOTS {
            let slot = &self.slots[(start + step) % CACHE_SLOTS];
            if slot.get().is_none() {
                // Another thread may claim this slot first, for this key or another one.
                let _ = slot.set((key, make()));
            }
            match slot.get() {
                Some((k, counter)) if *k == key => return Some(counter),
                _ => continue,
            }
        }
        None
    }
}

/// Index and label value of a method: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> (u8, &'static str) {
    for (index, known) in (0u8..).zip(KNOWN_METHODS.iter()) {
        if known == method {
            return (index, known.as_str());
        }
    }
    (KNOWN_METHODS.len() as u8, "other")
}

#[cfg(test)]
mod tests;
