//! Rate-limit response fields: `RateLimit-Policy` and `RateLimit` as the IETF httpapi draft
//! (draft-ietf-httpapi-ratelimit-headers-09) writes them, optionally the older
//! `X-RateLimit-*` trio, and `Retry-After` on refusals.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::spec::{Algorithm, Decision, QuotaPeriod};

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The `RateLimit-Policy` item of a policy: `"name";q=100;w=60`. Written once per policy.
pub fn policy_item(name: &str, alg: &Algorithm) -> String {
    let mut out = String::with_capacity(name.len() + 24);
    push_name(&mut out, name);
    let _ = write!(out, ";q={}", alg.limit());
    let window = match *alg {
        Algorithm::FixedWindow { window, .. } | Algorithm::SlidingWindow { window, .. } => {
            Some(window.as_secs().max(1))
        }
        // The time an empty bucket takes to fill up again.
        Algorithm::TokenBucket {
            rate,
            period,
            burst,
        } => Some(
            u64::try_from(period.as_micros() * u128::from(burst) / u128::from(rate.max(1)))
                .unwrap_or(u64::MAX)
                .div_ceil(1_000_000)
                .max(1),
        ),
        Algorithm::Quota { period, .. } => Some(match period {
            QuotaPeriod::Hour => 3_600,
            QuotaPeriod::Day => 86_400,
            // The draft has no calendar unit; a month is given as 30 days.
            QuotaPeriod::Month => 2_592_000,
        }),
        Algorithm::Concurrency { .. } => None,
    };
    if let Some(w) = window {
        let _ = write!(out, ";w={w}");
    }
    out
}

/// Policy names are sf-strings: quotes and backslashes escaped, other non-printables dropped.
fn push_name(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
}

/// Whole seconds, rounded up: a client that waits this long is not refused for being early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One applied policy's answer, as the response fields need it.
pub struct Applied<'a> {
    pub name: &'a str,
    pub policy_item: &'a str,
    pub decision: Decision,
    pub x_headers: bool,
}

/// Adds `RateLimit-Policy` and `RateLimit` for every applied policy, and `X-RateLimit-*`
/// for the most restrictive one of those that ask for them.
pub fn write(headers: &mut HeaderMap, applied: &[Applied<'_>]) {
    if applied.is_empty() {
        return;
    }
    let mut policy = String::with_capacity(32 * applied.len());
    let mut state = String::with_capacity(32 * applied.len());
    for (i, a) in applied.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        policy.push_str(a.policy_item);
        push_name(&mut state, a.name);
        let _ = write!(
            state,
            ";r={};t={}",
            a.decision.remaining,
            ceil_secs(a.decision.reset)
        );
    }
    if let Ok(v) = HeaderValue::try_from(policy) {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::try_from(state) {
        headers.insert(RATELIMIT.clone(), v);
    }
    let tightest = applied
        .iter()
        .filter(|a| a.x_headers)
        .min_by_key(|a| (a.decision.allowed, a.decision.remaining));
    if let Some(a) = tightest {
        let d = a.decision;
        headers.insert(X_LIMIT.clone(), number(d.limit));
        headers.insert(X_REMAINING.clone(), number(d.remaining));
        headers.insert(X_RESET.clone(), number(ceil_secs(d.reset)));
    }
}

/// `Retry-After` in whole seconds (at least 1).
pub fn retry_after(headers: &mut HeaderMap, wait: Duration) {
    headers.insert(RETRY_AFTER, number(ceil_secs(wait).max(1)));
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decision(remaining: u64, reset_ms: u64) -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: None,
        }
    }

    #[test]
    fn policy_item_names_quota_and_window() {
        let alg = Algorithm::SlidingWindow {
            limit: 100,
            window: Duration::from_secs(60),
        };
        assert_eq!(policy_item("per-ip", &alg), "\"per-ip\";q=100;w=60");
        let bucket = Algorithm::TokenBucket {
            rate: 10,
            period: Duration::from_secs(1),
            burst: 25,
        };
        assert_eq!(policy_item("b\"x", &bucket), "\"b\\\"x\";q=25;w=3");
    }

    #[test]
    fn fields_list_every_policy_and_x_headers_the_tightest() {
        let a = policy_item("a", &Algorithm::Concurrency { max: 10 });
        let b = policy_item("b", &Algorithm::Concurrency { max: 10 });
        let applied = [
            Applied {
                name: "a",
                policy_item: &a,
                decision: decision(7, 1_500),
                x_headers: true,
            },
            Applied {
                name: "b",
                policy_item: &b,
                decision: decision(3, 200),
                x_headers: true,
            },
        ];
        let mut h = HeaderMap::new();
        write(&mut h, &applied);
        assert_eq!(h["ratelimit-policy"], "\"a\";q=10, \"b\";q=10");
        assert_eq!(h["ratelimit"], "\"a\";r=7;t=2, \"b\";r=3;t=1");
        assert_eq!(h["x-ratelimit-remaining"], "3");
        assert_eq!(h["x-ratelimit-reset"], "1");
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one_second() {
        let mut h = HeaderMap::new();
        retry_after(&mut h, Duration::from_millis(1));
        assert_eq!(h[RETRY_AFTER], "1");
        retry_after(&mut h, Duration::from_millis(2_001));
        assert_eq!(h[RETRY_AFTER], "3");
    }
}
