//! Freshness and age of a stored response (RFC 9111 §4.2, RFC 5861), and the decision
//! whether a request may be answered from it, must wait for validation, or neither.
//!
//! Everything is computed from the metadata a cache keeps with a response ([`StoredMeta`])
//! and explicit times, as a shared cache: `s-maxage` counts, `private` responses never
//! reach here.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue, AGE, DATE, ETAG, EXPIRES, LAST_MODIFIED};
use http::StatusCode;

use super::conditional::EntityTag;
use super::control::{
    parse_delta_seconds, FieldScope, MaxStale, RequestDirectives, ResponseDirectives,
    DELTA_SECONDS_MAX,
};
use super::date::{date_field, DateField};
use super::storable::is_heuristically_cacheable;
use super::vary::Vary;

/// How a cache may guess a lifetime when the response states none (RFC 9111 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeuristicPolicy {
    /// Share of the time since `Last-Modified`, in percent (the RFC's example is 10).
    pub percent: u32,
    /// Upper bound of a heuristic lifetime.
    pub max: Duration,
}

impl Default for HeuristicPolicy {
    /// 10% capped at one day: beyond a day RFC 7234 required a warning, so caches stay below.
    fn default() -> Self {
        Self {
            percent: 10,
            max: Duration::from_secs(24 * 3600),
        }
    }
}

/// When the exchange that produced a response happened, by the cache's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeTimes {
    /// When the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response head was received.
    pub response_time: SystemTime,
}

/// A freshness lifetime and whether it was guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub duration: Duration,
    pub heuristic: bool,
}

/// What a cache remembers with a stored response to reuse, validate and update it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMeta {
    pub status: StatusCode,
    pub directives: ResponseDirectives,
    pub times: ExchangeTimes,
    /// `Date`, or the response time when absent or invalid (RFC 9110 §6.6.1).
    pub date: SystemTime,
    /// The `Age` value received (zero when absent or invalid).
    pub age_value: Duration,
    pub expires: DateField,
    pub last_modified: Option<SystemTime>,
    pub etag: Option<EntityTag>,
    /// Secondary key: the `Vary` names and the original request's values.
    pub vary: Vary,
    pub lifetime: Lifetime,
    /// `corrected_initial_age` of RFC 9111 §4.2.3, fixed once the response is received.
    pub initial_age: Duration,
}

/// Whether and how a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; `age` goes into the `Age` field.
    Fresh { age: Duration },
    /// Serve it although stale; when `revalidate` is set (stale-while-revalidate), start a
    /// background validation so later requests get a fresh response.
    Stale {
        age: Duration,
        staleness: Duration,
        revalidate: bool,
    },
    /// Validate with the origin first; `on_error` says what to do if that fails.
    Validate { age: Duration, on_error: OnError },
    /// `only-if-cached` and the stored response cannot be used without the origin:
    /// answer 504 (RFC 9111 §5.2.1.7).
    GatewayTimeout,
}

/// What to do when validation fails (upstream unreachable or 500/502/503/504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Serve the stored response: it is still fresh, or stale-if-error covers it.
    ServeStored,
    /// Forward the origin's error; if unreachable, answer as for any upstream failure.
    ForwardError,
    /// Forward the origin's error status, but serve the stored response when the origin is
    /// unreachable: a disconnected cache may serve stale unless a directive forbids it
    /// (RFC 9111 §4.2.4).
    ServeStoredIfUnreachable,
    /// The response may not be served stale (must-revalidate and kin): forward the origin's
    /// error, and answer 504 if the origin is unreachable (RFC 9111 §5.2.2.2).
    GatewayTimeout,
}

impl StoredMeta {
    /// Records what the cache needs from a request and the response it got.
    pub fn new(
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        times: ExchangeTimes,
        policy: &HeuristicPolicy,
    ) -> Self {
        let now = times.response_time;
        let directives = ResponseDirectives::parse(response);
        let date = match date_field(response, &DATE, now) {
            DateField::Valid(date) => date,
            DateField::Absent | DateField::Invalid => times.response_time,
        };
        let expires = match directives.targeted {
            true => DateField::Absent,
            false => date_field(response, &EXPIRES, now),
        };
        let last_modified = match date_field(response, &LAST_MODIFIED, now) {
            DateField::Valid(time) => Some(time),
            DateField::Absent | DateField::Invalid => None,
        };
        let age_value = age_value(response);
        let lifetime =
            freshness_lifetime(&directives, status, date, expires, last_modified, policy);
        Self {
            status,
            etag: single_etag(response),
            vary: Vary::from_exchange(response, request),
            initial_age: corrected_initial_age(age_value, date, times),
            directives,
            times,
            date,
            age_value,
            expires,
            last_modified,
            lifetime,
        }
    }

    /// `current_age` (RFC 9111 §4.2.3) at `now`.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        current_age(self.initial_age, self.times.response_time, now)
    }

    /// Remaining freshness at `now` in seconds, negative once stale (Cache-Status `ttl`).
    pub fn ttl_secs(&self, now: SystemTime) -> i64 {
        let age = self.current_age(now);
        let lifetime = self.lifetime.duration;
        if lifetime >= age {
            secs_i64(lifetime - age)
        } else {
            -secs_i64(age - lifetime)
        }
    }

    /// Whether the response carries a validator usable in a conditional request.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// Freshness lifetime (RFC 9111 §4.2.1), first match of: `s-maxage`, `max-age`,
/// `Expires - Date`, heuristic. An invalid `Expires` means already expired (§5.3).
pub fn freshness_lifetime(
    directives: &ResponseDirectives,
    status: StatusCode,
    date: SystemTime,
    expires: DateField,
    last_modified: Option<SystemTime>,
    policy: &HeuristicPolicy,
) -> Lifetime {
    let explicit = |duration| Lifetime {
        duration,
        heuristic: false,
    };
    if let Some(secs) = directives.s_maxage.or(directives.max_age) {
        return explicit(Duration::from_secs(u64::from(secs)));
    }
    match expires {
        DateField::Valid(expires) => return explicit(elapsed(date, expires)),
        DateField::Invalid => return explicit(Duration::ZERO),
        DateField::Absent => {}
    }
    // Heuristics only where storing without explicit freshness is allowed (§4.2.2).
    let allowed = is_heuristically_cacheable(status) || directives.public;
    match last_modified.filter(|_| allowed) {
        Some(modified) => Lifetime {
            duration: (elapsed(modified, date).saturating_mul(policy.percent) / 100)
                .min(policy.max),
            heuristic: true,
        },
        None => explicit(Duration::ZERO),
    }
}

/// `corrected_initial_age` (RFC 9111 §4.2.3): the larger of the age the origin's clock
/// implies (`apparent_age`) and the age upstream caches reported plus the time the
/// response took to arrive (`corrected_age_value`).
pub fn corrected_initial_age(
    age_value: Duration,
    date: SystemTime,
    times: ExchangeTimes,
) -> Duration {
    let apparent_age = elapsed(date, times.response_time);
    let response_delay = elapsed(times.request_time, times.response_time);
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// `current_age = corrected_initial_age + resident_time` (RFC 9111 §4.2.3).
pub fn current_age(initial_age: Duration, response_time: SystemTime, now: SystemTime) -> Duration {
    initial_age.saturating_add(elapsed(response_time, now))
}

/// The `Age` field for a response of age `age`: whole seconds, at most 2^31 (§5.1).
pub fn age_header_value(age: Duration) -> HeaderValue {
    let secs = age.as_secs().min(u64::from(DELTA_SECONDS_MAX));
    HeaderValue::from(secs)
}

/// Decides how the stored response may answer a request with directives `request` at `now`.
///
/// Order: unqualified `no-cache` on either side forces validation; a fresh response that
/// satisfies the request's `max-age` and `min-fresh` is served; a stale one is served only
/// when neither the response (`must-revalidate`, `proxy-revalidate`, `s-maxage`) nor the
/// request (`max-age` without `max-stale`, `min-fresh`) forbids it and
/// `stale-while-revalidate` or the request's `max-stale` allows it; otherwise validate,
/// or answer 504 under `only-if-cached`.
pub fn freshness(request: &RequestDirectives, stored: &StoredMeta, now: SystemTime) -> Verdict {
    let age = stored.current_age(now);
    let lifetime = stored.lifetime.duration;
    let fresh = lifetime > age;
    let staleness = age.saturating_sub(lifetime);
    let response = &stored.directives;
    let must_validate = request.no_cache || response.no_cache == FieldScope::Whole;
    let age_ok = request.max_age.is_none_or(|max| age <= secs(max));

    if !must_validate {
        let min_fresh_ok = request
            .min_fresh
            .is_none_or(|min| lifetime.saturating_sub(age) >= secs(min));
        if fresh && age_ok && min_fresh_ok {
            return Verdict::Fresh { age };
        }
        // §5.2.1.1: with max-age but without max-stale the client wants no stale response.
        let client_takes_stale = age_ok
            && request.min_fresh.is_none()
            && !(request.max_age.is_some() && request.max_stale.is_none());
        if !fresh && client_takes_stale && !response.forbids_stale() {
            let within_max_stale = match request.max_stale {
                None | Some(MaxStale::Any) => true,
                Some(MaxStale::Within(max)) => staleness <= secs(max),
            };
            let while_revalidate = response
                .stale_while_revalidate
                .is_some_and(|window| staleness <= secs(window));
            if within_max_stale && (while_revalidate || request.max_stale.is_some()) {
                return Verdict::Stale {
                    age,
                    staleness,
                    revalidate: while_revalidate,
                };
            }
        }
    }
    if request.only_if_cached {
        return Verdict::GatewayTimeout;
    }
    Verdict::Validate {
        age,
        on_error: on_error(request, response, fresh, staleness),
    }
}

/// What a failed validation falls back to (RFC 9111 §4.2.4, §4.3.3; RFC 5861 §4).
fn on_error(
    request: &RequestDirectives,
    response: &ResponseDirectives,
    fresh: bool,
    staleness: Duration,
) -> OnError {
    // The origin said every use needs validation; nothing else overrides that.
    if response.no_cache == FieldScope::Whole {
        return OnError::ForwardError;
    }
    // The client asked for a validated response unless it also accepts stale on error.
    if request.no_cache && request.stale_if_error.is_none() {
        return OnError::ForwardError;
    }
    if fresh {
        return OnError::ServeStored;
    }
    if response.forbids_stale() {
        return OnError::GatewayTimeout;
    }
    // The client's own window, when given, is the limit of what it accepts.
    match request.stale_if_error.or(response.stale_if_error) {
        Some(window) if staleness <= secs(window) => OnError::ServeStored,
        // The client set a limit the response is past.
        Some(_) if request.stale_if_error.is_some() => OnError::ForwardError,
        _ => OnError::ServeStoredIfUnreachable,
    }
}

impl Verdict {
    /// Whether the stored response is sent without waiting for the origin.
    pub fn serves_stored(&self) -> bool {
        matches!(self, Verdict::Fresh { .. } | Verdict::Stale { .. })
    }
}

/// The response's single `ETag`; several lines or a malformed tag mean no usable validator.
fn single_etag(response: &HeaderMap) -> Option<EntityTag> {
    let mut lines = response.get_all(ETAG).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    EntityTag::parse(first.as_bytes())
}

/// The received `Age`: its first value (of the first line, when there are several lines
/// or a list). A first value that is not delta-seconds (`abc`, `-1`, `1.5`, `7200;a=b`)
/// makes the response as old as can be, so stale: the most restrictive reading (RFC 9111
/// §4.2.1), as for other invalid lifetime fields.
fn age_value(response: &HeaderMap) -> Duration {
    let Some(line) = response.get_all(AGE).iter().next() else {
        return Duration::ZERO;
    };
    let first = line.as_bytes().split(|&b| b == b',').next().unwrap_or(b"");
    let secs = parse_delta_seconds(super::control::trim(first)).unwrap_or(DELTA_SECONDS_MAX);
    Duration::from_secs(u64::from(secs))
}

/// `later - earlier`, or zero when `later` is not later (clock skew, bad dates).
fn elapsed(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

fn secs(value: u32) -> Duration {
    Duration::from_secs(u64::from(value))
}

fn secs_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "freshness/tests.rs"]
mod tests;
