//! Request side of the strict guard: the request-head and chunked-body parser.

use super::*;

/// What the parser wants the IO to do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
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
pub(super) enum RState {
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
pub(super) struct HeadInfo {
    pub(super) v11: bool,
    pub(super) method_head: bool,
    pub(super) content_length: Option<u64>,
    pub(super) te: bool,
    pub(super) te_chunked_last: bool,
    pub(super) te_chunked: bool,
    pub(super) te_other: bool,
    pub(super) hosts: u8,
    pub(super) expect_continue: bool,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
}

impl HeadInfo {
    pub(super) fn close_after(&self) -> bool {
        self.close || (!self.v11 && !self.keep_alive)
    }
}

/// Incremental request parser over the guard's buffer. Absolute offsets (`base`, `ok`) are
/// shifted when the buffer is compacted; the others are relative to `base`, so the bytes of
/// an unfinished element are scanned once however they arrive.
pub(super) struct Requests {
    pub(super) state: RState,
    /// Start of the element being parsed (head, chunk line, trailer section).
    pub(super) base: usize,
    /// End of the bytes that may be released.
    pub(super) ok: usize,
    /// How far scanning got inside the element.
    pub(super) probe: usize,
    /// Start of the current field line and its colon (0: name not finished).
    pub(super) line: usize,
    pub(super) colon: usize,
    /// Start of the header section (after the request line).
    pub(super) fields: usize,
    pub(super) nfields: usize,
    pub(super) empty_lines: u8,
    /// Head complete but held back until the first chunk-size line proved valid.
    pub(super) withheld: bool,
    pub(super) head: HeadInfo,
    /// Index of the current request; `heads` counts released heads.
    pub(super) current: u64,
    pub(super) heads: u64,
    /// Indices of released HEAD requests, whose responses carry no body.
    pub(super) head_reqs: VecDeque<u64>,
}

impl Requests {
    pub(super) fn new() -> Self {
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

    pub(super) fn shift(&mut self, by: usize) {
        debug_assert!(
            by <= self.ok && self.ok <= self.base,
            "compaction past unreleased bytes"
        );
        self.ok -= by;
        self.base -= by;
    }

    /// True when a refusal now falls inside a body whose head the reader already has.
    pub(super) fn mid_body(&self) -> bool {
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
    pub(super) fn direct_window(&self) -> u64 {
        match self.state {
            RState::Body(n) | RState::ChunkData(n) if !self.withheld => n,
            _ => 0,
        }
    }

    pub(super) fn consume_direct(&mut self, n: u64) {
        match &mut self.state {
            RState::Body(left) | RState::ChunkData(left) => {
                debug_assert!(n <= *left, "direct read past the body");
                *left -= n.min(*left);
            }
            _ => debug_assert!(false, "direct read outside a body"),
        }
    }

    pub(super) fn release_head(&mut self) {
        self.ok = self.base;
        self.current = self.heads;
        self.heads += 1;
        if self.head.method_head {
            self.head_reqs.push_back(self.current);
        }
    }

    pub(super) fn message_end(&mut self) -> Option<Step> {
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

    pub(super) fn advance(&mut self, b: &[u8], lim: &StrictLimits) -> Result<Step, Rejection> {
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
    pub(super) fn scan_fields(
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
    pub(super) fn finish_head(&mut self, end: usize) -> Result<Option<Step>, Rejection> {
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

pub(super) fn parse_request_line(line: &[u8], head: &mut HeadInfo) -> Result<(), Rejection> {
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

pub(super) fn check_target(method: &[u8], target: &[u8]) -> Result<(), Rejection> {
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
pub(super) enum Field {
    ContentLength,
    TransferEncoding,
    Host,
    Expect,
    Connection,
    Upgrade,
    Other,
}

pub(super) fn classify(name: &[u8]) -> Field {
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

pub(super) fn on_field(h: &mut HeadInfo, name: &[u8], value: &[u8]) -> Result<(), Rejection> {
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

pub(super) fn parse_content_length(v: &[u8]) -> Result<u64, Rejection> {
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
pub(super) fn parse_chunk_line(line: &[u8], max_ext: usize) -> Result<u64, Rejection> {
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

pub(super) fn overlong_chunk_line(prefix: &[u8]) -> Rejection {
    let digits = prefix.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits > MAX_CHUNK_SIZE_DIGITS {
        CHUNK_SIZE_TOO_LONG
    } else {
        CHUNK_EXTENSION_TOO_LONG
    }
}

/// RFC 9112 §7.1.1: `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
pub(super) fn is_chunk_ext(ext: &[u8]) -> bool {
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
pub(super) fn quoted_string_end(s: &[u8], start: usize) -> Option<usize> {
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

pub(super) fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

pub(super) const fn byte_table(kind: u8) -> [bool; 256] {
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

pub(super) static TCHAR: [bool; 256] = byte_table(0);
pub(super) static FIELD_VALUE: [bool; 256] = byte_table(1);
pub(super) static AUTHORITY: [bool; 256] = byte_table(2);

pub(super) fn is_tchar(c: u8) -> bool {
    TCHAR[usize::from(c)]
}

pub(super) fn is_field_value_byte(c: u8) -> bool {
    FIELD_VALUE[usize::from(c)]
}

/// Printable ASCII and SP: all a request line may contain.
pub(super) fn is_request_line_byte(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

pub(super) fn is_authority(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&c| AUTHORITY[usize::from(c)])
}
