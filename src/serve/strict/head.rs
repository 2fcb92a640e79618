//! The request-head parser: request line and header section, checked completely and in one
//! pass, with the positions the connection loop needs to build the `Request` from the same
//! bytes (method, target, each field's name and value).

use super::fields::{FieldScanner, Span};
use super::syntax::*;
use super::*;
use crate::spare_buffers;

/// A table grown past this many fields is freed, not kept.
const LARGEST_FIELDS: usize = 128;
/// A new table's room, in fields.
const FIELDS: usize = 16;

std::thread_local! {
    static SPARE_FIELDS: std::cell::RefCell<Vec<Vec<(Span, Span)>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A field table for a head: a kept one when there is one.
fn take_fields() -> Vec<(Span, Span)> {
    spare_buffers::take(&SPARE_FIELDS).unwrap_or_else(|| Vec::with_capacity(FIELDS))
}

/// What the connection should do with its buffer next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadStep {
    NeedMore,
    /// Drop `n` bytes at the front: an ignored empty line before a request line.
    Skip(usize),
    /// A complete head of this many bytes (final empty line included) is at the front.
    Complete(usize),
}

/// How the request body is delimited, once the head has passed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// What the framing decision needs from one head; reset per request, no allocation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadInfo {
    pub(crate) v11: bool,
    pub(crate) method_head: bool,
    pub(crate) content_length: Option<u64>,
    pub(crate) te: bool,
    pub(crate) te_chunked_last: bool,
    pub(crate) te_chunked: bool,
    pub(crate) te_other: bool,
    pub(crate) hosts: u8,
    pub(crate) expect_continue: bool,
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Start,
    /// Scanned this far into the request line.
    RequestLine(usize),
    Fields(FieldScanner),
}

/// Incremental parser of one request head at the front of the connection's buffer.
pub(crate) struct HeadParser {
    state: State,
    empty_lines: u8,
    pub(crate) info: HeadInfo,
    /// End of the method in the request line, and where the target lies.
    pub(crate) method_end: usize,
    pub(crate) target: Span,
    /// Name and value of each field, in order; reused from one head to the next.
    pub(crate) fields: Vec<(Span, Span)>,
}

impl HeadInfo {
    /// The client asked to close after this exchange (or did not ask to keep it open).
    pub(crate) fn close_after(&self) -> bool {
        self.close || (!self.v11 && !self.keep_alive)
    }

    /// How the body is delimited; refuses the framings two parsers could read differently.
    fn body(&self) -> Result<BodyKind, Rejection> {
        if self.te {
            if self.content_length.is_some() {
                return Err(LENGTH_AND_CODING);
            }
            if !self.v11 {
                return Err(TRANSFER_ENCODING_IN_HTTP10);
            }
            if !self.te_chunked_last {
                return Err(CHUNKED_NOT_LAST);
            }
            if self.te_other {
                return Err(UNSUPPORTED_TRANSFER_CODING);
            }
        }
        if self.v11 && self.hosts == 0 {
            return Err(MISSING_HOST);
        }
        Ok(match self.content_length {
            _ if self.te => BodyKind::Chunked,
            Some(n) if n > 0 => BodyKind::Length(n),
            _ => BodyKind::None,
        })
    }
}

impl HeadParser {
    pub(crate) fn new() -> Self {
        HeadParser {
            state: State::Start,
            empty_lines: 0,
            info: HeadInfo::default(),
            method_end: 0,
            target: (0, 0),
            fields: Vec::new(),
        }
    }

    /// Gives the field table back to this thread's spares while the connection waits for
    /// its next head (between heads: the last one has been answered).
    pub(crate) fn release_fields(&mut self) {
        if self.fields.capacity() == 0 || self.fields.capacity() > LARGEST_FIELDS {
            return;
        }
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        spare_buffers::keep(&SPARE_FIELDS, fields);
    }

    /// How the body of the last complete head is delimited (checked when it completed).
    pub(crate) fn body_kind(&self) -> BodyKind {
        self.info.body().unwrap_or(BodyKind::None)
    }

    /// Parses on from where the last call stopped; `b` starts with the head (or the empty
    /// lines before it) and only ever grows between calls until a step other than
    /// `NeedMore` is returned.
    pub(crate) fn advance(&mut self, b: &[u8], lim: &StrictLimits) -> Result<HeadStep, Rejection> {
        loop {
            match self.state {
                State::Start => {
                    let Some(&c) = b.first() else {
                        return Ok(HeadStep::NeedMore);
                    };
                    match c {
                        b'\r' => {
                            let Some(&next) = b.get(1) else {
                                return Ok(HeadStep::NeedMore);
                            };
                            if next != b'\n' {
                                return Err(BARE_CR);
                            }
                            self.empty_lines += 1;
                            if self.empty_lines > MAX_EMPTY_LINES {
                                return Err(TOO_MANY_EMPTY_LINES);
                            }
                            return Ok(HeadStep::Skip(2));
                        }
                        b'\n' => return Err(BARE_LF),
                        _ => {
                            self.state = State::RequestLine(0);
                            self.info = HeadInfo::default();
                            if self.fields.capacity() == 0 {
                                self.fields = take_fields();
                            }
                            self.fields.clear();
                        }
                    }
                }
                State::RequestLine(probe) => {
                    let hi = b.len().min(lim.max_request_line + 1);
                    let mut i = probe;
                    while i < hi && is_request_line_byte(b[i]) {
                        i += 1;
                    }
                    self.state = State::RequestLine(i);
                    if i == hi {
                        return if hi < b.len() || i > lim.max_request_line {
                            Err(REQUEST_LINE_TOO_LONG)
                        } else {
                            Ok(HeadStep::NeedMore)
                        };
                    }
                    match b[i] {
                        b'\r' => {
                            let Some(&next) = b.get(i + 1) else {
                                return Ok(HeadStep::NeedMore);
                            };
                            if next != b'\n' {
                                return Err(BARE_CR);
                            }
                            self.request_line(&b[..i])?;
                            self.state = State::Fields(FieldScanner::new(i + 2));
                        }
                        b'\n' => return Err(BARE_LF),
                        0x80.. => return Err(NON_ASCII_IN_REQUEST_LINE),
                        _ => return Err(CONTROL_IN_REQUEST_LINE),
                    }
                }
                State::Fields(mut scanner) => {
                    let (info, fields) = (&mut self.info, &mut self.fields);
                    let scanned = scanner.scan(b, lim, |name, value, name_at, value_at| {
                        on_field(info, name, value)?;
                        fields.push((name_at, value_at));
                        Ok(())
                    });
                    self.state = State::Fields(scanner);
                    let Some(end) = scanned? else {
                        return Ok(HeadStep::NeedMore);
                    };
                    self.info.body()?;
                    self.state = State::Start;
                    self.empty_lines = 0;
                    return Ok(HeadStep::Complete(end));
                }
            }
        }
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Rejection> {
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
        self.info.v11 = match version {
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
        self.info.method_head = method == b"HEAD";
        check_target(method, target)?;
        self.method_end = sp1;
        self.target = (sp1 + 1, sp1 + 1 + sp2);
        Ok(())
    }
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

/// Refuses a trailer field that would change the message's framing or routing.
pub(crate) fn check_trailer(name: &[u8]) -> Result<(), Rejection> {
    match classify(name) {
        Field::ContentLength | Field::TransferEncoding | Field::Host => {
            Err(FRAMING_FIELD_IN_TRAILERS)
        }
        _ => Ok(()),
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
