//! The Lua scripts of the strict checks, the Redis key of each (policy, key), and the
//! translation of an [`Algorithm`] into a script call and of the reply into a [`Decision`].
//!
//! Keys are `fg:rl:{<policy>:<digest>}` plus a suffix per algorithm, so all of one key's data
//! sits on one cluster slot, and a reload that changes a policy's algorithm never reads the
//! other algorithm's state (or a sorted set as a hash). `<digest>` is the hex of the first 16
//! bytes of SHA-256 of the client's key: client keys may hold any bytes, including braces
//! that would move the hash tag, and 128 bits leave no feasible way to collide with another
//! client's key. Policy names are the operator's; one holding `}` only narrows the tag.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{Script, ScriptInvocation};
use aws_lc_rs::digest;

use super::super::spec::{now_micros, quota_window, Algorithm, Decision};
use super::StoreError;

static FIXED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/fixed.lua")));
static SLIDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/sliding.lua")));
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/gcra.lua")));
static QUOTA: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/quota.lua")));
static ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/adjust.lua")));
static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/acquire.lua")));

/// Retry hint for a refused concurrency lease, the same as the local store's
/// (`algo::CONCURRENCY_RETRY`): in-flight work has no known end.
pub(super) const LEASE_RETRY: Duration = Duration::from_secs(1);

/// `fg:rl:{<policy>:<32 hex digits>}`, the hash-tagged prefix of every key of one
/// (policy, key).
pub(super) fn base_key(policy: &str, key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = digest::digest(&digest::SHA256, key);
    // Room for the suffixes too.
    let mut name = String::with_capacity(policy.len() + 48);
    name.push_str("fg:rl:{");
    name.push_str(policy);
    name.push(':');
    for &b in &digest.as_ref()[..16] {
        name.push(char::from(HEX[usize::from(b >> 4)]));
        name.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    name.push('}');
    name
}

/// The script call deciding `alg` for `cost`, on the key `base` + the algorithm's suffix.
pub(super) fn check_call(
    mut base: String,
    alg: &Algorithm,
    cost: u64,
) -> ScriptInvocation<'static> {
    match *alg {
        Algorithm::FixedWindow { limit, window } => {
            base.push_str(":f");
            let mut call = FIXED.key(base);
            call.arg(micros(window)).arg(limit).arg(cost);
            call
        }
        Algorithm::SlidingWindow { limit, window } => {
            base.push_str(":s");
            let mut call = SLIDING.key(base);
            call.arg(micros(window)).arg(limit).arg(cost);
            call
        }
        Algorithm::TokenBucket {
            rate,
            period,
            burst,
        } => {
            // Dividing both by their gcd keeps the script's numbers small (and exact).
            let period = micros(period);
            let rate = rate.max(1);
            let g = gcd(period, rate);
            base.push_str(":g");
            let mut call = GCRA.key(base);
            call.arg(period / g).arg(rate / g).arg(burst).arg(cost);
            call
        }
        Algorithm::Quota { limit, period } => {
            let now = now_micros();
            let (_, end) = quota_window(period, now);
            base.push_str(":q");
            let mut call = QUOTA.key(base);
            call.arg(now).arg(end).arg(limit).arg(cost);
            call
        }
        // Only asks whether a lease is free; `acquire` takes one.
        Algorithm::Concurrency { max } => lease_call(&base, max, Duration::ZERO, ""),
    }
}

/// The script call adding `delta` to what a fixed window or a quota counted for `base`;
/// `None` for the algorithms that settle nothing.
pub(super) fn adjust_call(
    mut base: String,
    alg: &Algorithm,
    delta: i64,
) -> Option<ScriptInvocation<'static>> {
    match *alg {
        Algorithm::FixedWindow { window, .. } => {
            base.push_str(":f");
            let mut call = ADJUST.key(base);
            call.arg("f").arg(micros(window)).arg(0).arg(delta);
            Some(call)
        }
        Algorithm::Quota { period, .. } => {
            let now = now_micros();
            let (_, end) = quota_window(period, now);
            base.push_str(":q");
            let mut call = ADJUST.key(base);
            call.arg("q").arg(end).arg(now).arg(delta);
            Some(call)
        }
        _ => None,
    }
}

/// The script call taking lease `id` (or, with an empty id, only looking).
pub(super) fn lease_call(
    base: &str,
    max: u64,
    ttl: Duration,
    id: &str,
) -> ScriptInvocation<'static> {
    let mut call = ACQUIRE.key(lease_key(base));
    call.arg(max).arg(micros(ttl)).arg(id);
    call
}

pub(super) fn lease_key(base: &str) -> String {
    format!("{base}:c")
}

/// A check script's reply: `{allowed, remaining, reset µs, retry-after µs or -1}`.
pub(super) fn decision(alg: &Algorithm, reply: &[i64]) -> Result<Decision, StoreError> {
    if let Algorithm::Concurrency { max } = *alg {
        return lease_decision(max, reply);
    }
    let &[allowed, remaining, reset, retry] = reply else {
        return Err(bad_reply(reply));
    };
    Ok(Decision {
        allowed: allowed == 1,
        limit: alg.limit(),
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset: Duration::from_micros(u64::try_from(reset).unwrap_or(0)),
        retry_after: u64::try_from(retry).ok().map(Duration::from_micros),
    })
}

/// The lease script's reply: `{taken or free, leases left}`.
pub(super) fn lease_decision(max: u64, reply: &[i64]) -> Result<Decision, StoreError> {
    let &[allowed, remaining, ..] = reply else {
        return Err(bad_reply(reply));
    };
    let allowed = allowed == 1;
    Ok(Decision {
        allowed,
        limit: max,
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset: LEASE_RETRY,
        retry_after: (!allowed).then_some(LEASE_RETRY),
    })
}

/// A refused lease: no place left, retry after [`LEASE_RETRY`].
pub(super) fn lease_refused(max: u64) -> Decision {
    Decision {
        allowed: false,
        limit: max,
        remaining: 0,
        reset: LEASE_RETRY,
        retry_after: Some(LEASE_RETRY),
    }
}

fn bad_reply(reply: &[i64]) -> StoreError {
    StoreError::Reply(format!("expected the script's counts, got {reply:?}"))
}

/// A duration in µs, at least 1 so scripts can divide by it.
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_key_hashes_the_client_key_inside_one_hash_tag() {
        let name = base_key("per-ip", b"a}b{\xff");
        assert!(name.starts_with("fg:rl:{per-ip:"), "{name}");
        assert!(name.ends_with('}'), "{name}");
        assert_eq!(name.len(), "fg:rl:{per-ip:}".len() + 32);
        assert_eq!(name.matches('{').count(), 1);
        assert_ne!(name, base_key("per-ip", b"a}b{"));
    }

    #[test]
    fn gcd_reduces_rate_and_period() {
        assert_eq!(gcd(1_000_000, 3_000_000), 1_000_000);
        assert_eq!(gcd(1_000_000, 7), 1);
        assert_eq!(gcd(0, 0), 1);
    }

    #[test]
    fn reply_of_the_wrong_shape_is_an_error_not_a_panic() {
        let alg = Algorithm::FixedWindow {
            limit: 1,
            window: Duration::from_secs(1),
        };
        assert!(decision(&alg, &[1, 2]).is_err());
        let d = decision(&alg, &[0, 0, 1_500, 1_500]);
        assert_eq!(
            d.ok().and_then(|d| d.retry_after),
            Some(Duration::from_micros(1_500))
        );
    }
}
