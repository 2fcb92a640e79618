//! WebSocket frame boundaries (RFC 6455 §5.2), followed as the bytes of one direction pass,
//! and the few frames the gateway writes itself (close, ping).
//!
//! Only headers are read: a payload is counted and passed on, never held, unmasked or
//! inflated (permessage-deflate sets RSV1 and needs nothing from here). The relay uses the
//! boundaries to write a frame of its own between two frames, the message sizes to enforce
//! a limit, and the opcodes to tell a pong (not activity) from anything else.

/// Largest header: 2 bytes, a 64-bit length, a masking key.
pub const MAX_HEADER: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Where one direction's byte stream stands among its frames.
#[derive(Debug, Default)]
pub struct Frames {
    /// Payload bytes of the current frame still to pass; 0 at a boundary.
    remaining: u64,
    /// Opcode of the frame whose payload is passing.
    opcode: u8,
    /// Payload bytes of the data message in progress (its frames so far).
    message: u64,
    /// The source sent a close frame.
    pub closing: bool,
}

/// What walking a piece of the stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Bytes walked: they may be passed on. The rest (at most [`MAX_HEADER`] − 1 bytes of
    /// an incomplete header) must be kept and walked again with what follows, unless
    /// `stop` says otherwise.
    pub used: usize,
    /// Some byte of a frame other than a pong was walked.
    pub active: bool,
    pub stop: Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Walked all it could: everything, or up to an incomplete header.
    No,
    /// Stopped at a frame boundary, as asked.
    Boundary,
    /// The frame starting at `used` makes its message larger than the limit.
    TooLarge,
    /// An empty pong of this many header bytes starts at `used`: the answer to the
    /// gateway's own ping, to be dropped rather than passed on.
    Pong(usize),
}

impl Frames {
    /// True between two frames.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Walks `data`, which starts where the last walk left off. With `to_boundary`, stops
    /// at the first frame boundary (at once when already at one). `max` limits a
    /// message's payload. With `pong`, stops before an empty pong.
    pub fn walk(&mut self, data: &[u8], to_boundary: bool, max: Option<u64>, pong: bool) -> Walk {
        let mut at = 0;
        let mut active = false;
        loop {
            if self.remaining > 0 {
                let left = data.len() - at;
                let take = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                at += take;
                self.remaining -= take as u64;
                active |= take > 0 && self.opcode != OP_PONG;
                if self.remaining > 0 {
                    return Walk {
                        used: at,
                        active,
                        stop: Stop::No,
                    };
                }
            }
            if to_boundary {
                return Walk {
                    used: at,
                    active,
                    stop: Stop::Boundary,
                };
            }
            let Some((len, header, opcode, fin)) = header(&data[at..]) else {
                return Walk {
                    used: at,
                    active,
                    stop: Stop::No,
                };
            };
            if pong && opcode == OP_PONG && len == 0 {
                return Walk {
                    used: at,
                    active,
                    stop: Stop::Pong(header),
                };
            }
            if opcode & 0x8 == 0 {
                // A data frame: a new message unless it continues one.
                let so_far = if opcode == OP_CONTINUATION {
                    self.message
                } else {
                    0
                };
                let size = so_far.saturating_add(len);
                if max.is_some_and(|m| size > m) {
                    return Walk {
                        used: at,
                        active,
                        stop: Stop::TooLarge,
                    };
                }
                self.message = if fin { 0 } else { size };
            }
            self.closing |= opcode == OP_CLOSE;
            self.opcode = opcode;
            active |= opcode != OP_PONG;
            at += header;
            self.remaining = len;
            if self.remaining == 0 && at == data.len() {
                return Walk {
                    used: at,
                    active,
                    stop: Stop::No,
                };
            }
        }
    }
}

/// The payload length, header length, opcode and FIN bit of the frame header at the start
/// of `data`, when all of the header is there.
fn header(data: &[u8]) -> Option<(u64, usize, u8, bool)> {
    let (&b0, rest) = data.split_first()?;
    let &b1 = rest.first()?;
    let masked = b1 & 0x80 != 0;
    let (len, ext) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(data.get(2..4)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(data.get(2..10)?.try_into().ok()?), 8),
        n => (u64::from(n), 0),
    };
    let header = 2 + ext + if masked { 4 } else { 0 };
    if data.len() < header {
        return None;
    }
    Some((len, header, b0 & 0x0f, b0 & 0x80 != 0))
}

/// A frame the gateway writes: at most [`MAX_HEADER`] + 125 bytes.
#[derive(Debug, Clone)]
pub struct Own {
    bytes: [u8; 2 + 4 + 2 + 32],
    len: u8,
}

impl Own {
    /// A close frame with `code` and a short `reason`; `masked` towards a server.
    pub fn close(code: u16, reason: &str, masked: bool) -> Own {
        let mut payload = [0u8; 34];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let text = &reason.as_bytes()[..reason.len().min(32)];
        payload[2..2 + text.len()].copy_from_slice(text);
        Own::frame(OP_CLOSE, &payload[..2 + text.len()], masked)
    }

    /// An empty ping; `masked` towards a server.
    pub fn ping(masked: bool) -> Own {
        Own::frame(OP_PING, &[], masked)
    }

    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Own {
        debug_assert!(payload.len() <= 34, "own frames are small");
        let mut bytes = [0u8; 40];
        bytes[0] = 0x80 | opcode;
        bytes[1] = payload.len() as u8;
        let mut at = 2;
        let mut key = [0u8; 4];
        if masked {
            bytes[1] |= 0x80;
            key = fastrand::u32(..).to_be_bytes();
            bytes[2..6].copy_from_slice(&key);
            at = 6;
        }
        for (i, b) in payload.iter().enumerate() {
            bytes[at + i] = b ^ key[i % 4];
        }
        Own {
            bytes,
            len: (at + payload.len()) as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A whole text message in one frame from the gateway as a server (unmasked).
pub fn text(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | 0x1);
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload {
            0..=125 => f.push(m | payload as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload));
        f
    }

    #[test]
    fn frames_split_anywhere_end_at_the_same_boundaries() {
        let mut stream = frame(1, true, 5, true);
        stream.extend(frame(2, true, 300, true));
        stream.extend(frame(2, true, 70_000, false));
        stream.extend(frame(OP_PONG, true, 0, true));
        for cut in [1, 2, 3, 7, 13, 500, 70_000] {
            let mut f = Frames::default();
            let mut carry = Vec::new();
            for piece in stream.chunks(cut) {
                carry.extend_from_slice(piece);
                let w = f.walk(&carry, false, None, false);
                assert_eq!(w.stop, Stop::No);
                assert!(carry.len() - w.used < MAX_HEADER);
                carry.drain(..w.used);
            }
            assert!(carry.is_empty() && f.at_boundary(), "cut {cut}");
        }
    }

    #[test]
    fn a_message_over_the_limit_stops_before_its_frame() {
        let mut stream = frame(1, true, 10, true);
        stream.extend(frame(2, false, 60, true));
        stream.extend(frame(OP_PING, true, 4, true));
        stream.extend(frame(0, true, 60, true));
        let mut f = Frames::default();
        let w = f.walk(&stream, false, Some(100), false);
        assert_eq!(w.stop, Stop::TooLarge);
        assert_eq!(
            w.used,
            16 + 66 + 10,
            "the continuation past 100 is not walked"
        );
    }

    #[test]
    fn walking_to_a_boundary_stops_after_the_current_frame() {
        let mut stream = frame(1, true, 10, false);
        stream.extend(frame(1, true, 10, false));
        let mut f = Frames::default();
        let w = f.walk(&stream[..5], false, None, false);
        assert_eq!(w.used, 5);
        let w = f.walk(&stream[5..], true, None, false);
        assert_eq!((w.used, w.stop), (7, Stop::Boundary));
        assert!(f.at_boundary());
    }

    #[test]
    fn pongs_are_not_activity_and_close_frames_are_seen() {
        let mut f = Frames::default();
        let w = f.walk(&frame(OP_PONG, true, 3, true), false, None, true);
        assert!(!w.active);
        let w = f.walk(&frame(OP_CLOSE, true, 2, true), false, None, false);
        assert!(w.active && f.closing);
    }

    #[test]
    fn an_empty_pong_is_found_when_asked_for() {
        let mut stream = frame(1, true, 3, true);
        stream.extend(frame(OP_PONG, true, 0, true));
        stream.extend(frame(1, true, 3, true));
        let mut f = Frames::default();
        let w = f.walk(&stream, false, None, true);
        assert_eq!((w.used, w.stop), (9, Stop::Pong(6)));
        let w = f.walk(&stream[9..], false, None, false);
        assert_eq!((w.used, w.stop), (6 + 9, Stop::No));
    }

    #[test]
    fn own_frames_are_well_formed() {
        let c = Own::close(1001, "going away", true);
        let b = c.as_bytes();
        assert_eq!(b[0], 0x88);
        assert_eq!(b[1], 0x80 | 12);
        let key = &b[2..6];
        let payload: Vec<u8> = b[6..]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ key[i % 4])
            .collect();
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert_eq!(&payload[2..], b"going away");
        assert_eq!(Own::ping(false).as_bytes(), &[0x89, 0]);
        let mut f = Frames::default();
        let w = f.walk(
            Own::close(1009, "too big", false).as_bytes(),
            false,
            None,
            false,
        );
        assert_eq!(w.used, 2 + 9);
    }
}
