//! Rate limiting: named policies compiled from the config, the key of each request under
//! them, and the admission decision made by the in-process store or by Redis.
//!
//! [`RateLimiter`] outlives snapshots: the local counts, the policy ids and the Redis
//! connection survive reloads. A snapshot holds [`Policy`] values; a route lists the ones it
//! applies, and a policy used by several routes counts once across them (its key decides what
//! is shared, not the route).

pub mod algo;
pub mod headers;
pub mod key;
pub mod local;
pub mod redis;
pub mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::config::model::{self, KeyPart, RateStore};
use crate::observe::metrics::{PolicyCounters, RateLimitMetrics};
use key::KeyContext;
use local::{ConcurrencyGuard, LocalStore};
use redis::{RedisSettings, RedisStore};
use spec::{now_micros, Algorithm, Decision};

/// One compiled policy, shared by the routes that apply it.
pub struct Policy {
    pub name: Arc<str>,
    /// Id in the local store, stable across reloads for the same name.
    id: u32,
    algorithm: Algorithm,
    key: Vec<KeyPart>,
    ipv6_prefix: u8,
    backend: Backend,
    /// This policy's ready-made response field parts.
    fields: headers::PolicyFields,
    counters: PolicyCounters,
    metrics: RateLimitMetrics,
    local: Arc<LocalStore>,
}

enum Backend {
    Local,
    Redis {
        store: Arc<RedisStore>,
        batch: Option<model::RateBatch>,
        fail_open: bool,
    },
}

/// Held for the whole exchange; frees concurrency places when dropped.
pub enum Hold {
    Local(ConcurrencyGuard),
    Redis(redis::Lease),
}

/// Decisions of the policies a request passed, for the response fields.
#[derive(Default)]
pub struct Passed {
    /// Most routes apply one policy: its decision needs no allocation.
    first: Option<(Arc<Policy>, Decision)>,
    more: Vec<(Arc<Policy>, Decision)>,
    pub holds: Vec<Hold>,
}

pub enum Admission {
    Pass(Passed),
    /// Refused by the last policy checked: 429.
    Limited(Passed),
    /// Redis failed and the policy fails closed: 503, with the decisions of the policies
    /// checked before it.
    Unavailable {
        policy: Arc<Policy>,
        passed: Passed,
    },
}

/// The `RateLimit-Policy` field of a route that applies `policies`: what an answer given
/// before they were checked (an access refusal, 413) still tells the client.
pub fn policy_field(policies: &[Arc<Policy>]) -> Option<http::HeaderValue> {
    let mut joined = Vec::new();
    for p in policies {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(p.fields.policy_value.as_bytes());
    }
    (!joined.is_empty())
        .then(|| http::HeaderValue::from_bytes(&joined).ok())
        .flatten()
}

/// How long a client refused because a fail-closed policy's store failed is asked to wait:
/// the store is usually back within a second (the Redis link reconnects with a short
/// back-off), and a longer wait would hold off clients after it is.
pub const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Policy {
    /// Some key part reads the client's location.
    pub fn uses_geo(&self) -> bool {
        self.key.iter().any(|k| matches!(k, KeyPart::Geo(_)))
    }

    /// The fields of a 503 answered because this policy's store failed: the decisions of
    /// the policies before it, this policy's `RateLimit-Policy` item, and `Retry-After`.
    pub fn write_unavailable(&self, passed: &Passed, headers: &mut http::HeaderMap) {
        passed.write_headers(headers);
        headers.append(
            headers::RATELIMIT_POLICY.clone(),
            self.fields.policy_value.clone(),
        );
        headers::retry_after(headers, UNAVAILABLE_RETRY_AFTER);
    }
}

/// Weights: a request admitted on an estimate of its weight (an `ai` route's tokens) and
/// settled with the real weight once known.
impl Policy {
    /// The algorithm's limit, as advertised.
    pub fn limit(&self) -> u64 {
        self.algorithm.limit()
    }

    /// The key of `ctx` under this policy.
    pub fn key_of(&self, ctx: &KeyContext<'_>) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        key::build(&mut key, &self.key, self.ipv6_prefix, ctx);
        key
    }

    /// Admits a weight of `cost` for `key` and counts it, or refuses it; `Err` when Redis
    /// failed and the policy fails closed.
    pub async fn consume(&self, key: &[u8], cost: u64) -> Result<Decision, ()> {
        let decision = match &self.backend {
            Backend::Local => {
                Ok(self
                    .local
                    .check(self.id, &self.algorithm, key, now_micros(), cost))
            }
            Backend::Redis {
                store, fail_open, ..
            } => {
                let start = Instant::now();
                let result = store.check(&self.name, &self.algorithm, key, cost).await;
                self.metrics.redis_call("check", start.elapsed());
                match result {
                    Ok(d) => Ok(d),
                    Err(e) => {
                        self.metrics.redis_error("check", e.kind());
                        crate::warn_throttled!(policy = %self.name, error = %e, "rate limit: Redis call failed");
                        match fail_open {
                            true => {
                                self.counters.fallbacks.inc();
                                let now = now_micros();
                                Ok(self.local.check(self.id, &self.algorithm, key, now, cost))
                            }
                            false => Err(()),
                        }
                    }
                }
            }
        };
        match &decision {
            Ok(d) if d.allowed => self.counters.allowed.inc(),
            Ok(_) => self.counters.rejected.inc(),
            Err(()) => self.counters.unavailable.inc(),
        };
        decision
    }

    /// Adds `delta` (negative: gives it back) to what `key` counted: the difference between
    /// a weight's estimate and its real value. A Redis failure is logged; the estimate
    /// stays counted.
    pub async fn settle(&self, key: &[u8], delta: i64) {
        if delta == 0 {
            return;
        }
        match &self.backend {
            Backend::Local => self
                .local
                .adjust(self.id, &self.algorithm, key, now_micros(), delta),
            Backend::Redis { store, .. } => {
                let start = Instant::now();
                let result = store.adjust(&self.name, &self.algorithm, key, delta).await;
                self.metrics.redis_call("adjust", start.elapsed());
                if let Err(e) = result {
                    self.metrics.redis_error("adjust", e.kind());
                    crate::warn_throttled!(policy = %self.name, error = %e, "rate limit: cannot settle a weight in Redis");
                }
            }
        }
    }
}

impl Passed {
    /// The policy that refused, if one did.
    pub fn refused_by(&self) -> Option<Arc<str>> {
        self.last()
            .filter(|(_, d)| !d.allowed)
            .map(|(p, _)| p.name.clone())
    }

    /// Adds `RateLimit-Policy`, `RateLimit` (and `X-RateLimit-*` if asked) for every policy
    /// checked; on a refusal also `Retry-After`.
    pub fn write_headers(&self, headers: &mut http::HeaderMap) {
        let all = self.first.iter().chain(&self.more);
        headers::write(headers, all.map(|(p, d)| (&p.fields, *d)));
        if let Some((_, d)) = self.last() {
            if let (false, Some(wait)) = (d.allowed, d.retry_after) {
                headers::retry_after(headers, wait);
            }
        }
    }
}

impl Passed {
    fn push(&mut self, policy: &Arc<Policy>, decision: Decision) {
        if self.first.is_none() {
            self.first = Some((policy.clone(), decision));
        } else {
            self.more.push((policy.clone(), decision));
        }
    }

    fn last(&self) -> Option<&(Arc<Policy>, Decision)> {
        self.more.last().or(self.first.as_ref())
    }
}

thread_local! {
    /// The key buffer of local decisions, reused by every request on the thread.
    static KEY: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(64));
}

/// Checks `policies` in order; the first refusal stops (earlier policies have counted the
/// request, as nginx's `limit_req` stacks do).
pub async fn admit(policies: &[Arc<Policy>], ctx: &KeyContext<'_>) -> Admission {
    let mut passed = Passed::default();
    for policy in policies {
        let answer = if matches!(policy.backend, Backend::Local) {
            Ok(KEY.with_borrow_mut(|key| {
                key::build(key, &policy.key, policy.ipv6_prefix, ctx);
                policy.decide_locally(key)
            }))
        } else {
            let mut key = Vec::with_capacity(64);
            key::build(&mut key, &policy.key, policy.ipv6_prefix, ctx);
            policy.decide(&key).await
        };
        let decision = match answer {
            Ok((decision, hold)) => {
                passed.holds.extend(hold);
                decision
            }
            Err(()) => {
                policy.counters.unavailable.inc();
                return Admission::Unavailable {
                    policy: policy.clone(),
                    passed,
                };
            }
        };
        passed.push(policy, decision);
        if !decision.allowed {
            policy.counters.rejected.inc();
            return Admission::Limited(passed);
        }
        policy.counters.allowed.inc();
    }
    Admission::Pass(passed)
}

impl Policy {
    /// The decision of a Redis-backed policy for one key; `Err` when Redis failed and the
    /// policy fails closed. (Local policies are decided synchronously in `admit`.)
    async fn decide(&self, key: &[u8]) -> Result<(Decision, Option<Hold>), ()> {
        let Backend::Redis {
            store,
            batch,
            fail_open,
        } = &self.backend
        else {
            return Ok(self.decide_locally(key));
        };
        let start = Instant::now();
        let (operation, result) = match (self.algorithm, batch) {
            (Algorithm::Concurrency { max }, _) => (
                "acquire",
                store.acquire(&self.name, max, key).await.map(|r| match r {
                    Ok(lease) => (lease.decision(), Some(Hold::Redis(lease))),
                    Err(refused) => (refused, None),
                }),
            ),
            (alg, Some(batch)) => (
                "batched",
                store
                    .check_batched(&self.name, &alg, (*batch).into(), key, 1)
                    .await
                    .map(|d| (d, None)),
            ),
            (alg, None) => (
                "check",
                store
                    .check(&self.name, &alg, key, 1)
                    .await
                    .map(|d| (d, None)),
            ),
        };
        self.metrics.redis_call(operation, start.elapsed());
        match result {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.metrics.redis_error(operation, e.kind());
                crate::warn_throttled!(policy = %self.name, error = %e, "rate limit: Redis call failed");
                if *fail_open {
                    self.counters.fallbacks.inc();
                    Ok(self.decide_locally(key))
                } else {
                    Err(())
                }
            }
        }
    }

    fn decide_locally(&self, key: &[u8]) -> (Decision, Option<Hold>) {
        match self.algorithm {
            Algorithm::Concurrency { max } => match self.local.acquire(self.id, max, key) {
                Ok(guard) => (guard.decision(), Some(Hold::Local(guard))),
                Err(refused) => (refused, None),
            },
            alg => (self.local.check(self.id, &alg, key, now_micros(), 1), None),
        }
    }
}

/// Rate-limit state that outlives snapshots.
pub struct RateLimiter {
    metrics: RateLimitMetrics,
    /// Contact Redis (false for `ferrogate check`, which only compiles).
    connect: bool,
    state: Mutex<State>,
}

struct State {
    local: Arc<LocalStore>,
    max_keys: usize,
    ids: HashMap<String, u32>,
    redis: Option<(model::Redis, Arc<RedisStore>)>,
    /// Runs the Redis connections and batch flushers, off the worker runtimes.
    runtime: Option<RedisRuntime>,
}

/// Errors compiling the rate-limit part of a config.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("cannot start the Redis client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("invalid Redis settings: {0}")]
    Redis(String),
}

impl RateLimiter {
    pub fn new(metrics: RateLimitMetrics) -> RateLimiter {
        RateLimiter {
            metrics,
            connect: true,
            state: Mutex::new(State {
                local: Arc::new(LocalStore::new(1)),
                max_keys: 0,
                ids: HashMap::new(),
                redis: None,
                runtime: None,
            }),
        }
    }

    /// A limiter that compiles policies but never contacts Redis.
    pub fn offline(metrics: RateLimitMetrics) -> RateLimiter {
        RateLimiter {
            connect: false,
            ..RateLimiter::new(metrics)
        }
    }

    /// Compiles the config's policies by name. The local store is replaced only when
    /// `max_keys` changes; the Redis client only when the `redis` settings change.
    pub fn compile(
        &self,
        config: &model::Config,
    ) -> Result<HashMap<String, Arc<Policy>>, RateLimitError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let rl = &config.rate_limiting;
        if state.max_keys != rl.max_keys {
            state.local = Arc::new(LocalStore::new(rl.max_keys.max(1)));
            state.max_keys = rl.max_keys;
        }
        let needs_redis = self.connect
            && rl
                .policies
                .iter()
                .any(|p| matches!(p.store, RateStore::Redis { .. }));
        let redis = match (&config.redis, needs_redis) {
            (Some(settings), true) => Some(state.redis_store(settings)?),
            _ => None,
        };
        let mut policies = HashMap::new();
        for p in &rl.policies {
            let next = u32::try_from(state.ids.len()).unwrap_or(u32::MAX);
            let id = *state.ids.entry(p.name.clone()).or_insert(next);
            let backend = match (&p.store, &redis) {
                (RateStore::Redis { batch, fail_open }, Some(store)) => Backend::Redis {
                    store: store.clone(),
                    batch: *batch,
                    fail_open: *fail_open,
                },
                _ => Backend::Local,
            };
            let policy = Policy {
                name: Arc::from(p.name.as_str()),
                id,
                algorithm: p.algorithm,
                key: p.key.clone(),
                ipv6_prefix: p.ipv6_prefix,
                backend,
                fields: headers::PolicyFields::new(&p.name, &p.algorithm, p.x_headers),
                counters: self.metrics.policy(&p.name),
                metrics: self.metrics.clone(),
                local: state.local.clone(),
            };
            policies.insert(p.name.clone(), Arc::new(policy));
        }
        Ok(policies)
    }

    /// Updates the local store gauges (at scrape time).
    pub fn refresh_metrics(&self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.metrics
            .set_local(state.local.len(), state.local.evictions());
    }
}

impl State {
    fn redis_store(&mut self, settings: &model::Redis) -> Result<Arc<RedisStore>, RateLimitError> {
        if let Some((current, store)) = &self.redis {
            if current == settings {
                return Ok(store.clone());
            }
        }
        if self.runtime.is_none() {
            self.runtime = Some(RedisRuntime::start().map_err(RateLimitError::Runtime)?);
        }
        let runtime = self.runtime.as_ref().map(|r| r.handle.clone());
        let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
        let store = RedisStore::new(RedisSettings::from_model(settings))
            .map_err(|e| RateLimitError::Redis(e.to_string()))?;
        let store = Arc::new(store);
        self.redis = Some((settings.clone(), store.clone()));
        Ok(store)
    }
}

/// A one-thread runtime for Redis connections and background flushes; stops with the
/// process.
struct RedisRuntime {
    handle: tokio::runtime::Handle,
}

impl RedisRuntime {
    fn start() -> std::io::Result<RedisRuntime> {
        Ok(RedisRuntime {
            handle: crate::background::start("ferrogate-redis")?,
        })
    }
}
