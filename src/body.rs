//! Body types of the proxy: the downstream response body (relayed or synthetic) and the
//! upstream request body, both streamed frame by frame with the peer's backpressure.
//!
//! The response body owns the request's [`Completion`]: when the last frame has been handed
//! to the client, or the client goes away and the body is dropped, the `log` phase runs, and
//! it runs once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::cache::store::{Admission, FillBody, FillLeader};
use crate::proxy::{Completion, VIA_VALUE, X_REQUEST_ID};
use crate::serve::DownstreamBody;
use crate::upstream::pool::UpstreamBody;

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

/// The body of every response the gateway sends downstream.
pub struct ProxyBody {
    inner: Inner,
    bytes_out: u64,
    completion: Option<Completion>,
    /// The cache fill this relayed body feeds: each data frame is pushed, the end stores it,
    /// an error or an early drop abandons it.
    fill: Option<Box<Filling>>,
    /// Route `timeouts.idle` / `timeouts.total` on the relayed body, when configured.
    timer: Option<Box<BodyTimer>>,
    /// The gateway's response fields kept out of the header map (a hashed insert each).
    gateway: GatewayFields,
}

/// Response fields the gateway adds, carried beside the header map: the HTTP/1.1 writer
/// writes them after the map's fields; HTTP/2 responses get them in the map.
#[derive(Default)]
struct GatewayFields {
    request_id: Option<HeaderValue>,
    via: bool,
}

/// Idle and total deadlines of a relayed body. Armed only while the upstream is silent.
pub struct BodyTimer {
    idle: Option<Duration>,
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl BodyTimer {
    /// `None` when neither limit is set.
    pub fn new(idle: Option<Duration>, deadline: Option<Instant>) -> Option<Box<Self>> {
        if idle.is_none() && deadline.is_none() {
            return None;
        }
        Some(Box::new(BodyTimer {
            idle,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
        }))
    }

    /// True once the body has been silent too long or the exchange ran out of time.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let idle_at = self.idle.map(|d| Instant::now() + d);
            let at = match (idle_at, self.deadline) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or_else(Instant::now),
            };
            self.sleep.as_mut().reset(at);
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// What runs after a fill is stored (sharing it with other instances).
pub type AfterFill = Box<dyn FnOnce() + Send>;

/// A cache fill fed by a relayed body.
struct Filling {
    leader: FillLeader,
    after: Option<AfterFill>,
}

impl Filling {
    fn finish(self) {
        if self.leader.finish() == Admission::Stored {
            if let Some(after) = self.after {
                after();
            }
        }
    }
}

// Relayed bodies are the common case (see `UpstreamBody`): kept inline, not boxed.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Empty,
    Full(Option<Bytes>),
    /// An upstream response; its connection goes back to the pool at its end.
    Relay(UpstreamBody),
    /// Another request's response, read from the cache fill it is streaming into.
    Follow(FillBody),
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self::new(Inner::Empty)
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::new(Inner::Full(Some(bytes)))
    }

    pub fn relay(body: UpstreamBody) -> Self {
        Self::new(Inner::Relay(body))
    }

    /// A relayed body that also fills the cache; `after` runs once the fill is stored.
    pub fn relay_filling(body: UpstreamBody, leader: FillLeader, after: Option<AfterFill>) -> Self {
        let mut b = Self::new(Inner::Relay(body));
        b.fill = Some(Box::new(Filling { leader, after }));
        b
    }

    /// The body of a response another request is fetching into the cache.
    pub fn follow(body: FillBody) -> Self {
        Self::new(Inner::Follow(body))
    }

    fn new(inner: Inner) -> Self {
        ProxyBody {
            inner,
            bytes_out: 0,
            completion: None,
            fill: None,
            timer: None,
            gateway: GatewayFields::default(),
        }
    }

    /// Carries `X-Request-Id` and, with `via`, the gateway's `Via` beside the header map;
    /// the map must not hold either.
    pub fn set_gateway_fields(&mut self, request_id: HeaderValue, via: bool) {
        self.gateway = GatewayFields {
            request_id: Some(request_id),
            via,
        };
    }

    /// Moves the fields carried beside the map into it, for writers that only know the map.
    pub fn move_gateway_fields_into(&mut self, headers: &mut http::HeaderMap) {
        let fields = std::mem::take(&mut self.gateway);
        if fields.via {
            headers.append(http::header::VIA, HeaderValue::from_static(VIA_VALUE));
        }
        if let Some(id) = fields.request_id {
            headers.insert(X_REQUEST_ID, id);
        }
    }

    /// Applies idle/total deadlines to a relayed body.
    pub fn set_timer(&mut self, timer: Option<Box<BodyTimer>>) {
        self.timer = timer;
    }

    /// Attaches the request's `log` phase, run when this body ends or is dropped.
    pub fn set_completion(&mut self, c: Completion) {
        self.completion = Some(c);
    }

    fn complete(&mut self, now: std::time::Instant) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes_out, now);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that was never polled may still be complete (HEAD, 204, empty).
        let now = std::time::Instant::now();
        if let Inner::Relay(body) = &mut self.inner {
            body.recycle(now);
            // An empty body the server never polled still completes its fill; any other
            // unfinished fill is abandoned as it drops.
            if body.is_end_stream() {
                if let Some(fill) = self.fill.take() {
                    fill.finish();
                }
            }
        }
        self.complete(now);
    }
}

impl crate::serve::h1::ExtraFields for ProxyBody {
    fn extra_fields(&self, mut field: impl FnMut(&[u8], &[u8])) {
        if self.gateway.via {
            field(b"via", VIA_VALUE.as_bytes());
        }
        if let Some(id) = &self.gateway.request_id {
            field(X_REQUEST_ID.as_str().as_bytes(), id.as_bytes());
        }
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
            Inner::Follow(body) => match body.poll_chunk(cx) {
                Poll::Ready(f) => f.map(|r| r.map(Frame::data).map_err(BodyError::from)),
                Poll::Pending => return Poll::Pending,
            },
            Inner::Relay(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(f) => {
                    if let Some(t) = &mut this.timer {
                        t.armed = false;
                    }
                    f
                }
                Poll::Pending => match this.timer.as_deref_mut().map(|t| t.expired(cx)) {
                    Some(true) => Some(Err(BodyError::from(BodyLimit::ResponseTimeout))),
                    _ => return Poll::Pending,
                },
            },
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes_out += d.len() as u64;
                    if let Some(fill) = &mut this.fill {
                        fill.leader.push(d.clone());
                    }
                }
            }
            None => {
                // One clock read serves the pool's idle stamp and the log phase.
                let now = std::time::Instant::now();
                if let Inner::Relay(body) = &mut this.inner {
                    body.recycle(now);
                }
                if let Some(fill) = this.fill.take() {
                    fill.finish();
                }
                this.complete(now);
            }
            Some(Err(_)) => {
                this.fill = None;
                this.complete(std::time::Instant::now());
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(b) => b.is_none(),
            Inner::Relay(body) => body.is_end_stream(),
            Inner::Follow(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Relay(body) => body.size_hint(),
            Inner::Follow(_) => SizeHint::default(),
        }
    }
}

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
