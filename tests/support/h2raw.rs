//! A raw HTTP/2 client for conformance tests: writes hand-built frames (literal HPACK
//! blocks, no encoder state) and reads the gateway's frames back one by one, so a test can
//! assert the exact frame type and error code RFC 9113 requires.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const COMPRESSION_ERROR: u32 = 0x9;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// How long a test waits for the gateway's next frame.
const PATIENCE: Duration = Duration::from_secs(5);

/// One frame as read from the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// How the gateway ended a stream or the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed without either.
    Closed,
    /// Nothing came within the patience.
    Silence,
}

pub struct H2Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Frames read so far, in order.
    pub seen: Vec<Frame>,
}

/// Short enough for an assertion message: the payload's first bytes only.
impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            PRIORITY => "PRIORITY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            CONTINUATION => "CONTINUATION",
            _ => "UNKNOWN",
        };
        let shown = &self.payload[..self.payload.len().min(16)];
        write!(
            f,
            "{name}(flags {:#x}, stream {}, {} bytes {:02x?})",
            self.flags,
            self.stream,
            self.payload.len(),
            shown
        )
    }
}

impl Frame {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The 32-bit value at `at` in the payload (GOAWAY and RST_STREAM error codes).
    pub fn word(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    /// `(identifier, value)` pairs of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks(6)
            .map(|c| (u16::from_be_bytes([c[0], c[1]]), self.word_of(&c[2..6])))
            .collect()
    }

    fn word_of(&self, b: &[u8]) -> u32 {
        u32::from_be_bytes(b.try_into().unwrap())
    }
}

/// Encodes a frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A SETTINGS payload.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|(id, v)| [id.to_be_bytes().to_vec(), v.to_be_bytes().to_vec()].concat())
        .collect()
}

/// A literal field without indexing, name from the static table (`index` < 15).
fn indexed_name(index: u8, value: &str) -> Vec<u8> {
    debug_assert!(index < 15);
    let mut b = vec![index, u8::try_from(value.len()).unwrap()];
    b.extend_from_slice(value.as_bytes());
    b
}

/// A literal field without indexing with a literal name.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0, u8::try_from(name.len()).unwrap()];
    b.extend_from_slice(name.as_bytes());
    b.push(u8::try_from(value.len()).unwrap());
    b.extend_from_slice(value.as_bytes());
    b
}

/// The header block of a request to `path` on authority `a`, with a `content-length` if
/// given. Only static-table references and literals without indexing: no table state.
pub fn request_block(method: &str, path: &str, content_length: Option<usize>) -> Vec<u8> {
    let mut b = match method {
        "GET" => vec![0x82],
        "POST" => vec![0x83],
        m => indexed_name(2, m),
    };
    b.push(0x86); // :scheme http
    b.extend(indexed_name(4, path));
    b.extend(indexed_name(1, "a"));
    if let Some(n) = content_length {
        // content-length is static entry 28: a 4-bit prefix of 15, then 13.
        b.extend([0x0f, 0x0d, u8::try_from(n.to_string().len()).unwrap()]);
        b.extend(n.to_string().as_bytes());
    }
    b
}

impl H2Raw {
    /// Connects and sends the preface, an empty SETTINGS, and nothing else.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        H2Raw::connect_with(addr, &[]).await
    }

    /// Connects and sends the preface and a SETTINGS frame with `pairs`; acknowledges the
    /// server's SETTINGS once it comes.
    pub async fn connect_with(addr: SocketAddr, pairs: &[(u16, u32)]) -> H2Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = H2Raw {
            stream,
            buf: Vec::new(),
            seen: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &settings(pairs)));
        c.write(&hello).await;
        let server = c
            .until(|f| f.kind == SETTINGS && !f.has(ACK))
            .await
            .expect("the server's SETTINGS");
        assert_eq!(server.stream, 0);
        c.send(SETTINGS, ACK, 0, &[]).await;
        c
    }

    /// Connects without writing anything.
    pub async fn bare(addr: SocketAddr) -> H2Raw {
        H2Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Writes bytes; a connection the server already closed is not an error here (what the
    /// server sent before closing is what the test checks).
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.write(&frame(kind, flags, stream, payload)).await;
    }

    /// Opens `stream` with a request header block.
    pub async fn headers(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, block).await;
    }

    /// The next frame, `None` when the connection closed or nothing came in time.
    pub async fn next(&mut self) -> Option<Frame> {
        self.next_or_closed().await.flatten()
    }

    /// Reads frames until one matches `want`.
    pub async fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        loop {
            let f = self.next().await?;
            if want(&f) {
                return Some(f);
            }
        }
    }

    /// Reads the response on `stream` to its end: the `:status` (first byte of the block
    /// when it is a static-table index, as hyper sends common codes) is not decoded; the
    /// frame that ended the response is returned.
    pub async fn response_end(&mut self, stream: u32) -> Option<Frame> {
        self.until(|f| f.stream == stream && matches!(f.kind, HEADERS | DATA) && f.has(END_STREAM))
            .await
    }

    /// How the gateway ends `stream` (RST_STREAM on it) or the connection (GOAWAY),
    /// whichever comes first; other frames are skipped.
    pub async fn ending(&mut self, stream: u32) -> Ending {
        loop {
            let Some(f) = self.next_or_closed().await else {
                return Ending::Silence;
            };
            let Some(f) = f else {
                return Ending::Closed;
            };
            match f.kind {
                RST_STREAM if f.stream == stream => return Ending::Reset(f.word(0)),
                GOAWAY => return Ending::GoAway(f.word(4)),
                _ => {}
            }
        }
    }

    /// How the gateway ends the connection: the first GOAWAY's error code.
    pub async fn goaway(&mut self) -> Ending {
        loop {
            let Some(f) = self.next_or_closed().await else {
                return Ending::Silence;
            };
            let Some(f) = f else {
                return Ending::Closed;
            };
            if f.kind == GOAWAY {
                return Ending::GoAway(f.word(4));
            }
        }
    }

    /// Whether the server closed the connection (after any frames) within the patience.
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.next_or_closed().await {
                None => return false,
                Some(None) => return true,
                Some(Some(_)) => {}
            }
        }
    }

    /// `None`: nothing in time; `Some(None)`: closed; `Some(Some(f))`: a frame. PINGs are
    /// answered, as an honest client does (hyper's graceful shutdown waits for the answer).
    async fn next_or_closed(&mut self) -> Option<Option<Frame>> {
        loop {
            if let Some(f) = self.parse() {
                self.seen.push(f.clone());
                if f.kind == PING && !f.has(ACK) {
                    self.send(PING, ACK, 0, &f.payload.clone()).await;
                }
                return Some(Some(f));
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Err(_)) | Ok(Ok(0)) => return Some(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let f = Frame {
            kind: self.buf[3],
            flags: self.buf[4],
            stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload: self.buf[9..9 + len].to_vec(),
        };
        self.buf.drain(..9 + len);
        Some(f)
    }
}
