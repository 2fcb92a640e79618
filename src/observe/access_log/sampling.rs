//! Access-log sampling at high rates (`access_log.sample_success`): while the log writes
//! more than a set number of lines a second, only a share of the lines of successful
//! requests (status under 400) is kept; errors are always written. What is left out is
//! counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

/// The sampling state, shared by every worker (kept across reloads with the log's
/// settings).
#[derive(Debug)]
pub struct LogSampling {
    above_per_second: u64,
    /// A kept line's random draw falls under this (the ratio of `u64::MAX`).
    threshold: u64,
    /// The second the count is of, since the process's first sampled line.
    second: AtomicU64,
    count: AtomicU64,
    /// `ferrogate_access_log_sampled_out_total`.
    dropped: Counter,
}

impl LogSampling {
    pub fn new(above_per_second: u64, ratio: f64, dropped: Counter) -> LogSampling {
        LogSampling {
            above_per_second,
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
            dropped,
        }
    }

    /// Whether the line of a request answered with `status` is written.
    pub fn keep(&self, status: u16) -> bool {
        static START: OnceLock<Instant> = OnceLock::new();
        let second = START.get_or_init(Instant::now).elapsed().as_secs();
        self.keep_at(status, second, fastrand::u64(..))
    }

    fn keep_at(&self, status: u16, second: u64, draw: u64) -> bool {
        if self.second.load(Ordering::Relaxed) != second {
            self.second.store(second, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let kept = status >= 400 || n <= self.above_per_second || draw < self.threshold;
        if !kept {
            self.dropped.inc();
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_rate_only_a_share_of_successes_is_written_and_every_error() {
        let s = LogSampling::new(100, 0.1, Counter::default());
        let kept = (0..1000)
            .filter(|i| s.keep_at(200, 7, fastrand::u64(..)) || *i < 0)
            .count();
        // 100 under the rate, then about 10% of 900.
        assert!((150..260).contains(&kept), "{kept}");
        assert!(
            (0..50).all(|_| s.keep_at(502, 7, u64::MAX)),
            "errors are kept"
        );
        assert_eq!(s.dropped.get(), 1000 - kept as u64);
        // A new second starts a new count.
        assert!(s.keep_at(200, 8, u64::MAX));
    }
}
