//! The response body of an upstream HTTP/1.1 exchange, read from the connection as the
//! downstream side polls it: data frames are split off the read buffer (no copy), at most
//! one read's worth at a time, so a body of any size streams through constant memory.
//! When the body ends cleanly on a reusable exchange, the connection can go back to the pool.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::decode::{self, Framing, Parsed, MAX_CHUNK_LINE};
use super::encode::Upload;
use super::{H1Conn, H1Error, RequestInfo};
use crate::upstream::stream::UpstreamStream;

/// The response body, read from the connection as it is polled.
pub struct H1Body {
    /// `None` once the connection is taken, failed, or closed because it cannot be reused.
    conn: Option<Box<H1Conn>>,
    state: State,
    /// The exchange leaves the connection reusable once the body has ended cleanly.
    keep_alive: bool,
    /// A 101 response: the connection now speaks another protocol.
    upgrade: bool,
    /// The rest of the request body, when a 2xx came before it was all sent.
    upload: Option<Box<dyn Upload>>,
    /// The upload was cut short: the write side is still to be shut down.
    half_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes still to read of a content-length body.
    Length(u64),
    /// Until EOF.
    Close,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes still to read of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    /// Ended cleanly.
    Done,
    /// An error was reported; nothing more comes.
    Failed,
}

/// Builds the response from the head at the front of `conn`'s read buffer.
pub(super) fn response(
    mut conn: Box<H1Conn>,
    parsed: Parsed,
    req: RequestInfo,
    body_sent: bool,
    upload: Option<Box<dyn Upload>>,
) -> Result<Response<H1Body>, H1Error> {
    let status = http::StatusCode::from_u16(parsed.status)
        .map_err(|_| H1Error::Malformed("invalid status code"))?;
    let head = conn.rbuf.split_to(parsed.len).freeze();
    let (headers, fields) = decode::build_map(&head, &conn.idx, Some(&mut conn.memo))?;
    let upgrade = parsed.status == 101;
    let framing = fields.framing(parsed.status, parsed.version, req.head)?;
    let keep_alive = parsed.version == http::Version::HTTP_11
        && !fields.close
        && !req.close
        && !upgrade
        && (body_sent || upload.is_some())
        && framing != Framing::Close;
    let state = match framing {
        Framing::Empty => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::ChunkSize,
        Framing::Close => State::Close,
    };
    let mut body = H1Body {
        conn: Some(conn),
        state,
        keep_alive,
        upgrade,
        upload,
        half_close: false,
    };
    if state == State::Done {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = parsed.version;
    *resp.headers_mut() = headers;
    Ok(resp)
}

impl H1Body {
    /// After the body ended cleanly (poll_frame returned None) and the exchange leaves the
    /// connection reusable: the connection, to go back to the pool. None otherwise.
    pub fn take_conn(&mut self) -> Option<Box<H1Conn>> {
        if self.state == State::Done && self.keep_alive {
            self.conn.take()
        } else {
            None
        }
    }

    /// For a 101 Switching Protocols response: the raw stream and any bytes already read
    /// past the head (they belong to the new protocol). The body of a 101 is empty.
    pub fn take_upgraded(&mut self) -> Option<(UpstreamStream, Bytes)> {
        if !self.upgrade {
            return None;
        }
        self.conn.take().map(|c| {
            let c = *c;
            (c.stream, c.rbuf.freeze())
        })
    }

    #[cfg(test)]
    pub(super) fn conn_ref(&self) -> Option<&H1Conn> {
        self.conn.as_deref()
    }

    /// The body ended cleanly: keep the connection only if the exchange allows reuse and
    /// nothing unsolicited follows the message; otherwise close it now.
    fn finish(&mut self) {
        self.state = State::Done;
        // An upload the response did not wait for is cut short: the upstream would read
        // its remainder as the next request.
        let clean =
            self.upload.take().is_none() && self.conn.as_ref().is_some_and(|c| c.rbuf.is_empty());
        self.keep_alive &= clean;
        if !self.keep_alive && !self.upgrade {
            self.conn = None;
        }
    }

    /// Sends what it can of a continued upload. Its failure ends the upload, never the
    /// response, which the upstream may still send in full: a write error, or the request
    /// body cut short (past a gateway limit, or the client's upload broken or stalled).
    /// Then the upstream is told by a half-close that the request ends there, so that one
    /// still reading it answers or stops rather than waits; the connection is not reused.
    fn poll_upload(&mut self, cx: &mut Context<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(upload) = self.upload.as_mut() {
            loop {
                match upload.poll_step(&mut conn.stream, &mut conn.wbuf, cx) {
                    Poll::Ready(Ok(false)) => {}
                    Poll::Ready(Ok(true)) => break,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "upload after an early response ended");
                        self.keep_alive = false;
                        self.half_close = !matches!(e, H1Error::Io(_));
                        break;
                    }
                    Poll::Pending => return,
                }
            }
            self.upload = None;
        }
        if self.half_close && Pin::new(&mut conn.stream).poll_shutdown(cx).is_ready() {
            self.half_close = false;
        }
    }

    /// Decodes up to the next frame; `Ok(None)` at the end.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame<Bytes>>, H1Error>> {
        self.poll_upload(cx);
        loop {
            let state = self.state;
            if matches!(state, State::Done | State::Failed) {
                return Poll::Ready(Ok(None));
            }
            let Some(conn) = self.conn.as_mut() else {
                debug_assert!(false, "a body still being read has its connection");
                return Poll::Ready(Err(H1Error::Closed));
            };
            match state {
                State::Length(remaining) | State::ChunkData(remaining) => {
                    let data = ready!(conn.poll_data(cx, remaining))?;
                    let left = remaining - data.len() as u64;
                    self.state = match state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    if self.state == State::Done {
                        self.finish();
                    }
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                State::Close => {
                    if conn.rbuf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        self.finish();
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(Frame::data(conn.rbuf.split().freeze()))));
                }
                State::ChunkSize => {
                    self.state = match ready!(conn.poll_chunk_size(cx))? {
                        0 => State::Trailers,
                        size => State::ChunkData(size),
                    };
                }
                State::ChunkEnd => {
                    ready!(conn.poll_chunk_end(cx))?;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let trailers = ready!(conn.poll_trailers(cx))?;
                    self.finish();
                    return Poll::Ready(Ok(trailers.map(Frame::trailers)));
                }
                State::Done | State::Failed => {}
            }
        }
    }
}

impl H1Conn {
    /// Up to `max` bytes of body data: what is buffered, or else what one read brings.
    fn poll_data(&mut self, cx: &mut Context<'_>, max: u64) -> Poll<Result<Bytes, H1Error>> {
        if self.rbuf.is_empty() {
            ready!(self.poll_more(cx))?;
        }
        let n = usize::try_from(max).map_or(self.rbuf.len(), |m| m.min(self.rbuf.len()));
        Poll::Ready(Ok(self.rbuf.split_to(n).freeze()))
    }

    /// The size from the next chunk-size line.
    fn poll_chunk_size(&mut self, cx: &mut Context<'_>) -> Poll<Result<u64, H1Error>> {
        loop {
            let window = self.rbuf.len().min(MAX_CHUNK_LINE);
            if let Some(lf) = self.rbuf[..window].iter().position(|&b| b == b'\n') {
                let size = decode::chunk_size(&self.rbuf[..=lf])?;
                self.rbuf.advance(lf + 1);
                return Poll::Ready(Ok(size));
            }
            if window == MAX_CHUNK_LINE {
                return Poll::Ready(Err(H1Error::Malformed("chunk-size line too long")));
            }
            ready!(self.poll_more(cx))?;
        }
    }

    /// The CRLF that ends a chunk's data.
    fn poll_chunk_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        while self.rbuf.len() < 2 {
            ready!(self.poll_more(cx))?;
        }
        if !self.rbuf.starts_with(b"\r\n") {
            return Poll::Ready(Err(H1Error::Malformed("chunk data not ended by crlf")));
        }
        self.rbuf.advance(2);
        Poll::Ready(Ok(()))
    }

    /// The trailer section after the last chunk; `None` when it is empty.
    fn poll_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<HeaderMap>, H1Error>> {
        loop {
            if let Some(len) = decode::parse_trailers(&self.rbuf, &self.limits, &mut self.idx)? {
                let section = self.rbuf.split_to(len).freeze();
                if self.idx.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                let (trailers, _) = decode::build_map(&section, &self.idx, None)?;
                return Poll::Ready(Ok(Some(trailers)));
            }
            if self.rbuf.len() >= self.limits.max_head_bytes {
                return Poll::Ready(Err(H1Error::HeadTooLarge(self.limits.max_head_bytes)));
            }
            ready!(self.poll_more(cx))?;
        }
    }

    /// Reads more of a message that is not complete yet: EOF is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        match ready!(self.poll_fill(cx))? {
            0 => Poll::Ready(Err(H1Error::Closed)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        match ready!(this.poll_next(cx)) {
            Ok(frame) => Poll::Ready(frame.map(Ok)),
            Err(e) => {
                // The connection's state is unknown after an error: close it.
                this.state = State::Failed;
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done | State::Failed => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("state", &self.state)
            .field("keep_alive", &self.keep_alive)
            .field("upgrade", &self.upgrade)
            .field("uploading", &self.upload.is_some())
            .finish()
    }
}
