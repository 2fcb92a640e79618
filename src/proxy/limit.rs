//! LIMIT: limits that need no upstream. `size`: a declared body over the route's (or
//! listener's) size limit is refused with 413 before a byte of it is read, an HTTP/2 head
//! with too many fields with 431 (the HTTP/1.1 parser counts its own). `admit`: the route's
//! rate-limit policies admit the request or refuse it with 429 and their fields. `tunnel`:
//! a WebSocket upgrade takes a place in the route's tunnel limits, or is refused with 503
//! (the route's limit) or 429 (the client's) before it reaches the upstream.

use http::{header, Request};

use super::error::ProxyError;
use super::log::Completion;
use super::request::Arrival;
use super::route::Routed;
use super::{ConnInfo, Stop};
use crate::auth::gate::Authenticated;
use crate::ratelimit::key::KeyContext;
use crate::ratelimit::{self, Admission, Passed};
use crate::snapshot::Snapshot;

/// The request's body limit (the route's, else the listener's); 413 for a declared body
/// over it, 431 for an HTTP/2 head with more fields than the listener allows.
pub(super) fn size<B>(
    snap: &Snapshot,
    routed: &Routed<'_>,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Result<Option<u64>, Stop> {
    let listener = &snap.listeners[conn.listener];
    let max_body = routed
        .route
        .max_body_bytes
        .or(listener.limits.max_body_bytes);
    if let Some(max) = max_body {
        if declared_length(req.headers()).is_some_and(|n| n > max) {
            return Err(Stop::Fail(ProxyError::PayloadTooLarge));
        }
    }
    if req.headers().len() > listener.limits.max_headers {
        return Err(Stop::Fail(ProxyError::TooManyHeaders));
    }
    Ok(max_body)
}

/// The route's rate-limit policies, in order. What they decided is left in `passed`, for
/// the response fields (written in place: the decisions are large, and moving them out of
/// the phase would copy them on every request).
pub(super) async fn admit<B>(
    snap: &Snapshot,
    routed: &Routed<'_>,
    req: &Request<B>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
    passed: &mut Option<Passed>,
    done: &mut Completion,
) -> Result<(), Stop> {
    let route = routed.route;
    if route.rate_limits.is_empty() {
        return Ok(());
    }
    let ctx = KeyContext {
        client_ip: arrival.client_ip,
        route: &route.name,
        path: req.uri().path(),
        headers: req.headers(),
        consumer: caller.and_then(|a| a.identity.name()),
        consumer_header: snap.config.rate_limiting.consumer_header.as_ref(),
        geo: routed.geo.as_ref(),
        metadata: caller
            .and_then(|a| a.identity.consumer.as_deref())
            .map(|c| &c.metadata),
    };
    match ratelimit::admit(&route.rate_limits, &ctx).await {
        Admission::Pass(mut p) => {
            done.holds = std::mem::take(&mut p.holds);
            *passed = Some(p);
            Ok(())
        }
        Admission::Limited(p) => {
            let name = p.refused_by().unwrap_or_default();
            let mut resp = ProxyError::RateLimited(name).to_response(&arrival.request_id);
            p.write_headers(resp.headers_mut());
            Err(Stop::respond(resp))
        }
        Admission::Unavailable { policy, passed } => {
            let err = ProxyError::RateLimitUnavailable(policy.name.clone());
            let mut resp = err.to_response(&arrival.request_id);
            policy.write_unavailable(&passed, resp.headers_mut());
            Err(Stop::respond(resp))
        }
    }
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

/// A place for the WebSocket tunnel this upgrade opens, when the route limits its tunnels;
/// held by the request (then by its tunnel) until it ends.
pub(super) fn tunnel(
    snap: &Snapshot,
    routed: &Routed<'_>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<(), Stop> {
    let Some(limits) = &routed.route.tunnel else {
        return Ok(());
    };
    let route = &routed.route.name;
    match snap.tunnels.admit(route, arrival.client_ip, limits) {
        Ok(permit) => {
            done.tunnel_permit = permit;
            Ok(())
        }
        Err(refused) => {
            snap.tunnels.metrics.refused(route, refused.label());
            Err(Stop::Fail(match refused {
                crate::tunnel::Refused::Route => ProxyError::TunnelsFull(route.clone()),
                crate::tunnel::Refused::Ip => ProxyError::TunnelsPerClient(route.clone()),
            }))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{conn, request, snapshot, Phase};
    use super::*;

    const CONFIG: &str =
        "listeners: [{address: 127.0.0.1:0, limits: {max_body_bytes: 100, max_headers: 3}}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
rate_limiting:
  policies:
    two: {algorithm: fixed_window, limit: 2, window: 1m, key: [client_ip]}
routes:
  - {name: small, match: {path: {prefix: /small}}, upstream: u, max_body_bytes: 10}
  - {name: limited, match: {path: {prefix: /limited}}, upstream: u, rate_limits: [two]}
";

    async fn run(snap: &Snapshot, p: &mut Phase) -> Result<(Option<u64>, Option<Passed>), Stop> {
        let routed = p.route(snap);
        let max_body = size(snap, &routed, &conn("192.0.2.1:1"), &p.req)?;
        let mut passed = None;
        admit(
            snap,
            &routed,
            &p.req,
            &p.arrival,
            None,
            &mut passed,
            &mut p.done,
        )
        .await?;
        Ok((max_body, passed))
    }

    #[tokio::test]
    async fn a_declared_body_over_the_route_limit_is_refused_with_413() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(
            &snap,
            request("POST", "/small", &[("content-length", "11")]),
        );
        let refused = run(&snap, &mut p).await;
        assert!(matches!(
            refused,
            Err(Stop::Fail(ProxyError::PayloadTooLarge))
        ));
        let mut p = Phase::new(
            &snap,
            request("POST", "/small", &[("content-length", "10")]),
        );
        assert!(run(&snap, &mut p)
            .await
            .is_ok_and(|(max, _)| max == Some(10)));
    }

    #[tokio::test]
    async fn more_fields_than_the_listener_allows_are_refused_with_431() {
        let snap = snapshot(CONFIG);
        let fields = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")];
        let mut p = Phase::new(&snap, request("GET", "/small", &fields));
        let refused = run(&snap, &mut p).await;
        assert!(matches!(
            refused,
            Err(Stop::Fail(ProxyError::TooManyHeaders))
        ));
    }

    #[tokio::test]
    async fn the_rate_limit_admits_up_to_its_limit_then_answers_429() {
        let snap = snapshot(CONFIG);
        for _ in 0..2 {
            let mut p = Phase::new(&snap, request("GET", "/limited", &[]));
            assert!(run(&snap, &mut p)
                .await
                .is_ok_and(|(_, passed)| passed.is_some()));
        }
        let mut p = Phase::new(&snap, request("GET", "/limited", &[]));
        let Err(Stop::Respond(resp)) = run(&snap, &mut p).await else {
            panic!("the third request is over the limit");
        };
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().contains_key("retry-after"));
    }
}
