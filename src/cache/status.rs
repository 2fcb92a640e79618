//! The `Cache-Status` response field (RFC 9211): one list member saying what this cache did.
//!
//! Serialised as a Structured Field item with parameters (RFC 8941), canonical form (no
//! spaces after `;`). `hit` and `fwd` exclude each other (RFC 9211 §2.1: a response that
//! had to go forward, even for validation, is not a hit), so the builder starts from one
//! of them; `fwd-status`, `stored` and `collapsed` only describe forwarded requests and are
//! not written on a hit. Strings are limited to printable ASCII: other characters become `?`.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

/// The field name (not among `http`'s constants).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why the request went forward (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The method is not cacheable.
    Method,
    /// No stored response for the URI.
    UriMiss,
    /// Stored responses exist but none matched the request's `Vary` fields.
    VaryMiss,
    /// Not stored, reason unspecified.
    Miss,
    /// The request's directives (no-cache, max-age=0…) sent it forward.
    Request,
    /// The stored response was stale and had to be validated.
    Stale,
    /// Only part of the response was stored.
    Partial,
}

/// One `Cache-Status` member, built with chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus<'a> {
    cache: &'a str,
    forward: Option<Forward>,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    key: Option<&'a str>,
    detail: Option<&'a str>,
}

impl Forward {
    fn token(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Miss => "miss",
            Forward::Request => "request",
            Forward::Stale => "stale",
            Forward::Partial => "partial",
        }
    }
}

impl<'a> CacheStatus<'a> {
    /// The response came from cache `cache` without going forward.
    pub fn hit(cache: &'a str) -> Self {
        Self::with(cache, None)
    }

    /// The request went forward from cache `cache` for `reason`.
    pub fn forward(cache: &'a str, reason: Forward) -> Self {
        Self::with(cache, Some(reason))
    }

    fn with(cache: &'a str, forward: Option<Forward>) -> Self {
        Self {
            cache,
            forward,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            key: None,
            detail: None,
        }
    }

    /// The status the next hop answered with (e.g. 304 after validation).
    pub fn fwd_status(mut self, status: StatusCode) -> Self {
        self.fwd_status = Some(status.as_u16());
        self
    }

    /// Remaining freshness in seconds, negative when stale.
    pub fn ttl(mut self, secs: i64) -> Self {
        self.ttl = Some(secs);
        self
    }

    /// Whether the forwarded response was stored.
    pub fn stored(mut self, stored: bool) -> Self {
        self.stored = stored;
        self
    }

    /// Whether the request was collapsed with another one going forward.
    pub fn collapsed(mut self, collapsed: bool) -> Self {
        self.collapsed = collapsed;
        self
    }

    /// The cache key (only for debugging: never pass secret key parts).
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// Implementation-specific detail, e.g. why a response was not stored.
    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Serialises the member.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut out = String::with_capacity(64);
        write_token_or_string(&mut out, self.cache);
        match self.forward {
            None => out.push_str(";hit"),
            Some(reason) => {
                out.push_str(";fwd=");
                out.push_str(reason.token());
                if let Some(status) = self.fwd_status {
                    out.push_str(";fwd-status=");
                    out.push_str(itoa::Buffer::new().format(status));
                }
            }
        }
        if let Some(ttl) = self.ttl {
            out.push_str(";ttl=");
            out.push_str(itoa::Buffer::new().format(ttl));
        }
        if self.forward.is_some() && self.stored {
            out.push_str(";stored");
        }
        if self.forward.is_some() && self.collapsed {
            out.push_str(";collapsed");
        }
        if let Some(key) = self.key {
            out.push_str(";key=");
            write_string(&mut out, key);
        }
        if let Some(detail) = self.detail {
            out.push_str(";detail=");
            write_token_or_string(&mut out, detail);
        }
        match HeaderValue::from_str(&out) {
            Ok(value) => value,
            Err(_) => {
                debug_assert!(false, "cache-status is printable ascii: {out:?}");
                HeaderValue::from_static("ferrogate;fwd=miss")
            }
        }
    }

    /// Adds this member after those of caches closer to the origin (a new field line
    /// extends the list, RFC 9110 §5.3).
    pub fn append_to(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS, self.to_header_value());
    }
}

/// RFC 8941 §3.3.4 token: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
fn is_sf_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && bytes.all(|b| super::control::is_tchar(b) || b == b':' || b == b'/')
}

fn write_token_or_string(out: &mut String, value: &str) {
    if is_sf_token(value) {
        out.push_str(value);
    } else {
        write_string(out, value);
    }
}

/// RFC 8941 §4.1.6 string: printable ASCII with `"` and `\` escaped.
fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// Whether the last member of a `Cache-Status` value (the nearest cache's, which this
/// gateway's is when it adds one) says `hit`.
pub fn is_hit(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or(value);
    last.split(|b| *b == b';')
        .skip(1)
        .any(|param| param.trim_ascii() == b"hit")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(status: &CacheStatus<'_>) -> String {
        status.to_header_value().to_str().unwrap().to_owned()
    }

    #[test]
    fn a_hit_is_read_from_the_last_member() {
        assert!(is_hit(b"ferrogate;hit;ttl=376"));
        assert!(is_hit(b"origin;fwd=miss, ferrogate; hit"));
        assert!(!is_hit(b"origin;hit, ferrogate;fwd=miss;stored"));
        assert!(!is_hit(b"hit;fwd=uri-miss"));
    }

    #[test]
    fn hit_with_ttl() {
        assert_eq!(
            text(&CacheStatus::hit("ferrogate").ttl(376)),
            "ferrogate;hit;ttl=376"
        );
    }

    #[test]
    fn stale_hit_has_negative_ttl() {
        assert_eq!(text(&CacheStatus::hit("fg").ttl(-12)), "fg;hit;ttl=-12");
    }

    #[test]
    fn revalidated_response_is_forwarded_as_stale_with_fwd_status() {
        let status = CacheStatus::forward("fg", Forward::Stale)
            .fwd_status(StatusCode::NOT_MODIFIED)
            .ttl(60)
            .stored(true);
        assert_eq!(text(&status), "fg;fwd=stale;fwd-status=304;ttl=60;stored");
    }

    #[test]
    fn every_forward_reason_has_its_token() {
        let cases = [
            (Forward::Bypass, "bypass"),
            (Forward::Method, "method"),
            (Forward::UriMiss, "uri-miss"),
            (Forward::VaryMiss, "vary-miss"),
            (Forward::Miss, "miss"),
            (Forward::Request, "request"),
            (Forward::Stale, "stale"),
            (Forward::Partial, "partial"),
        ];
        for (reason, token) in cases {
            assert_eq!(
                text(&CacheStatus::forward("fg", reason)),
                format!("fg;fwd={token}")
            );
        }
    }

    #[test]
    fn collapsed_and_stored_are_flags() {
        let status = CacheStatus::forward("fg", Forward::UriMiss)
            .collapsed(true)
            .stored(false);
        assert_eq!(text(&status), "fg;fwd=uri-miss;collapsed");
    }

    #[test]
    fn forward_only_parameters_are_not_written_on_a_hit() {
        let status = CacheStatus::hit("fg")
            .stored(true)
            .collapsed(true)
            .fwd_status(StatusCode::OK);
        assert_eq!(text(&status), "fg;hit");
    }

    #[test]
    fn detail_is_a_token_when_it_can_be() {
        let status = CacheStatus::forward("fg", Forward::Miss).detail("set-cookie");
        assert_eq!(text(&status), "fg;fwd=miss;detail=set-cookie");
    }

    #[test]
    fn detail_with_spaces_is_a_quoted_string() {
        let status = CacheStatus::forward("fg", Forward::Miss).detail("response is \"private\"");
        assert_eq!(
            text(&status),
            "fg;fwd=miss;detail=\"response is \\\"private\\\"\""
        );
    }

    #[test]
    fn cache_name_that_is_not_a_token_is_quoted() {
        assert_eq!(
            text(&CacheStatus::hit("edge cache 1")),
            "\"edge cache 1\";hit"
        );
    }

    #[test]
    fn key_is_always_a_string() {
        assert_eq!(
            text(&CacheStatus::hit("fg").key("https://h/")),
            "fg;hit;key=\"https://h/\""
        );
    }

    #[test]
    fn non_printable_characters_are_replaced() {
        assert_eq!(
            text(&CacheStatus::hit("fg").detail("a\u{e9}\n")),
            "fg;hit;detail=\"a??\""
        );
    }

    #[test]
    fn member_is_appended_after_upstream_members() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache;hit"));
        CacheStatus::forward("fg", Forward::UriMiss).append_to(&mut headers);
        let lines: Vec<_> = headers.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(lines, ["origin-cache;hit", "fg;fwd=uri-miss"]);
    }

    proptest! {
        #[test]
        fn any_text_gives_a_valid_header_value(name in "\\PC{0,20}", detail in "\\PC{0,20}") {
            let _ = CacheStatus::hit(&name).detail(&detail).to_header_value();
        }
    }
}
