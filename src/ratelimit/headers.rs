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

/// What the response fields need of one policy, written once when the policy is compiled.
#[derive(Debug)]
pub struct PolicyFields {
    /// The `RateLimit-Policy` item, as a ready header value.
    pub policy_value: HeaderValue,
    /// `"name";r=`, the start of the policy's `RateLimit` item.
    pub state_prefix: Box<[u8]>,
    pub x_headers: bool,
}

impl PolicyFields {
    pub fn new(name: &str, alg: &Algorithm, x_headers: bool) -> PolicyFields {
        let item = policy_item(name, alg);
        let mut prefix = String::with_capacity(name.len() + 6);
        push_name(&mut prefix, name);
        prefix.push_str(";r=");
        PolicyFields {
            policy_value: HeaderValue::try_from(item)
                .unwrap_or_else(|_| HeaderValue::from_static("\"policy\"")),
            state_prefix: prefix.into_bytes().into_boxed_slice(),
            x_headers,
        }
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` for every applied policy, and `X-RateLimit-*`
/// for the most restrictive one of those that ask for them. Runs on every response of a
/// limited route, so it joins bytes instead of formatting.
pub fn write<'a>(
    headers: &mut HeaderMap,
    applied: impl Iterator<Item = (&'a PolicyFields, Decision)> + Clone,
) {
    let mut count = 0;
    let mut state = Buf::default();
    let mut tightest: Option<Decision> = None;
    let mut numbers = itoa::Buffer::new();
    for (fields, d) in applied.clone() {
        if count > 0 {
            state.push(b", ");
        }
        count += 1;
        state.push(&fields.state_prefix);
        state.push(numbers.format(d.remaining).as_bytes());
        state.push(b";t=");
        state.push(numbers.format(ceil_secs(d.reset)).as_bytes());
        if fields.x_headers
            && tightest.is_none_or(|t| (d.allowed, d.remaining) < (t.allowed, t.remaining))
        {
            tightest = Some(d);
        }
    }
    if count == 0 {
        return;
    }
    let policy = if count == 1 {
        applied.clone().next().map(|(f, _)| f.policy_value.clone())
    } else {
        let mut joined = Vec::with_capacity(32 * count);
        for (i, (fields, _)) in applied.enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(fields.policy_value.as_bytes());
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
    };
    if let Some(v) = policy {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(state.as_slice()) {
        headers.insert(RATELIMIT.clone(), v);
    }
    if let Some(d) = tightest {
        headers.insert(X_LIMIT.clone(), number(d.limit));
        headers.insert(X_REMAINING.clone(), number(d.remaining));
        headers.insert(X_RESET.clone(), number(ceil_secs(d.reset)));
    }
}

/// Bytes on the stack while they fit (one policy's `RateLimit` item always does), so the
/// header value is the only allocation.
struct Buf {
    stack: [u8; 128],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Default for Buf {
    fn default() -> Self {
        Buf {
            stack: [0; 128],
            len: 0,
            heap: None,
        }
    }
}

impl Buf {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(heap) = &mut self.heap {
            heap.extend_from_slice(bytes);
        } else if let Some(room) = self.stack.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            let mut heap = Vec::with_capacity(2 * (self.len + bytes.len()));
            heap.extend_from_slice(&self.stack[..self.len]);
            heap.extend_from_slice(bytes);
            self.heap = Some(heap);
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.heap {
            Some(heap) => heap,
            None => &self.stack[..self.len],
        }
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
        let a = PolicyFields::new("a", &Algorithm::Concurrency { max: 10 }, true);
        let b = PolicyFields::new("b", &Algorithm::Concurrency { max: 10 }, true);
        let applied = [(&a, decision(7, 1_500)), (&b, decision(3, 200))];
        let mut h = HeaderMap::new();
        write(&mut h, applied.iter().copied());
        assert_eq!(h["ratelimit-policy"], "\"a\";q=10, \"b\";q=10");
        assert_eq!(h["ratelimit"], "\"a\";r=7;t=2, \"b\";r=3;t=1");
        assert_eq!(h["x-ratelimit-remaining"], "3");
        assert_eq!(h["x-ratelimit-reset"], "1");
    }

    #[test]
    fn one_policy_gets_its_ready_policy_value() {
        let alg = Algorithm::FixedWindow {
            limit: 5,
            window: Duration::from_secs(10),
        };
        let f = PolicyFields::new("p", &alg, false);
        let mut h = HeaderMap::new();
        write(&mut h, std::iter::once((&f, decision(4, 9_001))));
        assert_eq!(h["ratelimit-policy"], "\"p\";q=5;w=10");
        assert_eq!(h["ratelimit"], "\"p\";r=4;t=10");
        assert!(h.get("x-ratelimit-limit").is_none());
    }

    #[test]
    fn long_field_lists_move_off_the_stack_intact() {
        let alg = Algorithm::Concurrency { max: 1 };
        let names: Vec<String> = (0..20).map(|i| format!("policy-number-{i}")).collect();
        let fields: Vec<PolicyFields> = names
            .iter()
            .map(|n| PolicyFields::new(n, &alg, false))
            .collect();
        let mut h = HeaderMap::new();
        write(&mut h, fields.iter().map(|f| (f, decision(1, 1_000))));
        let state = h["ratelimit"].to_str().unwrap();
        assert_eq!(state.split(", ").count(), 20);
        assert!(state.ends_with("\"policy-number-19\";r=1;t=1"), "{state}");
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
