//! UPSTREAM_REQUEST: the upstream request made from the downstream one. Its method, fields
//! and body are moved out of the lent request, nothing is rebuilt: the path rewritten, the
//! hop-by-hop fields dropped and the forwarding fields (`X-Forwarded-*`, `Via`, the request
//! id) set, the verified caller told upstream, the cache's validators added, and the body
//! held to the route's limits (or replaced by the bytes `validate` read).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Request;

use super::access::{identify_upstream, strip_query_param};
use super::cache::Pending;
use super::headers::{prepare_upstream_headers, rewrite, UpstreamHeaders};
use super::log::Completion;
use super::request::Arrival;
use super::route::Routed;
use super::ConnInfo;
use crate::auth::gate::Authenticated;
use crate::config::model::{ProxyAction, UpstreamProtocol};
use crate::serve::h1::upgrade::{self as h1_upgrade, OnUpgrade};
use crate::serve::DownstreamBody;
use crate::snapshot::{Snapshot, UpstreamGroup};
use crate::upstream::added::Added;
use crate::upstream::request_body::{RequestBody, RequestBodyState};

/// Both sides of a tunnel after a 101: the client's connection once the 101 is written, and
/// the upstream's with the bytes it sent behind its 101 head.
pub(crate) struct Switched {
    pub client: OnUpgrade,
    pub upstream: SwitchedUpstream,
}

/// The upstream side of a tunnel.
pub(crate) enum SwitchedUpstream {
    /// An HTTP/1.1 upstream's connection after its 101, and the bytes it sent behind the
    /// head.
    H1(crate::upstream::stream::UpstreamStream, bytes::Bytes),
    /// An HTTP/2 upstream's stream after its answer to an extended CONNECT, once hyper
    /// hands it over.
    H2(hyper::upgrade::OnUpgrade),
}

/// The upstream request, ready for `forward`, and what the later phases need of it.
pub(crate) struct Outbound {
    pub request: Request<RequestBody>,
    /// The gateway's own fields, written beside the map.
    pub added: Added,
    /// The client sent no host (HTTP/1.0): each attempt names its target.
    pub host_from_target: bool,
    /// What the body tells of the client (bytes sent, failures), when there is a body.
    pub body_state: Option<Arc<RequestBodyState>>,
    /// The downstream target, as the client sent it.
    pub downstream_uri: Uri,
    /// The client side of a WebSocket tunnel, when the request asks for one.
    pub upgrade: Option<OnUpgrade>,
    /// After a 101: both sides of the tunnel to open (boxed: rare, and every request
    /// carries the field).
    pub switched: Option<Box<Switched>>,
    /// The end of the whole exchange, body included (route `timeouts.total`).
    pub deadline: Option<tokio::time::Instant>,
    /// The downstream connection is TLS.
    pub tls: bool,
}

impl Outbound {
    /// An empty upstream request, made where it will live: the caller's future holds it in
    /// place and `prepare` fills it (moving a finished one would copy it on every request).
    pub(super) fn new() -> Outbound {
        Outbound {
            request: Request::new(RequestBody::empty()),
            added: Added::default(),
            host_from_target: false,
            body_state: None,
            downstream_uri: Uri::default(),
            upgrade: None,
            switched: None,
            deadline: None,
            tls: false,
        }
    }

    /// Makes the upstream request, taking the downstream request's parts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prepare(
        &mut self,
        snap: &Snapshot,
        conn: &ConnInfo,
        routed: &Routed<'_>,
        group: &UpstreamGroup,
        req: &mut Request<DownstreamBody>,
        arrival: &Arrival,
        caller: Option<&Authenticated>,
        validated: Option<Bytes>,
        pending: Option<&Pending>,
        max_body: Option<u64>,
        done: &mut Completion,
    ) {
        let out = self;
        out.tls = conn.tls;
        let action = routed.action;
        let body = std::mem::replace(req.body_mut(), DownstreamBody::Empty);
        out.body_state = (validated.as_ref().is_some_and(|b| !b.is_empty())
            || !http_body::Body::is_end_stream(&body))
        .then(Arc::<RequestBodyState>::default);
        if let Some(log) = done.log_mut() {
            log.req_body = out.body_state.clone();
        }
        let upstream_body = out.request.body_mut();
        match (validated, &out.body_state) {
            (Some(bytes), state) => {
                if let Some(state) = state {
                    state.bytes.store(bytes.len() as u64, Ordering::Relaxed);
                }
                upstream_body.set_buffered(bytes, state.clone());
            }
            (None, Some(state)) => {
                let idle = snap.listeners[conn.listener].limits.body_timeout;
                upstream_body.set_client(body, Some(state.clone()), Some((max_body, idle)));
            }
            (None, None) => upstream_body.set_client(body, None, None),
        }
        let host_value = arrival.host_value.as_ref();
        // HTTP/1.0 clients may send no Host: each attempt then names its target.
        out.host_from_target = action.host_rewrite.is_none() && host_value.is_none();
        if routed.upgrade {
            out.upgrade = h1_upgrade::on(req);
        }
        out.deadline = routed
            .route
            .timeouts
            .total
            .map(|t| tokio::time::Instant::now() + t);
        let mut path = rewrite(action, &routed.matched, req.uri());
        let set_host = host_to_set(action, req.uri(), host_value);
        prepare_upstream_headers(
            req.headers_mut(),
            &arrival.present,
            UpstreamHeaders {
                trusted: arrival.trusted,
                peer_text: &conn.peer_text,
                tls: conn.tls,
                client_host: host_value,
                set_host,
                request_id: &arrival.request_id,
                upgrade: routed.upgrade,
                grpc_trailers: group.client.protocol == UpstreamProtocol::H2,
            },
            &mut out.added,
        );
        if let Some(t) = done.trace() {
            // The gateway's context replaces the caller's: written beside the fields, the
            // caller's `tracestate` kept only with its continued context.
            out.added.set_trace(t.trace_id(), t.span_id, t.sampled);
            let present = &arrival.present;
            if present.traceparent {
                req.headers_mut().remove(crate::observe::trace::TRACEPARENT);
            }
            if present.tracestate && !t.continued() {
                req.headers_mut().remove(crate::observe::trace::TRACESTATE);
            }
        }
        if let Some(p) = pending {
            p.prepare(req.headers_mut());
        }
        let hidden_param = identify_upstream(
            req.headers_mut(),
            &routed.route.reserved_headers,
            snap.auth.consumer_header.as_ref(),
            caller,
        );
        if let Some(param) = hidden_param {
            let stripped = strip_query_param(path.as_str(), &param);
            if let Ok(p) = PathAndQuery::try_from(stripped) {
                path = p;
            }
        }
        if let (Some(geo), Some(loc)) = (&snap.geo, &routed.geo) {
            // The route's own header edits see the location fields in the map.
            if routed.route.request_edits.is_some() {
                geo.write_headers(req.headers_mut(), loc);
            } else {
                location_fields(geo, loc, req.headers_mut(), &mut out.added);
            }
        }
        if let Some(edits) = &routed.route.request_edits {
            // Lent out of the request so the matched path stays readable.
            let mut headers = std::mem::take(req.headers_mut());
            edits.apply(
                &mut headers,
                &edit_vars(routed, arrival, caller, req.uri().path()),
            );
            *req.headers_mut() = headers;
        }
        out.downstream_uri = std::mem::replace(req.uri_mut(), Uri::from(path));
        *out.request.method_mut() = std::mem::take(req.method_mut());
        *out.request.uri_mut() = std::mem::take(req.uri_mut());
        *out.request.headers_mut() = std::mem::take(req.headers_mut());
    }
}

/// The `geo.headers` fields of `loc`, carried in `added` (written beside the map, so no
/// hashing or map growth) while it has room. A client's copy of a field is removed from the
/// map, found by walking it (a request head holds a few fields), which costs less than
/// hashing the name.
fn location_fields(
    geo: &crate::geo::Geo,
    loc: &crate::geo::Location,
    headers: &mut HeaderMap,
    added: &mut Added,
) {
    for (name, value) in geo.fields(loc) {
        if headers.keys().any(|k| k == name) {
            headers.remove(name);
        }
        if let Some(v) = value {
            if let Err((name, v)) = added.try_push(name.clone(), v) {
                headers.insert(name, v);
            }
        }
    }
}

/// What a route's header transforms may fill in for this request; `path` is the path the
/// route matched.
pub(super) fn edit_vars<'a>(
    routed: &'a Routed<'a>,
    arrival: &'a Arrival,
    caller: Option<&'a Authenticated>,
    path: &'a str,
) -> crate::transform::Vars<'a> {
    crate::transform::Vars {
        client_ip: arrival.client_ip,
        request_id: &arrival.request_id,
        consumer: caller.and_then(|a| a.identity.name()),
        route: &routed.route.name,
        params: &routed.matched.params,
        path,
        geo: routed.geo.as_ref(),
    }
}

/// The `Host` the upstream request needs set in its map: the route's rewritten host, or the
/// client's host when it came as the URI's authority (HTTP/2, absolute-form) rather than as
/// a `Host` field already in the map.
pub(super) fn host_to_set(
    action: &ProxyAction,
    uri: &Uri,
    client_host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    match &action.host_rewrite {
        Some(h) => Some(h.clone()),
        None => uri.authority().and(client_host.cloned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::select;
    use super::super::testing::{conn, request, snapshot, Phase};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0}]
auth: {consumer_header: x-consumer}
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - {name: api, match: {path: {prefix: /api}}, upstream: u, strip_prefix: /api}
";

    fn prepare(fields: &[(&str, &str)]) -> (Outbound, Phase) {
        let snap = snapshot(CONFIG);
        let c = conn("192.0.2.1:1");
        let mut p = Phase::new(&snap, request("GET", "/api/users?page=2", fields));
        let routed = p.route(&snap);
        let group = &snap.upstreams
            [select::choose_group(&snap, routed.route, p.req.headers(), None).unwrap()];
        let mut out = Outbound::new();
        out.prepare(
            &snap,
            &c,
            &routed,
            group,
            &mut p.req,
            &p.arrival,
            None,
            None,
            None,
            None,
            &mut p.done,
        );
        (out, p)
    }

    #[test]
    fn the_path_is_rewritten_and_the_client_target_kept() {
        let (out, _) = prepare(&[("host", "a.test")]);
        assert_eq!(out.request.uri(), "/users?page=2");
        assert_eq!(out.downstream_uri, "/api/users?page=2");
        assert!(
            out.body_state.is_none(),
            "a bodiless request has no body state"
        );
    }

    #[test]
    fn hop_by_hop_and_reserved_fields_go_and_forwarding_fields_are_added() {
        let fields = [
            ("host", "a.test"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-consumer", "posing-as-admin"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        let (out, p) = prepare(&fields);
        let headers = out.request.headers();
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("x-secret"));
        assert!(
            !headers.contains_key("x-consumer"),
            "only a verified caller names a consumer"
        );
        let added = |n: &'static str| out.added.get(&http::HeaderName::from_static(n));
        assert_eq!(
            added("x-forwarded-for").unwrap(),
            "192.0.2.1",
            "an untrusted peer's forwarding fields are replaced"
        );
        assert_eq!(added("x-request-id").unwrap(), p.arrival.request_id);
        assert!(added("via").is_some());
    }
}
