//! The body of a request on the native HTTP/2 server: DATA payloads the connection hands
//! over as slices of its read buffer (no copy), the trailers, and the end or failure of the
//! stream. The connection returns flow-control credit as the pipeline takes the data.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// Why a request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H2BodyError {
    #[error("http/2 stream reset by the client")]
    Reset,
    #[error("http/2 connection closed before the request body ended")]
    Closed,
    #[error("http/2 request body malformed (length or trailers)")]
    Malformed,
}

/// What the connection has received for one request body and the pipeline not yet taken.
#[derive(Debug, Default)]
pub struct Inbox {
    pub data: VecDeque<Bytes>,
    pub trailers: Option<HeaderMap>,
    pub end: bool,
    pub error: Option<H2BodyError>,
    /// Bytes taken by the pipeline since the connection last looked: credit to return.
    pub consumed: usize,
    /// Declared length, if any, for the size hint.
    pub length: Option<u64>,
    pub waker: Option<Waker>,
}

pub type SharedInbox = Arc<Mutex<Inbox>>;

pub fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inbox {
    /// Wakes the reader after the connection changed something.
    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The request body handed to the pipeline.
#[derive(Debug)]
pub struct H2NativeBody {
    inbox: SharedInbox,
    ended: bool,
}

impl H2NativeBody {
    pub(super) fn new(inbox: SharedInbox) -> Self {
        H2NativeBody {
            inbox,
            ended: false,
        }
    }
}

impl Body for H2NativeBody {
    type Data = Bytes;
    type Error = H2BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = {
            let mut inbox = lock(&self.inbox);
            if let Some(data) = inbox.data.pop_front() {
                inbox.consumed += data.len();
                Poll::Ready(Some(Ok(Frame::data(data))))
            } else if let Some(t) = inbox.trailers.take() {
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            } else if let Some(e) = inbox.error {
                Poll::Ready(Some(Err(e)))
            } else if inbox.end {
                Poll::Ready(None)
            } else {
                inbox.waker = Some(cx.waker().clone());
                Poll::Pending
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
        let inbox = lock(&self.inbox);
        inbox.end && inbox.data.is_empty() && inbox.trailers.is_none() && inbox.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let inbox = lock(&self.inbox);
        match inbox.length {
            Some(n) if !self.ended => SizeHint::with_exact(n),
            _ if self.ended => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
