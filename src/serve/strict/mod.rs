//! Strict HTTP/1.1 request framing on a downstream connection: an IO wrapper that hands a
//! request head to hyper only once it is complete and passed the framing checks, follows each
//! body to know where the next pipelined head starts, and answers a refused head itself.
//!
//! Why raw bytes and not the parsed request: hyper (httparse) accepts things a gateway must
//! not (equal duplicate Content-Length, TE + CL, bare LF, odd codings), and once a `Request`
//! exists those details are gone. A head that two parsers could frame differently is what
//! request smuggling is made of, so it never reaches hyper, the pipeline or a backend.
//!
//! The write side is watched too, lightly: only response starts and body framing, to learn
//! (a) when every released request has been answered, so a refusal becomes an EOF only then
//! (hyper treats an EOF while a request is in flight as a client abort and drops the response),
//! and (b) when a `101` switched protocols, after which reads pass through unchecked.
//!
//! Status choices (nginx-like): an oversized request line is 414 (the limit is mostly the
//! URI), an oversized header section or too many fields 431; a transfer coding other than
//! `chunked` is 501 (RFC 9112 §6.1: we cannot decode it, and TE is hop-by-hop, so passing it
//! on would corrupt the body); CONNECT is 501 whatever its target (no tunnelling here, and a
//! 405 would need an `Allow` this layer cannot know); other versions of the form `HTTP/d.d`
//! are 505. Everything else malformed is 400.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use http::StatusCode;
use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod request;
mod response;
#[cfg(test)]
mod tests;

use request::*;
use response::*;

/// Framing limits for one downstream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrictLimits {
    /// Longest request line, CRLF excluded; longer is refused with 414.
    pub max_request_line: usize,
    /// Largest header section (field lines and the closing CRLF), 431; also caps trailers.
    pub max_header_bytes: usize,
    /// Most header fields, 431; also caps trailer fields.
    pub max_headers: usize,
    /// Longest chunk extension (from after the size digits to the CR), 400.
    pub max_chunk_extension: usize,
}

/// Why a downstream connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

/// The guard: reads are checked, writes pass through (and are watched for response framing).
pub struct StrictIo<T> {
    io: T,
    limits: StrictLimits,
    /// Downstream bytes not yet handed to the reader; `buf[..end]` holds data, the rest is
    /// initialized spare room reused across reads.
    buf: Vec<u8>,
    rd: usize,
    end: usize,
    eof: bool,
    req: Requests,
    resp: Responses,
    mode: Mode,
    rejection: Option<Rejection>,
    /// The reader, parked until the write side makes progress (held upgrade or refusal).
    parked: Option<Waker>,
    reply: Reply,
    deadlines: Option<Deadlines>,
}

/// Downstream time limits that only this layer can place right: the header deadline runs
/// from the first byte of a head (not from the end of the previous response), and the
/// keep-alive deadline only while every request has been answered.
struct Deadlines {
    header: Duration,
    keepalive: Duration,
    /// One timer per connection, re-armed when the phase changes.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request or a response is under way: other limits apply.
    Busy,
    /// Everything answered, waiting for the next request.
    Idle,
    /// Part of a request head has arrived.
    Head,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Checking,
    /// An upgrade request was released; what follows it is not checked until its response
    /// shows whether the protocol switched.
    Hold {
        idx: u64,
        close: bool,
    },
    /// The last request asked to close; later bytes are never released.
    Ignore,
    Refused {
        mid_body: bool,
    },
    Passthrough,
}

enum Reply {
    Unset,
    Writing { bytes: Vec<u8>, pos: usize },
    Done,
}

/// Bytes asked from the downstream socket per read into the guard's buffer.
const READ_CHUNK: usize = 8 * 1024;
/// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request line.
const MAX_EMPTY_LINES: u8 = 4;
/// 16 hex digits hold any u64; more is refused rather than parsed.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// hyper reserves the two top u64 values for its own length markers.
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;
/// A response head longer than this is not followed (hyper never writes one); see `Lost`.
const MAX_RESPONSE_HEAD: usize = 1 << 20;

impl Rejection {
    const fn bad(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

const BARE_CR: Rejection = Rejection::bad("bare cr in request framing");
const BARE_LF: Rejection = Rejection::bad("bare lf as line ending");
const TOO_MANY_EMPTY_LINES: Rejection = Rejection::bad("too many empty lines before request line");
const REQUEST_LINE_TOO_LONG: Rejection = Rejection {
    status: StatusCode::URI_TOO_LONG,
    reason: "request line too long",
};
const CONTROL_IN_REQUEST_LINE: Rejection = Rejection::bad("control character in request line");
const NON_ASCII_IN_REQUEST_LINE: Rejection = Rejection::bad("non-ascii byte in request line");
const MALFORMED_REQUEST_LINE: Rejection = Rejection::bad("malformed request line");
const INVALID_METHOD: Rejection = Rejection::bad("method is not a token");
const EXTRA_SPACE: Rejection = Rejection::bad("more than one space in request line");
const MISSING_VERSION: Rejection = Rejection::bad("request line without http version");
const INVALID_VERSION: Rejection = Rejection::bad("invalid http version");
const VERSION_NOT_SUPPORTED: Rejection = Rejection {
    status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    reason: "http version not supported",
};
const CONNECT_NOT_SUPPORTED: Rejection = Rejection {
    status: StatusCode::NOT_IMPLEMENTED,
    reason: "connect method is not supported",
};
const FRAGMENT_IN_TARGET: Rejection = Rejection::bad("fragment in request target");
const ASTERISK_NOT_OPTIONS: Rejection = Rejection::bad("asterisk-form target is only for options");
const INVALID_TARGET: Rejection = Rejection::bad("invalid request target");
const USERINFO_IN_TARGET: Rejection = Rejection::bad("userinfo in request target");
const INVALID_AUTHORITY: Rejection = Rejection::bad("invalid authority in request target");
const HEADERS_TOO_LARGE: Rejection = Rejection {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    reason: "header section too large",
};
const TOO_MANY_HEADERS: Rejection = Rejection {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    reason: "too many header fields",
};
const OBS_FOLD: Rejection = Rejection::bad("obsolete line folding");
const EMPTY_FIELD_NAME: Rejection = Rejection::bad("empty field name");
const SPACE_BEFORE_COLON: Rejection = Rejection::bad("whitespace before colon in field line");
const FIELD_WITHOUT_COLON: Rejection = Rejection::bad("field line without colon");
const INVALID_FIELD_NAME: Rejection = Rejection::bad("field name is not a token");
const CONTROL_IN_FIELD_VALUE: Rejection = Rejection::bad("control character in field value");
const MULTIPLE_CONTENT_LENGTH: Rejection = Rejection::bad("more than one content-length field");
const CONTENT_LENGTH_LIST: Rejection = Rejection::bad("content-length is a list");
const INVALID_CONTENT_LENGTH: Rejection = Rejection::bad("content-length is not a number");
const CONTENT_LENGTH_TOO_LARGE: Rejection = Rejection::bad("content-length too large");
const INVALID_TRANSFER_CODING: Rejection = Rejection::bad("invalid transfer coding");
const CHUNKED_TWICE: Rejection = Rejection::bad("chunked applied more than once");
const CHUNKED_NOT_LAST: Rejection = Rejection::bad("transfer-encoding does not end with chunked");
const UNSUPPORTED_TRANSFER_CODING: Rejection = Rejection {
    status: StatusCode::NOT_IMPLEMENTED,
    reason: "unsupported transfer coding",
};
const TRANSFER_ENCODING_IN_HTTP10: Rejection = Rejection::bad("transfer-encoding in http/1.0");
const LENGTH_AND_CODING: Rejection = Rejection::bad("content-length with transfer-encoding");
const MISSING_HOST: Rejection = Rejection::bad("missing host");
const MULTIPLE_HOST: Rejection = Rejection::bad("more than one host field");
const INVALID_HOST: Rejection = Rejection::bad("invalid host");
const INVALID_CHUNK_SIZE: Rejection = Rejection::bad("invalid chunk size");
const CHUNK_SIZE_TOO_LONG: Rejection = Rejection::bad("chunk size longer than 16 hex digits");
const CHUNK_EXTENSION_TOO_LONG: Rejection = Rejection::bad("chunk extension too long");
const INVALID_CHUNK_EXTENSION: Rejection = Rejection::bad("invalid chunk extension");
const MISSING_CHUNK_CRLF: Rejection = Rejection::bad("missing crlf after chunk data");
const FRAMING_FIELD_IN_TRAILERS: Rejection = Rejection::bad("framing field in trailers");
const HEADER_TIMEOUT: Rejection = Rejection {
    status: StatusCode::REQUEST_TIMEOUT,
    reason: "request header timeout",
};

impl<T> StrictIo<T> {
    pub fn new(io: T, limits: StrictLimits) -> Self {
        StrictIo {
            io,
            limits,
            buf: Vec::new(),
            rd: 0,
            end: 0,
            eof: false,
            req: Requests::new(),
            resp: Responses::new(),
            mode: Mode::Checking,
            rejection: None,
            parked: None,
            reply: Reply::Unset,
            deadlines: None,
        }
    }

    /// Closes a connection idle for `keepalive`, and answers 408 to a head not complete
    /// `header` after its first byte.
    pub fn with_deadlines(mut self, header: Duration, keepalive: Duration) -> Self {
        self.deadlines = Some(Deadlines {
            header,
            keepalive,
            sleep: None,
            phase: Phase::Busy,
        });
        self
    }

    fn phase(&self) -> Phase {
        if self.mode != Mode::Checking {
            return Phase::Busy;
        }
        match self.req.state {
            RState::RequestLine | RState::Fields => Phase::Head,
            _ if self.req.withheld => Phase::Head,
            RState::Start if self.end > self.req.base => Phase::Head,
            RState::Start if self.resp.tracking() && self.resp.done >= self.req.heads => {
                Phase::Idle
            }
            _ => Phase::Busy,
        }
    }

    /// Called when the socket has nothing to read: arms the deadline of the current phase,
    /// or reports which one has passed.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> Option<Phase> {
        let phase = self.phase();
        let d = self.deadlines.as_mut()?;
        if phase == Phase::Busy {
            d.phase = phase;
            // hyper will not read again by itself once the response is out: have the write
            // side wake the reader then, so the keep-alive deadline gets armed.
            if !self
                .parked
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                self.parked = Some(cx.waker().clone());
            }
            return None;
        }
        if phase != d.phase {
            d.phase = phase;
            let limit = if phase == Phase::Idle {
                d.keepalive
            } else {
                d.header
            };
            let at = tokio::time::Instant::now() + limit;
            match &mut d.sleep {
                Some(s) => s.as_mut().reset(at),
                None => d.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let sleep = d.sleep.as_mut()?;
        sleep.as_mut().poll(cx).is_ready().then_some(phase)
    }

    /// Why the connection was refused, if it was (for metrics/logs).
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejection
    }

    /// Runs the request parser over the buffered bytes and applies what it decided.
    fn parse(&mut self) {
        loop {
            match self.req.advance(&self.buf[..self.end], &self.limits) {
                Ok(Step::NeedMore) => return,
                Ok(Step::Drop(n)) => {
                    let at = self.req.base;
                    self.buf.copy_within(at + n..self.end, at);
                    self.end -= n;
                }
                Ok(Step::Close) => {
                    self.mode = Mode::Ignore;
                    return;
                }
                Ok(Step::Upgrade { idx, close }) => {
                    self.mode = Mode::Hold { idx, close };
                    return;
                }
                Err(rejection) => {
                    self.rejection = Some(rejection);
                    self.mode = Mode::Refused {
                        mid_body: self.req.mid_body(),
                    };
                    return;
                }
            }
        }
    }

    fn release(&mut self, out: &mut ReadBuf<'_>, upto: usize) {
        let n = (upto - self.rd).min(out.remaining());
        out.put_slice(&self.buf[self.rd..self.rd + n]);
        self.rd += n;
    }

    /// Moves unreleased bytes to the front and makes room for one more read.
    fn make_room(&mut self) {
        if self.rd > 0 {
            self.buf.copy_within(self.rd..self.end, 0);
            self.end -= self.rd;
            self.req.shift(self.rd);
            self.rd = 0;
        }
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
    }

    /// Called with every byte the server managed to write.
    fn observe(&mut self, written: &[u8]) {
        if !self.resp.tracking() || written.is_empty() {
            return;
        }
        let before = self.resp.events;
        self.resp.feed(written, &mut self.req.head_reqs);
        if self.resp.events != before {
            if let Some(waker) = self.parked.take() {
                waker.wake();
            }
        }
    }
}

impl<T: AsyncRead + Unpin> StrictIo<T> {
    /// Reads and drops downstream bytes that will never be released (so the socket does not
    /// fill up and reset the reply). The client's EOF is not passed on: nothing more will be
    /// released anyway, and hyper takes an EOF during a request as an abort and would drop
    /// the responses still owed to a client that merely half-closed.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.parked = Some(cx.waker().clone());
        if self.eof {
            return Poll::Pending;
        }
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        if rb.filled().is_empty() {
            self.eof = true;
        } else {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for StrictIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.req.ok > this.rd {
                let ok = this.req.ok;
                this.release(out, ok);
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Checking if this.resp.switched() => {
                    this.mode = Mode::Passthrough;
                    continue;
                }
                Mode::Checking => {}
                Mode::Passthrough => {
                    if this.end > this.rd {
                        let end = this.end;
                        this.release(out, end);
                        return Poll::Ready(Ok(()));
                    }
                    return Pin::new(&mut this.io).poll_read(cx, out);
                }
                Mode::Hold { idx, close } => {
                    if this.resp.switched() {
                        this.mode = Mode::Passthrough;
                    } else if this.resp.started > idx || this.resp.lost() {
                        this.mode = if close { Mode::Ignore } else { Mode::Checking };
                        if !close {
                            this.parse();
                        }
                    } else {
                        this.parked = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    continue;
                }
                Mode::Ignore => return this.poll_discard(cx),
                Mode::Refused { mid_body: true } => {
                    let reason = this.rejection.map_or("refused", |r| r.reason);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
                Mode::Refused { mid_body: false } => {
                    // EOF only once hyper has answered everything it was given: an EOF while
                    // a request is in flight would make it drop that response.
                    if this.resp.done >= this.req.heads || this.resp.lost() {
                        return Poll::Ready(Ok(()));
                    }
                    return this.poll_discard(cx);
                }
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Body bytes that cannot cross a message boundary go straight into the reader's
            // buffer: no copy for large bodies.
            let room = out.remaining() as u64;
            if this.rd == this.end && room > 0 && this.req.direct_window() >= room {
                let before = out.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
                let n = out.filled().len() - before;
                if n == 0 {
                    this.eof = true;
                } else {
                    this.req.consume_direct(n as u64);
                    this.parse();
                }
                return Poll::Ready(Ok(()));
            }
            this.make_room();
            let mut rb = ReadBuf::new(&mut this.buf[this.end..]);
            if Pin::new(&mut this.io).poll_read(cx, &mut rb)?.is_pending() {
                match this.deadline_passed(cx) {
                    Some(Phase::Idle) => {
                        this.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                    Some(_) => {
                        this.rejection = Some(HEADER_TIMEOUT);
                        this.mode = Mode::Refused { mid_body: false };
                        continue;
                    }
                    None => return Poll::Pending,
                }
            }
            let n = rb.filled().len();
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.end += n;
            this.parse();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for StrictIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, data))?;
        this.observe(data.get(..n).unwrap_or(data));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.observe(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Reply::Unset = this.reply {
            this.reply = match (this.mode, this.rejection) {
                // Only between responses: never inside one or after the server said close.
                (Mode::Refused { mid_body: false }, Some(r))
                    if this.resp.idle_after(this.req.heads) =>
                {
                    Reply::Writing {
                        bytes: problem_response(r),
                        pos: 0,
                    }
                }
                _ => Reply::Done,
            };
        }
        if let Reply::Writing { bytes, pos } = &mut this.reply {
            while *pos < bytes.len() {
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, &bytes[*pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *pos += n;
            }
            ready!(Pin::new(&mut this.io).poll_flush(cx))?;
            this.reply = Reply::Done;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The RFC 9457 error response written when a refused connection is shut down.
fn problem_response(r: Rejection) -> Vec<u8> {
    debug_assert!(
        !r.reason
            .bytes()
            .any(|c| c == b'"' || c == b'\\' || c < 0x20),
        "rejection reasons are written into json unescaped"
    );
    let title = r.status.canonical_reason().unwrap_or("Error");
    let status = r.status.as_str();
    let mut body = Vec::with_capacity(96 + r.reason.len());
    body.extend_from_slice(b"{\"type\":\"about:blank\",\"title\":\"");
    body.extend_from_slice(title.as_bytes());
    body.extend_from_slice(b"\",\"status\":");
    body.extend_from_slice(status.as_bytes());
    body.extend_from_slice(b",\"detail\":\"");
    body.extend_from_slice(r.reason.as_bytes());
    body.extend_from_slice(b"\"}");
    let mut len = itoa::Buffer::new();
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.push(b' ');
    out.extend_from_slice(title.as_bytes());
    out.extend_from_slice(
        b"\r\nContent-Type: application/problem+json\r\nConnection: close\r\nContent-Length: ",
    );
    out.extend_from_slice(len.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}
