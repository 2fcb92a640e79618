//! The verified-credential cache: bounded, keyed by a keyed hash and the length of the credential
//! (never the credential itself, so a heap dump holds no usable token), every entry with a
//! deadline it never outlives.
//!
//! The key is one SipHash-1-3 run under a random per-process key, plus the credential's
//! length, not SHA-256: on a warm cache this hash is most of the cost of a request's
//! authentication (SHA-256 of a 600-byte token is about 17,000 instructions without SHA
//! extensions; SipHash about 1,500). A false hit needs a credential of the same length whose
//! keyed 64-bit hash equals a cached one's; without the key, which never leaves the process,
//! each guess succeeds with probability entries / 2^64: beyond any online attack.
//!
//! Sharded mutexes keep the critical section to one hash lookup; when a shard is full, expired
//! entries go first, then an arbitrary one (the map's random hash order), which an attacker
//! cannot steer towards a chosen victim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use super::Verified;

/// Keyed 64-bit hash and length of a credential.
pub(crate) type Digest = [u8; 16];

const MAX_SHARDS: usize = 16;

/// The hash key, drawn once per process.
fn key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

pub(crate) fn digest(token: &str) -> Digest {
    digest_bytes(token.as_bytes())
}

/// [`digest`] of any credential bytes.
pub(crate) fn digest_bytes(credential: &[u8]) -> Digest {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&key().hash_one(credential).to_le_bytes());
    out[8..].copy_from_slice(&(credential.len() as u64).to_le_bytes());
    out
}

pub(crate) struct TokenCache {
    shards: Box<[Mutex<HashMap<Digest, Entry>>]>,
    per_shard: usize,
}

struct Entry {
    value: Arc<Verified>,
    until: Instant,
    /// Key-set generation the entry was verified under; a rotation invalidates it.
    generation: u64,
}

impl TokenCache {
    /// A cache of about `capacity` entries; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        let shards = capacity.clamp(1, MAX_SHARDS);
        TokenCache {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(shards),
        }
    }

    pub(crate) fn get(&self, key: &Digest, generation: u64, now: Instant) -> Option<Arc<Verified>> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(key);
        let entry = shard.get(key)?;
        if entry.until > now && entry.generation == generation {
            return Some(Arc::clone(&entry.value));
        }
        shard.remove(key);
        None
    }

    pub(crate) fn insert(
        &self,
        key: Digest,
        value: Arc<Verified>,
        until: Instant,
        generation: u64,
        now: Instant,
    ) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.until > now);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                value,
                until,
                generation,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, key: &Digest) -> MutexGuard<'_, HashMap<Digest, Entry>> {
        lock(&self.shards[usize::from(key[0]) % self.shards.len()])
    }
}

/// A panic while holding a shard cannot leave an entry half-written (inserts are single
/// calls), so a poisoned shard is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use serde_json::Map;

    use super::*;

    fn value(sub: &str) -> Arc<Verified> {
        Arc::new(Verified {
            subject: Some(sub.into()),
            claims: Arc::new(Map::new()),
            scopes: Vec::new(),
            forward: Vec::new(),
            expires_at: None,
        })
    }

    #[test]
    fn digest_is_stable_within_the_process_and_tells_tokens_apart() {
        assert_eq!(digest("abc"), digest("abc"));
        assert_ne!(digest("abc"), digest("abd"));
        assert_ne!(
            digest("abc")[..8],
            digest("abc")[8..],
            "two independent keys"
        );
    }

    #[test]
    fn entry_is_returned_before_its_deadline() {
        let cache = TokenCache::new(10);
        let now = Instant::now();
        cache.insert(
            digest("t"),
            value("a"),
            now + Duration::from_secs(5),
            0,
            now,
        );
        let hit = cache.get(&digest("t"), 0, now).unwrap();
        assert_eq!(hit.subject.as_deref(), Some("a"));
    }

    #[test]
    fn entry_is_gone_at_its_deadline() {
        let cache = TokenCache::new(10);
        let now = Instant::now();
        let until = now + Duration::from_secs(5);
        cache.insert(digest("t"), value("a"), until, 0, now);
        assert!(cache.get(&digest("t"), 0, until).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn entry_of_an_older_key_generation_is_not_returned() {
        let cache = TokenCache::new(10);
        let now = Instant::now();
        cache.insert(
            digest("t"),
            value("a"),
            now + Duration::from_secs(5),
            1,
            now,
        );
        assert!(cache.get(&digest("t"), 2, now).is_none());
    }

    #[test]
    fn already_expired_entry_is_not_stored() {
        let cache = TokenCache::new(10);
        let now = Instant::now();
        cache.insert(digest("t"), value("a"), now, 0, now);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let cache = TokenCache::new(0);
        let now = Instant::now();
        cache.insert(
            digest("t"),
            value("a"),
            now + Duration::from_secs(5),
            0,
            now,
        );
        assert!(cache.get(&digest("t"), 0, now).is_none());
    }

    #[test]
    fn cache_never_grows_past_its_capacity() {
        let cache = TokenCache::new(32);
        let now = Instant::now();
        for i in 0..1000 {
            let until = now + Duration::from_secs(60);
            cache.insert(digest(&i.to_string()), value("a"), until, 0, now);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let cache = TokenCache::new(1);
        let now = Instant::now();
        cache.insert(
            digest("old"),
            value("a"),
            now + Duration::from_secs(1),
            0,
            now,
        );
        let later = now + Duration::from_secs(2);
        cache.insert(
            digest("new"),
            value("b"),
            later + Duration::from_secs(9),
            0,
            later,
        );
        assert!(cache.get(&digest("new"), 0, later).is_some());
        assert_eq!(cache.len(), 1);
    }
}
