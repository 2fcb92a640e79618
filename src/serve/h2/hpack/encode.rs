//! The HPACK encoder of response header blocks. Field names are indexed from the static
//! table; fields whose values repeat from response to response (`server`, `content-type`,
//! `via`, `date`, ...) are kept in a small dynamic table found by a cheap hash; every other
//! field is a literal that is not indexed, and a sensitive value (`HeaderValue::is_sensitive`,
//! e.g. `x-request-id`) is a literal never indexed, so that no intermediary indexes it
//! either.

use std::collections::VecDeque;

use super::table::entry_size;
#[cfg(test)]
use super::table::STATIC;
use super::{write_integer, write_string};

/// The most the encoder's dynamic table holds, whatever the peer allows.
const OWN_LIMIT: usize = 4096;

/// Entries in the static table: the dynamic table's indices follow.
const STATIC_LEN: usize = 61;

/// A value longer than this is never put in the dynamic table.
const MAX_INDEXED_VALUE: usize = 128;

/// The encoder of one connection's header blocks.
#[derive(Debug)]
pub struct Encoder {
    /// Newest first: the entry at position `i` has HPACK index 62 + i.
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// Size updates owed at the start of the next block: the smallest size the table went
    /// through since the last block, and the size it ends at (RFC 7541 §4.2).
    pending: Option<(usize, usize)>,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    name_len: usize,
    bytes: Box<[u8]>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a peer that allows the default table size, 4096 bytes.
    pub fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: OWN_LIMIT,
            pending: None,
        }
    }

    /// The peer's `SETTINGS_HEADER_TABLE_SIZE` changed: the table shrinks at once if it
    /// must, and the next block starts with the size update that tells the peer.
    pub fn set_peer_limit(&mut self, limit: usize) {
        let max = limit.min(OWN_LIMIT);
        if max == self.max {
            return;
        }
        let low = self.pending.map_or(max, |(low, _)| low.min(max));
        self.pending = Some((low, max));
        self.max = max;
        self.evict_to(max);
    }

    /// Starts a header block: writes the size updates owed.
    pub fn begin(&mut self, dst: &mut Vec<u8>) {
        if let Some((low, last)) = self.pending.take() {
            if low < last {
                write_integer(dst, 0x20, 5, low);
            }
            write_integer(dst, 0x20, 5, last);
        }
    }

    /// Writes the `:status` pseudo-header field.
    pub fn status(&mut self, status: u16, dst: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                let mut buf = itoa::Buffer::new();
                write_integer(dst, 0, 4, 8);
                write_string(dst, buf.format(status).as_bytes());
                return;
            }
        };
        write_integer(dst, 0x80, 7, index);
    }

    /// Writes one field; `name` is lower case, as `http::HeaderName` keeps it.
    pub fn field(&mut self, name: &str, value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
        let name_index = static_name_index(name);
        if sensitive {
            literal(dst, 0x10, 4, name_index, name, value);
            return;
        }
        if name_index == Some(16) && value == b"gzip, deflate" {
            write_integer(dst, 0x80, 7, 16);
            return;
        }
        if !repeats(name) || value.len() > MAX_INDEXED_VALUE {
            literal(dst, 0, 4, name_index, name, value);
            return;
        }
        let hash = hash(name.as_bytes(), value);
        let found = self.entries.iter().position(|e| {
            e.hash == hash
                && e.name_len == name.len()
                && e.bytes[..e.name_len] == *name.as_bytes()
                && e.bytes[e.name_len..] == *value
        });
        if let Some(pos) = found {
            write_integer(dst, 0x80, 7, STATIC_LEN + 1 + pos);
            return;
        }
        literal(dst, 0x40, 6, name_index, name, value);
        self.insert(hash, name, value);
    }

    fn insert(&mut self, hash: u64, name: &str, value: &[u8]) {
        let size = entry_size(name.len(), value.len());
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            hash,
            name_len: name.len(),
            bytes: bytes.into_boxed_slice(),
        });
        self.size += size;
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            match self.entries.pop_back() {
                Some(e) => self.size -= entry_size(e.name_len, e.bytes.len() - e.name_len),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// A literal field: the name by static index when it has one.
fn literal(
    dst: &mut Vec<u8>,
    flags: u8,
    prefix: u8,
    name_index: Option<usize>,
    name: &str,
    value: &[u8],
) {
    match name_index {
        Some(i) => write_integer(dst, flags, prefix, i),
        None => {
            write_integer(dst, flags, prefix, 0);
            write_string(dst, name.as_bytes());
        }
    }
    write_string(dst, value);
}

/// Fields whose values tend to be the same in every response of a connection.
fn repeats(name: &str) -> bool {
    matches!(
        name,
        "server"
            | "content-type"
            | "via"
            | "date"
            | "vary"
            | "cache-control"
            | "content-encoding"
            | "accept-ranges"
            | "access-control-allow-origin"
            | "access-control-allow-credentials"
            | "x-content-type-options"
            | "x-frame-options"
            | "strict-transport-security"
            | "alt-svc"
    )
}

/// A multiply-rotate hash over the name and value, 8 bytes at a time: enough to tell the
/// few entries of the table apart.
fn hash(name: &[u8], value: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (name.len() as u64) << 32 | value.len() as u64;
    for part in [name, value] {
        let mut chunks = part.chunks_exact(8);
        for c in chunks.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    h
}

/// The static table's index of a field name (the first entry with it): a `match`, which
/// the compiler turns into a dispatch on the length and a comparison or two.
fn static_name_index(name: &str) -> Option<usize> {
    // Pseudo-header names are written by `status`; a response has no other.
    let index = match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    };
    Some(index)
}

#[cfg(test)]
#[test]
fn static_name_index_names_the_first_entry_of_each_name() {
    for (i, (name, _)) in STATIC.iter().enumerate() {
        if name.starts_with(':') {
            continue;
        }
        let first = STATIC.iter().position(|(n, _)| n == name).map(|p| p + 1);
        assert_eq!(static_name_index(name), first, "{name} at {}", i + 1);
    }
    assert_eq!(static_name_index("x-request-id"), None);
    assert_eq!(STATIC.len(), STATIC_LEN);
}
