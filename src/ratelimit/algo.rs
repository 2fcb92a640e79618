//! The counting rules of the rate-limit algorithms, as pure functions of one key's state, the
//! time and the request's cost. The local store keeps one [`State`] per key; the Redis store's
//! scripts follow the same rules, so both stores admit the same requests.
//!
//! The caller passes the time (`now`, wall-clock µs), so tests control the clock. Every rule
//! is total: zero windows, periods and rates (refused by config validation) are clamped
//! instead of divided by, arithmetic saturates, and a clock stepping back never reopens a
//! window that was already counted.

use std::time::Duration;

use super::spec::{quota_window, Algorithm, Decision, Micros, QuotaPeriod};

/// Retry hint for a refused concurrency slot: in-flight work has no known end, so there is no
/// exact time to give; one second keeps clients out of a tight retry loop while slots free up.
pub const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// What one key remembers between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    FixedWindow(Window),
    SlidingWindow(Sliding),
    TokenBucket(Gcra),
    Quota(QuotaCount),
    /// Requests in flight.
    Concurrency(u64),
}

/// Fixed window: requests counted in window number `index` (`now / window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub index: u64,
    pub count: u64,
}

/// Sliding window: the current window's number and count, and the previous window's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sliding {
    pub index: u64,
    pub current: u64,
    pub previous: u64,
}

/// GCRA: the theoretical arrival time, in units of 1/`rate` µs since the epoch. In that unit
/// the emission interval `period / rate` is the whole number `period` (in µs), so the maths
/// is exact at any rate, including a million per second and beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub tat: u128,
    pub rate: u64,
}

/// Quota: requests counted in the calendar period that ends at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaCount {
    pub end: Micros,
    pub count: u64,
}

impl State {
    /// The state of a key never seen: nothing counted.
    pub fn new(alg: &Algorithm) -> State {
        match *alg {
            Algorithm::FixedWindow { .. } => State::FixedWindow(Window::default()),
            Algorithm::SlidingWindow { .. } => State::SlidingWindow(Sliding::default()),
            Algorithm::TokenBucket { rate, .. } => State::TokenBucket(Gcra {
                tat: 0,
                rate: rate.max(1),
            }),
            Algorithm::Quota { .. } => State::Quota(QuotaCount::default()),
            Algorithm::Concurrency { .. } => State::Concurrency(0),
        }
    }

    /// Decides one request of weight `cost` at `now` and counts it if admitted. A state left
    /// by another algorithm (a policy id reused by a reload) starts over. For `Concurrency`
    /// this only reports whether `cost` more slots are free: slots are taken by
    /// [`take_slot`], which the store ties to a guard.
    pub fn check(&mut self, alg: &Algorithm, now: Micros, cost: u64) -> Decision {
        match (*alg, &mut *self) {
            (Algorithm::FixedWindow { limit, window }, State::FixedWindow(s)) => {
                return fixed_window(s, limit, window, now, cost);
            }
            (Algorithm::SlidingWindow { limit, window }, State::SlidingWindow(s)) => {
                return sliding_window(s, limit, window, now, cost);
            }
            (
                Algorithm::TokenBucket {
                    rate,
                    period,
                    burst,
                },
                State::TokenBucket(s),
            ) => return token_bucket(s, rate, period, burst, now, cost),
            (Algorithm::Quota { limit, period }, State::Quota(s)) => {
                return quota(s, limit, period, now, cost);
            }
            (Algorithm::Concurrency { max }, State::Concurrency(in_flight)) => {
                return concurrency(*in_flight, max, cost);
            }
            _ => {}
        }
        *self = State::new(alg);
        self.check(alg, now, cost)
    }

    /// Adds `delta` (negative: takes it back) to what a fixed window or a quota counted in
    /// the window holding `now`, whatever the limit: the settlement of a request admitted on
    /// an estimate of its weight. Other algorithms count nothing settled afterwards.
    pub fn adjust(&mut self, alg: &Algorithm, now: Micros, delta: i64) {
        let count = match (*alg, &mut *self) {
            (Algorithm::FixedWindow { window, .. }, State::FixedWindow(s)) => {
                let index = (now / micros(window)).max(s.index);
                if index != s.index {
                    *s = Window { index, count: 0 };
                }
                &mut s.count
            }
            (Algorithm::Quota { period, .. }, State::Quota(s)) => {
                if now >= s.end {
                    let (_, end) = quota_window(period, now);
                    *s = QuotaCount { end, count: 0 };
                }
                &mut s.count
            }
            _ => return,
        };
        *count = match delta >= 0 {
            true => count.saturating_add(delta.unsigned_abs()),
            false => count.saturating_sub(delta.unsigned_abs()),
        };
    }

    /// When this state stops mattering: from then on it answers like [`State::new`] (window
    /// over and no weight left, bucket full again). `u64::MAX` while requests are in flight.
    pub fn expires_at(&self, alg: &Algorithm) -> Micros {
        match (*alg, self) {
            (Algorithm::FixedWindow { window, .. }, State::FixedWindow(s)) => {
                s.index.saturating_add(1).saturating_mul(micros(window))
            }
            // The current count still weighs on the next window.
            (Algorithm::SlidingWindow { window, .. }, State::SlidingWindow(s)) => {
                s.index.saturating_add(2).saturating_mul(micros(window))
            }
            (_, State::TokenBucket(s)) => ceil_micros(s.tat, s.rate),
            (_, State::Quota(s)) => s.end,
            (_, State::Concurrency(0)) => 0,
            (_, State::Concurrency(_)) => Micros::MAX,
            // Another algorithm's state: the policy would start over, so nothing is lost.
            _ => 0,
        }
    }

    /// Whether dropping this state would lose track of requests still in flight.
    pub fn is_pinned(&self) -> bool {
        matches!(self, State::Concurrency(n) if *n > 0)
    }
}

/// Fixed window: admitted iff `count + cost <= limit`; `reset` and `retry_after` are the time
/// to the end of the window. Up to twice the limit can pass around a window boundary.
pub fn fixed_window(
    s: &mut Window,
    limit: u64,
    window: Duration,
    now: Micros,
    cost: u64,
) -> Decision {
    let len = micros(window);
    let index = (now / len).max(s.index);
    if index != s.index {
        *s = Window { index, count: 0 };
    }
    let end = index.saturating_add(1).saturating_mul(len);
    counted(&mut s.count, limit, end.saturating_sub(now), cost)
}

/// Quota: a fixed window over the UTC calendar period holding `now` ([`quota_window`]).
pub fn quota(
    s: &mut QuotaCount,
    limit: u64,
    period: QuotaPeriod,
    now: Micros,
    cost: u64,
) -> Decision {
    if now >= s.end {
        let (_, end) = quota_window(period, now);
        *s = QuotaCount { end, count: 0 };
    }
    counted(&mut s.count, limit, s.end.saturating_sub(now), cost)
}

/// Sliding window, the weighted two-window counter: at `elapsed` µs into the current window,
/// `estimate = floor(previous * (window - elapsed) / window) + current`; admitted iff
/// `estimate + cost <= limit`. `reset` is the time to the end of the current window;
/// `retry_after` is the smallest wait after which `cost` would pass if nothing else arrives.
///
/// How close it is to a true sliding log:
/// - No aligned window ever admits more than `limit` (`estimate >= current`).
/// - From the start of the previous window to `e` µs into the current one, at most
///   `limit + ceil(limit * e / window)` pass: the previous window admitted `p <= limit`, and
///   the current one at most `limit - floor(p * (window - e) / window)`. The fixed window's
///   2× burst right after a boundary is therefore cut to a share of the limit that grows
///   with the time elapsed.
/// - The estimate assumes the previous window's requests were spread evenly. Under evenly
///   spaced traffic of any rate, no window-long interval holds more than `limit + 1` (the
///   `+ 1` is rounding).
///   When they all came at its very end, a window-long interval ending late in the current
///   window can hold up to `2 * limit`, as with a fixed window.
/// - A steady stream at exactly the limit passes in full, unless its arrivals fall exactly
///   on window boundaries: the estimate then covers a closed interval one µs longer than
///   the window, and one request in two windows is refused.
pub fn sliding_window(
    s: &mut Sliding,
    limit: u64,
    window: Duration,
    now: Micros,
    cost: u64,
) -> Decision {
    let len = micros(window);
    let index = (now / len).max(s.index);
    if index != s.index {
        s.previous = if index - s.index == 1 { s.current } else { 0 };
        s.current = 0;
        s.index = index;
    }
    // After a clock step back, `now` is before this window: count it as its start.
    let elapsed = now.saturating_sub(index.saturating_mul(len)).min(len - 1);
    let reset = Duration::from_micros(len - elapsed);
    let estimate = weighted(s.previous, len - elapsed, len).saturating_add(s.current);
    match estimate.checked_add(cost).filter(|&after| after <= limit) {
        Some(after) => {
            s.current = s.current.saturating_add(cost);
            Decision {
                allowed: true,
                limit,
                remaining: limit - after,
                reset,
                retry_after: None,
            }
        }
        None => Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset,
            retry_after: Some(Duration::from_micros(sliding_wait(
                s, elapsed, len, limit, cost,
            ))),
        },
    }
}

/// Token bucket as GCRA: emission interval `T = period / rate`, tolerance `T * burst`,
/// `new_tat = max(tat, now) + T * cost`; admitted iff `new_tat - now <= tolerance`.
/// `remaining` is the whole tokens left, `reset` the time until the bucket is full again,
/// `retry_after` the time until `new_tat - now` fits the tolerance. A cost above the burst
/// never passes.
pub fn token_bucket(
    s: &mut Gcra,
    rate: u64,
    period: Duration,
    burst: u64,
    now: Micros,
    cost: u64,
) -> Decision {
    let rate = rate.max(1);
    if s.rate != rate {
        // The unit of `tat` is 1/rate µs: convert it to the new rate's unit.
        s.tat = s.tat.saturating_mul(u128::from(rate)) / u128::from(s.rate.max(1));
        s.rate = rate;
    }
    let interval = u128::from(micros(period));
    let tolerance = interval.saturating_mul(u128::from(burst));
    let now = u128::from(now) * u128::from(rate);
    let base = s.tat.max(now);
    let new_tat = base.saturating_add(interval.saturating_mul(u128::from(cost)));
    let ahead = new_tat - now;
    if ahead <= tolerance {
        s.tat = new_tat;
        Decision {
            allowed: true,
            limit: burst,
            remaining: saturate((tolerance - ahead) / interval),
            reset: Duration::from_micros(ceil_micros(ahead, rate)),
            retry_after: None,
        }
    } else {
        let held = base - now;
        Decision {
            allowed: false,
            limit: burst,
            remaining: saturate(tolerance.saturating_sub(held) / interval),
            reset: Duration::from_micros(ceil_micros(held, rate)),
            retry_after: Some(Duration::from_micros(ceil_micros(ahead - tolerance, rate))),
        }
    }
}

/// Whether `cost` more requests fit beside `in_flight` ones, without taking a slot.
pub fn concurrency(in_flight: u64, max: u64, cost: u64) -> Decision {
    let allowed = in_flight.checked_add(cost).is_some_and(|n| n <= max);
    concurrency_decision(allowed, max, max.saturating_sub(in_flight))
}

/// Takes one slot if one is free: `Ok` with the slots left, or `Err` with the refusal.
pub fn take_slot(in_flight: &mut u64, max: u64) -> Result<Decision, Decision> {
    if *in_flight < max {
        *in_flight += 1;
        Ok(concurrency_decision(true, max, max - *in_flight))
    } else {
        Err(concurrency_refused(max))
    }
}

/// The refusal of a concurrency slot: nothing left, retry after [`CONCURRENCY_RETRY`].
pub fn concurrency_refused(max: u64) -> Decision {
    concurrency_decision(false, max, 0)
}

fn concurrency_decision(allowed: bool, max: u64, remaining: u64) -> Decision {
    Decision {
        allowed,
        limit: max,
        remaining,
        // No known replenishment time either: the same hint as the retry.
        reset: CONCURRENCY_RETRY,
        retry_after: (!allowed).then_some(CONCURRENCY_RETRY),
    }
}

/// The shared counting step of fixed windows and quotas.
fn counted(count: &mut u64, limit: u64, to_end: Micros, cost: u64) -> Decision {
    let to_end = Duration::from_micros(to_end);
    match count.checked_add(cost).filter(|&after| after <= limit) {
        Some(after) => {
            *count = after;
            Decision {
                allowed: true,
                limit,
                remaining: limit - after,
                reset: to_end,
                retry_after: None,
            }
        }
        None => Decision {
            allowed: false,
            limit,
            remaining: limit.saturating_sub(*count),
            reset: to_end,
            retry_after: Some(to_end),
        },
    }
}

/// The wait before a refused sliding-window request of weight `cost` would pass, assuming no
/// other traffic. `s` is already rolled to the window holding `now`.
fn sliding_wait(s: &Sliding, elapsed: Micros, len: Micros, limit: u64, cost: u64) -> Micros {
    let room = limit.checked_sub(cost);
    if let Some(room) = room.and_then(|r| r.checked_sub(s.current)) {
        // The current count leaves room: wait for the previous window's weight to shrink.
        let at = decay_point(s.previous, room, len);
        return at.saturating_sub(elapsed).max(1);
    }
    // The current count alone is too much: from the next window on it is the previous one.
    let to_next = len - elapsed;
    match room {
        Some(room) => to_next.saturating_add(decay_point(s.current, room, len)),
        // Never passes; point past the next window rather than at a time that will not help.
        None => to_next.saturating_add(len),
    }
}

/// The earliest offset into a window at which `floor(count * (len - offset) / len) <= room`.
fn decay_point(count: u64, room: u64, len: Micros) -> Micros {
    if count == 0 {
        return 0;
    }
    // floor(count * rest / len) <= room  <=>  count * rest <= (room + 1) * len - 1
    let max_rest = ((u128::from(room) + 1) * u128::from(len) - 1) / u128::from(count);
    len.saturating_sub(saturate(max_rest))
}

/// `floor(count * rest / len)`, exact.
fn weighted(count: u64, rest: Micros, len: Micros) -> u64 {
    saturate(u128::from(count) * u128::from(rest) / u128::from(len))
}

/// A duration in µs, at least 1 so it can divide.
fn micros(d: Duration) -> Micros {
    saturate(d.as_micros()).max(1)
}

/// `units` of 1/`rate` µs, rounded up to whole µs.
fn ceil_micros(units: u128, rate: u64) -> Micros {
    saturate(units.div_ceil(u128::from(rate.max(1))))
}

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
