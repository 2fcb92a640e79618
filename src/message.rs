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
