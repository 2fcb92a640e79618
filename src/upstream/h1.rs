//! The gateway's own HTTP/1.1 upstream client connection.
//!
//! One [`H1Conn`] is owned by one request at a time: the request handler's task writes the
//! request head straight into the socket, reads the response head straight out of it, and the
//! response body ([`H1Body`]) reads from the socket only when the downstream side polls it.
//! There is no connection task, no channel and no cross-task wake-up, which is where a general
//! purpose client spends most of its per-request cost. Pipelining is never used: a connection
//! carries one exchange at a time and goes back to the pool only when that exchange ended
//! cleanly (see [`H1Body::take_conn`]).
//!
//! Framing rules (RFC 9112) are in `encode` (request) and `decode` (response, with the
//! choices this client makes where the RFC leaves room); `body` streams the response body.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use http::header::CONNECTION;
use http::{HeaderMap, Method, Request, Response};
use tokio::io::AsyncReadExt;

use super::added::Added;
use super::stream::UpstreamStream;
use crate::message::Interim;

mod body;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use body::H1Body;

/// Boxed error of a request body, as `http_body` bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange on an upstream HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the end of the response")]
    Closed,
    #[error("upstream response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("upstream response head has more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    #[error("request body: {0}")]
    Body(#[source] BoxError),
    #[error("request body length differs from its content-length {0}")]
    BodyLength(u64),
    #[error("invalid request: {0}")]
    Request(&'static str),
}

/// Size limits on what an upstream may send in a response head (and in chunked trailers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H1Limits {
    /// Bytes of the status line and header section together.
    pub max_head_bytes: usize,
    /// Header fields in the head (or in the trailer section).
    pub max_headers: usize,
}

/// A failed [`H1Conn::send`]. The connection is gone (dropped, hence closed).
#[derive(Debug)]
pub struct SendFailure {
    pub error: H1Error,
    /// None of the request's body was taken and the connection failed before any response
    /// byte arrived: the caller may send the same request on another connection.
    pub untouched: bool,
    /// Nothing at all came back on this connection (EOF or reset before the first response
    /// byte): typical of a pooled connection the server closed while idle.
    pub no_response: bool,
}

/// A single-owner HTTP/1.1 client connection.
pub struct H1Conn {
    stream: UpstreamStream,
    /// Bytes read from the upstream and not yet consumed; frames are split off it.
    rbuf: BytesMut,
    /// The request head (and chunk framing), reused from one request to the next.
    wbuf: Vec<u8>,
    /// Where each header of the last parsed head lies, reused likewise.
    idx: Vec<decode::HeaderIdx>,
    /// The previous response's fields, to reuse what repeats.
    memo: decode::FieldMemo,
    limits: H1Limits,
    /// The pool this connection goes back to after a clean exchange; set by the pool.
    pub(super) home: Option<super::pool::Key>,
}

/// What the response side needs to know about the request once it has been sent.
#[derive(Debug, Clone, Copy)]
struct RequestInfo {
    head: bool,
    close: bool,
}

/// How far an exchange got: decides whether a failed request can be handed back, and
/// whether the connection can be reused.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    got_bytes: bool,
    body_taken: bool,
    body_sent: bool,
    /// The request body is still being written (not ended, no write error).
    uploading: bool,
    /// An interim response was handed to the downstream connection and may not be written
    /// out yet: no further upstream head is read until it is (backpressure).
    relaying: bool,
}

/// Read size: a bodiless response usually arrives in one read; a large body streams through
/// buffers of this size, so memory per connection stays constant.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free space the read buffer is grown (or reclaimed) before reading.
const MIN_SPARE: usize = 4 * 1024;

impl Default for H1Limits {
    fn default() -> Self {
        H1Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn")
            .field("peer", &self.stream.peer_addr().ok())
            .field("buffered", &self.rbuf.len())
            .finish()
    }
}

impl H1Conn {
    /// Wraps a connected stream (the caller connects, with its own timeout, and sets nodelay).
    /// Boxed once for the connection's life: requests, responses and the pool then move a
    /// pointer, not the connection.
    pub fn new(stream: UpstreamStream, limits: H1Limits) -> Box<Self> {
        Box::new(H1Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            idx: Vec::new(),
            memo: decode::FieldMemo::default(),
            limits,
            home: None,
        })
    }

    /// True when an idle pooled connection can still be used: nothing buffered and nothing
    /// to read (no syscall in the common plain case).
    pub fn is_usable(&mut self) -> bool {
        self.rbuf.is_empty() && self.stream.is_idle_usable()
    }

    /// Sends one request and returns the response head with a streaming body. The request
    /// head is encoded from `req` and the gateway's `added` fields, the body polled from
    /// `req.body_mut()`. The request stays the caller's (only a body still uploading when
    /// the response comes is taken from it), so a failed send can be retried without
    /// handing it back.
    ///
    /// A final response that arrives before the request body is sent stops the upload and
    /// leaves the connection unusable, unless it is a 2xx: then the upstream is taken to be
    /// reading both ways, and the rest of the body is sent while the response body is read.
    ///
    /// Interim (1xx) responses never end the exchange: each goes to `interim` as it arrives
    /// (or is dropped without one), and the final response is awaited after it.
    pub async fn send<B>(
        mut self: Box<Self>,
        req: &mut Request<B>,
        added: &Added,
        interim: Option<&dyn Interim>,
    ) -> Result<Response<H1Body>, SendFailure>
    where
        B: http_body::Body<Data = bytes::Bytes> + Default + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        debug_assert!(
            self.rbuf.is_empty(),
            "an idle connection has nothing buffered"
        );
        let info = RequestInfo {
            head: req.method() == Method::HEAD,
            close: has_close_token(req.headers()),
        };
        let framing = match encode::encode_head(&mut self.wbuf, req, added) {
            Ok(framing) => framing,
            Err(error) => {
                return Err(SendFailure {
                    error,
                    untouched: true,
                    no_response: false,
                })
            }
        };
        let mut progress = Progress::default();
        let mut sender = framing.map(encode::BodySender::new);
        let result = match sender.as_mut() {
            None => self.send_bodiless(&mut progress, interim).await,
            Some(sender) => {
                let result = self
                    .exchange(sender, req.body_mut(), &mut progress, interim)
                    .await;
                progress.body_taken = sender.taken();
                result
            }
        };
        let head = match result {
            Ok(head) => head,
            Err(error) => {
                let no_response =
                    !progress.got_bytes && matches!(error, H1Error::Closed | H1Error::Io(_));
                let untouched = !progress.got_bytes && !progress.body_taken;
                if !untouched {
                    // What is left of a body partly sent cannot be sent anywhere else.
                    drop(std::mem::take(req.body_mut()));
                }
                return Err(SendFailure {
                    error,
                    untouched,
                    no_response,
                });
            }
        };
        let upload = match sender {
            Some(sender) if progress.uploading && (200..300).contains(&head.status) => {
                let rest = encode::Continued {
                    sender,
                    body: std::mem::take(req.body_mut()),
                };
                Some(Box::new(rest) as Box<dyn encode::Upload>)
            }
            Some(_) if progress.uploading => {
                // The upload stops here: let go of the body now, not when the caller does.
                drop(std::mem::take(req.body_mut()));
                None
            }
            _ => None,
        };
        body::response(self, head, info, progress.body_sent, upload).map_err(|error| SendFailure {
            error,
            untouched: false,
            no_response: false,
        })
    }

    /// A request without body: one write of the head, then the response head.
    async fn send_bodiless(
        &mut self,
        progress: &mut Progress,
        interim: Option<&dyn Interim>,
    ) -> Result<decode::Parsed, H1Error> {
        self.stream.write_all_flushed(&self.wbuf).await?;
        progress.body_sent = true;
        poll_fn(|cx| self.poll_head(cx, progress, interim)).await
    }

    /// A request with a body: the body is written while the response head is watched for,
    /// in one future, checking for a response between frames, so an early final response
    /// (413, 401...) is seen while the upload is still going.
    async fn exchange<B>(
        &mut self,
        sender: &mut encode::BodySender,
        body: &mut B,
        progress: &mut Progress,
        interim: Option<&dyn Interim>,
    ) -> Result<decode::Parsed, H1Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut body = Pin::new(body);
        let mut write_error: Option<io::Error> = None;
        progress.uploading = true;
        poll_fn(|cx| loop {
            match self.poll_head(cx, progress, interim) {
                Poll::Ready(Err(H1Error::Closed)) => {
                    // A reset on write says more than the EOF that follows it.
                    let error = write_error.take().map_or(H1Error::Closed, H1Error::Io);
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(result) => return Poll::Ready(result),
                Poll::Pending if !progress.uploading => return Poll::Pending,
                Poll::Pending => {}
            }
            match sender.poll_step(&mut self.stream, &mut self.wbuf, body.as_mut(), cx) {
                Poll::Ready(Ok(false)) => {}
                Poll::Ready(Ok(true)) => {
                    progress.uploading = false;
                    progress.body_sent = true;
                }
                // The upstream may have answered and closed its side: look for the answer.
                Poll::Ready(Err(H1Error::Io(e))) => {
                    progress.uploading = false;
                    write_error = Some(e);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// Reads until a final (or 101) response head is complete; interim heads go to
    /// `interim` on the way, in order. The final head stays at the front of `rbuf` for
    /// [`body::response`] to take.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        progress: &mut Progress,
        interim: Option<&dyn Interim>,
    ) -> Poll<Result<decode::Parsed, H1Error>> {
        loop {
            if progress.relaying {
                // The client takes the interim responses before the upstream is read on.
                if let Some(to) = interim {
                    ready!(to.poll_flush(cx));
                }
                progress.relaying = false;
            }
            if !self.rbuf.is_empty() {
                if let Some(parsed) = decode::parse_head(&self.rbuf, &self.limits, &mut self.idx)? {
                    if parsed.is_interim() {
                        let head = self.rbuf.split_to(parsed.len).freeze();
                        if let Some(to) = interim {
                            let (fields, _) = decode::build_map(&head, &self.idx, None)?;
                            let status = http::StatusCode::from_u16(parsed.status)
                                .map_err(|_| H1Error::Malformed("invalid status code"))?;
                            to.relay(status, &fields);
                            crate::spare_maps::give(fields);
                            progress.relaying = true;
                        }
                        continue;
                    }
                    return Poll::Ready(Ok(parsed));
                }
                if self.rbuf.len() >= self.limits.max_head_bytes {
                    return Poll::Ready(Err(H1Error::HeadTooLarge(self.limits.max_head_bytes)));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(H1Error::Closed));
            }
            progress.got_bytes = true;
        }
    }

    /// One read from the socket into `rbuf`; `Ok(0)` is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_SPARE {
            self.rbuf.reserve(READ_CHUNK);
        }
        pin!(self.stream.read_buf(&mut self.rbuf)).poll(cx)
    }
}

/// Whether a `connection` header lists the `close` option.
fn has_close_token(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}
