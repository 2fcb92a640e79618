//! Rate-limit counts shared by every gateway instance through Redis (standalone, Sentinel or
//! Cluster), in three ways:
//! - strict ([`RedisStore::check`]): one script call per request, one round trip, exact
//!   across instances. The scripts follow `algo.rs` on Redis's clock (`TIME`), so instances
//!   whose clocks disagree still agree on windows; quotas take their calendar period from the
//!   caller's clock.
//! - concurrency leases ([`RedisStore::acquire`]): strict only.
//! - batched ([`RedisStore::check_batched`], `batch.rs`): fixed windows, quotas and sliding
//!   windows decided locally and pushed in the background; token buckets and concurrency are
//!   strict only (a batched call for them checks strictly).
//!
//! Every call is bounded by `timeout` and fails at once while Redis is unreachable (the link
//! reconnects on its own, `link.rs`); the caller decides whether that fails open or closed.
//! Key names and their hashing: `scripts.rs`.

mod batch;
mod link;
mod scripts;
mod settings;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ::redis::ScriptInvocation;
use tokio::sync::{mpsc, watch};

use super::spec::{now_micros, Algorithm, Decision};
use crate::redis_link::Failure;
use batch::{Admit, Table};
use link::Link;

pub use batch::BatchLimits;
pub use settings::{RedisMode, RedisSettings};

/// Why a store cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid redis {mode} settings: {source}")]
    Invalid {
        mode: &'static str,
        source: ::redis::RedisError,
    },
    #[error("redis {0} mode needs at least one url")]
    NoUrls(&'static str),
    #[error("the redis store must be created inside a tokio runtime")]
    NoRuntime,
}

/// Why a call did not decide.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable; the store reconnects in the background.
    #[error("redis is not connected")]
    NotConnected,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis connection failed: {0}")]
    Connection(::redis::RedisError),
    #[error("redis refused the call: {0}")]
    Redis(::redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// Shared by clones; the background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// A concurrency place held in Redis, freed when dropped. The release is queued for a
/// background task (dropping never waits); if it cannot be sent, the lease expires after
/// `lease_ttl`.
#[derive(Debug)]
pub struct Lease {
    release: Option<Release>,
    decision: Decision,
    releases: mpsc::UnboundedSender<Release>,
}

/// Counters since the store started, for metrics. Latency is the caller's to measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub connected: bool,
    /// Connections established (1 at the first, +1 per reconnection).
    pub connects: u64,
    /// Strict checks and lease calls, including those refused at once while disconnected.
    pub calls: u64,
    pub timeouts: u64,
    /// Connection problems, `NotConnected` included.
    pub connection_errors: u64,
    /// Errors answered by Redis and unexpected replies.
    pub redis_errors: u64,
    /// Batched requests decided locally.
    pub batched_decisions: u64,
    /// Batched requests that waited for a push (`max_pending` reached).
    pub batched_waits: u64,
    /// Batched requests checked strictly because the table was full.
    pub batched_fallbacks: u64,
    /// Keys pushed by the batch flusher, and how many of those pushes failed.
    pub pushed_keys: u64,
    pub push_errors: u64,
    /// Keys the batched mode tracks now.
    pub batched_keys: usize,
}

struct Inner {
    link: Arc<Link>,
    batch: Arc<Table>,
    stats: Arc<Stats>,
    releases: mpsc::UnboundedSender<Release>,
    timeout: Duration,
    lease_ttl: Duration,
    /// Makes lease ids unique across instances.
    instance: u64,
    next_lease: AtomicU64,
    /// Dropped with the last clone: the background tasks see it and end.
    _stop: watch::Sender<()>,
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    timeouts: AtomicU64,
    connection_errors: AtomicU64,
    redis_errors: AtomicU64,
    batched_decisions: AtomicU64,
    batched_waits: AtomicU64,
    batched_fallbacks: AtomicU64,
    pushed_keys: AtomicU64,
    push_errors: AtomicU64,
}

/// One lease to remove: the sorted set and the member.
#[derive(Debug)]
struct Release {
    key: String,
    id: String,
}

impl StoreError {
    /// `timeout`, `connection` or `redis`, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::NotConnected | StoreError::Connection(_) => "connection",
            StoreError::Redis(_) | StoreError::Reply(_) => "redis",
        }
    }
}

impl RedisStore {
    /// Starts the connection and batch tasks on the current tokio runtime and returns at
    /// once: Redis need not be up, calls fail until it is. The runtime must outlive the
    /// store (the gateway gives it one of its own).
    pub fn new(settings: RedisSettings) -> Result<RedisStore, RedisError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RedisError::NoRuntime)?;
        let connector = link::Connector::new(&settings)?;
        let link = Arc::new(Link::default());
        let stats = Arc::new(Stats::default());
        let batch = Arc::new(Table::new(settings.batch_max_keys));
        let (stop, stopped) = watch::channel(());
        let (releases, released) = mpsc::unbounded_channel();
        let timing = link::Timing {
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            reconnect_min: settings.reconnect_min,
            reconnect_max: settings.reconnect_max.max(settings.reconnect_min),
            health_interval: settings.health_interval,
        };
        runtime.spawn(link::supervise(
            link.clone(),
            connector,
            timing,
            stopped.clone(),
        ));
        runtime.spawn(batch::flush_loop(
            batch.clone(),
            link.clone(),
            stats.clone(),
            settings.timeout,
            stopped,
        ));
        runtime.spawn(release_loop(released, link.clone(), settings.timeout));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                link,
                batch,
                stats,
                releases,
                timeout: settings.timeout,
                lease_ttl: settings.lease_ttl,
                instance: fastrand::u64(..),
                next_lease: AtomicU64::new(0),
                _stop: stop,
            }),
        })
    }

    /// Strict check: decides and counts one request of weight `cost` in one round trip.
    /// For `Concurrency` it only reports whether a lease is free; [`RedisStore::acquire`]
    /// takes one.
    pub async fn check(
        &self,
        policy: &str,
        alg: &Algorithm,
        key: &[u8],
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let base = scripts::base_key(policy, key);
        let reply = self
            .inner
            .invoke(&scripts::check_call(base, alg, cost))
            .await?;
        scripts::decision(alg, &reply).map_err(|e| self.inner.failed(e))
    }

    /// Adds `delta` to what `key` counted under a fixed window or a quota (a settlement).
    pub async fn adjust(
        &self,
        policy: &str,
        alg: &Algorithm,
        key: &[u8],
        delta: i64,
    ) -> Result<(), StoreError> {
        let base = scripts::base_key(policy, key);
        let Some(call) = scripts::adjust_call(base, alg, delta) else {
            return Ok(());
        };
        self.inner.invoke(&call).await.map(|_| ())
    }

    /// Takes one of `max` concurrency places for `key`: `Ok(Ok(lease))` holds it until the
    /// lease is dropped, `Ok(Err(decision))` is the refusal (retry after 1 s, as the local
    /// store says).
    pub async fn acquire(
        &self,
        policy: &str,
        max: u64,
        key: &[u8],
    ) -> Result<Result<Lease, Decision>, StoreError> {
        let base = scripts::base_key(policy, key);
        let n = self.inner.next_lease.fetch_add(1, Relaxed);
        let id = format!("{:016x}:{n:x}", self.inner.instance);
        let call = scripts::lease_call(&base, max, self.inner.lease_ttl, &id);
        // Armed before the call: if it times out or the caller gives up after Redis took the
        // lease, dropping this frees it.
        let mut lease = Lease {
            release: Some(Release {
                key: scripts::lease_key(&base),
                id,
            }),
            decision: scripts::lease_refused(max),
            releases: self.inner.releases.clone(),
        };
        let reply = match self.inner.invoke(&call).await {
            Ok(reply) => reply,
            Err(e) => {
                if let StoreError::NotConnected = e {
                    // Nothing was sent.
                    lease.release = None;
                }
                return Err(e);
            }
        };
        lease.decision = scripts::lease_decision(max, &reply).map_err(|e| self.inner.failed(e))?;
        if !lease.decision.allowed {
            lease.release = None;
            return Ok(Err(lease.decision));
        }
        Ok(Ok(lease))
    }

    /// Batched check (see `batch.rs`): decided locally, no round trip, unless this instance
    /// already has `limits.max_pending` unconfirmed admissions for the key; then it waits for
    /// the next push, at most `timeout`. Token buckets and concurrency are checked strictly.
    pub async fn check_batched(
        &self,
        policy: &str,
        alg: &Algorithm,
        limits: BatchLimits,
        key: &[u8],
        cost: u64,
    ) -> Result<Decision, StoreError> {
        if let Algorithm::TokenBucket { .. } | Algorithm::Concurrency { .. } = alg {
            return self.check(policy, alg, key, cost).await;
        }
        let inner = &*self.inner;
        let name = scripts::base_key(policy, key);
        let deadline = tokio::time::Instant::now() + inner.timeout;
        let mut rounds = inner.batch.rounds.subscribe();
        loop {
            if !inner.link.is_connected() {
                return Err(inner.failed(StoreError::NotConnected));
            }
            match inner.batch.admit(&name, alg, limits, now_micros(), cost) {
                Admit::Decided(decision) => {
                    inner.stats.batched_decisions.fetch_add(1, Relaxed);
                    return Ok(decision);
                }
                Admit::NotBatched => return self.check(policy, alg, key, cost).await,
                Admit::NoRoom => {
                    inner.stats.batched_fallbacks.fetch_add(1, Relaxed);
                    return self.check(policy, alg, key, cost).await;
                }
                Admit::Wait => {
                    inner.stats.batched_waits.fetch_add(1, Relaxed);
                    inner.batch.wake();
                    match tokio::time::timeout_at(deadline, rounds.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(inner.failed(StoreError::NotConnected)),
                        Err(_) => return Err(inner.failed(StoreError::Timeout(inner.timeout))),
                    }
                }
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.stats;
        StoreStats {
            connected: self.inner.link.is_connected(),
            connects: self.inner.link.connects(),
            calls: s.calls.load(Relaxed),
            timeouts: s.timeouts.load(Relaxed),
            connection_errors: s.connection_errors.load(Relaxed),
            redis_errors: s.redis_errors.load(Relaxed),
            batched_decisions: s.batched_decisions.load(Relaxed),
            batched_waits: s.batched_waits.load(Relaxed),
            batched_fallbacks: s.batched_fallbacks.load(Relaxed),
            pushed_keys: s.pushed_keys.load(Relaxed),
            push_errors: s.push_errors.load(Relaxed),
            batched_keys: self.inner.batch.len(),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The admission, with the places left after this one.
    pub fn decision(&self) -> Decision {
        self.decision
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // Fails only when the store's tasks are gone; the lease then expires.
            let _ = self.releases.send(release);
        }
    }
}

impl Inner {
    /// Runs one script call within the timeout.
    async fn invoke(&self, call: &ScriptInvocation<'_>) -> Result<Vec<i64>, StoreError> {
        self.stats.calls.fetch_add(1, Relaxed);
        let Some(mut conn) = self.link.conn() else {
            return Err(self.failed(StoreError::NotConnected));
        };
        // `invoke_async` sends EVALSHA and, on NOSCRIPT (a restarted or flushed server),
        // loads the script and retries, all within this one timeout.
        match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.failed(classify(&self.link, self.timeout, e))),
            Err(_) => {
                self.link.suspect();
                Err(self.failed(StoreError::Timeout(self.timeout)))
            }
        }
    }

    /// Counts an error by kind and hands it back.
    fn failed(&self, e: StoreError) -> StoreError {
        let counter = match e {
            StoreError::Timeout(_) => &self.stats.timeouts,
            StoreError::NotConnected | StoreError::Connection(_) => &self.stats.connection_errors,
            StoreError::Redis(_) | StoreError::Reply(_) => &self.stats.redis_errors,
        };
        counter.fetch_add(1, Relaxed);
        e
    }
}

/// Sorts a client error into the three kinds (see `crate::redis_link::classify`, which also
/// tells the link when the connection looks broken).
fn classify(link: &Link, timeout: Duration, e: ::redis::RedisError) -> StoreError {
    match crate::redis_link::classify(link, &e) {
        Failure::Connection => StoreError::Connection(e),
        Failure::Timeout => StoreError::Timeout(timeout),
        Failure::Server => StoreError::Redis(e),
    }
}

/// Removes released leases, a batch at a time; ends when the store and every lease are gone.
async fn release_loop(
    mut released: mpsc::UnboundedReceiver<Release>,
    link: Arc<Link>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(64);
    while released.recv_many(&mut batch, 256).await > 0 {
        // Disconnected: the leases expire after `lease_ttl` instead.
        if let Some(conn) = link.conn() {
            let calls = batch.iter().map(|r| {
                let mut conn = conn.clone();
                let mut zrem = ::redis::cmd("ZREM");
                zrem.arg(&r.key).arg(&r.id);
                async move {
                    let _ = tokio::time::timeout(timeout, zrem.query_async::<i64>(&mut conn)).await;
                }
            });
            futures_util::future::join_all(calls).await;
        }
        batch.clear();
    }
}
