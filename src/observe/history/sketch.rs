//! A mergeable latency sketch: counts in logarithmic buckets 4% wide (the DDSketch idea), so
//! a quantile read from any merge of points (other workers, other seconds) is within 2% of
//! the true value.

use serde::{Deserialize, Serialize};

/// Buckets from 1 µs to about 20 minutes.
const BUCKETS: usize = 540;
const GAMMA: f64 = 1.04;

/// Request durations, in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// Empty until the first value (a point of a scope that saw none costs nothing).
    counts: Vec<u32>,
}

impl Sketch {
    pub fn add(&mut self, micros: u64) {
        self.add_to(index(micros));
    }

    /// The bucket of a duration, to add it to several sketches.
    pub fn bucket(micros: u64) -> usize {
        index(micros)
    }

    /// Adds a value of bucket `i` (from [`Sketch::bucket`]).
    pub fn add_to(&mut self, i: usize) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }

    /// Takes away the values of `earlier`, a sketch this one grew from.
    pub fn subtract(&mut self, earlier: &Sketch) {
        for (a, b) in self.counts.iter_mut().zip(&earlier.counts) {
            *a = a.saturating_sub(*b);
        }
    }

    /// The `q` quantile (0..=1) in microseconds; `None` without values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).round() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen > rank {
                return Some(value(i));
            }
        }
        Some(value(BUCKETS - 1))
    }

    /// The non-empty buckets, for storage.
    fn sparse(&self) -> Vec<(u16, u32)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u16, c))
            .collect()
    }

    fn from_sparse(buckets: &[(u16, u32)]) -> Sketch {
        let mut s = Sketch::default();
        for &(i, c) in buckets {
            if usize::from(i) < BUCKETS {
                if s.counts.is_empty() {
                    s.counts = vec![0; BUCKETS];
                }
                s.counts[usize::from(i)] = c;
            }
        }
        s
    }
}

/// The bucket of `micros`: `floor(ln(v) / ln(GAMMA))`, found without a logarithm (the
/// request path records one per request): the value's octave and next four bits give a
/// bucket at or just below it, and the first values of the buckets after it say how far
/// to step (a step or two at most).
fn index(micros: u64) -> usize {
    // Below the sentinel past the last bucket, so the search stops there.
    let v = micros.clamp(1, u64::MAX - 1);
    let t = &*TABLES;
    let octave = 63 - v.leading_zeros() as usize;
    let sixteenth = ((v << (63 - octave)) >> 59 & 0xf) as usize;
    let mut i = usize::from(t.start[octave * 16 + sixteenth]);
    while t.first[i + 1] <= v {
        i += 1;
    }
    i
}

/// `index` by its definition, which the tables are made from.
fn index_by_log(v: u64) -> usize {
    (((v.max(1) as f64).ln() / GAMMA.ln()) as usize).min(BUCKETS - 1)
}

struct Tables {
    /// The first value of each bucket (`u64::MAX` past the last, so a search stops there).
    first: Vec<u64>,
    /// For each octave and sixteenth of it, the bucket of its first value.
    start: Vec<u16>,
}

static TABLES: std::sync::LazyLock<Tables> = std::sync::LazyLock::new(|| {
    let mut first = vec![1u64; BUCKETS + 1];
    for i in 1..BUCKETS {
        // The smallest value whose bucket is `i` or later.
        let (mut lo, mut hi) = (first[i - 1], 1u64 << 48);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if index_by_log(mid) >= i {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        first[i] = lo;
    }
    first[BUCKETS] = u64::MAX;
    let start = (0..64 * 16)
        .map(|k| {
            let (octave, sixteenth) = (k / 16, k % 16);
            let lowest = ((16 + sixteenth as u128) << octave >> 4).min(u128::from(u64::MAX));
            index_by_log(lowest as u64) as u16
        })
        .collect();
    Tables { first, start }
});

/// The middle of bucket `i` (relative error under 2%).
fn value(i: usize) -> f64 {
    GAMMA.powf(i as f64) * 2.0 * GAMMA / (1.0 + GAMMA)
}

impl Serialize for Sketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.sparse().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<(u16, u32)>::deserialize(d).map(|b| Sketch::from_sparse(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_is_the_one_the_logarithm_gives() {
        let mut rng = fastrand::Rng::with_seed(3);
        let t = &*TABLES;
        let edges = t.first[1..BUCKETS].iter().flat_map(|&f| [f - 1, f, f + 1]);
        let some = (0..200_000).map(|_| {
            let bits = rng.u32(1..48);
            rng.u64(..1 << bits)
        });
        for v in edges
            .chain(some)
            .chain([0, 1, 2, 3, u64::MAX / 2, u64::MAX])
        {
            assert_eq!(index(v), index_by_log(v), "{v}");
        }
    }

    #[test]
    fn quantiles_of_merged_sketches_are_within_two_percent() {
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for us in 1..=5_000u64 {
            a.add(us * 100);
        }
        for us in 5_001..=10_000u64 {
            b.add(us * 100);
        }
        a.merge(&b);
        for (q, truth) in [(0.5, 500_000.0), (0.95, 950_000.0), (0.99, 990_000.0)] {
            let got = a.quantile(q).unwrap_or(0.0);
            assert!((got - truth).abs() / truth < 0.02, "q{q}: {got} vs {truth}");
        }
        let stored = postcard::to_allocvec(&a).unwrap_or_default();
        let back: Sketch = postcard::from_bytes(&stored).unwrap_or_default();
        assert_eq!(back, a);
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}
