//! The body of an upstream request: the client's body, counted and held to the route's size
//! and idle limits as it passes (and copied to a mirror when one is attached), a body read
//! in full already, or a mirror's copy of another request's body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::message::{BodyError, BodyLimit};
use crate::serve::DownstreamBody;

/// What the upstream request body tells the request about the downstream body.
#[derive(Default)]
pub struct RequestBodyState {
    pub bytes: AtomicU64,
    /// The client's body failed (reset, bad framing): the request is the client's fault.
    pub failed: AtomicBool,
    /// The body passed the route's `max_body_bytes` (413).
    pub too_large: AtomicBool,
    /// The client stopped sending its body for longer than `body_timeout` (408).
    pub timed_out: AtomicBool,
}

/// The body sent upstream: the client's body, counted as it passes (and copied to a mirror
/// when one is attached), or a mirror's copy of another request's body.
pub struct RequestBody {
    source: Source,
    state: Option<Arc<RequestBodyState>>,
    limit: Option<u64>,
    idle: Option<(Duration, Option<Pin<Box<Sleep>>>)>,
    tee: Option<Tee>,
}

/// The sending side of a mirror's copy; `whole` is set only when the original ended well,
/// so a copy cut short ends in an error upstream, never in a truncated body that looks whole.
struct Tee {
    tx: mpsc::Sender<Bytes>,
    whole: Arc<AtomicBool>,
}

enum Source {
    Empty,
    Client(DownstreamBody),
    /// A body read in full already (validated against a schema).
    Buffered(Option<Bytes>),
    Copy(mpsc::Receiver<Bytes>, Arc<AtomicBool>),
}

/// A mirror's copy that lost frames (it fell behind or the original failed).
#[derive(Debug, thiserror::Error)]
#[error("mirrored body copy was cut")]
pub struct CopyCut;

/// No body: what is left in a request whose body was taken.
impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl RequestBody {
    /// `state` is only allocated for requests that have a body.
    pub fn new(inner: DownstreamBody, state: Option<Arc<RequestBodyState>>) -> Self {
        RequestBody {
            source: Source::Client(inner),
            state,
            limit: None,
            idle: None,
            tee: None,
        }
    }

    /// A body the gateway already read in full.
    pub fn buffered(bytes: Bytes, state: Option<Arc<RequestBodyState>>) -> Self {
        RequestBody {
            source: Source::Buffered((!bytes.is_empty()).then_some(bytes)),
            state,
            limit: None,
            idle: None,
            tee: None,
        }
    }

    /// Makes an empty body the client's `inner`, cut past `limit` bytes and after `idle`
    /// without data when `limits` are given: [`RequestBody::new`] and `with_limits` in
    /// place, for a request that is filled where it lies rather than moved there.
    pub fn set_client(
        &mut self,
        inner: DownstreamBody,
        state: Option<Arc<RequestBodyState>>,
        limits: Option<(Option<u64>, Duration)>,
    ) {
        debug_assert!(matches!(self.source, Source::Empty), "set on a body in use");
        self.source = Source::Client(inner);
        self.state = state;
        if let Some((limit, idle)) = limits {
            self.limit = limit;
            self.idle = Some((idle, None));
        }
    }

    /// Makes an empty body one the gateway already read in full: [`RequestBody::buffered`]
    /// in place.
    pub fn set_buffered(&mut self, bytes: Bytes, state: Option<Arc<RequestBodyState>>) {
        debug_assert!(matches!(self.source, Source::Empty), "set on a body in use");
        self.source = Source::Buffered((!bytes.is_empty()).then_some(bytes));
        self.state = state;
    }

    /// No body (a retried or mirrored request without one).
    pub fn empty() -> Self {
        RequestBody {
            source: Source::Empty,
            state: None,
            limit: None,
            idle: None,
            tee: None,
        }
    }

    /// Cuts the body past `limit` bytes and after `idle` without data.
    pub fn with_limits(mut self, limit: Option<u64>, idle: Duration) -> Self {
        self.limit = limit;
        self.idle = Some((idle, None));
        self
    }

    /// Copies the body, frame by frame, to a mirror; a mirror that falls behind by more than
    /// `depth` frames loses its copy rather than slow this request down.
    pub fn tee(&mut self, depth: usize) -> RequestBody {
        let (tx, rx) = mpsc::channel(depth);
        let whole = Arc::new(AtomicBool::new(false));
        self.tee = Some(Tee {
            tx,
            whole: whole.clone(),
        });
        RequestBody {
            source: Source::Copy(rx, whole),
            state: None,
            limit: None,
            idle: None,
            tee: None,
        }
    }

    fn fail(&self, why: BodyLimit) -> Option<Result<Frame<Bytes>, BodyError>> {
        if let Some(state) = &self.state {
            let flag = match why {
                BodyLimit::TooLarge(_) => &state.too_large,
                _ => &state.timed_out,
            };
            flag.store(true, Ordering::Relaxed);
        }
        Some(Err(BodyError::from(why)))
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
        let polled = match &mut this.source {
            Source::Empty => Poll::Ready(None),
            Source::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Client(body) => Pin::new(body).poll_frame(cx),
            Source::Copy(rx, whole) => rx.poll_recv(cx).map(|b| match b {
                Some(b) => Some(Ok(Frame::data(b))),
                None if whole.load(Ordering::Acquire) => None,
                None => Some(Err(BodyError::from(CopyCut))),
            }),
        };
        let frame = match polled {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if let Some((limit, sleep)) = &mut this.idle {
                    let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*limit)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        let limit = *limit;
                        return Poll::Ready(this.fail(BodyLimit::RequestIdle(limit)));
                    }
                }
                return Poll::Pending;
            }
        };
        if let Some((limit, Some(sleep))) = &mut this.idle {
            sleep.as_mut().reset(Instant::now() + *limit);
        }
        if let Some(Ok(f)) = &frame {
            if let Some(d) = f.data_ref() {
                let total = match &this.state {
                    Some(state) => {
                        state.bytes.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64
                    }
                    None => 0,
                };
                if let Some(limit) = this.limit {
                    if total > limit {
                        this.tee = None;
                        return Poll::Ready(this.fail(BodyLimit::TooLarge(limit)));
                    }
                }
                if let Some(tee) = &this.tee {
                    if tee.tx.try_send(d.clone()).is_err() {
                        this.tee = None;
                    }
                }
            }
        }
        match &frame {
            Some(Err(_)) => {
                if let Some(state) = &this.state {
                    state.failed.store(true, Ordering::Relaxed);
                }
                this.tee = None;
            }
            // The copy ends where the original does.
            None => {
                if let Some(tee) = this.tee.take() {
                    tee.whole.store(true, Ordering::Release);
                }
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Buffered(b) => b.is_none(),
            Source::Client(b) => b.is_end_stream(),
            Source::Copy(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Empty => SizeHint::with_exact(0),
            Source::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Client(b) => b.size_hint(),
            Source::Copy(..) => SizeHint::default(),
        }
    }
}
