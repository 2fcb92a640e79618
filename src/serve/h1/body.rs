//! The body of a downstream HTTP/1.1 request: a handle on the connection's wire that
//! decodes the body from the socket only when polled, so the client's upload is paced by
//! whoever reads it (backpressure), and a body nobody reads stays in the socket.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::wire::{lock, BodyState, ReadError, Wire};

/// A request body read from its HTTP/1.1 connection (Content-Length or chunked, trailers
/// surfaced as a trailers frame).
pub struct H1RequestBody {
    wire: Arc<Mutex<Wire>>,
    /// The request this body belongs to: once the connection has moved on, it reads nothing.
    request: u64,
    ended: bool,
}

impl H1RequestBody {
    pub(super) fn new(wire: Arc<Mutex<Wire>>, request: u64) -> Self {
        H1RequestBody {
            wire,
            request,
            ended: false,
        }
    }
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = ReadError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReadError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = {
            let mut wire = lock(&self.wire);
            if wire.request != self.request {
                Poll::Ready(Some(Err(ReadError::Stale)))
            } else {
                wire.poll_body(cx)
            }
        };
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        let wire = lock(&self.wire);
        wire.request != self.request || matches!(wire.body, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        let wire = lock(&self.wire);
        match wire.body {
            _ if self.ended || wire.request != self.request => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for H1RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1RequestBody")
            .field("request", &self.request)
            .field("ended", &self.ended)
            .finish()
    }
}
