//! HTTP/2 guard for one downstream connection: an IO wrapper under hyper's HTTP/2 server
//! that reads the client's frame headers as they pass and ends the connection (GOAWAY, then
//! a read error) when the client sends frames that cost the gateway work without carrying
//! requests (ENHANCE_YOUR_CALM): rapid reset, PING and SETTINGS floods, CONTINUATION
//! floods, runs of empty frames, PRIORITY and WINDOW_UPDATE floods; or frames h2 refuses
//! with another error code than RFC 9113 names (`rules`): a bad preface, fixed-size frames
//! of the wrong length, an initial window over 2^31-1, an HPACK table size update above
//! the advertised limit; or that h2 lets through: trailers that start with a pseudo-header
//! field.
//!
//! Why, when h2 has limits of its own: h2 0.4 bounds memory (one pending PONG, SETTINGS
//! acknowledged before reading on, a CONTINUATION cap derived from `max_header_list_size`,
//! a cap on reset streams not yet accepted, 100 empty DATA frames per connection) but not
//! the CPU a client can make us burn at line rate: PINGs and SETTINGS are answered as fast as
//! they arrive, and streams reset after hyper accepted them (the rapid reset pattern once
//! frames are paced) are never counted. And h2 answers every frame it cannot load with
//! PROTOCOL_ERROR, where RFC 9113 asks for FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR or
//! COMPRESSION_ERROR.
//!
//! Bytes pass through unchanged and uncopied; only the 9-byte frame headers (and the pad
//! length byte of padded frames, the entries of SETTINGS frames, the first bytes of a
//! header block) are looked at. Rates are counted in fixed one-second
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

#[cfg(test)]
use block::hpack_int;
#[cfg(test)]
use frames::Step;
use frames::{Event, Frames, Head};

// The path is spelled out so that the file resolves alike when this module is itself
// included through a `#[path]` attribute.
#[path = "h2guard/block.rs"]
mod block;
#[path = "h2guard/frames.rs"]
mod frames;
#[path = "h2guard/rules.rs"]
mod rules;
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
    #[error("http/2 connection preface expected")]
    BadPreface,
    #[error("http/2 frame of the wrong length for its type")]
    FrameSize,
    #[error("http/2 SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")]
    InitialWindowSize,
    #[error("http/2 HPACK dynamic table size update above the advertised limit")]
    TableSizeUpdate,
    #[error("http/2 pseudo-header field in a trailer section")]
    TrailerPseudoField,
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
    /// Whether the last HEADERS frame was on a stream already open: a trailer section.
    trailers: bool,
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
const SETTING_LEN: usize = 6;
/// Block bytes looked at: two table size updates (the most RFC 7541 section 4.2 allows in
/// a row) of any size h2 can decode, then the start of the first field's name.
const BLOCK_PEEK: usize = 16;
const WINDOW: Duration = Duration::from_secs(1);
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;
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
            Trip::BadPreface => "bad_preface",
            Trip::FrameSize => "frame_size_error",
            Trip::InitialWindowSize => "initial_window_size",
            Trip::TableSizeUpdate => "table_size_update",
            Trip::TrailerPseudoField => "trailer_pseudo_field",
        }
    }

    /// Whether the client flooded (rather than broke a protocol rule).
    pub const fn is_flood(self) -> bool {
        self.code() == ENHANCE_YOUR_CALM
    }

    /// The GOAWAY error code (RFC 9113 section 7).
    pub const fn code(self) -> u32 {
        match self {
            Trip::Resets
            | Trip::Pings
            | Trip::Settings
            | Trip::Continuations
            | Trip::HeaderBlockBytes
            | Trip::EmptyFrames
            | Trip::PriorityOrWindowUpdates => ENHANCE_YOUR_CALM,
            Trip::BadPreface | Trip::TrailerPseudoField => PROTOCOL_ERROR,
            Trip::FrameSize => FRAME_SIZE_ERROR,
            Trip::InitialWindowSize => FLOW_CONTROL_ERROR,
            Trip::TableSizeUpdate => COMPRESSION_ERROR,
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
        let _ = self.outbound.feed(bytes, |event| {
            if let Event::Head(head) = event {
                meter.outbound(head);
            }
            Ok::<(), Infallible>(())
        });
    }

    /// Best effort, never waiting: the connection is being cut whether this lands or not.
    fn send_goaway<T: AsyncWrite>(&self, trip: Trip, mut io: Pin<&mut T>, cx: &mut Context<'_>) {
        // Mid-frame (hyper was stopped by a full socket), a GOAWAY now would corrupt the
        // frame being written; and a client that does not read would not see it anyway.
        if !self.outbound.at_frame_boundary() {
            return;
        }
        let mut frame = GOAWAY_TEMPLATE;
        frame[18..22].copy_from_slice(&self.meter.last_stream.to_be_bytes());
        frame[22..26].copy_from_slice(&trip.code().to_be_bytes());
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
            .feed(fresh, |event| meter.event(event, &mut clock));
        if let Err(trip) = verdict {
            state.record(trip);
            state.send_goaway(trip, this.io, cx);
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

/// The guard's frame rules and flood limits for a server that reads frames itself (the
/// native server, `serve::h2`): each frame header it reads and writes is fed here, and a
/// breach ends the connection with the trip's GOAWAY code, as the guard would.
#[derive(Clone, Debug)]
pub struct FrameRules {
    meter: Meter,
}

impl FrameRules {
    pub fn new(limits: H2GuardLimits) -> Self {
        FrameRules {
            meter: Meter::new(limits),
        }
    }

    /// Checks a frame header of the client's (`pad`: the pad length byte of a padded DATA
    /// or HEADERS frame, else 0); `now` is asked only for rate-limited kinds.
    pub fn inbound(
        &mut self,
        head: &[u8; HEAD_LEN],
        pad: u8,
        now: &mut impl FnMut() -> Instant,
    ) -> Result<(), Trip> {
        let mut head = Head::parse(head);
        head.pad = pad;
        self.meter.event(Event::Head(head), now)
    }

    /// Checks one entry of a client's SETTINGS frame.
    pub fn setting(&mut self, id: u16, value: u32) -> Result<(), Trip> {
        rules::check(Event::Setting(id, value))
    }

    /// Notes a frame header we send.
    pub fn outbound(&mut self, head: &[u8; HEAD_LEN]) {
        self.meter.outbound(Head::parse(head));
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
            trailers: false,
        }
    }

    /// Checks one event of the client's: the protocol rules, then the counts of a frame.
    fn event(&mut self, event: Event, now: &mut impl FnMut() -> Instant) -> Result<(), Trip> {
        rules::check(event)?;
        match event {
            Event::Head(head) => self.inbound(head, now),
            // RFC 9113 section 8.1: trailers must not include pseudo-header fields, and a
            // malformed request is a stream error of type PROTOCOL_ERROR, which an endpoint
            // may treat as a connection error (section 5.4.1). h2 refuses a pseudo-header
            // field after a regular one, but drops leading ones and passes the trailers on.
            Event::PseudoFieldFirst if self.trailers => Err(Trip::TrailerPseudoField),
            _ => Ok(()),
        }
    }

    /// Counts one frame from the client; `now` is asked only for rate-limited kinds.
    fn inbound(&mut self, head: Head, now: &mut impl FnMut() -> Instant) -> Result<(), Trip> {
        match head.kind {
            DATA => self.empty_frame(head.content_len() == 0 && !head.has(END_STREAM)),
            HEADERS | PUSH_PROMISE => {
                if head.kind == HEADERS {
                    self.trailers = head.stream != 0 && head.stream <= self.last_stream;
                }
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
