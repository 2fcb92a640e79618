//! Conditional requests around a stored response: answering a client's conditional GET or
//! HEAD (RFC 9110 §13.2.2, RFC 9111 §4.3.2), building the validation request to the origin
//! (RFC 9111 §4.3.1), applying the origin's answer (§4.3.3, §4.3.4, §4.3.5).
//!
//! Choices where the RFCs leave room:
//! - `If-Match` and `If-Unmodified-Since` are not evaluated by the cache (RFC 9111 §4.3.2:
//!   not applicable to a cache); they are forwarded untouched when the cache goes upstream;
//! - a client's `If-None-Match` / `If-Modified-Since` are replaced by the cache's own
//!   validators upstream, and evaluated by the cache against the response it ends up with;
//! - the validation request carries `If-None-Match` with the stored entity tags and, when a
//!   single response is validated, `If-Modified-Since` from its `Last-Modified` as well
//!   (§4.3.1 asks for both: older intermediaries only understand the date);
//! - `Last-Modified` in a 304 is treated as a weak validator (deducing it is strong needs
//!   more than the cache knows), so it selects only the most recent matching response;
//! - a malformed `If-None-Match` never produces a 304: the client gets the full response.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_LOCATION, CONTENT_RANGE, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, VARY,
};
use http::{Method, StatusCode};

use super::control::{trim, ResponseDirectives};
use super::date::{date_field, http_date_value, DateField};
use super::freshness::{age_header_value, OnError, StoredMeta};
use super::storable::strip_for_storage;

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [HeaderName; 6] =
    [CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, VARY];

/// An entity tag (RFC 9110 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    /// The characters between the quotes.
    pub opaque: Bytes,
}

/// An `If-None-Match` (or `If-Match`) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    Any,
    Tags(Vec<EntityTag>),
}

/// How to answer a client's conditional request from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConditional {
    /// Send 304 with [`not_modified_headers`].
    NotModified,
    /// Send the stored response.
    Full,
}

/// How the origin failed a validation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationFailure {
    /// The origin answered with this status (anything but 304 or a full 2xx/3xx/4xx).
    Status(StatusCode),
    /// No response: connection refused, reset, timed out.
    Unreachable,
}

/// What the cache does after a failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Serve the stored response (stale-if-error, or still fresh).
    ServeStored,
    /// Forward the origin's response as it is.
    Forward,
    /// Answer 504 (must-revalidate and kin with an unreachable origin).
    GatewayTimeout,
    /// Answer as for any upstream failure (the gateway's usual 502/504 mapping).
    UpstreamError,
}

/// What a 200 response to a HEAD request means for a stored GET response (§4.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadUpdate {
    /// Same representation: merge the HEAD response's fields like a 304's.
    Update,
    /// Possibly another representation: treat the stored response as stale.
    MarkStale,
}

impl EntityTag {
    /// Parses exactly one entity tag, surrounding whitespace allowed.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let (tag, rest) = parse_tag(trim(value))?;
        rest.is_empty().then_some(tag)
    }

    /// Weak comparison: the opaque tags match, weakness ignored (RFC 9110 §8.8.3.2).
    pub fn weak_eq(&self, other: &Self) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and the opaque tags match.
    pub fn strong_eq(&self, other: &Self) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    fn write(&self, out: &mut Vec<u8>) {
        if self.weak {
            out.extend_from_slice(b"W/");
        }
        out.push(b'"');
        out.extend_from_slice(&self.opaque);
        out.push(b'"');
    }
}

/// Parses all lines of a `*` / `#entity-tag` field; `None` when absent or malformed.
pub fn tag_list(headers: &HeaderMap, name: &HeaderName) -> Option<TagList> {
    let mut tags = Vec::new();
    let mut any = false;
    let mut lines = 0;
    for line in headers.get_all(name) {
        lines += 1;
        let mut rest = trim(line.as_bytes());
        if rest == b"*" {
            any = true;
            continue;
        }
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            let (tag, after) = parse_tag(rest)?;
            tags.push(tag);
            rest = trim(after);
            match rest.first() {
                None | Some(b',') => {}
                Some(_) => return None,
            }
        }
    }
    match (lines, any, tags.is_empty()) {
        (0, _, _) => None,
        (_, true, true) => Some(TagList::Any),
        // `*` is only valid alone.
        (_, true, false) => None,
        (_, false, true) => None,
        (_, false, false) => Some(TagList::Tags(tags)),
    }
}

/// Evaluates a client's `If-None-Match` / `If-Modified-Since` against a stored response
/// (RFC 9110 §13.2.2 steps 3 and 4, RFC 9111 §4.3.2).
///
/// Only stored 200 responses are evaluated: for any other status the request, without
/// its preconditions, would not have been answered 200, so they are ignored (§13.2.1).
pub fn evaluate_client_conditional(
    method: &Method,
    request: &HeaderMap,
    stored: &StoredMeta,
    now: SystemTime,
) -> ClientConditional {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if !get_or_head || stored.status != StatusCode::OK {
        return ClientConditional::Full;
    }
    if request.contains_key(IF_NONE_MATCH) {
        let matched = match (tag_list(request, &IF_NONE_MATCH), &stored.etag) {
            (Some(TagList::Any), _) => true,
            (Some(TagList::Tags(tags)), Some(etag)) => tags.iter().any(|t| t.weak_eq(etag)),
            _ => false,
        };
        return if matched {
            ClientConditional::NotModified
        } else {
            ClientConditional::Full
        };
    }
    // A list of dates, or an invalid one, is ignored (RFC 9110 §13.1.3).
    let DateField::Valid(since) = date_field(request, &IF_MODIFIED_SINCE, now) else {
        return ClientConditional::Full;
    };
    if request.get_all(IF_MODIFIED_SINCE).iter().count() > 1 {
        return ClientConditional::Full;
    }
    // Without Last-Modified, the stored Date stands in (RFC 9111 §4.3.2).
    let modified = stored.last_modified.unwrap_or(stored.date);
    if modified <= since {
        ClientConditional::NotModified
    } else {
        ClientConditional::Full
    }
}

/// Header fields of a 304 answered from a stored response (RFC 9110 §15.4.5): the fields a
/// 200 would carry among Cache-Control, Content-Location, Date, ETag, Expires and Vary;
/// `Last-Modified` when there is no ETag (it then guides cache updates); and `Age`.
pub fn not_modified_headers(stored: &HeaderMap, age: Duration) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(NOT_MODIFIED_FIELDS.len() + 2);
    for name in NOT_MODIFIED_FIELDS {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    if !stored.contains_key(ETAG) {
        if let Some(value) = stored.get(LAST_MODIFIED) {
            out.insert(LAST_MODIFIED, value.clone());
        }
    }
    out.insert(AGE, age_header_value(age));
    out
}

/// Turns the client's request headers into the validation request for `stored` (the
/// responses the request could select). The client's `If-None-Match` and
/// `If-Modified-Since` are removed, since the cache evaluates them itself; the stored
/// validators are added. With no stored response this prepares a plain fill request.
/// Returns whether a validator was added.
pub fn prepare_validation(request: &mut HeaderMap, stored: &[&StoredMeta]) -> bool {
    request.remove(IF_NONE_MATCH);
    request.remove(IF_MODIFIED_SINCE);
    let mut tags: Vec<u8> = Vec::new();
    for etag in stored.iter().filter_map(|meta| meta.etag.as_ref()) {
        if !tags.is_empty() {
            tags.extend_from_slice(b", ");
        }
        etag.write(&mut tags);
    }
    let mut added = false;
    if let Ok(value) = HeaderValue::from_bytes(&tags) {
        if !tags.is_empty() {
            request.insert(IF_NONE_MATCH, value);
            added = true;
        }
    }
    if let [single] = stored {
        if let Some(modified) = single.last_modified {
            request.insert(IF_MODIFIED_SINCE, http_date_value(modified));
            added = true;
        }
    }
    added
}

/// Picks the stored responses a 304 refreshes (RFC 9111 §4.3.4), as indices into
/// `candidates` (the responses the request could have selected, freshness aside).
pub fn select_for_update(
    candidates: &[&StoredMeta],
    not_modified: &HeaderMap,
    now: SystemTime,
) -> Vec<usize> {
    let mut etag_lines = not_modified.get_all(ETAG).iter();
    let etag = match (etag_lines.next(), etag_lines.next()) {
        (None, _) => None,
        (Some(line), None) => match EntityTag::parse(line.as_bytes()) {
            Some(tag) => Some(tag),
            // A validator that cannot be read identifies nothing safely.
            None => return Vec::new(),
        },
        (Some(_), Some(_)) => return Vec::new(),
    };
    if let Some(strong) = etag.as_ref().filter(|tag| !tag.weak) {
        return candidates
            .iter()
            .enumerate()
            .filter(|(_, meta)| meta.etag.as_ref().is_some_and(|tag| tag.strong_eq(strong)))
            .map(|(i, _)| i)
            .collect();
    }
    let modified = match date_field(not_modified, &LAST_MODIFIED, now) {
        DateField::Valid(time) => Some(time),
        DateField::Absent | DateField::Invalid => None,
    };
    if etag.is_none() && modified.is_none() {
        return match candidates {
            [only] if !only.has_validator() => vec![0],
            _ => Vec::new(),
        };
    }
    let corresponds = |meta: &StoredMeta| {
        let by_tag = matches!((&etag, &meta.etag), (Some(new), Some(old)) if new.weak_eq(old));
        by_tag || (modified.is_some() && modified == meta.last_modified)
    };
    candidates
        .iter()
        .enumerate()
        .filter(|(_, meta)| corresponds(meta))
        .max_by_key(|(_, meta)| meta.date)
        .map(|(i, _)| vec![i])
        .unwrap_or_default()
}

/// Updates a stored response's header fields from a 304 or HEAD response (RFC 9111 §3.2):
/// each field received replaces the stored one, except `Content-Length`, `Content-Range`
/// (the stored response is complete), the fields that describe the stored body itself
/// (`Content-Encoding`, `Content-MD5`, and `ETag`, by which the 304 selected it), hop-by-hop
/// and proxy fields. `Age` and `Date`
/// describe the new message: a missing `Age` removes the old one, a missing `Date` becomes
/// `received_at`. Fields the merged Cache-Control names in `private` / `no-cache` go.
///
/// Afterwards rebuild the [`StoredMeta`] with the validation's times and check
/// [`super::storable::storable`] again: the origin may have sent `no-store` this time.
pub fn merge_not_modified(
    stored: &mut HeaderMap,
    not_modified: &HeaderMap,
    received_at: SystemTime,
) {
    let mut update = not_modified.clone();
    strip_for_storage(
        &mut update,
        &[
            CONTENT_LENGTH,
            CONTENT_RANGE,
            CONTENT_ENCODING,
            HeaderName::from_static("content-md5"),
            ETAG,
        ],
    );
    for name in update.keys() {
        stored.remove(name);
    }
    for (name, value) in &update {
        stored.append(name.clone(), value.clone());
    }
    if !not_modified.contains_key(AGE) {
        stored.remove(AGE);
    }
    if !matches!(
        date_field(not_modified, &DATE, received_at),
        DateField::Valid(_)
    ) {
        stored.insert(DATE, http_date_value(received_at));
    }
    let directives = ResponseDirectives::parse(stored);
    for name in directives
        .private
        .field_names()
        .iter()
        .chain(directives.no_cache.field_names())
    {
        stored.remove(name);
    }
}

/// What a failed validation leads to (RFC 9111 §4.3.3; RFC 5861 §4 counts 500, 502, 503
/// and 504 as errors).
pub fn after_failed_validation(on_error: OnError, failure: ValidationFailure) -> Fallback {
    match (failure, on_error) {
        (ValidationFailure::Status(status), OnError::ServeStored) if is_error_status(status) => {
            Fallback::ServeStored
        }
        (ValidationFailure::Status(_), _) => Fallback::Forward,
        (ValidationFailure::Unreachable, OnError::ServeStored) => Fallback::ServeStored,
        (ValidationFailure::Unreachable, OnError::GatewayTimeout) => Fallback::GatewayTimeout,
        (ValidationFailure::Unreachable, OnError::ForwardError) => Fallback::UpstreamError,
        (ValidationFailure::Unreachable, OnError::ServeStoredIfUnreachable) => {
            Fallback::ServeStored
        }
    }
}

/// Whether a 200 to HEAD describes the stored GET response (RFC 9111 §4.3.5): every
/// validator it carries (`ETag`, `Last-Modified`, at least one) equals the stored one, and
/// its `Content-Length`, if any, too.
pub fn head_update(stored: &HeaderMap, head: &HeaderMap) -> HeadUpdate {
    let same = |name: &HeaderName| match (stored.get(name), head.get(name)) {
        (_, None) => true,
        (Some(old), Some(new)) => trim(old.as_bytes()) == trim(new.as_bytes()),
        (None, Some(_)) => false,
    };
    let has_validator = head.contains_key(ETAG) || head.contains_key(LAST_MODIFIED);
    if has_validator && same(&ETAG) && same(&LAST_MODIFIED) && same(&CONTENT_LENGTH) {
        HeadUpdate::Update
    } else {
        HeadUpdate::MarkStale
    }
}

fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// One entity tag at the start of `v`, and the rest.
fn parse_tag(v: &[u8]) -> Option<(EntityTag, &[u8])> {
    let (weak, v) = match v.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let body = v.strip_prefix(b"\"")?;
    let close = body.iter().position(|&b| b == b'"')?;
    let opaque = &body[..close];
    // etagc = %x21 / %x23-7E / obs-text
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80)
    {
        return None;
    }
    let tag = EntityTag {
        weak,
        opaque: Bytes::copy_from_slice(opaque),
    };
    Some((tag, &body[close + 1..]))
}

fn skip_separators(mut v: &[u8]) -> &[u8] {
    while let Some((&first, rest)) = v.split_first() {
        if !matches!(first, b',' | b' ' | b'\t') {
            break;
        }
        v = rest;
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "conditional/tests.rs"]
mod tests;
