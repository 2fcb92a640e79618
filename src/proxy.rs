//! One request through the gateway: `request` (request id, client IP, host) → ROUTE →
//! SELECT → `upstream_request` (rewrite, hop-by-hop rules, X-Forwarded-*) → FORWARD →
//! `response_headers` → streamed body → `log` (exactly once, from the response body).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{ProxyBody, RequestBody, RequestBodyState};
use crate::config::model::{Action, ProxyAction, UpstreamProtocol};
use crate::error::ProxyError;
use crate::observe::access_log::{AccessLog, Record};
use crate::observe::metrics::RouteMetrics;
use crate::router::{self, RequestView};
use crate::snapshot::Snapshot;
use crate::upstream::balancer::PickInput;
use crate::upstream::pool;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const VIA_VALUE: &str = "1.1 ferrogate";

/// What a connection knows that every request on it shares.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address as X-Forwarded-For text, formatted once per connection.
    pub peer_text: HeaderValue,
    pub tls: bool,
    pub listener: usize,
}

/// X-Forwarded-For text of a peer address (IPv4-mapped IPv6 shown as IPv4).
pub fn peer_text(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&canonical_ip(peer).to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// Handles one downstream request; never fails (errors become problem+json responses).
pub async fn handle(
    snap: Arc<Snapshot>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let request_id = request_id(req.headers());
    let listener = &snap.listeners[conn.listener];
    let trusted = is_trusted(&listener.trusted_proxies, conn.peer.ip());
    let client_ip = if trusted {
        forwarded_client(&listener.trusted_proxies, req.headers()).unwrap_or(conn.peer.ip())
    } else {
        conn.peer.ip()
    };
    let host_value = request_host(&req);
    let host_text = host_value.as_ref().and_then(|h| h.to_str().ok());
    let host = normalize_host(host_text.unwrap_or(""));
    let mut done = Completion {
        start,
        method: req.method().clone(),
        status: 0,
        route_metrics: None,
        log: snap.access_log.as_ref().map(|log| {
            Box::new(LogData {
                log: log.clone(),
                time: SystemTime::now(),
                request_id: request_id.clone(),
                client_ip,
                host: host.to_string(),
                path: req.uri().path().to_owned(),
                route: None,
                upstream: None,
                upstream_duration: None,
                req_body: None,
            })
        }),
    };

    let view = RequestView {
        host: &host,
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let Some(matched) = snap.router.find(&view) else {
        done.route_metrics = snap.metrics_on.then(|| snap.unmatched.clone());
        let err = ProxyError::NoRoute {
            method: req.method().clone(),
            host: host.to_string(),
            path: req.uri().path().to_owned(),
        };
        return respond_error(&err, &request_id, done);
    };
    let route = &snap.routes[matched.route];
    done.route_metrics = snap.metrics_on.then(|| route.metrics.clone());
    if let Some(log) = &mut done.log {
        log.route = Some(route.name.clone());
    }
    let action = match &route.action {
        Action::Redirect(r) => {
            let scheme = if conn.tls { "https" } else { "http" };
            let location = router::redirect_location(
                r,
                scheme,
                host_text.unwrap_or(""),
                req.uri().path(),
                req.uri().query(),
            );
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = r.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut().insert(X_REQUEST_ID, request_id);
            return finish_response(resp, done);
        }
        Action::Proxy(p) => p,
    };
    let Some(group) = route.upstream.map(|i| &snap.upstreams[i]) else {
        return respond_error(
            &ProxyError::Internal("route without upstream"),
            &request_id,
            done,
        );
    };

    // SELECT
    let pick = PickInput {
        client_ip,
        headers: req.headers(),
        path: req.uri().path(),
    };
    let Some(ti) = group.balancer.pick(&pick, &|_| false) else {
        return respond_error(
            &ProxyError::NoHealthyTarget(group.name.to_string()),
            &request_id,
            done,
        );
    };
    let target = &group.targets[ti];

    // upstream_request
    let upgrade =
        wants_upgrade(req.headers()) && route.websocket && req.version() == Version::HTTP_11;
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let path = rewrite(action, &matched, req.uri());
    let (mut parts, body) = req.into_parts();
    let body_state =
        (!http_body::Body::is_end_stream(&body)).then(Arc::<RequestBodyState>::default);
    if let Some(log) = &mut done.log {
        log.upstream = Some(target.label.clone());
        log.req_body = body_state.clone();
    }
    prepare_upstream_headers(
        &mut parts.headers,
        UpstreamHeaders {
            trusted,
            peer_text: &conn.peer_text,
            tls: conn.tls,
            // HTTP/1.0 clients may send no Host; upstreams still need one.
            host: Some(
                action
                    .host_rewrite
                    .clone()
                    .or(host_value.clone())
                    .unwrap_or_else(|| authority_value(&target.authority)),
            ),
            request_id: &request_id,
            upgrade,
            grpc_trailers: group.client.protocol == UpstreamProtocol::H2c,
        },
    );
    let uri = match group.client.protocol {
        // HTTP/1.1 sends origin-form; HTTP/2 needs scheme and authority for its pseudo-headers.
        UpstreamProtocol::Http1 => Uri::from(path),
        UpstreamProtocol::H2c => upstream_uri(target.authority.clone(), path),
    };
    // Reuse the downstream request's parts: method and headers move, nothing is rebuilt.
    parts.uri = uri;
    parts.version = match group.client.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    parts.extensions = http::Extensions::new();
    let up_req = Request::from_parts(parts, RequestBody::new(body, body_state.clone()));

    // FORWARD
    let inflight = group.balancer.start(ti);
    let up_start = Instant::now();
    let result = tokio::time::timeout(
        group.request_timeout,
        pool::send(&group.client, target.address, up_req),
    )
    .await;
    let up_elapsed = up_start.elapsed();
    if let Some(log) = &mut done.log {
        log.upstream_duration = Some(up_elapsed);
    }
    let (mut resp, lease) = match result {
        Ok(Ok((resp, lease))) => {
            inflight.finish(up_elapsed);
            if snap.metrics_on {
                target.metrics.observe(resp.status().as_u16(), up_elapsed);
            }
            (resp, lease)
        }
        Ok(Err(e)) => {
            drop(inflight);
            if snap.metrics_on {
                target.metrics.observe(0, up_elapsed);
            }
            let err = if body_state
                .as_ref()
                .is_some_and(|s| s.failed.load(std::sync::atomic::Ordering::Relaxed))
            {
                ProxyError::DownstreamBody
            } else if e.is_connect() {
                ProxyError::UpstreamConnect {
                    target: target.label.to_string(),
                    source: e,
                }
            } else {
                ProxyError::UpstreamFailed {
                    target: target.label.to_string(),
                    source: e,
                }
            };
            tracing::debug!(error = %err, "upstream request failed");
            return respond_error(&err, &request_id, done);
        }
        Err(_) => {
            drop(inflight);
            if snap.metrics_on {
                target.metrics.observe(0, up_elapsed);
            }
            let err = ProxyError::UpstreamTimeout {
                target: target.label.to_string(),
                timeout_ms: group.request_timeout.as_millis(),
            };
            return respond_error(&err, &request_id, done);
        }
    };

    // response_headers
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match downstream_upgrade {
            Some(down) => {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(down, up));
            }
            None => {
                let err = ProxyError::UpstreamProtocol("upstream switched protocols unasked");
                return respond_error(&err, &request_id, done);
            }
        }
    }
    let (mut parts, body) = resp.into_parts();
    prepare_downstream_headers(&mut parts.headers, switching);
    parts.headers.insert(X_REQUEST_ID, request_id);
    // After a protocol switch the upstream connection belongs to the tunnel.
    let lease = if switching { None } else { lease };
    let mut resp = Response::from_parts(parts, ProxyBody::relay(body, lease));
    *resp.version_mut() = Version::HTTP_11;
    finish_response(resp, done)
}

/// Relays bytes both ways after a `101 Switching Protocols`.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (Ok(down), Ok(up)) = (down.await, up.await) else {
        return;
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
}

/// The `log` phase of one request: metrics and the access-log line, run once when the
/// response body ends or is dropped.
pub struct Completion {
    start: Instant,
    method: Method,
    status: u16,
    route_metrics: Option<RouteMetrics>,
    log: Option<Box<LogData>>,
}

struct LogData {
    log: Arc<AccessLog>,
    time: SystemTime,
    request_id: HeaderValue,
    client_ip: IpAddr,
    host: String,
    path: String,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    upstream_duration: Option<Duration>,
    req_body: Option<Arc<RequestBodyState>>,
}

impl Completion {
    pub fn finish(self, bytes_out: u64) {
        let duration = self.start.elapsed();
        if let Some(m) = &self.route_metrics {
            m.observe(&self.method, self.status, duration);
        }
        if let Some(l) = self.log {
            let bytes_in = l
                .req_body
                .as_ref()
                .map_or(0, |b| b.bytes.load(std::sync::atomic::Ordering::Relaxed));
            l.log.write(&Record {
                time: l.time,
                request_id: l.request_id.to_str().unwrap_or(""),
                client_ip: l.client_ip,
                method: self.method.as_str(),
                host: &l.host,
                path: &l.path,
                status: self.status,
                bytes_in,
                bytes_out,
                duration,
                route: l.route.as_deref(),
                upstream_target: l.upstream.as_deref(),
                upstream_duration: l.upstream_duration,
            });
        }
    }
}

fn finish_response(mut resp: Response<ProxyBody>, mut done: Completion) -> Response<ProxyBody> {
    done.status = resp.status().as_u16();
    resp.body_mut().set_completion(done);
    resp
}

fn respond_error(
    err: &ProxyError,
    request_id: &HeaderValue,
    done: Completion,
) -> Response<ProxyBody> {
    finish_response(err.to_response(request_id), done)
}

/// Propagates a well-formed client `X-Request-Id`, or makes a new random one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

fn is_trusted(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    nets.iter().any(|n| n.contains(&ip))
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind trusted proxies: the right-most X-Forwarded-For entry that is not a
/// trusted proxy itself (entries left of it could be forged by the client).
fn forwarded_client(trusted: &[ipnet::IpNet], headers: &HeaderMap) -> Option<IpAddr> {
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
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
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
        h.rsplit_once(':').map_or(h, |(host, _)| host)
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn rewrite(action: &ProxyAction, matched: &router::Matched<'_>, uri: &Uri) -> PathAndQuery {
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

fn authority_value(a: &http::uri::Authority) -> HeaderValue {
    HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("localhost"))
}

fn upstream_uri(authority: http::uri::Authority, path: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).unwrap_or_default()
}

struct UpstreamHeaders<'a> {
    trusted: bool,
    peer_text: &'a HeaderValue,
    tls: bool,
    host: Option<HeaderValue>,
    request_id: &'a HeaderValue,
    upgrade: bool,
    grpc_trailers: bool,
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

/// Headers a `Connection` field may not remove: framing and routing stay ours.
fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds which of these are present; most messages
    // carry at most `Connection: keep-alive`.
    let mut present = [false; 8];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        remove_nominated(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Removes the headers a `Connection` field names (RFC 9110 §7.6.1).
fn remove_nominated(headers: &mut HeaderMap) {
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
fn is_connection_option(t: &str) -> bool {
    t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive")
}

fn prepare_upstream_headers(headers: &mut HeaderMap, h: UpstreamHeaders<'_>) {
    let te_trailers = h.grpc_trailers
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers);
    if h.upgrade {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let xff = match headers.get(&X_FORWARDED_FOR).filter(|_| h.trusted) {
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
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !h.trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if h.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !h.trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match headers
            .get(header::HOST)
            .cloned()
            .or_else(|| h.host.clone())
        {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    append_via(headers);
    if let Some(host) = h.host {
        headers.insert(header::HOST, host);
    }
    headers.insert(X_REQUEST_ID, h.request_id.clone());
}

fn append_via(headers: &mut HeaderMap) {
    let v = match headers.get(header::VIA) {
        Some(prev) => {
            let mut b = Vec::with_capacity(prev.len() + 2 + VIA_VALUE.len());
            b.extend_from_slice(prev.as_bytes());
            b.extend_from_slice(b", ");
            b.extend_from_slice(VIA_VALUE.as_bytes());
            HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static(VIA_VALUE))
        }
        None => HeaderValue::from_static(VIA_VALUE),
    };
    headers.insert(header::VIA, v);
}

fn prepare_downstream_headers(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    append_via(headers);
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
        strip_hop_by_hop(&mut h);
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
        let id = request_id(&HeaderMap::new());
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
