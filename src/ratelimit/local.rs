//! The in-process rate-limit store: one counting [`State`] per (policy, key), shared by all
//! worker threads, in at most `max_keys` entries.
//!
//! Keys are stored as a 128-bit hash of (policy id, key bytes) rather than the bytes: every
//! entry has the same small size and no heap allocation of its own, and a lookup allocates
//! nothing. The high half is the standard library's keyed, DoS-resistant hasher
//! (`RandomState`, SipHash-1-3 today) under a random key drawn when the store is created, so
//! clients can neither compute it nor search for collisions offline; the low half is a cheap
//! multiply-rotate mix under its own random seed (one SipHash run per request, not two: this
//! is on every request of a limited route). Two keys share an entry only if both halves
//! collide: by chance, below 10^-19 for any two of a billion keys, and not something a client
//! can aim for without the SipHash key.
//!
//! Entries live in 64 shards (fewer when `max_keys` is smaller), each a mutex over a dense
//! slot array plus an index map, picked by the hash's high half. A lock is held only for
//! the few instructions of one decision. When a shard is full, a new key makes room by
//! sampling a few slots at random: sampled entries whose state has expired are dropped; if
//! there were none, the least recently used sampled entry is evicted (and counted). Entries
//! holding in-flight concurrency slots are never evicted. Each insert is O(1): no scans.
//! In the rare shard where every sampled entry holds slots, a new key's request is decided
//! as a first request without being stored, and a new concurrency key is refused.
//! An entry costs about 110 bytes (slot, age and index).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::algo::{self, State};
use super::spec::{now_micros, Algorithm, Decision, Micros};

/// Shards at most; a power of two so the shard is a mask of the hash.
const SHARDS: usize = 64;
/// Entries looked at per eviction round: as in Redis, 5 random entries approximate LRU well
/// and bound the work (each one is likely a cache miss) while the shard is locked.
const SAMPLE: usize = 5;
/// Eviction rounds before giving up (only when nearly every entry holds in-flight slots).
const ROUNDS: usize = 4;
/// The expiry of an entry holding in-flight concurrency slots: never.
const PINNED: Micros = Micros::MAX;

/// The in-process store. Share it behind an `Arc`.
pub struct LocalStore {
    keys: RandomState,
    /// Seed of the low half of key ids.
    seed: u64,
    shards: Box<[Arc<Shard>]>,
    mask: usize,
}

/// One concurrency slot, given back when dropped.
pub struct ConcurrencyGuard {
    shard: Arc<Shard>,
    id: u128,
    decision: Decision,
}

/// Aligned to keep shards' locks off each other's cache lines.
#[repr(align(128))]
struct Shard {
    table: Mutex<Table>,
}

struct Table {
    /// Dense, so random sampling is one index.
    slots: Vec<Slot>,
    /// Parallel to `slots`, and apart from them so eviction samples read 16 bytes per entry.
    ages: Vec<Age>,
    /// Key hash → position in `slots`.
    index: HashMap<u128, usize, BuildHasherDefault<IdHasher>>,
    capacity: usize,
    /// Ticks once per access; orders entries by last use.
    clock: u64,
    evictions: u64,
}

struct Slot {
    id: u128,
    state: State,
}

#[derive(Clone, Copy)]
struct Age {
    /// From then on the state answers like a new one and can go without loss; [`PINNED`]
    /// while requests hold concurrency slots.
    expires: Micros,
    /// `clock` at the last access.
    used: u64,
}

/// The map's hasher: keys are already uniform keyed hashes, so their low half is used as is.
#[derive(Default)]
struct IdHasher(u64);

impl LocalStore {
    /// A store holding at most `max_keys` entries (at least one).
    pub fn new(max_keys: usize) -> LocalStore {
        let max_keys = max_keys.max(1);
        // Largest power of two not above either bound, so every shard can hold an entry.
        let shards = 1usize << SHARDS.min(max_keys).ilog2();
        let (each, extra) = (max_keys / shards, max_keys % shards);
        let shards: Box<[Arc<Shard>]> = (0..shards)
            .map(|i| {
                let capacity = each + usize::from(i < extra);
                Arc::new(Shard {
                    table: Mutex::new(Table::new(capacity)),
                })
            })
            .collect();
        LocalStore {
            keys: RandomState::new(),
            seed: RandomState::new().hash_one(0x5eed_u64) | 1,
            mask: shards.len() - 1,
            shards,
        }
    }

    /// Decides one request of weight `cost` for `key` under `policy` at `now`, and counts it
    /// if admitted. For `Concurrency` this only reports whether `cost` slots are free; take
    /// slots with [`LocalStore::acquire`].
    pub fn check(
        &self,
        policy: u32,
        alg: &Algorithm,
        key: &[u8],
        now: Micros,
        cost: u64,
    ) -> Decision {
        let id = self.id(policy, key);
        let mut table = self.shard(id).lock();
        match *alg {
            Algorithm::Concurrency { max } => table.peek(id, max, cost),
            _ => table.check(id, alg, now, cost),
        }
    }

    /// Adds `delta` to what `key` counted under `policy` (fixed windows and quotas): the
    /// settlement of a weight admitted on an estimate.
    pub fn adjust(&self, policy: u32, alg: &Algorithm, key: &[u8], now: Micros, delta: i64) {
        let id = self.id(policy, key);
        self.shard(id).lock().adjust(id, alg, now, delta);
    }

    /// Takes one of `max` concurrency slots for `key` under `policy`, held until the guard is
    /// dropped. Refused: `retry_after` is [`algo::CONCURRENCY_RETRY`], a hint, since nobody
    /// knows when in-flight requests end. Also refused when the key's shard is full of
    /// entries that all hold slots (no entry can be evicted).
    pub fn acquire(&self, policy: u32, max: u64, key: &[u8]) -> Result<ConcurrencyGuard, Decision> {
        let id = self.id(policy, key);
        let shard = Arc::clone(self.shard(id));
        let decision = shard.lock().acquire(id, max)?;
        Ok(ConcurrencyGuard {
            shard,
            id,
            decision,
        })
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().slots.len()).sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted while their state still mattered (expired ones are not counted): a
    /// steady rise means `max_keys` is too small for the traffic.
    pub fn evictions(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().evictions).sum()
    }

    fn id(&self, policy: u32, key: &[u8]) -> u128 {
        let mut h = self.keys.build_hasher();
        h.write_u32(policy);
        h.write(key);
        let high = h.finish();
        (u128::from(high) << 64) | u128::from(mix(self.seed ^ u64::from(policy), key))
    }

    fn shard(&self, id: u128) -> &Arc<Shard> {
        // The high half picks the shard; the map uses the low half.
        &self.shards[(id >> 64) as usize & self.mask]
    }
}

/// A fast seeded mix of the key bytes, 8 at a time (the low half of a key id).
fn mix(seed: u64, key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(tail))
        .wrapping_mul(K)
        .rotate_left(29);
    h ^ (h >> 32)
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl ConcurrencyGuard {
    /// The admission, for the rate-limit response headers.
    pub fn decision(&self) -> Decision {
        self.decision
    }
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        self.shard.lock().release(self.id);
    }
}

impl fmt::Debug for ConcurrencyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyGuard")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics under the lock; if something did, the counts are still usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    fn new(capacity: usize) -> Table {
        Table {
            slots: Vec::new(),
            ages: Vec::new(),
            index: HashMap::default(),
            capacity,
            clock: 0,
            evictions: 0,
        }
    }

    fn check(&mut self, id: u128, alg: &Algorithm, now: Micros, cost: u64) -> Decision {
        self.clock += 1;
        let used = self.clock;
        if let Some((slot, age)) = self.entry(id) {
            let decision = slot.state.check(alg, now, cost);
            *age = Age {
                expires: expiry(&slot.state, alg),
                used,
            };
            return decision;
        }
        let mut state = State::new(alg);
        let decision = state.check(alg, now, cost);
        // A refused first request counted nothing: no entry needed. Without room (every
        // sampled entry holds in-flight slots), the request is decided as a new key's.
        if decision.allowed && self.make_room(now) {
            self.insert(id, state, expiry(&state, alg));
        }
        decision
    }

    fn peek(&self, id: u128, max: u64, cost: u64) -> Decision {
        let state = self.index.get(&id).and_then(|&i| self.slots.get(i));
        let in_flight = match state.map(|s| s.state) {
            Some(State::Concurrency(n)) => n,
            _ => 0,
        };
        algo::concurrency(in_flight, max, cost)
    }

    fn acquire(&mut self, id: u128, max: u64) -> Result<Decision, Decision> {
        self.clock += 1;
        let used = self.clock;
        if let Some((slot, age)) = self.entry(id) {
            if !matches!(slot.state, State::Concurrency(_)) {
                // Another algorithm's state under a reused policy id: start over.
                slot.state = State::Concurrency(0);
            }
            let State::Concurrency(in_flight) = &mut slot.state else {
                return Err(algo::concurrency_refused(max));
            };
            let decision = algo::take_slot(in_flight, max)?;
            *age = Age {
                expires: PINNED,
                used,
            };
            return Ok(decision);
        }
        let mut in_flight = 0;
        let decision = algo::take_slot(&mut in_flight, max)?;
        if !self.make_room(now_micros()) {
            return Err(algo::concurrency_refused(max));
        }
        self.insert(id, State::Concurrency(in_flight), PINNED);
        Ok(decision)
    }

    fn adjust(&mut self, id: u128, alg: &Algorithm, now: Micros, delta: i64) {
        if let Some((slot, age)) = self.entry(id) {
            slot.state.adjust(alg, now, delta);
            age.expires = expiry(&slot.state, alg);
            return;
        }
        if delta <= 0 {
            return;
        }
        let mut state = State::new(alg);
        state.adjust(alg, now, delta);
        if self.make_room(now) {
            self.insert(id, state, expiry(&state, alg));
        }
    }

    fn release(&mut self, id: u128) {
        let Some(&i) = self.index.get(&id) else {
            return;
        };
        let Some(Slot {
            state: State::Concurrency(in_flight),
            ..
        }) = self.slots.get_mut(i)
        else {
            return;
        };
        *in_flight = in_flight.saturating_sub(1);
        // An idle concurrency entry holds nothing: free it now rather than wait for eviction.
        if *in_flight == 0 {
            self.remove(i);
        }
    }

    fn entry(&mut self, id: u128) -> Option<(&mut Slot, &mut Age)> {
        let i = *self.index.get(&id)?;
        Some((self.slots.get_mut(i)?, self.ages.get_mut(i)?))
    }

    /// Whether one more entry fits, after dropping expired or evicting sampled entries.
    fn make_room(&mut self, now: Micros) -> bool {
        if self.slots.len() < self.capacity {
            return true;
        }
        for _ in 0..ROUNDS {
            let mut freed = false;
            let mut victim: Option<(usize, u64)> = None;
            for _ in 0..SAMPLE {
                if self.ages.is_empty() {
                    return self.capacity > 0;
                }
                let i = fastrand::usize(..self.ages.len());
                let age = self.ages[i];
                if age.expires <= now {
                    self.remove(i);
                    freed = true;
                } else if !freed
                    && age.expires != PINNED
                    && victim.is_none_or(|(_, used)| age.used < used)
                {
                    victim = Some((i, age.used));
                }
            }
            if freed {
                return true;
            }
            // `victim` is still valid: nothing was removed in this round.
            if let Some((i, _)) = victim {
                self.remove(i);
                self.evictions += 1;
                return true;
            }
        }
        false
    }

    fn insert(&mut self, id: u128, state: State, expires: Micros) {
        debug_assert!(self.slots.len() < self.capacity, "insert into a full shard");
        let len = self.slots.len();
        if len == self.slots.capacity() {
            // Grow by doubling, but never past the shard's capacity.
            let more = len.max(4).min(self.capacity.saturating_sub(len));
            self.slots.reserve_exact(more);
            self.ages.reserve_exact(more);
        }
        self.index.insert(id, len);
        self.slots.push(Slot { id, state });
        self.ages.push(Age {
            expires,
            used: self.clock,
        });
    }

    /// Removes entry `i` (which exists) by moving the last entry into its place.
    fn remove(&mut self, i: usize) {
        let gone = self.slots.swap_remove(i);
        self.ages.swap_remove(i);
        self.index.remove(&gone.id);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.id, i);
        }
    }
}

/// A state's expiry as an entry's: [`PINNED`] exactly when it holds in-flight slots.
fn expiry(state: &State, alg: &Algorithm) -> Micros {
    if state.is_pinned() {
        PINNED
    } else {
        state.expires_at(alg).min(PINNED - 1)
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if the key type changes; any mixing keeps the map correct.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
}

#[cfg(test)]
mod tests;
