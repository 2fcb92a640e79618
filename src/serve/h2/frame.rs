//! HTTP/2 frame types, flags, error codes and settings (RFC 9113 §6, §7), and the writing of
//! frames into the connection's write buffer.

pub const HEAD_LEN: usize = 9;
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const COMPRESSION_ERROR: u32 = 0x9;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The frame size both sides start with, and the most we accept (we advertise no other).
pub const DEFAULT_MAX_FRAME: usize = 16_384;
pub const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;
pub const DEFAULT_WINDOW: u32 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// A frame header as read.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8; HEAD_LEN]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The 9 bytes of a frame header.
pub fn head(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; HEAD_LEN] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

pub fn write_u32_frame(dst: &mut Vec<u8>, kind: u8, stream: u32, value: u32) {
    dst.extend_from_slice(&head(4, kind, 0, stream));
    dst.extend_from_slice(&value.to_be_bytes());
}

pub fn write_goaway(dst: &mut Vec<u8>, last_stream: u32, code: u32) {
    dst.extend_from_slice(&head(8, GOAWAY, 0, 0));
    dst.extend_from_slice(&last_stream.to_be_bytes());
    dst.extend_from_slice(&code.to_be_bytes());
}

/// The server's SETTINGS: the listener's limits.
pub fn write_settings(dst: &mut Vec<u8>, entries: &[(u16, u32)]) {
    dst.extend_from_slice(&head(entries.len() * 6, SETTINGS, 0, 0));
    for (id, value) in entries {
        dst.extend_from_slice(&id.to_be_bytes());
        dst.extend_from_slice(&value.to_be_bytes());
    }
}

/// A header block as HEADERS then CONTINUATION frames of at most `max_frame` bytes each.
pub fn write_block(dst: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max: usize) {
    let mut chunks = block.chunks(max.max(1));
    let first = chunks.next().unwrap_or_default();
    let mut flags = if end_stream { END_STREAM } else { 0 };
    let more = block.len() > first.len();
    if !more {
        flags |= END_HEADERS;
    }
    dst.extend_from_slice(&head(first.len(), HEADERS, flags, stream));
    dst.extend_from_slice(first);
    let mut rest = chunks.peekable();
    while let Some(c) = rest.next() {
        let flags = if rest.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        dst.extend_from_slice(&head(c.len(), CONTINUATION, flags, stream));
        dst.extend_from_slice(c);
    }
}
