//! Queue metrics, registered with the gateway's others:
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_queue_jobs_accepted_total` | counter | `queue` |
//! | `ferrogate_queue_refused_total` | counter | `queue`, `reason` (`full`, `unavailable`) |
//! | `ferrogate_queue_depth` | gauge | `queue` (jobs pending or running) |
//! | `ferrogate_queue_oldest_due_age_seconds` | gauge | `queue` (how long the oldest due job has waited for a dispatcher) |
//! | `ferrogate_queue_deliveries_total` | counter | `queue`, `outcome` (`succeeded`, `failed`, `retried`, `dead`) |
//! | `ferrogate_queue_attempts_total` | counter | `queue` |
//! | `ferrogate_queue_dead_letters` | gauge | `queue` |
//! | `ferrogate_queue_accept_duration_seconds` | histogram | `queue` (time to store a job durably) |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::OutcomeKind;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabel {
    queue: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueReason {
    queue: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueOutcome {
    queue: Arc<str>,
    outcome: &'static str,
}

fn accept_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

/// The queue metric families, shared by every queue.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    accepted: Family<QueueLabel, Counter>,
    refused: Family<QueueReason, Counter>,
    depth: Family<QueueLabel, Gauge>,
    oldest: Family<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    deliveries: Family<QueueOutcome, Counter>,
    attempts: Family<QueueLabel, Counter>,
    dead: Family<QueueLabel, Gauge>,
    accept_duration: Family<QueueLabel, Histogram, fn() -> Histogram>,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            accepted: Family::default(),
            refused: Family::default(),
            depth: Family::default(),
            oldest: Family::default(),
            deliveries: Family::default(),
            attempts: Family::default(),
            dead: Family::default(),
            accept_duration: Family::new_with_constructor(accept_histogram),
        }
    }
}

impl QueueMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_queue_jobs_accepted",
            "Jobs stored by queued routes",
            self.accepted.clone(),
        );
        registry.register(
            "ferrogate_queue_refused",
            "Requests a queue did not store, by reason",
            self.refused.clone(),
        );
        registry.register(
            "ferrogate_queue_depth",
            "Jobs pending or running",
            self.depth.clone(),
        );
        registry.register(
            "ferrogate_queue_oldest_due_age_seconds",
            "How long the oldest due job has waited for a dispatcher",
            self.oldest.clone(),
        );
        registry.register(
            "ferrogate_queue_deliveries",
            "Delivery attempts by how they ended",
            self.deliveries.clone(),
        );
        registry.register(
            "ferrogate_queue_attempts",
            "Delivery attempts started",
            self.attempts.clone(),
        );
        registry.register(
            "ferrogate_queue_dead_letters",
            "Jobs whose attempts ran out, kept for operators",
            self.dead.clone(),
        );
        registry.register(
            "ferrogate_queue_accept_duration_seconds",
            "Time to store a job durably",
            self.accept_duration.clone(),
        );
    }

    /// The handles of one queue.
    pub fn queue(&self, name: &str) -> QueueCounters {
        let queue: Arc<str> = Arc::from(name);
        let label = QueueLabel {
            queue: queue.clone(),
        };
        let reason = |reason| {
            self.refused
                .get_or_create(&QueueReason {
                    queue: queue.clone(),
                    reason,
                })
                .clone()
        };
        let outcome = |outcome| {
            self.deliveries
                .get_or_create(&QueueOutcome {
                    queue: queue.clone(),
                    outcome,
                })
                .clone()
        };
        QueueCounters {
            accepted: self.accepted.get_or_create(&label).clone(),
            refused_full: reason("full"),
            refused_unavailable: reason("unavailable"),
            depth: self.depth.get_or_create(&label).clone(),
            oldest: self.oldest.get_or_create(&label).clone(),
            succeeded: outcome("succeeded"),
            failed: outcome("failed"),
            retried: outcome("retried"),
            dead_outcome: outcome("dead"),
            attempts: self.attempts.get_or_create(&label).clone(),
            dead: self.dead.get_or_create(&label).clone(),
            accept_duration: self.accept_duration.get_or_create(&label).clone(),
        }
    }
}

/// One queue's metric handles.
#[derive(Debug, Clone)]
pub struct QueueCounters {
    accepted: Counter,
    pub refused_full: Counter,
    pub refused_unavailable: Counter,
    pub depth: Gauge,
    oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    dead_outcome: Counter,
    pub attempts: Counter,
    pub dead: Gauge,
    accept_duration: Histogram,
}

impl QueueCounters {
    pub(super) fn accepted(&self, took: Duration) {
        self.accepted.inc();
        self.accept_duration.observe(took.as_secs_f64());
    }

    pub(super) fn delivered(&self, kind: OutcomeKind) {
        match kind {
            OutcomeKind::Succeeded => &self.succeeded,
            OutcomeKind::Failed => &self.failed,
            OutcomeKind::Retried => &self.retried,
            OutcomeKind::Dead => &self.dead_outcome,
        }
        .inc();
    }

    pub(super) fn set_depth(&self, depth: u64, dead: u64) {
        self.depth.set(depth as i64);
        self.dead.set(dead as i64);
    }

    pub(super) fn set_oldest(&self, age: Duration) {
        self.oldest.set(age.as_secs_f64());
    }

    /// How long the oldest due job had waited for a dispatcher at the last turn, seconds.
    pub fn oldest_due_age(&self) -> f64 {
        self.oldest.get()
    }
}
