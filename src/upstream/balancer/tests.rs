//! Tests of `balancer`.
#![allow(clippy::unwrap_used)]

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
            place: Default::default(),
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
            place: Default::default(),
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
