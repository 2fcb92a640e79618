//! Binary form of an [`Entry`] for a shared cache tier (Redis): versioned, compact, and
//! decoded without trusting a single length or tag.
//!
//! Layout (version 1): version byte, status (u16 BE), field lines, body, URL, surrogate
//! keys, then every [`StoredMeta`] field. Lengths, counts and integers are LEB128 varints;
//! times are signed microseconds since the Unix epoch (zigzag), durations microseconds:
//! finer precision is dropped, which HTTP's one-second dates never need. Cache-Control
//! directives are encoded as parsed rather than re-parsed from the fields on decode, so a
//! decoded entry is exactly the one stored even if its fields were edited after parsing
//! (a 304 merge rebuilds both together).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::Entry;
use crate::cache::conditional::EntityTag;
use crate::cache::control::{FieldScope, ResponseDirectives};
use crate::cache::date::DateField;
use crate::cache::freshness::{ExchangeTimes, Lifetime, StoredMeta};
use crate::cache::vary::{VariedField, Vary};

/// Format version written first; a decoder refuses any other.
pub const VERSION: u8 = 1;

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown entry format version {0}")]
    Version(u8),
    #[error("entry truncated at byte {0}")]
    Truncated(usize),
    #[error("invalid {what} at byte {at}")]
    Invalid { what: &'static str, at: usize },
    #[error("{0} bytes after the end of the entry")]
    Trailing(usize),
}

/// Serialises an entry.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let fields: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = Writer(Vec::with_capacity(
        entry.body.len() + fields + entry.url.len() + 160,
    ));
    out.u8(VERSION);
    out.status(entry.status);
    out.varint(entry.headers.len() as u64);
    for (name, value) in &entry.headers {
        out.bytes(name.as_str().as_bytes());
        out.bytes(value.as_bytes());
    }
    out.bytes(&entry.body);
    out.bytes(entry.url.as_bytes());
    out.varint(entry.surrogate_keys.len() as u64);
    for key in &entry.surrogate_keys {
        out.bytes(key.as_bytes());
    }
    out.meta(&entry.meta);
    out.0
}

/// Parses an entry; any malformed, truncated or extra byte is an error.
pub fn decode(input: &[u8]) -> Result<Entry, CodecError> {
    let mut input = Reader { input, at: 0 };
    let version = input.u8()?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let status = input.status()?;
    let mut headers = HeaderMap::new();
    for _ in 0..input.varint()? {
        let at = input.at;
        let name = HeaderName::from_bytes(input.bytes()?).map_err(|_| invalid("field name", at))?;
        let at = input.at;
        let value =
            HeaderValue::from_bytes(input.bytes()?).map_err(|_| invalid("field value", at))?;
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(input.bytes()?);
    let url = input.text("url")?;
    let mut surrogate_keys = Vec::new();
    for _ in 0..input.varint()? {
        surrogate_keys.push(input.text("surrogate key")?);
    }
    let meta = input.meta()?;
    if input.at != input.input.len() {
        return Err(CodecError::Trailing(input.input.len() - input.at));
    }
    Ok(Entry {
        meta,
        status,
        headers,
        body,
        surrogate_keys,
        url,
    })
}

struct Writer(Vec<u8>);

struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn status(&mut self, status: StatusCode) {
        self.0.extend_from_slice(&status.as_u16().to_be_bytes());
    }

    fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    fn opt_u32(&mut self, value: Option<u32>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.varint(u64::from(value));
            }
        }
    }

    fn time(&mut self, time: SystemTime) {
        let micros = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => {
                i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |micros| -micros)
            }
        };
        // Zigzag: small magnitudes of either sign stay short.
        self.varint(((micros << 1) ^ (micros >> 63)) as u64);
    }

    fn duration(&mut self, duration: Duration) {
        self.varint(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    fn scope(&mut self, scope: &FieldScope) {
        match scope {
            FieldScope::Absent => self.u8(0),
            FieldScope::Whole => self.u8(1),
            FieldScope::Fields(names) => {
                self.u8(2);
                self.varint(names.len() as u64);
                for name in names {
                    self.bytes(name.as_str().as_bytes());
                }
            }
        }
    }

    fn directives(&mut self, d: &ResponseDirectives) {
        self.opt_u32(d.max_age);
        self.opt_u32(d.s_maxage);
        self.scope(&d.no_cache);
        self.scope(&d.private);
        let flags = [
            d.no_store,
            d.public,
            d.must_revalidate,
            d.proxy_revalidate,
            d.must_understand,
            d.no_transform,
            d.immutable,
            d.targeted,
        ];
        let bits = flags
            .iter()
            .enumerate()
            .fold(0u8, |bits, (i, &set)| bits | (u8::from(set) << i));
        self.u8(bits);
        self.opt_u32(d.stale_while_revalidate);
        self.opt_u32(d.stale_if_error);
    }

    fn meta(&mut self, meta: &StoredMeta) {
        self.status(meta.status);
        self.directives(&meta.directives);
        self.time(meta.times.request_time);
        self.time(meta.times.response_time);
        self.time(meta.date);
        self.duration(meta.age_value);
        match meta.expires {
            DateField::Absent => self.u8(0),
            DateField::Valid(time) => {
                self.u8(1);
                self.time(time);
            }
            DateField::Invalid => self.u8(2),
        }
        match meta.last_modified {
            None => self.u8(0),
            Some(time) => {
                self.u8(1);
                self.time(time);
            }
        }
        match &meta.etag {
            None => self.u8(0),
            Some(tag) => {
                self.u8(1);
                self.bool(tag.weak);
                self.bytes(&tag.opaque);
            }
        }
        match &meta.vary {
            Vary::Absent => self.u8(0),
            Vary::Any => self.u8(1),
            Vary::Fields(fields) => {
                self.u8(2);
                self.varint(fields.len() as u64);
                for field in fields {
                    self.bytes(field.name.as_str().as_bytes());
                    match &field.value {
                        None => self.u8(0),
                        Some(value) => {
                            self.u8(1);
                            self.bytes(value);
                        }
                    }
                }
            }
        }
        self.duration(meta.lifetime.duration);
        self.bool(meta.lifetime.heuristic);
        self.duration(meta.initial_age);
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(CodecError::Truncated(self.at))?;
        let taken = &self.input[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("varint", start))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let at = self.at;
        usize::try_from(self.varint()?).map_err(|_| invalid("length", at))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.len()?;
        self.take(len)
    }

    fn text(&mut self, what: &'static str) -> Result<Box<str>, CodecError> {
        let at = self.at;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(Box::from)
            .map_err(|_| invalid(what, at))
    }

    fn status(&mut self) -> Result<StatusCode, CodecError> {
        let at = self.at;
        let bytes = self.take(2)?;
        StatusCode::from_u16(u16::from_be_bytes([bytes[0], bytes[1]]))
            .map_err(|_| invalid("status", at))
    }

    /// A tag byte that must be below `count`.
    fn tag(&mut self, count: u8, what: &'static str) -> Result<u8, CodecError> {
        let at = self.at;
        let tag = self.u8()?;
        if tag < count {
            Ok(tag)
        } else {
            Err(invalid(what, at))
        }
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        Ok(self.tag(2, "boolean")? == 1)
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, CodecError> {
        if !self.bool()? {
            return Ok(None);
        }
        let at = self.at;
        u32::try_from(self.varint()?)
            .map(Some)
            .map_err(|_| invalid("delta-seconds", at))
    }

    fn time(&mut self) -> Result<SystemTime, CodecError> {
        let at = self.at;
        let zigzag = self.varint()?;
        let micros = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        let offset = Duration::from_micros(micros.unsigned_abs());
        let time = if micros >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        };
        time.ok_or(invalid("time", at))
    }

    fn duration(&mut self) -> Result<Duration, CodecError> {
        Ok(Duration::from_micros(self.varint()?))
    }

    fn name(&mut self) -> Result<HeaderName, CodecError> {
        let at = self.at;
        HeaderName::from_bytes(self.bytes()?).map_err(|_| invalid("field name", at))
    }

    fn scope(&mut self) -> Result<FieldScope, CodecError> {
        Ok(match self.tag(3, "field scope")? {
            0 => FieldScope::Absent,
            1 => FieldScope::Whole,
            _ => {
                let mut names = Vec::new();
                for _ in 0..self.varint()? {
                    names.push(self.name()?);
                }
                FieldScope::Fields(names)
            }
        })
    }

    fn directives(&mut self) -> Result<ResponseDirectives, CodecError> {
        let max_age = self.opt_u32()?;
        let s_maxage = self.opt_u32()?;
        let no_cache = self.scope()?;
        let private = self.scope()?;
        // Every bit is a flag (bit 7, `targeted`, came last: older readers refuse it).
        let bits = self.u8()?;
        let flag = |i: u8| bits & (1 << i) != 0;
        Ok(ResponseDirectives {
            max_age,
            s_maxage,
            no_cache,
            private,
            no_store: flag(0),
            public: flag(1),
            must_revalidate: flag(2),
            proxy_revalidate: flag(3),
            must_understand: flag(4),
            no_transform: flag(5),
            immutable: flag(6),
            targeted: flag(7),
            stale_while_revalidate: self.opt_u32()?,
            stale_if_error: self.opt_u32()?,
        })
    }

    fn meta(&mut self) -> Result<StoredMeta, CodecError> {
        let status = self.status()?;
        let directives = self.directives()?;
        let times = ExchangeTimes {
            request_time: self.time()?,
            response_time: self.time()?,
        };
        let date = self.time()?;
        let age_value = self.duration()?;
        let expires = match self.tag(3, "expires")? {
            0 => DateField::Absent,
            1 => DateField::Valid(self.time()?),
            _ => DateField::Invalid,
        };
        let last_modified = match self.bool()? {
            false => None,
            true => Some(self.time()?),
        };
        let etag = match self.bool()? {
            false => None,
            true => Some(EntityTag {
                weak: self.bool()?,
                opaque: Bytes::copy_from_slice(self.bytes()?),
            }),
        };
        let vary = match self.tag(3, "vary")? {
            0 => Vary::Absent,
            1 => Vary::Any,
            _ => {
                let mut fields = Vec::new();
                for _ in 0..self.varint()? {
                    let name = self.name()?;
                    let value = match self.bool()? {
                        false => None,
                        true => Some(Bytes::copy_from_slice(self.bytes()?)),
                    };
                    fields.push(VariedField { name, value });
                }
                Vary::Fields(fields)
            }
        };
        let lifetime = Lifetime {
            duration: self.duration()?,
            heuristic: self.bool()?,
        };
        Ok(StoredMeta {
            status,
            directives,
            times,
            date,
            age_value,
            expires,
            last_modified,
            etag,
            vary,
            lifetime,
            initial_age: self.duration()?,
        })
    }
}

fn invalid(what: &'static str, at: usize) -> CodecError {
    CodecError::Invalid { what, at }
}
