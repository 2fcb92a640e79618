//! Load balancing: which target of an upstream group gets the next request.
//!
//! One `Balancer` per upstream group, shared by every worker: all state is atomics, so `pick`
//! takes no lock and never allocates. Round robin walks a smooth weighted sequence computed
//! once at load; least connections and peak EWMA read per-target counters kept by the
//! `InFlight` guard; consistent hashing looks keys up in a Maglev table (see `hash.rs`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::hash::{hash_bytes, hash_u64, key_hash, Maglev};
use crate::config::model::{BalancerKind, HashKey, Target};

/// Longest round-robin sequence kept; larger weight sums are scaled down to fit.
const MAX_SEQUENCE: u64 = 16_384;
/// Fresh round-robin slots taken when landing on excluded targets before walking locally.
const RR_DRAWS: usize = 16;
/// Random draws tried before counting the non-excluded targets.
const RANDOM_DRAWS: usize = 4;
/// Time constant of the latency estimate's decay toward lower samples and, when idle, to 0.
const EWMA_DECAY_MS: f64 = 10_000.0;
/// Estimate used until a target's first response: all targets start equal and get tried.
const DEFAULT_RTT_NS: f64 = 5_000_000.0;
/// A failed request's estimate doubles at most up to this (its elapsed time may exceed it).
const FAILURE_CAP_NS: f64 = 30_000_000_000.0;
/// Marks a target that has never reported a latency; the first sample replaces it outright.
const UNSAMPLED: f32 = f32::NAN;
const ID_SEED: u64 = 0x7461_7267_6574_2121;

/// Picks targets for one upstream group; `Send + Sync`, shared by all workers.
pub struct Balancer {
    strategy: Strategy,
    weights: Box<[u32]>,
    /// `cumulative[i]` = sum of weights `0..=i`, for weighted random draws.
    cumulative: Box<[u64]>,
    slots: Box<[Slot]>,
    /// Zero point of the millisecond stamps kept by the latency estimates.
    epoch: Instant,
}

/// What a request offers the balancer to choose with.
pub struct PickInput<'a> {
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
}

/// One request in flight on a target, counted until dropped.
///
/// Borrows the balancer: it lives inside the snapshot the request already holds. Call
/// `finish` with the upstream latency on success; dropping it unfinished counts as a failure,
/// which peak EWMA charges as a slow sample so that a fast-failing target does not attract
/// traffic.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight<'a> {
    balancer: &'a Balancer,
    index: usize,
    /// Set for peak EWMA only, to charge a failure at least the time it took.
    started: Option<Instant>,
    finished: bool,
}

enum Strategy {
    RoundRobin {
        /// The smooth weighted round-robin order over one cycle, as target indices.
        sequence: Box<[u32]>,
        cursor: AtomicUsize,
    },
    LeastConnections,
    Random,
    PeakEwma,
    ConsistentHash {
        key: HashKey,
        table: Maglev,
    },
}

/// Per-target counters, one cache line each so workers updating neighbours do not collide.
#[repr(align(64))]
struct Slot {
    in_flight: AtomicU64,
    /// Peak-EWMA state, estimate and stamp packed so one compare-exchange updates both
    /// (see `pack`).
    latency: AtomicU64,
}

impl Balancer {
    /// Targets known by list position: weights[i] is target i's weight (>= 1).
    ///
    /// Consistent hashing then keys targets by index, so removing one from the middle of the
    /// list remaps the ones after it; `with_targets` keys them by address instead.
    pub fn new(kind: &BalancerKind, weights: &[u32]) -> Balancer {
        let ids: Vec<u64> = (0..weights.len() as u64)
            .map(|i| hash_u64(ID_SEED, i))
            .collect();
        Balancer::build(kind, weights, &ids)
    }

    /// Targets known by address: consistent-hash keys stay put when other targets are added,
    /// removed or reordered across reloads, and agree between gateway instances.
    pub fn with_targets(kind: &BalancerKind, targets: &[Target]) -> Balancer {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let ids: Vec<u64> = targets
            .iter()
            .map(|t| {
                let mut bytes = [0u8; 18];
                match t.address.ip().to_canonical() {
                    IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => bytes[..16].copy_from_slice(&ip.octets()),
                }
                bytes[16..].copy_from_slice(&t.address.port().to_be_bytes());
                hash_bytes(ID_SEED, &bytes)
            })
            .collect();
        Balancer::build(kind, &weights, &ids)
    }

    fn build(kind: &BalancerKind, weights: &[u32], ids: &[u64]) -> Balancer {
        let weights: Box<[u32]> = weights.iter().map(|&w| w.max(1)).collect();
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let strategy = match kind {
            BalancerKind::RoundRobin => Strategy::RoundRobin {
                sequence: smooth_sequence(&weights),
                cursor: AtomicUsize::new(0),
            },
            BalancerKind::LeastConnections => Strategy::LeastConnections,
            BalancerKind::Random => Strategy::Random,
            BalancerKind::PeakEwma => Strategy::PeakEwma,
            BalancerKind::ConsistentHash(key) => Strategy::ConsistentHash {
                key: key.clone(),
                table: Maglev::new(ids, &weights),
            },
        };
        let slots = weights
            .iter()
            .map(|_| Slot {
                in_flight: AtomicU64::new(0),
                latency: AtomicU64::new(pack(UNSAMPLED, 0)),
            })
            .collect();
        Balancer {
            strategy,
            weights,
            cumulative,
            slots,
            epoch: Instant::now(),
        }
    }

    /// Index of the target for this request; `excluded(i)` true means skip i (unhealthy or
    /// already tried). None only when every target is excluded.
    pub fn pick(&self, input: &PickInput<'_>, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        match &self.strategy {
            Strategy::RoundRobin { sequence, cursor } => {
                self.round_robin(sequence, cursor, excluded)
            }
            Strategy::LeastConnections => self.least_connections(excluded),
            Strategy::Random => self.weighted_random(excluded),
            Strategy::PeakEwma => self.peak_ewma(self.now_ms(Instant::now()), excluded),
            Strategy::ConsistentHash { key, table } => match key_hash(key, input) {
                Some(hash) => table.lookup(hash, excluded),
                None => self.weighted_random(excluded),
            },
        }
    }

    /// Counts a request as in flight on target `i` until the guard is dropped.
    pub fn start(&self, i: usize) -> InFlight<'_> {
        debug_assert!(i < self.slots.len(), "target {i} out of range");
        if let Some(slot) = self.slots.get(i) {
            slot.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            balancer: self,
            index: i,
            started: matches!(self.strategy, Strategy::PeakEwma).then(Instant::now),
            finished: false,
        }
    }

    /// Requests currently in flight on target `i`.
    pub fn in_flight(&self, i: usize) -> u64 {
        self.slots
            .get(i)
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    /// Takes the next slot of the smooth sequence. Slots of excluded targets are consumed and
    /// skipped, which keeps the remaining targets in exact weight proportion.
    fn round_robin(
        &self,
        sequence: &[u32],
        cursor: &AtomicUsize,
        excluded: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = sequence.len();
        if len == 0 {
            return None;
        }
        for _ in 0..RR_DRAWS {
            let target = sequence[cursor.fetch_add(1, Ordering::Relaxed) % len] as usize;
            if !excluded(target) {
                return Some(target);
            }
        }
        // Long runs of excluded slots: find any healthy target, then walk without consuming.
        (0..self.weights.len()).find(|&i| !excluded(i))?;
        let start = cursor.load(Ordering::Relaxed);
        (0..len)
            .map(|k| sequence[(start + k) % len] as usize)
            .find(|&t| !excluded(t))
    }

    /// Lowest in-flight count per unit of weight; ties drawn at random in weight proportion,
    /// so an idle group still splits by weight.
    fn least_connections(&self, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, u64, u32)> = None;
        let mut tied_weight = 0u64;
        for (i, &w) in self.weights.iter().enumerate() {
            if excluded(i) {
                continue;
            }
            let load = self.in_flight(i);
            let Some((_, best_load, best_w)) = best else {
                best = Some((i, load, w));
                tied_weight = u64::from(w);
                continue;
            };
            // load / w against best_load / best_w without division.
            let lhs = u128::from(load) * u128::from(best_w);
            let rhs = u128::from(best_load) * u128::from(w);
            if lhs < rhs {
                best = Some((i, load, w));
                tied_weight = u64::from(w);
            } else if lhs == rhs {
                tied_weight += u64::from(w);
                if fastrand::u64(..tied_weight) < u64::from(w) {
                    best = Some((i, load, w));
                }
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn weighted_random(&self, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = fastrand::u64(..total);
        let first = self.cumulative.partition_point(|&c| c <= r);
        if !excluded(first) {
            return Some(first);
        }
        let available: u64 = self
            .weights
            .iter()
            .enumerate()
            .filter(|&(i, _)| !excluded(i))
            .map(|(_, &w)| u64::from(w))
            .sum();
        if available == 0 {
            return None;
        }
        let mut r = fastrand::u64(..available);
        for (i, &w) in self.weights.iter().enumerate() {
            if excluded(i) {
                continue;
            }
            if r < u64::from(w) {
                return Some(i);
            }
            r -= u64::from(w);
        }
        None
    }

    /// Power of two choices: the cheaper of two random non-excluded targets.
    fn peak_ewma(&self, now_ms: u64, excluded: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.weights.len();
        let a = random_available(n, None, excluded)?;
        let Some(b) = random_available(n, Some(a), excluded) else {
            return Some(a);
        };
        if self.cost(b, now_ms) < self.cost(a, now_ms) {
            Some(b)
        } else {
            Some(a)
        }
    }

    /// Expected wait on target i: latency estimate × (in flight + 1) / weight.
    fn cost(&self, i: usize, now_ms: u64) -> f64 {
        let Some(slot) = self.slots.get(i) else {
            return f64::INFINITY;
        };
        let in_flight = slot.in_flight.load(Ordering::Relaxed);
        let (estimate, stamp) = unpack(slot.latency.load(Ordering::Relaxed));
        let mut estimate = if estimate.is_nan() {
            DEFAULT_RTT_NS
        } else {
            f64::from(estimate)
        };
        // An idle target's estimate fades toward zero, so a target that was slow once gets
        // retried once the others have been busy for a while. With requests pending it does
        // not fade: nothing new is known, and a hung target must not look ever cheaper.
        if in_flight == 0 {
            estimate *= decay(now_ms.saturating_sub(stamp));
        }
        estimate * (in_flight + 1) as f64 / f64::from(self.weights[i])
    }

    /// Feeds one latency sample (or a failure) into target i's peak EWMA.
    fn observe(&self, i: usize, now_ms: u64, sample: Option<Duration>, elapsed: Duration) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let elapsed_ns = elapsed.as_nanos() as f64;
        let mut current = slot.latency.load(Ordering::Relaxed);
        loop {
            let (previous, stamp) = unpack(current);
            let next = match sample {
                Some(latency) => {
                    let sample = latency.as_nanos() as f64;
                    let previous = f64::from(previous);
                    if previous.is_nan() || sample >= previous {
                        sample
                    } else {
                        // A racing update may carry a later stamp: no time has passed then.
                        let w = decay(now_ms.saturating_sub(stamp));
                        previous * w + sample * (1.0 - w)
                    }
                }
                None => {
                    let previous = if previous.is_nan() {
                        DEFAULT_RTT_NS
                    } else {
                        f64::from(previous)
                    };
                    elapsed_ns.max((previous * 2.0).min(FAILURE_CAP_NS))
                }
            };
            match slot.latency.compare_exchange_weak(
                current,
                pack(next as f32, now_ms.max(stamp)),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Milliseconds since the balancer was built.
    fn now_ms(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

impl InFlight<'_> {
    /// Ends the request as answered after `latency`.
    pub fn finish(mut self, latency: Duration) {
        self.finished = true;
        if matches!(self.balancer.strategy, Strategy::PeakEwma) {
            let now = self.balancer.now_ms(Instant::now());
            self.balancer
                .observe(self.index, now, Some(latency), latency);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.balancer.slots.get(self.index) {
            slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.finished {
            if let Some(started) = self.started {
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(started);
                self.balancer
                    .observe(self.index, self.balancer.now_ms(now), None, elapsed);
            }
        }
    }
}

/// One cycle of smooth weighted round robin: each step adds every weight to its target's
/// running total, takes the largest (first on ties) and charges it the sum. Each target
/// appears exactly weight times, spread out (5,1,1 gives a a b a c a a).
fn smooth_sequence(weights: &[u32]) -> Box<[u32]> {
    let weights = reduce_weights(weights);
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence.into_boxed_slice()
}

/// Divides weights by their common divisor (100,50 cycles like 2,1) and scales sums beyond
/// `MAX_SEQUENCE` down proportionally, keeping every target at least 1.
fn reduce_weights(weights: &[u32]) -> Vec<i64> {
    let divisor = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / divisor).collect();
    let sum: u64 = reduced.iter().sum();
    reduced
        .into_iter()
        .map(|w| {
            let w = if sum > MAX_SEQUENCE {
                (w * MAX_SEQUENCE + sum / 2) / sum
            } else {
                w
            };
            w.max(1) as i64
        })
        .collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weight kept by the old estimate after `elapsed_ms`: e^(-t/τ).
fn decay(elapsed_ms: u64) -> f64 {
    (-(elapsed_ms as f64) / EWMA_DECAY_MS).exp()
}

/// Bits of the packed state holding the stamp: 42 bits of milliseconds last 139 years.
const STAMP_BITS: u32 = 42;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
/// Low mantissa bits of the f32 estimate dropped to make room; 13 remain (0.01 % precision).
const DROPPED_BITS: u32 = 10;

/// Estimate (f32 nanoseconds, top 22 bits; NaN survives) over the millisecond stamp.
fn pack(estimate_ns: f32, stamp_ms: u64) -> u64 {
    (u64::from(estimate_ns.to_bits() >> DROPPED_BITS) << STAMP_BITS) | (stamp_ms & STAMP_MASK)
}

fn unpack(state: u64) -> (f32, u64) {
    let bits = ((state >> STAMP_BITS) as u32) << DROPPED_BITS;
    (f32::from_bits(bits), state & STAMP_MASK)
}

/// A uniformly random non-excluded index other than `avoid`, without allocating.
fn random_available(
    n: usize,
    avoid: Option<usize>,
    excluded: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let skip = usize::from(avoid.is_some());
    if n <= skip {
        return None;
    }
    for _ in 0..RANDOM_DRAWS {
        let mut i = fastrand::usize(..n - skip);
        // Shift past `avoid` so the draw is uniform over the other n - 1.
        if avoid.is_some_and(|a| i >= a) {
            i += 1;
        }
        if !excluded(i) {
            return Some(i);
        }
    }
    let usable = |i: &usize| Some(*i) != avoid && !excluded(*i);
    let count = (0..n).filter(usable).count();
    if count == 0 {
        return None;
    }
    (0..n).filter(usable).nth(fastrand::usize(..count))
}

#[cfg(test)]
mod tests;
