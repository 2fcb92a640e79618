//! Request mirroring: a copy of the request goes to a shadow group and its response is read
//! and thrown away. The copy never slows the original: its body is a bounded tee that is cut
//! (and the shadow request fails) when the shadow falls behind.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Version};

use super::headers::upstream_uri;
use crate::config::model::UpstreamProtocol;
use crate::snapshot::Snapshot;
use crate::upstream::added::Added;
use crate::upstream::balancer::PickInput;
use crate::upstream::pool;
use crate::upstream::request_body::RequestBody;

/// Body frames a shadow may lag behind the original before its copy is cut.
const TEE_DEPTH: usize = 16;

/// Starts a copy of `req` (already prepared for upstream, with the gateway's `added`
/// fields) toward group `shadow`.
pub(super) fn spawn(
    snap: Arc<Snapshot>,
    shadow: usize,
    req: &mut Request<RequestBody>,
    added: &Added,
) {
    let body = if http_body::Body::is_end_stream(req.body()) {
        RequestBody::empty()
    } else {
        req.body_mut().tee(TEE_DEPTH)
    };
    let mut copy = super::forward::copy_head(req, body);
    let added = added.clone();
    tokio::spawn(async move {
        let Some(group) = snap.upstreams.get(shadow) else {
            return;
        };
        let now = Instant::now();
        let input = PickInput {
            client_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            headers: copy.headers(),
            path: copy.uri().path(),
        };
        let Some(ti) = group
            .balancer
            .pick(&input, &|i| !group.health.available(i, now))
        else {
            snap.resilience.mirrored(&group.name, false);
            return;
        };
        let target = &group.targets[ti];
        if group.client.protocol == UpstreamProtocol::H2 {
            if let Some(pq) = copy.uri().path_and_query().cloned() {
                let tls = group.client.tls.is_some();
                *copy.uri_mut() = upstream_uri(tls, target.authority.clone(), pq);
            }
            *copy.version_mut() = Version::HTTP_2;
        }
        let sent = crate::timer::timeout(
            group.request_timeout,
            // A mirror's interim responses go nowhere: its client never sees it.
            pool::send(&group.client, target.address, &mut copy, &added, now, None),
        )
        .await;
        let ok = match sent {
            Ok(Ok(resp)) => {
                let status_ok = !resp.status().is_server_error();
                // Read the response to its end so the connection can serve again.
                let mut body = resp.into_body();
                let drained =
                    tokio::time::timeout(group.request_timeout, crate::message::drain(&mut body))
                        .await
                        .is_ok_and(|ended| ended);
                body.recycle(std::time::Instant::now());
                status_ok && drained
            }
            _ => false,
        };
        snap.resilience.mirrored(&group.name, ok);
    });
}
