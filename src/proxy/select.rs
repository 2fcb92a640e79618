//! SELECT, first half: the upstream group of a proxy route (the group for the client's
//! location, a split's weighted draw, or the group a split header names), and a place in that group's concurrency limit, waiting in
//! its queue if it has one (503 when the queue is full or the wait too long). The target
//! within the group is chosen per attempt by `forward`.

use http::HeaderMap;

use super::error::ProxyError;
use super::log::Completion;
use super::Stop;
use crate::geo::Location;
use crate::snapshot::{CompiledRoute, Snapshot, UpstreamGroup};
use crate::upstream::limit::Refusal;

/// The group that serves the request, with the request's slot in it held in `done`.
pub(super) async fn group<'s>(
    snap: &'s Snapshot,
    route: &CompiledRoute,
    headers: &HeaderMap,
    geo: Option<&Location>,
    done: &mut Completion,
) -> Result<&'s UpstreamGroup, Stop> {
    let Some(group) = choose_group(snap, route, headers, geo).map(|i| &*snap.upstreams[i]) else {
        return Err(Stop::Fail(ProxyError::Internal("route without upstream")));
    };
    if let Some(limiter) = &group.limiter {
        match limiter.acquire().await {
            Ok(slot) => done.slot = Some(slot),
            Err(why) => {
                snap.resilience
                    .queue_refused(&group.name, why == Refusal::QueueTimeout);
                return Err(Stop::Fail(ProxyError::UpstreamBusy(group.name.to_string())));
            }
        }
    }
    Ok(group)
}

/// The group a proxy route sends this request to: the first of `geo_upstreams` whose
/// location holds, else the one a split header names, else a weighted draw over the split
/// (one entry: that group).
pub(super) fn choose_group(
    snap: &Snapshot,
    route: &CompiledRoute,
    headers: &HeaderMap,
    geo: Option<&Location>,
) -> Option<usize> {
    if let (false, Some(loc)) = (route.geo_upstreams.is_empty(), geo) {
        if let Some((_, i)) = route.geo_upstreams.iter().find(|(c, _)| c.holds(loc)) {
            return Some(*i);
        }
    }
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

/// The group's own bearer token (`client_credentials`); 503 when the provider cannot give one.
pub(super) async fn upstream_token(
    token: &crate::auth::oidc::credentials::UpstreamToken,
) -> Result<http::HeaderValue, Stop> {
    token.bearer().await.map_err(|e| {
        tracing::warn!(error = %e, "no client-credentials token for the upstream");
        Stop::Fail(ProxyError::AuthUnavailable)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{request, snapshot, Phase};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0}]
upstreams:
  stable: {targets: [{address: 127.0.0.1:9}]}
  canary: {targets: [{address: 127.0.0.1:10}]}
  small: {targets: [{address: 127.0.0.1:11}], max_concurrent_requests: 1, queue: {size: 0}}
routes:
  - {name: split, match: {path: {prefix: /s}}, split: [{upstream: stable, weight: 3}, {upstream: canary, weight: 1}], split_header: x-group}
  - {name: small, match: {path: {prefix: /q}}, upstream: small}
";

    #[test]
    fn a_split_header_forces_its_group_and_draws_follow_the_weights() {
        let snap = snapshot(CONFIG);
        let route = &snap.routes[0];
        let forced = request("GET", "/s", &[("x-group", "canary")]);
        assert_eq!(
            snap.upstreams[choose_group(&snap, route, forced.headers(), None).unwrap()]
                .name
                .as_ref(),
            "canary"
        );
        let plain = request("GET", "/s", &[]);
        let canary = (0..4000)
            .filter(|_| {
                &*snap.upstreams[choose_group(&snap, route, plain.headers(), None).unwrap()].name
                    == "canary"
            })
            .count();
        assert!(
            (800..1200).contains(&canary),
            "{canary} of 4000 went to the canary"
        );
    }

    #[tokio::test]
    async fn a_full_group_refuses_with_busy() {
        let snap = snapshot(CONFIG);
        let mut first = Phase::new(&snap, request("GET", "/q", &[]));
        let group = super::group(
            &snap,
            &snap.routes[1],
            first.req.headers(),
            None,
            &mut first.done,
        )
        .await;
        assert!(group.is_ok_and(|g| &*g.name == "small"));
        let mut second = Phase::new(&snap, request("GET", "/q", &[]));
        let refused = super::group(
            &snap,
            &snap.routes[1],
            second.req.headers(),
            None,
            &mut second.done,
        )
        .await;
        assert!(
            matches!(refused, Err(Stop::Fail(ProxyError::UpstreamBusy(name))) if name == "small")
        );
    }
}
