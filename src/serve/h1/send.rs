//! Writing one response: the encoded head, then the body frame by frame in the framing the
//! head announced. The next frame is polled only once the previous one is in the socket
//! (backpressure, no buffering beyond one frame); a frame that is ready when the head is
//! goes out with it in one vectored write.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame};

use super::response::{field, Framing, Head};
use super::wire::{lock, Wire};
use crate::outgoing::{push_hex, Outgoing};

/// Why a response could not be written in full; the connection closes either way.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    #[error("response body failed")]
    Body,
    #[error("response body does not match its content-length")]
    Length,
}

/// Progress of one response on the wire.
pub(super) struct Sender {
    framing: Framing,
    /// Body bytes still owed under `Framing::Length`.
    remaining: u64,
    /// After the write buffer (head, chunk-size lines): the frame being written, then the
    /// CRLF closing a chunk (and the last chunk, when known).
    out: Outgoing,
    /// Everything the body will put on the wire is queued.
    ended: bool,
    /// The body returned its end (its `log` phase has run).
    finished: bool,
    first: bool,
    trailers: Option<Vec<HeaderName>>,
}

const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
const CRLF_LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";

impl Sender {
    pub(super) fn new(head: Head) -> Self {
        let remaining = match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Sender {
            framing: head.framing,
            remaining,
            out: Outgoing::default(),
            ended: head.framing == Framing::None,
            finished: false,
            first: true,
            trailers: head.trailers,
        }
    }

    /// Writes the head (already in `wbuf`) and the body, until all of it is in the socket.
    pub(super) fn poll_send<B>(
        &mut self,
        cx: &mut Context<'_>,
        wire: &Mutex<Wire>,
        wbuf: &mut Vec<u8>,
        mut body: Pin<&mut B>,
    ) -> Poll<Result<(), SendError>>
    where
        B: Body<Data = Bytes>,
    {
        if self.first {
            self.first = false;
            // A frame that is ready now goes out in the same write as the head.
            if !self.ended {
                if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                    self.accept(frame, wbuf, body.is_end_stream())?;
                }
            }
            self.poll_finish(cx, body.as_mut())?;
        }
        loop {
            ready!(self.poll_flush(cx, wire, wbuf))?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(body.as_mut().poll_frame(cx));
            self.accept(frame, wbuf, body.is_end_stream())?;
            self.poll_finish(cx, body.as_mut())?;
        }
    }

    /// Once everything owed is queued, lets the body see its end before the last bytes go
    /// out (as it would if it had been read to the end): it stores its cache fill, frees
    /// its upstream connection and runs the `log` phase. A body with more to give is cut.
    fn poll_finish<B>(&mut self, cx: &mut Context<'_>, body: Pin<&mut B>) -> Result<(), SendError>
    where
        B: Body<Data = Bytes>,
    {
        if !self.ended || self.finished {
            return Ok(());
        }
        match body.poll_frame(cx) {
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(Ok(f)))
                if f.data_ref().is_some_and(|d| !d.is_empty()) && self.framing != Framing::None =>
            {
                return Err(SendError::Length);
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues what the body produced, with its framing; `end` says the body has no more.
    fn accept<E>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
        wbuf: &mut Vec<u8>,
        end: bool,
    ) -> Result<(), SendError> {
        let frame = match frame {
            None => {
                self.finished = true;
                match self.framing {
                    Framing::Length(_) if self.remaining > 0 => return Err(SendError::Length),
                    Framing::Chunked => wbuf.extend_from_slice(LAST_CHUNK),
                    _ => {}
                }
                self.ended = true;
                return Ok(());
            }
            Some(Err(_)) => {
                self.finished = true;
                return Err(SendError::Body);
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => match self.framing {
                Framing::None => {}
                Framing::Length(_) => {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        return Err(SendError::Length);
                    }
                    self.remaining -= len;
                    self.ended = self.remaining == 0;
                    self.out.data = data;
                }
                Framing::Chunked => {
                    push_hex(wbuf, data.len() as u64);
                    wbuf.extend_from_slice(CRLF);
                    self.out.data = data;
                    self.ended = end;
                    self.out.tail = if end { CRLF_LAST_CHUNK } else { CRLF };
                }
                Framing::Close => self.out.data = data,
            },
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    match self.framing {
                        Framing::Chunked => self.trailers(wbuf, &trailers),
                        Framing::Length(_) if self.remaining > 0 => return Err(SendError::Length),
                        _ => {}
                    }
                    self.ended = true;
                }
            }
        }
        Ok(())
    }

    /// The last chunk with the trailer fields the head announced.
    fn trailers(&mut self, wbuf: &mut Vec<u8>, trailers: &HeaderMap) {
        wbuf.extend_from_slice(b"0\r\n");
        if let Some(allowed) = &self.trailers {
            for (name, value) in trailers {
                if allowed.contains(name) && !is_framing_field(name) {
                    field(wbuf, name.as_str().as_bytes(), value.as_bytes());
                }
            }
        }
        wbuf.extend_from_slice(CRLF);
    }

    /// Writes `wbuf[wpos..]`, `data` and `tail`, vectored, until all are in the socket (and,
    /// after the last of the response, through the stream: TLS keeps records back until
    /// flushed). The body is not polled meanwhile, so the wire stays locked throughout.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        wire: &Mutex<Wire>,
        wbuf: &mut Vec<u8>,
    ) -> Poll<Result<(), SendError>> {
        let mut wire = lock(wire);
        let Some(io) = wire.io.as_mut() else {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected).into()));
        };
        let flush = self.ended;
        Poll::Ready(ready!(self.out.poll_write(io, wbuf, flush, cx)).map_err(SendError::Io))
    }
}

/// Fields that frame or route a message never travel as trailers (RFC 9110 §6.5.1).
fn is_framing_field(name: &HeaderName) -> bool {
    matches!(
        *name,
        http::header::CONTENT_LENGTH
            | http::header::TRANSFER_ENCODING
            | http::header::HOST
            | http::header::TRAILER
            | http::header::CONNECTION
    )
}
