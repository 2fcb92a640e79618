//! VALIDATE: the request body checked against the route's JSON schemas. It runs after every
//! other check, so a refused caller never makes the gateway read a body; the body is read
//! in full (under the smaller of the body limit and the schemas' own) and the bytes read are
//! what goes upstream.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::BodyExt;

use super::access::invalid;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::request::Arrival;
use super::route::Routed;
use super::Stop;
use crate::serve::DownstreamBody;
use crate::validate::schema::{BodyError, BodySchemas};

/// Reads and validates the body when the route has schemas; the bytes read, if it did.
pub(super) async fn body(
    routed: &Routed<'_>,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    max_body: Option<u64>,
) -> Result<Option<Bytes>, Stop> {
    let Some(schemas) = routed.route.gate.as_ref().and_then(|g| g.body_schemas()) else {
        return Ok(None);
    };
    // Methods that carry a body are validated even when it is empty (an empty body is not
    // valid JSON); others only when they send one.
    let carries_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if !carries_body && http_body::Body::is_end_stream(req.body()) {
        return Ok(None);
    }
    let limit = usize::try_from(max_body.unwrap_or(u64::MAX))
        .unwrap_or(usize::MAX)
        .min(schemas.max_body());
    let mut body = std::mem::replace(req.body_mut(), DownstreamBody::Empty);
    let read = validated_body(
        schemas,
        req.headers(),
        &mut body,
        limit,
        &arrival.request_id,
    )
    .await;
    *req.body_mut() = body;
    read.map(Some).map_err(Stop::respond)
}

/// Reads the whole body (at most `limit` bytes) and checks it against the route's schemas.
/// The body is left drained: the caller forwards the returned bytes instead.
async fn validated_body(
    schemas: &BodySchemas,
    headers: &HeaderMap,
    body: &mut DownstreamBody,
    limit: usize,
    request_id: &HeaderValue,
) -> Result<Bytes, http::Response<ProxyBody>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // The content type is checked before a byte of the body is read.
    if let Err(BodyError::UnsupportedMediaType) = schemas.validate(content_type, b"") {
        return Err(ProxyError::UnsupportedMediaType.to_response(request_id));
    }
    let bytes = read_whole(body, limit)
        .await
        .map_err(|e| e.to_response(request_id))?;
    match schemas.validate(content_type, &bytes) {
        Ok(()) => Ok(bytes),
        Err(BodyError::UnsupportedMediaType) => {
            Err(ProxyError::UnsupportedMediaType.to_response(request_id))
        }
        Err(BodyError::TooLarge { .. }) => Err(ProxyError::PayloadTooLarge.to_response(request_id)),
        Err(BodyError::Invalid(violations)) => Err(invalid(&violations, request_id)),
    }
}

/// Reads the whole body, at most `limit` bytes (413 beyond).
pub(super) async fn read_whole(
    body: &mut DownstreamBody,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ProxyError::DownstreamBody);
        };
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(ProxyError::PayloadTooLarge);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testing::{request, snapshot, Phase};
    use super::*;

    const CONFIG: &str = "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes:
  - name: orders
    upstream: u
    validate:
      body:
        application/json: {type: object, required: [item]}
";

    async fn run(p: &mut Phase) -> Result<Option<Bytes>, Stop> {
        let snap = snapshot(CONFIG);
        let routed = p.route(&snap);
        body(&routed, &mut p.req, &p.arrival, None).await
    }

    #[tokio::test]
    async fn a_body_of_a_type_without_a_schema_is_refused_with_415_unread() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(
            &snap,
            request("POST", "/", &[("content-type", "text/plain")]),
        );
        let Err(Stop::Respond(resp)) = run(&mut p).await else {
            panic!("text/plain has no schema");
        };
        assert_eq!(resp.status(), 415);
    }

    #[tokio::test]
    async fn an_empty_post_is_not_valid_json_and_is_refused_with_400() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(
            &snap,
            request("POST", "/", &[("content-type", "application/json")]),
        );
        let Err(Stop::Respond(resp)) = run(&mut p).await else {
            panic!("an empty body is not a JSON object");
        };
        assert_eq!(resp.status(), 400);
    }

    #[tokio::test]
    async fn a_bodiless_get_is_not_read() {
        let snap = snapshot(CONFIG);
        let mut p = Phase::new(&snap, request("GET", "/", &[]));
        assert!(matches!(run(&mut p).await, Ok(None)));
    }
}
