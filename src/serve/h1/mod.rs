//! The gateway's own downstream HTTP/1.1 server connection.
//!
//! One task runs the whole connection: it reads a request head into a reused buffer, parses
//! it once with the strict parser (which refuses anything two parsers could frame
//! differently, see `serve::strict`), builds the `Request` from that parse, awaits the
//! handler, and writes the response itself in the framing it chose, so nothing is parsed
//! twice and nothing crosses a task. The request body reads from the same socket when the
//! handler polls it (`body`, `wire`); pipelined requests are answered in order; interim
//! responses from upstream reach the client before the final one (`interim`); a 101 hands
//! the socket over (`upgrade`).
//!
//! While the handler waits, the socket is watched: a client that leaves (reset, or EOF
//! unless it is a half-close after a complete last request) cancels the request by dropping
//! the handler (`Wire::poll_left`, docs/operations.md).
//!
//! Deadlines: a head must be complete `header_timeout` after its first byte (else 408), and
//! a connection with nothing in flight closes after `keepalive_timeout`. On graceful shutdown
//! an idle connection closes at once and a busy one after its response.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

mod body;
mod interim;
mod request;
mod response;
mod send;
#[cfg(test)]
mod tests;
pub mod upgrade;
mod wire;

pub use body::H1RequestBody;
pub use upgrade::{OnUpgrade, Upgraded};
pub use wire::ReadError;

use super::strict::{self, BodyKind, HeadInfo, HeadParser, HeadStep, Rejection, StrictLimits};
use super::DownstreamBody;
use crate::message::{ExtraFields, Interim};
use crate::spare_buffers;
use interim::Relay;
use response::Exchange;
use send::Sender;
use wire::{lock, BodyState, Expect, Wire};

/// A downstream byte stream (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {
    /// Ready once a read may find something (bytes, EOF or an error); pending, the task is
    /// woken when it may. An idle connection waits here without holding a read buffer.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl Io for tokio::net::TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_read_ready(cx).map(|_| ())
    }
}

impl Io for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    /// Plaintext rustls already holds is ready at once; otherwise the socket is waited on.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (tcp, tls) = self.get_ref();
        if !tls.wants_read() {
            return Poll::Ready(());
        }
        tcp.poll_read_ready(cx).map(|_| ())
    }
}

/// A downstream connection, type-erased: one indirect call per read or write.
pub type BoxIo = Box<dyn Io>;

/// What answers the requests of a connection.
pub trait Service: Send + Sync {
    type Body: Body<Data = Bytes> + ExtraFields + Send + Unpin;

    /// Answers `req`. The request stays in the connection's frame and is lent, so it is
    /// built once and never moved; the service takes from it what it forwards. Interim
    /// responses for the client go to `interim`.
    fn call(
        &self,
        req: &mut Request<DownstreamBody>,
        interim: &dyn Interim,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Limits and deadlines of one listener's HTTP/1.1 connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: StrictLimits,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

/// Request body bytes read and thrown away, at most, so that a connection whose handler
/// ignored the body can carry the next request.
const MAX_DRAIN: u64 = 64 * 1024;
/// Time allowed for that.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// After a close that may leave client bytes unread, input is read and dropped for at most
/// this long and this much, while it keeps coming (`LINGER_PAUSE`), so the kernel does not
/// answer it with a reset that could destroy the response still in flight (nginx's
/// lingering close, bounded).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_PAUSE: Duration = Duration::from_millis(100);

/// Serves HTTP/1.1 on `io` until the connection closes, is upgraded, or has drained on
/// shutdown. `read` holds bytes already read from it (protocol sniffing).
///
/// The state is built here and moved into the returned future once: an `async fn` would
/// keep its arguments beside the state made from them for the connection's whole life.
pub fn serve<S: Service>(
    io: BoxIo,
    read: Vec<u8>,
    settings: Settings,
    svc: S,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let mut stop_rx = shutdown.clone();
    let draining = *shutdown.borrow();
    let mut conn = Conn {
        wire: Arc::new(Mutex::new(Wire::new(io, read, settings.limits))),
        parser: HeadParser::new(),
        wbuf: Vec::new(),
        settings,
        timer: Deadline::default(),
        idle_since: None,
        head_since: None,
        draining,
        shutdown,
        stop_armed: false,
        request: 0,
    };
    async move {
        // Woken by any change: shutdown is the only one.
        let stop = pin!(async {
            let _ = stop_rx.changed().await;
        });
        let end = conn.run(&svc, stop).await;
        // Boxed, as refusals are: rare states that need not make every task larger.
        Box::pin(conn.close(end)).await;
    }
}

/// How the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Close; the client may still be sending (refusal, unread body): linger.
    Linger,
    /// Close; nothing unread is expected.
    Close,
    /// The stream is gone (handed over after a 101) or broken.
    Gone,
}

/// What waiting for a request head produced.
enum HeadEvent {
    Head(Bytes),
    Refuse(Rejection),
    Closed,
}

struct Conn {
    wire: Arc<Mutex<Wire>>,
    parser: HeadParser,
    /// The response head (and chunk-size lines), reused from one response to the next;
    /// given back while the connection is idle.
    wbuf: Vec<u8>,
    settings: Settings,
    timer: Deadline,
    /// When the connection was last seen idle with nothing to read.
    idle_since: Option<Instant>,
    /// When a head that is not complete yet was first seen waiting for more bytes.
    head_since: Option<Instant>,
    draining: bool,
    shutdown: watch::Receiver<bool>,
    /// The shutdown watcher has registered this task for wake-up.
    stop_armed: bool,
    /// Number of the current request (as `Wire::request`).
    request: u64,
}

/// One timer per connection. Deadlines only move later from one request to the next, so
/// the timer is re-armed when it fires early rather than on every request.
#[derive(Default)]
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl Conn {
    /// Serves requests until the connection must close; says how.
    async fn run<S: Service>(
        &mut self,
        svc: &S,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> End {
        loop {
            let head = match poll_fn(|cx| self.poll_head(cx, stop.as_mut())).await {
                HeadEvent::Head(head) => head,
                HeadEvent::Refuse(r) => return Box::pin(self.refuse(r)).await,
                HeadEvent::Closed => return End::Close,
            };
            let info = self.parser.info;
            let kind = self.parser.body_kind();
            // Without 100-continue the first chunk-size line must arrive, valid, before the
            // request is dispatched: a broken one is refused like a broken head.
            if kind == BodyKind::Chunked && !info.expect_continue {
                match poll_fn(|cx| self.poll_first_chunk(cx)).await {
                    Ok(true) => {}
                    Ok(false) => return End::Close,
                    Err(r) => return Box::pin(self.refuse(r)).await,
                }
            }
            // The rest of a small body is usually here already: all of its framing is
            // checked before any of it goes upstream.
            if kind == BodyKind::Chunked {
                let checked = lock(&self.wire).check_buffered_body();
                if let Err(r) = checked {
                    return Box::pin(self.refuse(r)).await;
                }
            }
            // Boxed: a request's state (the handler's future among it) is large and lives
            // only while it is in flight, so the task of an idle connection stays small.
            if let Err(end) = Box::pin(self.exchange(svc, head, info, kind)).await {
                return end;
            }
        }
    }

    /// One request from its parsed head to its response written (and its body read to the
    /// end); `Err` says how the connection ends instead of carrying another request.
    async fn exchange<S: Service>(
        &mut self,
        svc: &S,
        head: Bytes,
        info: HeadInfo,
        kind: BodyKind,
    ) -> Result<(), End> {
        self.idle_since = None;
        self.head_since = None;
        let body = match kind {
            BodyKind::None => DownstreamBody::Empty,
            _ => DownstreamBody::H1(H1RequestBody::new(self.wire.clone(), self.request)),
        };
        let has_body = kind != BodyKind::None;
        // The request and then the response live in these blocks and end with them,
        // dropped where they lie: both are large, and moves copy them.
        let relay = Relay::new(&self.wire, info.v11);
        let responded = {
            let mut upgrade = None;
            // The handler's answer is written here once, where it stays until written out:
            // returned through the polling closure and matched, it was copied three times.
            let mut answer = None;
            {
                let mut req = match request::build(&head, &self.parser, body) {
                    Ok(req) => req,
                    Err(r) => return Err(self.refuse(r).await),
                };
                drop(head);
                if info.upgrade && info.v11 {
                    let (tx, on) = OnUpgrade::pair();
                    req.extensions_mut().insert(on);
                    upgrade = Some(tx);
                }
                let mut call = pin!(svc.call(&mut req, &relay));
                let wire = &*self.wire;
                let half_close = info.close_after();
                let slot = &mut answer;
                poll_fn(|cx| match call.as_mut().poll(cx) {
                    Poll::Ready(resp) => {
                        *slot = Some(resp);
                        Poll::Ready(())
                    }
                    Poll::Pending => lock(wire).poll_left(cx, half_close),
                })
                .await;
            }
            // No answer: the client left. Returning drops the handler, hence the upstream
            // request with it.
            let Some(resp) = answer.as_mut() else {
                return Err(self.left());
            };
            self.draining |= self.shutdown.has_changed().unwrap_or(true);
            // Interim responses begun (`100 Continue`, 1xx relayed from upstream) must be
            // complete before the final response starts.
            if (has_body || relay.used())
                && poll_fn(|cx| lock(&self.wire).poll_interim(cx))
                    .await
                    .is_err()
            {
                return Err(End::Gone);
            }
            let ex = Exchange {
                v11: info.v11,
                head: info.method_head,
                close: info.close_after() || self.draining || (has_body && !self.can_continue()),
            };
            self.respond(resp, ex, upgrade).await
        };
        match responded {
            Ok(false) => {}
            Ok(true) if self.unread() => return Err(End::Linger),
            Ok(true) => return Err(End::Close),
            Err(end) => return Err(end),
        }
        if has_body && !self.finish_body().await {
            return Err(End::Linger);
        }
        Ok(())
    }

    /// The client left while its request waited for an answer: the request is cancelled
    /// (its `log` phase records 499) and there is nobody to answer.
    fn left(&self) -> End {
        tracing::debug!("client closed the connection while its request waited; cancelled");
        if lock(&self.wire).eof {
            End::Close
        } else {
            End::Gone
        }
    }

    /// Reads until a complete head is at the front of the buffer, or the connection has to
    /// close or refuse.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<HeadEvent> {
        let mut wire = lock(&self.wire);
        loop {
            if !wire.rbuf.is_empty() {
                match self.parser.advance(&wire.rbuf, &self.settings.limits) {
                    Ok(HeadStep::Complete(len)) => {
                        let head = wire.rbuf.split_to(len).freeze();
                        self.request = begin_request(&self.parser, &mut wire);
                        return Poll::Ready(HeadEvent::Head(head));
                    }
                    Ok(HeadStep::Skip(n)) => {
                        wire.rbuf.advance(n);
                        continue;
                    }
                    Ok(HeadStep::NeedMore) => {}
                    Err(r) => return Poll::Ready(HeadEvent::Refuse(r)),
                }
            }
            if wire.eof {
                return Poll::Ready(HeadEvent::Closed);
            }
            match wire.poll_fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(HeadEvent::Closed),
                Poll::Pending => break,
            }
        }
        let idle = wire.rbuf.is_empty();
        if idle {
            // Nothing to read for now: wait without buffers.
            wire.release_buffer();
            drop(wire);
            self.parser.release_fields();
            if self.wbuf.capacity() != 0 {
                spare_buffers::give_write(std::mem::take(&mut self.wbuf));
            }
            self.poll_idle(cx, stop)
        } else {
            drop(wire);
            self.poll_header_deadline(cx)
        }
    }

    /// Nothing in flight and nothing to read: closes on shutdown or after the keep-alive time.
    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
        stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<HeadEvent> {
        if !self.stop_armed {
            // Polled once: from then on the watcher wakes this task when shutdown is raised.
            self.draining |= stop.poll(cx).is_ready();
            self.stop_armed = true;
        }
        self.draining |= self.shutdown.has_changed().unwrap_or(true);
        if self.draining {
            return Poll::Ready(HeadEvent::Closed);
        }
        self.head_since = None;
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if self
            .timer
            .poll_passed(cx, since + self.settings.keepalive_timeout)
        {
            return Poll::Ready(HeadEvent::Closed);
        }
        Poll::Pending
    }

    /// Part of a head is here: refuses it once the header deadline has passed.
    fn poll_header_deadline(&mut self, cx: &mut Context<'_>) -> Poll<HeadEvent> {
        let since = *self.head_since.get_or_insert_with(Instant::now);
        if self
            .timer
            .poll_passed(cx, since + self.settings.header_timeout)
        {
            return Poll::Ready(HeadEvent::Refuse(strict::HEADER_TIMEOUT));
        }
        Poll::Pending
    }

    /// Reads the first chunk-size line of a chunked body (under the header deadline):
    /// `Ok(false)` when the client went away first.
    fn poll_first_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Rejection>> {
        let mut wire = lock(&self.wire);
        loop {
            match wire.chunk_size() {
                Ok(Some(size)) => {
                    wire.body = wire.after_chunk_size(size);
                    return Poll::Ready(Ok(true));
                }
                Ok(None) => {}
                Err(ReadError::Framing(r)) => return Poll::Ready(Err(r)),
                Err(_) => return Poll::Ready(Ok(false)),
            }
            if wire.eof {
                return Poll::Ready(Ok(false));
            }
            match wire.poll_fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(false)),
                Poll::Pending => break,
            }
        }
        drop(wire);
        match ready!(self.poll_header_deadline(cx)) {
            HeadEvent::Refuse(r) => Poll::Ready(Err(r)),
            _ => Poll::Ready(Ok(false)),
        }
    }

    /// Whether the request body, as it stands, leaves the connection able to carry another
    /// request after the response (decided before the head is written, to say so in it).
    /// A `100 Continue` not sent yet never will be: it cannot follow the final response.
    fn can_continue(&self) -> bool {
        let mut wire = lock(&self.wire);
        let waiting = wire.expect == Expect::Owed && wire.rbuf.is_empty();
        if wire.expect == Expect::Owed {
            wire.expect = Expect::Nothing;
        }
        match wire.body {
            BodyState::Done => true,
            BodyState::Failed => false,
            // The client waits for a go-ahead it will not get: it may never send the body.
            _ if waiting => false,
            BodyState::Length(n) => n <= MAX_DRAIN,
            _ => true,
        }
    }

    /// Client bytes may be left unread: a body not read to its end, or pipelined requests.
    fn unread(&self) -> bool {
        let wire = lock(&self.wire);
        wire.body_pending() || !wire.rbuf.is_empty()
    }

    /// Writes the response; `Ok(true)` when the connection closes after it.
    async fn respond<B>(
        &mut self,
        resp: &mut Response<B>,
        ex: Exchange,
        upgrade: Option<oneshot::Sender<Upgraded>>,
    ) -> Result<bool, End>
    where
        B: Body<Data = Bytes> + ExtraFields + Unpin,
    {
        if self.wbuf.capacity() == 0 {
            self.wbuf = spare_buffers::take_write();
        }
        let head = response::encode(&mut self.wbuf, resp, &ex);
        // The head is written: its map's allocations serve the next head read here.
        crate::spare_maps::give(std::mem::take(resp.headers_mut()));
        let (close, switching) = (head.close, head.switching);
        let mut sender = Sender::new(head);
        let wire = &*self.wire;
        let wbuf = &mut self.wbuf;
        let mut body = Pin::new(resp.body_mut());
        let sent = poll_fn(|cx| sender.poll_send(cx, wire, wbuf, body.as_mut())).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "response not written in full");
            return Err(End::Gone);
        }
        if switching {
            return Err(self.hand_over(upgrade));
        }
        Ok(close)
    }

    /// After a 101: the stream and what was read past the request go to the upgrade handle.
    fn hand_over(&mut self, upgrade: Option<oneshot::Sender<Upgraded>>) -> End {
        let Some(tx) = upgrade else {
            return End::Close;
        };
        let mut wire = lock(&self.wire);
        let Some(io) = wire.io.take() else {
            return End::Gone;
        };
        let read = wire.rbuf.split().freeze();
        // A handle dropped unused drops the stream with it: the connection closes.
        let _ = tx.send(Upgraded { io, read });
        End::Gone
    }

    /// Reads to its end a request body the handler left unread (a bounded amount, for a
    /// bounded time); false when the connection cannot carry another request.
    async fn finish_body(&mut self) -> bool {
        {
            let mut wire = lock(&self.wire);
            // Earlier body handles read nothing from now on.
            wire.request += 1;
            match wire.body {
                BodyState::Done => {
                    wire.shrink_idle_buffer();
                    return true;
                }
                BodyState::Failed => return false,
                _ => {}
            }
        }
        let wire = &*self.wire;
        let mut drained = 0u64;
        let drain = poll_fn(|cx| {
            let mut wire = lock(wire);
            loop {
                match ready!(wire.poll_body(cx)) {
                    None => return Poll::Ready(true),
                    Some(Err(_)) => return Poll::Ready(false),
                    Some(Ok(frame)) => {
                        drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if drained > MAX_DRAIN {
                            return Poll::Ready(false);
                        }
                    }
                }
            }
        });
        let drained = tokio::time::timeout(DRAIN_TIME, drain)
            .await
            .unwrap_or(false);
        if drained {
            lock(wire).shrink_idle_buffer();
        }
        drained
    }

    /// Answers a refused head with its status and closes. A client too slow to send its
    /// head gets no lingering: freeing its connection is the point of the deadline.
    async fn refuse(&mut self, r: Rejection) -> End {
        tracing::debug!(
            status = r.status.as_u16(),
            reason = r.reason,
            "request refused"
        );
        let reply = strict::problem_response(r);
        let io = lock(&self.wire).io.take();
        let Some(mut io) = io else {
            return End::Gone;
        };
        let written = io.write_all(&reply).await.and(io.flush().await);
        lock(&self.wire).io = Some(io);
        if written.is_err() {
            return End::Gone;
        }
        if r == strict::HEADER_TIMEOUT {
            End::Close
        } else {
            End::Linger
        }
    }

    /// Ends the connection: FIN after the last response, then (when the client may still be
    /// sending) reads and drops its bytes for a while.
    async fn close(&mut self, end: End) {
        let io = lock(&self.wire).io.take();
        let Some(mut io) = io else {
            return;
        };
        if end == End::Gone {
            return;
        }
        let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
        if end == End::Linger && !lock(&self.wire).eof {
            let _ = tokio::time::timeout(LINGER_TIME, discard(&mut io)).await;
        }
    }
}

/// Sets the wire up for the body of the head `parser` just completed; returns the request's
/// number.
fn begin_request(parser: &HeadParser, wire: &mut Wire) -> u64 {
    let info = &parser.info;
    let kind = parser.body_kind();
    wire.request += 1;
    wire.body = match kind {
        BodyKind::None => BodyState::Done,
        BodyKind::Length(n) => BodyState::Length(n),
        BodyKind::Chunked => BodyState::ChunkSize,
    };
    wire.expect = if info.expect_continue && info.v11 && kind != BodyKind::None {
        Expect::Owed
    } else {
        Expect::Nothing
    };
    wire.request
}

/// Reads and drops input until EOF, an error, a pause in it, or `LINGER_BYTES`.
async fn discard(io: &mut BoxIo) {
    // On the heap: in the task's future it would make every connection's task larger.
    let mut scratch = vec![0u8; 4096];
    let mut dropped = 0;
    while let Ok(Ok(n)) = tokio::time::timeout(LINGER_PAUSE, io.read(&mut scratch)).await {
        dropped += n;
        if n == 0 || dropped > LINGER_BYTES {
            break;
        }
    }
}

impl Deadline {
    /// True once `at` has passed; otherwise the task is woken when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>, at: Instant) -> bool {
        let sleep = match (&mut self.sleep, self.armed) {
            (Some(sleep), Some(armed)) if armed <= at => sleep,
            (Some(sleep), _) => {
                sleep.as_mut().reset(at);
                self.armed = Some(at);
                sleep
            }
            (None, _) => {
                self.armed = Some(at);
                self.sleep.insert(Box::pin(tokio::time::sleep_until(at)))
            }
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if Instant::now() >= at {
            return true;
        }
        // Armed for an earlier deadline: move it to this one.
        sleep.as_mut().reset(at);
        self.armed = Some(at);
        sleep.as_mut().poll(cx).is_ready()
    }
}
