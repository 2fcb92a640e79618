//! What a rate-limit store is asked and what it answers: the algorithm with its parameters,
//! and the decision. Shared by the local and the Redis store so both count the same way.
//!
//! Time is wall-clock microseconds since the UNIX epoch (`Micros`): quotas follow the
//! calendar, and Redis scripts read the same clock from `TIME`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the UNIX epoch.
pub type Micros = u64;

/// Now, in microseconds since the UNIX epoch (0 if the clock is before 1970).
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Calendar periods of long quotas, aligned to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

/// One counting rule with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// At most `limit` requests per aligned window (`floor(now / window)`); up to twice the
    /// limit can pass across a window boundary.
    FixedWindow { limit: u64, window: Duration },
    /// Weighted two-window counter: the previous window's count weighted by the share of it
    /// still inside the sliding window, plus the current window's count.
    SlidingWindow { limit: u64, window: Duration },
    /// Token bucket as GCRA: refills `rate` per `period`, holds at most `burst` (≥ 1).
    TokenBucket {
        rate: u64,
        period: Duration,
        burst: u64,
    },
    /// At most `limit` per calendar period (UTC).
    Quota { limit: u64, period: QuotaPeriod },
    /// At most `max` requests in flight for the key.
    Concurrency { max: u64 },
}

impl Algorithm {
    /// The quota advertised in `RateLimit-Policy` / `X-RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        match *self {
            Algorithm::FixedWindow { limit, .. }
            | Algorithm::SlidingWindow { limit, .. }
            | Algorithm::Quota { limit, .. } => limit,
            Algorithm::TokenBucket { burst, .. } => burst,
            Algorithm::Concurrency { max } => max,
        }
    }
}

/// A store's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy's quota (see [`Algorithm::limit`]).
    pub limit: u64,
    /// Requests still allowed now, after this one if it was allowed.
    pub remaining: u64,
    /// Until the quota is next replenished (end of the window, next token, period end).
    pub reset: Duration,
    /// When refused: how long until a request can pass (Retry-After).
    pub retry_after: Option<Duration>,
}

const HOUR: Micros = 3_600_000_000;
const DAY: Micros = 24 * HOUR;

/// The UTC calendar period holding `now`, as `(start, end)` in microseconds.
pub fn quota_window(period: QuotaPeriod, now: Micros) -> (Micros, Micros) {
    match period {
        QuotaPeriod::Hour => {
            let start = now - now % HOUR;
            (start, start + HOUR)
        }
        QuotaPeriod::Day => {
            let start = now - now % DAY;
            (start, start + DAY)
        }
        QuotaPeriod::Month => {
            let (year, month) = civil_month(now / DAY);
            let start = days_from_civil(year, month) * DAY;
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            (start, days_from_civil(next_year, next_month) * DAY)
        }
    }
}

/// Year and month (1-12) of a day counted from 1970-01-01 (Howard Hinnant's civil algorithm).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days from 1970-01-01 to the first day of `month` in `year` (years from 1970 on).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let m = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * m + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    #[test]
    fn month_window_of_a_leap_february() {
        // 2024-02-15T12:00:00Z
        let now = 1_707_998_400 * S;
        let (start, end) = quota_window(QuotaPeriod::Month, now);
        assert_eq!(start, 1_706_745_600 * S); // 2024-02-01
        assert_eq!(end, 1_709_251_200 * S); // 2024-03-01
    }

    #[test]
    fn month_window_wraps_the_year() {
        // 2026-12-31T23:59:59Z
        let now = 1_798_761_599 * S;
        let (start, end) = quota_window(QuotaPeriod::Month, now);
        assert_eq!(start, 1_796_083_200 * S); // 2026-12-01
        assert_eq!(end, 1_798_761_600 * S); // 2027-01-01
    }

    #[test]
    fn day_and_hour_windows_align_to_utc() {
        let now = 1_707_998_400 * S + 1_234;
        assert_eq!(
            quota_window(QuotaPeriod::Day, now),
            (1_707_955_200 * S, 1_708_041_600 * S)
        );
        assert_eq!(
            quota_window(QuotaPeriod::Hour, now),
            (1_707_998_400 * S, 1_708_002_000 * S)
        );
    }
}
