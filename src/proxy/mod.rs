//! The request pipeline: one downstream request through its phases, in request order.
//!
//! `request` (id, client address, host) → `route` → `access` (CORS, IP rules, credentials,
//! parameters) → `limit` (size, field count, rate limits) → `validate` (body schema) →
//! `cache` (lookup) → `select` (upstream group, its concurrency slot) → `upstream_request`
//! (rewrite, forwarding fields, identity, body) → `forward` (attempts, retries, mirror) →
//! `respond` (response fields, tunnel, cache fill) → `log` (once, when the response body
//! ends or is dropped).
//!
//! Each phase is a function in its own file. It takes what it needs and either goes on
//! (`Ok`, with what it learned) or ends the request (`Err(Stop)`); it records what the log
//! needs in the request's [`Completion`]. docs/architecture.md says how to add one.

// Phases return `Result<_, Stop>`, whose error side holds a whole response (see `Stop`).
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};

mod access;
mod ai;
pub mod body;
mod cache;
pub mod deliver;
pub mod error;
mod forward;
mod headers;
mod limit;
mod log;
mod mirror;
mod publish;
mod queue;
mod refresh;
mod request;
mod respond;
mod route;
mod select;
#[cfg(test)]
mod testing;
mod upstream_request;
mod validate;

use crate::config::model::QueueRole;
use crate::message::Interim;
use crate::serve::DownstreamBody;
use crate::snapshot::Snapshot;
use body::ProxyBody;
use error::ProxyError;
pub use log::Completion;
pub(crate) use queue::status_json;

/// What a connection knows that every request on it shares.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer address as X-Forwarded-For text, formatted once per connection.
    pub peer_text: HeaderValue,
    pub tls: bool,
    pub listener: usize,
    /// Names of the client certificate the TLS handshake verified (`tls.client_auth`).
    pub client_cert: Option<Arc<crate::certs::ClientCert>>,
}

/// X-Forwarded-For text of a peer address (IPv4-mapped IPv6 shown as IPv4).
pub fn peer_text(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&headers::canonical_ip(peer).to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// How a phase ends a request early. The answer is boxed: every phase returns a
/// `Result<_, Stop>`, and with a response inline (344 bytes) each of them was that large and
/// copied with `memcpy` on the way out of every phase of every request; boxed, an early
/// answer (a cache hit, a refusal) pays one allocation instead.
pub(crate) enum Stop {
    /// A complete answer: a redirect, a refusal with its own fields, a cache hit.
    Respond(Box<Response<ProxyBody>>),
    /// An error, answered through the one error → status table.
    Fail(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(err: ProxyError) -> Self {
        Stop::Fail(err)
    }
}

/// Handles one downstream request; never fails (errors become problem+json responses).
/// The phases, in request order; each goes on with what it learned or ends the request.
/// The upstream's interim (1xx) responses go to `interim`, when the downstream connection
/// can send them.
pub async fn handle(
    snap: Arc<Snapshot>,
    conn: &ConnInfo,
    req: &mut Request<DownstreamBody>,
    interim: Option<&dyn Interim>,
) -> Response<ProxyBody> {
    let arrival = request::arrive(&snap.listeners[conn.listener], conn, req);
    let mut done = Completion::begin(&snap, &arrival, req);
    // What the rate-limit policies decided, once they have: their fields go on every answer
    // from then on, the gateway's own included.
    let mut passed = None;
    // Ends the request with the answer of the phase that stopped it. A macro, not a nested
    // `async fn`: every proxied request would pay for a second future and for moving the
    // response out of it.
    macro_rules! next {
        ($phase:expr) => {
            match $phase {
                Ok(learned) => learned,
                Err(stop) => return stop.answer(&arrival.request_id, passed.as_ref(), done),
            }
        };
    }
    let snap = &snap;
    let routed = next!(route::find(snap, conn, req, &arrival, &mut done));
    if let Some(t) = done.trace() {
        // A stored job continues this request's span; a forwarded request gets its
        // context beside its fields (`upstream_request`), each attempt naming its own span.
        let r = routed.route;
        if r.queue.is_some() || r.publish.is_some() || r.ai.is_some() {
            t.propagate(req.headers_mut(), t.span_id);
        }
    }
    let began = done.clock(routed.route.gate.is_some());
    let caller = next!(access::check(&routed, conn, req, &arrival, &mut done).await);
    done.phase("access", began);
    let who = caller.as_ref();
    let queued = routed.route.queue.as_ref();
    if let Some(q) = queued.filter(|q| q.role == QueueRole::Status) {
        let stop = Box::pin(queue::status(q, req, &arrival, who)).await;
        return stop.answer(&arrival.request_id, passed.as_ref(), done);
    }
    if let Some(edits) = &routed.route.response_edits {
        let vars = upstream_request::edit_vars(&routed, &arrival, who, req.uri().path());
        done.edits = Some(Box::new(edits.resolve(&vars)));
    }
    let max_body = next!(limit::size(snap, &routed, conn, req));
    let began = done.clock(!routed.route.rate_limits.is_empty());
    next!(limit::admit(snap, &routed, req, &arrival, who, &mut passed, &mut done).await);
    done.phase("rate_limit", began);
    if routed.upgrade {
        next!(limit::tunnel(snap, &routed, &arrival, &mut done));
    }
    let validated = next!(validate::body(&routed, req, &arrival, max_body).await);
    if let Some(svc) = &routed.route.ai {
        // Boxed: other routes do not carry its future in theirs.
        let asked = ai::Asked {
            snap,
            routed: &routed,
            arrival: &arrival,
            caller: who,
            validated,
            max_body,
        };
        let sent = Box::pin(ai::answer(svc, req, asked, &mut done)).await;
        return sent.answer(&arrival.request_id, passed.as_ref(), done);
    }
    if let Some(p) = &routed.route.publish {
        let sent = Box::pin(publish::send(p, req, &arrival, who, validated, max_body)).await;
        return sent.answer(&arrival.request_id, passed.as_ref(), done);
    }
    if let Some(q) = queued {
        // A queued route ends here: the job is stored (202) or refused. Boxed: other routes
        // do not carry its future in theirs.
        let stored = queue::accept(
            snap, conn, &routed, q, req, &arrival, who, validated, max_body,
        );
        let stored = Box::pin(stored);
        return stored
            .await
            .answer(&arrival.request_id, passed.as_ref(), done);
    }
    let passed = passed.as_ref();
    let began = done.clock(routed.route.cache.is_some());
    let lookup = cache::lookup(snap, conn, &routed, req, &arrival, who, passed);
    let mut pending = next!(lookup.await);
    done.phase("cache_lookup", began);
    let geo = routed.geo.as_ref();
    let group = next!(select::group(snap, routed.route, req.headers(), geo, &mut done).await);
    // A group with its own token: fetched (or taken from its cache) before the request is
    // built. Boxed: other groups do not carry the fetch in their future.
    let token = match &group.credentials {
        None => None,
        Some(c) => Some(next!(Box::pin(select::upstream_token(c)).await)),
    };
    let mut out = upstream_request::Outbound::new();
    let (wanted, cached) = (validated, pending.as_ref());
    out.prepare(
        snap, conn, &routed, group, req, &arrival, who, wanted, cached, max_body, &mut done,
    );
    if let Some(token) = token {
        out.request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, token);
    }
    let sent = forward::send(
        snap,
        &routed,
        group,
        &mut out,
        &arrival,
        &mut pending,
        &mut done,
        interim,
    );
    let answer = next!(sent.await);
    let id = arrival.request_id;
    let mut resp = respond::relay(snap, routed.route, passed, answer, &mut out, pending, id);
    let switched = out.switched.take();
    if switched.is_some() && req.version() == http::Version::HTTP_2 {
        // RFC 8441: the client's extended CONNECT is answered with 200, not 101.
        crate::serve::h2connect::answer(&mut resp);
    }
    // In place: the response is large, and this path is every proxied request's.
    done.complete(&mut resp);
    if let Some(switched) = switched {
        // The tunnel's end runs the log phase, not the 101's empty body.
        let done = resp.body_mut().take_completion();
        respond::open_tunnel(snap, routed.route, *switched, done);
    }
    resp
}

impl Stop {
    /// Ends the request with `resp`.
    pub(crate) fn respond(resp: Response<ProxyBody>) -> Stop {
        Stop::Respond(Box::new(resp))
    }

    /// The response of a request a phase ended, with its `log` phase handed over.
    /// `passed` holds the rate-limit decisions when the `limit` phase admitted the request.
    fn answer(
        self,
        request_id: &HeaderValue,
        passed: Option<&crate::ratelimit::Passed>,
        done: Completion,
    ) -> Response<ProxyBody> {
        let mut resp = match self {
            Stop::Respond(resp) => *resp,
            Stop::Fail(err) => err.to_response(request_id),
        };
        if let Some(t) = done.trace() {
            error::add_trace_id(&mut resp, &t.trace_id_hex());
        }
        if let Some(p) = passed {
            p.write_headers(resp.headers_mut());
        }
        // The gateway's own answers say it made them, as relayed ones do; a stored response
        // already carries the `Via` it was relayed with.
        if !resp.headers().contains_key(http::header::VIA) {
            resp.headers_mut().insert(
                http::header::VIA,
                HeaderValue::from_static(crate::message::VIA_VALUE),
            );
        }
        done.complete(&mut resp);
        resp
    }
}
