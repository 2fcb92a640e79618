//! Metrics of the resilience features: target health state (read at scrape time), retries,
//! retry budgets, queues, mirroring, and refused downstream connections.
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_upstream_target_healthy` | gauge | `upstream`, `target` (active check: 1 up, 0 down) |
//! | `ferrogate_upstream_target_ejected` | gauge | `upstream`, `target` (passive ejection now) |
//! | `ferrogate_upstream_target_circuit_open` | gauge | `upstream`, `target` (1 open or half-open) |
//! | `ferrogate_upstream_target_draining` | gauge | `upstream`, `target` |
//! | `ferrogate_upstream_target_ejections` | gauge | `upstream`, `target` (ejections so far) |
//! | `ferrogate_retries_total` | counter | `route` |
//! | `ferrogate_retry_budget_exhausted_total` | counter | `route` |
//! | `ferrogate_upstream_queue_refused_total` | counter | `upstream`, `reason` (`full`, `timeout`) |
//! | `ferrogate_mirror_requests_total` | counter | `upstream`, `result` (`ok`, `failed`) |
//! | `ferrogate_connections_refused_total` | counter | `listener`, `reason` (`per_ip`) |
//! | `ferrogate_h2_flood_closed_total` | counter | `listener`, `kind` |
//!
//! These events are rare, so their series are looked up by name when they happen.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    upstream: Arc<str>,
    target: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamReason {
    upstream: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamResult {
    upstream: Arc<str>,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerReason {
    listener: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerKind {
    listener: Arc<str>,
    kind: &'static str,
}

/// What the scrape shows of one target.
pub struct TargetState {
    pub healthy: bool,
    pub ejected: bool,
    pub circuit_open: bool,
    pub draining: bool,
    pub ejections: u64,
}

/// Cheap to clone; shared by every worker.
#[derive(Debug, Clone, Default)]
pub struct ResilienceMetrics {
    healthy: Family<TargetLabels, Gauge>,
    ejected: Family<TargetLabels, Gauge>,
    circuit_open: Family<TargetLabels, Gauge>,
    draining: Family<TargetLabels, Gauge>,
    ejections: Family<TargetLabels, Gauge>,
    retries: Family<RouteLabels, Counter>,
    budget_exhausted: Family<RouteLabels, Counter>,
    queue_refused: Family<UpstreamReason, Counter>,
    mirrored: Family<UpstreamResult, Counter>,
    conn_refused: Family<ListenerReason, Counter>,
    h2_flood: Family<ListenerKind, Counter>,
}

impl ResilienceMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        let gauges = [
            (
                "ferrogate_upstream_target_healthy",
                "Active health check state of a target (1 up)",
                &self.healthy,
            ),
            (
                "ferrogate_upstream_target_ejected",
                "Target ejected by passive health checks now",
                &self.ejected,
            ),
            (
                "ferrogate_upstream_target_circuit_open",
                "Target circuit breaker open or half-open",
                &self.circuit_open,
            ),
            (
                "ferrogate_upstream_target_draining",
                "Target draining: no new requests",
                &self.draining,
            ),
            (
                "ferrogate_upstream_target_ejections",
                "Passive ejections of a target so far",
                &self.ejections,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "ferrogate_retries",
            "Retried upstream attempts, by route",
            self.retries.clone(),
        );
        registry.register(
            "ferrogate_retry_budget_exhausted",
            "Retries not made because the route's retry budget was spent",
            self.budget_exhausted.clone(),
        );
        registry.register(
            "ferrogate_upstream_queue_refused",
            "Requests refused with 503 by an upstream group's concurrency limit",
            self.queue_refused.clone(),
        );
        registry.register(
            "ferrogate_mirror_requests",
            "Mirrored requests sent to shadow groups, by result",
            self.mirrored.clone(),
        );
        registry.register(
            "ferrogate_connections_refused",
            "Downstream connections closed at once by a connection limit",
            self.conn_refused.clone(),
        );
        registry.register(
            "ferrogate_h2_flood_closed",
            "HTTP/2 connections closed for flooding, by kind",
            self.h2_flood.clone(),
        );
    }

    /// Sets the state gauges of a target (called at scrape time).
    pub fn set_target(&self, upstream: &str, target: &str, s: &TargetState) {
        let labels = TargetLabels {
            upstream: Arc::from(upstream),
            target: Arc::from(target),
        };
        let flag = |b: bool| i64::from(b);
        self.healthy.get_or_create(&labels).set(flag(s.healthy));
        self.ejected.get_or_create(&labels).set(flag(s.ejected));
        self.circuit_open
            .get_or_create(&labels)
            .set(flag(s.circuit_open));
        self.draining.get_or_create(&labels).set(flag(s.draining));
        self.ejections
            .get_or_create(&labels)
            .set(i64::try_from(s.ejections).unwrap_or(i64::MAX));
    }

    pub fn retried(&self, route: &Arc<str>) {
        self.retries
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    pub fn retry_budget_exhausted(&self, route: &Arc<str>) {
        self.budget_exhausted
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    pub fn queue_refused(&self, upstream: &Arc<str>, timeout: bool) {
        let reason = if timeout { "timeout" } else { "full" };
        self.queue_refused
            .get_or_create(&UpstreamReason {
                upstream: upstream.clone(),
                reason,
            })
            .inc();
    }

    pub fn mirrored(&self, upstream: &Arc<str>, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.mirrored
            .get_or_create(&UpstreamResult {
                upstream: upstream.clone(),
                result,
            })
            .inc();
    }

    pub fn connection_refused(&self, listener: &Arc<str>, reason: &'static str) {
        self.conn_refused
            .get_or_create(&ListenerReason {
                listener: listener.clone(),
                reason,
            })
            .inc();
    }

    pub fn h2_flood(&self, listener: &Arc<str>, kind: &'static str) {
        self.h2_flood
            .get_or_create(&ListenerKind {
                listener: listener.clone(),
                kind,
            })
            .inc();
    }
}
