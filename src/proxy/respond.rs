//! RESPOND (`response_headers`): the downstream response made from the upstream's. A `101`
//! opens the WebSocket tunnel the client asked for (and is refused when it did not ask):
//! `open_tunnel` runs it, and the request's log phase with it, once the 101 is written;
//! hop-by-hop fields go; the cache stores or validates what it may; the gateway's own fields
//! (`X-Request-Id`, `Via`), the rate-limit fields and a sticky-session cookie are added, and
//! the route's idle and total limits are set on the relayed body.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use super::body::{BodyTimer, ProxyBody};
use super::cache::Pending;
use super::error::ProxyError;
use super::forward::Answer;
use super::headers::prepare_downstream_headers;
use super::log::Completion;
use super::upstream_request::{Outbound, Switched, SwitchedUpstream};
use crate::cache::status::{CacheStatus, Forward};
use crate::message::X_REQUEST_ID;
use crate::ratelimit::Passed;
use crate::serve::h1::Upgraded;
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::tunnel::First;

/// The response to send downstream, made from the upstream's `answer`; `request_id` goes
/// on it.
pub(super) fn relay(
    snap: &Snapshot,
    route: &CompiledRoute,
    passed: Option<&Passed>,
    answer: Answer,
    out: &mut Outbound,
    pending: Option<Pending>,
    request_id: HeaderValue,
) -> Response<ProxyBody> {
    let mut resp = answer.response;
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let upstream = match resp.body_mut().take_upgraded() {
            Some((stream, early)) => Some(SwitchedUpstream::H1(stream, early)),
            None => resp
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>()
                .map(SwitchedUpstream::H2),
        };
        let Some((client, upstream)) = out.upgrade.take().zip(upstream) else {
            let err = ProxyError::UpstreamProtocol("upstream switched protocols unasked");
            let mut resp = err.to_response(&request_id);
            resp.headers_mut().insert(
                header::VIA,
                HeaderValue::from_static(crate::message::VIA_VALUE),
            );
            return resp;
        };
        out.switched = Some(Box::new(Switched { client, upstream }));
    }
    // A plain relay keeps the gateway's own fields beside the map; a response the cache
    // keeps has them in its map, as stored responses need.
    let beside = pending.is_none();
    let via_beside = prepare_downstream_headers(resp.headers_mut(), switching, beside);
    let mut resp = match (pending, &snap.cache, &route.cache) {
        (Some(p), Some(svc), Some(rules)) => p.answer(svc, rules, resp),
        // A cached route's request the cache stayed out of (a WebSocket upgrade).
        (None, Some(svc), Some(_)) => {
            let mut resp = resp.map(ProxyBody::relay);
            CacheStatus::forward(&svc.status_name, Forward::Bypass).append_to(resp.headers_mut());
            resp
        }
        _ => resp.map(ProxyBody::relay),
    };
    if beside {
        resp.body_mut().set_gateway_fields(request_id, via_beside);
    } else {
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
    }
    let headers = resp.headers_mut();
    if let Some(p) = passed {
        p.write_headers(headers);
    }
    if let Some(pin) = answer.pin {
        headers.append(header::SET_COOKIE, pin);
    }
    resp.body_mut()
        .set_timer(BodyTimer::new(route.timeouts.idle, out.deadline));
    *resp.version_mut() = Version::HTTP_11;
    resp
}

/// Opens the WebSocket tunnel of a 101 once the client's connection is handed over: the
/// relay runs in a task of its own, under the route's tunnel limits, and `done` (the
/// request's log phase, with its tunnel permit) runs when it ends.
pub(super) fn open_tunnel(
    snap: &Snapshot,
    route: &CompiledRoute,
    switched: Switched,
    done: Option<Completion>,
) {
    let tunnels = snap.tunnels.clone();
    // Counted now, while the client's connection is still open: the shutdown never sees
    // a moment with neither.
    let open = tunnels.opened();
    let limits = route.tunnel.unwrap_or_default();
    let name = route.name.clone();
    let Switched { client, upstream } = switched;
    tokio::spawn(async move {
        let _open = open;
        let Some(Upgraded { io, read }) = client.upgraded().await else {
            return;
        };
        let done = done.map(Completion::into_tunnel);
        tunnels.metrics.opened(&name);
        let away = tunnels.going_away();
        let outcome = match upstream {
            SwitchedUpstream::H1(stream, early) => {
                let first = First {
                    from_client: read,
                    from_upstream: early,
                };
                crate::tunnel::run(io, stream, first, &limits, away).await
            }
            SwitchedUpstream::H2(on) => {
                let Ok(stream) = on.await else {
                    return;
                };
                let first = First {
                    from_client: read,
                    from_upstream: bytes::Bytes::new(),
                };
                let stream = hyper_util::rt::TokioIo::new(stream);
                crate::tunnel::run(io, stream, first, &limits, away).await
            }
        };
        let reason = outcome.reason.label();
        let metrics = &tunnels.metrics;
        metrics.closed(&name, reason, outcome.to_upstream, outcome.to_client);
        if let Some(done) = done {
            done.finish_tunnel(&outcome);
        }
    });
}
