//! The in-memory cache store: stored responses by primary key and `Vary` variant, bounded
//! in bytes, admitted by frequency, filled while the response streams to the client, with
//! request coalescing, purge indexes and update in place after a 304.
//!
//! Layout and choices:
//! - The store is split into shards by a keyed hash of the primary key; each shard is one
//!   `Mutex` over its entries, eviction queue, frequency sketch and purge indexes, so every
//!   operation on a key takes exactly one lock and the indexes never disagree with the
//!   entries. A hit is: one lock, one hash-map probe, an `Arc` clone.
//! - Each shard owns `max_bytes / shards` bytes; an object larger than that (or than
//!   `max_object_bytes`) is never stored. Charged size is [`Entry::charged_size`].
//! - Eviction is CLOCK (second chance) per shard: a hit only sets a flag, no list moves under
//!   the lock. When space is needed, the candidate must be estimated more frequent than the
//!   CLOCK victim by the TinyLFU sketch (see `admission`), or it is rejected and the victim
//!   gets another round: a scan of one-off URLs cannot flush the hot set.
//! - In-progress fills live next to the entries of their key (see `fill`); lookups that find
//!   one follow it instead of going upstream. A fill is charged once finished and admitted.
//! - Exact-URL and surrogate-key purges go through indexes; a prefix purge walks the sorted
//!   URL index range of each shard, not every entry.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::freshness::StoredMeta;
use super::key::{CacheKey, KEY_LEN};
use super::vary::Vary;

#[path = "store/admission.rs"]
mod admission;
#[path = "store/codec.rs"]
pub mod codec;
#[path = "store/fill.rs"]
mod fill;
#[path = "store/index.rs"]
mod index;
#[path = "store/shard.rs"]
mod shard;

pub use fill::{
    FillBody, FillError, FillFollower, FillHead, FillLeader, FollowOutcome, OriginReason,
};

use shard::{Begin, Shard};

/// A primary key as stored: [`CacheKey::digest`].
pub type Digest = [u8; KEY_LEN];

/// Bytes charged per entry beyond its body and fields: the entry, its `Arc`, metadata,
/// map slot, eviction queue item and index references, rounded up.
pub const ENTRY_OVERHEAD: usize = 512;
/// Bytes charged per header field line beyond its name and value (map bucket and links).
pub const FIELD_OVERHEAD: usize = 48;
/// Most `Vary` variants kept per primary key; storing another drops the oldest.
pub const MAX_VARIANTS: usize = 8;

/// Size limits and coalescing of a [`CacheStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Upper bound of the charged bytes of all entries.
    pub max_bytes: usize,
    /// Largest charged size of one entry; a fill whose body outgrows it is not stored.
    pub max_object_bytes: usize,
    /// Number of independently locked parts (at least 1).
    pub shards: usize,
    /// How long a follower waits for the leader's response head before it goes upstream
    /// itself; also the age after which a fill still without head is taken over.
    pub lock_timeout: Duration,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub entries: u64,
    pub bytes: u64,
    /// Entries removed to make room (or beyond [`MAX_VARIANTS`]).
    pub evictions: u64,
    /// Candidates not stored because they were less frequent than the eviction victim.
    pub admissions_rejected: u64,
    /// Fills abandoned by their leader (upstream error, client gone, dropped) or grown
    /// past the object size limit.
    pub fills_abandoned: u64,
}

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub meta: StoredMeta,
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// One contiguous buffer: a hit clones it without copying, and it never pins the
    /// larger read buffers the body chunks arrived in.
    pub body: Bytes,
    pub surrogate_keys: Vec<Box<str>>,
    /// The normalised URL ([`CacheKey::url`]), for purges.
    pub url: Box<str>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A stored variant selected by the request; freshness is the caller's decision.
    Hit(Arc<Entry>),
    /// Nothing usable and nobody fetching it: fetch it and fill the store.
    Miss(FillLeader),
    /// Another request is fetching this key: wait for its response.
    Follow(FillFollower),
}

/// Whether an entry was stored, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Stored; later lookups hit it.
    Stored,
    /// Larger than `max_object_bytes` or a shard's share of `max_bytes`.
    TooLarge,
    /// Less frequently requested than the entry it would have evicted.
    Rejected,
    /// `Vary: *`: no request could ever select it.
    Unusable,
    /// Purged or invalidated while filling, or taken over by a newer fill.
    Cancelled,
    /// The leader abandoned the fill, or finished it without a response head.
    Abandoned,
}

/// A byte-bounded, sharded store of cached responses. Cloning shares the store.
#[derive(Debug, Clone)]
pub struct CacheStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Keys the shard choice, so that nobody can aim many URLs at one shard.
    seed: u64,
    lock_timeout: Duration,
}

impl Entry {
    /// Bytes this entry is charged: body, field lines, URL, surrogate keys, `Vary` values
    /// and a fixed overhead.
    pub fn charged_size(&self) -> usize {
        let fields: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
            .sum();
        let surrogates: usize = self.surrogate_keys.iter().map(|key| key.len() + 16).sum();
        let vary: usize = match &self.meta.vary {
            Vary::Fields(fields) => fields
                .iter()
                .map(|f| f.name.as_str().len() + f.value.as_ref().map_or(0, Bytes::len) + 32)
                .sum(),
            Vary::Absent | Vary::Any => 0,
        };
        ENTRY_OVERHEAD + self.body.len() + fields + self.url.len() + surrogates + vary
    }
}

impl CacheStore {
    pub fn new(settings: StoreSettings) -> Self {
        let shards = settings.shards.max(1);
        let shards = (0..shards)
            .map(|i| {
                let budget =
                    settings.max_bytes / shards + usize::from(i < settings.max_bytes % shards);
                Mutex::new(Shard::new(budget, settings.max_object_bytes.min(budget)))
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                seed: RandomState::new().build_hasher().finish() | 1,
                lock_timeout: settings.lock_timeout,
            }),
        }
    }

    /// Finds the most recent variant of `key` that `request` selects; otherwise joins the
    /// fill in progress for the key, or starts one.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let mut shard = self.inner.shard(&key.digest);
        if let Some(entry) = shard.hit(&key.digest, request) {
            return Lookup::Hit(entry);
        }
        let begin = shard.begin(&key.digest, &key.url, self.inner.lock_timeout);
        drop(shard);
        self.lookup_of(key, request, begin)
    }

    /// Like [`CacheStore::lookup`] without serving a stored variant: for requests that must
    /// reach the origin although one exists (validation that may bring a new response).
    /// Concurrent such requests still coalesce.
    pub fn begin_fill(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let mut shard = self.inner.shard(&key.digest);
        shard.count_access(&key.digest);
        let begin = shard.begin(&key.digest, &key.url, self.inner.lock_timeout);
        drop(shard);
        self.lookup_of(key, request, begin)
    }

    /// Every stored variant of a primary key, most recent first (to build a validation
    /// request or pick the variants a 304 updates).
    pub fn variants(&self, digest: &Digest) -> Vec<Arc<Entry>> {
        self.inner.shard(digest).variants(digest)
    }

    /// Stores a complete entry (from the shared tier, or a caller that buffered it),
    /// through the same size limits and admission as a fill.
    pub fn insert(&self, digest: &Digest, entry: Entry) -> Admission {
        self.inner.shard(digest).admit(*digest, entry)
    }

    /// Swaps the metadata and fields of a stored variant after a 304, keeping its body.
    /// Readers of the old `Arc<Entry>` keep the old head. `None` when `variant` is no
    /// longer stored (or the new head makes it unstorable).
    pub fn replace_head(
        &self,
        digest: &Digest,
        variant: &Arc<Entry>,
        meta: StoredMeta,
        headers: HeaderMap,
    ) -> Option<Arc<Entry>> {
        let entry = Entry {
            status: meta.status,
            meta,
            headers,
            body: variant.body.clone(),
            surrogate_keys: variant.surrogate_keys.clone(),
            url: variant.url.clone(),
        };
        self.inner.shard(digest).replace(digest, variant, entry)
    }

    /// Removes every variant of a primary key (unsafe-method invalidation) and cancels its
    /// fill; returns how many entries went.
    pub fn invalidate(&self, digest: &Digest) -> usize {
        self.inner.shard(digest).purge_keys(&[*digest])
    }

    /// Removes every entry stored under exactly this normalised URL, whatever the method
    /// class, extra key parts and variant; cancels their fills.
    pub fn purge_url(&self, url: &str) -> usize {
        self.inner.each_shard(|shard| {
            let digests = shard.urls_exact(url);
            shard.purge_keys(&digests)
        })
    }

    /// Removes every entry whose normalised URL starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.inner.each_shard(|shard| {
            let digests = shard.urls_prefixed(prefix);
            shard.purge_keys(&digests)
        })
    }

    /// Removes every entry tagged with surrogate key `key`.
    pub fn purge_surrogate(&self, key: &str) -> usize {
        self.inner.each_shard(|shard| shard.purge_tagged(key))
    }

    /// Removes everything and cancels every fill.
    pub fn purge_all(&self) -> usize {
        self.inner.each_shard(Shard::clear)
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        self.inner.each_shard(|shard| {
            shard.add_stats(&mut stats);
            0
        });
        stats
    }

    fn lookup_of(&self, key: &CacheKey, request: &HeaderMap, begin: Begin) -> Lookup {
        match begin {
            Begin::Lead(fill) => {
                Lookup::Miss(FillLeader::new(Arc::clone(&self.inner), key.digest, fill))
            }
            Begin::Follow(reader) => Lookup::Follow(FillFollower::new(
                reader,
                request.clone(),
                Instant::now() + self.inner.lock_timeout,
            )),
        }
    }
}

impl std::fmt::Debug for Inner {
    /// Deliberately short: a leader's `Debug` must not print the whole store.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("shards", &self.shards.len())
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn shard(&self, digest: &Digest) -> MutexGuard<'_, Shard> {
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[KEY_LEN - 8..]);
        let mixed = shard::fold(u64::from_le_bytes(word), self.seed);
        // Multiply-shift maps the hash onto 0..len without a division.
        let index = ((u128::from(mixed) * self.shards.len() as u128) >> 64) as usize;
        lock(&self.shards[index])
    }

    fn each_shard(&self, mut each: impl FnMut(&mut Shard) -> usize) -> usize {
        self.shards.iter().map(|shard| each(&mut lock(shard))).sum()
    }
}

/// Locks a shard; a panic while it was held (a bug) must not disable the cache for good.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "store/tests.rs"]
mod tests;
