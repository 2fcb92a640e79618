//! The shared second tier of the HTTP cache: stored responses in Redis (standalone,
//! Sentinel or Cluster), read and written by every gateway instance, with purges by URL,
//! URL prefix, surrogate key or everything; and the purge bus that carries purges to every
//! instance's in-memory store (`bus.rs`).
//!
//! - An entry is stored under its primary key digest as a `Vary` variant, encoded by
//!   `store::codec`; a lookup fetches the live variants of the digest in one script call
//!   and selects the most recent one the request matches, as the in-memory store does.
//! - A write stores the variant, its expiry and its purge index memberships in one script
//!   call on one Cluster slot (key layout: `scripts.rs`), so a purge that starts after a
//!   write returned finds the entry, and never leaves one of its index members behind.
//! - Keys are spread over `groups` hash tags by digest: each group is one slot, so writes
//!   stay atomic on a Cluster while the data spreads over its nodes. URL and surrogate
//!   purges visit every group (one script call per group, concurrently).
//! - `purge_prefix` SCANs (per master) the URL index keys with a glob-escaped pattern, in
//!   batches, and empties each index found. `purge_all` is the same walk over every URL
//!   index: every stored entry is in exactly one URL index, so this removes all of them and
//!   leaves the indexes consistent. A generation number in every key would make it O(1),
//!   but costs a round trip (or a cross-slot read) on every lookup and write, and leaves
//!   the old generation in memory until it expires; purging everything is rare, lookups
//!   are not. Neither way is atomic against writes running during the purge: like a fill
//!   in progress during a local purge, such an entry may survive.
//! - Every call is bounded by `timeout` and fails at once while Redis is unreachable (the
//!   link reconnects in the background). Responses whose encoded size exceeds
//!   `max_object_bytes` are not stored.
//!
//! Needs Redis 5 or later (scripts read `TIME` before writing). The index keys must not be
//! evicted before the entries (`maxmemory-policy` `volatile-ttl`, or no eviction of this
//! namespace): index sets expire last, but an evicted index set hides its entries from
//! purges until they expire.

#[path = "shared/bus.rs"]
mod bus;
#[path = "shared/link.rs"]
mod link;
#[path = "shared/scripts.rs"]
mod scripts;
#[path = "shared/settings.rs"]
mod settings;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use redis::{FromRedisValue, RedisResult, ScriptInvocation};
use tokio::sync::watch;

use super::store::{codec, Digest, Entry, MAX_VARIANTS};
use super::vary::Vary;
use crate::redis_link::Failure;
use link::{Conn, Link};
use scripts::{IndexKind, Keys};

pub use bus::{BusStats, MessageError, PurgeBus, PurgeMessage, MAX_MESSAGE_BYTES};
pub use settings::{TierSettings, CLUSTER_GROUPS, DEFAULT_PREFIX};

/// Longest Redis expiry set; lifetimes beyond are stored for this long.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Script calls per index set before a purge gives up on a set that writers keep filling.
const MAX_PURGE_ROUNDS: usize = 1024;

/// Why the tier cannot be created, or a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("invalid redis {mode} settings for the cache tier: {source}")]
    Invalid {
        mode: &'static str,
        source: redis::RedisError,
    },
    #[error("redis {0} mode needs at least one url")]
    NoUrls(&'static str),
    #[error("cache key prefix {0:?} must not contain '{{' or '}}' (they would move the hash tag)")]
    Prefix(String),
    #[error("the cache tier must be created inside a tokio runtime")]
    NoRuntime,
    /// Redis is unreachable; the tier reconnects in the background.
    #[error("redis is not connected")]
    NotConnected,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis connection failed: {0}")]
    Connection(redis::RedisError),
    #[error("redis refused the call: {0}")]
    Redis(redis::RedisError),
    #[error("invalid purge message: {0}")]
    Message(#[from] MessageError),
}

/// Whether [`RedisTier::put`] stored the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// Encoded larger than `max_object_bytes`.
    TooLarge,
    /// `Vary: *`: no request could ever select it.
    Unusable,
    /// No time left to serve it.
    Expired,
}

/// The Redis tier. Cloning shares the connection; the background task stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

struct Inner {
    link: Arc<Link>,
    keys: Keys,
    settings: TierSettings,
    _stop: watch::Sender<()>,
}

impl RedisTier {
    /// Checks the settings and starts connecting in the background, on the current tokio
    /// runtime; calls fail with [`TierError::NotConnected`] until connected.
    pub fn new(settings: TierSettings) -> Result<RedisTier, TierError> {
        if settings.prefix.contains(['{', '}']) {
            return Err(TierError::Prefix(settings.prefix));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TierError::NoRuntime)?;
        let connector = link::Connector::new(&settings)?;
        let link = Arc::new(Link::default());
        let (stop, stopped) = watch::channel(());
        runtime.spawn(link::supervise(
            Arc::clone(&link),
            connector,
            settings.timing(),
            stopped,
        ));
        Ok(RedisTier {
            inner: Arc::new(Inner {
                link,
                keys: Keys::new(&settings.prefix, settings.groups),
                settings,
                _stop: stop,
            }),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// The most recent live variant of `digest` that `request` selects. Variants that do
    /// not decode (written by another version) count as absent.
    pub async fn get(
        &self,
        digest: &Digest,
        request: &HeaderMap,
    ) -> Result<Option<Entry>, TierError> {
        let keys = self.inner.keys.entry(digest);
        let mut call = scripts::GET.prepare_invoke();
        call.key(&keys.entry).key(&keys.expiry);
        let encoded: Vec<Option<Vec<u8>>> = self.invoke(&call).await?;
        let mut best: Option<Entry> = None;
        for bytes in encoded.iter().flatten() {
            let entry = match codec::decode(bytes) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::debug!(%error, digest = %keys.hex, "cache tier: undecodable variant");
                    continue;
                }
            };
            let newer = best
                .as_ref()
                .is_none_or(|best| entry.meta.times.response_time > best.meta.times.response_time);
            if newer && entry.meta.vary.matches(request) {
                best = Some(entry);
            }
        }
        Ok(best)
    }

    /// Stores `entry` as a variant of `digest` for `ttl` (how long it can still be served:
    /// freshness plus stale allowances), replacing the variant with the same `Vary` values,
    /// and indexes it by URL and surrogate keys.
    pub async fn put(
        &self,
        digest: &Digest,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<PutOutcome, TierError> {
        if entry.meta.vary == Vary::Any {
            return Ok(PutOutcome::Unusable);
        }
        let ttl_ms = ttl.min(MAX_TTL).as_millis() as u64;
        if ttl_ms == 0 {
            return Ok(PutOutcome::Expired);
        }
        let max = self.inner.settings.max_object_bytes;
        if entry.body.len() > max {
            return Ok(PutOutcome::TooLarge);
        }
        let encoded = match codec::encode(entry) {
            Ok(encoded) => encoded,
            Err(error) => {
                tracing::debug!(%error, "cache tier: entry not encodable");
                return Ok(PutOutcome::Unusable);
            }
        };
        if encoded.len() > max {
            return Ok(PutOutcome::TooLarge);
        }
        let keys = self.inner.keys.entry(digest);
        let mut call = scripts::PUT.prepare_invoke();
        call.key(&keys.entry)
            .key(&keys.expiry)
            .key(&keys.memberships)
            .key(Keys::index(&keys.base, IndexKind::Url, &entry.url));
        let mut tags: Vec<&str> = entry.surrogate_keys.iter().map(|k| &**k).collect();
        tags.sort_unstable();
        tags.dedup();
        for tag in tags {
            call.key(Keys::index(&keys.base, IndexKind::Surrogate, tag));
        }
        call.arg(&keys.base)
            .arg(&keys.hex)
            .arg(scripts::variant_id(&entry.meta.vary))
            .arg(encoded)
            .arg(ttl_ms)
            .arg(MAX_VARIANTS);
        let _: i64 = self.invoke(&call).await?;
        Ok(PutOutcome::Stored)
    }

    /// Removes every variant stored under exactly this normalised URL; returns how many.
    pub async fn purge_url(&self, url: &str) -> Result<usize, TierError> {
        self.purge_in_every_group(IndexKind::Url, url).await
    }

    /// Removes every variant tagged with surrogate key `key`; returns how many.
    pub async fn purge_surrogate(&self, key: &str) -> Result<usize, TierError> {
        self.purge_in_every_group(IndexKind::Surrogate, key).await
    }

    /// Removes every variant whose normalised URL starts with `prefix`; returns how many.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<usize, TierError> {
        self.purge_scanned(prefix).await
    }

    /// Removes every variant in the namespace; returns how many.
    pub async fn purge_all(&self) -> Result<usize, TierError> {
        self.purge_scanned("").await
    }

    async fn purge_in_every_group(&self, kind: IndexKind, name: &str) -> Result<usize, TierError> {
        let keys = &self.inner.keys;
        let purges = (0..keys.groups()).map(|group| {
            let base = keys.base(group);
            let index = Keys::index(&base, kind, name);
            async move { self.purge_index(&base, index.as_bytes(), kind).await }
        });
        let mut removed = 0;
        for result in futures_util::future::join_all(purges).await {
            removed += result?;
        }
        Ok(removed)
    }

    /// Walks the URL index keys of every master whose URL starts with `url_prefix`, a SCAN
    /// batch at a time, and empties each.
    async fn purge_scanned(&self, url_prefix: &str) -> Result<usize, TierError> {
        let keys = &self.inner.keys;
        let batch = self.inner.settings.purge_batch.max(1);
        let pattern = keys.url_pattern(url_prefix);
        let nodes = self
            .call(|mut conn| async move { conn.scan_nodes().await })
            .await?;
        let mut removed = 0;
        for node in &nodes {
            let mut cursor = 0;
            loop {
                let pattern = &pattern;
                let (next, found) = self
                    .call(|mut conn: Conn| async move {
                        conn.scan_page(node, cursor, pattern, batch).await
                    })
                    .await?;
                let purges = found.iter().filter_map(|key| {
                    let (group, url) = keys.parse_url_key(key)?;
                    url.starts_with(url_prefix.as_bytes()).then(|| {
                        let base = keys.base(group);
                        async move { self.purge_index(&base, key, IndexKind::Url).await }
                    })
                });
                for result in futures_util::future::join_all(purges).await {
                    removed += result?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Empties one index set, a batch of members per call, removing what they index.
    async fn purge_index(
        &self,
        base: &str,
        index: &[u8],
        kind: IndexKind,
    ) -> Result<usize, TierError> {
        let batch = self.inner.settings.purge_batch.max(1);
        let mut removed = 0;
        for _ in 0..MAX_PURGE_ROUNDS {
            let mut call = scripts::PURGE_SET.prepare_invoke();
            call.key(index).arg(base).arg(batch).arg(kind.arg());
            let (gone, left): (u64, u64) = self.invoke(&call).await?;
            removed += gone as usize;
            if left == 0 {
                return Ok(removed);
            }
        }
        tracing::warn!(
            index = %String::from_utf8_lossy(index),
            "cache tier: purge stopped on an index that keeps growing"
        );
        Ok(removed)
    }

    /// Runs one script call within the timeout. `invoke_async` sends EVALSHA and, on
    /// NOSCRIPT (a restarted or flushed server), loads the script and retries.
    async fn invoke<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, TierError> {
        self.call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await
    }

    /// Runs one round trip on the current connection within the timeout.
    async fn call<T, F, Fut>(&self, run: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let link = &self.inner.link;
        let timeout = self.inner.settings.timeout;
        let Some(conn) = link.conn() else {
            return Err(TierError::NotConnected);
        };
        match tokio::time::timeout(timeout, run(conn)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(classify(link, timeout, e)),
            Err(_) => {
                link.suspect();
                Err(TierError::Timeout(timeout))
            }
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("settings", &self.inner.settings)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Sorts a client error (see `crate::redis_link::classify`, which also tells the link when
/// the connection looks broken).
fn classify(link: &Link, timeout: Duration, e: redis::RedisError) -> TierError {
    match crate::redis_link::classify(link, &e) {
        Failure::Connection => TierError::Connection(e),
        Failure::Timeout => TierError::Timeout(timeout),
        Failure::Server => TierError::Redis(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "shared/tests.rs"]
mod tests;
