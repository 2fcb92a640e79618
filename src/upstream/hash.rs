//! Consistent hashing: reading the request key, hashing it the same way in every process,
//! and the Maglev lookup table that maps the hash to a target.
//!
//! Maglev rather than a ketama ring: lookup is one index into a fixed table instead of a
//! binary search over `160 × weight` points (weights go up to 10 000, which would mean
//! millions of points per target), and the table splits keys almost exactly by weight. The
//! price is that rebuilding the table without a target moves a small share of the other
//! targets' keys too (measured and bounded in the tests); health exclusion never rebuilds, it
//! probes past the excluded entry, so it moves only the excluded target's keys.
//!
//! The hash must give the same answer in every gateway process and release, so it is written
//! here with fixed constants instead of std's randomly seeded hasher.

use std::net::IpAddr;

use http::header::COOKIE;
use http::HeaderMap;

use super::balancer::PickInput;
use crate::config::model::HashKey;

/// Prime table size: every skip in `1..TABLE_SIZE` walks the whole table.
pub(crate) const TABLE_SIZE: usize = 65_537;

/// Re-hashes tried when a key lands on an excluded target, before the fallback scan.
const PROBES: usize = 32;

const EMPTY: u32 = u32::MAX;
const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const OFFSET_SEED: u64 = 0x6F66_6673_6574_2121;
const SKIP_SEED: u64 = 0x736B_6970_2121_2121;
const KEY_SEED: u64 = 0x6B65_7973_6565_6421;

/// Hash of the request's consistent-hash key; None when the request lacks it.
pub(crate) fn key_hash(key: &HashKey, input: &PickInput<'_>) -> Option<u64> {
    match key {
        // Canonical form: a v4 client reaching a dual-stack listener as ::ffff:a.b.c.d is
        // the same client.
        HashKey::ClientIp => Some(match input.client_ip.to_canonical() {
            IpAddr::V4(ip) => hash_bytes(KEY_SEED, &ip.octets()),
            IpAddr::V6(ip) => hash_bytes(KEY_SEED, &ip.octets()),
        }),
        // The first value; an empty one counts as missing, like an empty cookie.
        HashKey::Header(name) => {
            let value = input.headers.get(name)?.as_bytes();
            (!value.is_empty()).then(|| hash_bytes(KEY_SEED, value))
        }
        HashKey::Cookie(name) => {
            cookie_value(input.headers, name.as_bytes()).map(|v| hash_bytes(KEY_SEED, v))
        }
        HashKey::Path => Some(hash_bytes(KEY_SEED, input.path.as_bytes())),
    }
}

/// Value of cookie `name` in any `Cookie` header (h2 may send one per cookie); an empty value
/// counts as missing so that such clients do not all pile onto one target.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &[u8]) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            let value = value.get(1..)?.trim_ascii();
            (key.trim_ascii() == name && !value.is_empty()).then_some(value)
        })
}

/// Hashes `bytes` eight at a time, then avalanches; stable across processes and platforms.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    // The length goes in first so that keys differing only by trailing zero bytes differ.
    let mut h = seed ^ K1.wrapping_mul(bytes.len() as u64 + 1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = absorb(h, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = absorb(h, u64::from_le_bytes(word));
    }
    mix64(h)
}

fn absorb(h: u64, word: u64) -> u64 {
    (h ^ word.wrapping_mul(K2)).rotate_left(31).wrapping_mul(K1)
}

/// Avalanche step: every input bit flips about half the output bits.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A filled Maglev table: entry `k` is the target owning keys with `hash % TABLE_SIZE == k`.
pub(crate) struct Maglev {
    table: Box<[u32]>,
    targets: usize,
}

impl Maglev {
    /// Builds the table for targets known by stable `ids` (hashes of their addresses), so that
    /// the same target set gives the same table in every process whatever the list order.
    pub(crate) fn new(ids: &[u64], weights: &[u32]) -> Maglev {
        debug_assert_eq!(ids.len(), weights.len(), "one weight per target id");
        let n = ids.len().min(weights.len());
        if n == 0 {
            return Maglev {
                table: Box::new([]),
                targets: 0,
            };
        }
        let m = TABLE_SIZE as u64;
        // Turn order by id, not list position, so reordering the config changes nothing.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ids[i], i));
        let mut position: Vec<u64> = ids[..n]
            .iter()
            .map(|&id| hash_u64(OFFSET_SEED, id) % m)
            .collect();
        let skip: Vec<u64> = ids[..n]
            .iter()
            .map(|&id| hash_u64(SKIP_SEED, id) % (m - 1) + 1)
            .collect();
        let weight: Vec<u64> = weights[..n].iter().map(|&w| u64::from(w.max(1))).collect();
        let heaviest = weight.iter().copied().max().unwrap_or(1);
        // Each round the heaviest target takes one entry and target i takes one when its
        // credit reaches `heaviest`: entries end up in proportion to weight.
        let mut credit = vec![0u64; n];
        let mut table = vec![EMPTY; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for &i in &order {
                credit[i] += weight[i];
                if credit[i] < heaviest {
                    continue;
                }
                credit[i] -= heaviest;
                // The walk visits every entry (prime size) and the table is not full, so it
                // ends at an empty one.
                loop {
                    let slot = position[i] as usize;
                    position[i] = (position[i] + skip[i]) % m;
                    if table[slot] == EMPTY {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
            targets: n,
        }
    }

    /// Target for a key hash, skipping excluded targets; None only when all are excluded.
    ///
    /// A key whose entry is healthy always gets that entry, so excluding a target moves only
    /// its own keys; those re-hash to other entries, spreading by weight over the rest.
    pub(crate) fn lookup(&self, key: u64, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        let m = TABLE_SIZE as u64;
        let first = *self.table.get((key % m) as usize)? as usize;
        if !excluded(first) {
            return Some(first);
        }
        let mut probe = key;
        for _ in 0..PROBES {
            probe = mix64(probe ^ K1);
            let target = self.table[(probe % m) as usize] as usize;
            if !excluded(target) {
                return Some(target);
            }
        }
        // Nearly everything is excluded: any deterministic healthy choice will do.
        let n = self.targets;
        let start = (key % n as u64) as usize;
        (0..n).map(|k| (start + k) % n).find(|&i| !excluded(i))
    }

    /// Entries owned by each target; for tests of the weight split.
    #[cfg(test)]
    fn shares(&self) -> Vec<usize> {
        let mut shares = vec![0; self.targets];
        for &t in self.table.iter() {
            shares[t as usize] += 1;
        }
        shares
    }
}

/// Hash of one integer, e.g. a target id or a list index.
pub(crate) fn hash_u64(seed: u64, value: u64) -> u64 {
    hash_bytes(seed, &value.to_le_bytes())
}

#[cfg(test)]
mod tests;
