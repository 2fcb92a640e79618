//! The request body of one downstream HTTP/2 stream: hyper's body, read on after the
//! gateway has let go of it (bounded in bytes and time) so that h2 still checks what the
//! client sends on the stream.
//!
//! Why: dropping hyper's body before the client ended the stream makes h2 reset it with
//! RST_STREAM(NO_ERROR) once the response is sent (RFC 9113 section 8.1 allows it), and h2
//! then discards every later frame on the stream unchecked: a body longer or shorter than
//! its `content-length`, a second HEADERS without END_STREAM, go unanswered. Read on, the
//! stream stays open on the client's side and h2 answers each with the stream error RFC
//! 9113 names. Past the bound the body is dropped and h2 resets the stream as before.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Request body bytes read after the gateway let go of the body, at most (as HTTP/1.1).
const MAX_DRAIN: usize = 64 * 1024;
/// How long they are read for, at most.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// hyper's HTTP/2 request body, read to its end in the background when dropped early.
#[derive(Debug)]
pub struct H2RequestBody {
    /// Always `Some` until dropped.
    inner: Option<Incoming>,
}

impl H2RequestBody {
    pub fn new(inner: Incoming) -> Self {
        H2RequestBody { inner: Some(inner) }
    }
}

impl Body for H2RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for H2RequestBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // Outside a runtime (a test dropping a request) there is no connection to keep.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(drain(body));
    }
}

/// Reads and discards the rest of `body` (releasing its flow-control window as it goes)
/// until it ends, fails, or passes the bound.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if read > MAX_DRAIN {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}
