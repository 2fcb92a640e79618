//! Tests of `health`.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn targets(n: usize) -> Vec<Arc<TargetHealth>> {
    (0..n).map(|_| Arc::new(TargetHealth::new())).collect()
}

fn passive(consecutive_5xx: u32, consecutive_failures: u32) -> PassiveSettings {
    PassiveSettings {
        consecutive_5xx,
        consecutive_failures,
        base_ejection: secs(10),
        max_ejection: secs(300),
        max_ejected_percent: 100,
    }
}

fn circuit(consecutive_failures: u32, error_ratio: f64, min_requests: u32) -> CircuitSettings {
    CircuitSettings {
        consecutive_failures,
        error_ratio,
        min_requests,
        window: secs(10),
        open_for: secs(5),
        half_open_probes: 1,
    }
}

fn active(healthy: u32, unhealthy: u32) -> ActiveThresholds {
    ActiveThresholds { healthy, unhealthy }
}

/// A group of `n` targets with passive ejection only; returns it with a `now` taken after
/// the targets were created.
fn passive_group(n: usize, settings: PassiveSettings) -> (GroupHealth, Instant) {
    let group = GroupHealth::new(targets(n), Some(settings), None, None);
    (group, Instant::now())
}

fn circuit_group(settings: CircuitSettings) -> (GroupHealth, Instant) {
    let group = GroupHealth::new(targets(1), None, Some(settings), None);
    (group, Instant::now())
}

fn active_group(thresholds: ActiveThresholds) -> (GroupHealth, Instant) {
    let group = GroupHealth::new(targets(1), None, None, Some(thresholds));
    (group, Instant::now())
}

fn record_n(group: &GroupHealth, index: usize, outcome: Outcome, n: u32, now: Instant) {
    for _ in 0..n {
        group.record(index, outcome, now);
    }
}

fn circuit_of(group: &GroupHealth, now: Instant) -> CircuitState {
    group.snapshot(0, now).unwrap().circuit
}

// Active health.

#[test]
fn target_is_available_before_any_probe() {
    let (group, now) = active_group(active(2, 3));
    assert!(group.available(0, now));
}

#[test]
fn unhealthy_threshold_of_failed_probes_marks_target_down() {
    let (group, now) = active_group(active(2, 3));
    group.probe_result(0, false);
    group.probe_result(0, false);
    assert!(group.available(0, now));
    group.probe_result(0, false);
    assert!(!group.available(0, now));
}

#[test]
fn good_probe_resets_the_failed_probe_streak() {
    let (group, now) = active_group(active(1, 2));
    group.probe_result(0, false);
    group.probe_result(0, true);
    group.probe_result(0, false);
    assert!(group.available(0, now));
}

#[test]
fn healthy_threshold_of_good_probes_brings_target_back() {
    let (group, now) = active_group(active(2, 1));
    group.probe_result(0, false);
    group.probe_result(0, true);
    assert!(!group.available(0, now));
    group.probe_result(0, true);
    assert!(group.available(0, now));
}

#[test]
fn probe_result_reports_only_state_flips() {
    let (group, _) = active_group(active(1, 1));
    assert!(!group.probe_result(0, true));
    assert!(group.probe_result(0, false));
    assert!(!group.probe_result(0, false));
    assert!(group.probe_result(0, true));
}

#[test]
fn probe_results_are_ignored_without_active_checks() {
    let (group, now) = passive_group(1, passive(5, 5));
    assert!(!group.probe_result(0, false));
    assert!(group.available(0, now));
}

// Passive ejection.

#[test]
fn consecutive_5xx_eject_the_target() {
    let (group, now) = passive_group(2, passive(3, 0));
    record_n(&group, 0, Outcome::Status5xx, 2, now);
    assert!(group.available(0, now));
    group.record(0, Outcome::Status5xx, now);
    assert!(!group.available(0, now));
    assert!(group.available(1, now));
}

#[test]
fn success_resets_the_consecutive_5xx() {
    let (group, now) = passive_group(1, passive(3, 0));
    record_n(&group, 0, Outcome::Status5xx, 2, now);
    group.record(0, Outcome::Success, now);
    record_n(&group, 0, Outcome::Status5xx, 2, now);
    assert!(group.available(0, now));
}

#[test]
fn consecutive_failures_eject_the_target() {
    let (group, now) = passive_group(1, passive(0, 2));
    group.record(0, Outcome::Failure, now);
    assert!(group.available(0, now));
    group.record(0, Outcome::Failure, now);
    assert!(!group.available(0, now));
}

#[test]
fn failures_count_toward_consecutive_5xx() {
    let (group, now) = passive_group(1, passive(3, 0));
    record_n(&group, 0, Outcome::Status5xx, 2, now);
    group.record(0, Outcome::Failure, now);
    assert!(!group.available(0, now));
}

#[test]
fn a_5xx_breaks_the_failure_streak() {
    let (group, now) = passive_group(1, passive(0, 2));
    group.record(0, Outcome::Failure, now);
    group.record(0, Outcome::Status5xx, now);
    group.record(0, Outcome::Failure, now);
    assert!(group.available(0, now));
}

#[test]
fn ejected_target_returns_after_base_ejection() {
    let (group, now) = passive_group(1, passive(1, 0));
    group.record(0, Outcome::Status5xx, now);
    assert!(!group.available(0, now + secs(10) - Duration::from_millis(1)));
    assert!(group.available(0, now + secs(10)));
}

#[test]
fn repeated_ejection_doubles_the_period() {
    let (group, now) = passive_group(1, passive(1, 0));
    group.record(0, Outcome::Status5xx, now);
    let back = now + secs(10);
    group.record(0, Outcome::Status5xx, back);
    assert!(!group.available(0, back + secs(19)));
    assert!(group.available(0, back + secs(20)));
}

#[test]
fn ejection_period_is_capped_at_max_ejection() {
    let settings = PassiveSettings {
        max_ejection: secs(25),
        ..passive(1, 0)
    };
    let (group, mut now) = passive_group(1, settings);
    for _ in 0..5 {
        group.record(0, Outcome::Status5xx, now);
        now += group.snapshot(0, now).unwrap().ejected_until.unwrap();
    }
    group.record(0, Outcome::Status5xx, now);
    assert_eq!(
        group.snapshot(0, now).unwrap().ejected_until,
        Some(secs(25))
    );
}

#[test]
fn ejection_level_decays_while_the_target_behaves() {
    let (group, now) = passive_group(1, passive(1, 0));
    group.record(0, Outcome::Status5xx, now);
    group.record(0, Outcome::Status5xx, now + secs(10));
    // Level 2 now; back at +30 s, then 20 s (two base periods) without ejection.
    let later = now + secs(50);
    group.record(0, Outcome::Status5xx, later);
    assert_eq!(
        group.snapshot(0, later).unwrap().ejected_until,
        Some(secs(10))
    );
}

#[test]
fn ejection_cap_allows_one_of_three_targets_at_50_percent() {
    let settings = PassiveSettings {
        max_ejected_percent: 50,
        ..passive(1, 0)
    };
    let (group, now) = passive_group(3, settings);
    for i in 0..3 {
        group.record(i, Outcome::Status5xx, now);
    }
    let ejected = (0..3).filter(|&i| !group.available(i, now)).count();
    assert_eq!(ejected, 1);
}

#[test]
fn ejection_cap_has_no_floor_of_one_target() {
    let settings = PassiveSettings {
        max_ejected_percent: 50,
        ..passive(1, 0)
    };
    let (group, now) = passive_group(1, settings);
    group.record(0, Outcome::Status5xx, now);
    assert!(group.available(0, now));
}

#[test]
fn sole_target_can_be_ejected_at_100_percent() {
    let (group, now) = passive_group(1, passive(1, 0));
    group.record(0, Outcome::Status5xx, now);
    assert!(!group.any_available(now));
}

#[test]
fn capped_target_is_ejected_once_another_returns() {
    let settings = PassiveSettings {
        max_ejected_percent: 50,
        ..passive(1, 0)
    };
    let (group, now) = passive_group(2, settings);
    group.record(0, Outcome::Status5xx, now);
    group.record(1, Outcome::Status5xx, now);
    assert!(group.available(1, now));
    let later = now + secs(10);
    group.record(1, Outcome::Status5xx, later);
    assert!(group.available(0, later));
    assert!(!group.available(1, later));
}

#[test]
fn late_failures_during_ejection_do_not_eject_again_on_return() {
    let (group, now) = passive_group(1, passive(2, 0));
    record_n(&group, 0, Outcome::Status5xx, 4, now);
    let back = now + secs(10);
    group.record(0, Outcome::Status5xx, back);
    assert!(group.available(0, back));
}

#[test]
fn ejections_are_counted() {
    let (group, now) = passive_group(1, passive(1, 0));
    group.record(0, Outcome::Status5xx, now);
    group.record(0, Outcome::Status5xx, now + secs(10));
    assert_eq!(group.snapshot(0, now).unwrap().ejections_total, 2);
}

// Circuit breaker.

#[test]
fn circuit_opens_after_consecutive_failures_including_5xx() {
    let (group, now) = circuit_group(circuit(3, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    group.record(0, Outcome::Status5xx, now);
    assert!(group.available(0, now));
    group.record(0, Outcome::Failure, now);
    assert!(!group.available(0, now));
    assert_eq!(circuit_of(&group, now), CircuitState::Open);
}

#[test]
fn success_resets_the_circuit_failure_streak() {
    let (group, now) = circuit_group(circuit(2, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    group.record(0, Outcome::Success, now);
    group.record(0, Outcome::Failure, now);
    assert_eq!(circuit_of(&group, now), CircuitState::Closed);
}

#[test]
fn circuit_opens_on_error_ratio_after_min_requests() {
    let (group, now) = circuit_group(circuit(0, 0.5, 10));
    record_n(&group, 0, Outcome::Success, 5, now);
    record_n(&group, 0, Outcome::Status5xx, 4, now);
    assert_eq!(circuit_of(&group, now), CircuitState::Closed);
    group.record(0, Outcome::Failure, now);
    assert_eq!(circuit_of(&group, now), CircuitState::Open);
}

#[test]
fn error_ratio_waits_for_min_requests() {
    let (group, now) = circuit_group(circuit(0, 0.5, 10));
    record_n(&group, 0, Outcome::Failure, 9, now);
    assert_eq!(circuit_of(&group, now), CircuitState::Closed);
}

#[test]
fn outcomes_older_than_the_window_leave_the_ratio() {
    let (group, now) = circuit_group(circuit(0, 0.5, 4));
    record_n(&group, 0, Outcome::Failure, 3, now);
    let later = now + secs(11);
    group.record(0, Outcome::Failure, later);
    assert_eq!(circuit_of(&group, later), CircuitState::Closed);
}

#[test]
fn open_circuit_rejects_until_open_for_passes() {
    let (group, now) = circuit_group(circuit(1, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    assert!(group.try_admit(0, now + secs(4)).is_none());
    assert!(group.try_admit(0, now + secs(5)).is_some());
}

#[test]
fn half_open_admits_only_the_configured_trials() {
    let settings = CircuitSettings {
        half_open_probes: 2,
        ..circuit(1, 0.0, 0)
    };
    let (group, now) = circuit_group(settings);
    group.record(0, Outcome::Failure, now);
    let later = now + secs(5);
    let first = group.try_admit(0, later).unwrap();
    let second = group.try_admit(0, later).unwrap();
    assert!(first.is_trial() && second.is_trial());
    assert!(!group.available(0, later));
    assert!(group.try_admit(0, later).is_none());
}

#[test]
fn half_open_success_closes_the_circuit() {
    let (group, now) = circuit_group(circuit(1, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    let later = now + secs(5);
    group
        .try_admit(0, later)
        .unwrap()
        .record(Outcome::Success, later);
    assert_eq!(circuit_of(&group, later), CircuitState::Closed);
    let next = group.try_admit(0, later).unwrap();
    assert!(!next.is_trial());
}

#[test]
fn half_open_failure_reopens_the_circuit() {
    let (group, now) = circuit_group(circuit(1, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    let later = now + secs(5);
    group
        .try_admit(0, later)
        .unwrap()
        .record(Outcome::Status5xx, later);
    assert_eq!(circuit_of(&group, later), CircuitState::Open);
    assert!(group.try_admit(0, later + secs(4)).is_none());
    assert!(group.try_admit(0, later + secs(5)).is_some());
}

#[test]
fn closing_forgets_the_failures_that_opened_the_circuit() {
    let (group, now) = circuit_group(circuit(0, 0.5, 2));
    record_n(&group, 0, Outcome::Failure, 2, now);
    let later = now + secs(5);
    group
        .try_admit(0, later)
        .unwrap()
        .record(Outcome::Success, later);
    group.record(0, Outcome::Failure, later);
    assert_eq!(circuit_of(&group, later), CircuitState::Closed);
}

#[test]
fn dropped_trial_frees_its_slot_without_an_outcome() {
    let (group, now) = circuit_group(circuit(1, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    let later = now + secs(5);
    drop(group.try_admit(0, later).unwrap());
    assert_eq!(circuit_of(&group, later), CircuitState::HalfOpen);
    assert!(group.try_admit(0, later).unwrap().is_trial());
}

#[test]
fn dropped_admission_records_no_failure() {
    let group = GroupHealth::new(
        targets(1),
        Some(passive(1, 1)),
        Some(circuit(1, 0.0, 0)),
        None,
    );
    let now = Instant::now();
    drop(group.try_admit(0, now).unwrap());
    let status = group.snapshot(0, now).unwrap();
    assert_eq!(status.circuit, CircuitState::Closed);
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.available);
}

#[test]
fn trial_from_an_earlier_round_does_not_free_a_new_slot() {
    let (group, now) = circuit_group(circuit(1, 0.0, 0));
    group.record(0, Outcome::Failure, now);
    let t1 = now + secs(5);
    let stale = group.try_admit(0, t1).unwrap();
    // Another outcome re-opens the breaker; a new round starts after open_for.
    group.record(0, Outcome::Failure, t1);
    let t2 = t1 + secs(5);
    let current = group.try_admit(0, t2).unwrap();
    drop(stale);
    assert!(group.try_admit(0, t2).is_none());
    drop(current);
}

// Draining, reloads, availability.

#[test]
fn draining_target_gets_no_new_requests() {
    let group = GroupHealth::new(targets(2), None, None, None);
    let now = Instant::now();
    group.set_draining(0, true);
    assert!(group.try_admit(0, now).is_none());
    assert!(group.available(1, now));
    group.set_draining(0, false);
    assert!(group.available(0, now));
}

#[test]
fn state_survives_a_reload_that_keeps_the_target() {
    let shared = targets(2);
    let old = GroupHealth::new(shared.clone(), Some(passive(1, 0)), None, None);
    let now = Instant::now();
    old.record(1, Outcome::Status5xx, now);
    old.set_draining(0, true);
    let new = GroupHealth::new(
        vec![shared[1].clone(), shared[0].clone()],
        Some(passive(1, 0)),
        None,
        None,
    );
    assert!(!new.available(0, now));
    assert!(!new.available(1, now));
    assert_eq!(new.snapshot(0, now).unwrap().ejections_total, 1);
}

#[test]
fn disabled_features_are_ignored_after_a_reload() {
    let shared = targets(1);
    let old = GroupHealth::new(
        shared.clone(),
        Some(passive(1, 0)),
        Some(circuit(1, 0.0, 0)),
        Some(active(1, 1)),
    );
    let now = Instant::now();
    old.record(0, Outcome::Failure, now);
    old.probe_result(0, false);
    assert!(!old.available(0, now));
    let new = GroupHealth::new(shared, None, None, None);
    assert!(new.available(0, now));
}

#[test]
fn no_target_available_when_all_are_down() {
    let group = GroupHealth::new(targets(2), None, None, Some(active(1, 1)));
    let now = Instant::now();
    group.probe_result(0, false);
    assert!(group.any_available(now));
    group.probe_result(1, false);
    assert!(!group.any_available(now));
}

#[test]
fn unknown_target_is_unavailable() {
    let group = GroupHealth::new(targets(1), None, None, None);
    let now = Instant::now();
    assert!(!group.available(1, now));
    assert!(group.try_admit(1, now).is_none());
    assert!(group.snapshot(1, now).is_none());
}

#[test]
fn snapshot_reports_ejection_remaining_and_circuit_state() {
    let group = GroupHealth::new(
        targets(1),
        Some(passive(2, 0)),
        Some(circuit(2, 0.0, 0)),
        None,
    );
    let now = Instant::now();
    group.record(0, Outcome::Status5xx, now);
    let status = group.snapshot(0, now).unwrap();
    assert_eq!(status.consecutive_5xx, 1);
    group.record(0, Outcome::Status5xx, now);
    let status = group.snapshot(0, now + secs(4)).unwrap();
    assert_eq!(status.ejected_until, Some(secs(6)));
    assert_eq!(status.circuit, CircuitState::Open);
    assert_eq!(status.circuit.as_str(), "open");
    assert_eq!(status.consecutive_5xx, 0);
    assert!(!status.available);
    assert!(status.active_healthy);
}

#[test]
fn concurrent_trials_never_exceed_the_limit() {
    let settings = CircuitSettings {
        half_open_probes: 3,
        ..circuit(1, 0.0, 0)
    };
    let (group, now) = circuit_group(settings);
    group.record(0, Outcome::Failure, now);
    let later = now + secs(5);
    let barrier = std::sync::Barrier::new(8);
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (group, barrier) = (&group, &barrier);
                scope.spawn(move || {
                    let held: Vec<_> = (0..50).filter_map(|_| group.try_admit(0, later)).collect();
                    // Hold the slots until every thread has tried.
                    barrier.wait();
                    held.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 3);
}

proptest! {
    /// Whatever the outcomes, ejected targets never exceed the group's cap.
    #[test]
    fn ejected_share_never_exceeds_the_cap(
        n in 1usize..8,
        percent in 0u8..=100,
        events in proptest::collection::vec((0usize..8, 0u8..3, 0u64..3_000), 1..200),
    ) {
        let settings = PassiveSettings {
            max_ejected_percent: percent,
            ..passive(2, 1)
        };
        let (group, start) = passive_group(n, settings);
        let mut now = start;
        for (target, kind, advance_ms) in events {
            now += Duration::from_millis(advance_ms);
            let outcome = [Outcome::Success, Outcome::Status5xx, Outcome::Failure][usize::from(kind)];
            group.record(target % n, outcome, now);
            let ejected = (0..n).filter(|&i| !group.available(i, now)).count();
            prop_assert!(ejected * 100 <= usize::from(percent) * n);
        }
    }
}
