//! Primary cache key: the normalised target URI, the method class and caller-supplied
//! parts, hashed so that secret parts (tokens, cookies, consumer ids) are never stored.
//!
//! URI normalisation (RFC 3986 §6.2.2 and §6.2.3, only where equivalent):
//! - scheme and host are lower-cased; the default port (80 for http, 443 for https) and an
//!   empty port are removed; a port is written without leading zeros;
//! - in path and query, percent-encoded octets get upper-case hex and encoded unreserved
//!   characters (`A-Z a-z 0-9 - . _ ~`) are decoded; malformed `%` sequences are kept;
//! - an empty path becomes `/`; dot segments are kept, because a backend that resolves
//!   them differently would otherwise be served another path's response;
//! - query parameters are sorted by name with a stable sort, so repeated names keep their
//!   relative order (`a=1&a=2` stays distinct from `a=2&a=1`); an empty query (`/p?`) is
//!   no query; `+` and `%20` stay distinct. Sorting assumes the backend does not give
//!   meaning to the order of differently named parameters, which is what frameworks do.
//!
//! GET and HEAD share a key (a stored GET answers a HEAD); other methods key separately.

use aws_lc_rs::digest::{Context, SHA256};
use http::Method;

/// Length of [`CacheKey::digest`].
pub const KEY_LEN: usize = 32;

/// Domain separation so a key can never collide with another hash use of SHA-256 here.
const KEY_DOMAIN: &[u8] = b"ferrogate cache key v1\0";

/// Why a target cannot be keyed; the caller bypasses the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cache key needs a host, got authority {0:?}")]
    MissingHost(String),
    #[error("invalid port in authority {0:?}")]
    InvalidPort(String),
    #[error("user information is not allowed in authority {0:?}")]
    UserInfo(String),
    #[error("invalid host in authority {0:?}")]
    InvalidHost(String),
    #[error("invalid scheme {0:?}")]
    InvalidScheme(String),
}

/// The target of a request as the gateway sees it: scheme, authority (`host[:port]`,
/// from the URI or the Host field) and origin-form path with query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
}

/// A primary key: the hash stored and looked up, and the readable URL for purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub digest: [u8; KEY_LEN],
    /// `scheme://host[:port]/path[?query]`, normalised, without the extra parts.
    pub url: String,
}

/// Builds the primary key of a request. `extra` are `(label, value)` parts the route adds
/// (header values, cookie values, consumer); labels keep parts with equal values apart.
pub fn primary_key(
    method: &Method,
    target: Target<'_>,
    extra: &[(&[u8], &[u8])],
) -> Result<CacheKey, KeyError> {
    let url = normalize_url(target)?;
    let mut hash = Context::new(&SHA256);
    hash.update(KEY_DOMAIN);
    put_part(&mut hash, method_class(method).as_bytes());
    put_part(&mut hash, url.as_bytes());
    hash.update(&(extra.len() as u64).to_be_bytes());
    for (label, value) in extra {
        put_part(&mut hash, label);
        put_part(&mut hash, value);
    }
    let mut digest = [0u8; KEY_LEN];
    digest.copy_from_slice(hash.finish().as_ref());
    Ok(CacheKey { digest, url })
}

/// The normalised URL of a target, as used for keys, purges and invalidation.
pub fn normalize_url(target: Target<'_>) -> Result<String, KeyError> {
    let scheme = normalize_scheme(target.scheme)?;
    let authority = normalize_authority(&scheme, target.authority)?;
    let (path, query) = match target.path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target.path_and_query, None),
    };
    let mut url =
        String::with_capacity(scheme.len() + authority.len() + target.path_and_query.len() + 4);
    url.push_str(&scheme);
    url.push_str("://");
    url.push_str(&authority);
    if path.is_empty() {
        url.push('/');
    } else {
        push_normalized(&mut url, path);
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        push_sorted_query(&mut url, query);
    }
    Ok(url)
}

/// `host[:port]` lower-cased, default or empty port removed. Also used to compare origins.
pub fn normalize_authority(scheme: &str, authority: &str) -> Result<String, KeyError> {
    if authority.contains('@') {
        return Err(KeyError::UserInfo(authority.to_owned()));
    }
    // An IPv6 literal contains colons; the port separator is the colon after `]`.
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(KeyError::MissingHost(authority.to_owned()));
    }
    if !is_host(host) {
        return Err(KeyError::InvalidHost(authority.to_owned()));
    }
    let mut out = host.to_ascii_lowercase();
    let port = match port.filter(|p| !p.is_empty()) {
        None => None,
        Some(digits) => {
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(KeyError::InvalidPort(authority.to_owned()));
            }
            let trimmed = digits.trim_start_matches('0');
            match trimmed.parse::<u16>() {
                Ok(port) => Some(port),
                Err(_) if trimmed.is_empty() => Some(0),
                Err(_) => return Err(KeyError::InvalidPort(authority.to_owned())),
            }
        }
    };
    if let Some(port) = port.filter(|&p| Some(p) != default_port(scheme)) {
        out.push(':');
        out.push_str(itoa::Buffer::new().format(port));
    }
    Ok(out)
}

/// Lower-cased scheme, checked against RFC 3986 §3.1.
fn normalize_scheme(scheme: &str) -> Result<String, KeyError> {
    let valid = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid {
        return Err(KeyError::InvalidScheme(scheme.to_owned()));
    }
    Ok(scheme.to_ascii_lowercase())
}

/// RFC 3986 §3.2.2: an IP literal in brackets, or a reg-name / IPv4 address.
fn is_host(host: &str) -> bool {
    let sub_delim = |b: u8| b"!$&'()*+,;=".contains(&b);
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(literal) => {
            !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| is_unreserved(b) || sub_delim(b) || b == b':')
        }
        None => host
            .bytes()
            .all(|b| is_unreserved(b) || sub_delim(b) || b == b'%'),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn method_class(method: &Method) -> &str {
    if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    }
}

/// Length-prefixed so that part boundaries cannot be shifted to forge another key.
fn put_part(hash: &mut Context, part: &[u8]) {
    hash.update(&(part.len() as u64).to_be_bytes());
    hash.update(part);
}

fn push_sorted_query(url: &mut String, query: &str) {
    let mut params: Vec<String> = query
        .split('&')
        .map(|param| {
            let mut normalized = String::with_capacity(param.len());
            push_normalized(&mut normalized, param);
            normalized
        })
        .collect();
    params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            url.push('&');
        }
        url.push_str(param);
    }
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// Copies `text`, normalising percent-encoding as RFC 3986 §6.2.2.1-2 allows.
fn push_normalized(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match decoded {
            Some(octet) if is_unreserved(octet) => {
                out.push(char::from(octet));
                i += 3;
            }
            Some(octet) => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(octet >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(octet & 0xF)]));
                i += 3;
            }
            None => {
                // Copy the whole (possibly multi-byte) character starting here.
                let next = (i + 1..=bytes.len())
                    .find(|&end| text.is_char_boundary(end))
                    .unwrap_or(bytes.len());
                out.push_str(&text[i..next]);
                i = next;
            }
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target<'a>(scheme: &'a str, authority: &'a str, path_and_query: &'a str) -> Target<'a> {
        Target {
            scheme,
            authority,
            path_and_query,
        }
    }

    fn url(scheme: &str, authority: &str, path_and_query: &str) -> String {
        normalize_url(target(scheme, authority, path_and_query)).unwrap()
    }

    fn key(method: Method, path_and_query: &str, extra: &[(&[u8], &[u8])]) -> CacheKey {
        primary_key(
            &method,
            target("https", "api.example", path_and_query),
            extra,
        )
        .unwrap()
    }

    #[test]
    fn scheme_and_host_are_lower_cased() {
        assert_eq!(
            url("HTTPS", "API.Example.COM", "/a"),
            "https://api.example.com/a"
        );
    }

    #[test]
    fn default_port_is_removed() {
        assert_eq!(url("http", "example.com:80", "/"), "http://example.com/");
        assert_eq!(url("https", "example.com:443", "/"), "https://example.com/");
        assert_eq!(url("https", "example.com:", "/"), "https://example.com/");
    }

    #[test]
    fn other_ports_are_kept_without_leading_zeros() {
        assert_eq!(
            url("http", "example.com:0443", "/"),
            "http://example.com:443/"
        );
        assert_eq!(
            url("https", "example.com:8443", "/"),
            "https://example.com:8443/"
        );
    }

    #[test]
    fn ipv6_literal_keeps_its_colons() {
        assert_eq!(url("http", "[::1]:8080", "/"), "http://[::1]:8080/");
        assert_eq!(url("http", "[::1]", "/"), "http://[::1]/");
    }

    #[test]
    fn invalid_authorities_are_rejected() {
        assert!(matches!(
            normalize_url(target("http", "", "/")),
            Err(KeyError::MissingHost(_))
        ));
        assert!(matches!(
            normalize_url(target("http", "h:99999", "/")),
            Err(KeyError::InvalidPort(_))
        ));
        assert!(matches!(
            normalize_url(target("http", "h:8x", "/")),
            Err(KeyError::InvalidPort(_))
        ));
        assert!(matches!(
            normalize_url(target("http", "u@h", "/")),
            Err(KeyError::UserInfo(_))
        ));
        assert!(matches!(
            normalize_url(target("1x", "h", "/")),
            Err(KeyError::InvalidScheme(_))
        ));
    }

    #[test]
    fn empty_path_is_slash() {
        assert_eq!(url("http", "h", ""), "http://h/");
        assert_eq!(url("http", "h", "?a=1"), "http://h/?a=1");
    }

    #[test]
    fn percent_hex_is_upper_cased() {
        assert_eq!(url("http", "h", "/a%2fb%c3%a9"), "http://h/a%2Fb%C3%A9");
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded() {
        assert_eq!(url("http", "h", "/%41%7e%2D"), "http://h/A~-");
    }

    #[test]
    fn encoded_reserved_characters_stay_encoded() {
        assert_ne!(url("http", "h", "/a%2Fb"), url("http", "h", "/a/b"));
    }

    #[test]
    fn malformed_percent_sequences_are_kept() {
        assert_eq!(url("http", "h", "/%zz%4"), "http://h/%zz%4");
    }

    #[test]
    fn dot_segments_are_kept() {
        assert_eq!(url("http", "h", "/a/../b"), "http://h/a/../b");
    }

    #[test]
    fn query_parameters_are_sorted_by_name() {
        assert_eq!(url("http", "h", "/p?b=2&a=1&c"), "http://h/p?a=1&b=2&c");
    }

    #[test]
    fn repeated_query_names_keep_their_order() {
        assert_eq!(url("http", "h", "/p?z=0&a=2&a=1"), "http://h/p?a=2&a=1&z=0");
        assert_ne!(
            url("http", "h", "/p?a=1&a=2"),
            url("http", "h", "/p?a=2&a=1")
        );
    }

    #[test]
    fn empty_query_is_no_query() {
        assert_eq!(url("http", "h", "/p?"), "http://h/p");
    }

    #[test]
    fn plus_and_encoded_space_stay_distinct() {
        assert_ne!(url("http", "h", "/p?q=a+b"), url("http", "h", "/p?q=a%20b"));
    }

    #[test]
    fn get_and_head_share_a_key() {
        assert_eq!(key(Method::GET, "/a", &[]), key(Method::HEAD, "/a", &[]));
    }

    #[test]
    fn other_methods_have_their_own_key() {
        assert_ne!(
            key(Method::GET, "/a", &[]).digest,
            key(Method::POST, "/a", &[]).digest
        );
    }

    #[test]
    fn equivalent_uris_share_a_key() {
        let a = primary_key(
            &Method::GET,
            target("HTTPS", "Api.Example:443", "/%7Ex?b=1&a=2"),
            &[],
        );
        let b = primary_key(
            &Method::GET,
            target("https", "api.example", "/~x?a=2&b=1"),
            &[],
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }

    #[test]
    fn extra_parts_change_the_digest_but_not_the_url() {
        let plain = key(Method::GET, "/a", &[]);
        let tenant = key(Method::GET, "/a", &[(b"header:x-tenant", b"acme")]);
        assert_ne!(plain.digest, tenant.digest);
        assert_eq!(plain.url, tenant.url);
    }

    #[test]
    fn extra_part_boundaries_cannot_be_shifted() {
        let a = key(Method::GET, "/a", &[(b"ab", b"c")]);
        let b = key(Method::GET, "/a", &[(b"a", b"bc")]);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn secret_parts_are_not_in_the_url() {
        let k = key(Method::GET, "/a", &[(b"cookie:session", b"s3cret")]);
        assert!(!k.url.contains("s3cret"));
    }

    proptest! {
        #[test]
        fn normalisation_never_panics_and_is_idempotent(
            authority in "[a-zA-Z0-9.:\\[\\]@]{0,20}",
            path in "/\\PC{0,40}",
        ) {
            if let Ok(once) = normalize_url(target("http", &authority, &path)) {
                let rest = &once["http://".len()..];
                let slash = rest.find('/').unwrap_or(rest.len());
                let twice = normalize_url(target("http", &rest[..slash], &rest[slash..]));
                prop_assert_eq!(twice.as_deref(), Ok(once.as_str()));
            }
        }
    }
}
