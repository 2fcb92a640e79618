//! HTTP/2 flood guard for one downstream connection: an IO wrapper under hyper's HTTP/2
//! server that reads the client's frame headers as they pass and ends the connection (GOAWAY
//! with ENHANCE_YOUR_CALM, then a read error) when the client sends frames that cost the
//! gateway work without carrying requests: rapid reset, PING and SETTINGS floods,
//! CONTINUATION floods, runs of empty frames, PRIORITY and WINDOW_UPDATE floods.
//!
//! Why, when h2 has limits of its own: h2 0.4 bounds memory (one pending PONG, SETTINGS
//! acknowledged before reading on, a CONTINUATION cap derived from `max_header_list_size`,
//! a cap on reset streams not yet accepted, 100 empty DATA frames per connection) but not
//! the CPU a client can make us burn at line rate: PINGs and SETTINGS are answered as fast as
//! they arrive, and streams reset after hyper accepted them (the rapid reset pattern once
//! frames are paced) are never counted.
//!
//! Bytes pass through unchanged and uncopied; only the 9-byte frame headers (and the pad
//! length byte of padded frames) are looked at. Rates are counted in fixed one-second
//! windows. The write side is followed at frame granularity too, for two reasons: a GOAWAY
//! can only be slipped in between two frames hyper wrote, and each non-empty DATA frame we
//! send earns the client two WINDOW_UPDATEs (stream and connection) that are not a flood
//! (Envoy's `max_inbound_window_update_frames_per_data_frame_sent` idea): a fast download
//! through a client with small windows is honest however many updates it takes. Likewise a
//! PING after we sent DATA or HEADERS is free (gRPC's ping policy): gRPC and hyper clients
//! measure bandwidth-delay with one PING per round trip while data flows.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// The path is spelled out so that the file resolves alike when this module is itself
// included through a `#[path]` attribute.
#[cfg(test)]
#[path = "h2guard/tests.rs"]
mod tests;

/// Per-connection flood limits; crossing one ends the connection. `u32::MAX` turns a check off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2GuardLimits {
    /// RST_STREAM frames per second (rapid reset, CVE-2023-44487).
    pub max_resets_per_sec: u32,
    /// PING frames per second, not counting acknowledgements nor the first PING after each
    /// DATA or HEADERS frame we sent.
    pub max_pings_per_sec: u32,
    /// SETTINGS frames, acknowledgements excluded, per second.
    pub max_settings_per_sec: u32,
    /// CONTINUATION frames in one header block (CVE-2024-27316 and relatives).
    pub max_continuations_per_block: u32,
    /// Header block fragment bytes across HEADERS and its CONTINUATIONs, padding excluded.
    pub max_header_block_bytes: u32,
    /// Consecutive DATA, HEADERS or CONTINUATION frames with neither content nor END_STREAM.
    pub max_empty_frames: u32,
    /// PRIORITY plus WINDOW_UPDATE frames per second, not counting the two WINDOW_UPDATEs
    /// each DATA frame we sent has earned.
    pub max_priority_or_window_updates_per_sec: u32,
}

/// Why a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Trip {
    #[error("http/2 rst_stream flood (rapid reset)")]
    Resets,
    #[error("http/2 ping flood")]
    Pings,
    #[error("http/2 settings flood")]
    Settings,
    #[error("http/2 continuation flood: too many frames in one header block")]
    Continuations,
    #[error("http/2 header block too large")]
    HeaderBlockBytes,
    #[error("http/2 run of empty frames")]
    EmptyFrames,
    #[error("http/2 priority or window_update flood")]
    PriorityOrWindowUpdates,
}

/// Reads the trip of a guard after hyper has taken the guard itself; set at most once.
#[derive(Clone, Debug, Default)]
pub struct TripHandle(Arc<OnceLock<Trip>>);

pin_project! {
    /// The guard: reads are watched and may fail with `ConnectionAborted`, writes pass
    /// through (watched for frame boundaries and DATA frames).
    pub struct H2Guard<T> {
        #[pin]
        io: T,
        state: State,
    }
}

struct State {
    inbound: Frames,
    outbound: Frames,
    meter: Meter,
    /// Whether hyper has written anything: a GOAWAY may not be the server's first frame.
    sent_any: bool,
    trip: Option<Trip>,
    handle: TripHandle,
}

/// A frame header as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
    /// The pad length byte of a padded DATA or HEADERS frame, else 0.
    pad: u8,
}

/// Frame boundary tracker over a byte stream: a pure state machine fed arbitrary slices.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frames {
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Bytes of the client connection preface matched so far.
    Preface(usize),
    /// Bytes of the next frame header read so far.
    Head([u8; HEAD_LEN], usize),
    /// A padded frame whose pad length byte comes next.
    PadLength(Head),
    /// Payload bytes still to skip (never 0).
    Payload(usize),
    /// Not HTTP/2 after all (bad preface): hyper will refuse it, nothing more to follow.
    Lost,
}

/// Counts and limits of one connection: the policy, fed frame headers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meter {
    limits: H2GuardLimits,
    window_start: Option<Instant>,
    /// Frames counted in the current window, indexed by `Rate`.
    counts: [u32; 4],
    window_update_credit: u32,
    /// Whether we sent DATA or HEADERS since the client's last PING.
    ping_credit: bool,
    block: Option<Block>,
    empty_run: u32,
    /// Highest client stream id opened with HEADERS, for the GOAWAY.
    last_stream: u32,
}

/// The frame kinds counted per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rate {
    Resets,
    Pings,
    Settings,
    PriorityOrWindowUpdates,
}

/// The header block being received (HEADERS without END_HEADERS so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    continuations: u32,
    bytes: u32,
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD_LEN: usize = 9;
const WINDOW: Duration = Duration::from_secs(1);
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// One WINDOW_UPDATE for the stream and one for the connection per DATA frame sent.
const WINDOW_UPDATES_PER_DATA_SENT: u32 = 2;
/// Unused credit is capped so a long download cannot bank an unbounded flood.
const WINDOW_UPDATE_CREDIT_CAP: u32 = 1 << 16;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// An empty SETTINGS frame (the server preface) and a GOAWAY without debug data.
const GOAWAY_TEMPLATE: [u8; 26] = [
    0, 0, 0, SETTINGS, 0, 0, 0, 0, 0, //
    0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, //
    0, 0, 0, 0, 0, 0, 0, 0,
];

impl Default for H2GuardLimits {
    /// Far above what honest clients do: browsers and gRPC send a handful of SETTINGS and
    /// PINGs per connection, one or two CONTINUATIONs for the largest header lists hyper
    /// admits (16 KiB), and cancel at most a few concurrency limits' worth of streams per
    /// second; attacks need thousands of frames per second to matter.
    fn default() -> Self {
        H2GuardLimits {
            max_resets_per_sec: 500,
            max_pings_per_sec: 100,
            max_settings_per_sec: 100,
            max_continuations_per_block: 32,
            max_header_block_bytes: 64 * 1024,
            max_empty_frames: 100,
            max_priority_or_window_updates_per_sec: 1000,
        }
    }
}

impl Trip {
    /// A stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Trip::Resets => "rapid_reset",
            Trip::Pings => "ping_flood",
            Trip::Settings => "settings_flood",
            Trip::Continuations => "continuation_flood",
            Trip::HeaderBlockBytes => "header_block_too_large",
            Trip::EmptyFrames => "empty_frame_flood",
            Trip::PriorityOrWindowUpdates => "priority_or_window_update_flood",
        }
    }
}

impl TripHandle {
    /// Why the connection was cut, if it was.
    pub fn get(&self) -> Option<Trip> {
        self.0.get().copied()
    }
}

impl<T> H2Guard<T> {
    pub fn new(io: T, limits: H2GuardLimits) -> Self {
        H2Guard {
            io,
            state: State {
                inbound: Frames::client(),
                outbound: Frames::server(),
                meter: Meter::new(limits),
                sent_any: false,
                trip: None,
                handle: TripHandle::default(),
            },
        }
    }

    /// Why the connection was cut, if it was.
    pub fn tripped(&self) -> Option<Trip> {
        self.state.trip
    }

    /// A handle that still reads the trip once the guard has moved into hyper.
    pub fn trip_handle(&self) -> TripHandle {
        self.state.handle.clone()
    }
}

impl State {
    fn record(&mut self, trip: Trip) {
        self.trip = Some(trip);
        // Only the first trip is recorded; the read side stops at it.
        let _ = self.handle.0.set(trip);
    }

    fn sent(&mut self, bytes: &[u8]) {
        self.sent_any |= !bytes.is_empty();
        let meter = &mut self.meter;
        let _ = self.outbound.feed(bytes, |head| {
            meter.outbound(head);
            Ok::<(), Infallible>(())
        });
    }

    /// Best effort, never waiting: the connection is being cut whether this lands or not.
    fn send_goaway<T: AsyncWrite>(&self, mut io: Pin<&mut T>, cx: &mut Context<'_>) {
        // Mid-frame (hyper was stopped by a full socket), a GOAWAY now would corrupt the
        // frame being written; and a client that does not read would not see it anyway.
        if !self.outbound.at_frame_boundary() {
            return;
        }
        let mut frame = GOAWAY_TEMPLATE;
        frame[18..22].copy_from_slice(&self.meter.last_stream.to_be_bytes());
        frame[22..26].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        let mut rest = if self.sent_any {
            &frame[HEAD_LEN..]
        } else {
            &frame[..]
        };
        while !rest.is_empty() {
            match io.as_mut().poll_write(cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => rest = rest.get(n..).unwrap_or_default(),
                _ => return,
            }
        }
        let _ = io.poll_flush(cx);
    }
}

fn aborted(trip: Trip) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, trip)
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for H2Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if let Some(trip) = this.state.trip {
            return Poll::Ready(Err(aborted(trip)));
        }
        let before = buf.filled().len();
        ready!(this.io.as_mut().poll_read(cx, buf))?;
        let fresh = buf.filled().get(before..).unwrap_or_default();
        if fresh.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let state = &mut *this.state;
        // The clock is read at most once per read, and only if a rate-limited frame came.
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(Instant::now);
        let meter = &mut state.meter;
        let verdict = state
            .inbound
            .feed(fresh, |head| meter.inbound(head, &mut clock));
        if let Err(trip) = verdict {
            state.record(trip);
            state.send_goaway(this.io, cx);
            return Poll::Ready(Err(aborted(trip)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for H2Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        // After our GOAWAY nothing else may follow it on the wire.
        if let Some(trip) = this.state.trip {
            return Poll::Ready(Err(aborted(trip)));
        }
        let n = ready!(this.io.poll_write(cx, buf))?;
        this.state.sent(buf.get(..n).unwrap_or(buf));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Some(trip) = this.state.trip {
            return Poll::Ready(Err(aborted(trip)));
        }
        let n = ready!(this.io.poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            this.state.sent(&buf[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl Head {
    fn parse(b: &[u8; HEAD_LEN]) -> Self {
        Head {
            // 24 bits: at most 16 MiB - 1, so no length is out of range.
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            pad: 0,
        }
    }

    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn is_padded(self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.has(PADDED)
    }

    /// Payload bytes that carry data or header block: without pad length, padding and
    /// (HEADERS) priority fields. Impossible padding (h2 refuses the frame) counts as none.
    fn content_len(self) -> u32 {
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
    fn after_head(len: u32) -> Step {
        match len {
            0 => Step::Head([0; HEAD_LEN], 0),
            n => Step::Payload(n as usize),
        }
    }
}

impl Frames {
    /// What the client sends: the connection preface, then frames.
    fn client() -> Self {
        Frames {
            step: Step::Preface(0),
        }
    }

    /// What the server sends: frames from the first byte.
    fn server() -> Self {
        Frames {
            step: Step::Head([0; HEAD_LEN], 0),
        }
    }

    fn at_frame_boundary(&self) -> bool {
        matches!(self.step, Step::Head(_, 0))
    }

    /// Walks `data`, calling `on_head` for each frame header completed in it (for padded
    /// DATA and HEADERS, once the pad length byte is in too); stops at the first error.
    fn feed<E>(
        &mut self,
        mut data: &[u8],
        mut on_head: impl FnMut(Head) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(&first) = data.first() {
            match &mut self.step {
                Step::Preface(matched) => {
                    let want = PREFACE.get(*matched..).unwrap_or_default();
                    let n = want.len().min(data.len());
                    if data[..n] != want[..n] {
                        self.step = Step::Lost;
                        return Ok(());
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
                            self.step = Step::after_head(head.len);
                            on_head(head)?;
                        }
                    }
                }
                Step::PadLength(head) => {
                    let head = Head {
                        pad: first,
                        ..*head
                    };
                    data = &data[1..];
                    self.step = Step::after_head(head.len - 1);
                    on_head(head)?;
                }
                Step::Payload(rest) => {
                    let n = data.len().min(*rest);
                    data = &data[n..];
                    *rest -= n;
                    if *rest == 0 {
                        self.step = Step::Head([0; HEAD_LEN], 0);
                    }
                }
                Step::Lost => return Ok(()),
            }
        }
        Ok(())
    }
}

impl Meter {
    fn new(limits: H2GuardLimits) -> Self {
        Meter {
            limits,
            window_start: None,
            counts: [0; 4],
            window_update_credit: 0,
            ping_credit: false,
            block: None,
            empty_run: 0,
            last_stream: 0,
        }
    }

    /// Counts one frame from the client; `now` is asked only for rate-limited kinds.
    fn inbound(&mut self, head: Head, now: &mut impl FnMut() -> Instant) -> Result<(), Trip> {
        match head.kind {
            DATA => self.empty_frame(head.content_len() == 0 && !head.has(END_STREAM)),
            HEADERS | PUSH_PROMISE => {
                if head.kind == HEADERS && head.stream % 2 == 1 {
                    self.last_stream = self.last_stream.max(head.stream);
                }
                let end_stream = head.kind == HEADERS && head.has(END_STREAM);
                self.empty_frame(head.content_len() == 0 && !end_stream)?;
                self.block = Some(Block {
                    continuations: 0,
                    bytes: 0,
                });
                self.extend_block(head)
            }
            CONTINUATION => {
                // CONTINUATION defines no END_STREAM: an empty one is empty whatever its flags.
                self.empty_frame(head.content_len() == 0)?;
                // Outside a header block it is a connection error h2 reports itself.
                let Some(block) = self.block.as_mut() else {
                    return Ok(());
                };
                block.continuations = block.continuations.saturating_add(1);
                if block.continuations > self.limits.max_continuations_per_block {
                    return Err(Trip::Continuations);
                }
                self.extend_block(head)
            }
            RST_STREAM => self.rate(Rate::Resets, now),
            PING if head.has(ACK) => Ok(()),
            PING if self.ping_credit => {
                self.ping_credit = false;
                Ok(())
            }
            PING => self.rate(Rate::Pings, now),
            SETTINGS if !head.has(ACK) => self.rate(Rate::Settings, now),
            PRIORITY => self.rate(Rate::PriorityOrWindowUpdates, now),
            WINDOW_UPDATE if self.window_update_credit > 0 => {
                self.window_update_credit -= 1;
                Ok(())
            }
            WINDOW_UPDATE => self.rate(Rate::PriorityOrWindowUpdates, now),
            _ => Ok(()),
        }
    }

    /// Notes one frame we sent.
    fn outbound(&mut self, head: Head) {
        if head.kind == HEADERS || head.kind == DATA && head.len > 0 {
            self.ping_credit = true;
        }
        if head.kind == DATA && head.len > 0 {
            self.window_update_credit = self
                .window_update_credit
                .saturating_add(WINDOW_UPDATES_PER_DATA_SENT)
                .min(WINDOW_UPDATE_CREDIT_CAP);
        }
    }

    fn empty_frame(&mut self, empty: bool) -> Result<(), Trip> {
        if !empty {
            self.empty_run = 0;
            return Ok(());
        }
        self.empty_run = self.empty_run.saturating_add(1);
        if self.empty_run > self.limits.max_empty_frames {
            return Err(Trip::EmptyFrames);
        }
        Ok(())
    }

    fn extend_block(&mut self, head: Head) -> Result<(), Trip> {
        let Some(block) = self.block.as_mut() else {
            return Ok(());
        };
        block.bytes = block.bytes.saturating_add(head.content_len());
        if block.bytes > self.limits.max_header_block_bytes {
            return Err(Trip::HeaderBlockBytes);
        }
        if head.has(END_HEADERS) {
            self.block = None;
        }
        Ok(())
    }

    fn rate(&mut self, rate: Rate, now: &mut impl FnMut() -> Instant) -> Result<(), Trip> {
        let now = now();
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.counts = [0; 4];
            }
        }
        let (limit, trip) = match rate {
            Rate::Resets => (self.limits.max_resets_per_sec, Trip::Resets),
            Rate::Pings => (self.limits.max_pings_per_sec, Trip::Pings),
            Rate::Settings => (self.limits.max_settings_per_sec, Trip::Settings),
            Rate::PriorityOrWindowUpdates => (
                self.limits.max_priority_or_window_updates_per_sec,
                Trip::PriorityOrWindowUpdates,
            ),
        };
        let count = &mut self.counts[rate as usize];
        *count = count.saturating_add(1);
        if *count > limit {
            return Err(trip);
        }
        Ok(())
    }
}
