//! Response side of an upstream HTTP/1.1 exchange, as data: the response head (httparse),
//! its header map built on slices of the head's bytes, the body length (RFC 9112 §6.3) and
//! chunk-size lines.
//!
//! Where the RFC leaves a choice, this side is strict, as a gateway must be about framing:
//! `transfer-encoding` together with `content-length`, differing or non-numeric
//! content-lengths, `chunked` applied more than once, and `transfer-encoding` in an HTTP/1.0
//! response are all refused; obs-fold and invalid names or values are refused (httparse's
//! lenient options stay off). A `transfer-encoding` not ending in `chunked` is read until
//! close, as §6.3 says, and its codings are left alone. A bare LF ending a head or trailer
//! line is accepted (RFC 9112 §2.2 allows it, and the body is re-framed downstream, so no
//! reading of it can desync anyone), but chunk-size lines and the end of chunk data must be
//! CRLF.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use super::{H1Error, H1Limits};
use crate::outgoing::parse_length;

/// A complete response head at the front of the read buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed {
    /// Bytes of the head, final empty line included.
    pub len: usize,
    pub status: u16,
    pub version: Version,
}

/// Where one header field lies in the buffer it was parsed from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderIdx {
    name: (usize, usize),
    value: (usize, usize),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the connection cannot be reused.
    Close,
}

/// What the header section says about framing and persistence.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FramingFields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_seen: bool,
    chunked_last: bool,
    pub close: bool,
}

/// Header slots on the stack; a larger configured limit falls back to the heap.
const HEADER_SLOTS: usize = 128;
/// Longest chunk-size line, extensions included.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

impl Parsed {
    /// 1xx other than 101: relayed or dropped, the final response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the front of `buf`; `None` while it is incomplete. Header
/// positions go to `idx`.
pub(super) fn parse_head(
    buf: &[u8],
    limits: &H1Limits,
    idx: &mut Vec<HeaderIdx>,
) -> Result<Option<Parsed>, H1Error> {
    if limits.max_headers <= HEADER_SLOTS {
        let mut slots = [const { MaybeUninit::uninit() }; HEADER_SLOTS];
        parse_head_into(buf, limits, &mut slots[..limits.max_headers], idx)
    } else {
        let mut slots = Vec::with_capacity(limits.max_headers);
        slots.resize_with(limits.max_headers, MaybeUninit::uninit);
        parse_head_into(buf, limits, &mut slots, idx)
    }
}

fn parse_head_into<'b>(
    buf: &'b [u8],
    limits: &H1Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    idx: &mut Vec<HeaderIdx>,
) -> Result<Option<Parsed>, H1Error> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(e, limits)),
    };
    if len > limits.max_head_bytes {
        return Err(H1Error::HeadTooLarge(limits.max_head_bytes));
    }
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = resp.code.unwrap_or_default();
    if !(100..=999).contains(&status) {
        return Err(H1Error::Malformed("invalid status code"));
    }
    record(buf, resp.headers, idx);
    Ok(Some(Parsed {
        len,
        status,
        version,
    }))
}

/// Parses a trailer section at the front of `buf`: `(length, field count)`, `None` while it
/// is incomplete. Trailers are rare, so their slots are plain initialized headers.
pub(super) fn parse_trailers(
    buf: &[u8],
    limits: &H1Limits,
    idx: &mut Vec<HeaderIdx>,
) -> Result<Option<usize>, H1Error> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, headers))) => {
            if len > limits.max_head_bytes {
                return Err(H1Error::HeadTooLarge(limits.max_head_bytes));
            }
            record(buf, headers, idx);
            Ok(Some(len))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(parse_error(e, limits)),
    }
}

fn parse_error(e: httparse::Error, limits: &H1Limits) -> H1Error {
    H1Error::Malformed(match e {
        httparse::Error::TooManyHeaders => return H1Error::TooManyHeaders(limits.max_headers),
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Version => "invalid http version",
        httparse::Error::Token => "invalid token",
    })
}

/// Records field positions relative to `buf`, which the fields borrow from.
fn record(buf: &[u8], headers: &[httparse::Header<'_>], idx: &mut Vec<HeaderIdx>) {
    let base = buf.as_ptr().addr();
    idx.clear();
    idx.extend(headers.iter().map(|h| HeaderIdx {
        name: (h.name.as_ptr().addr().wrapping_sub(base), h.name.len()),
        value: (h.value.as_ptr().addr().wrapping_sub(base), h.value.len()),
    }));
}

/// Response fields the gateway may add to an upstream response head.
const GATEWAY_FIELDS: usize = 8;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Builds the header map on slices of `head` (values are shared, not copied) and notes the
/// framing fields on the way. Fields that only describe this hop and name no other field
/// (`Connection` listing only `close`/`keep-alive`, `Keep-Alive`) are read, not kept.
/// With a `memo`, fields equal to the ones at the same positions of the connection's
/// previous response reuse their checked names and values.
pub(super) fn build_map(
    head: &Bytes,
    idx: &[HeaderIdx],
    mut memo: Option<&mut FieldMemo>,
) -> Result<(HeaderMap, FramingFields), H1Error> {
    // Room for the fields the gateway adds on the way down (request id, rate-limit fields,
    // Cache-Status and Age, CORS, a sticky cookie) so adding them never rehashes the map.
    let mut map = crate::spare_maps::take(idx.len() + GATEWAY_FIELDS);
    let mut fields = FramingFields::default();
    for (at, i) in idx.iter().enumerate() {
        let raw_name = span(head, i.name)
            .map(|r| &head[r])
            .ok_or(H1Error::Malformed("invalid header name"))?;
        let name = match memo.as_deref_mut() {
            Some(m) => m.name(at, raw_name),
            None => HeaderName::from_bytes(raw_name).ok(),
        }
        .ok_or(H1Error::Malformed("invalid header name"))?;
        let value = match span(head, i.value) {
            _ if i.value.1 == 0 => HeaderValue::from_static(""),
            Some(r) => match memo
                .as_deref_mut()
                .and_then(|m| m.value(at, &head[r.clone()]))
            {
                Some(v) => v,
                None => HeaderValue::from_maybe_shared(head.slice(r))
                    .map_err(|_| H1Error::Malformed("invalid header value"))?,
            },
            None => return Err(H1Error::Malformed("invalid header value")),
        };
        if name == CONTENT_LENGTH {
            fields.content_length(value.as_bytes())?;
        } else if name == TRANSFER_ENCODING {
            fields.transfer_encoding(value.as_bytes())?;
        } else if name == CONNECTION {
            let mut only_options = true;
            for t in tokens(value.as_bytes()) {
                let close = t.eq_ignore_ascii_case(b"close");
                fields.close |= close;
                only_options &= close || t.eq_ignore_ascii_case(b"keep-alive");
            }
            // `Connection: keep-alive` (nearly every response) names no field: the proxy
            // would strip it at once, so it never enters the map.
            if only_options {
                continue;
            }
        } else if name == KEEP_ALIVE {
            // Hop-by-hop by definition (RFC 9110 §7.6.1), never relayed.
            continue;
        }
        map.append(name, value);
    }
    Ok((map, fields))
}

/// The fields of a connection's previous response, by position. An upstream sends the same
/// names, and mostly the same values, in the same order from one response to the next: a
/// field whose bytes equal the ones at its position last time reuses the name and value
/// checked then, and a value that came twice in a row is kept in a copy of its own (the
/// head it was read from is not held). Names and values longer than [`MEMO_BYTES`] and
/// positions past [`MEMO_FIELDS`] are always checked afresh.
#[derive(Default)]
pub(crate) struct FieldMemo {
    slots: Vec<MemoSlot>,
}

/// Longest name or value remembered.
const MEMO_BYTES: usize = 40;
/// Positions remembered.
const MEMO_FIELDS: usize = 16;

struct MemoSlot {
    raw_name: Inline,
    name: HeaderName,
    raw_value: Inline,
    /// Set once the value at this position came twice in a row.
    value: Option<HeaderValue>,
}

/// Up to [`MEMO_BYTES`] bytes, kept in place.
#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    bytes: [u8; MEMO_BYTES],
}

impl Inline {
    const EMPTY: Inline = Inline {
        len: 0,
        bytes: [0; MEMO_BYTES],
    };

    fn new(b: &[u8]) -> Option<Inline> {
        let mut i = Inline::EMPTY;
        i.bytes.get_mut(..b.len())?.copy_from_slice(b);
        i.len = u8::try_from(b.len()).ok()?;
        Some(i)
    }

    fn is(&self, b: &[u8]) -> bool {
        self.bytes.get(..usize::from(self.len)) == Some(b) && !b.is_empty()
    }
}

impl FieldMemo {
    /// The name at position `at` (`None` when the bytes are not a valid name).
    fn name(&mut self, at: usize, raw: &[u8]) -> Option<HeaderName> {
        if let Some(slot) = self.slots.get(at) {
            if slot.raw_name.is(raw) {
                return Some(slot.name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        let Some(inline) = Inline::new(raw).filter(|_| at < MEMO_FIELDS) else {
            return Some(name);
        };
        let slot = MemoSlot {
            raw_name: inline,
            name: name.clone(),
            raw_value: Inline::EMPTY,
            value: None,
        };
        if let Some(s) = self.slots.get_mut(at) {
            *s = slot;
        } else if self.slots.len() == at {
            self.slots.push(slot);
        }
        Some(name)
    }

    /// The value at position `at` if it equals the one there last time (checked then, or
    /// now, once, for its own copy); `None` when the caller checks it on the head's bytes.
    /// Call after [`FieldMemo::name`] for the same position.
    fn value(&mut self, at: usize, raw: &[u8]) -> Option<HeaderValue> {
        let slot = self.slots.get_mut(at)?;
        if !slot.raw_value.is(raw) {
            slot.raw_value = Inline::new(raw).unwrap_or(Inline::EMPTY);
            slot.value = None;
            return None;
        }
        if slot.value.is_none() {
            slot.value = Some(HeaderValue::from_bytes(raw).ok()?);
        }
        slot.value.clone()
    }
}

/// The range `(offset, length)` if it lies within `head`.
fn span(head: &Bytes, (offset, len): (usize, usize)) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= head.len()).then_some(offset..end)
}

impl FramingFields {
    /// One value, or a list or repetition of identical values (RFC 9110 §8.6).
    fn content_length(&mut self, value: &[u8]) -> Result<(), H1Error> {
        let mut any = false;
        for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let n = parse_length(t).ok_or(H1Error::Malformed("invalid content-length"))?;
            if self.content_length.is_some_and(|prev| prev != n) {
                return Err(H1Error::Malformed("conflicting content-length values"));
            }
            self.content_length = Some(n);
            any = true;
        }
        debug_assert!(any, "split yields at least one element");
        Ok(())
    }

    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), H1Error> {
        self.transfer_encoding = true;
        for t in tokens(value) {
            let chunked = t.eq_ignore_ascii_case(b"chunked");
            // Chunked applied twice is a smuggling pattern, not a coding.
            if chunked && self.chunked_seen {
                return Err(H1Error::Malformed("chunked applied more than once"));
            }
            self.chunked_seen |= chunked;
            self.chunked_last = chunked;
        }
        Ok(())
    }

    /// The body length (RFC 9112 §6.3) of a response to a request that was (`head`) or was
    /// not a HEAD.
    pub(super) fn framing(
        &self,
        status: u16,
        version: Version,
        head: bool,
    ) -> Result<Framing, H1Error> {
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(H1Error::Malformed(
                    "both transfer-encoding and content-length",
                ));
            }
            if version == Version::HTTP_10 {
                return Err(H1Error::Malformed(
                    "transfer-encoding in an http/1.0 response",
                ));
            }
        }
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(Framing::Empty);
        }
        Ok(if self.transfer_encoding {
            if self.chunked_last {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match self.content_length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        })
    }
}

/// The elements of a comma-separated list, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The size announced by a chunk-size line (`line` ends with its LF): hex digits, then
/// optional extensions, which are skipped.
pub(super) fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(H1Error::Malformed("chunk-size line not ended by crlf"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(H1Error::Malformed("invalid chunk size"));
    }
    let (hex, rest) = line.split_at(digits);
    let size = hex.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        n.checked_mul(16)?.checked_add(u64::from(d))
    });
    let size = size.ok_or(H1Error::Malformed("chunk size overflows"))?;
    let ext = trim_bws(rest);
    match ext.first() {
        None if rest.is_empty() => Ok(size),
        Some(b';') if ext.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => Ok(size),
        _ => Err(H1Error::Malformed("invalid chunk extension")),
    }
}

/// Strips leading spaces and tabs (the "bad whitespace" allowed before `;`).
fn trim_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    s.get(n..).unwrap_or_default()
}
