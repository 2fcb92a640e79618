//! One shard of the store: its entries and fills by primary key, the CLOCK eviction queue,
//! the TinyLFU sketch, the purge indexes and the byte budget, all under the shard's lock.

use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::admission::FrequencySketch;
use super::fill::{Fill, FillHead, Reader};
use super::index::{SurrogateIndex, UrlIndex};
use super::{Admission, Digest, Entry, StoreStats, MAX_VARIANTS};
use crate::cache::vary::Vary;

/// Entry size assumed to size the frequency sketch from the byte budget.
const EXPECTED_ENTRY_BYTES: usize = 4096;
/// Stale CLOCK items (of removed entries) tolerated before the queue is compacted.
const CLOCK_SLACK: usize = 64;

/// What a lookup that found no stored variant does.
pub(super) enum Begin {
    Lead(Arc<Fill>),
    Follow(Reader),
}

#[derive(Debug)]
pub(super) struct Shard {
    slots: HashMap<Digest, Slot, DigestState>,
    /// CLOCK order of the stored variants, oldest first; items of removed variants are
    /// skipped when they come up.
    clock: VecDeque<(Digest, u64)>,
    urls: UrlIndex,
    surrogates: SurrogateIndex,
    sketch: FrequencySketch,
    budget: usize,
    /// Largest charged size of one entry.
    limit: usize,
    used: usize,
    entries: usize,
    next_id: u64,
    evictions: u64,
    admissions_rejected: u64,
    fills_abandoned: u64,
}

/// Everything stored or filling under one primary key.
#[derive(Debug)]
struct Slot {
    url: Box<str>,
    /// Most recent first.
    variants: Vec<Variant>,
    fill: Option<Arc<Fill>>,
}

#[derive(Debug)]
struct Variant {
    entry: Arc<Entry>,
    /// Identifies the variant in the CLOCK queue.
    id: u64,
    charge: usize,
    /// Set by a hit, cleared when the CLOCK hand passes: the second chance.
    referenced: bool,
}

/// Hashes digests for the map. They are SHA-256 already, but keyed so that nobody can
/// search for URLs whose digests share map buckets.
#[derive(Debug, Clone)]
pub(super) struct DigestState {
    seed: u64,
}

pub(super) struct DigestHasher {
    seed: u64,
    hash: u64,
}

impl Shard {
    pub(super) fn new(budget: usize, limit: usize) -> Self {
        let seed = RandomState::new().build_hasher().finish() | 1;
        Self {
            slots: HashMap::with_hasher(DigestState { seed }),
            clock: VecDeque::new(),
            urls: UrlIndex::default(),
            surrogates: SurrogateIndex::default(),
            sketch: FrequencySketch::new(budget / EXPECTED_ENTRY_BYTES),
            budget,
            limit,
            used: 0,
            entries: 0,
            next_id: 0,
            evictions: 0,
            admissions_rejected: 0,
            fills_abandoned: 0,
        }
    }

    pub(super) fn count_access(&mut self, digest: &Digest) {
        self.sketch.increment(digest);
    }

    /// The most recent variant `request` selects; counts the access either way.
    pub(super) fn hit(&mut self, digest: &Digest, request: &HeaderMap) -> Option<Arc<Entry>> {
        self.sketch.increment(digest);
        let slot = self.slots.get_mut(digest)?;
        let variant = slot
            .variants
            .iter_mut()
            .find(|variant| variant.entry.meta.vary.matches(request))?;
        variant.referenced = true;
        Some(Arc::clone(&variant.entry))
    }

    /// Joins the key's fill, or starts one. A fill that will not be stored, or has waited
    /// longer than `lock_timeout` for its head, is replaced (as nginx's
    /// `proxy_cache_lock_age`): its leader and followers go on, but it is not stored.
    pub(super) fn begin(&mut self, digest: &Digest, url: &str, lock_timeout: Duration) -> Begin {
        if let Some(fill) = self.slots.get(digest).and_then(|slot| slot.fill.clone()) {
            if let Some(reader) = Reader::join(&fill, lock_timeout) {
                return Begin::Follow(reader);
            }
            self.detach_fill(digest, &fill, Admission::Cancelled);
        }
        let fill = Arc::new(Fill::new(url.into(), self.limit));
        let slot = match self.slots.entry(*digest) {
            MapEntry::Occupied(slot) => slot.into_mut(),
            MapEntry::Vacant(vacant) => {
                self.urls.add(url, *digest);
                vacant.insert(Slot::new(url.into()))
            }
        };
        slot.fill = Some(Arc::clone(&fill));
        Begin::Lead(fill)
    }

    /// The leader's head arrived: publish it to followers and index its surrogate keys so
    /// that a purge reaches the fill.
    pub(super) fn start_fill(&mut self, digest: &Digest, fill: &Arc<Fill>, head: Arc<FillHead>) {
        let attached = self.is_attached(digest, fill);
        let usable = head.meta.vary != Vary::Any;
        let index = attached && usable && fill.is_kept();
        if index {
            self.surrogates.add(*digest, &head.surrogate_keys);
        }
        fill.set_head(head, index);
        if attached && !usable {
            self.detach_fill(digest, fill, Admission::Unusable);
        }
    }

    /// Stores a finished fill if it is still the key's fill.
    pub(super) fn commit(&mut self, digest: &Digest, fill: &Arc<Fill>, entry: Entry) -> Admission {
        if !self.is_attached(digest, fill) {
            return fill.outcome().unwrap_or(Admission::Cancelled);
        }
        self.detach_fill(digest, fill, Admission::Stored);
        self.admit(*digest, entry)
    }

    /// The fill ended without being stored for a reason of its own (abandoned, too large).
    pub(super) fn abandon_fill(&mut self, digest: &Digest, fill: &Arc<Fill>, why: Admission) {
        self.fills_abandoned += 1;
        self.detach_fill(digest, fill, why);
    }

    /// Stores `entry` as the newest variant of `digest`, evicting what CLOCK and TinyLFU
    /// choose. A variant with the same secondary key is replaced first (the origin's newer
    /// response supersedes it even if the new one is then rejected).
    pub(super) fn admit(&mut self, digest: Digest, entry: Entry) -> Admission {
        if entry.meta.vary == Vary::Any {
            return Admission::Unusable;
        }
        let charge = entry.charged_size();
        if charge > self.limit {
            return Admission::TooLarge;
        }
        if let Some(slot) = self.slots.get(&digest) {
            let same = slot
                .variants
                .iter()
                .position(|variant| variant.entry.meta.vary == entry.meta.vary);
            let count = slot.variants.len();
            match same {
                Some(index) => self.remove_variant(&digest, index),
                None if count >= MAX_VARIANTS => {
                    self.remove_variant(&digest, count - 1);
                    self.evictions += 1;
                }
                None => {}
            }
        }
        while self.used + charge > self.budget {
            let Some((victim, id)) = self.next_victim() else {
                debug_assert!(false, "over budget with nothing to evict");
                return Admission::TooLarge;
            };
            // Variants of one key share a frequency: the newer one wins without a contest.
            if victim != digest && self.sketch.estimate(&digest) <= self.sketch.estimate(&victim) {
                self.clock.push_back((victim, id));
                self.admissions_rejected += 1;
                return Admission::Rejected;
            }
            self.evict(&victim, id);
        }
        self.surrogates.add(digest, &entry.surrogate_keys);
        let slot = match self.slots.entry(digest) {
            MapEntry::Occupied(slot) => slot.into_mut(),
            MapEntry::Vacant(vacant) => {
                self.urls.add(&entry.url, digest);
                vacant.insert(Slot::new(entry.url.clone()))
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        slot.variants.insert(
            0,
            Variant {
                entry: Arc::new(entry),
                id,
                charge,
                referenced: false,
            },
        );
        self.clock.push_back((digest, id));
        self.used += charge;
        self.entries += 1;
        self.compact_clock();
        Admission::Stored
    }

    /// Replaces the stored variant `old` by `new` (same body), charging the difference.
    pub(super) fn replace(
        &mut self,
        digest: &Digest,
        old: &Arc<Entry>,
        new: Entry,
    ) -> Option<Arc<Entry>> {
        let slot = self.slots.get_mut(digest)?;
        let index = slot
            .variants
            .iter()
            .position(|variant| Arc::ptr_eq(&variant.entry, old))?;
        let charge = new.charged_size();
        if charge > self.limit || new.meta.vary == Vary::Any {
            self.remove_variant(digest, index);
            return None;
        }
        let variant = &mut slot.variants[index];
        // Same body and surrogate keys, so the indexes stay as they are.
        self.used = self.used - variant.charge + charge;
        variant.charge = charge;
        variant.entry = Arc::new(new);
        variant.referenced = true;
        let entry = Arc::clone(&variant.entry);
        while self.used > self.budget {
            let Some((victim, id)) = self.next_victim() else {
                break;
            };
            self.evict(&victim, id);
        }
        Some(entry)
    }

    pub(super) fn variants(&self, digest: &Digest) -> Vec<Arc<Entry>> {
        self.slots.get(digest).map_or_else(Vec::new, |slot| {
            slot.variants
                .iter()
                .map(|variant| Arc::clone(&variant.entry))
                .collect()
        })
    }

    pub(super) fn urls_exact(&self, url: &str) -> Vec<Digest> {
        self.urls.exact(url)
    }

    pub(super) fn urls_prefixed(&self, prefix: &str) -> Vec<Digest> {
        self.urls.prefixed(prefix)
    }

    /// Removes the keys' variants and cancels their fills; returns the variants removed.
    pub(super) fn purge_keys(&mut self, digests: &[Digest]) -> usize {
        let mut removed = 0;
        for digest in digests {
            let Some(slot) = self.slots.remove(digest) else {
                continue;
            };
            self.urls.remove(&slot.url, digest);
            for variant in &slot.variants {
                self.uncharge(digest, variant);
            }
            if let Some(fill) = &slot.fill {
                if let Some(head) = fill.drop_storage(Admission::Cancelled) {
                    self.surrogates.remove(digest, &head.surrogate_keys);
                }
            }
            removed += slot.variants.len();
        }
        removed
    }

    /// Removes the variants tagged `key` and cancels the fills whose head carries it.
    pub(super) fn purge_tagged(&mut self, key: &str) -> usize {
        let tagged = |keys: &[Box<str>]| keys.iter().any(|k| &**k == key);
        let mut removed = 0;
        for digest in self.surrogates.tagged(key) {
            while let Some(index) = self.slots.get(&digest).and_then(|slot| {
                slot.variants
                    .iter()
                    .position(|variant| tagged(&variant.entry.surrogate_keys))
            }) {
                self.remove_variant(&digest, index);
                removed += 1;
            }
            let fill = self.slots.get(&digest).and_then(|slot| slot.fill.clone());
            if let Some(fill) = fill {
                if fill.head().is_some_and(|head| tagged(&head.surrogate_keys)) {
                    self.detach_fill(&digest, &fill, Admission::Cancelled);
                }
            }
        }
        removed
    }

    /// Removes every entry and cancels every fill; the frequency history stays.
    pub(super) fn clear(&mut self) -> usize {
        for slot in self.slots.values() {
            if let Some(fill) = &slot.fill {
                // The index is cleared below, so the returned head is not needed.
                let _ = fill.drop_storage(Admission::Cancelled);
            }
        }
        let removed = self.entries;
        self.slots.clear();
        self.clock.clear();
        self.urls.clear();
        self.surrogates.clear();
        self.used = 0;
        self.entries = 0;
        removed
    }

    pub(super) fn add_stats(&self, stats: &mut StoreStats) {
        stats.entries += self.entries as u64;
        stats.bytes += self.used as u64;
        stats.evictions += self.evictions;
        stats.admissions_rejected += self.admissions_rejected;
        stats.fills_abandoned += self.fills_abandoned;
    }

    fn is_attached(&self, digest: &Digest, fill: &Arc<Fill>) -> bool {
        self.slots
            .get(digest)
            .and_then(|slot| slot.fill.as_ref())
            .is_some_and(|current| Arc::ptr_eq(current, fill))
    }

    /// Makes `fill` no longer the key's fill and not stored; unindexes its surrogate keys.
    pub(super) fn detach_fill(&mut self, digest: &Digest, fill: &Arc<Fill>, why: Admission) {
        if let Some(slot) = self.slots.get_mut(digest) {
            if slot
                .fill
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, fill))
            {
                slot.fill = None;
            }
        }
        if let Some(head) = fill.drop_storage(why) {
            self.surrogates.remove(digest, &head.surrogate_keys);
        }
        self.remove_if_empty(digest);
    }

    /// The CLOCK victim: the oldest variant not referenced since the hand last passed.
    fn next_victim(&mut self) -> Option<(Digest, u64)> {
        while let Some((digest, id)) = self.clock.pop_front() {
            let Some(variant) = self
                .slots
                .get_mut(&digest)
                .and_then(|slot| slot.variants.iter_mut().find(|v| v.id == id))
            else {
                continue;
            };
            if variant.referenced {
                variant.referenced = false;
                self.clock.push_back((digest, id));
                continue;
            }
            return Some((digest, id));
        }
        None
    }

    fn evict(&mut self, digest: &Digest, id: u64) {
        let index = self
            .slots
            .get(digest)
            .and_then(|slot| slot.variants.iter().position(|v| v.id == id));
        if let Some(index) = index {
            self.remove_variant(digest, index);
            self.evictions += 1;
        }
    }

    fn remove_variant(&mut self, digest: &Digest, index: usize) {
        let Some(slot) = self.slots.get_mut(digest) else {
            return;
        };
        if index >= slot.variants.len() {
            debug_assert!(false, "variant index {index} out of range");
            return;
        }
        let variant = slot.variants.remove(index);
        self.uncharge(digest, &variant);
        self.remove_if_empty(digest);
    }

    fn uncharge(&mut self, digest: &Digest, variant: &Variant) {
        debug_assert!(self.used >= variant.charge, "shard charge underflow");
        self.used -= variant.charge;
        self.entries -= 1;
        self.surrogates
            .remove(digest, &variant.entry.surrogate_keys);
    }

    fn remove_if_empty(&mut self, digest: &Digest) {
        let empty = self
            .slots
            .get(digest)
            .is_some_and(|slot| slot.variants.is_empty() && slot.fill.is_none());
        if empty {
            if let Some(slot) = self.slots.remove(digest) {
                self.urls.remove(&slot.url, digest);
            }
        }
    }

    /// Drops queue items of removed variants once they outnumber the live ones.
    fn compact_clock(&mut self) {
        if self.clock.len() <= 2 * self.entries + CLOCK_SLACK {
            return;
        }
        let slots = &self.slots;
        self.clock.retain(|(digest, id)| {
            slots
                .get(digest)
                .is_some_and(|slot| slot.variants.iter().any(|v| v.id == *id))
        });
    }
}

impl Slot {
    fn new(url: Box<str>) -> Self {
        Self {
            url,
            variants: Vec::new(),
            fill: None,
        }
    }
}

impl BuildHasher for DigestState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.hash = fold(self.hash ^ u64::from_le_bytes(word), self.seed);
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Folded multiply: both halves of the 128-bit product, so every input bit reaches the
/// high and the low bits of the result.
pub(super) fn fold(word: u64, seed: u64) -> u64 {
    let product = u128::from(word) * u128::from(seed);
    (product as u64) ^ ((product >> 64) as u64)
}
