//! Whether each target of an upstream group may take a request: active health (probes),
//! passive ejection (outlier detection), a per-target circuit breaker and admin draining.
//!
//! State lives in one `TargetHealth` per target, all atomics, shared by every worker and
//! kept across reloads for targets that stay (the snapshot builder hands the same `Arc` to the
//! new `GroupHealth`). `GroupHealth` pairs those with the group's compiled settings; a feature
//! whose settings are `None` is ignored, so a reload that turns it off takes effect at once.
//!
//! Choices (Envoy outlier detection and circuit breaking, HAProxy `observe`/`on-error`):
//! - A `Failure` (connect error, reset, timeout) counts toward both passive streaks, as Envoy
//!   does when it does not split locally originated errors; a 5xx breaks the failure streak
//!   (the target did answer). A success resets both.
//! - Ejection lasts `base_ejection * 2^level`, capped at `max_ejection`; `level` is the number
//!   of earlier ejections, less one for every `base_ejection` the target has since spent back
//!   in service, so a target that behaves returns to the base period.
//! - Ejection never makes the ejected share exceed `max_ejected_percent`, with no floor of
//!   one: 3 targets at 50% allow 1 ejected, 1 target at 50% allows none.
//! - A successful probe does not cancel an ejection: a backend that answers its health
//!   check but fails real traffic stays out for its period.
//! - In half-open any outcome decides (a success closes, a failure re-opens); while open,
//!   outcomes of requests admitted earlier do not move the breaker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::retry::{millis, Window};

/// Ejection levels above this change nothing (the period is long capped by then).
const MAX_LEVEL: u32 = 30;

// The circuit word packs state (bits 0..8), half-open probes in flight (8..32) and the
// half-open generation (32..64) so that one compare-exchange moves all three.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const STATE_MASK: u64 = 0xff;
const PROBE_ONE: u64 = 1 << 8;
const PROBE_MASK: u64 = 0xff_ffff;
const GENERATION_MASK: u64 = 0xffff_ffff;

/// Passive ejection settings (outlier detection): the validated config, used as is.
pub type PassiveSettings = crate::config::model::PassiveCheck;

/// Circuit breaker settings, applied to each target separately.
pub type CircuitSettings = crate::config::model::CircuitBreaker;

/// Consecutive probe results that flip a target's active state (each at least 1).
#[derive(Debug, Clone)]
pub struct ActiveThresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// How one upstream request ended, as health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Status5xx,
    /// Connect error, reset or timeout.
    Failure,
}

/// Circuit breaker state, as reported to the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// Health of one target, shared by all workers and across reloads.
#[derive(Debug)]
#[repr(align(64))]
pub struct TargetHealth {
    /// Zero point of the millisecond stamps below.
    epoch: Instant,
    active_healthy: AtomicBool,
    draining: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    streak_5xx: AtomicU32,
    streak_failures: AtomicU32,
    /// End of the latest ejection in ms since `epoch`; 0 if never ejected. Kept after it
    /// passes, to measure the time back in service.
    ejected_until: AtomicU64,
    ejection_level: AtomicU32,
    ejections_total: AtomicU64,
    circuit: AtomicU64,
    open_until: AtomicU64,
    circuit_streak: AtomicU32,
    /// Outcomes for the error ratio: first counter all, second failures.
    outcomes: Window,
}

/// Health of one upstream group: its targets' state plus the group's settings.
#[derive(Debug)]
pub struct GroupHealth {
    targets: Box<[Arc<TargetHealth>]>,
    passive: Option<PassiveSettings>,
    circuit: Option<CircuitSettings>,
    active: Option<ActiveThresholds>,
    /// Serialises ejections so two workers cannot both take the last allowed ejection.
    ejecting: Mutex<()>,
}

/// Permission for one request to a target, from `GroupHealth::try_admit`.
///
/// `record` reports the outcome. Dropping it unrecorded (the client went away) reports
/// nothing, and frees the half-open trial slot it may hold.
#[must_use = "a half-open trial slot is held until the admission is recorded or dropped"]
#[derive(Debug)]
pub struct Admission<'a> {
    group: &'a GroupHealth,
    index: usize,
    /// Half-open generation whose trial slot this request holds.
    probe: Option<u64>,
}

/// Point-in-time view of a target, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub active_healthy: bool,
    /// Time left in the current ejection, if ejected.
    pub ejected_until: Option<Duration>,
    pub ejections_total: u64,
    pub circuit: CircuitState,
    pub draining: bool,
    pub consecutive_failures: u32,
    pub consecutive_5xx: u32,
    /// What `GroupHealth::available` answers now.
    pub available: bool,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth::new()
    }
}

impl TargetHealth {
    /// A healthy target: traffic flows before the first probe.
    pub fn new() -> TargetHealth {
        TargetHealth {
            epoch: Instant::now(),
            active_healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            streak_5xx: AtomicU32::new(0),
            streak_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_level: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            circuit: AtomicU64::new(CLOSED),
            open_until: AtomicU64::new(0),
            circuit_streak: AtomicU32::new(0),
            outcomes: Window::default(),
        }
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    fn now_ms(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.epoch))
    }

    fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && self.now_ms(now) < until
    }

    /// Whether the breaker would let a request through now (without taking a slot).
    fn circuit_admits(&self, settings: &CircuitSettings, now: Instant) -> bool {
        let word = self.circuit.load(Ordering::Acquire);
        match word & STATE_MASK {
            OPEN => self.now_ms(now) >= self.open_until.load(Ordering::Acquire),
            HALF_OPEN => probes(word) < u64::from(settings.half_open_probes.max(1)),
            _ => true,
        }
    }

    /// Lets a request through the breaker; `Some(Some(generation))` when it takes a
    /// half-open trial slot.
    fn circuit_admit(&self, settings: &CircuitSettings, now: Instant) -> Option<Option<u64>> {
        let limit = u64::from(settings.half_open_probes.max(1));
        loop {
            let word = self.circuit.load(Ordering::Acquire);
            let generation = word >> 32;
            let next = match word & STATE_MASK {
                OPEN if self.now_ms(now) < self.open_until.load(Ordering::Acquire) => return None,
                // The open period is over: the first request starts a new half-open round.
                OPEN => pack(HALF_OPEN, 1, (generation + 1) & GENERATION_MASK),
                HALF_OPEN if probes(word) >= limit => return None,
                HALF_OPEN => word + PROBE_ONE,
                _ => return Some(None),
            };
            if self
                .circuit
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(Some(next >> 32));
            }
        }
    }

    /// Frees a trial slot of half-open round `generation`; a no-op once that round ended.
    fn release_probe(&self, generation: u64) {
        let _ = self
            .circuit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & STATE_MASK == HALF_OPEN && word >> 32 == generation && probes(word) > 0)
                    .then(|| word - PROBE_ONE)
            });
    }

    fn record_circuit(&self, settings: &CircuitSettings, outcome: Outcome, now: Instant) {
        let word = self.circuit.load(Ordering::Acquire);
        let failed = outcome != Outcome::Success;
        match word & STATE_MASK {
            CLOSED => {
                let now_ms = self.now_ms(now);
                let width = Window::width_ms(settings.window);
                let ratio_on = settings.error_ratio > 0.0;
                if ratio_on {
                    self.outcomes.add(now_ms, width, 1, u32::from(failed));
                }
                if !failed {
                    reset(&self.circuit_streak);
                    return;
                }
                let streak = self.circuit_streak.fetch_add(1, Ordering::AcqRel) + 1;
                let by_streak =
                    settings.consecutive_failures > 0 && streak >= settings.consecutive_failures;
                if by_streak || (ratio_on && self.ratio_tripped(settings, now_ms, width)) {
                    self.open_circuit(CLOSED, settings, now_ms);
                }
            }
            HALF_OPEN if failed => self.open_circuit(HALF_OPEN, settings, self.now_ms(now)),
            HALF_OPEN => {
                let closed = self
                    .circuit
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                        (w & STATE_MASK == HALF_OPEN).then_some(pack(CLOSED, 0, w >> 32))
                    });
                if closed.is_ok() {
                    // A fresh start: failures from before the opening must not re-open it.
                    reset(&self.circuit_streak);
                    self.outcomes.clear();
                }
            }
            _ => {}
        }
    }

    fn ratio_tripped(&self, settings: &CircuitSettings, now_ms: u64, width: u64) -> bool {
        let (total, failures) = self.outcomes.sum(now_ms, width);
        total > 0
            && total >= u64::from(settings.min_requests)
            && failures as f64 >= settings.error_ratio * total as f64
    }

    /// Moves the breaker from `from` to open, unless another worker moved it first.
    fn open_circuit(&self, from: u64, settings: &CircuitSettings, now_ms: u64) {
        // Set the end first: a reader that sees the open state must see its end too.
        let until = now_ms.saturating_add(millis(settings.open_for));
        self.open_until.store(until, Ordering::Release);
        let _ = self
            .circuit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & STATE_MASK == from).then_some(pack(OPEN, 0, w >> 32))
            });
        reset(&self.circuit_streak);
    }

    fn circuit_state(&self, now: Instant) -> CircuitState {
        let word = self.circuit.load(Ordering::Acquire);
        match word & STATE_MASK {
            OPEN if self.now_ms(now) >= self.open_until.load(Ordering::Acquire) => {
                CircuitState::HalfOpen
            }
            OPEN => CircuitState::Open,
            HALF_OPEN => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

impl GroupHealth {
    pub fn new(
        targets: Vec<Arc<TargetHealth>>,
        passive: Option<PassiveSettings>,
        circuit: Option<CircuitSettings>,
        active: Option<ActiveThresholds>,
    ) -> GroupHealth {
        GroupHealth {
            targets: targets.into_boxed_slice(),
            passive,
            circuit,
            active,
            ejecting: Mutex::new(()),
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The shared state of target `index`, for reuse by the next snapshot.
    pub fn target(&self, index: usize) -> Option<&Arc<TargetHealth>> {
        self.targets.get(index)
    }

    /// Whether target `index` may take a new request now: healthy, not ejected, not
    /// draining, and its breaker would admit one. A few atomic loads when all is well.
    pub fn available(&self, index: usize, now: Instant) -> bool {
        let Some(target) = self.targets.get(index) else {
            return false;
        };
        if target.draining.load(Ordering::Relaxed) {
            return false;
        }
        if self.active.is_some() && !target.active_healthy.load(Ordering::Relaxed) {
            return false;
        }
        if self.passive.is_some() && target.is_ejected(now) {
            return false;
        }
        match &self.circuit {
            Some(settings) => target.circuit_admits(settings, now),
            None => true,
        }
    }

    /// Whether any target may take a request; false means answer 503 without trying.
    pub fn any_available(&self, now: Instant) -> bool {
        (0..self.targets.len()).any(|i| self.available(i, now))
    }

    /// Admits one request to the chosen target, taking a half-open trial slot if needed;
    /// None means pick another target.
    pub fn try_admit(&self, index: usize, now: Instant) -> Option<Admission<'_>> {
        if !self.available(index, now) {
            return None;
        }
        let probe = match (&self.circuit, self.targets.get(index)) {
            (Some(settings), Some(target)) => target.circuit_admit(settings, now)?,
            _ => None,
        };
        Some(Admission {
            group: self,
            index,
            probe,
        })
    }

    /// Reports how a request to target `index` ended (passive ejection and breaker).
    pub fn record(&self, index: usize, outcome: Outcome, now: Instant) {
        let Some(target) = self.targets.get(index) else {
            debug_assert!(
                false,
                "outcome for target {index} of {}",
                self.targets.len()
            );
            return;
        };
        if let Some(settings) = &self.passive {
            if self.passive_trips(target, settings, outcome) {
                self.eject(target, settings, now);
            }
        }
        if let Some(settings) = &self.circuit {
            target.record_circuit(settings, outcome, now);
        }
    }

    /// Reports one active probe; true when it flipped the target's active state.
    pub fn probe_result(&self, index: usize, ok: bool) -> bool {
        let (Some(target), Some(thresholds)) = (self.targets.get(index), &self.active) else {
            return false;
        };
        let (streak, other, threshold) = if ok {
            (
                &target.probe_successes,
                &target.probe_failures,
                thresholds.healthy,
            )
        } else {
            (
                &target.probe_failures,
                &target.probe_successes,
                thresholds.unhealthy,
            )
        };
        reset(other);
        let count = streak.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        count >= threshold.max(1) && target.active_healthy.swap(ok, Ordering::AcqRel) != ok
    }

    pub fn set_draining(&self, index: usize, draining: bool) {
        if let Some(target) = self.targets.get(index) {
            target.set_draining(draining);
        }
    }

    /// State of target `index` now; None if there is no such target.
    pub fn snapshot(&self, index: usize, now: Instant) -> Option<TargetStatus> {
        let target = self.targets.get(index)?;
        let until = target.ejected_until.load(Ordering::Acquire);
        let now_ms = target.now_ms(now);
        Some(TargetStatus {
            active_healthy: target.active_healthy.load(Ordering::Relaxed),
            ejected_until: (until > now_ms).then(|| Duration::from_millis(until - now_ms)),
            ejections_total: target.ejections_total.load(Ordering::Relaxed),
            circuit: target.circuit_state(now),
            draining: target.draining.load(Ordering::Relaxed),
            consecutive_failures: target.streak_failures.load(Ordering::Relaxed),
            consecutive_5xx: target.streak_5xx.load(Ordering::Relaxed),
            available: self.available(index, now),
        })
    }

    /// Updates the passive streaks; true when one reached its ejection threshold.
    fn passive_trips(&self, target: &TargetHealth, s: &PassiveSettings, outcome: Outcome) -> bool {
        let bump = |streak: &AtomicU32| streak.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let at = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        match outcome {
            Outcome::Success => {
                reset(&target.streak_5xx);
                reset(&target.streak_failures);
                false
            }
            Outcome::Status5xx => {
                reset(&target.streak_failures);
                at(bump(&target.streak_5xx), s.consecutive_5xx)
            }
            Outcome::Failure => {
                let failures = bump(&target.streak_failures);
                let fives = bump(&target.streak_5xx);
                at(failures, s.consecutive_failures) || at(fives, s.consecutive_5xx)
            }
        }
    }

    /// Ejects `target` unless it is already out or the group's cap forbids it (then the
    /// streak stays high and the next failure tries again).
    fn eject(&self, target: &TargetHealth, s: &PassiveSettings, now: Instant) {
        let _guard = self
            .ejecting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if target.is_ejected(now) {
            // Late outcomes of requests sent before the ejection: they must not carry over
            // and eject the target again as soon as it returns.
            reset(&target.streak_5xx);
            reset(&target.streak_failures);
            return;
        }
        let ejected = self.targets.iter().filter(|t| t.is_ejected(now)).count();
        let allowed = usize::from(s.max_ejected_percent.min(100)) * self.targets.len();
        if (ejected + 1) * 100 > allowed {
            return;
        }
        let now_ms = target.now_ms(now);
        let last_end = target.ejected_until.load(Ordering::Acquire);
        let mut level = target.ejection_level.load(Ordering::Acquire);
        if last_end != 0 {
            let served = now_ms.saturating_sub(last_end);
            let decay = served / millis(s.base_ejection).max(1);
            level = level.saturating_sub(u32::try_from(decay).unwrap_or(u32::MAX));
        }
        let period = s
            .base_ejection
            .checked_mul(1 << level.min(MAX_LEVEL))
            .map_or(s.max_ejection, |d| d.min(s.max_ejection));
        // At least 1 ms so that the stamp cannot read as "never ejected".
        let until = now_ms.saturating_add(millis(period)).max(1);
        target.ejected_until.store(until, Ordering::Release);
        target
            .ejection_level
            .store((level + 1).min(MAX_LEVEL), Ordering::Release);
        target.ejections_total.fetch_add(1, Ordering::Relaxed);
        reset(&target.streak_5xx);
        reset(&target.streak_failures);
    }
}

impl Admission<'_> {
    /// The admitted target's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether this request is a half-open trial.
    pub fn is_trial(&self) -> bool {
        self.probe.is_some()
    }

    /// Reports how the request ended and frees its trial slot.
    pub fn record(mut self, outcome: Outcome, now: Instant) {
        // Outcome first: a trial's success closes the breaker before its slot frees, so no
        // second trial slips in between.
        self.group.record(self.index, outcome, now);
        self.release();
    }

    fn release(&mut self) {
        if let (Some(generation), Some(target)) =
            (self.probe.take(), self.group.targets.get(self.index))
        {
            target.release_probe(generation);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

fn probes(word: u64) -> u64 {
    (word >> 8) & PROBE_MASK
}

fn pack(state: u64, probes: u64, generation: u64) -> u64 {
    generation << 32 | (probes & PROBE_MASK) << 8 | state
}

/// Zeroes a counter, skipping the write (and the cache-line transfer) when already zero.
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "health/tests.rs"]
mod tests;
