//! ROUTE: which route answers the request. A redirect or `respond` route answers it here; a
//! proxy route goes on with its action, and with whether the request opens a WebSocket
//! tunnel.

use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::body::ProxyBody;
use super::error::ProxyError;
use super::headers::wants_upgrade;
use super::log::Completion;
use super::request::Arrival;
use super::{ConnInfo, Stop};
use crate::config::model::{Action, ProxyAction};
use crate::message::X_REQUEST_ID;
use crate::router::{self, RequestView};
use crate::serve::h1::OnUpgrade;
use crate::snapshot::{CompiledRoute, Snapshot};

/// The route a request matched, with what its match decided.
pub(crate) struct Routed<'s> {
    pub matched: router::Matched<'s>,
    pub route: &'s CompiledRoute,
    pub action: &'s ProxyAction,
    /// A WebSocket upgrade (HTTP/1.1, or RFC 8441 over HTTP/2) on a route that allows it:
    /// the response may switch protocols, and nothing is cached.
    pub upgrade: bool,
    /// The client's location, when some part of the route reads it (looked up once).
    pub geo: Option<crate::geo::Location>,
}

/// Finds the request's route: 404 without one, the redirect of a redirect route, the fixed
/// answer of a `respond` route.
pub(super) fn find<'s, B>(
    snap: &'s Snapshot,
    conn: &ConnInfo,
    req: &Request<B>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<Routed<'s>, Stop> {
    // Hosts are normalized only for a router that tells routes apart by host.
    let host = match snap.router.by_host() {
        true => arrival.host(),
        false => std::borrow::Cow::Borrowed(""),
    };
    // Looked up only when a route condition or the matched route reads it.
    let lazy = snap.geo.as_ref().map(|g| g.lazy(arrival.client_ip));
    let view = RequestView {
        host: &host,
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
        geo: lazy.as_ref(),
    };
    let Some(matched) = snap.router.find(&view) else {
        done.route_metrics = snap.metrics_on.then(|| snap.unmatched.clone());
        return Err(Stop::Fail(ProxyError::NoRoute {
            method: req.method().clone(),
            host: arrival.host().into_owned(),
            path: req.uri().path().to_owned(),
        }));
    };
    let route = &snap.routes[matched.route];
    done.route_metrics = snap.metrics_on.then(|| route.metrics.clone());
    if let (Some(_), Some(svc)) = (&route.cache, &snap.cache) {
        done.cache_status = Some(svc.gateway_status.clone());
    }
    done.rate_policy.clone_from(&route.rate_limit_policy);
    let geo = lazy
        .filter(|_| route.uses_geo)
        .map(crate::geo::Lazy::into_location);
    if let (Some(counts), Some(loc)) = (&route.geo_counts, &geo) {
        counts.count(loc);
    }
    if let Some(t) = done.trace_mut() {
        t.route = Some(route.name.clone());
    }
    if let Some(log) = done.log_mut() {
        log.set_route(&route.name, &route.history);
        log.geo.clone_from(&geo);
    }
    let action = match &route.action {
        Action::Redirect(r) => {
            let scheme = if conn.tls { "https" } else { "http" };
            let location = router::redirect_location(
                r,
                scheme,
                arrival.host_text().unwrap_or(""),
                req.uri().path(),
                req.uri().query(),
            );
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = r.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut()
                .insert(X_REQUEST_ID, arrival.request_id.clone());
            return Err(Stop::respond(resp));
        }
        Action::Respond(r) => {
            let mut resp = Response::new(ProxyBody::full(r.body.clone()));
            *resp.status_mut() = r.status;
            *resp.headers_mut() = r.headers.clone();
            resp.headers_mut()
                .insert(X_REQUEST_ID, arrival.request_id.clone());
            return Err(Stop::respond(resp));
        }
        Action::Proxy(p) => p,
    };
    // An HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT rewritten into one
    // (`serve::h2connect`): either way the connection gave the request an upgrade handle.
    let upgrade = wants_upgrade(req.headers(), &arrival.present)
        && route.websocket
        && req.extensions().get::<OnUpgrade>().is_some();
    Ok(Routed {
        matched,
        route,
        action,
        upgrade,
        geo,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{conn, request, snapshot, Phase};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - {name: api, match: {hosts: [api.test], path: {prefix: /v1}}, upstream: u, websocket: true}
  - {name: old, match: {path: {prefix: /old}}, redirect: {status: 308, scheme: https, host: new.test}}
";

    #[test]
    fn a_request_no_route_matches_ends_with_no_route() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(&snap, request("GET", "/v2", &[("host", "api.test")]));
        let stop = find(&snap, &conn("192.0.2.1:1"), &p.req, &p.arrival, &mut p.done);
        assert!(matches!(stop, Err(Stop::Fail(ProxyError::NoRoute { .. }))));
    }

    #[test]
    fn a_redirect_route_answers_with_its_location_and_the_request_id() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(&snap, request("GET", "/old/x", &[("host", "a.test")]));
        let Err(Stop::Respond(resp)) =
            find(&snap, &conn("192.0.2.1:1"), &p.req, &p.arrival, &mut p.done)
        else {
            panic!("a redirect answers");
        };
        assert_eq!(resp.status(), 308);
        assert!(resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://new.test/old/x"));
        assert_eq!(resp.headers()[X_REQUEST_ID], p.arrival.request_id);
    }

    #[test]
    fn a_proxy_route_goes_on_with_its_action_and_upgrade() {
        let snap = snapshot(CONFIG);
        let headers = [
            ("host", "api.test"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ];
        let mut p = Phase::new(&snap, request("GET", "/v1/chat", &headers));
        // The connection's handle: an HTTP/1.1 connection gives one to an upgrade request.
        p.req.extensions_mut().insert(OnUpgrade::pair().1);
        let Ok(routed) = find(&snap, &conn("192.0.2.1:1"), &p.req, &p.arrival, &mut p.done) else {
            panic!("the api route matches");
        };
        assert_eq!(&*routed.route.name, "api");
        assert!(routed.upgrade);
        let mut p = Phase::new(&snap, request("GET", "/v1/chat", &[("host", "api.test")]));
        let routed = find(&snap, &conn("192.0.2.1:1"), &p.req, &p.arrival, &mut p.done);
        assert!(routed.is_ok_and(|r| !r.upgrade));
    }
}
