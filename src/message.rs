//! What both sides of the proxy share about an HTTP message and know nothing else of the
//! gateway: the gateway's own field names and values, fields a body carries beside its
//! header map, where an upstream's interim responses go, and the errors and limits of
//! streamed bodies.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode};
use http_body::Body;

/// The request id field, set on every upstream request and every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The gateway's entry in `Via`.
pub const VIA_VALUE: &str = "1.1 ferrogate";

/// Fields a response body carries for its head beside the header map (the gateway's own,
/// spared a hashed insert each): written after the map's fields.
pub trait ExtraFields {
    /// Calls `field` with the name and value of each.
    fn extra_fields(&self, _field: impl FnMut(&[u8], &[u8])) {}
}

/// Where the interim (1xx) responses of an upstream go while its final response is awaited:
/// the downstream connection of the request, which alone knows whether its client may get
/// them (RFC 9110 section 15.2: not an HTTP/1.0 client; a `100 Continue` only to a client
/// that asked and has not had one). Lent by the connection for one request; an exchange
/// that has none to relay to (HTTP/2 clients, mirrors, background refreshes) drops them.
pub trait Interim: Sync {
    /// Hands over one interim response (never a 101). Never waits: the connection queues it
    /// for its client or drops it.
    fn relay(&self, status: StatusCode, fields: &HeaderMap);

    /// Writes what is queued. Ready once nothing is left, or when the client is gone (its
    /// final response then fails on its own).
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Error type of relayed bodies: hyper's, or a limit of ours that cut the body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A body cut by one of the gateway's own limits.
#[derive(Debug, thiserror::Error)]
pub enum BodyLimit {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("no request body data for {0:?}")]
    RequestIdle(Duration),
    #[error("upstream response body stalled or ran past the route's total timeout")]
    ResponseTimeout,
}

/// Reads a body to its end, throwing the data away; false when it failed.
pub async fn drain<B>(body: &mut B) -> bool
where
    B: Body + Unpin,
{
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return false;
        }
    }
    true
}

/// WebSocket handshake fields (RFC 6455 §4.2), for a tunnel whose two sides do not both
/// speak the HTTP/1.1 handshake: an HTTP/2 extended CONNECT (RFC 8441) carries no key and
/// gets no accept value, so the gateway makes them for the HTTP/1.1 side.
pub mod websocket {
    use http::header::{HeaderName, HeaderValue};

    pub const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
    pub const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
    pub fn fresh_key() -> HeaderValue {
        to_value(&base64(&fastrand::u128(..).to_be_bytes()))
    }

    /// The `Sec-WebSocket-Accept` that answers `key`.
    pub fn accept(key: &[u8]) -> HeaderValue {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(key);
        ctx.update(GUID);
        to_value(&base64(ctx.finish().as_ref()))
    }

    fn to_value(text: &str) -> HeaderValue {
        // Base64 is always a valid field value.
        HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""))
    }

    /// Standard base64 with padding (RFC 4648 §4).
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for j in 0..4 {
                out.push(match j <= chunk.len() {
                    true => char::from(ALPHABET[(n >> (18 - 6 * j) & 63) as usize]),
                    false => '=',
                });
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_accept_value_is_rfc_6455_s_example() {
            assert_eq!(
                accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            );
        }

        #[test]
        fn base64_pads_like_rfc_4648() {
            for (input, want) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
            ] {
                assert_eq!(base64(input.as_bytes()), want);
            }
            let key = fresh_key();
            assert_eq!(key.len(), 24);
            assert_ne!(key, fresh_key());
        }
    }
}
