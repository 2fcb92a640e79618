//! Metrics of `ai` routes, per route, alias, provider, provider model and consumer:
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `ferrogate_ai_tokens_total` | counter | `route`, `alias`, `provider`, `model`, `consumer`, `direction` (`input`, `output`), `estimated` (`true` when the gateway counted them) |
//! | `ferrogate_ai_cost_total` | counter | `route`, `alias`, `provider`, `model`, `consumer` (from `ai.prices`) |
//! | `ferrogate_ai_requests_total` | counter | `route`, `alias`, `provider`, `model`, `consumer` (exchanges that ended with an answer) |
//! | `ferrogate_ai_attempts_total` | counter | `route`, `provider`, `outcome` (`ok`, `fallback`, `failed`) |
//! | `ferrogate_ai_time_to_first_token_seconds` | histogram | `provider`, `model` |
//! | `ferrogate_ai_output_tokens_per_second` | histogram | `provider`, `model` |
//!
//! An exchange is recorded once, when its answer (or its stream) ends.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Exchange {
    route: Arc<str>,
    alias: Arc<str>,
    provider: Arc<str>,
    model: Arc<str>,
    consumer: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Tokens {
    route: Arc<str>,
    alias: Arc<str>,
    provider: Arc<str>,
    model: Arc<str>,
    consumer: Arc<str>,
    direction: &'static str,
    estimated: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Attempt {
    route: Arc<str>,
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Model {
    provider: Arc<str>,
    model: Arc<str>,
}

type Buckets = fn() -> Histogram;

fn ttft_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn rate_histogram() -> Histogram {
    // 1 to about 4,000 tokens per second.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Cheap to clone; shared by every worker.
#[derive(Debug, Clone)]
pub struct AiMetrics {
    tokens: Family<Tokens, Counter>,
    cost: Family<Exchange, Counter<f64, AtomicU64>>,
    requests: Family<Exchange, Counter>,
    attempts: Family<Attempt, Counter>,
    ttft: Family<Model, Histogram, Buckets>,
    rate: Family<Model, Histogram, Buckets>,
}

impl Default for AiMetrics {
    fn default() -> Self {
        AiMetrics {
            tokens: Family::default(),
            cost: Family::default(),
            requests: Family::default(),
            attempts: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            rate: Family::new_with_constructor(rate_histogram),
        }
    }
}

/// One exchange as the metrics see it.
#[derive(Debug, Clone)]
pub struct AiExchange<'a> {
    pub route: &'a Arc<str>,
    pub alias: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// The caller's name, or empty.
    pub consumer: &'a str,
    pub input: u64,
    pub output: u64,
    pub estimated: bool,
    pub cost: f64,
    pub ttft: Option<Duration>,
    /// From the first token to the end, for tokens per second.
    pub generation: Option<Duration>,
}

impl AiMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_ai_tokens",
            "Tokens of ai routes by route, alias, provider, model, consumer, direction and whether the gateway estimated them",
            self.tokens.clone(),
        );
        registry.register(
            "ferrogate_ai_cost",
            "Cost of ai exchanges from the configured price table",
            self.cost.clone(),
        );
        registry.register(
            "ferrogate_ai_requests",
            "Exchanges of ai routes that ended with an answer",
            self.requests.clone(),
        );
        registry.register(
            "ferrogate_ai_attempts",
            "Calls to model providers by outcome (ok, fallback to the next target, failed)",
            self.attempts.clone(),
        );
        registry.register(
            "ferrogate_ai_time_to_first_token_seconds",
            "Time from the request to the first token relayed",
            self.ttft.clone(),
        );
        registry.register(
            "ferrogate_ai_output_tokens_per_second",
            "Output tokens per second of generation (after the first token)",
            self.rate.clone(),
        );
    }

    /// A call to `provider` ended with `outcome` (`ok`, `fallback`, `failed`).
    pub fn attempt(&self, route: &Arc<str>, provider: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&Attempt {
                route: route.clone(),
                provider: Arc::from(provider),
                outcome,
            })
            .inc();
    }

    pub fn exchange(&self, e: &AiExchange<'_>) {
        let labels = Exchange {
            route: e.route.clone(),
            alias: Arc::from(e.alias),
            provider: Arc::from(e.provider),
            model: Arc::from(e.model),
            consumer: Arc::from(e.consumer),
        };
        self.requests.get_or_create(&labels).inc();
        if e.cost > 0.0 {
            self.cost.get_or_create(&labels).inc_by(e.cost);
        }
        let estimated = if e.estimated { "true" } else { "false" };
        for (direction, n) in [("input", e.input), ("output", e.output)] {
            let t = Tokens {
                route: labels.route.clone(),
                alias: labels.alias.clone(),
                provider: labels.provider.clone(),
                model: labels.model.clone(),
                consumer: labels.consumer.clone(),
                direction,
                estimated,
            };
            self.tokens.get_or_create(&t).inc_by(n);
        }
        let model = Model {
            provider: labels.provider,
            model: labels.model,
        };
        if let Some(t) = e.ttft {
            self.ttft.get_or_create(&model).observe(t.as_secs_f64());
        }
        if let Some(g) = e.generation.filter(|g| !g.is_zero() && e.output > 1) {
            let rate = e.output as f64 / g.as_secs_f64();
            self.rate.get_or_create(&model).observe(rate);
        }
    }
}
