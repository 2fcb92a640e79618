//! The body of every response the gateway sends downstream: relayed from an upstream, read
//! from a cache fill, or made by the gateway, streamed frame by frame with the client's
//! backpressure.
//!
//! The response body owns the request's [`Completion`]: when the last frame has been handed
//! to the client, or the client goes away and the body is dropped, the `log` phase runs, and
//! it runs once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::log::Completion;
use crate::cache::store::{Admission, FillBody, FillLeader};
use crate::message::{BodyError, BodyLimit, ExtraFields, VIA_VALUE, X_REQUEST_ID};
use crate::upstream::pool::UpstreamBody;

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
    /// Chunks the gateway writes as they come (a job's event stream); ends when the
    /// sender is dropped.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
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

    /// The bytes of a body made whole by the gateway, not yet sent.
    pub fn full_bytes_mut(&mut self) -> Option<&mut Bytes> {
        match &mut self.inner {
            Inner::Full(b) => b.as_mut(),
            _ => None,
        }
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

    /// A body written by the gateway as it goes: the chunks sent on the channel's other
    /// end, until it is dropped.
    pub fn stream(chunks: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self::new(Inner::Stream(chunks))
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

    /// Takes the request's `log` phase away from this body (a tunnel runs it instead).
    pub fn take_completion(&mut self) -> Option<Completion> {
        self.completion.take()
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

impl ExtraFields for ProxyBody {
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
            Inner::Stream(chunks) => match chunks.poll_recv(cx) {
                Poll::Ready(chunk) => chunk.map(|b| Ok(Frame::data(b))),
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
            Inner::Follow(_) | Inner::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Relay(body) => body.size_hint(),
            Inner::Follow(_) | Inner::Stream(_) => SizeHint::default(),
        }
    }
}
