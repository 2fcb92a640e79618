//! Retry policy parts that are not the retry loop itself: the group-wide retry budget, the
//! backoff between attempts, and which methods are safe to repeat.
//!
//! The budget follows Linkerd and Finagle: over the last `ttl`, retries may not exceed
//! `ratio * requests + min_per_second * ttl`. Without it a backend that starts failing gets
//! every request several times, which turns a partial outage into a full one. The counters
//! are a ring of time buckets of atomics (`Window`), shared by all workers; the health
//! module's circuit breaker uses the same ring for its error ratio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;

/// Buckets in a `Window`; the window covers the last 9 to 10 bucket widths.
const BUCKETS: usize = 10;
/// The first of a window's two counters sits in the high half of a bucket's counts word.
const FIRST_ONE: u64 = 1 << 32;
const LOW_HALF: u64 = u32::MAX as u64;

/// Retry budget settings, compiled from the group's `retry.budget`.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Retries allowed as a share of original requests, e.g. 0.2.
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic, so that a quiet group can still
    /// retry, e.g. 10.
    pub min_per_second: u32,
    /// How far back requests and retries are counted, e.g. 10 s.
    pub ttl: Duration,
}

/// Retries left to a group, shared by all workers (`Send + Sync`, atomics only).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// `min_per_second * ttl`, the retries always allowed in one window.
    floor: f64,
    width_ms: u64,
    epoch: Instant,
    /// First counter: original requests (deposits); second: retries (withdrawals).
    window: Window,
}

/// Exponential backoff with full jitter (the AWS architecture blog's "full jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// Two event counters over a sliding time window, as a ring of `BUCKETS` buckets of atomics.
///
/// A bucket is reused when time moves into its slot again; its stamp says which bucket
/// period its counts belong to. Events racing a bucket's reuse can be lost, so the counts
/// are estimates, which is what budgets and error ratios need.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Default)]
struct Bucket {
    /// Bucket period (`now_ms / width_ms`) the counts belong to.
    stamp: AtomicU64,
    /// First counter in the high 32 bits, second in the low 32 bits.
    counts: AtomicU64,
}

impl RetryBudget {
    pub fn new(settings: BudgetSettings) -> RetryBudget {
        let ratio = if settings.ratio.is_finite() {
            settings.ratio.max(0.0)
        } else {
            0.0
        };
        RetryBudget {
            ratio,
            floor: f64::from(settings.min_per_second) * settings.ttl.as_secs_f64(),
            width_ms: Window::width_ms(settings.ttl),
            epoch: Instant::now(),
            window: Window::default(),
        }
    }

    /// Counts one original request (not a retry).
    pub fn deposit(&self, now: Instant) {
        self.window.add(self.now_ms(now), self.width_ms, 1, 0);
    }

    /// Takes one retry from the budget; false means the retry must not be made.
    ///
    /// Check and count are two steps, so workers withdrawing at the same instant can
    /// overshoot the budget by at most one retry each.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let now_ms = self.now_ms(now);
        let (requests, retries) = self.window.sum(now_ms, self.width_ms);
        let allowed = self.ratio * requests as f64 + self.floor;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.window.add(now_ms, self.width_ms, 0, 1);
        true
    }

    fn now_ms(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.epoch))
    }
}

impl Backoff {
    /// Delay before retry number `retry` (1 for the first retry): uniform in
    /// `[0, min(max, base * 2^(retry - 1))]`, with `rand01` the uniform draw in `[0, 1]`.
    pub fn delay(&self, retry: u32, rand01: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let ceiling = self
            .base
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max));
        // NaN and out-of-range draws would make `mul_f64` panic.
        let draw = if rand01.is_nan() {
            0.0
        } else {
            rand01.clamp(0.0, 1.0)
        };
        ceiling.mul_f64(draw)
    }
}

/// Whether repeating a request with this method is safe (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Window {
    /// Bucket width for a window covering `span`; at least one millisecond.
    pub(crate) fn width_ms(span: Duration) -> u64 {
        (millis(span) / BUCKETS as u64).max(1)
    }

    /// Adds `first` and `second` to the bucket of `now_ms`.
    pub(crate) fn add(&self, now_ms: u64, width_ms: u64, first: u32, second: u32) {
        let period = now_ms / width_ms;
        let bucket = &self.buckets[(period % BUCKETS as u64) as usize];
        let stamp = bucket.stamp.load(Ordering::Acquire);
        if stamp > period {
            // Reported with a time older than a whole window: nothing to count it in.
            return;
        }
        if stamp < period
            && bucket
                .stamp
                .compare_exchange(stamp, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.counts.store(0, Ordering::Release);
        }
        bucket.counts.fetch_add(
            u64::from(first) * FIRST_ONE + u64::from(second),
            Ordering::AcqRel,
        );
    }

    /// Both counters summed over the buckets still inside the window at `now_ms`.
    pub(crate) fn sum(&self, now_ms: u64, width_ms: u64) -> (u64, u64) {
        let period = now_ms / width_ms;
        let mut totals = (0, 0);
        for bucket in &self.buckets {
            let stamp = bucket.stamp.load(Ordering::Acquire);
            // A stamp ahead of `period` belongs to a wider bucket layout (a reload changed
            // the window); treat it as stale like an old one.
            if stamp <= period && period - stamp < BUCKETS as u64 {
                let counts = bucket.counts.load(Ordering::Acquire);
                totals.0 += counts >> 32;
                totals.1 += counts & LOW_HALF;
            }
        }
        totals
    }

    /// Forgets every count.
    pub(crate) fn clear(&self) {
        for bucket in &self.buckets {
            bucket.counts.store(0, Ordering::Release);
        }
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f64, min_per_second: u32, ttl_secs: u64) -> RetryBudget {
        RetryBudget::new(BudgetSettings {
            ratio,
            min_per_second,
            ttl: Duration::from_secs(ttl_secs),
        })
    }

    #[test]
    fn retries_stay_within_ratio_plus_floor_when_every_request_fails() {
        let budget = budget(0.2, 10, 10);
        let now = Instant::now();
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit(now);
            // Each failing request would retry up to three times.
            for _ in 0..3 {
                if budget.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        // 20% of 1000 plus 10/s over 10 s.
        assert_eq!(retries, 300);
    }

    #[test]
    fn floor_allows_retries_without_traffic() {
        let budget = budget(0.2, 2, 1);
        let now = Instant::now();
        assert!(budget.try_withdraw(now));
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
    }

    #[test]
    fn zero_floor_and_no_requests_allow_no_retry() {
        let budget = budget(0.5, 0, 10);
        assert!(!budget.try_withdraw(Instant::now()));
    }

    #[test]
    fn requests_older_than_ttl_no_longer_fund_retries() {
        let budget = budget(0.5, 0, 10);
        let start = Instant::now();
        for _ in 0..100 {
            budget.deposit(start);
        }
        assert!(budget.try_withdraw(start + Duration::from_secs(5)));
        assert!(!budget.try_withdraw(start + Duration::from_secs(11)));
    }

    #[test]
    fn retries_older_than_ttl_no_longer_count_against_the_budget() {
        let budget = budget(0.0, 1, 10);
        let start = Instant::now();
        let granted = (0..20).filter(|_| budget.try_withdraw(start)).count();
        assert_eq!(granted, 10);
        assert!(!budget.try_withdraw(start + Duration::from_secs(5)));
        assert!(budget.try_withdraw(start + Duration::from_secs(11)));
    }

    #[test]
    fn backoff_ceiling_doubles_per_retry() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(10));
        assert_eq!(backoff.delay(2, 1.0), Duration::from_millis(20));
        assert_eq!(backoff.delay(4, 1.0), Duration::from_millis(80));
    }

    #[test]
    fn backoff_is_capped_at_max() {
        let backoff = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        assert_eq!(backoff.delay(10, 1.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_jitter_scales_the_ceiling() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(50));
    }

    #[test]
    fn backoff_tolerates_out_of_range_draws() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, f64::NAN), Duration::ZERO);
        assert_eq!(backoff.delay(1, -3.0), Duration::ZERO);
        assert_eq!(backoff.delay(1, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn safe_to_repeat_methods_are_idempotent() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&method), "{method}");
        }
    }

    #[test]
    fn post_patch_and_connect_are_not_idempotent() {
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
        assert!(!is_idempotent(&Method::from_bytes(b"PURGE").unwrap()));
    }

    #[test]
    fn window_forgets_buckets_a_full_window_old() {
        let window = Window::default();
        window.add(5, 10, 3, 1);
        assert_eq!(window.sum(99, 10), (3, 1));
        assert_eq!(window.sum(100, 10), (0, 0));
    }

    #[test]
    fn window_reuses_a_slot_for_a_new_period() {
        let window = Window::default();
        window.add(5, 10, 3, 1);
        window.add(105, 10, 1, 0);
        assert_eq!(window.sum(105, 10), (1, 0));
    }

    proptest! {
        /// Any retry granted at time t, together with the retries granted in the 9 bucket
        /// widths before it (always inside the window), stays within the budget funded by
        /// the requests of the full ttl before t.
        #[test]
        fn granted_retries_never_exceed_the_budget(
            steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..400),
            ratio in 0.0f64..1.0,
            min_per_second in 0u32..5,
        ) {
            let ttl_ms = 1_000;
            let width = ttl_ms / BUCKETS as u64;
            let budget = RetryBudget::new(BudgetSettings {
                ratio,
                min_per_second,
                ttl: Duration::from_millis(ttl_ms),
            });
            let floor = f64::from(min_per_second) * 1.0;
            let mut now_ms = 0;
            let mut deposits: Vec<u64> = Vec::new();
            let mut grants: Vec<u64> = Vec::new();
            for (advance, is_request) in steps {
                now_ms += advance;
                let now = budget.epoch + Duration::from_millis(now_ms);
                if is_request {
                    budget.deposit(now);
                    deposits.push(now_ms);
                } else if budget.try_withdraw(now) {
                    grants.push(now_ms);
                    let recent = grants.iter().filter(|&&g| g + 9 * width >= now_ms).count();
                    let funded = deposits.iter().filter(|&&d| d + ttl_ms > now_ms).count();
                    prop_assert!(recent as f64 <= ratio * funded as f64 + floor);
                }
            }
        }
    }
}
