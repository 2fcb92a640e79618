//! ACCESS: who may make this request. In order: a CORS preflight is answered, the client
//! address is checked against the IP rules, the credential is verified (the caller it
//! names goes on to later phases and the log), and query and header parameters are checked.
//! Also the effects of the caller on the response and the upstream request: refusals, CORS
//! fields, the caller's identity told upstream without letting a client pose as anyone.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::body::ProxyBody;
use super::error::{problem_response, ProxyError};
use super::log::Completion;
use super::request::Arrival;
use super::route::Routed;
use super::{ConnInfo, Stop};
use crate::auth::cors::Preflight;
use crate::auth::gate::{Authenticated, Denied, Gate, Hidden};
use crate::auth::oidc::{Answer, Outcome, RelyingParty, RequestFacts};
use crate::message::X_REQUEST_ID;
use crate::serve::DownstreamBody;
use crate::validate::schema::problem_body;

/// Runs the route's access checks; the verified caller, if the route authenticates.
pub(super) async fn check(
    routed: &Routed<'_>,
    conn: &ConnInfo,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<Option<Authenticated>, Stop> {
    // A route without checks costs one test: the work is in a function of its own, whose
    // future is only made for routes that have a gate.
    match &routed.route.gate {
        None => Ok(None),
        Some(gate) => gated(gate, conn, req, arrival, done).await,
    }
}

async fn gated(
    gate: &Gate,
    conn: &ConnInfo,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<Option<Authenticated>, Stop> {
    let request_id = &arrival.request_id;
    match gate.preflight(req.headers(), req.method()) {
        Preflight::NotCors => {}
        Preflight::Allowed(fields) => {
            return Err(Stop::respond(preflight_answer(fields, request_id.clone())));
        }
        Preflight::Denied(why) => {
            let denied = Denied::Forbidden(why.to_string());
            return Err(Stop::respond(refusal(denied, request_id)));
        }
    }
    done.cors = gate.cors_fields(req.headers()).map(Box::new);
    if let Some(rp) = gate.oidc() {
        let denied = |d| Stop::respond(refusal(d, request_id));
        gate.check_ip(arrival.client_ip).map_err(denied)?;
        if rp.backchannel_path() == Some(req.uri().path()) && req.method() == Method::POST {
            return Err(Box::pin(backchannel(rp, req, arrival)).await);
        }
        let found = Box::pin(login(rp, conn, req, arrival, done)).await?;
        gate.check_params(req.headers(), req.uri().query())
            .map_err(denied)?;
        return Ok(Some(found));
    }
    let checked = async {
        gate.check_ip(arrival.client_ip)?;
        let found = gate
            .authenticate(
                req.headers(),
                req.uri().query(),
                conn.client_cert.as_deref(),
            )
            .await?;
        gate.check_params(req.headers(), req.uri().query())?;
        Ok(found)
    };
    let caller = checked
        .await
        .map_err(|denied| Stop::respond(refusal(denied, request_id)))?;
    if let (Some(log), Some(name)) = (
        done.log_mut(),
        caller.as_ref().and_then(|a| a.identity.name()),
    ) {
        log.consumer = Some(std::sync::Arc::from(name));
    }
    Ok(caller)
}

/// A back-channel logout token from the provider (a small form: at most 64 KiB is read).
async fn backchannel(
    rp: &RelyingParty,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
) -> Stop {
    const MAX_FORM: usize = 64 * 1024;
    let body = match super::validate::read_whole(req.body_mut(), MAX_FORM).await {
        Ok(b) => b,
        Err(e) => return Stop::Fail(e),
    };
    answer_of(rp.backchannel_logout(&body).await, arrival)
}

/// A route with OpenID Connect login: the relying party answers (a redirect to log in, the
/// callback, logout, a refusal) or names the logged-in user.
async fn login<B>(
    rp: &RelyingParty,
    conn: &ConnInfo,
    req: &Request<B>,
    arrival: &Arrival,
    done: &mut Completion,
) -> Result<Authenticated, Stop> {
    let facts = RequestFacts {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        host: arrival.host_text(),
        tls: conn.tls,
    };
    match rp.handle(&facts).await {
        Outcome::Proceed(found) => {
            if let (Some(log), Some(sub)) = (done.log_mut(), &found.identity.subject) {
                log.consumer = Some(sub.clone());
            }
            Ok(found)
        }
        Outcome::Answer(answer) => Err(answer_of(answer, arrival)),
    }
}

/// The response of a relying party's own answer.
fn answer_of(answer: Answer, arrival: &Arrival) -> Stop {
    let mut resp = match answer.problem {
        Some(detail) => problem_response(answer.status, detail, &arrival.request_id),
        None => {
            let mut resp = Response::new(ProxyBody::empty());
            *resp.status_mut() = answer.status;
            resp.headers_mut()
                .insert(X_REQUEST_ID, arrival.request_id.clone());
            resp
        }
    };
    // A name of `None` repeats the one before (several `Set-Cookie`s).
    let mut last = None;
    for (name, value) in answer.headers {
        last = name.or(last);
        if let Some(name) = &last {
            resp.headers_mut().append(name.clone(), value);
        }
    }
    Stop::respond(resp)
}

/// The answer to a refused request; the reason goes to the debug log only.
pub(super) fn refusal(denied: Denied, request_id: &HeaderValue) -> Response<ProxyBody> {
    match denied {
        Denied::Unauthenticated { challenges, reason } => {
            tracing::debug!(%reason, "request not authenticated");
            let mut resp = ProxyError::Unauthorized.to_response(request_id);
            for c in challenges {
                resp.headers_mut().append(header::WWW_AUTHENTICATE, c);
            }
            resp
        }
        Denied::Forbidden(reason) => {
            tracing::debug!(%reason, "request forbidden");
            ProxyError::Forbidden.to_response(request_id)
        }
        Denied::InsufficientScope { challenge, reason } => {
            tracing::debug!(%reason, "token lacks a scope");
            let mut resp = ProxyError::InsufficientScope.to_response(request_id);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            resp
        }
        Denied::Unavailable(reason) => {
            crate::warn_throttled!(%reason, "identity provider unavailable");
            ProxyError::AuthUnavailable.to_response(request_id)
        }
        Denied::Invalid(violations) => invalid(&violations, request_id),
    }
}

pub(super) fn invalid(
    violations: &[crate::validate::schema::Violation],
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let mut resp = problem_response(StatusCode::BAD_REQUEST, "", request_id);
    *resp.body_mut() = ProxyBody::full(Bytes::from(problem_body(violations)));
    resp
}

/// A 204 answering an allowed CORS preflight.
pub(super) fn preflight_answer(fields: HeaderMap, request_id: HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    *resp.headers_mut() = fields;
    resp.headers_mut().insert(X_REQUEST_ID, request_id);
    resp
}

/// Replaces the upstream's CORS fields with the route's.
pub(super) fn apply_cors(response: &mut HeaderMap, fields: &HeaderMap) {
    response.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    response.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    response.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    for (name, value) in fields {
        response.append(name.clone(), value.clone());
    }
}

/// Upstream request fields from the credential: client copies of the reserved fields go,
/// then the verified claims and the consumer name are set, and a hidden credential is
/// removed. Returns the query parameter to drop from the target, if the credential was one.
pub(super) fn identify_upstream(
    headers: &mut HeaderMap,
    reserved: &[http::HeaderName],
    consumer_header: Option<&http::HeaderName>,
    authenticated: Option<&Authenticated>,
) -> Option<String> {
    for name in reserved {
        headers.remove(name);
    }
    let a = authenticated?;
    for (name, value) in &a.forward {
        headers.insert(name.clone(), value.clone());
    }
    if let (Some(name), Some(consumer)) = (consumer_header, &a.identity.consumer) {
        headers.insert(name.clone(), consumer.header_value().clone());
    }
    match &a.hide {
        Some(Hidden::Header(name)) => {
            headers.remove(name);
            None
        }
        Some(Hidden::Query(param)) => Some(param.clone()),
        Some(Hidden::Cookie(name)) => {
            crate::auth::oidc::session::strip_cookie(headers, name);
            None
        }
        None => None,
    }
}

/// `path?query` without the parameter `param`.
pub(super) fn strip_query_param(path_and_query: &str, param: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let source = crate::auth::apikey::KeySource::Query(param.to_owned());
    let kept = source.strip_query(query);
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{conn, request, snapshot, Phase};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - name: guarded
    upstream: u
    ip_rules: {deny: [192.0.2.0/24]}
    cors: {origins: [\"https://app.test\"], methods: [PUT]}
";

    async fn run(
        snap: &crate::snapshot::Snapshot,
        p: &mut Phase,
    ) -> Result<Option<Authenticated>, Stop> {
        let c = conn("198.51.100.1:1");
        let routed = p.route(snap);
        check(&routed, &c, &mut p.req, &p.arrival, &mut p.done).await
    }

    #[tokio::test]
    async fn an_allowed_preflight_is_answered_with_204_and_the_cors_fields() {
        let snap = snapshot(CONFIG);
        let fields = [
            ("origin", "https://app.test"),
            ("access-control-request-method", "PUT"),
        ];
        let mut p = Phase::new(&snap, request("OPTIONS", "/x", &fields));
        p.arrival.client_ip = "198.51.100.1".parse().unwrap();
        let Err(Stop::Respond(resp)) = run(&snap, &mut p).await else {
            panic!("a preflight is answered");
        };
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.test"
        );
        assert_eq!(resp.headers()[X_REQUEST_ID], p.arrival.request_id);
    }

    #[tokio::test]
    async fn a_denied_address_is_refused_with_403_before_anything_else() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(&snap, request("GET", "/x", &[]));
        let Err(Stop::Respond(resp)) = run(&snap, &mut p).await else {
            panic!("192.0.2.1 is denied");
        };
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_allowed_request_goes_on_with_the_cors_fields_kept_for_the_response() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(
            &snap,
            request("GET", "/x", &[("origin", "https://app.test")]),
        );
        p.arrival.client_ip = "198.51.100.1".parse().unwrap();
        assert!(matches!(run(&snap, &mut p).await, Ok(None)));
        let kept = p.done.cors.as_ref().unwrap();
        assert_eq!(kept["access-control-allow-origin"], "https://app.test");
    }
}
