//! Body types of the proxy: the downstream response body (relayed or synthetic) and the
//! upstream request body, both streamed frame by frame with the peer's backpressure.
//!
//! The response body owns the request's [`Completion`]: when the last frame has been handed
//! to the client, or the client goes away and the body is dropped, the `log` phase runs, and
//! it runs once.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::Completion;
use crate::upstream::pool::Lease;

/// Error type of relayed bodies.
pub type BodyError = hyper::Error;

/// The body of every response the gateway sends downstream.
pub struct ProxyBody {
    inner: Inner,
    bytes_out: u64,
    completion: Option<Completion>,
    /// The upstream connection the relayed body comes from: back to the pool at its end.
    lease: Option<Lease>,
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Relay(Incoming),
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self::new(Inner::Empty)
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::new(Inner::Full(Some(bytes)))
    }

    pub fn relay(body: Incoming, lease: Option<Lease>) -> Self {
        let mut b = Self::new(Inner::Relay(body));
        b.lease = lease;
        b
    }

    fn new(inner: Inner) -> Self {
        ProxyBody {
            inner,
            bytes_out: 0,
            completion: None,
            lease: None,
        }
    }

    /// Attaches the request's `log` phase, run when this body ends or is dropped.
    pub fn set_completion(&mut self, c: Completion) {
        self.completion = Some(c);
    }

    fn complete(&mut self) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes_out);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that was never polled may still be complete (HEAD, 204, empty).
        if let Some(lease) = self.lease.take() {
            if self.is_end_stream() {
                lease.release();
            }
        }
        self.complete();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            Inner::Empty => None,
            Inner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            Inner::Relay(body) => ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes_out += d.len() as u64;
                }
            }
            None => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
                this.complete();
            }
            Some(Err(_)) => {
                this.lease = None;
                this.complete();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(b) => b.is_none(),
            Inner::Relay(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Relay(body) => body.size_hint(),
        }
    }
}

/// What the upstream request body tells the request about the downstream body.
#[derive(Default)]
pub struct RequestBodyState {
    pub bytes: AtomicU64,
    /// The client's body failed (reset, bad framing): the request is the client's fault.
    pub failed: AtomicBool,
}

/// The body sent upstream: the client's body, counted as it passes.
pub struct RequestBody {
    inner: Incoming,
    state: Option<Arc<RequestBodyState>>,
}

impl RequestBody {
    /// `state` is only allocated for requests that have a body.
    pub fn new(inner: Incoming, state: Option<Arc<RequestBodyState>>) -> Self {
        RequestBody { inner, state }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(state) = &this.state {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        state.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Some(Err(_)) => state.failed.store(true, Ordering::Relaxed),
                None => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
