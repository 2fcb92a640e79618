//! Finds the credential a route's authentication reads: from a header (with an optional scheme
//! such as `Bearer`), a cookie or a query parameter, refusing oversized values before anything
//! parses them.

use std::borrow::Cow;

use http::header::{HeaderName, COOKIE};
use http::HeaderMap;

use super::jwt::AuthFailure;

/// Longest credential accepted, in bytes. Real tokens are a few KiB at most; refusing larger
/// ones before base64 or JSON parsing keeps hostile 64 KiB tokens cheap to reject.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Where a route reads its credential from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header. With a `scheme` (e.g. `Bearer`), the value must start with that scheme
    /// (compared case-insensitively, RFC 9110 §11.1) followed by whitespace; without one the
    /// whole value is the credential.
    Header {
        name: HeaderName,
        scheme: Option<Cow<'static, str>>,
    },
    /// A cookie, by exact (case-sensitive) name.
    Cookie { name: String },
    /// A query parameter, by exact name; the value is percent-decoded.
    Query { name: String },
}

impl TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    pub fn bearer() -> Self {
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            scheme: Some(Cow::Borrowed("Bearer")),
        }
    }
}

/// Reads the credential for `source` from the request headers or the raw query string (the part
/// after `?`, without it).
///
/// Fails with [`AuthFailure::MissingToken`] when there is none, [`AuthFailure::TokenTooLarge`]
/// above [`MAX_TOKEN_LEN`], and [`AuthFailure::MalformedCredential`] when the value is present
/// but unusable (wrong scheme, two competing headers, bad percent-encoding, not UTF-8).
pub fn extract<'a>(
    source: &TokenSource,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Cow<'a, str>, AuthFailure> {
    match source {
        TokenSource::Header { name, scheme } => {
            from_header(headers, name, scheme.as_deref()).map(Cow::Borrowed)
        }
        TokenSource::Cookie { name } => from_cookies(headers, name).map(Cow::Borrowed),
        TokenSource::Query { name } => from_query(query.unwrap_or(""), name),
    }
}

fn from_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    scheme: Option<&str>,
) -> Result<&'a str, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthFailure::MissingToken)?;
    // Two credentials in one request leave it unclear which one a backend or a log trusts.
    if values.next().is_some() {
        return Err(AuthFailure::MalformedCredential("repeated header"));
    }
    // The size check comes before any other look at the bytes.
    let raw = value.as_bytes();
    if raw.len() > MAX_TOKEN_LEN + scheme.map_or(0, |s| s.len() + 1) {
        return Err(AuthFailure::TokenTooLarge { len: raw.len() });
    }
    // `HeaderValue` already excludes control characters; refusing obs-text leaves ASCII,
    // which std checks word-at-a-time (`to_str` checks byte by byte).
    if !raw.is_ascii() {
        return Err(AuthFailure::MalformedCredential("header is not ascii"));
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| AuthFailure::MalformedCredential("header is not ascii"))?
        .trim();
    let token = match scheme {
        None => text,
        Some(scheme) => strip_scheme(text, scheme)?,
    };
    checked(token)
}

/// `Bearer abc` → `abc`; the scheme is case-insensitive and must be followed by whitespace.
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Result<&'a str, AuthFailure> {
    let bytes = text.as_bytes();
    let has_scheme = bytes.len() > scheme.len()
        && bytes[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        && matches!(bytes[scheme.len()], b' ' | b'\t');
    if !has_scheme {
        return Err(AuthFailure::MalformedCredential(
            "wrong authorization scheme",
        ));
    }
    Ok(text[scheme.len()..].trim_start_matches([' ', '\t']))
}

fn from_cookies<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, AuthFailure> {
    // HTTP/2 clients may split cookies over several `cookie` fields (RFC 9113 §8.2.3).
    for value in headers.get_all(COOKIE) {
        let raw = value.as_bytes();
        let Ok(text) = std::str::from_utf8(raw) else {
            continue;
        };
        if !raw.is_ascii() {
            continue;
        }
        for pair in text.split(';') {
            let Some((key, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if key.trim() != name {
                continue;
            }
            if val.len() > MAX_TOKEN_LEN + 2 {
                return Err(AuthFailure::TokenTooLarge { len: val.len() });
            }
            let val = val.trim();
            // RFC 6265 §4.1.1 allows the value in double quotes.
            let val = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(val);
            // The first cookie of that name wins: browsers send the most specific path first.
            return checked(val);
        }
    }
    Err(AuthFailure::MissingToken)
}

fn from_query<'a>(query: &'a str, name: &str) -> Result<Cow<'a, str>, AuthFailure> {
    for pair in query.split('&') {
        let (key, val) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key).ok().as_deref() != Some(name) {
            continue;
        }
        // Percent-encoding at most triples the length, so this bound is safe to apply first.
        if val.len() > 3 * MAX_TOKEN_LEN {
            return Err(AuthFailure::TokenTooLarge { len: val.len() });
        }
        let decoded = percent_decode(val)?;
        if decoded.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::TokenTooLarge { len: decoded.len() });
        }
        if decoded.is_empty() {
            return Err(AuthFailure::MissingToken);
        }
        return Ok(decoded);
    }
    Err(AuthFailure::MissingToken)
}

fn checked(token: &str) -> Result<&str, AuthFailure> {
    if token.is_empty() {
        return Err(AuthFailure::MissingToken);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthFailure::TokenTooLarge { len: token.len() });
    }
    Ok(token)
}

/// Decodes `%XX` escapes. `+` stays a `+`: tokens are not form data, and base64 tokens
/// legitimately contain `+`.
fn percent_decode(raw: &str) -> Result<Cow<'_, str>, AuthFailure> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(AuthFailure::MalformedCredential("bad percent-encoding"));
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| AuthFailure::MalformedCredential("query value is not utf-8"))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn cookie(name: &str) -> TokenSource {
        TokenSource::Cookie { name: name.into() }
    }

    fn query(name: &str) -> TokenSource {
        TokenSource::Query { name: name.into() }
    }

    #[test]
    fn bearer_token_is_read_from_authorization() {
        let h = headers(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(
            extract(&TokenSource::bearer(), &h, None).unwrap(),
            "abc.def.ghi"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let h = headers(&[("authorization", "bEaReR   abc")]);
        assert_eq!(extract(&TokenSource::bearer(), &h, None).unwrap(), "abc");
    }

    #[test]
    fn other_scheme_is_malformed() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn scheme_without_separator_is_malformed() {
        let h = headers(&[("authorization", "Bearerabc")]);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn scheme_without_token_is_malformed() {
        let h = headers(&[("authorization", "Bearer  ")]);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn obs_text_in_header_is_malformed() {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"Bearer abc\xe9").unwrap();
        h.insert(http::header::AUTHORIZATION, value);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn absent_header_is_missing_token() {
        let err = extract(&TokenSource::bearer(), &HeaderMap::new(), None).unwrap_err();
        assert!(matches!(err, AuthFailure::MissingToken), "{err}");
    }

    #[test]
    fn repeated_authorization_header_is_malformed() {
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn header_without_scheme_is_taken_whole() {
        let source = TokenSource::Header {
            name: HeaderName::from_static("x-token"),
            scheme: None,
        };
        let h = headers(&[("x-token", " tok ")]);
        assert_eq!(extract(&source, &h, None).unwrap(), "tok");
    }

    #[test]
    fn oversized_header_token_is_rejected_before_parsing() {
        let big = format!("Bearer {}", "a".repeat(64 * 1024));
        let h = headers(&[("authorization", &big)]);
        let err = extract(&TokenSource::bearer(), &h, None).unwrap_err();
        assert!(
            matches!(err, AuthFailure::TokenTooLarge { len } if len == big.len()),
            "{err}"
        );
    }

    #[test]
    fn token_of_exactly_the_limit_is_accepted() {
        let token = "a".repeat(MAX_TOKEN_LEN);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            extract(&TokenSource::bearer(), &h, None).unwrap().len(),
            MAX_TOKEN_LEN
        );
    }

    #[test]
    fn cookie_is_found_among_several() {
        let h = headers(&[("cookie", "a=1; session=tok; b=2")]);
        assert_eq!(extract(&cookie("session"), &h, None).unwrap(), "tok");
    }

    #[test]
    fn cookie_is_found_in_a_later_cookie_header() {
        let h = headers(&[("cookie", "a=1"), ("cookie", "session=tok")]);
        assert_eq!(extract(&cookie("session"), &h, None).unwrap(), "tok");
    }

    #[test]
    fn quoted_cookie_value_is_unquoted() {
        let h = headers(&[("cookie", "session=\"tok\"")]);
        assert_eq!(extract(&cookie("session"), &h, None).unwrap(), "tok");
    }

    #[test]
    fn cookie_name_is_case_sensitive() {
        let h = headers(&[("cookie", "Session=tok")]);
        let err = extract(&cookie("session"), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MissingToken), "{err}");
    }

    #[test]
    fn cookie_name_prefix_does_not_match() {
        let h = headers(&[("cookie", "session_old=x; xsession=y")]);
        let err = extract(&cookie("session"), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::MissingToken), "{err}");
    }

    #[test]
    fn oversized_cookie_is_rejected() {
        let big = format!("session={}", "a".repeat(MAX_TOKEN_LEN + 10));
        let h = headers(&[("cookie", &big)]);
        let err = extract(&cookie("session"), &h, None).unwrap_err();
        assert!(matches!(err, AuthFailure::TokenTooLarge { .. }), "{err}");
    }

    #[test]
    fn query_value_is_percent_decoded() {
        let h = HeaderMap::new();
        let got = extract(
            &query("access_token"),
            &h,
            Some("x=1&access_token=a%2Eb%2ec&y"),
        )
        .unwrap();
        assert_eq!(got, "a.b.c");
    }

    #[test]
    fn query_plus_is_kept_literally() {
        let h = HeaderMap::new();
        let got = extract(&query("t"), &h, Some("t=a+b")).unwrap();
        assert_eq!(got, "a+b");
    }

    #[test]
    fn query_value_without_escapes_is_borrowed() {
        let h = HeaderMap::new();
        let got = extract(&query("t"), &h, Some("t=abc")).unwrap();
        assert!(matches!(got, Cow::Borrowed("abc")));
    }

    #[test]
    fn query_bad_escape_is_malformed() {
        let err = extract(&query("t"), &HeaderMap::new(), Some("t=ab%zz")).unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)), "{err}");
    }

    #[test]
    fn query_empty_value_is_missing_token() {
        let err = extract(&query("t"), &HeaderMap::new(), Some("t=")).unwrap_err();
        assert!(matches!(err, AuthFailure::MissingToken), "{err}");
    }

    #[test]
    fn query_without_parameter_is_missing_token() {
        let err = extract(&query("t"), &HeaderMap::new(), None).unwrap_err();
        assert!(matches!(err, AuthFailure::MissingToken), "{err}");
    }

    #[test]
    fn oversized_query_token_is_rejected() {
        let q = format!("t={}", "a".repeat(64 * 1024));
        let err = extract(&query("t"), &HeaderMap::new(), Some(&q)).unwrap_err();
        assert!(matches!(err, AuthFailure::TokenTooLarge { .. }), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn percent_decoding_round_trips(text in "\\PC{0,40}") {
            let mut encoded = String::new();
            for b in text.as_bytes() {
                encoded.push_str(&format!("%{b:02X}"));
            }
            proptest::prop_assert_eq!(percent_decode(&encoded).unwrap(), text);
        }

        #[test]
        fn extraction_never_panics(value in "[ -~]{0,200}") {
            let h = headers(&[("authorization", &value), ("cookie", &value)]);
            let _ = extract(&TokenSource::bearer(), &h, Some(&value));
            let _ = extract(&cookie("a"), &h, Some(&value));
            let _ = extract(&query("a"), &h, Some(&value));
        }
    }
}
