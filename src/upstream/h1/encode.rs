//! Request side of an upstream HTTP/1.1 exchange: the request head and the body framing.
//!
//! Framing is decided once, from the request's own `content-length` and its body's end and
//! size hint: a declared length is sent as is (and enforced), an empty body sends nothing
//! (with `content-length: 0` for the methods servers expect it on), an exactly known size gets
//! a `content-length`, anything else is chunked. The caller has already removed hop-by-hop
//! headers; every other header is written as given.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Method, Request};
use http_body::{Body, Frame};

use super::{BoxError, H1Error};
use crate::outgoing::{parse_length, push_hex, Outgoing};
use crate::upstream::added::Added;
use crate::upstream::stream::UpstreamStream;

/// The rest of an upload that continues while the response streams back (a 2xx that came
/// before the request body ended: the upstream is reading both ways). Type-erased so the
/// response body stays one type; boxed only on this uncommon path.
pub(super) trait Upload: Send {
    /// As [`BodySender::poll_step`].
    fn poll_step(
        &mut self,
        stream: &mut UpstreamStream,
        wbuf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, H1Error>>;
}

/// A request body with its sender, as an [`Upload`].
pub(super) struct Continued<B> {
    pub sender: BodySender,
    pub body: B,
}

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqFraming {
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// Writes a request body to the socket, one frame at a time: the next frame is polled only
/// once the previous one is entirely in the socket (backpressure, one frame of buffering).
pub(super) struct BodySender {
    framing: ReqFraming,
    /// The content-length announced, for the error when the body does not match it.
    declared: u64,
    /// After `wbuf` (the head first, then chunk-size lines): the frame being written, then
    /// the CRLF closing a chunk.
    out: Outgoing,
    /// The body's end (or its declared length) has been queued.
    ended: bool,
    /// The head has not been written yet: the first frame may join it.
    first: bool,
    taken: bool,
}

const CRLF: &[u8] = b"\r\n";

/// Encodes the request head into `buf`; `None` framing means no body is sent.
pub(super) fn encode_head<B: Body>(
    buf: &mut Vec<u8>,
    req: &Request<B>,
    added: &Added,
) -> Result<Option<ReqFraming>, H1Error> {
    let body = req.body();
    let declared = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => {
            Some(parse_length(v.as_bytes()).ok_or(H1Error::Request("invalid content-length"))?)
        }
        None => None,
    };
    buf.clear();
    buf.extend_from_slice(req.method().as_str().as_bytes());
    buf.push(b' ');
    match req.uri().path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => buf.extend_from_slice(pq.as_str().as_bytes()),
        _ => buf.push(b'/'),
    }
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = added.host() {
        write_field(buf, &header::HOST, host);
    }
    for (name, value) in req.headers().iter().chain(added.fields()) {
        write_field(buf, name, value);
    }
    added.write_trace(buf);
    let framing = match declared {
        Some(0) if body.is_end_stream() => None,
        Some(n) => Some(ReqFraming::Length(n)),
        None if body.is_end_stream() || body.size_hint().exact() == Some(0) => {
            if wants_zero_length(req.method()) {
                buf.extend_from_slice(b"content-length: 0\r\n");
            }
            None
        }
        None => match body.size_hint().exact() {
            Some(n) => {
                buf.extend_from_slice(b"content-length: ");
                buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                buf.extend_from_slice(CRLF);
                Some(ReqFraming::Length(n))
            }
            None => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Some(ReqFraming::Chunked)
            }
        },
    };
    buf.extend_from_slice(CRLF);
    Ok(framing)
}

impl BodySender {
    pub(super) fn new(framing: ReqFraming) -> Self {
        BodySender {
            framing,
            declared: match framing {
                ReqFraming::Length(n) => n,
                ReqFraming::Chunked => 0,
            },
            out: Outgoing::default(),
            ended: framing == ReqFraming::Length(0),
            first: true,
            taken: false,
        }
    }

    /// Some frame (data, trailers or an error) was taken from the body: it cannot be resent.
    pub(super) fn taken(&self) -> bool {
        self.taken
    }

    /// Writes the head (already in `wbuf`) and then the body, one frame per call:
    /// `Ready(Ok(true))` once all of it is in the socket, `Ready(Ok(false))` after each
    /// frame, so the caller can look for an early response in between.
    pub(super) fn poll_step<B>(
        &mut self,
        stream: &mut UpstreamStream,
        wbuf: &mut Vec<u8>,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, H1Error>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if self.first {
            self.first = false;
            // A frame that is ready now goes out in the same write as the head.
            if !self.ended {
                if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                    self.accept(frame, wbuf)?;
                }
            }
        }
        ready!(self.poll_flush(stream, wbuf, cx))?;
        if self.ended {
            return Poll::Ready(Ok(true));
        }
        let frame = ready!(body.as_mut().poll_frame(cx));
        self.accept(frame, wbuf)?;
        Poll::Ready(Ok(false))
    }

    /// Queues what the body produced, with its chunk framing.
    fn accept<E: Into<BoxError>>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
        wbuf: &mut Vec<u8>,
    ) -> Result<(), H1Error> {
        let frame = match frame {
            None => {
                match self.framing {
                    ReqFraming::Length(0) => {}
                    ReqFraming::Length(_) => return Err(self.length_error()),
                    ReqFraming::Chunked => wbuf.extend_from_slice(b"0\r\n\r\n"),
                }
                self.ended = true;
                return Ok(());
            }
            Some(Err(e)) => {
                self.taken = true;
                return Err(H1Error::Body(e.into()));
            }
            Some(Ok(frame)) => frame,
        };
        self.taken = true;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => match &mut self.framing {
                ReqFraming::Length(remaining) => {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Err(self.length_error());
                    }
                    *remaining -= len;
                    self.ended = *remaining == 0;
                    self.out.data = data;
                }
                ReqFraming::Chunked => {
                    push_hex(wbuf, data.len() as u64);
                    wbuf.extend_from_slice(CRLF);
                    self.out.data = data;
                    self.out.tail = CRLF;
                }
            },
            Err(frame) => {
                // Trailers only exist on the wire in chunked framing; with a declared
                // length they are dropped, as nothing could carry them.
                if let (Ok(trailers), ReqFraming::Chunked) = (frame.into_trailers(), self.framing) {
                    wbuf.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        write_field(wbuf, name, value);
                    }
                    wbuf.extend_from_slice(CRLF);
                    self.ended = true;
                }
            }
        }
        Ok(())
    }

    fn length_error(&self) -> H1Error {
        H1Error::BodyLength(self.declared)
    }

    /// Writes `wbuf[wpos..]`, `data` and `tail`, vectored, until all are in the socket, and
    /// flushes: over TLS, written bytes may still sit in the session as records; they must
    /// be on the wire before the caller waits for the next frame or the response.
    fn poll_flush(
        &mut self,
        stream: &mut UpstreamStream,
        wbuf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), H1Error>> {
        Poll::Ready(ready!(self.out.poll_write(stream, wbuf, true, cx)).map_err(H1Error::Io))
    }
}

impl<B> Upload for Continued<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<BoxError>,
{
    fn poll_step(
        &mut self,
        stream: &mut UpstreamStream,
        wbuf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, H1Error>> {
        self.sender
            .poll_step(stream, wbuf, Pin::new(&mut self.body), cx)
    }
}

/// `name: value` CRLF for each field, names in the lower case the http crate keeps.
fn write_field(buf: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(CRLF);
}

/// Servers expect an explicit zero length on methods that normally carry a body.
fn wants_zero_length(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}
