//! DELIVER: a queued job sent to its route's upstream as the client's request, through the
//! phases a forwarded request takes after `validate`: `select`, `upstream_request` and
//! `forward` (target choice, health, retries on other targets, the route's header
//! transforms), with `X-Job-Id` added. The response is read whole, up to the queue's
//! `max_result_bytes`, and kept as the job's result. The dispatchers call it
//! (`runtime::dispatch`); the access-log line of a delivery is written like any request's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use http_body_util::BodyExt;

use super::headers::is_hop_by_hop;
use super::log::Completion;
use super::queue::X_JOB_ID;
use super::route::Routed;
use super::upstream_request::Outbound;
use super::{forward, request, select, ConnInfo, Stop};
use crate::config::model::{Action, QueueRole};
use crate::queue::{Field, JobId, StoredRequest, StoredResponse};
use crate::router::RequestView;
use crate::serve::DownstreamBody;
use crate::snapshot::Snapshot;

/// How a delivery attempt ended.
#[derive(Debug)]
pub enum Delivered {
    /// The upstream answered (any status).
    Answered(StoredResponse),
    /// No answer: the reason (connect error, timeout, no healthy target, route gone).
    Failed(String),
}

/// Sends job `id` of route `route` to its upstream.
pub async fn deliver(
    snap: Arc<Snapshot>,
    id: JobId,
    route: &str,
    stored: &StoredRequest,
    max_result: usize,
) -> Delivered {
    match send(&snap, id, route, stored, max_result).await {
        Ok(r) => Delivered::Answered(r),
        Err(why) => Delivered::Failed(why),
    }
}

async fn send(
    snap: &Arc<Snapshot>,
    id: JobId,
    route_name: &str,
    stored: &StoredRequest,
    max_result: usize,
) -> Result<StoredResponse, String> {
    let mut req = rebuild(stored, id)?;
    let peer: SocketAddr = stored
        .peer
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = (stored.listener as usize).min(snap.listeners.len().saturating_sub(1));
    let conn = ConnInfo {
        peer,
        peer_text: super::peer_text(peer.ip()),
        tls: stored.tls,
        listener,
        client_cert: None,
    };
    let mut arrival = request::arrive(&snap.listeners[listener], &conn, &req);
    // The stored `traceparent` is the gateway's own, from the request that queued the job.
    arrival.trust_trace = true;
    // The route that accepted the job, if the running configuration still sends the
    // request there; in a block of its own, so that the location's lazy lookup (not `Send`)
    // is gone before the first await.
    let (matched, geo) = {
        let host = arrival.host();
        let lazy = snap.geo.as_ref().map(|g| g.lazy(arrival.client_ip));
        let view = RequestView {
            host: &host,
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            geo: lazy.as_ref(),
        };
        let matched = snap
            .router
            .find(&view)
            .filter(|m| *snap.routes[m.route].name == *route_name)
            .ok_or_else(|| format!("route {route_name:?} no longer takes this request"))?;
        let uses_geo = snap.routes[matched.route].uses_geo;
        let geo = lazy
            .filter(|_| uses_geo)
            .map(crate::geo::Lazy::into_location);
        (matched, geo)
    };
    let route = &snap.routes[matched.route];
    let Action::Proxy(action) = &route.action else {
        return Err(format!("route {route_name:?} no longer forwards"));
    };
    if !route
        .queue
        .as_ref()
        .is_some_and(|q| q.role == QueueRole::Accept)
    {
        return Err(format!("route {route_name:?} is no longer queued"));
    }
    let routed = Routed {
        matched,
        route,
        action,
        upgrade: false,
        geo,
    };
    let mut done = Completion::begin(snap, &arrival, &req);
    let group = select::group(snap, route, req.headers(), routed.geo.as_ref(), &mut done)
        .await
        .map_err(stopped)?;
    let mut out = Outbound::new();
    let body = Bytes::from(stored.body.clone());
    out.prepare(
        snap,
        &conn,
        &routed,
        group,
        &mut req,
        &arrival,
        None,
        Some(body),
        None,
        None,
        &mut done,
    );
    // The caller's identity, as the gateway told it upstream when it accepted the job
    // (the fields a route reserves are otherwise removed).
    for f in &stored.headers {
        let Ok(name) = HeaderName::from_bytes(f.name.as_bytes()) else {
            continue;
        };
        if route.reserved_headers.contains(&name) {
            if let Ok(v) = HeaderValue::from_bytes(&f.value) {
                out.request.headers_mut().append(name, v);
            }
        }
    }
    let mut no_cache = None;
    let sent = forward::send(
        snap,
        &routed,
        group,
        &mut out,
        &arrival,
        &mut no_cache,
        &mut done,
        None,
    );
    let answer = sent.await.map_err(stopped)?;
    let (parts, mut body) = answer.response.into_parts();
    let mut kept = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the response body failed: {e}"))?;
        if let Some(data) = frame.data_ref() {
            let room = max_result.saturating_sub(kept.len());
            if data.len() > room {
                kept.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            kept.extend_from_slice(data);
        }
    }
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n) && *n != http::header::CONTENT_LENGTH)
        .map(|(n, v)| Field {
            name: n.as_str().to_owned(),
            value: v.as_bytes().to_vec(),
        })
        .collect();
    Ok(StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: kept.to_vec(),
        truncated,
    })
}

/// The stored request as a request again, with `X-Job-Id`.
fn rebuild(stored: &StoredRequest, id: JobId) -> Result<Request<DownstreamBody>, String> {
    let mut req = Request::new(DownstreamBody::Empty);
    *req.method_mut() = Method::from_bytes(stored.method.as_bytes())
        .map_err(|_| "the stored method is invalid".to_owned())?;
    *req.uri_mut() = stored
        .uri
        .parse::<Uri>()
        .map_err(|_| "the stored target is invalid".to_owned())?;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    for f in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(&f.value),
        ) {
            headers.append(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_bytes(&id.hex()) {
        headers.insert(X_JOB_ID, v);
    }
    Ok(req)
}

fn stopped(stop: Stop) -> String {
    match stop {
        Stop::Fail(e) => e.to_string(),
        Stop::Respond(resp) => format!("the gateway answered {}", resp.status()),
    }
}
