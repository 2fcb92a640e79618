//! The response head a downstream HTTP/1.1 connection writes, and the body framing it
//! announces (RFC 9112 §6).
//!
//! The handler's fields are written as given (lower-case names), except the framing ones,
//! which this side decides: a `content-length` from the handler is kept and enforced; else a
//! body of exactly known size gets one; else the body is chunked (HTTP/1.1) or delimited by
//! closing the connection (HTTP/1.0). Responses to HEAD, 1xx, 204 and 304 carry no body.
//! `Date` is added when absent, and `Connection` says what the connection does next when
//! that differs from the version's default.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;

use crate::cache::date::{format_http_date, IMF_FIXDATE_LEN};
use crate::message::ExtraFields;
use crate::outgoing::parse_length;

/// What the head depends on from the request and the connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exchange {
    pub v11: bool,
    /// The request was HEAD: the response has no body whatever its fields say.
    pub head: bool,
    /// The connection closes after this response (the client asked, or it will not be able
    /// to carry another request).
    pub close: bool,
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body bytes at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// The written head's consequences for the rest of the exchange.
#[derive(Debug)]
pub(super) struct Head {
    pub framing: Framing,
    /// The connection closes after the response.
    pub close: bool,
    /// A 101: the connection is handed over after the head.
    pub switching: bool,
    /// Trailer fields the response announced (`Trailer`), the only ones sent.
    pub trailers: Option<Vec<HeaderName>>,
}

const CRLF: &[u8] = b"\r\n";

thread_local! {
    /// `Date` text of the current second, formatted at most once per second per worker.
    static DATE_TEXT: Cell<(u64, [u8; IMF_FIXDATE_LEN])> = const { Cell::new((0, [0; IMF_FIXDATE_LEN])) };
}

/// Encodes the head of `resp` into `buf` (cleared first).
pub(super) fn encode<B: Body + ExtraFields>(
    buf: &mut Vec<u8>,
    resp: &Response<B>,
    ex: &Exchange,
) -> Head {
    let status = resp.status();
    let body = resp.body();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = ex.head || no_length || status == StatusCode::NOT_MODIFIED;
    let empty = body.is_end_stream();
    let hint = if empty {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    buf.clear();
    status_line(buf, status, ex.v11);
    let mut length = None;
    let (mut says_close, mut says_keep_alive, mut has_date) = (false, false, false);
    let mut trailers = None;
    for (name, value) in resp.headers() {
        if *name == CONTENT_LENGTH {
            // One length, never on responses that cannot have one, and not claiming bytes
            // a body known to be empty will not send.
            let n = parse_length(value.as_bytes());
            if no_length || length.is_some() || n.is_none() || (empty && !bodiless && n != Some(0))
            {
                continue;
            }
            length = n;
        } else if *name == TRANSFER_ENCODING {
            continue;
        } else if *name == CONNECTION {
            for token in value
                .as_bytes()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
            {
                says_close |= token.eq_ignore_ascii_case(b"close");
                says_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if *name == DATE {
            has_date = true;
        } else if *name == TRAILER {
            announced_trailers(&mut trailers, value);
        }
        field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    body.extra_fields(|name, value| field(buf, name, value));
    let mut close = ex.close || says_close;
    let framing = if bodiless {
        // A HEAD response says what a GET would have sent.
        if ex.head && !no_length && status != StatusCode::NOT_MODIFIED && length.is_none() {
            if let Some(n) = hint.filter(|_| !empty) {
                length_field(buf, n);
            }
        }
        Framing::None
    } else if let Some(n) = length {
        if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        match hint {
            Some(n) => {
                length_field(buf, n);
                if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                }
            }
            None if ex.v11 => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None => {
                close = true;
                Framing::Close
            }
        }
    };
    if framing != Framing::Chunked {
        trailers = None;
    }
    if !switching {
        if ex.v11 && close && !says_close {
            buf.extend_from_slice(b"connection: close\r\n");
        } else if !ex.v11 && !close && !says_keep_alive {
            buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !has_date {
        date_field(buf);
    }
    buf.extend_from_slice(CRLF);
    Head {
        framing,
        close,
        switching,
        trailers,
    }
}

fn status_line(buf: &mut Vec<u8>, status: StatusCode, v11: bool) {
    if v11 && status == StatusCode::OK {
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    buf.extend_from_slice(if v11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(CRLF);
}

/// `name: value` CRLF. The separators are pushed, not copied: a copy call per two bytes
/// costs more than the bytes.
pub(super) fn field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.reserve(name.len() + value.len() + 4);
    buf.extend_from_slice(name);
    buf.push(b':');
    buf.push(b' ');
    buf.extend_from_slice(value);
    buf.push(b'\r');
    buf.push(b'\n');
}

fn length_field(buf: &mut Vec<u8>, n: u64) {
    field(
        buf,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

/// Adds the names a `Trailer` field lists.
fn announced_trailers(names: &mut Option<Vec<HeaderName>>, value: &HeaderValue) {
    let list = names.get_or_insert_with(Vec::new);
    for token in value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
    {
        if let Ok(name) = HeaderName::from_bytes(token) {
            list.push(name);
        }
    }
}

/// `date: <now>` CRLF, from a text cached for the current second.
fn date_field(buf: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let text = DATE_TEXT.with(|cell| {
        let (at, text) = cell.get();
        if at == secs {
            return text;
        }
        let text = format_http_date(now);
        cell.set((secs, text));
        text
    });
    field(buf, b"date", &text);
}
