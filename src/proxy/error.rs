//! Request errors and the one place that maps them to an HTTP status and a problem+json body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// Why the gateway answered a request itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("no route for {method} {host}{path}")]
    NoRoute {
        method: http::Method,
        host: String,
        path: String,
    },
    #[error("no healthy target in upstream {0}")]
    NoHealthyTarget(String),
    #[error("upstream {0} is at its concurrency limit and its queue is full or timed out")]
    UpstreamBusy(String),
    #[error("request body larger than the route allows")]
    PayloadTooLarge,
    #[error("request body not received in time")]
    RequestBodyTimeout,
    #[error("too many request header fields")]
    TooManyHeaders,
    #[error("upstream connection to {target} failed: {source}")]
    UpstreamConnect {
        target: String,
        #[source]
        source: crate::upstream::pool::UpstreamError,
    },
    #[error("upstream {target} failed: {source}")]
    UpstreamFailed {
        target: String,
        #[source]
        source: crate::upstream::pool::UpstreamError,
    },
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(&'static str),
    #[error("upstream {target} did not answer within {timeout_ms} ms")]
    UpstreamTimeout { target: String, timeout_ms: u128 },
    #[error("request body from the client failed")]
    DownstreamBody,
    #[error("rate limit of policy {0} exceeded")]
    RateLimited(std::sync::Arc<str>),
    #[error("rate-limit policy {0} cannot decide: its store failed")]
    RateLimitUnavailable(std::sync::Arc<str>),
    #[error("not authenticated")]
    Unauthorized,
    #[error("access denied")]
    Forbidden,
    #[error("the token lacks a required scope")]
    InsufficientScope,
    #[error("identity provider unavailable")]
    AuthUnavailable,
    #[error("request failed validation")]
    InvalidRequest,
    #[error("unsupported request content type")]
    UnsupportedMediaType,
    #[error("only-if-cached and no usable stored response")]
    OnlyIfCached,
    #[error("the stored response needs validation and the upstream is unreachable")]
    StaleForbidden,
    #[error("queue {0} is full")]
    QueueFull(std::sync::Arc<str>),
    #[error("queue {0} could not store the job")]
    QueueUnavailable(std::sync::Arc<str>),
    #[error("the message could not be published to stream {0}")]
    PublishFailed(std::sync::Arc<str>),
    #[error("no such job")]
    JobNotFound,
    #[error("the job has no result yet")]
    JobNotFinished,
    #[error("the idempotency key was used with a different request")]
    IdempotencyConflict,
    #[error("route {0} has its most WebSocket tunnels open")]
    TunnelsFull(std::sync::Arc<str>),
    #[error("the client has its most WebSocket tunnels open on route {0}")]
    TunnelsPerClient(std::sync::Arc<str>),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// The one error → status table (docs/request-lifecycle.md repeats it).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::DownstreamBody | ProxyError::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden | ProxyError::InsufficientScope => StatusCode::FORBIDDEN,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::NoRoute { .. } | ProxyError::JobNotFound | ProxyError::JobNotFinished => {
                StatusCode::NOT_FOUND
            }
            ProxyError::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::QueueFull(_)
            | ProxyError::QueueUnavailable(_)
            | ProxyError::PublishFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoHealthyTarget(_)
            | ProxyError::UpstreamBusy(_)
            | ProxyError::RateLimitUnavailable(_)
            | ProxyError::TunnelsFull(_)
            | ProxyError::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited(_) | ProxyError::TunnelsPerClient(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. }
            | ProxyError::OnlyIfCached
            | ProxyError::StaleForbidden => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short client-facing detail: never internals such as addresses or library errors.
    fn detail(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::NoRoute { .. } => "no route matches this request",
            ProxyError::NoHealthyTarget(_) => "no upstream target is available",
            ProxyError::UpstreamBusy(_) => "the upstream is busy; try again later",
            ProxyError::PayloadTooLarge => "the request body is larger than allowed",
            ProxyError::RequestBodyTimeout => "the request body was not received in time",
            ProxyError::TooManyHeaders => "the request has too many header fields",
            ProxyError::UpstreamConnect { .. } => "the upstream could not be reached",
            ProxyError::UpstreamFailed { .. } => "the upstream response was invalid or cut",
            ProxyError::UpstreamProtocol(_) => "the upstream response was invalid",
            ProxyError::UpstreamTimeout { .. } => "the upstream did not answer in time",
            ProxyError::DownstreamBody => "the request body could not be read",
            ProxyError::RateLimited(_) => "too many requests; see Retry-After",
            ProxyError::TunnelsFull(_) => {
                "too many WebSocket connections are open; try again later"
            }
            ProxyError::TunnelsPerClient(_) => "too many WebSocket connections from this client",
            ProxyError::RateLimitUnavailable(_) => {
                "the rate limiter is unavailable; try again later"
            }
            ProxyError::Unauthorized => "authentication is required",
            ProxyError::Forbidden => "access to this resource is denied",
            ProxyError::InsufficientScope => {
                "the access token lacks a scope this resource requires"
            }
            ProxyError::AuthUnavailable => "the identity provider is unavailable; try again later",
            ProxyError::InvalidRequest => "the request failed validation",
            ProxyError::UnsupportedMediaType => "the request content type is not accepted here",
            ProxyError::OnlyIfCached => "only-if-cached and the response is not in the cache",
            ProxyError::StaleForbidden => {
                "the cached response must be revalidated and the upstream is unreachable"
            }
            ProxyError::QueueFull(_) => "the queue is full; try again later (see Retry-After)",
            ProxyError::QueueUnavailable(_) => {
                "the job could not be stored and was not accepted; try again later"
            }
            ProxyError::PublishFailed(_) => {
                "the message could not be published and was not accepted; try again later"
            }
            ProxyError::JobNotFound => "no such job (or it expired, or it is not yours)",
            ProxyError::JobNotFinished => "the job has no result yet; see its status",
            ProxyError::IdempotencyConflict => {
                "this Idempotency-Key was already used with a different request"
            }
            ProxyError::Internal(_) => "internal error",
        }
    }

    /// The problem+json response for this error.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut resp = problem_response(self.status(), self.detail(), request_id);
        if let ProxyError::QueueFull(_) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// An RFC 9457 problem+json response.
pub fn problem_response(
    status: StatusCode,
    detail: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = problem_body(status, detail);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(crate::message::X_REQUEST_ID, request_id.clone());
    resp
}

/// Adds `"trace_id"` to a problem+json body the gateway made (a stored or relayed one, or
/// one with a declared length, is left as it is).
pub fn add_trace_id(resp: &mut Response<ProxyBody>, trace_id: &str) {
    let problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !problem || resp.headers().contains_key(header::CONTENT_LENGTH) {
        return;
    }
    let Some(body) = resp.body_mut().full_bytes_mut() else {
        return;
    };
    let Some(open) = body.strip_suffix(b"}") else {
        return;
    };
    let mut out = Vec::with_capacity(body.len() + 16 + trace_id.len());
    out.extend_from_slice(open);
    out.extend_from_slice(b",\"trace_id\":\"");
    out.extend_from_slice(trace_id.as_bytes());
    out.extend_from_slice(b"\"}");
    *body = Bytes::from(out);
}

/// `{"type":"about:blank","title":…,"status":…,"detail":…}`.
pub fn problem_body(status: StatusCode, detail: &str) -> String {
    let mut out = String::with_capacity(96 + detail.len());
    out.push_str("{\"type\":\"about:blank\",\"title\":\"");
    out.push_str(status.canonical_reason().unwrap_or("Error"));
    out.push_str("\",\"status\":");
    out.push_str(itoa::Buffer::new().format(status.as_u16()));
    out.push_str(",\"detail\":\"");
    for c in detail.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push_str("\"}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status_of(e: ProxyError) -> u16 {
        e.status().as_u16()
    }

    #[test]
    fn malformed_request_is_400() {
        assert_eq!(status_of(ProxyError::BadRequest("x")), 400);
        assert_eq!(status_of(ProxyError::DownstreamBody), 400);
    }

    #[test]
    fn no_route_is_404() {
        let e = ProxyError::NoRoute {
            method: http::Method::GET,
            host: "a".into(),
            path: "/".into(),
        };
        assert_eq!(e.to_string(), "no route for GET a/");
        assert_eq!(status_of(e), 404);
    }

    #[test]
    fn no_healthy_target_is_503() {
        assert_eq!(status_of(ProxyError::NoHealthyTarget("api".into())), 503);
    }

    #[test]
    fn tunnel_limits_are_503_for_the_route_and_429_for_a_client() {
        assert_eq!(status_of(ProxyError::TunnelsFull("ws".into())), 503);
        assert_eq!(status_of(ProxyError::TunnelsPerClient("ws".into())), 429);
    }

    #[test]
    fn upstream_busy_is_503() {
        assert_eq!(status_of(ProxyError::UpstreamBusy("api".into())), 503);
    }

    #[test]
    fn payload_too_large_is_413() {
        assert_eq!(status_of(ProxyError::PayloadTooLarge), 413);
    }

    #[test]
    fn request_body_timeout_is_408() {
        assert_eq!(status_of(ProxyError::RequestBodyTimeout), 408);
    }

    #[test]
    fn too_many_headers_is_431() {
        assert_eq!(status_of(ProxyError::TooManyHeaders), 431);
    }

    #[test]
    fn upstream_timeout_is_504() {
        let e = ProxyError::UpstreamTimeout {
            target: "t".into(),
            timeout_ms: 5,
        };
        assert_eq!(status_of(e), 504);
    }

    #[test]
    fn forbidden_and_insufficient_scope_are_403() {
        assert_eq!(status_of(ProxyError::Forbidden), 403);
        assert_eq!(status_of(ProxyError::InsufficientScope), 403);
    }

    #[test]
    fn internal_is_500() {
        assert_eq!(status_of(ProxyError::Internal("x")), 500);
    }

    #[test]
    fn problem_body_is_json_with_escaped_detail() {
        let b = problem_body(StatusCode::NOT_FOUND, "a \"quoted\" \\ path");
        assert_eq!(
            b,
            r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"a \"quoted\" \\ path"}"#
        );
    }
}
