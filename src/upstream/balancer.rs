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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request<'a>(headers: &'a HeaderMap, path: &'a str) -> PickInput<'a> {
        PickInput {
            client_ip: IpAddr::from([192, 0, 2, 1]),
            headers,
            path,
        }
    }

    fn never(_: usize) -> bool {
        false
    }

    /// Picks `count` times with no key and no exclusion; returns picks per target.
    fn tally(balancer: &Balancer, count: usize) -> Vec<usize> {
        let headers = HeaderMap::new();
        let mut counts = vec![0; balancer.weights.len()];
        for _ in 0..count {
            counts[balancer.pick(&request(&headers, "/"), &never).unwrap()] += 1;
        }
        counts
    }

    fn all_kinds() -> Vec<BalancerKind> {
        vec![
            BalancerKind::RoundRobin,
            BalancerKind::LeastConnections,
            BalancerKind::Random,
            BalancerKind::PeakEwma,
            BalancerKind::ConsistentHash(HashKey::ClientIp),
            BalancerKind::ConsistentHash(HashKey::Path),
        ]
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Target i's latency estimate in milliseconds (packing keeps 4 significant digits).
    fn estimate_ms(balancer: &Balancer, i: usize) -> f64 {
        f64::from(unpack(balancer.slots[i].latency.load(Ordering::Relaxed)).0) / 1e6
    }

    fn assert_near(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= expected * 1e-3,
            "{actual} vs {expected}"
        );
    }

    proptest! {
        #[test]
        fn round_robin_gives_each_target_its_weight_per_cycle(
            weights in proptest::collection::vec(1u32..10, 1..8),
        ) {
            let balancer = Balancer::new(&BalancerKind::RoundRobin, &weights);
            let total: u32 = weights.iter().sum();
            let counts = tally(&balancer, total as usize);
            for (count, w) in counts.iter().zip(&weights) {
                prop_assert_eq!(*count, *w as usize);
            }
        }
    }

    #[test]
    fn round_robin_spreads_a_heavy_target_smoothly() {
        let balancer = Balancer::new(&BalancerKind::RoundRobin, &[5, 1, 1]);
        let headers = HeaderMap::new();
        let picks: Vec<usize> = (0..7)
            .map(|_| balancer.pick(&request(&headers, "/"), &never).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_never_runs_one_target_more_than_its_weight() {
        let balancer = Balancer::new(&BalancerKind::RoundRobin, &[5, 1, 1]);
        let headers = HeaderMap::new();
        let (mut last, mut run, mut longest) = (usize::MAX, 0, 0);
        for _ in 0..700 {
            let pick = balancer.pick(&request(&headers, "/"), &never).unwrap();
            run = if pick == last { run + 1 } else { 1 };
            last = pick;
            longest = longest.max(run);
        }
        assert!(longest <= 5, "run of {longest}");
    }

    #[test]
    fn round_robin_keeps_proportions_among_healthy_targets() {
        let balancer = Balancer::new(&BalancerKind::RoundRobin, &[3, 2, 1]);
        let headers = HeaderMap::new();
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[balancer.pick(&request(&headers, "/"), &|i| i == 1).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 0, 100]);
    }

    #[test]
    fn round_robin_reduces_weights_by_common_divisor() {
        assert_eq!(&*smooth_sequence(&[200, 100]), &[0, 1, 0]);
    }

    #[test]
    fn round_robin_scales_huge_weight_sums_proportionally() {
        let sequence = smooth_sequence(&[10_000, 9_999, 7, 1]);
        assert!(sequence.len() as u64 <= MAX_SEQUENCE + 4);
        let count = |t: u32| sequence.iter().filter(|&&s| s == t).count() as f64;
        assert!((count(0) / count(1) - 10_000.0 / 9_999.0).abs() < 0.01);
        assert!(count(3) >= 1.0, "lightest target keeps a turn");
    }

    #[test]
    fn in_flight_counts_until_guard_drops() {
        let balancer = Balancer::new(&BalancerKind::LeastConnections, &[1, 1]);
        let a = balancer.start(1);
        let b = balancer.start(1);
        assert_eq!(balancer.in_flight(1), 2);
        a.finish(ms(3));
        drop(b);
        assert_eq!(balancer.in_flight(1), 0);
        assert_eq!(balancer.in_flight(0), 0);
    }

    #[test]
    fn least_connections_avoids_the_busy_target() {
        let balancer = Balancer::new(&BalancerKind::LeastConnections, &[1, 1, 1]);
        let _busy = balancer.start(0);
        let counts = tally(&balancer, 300);
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 50 && counts[2] > 50, "{counts:?}");
    }

    #[test]
    fn least_connections_compares_load_per_weight() {
        let balancer = Balancer::new(&BalancerKind::LeastConnections, &[3, 1]);
        let _guards = [balancer.start(0), balancer.start(0), balancer.start(1)];
        // 2 of 3 against 1 of 1.
        assert_eq!(tally(&balancer, 50), [50, 0]);
    }

    #[test]
    fn least_connections_splits_idle_ties_by_weight() {
        let balancer = Balancer::new(&BalancerKind::LeastConnections, &[3, 1]);
        let counts = tally(&balancer, 20_000);
        let share = counts[0] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn random_follows_weights() {
        let balancer = Balancer::new(&BalancerKind::Random, &[1, 2, 7]);
        let counts = tally(&balancer, 50_000);
        for (count, w) in counts.iter().zip([1.0, 2.0, 7.0]) {
            let expected = 5_000.0 * w;
            assert!(
                (*count as f64 - expected).abs() < expected * 0.1,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn random_skips_excluded_targets_by_weight() {
        let balancer = Balancer::new(&BalancerKind::Random, &[5, 1, 3]);
        let headers = HeaderMap::new();
        let mut counts = [0; 3];
        for _ in 0..20_000 {
            counts[balancer.pick(&request(&headers, "/"), &|i| i == 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        let share = counts[2] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn peak_ewma_prefers_the_fast_target() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1, 1, 1]);
        balancer.observe(0, 0, Some(ms(1)), ms(1));
        balancer.observe(1, 0, Some(ms(100)), ms(100));
        balancer.observe(2, 0, Some(ms(100)), ms(100));
        let mut counts = [0; 3];
        for _ in 0..3_000 {
            counts[balancer.peak_ewma(0, &never).unwrap()] += 1;
        }
        // The fast one wins every pair it is drawn into: two pairs of three.
        let share = counts[0] as f64 / 3_000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.05, "{counts:?}");
    }

    #[test]
    fn peak_ewma_spills_over_when_the_fast_target_is_loaded() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1, 1]);
        balancer.observe(0, 0, Some(ms(1)), ms(1));
        balancer.observe(1, 0, Some(ms(10)), ms(10));
        let held: Vec<InFlight<'_>> = (0..10).map(|_| balancer.start(0)).collect();
        // 1 ms × 11 waiting against 10 ms × 1.
        assert_eq!(balancer.peak_ewma(0, &never), Some(1));
        for guard in held {
            guard.finish(ms(1));
        }
        assert_eq!(balancer.peak_ewma(0, &never), Some(0));
    }

    #[test]
    fn peak_ewma_retries_an_idle_slow_target_once_its_estimate_fades() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1, 1]);
        balancer.observe(1, 0, Some(ms(200)), ms(200));
        // Target 0 keeps answering in 2 ms for a minute while target 1 sits idle.
        let mut first_retry = None;
        for second in 1..=60u64 {
            let now = second * 1_000;
            balancer.observe(0, now, Some(ms(2)), ms(2));
            if balancer.peak_ewma(now, &never) == Some(1) {
                first_retry = Some(second);
                break;
            }
        }
        // 200 ms · e^(-t/10 s) < 2 ms once t > 46 s.
        let second = first_retry.unwrap();
        assert!((40..=50).contains(&second), "retried after {second} s");
    }

    #[test]
    fn peak_ewma_jumps_to_a_slower_sample_at_once() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1]);
        balancer.observe(0, 0, Some(ms(5)), ms(5));
        balancer.observe(0, 1, Some(ms(80)), ms(80));
        assert_near(estimate_ms(&balancer, 0), 80.0);
    }

    #[test]
    fn peak_ewma_decays_toward_faster_samples_with_time() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1]);
        balancer.observe(0, 0, Some(ms(100)), ms(100));
        balancer.observe(0, 10_000, Some(ms(10)), ms(10));
        // After one time constant: 100·e^-1 + 10·(1 - e^-1) ≈ 43.1 ms.
        assert_near(estimate_ms(&balancer, 0), 10.0 + 90.0 * (-1.0f64).exp());
    }

    #[test]
    fn peak_ewma_sample_with_an_older_clock_reading_counts_no_elapsed_time() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1]);
        balancer.observe(0, 5_000, Some(ms(100)), ms(100));
        // Another worker read the clock just before the update above landed.
        balancer.observe(0, 4_999, Some(ms(10)), ms(10));
        assert_near(estimate_ms(&balancer, 0), 100.0);
        assert_eq!(
            unpack(balancer.slots[0].latency.load(Ordering::Relaxed)).1,
            5_000
        );
    }

    #[test]
    fn packed_state_keeps_estimate_stamp_and_unsampled_mark() {
        let (estimate, stamp) = unpack(pack(123_456_789.0, 86_400_000 * 365 * 50));
        assert!((f64::from(estimate) / 123_456_789.0 - 1.0).abs() < 1e-3);
        assert_eq!(stamp, 86_400_000 * 365 * 50);
        assert!(unpack(pack(UNSAMPLED, 7)).0.is_nan());
    }

    #[test]
    fn peak_ewma_first_sample_replaces_the_default() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1]);
        balancer.observe(0, 0, Some(Duration::from_micros(300)), ms(0));
        assert_near(estimate_ms(&balancer, 0), 0.3);
    }

    #[test]
    fn peak_ewma_charges_an_unfinished_request_as_slow() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1, 1]);
        balancer.observe(0, 0, Some(ms(1)), ms(1));
        balancer.observe(1, 0, Some(ms(1)), ms(1));
        drop(balancer.start(0));
        assert!(balancer.cost(0, 0) >= 2.0 * balancer.cost(1, 0));
        assert_eq!(balancer.peak_ewma(0, &never), Some(1));
    }

    #[test]
    fn peak_ewma_finished_guard_records_the_latency() {
        let balancer = Balancer::new(&BalancerKind::PeakEwma, &[1]);
        balancer.start(0).finish(ms(40));
        assert_near(estimate_ms(&balancer, 0), 40.0);
    }

    #[test]
    fn excluded_targets_are_never_picked() {
        let headers = HeaderMap::new();
        for kind in all_kinds() {
            let balancer = Balancer::new(&kind, &[2, 1, 3, 1]);
            for k in 0..500u32 {
                let path = format!("/item/{k}");
                let mut input = request(&headers, &path);
                input.client_ip = IpAddr::from(k.to_be_bytes());
                let pick = balancer.pick(&input, &|i| i == 0 || i == 2).unwrap();
                assert!(pick == 1 || pick == 3, "{kind:?} picked {pick}");
            }
        }
    }

    #[test]
    fn all_excluded_picks_nothing() {
        let headers = HeaderMap::new();
        for kind in all_kinds() {
            let balancer = Balancer::new(&kind, &[1, 4, 2]);
            assert_eq!(
                balancer.pick(&request(&headers, "/"), &|_| true),
                None,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn empty_group_picks_nothing() {
        let headers = HeaderMap::new();
        for kind in all_kinds() {
            let balancer = Balancer::new(&kind, &[]);
            assert_eq!(
                balancer.pick(&request(&headers, "/"), &never),
                None,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn consistent_hash_maps_a_key_alike_in_separate_instances() {
        let kind = BalancerKind::ConsistentHash(HashKey::Path);
        let targets: Vec<Target> = (0..7)
            .map(|i| Target {
                address: ([10, 0, 0, i], 8080).into(),
                weight: u32::from(i % 3) + 1,
            })
            .collect();
        let one = Balancer::with_targets(&kind, &targets);
        let two = Balancer::with_targets(&kind, &targets);
        let headers = HeaderMap::new();
        for k in 0..1_000 {
            let path = format!("/users/{k}");
            let input = request(&headers, &path);
            assert_eq!(one.pick(&input, &never), two.pick(&input, &never));
        }
    }

    #[test]
    fn consistent_hash_follows_addresses_not_list_order() {
        let kind = BalancerKind::ConsistentHash(HashKey::Path);
        let mut targets: Vec<Target> = (0..5)
            .map(|i| Target {
                address: ([10, 0, 0, i], 80).into(),
                weight: 1,
            })
            .collect();
        let before = Balancer::with_targets(&kind, &targets);
        targets.reverse();
        let after = Balancer::with_targets(&kind, &targets);
        let headers = HeaderMap::new();
        for k in 0..1_000 {
            let path = format!("/k/{k}");
            let input = request(&headers, &path);
            let old = before.pick(&input, &never).unwrap();
            let new = after.pick(&input, &never).unwrap();
            assert_eq!(old, 4 - new);
        }
    }

    #[test]
    fn consistent_hash_exclusion_moves_only_the_excluded_keys() {
        let balancer = Balancer::new(&BalancerKind::ConsistentHash(HashKey::Path), &[1; 8]);
        let headers = HeaderMap::new();
        for k in 0..5_000 {
            let path = format!("/k/{k}");
            let input = request(&headers, &path);
            let old = balancer.pick(&input, &never).unwrap();
            let new = balancer.pick(&input, &|i| i == 5).unwrap();
            if old != 5 {
                assert_eq!(old, new);
            }
        }
    }

    #[test]
    fn missing_key_falls_back_to_weighted_random() {
        for key in [
            HashKey::Header(http::HeaderName::from_static("x-tenant")),
            HashKey::Cookie("sid".to_owned()),
        ] {
            let balancer = Balancer::new(&BalancerKind::ConsistentHash(key), &[1, 3]);
            let counts = tally(&balancer, 8_000);
            let share = counts[1] as f64 / 8_000.0;
            assert!((share - 0.75).abs() < 0.04, "{counts:?}");
        }
    }

    #[test]
    fn balancer_is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Balancer>();
    }
}
