//! A stale-while-revalidate refresh: the upstream request a cached response is refetched
//! with, sent in the background so the request that got the stale response does not wait.

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use http::uri::Uri;
use http::{Method, Request, Version};

use super::cache;
use super::forward;
use super::headers::{prepare_upstream_headers, request_host, rewrite, Present, UpstreamHeaders};
use super::request::Arrival;
use super::route::Routed;
use super::select::choose_group;
use super::upstream_request::host_to_set;
use super::ConnInfo;
use crate::snapshot::Snapshot;
use crate::upstream::added::Added;
use crate::upstream::request_body::RequestBody;

/// The upstream request head of a refresh: what the request itself would have sent, without
/// body, as a GET.
pub(super) fn head<B>(
    conn: &ConnInfo,
    routed: &Routed<'_>,
    req: &Request<B>,
    arrival: &Arrival,
) -> Request<()> {
    let mut head = forward::copy_head(req, ());
    *head.method_mut() = Method::GET;
    let path = rewrite(routed.action, &routed.matched, req.uri());
    *head.uri_mut() = Uri::from(path);
    *head.version_mut() = Version::HTTP_11;
    let client_host = request_host(req);
    let mut added = Added::default();
    let present = Present::scan(head.headers());
    prepare_upstream_headers(
        head.headers_mut(),
        &present,
        UpstreamHeaders {
            trusted: arrival.trusted,
            peer_text: &conn.peer_text,
            tls: conn.tls,
            client_host: client_host.as_ref(),
            set_host: host_to_set(routed.action, req.uri(), client_host.as_ref()),
            request_id: &arrival.request_id,
            upgrade: false,
            grpc_trailers: false,
        },
        &mut added,
    );
    added.insert_into(head.headers_mut());
    head
}

/// Runs the refresh in the background.
pub(super) fn spawn(
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
        // The client's location, as the request that found the stale response had it.
        let loc = (snap.geo.as_ref())
            .filter(|_| route.uses_geo)
            .map(|g| g.locate(client_ip));
        let chosen = choose_group(&snap, route, head.headers(), loc.as_ref());
        let Some(group) = chosen.map(|i| &snap.upstreams[i]) else {
            return;
        };
        let (mut parts, ()) = head.into_parts();
        if let (Some(geo), Some(loc)) = (&snap.geo, &loc) {
            geo.write_headers(&mut parts.headers, loc);
        }
        pending.prepare(&mut parts.headers);
        let path = parts.uri.path().to_owned();
        let host_from_target = !parts.headers.contains_key(header::HOST);
        let exchange = forward::Exchange {
            snap: &snap,
            route,
            group,
            client_ip,
            geo: loc.as_ref(),
            path: &path,
            host_from_target,
            body_state: None,
            deadline: None,
            added: &Added::default(),
            // Nobody waits on a background refresh: its interim responses go nowhere.
            interim: None,
            // No client gets the answer's pin cookie.
            tls: false,
        };
        let mut req = Request::from_parts(parts, RequestBody::empty());
        let result = forward::forward(&exchange, &mut req, None)
            .await
            .map(|a| a.response)
            .map_err(|(e, _)| e);
        cache::finish_refresh(pending, svc, rules, result).await;
    });
}
