//! One request through the gateway: `request` (request id, client IP, host) → ROUTE →
//! SELECT → `upstream_request` (rewrite, hop-by-hop rules, X-Forwarded-*) → FORWARD →
//! `response_headers` → streamed body → `log` (exactly once, from the response body).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Method, Request, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;

mod access;
mod cache;
mod forward;
mod headers;
mod mirror;

use crate::auth::cors::Preflight;
use crate::body::{BodyTimer, ProxyBody, RequestBody, RequestBodyState};
use crate::config::model::{Action, UpstreamProtocol};
use crate::error::ProxyError;
use crate::observe::access_log::{AccessLog, Record};
use crate::observe::metrics::RouteMetrics;
use crate::ratelimit::key::KeyContext;
use crate::ratelimit::{self, Admission, Hold};
use crate::router::{self, RequestView};
use crate::serve::h1::upgrade::{self as h1_upgrade, OnUpgrade};
use crate::serve::DownstreamBody;
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::added::Added;
use crate::upstream::limit::{Refusal, Slot};
use crate::upstream::stream::UpstreamStream;

use headers::*;
pub use headers::{VIA_VALUE, X_REQUEST_ID};

/// What a connection knows that every request on it shares.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address as X-Forwarded-For text, formatted once per connection.
    pub peer_text: HeaderValue,
    pub tls: bool,
    pub listener: usize,
    /// Names of the client certificate the TLS handshake verified (`tls.client_auth`).
    pub client_cert: Option<Arc<crate::tls::ClientCert>>,
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
    req: &mut Request<DownstreamBody>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    // One pass over the field names tells which of the proxy's fields are there, so absent
    // ones cost no lookup; nothing changes the map before the upstream request is made.
    let present = Present::scan(req.headers());
    let request_id = request_id(req.headers(), &present);
    let listener = &snap.listeners[conn.listener];
    let trusted = is_trusted(&listener.trusted_proxies, conn.peer.ip());
    let client_ip = if trusted {
        forwarded_client(&listener.trusted_proxies, req.headers()).unwrap_or(conn.peer.ip())
    } else {
        conn.peer.ip()
    };
    let host_value = request_host(req);
    let host_text = host_value.as_ref().and_then(|h| h.to_str().ok());
    let host = normalize_host(host_text.unwrap_or(""));
    let mut done = Completion {
        start,
        method: req.method().clone(),
        status: 0,
        route_metrics: None,
        slot: None,
        holds: Vec::new(),
        cors: None,
        log: snap.access_log.as_ref().map(|log| {
            Box::new(LogData {
                log: log.clone(),
                time: SystemTime::now(),
                request_id: request_id.clone(),
                client_ip,
                host: host.to_string(),
                path: req.uri().path().to_owned(),
                route: None,
                consumer: None,
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

    // access: CORS, IP rules, authentication and authorization, parameters
    let mut authenticated = None;
    if let Some(gate) = &route.gate {
        match gate.preflight(req.headers(), req.method()) {
            Preflight::NotCors => {}
            Preflight::Allowed(fields) => {
                return finish_response(access::preflight_answer(fields, request_id), done);
            }
            Preflight::Denied(why) => {
                let denied = crate::auth::gate::Denied::Forbidden(why.to_string());
                return finish_response(access::refusal(denied, &request_id), done);
            }
        }
        done.cors = gate.cors_fields(req.headers()).map(Box::new);
        let checked = async {
            gate.check_ip(client_ip)?;
            let found = gate
                .authenticate(
                    req.headers(),
                    req.uri().query(),
                    conn.client_cert.as_deref(),
                )
                .await?;
            gate.check_params(req.headers(), req.uri().query())?;
            Ok(found)
        };
        match checked.await {
            Ok(found) => authenticated = found,
            Err(denied) => return finish_response(access::refusal(denied, &request_id), done),
        }
        if let (Some(log), Some(name)) = (
            &mut done.log,
            authenticated.as_ref().and_then(|a| a.identity.name()),
        ) {
            log.consumer = Some(Arc::from(name));
        }
    }

    // access: limits that need no upstream
    let max_body = route.max_body_bytes.or(listener.limits.max_body_bytes);
    if let Some(max) = max_body {
        if declared_length(req.headers()).is_some_and(|n| n > max) {
            return respond_error(&ProxyError::PayloadTooLarge, &request_id, done);
        }
    }
    // HTTP/1.1 heads are counted by the strict parser; HTTP/2 ones here.
    if req.headers().len() > listener.limits.max_headers {
        return respond_error(&ProxyError::TooManyHeaders, &request_id, done);
    }

    // access: rate limits
    let mut passed = None;
    if !route.rate_limits.is_empty() {
        let ctx = KeyContext {
            client_ip,
            route: &route.name,
            path: req.uri().path(),
            headers: req.headers(),
            consumer: authenticated.as_ref().and_then(|a| a.identity.name()),
            consumer_header: snap.config.rate_limiting.consumer_header.as_ref(),
        };
        match ratelimit::admit(&route.rate_limits, &ctx).await {
            Admission::Pass(mut p) => {
                done.holds = std::mem::take(&mut p.holds);
                passed = Some(p);
            }
            Admission::Limited(p) => {
                let name = p.refused_by().unwrap_or_default();
                let mut resp = ProxyError::RateLimited(name).to_response(&request_id);
                p.write_headers(resp.headers_mut());
                return finish_response(resp, done);
            }
            Admission::Unavailable(name) => {
                let err = ProxyError::RateLimitUnavailable(name);
                return respond_error(&err, &request_id, done);
            }
        }
    }

    // access: body validation, last, so refused callers never make the gateway read a body
    let mut validated = None;
    if let Some(schemas) = route.gate.as_ref().and_then(|g| g.body_schemas()) {
        // Methods that carry a body are validated even when it is empty (an empty body is
        // not valid JSON); others only when they send one.
        let carries_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
        if carries_body || !http_body::Body::is_end_stream(req.body()) {
            let limit = usize::try_from(max_body.unwrap_or(u64::MAX))
                .unwrap_or(usize::MAX)
                .min(schemas.max_body());
            let mut body = std::mem::replace(req.body_mut(), DownstreamBody::Empty);
            let read =
                access::validated_body(schemas, req.headers(), &mut body, limit, &request_id).await;
            *req.body_mut() = body;
            match read {
                Ok(bytes) => validated = Some(bytes),
                Err(resp) => return finish_response(resp, done),
            }
        }
    }

    // cache: answer from the store, or note what to do with the upstream's answer
    let upgrade = wants_upgrade(req.headers(), &present)
        && route.websocket
        && req.version() == Version::HTTP_11;
    let mut pending = None;
    if let (Some(svc), Some(rules), false) = (&snap.cache, &route.cache, upgrade) {
        let lookup = cache::CacheRequest {
            method: req.method(),
            headers: req.headers(),
            scheme: if conn.tls { "https" } else { "http" },
            authority: host_text.unwrap_or(""),
            path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            consumer: authenticated.as_ref().and_then(|a| a.identity.name()),
        };
        match cache::plan(svc, rules, &lookup).await {
            cache::Plan::Answer(mut resp, refresh) => {
                if let Some(refresh) = refresh {
                    let head = refresh_head(conn, trusted, action, &matched, req, &request_id);
                    spawn_refresh(snap.clone(), matched.route, client_ip, head, refresh);
                }
                resp.headers_mut().insert(X_REQUEST_ID, request_id);
                if let Some(p) = &passed {
                    p.write_headers(resp.headers_mut());
                }
                return finish_response(resp, done);
            }
            cache::Plan::Forward(p) => pending = Some(p),
        }
    }

    // SELECT the group (split, forced by header), then wait for a slot in it
    let Some(group) = choose_group(&snap, route, req.headers()).map(|i| &snap.upstreams[i]) else {
        return respond_error(
            &ProxyError::Internal("route without upstream"),
            &request_id,
            done,
        );
    };
    if let Some(limiter) = &group.limiter {
        match limiter.acquire().await {
            Ok(slot) => done.slot = Some(slot),
            Err(why) => {
                snap.resilience
                    .queue_refused(&group.name, why == Refusal::QueueTimeout);
                let err = ProxyError::UpstreamBusy(group.name.to_string());
                return respond_error(&err, &request_id, done);
            }
        }
    }

    // upstream_request
    let downstream_upgrade = if upgrade { h1_upgrade::on(req) } else { None };
    let mut path = rewrite(action, &matched, req.uri());
    // The upstream request takes the downstream one's method, headers and body: moved out
    // of the lent request, nothing is rebuilt.
    let body = std::mem::replace(req.body_mut(), DownstreamBody::Empty);
    let body_state = (validated.as_ref().is_some_and(|b| !b.is_empty())
        || !http_body::Body::is_end_stream(&body))
    .then(Arc::<RequestBodyState>::default);
    if let Some(log) = &mut done.log {
        log.req_body = body_state.clone();
    }
    // HTTP/1.0 clients may send no Host: each attempt then names its target.
    let host_from_target = action.host_rewrite.is_none() && host_value.is_none();
    let mut added = Added::default();
    let set_host = host_to_set(action, req.uri(), host_value.as_ref());
    prepare_upstream_headers(
        req.headers_mut(),
        &present,
        UpstreamHeaders {
            trusted,
            peer_text: &conn.peer_text,
            tls: conn.tls,
            client_host: host_value.as_ref(),
            set_host,
            request_id: &request_id,
            upgrade,
            grpc_trailers: group.client.protocol == UpstreamProtocol::H2,
        },
        &mut added,
    );
    if let Some(p) = &pending {
        p.prepare(req.headers_mut());
    }
    let hidden_param = access::identify_upstream(
        req.headers_mut(),
        &route.reserved_headers,
        snap.auth.consumer_header.as_ref(),
        authenticated.as_ref(),
    );
    if let Some(param) = hidden_param {
        let stripped = access::strip_query_param(path.as_str(), &param);
        if let Ok(p) = http::uri::PathAndQuery::try_from(stripped) {
            path = p;
        }
    }
    let downstream_uri = std::mem::replace(req.uri_mut(), Uri::from(path));
    let body = match (validated, &body_state) {
        (Some(bytes), state) => {
            if let Some(state) = state {
                state
                    .bytes
                    .store(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            RequestBody::buffered(bytes, state.clone())
        }
        (None, Some(state)) => RequestBody::new(body, Some(state.clone()))
            .with_limits(max_body, listener.limits.body_timeout),
        (None, None) => RequestBody::new(body, None),
    };
    // FORWARD
    let deadline = route
        .timeouts
        .total
        .map(|t| tokio::time::Instant::now() + t);
    let exchange = forward::Exchange {
        snap: &snap,
        route,
        group,
        client_ip,
        path: downstream_uri.path(),
        host_from_target,
        body_state: body_state.as_deref(),
        deadline,
        added: &added,
    };
    let up_start = done.log.is_some().then(Instant::now);
    // The upstream request lives in this block and ends with it (its body above all),
    // dropped where it lies.
    let result = {
        let mut up_req = Request::new(body);
        *up_req.method_mut() = std::mem::take(req.method_mut());
        *up_req.uri_mut() = std::mem::take(req.uri_mut());
        *up_req.headers_mut() = std::mem::take(req.headers_mut());
        if let Some((shadow, share)) = route.mirror {
            if fastrand::f64() < share {
                mirror::spawn(snap.clone(), shadow, &mut up_req, &added);
            }
        }
        let result = forward::forward(&exchange, &mut up_req).await;
        crate::spare_maps::give(std::mem::take(up_req.headers_mut()));
        result
    };
    if let (Some(log), Some(start)) = (&mut done.log, up_start) {
        log.upstream_duration = Some(start.elapsed());
    }
    let answer = match result {
        Ok(a) => a,
        Err((err, target)) => {
            if let Some(log) = &mut done.log {
                log.upstream = target.map(Arc::from);
            }
            tracing::debug!(error = %err, "upstream request failed");
            let fallback = match (pending, &snap.cache, &route.cache) {
                (Some(p), Some(svc), Some(rules)) => p.failed(svc, rules, err),
                _ => Err(err),
            };
            return match fallback {
                Ok(mut resp) => {
                    resp.headers_mut().insert(X_REQUEST_ID, request_id);
                    finish_response(resp, done)
                }
                Err(err) => respond_error(&err, &request_id, done),
            };
        }
    };
    if let Some(log) = &mut done.log {
        log.upstream = Some(group.targets[answer.target].label.clone());
    }
    let mut resp = answer.response;

    // response_headers
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match downstream_upgrade {
            Some(down) => match resp.body_mut().take_upgraded() {
                Some(up) => {
                    tokio::spawn(tunnel(down, up));
                }
                None => {
                    let err = ProxyError::UpstreamProtocol("upstream switched protocols unasked");
                    return respond_error(&err, &request_id, done);
                }
            },
            None => {
                let err = ProxyError::UpstreamProtocol("upstream switched protocols unasked");
                return respond_error(&err, &request_id, done);
            }
        }
    }
    // A plain relay keeps the gateway's own fields beside the map; a response the cache
    // keeps has them in its map, as stored responses need.
    let beside = pending.is_none();
    let via_beside = prepare_downstream_headers(resp.headers_mut(), switching, beside);
    let mut resp = match (pending, &snap.cache, &route.cache) {
        (Some(p), Some(svc), Some(rules)) => p.answer(svc, rules, resp),
        _ => resp.map(ProxyBody::relay),
    };
    if beside {
        resp.body_mut().set_gateway_fields(request_id, via_beside);
    } else {
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
    }
    let headers = resp.headers_mut();
    if let Some(p) = &passed {
        p.write_headers(headers);
    }
    if let Some(pin) = answer.pin {
        headers.append(header::SET_COOKIE, pin);
    }
    resp.body_mut()
        .set_timer(BodyTimer::new(route.timeouts.idle, deadline));
    *resp.version_mut() = Version::HTTP_11;
    // In place: the response is large, and this path is every proxied request's.
    complete(&mut resp, done);
    resp
}

/// The group a proxy route sends this request to: the one a split header names, else a
/// weighted draw over the split (one entry: that group).
fn choose_group(
    snap: &Snapshot,
    route: &CompiledRoute,
    headers: &http::HeaderMap,
) -> Option<usize> {
    if let [(only, _)] = route.split.as_slice() {
        return Some(*only);
    }
    if let Some(name) = &route.split_header {
        if let Some(v) = headers.get(name) {
            if let Some(i) = route.split.iter().map(|(i, _)| *i).find(|i| {
                snap.upstreams
                    .get(*i)
                    .is_some_and(|g| g.name.as_bytes() == v.as_bytes())
            }) {
                return Some(i);
            }
        }
    }
    if route.split_total == 0 {
        return route.split.first().map(|(i, _)| *i);
    }
    let mut draw = fastrand::u32(..route.split_total);
    for (i, w) in &route.split {
        if draw < *w {
            return Some(*i);
        }
        draw -= w;
    }
    route.split.last().map(|(i, _)| *i)
}

/// The `Host` the upstream request needs set in its map: the route's rewritten host, or the
/// client's host when it came as the URI's authority (HTTP/2, absolute-form) rather than as
/// a `Host` field already in the map.
fn host_to_set(
    action: &crate::config::model::ProxyAction,
    uri: &Uri,
    client_host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    match &action.host_rewrite {
        Some(h) => Some(h.clone()),
        None => uri.authority().and(client_host.cloned()),
    }
}

/// The upstream request head of a background cache refresh: what the request itself would
/// have sent, without body, as a GET.
fn refresh_head(
    conn: &ConnInfo,
    trusted: bool,
    action: &crate::config::model::ProxyAction,
    matched: &router::Matched<'_>,
    req: &Request<DownstreamBody>,
    request_id: &HeaderValue,
) -> Request<()> {
    let mut head = forward::copy_head(req, ());
    *head.method_mut() = Method::GET;
    let path = rewrite(action, matched, req.uri());
    *head.uri_mut() = Uri::from(path);
    *head.version_mut() = Version::HTTP_11;
    let client_host = request_host(req);
    let mut added = Added::default();
    let present = Present::scan(head.headers());
    prepare_upstream_headers(
        head.headers_mut(),
        &present,
        UpstreamHeaders {
            trusted,
            peer_text: &conn.peer_text,
            tls: conn.tls,
            client_host: client_host.as_ref(),
            set_host: host_to_set(action, req.uri(), client_host.as_ref()),
            request_id,
            upgrade: false,
            grpc_trailers: false,
        },
        &mut added,
    );
    added.insert_into(head.headers_mut());
    head
}

/// Runs a stale-while-revalidate refresh in the background: the request that served the
/// stale response does not wait for it.
fn spawn_refresh(
    snap: Arc<Snapshot>,
    route: usize,
    client_ip: IpAddr,
    head: Request<()>,
    pending: cache::Pending,
) {
    tokio::spawn(async move {
        let route = &snap.routes[route];
        let (Some(svc), Some(rules)) = (&snap.cache, &route.cache) else {
            return;
        };
        let Some(group) = choose_group(&snap, route, head.headers()).map(|i| &snap.upstreams[i])
        else {
            return;
        };
        let (mut parts, ()) = head.into_parts();
        pending.prepare(&mut parts.headers);
        let path = parts.uri.path().to_owned();
        let host_from_target = !parts.headers.contains_key(header::HOST);
        let exchange = forward::Exchange {
            snap: &snap,
            route,
            group,
            client_ip,
            path: &path,
            host_from_target,
            body_state: None,
            deadline: None,
            added: &Added::default(),
        };
        let mut req = Request::from_parts(parts, RequestBody::empty());
        let result = forward::forward(&exchange, &mut req)
            .await
            .map(|a| a.response)
            .map_err(|(e, _)| e);
        cache::finish_refresh(pending, svc, rules, result).await;
    });
}

/// The Content-Length a request declares, if any.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Relays bytes both ways after a `101 Switching Protocols`; `early` is what the upstream
/// sent right behind its 101 head, owed to the client first, as the bytes the client sent
/// behind its request head are owed to the upstream.
async fn tunnel(down: OnUpgrade, (mut up, early): (UpstreamStream, Bytes)) {
    let Some(mut down) = down.upgraded().await else {
        return;
    };
    if !early.is_empty() && down.io.write_all(&early).await.is_err() {
        return;
    }
    if !down.read.is_empty() && up.write_all(&down.read).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut down.io, &mut up).await;
}

/// The `log` phase of one request: metrics and the access-log line, run once when the
/// response body ends or is dropped.
pub struct Completion {
    start: Instant,
    method: Method,
    status: u16,
    route_metrics: Option<RouteMetrics>,
    log: Option<Box<LogData>>,
    /// The request's place in its upstream group's concurrency limit, freed at the end.
    slot: Option<Slot>,
    /// Places held in rate-limit concurrency policies, freed at the end.
    holds: Vec<Hold>,
    /// CORS fields of the route for this request's origin, set on whatever answers it.
    cors: Option<Box<http::HeaderMap>>,
}

struct LogData {
    log: Arc<AccessLog>,
    time: SystemTime,
    request_id: HeaderValue,
    client_ip: IpAddr,
    host: String,
    path: String,
    route: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    upstream_duration: Option<Duration>,
    req_body: Option<Arc<RequestBodyState>>,
}

impl Completion {
    /// Runs the log phase of a response that ended at `now`.
    pub fn finish(self, bytes_out: u64, now: Instant) {
        let duration = now.saturating_duration_since(self.start);
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
                consumer: l.consumer.as_deref(),
                upstream_target: l.upstream.as_deref(),
                upstream_duration: l.upstream_duration,
            });
        }
    }
}

fn finish_response(mut resp: Response<ProxyBody>, done: Completion) -> Response<ProxyBody> {
    complete(&mut resp, done);
    resp
}

/// Hands the `log` phase to the response body, which runs it when it ends.
fn complete(resp: &mut Response<ProxyBody>, mut done: Completion) {
    done.status = resp.status().as_u16();
    if let Some(fields) = done.cors.take() {
        access::apply_cors(resp.headers_mut(), &fields);
    }
    resp.body_mut().set_completion(done);
}

fn respond_error(
    err: &ProxyError,
    request_id: &HeaderValue,
    done: Completion,
) -> Response<ProxyBody> {
    finish_response(err.to_response(request_id), done)
}
