//! TinyLFU admission: an approximate, aging count of how often each primary key was looked
//! up, so that a full shard keeps a popular entry rather than admit a one-hit wonder.
//!
//! - A count-min sketch of 4-bit counters, four rows, sixteen counters per `u64` word.
//!   Counters saturate at 15: past that, "popular" is all admission needs to know.
//! - A doorkeeper bit set in front of it: a key's first access in a sample period only sets
//!   its bits, so the many keys seen once never occupy sketch counters.
//! - Aging: after `10 × expected entries` accesses every counter is halved and the
//!   doorkeeper cleared, so a key that was popular yesterday does not hold its place forever.
//!
//! Positions come from the key digest (already SHA-256) mixed with per-sketch random seeds,
//! so nobody can choose URLs whose counters collide with a victim's on purpose.

use super::Digest;

/// Rows of the count-min sketch; each access touches one counter per row.
const DEPTH: usize = 4;
/// Largest value of a 4-bit counter.
const COUNTER_MAX: u64 = 15;
/// Accesses per expected entry before the counters are halved (the TinyLFU paper's W/C).
const SAMPLE_FACTOR: usize = 10;
/// Doorkeeper bits per access of a sample period: it must hold every key seen once in a
/// period, and four bits per key keep false positives near 15% with two probes.
const DOOR_BITS_PER_SAMPLE: usize = 4;
/// Bounds of the expected entry count, to keep tiny shards useful and huge ones sane.
const MIN_ENTRIES: usize = 64;
const MAX_ENTRIES: usize = 1 << 26;
/// Halving mask: drops the bit each counter receives from its upper neighbour.
const HALF_MASK: u64 = 0x7777_7777_7777_7777;

/// Frequency estimates for admission decisions.
#[derive(Debug)]
pub struct FrequencySketch {
    /// `DEPTH` rows of `width` 4-bit counters, row after row.
    table: Box<[u64]>,
    /// Counters per row, a power of two.
    width: usize,
    doorkeeper: Box<[u64]>,
    /// Doorkeeper bits, a power of two.
    door_bits: usize,
    seeds: [u64; DEPTH + 2],
    additions: usize,
    sample_size: usize,
}

impl FrequencySketch {
    /// A sketch sized for about `expected_entries` resident entries.
    pub fn new(expected_entries: usize) -> Self {
        let entries = expected_entries.clamp(MIN_ENTRIES, MAX_ENTRIES);
        let width = entries.next_power_of_two();
        let sample_size = entries * SAMPLE_FACTOR;
        let door_bits = (sample_size * DOOR_BITS_PER_SAMPLE).next_power_of_two();
        let mut seeds = [0u64; DEPTH + 2];
        for seed in &mut seeds {
            // Odd, so multiplying by it is a bijection.
            *seed = fastrand::u64(..) | 1;
        }
        Self {
            table: vec![0; DEPTH * width / 16].into_boxed_slice(),
            width,
            doorkeeper: vec![0; door_bits / 64].into_boxed_slice(),
            door_bits,
            seeds,
            additions: 0,
            sample_size,
        }
    }

    /// Records one access to `digest`.
    pub fn increment(&mut self, digest: &Digest) {
        let words = words(digest);
        if self.door_insert(&words) {
            for row in 0..DEPTH {
                let (word, shift) = self.counter(row, &words);
                if (self.table[word] >> shift) & COUNTER_MAX < COUNTER_MAX {
                    self.table[word] += 1 << shift;
                }
            }
        }
        self.additions += 1;
        if self.additions >= self.sample_size {
            self.age();
        }
    }

    /// Estimated accesses to `digest` in the recent past (0 to 16).
    pub fn estimate(&self, digest: &Digest) -> u8 {
        let words = words(digest);
        let counted = (0..DEPTH)
            .map(|row| {
                let (word, shift) = self.counter(row, &words);
                (self.table[word] >> shift) & COUNTER_MAX
            })
            .min()
            .unwrap_or(0);
        let door = u64::from(self.door_contains(&words));
        // At most 15 + 1, so the cast cannot truncate.
        (counted + door) as u8
    }

    /// Halves every counter and forgets the doorkeeper: old popularity fades.
    fn age(&mut self) {
        for word in self.table.iter_mut() {
            *word = (*word >> 1) & HALF_MASK;
        }
        self.doorkeeper.fill(0);
        self.additions /= 2;
    }

    /// Word index and bit shift of the key's counter in `row`.
    fn counter(&self, row: usize, words: &[u64; 4]) -> (usize, u32) {
        let index = row * self.width + position(words[row], self.seeds[row], self.width);
        (index / 16, (index % 16) as u32 * 4)
    }

    /// Sets the key's doorkeeper bits; true when they were all set already.
    fn door_insert(&mut self, words: &[u64; 4]) -> bool {
        let mut present = true;
        for i in 0..2 {
            let bit = position(
                words[i] ^ words[3 - i],
                self.seeds[DEPTH + i],
                self.door_bits,
            );
            let mask = 1u64 << (bit % 64);
            present &= self.doorkeeper[bit / 64] & mask != 0;
            self.doorkeeper[bit / 64] |= mask;
        }
        present
    }

    fn door_contains(&self, words: &[u64; 4]) -> bool {
        (0..2).all(|i| {
            let bit = position(
                words[i] ^ words[3 - i],
                self.seeds[DEPTH + i],
                self.door_bits,
            );
            self.doorkeeper[bit / 64] & (1u64 << (bit % 64)) != 0
        })
    }
}

/// The digest as four 64-bit words (it is uniformly distributed already).
fn words(digest: &Digest) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (word, chunk) in out.iter_mut().zip(digest.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    out
}

/// A keyed position in `0..size` (`size` a power of two): the high bits of a seeded
/// multiplication, so that equal low bits of two digests do not mean equal positions.
fn position(word: u64, seed: u64, size: usize) -> usize {
    let mixed = (word ^ seed.rotate_left(29)).wrapping_mul(seed);
    let bits = size.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (mixed >> (64 - bits)) as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn digest(n: u32) -> Digest {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &n.to_le_bytes());
        let mut digest = [0u8; 32];
        digest.copy_from_slice(hash.as_ref());
        digest
    }

    #[test]
    fn unseen_key_estimates_zero() {
        let sketch = FrequencySketch::new(1000);
        assert_eq!(sketch.estimate(&digest(7)), 0);
    }

    #[test]
    fn first_access_only_sets_the_doorkeeper() {
        let mut sketch = FrequencySketch::new(1000);
        sketch.increment(&digest(7));
        assert_eq!(sketch.estimate(&digest(7)), 1);
        assert!(sketch.table.iter().all(|&word| word == 0));
    }

    #[test]
    fn estimate_grows_with_accesses_and_saturates() {
        let mut sketch = FrequencySketch::new(1000);
        for expected in 1..=16u8 {
            sketch.increment(&digest(7));
            assert!(sketch.estimate(&digest(7)) >= expected);
        }
        for _ in 0..10 {
            sketch.increment(&digest(7));
        }
        assert_eq!(sketch.estimate(&digest(7)), 16);
    }

    #[test]
    fn unseen_keys_mostly_estimate_zero_among_counted_ones() {
        let mut sketch = FrequencySketch::new(1000);
        for n in 0..500 {
            for _ in 0..3 {
                sketch.increment(&digest(n));
            }
        }
        let zero = (1000..1100)
            .filter(|&n| sketch.estimate(&digest(n)) == 0)
            .count();
        assert!(zero >= 90, "only {zero} of 100 unseen keys estimate zero");
    }

    #[test]
    fn aging_halves_counters_and_clears_the_doorkeeper() {
        let mut sketch = FrequencySketch::new(MIN_ENTRIES);
        for _ in 0..9 {
            sketch.increment(&digest(1));
        }
        assert_eq!(sketch.estimate(&digest(1)), 9);
        sketch.age();
        // 8 counted, halved to 4; the doorkeeper bit is gone.
        assert_eq!(sketch.estimate(&digest(1)), 4);
    }

    #[test]
    fn aging_happens_after_the_sample_period() {
        let mut sketch = FrequencySketch::new(MIN_ENTRIES);
        for _ in 0..9 {
            sketch.increment(&digest(1));
        }
        // Another key fills the period without touching the first key's counters.
        for _ in 0..MIN_ENTRIES * SAMPLE_FACTOR {
            sketch.increment(&digest(2));
        }
        assert_eq!(sketch.estimate(&digest(1)), 4);
    }
}
