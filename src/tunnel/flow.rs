//! One direction of a tunnel: bytes from a source to a destination, copied without a
//! buffer held while idle, with the frame boundaries followed as they pass so that the
//! gateway's own frames (close, ping) go in between two frames and an oversized message is
//! stopped before its first byte.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::frames::{Frames, Own, Stop, MAX_HEADER};
use crate::spare_buffers;

/// WebSocket close code "going away" (RFC 6455 §7.4.1).
pub(super) const GOING_AWAY: u16 = 1001;
/// WebSocket close code "message too big".
pub(super) const TOO_BIG: u16 = 1009;

/// How a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Its source closed; the destination was half-closed after the last byte.
    Eof,
    /// The gateway's close frame was written to the destination.
    Closed,
    /// The source sent a message over the limit; what came before it was written.
    TooLarge,
    Failed,
}

/// A frame the gateway owes a destination, written at the next boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owed {
    Ping,
    Close(u16),
}

/// One direction: bytes from `src` to `dst`.
pub(super) struct Flow {
    pub(super) frames: Frames,
    /// Bytes read and not yet written: `buf[pos..walked]` may go, `buf[walked..]` is still
    /// to be walked. Held only while there are such bytes.
    buf: Option<BytesMut>,
    pos: usize,
    walked: usize,
    /// An incomplete frame header kept while the buffer is given back.
    carry: [u8; MAX_HEADER],
    carry_len: usize,
    /// A frame of the gateway's being written, and how much of it is.
    own: Option<(Own, usize, bool)>,
    pub(super) owed: Option<Owed>,
    /// Written bytes not flushed yet (TLS may hold records).
    unflushed: bool,
    eof: bool,
    too_large: bool,
    /// The gateway pinged the source: its next empty pong is the answer, and is dropped.
    pub(super) swallow_pong: bool,
    /// Header bytes of such a pong, skipped once what precedes them is written.
    skip: usize,
    pub(super) end: Option<End>,
    /// Frames towards `dst` must be masked (it is the upstream, a server).
    masked: bool,
    max: Option<u64>,
    /// Last read from the source, and last non-pong byte from it.
    pub(super) heard: Instant,
    pub(super) active: Instant,
    /// Bytes relayed.
    pub(super) bytes: u64,
}

impl Flow {
    pub(super) fn new(first: Bytes, masked: bool, max: Option<u64>, now: Instant) -> Flow {
        let buf = (!first.is_empty()).then(|| {
            let mut buf = spare_buffers::take_read();
            buf.extend_from_slice(&first);
            buf
        });
        Flow {
            frames: Frames::default(),
            buf,
            pos: 0,
            walked: 0,
            carry: [0; MAX_HEADER],
            carry_len: 0,
            own: None,
            owed: None,
            unflushed: false,
            eof: false,
            too_large: false,
            swallow_pong: false,
            skip: 0,
            end: None,
            masked,
            max,
            heard: now,
            active: now,
            bytes: 0,
        }
    }

    /// Moves bytes from `src` to `dst` until both block, or the direction ends.
    pub(super) fn poll<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<End>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        if let Some(end) = self.end {
            // A direction stopped before a message over the limit may still carry a close.
            if self.ended() {
                return Poll::Ready(end);
            }
        }
        let end = ready!(self.pump(cx, src, dst));
        self.release();
        self.end = Some(end);
        Poll::Ready(end)
    }

    fn pump<S, D>(&mut self, cx: &mut Context<'_>, src: &mut S, dst: &mut D) -> Poll<End>
    where
        S: AsyncRead + Unpin,
        D: AsyncWrite + Unpin,
    {
        loop {
            if let Some((frame, at, close)) = &mut self.own {
                let bytes = frame.as_bytes();
                while *at < bytes.len() {
                    match ready!(Pin::new(&mut *dst).poll_write(cx, &bytes[*at..])) {
                        Ok(0) | Err(_) => return Poll::Ready(End::Failed),
                        Ok(n) => *at += n,
                    }
                }
                let close = *close;
                self.own = None;
                self.unflushed = true;
                if close {
                    if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                        return Poll::Ready(End::Failed);
                    }
                    return Poll::Ready(End::Closed);
                }
            }
            if let Some(buf) = &self.buf {
                if self.pos < self.walked {
                    match ready!(Pin::new(&mut *dst).poll_write(cx, &buf[self.pos..self.walked])) {
                        Ok(0) | Err(_) => return Poll::Ready(End::Failed),
                        Ok(n) => {
                            self.pos += n;
                            self.bytes += n as u64;
                            self.unflushed = true;
                        }
                    }
                    continue;
                }
                if self.skip > 0 {
                    self.pos += self.skip;
                    self.walked += self.skip;
                    self.skip = 0;
                    continue;
                }
            }
            if let Some(owed) = self.owed {
                if self.frames.at_boundary() {
                    self.owed = None;
                    let frame = match owed {
                        Owed::Ping => Own::ping(self.masked),
                        Owed::Close(code) => {
                            let reason = if code == TOO_BIG {
                                "message too big"
                            } else {
                                "going away"
                            };
                            Own::close(code, reason, self.masked)
                        }
                    };
                    self.own = Some((frame, 0, matches!(owed, Owed::Close(_))));
                    continue;
                }
            }
            if let Some(buf) = &mut self.buf {
                if self.walked < buf.len() && !self.too_large {
                    let rest = &buf[self.walked..];
                    let w =
                        self.frames
                            .walk(rest, self.owed.is_some(), self.max, self.swallow_pong);
                    self.walked += w.used;
                    if w.active {
                        self.active = Instant::now();
                    }
                    match w.stop {
                        Stop::Boundary => {}
                        Stop::Pong(header) => {
                            self.swallow_pong = false;
                            self.skip = header;
                        }
                        Stop::TooLarge => {
                            self.too_large = true;
                            buf.truncate(self.walked);
                        }
                        Stop::No => {
                            let rest = &buf[self.walked..];
                            self.carry[..rest.len()].copy_from_slice(rest);
                            self.carry_len = rest.len();
                            buf.truncate(self.walked);
                        }
                    }
                    continue;
                }
            }
            // Everything read is written: the buffer goes back before waiting.
            self.release();
            if self.unflushed {
                if ready!(Pin::new(&mut *dst).poll_flush(cx)).is_err() {
                    return Poll::Ready(End::Failed);
                }
                self.unflushed = false;
            }
            if self.too_large {
                return Poll::Ready(End::TooLarge);
            }
            if self.eof {
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                return Poll::Ready(End::Eof);
            }
            let mut buf = spare_buffers::take_read();
            buf.extend_from_slice(&self.carry[..self.carry_len]);
            let read = pin!(src.read_buf(&mut buf)).poll(cx);
            match read {
                Poll::Pending => {
                    buf.clear();
                    spare_buffers::give_read(buf);
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => {
                    buf.clear();
                    spare_buffers::give_read(buf);
                    return Poll::Ready(End::Failed);
                }
                Poll::Ready(Ok(0)) => {
                    buf.clear();
                    spare_buffers::give_read(buf);
                    self.carry_len = 0;
                    self.eof = true;
                }
                Poll::Ready(Ok(_)) => {
                    self.carry_len = 0;
                    self.heard = Instant::now();
                    self.buf = Some(buf);
                    self.pos = 0;
                    self.walked = 0;
                }
            }
        }
    }

    /// The direction has ended and owes nothing more.
    pub(super) fn ended(&self) -> bool {
        self.end.is_some() && !(self.end == Some(End::TooLarge) && self.owed.is_some())
    }

    /// Gives the buffer back (what it held is written or no longer wanted).
    pub(super) fn release(&mut self) {
        if let Some(mut buf) = self.buf.take() {
            buf.clear();
            spare_buffers::give_read(buf);
        }
        self.pos = 0;
        self.walked = 0;
    }
}
