//! The frame walker of the guard: a pure state machine fed arbitrary slices of one
//! direction of a connection, reporting frame headers, SETTINGS entries and the start of
//! header blocks as they complete, whatever the read sizes.

use super::block::block_start;
use super::{
    ACK, BLOCK_PEEK, DATA, HEADERS, HEAD_LEN, PADDED, PREFACE, PRIORITY_FLAG, SETTINGS, SETTING_LEN,
};

/// A frame header as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) len: u32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
    /// The pad length byte of a padded DATA or HEADERS frame, else 0.
    pub(super) pad: u8,
}

/// Frame boundary tracker over a byte stream: a pure state machine fed arbitrary slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Frames {
    pub(super) step: Step,
    /// Whether payloads are looked into (SETTINGS entries, header block starts): what the
    /// client sends is; what we send is only followed frame by frame.
    inspect: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Bytes of the client connection preface matched so far.
    Preface(usize),
    /// Bytes of the next frame header read so far.
    Head([u8; HEAD_LEN], usize),
    /// A padded frame whose pad length byte comes next.
    PadLength(Head),
    /// Payload bytes still to skip (never 0).
    Payload(usize),
    /// A SETTINGS frame read entry by entry: payload bytes left (never 0), the entry so far.
    Settings(usize, [u8; SETTING_LEN], usize),
    /// The first bytes of a header block fragment, for its table size updates.
    BlockStart(BlockStart),
    /// Not HTTP/2 after all (bad preface): nothing more to follow.
    Lost,
}

/// What the walker reports, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A frame header (for padded DATA and HEADERS, once the pad length is in too).
    Head(Head),
    /// One entry of a SETTINGS frame that is not an acknowledgement.
    Setting(u16, u32),
    /// An HPACK dynamic table size update at the start of a HEADERS frame's block.
    TableSizeUpdate(u32),
    /// The first field of a HEADERS frame's block (after any size updates) is a
    /// pseudo-header field named by the static table or a literal.
    PseudoFieldFirst,
    /// The bytes cannot be the HTTP/2 connection preface.
    BadPreface,
}

/// The start of a HEADERS frame's payload, kept until the first block bytes are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockStart {
    /// Payload bytes left in the frame (never 0).
    left: usize,
    /// Priority field bytes still to skip before the block fragment.
    skip: usize,
    /// Block bytes wanted (at most `BLOCK_PEEK`), and those kept so far.
    want: usize,
    kept: [u8; BLOCK_PEEK],
    have: usize,
}

impl Head {
    pub(super) fn parse(b: &[u8; HEAD_LEN]) -> Self {
        Head {
            // 24 bits: at most 16 MiB - 1, so no length is out of range.
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            pad: 0,
        }
    }

    pub(super) fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn is_padded(self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.has(PADDED)
    }

    /// Payload bytes that carry data or header block: without pad length, padding and
    /// (HEADERS) priority fields. Impossible padding (h2 refuses the frame) counts as none.
    pub(super) fn content_len(self) -> u32 {
        let mut overhead = 0;
        if self.is_padded() {
            overhead += 1 + u32::from(self.pad);
        }
        if self.kind == HEADERS && self.has(PRIORITY_FLAG) {
            overhead += 5;
        }
        self.len.saturating_sub(overhead)
    }
}

impl Step {
    /// What follows a frame header (and pad length): the payload, looked into for SETTINGS
    /// and HEADERS when `inspect`, else skipped.
    fn after_head(head: Head, len: u32, inspect: bool) -> Step {
        let len = len as usize;
        if len == 0 {
            return Step::Head([0; HEAD_LEN], 0);
        }
        if !inspect {
            return Step::Payload(len);
        }
        match head.kind {
            SETTINGS if !head.has(ACK) => Step::Settings(len, [0; SETTING_LEN], 0),
            HEADERS => {
                let skip = if head.has(PRIORITY_FLAG) { 5 } else { 0 };
                let want = (head.content_len() as usize).min(BLOCK_PEEK);
                if want == 0 {
                    return Step::Payload(len);
                }
                Step::BlockStart(BlockStart {
                    left: len,
                    skip,
                    want,
                    kept: [0; BLOCK_PEEK],
                    have: 0,
                })
            }
            _ => Step::Payload(len),
        }
    }

    /// Skipping `left` more payload bytes (or none).
    fn skip(left: usize) -> Step {
        match left {
            0 => Step::Head([0; HEAD_LEN], 0),
            n => Step::Payload(n),
        }
    }
}

impl Frames {
    /// What the client sends: the connection preface, then frames.
    pub(super) fn client() -> Self {
        Frames {
            step: Step::Preface(0),
            inspect: true,
        }
    }

    /// What the server sends: frames from the first byte, payloads skipped.
    pub(super) fn server() -> Self {
        Frames {
            step: Step::Head([0; HEAD_LEN], 0),
            inspect: false,
        }
    }

    pub(super) fn at_frame_boundary(&self) -> bool {
        matches!(self.step, Step::Head(_, 0))
    }

    /// Walks `data`, calling `on` for each event completed in it; stops at the first error.
    pub(super) fn feed<E>(
        &mut self,
        mut data: &[u8],
        mut on: impl FnMut(Event) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(&first) = data.first() {
            match &mut self.step {
                Step::Preface(matched) => {
                    let want = PREFACE.get(*matched..).unwrap_or_default();
                    let n = want.len().min(data.len());
                    if data[..n] != want[..n] {
                        self.step = Step::Lost;
                        return on(Event::BadPreface);
                    }
                    data = &data[n..];
                    *matched += n;
                    if *matched == PREFACE.len() {
                        self.step = Step::Head([0; HEAD_LEN], 0);
                    }
                }
                Step::Head(buf, have) => {
                    let n = (HEAD_LEN - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    *have += n;
                    if *have == HEAD_LEN {
                        let head = Head::parse(buf);
                        if head.is_padded() && head.len > 0 {
                            self.step = Step::PadLength(head);
                        } else {
                            self.step = Step::after_head(head, head.len, self.inspect);
                            on(Event::Head(head))?;
                        }
                    }
                }
                Step::PadLength(head) => {
                    let head = Head {
                        pad: first,
                        ..*head
                    };
                    data = &data[1..];
                    self.step = Step::after_head(head, head.len - 1, self.inspect);
                    on(Event::Head(head))?;
                }
                Step::Payload(rest) => {
                    let n = data.len().min(*rest);
                    data = &data[n..];
                    *rest -= n;
                    if *rest == 0 {
                        self.step = Step::Head([0; HEAD_LEN], 0);
                    }
                }
                Step::Settings(left, entry, have) => {
                    let n = data.len().min(*left).min(SETTING_LEN - *have);
                    entry[*have..*have + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n;
                    *have += n;
                    let done = *have == SETTING_LEN;
                    let (id, value) = (
                        u16::from_be_bytes([entry[0], entry[1]]),
                        u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
                    );
                    if done {
                        *have = 0;
                    }
                    // A trailing partial entry is a frame size error caught at the head.
                    if *left == 0 {
                        self.step = Step::Head([0; HEAD_LEN], 0);
                    }
                    if done {
                        on(Event::Setting(id, value))?;
                    }
                }
                Step::BlockStart(b) => {
                    let n = data.len().min(b.left);
                    let skipped = n.min(b.skip);
                    b.skip -= skipped;
                    let take = (n - skipped).min(b.want - b.have);
                    b.kept[b.have..b.have + take].copy_from_slice(&data[skipped..skipped + take]);
                    b.have += take;
                    let used = skipped + take;
                    data = &data[used..];
                    b.left -= used;
                    if b.have == b.want {
                        let start = *b;
                        self.step = Step::skip(start.left);
                        block_start(&start.kept[..start.have], &mut on)?;
                    }
                }
                Step::Lost => return Ok(()),
            }
        }
        Ok(())
    }
}
