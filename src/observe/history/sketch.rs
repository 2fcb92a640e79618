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

fn index(micros: u64) -> usize {
    let v = micros.max(1) as f64;
    ((v.ln() / GAMMA.ln()) as usize).min(BUCKETS - 1)
}

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
