//! Response side of the strict guard: follows response framing written by the server.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WState {
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
pub(super) struct Responses {
    pub(super) state: WState,
    pub(super) line_len: usize,
    /// Head bytes gathered when a head spans writes.
    pub(super) head: Vec<u8>,
    pub(super) chunk: u64,
    pub(super) in_ext: bool,
    /// Final responses whose head / whole body was written.
    pub(super) started: u64,
    pub(super) done: u64,
    /// The server announced `Connection: close`.
    pub(super) closing: bool,
    /// Bumped on every transition the reader may be waiting for.
    pub(super) events: u64,
}

pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) chunked: bool,
    pub(super) length: Option<u64>,
    pub(super) close: bool,
}

impl Responses {
    pub(super) fn new() -> Self {
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

    pub(super) fn tracking(&self) -> bool {
        !matches!(
            self.state,
            WState::Unframed | WState::Switched | WState::Lost
        )
    }

    pub(super) fn switched(&self) -> bool {
        self.state == WState::Switched
    }

    pub(super) fn lost(&self) -> bool {
        self.state == WState::Lost
    }

    /// Between responses, all `heads` requests answered, and the connection still open.
    pub(super) fn idle_after(&self, heads: u64) -> bool {
        self.state == WState::Head
            && self.line_len == 0
            && self.head.is_empty()
            && self.done >= heads
            && !self.closing
    }

    pub(super) fn finish(&mut self) {
        self.done += 1;
        self.state = WState::Head;
        self.line_len = 0;
        self.events += 1;
    }

    pub(super) fn lose(&mut self) {
        self.state = WState::Lost;
        self.head = Vec::new();
        self.events += 1;
    }

    /// Offset after the next empty line, keeping line state across calls.
    pub(super) fn find_blank_line(&mut self, data: &[u8]) -> Option<usize> {
        // Jump from LF to LF; `line_len` carries a line split across writes.
        let mut pos = 0;
        while let Some(off) = data[pos..].iter().position(|&c| c == b'\n') {
            let len = self.line_len + off;
            self.line_len = 0;
            pos += off + 1;
            if len == 1 {
                return Some(pos);
            }
        }
        self.line_len += data.len() - pos;
        None
    }

    pub(super) fn feed(&mut self, mut data: &[u8], head_reqs: &mut VecDeque<u64>) {
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

    pub(super) fn chunk_digits(&mut self, data: &[u8]) {
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

    pub(super) fn on_head(&mut self, h: &ResponseHead, head_reqs: &mut VecDeque<u64>) {
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
pub(super) fn parse_response_head(h: &[u8]) -> Option<ResponseHead> {
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
        // Only Content-Length, Transfer-Encoding and Connection matter here.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            continue;
        }
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
