//! The `http::Request` of a parsed request head, built from the strict parser's one pass:
//! method and target from the request line, header values as slices of the head's bytes
//! (shared, not copied).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::serve::strict::{self, HeadParser, Rejection};

/// Room for fields the proxy may add to the request's own map (an upgrade's, a cache
/// revalidation's); its usual fields (X-Forwarded-*, Via, X-Request-Id) travel beside the
/// map. Not more: a map's table doubles at each step.
const GATEWAY_FIELDS: usize = 2;

/// Builds the request from `head`, the bytes `parser` just completed.
pub(super) fn build<B>(
    head: &Bytes,
    parser: &HeadParser,
    body: B,
) -> Result<Request<B>, Rejection> {
    let method = head
        .get(..parser.method_end)
        .and_then(|m| Method::from_bytes(m).ok())
        .ok_or(strict::INVALID_METHOD)?;
    let (ts, te) = parser.target;
    let uri = head
        .get(ts..te)
        .and_then(|_| Uri::from_maybe_shared(head.slice(ts..te)).ok())
        .ok_or(strict::INVALID_TARGET)?;
    let mut headers = crate::spare_maps::take(parser.fields.len() + GATEWAY_FIELDS);
    for &((ns, ne), (vs, ve)) in &parser.fields {
        let name = head
            .get(ns..ne)
            .and_then(|n| HeaderName::from_bytes(n).ok())
            .ok_or(strict::INVALID_FIELD_NAME)?;
        let value = match head.get(vs..ve) {
            Some([]) => HeaderValue::from_static(""),
            Some(_) => HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| strict::CONTROL_IN_FIELD_VALUE)?,
            None => return Err(strict::CONTROL_IN_FIELD_VALUE),
        };
        headers.append(name, value);
    }
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if parser.info.v11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *req.headers_mut() = headers;
    Ok(req)
}
