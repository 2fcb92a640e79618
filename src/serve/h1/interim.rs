//! Interim (1xx) responses relayed from upstream to the client of a downstream HTTP/1.1
//! connection: encoded into the connection's interim queue, written before anything else
//! goes out, so they reach the client in order and before the final response.
//!
//! RFC 9110 section 15.2: a proxy forwards 1xx responses, except to an HTTP/1.0 client,
//! which does not know them. A `100 Continue` from upstream stands for the one the client
//! waits for: it is sent only if the client asked (`Expect: 100-continue`) and the
//! connection has not sent one itself, which it does as soon as the body is first read
//! (usually before the upstream could answer), so a client never gets two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use http::header::{CONNECTION, CONTENT_LENGTH, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, StatusCode};

use super::wire::{lock, Wire};
use crate::message::Interim;

/// The relay of one request's interim responses, lent to the handler. Lives on the
/// connection task's stack for the request: nothing is allocated or counted for a request
/// whose upstream sends none.
pub(super) struct Relay<'a> {
    wire: &'a Mutex<Wire>,
    /// The client speaks HTTP/1.1: it may get 1xx responses.
    v11: bool,
    /// Something was queued: the connection writes it out before the final response.
    used: AtomicBool,
}

/// Hop-by-hop fields (RFC 9110 section 7.6.1) and framing fields, which describe the
/// upstream hop or a body an interim response never has.
static NOT_RELAYED: [HeaderName; 6] = [
    CONNECTION,
    CONTENT_LENGTH,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

impl<'a> Relay<'a> {
    pub(super) fn new(wire: &'a Mutex<Wire>, v11: bool) -> Self {
        Relay {
            wire,
            v11,
            used: AtomicBool::new(false),
        }
    }

    /// Whether an interim response was queued for this request.
    pub(super) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

impl Interim for Relay<'_> {
    fn relay(&self, status: StatusCode, fields: &HeaderMap) {
        debug_assert!(
            status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS,
            "only interim responses are relayed"
        );
        if !self.v11 {
            return;
        }
        let mut wire = lock(self.wire);
        if status == StatusCode::CONTINUE {
            wire.queue_continue();
        } else {
            encode(wire.interim_queue(), status, fields);
        }
        self.used.store(true, Ordering::Relaxed);
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<()> {
        lock(self.wire).poll_interim(cx).map(|_| ())
    }
}

/// Appends the interim response head: status line, the end-to-end fields, empty line.
fn encode(buf: &mut Vec<u8>, status: StatusCode, fields: &HeaderMap) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        if NOT_RELAYED.contains(name) || nominated(fields, name) || is_proxy_hop(name) {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// `Keep-Alive`, `Proxy-Connection`: hop-by-hop without a constant in `http`.
fn is_proxy_hop(name: &HeaderName) -> bool {
    matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Whether a `Connection` field of the same head names `name` (hop-by-hop by nomination).
fn nominated(fields: &HeaderMap, name: &HeaderName) -> bool {
    fields.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            t.trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn early_hints_keep_their_link_fields_and_lose_hop_by_hop_ones() {
        let mut fields = HeaderMap::new();
        fields.append("link", HeaderValue::from_static("</a.css>; rel=preload"));
        fields.append("link", HeaderValue::from_static("</b.js>; rel=preload"));
        fields.append(CONNECTION, HeaderValue::from_static("x-hop"));
        fields.append("x-hop", HeaderValue::from_static("1"));
        fields.append("keep-alive", HeaderValue::from_static("timeout=5"));
        fields.append(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut buf = Vec::new();
        encode(&mut buf, StatusCode::from_u16(103).unwrap(), &fields);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\
             link: </b.js>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn unknown_interim_status_gets_an_empty_reason_phrase() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            StatusCode::from_u16(199).unwrap(),
            &HeaderMap::new(),
        );
        assert_eq!(buf, b"HTTP/1.1 199 \r\n\r\n");
    }
}
