//! Whether a shared cache may store a response (RFC 9111 §3), and which header fields
//! must not be stored with it (§3.1).
//!
//! Choices where the RFC leaves room:
//! - only responses to GET are stored; a HEAD response can refresh a stored GET response
//!   (see `conditional::head_update`) but is never stored itself;
//! - 206 is not stored and parts are never combined (§3.3, §3.4 are not implemented), so
//!   range requests are forwarded or answered with the full stored 200 by the caller;
//! - `Set-Cookie` makes a response unstorable unless [`StoreOptions::store_set_cookie`]:
//!   RFC 9111 allows storing it, but one user's cookie served to everyone is the classic
//!   shared-cache leak;
//! - `Vary: *` (or a malformed `Vary`) is not stored: it could never be served;
//! - a response with nothing that could ever make it reusable (no explicit lifetime, no
//!   `Last-Modified` to base a heuristic on, no validator, no stale-* permission) is not
//!   stored, although §3 would allow it: it would only occupy space.

use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderName, AUTHORIZATION, CONNECTION, DATE, ETAG, EXPIRES, LAST_MODIFIED,
    SET_COOKIE,
};
use http::{Method, StatusCode};

use super::control::{split_list, FieldScope, RequestDirectives, ResponseDirectives};
use super::date::{date_field, http_date_value, DateField};
use super::vary::{vary_names, VaryNames};

/// Hop-by-hop fields (RFC 9110 §7.6.1) and proxy-specific ones (RFC 9111 §3.1).
const NOT_STORED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
];

/// Storage policy beyond the RFC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Store responses that set cookies (they are then served to every client).
    pub store_set_cookie: bool,
}

/// A response that may be stored once `strip` fields are removed (qualified `private` and
/// `no-cache` field names, §5.2.2.4 and §5.2.2.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storable {
    pub strip: Vec<HeaderName>,
}

/// Why a response is not stored; the text suits logs and Cache-Status `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    #[error("responses to {0} are not stored")]
    Method(Method),
    #[error("status {0} is not final")]
    NotFinal(StatusCode),
    #[error("304 updates a stored response but is not stored itself")]
    NotModified,
    #[error("partial content (206) is not stored and parts are not combined")]
    PartialContent,
    #[error("must-understand with status {0}, whose caching rules are not implemented")]
    NotUnderstood(StatusCode),
    #[error("request has no-store")]
    RequestNoStore,
    #[error("response has no-store")]
    ResponseNoStore,
    #[error("response is private")]
    Private,
    #[error(
        "request has authorization and response has none of public, s-maxage, must-revalidate"
    )]
    Authorization,
    #[error("response sets a cookie")]
    SetCookie,
    #[error("response varies on * or has a malformed vary")]
    VaryAny,
    #[error("status {0} is not cacheable without explicit freshness")]
    NotCacheable(StatusCode),
    #[error("response has no lifetime, validator or stale permission")]
    NothingToReuse,
}

/// Decides whether a shared cache may store `response` to a `method` request (RFC 9111 §3).
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &RequestDirectives,
    status: StatusCode,
    response: &HeaderMap,
    response_cc: &ResponseDirectives,
    options: &StoreOptions,
) -> Result<Storable, NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method(method.clone()));
    }
    match status {
        _ if status.is_informational() => return Err(NotStorable::NotFinal(status)),
        StatusCode::NOT_MODIFIED => return Err(NotStorable::NotModified),
        StatusCode::PARTIAL_CONTENT => return Err(NotStorable::PartialContent),
        _ => {}
    }
    // §5.2.2.3: must-understand limits storage to caches that know the status code, and
    // such a cache ignores the no-store sent alongside for older caches.
    let understood = is_understood_status(status);
    if response_cc.must_understand && !understood {
        return Err(NotStorable::NotUnderstood(status));
    }
    if request_cc.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if response_cc.no_store && !(response_cc.must_understand && understood) {
        return Err(NotStorable::ResponseNoStore);
    }
    if response_cc.private == FieldScope::Whole {
        return Err(NotStorable::Private);
    }
    // §3.5: only these directives let a shared cache reuse an authenticated response.
    let shareable =
        response_cc.public || response_cc.s_maxage.is_some() || response_cc.must_revalidate;
    if request.contains_key(AUTHORIZATION) && !shareable {
        return Err(NotStorable::Authorization);
    }
    if response.contains_key(SET_COOKIE) && !options.store_set_cookie {
        return Err(NotStorable::SetCookie);
    }
    if vary_names(response) == VaryNames::Any {
        return Err(NotStorable::VaryAny);
    }
    let expires = !response_cc.targeted && response.contains_key(EXPIRES);
    let explicit = response_cc.has_explicit_lifetime() || expires;
    if !(explicit || response_cc.public || is_heuristically_cacheable(status)) {
        return Err(NotStorable::NotCacheable(status));
    }
    let reusable = explicit
        || response.contains_key(LAST_MODIFIED)
        || response.contains_key(ETAG)
        || response_cc.stale_while_revalidate.is_some()
        || response_cc.stale_if_error.is_some();
    if !reusable {
        return Err(NotStorable::NothingToReuse);
    }
    let mut strip = response_cc.private.field_names().to_vec();
    for name in response_cc.no_cache.field_names() {
        if !strip.contains(name) {
            strip.push(name.clone());
        }
    }
    Ok(Storable { strip })
}

/// Status codes cacheable by default (RFC 9110 §15.1), to which heuristic freshness applies.
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose caching requirements this cache implements (for `must-understand`):
/// the final codes RFC 9110 defines, except 206 and 304 which are never stored.
pub fn is_understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Removes what must not be stored (RFC 9111 §3.1): hop-by-hop fields, fields nominated by
/// `Connection`, proxy authentication fields, and `extra` (from [`Storable::strip`]).
pub fn strip_for_storage(headers: &mut HeaderMap, extra: &[HeaderName]) {
    let nominated: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|line| split_list(line.as_bytes()))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in nominated.iter().chain(extra) {
        headers.remove(name);
    }
    for name in NOT_STORED {
        headers.remove(name);
    }
}

/// Adds `Date` when the origin sent none or an invalid one, as a recipient caching a
/// response must (RFC 9110 §6.6.1); [`super::freshness::StoredMeta`] assumes the same time.
pub fn add_missing_date(headers: &mut HeaderMap, response_time: SystemTime) {
    let valid = matches!(
        date_field(headers, &DATE, response_time),
        DateField::Valid(_)
    );
    if !valid {
        headers.insert(DATE, http_date_value(response_time));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "storable/tests.rs"]
mod tests;
