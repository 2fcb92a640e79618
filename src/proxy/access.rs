//! The ACCESS phase's effects on a request: answering a refusal, reading and validating a
//! body, and telling the upstream who the caller is (claims, consumer) without letting a
//! client pose as anyone.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::auth::gate::{Authenticated, Denied, Hidden};
use crate::body::ProxyBody;
use crate::error::{problem_response, ProxyError};
use crate::serve::DownstreamBody;
use crate::validate::schema::{problem_body, BodyError, BodySchemas};

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
        Denied::Unavailable(reason) => {
            tracing::warn!(%reason, "identity provider unavailable");
            ProxyError::AuthUnavailable.to_response(request_id)
        }
        Denied::Invalid(violations) => invalid(&violations, request_id),
    }
}

fn invalid(
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
    resp.headers_mut().insert(super::X_REQUEST_ID, request_id);
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

/// Reads the whole body (at most `limit` bytes) and checks it against the route's schemas.
/// The body is left drained: the caller forwards the returned bytes instead.
pub(super) async fn validated_body(
    schemas: &BodySchemas,
    headers: &HeaderMap,
    body: &mut DownstreamBody,
    limit: usize,
    request_id: &HeaderValue,
) -> Result<Bytes, Response<ProxyBody>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // The content type is checked before a byte of the body is read.
    if let Err(BodyError::UnsupportedMediaType) = schemas.validate(content_type, b"") {
        return Err(ProxyError::UnsupportedMediaType.to_response(request_id));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ProxyError::DownstreamBody.to_response(request_id));
        };
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(ProxyError::PayloadTooLarge.to_response(request_id));
            }
            buf.extend_from_slice(data);
        }
    }
    let bytes = buf.freeze();
    match schemas.validate(content_type, &bytes) {
        Ok(()) => Ok(bytes),
        Err(BodyError::UnsupportedMediaType) => {
            Err(ProxyError::UnsupportedMediaType.to_response(request_id))
        }
        Err(BodyError::TooLarge { .. }) => Err(ProxyError::PayloadTooLarge.to_response(request_id)),
        Err(BodyError::Invalid(violations)) => Err(invalid(&violations, request_id)),
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
