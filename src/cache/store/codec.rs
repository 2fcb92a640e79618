//! Binary form of an [`Entry`] for a shared cache tier (Redis): a version byte, then the
//! entry's wire types below in postcard (serde; integers as varints, signed ones zigzag).
//!
//! The wire types mirror [`Entry`] in plain data: names and values as bytes, times as
//! signed microseconds since the Unix epoch, durations as microseconds (finer precision is
//! dropped, which HTTP's one-second dates never need). Decoding borrows from the input,
//! then checks every name, value, status and time as it builds the entry, so bytes from
//! Redis are never trusted. Cache-Control directives are stored as parsed rather than
//! re-parsed from the fields, so a decoded entry is exactly the one stored even if its
//! fields were edited after parsing (a 304 merge rebuilds both together).
//!
//! Changing the format: change the wire types and bump [`VERSION`]. Instances on the old
//! version read the new entries as unknown (a miss, then a fill), and the reverse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_bytes::Bytes as Raw;

use super::Entry;
use crate::cache::conditional::EntityTag;
use crate::cache::control::{FieldScope, ResponseDirectives};
use crate::cache::date::DateField;
use crate::cache::freshness::{ExchangeTimes, Lifetime, StoredMeta};
use crate::cache::vary::{VariedField, Vary};

/// Format version written first; a decoder refuses any other. Version 1 was a hand-written
/// layout of the same fields; version 2 lacked the `targeted` directive flag.
pub const VERSION: u8 = 3;

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty entry")]
    Empty,
    #[error("unknown entry format version {0}")]
    Version(u8),
    #[error("malformed entry: {0}")]
    Format(#[from] postcard::Error),
    #[error("invalid {0} in entry")]
    Invalid(&'static str),
    #[error("{0} bytes after the end of the entry")]
    Trailing(usize),
}

/// Serialises an entry: [`VERSION`], then the postcard form of its wire type.
pub fn encode(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    let fields: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(entry.body.len() + fields + entry.url.len() + 160);
    out.push(VERSION);
    Ok(postcard::to_extend(&WireEntry::from(entry), out)?)
}

/// Parses an entry; any malformed, truncated or extra byte is an error.
pub fn decode(input: &[u8]) -> Result<Entry, CodecError> {
    let (&version, rest) = input.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let (wire, trailing) = postcard::take_from_bytes::<WireEntry<'_>>(rest)?;
    if !trailing.is_empty() {
        return Err(CodecError::Trailing(trailing.len()));
    }
    wire.into_entry()
}

#[derive(Serialize, Deserialize)]
struct WireEntry<'a> {
    status: u16,
    #[serde(borrow)]
    fields: Vec<(&'a str, &'a Raw)>,
    #[serde(borrow)]
    body: &'a Raw,
    url: &'a str,
    #[serde(borrow)]
    surrogate_keys: Vec<&'a str>,
    #[serde(borrow)]
    meta: WireMeta<'a>,
}

#[derive(Serialize, Deserialize)]
struct WireMeta<'a> {
    status: u16,
    #[serde(borrow)]
    directives: WireDirectives<'a>,
    request_time: i64,
    response_time: i64,
    date: i64,
    age_value: u64,
    expires: WireDate,
    last_modified: Option<i64>,
    /// Weak flag and opaque tag.
    #[serde(borrow)]
    etag: Option<(bool, &'a Raw)>,
    #[serde(borrow)]
    vary: WireVary<'a>,
    lifetime: u64,
    heuristic: bool,
    initial_age: u64,
}

#[derive(Serialize, Deserialize)]
struct WireDirectives<'a> {
    max_age: Option<u32>,
    s_maxage: Option<u32>,
    #[serde(borrow)]
    no_cache: WireScope<'a>,
    #[serde(borrow)]
    private: WireScope<'a>,
    no_store: bool,
    public: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    must_understand: bool,
    no_transform: bool,
    immutable: bool,
    /// Set by a targeted field (`CDN-Cache-Control` and the like, RFC 9213).
    targeted: bool,
    stale_while_revalidate: Option<u32>,
    stale_if_error: Option<u32>,
}

#[derive(Serialize, Deserialize)]
enum WireScope<'a> {
    Absent,
    Whole,
    Fields(#[serde(borrow)] Vec<&'a str>),
}

#[derive(Serialize, Deserialize)]
enum WireDate {
    Absent,
    Valid(i64),
    Invalid,
}

#[derive(Serialize, Deserialize)]
enum WireVary<'a> {
    Absent,
    Any,
    /// Each nominated field and the original request's value, if it had one.
    Fields(#[serde(borrow)] Vec<(&'a str, Option<&'a Raw>)>),
}

impl<'a> From<&'a Entry> for WireEntry<'a> {
    fn from(entry: &'a Entry) -> Self {
        let meta = &entry.meta;
        let d = &meta.directives;
        WireEntry {
            status: entry.status.as_u16(),
            fields: entry
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), Raw::new(value.as_bytes())))
                .collect(),
            body: Raw::new(&entry.body),
            url: &entry.url,
            surrogate_keys: entry.surrogate_keys.iter().map(|key| &**key).collect(),
            meta: WireMeta {
                status: meta.status.as_u16(),
                directives: WireDirectives {
                    max_age: d.max_age,
                    s_maxage: d.s_maxage,
                    no_cache: WireScope::from(&d.no_cache),
                    private: WireScope::from(&d.private),
                    no_store: d.no_store,
                    public: d.public,
                    must_revalidate: d.must_revalidate,
                    proxy_revalidate: d.proxy_revalidate,
                    must_understand: d.must_understand,
                    no_transform: d.no_transform,
                    immutable: d.immutable,
                    targeted: d.targeted,
                    stale_while_revalidate: d.stale_while_revalidate,
                    stale_if_error: d.stale_if_error,
                },
                request_time: micros_since_epoch(meta.times.request_time),
                response_time: micros_since_epoch(meta.times.response_time),
                date: micros_since_epoch(meta.date),
                age_value: micros(meta.age_value),
                expires: match meta.expires {
                    DateField::Absent => WireDate::Absent,
                    DateField::Valid(time) => WireDate::Valid(micros_since_epoch(time)),
                    DateField::Invalid => WireDate::Invalid,
                },
                last_modified: meta.last_modified.map(micros_since_epoch),
                etag: meta
                    .etag
                    .as_ref()
                    .map(|tag| (tag.weak, Raw::new(&tag.opaque))),
                vary: match &meta.vary {
                    Vary::Absent => WireVary::Absent,
                    Vary::Any => WireVary::Any,
                    Vary::Fields(fields) => WireVary::Fields(
                        fields
                            .iter()
                            .map(|f| (f.name.as_str(), f.value.as_deref().map(Raw::new)))
                            .collect(),
                    ),
                },
                lifetime: micros(meta.lifetime.duration),
                heuristic: meta.lifetime.heuristic,
                initial_age: micros(meta.initial_age),
            },
        }
    }
}

impl<'a> From<&'a FieldScope> for WireScope<'a> {
    fn from(scope: &'a FieldScope) -> Self {
        match scope {
            FieldScope::Absent => WireScope::Absent,
            FieldScope::Whole => WireScope::Whole,
            FieldScope::Fields(names) => {
                WireScope::Fields(names.iter().map(HeaderName::as_str).collect())
            }
        }
    }
}

impl WireEntry<'_> {
    fn into_entry(self) -> Result<Entry, CodecError> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in self.fields {
            let value =
                HeaderValue::from_bytes(value).map_err(|_| CodecError::Invalid("field value"))?;
            headers.append(name_of(name)?, value);
        }
        Ok(Entry {
            meta: self.meta.into_meta()?,
            status: status_of(self.status)?,
            headers,
            body: Bytes::copy_from_slice(self.body),
            surrogate_keys: self.surrogate_keys.into_iter().map(Box::from).collect(),
            url: Box::from(self.url),
        })
    }
}

impl WireMeta<'_> {
    fn into_meta(self) -> Result<StoredMeta, CodecError> {
        let d = self.directives;
        Ok(StoredMeta {
            status: status_of(self.status)?,
            directives: ResponseDirectives {
                max_age: d.max_age,
                s_maxage: d.s_maxage,
                no_cache: d.no_cache.into_scope()?,
                private: d.private.into_scope()?,
                no_store: d.no_store,
                public: d.public,
                must_revalidate: d.must_revalidate,
                proxy_revalidate: d.proxy_revalidate,
                must_understand: d.must_understand,
                no_transform: d.no_transform,
                immutable: d.immutable,
                targeted: d.targeted,
                stale_while_revalidate: d.stale_while_revalidate,
                stale_if_error: d.stale_if_error,
            },
            times: ExchangeTimes {
                request_time: time_of(self.request_time)?,
                response_time: time_of(self.response_time)?,
            },
            date: time_of(self.date)?,
            age_value: Duration::from_micros(self.age_value),
            expires: match self.expires {
                WireDate::Absent => DateField::Absent,
                WireDate::Valid(micros) => DateField::Valid(time_of(micros)?),
                WireDate::Invalid => DateField::Invalid,
            },
            last_modified: self.last_modified.map(time_of).transpose()?,
            etag: self.etag.map(|(weak, opaque)| EntityTag {
                weak,
                opaque: Bytes::copy_from_slice(opaque),
            }),
            vary: match self.vary {
                WireVary::Absent => Vary::Absent,
                WireVary::Any => Vary::Any,
                WireVary::Fields(fields) => Vary::Fields(
                    fields
                        .into_iter()
                        .map(|(name, value)| {
                            Ok(VariedField {
                                name: name_of(name)?,
                                value: value.map(|v| Bytes::copy_from_slice(v)),
                            })
                        })
                        .collect::<Result<_, CodecError>>()?,
                ),
            },
            lifetime: Lifetime {
                duration: Duration::from_micros(self.lifetime),
                heuristic: self.heuristic,
            },
            initial_age: Duration::from_micros(self.initial_age),
        })
    }
}

impl WireScope<'_> {
    fn into_scope(self) -> Result<FieldScope, CodecError> {
        Ok(match self {
            WireScope::Absent => FieldScope::Absent,
            WireScope::Whole => FieldScope::Whole,
            WireScope::Fields(names) => FieldScope::Fields(
                names
                    .into_iter()
                    .map(name_of)
                    .collect::<Result<_, CodecError>>()?,
            ),
        })
    }
}

fn name_of(name: &str) -> Result<HeaderName, CodecError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| CodecError::Invalid("field name"))
}

fn status_of(code: u16) -> Result<StatusCode, CodecError> {
    StatusCode::from_u16(code).map_err(|_| CodecError::Invalid("status"))
}

/// Signed microseconds since the epoch, saturating far outside `i64`.
fn micros_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => {
            i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |micros| -micros)
        }
    }
}

fn time_of(micros: i64) -> Result<SystemTime, CodecError> {
    let offset = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.ok_or(CodecError::Invalid("time"))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
