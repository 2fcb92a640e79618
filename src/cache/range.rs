//! Range requests answered from a stored complete response (RFC 9110 §14): one byte range
//! of a stored `200` becomes a `206`, a range past its end a `416`, and anything else (no
//! `Range`, several ranges, another unit, a syntax error, an `If-Range` that does not
//! match) the whole response, as a server that ignores `Range` would send.

use std::time::SystemTime;

use http::header::{HeaderMap, IF_RANGE, RANGE};
use http::{Method, StatusCode};

use super::conditional::EntityTag;
use super::date::parse_http_date;
use super::freshness::StoredMeta;

/// How a stored response answers a request that may ask for a part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole response.
    Full,
    /// `206` with bytes `first..=last` of `len`.
    Partial { first: u64, last: u64, len: u64 },
    /// `416`: the range starts past the end of the `len` bytes stored.
    Unsatisfiable { len: u64 },
}

/// The part of a stored response of status `status` and body length `len` that a `method`
/// request with fields `request` gets.
pub fn select(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &StoredMeta,
    len: u64,
    now: SystemTime,
) -> RangeAnswer {
    if *method != Method::GET || status != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let mut lines = request.get_all(RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(request, stored, now) {
        return RangeAnswer::Full;
    }
    let Some(spec) = single_byte_range(line.as_bytes()) else {
        return RangeAnswer::Full;
    };
    let (first, last) = match spec {
        Spec::From(first) => (first, len.saturating_sub(1)),
        Spec::Between(first, last) => (first, last.min(len.saturating_sub(1))),
        Spec::Suffix(0) => return RangeAnswer::Unsatisfiable { len },
        Spec::Suffix(n) => (len.saturating_sub(n), len.saturating_sub(1)),
    };
    if first >= len {
        return RangeAnswer::Unsatisfiable { len };
    }
    RangeAnswer::Partial { first, last, len }
}

enum Spec {
    /// `first-`
    From(u64),
    /// `first-last`
    Between(u64, u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n`, one range only; `None` for anything else.
fn single_byte_range(value: &[u8]) -> Option<Spec> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (unit, set) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (a, b) = set.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => number(n).map(Spec::Suffix),
        (a, "") => number(a).map(Spec::From),
        (a, b) => {
            let (a, b) = (number(a)?, number(b)?);
            (a <= b).then_some(Spec::Between(a, b))
        }
    }
}

/// `If-Range` (RFC 9110 §13.1.5): absent, or a strong entity tag equal to the stored one,
/// or a date equal to the stored `Last-Modified`.
fn if_range_holds(request: &HeaderMap, stored: &StoredMeta, now: SystemTime) -> bool {
    let Some(value) = request.get(IF_RANGE) else {
        return true;
    };
    let value = value.as_bytes();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let (Some(tag), Some(ours)) = (EntityTag::parse(value), stored.etag.as_ref()) else {
            return false;
        };
        return !tag.weak && tag.strong_eq(ours);
    }
    match (parse_http_date(value, now), stored.last_modified) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::cache::freshness::{ExchangeTimes, HeuristicPolicy};

    const LM: &str = "Wed, 01 Jan 2020 00:00:00 GMT";

    fn meta() -> StoredMeta {
        let mut response = HeaderMap::new();
        response.insert("etag", HeaderValue::from_static("\"v1\""));
        response.insert("last-modified", HeaderValue::from_static(LM));
        response.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let times = ExchangeTimes {
            request_time: now,
            response_time: now,
        };
        StoredMeta::new(
            &HeaderMap::new(),
            StatusCode::OK,
            &response,
            times,
            &HeuristicPolicy::default(),
        )
    }

    fn answer(fields: &[(&'static str, &'static str)]) -> RangeAnswer {
        let mut request = HeaderMap::new();
        for (n, v) in fields {
            request.append(*n, HeaderValue::from_static(v));
        }
        select(
            &Method::GET,
            &request,
            StatusCode::OK,
            &meta(),
            10,
            SystemTime::now(),
        )
    }

    #[test]
    fn one_byte_range_of_a_stored_response_is_partial() {
        let part = |first, last| RangeAnswer::Partial {
            first,
            last,
            len: 10,
        };
        assert_eq!(answer(&[("range", "bytes=2-4")]), part(2, 4));
        assert_eq!(answer(&[("range", "bytes=7-")]), part(7, 9));
        assert_eq!(answer(&[("range", "bytes=-3")]), part(7, 9));
        assert_eq!(answer(&[("range", "bytes=5-100")]), part(5, 9));
        assert_eq!(answer(&[("range", "bytes=-100")]), part(0, 9));
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        let none = RangeAnswer::Unsatisfiable { len: 10 };
        assert_eq!(answer(&[("range", "bytes=10-")]), none);
        assert_eq!(answer(&[("range", "bytes=-0")]), none);
    }

    #[test]
    fn other_ranges_get_the_whole_response() {
        for spec in [
            "bytes=1-2,4-5",
            "items=1-2",
            "bytes=4-2",
            "bytes=x-",
            "bytes=",
        ] {
            assert_eq!(answer(&[("range", spec)]), RangeAnswer::Full, "{spec}");
        }
    }

    #[test]
    fn if_range_must_match_the_stored_validator() {
        let part = RangeAnswer::Partial {
            first: 0,
            last: 1,
            len: 10,
        };
        assert_eq!(
            answer(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]),
            part
        );
        assert_eq!(answer(&[("range", "bytes=0-1"), ("if-range", LM)]), part);
        for other in ["\"v2\"", "W/\"v1\"", "Thu, 02 Jan 2020 00:00:00 GMT"] {
            let got = answer(&[("range", "bytes=0-1"), ("if-range", other)]);
            assert_eq!(got, RangeAnswer::Full, "{other}");
        }
    }
}
