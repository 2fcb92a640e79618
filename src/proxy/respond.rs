//! RESPOND (`response_headers`): the downstream response made from the upstream's. A `101`
//! opens the WebSocket tunnel the client asked for (and is refused when it did not ask);
//! hop-by-hop fields go; the cache stores or validates what it may; the gateway's own fields
//! (`X-Request-Id`, `Via`), the rate-limit fields and a sticky-session cookie are added, and
//! the route's idle and total limits are set on the relayed body.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;

use super::body::{BodyTimer, ProxyBody};
use super::cache::Pending;
use super::error::ProxyError;
use super::forward::Answer;
use super::headers::prepare_downstream_headers;
use super::upstream_request::Outbound;
use crate::cache::status::{CacheStatus, Forward};
use crate::message::X_REQUEST_ID;
use crate::ratelimit::Passed;
use crate::serve::h1::upgrade::OnUpgrade;
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::stream::UpstreamStream;

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
        let Some((down, up)) = out.upgrade.take().zip(resp.body_mut().take_upgraded()) else {
            let err = ProxyError::UpstreamProtocol("upstream switched protocols unasked");
            let mut resp = err.to_response(&request_id);
            resp.headers_mut().insert(
                header::VIA,
                HeaderValue::from_static(crate::message::VIA_VALUE),
            );
            return resp;
        };
        tokio::spawn(tunnel(down, up));
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
