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
pub mod body;
mod cache;
pub mod error;
mod forward;
mod headers;
mod limit;
mod log;
mod mirror;
mod refresh;
mod request;
mod respond;
mod route;
mod select;
#[cfg(test)]
mod testing;
mod upstream_request;
mod validate;

use crate::serve::DownstreamBody;
use crate::snapshot::Snapshot;
use body::ProxyBody;
use error::ProxyError;
pub use log::Completion;
use request::Arrival;

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

/// How a phase ends a request early. Not boxed: an early answer (a cache hit above all) is
/// moved once, and a box would cost it an allocation; the `Ok` path never moves a `Stop`.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Stop {
    /// A complete answer: a redirect, a refusal with its own fields, a cache hit.
    Respond(Response<ProxyBody>),
    /// An error, answered through the one error → status table.
    Fail(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(err: ProxyError) -> Self {
        Stop::Fail(err)
    }
}

/// Handles one downstream request; never fails (errors become problem+json responses).
pub async fn handle(
    snap: Arc<Snapshot>,
    conn: &ConnInfo,
    req: &mut Request<DownstreamBody>,
) -> Response<ProxyBody> {
    let arrival = request::arrive(&snap.listeners[conn.listener], conn, req);
    let mut done = Completion::begin(&snap, &arrival, req);
    let mut resp = match to_upstream(&snap, conn, req, &arrival, &mut done).await {
        Ok(relayed) => respond::relay(relayed, arrival.request_id),
        Err(Stop::Respond(resp)) => resp,
        Err(Stop::Fail(err)) => err.to_response(&arrival.request_id),
    };
    // In place: the response is large, and this path is every proxied request's.
    done.complete(&mut resp);
    resp
}

/// The phases from `route` to `forward`: what the upstream answered, or why the request
/// ends before.
async fn to_upstream<'s>(
    snap: &'s Arc<Snapshot>,
    conn: &ConnInfo,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<respond::Relayed<'s>, Stop> {
    let routed = route::find(snap, conn, req, arrival, done)?;
    let caller = access::check(&routed, conn, req, arrival, done).await?;
    let limits = limit::admit(snap, &routed, conn, req, arrival, caller.as_ref(), done).await?;
    let validated = validate::body(&routed, req, arrival, limits.max_body).await?;
    let passed = limits.passed.as_ref();
    let pending = cache::lookup(snap, conn, &routed, req, arrival, caller.as_ref(), passed).await?;
    let group = select::group(snap, routed.route, req.headers(), done).await?;
    let outbound = upstream_request::Outbound::prepare(
        snap,
        conn,
        &routed,
        group,
        req,
        arrival,
        caller.as_ref(),
        validated,
        pending.as_ref(),
        limits.max_body,
        done,
    );
    let forwarded = forward::send(snap, &routed, group, outbound, arrival, pending, done).await?;
    Ok(respond::Relayed {
        snap,
        route: routed.route,
        limits,
        forwarded,
    })
}
