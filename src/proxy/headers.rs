//! Header rules of the proxy: request ids, the trusted client address, host normalization,
//! hop-by-hop stripping both ways, and the X-Forwarded-* and Via fields added upstream.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::Request;

use crate::config::model::ProxyAction;
use crate::message::{VIA_VALUE, X_REQUEST_ID};
use crate::router;
use crate::upstream::added::Added;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The two lower-case hex digits of each byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 0xf]];
        i += 1;
    }
    t
};

/// Propagates a well-formed client `X-Request-Id`, or makes a new random one.
pub(super) fn request_id(headers: &HeaderMap, present: &Present) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID).filter(|_| present.request_id) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    for (pair, byte) in buf
        .chunks_exact_mut(2)
        .zip(fastrand::u128(..).to_le_bytes())
    {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    // Owned in place by the `Bytes`: one allocation, and clones (the upstream request's copy,
    // the log's) only count references.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or(HeaderValue::from_static("0"))
}

pub(super) fn is_trusted(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    nets.iter().any(|n| n.contains(&ip))
}

pub(super) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind trusted proxies: the right-most X-Forwarded-For entry that is not a
/// trusted proxy itself (entries left of it could be forged by the client).
pub(super) fn forwarded_client(trusted: &[ipnet::IpNet], headers: &HeaderMap) -> Option<IpAddr> {
    let mut last = None;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let text = value.to_str().ok()?;
        for entry in text.rsplit(',') {
            let ip: IpAddr = entry.trim().parse().ok()?;
            if !is_trusted(trusted, ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
    }
    last
}

/// Host of the request: the URI authority (HTTP/2, absolute-form) or the Host header.
pub(super) fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

/// Lower-case host without port or trailing dot, for routing.
pub fn normalize_host(h: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if h.starts_with('[') {
        h.find(']').map_or(h, |i| &h[..=i])
    } else {
        // A byte scan: `rsplit_once` with a char pattern costs several times more here.
        h.bytes().rposition(|b| b == b':').map_or(h, |i| &h[..i])
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

pub(super) fn wants_upgrade(headers: &HeaderMap, present: &Present) -> bool {
    present.hop[UPGRADE_INDEX]
        && headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_has(headers, "upgrade")
}

pub(super) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

pub(super) fn rewrite(
    action: &ProxyAction,
    matched: &router::Matched<'_>,
    uri: &Uri,
) -> PathAndQuery {
    let path = router::rewrite_path(action, matched, uri.path());
    match (path, uri.path_and_query()) {
        (std::borrow::Cow::Borrowed(_), Some(pq)) => pq.clone(),
        (p, _) => {
            let mut s = String::with_capacity(p.len() + uri.query().map_or(0, |q| q.len() + 1));
            s.push_str(if p.is_empty() { "/" } else { &p });
            if let Some(q) = uri.query() {
                s.push('?');
                s.push_str(q);
            }
            PathAndQuery::try_from(s).unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
    }
}

pub(super) fn authority_value(a: &http::uri::Authority) -> HeaderValue {
    HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("localhost"))
}

/// The absolute URI of an HTTP/2 upstream request (`:scheme`, `:authority`, `:path`):
/// `https` when the group speaks TLS.
pub(super) fn upstream_uri(tls: bool, authority: http::uri::Authority, path: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).unwrap_or_default()
}

pub(super) struct UpstreamHeaders<'a> {
    pub trusted: bool,
    pub peer_text: &'a HeaderValue,
    pub tls: bool,
    /// The host the client asked for (URI authority or `Host`), for X-Forwarded-Host.
    pub client_host: Option<&'a HeaderValue>,
    /// A `Host` to send instead of the map's: a rewritten host, or the client's host when it
    /// came as the URI's authority (HTTP/2, absolute-form). `None` keeps the map's `Host`.
    pub set_host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub upgrade: bool,
    pub grpc_trailers: bool,
}

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];
const TE_INDEX: usize = 3;
const UPGRADE_INDEX: usize = 5;

/// Whether `name` describes one hop only (RFC 9110 §7.6.1).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Which of the fields the proxy rewrites a message carries, found in one pass over the
/// names (no hashing), so that absent ones cost no lookup.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Present {
    hop: [bool; 8],
    any_hop: bool,
    via: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    host: bool,
    request_id: bool,
    /// The caller sent `traceparent` / `tracestate` (replaced or dropped when tracing).
    pub traceparent: bool,
    pub tracestate: bool,
}

impl Present {
    pub(super) fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            let s = name.as_str();
            // The lengths of the names looked for (2 to 4, 7, 10 to 12, 15 to 19) rule out most
            // fields before any comparison.
            match s.len() {
                3 => p.via |= *name == header::VIA,
                4 => p.host |= *name == header::HOST,
                11 => p.traceparent |= s == "traceparent",
                12 => p.request_id |= *name == X_REQUEST_ID,
                15 => p.forwarded_for |= *name == X_FORWARDED_FOR,
                2 | 7 | 10 | 16..=19 => {
                    if let Some(i) = HOP_BY_HOP.iter().position(|h| h.as_str() == s) {
                        p.hop[i] = true;
                        p.any_hop = true;
                    }
                    p.forwarded_host |= *name == X_FORWARDED_HOST;
                    p.forwarded_proto |= *name == X_FORWARDED_PROTO;
                    p.tracestate |= s == "tracestate";
                }
                _ => {}
            }
        }
        p
    }
}

/// Headers a `Connection` field may not remove: framing and routing stay ours.
pub(super) fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

/// Removes the hop-by-hop headers `present` found, and those `Connection` nominates.
fn strip_present(headers: &mut HeaderMap, present: &Present) {
    // Most messages carry none, or only the `Connection: keep-alive` already left out of
    // upstream response maps.
    if !present.any_hop {
        return;
    }
    if present.hop[0] {
        remove_nominated(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present.hop).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Removes the headers a `Connection` field names (RFC 9110 §7.6.1).
pub(super) fn remove_nominated(headers: &mut HeaderMap) {
    let nominated: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !protected(t) && !is_connection_option(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
}

/// `close` and `keep-alive` are connection options, not header names worth a lookup
/// (`Keep-Alive` itself is removed as hop-by-hop anyway).
pub(super) fn is_connection_option(t: &str) -> bool {
    t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive")
}

/// Applies the proxy's header rules to an upstream request: hop-by-hop fields go, and the
/// gateway's own fields (X-Forwarded-*, Via, X-Request-Id, a new Host) go to `added`, with
/// the client's copies of them taken out of the map.
/// `present` is what [`Present::scan`] found in `headers`.
pub(super) fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    present: &Present,
    h: UpstreamHeaders<'_>,
    added: &mut Added,
) {
    debug_assert!(
        Present::scan(headers) == *present,
        "the map changed since it was scanned"
    );
    let te_trailers = h.grpc_trailers
        && present.hop[TE_INDEX]
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_present(headers, present);
    if h.upgrade {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let previous = present
        .forwarded_for
        .then(|| headers.remove(&X_FORWARDED_FOR))
        .flatten()
        .filter(|_| h.trusted);
    let xff = match previous {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + h.peer_text.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(h.peer_text.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(h.peer_text.clone()),
    };
    if let Some(v) = xff {
        added.push(X_FORWARDED_FOR, v);
    }
    if !h.trusted || !present.forwarded_proto {
        if present.forwarded_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        let proto = if h.tls { "https" } else { "http" };
        added.push(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !h.trusted || !present.forwarded_host {
        if present.forwarded_host {
            headers.remove(&X_FORWARDED_HOST);
        }
        if let Some(v) = h.client_host {
            added.push(X_FORWARDED_HOST, v.clone());
        }
    }
    let via = present.via.then(|| headers.remove(header::VIA)).flatten();
    added.push(header::VIA, via_value(via.as_ref()));
    if let Some(host) = h.set_host {
        if present.host {
            headers.remove(header::HOST);
        }
        added.set_host(host);
    }
    if present.request_id {
        headers.remove(&X_REQUEST_ID);
    }
    added.push(X_REQUEST_ID, h.request_id.clone());
}

/// `Via` with the gateway after the hops already listed in `previous`.
fn via_value(previous: Option<&HeaderValue>) -> HeaderValue {
    match previous {
        Some(prev) => {
            let mut b = Vec::with_capacity(prev.len() + 2 + VIA_VALUE.len());
            b.extend_from_slice(prev.as_bytes());
            b.extend_from_slice(b", ");
            b.extend_from_slice(VIA_VALUE.as_bytes());
            HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static(VIA_VALUE))
        }
        None => HeaderValue::from_static(VIA_VALUE),
    }
}

/// Adds the gateway to `Via`, after the hops already listed when `listed`.
fn append_via(headers: &mut HeaderMap, listed: bool) {
    let v = via_value(listed.then(|| headers.get(header::VIA)).flatten());
    headers.insert(header::VIA, v);
}

/// Applies the proxy's header rules to an upstream response. With `beside`, the gateway's
/// own fields travel beside the map (see [`crate::body::ProxyBody::set_gateway_fields`]):
/// the upstream's `X-Request-Id` is removed for the gateway's, and `Via` is left out of the
/// map unless the upstream listed hops of its own (they are merged there). Returns whether
/// the gateway's `Via` is still to be written.
pub(super) fn prepare_downstream_headers(
    headers: &mut HeaderMap,
    switching: bool,
    beside: bool,
) -> bool {
    let present = Present::scan(headers);
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_present(headers, &present);
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if beside && present.request_id {
        headers.remove(&X_REQUEST_ID);
    }
    if beside && !present.via {
        return true;
    }
    append_via(headers, present.via);
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lowercased_without_port_or_dot() {
        assert_eq!(normalize_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn connection_nominated_headers_are_stripped_but_not_framing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, content-length, keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        let present = Present::scan(&h);
        strip_present(&mut h, &present);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(KEEP_ALIVE).is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "3");
    }

    #[test]
    fn forwarded_client_skips_trusted_hops_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
        );
        assert_eq!(
            forwarded_client(&trusted, &h),
            Some("2.2.2.2".parse().unwrap())
        );
    }

    #[test]
    fn generated_request_ids_are_32_hex_chars() {
        let map = HeaderMap::new();
        let id = request_id(&map, &Present::scan(&map));
        assert_eq!(id.len(), 32);
        assert!(id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        let other = request_id(&map, &Present::scan(&map));
        assert_ne!(id, other, "each request gets its own");
    }
}
