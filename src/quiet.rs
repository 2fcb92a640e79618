//! Repeated warnings, rate limited: a warning that would be written for every request while
//! something is down (Redis, an identity provider, a target's TLS) is written at most once
//! per interval from each place that writes it, saying how many lines it stands for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines from one place: one per interval, the rest counted.
pub struct Throttle {
    /// Milliseconds since the process's first throttled warning at which the next line may
    /// be written.
    next: AtomicU64,
    /// Lines not written since the last one.
    suppressed: AtomicU64,
}

/// One line per place per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub fn pass(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        self.pass_at(now)
    }

    fn pass_at(&self, now: u64) -> Option<u64> {
        let next = self.next.load(Ordering::Relaxed);
        let due = now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if due {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// `tracing::warn!` at most once per [`INTERVAL`] from this place, with the field
/// `suppressed`: the lines left out since the last one.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::quiet::Throttle = $crate::quiet::Throttle::new();
        if let Some(suppressed) = THROTTLE.pass() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_says_how_many_it_stands_for() {
        let t = Throttle::new();
        assert_eq!(t.pass_at(5), Some(0), "the first line is written");
        for ms in 6..106 {
            assert_eq!(t.pass_at(ms), None);
        }
        let later = 5 + INTERVAL.as_millis() as u64;
        assert_eq!(t.pass_at(later - 1), None);
        assert_eq!(t.pass_at(later), Some(101), "the next one counts the rest");
        assert_eq!(t.pass_at(later + 1), None);
    }
}
