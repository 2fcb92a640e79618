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

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        }
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
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
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

// ---------------------------------------------------------------------------------------
// Request side

/// What the parser wants the IO to do next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    NeedMore,
    /// Remove `n` bytes at `base` (an ignored empty line before a request line).
    Drop(usize),
    /// A message asking to close ended.
    Close,
    /// An upgrade request (index `idx`) ended.
    Upgrade {
        idx: u64,
        close: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RState {
    Start,
    RequestLine,
    Fields,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
}

/// What the framing decision needs from one head; reset per request, no allocation.
#[derive(Clone, Copy, Debug, Default)]
struct HeadInfo {
    v11: bool,
    method_head: bool,
    content_length: Option<u64>,
    te: bool,
    te_chunked_last: bool,
    te_chunked: bool,
    te_other: bool,
    hosts: u8,
    expect_continue: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl HeadInfo {
    fn close_after(&self) -> bool {
        self.close || (!self.v11 && !self.keep_alive)
    }
}

/// Incremental request parser over the guard's buffer. Absolute offsets (`base`, `ok`) are
/// shifted when the buffer is compacted; the others are relative to `base`, so the bytes of
/// an unfinished element are scanned once however they arrive.
struct Requests {
    state: RState,
    /// Start of the element being parsed (head, chunk line, trailer section).
    base: usize,
    /// End of the bytes that may be released.
    ok: usize,
    /// How far scanning got inside the element.
    probe: usize,
    /// Start of the current field line and its colon (0: name not finished).
    line: usize,
    colon: usize,
    /// Start of the header section (after the request line).
    fields: usize,
    nfields: usize,
    empty_lines: u8,
    /// Head complete but held back until the first chunk-size line proved valid.
    withheld: bool,
    head: HeadInfo,
    /// Index of the current request; `heads` counts released heads.
    current: u64,
    heads: u64,
    /// Indices of released HEAD requests, whose responses carry no body.
    head_reqs: VecDeque<u64>,
}

impl Requests {
    fn new() -> Self {
        Requests {
            state: RState::Start,
            base: 0,
            ok: 0,
            probe: 0,
            line: 0,
            colon: 0,
            fields: 0,
            nfields: 0,
            empty_lines: 0,
            withheld: false,
            head: HeadInfo::default(),
            current: 0,
            heads: 0,
            head_reqs: VecDeque::new(),
        }
    }

    fn shift(&mut self, by: usize) {
        debug_assert!(
            by <= self.ok && self.ok <= self.base,
            "compaction past unreleased bytes"
        );
        self.ok -= by;
        self.base -= by;
    }

    /// True when a refusal now falls inside a body whose head the reader already has.
    fn mid_body(&self) -> bool {
        !self.withheld
            && matches!(
                self.state,
                RState::Body(_)
                    | RState::ChunkSize
                    | RState::ChunkData(_)
                    | RState::ChunkDataEnd
                    | RState::Trailers
            )
    }

    /// Body bytes that can be read straight into the reader's buffer.
    fn direct_window(&self) -> u64 {
        match self.state {
            RState::Body(n) | RState::ChunkData(n) if !self.withheld => n,
            _ => 0,
        }
    }

    fn consume_direct(&mut self, n: u64) {
        match &mut self.state {
            RState::Body(left) | RState::ChunkData(left) => {
                debug_assert!(n <= *left, "direct read past the body");
                *left -= n.min(*left);
            }
            _ => debug_assert!(false, "direct read outside a body"),
        }
    }

    fn release_head(&mut self) {
        self.ok = self.base;
        self.current = self.heads;
        self.heads += 1;
        if self.head.method_head {
            self.head_reqs.push_back(self.current);
        }
    }

    fn message_end(&mut self) -> Option<Step> {
        self.state = RState::Start;
        self.empty_lines = 0;
        let close = self.head.close_after();
        if self.head.upgrade && self.head.v11 {
            return Some(Step::Upgrade {
                idx: self.current,
                close,
            });
        }
        close.then_some(Step::Close)
    }

    fn advance(&mut self, b: &[u8], lim: &StrictLimits) -> Result<Step, Rejection> {
        loop {
            match self.state {
                RState::Start => {
                    let Some(&c) = b.get(self.base) else {
                        return Ok(Step::NeedMore);
                    };
                    match c {
                        b'\r' => {
                            let Some(&next) = b.get(self.base + 1) else {
                                return Ok(Step::NeedMore);
                            };
                            if next != b'\n' {
                                return Err(BARE_CR);
                            }
                            self.empty_lines += 1;
                            if self.empty_lines > MAX_EMPTY_LINES {
                                return Err(TOO_MANY_EMPTY_LINES);
                            }
                            return Ok(Step::Drop(2));
                        }
                        b'\n' => return Err(BARE_LF),
                        _ => {
                            self.state = RState::RequestLine;
                            self.probe = 0;
                            self.head = HeadInfo::default();
                        }
                    }
                }
                RState::RequestLine => {
                    let hi = b.len().min(self.base + lim.max_request_line + 1);
                    let mut i = self.base + self.probe;
                    while i < hi && is_request_line_byte(b[i]) {
                        i += 1;
                    }
                    self.probe = i - self.base;
                    if i == hi {
                        return if hi < b.len() || self.probe > lim.max_request_line {
                            Err(REQUEST_LINE_TOO_LONG)
                        } else {
                            Ok(Step::NeedMore)
                        };
                    }
                    match b[i] {
                        b'\r' => {
                            let Some(&next) = b.get(i + 1) else {
                                return Ok(Step::NeedMore);
                            };
                            if next != b'\n' {
                                return Err(BARE_CR);
                            }
                            parse_request_line(&b[self.base..i], &mut self.head)?;
                            self.fields = i + 2 - self.base;
                            self.line = self.fields;
                            self.probe = self.fields;
                            self.colon = 0;
                            self.nfields = 0;
                            self.state = RState::Fields;
                        }
                        b'\n' => return Err(BARE_LF),
                        0x80.. => return Err(NON_ASCII_IN_REQUEST_LINE),
                        _ => return Err(CONTROL_IN_REQUEST_LINE),
                    }
                }
                RState::Fields => {
                    let section = self.base + self.fields;
                    let Some(end) = self.scan_fields(b, section, lim, false)? else {
                        return Ok(Step::NeedMore);
                    };
                    if let Some(step) = self.finish_head(end)? {
                        return Ok(step);
                    }
                }
                RState::Body(n) | RState::ChunkData(n) => {
                    let k = ((b.len() - self.base) as u64).min(n);
                    self.base += k as usize;
                    self.ok = self.base;
                    let left = n - k;
                    let chunked = matches!(self.state, RState::ChunkData(_));
                    match (left, chunked) {
                        (0, true) => self.state = RState::ChunkDataEnd,
                        (0, false) => {
                            if let Some(step) = self.message_end() {
                                return Ok(step);
                            }
                        }
                        (_, true) => {
                            self.state = RState::ChunkData(left);
                            return Ok(Step::NeedMore);
                        }
                        (_, false) => {
                            self.state = RState::Body(left);
                            return Ok(Step::NeedMore);
                        }
                    }
                }
                RState::ChunkDataEnd => {
                    let Some(&cr) = b.get(self.base) else {
                        return Ok(Step::NeedMore);
                    };
                    if cr != b'\r' {
                        return Err(MISSING_CHUNK_CRLF);
                    }
                    let Some(&lf) = b.get(self.base + 1) else {
                        return Ok(Step::NeedMore);
                    };
                    if lf != b'\n' {
                        return Err(MISSING_CHUNK_CRLF);
                    }
                    self.base += 2;
                    self.ok = self.base;
                    self.probe = 0;
                    self.state = RState::ChunkSize;
                }
                RState::ChunkSize => {
                    let longest = MAX_CHUNK_SIZE_DIGITS + lim.max_chunk_extension;
                    let hi = b.len().min(self.base + longest + 1);
                    let mut i = self.base + self.probe;
                    while i < hi && b[i] != b'\r' && b[i] != b'\n' {
                        i += 1;
                    }
                    self.probe = i - self.base;
                    if i == hi {
                        if hi < b.len() || self.probe > longest {
                            return Err(overlong_chunk_line(&b[self.base..hi]));
                        }
                        return Ok(Step::NeedMore);
                    }
                    if b[i] == b'\n' {
                        return Err(BARE_LF);
                    }
                    let Some(&lf) = b.get(i + 1) else {
                        return Ok(Step::NeedMore);
                    };
                    if lf != b'\n' {
                        return Err(BARE_CR);
                    }
                    let size = parse_chunk_line(&b[self.base..i], lim.max_chunk_extension)?;
                    self.base = i + 2;
                    self.probe = 0;
                    if self.withheld {
                        self.withheld = false;
                        self.release_head();
                    } else {
                        self.ok = self.base;
                    }
                    if size == 0 {
                        self.line = 0;
                        self.colon = 0;
                        self.nfields = 0;
                        self.state = RState::Trailers;
                    } else {
                        self.state = RState::ChunkData(size);
                    }
                }
                RState::Trailers => {
                    let Some(end) = self.scan_fields(b, self.base, lim, true)? else {
                        return Ok(Step::NeedMore);
                    };
                    self.base = end;
                    self.ok = end;
                    if let Some(step) = self.message_end() {
                        return Ok(step);
                    }
                }
            }
        }
    }

    /// Scans field lines from `line` up to the empty line; returns the offset after it.
    fn scan_fields(
        &mut self,
        b: &[u8],
        section: usize,
        lim: &StrictLimits,
        trailers: bool,
    ) -> Result<Option<usize>, Rejection> {
        let hi = b.len().min(section.saturating_add(lim.max_header_bytes));
        // Out of bytes at `i`: too large if the limit, not the data, ran out.
        let short = |i: usize| -> Result<Option<usize>, Rejection> {
            debug_assert!(i >= hi);
            if hi < b.len() {
                Err(HEADERS_TOO_LARGE)
            } else {
                Ok(None)
            }
        };
        loop {
            let ls = self.base + self.line;
            let mut i = self.base + self.probe;
            if self.colon == 0 {
                if i == ls {
                    if ls >= hi {
                        return short(ls);
                    }
                    match b[ls] {
                        b'\r' => {
                            if ls + 1 >= hi {
                                return short(ls + 1);
                            }
                            if b[ls + 1] != b'\n' {
                                return Err(BARE_CR);
                            }
                            return Ok(Some(ls + 2));
                        }
                        b'\n' => return Err(BARE_LF),
                        b' ' | b'\t' => return Err(OBS_FOLD),
                        _ => {}
                    }
                }
                while i < hi && is_tchar(b[i]) {
                    i += 1;
                }
                self.probe = i - self.base;
                if i >= hi {
                    return short(i);
                }
                match b[i] {
                    b':' if i > ls => {
                        self.colon = i - self.base;
                        i += 1;
                    }
                    b':' => return Err(EMPTY_FIELD_NAME),
                    b' ' | b'\t' => return Err(SPACE_BEFORE_COLON),
                    b'\r' | b'\n' => return Err(FIELD_WITHOUT_COLON),
                    _ => return Err(INVALID_FIELD_NAME),
                }
            }
            while i < hi && is_field_value_byte(b[i]) {
                i += 1;
            }
            self.probe = i - self.base;
            if i >= hi {
                return short(i);
            }
            match b[i] {
                b'\r' => {
                    if i + 1 >= hi {
                        return short(i + 1);
                    }
                    if b[i + 1] != b'\n' {
                        return Err(BARE_CR);
                    }
                    self.nfields += 1;
                    if self.nfields > lim.max_headers {
                        return Err(TOO_MANY_HEADERS);
                    }
                    let colon = self.base + self.colon;
                    let name = &b[ls..colon];
                    if trailers {
                        if matches!(
                            classify(name),
                            Field::ContentLength | Field::TransferEncoding | Field::Host
                        ) {
                            return Err(FRAMING_FIELD_IN_TRAILERS);
                        }
                    } else {
                        on_field(&mut self.head, name, trim_ows(&b[colon + 1..i]))?;
                    }
                    self.line = i + 2 - self.base;
                    self.probe = self.line;
                    self.colon = 0;
                }
                b'\n' => return Err(BARE_LF),
                _ => return Err(CONTROL_IN_FIELD_VALUE),
            }
        }
    }

    /// Decides the framing of a complete head; `end` is the offset after its empty line.
    fn finish_head(&mut self, end: usize) -> Result<Option<Step>, Rejection> {
        let h = self.head;
        if h.te {
            if h.content_length.is_some() {
                return Err(LENGTH_AND_CODING);
            }
            if !h.v11 {
                return Err(TRANSFER_ENCODING_IN_HTTP10);
            }
            if !h.te_chunked_last {
                return Err(CHUNKED_NOT_LAST);
            }
            if h.te_other {
                return Err(UNSUPPORTED_TRANSFER_CODING);
            }
        }
        if h.v11 && h.hosts == 0 {
            return Err(MISSING_HOST);
        }
        self.base = end;
        self.probe = 0;
        if h.te {
            self.state = RState::ChunkSize;
            // With 100-continue the client waits for us before sending any chunk.
            if h.expect_continue {
                self.release_head();
            } else {
                self.withheld = true;
            }
            return Ok(None);
        }
        self.release_head();
        match h.content_length {
            Some(n) if n > 0 => {
                self.state = RState::Body(n);
                Ok(None)
            }
            _ => Ok(self.message_end()),
        }
    }
}

fn parse_request_line(line: &[u8], head: &mut HeadInfo) -> Result<(), Rejection> {
    let Some(sp1) = line.iter().position(|&c| c == b' ') else {
        return Err(MALFORMED_REQUEST_LINE);
    };
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(INVALID_METHOD);
    }
    let rest = &line[sp1 + 1..];
    let Some(sp2) = rest.iter().position(|&c| c == b' ') else {
        return Err(MISSING_VERSION);
    };
    if sp2 == 0 {
        return Err(EXTRA_SPACE);
    }
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if version.first() == Some(&b' ') {
        return Err(EXTRA_SPACE);
    }
    head.v11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(VERSION_NOT_SUPPORTED)
        }
        _ if version.contains(&b' ') => return Err(MALFORMED_REQUEST_LINE),
        _ => return Err(INVALID_VERSION),
    };
    if method == b"CONNECT" {
        return Err(CONNECT_NOT_SUPPORTED);
    }
    head.method_head = method == b"HEAD";
    check_target(method, target)
}

fn check_target(method: &[u8], target: &[u8]) -> Result<(), Rejection> {
    if target.contains(&b'#') {
        return Err(FRAGMENT_IN_TARGET);
    }
    match target {
        [b'/', ..] => Ok(()),
        b"*" if method == b"OPTIONS" => Ok(()),
        b"*" => Err(ASTERISK_NOT_OPTIONS),
        _ => {
            let rest = strip_prefix_ignore_case(target, b"http://")
                .or_else(|| strip_prefix_ignore_case(target, b"https://"))
                .ok_or(INVALID_TARGET)?;
            let end = rest
                .iter()
                .position(|&c| c == b'/' || c == b'?')
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            if authority.contains(&b'@') {
                return Err(USERINFO_IN_TARGET);
            }
            if !is_authority(authority) {
                return Err(INVALID_AUTHORITY);
            }
            Ok(())
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Host,
    Expect,
    Connection,
    Upgrade,
    Other,
}

fn classify(name: &[u8]) -> Field {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        4 if is(b"host") => Field::Host,
        6 if is(b"expect") => Field::Expect,
        7 if is(b"upgrade") => Field::Upgrade,
        10 if is(b"connection") => Field::Connection,
        14 if is(b"content-length") => Field::ContentLength,
        17 if is(b"transfer-encoding") => Field::TransferEncoding,
        _ => Field::Other,
    }
}

fn on_field(h: &mut HeadInfo, name: &[u8], value: &[u8]) -> Result<(), Rejection> {
    match classify(name) {
        Field::Other => {}
        Field::ContentLength => {
            if h.content_length.is_some() {
                return Err(MULTIPLE_CONTENT_LENGTH);
            }
            h.content_length = Some(parse_content_length(value)?);
        }
        Field::TransferEncoding => {
            h.te = true;
            for coding in value.split(|&c| c == b',') {
                let coding = trim_ows(coding);
                if coding.eq_ignore_ascii_case(b"chunked") {
                    if h.te_chunked {
                        return Err(CHUNKED_TWICE);
                    }
                    h.te_chunked = true;
                    h.te_chunked_last = true;
                } else {
                    let name_len = coding.iter().take_while(|&&c| is_tchar(c)).count();
                    if name_len == 0 {
                        return Err(INVALID_TRANSFER_CODING);
                    }
                    h.te_other = true;
                    h.te_chunked_last = false;
                }
            }
        }
        Field::Host => {
            h.hosts += 1;
            if h.hosts > 1 {
                return Err(MULTIPLE_HOST);
            }
            if !is_authority(value) {
                return Err(INVALID_HOST);
            }
        }
        Field::Expect => h.expect_continue = value.eq_ignore_ascii_case(b"100-continue"),
        Field::Connection => {
            for option in value.split(|&c| c == b',') {
                let option = trim_ows(option);
                if option.eq_ignore_ascii_case(b"close") {
                    h.close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    h.keep_alive = true;
                }
            }
        }
        Field::Upgrade => h.upgrade = true,
    }
    Ok(())
}

fn parse_content_length(v: &[u8]) -> Result<u64, Rejection> {
    if v.contains(&b',') {
        return Err(CONTENT_LENGTH_LIST);
    }
    if v.is_empty() {
        return Err(INVALID_CONTENT_LENGTH);
    }
    let mut n: u64 = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return Err(INVALID_CONTENT_LENGTH);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(c - b'0')))
            .ok_or(CONTENT_LENGTH_TOO_LARGE)?;
    }
    if n > MAX_CONTENT_LENGTH {
        return Err(CONTENT_LENGTH_TOO_LARGE);
    }
    Ok(n)
}

/// `line` is a chunk-size line without its CRLF.
fn parse_chunk_line(line: &[u8], max_ext: usize) -> Result<u64, Rejection> {
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(INVALID_CHUNK_SIZE);
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(CHUNK_SIZE_TOO_LONG);
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |acc, &c| (acc << 4) | u64::from(hex_value(c)));
    let ext = &line[digits..];
    if ext.is_empty() {
        return Ok(size);
    }
    if !matches!(ext[0], b';' | b' ' | b'\t') {
        return Err(INVALID_CHUNK_SIZE);
    }
    if ext.len() > max_ext {
        return Err(CHUNK_EXTENSION_TOO_LONG);
    }
    if !is_chunk_ext(ext) {
        return Err(INVALID_CHUNK_EXTENSION);
    }
    Ok(size)
}

fn overlong_chunk_line(prefix: &[u8]) -> Rejection {
    let digits = prefix.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits > MAX_CHUNK_SIZE_DIGITS {
        CHUNK_SIZE_TOO_LONG
    } else {
        CHUNK_EXTENSION_TOO_LONG
    }
}

/// RFC 9112 §7.1.1: `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
fn is_chunk_ext(ext: &[u8]) -> bool {
    let skip_ws = |mut i: usize| {
        while i < ext.len() && matches!(ext[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let token = |mut i: usize| {
        while i < ext.len() && is_tchar(ext[i]) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < ext.len() {
        i = skip_ws(i);
        if ext.get(i) != Some(&b';') {
            return false;
        }
        i = skip_ws(i + 1);
        let name_end = token(i);
        if name_end == i {
            return false;
        }
        i = name_end;
        let eq = skip_ws(i);
        if ext.get(eq) != Some(&b'=') {
            continue;
        }
        i = skip_ws(eq + 1);
        if ext.get(i) == Some(&b'"') {
            let Some(close) = quoted_string_end(ext, i) else {
                return false;
            };
            i = close;
        } else {
            let value_end = token(i);
            if value_end == i {
                return false;
            }
            i = value_end;
        }
    }
    true
}

/// Given `s[start] == '"'`, the offset after the closing quote.
fn quoted_string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let escaped = *s.get(i + 1)?;
                if !is_field_value_byte(escaped) {
                    return None;
                }
                i += 2;
            }
            c if is_field_value_byte(c) => i += 1,
            _ => return None,
        }
    }
    None
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

const fn byte_table(kind: u8) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match kind {
            // tchar, RFC 9110 §5.6.2
            0 => {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'*'
                            | b'+'
                            | b'-'
                            | b'.'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                    )
            }
            // field-value bytes: HTAB, SP, VCHAR, obs-text
            1 => c == b'\t' || (c >= 0x20 && c != 0x7f),
            // uri-host [":" port] including IP literals: unreserved, pct, sub-delims, ":[]"
            _ => {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                            | b':'
                            | b'['
                            | b']'
                    )
            }
        };
        i += 1;
    }
    t
}

static TCHAR: [bool; 256] = byte_table(0);
static FIELD_VALUE: [bool; 256] = byte_table(1);
static AUTHORITY: [bool; 256] = byte_table(2);

fn is_tchar(c: u8) -> bool {
    TCHAR[usize::from(c)]
}

fn is_field_value_byte(c: u8) -> bool {
    FIELD_VALUE[usize::from(c)]
}

/// Printable ASCII and SP: all a request line may contain.
fn is_request_line_byte(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

fn is_authority(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&c| AUTHORITY[usize::from(c)])
}

// ---------------------------------------------------------------------------------------
// Response side

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WState {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd(u64),
    Trailers,
    /// Close-delimited body: the server closes after it.
    Unframed,
    Switched,
    /// Something hyper would not write; stop following and stop relying on it.
    Lost,
}

/// Follows the framing of what the server writes (hyper's own, well-formed output), so the
/// guard knows where responses start and end without holding any of their bytes.
struct Responses {
    state: WState,
    line_len: usize,
    /// Head bytes gathered when a head spans writes.
    head: Vec<u8>,
    chunk: u64,
    in_ext: bool,
    /// Final responses whose head / whole body was written.
    started: u64,
    done: u64,
    /// The server announced `Connection: close`.
    closing: bool,
    /// Bumped on every transition the reader may be waiting for.
    events: u64,
}

struct ResponseHead {
    status: u16,
    chunked: bool,
    length: Option<u64>,
    close: bool,
}

impl Responses {
    fn new() -> Self {
        Responses {
            state: WState::Head,
            line_len: 0,
            head: Vec::new(),
            chunk: 0,
            in_ext: false,
            started: 0,
            done: 0,
            closing: false,
            events: 0,
        }
    }

    fn tracking(&self) -> bool {
        !matches!(
            self.state,
            WState::Unframed | WState::Switched | WState::Lost
        )
    }

    fn switched(&self) -> bool {
        self.state == WState::Switched
    }

    fn lost(&self) -> bool {
        self.state == WState::Lost
    }

    /// Between responses, all `heads` requests answered, and the connection still open.
    fn idle_after(&self, heads: u64) -> bool {
        self.state == WState::Head
            && self.line_len == 0
            && self.head.is_empty()
            && self.done >= heads
            && !self.closing
    }

    fn finish(&mut self) {
        self.done += 1;
        self.state = WState::Head;
        self.line_len = 0;
        self.events += 1;
    }

    fn lose(&mut self) {
        self.state = WState::Lost;
        self.head = Vec::new();
        self.events += 1;
    }

    /// Offset after the next empty line, keeping line state across calls.
    fn find_blank_line(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &c) in data.iter().enumerate() {
            if c == b'\n' {
                if self.line_len == 1 {
                    self.line_len = 0;
                    return Some(i + 1);
                }
                self.line_len = 0;
            } else {
                self.line_len += 1;
            }
        }
        None
    }

    fn feed(&mut self, mut data: &[u8], head_reqs: &mut VecDeque<u64>) {
        while !data.is_empty() {
            match self.state {
                WState::Head => {
                    let Some(k) = self.find_blank_line(data) else {
                        if self.head.len() + data.len() > MAX_RESPONSE_HEAD {
                            self.lose();
                        } else {
                            self.head.extend_from_slice(data);
                        }
                        return;
                    };
                    let parsed = if self.head.is_empty() {
                        parse_response_head(&data[..k])
                    } else {
                        self.head.extend_from_slice(&data[..k]);
                        let parsed = parse_response_head(&self.head);
                        self.head.clear();
                        parsed
                    };
                    data = &data[k..];
                    match parsed {
                        Some(head) => self.on_head(&head, head_reqs),
                        None => return self.lose(),
                    }
                }
                WState::Length(n) | WState::ChunkData(n) | WState::ChunkEnd(n) => {
                    let k = (data.len() as u64).min(n);
                    data = &data[k as usize..];
                    let left = n - k;
                    self.state = match (self.state, left) {
                        (WState::Length(_), 0) => {
                            self.finish();
                            continue;
                        }
                        (WState::Length(_), _) => WState::Length(left),
                        (WState::ChunkData(_), 0) => WState::ChunkEnd(2),
                        (WState::ChunkData(_), _) => WState::ChunkData(left),
                        (_, 0) => WState::ChunkSize,
                        (_, _) => WState::ChunkEnd(left),
                    };
                }
                WState::ChunkSize => {
                    let Some(lf) = data.iter().position(|&c| c == b'\n') else {
                        self.chunk_digits(data);
                        return;
                    };
                    self.chunk_digits(&data[..lf]);
                    data = &data[lf + 1..];
                    let size = std::mem::take(&mut self.chunk);
                    self.in_ext = false;
                    self.line_len = 0;
                    self.state = if size == 0 {
                        WState::Trailers
                    } else {
                        WState::ChunkData(size)
                    };
                }
                WState::Trailers => {
                    let Some(k) = self.find_blank_line(data) else {
                        return;
                    };
                    data = &data[k..];
                    self.finish();
                }
                WState::Unframed | WState::Switched | WState::Lost => return,
            }
        }
    }

    fn chunk_digits(&mut self, data: &[u8]) {
        for &c in data {
            if self.in_ext {
                return;
            }
            if c.is_ascii_hexdigit() {
                self.chunk = self
                    .chunk
                    .saturating_mul(16)
                    .saturating_add(u64::from(hex_value(c)));
            } else {
                self.in_ext = true;
            }
        }
    }

    fn on_head(&mut self, h: &ResponseHead, head_reqs: &mut VecDeque<u64>) {
        self.events += 1;
        match h.status {
            101 => {
                self.started += 1;
                self.state = WState::Switched;
            }
            // hyper's own `100 Continue`; the final response follows.
            100..=199 => self.state = WState::Head,
            _ => {
                let idx = self.started;
                self.started += 1;
                while head_reqs.front().is_some_and(|&i| i < idx) {
                    head_reqs.pop_front();
                }
                let for_head = head_reqs.front() == Some(&idx);
                if for_head {
                    head_reqs.pop_front();
                }
                self.closing |= h.close;
                if for_head || h.status == 204 || h.status == 304 {
                    self.finish();
                } else if h.chunked {
                    self.chunk = 0;
                    self.in_ext = false;
                    self.state = WState::ChunkSize;
                } else {
                    match h.length {
                        Some(0) => self.finish(),
                        Some(n) => self.state = WState::Length(n),
                        None => self.state = WState::Unframed,
                    }
                }
            }
        }
    }
}

/// Reads what framing needs from a complete response head (status line to empty line).
fn parse_response_head(h: &[u8]) -> Option<ResponseHead> {
    if h.len() < 12 || !h.starts_with(b"HTTP/1.") || h[8] != b' ' {
        return None;
    }
    let mut status: u16 = 0;
    for &c in &h[9..12] {
        if !c.is_ascii_digit() {
            return None;
        }
        status = status * 10 + u16::from(c - b'0');
    }
    let mut head = ResponseHead {
        status,
        chunked: false,
        length: None,
        close: false,
    };
    for line in h.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let value = trim_ows(&line[colon + 1..]);
        match classify(&line[..colon]) {
            Field::ContentLength => head.length = parse_content_length(value).ok(),
            Field::TransferEncoding => {
                head.chunked = value
                    .rsplit(|&c| c == b',')
                    .next()
                    .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
            }
            Field::Connection => {
                head.close |= value
                    .split(|&c| c == b',')
                    .any(|o| trim_ows(o).eq_ignore_ascii_case(b"close"));
            }
            _ => {}
        }
    }
    Some(head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    const LIMITS: StrictLimits = StrictLimits {
        max_request_line: 128,
        max_header_bytes: 512,
        max_headers: 8,
        max_chunk_extension: 32,
    };

    #[derive(Debug, PartialEq, Eq)]
    enum End {
        Eof,
        Pending,
        Error(io::ErrorKind),
    }

    fn guard() -> (DuplexStream, StrictIo<DuplexStream>) {
        let (client, server) = duplex(1 << 16);
        (client, StrictIo::new(server, LIMITS))
    }

    /// One poll with a `room`-byte buffer: None if pending.
    async fn poll_sized(
        io: &mut StrictIo<DuplexStream>,
        room: usize,
    ) -> Option<io::Result<Vec<u8>>> {
        let mut space = vec![0u8; room];
        poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut space);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().to_vec()))),
            }
        })
        .await
    }

    /// Everything released until the guard stops, and how it stopped. The client's bytes
    /// are already in the duplex, so no waiting is involved.
    async fn drain(io: &mut StrictIo<DuplexStream>) -> (Vec<u8>, End) {
        let mut out = Vec::new();
        loop {
            match poll_sized(io, 4096).await {
                None => return (out, End::Pending),
                Some(Ok(b)) if b.is_empty() => return (out, End::Eof),
                Some(Ok(b)) => out.extend_from_slice(&b),
                Some(Err(e)) => return (out, End::Error(e.kind())),
            }
        }
    }

    /// What reaches the client once the server shuts the connection down.
    async fn shutdown_output(mut client: DuplexStream, io: &mut StrictIo<DuplexStream>) -> String {
        io.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    async fn released_after_close(request: &[u8]) -> Vec<u8> {
        let (mut client, mut io) = guard();
        client.write_all(request).await.unwrap();
        client.shutdown().await.unwrap();
        let (released, end) = drain(&mut io).await;
        assert_eq!(end, End::Eof);
        assert_eq!(io.rejection(), None);
        released
    }

    async fn assert_refused(request: &[u8], status: u16) {
        let (mut client, mut io) = guard();
        client.write_all(request).await.unwrap();
        let (released, end) = drain(&mut io).await;
        assert!(
            released.is_empty(),
            "released {:?}",
            String::from_utf8_lossy(&released)
        );
        assert_eq!(end, End::Eof);
        assert_eq!(io.rejection().map(|r| r.status.as_u16()), Some(status));
        let written = shutdown_output(client, &mut io).await;
        let title = StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap();
        assert!(
            written.starts_with(&format!("HTTP/1.1 {status} {title}\r\n")),
            "{written}"
        );
    }

    macro_rules! refused {
        ($($name:ident: $status:expr, $request:expr;)*) => {$(
            #[tokio::test]
            async fn $name() {
                assert_refused($request, $status).await;
            }
        )*};
    }

    refused! {
        content_length_with_transfer_encoding_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        equal_duplicate_content_length_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        content_length_list_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx";
        signed_content_length_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx";
        empty_content_length_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n";
        content_length_overflowing_u64_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n";
        coding_after_chunked_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
        chunked_twice_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n";
        chunked_twice_across_fields_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        empty_transfer_coding_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n";
        unknown_transfer_coding_is_refused_with_501: 501,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n";
        gzip_transfer_coding_is_refused_with_501: 501,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        transfer_encoding_in_http10_is_refused_with_400: 400,
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        obs_fold_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n";
        whitespace_before_first_field_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n";
        bare_cr_in_field_value_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n";
        bare_cr_in_request_line_is_refused_with_400: 400,
            b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n";
        bare_lf_after_request_line_is_refused_with_400: 400,
            b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        bare_lf_after_field_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\n\r\n";
        bare_lf_ending_head_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\n\n";
        nul_in_field_value_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n";
        del_in_field_value_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n";
        escape_in_field_value_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[0m\r\n\r\n";
        nul_in_request_target_is_refused_with_400: 400,
            b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
        tab_in_request_line_is_refused_with_400: 400,
            b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n";
        non_ascii_request_target_is_refused_with_400: 400,
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n";
        whitespace_before_colon_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n";
        empty_field_name_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n";
        non_token_field_name_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n";
        field_line_without_colon_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nXA\r\n\r\n";
        missing_host_in_http11_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n";
        second_host_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n";
        host_with_path_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n";
        empty_host_is_refused_with_400: 400,
            b"GET / HTTP/1.1\r\nHost: \r\n\r\n";
        relative_target_is_refused_with_400: 400,
            b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n";
        asterisk_target_for_get_is_refused_with_400: 400,
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n";
        non_http_absolute_target_is_refused_with_400: 400,
            b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        userinfo_in_absolute_target_is_refused_with_400: 400,
            b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        absolute_target_without_authority_is_refused_with_400: 400,
            b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n";
        fragment_in_target_is_refused_with_400: 400,
            b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n";
        connect_is_refused_with_501: 501,
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
        non_token_method_is_refused_with_400: 400,
            b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n";
        http2_version_is_refused_with_505: 505,
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n";
        garbage_version_is_refused_with_400: 400,
            b"GET / HTXP/1.1\r\nHost: a\r\n\r\n";
        lowercase_version_is_refused_with_400: 400,
            b"GET / http/1.1\r\nHost: a\r\n\r\n";
        http09_request_line_is_refused_with_400: 400,
            b"GET /\r\n\r\n";
        double_space_before_target_is_refused_with_400: 400,
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n";
        double_space_before_version_is_refused_with_400: 400,
            b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n";
        trailing_space_after_version_is_refused_with_400: 400,
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n";
        five_leading_empty_lines_are_refused_with_400: 400,
            b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        invalid_first_chunk_size_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        empty_first_chunk_size_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n";
        chunk_size_of_17_digits_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n";
        junk_after_chunk_size_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n";
        trailing_space_after_chunk_size_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n";
        chunk_extension_over_limit_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
        unterminated_chunk_extension_over_limit_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        bare_lf_after_first_chunk_size_is_refused_with_400: 400,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n";
    }

    #[tokio::test]
    async fn request_line_over_limit_is_refused_with_414() {
        let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
        assert_refused(request.as_bytes(), 414).await;
    }

    #[tokio::test]
    async fn unterminated_request_line_over_limit_is_refused_with_414() {
        let request = format!("GET /{}", "a".repeat(200));
        assert_refused(request.as_bytes(), 414).await;
    }

    #[tokio::test]
    async fn request_line_at_limit_is_accepted() {
        // 128 bytes: "GET /" (5) + 114 + " HTTP/1.1" (9).
        let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(114));
        assert_eq!(
            released_after_close(request.as_bytes()).await,
            request.as_bytes()
        );
    }

    #[tokio::test]
    async fn header_section_over_limit_is_refused_with_431() {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
            "a".repeat(600)
        );
        assert_refused(request.as_bytes(), 431).await;
    }

    #[tokio::test]
    async fn header_section_at_limit_is_accepted() {
        // Section = "Host: a\r\n" (9) + "X-A: " (5) + value + "\r\n" (2) + "\r\n" (2) = 512.
        let request = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
            "a".repeat(494)
        );
        assert_eq!(
            released_after_close(request.as_bytes()).await,
            request.as_bytes()
        );
    }

    #[tokio::test]
    async fn too_many_header_fields_are_refused_with_431() {
        let mut request = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..8 {
            request.extend_from_slice(b"X-A: b\r\n");
        }
        request.extend_from_slice(b"\r\n");
        assert_refused(&request, 431).await;
    }

    #[tokio::test]
    async fn refusal_body_is_problem_json_with_detail() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        let written = shutdown_output(client, &mut io).await;
        let body = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"more than one host field"}"#;
        let expected = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(written, expected);
    }

    #[tokio::test]
    async fn simple_get_is_released_unchanged() {
        let request = b"GET /a?b=c HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn pipelined_gets_are_released_unchanged() {
        let request = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn post_with_content_length_then_get_is_released_unchanged() {
        let request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nGET / \0\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn chunked_post_with_extensions_and_trailers_is_released_unchanged() {
        let request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;a=b\r\nwiki\r\n5 ; c = \"d \\\" e\"\r\npedia\r\nE;x\r\n in\r\n\r\nchunks.\r\n0\r\n\
            Expires: never\r\nX-Sum: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn uppercase_transfer_coding_and_absolute_form_are_accepted() {
        let request = b"POST http://a.test/x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn asterisk_form_options_is_accepted() {
        let request = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn http10_request_without_host_is_accepted() {
        let request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn obs_text_and_tab_in_field_value_are_accepted() {
        let request = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tb\r\n\r\n";
        assert_eq!(released_after_close(request).await, request);
    }

    #[tokio::test]
    async fn leading_empty_lines_are_dropped() {
        let released = released_after_close(
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
        assert_eq!(
            released,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn head_split_into_single_bytes_is_released_only_when_complete() {
        let request = b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n";
        let (mut client, mut io) = guard();
        for (i, byte) in request.iter().enumerate() {
            client.write_all(&[*byte]).await.unwrap();
            let (released, end) = drain(&mut io).await;
            assert_eq!(end, End::Pending);
            if i + 1 < request.len() {
                assert!(released.is_empty(), "released after byte {i}");
            } else {
                assert_eq!(released, request);
            }
        }
    }

    #[tokio::test]
    async fn chunked_head_is_held_until_first_chunk_size_arrives() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (mut client, mut io) = guard();
        client.write_all(head).await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        client.write_all(b"5").await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        client.write_all(b"\r\n").await.unwrap();
        let (released, _) = drain(&mut io).await;
        assert_eq!(released, [&head[..], b"5\r\n"].concat());
    }

    #[tokio::test]
    async fn expect_continue_chunked_head_is_released_without_body() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (mut client, mut io) = guard();
        client.write_all(head).await.unwrap();
        assert_eq!(drain(&mut io).await, (head.to_vec(), End::Pending));
    }

    #[tokio::test]
    async fn invalid_later_chunk_size_ends_body_with_invalid_data() {
        let (mut client, mut io) = guard();
        let valid = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n";
        client.write_all(valid).await.unwrap();
        client.write_all(b"g\r\nx\r\n0\r\n\r\n").await.unwrap();
        let (released, end) = drain(&mut io).await;
        assert_eq!(released, valid);
        assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
        assert_eq!(io.rejection(), Some(INVALID_CHUNK_SIZE));
    }

    #[tokio::test]
    async fn missing_crlf_after_chunk_data_ends_body_with_invalid_data() {
        let (mut client, mut io) = guard();
        let valid = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx";
        client.write_all(valid).await.unwrap();
        client.write_all(b"yz\r\n0\r\n\r\n").await.unwrap();
        let (released, end) = drain(&mut io).await;
        assert_eq!(released, valid);
        assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
    }

    #[tokio::test]
    async fn framing_field_in_trailers_ends_body_with_invalid_data() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n")
            .await
            .unwrap();
        let (_, end) = drain(&mut io).await;
        assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
    }

    #[tokio::test]
    async fn refusal_inside_a_released_body_writes_no_reply() {
        let (mut client, mut io) = guard();
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nzz\r\n",
            )
            .await
            .unwrap();
        drain(&mut io).await;
        assert_eq!(shutdown_output(client, &mut io).await, "");
    }

    #[tokio::test]
    async fn refusal_after_pipelined_request_waits_for_its_response() {
        let (mut client, mut io) = guard();
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(good).await.unwrap();
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            )
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (good.to_vec(), End::Pending));
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nh")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        io.write_all(b"i").await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
        let written = shutdown_output(client, &mut io).await;
        assert!(
            written.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 400 Bad Request\r\n"
            ),
            "{written}"
        );
    }

    #[tokio::test]
    async fn refusal_waits_for_end_of_chunked_response() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        io.write_all(b"3\r\nabc\r\n").await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        io.write_all(b"0\r\n\r\n").await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    }

    #[tokio::test]
    async fn response_to_head_request_has_no_body() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    }

    #[tokio::test]
    async fn continue_response_does_not_answer_the_request() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nxBAD\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        io.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    }

    #[tokio::test]
    async fn refusal_gets_no_reply_after_server_said_close() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            shutdown_output(client, &mut io).await,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bytes_after_connection_close_request_are_never_checked() {
        let (mut client, mut io) = guard();
        let request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        client.write_all(request).await.unwrap();
        client.write_all(b"\0garbage\r\n\r\n").await.unwrap();
        assert_eq!(drain(&mut io).await, (request.to_vec(), End::Pending));
        assert_eq!(io.rejection(), None);
    }

    #[tokio::test]
    async fn bytes_after_101_pass_through_unchecked() {
        let (mut client, mut io) = guard();
        let request =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        client.write_all(request).await.unwrap();
        assert_eq!(drain(&mut io).await, (request.to_vec(), End::Pending));
        let frame = b"\x82\x05\0\r\n\n\x7f";
        client.write_all(frame).await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        io.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (frame.to_vec(), End::Pending));
        client.write_all(b"\0\0\r").await.unwrap();
        assert_eq!(drain(&mut io).await, (b"\0\0\r".to_vec(), End::Pending));
    }

    #[tokio::test]
    async fn split_101_status_line_still_switches() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n\0raw")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.").await.unwrap();
        io.write_all(b"1 10").await.unwrap();
        io.write_all(b"1 Switching Protocols\r\n\r").await.unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
        io.write_all(b"\n").await.unwrap();
        assert_eq!(drain(&mut io).await, (b"\0raw".to_vec(), End::Pending));
    }

    #[tokio::test]
    async fn refused_upgrade_resumes_checking() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n\0raw\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        io.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
        assert_eq!(io.rejection(), Some(CONTROL_IN_REQUEST_LINE));
    }

    #[tokio::test]
    async fn vectored_writes_are_followed() {
        let (mut client, mut io) = guard();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
            .await
            .unwrap();
        drain(&mut io).await;
        let parts = [
            io::IoSlice::new(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"),
            io::IoSlice::new(b"abc"),
        ];
        let n = poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &parts))
            .await
            .unwrap();
        assert_eq!(n, 41);
        assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    }

    #[test]
    fn chunk_extension_grammar_is_enforced() {
        assert!(is_chunk_ext(b";a"));
        assert!(is_chunk_ext(b" ; a = b ;c=\"x\\\"y\""));
        assert!(!is_chunk_ext(b";"));
        assert!(!is_chunk_ext(b";a="));
        assert!(!is_chunk_ext(b";a=\"open"));
        assert!(!is_chunk_ext(b";a "));
        assert!(!is_chunk_ext(b";a\0"));
    }

    mod hyper_server {
        use super::*;
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper::body::Incoming;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use std::convert::Infallible;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        /// Serves one connection through the guard; answers with the body length, 400 on a
        /// body error, and echoes raw bytes after a 101.
        fn spawn_server(io: StrictIo<DuplexStream>, body_errors: Arc<AtomicUsize>) {
            let svc = service_fn(move |mut req: http::Request<Incoming>| {
                let body_errors = body_errors.clone();
                async move {
                    if req.headers().contains_key(http::header::UPGRADE) {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut raw = TokioIo::new(upgrade.await.unwrap());
                            let mut buf = [0u8; 64];
                            let n = raw.read(&mut buf).await.unwrap();
                            raw.write_all(&buf[..n]).await.unwrap();
                        });
                        let res = http::Response::builder()
                            .status(101)
                            .header("upgrade", "raw")
                            .header("connection", "upgrade")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        return Ok::<_, Infallible>(res);
                    }
                    let (status, text) = match req.into_body().collect().await {
                        Ok(body) => (200, format!("got {}", body.to_bytes().len())),
                        Err(_) => {
                            body_errors.fetch_add(1, Ordering::SeqCst);
                            (400, "body error".to_owned())
                        }
                    };
                    let res = http::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(text)))
                        .unwrap();
                    Ok(res)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades()
                    .await;
            });
        }

        #[tokio::test]
        async fn hyper_answers_earlier_request_then_the_refusal() {
            let (mut client, io) = guard();
            spawn_server(io, Arc::default());
            client
                .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            let out = String::from_utf8(out).unwrap();
            let first = out.find("HTTP/1.1 200 OK").unwrap();
            let second = out.find("HTTP/1.1 400 Bad Request").unwrap();
            assert!(first < second, "{out}");
            assert!(out.contains("got 3"), "{out}");
            assert!(
                out.ends_with(r#""detail":"content-length with transfer-encoding"}"#),
                "{out}"
            );
        }

        #[tokio::test]
        async fn half_closed_client_still_gets_earlier_response_and_refusal() {
            let (mut client, io) = guard();
            spawn_server(io, Arc::default());
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            client.shutdown().await.unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with(r#""detail":"missing host"}"#), "{out}");
        }

        #[tokio::test]
        async fn half_closed_client_gets_response_to_connection_close_request() {
            let (mut client, io) = guard();
            spawn_server(io, Arc::default());
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            client.shutdown().await.unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with("got 0"), "{out}");
        }

        #[tokio::test]
        async fn hyper_body_fails_on_bad_later_chunk() {
            let (mut client, io) = guard();
            let errors = Arc::new(AtomicUsize::new(0));
            spawn_server(io, errors.clone());
            client
                .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n1x\r\ny\r\n0\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            let out = String::from_utf8(out).unwrap();
            assert_eq!(errors.load(Ordering::SeqCst), 1);
            assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
            assert!(out.ends_with("body error"), "{out}");
        }

        #[tokio::test]
        async fn hyper_upgrade_carries_raw_bytes() {
            let (mut client, io) = guard();
            spawn_server(io, Arc::default());
            client
                .write_all(
                    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n",
                )
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                client.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101 "));
            client.write_all(b"\0\r\n\x7fraw").await.unwrap();
            let mut echo = [0u8; 7];
            client.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"\0\r\n\x7fraw");
        }
    }

    mod valid_requests {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Body {
            Empty,
            Length(Vec<u8>),
            Chunked {
                chunks: Vec<Vec<u8>>,
                ext: bool,
                trailer: bool,
            },
        }

        fn request() -> impl Strategy<Value = Vec<u8>> {
            let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "X-CUSTOM"]);
            let path = "/[a-zA-Z0-9/._~%-]{0,20}";
            let headers = prop::collection::vec(("x-[a-z0-9-]{1,10}", "[ -~]{0,24}"), 0..5);
            let body = prop_oneof![
                Just(Body::Empty),
                prop::collection::vec(any::<u8>(), 0..600).prop_map(Body::Length),
                (
                    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..4),
                    any::<bool>(),
                    any::<bool>()
                )
                    .prop_map(|(chunks, ext, trailer)| Body::Chunked {
                        chunks,
                        ext,
                        trailer
                    }),
            ];
            (method, path, headers, body).prop_map(|(method, path, headers, body)| {
                let mut r = format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n");
                for (name, value) in headers {
                    r.push_str(&format!("{name}: {value}\r\n"));
                }
                let mut r = r.into_bytes();
                match body {
                    Body::Empty => r.extend_from_slice(b"\r\n"),
                    Body::Length(bytes) => {
                        r.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes(),
                        );
                        r.extend_from_slice(&bytes);
                    }
                    Body::Chunked {
                        chunks,
                        ext,
                        trailer,
                    } => {
                        r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        for chunk in chunks {
                            r.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
                            if ext {
                                r.extend_from_slice(b";a=b ; c=\"d e\"");
                            }
                            r.extend_from_slice(b"\r\n");
                            r.extend_from_slice(&chunk);
                            r.extend_from_slice(b"\r\n");
                        }
                        r.extend_from_slice(b"0\r\n");
                        if trailer {
                            r.extend_from_slice(b"x-trailer: yes\r\n");
                        }
                        r.extend_from_slice(b"\r\n");
                    }
                }
                r
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn valid_pipelined_requests_are_released_byte_for_byte(
                requests in prop::collection::vec(request(), 1..4),
                writes in prop::collection::vec(1usize..80, 1..16),
                reads in prop::collection::vec(1usize..120, 1..16),
            ) {
                let wire = requests.concat();
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let released = runtime.block_on(async {
                    let (mut client, mut io) = guard();
                    let mut released = Vec::new();
                    let (mut pos, mut turn) = (0, 0);
                    let mut closed = false;
                    loop {
                        if pos < wire.len() {
                            let n = writes[turn % writes.len()].min(wire.len() - pos);
                            client.write_all(&wire[pos..pos + n]).await.unwrap();
                            pos += n;
                        } else if !closed {
                            client.shutdown().await.unwrap();
                            closed = true;
                        }
                        turn += 1;
                        match poll_sized(&mut io, reads[turn % reads.len()]).await {
                            None => {}
                            Some(Ok(bytes)) if bytes.is_empty() => break,
                            Some(Ok(bytes)) => released.extend_from_slice(&bytes),
                            Some(Err(e)) => panic!("{e}"),
                        }
                    }
                    assert_eq!(io.rejection(), None);
                    released
                });
                prop_assert_eq!(released, wire);
            }
        }
    }
}
