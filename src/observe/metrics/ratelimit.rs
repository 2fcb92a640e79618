//! Metrics of rate limiting and of the Redis calls behind it.
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_ratelimit_requests_total` | counter | `policy`, `outcome` (`allowed`, `rejected`, `unavailable`) |
//! | `ferrogate_ratelimit_fallbacks_total` | counter | `policy` (decided locally because Redis failed) |
//! | `ferrogate_ratelimit_local_keys` | gauge | (keys held by the in-process store, at scrape time) |
//! | `ferrogate_ratelimit_local_evictions` | gauge | (keys evicted to keep the bound, so far) |
//! | `ferrogate_redis_call_duration_seconds` | histogram | `operation` |
//! | `ferrogate_redis_errors_total` | counter | `operation`, `kind` (`timeout`, `connection`, `server`) |
//!
//! The per-policy counters are created when a policy is compiled, so a request increments
//! a counter it already holds.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyOutcome {
    policy: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabel {
    policy: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationKind {
    operation: &'static str,
    kind: &'static str,
}

fn redis_histogram() -> Histogram {
    // 100 µs to about 1.6 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_1, 2.0, 15,
    ))
}

/// Cheap to clone; shared by every worker.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    requests: Family<PolicyOutcome, Counter>,
    fallbacks: Family<PolicyLabel, Counter>,
    local_keys: Gauge,
    local_evictions: Gauge,
    redis_duration: Family<Operation, Histogram, fn() -> Histogram>,
    redis_errors: Family<OperationKind, Counter>,
}

impl Default for RateLimitMetrics {
    fn default() -> Self {
        RateLimitMetrics {
            requests: Family::default(),
            fallbacks: Family::default(),
            local_keys: Gauge::default(),
            local_evictions: Gauge::default(),
            redis_duration: Family::new_with_constructor(redis_histogram),
            redis_errors: Family::default(),
        }
    }
}

/// The counters of one policy, held by the compiled policy.
#[derive(Debug, Clone)]
pub struct PolicyCounters {
    pub allowed: Counter,
    pub rejected: Counter,
    pub unavailable: Counter,
    pub fallbacks: Counter,
}

impl RateLimitMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_ratelimit_requests",
            "Requests checked by a rate-limit policy, by outcome",
            self.requests.clone(),
        );
        registry.register(
            "ferrogate_ratelimit_fallbacks",
            "Rate-limit decisions made locally because Redis failed",
            self.fallbacks.clone(),
        );
        registry.register(
            "ferrogate_ratelimit_local_keys",
            "Keys held by the in-process rate-limit store",
            self.local_keys.clone(),
        );
        registry.register(
            "ferrogate_ratelimit_local_evictions",
            "Keys evicted from the in-process rate-limit store to keep its bound",
            self.local_evictions.clone(),
        );
        registry.register(
            "ferrogate_redis_call_duration_seconds",
            "Duration of Redis calls, by operation",
            self.redis_duration.clone(),
        );
        registry.register(
            "ferrogate_redis_errors",
            "Failed Redis calls, by operation and kind",
            self.redis_errors.clone(),
        );
    }

    pub fn policy(&self, policy: &str) -> PolicyCounters {
        let policy: Arc<str> = Arc::from(policy);
        let outcome = |outcome| {
            self.requests
                .get_or_create(&PolicyOutcome {
                    policy: policy.clone(),
                    outcome,
                })
                .clone()
        };
        PolicyCounters {
            allowed: outcome("allowed"),
            rejected: outcome("rejected"),
            unavailable: outcome("unavailable"),
            fallbacks: self
                .fallbacks
                .get_or_create(&PolicyLabel {
                    policy: policy.clone(),
                })
                .clone(),
        }
    }

    /// Sets the local store gauges (called at scrape time).
    pub fn set_local(&self, keys: usize, evictions: u64) {
        self.local_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.local_evictions
            .set(i64::try_from(evictions).unwrap_or(i64::MAX));
    }

    pub fn redis_call(&self, operation: &'static str, took: Duration) {
        self.redis_duration
            .get_or_create(&Operation { operation })
            .observe(took.as_secs_f64());
    }

    pub fn redis_error(&self, operation: &'static str, kind: &'static str) {
        self.redis_errors
            .get_or_create(&OperationKind { operation, kind })
            .inc();
    }
}
