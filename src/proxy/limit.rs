//! LIMIT: limits that need no upstream. A declared body over the route's (or listener's)
//! size limit is refused with 413 before a byte of it is read, an HTTP/2 head with too many
//! fields with 431 (the HTTP/1.1 parser counts its own), and the route's rate-limit
//! policies admit the request or refuse it with 429 and their fields.

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

/// What the limits let through.
pub(crate) struct Admitted {
    /// The route's (or listener's) request body limit.
    pub max_body: Option<u64>,
    /// The rate-limit verdict, whose fields go on the response.
    pub passed: Option<Passed>,
}

/// Checks the size and field-count limits, then the rate limits.
pub(super) async fn admit<B>(
    snap: &Snapshot,
    routed: &Routed<'_>,
    conn: &ConnInfo,
    req: &Request<B>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
    done: &mut Completion,
) -> Result<Admitted, Stop> {
    let route = routed.route;
    let listener = &snap.listeners[conn.listener];
    let max_body = route.max_body_bytes.or(listener.limits.max_body_bytes);
    if let Some(max) = max_body {
        if declared_length(req.headers()).is_some_and(|n| n > max) {
            return Err(Stop::Fail(ProxyError::PayloadTooLarge));
        }
    }
    if req.headers().len() > listener.limits.max_headers {
        return Err(Stop::Fail(ProxyError::TooManyHeaders));
    }
    if route.rate_limits.is_empty() {
        return Ok(Admitted {
            max_body,
            passed: None,
        });
    }
    let ctx = KeyContext {
        client_ip: arrival.client_ip,
        route: &route.name,
        path: req.uri().path(),
        headers: req.headers(),
        consumer: caller.and_then(|a| a.identity.name()),
        consumer_header: snap.config.rate_limiting.consumer_header.as_ref(),
    };
    match ratelimit::admit(&route.rate_limits, &ctx).await {
        Admission::Pass(mut p) => {
            done.holds = std::mem::take(&mut p.holds);
            Ok(Admitted {
                max_body,
                passed: Some(p),
            })
        }
        Admission::Limited(p) => {
            let name = p.refused_by().unwrap_or_default();
            let mut resp = ProxyError::RateLimited(name).to_response(&arrival.request_id);
            p.write_headers(resp.headers_mut());
            Err(Stop::Respond(resp))
        }
        Admission::Unavailable(name) => Err(Stop::Fail(ProxyError::RateLimitUnavailable(name))),
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
