//! The reading side of a downstream HTTP/1.1 connection, shared by the connection loop (it
//! reads request heads) and the request body (it reads body data when the handler polls it):
//! the socket, the read buffer and the decoding state of the current body, with the strict
//! chunk checks. Body data is split off the buffer, never copied.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::BoxIo;
use crate::serve::strict::{
    self, check_trailer, chunk_data_end, chunk_size_line, FieldScanner, Rejection, Span,
    StrictLimits,
};
use crate::spare_buffers;

/// Why a downstream request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("client closed the connection inside the request body")]
    Closed,
    #[error("request body: {}", .0.reason)]
    Framing(Rejection),
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
    #[error("request body read after it failed")]
    Failed,
    #[error("request body read after its exchange ended")]
    Stale,
}

/// The connection's socket and read buffer.
pub(super) struct Wire {
    /// `None` once handed over after a 101.
    pub(super) io: Option<BoxIo>,
    /// Bytes read and not consumed yet; heads and body data are split off its front.
    pub(super) rbuf: BytesMut,
    pub(super) eof: bool,
    pub(super) body: BodyState,
    /// Counts requests: a body handle of an earlier request reads nothing.
    pub(super) request: u64,
    pub(super) expect: Expect,
    /// Interim responses (`100 Continue`, and 1xx relayed from upstream) owed to the client,
    /// written before anything else goes out; empty (and never allocated) on a connection
    /// that sends none.
    interim: Vec<u8>,
    /// How much of `interim` is written.
    interim_at: usize,
    limits: StrictLimits,
    /// Where each trailer field lies in the trailer section being read.
    trailers: Vec<(Span, Span)>,
    /// The connection task, waiting for the end of the request body before it watches for
    /// the client leaving (the body may be read by another task).
    parked: Option<Waker>,
}

/// Decoding state of the current request body.
#[derive(Clone, Copy, Debug)]
pub(super) enum BodyState {
    /// No body, or its end has been read.
    Done,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(FieldScanner),
    /// The body broke its framing, or the client left inside it: the connection can carry
    /// no further request.
    Failed,
}

/// `Expect: 100-continue` on the current request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// Nothing owed (not asked, queued or sent, or the client did not wait).
    Nothing,
    /// The client waits for `100 Continue` before sending its body; sent when the body is
    /// first polled (or when the upstream sends one), never if the request is answered
    /// without reading it.
    Owed,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// A request head usually arrives in one read of this size.
const READ_CHUNK: usize = spare_buffers::READ_BUFFER;
/// Below this much free space the read buffer is grown (or reclaimed) before reading.
const MIN_SPARE: usize = 2 * 1024;
/// Most body data asked for in one read: large bodies stream in frames of this size (fewer
/// reads and upstream writes), and memory per connection stays bounded.
const BODY_READ: u64 = 64 * 1024;

/// Locks the wire. Poisoning cannot happen (panics abort), and a poisoned wire would still
/// be in a consistent state between polls.
pub(super) fn lock(wire: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wire {
    /// A wire over `io`, with `read` already read from it (and let go of here). A
    /// connection that has sent nothing more holds no read buffer yet.
    pub(super) fn new(io: BoxIo, read: Vec<u8>, limits: StrictLimits) -> Self {
        let mut rbuf = BytesMut::new();
        if !read.is_empty() {
            rbuf = spare_buffers::take_read();
            rbuf.extend_from_slice(&read);
        }
        Wire {
            io: Some(io),
            rbuf,
            eof: false,
            body: BodyState::Done,
            request: 0,
            expect: Expect::Nothing,
            interim: Vec::new(),
            interim_at: 0,
            limits,
            trailers: Vec::new(),
            parked: None,
        }
    }

    /// One read from the socket into the buffer; `Ok(0)` is EOF. Without a buffer (an idle
    /// connection gave it back) the socket is first waited on, and a buffer taken only
    /// once bytes are there.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            if let Some(io) = self.io.as_mut() {
                ready!(io.poll_readable(cx));
            }
            self.rbuf = spare_buffers::take_read();
        } else if self.rbuf.capacity() - self.rbuf.len() < MIN_SPARE {
            self.rbuf.reserve(READ_CHUNK);
        }
        self.poll_read(cx)
    }

    /// Gives the read buffer back while nothing is buffered: the connection waits for its
    /// next request without one.
    pub(super) fn release_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() != 0 {
            spare_buffers::give_read(std::mem::take(&mut self.rbuf));
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let n = ready!(pin!(io.read_buf(&mut self.rbuf)).poll(cx))?;
        self.eof |= n == 0;
        Poll::Ready(Ok(n))
    }

    /// Reads more of a body that is not complete: EOF is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ReadError>> {
        if self.eof {
            return Poll::Ready(Err(ReadError::Closed));
        }
        match ready!(self.poll_fill(cx))? {
            0 => Poll::Ready(Err(ReadError::Closed)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Reads body data, with room for up to `left` bytes of it (within `BODY_READ`). The
    /// buffer is empty here, and the previous frame usually written upstream and dropped,
    /// so the room is reclaimed rather than allocated.
    fn poll_data(&mut self, cx: &mut Context<'_>, left: u64) -> Poll<Result<(), ReadError>> {
        if self.eof {
            return Poll::Ready(Err(ReadError::Closed));
        }
        let want = usize::try_from(left.min(BODY_READ)).unwrap_or(READ_CHUNK);
        if self.rbuf.capacity() - self.rbuf.len() < want.max(MIN_SPARE) {
            self.rbuf.reserve(want.max(READ_CHUNK));
        }
        match ready!(self.poll_read(cx))? {
            0 => Poll::Ready(Err(ReadError::Closed)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Lets go of a read buffer grown for a large body once nothing is left in it, so an
    /// idle connection holds no more than a head's worth.
    pub(super) fn shrink_idle_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 2 * READ_CHUNK {
            self.rbuf = BytesMut::new();
        }
    }

    /// True while the current body has bytes still to come.
    pub(super) fn body_pending(&self) -> bool {
        !matches!(self.body, BodyState::Done | BodyState::Failed)
    }

    /// The next frame of the current request body.
    pub(super) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReadError>>> {
        let polled = match ready!(self.poll_continue(cx)) {
            Ok(()) => self.poll_decode(cx),
            Err(e) => Poll::Ready(Err(e)),
        };
        let frame = match ready!(polled) {
            Ok(frame) => frame.map(Ok),
            Err(e) => {
                self.body = BodyState::Failed;
                Some(Err(e))
            }
        };
        if !self.body_pending() {
            if let Some(waker) = self.parked.take() {
                waker.wake();
            }
        }
        Poll::Ready(frame)
    }

    /// While the handler waits for its answer: `Ready` once the client has left, by a reset,
    /// or by an EOF unless `half_close` allows it (the request was complete and the client
    /// said it was its last: see docs/operations.md). Reads only once the body is in, so
    /// no body bytes are read ahead of the handler, and only into an empty buffer: bytes of
    /// a pipelined request stay there for the next head, and end the watch. Costs no
    /// syscall while the socket has not become readable.
    pub(super) fn poll_left(&mut self, cx: &mut Context<'_>, half_close: bool) -> Poll<()> {
        if self.body_pending() {
            match &self.parked {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => self.parked = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        if self.eof || !self.rbuf.is_empty() {
            return Poll::Pending;
        }
        match self.poll_fill(cx) {
            Poll::Ready(Ok(0)) if half_close => Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
            Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
        }
    }

    /// Writes the interim responses queued (a `100 Continue` begun, 1xx relayed from
    /// upstream), and does nothing when there are none.
    pub(super) fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ReadError>> {
        if self.interim.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let written = ready!(self.poll_write_interim(cx));
        // Written or failed, the queue is done with: a failed write fails the final response.
        self.interim.clear();
        self.interim_at = 0;
        Poll::Ready(written)
    }

    fn poll_write_interim(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ReadError>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(ReadError::Closed));
        };
        let mut io = std::pin::Pin::new(io);
        while let Some(rest) = self
            .interim
            .get(self.interim_at..)
            .filter(|r| !r.is_empty())
        {
            let n = ready!(io.as_mut().poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.interim_at += n;
        }
        ready!(io.poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Queues `100 Continue` if the client waits for it, has sent nothing yet and has not
    /// had one; a second one is never sent.
    pub(super) fn queue_continue(&mut self) {
        match self.expect {
            Expect::Nothing => {}
            // Body bytes already here: the client did not wait, and needs no 100.
            Expect::Owed if !self.rbuf.is_empty() => self.expect = Expect::Nothing,
            Expect::Owed => {
                self.expect = Expect::Nothing;
                self.interim.extend_from_slice(CONTINUE);
            }
        }
    }

    /// The queue of interim responses, for a relayed 1xx head to be encoded at its end.
    pub(super) fn interim_queue(&mut self) -> &mut Vec<u8> {
        &mut self.interim
    }

    /// Writes `100 Continue` if the client waits for it and has sent nothing yet, after any
    /// interim response queued before it.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ReadError>> {
        self.queue_continue();
        self.poll_interim(cx)
    }

    fn poll_decode(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, ReadError>> {
        loop {
            let state = self.body;
            match state {
                BodyState::Done => return Poll::Ready(Ok(None)),
                BodyState::Failed => return Poll::Ready(Err(ReadError::Failed)),
                BodyState::Length(left) | BodyState::ChunkData(left) => {
                    if self.rbuf.is_empty() {
                        ready!(self.poll_data(cx, left))?;
                    }
                    let n =
                        usize::try_from(left).map_or(self.rbuf.len(), |l| l.min(self.rbuf.len()));
                    let data = self.rbuf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.body = match (state, left) {
                        (BodyState::Length(_), 0) => BodyState::Done,
                        (BodyState::Length(_), _) => BodyState::Length(left),
                        (_, 0) => BodyState::ChunkEnd,
                        (_, _) => BodyState::ChunkData(left),
                    };
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                BodyState::ChunkSize => match self.chunk_size()? {
                    Some(size) => self.body = self.after_chunk_size(size),
                    None => ready!(self.poll_more(cx))?,
                },
                BodyState::ChunkEnd => {
                    match chunk_data_end(&self.rbuf).map_err(ReadError::Framing)? {
                        Some(n) => {
                            self.rbuf.advance(n);
                            self.body = BodyState::ChunkSize;
                        }
                        None => ready!(self.poll_more(cx))?,
                    }
                }
                BodyState::Trailers(mut scanner) => {
                    let trailers = &mut self.trailers;
                    let scanned = scanner.scan(&self.rbuf, &self.limits, |name, _, n, v| {
                        check_trailer(name)?;
                        trailers.push((n, v));
                        Ok(())
                    });
                    self.body = BodyState::Trailers(scanner);
                    match scanned.map_err(ReadError::Framing)? {
                        Some(end) => {
                            let section = self.rbuf.split_to(end).freeze();
                            self.body = BodyState::Done;
                            if self.trailers.is_empty() {
                                return Poll::Ready(Ok(None));
                            }
                            let map = trailer_map(&section, &self.trailers)?;
                            return Poll::Ready(Ok(Some(Frame::trailers(map))));
                        }
                        None => ready!(self.poll_more(cx))?,
                    }
                }
            }
        }
    }

    /// Checks the framing of the chunked body bytes already in the buffer, from the current
    /// decoding state, without consuming them: chunk sizes and extensions, the CRLF after
    /// each chunk's data, the last-chunk and the trailer fields. A small body usually arrives
    /// with its head, so a framing error anywhere in it is refused like a broken head, before
    /// the handler starts and before any of it goes upstream; only the part of a body still
    /// to come can fail mid-stream. The walk skips chunk data, so it costs a step per chunk.
    pub(super) fn check_buffered_body(&self) -> Result<(), Rejection> {
        let b = &self.rbuf[..];
        let mut at = 0usize;
        let mut state = self.body;
        loop {
            let rest = b.get(at..).unwrap_or_default();
            state = match state {
                BodyState::ChunkSize => match chunk_size_line(rest, &self.limits)? {
                    Some((size, len)) => {
                        at += len;
                        if size == 0 {
                            BodyState::Trailers(FieldScanner::new(at))
                        } else {
                            BodyState::ChunkData(size)
                        }
                    }
                    None => return Ok(()),
                },
                BodyState::ChunkData(left) => match usize::try_from(left) {
                    Ok(n) if n <= rest.len() => {
                        at += n;
                        BodyState::ChunkEnd
                    }
                    _ => return Ok(()),
                },
                BodyState::ChunkEnd => match chunk_data_end(rest)? {
                    Some(n) => {
                        at += n;
                        BodyState::ChunkSize
                    }
                    None => return Ok(()),
                },
                BodyState::Trailers(mut scanner) => {
                    scanner.scan(b, &self.limits, |name, _, _, _| check_trailer(name))?;
                    return Ok(());
                }
                BodyState::Done | BodyState::Length(_) | BodyState::Failed => return Ok(()),
            };
        }
    }

    /// The state after a chunk-size line announcing `size` bytes.
    pub(super) fn after_chunk_size(&mut self, size: u64) -> BodyState {
        if size > 0 {
            return BodyState::ChunkData(size);
        }
        self.trailers.clear();
        BodyState::Trailers(FieldScanner::new(0))
    }

    /// The size from the chunk-size line at the front of the buffer, once it is complete.
    pub(super) fn chunk_size(&mut self) -> Result<Option<u64>, ReadError> {
        match chunk_size_line(&self.rbuf, &self.limits).map_err(ReadError::Framing)? {
            Some((size, len)) => {
                self.rbuf.advance(len);
                Ok(Some(size))
            }
            None => Ok(None),
        }
    }
}

/// The trailer fields, as a header map sharing the section's bytes.
fn trailer_map(section: &Bytes, spans: &[(Span, Span)]) -> Result<HeaderMap, ReadError> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for &((ns, ne), (vs, ve)) in spans {
        let (Some(name), Some(_)) = (section.get(ns..ne), section.get(vs..ve)) else {
            return Err(ReadError::Framing(strict::INVALID_FIELD_NAME));
        };
        let name = HeaderName::from_bytes(name)
            .map_err(|_| ReadError::Framing(strict::INVALID_FIELD_NAME))?;
        let value = HeaderValue::from_maybe_shared(section.slice(vs..ve))
            .map_err(|_| ReadError::Framing(strict::CONTROL_IN_FIELD_VALUE))?;
        map.append(name, value);
    }
    Ok(map)
}
