//! One native HTTP/2 connection: the loop that reads frames, acts on them, polls the
//! woken streams and writes what they produced, with the connection-level state (settings,
//! windows, HPACK, GOAWAY, the idle clock). The frames that carry requests are read in
//! `recv.rs`; streams' own work is in `stream.rs`.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::frame::*;
use super::hpack::{Decoder, Encoder};
use super::stream::Stream;
use super::wake::{SlotWaker, WakeShared};
use super::Settings;
use crate::serve::h1::{BoxIo, Service};
use crate::serve::h2guard::{FrameRules, H2GuardLimits, Trip};
use crate::spare_buffers;

/// Write buffer bytes above which no more is read or produced until it drains.
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// Rounds of read, streams and write in one poll before yielding to the runtime.
const ROUNDS: usize = 16;
/// After its response, the rest of a request body is read (and dropped) for at most this
/// long and this much, so its framing is still checked, before the stream is reset with
/// NO_ERROR (RFC 9113 §8.1).
pub(super) const LINGER_TIME: Duration = Duration::from_secs(1);
pub(super) const LINGER_BYTES: u64 = 64 * 1024;
/// Time given to write a final GOAWAY.
const CLOSE_TIME: Duration = Duration::from_secs(1);

/// A header block whose CONTINUATION frames are still coming.
pub(super) struct PendingBlock {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    pub(super) buf: Vec<u8>,
}

/// Why the connection ends: nothing left to do, or an error to send in a GOAWAY first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnError {
    Code(u32),
    Trip(Trip),
}

pub(super) struct Conn<S: Service> {
    pub(super) io: BoxIo,
    pub(super) svc: Arc<S>,
    pub(super) settings: Settings,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) rules: FrameRules,
    pub(super) decoder: Decoder,
    pub(super) encoder: Encoder,
    /// The stream slab: a stream's slot is its index, and the index of its waker.
    pub(super) streams: Vec<Option<Stream<S::Body>>>,
    pub(super) wakers: Vec<Arc<SlotWaker>>,
    pub(super) free: Vec<usize>,
    /// Open streams: (id, slot).
    pub(super) ids: Vec<(u32, usize)>,
    pub(super) wake: Arc<WakeShared>,
    pub(super) polled: Vec<usize>,
    pub(super) block: Option<PendingBlock>,
    /// The highest stream id the client opened.
    pub(super) last_stream: u32,
    pub(super) preface: usize,
    pub(super) settings_seen: bool,
    pub(super) peer_max_frame: usize,
    pub(super) peer_initial_window: i64,
    pub(super) send_window: i64,
    pub(super) recv_window: i64,
    pub(super) recv_unacked: usize,
    /// Our GOAWAY's last stream id, once sent (graceful shutdown or idle).
    pub(super) goaway: Option<u32>,
    pub(super) peer_goaway: bool,
    pub(super) error: Option<ConnError>,
    pub(super) idle_since: Option<Instant>,
    pub(super) timer: Option<(Instant, Pin<Box<Sleep>>)>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl<S: Service + 'static> Conn<S>
where
    S::Body: 'static,
{
    pub(super) fn new(
        io: BoxIo,
        read: Vec<u8>,
        settings: Settings,
        svc: Arc<S>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut rbuf = BytesMut::new();
        if !read.is_empty() {
            rbuf = spare_buffers::take_read();
            rbuf.extend_from_slice(&read);
        }
        let mut conn = Conn {
            io,
            svc,
            settings,
            rbuf,
            wbuf: spare_buffers::take_write(),
            wpos: 0,
            rules: FrameRules::new(H2GuardLimits::default()),
            decoder: Decoder::new(4096),
            encoder: Encoder::new(),
            streams: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            ids: Vec::new(),
            wake: Arc::new(WakeShared::default()),
            polled: Vec::new(),
            block: None,
            last_stream: 0,
            preface: 0,
            settings_seen: false,
            peer_max_frame: DEFAULT_MAX_FRAME,
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(settings.connection_window.max(DEFAULT_WINDOW)),
            recv_unacked: 0,
            goaway: None,
            peer_goaway: false,
            error: None,
            idle_since: Some(Instant::now()),
            timer: None,
            shutdown,
        };
        write_settings(
            &mut conn.wbuf,
            &[
                (SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_streams),
                (SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window),
                (SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list),
            ],
        );
        if settings.connection_window > DEFAULT_WINDOW {
            write_u32_frame(
                &mut conn.wbuf,
                WINDOW_UPDATE,
                0,
                settings.connection_window - DEFAULT_WINDOW,
            );
        }
        conn
    }

    /// Runs the connection to its end; the trip of the frame rules that ended it, if one did.
    pub(super) async fn run(mut self) -> Option<Trip> {
        let mut stop_rx = self.shutdown.clone();
        if *self.shutdown.borrow() {
            self.start_goaway();
        }
        let mut stop = pin!(async move {
            let _ = stop_rx.changed().await;
        });
        poll_fn(|cx| self.poll(cx, stop.as_mut())).await;
        // Streams go first (their pipelines are cancelled), then the last bytes are written.
        self.streams.clear();
        self.ids.clear();
        let trip = match self.error {
            Some(ConnError::Trip(t)) => Some(t),
            _ => None,
        };
        if let Some(e) = self.error {
            let code = match e {
                ConnError::Code(c) => c,
                ConnError::Trip(t) => t.code(),
            };
            // After the frames already queued: one may be partly written.
            write_goaway(&mut self.wbuf, self.last_stream, code);
        }
        let rest = self.wbuf.get(self.wpos..).unwrap_or_default().to_vec();
        let io = &mut self.io;
        let _ = tokio::time::timeout(CLOSE_TIME, async {
            io.write_all(&rest).await?;
            io.shutdown().await?;
            // Whatever the client still sends is read for a moment, so the close is not a
            // reset that could destroy the GOAWAY in flight.
            let mut sink = [0u8; 512];
            while io.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        trip
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<()> {
        self.wake.conn.register(cx.waker());
        for _ in 0..ROUNDS {
            if self.goaway.is_none() && stop.as_mut().poll(cx).is_ready() {
                self.start_goaway();
            }
            let mut progress = self.process_frames();
            if self.error.is_some() {
                return Poll::Ready(());
            }
            self.poll_streams();
            match self.poll_write(cx) {
                Poll::Ready(Err(())) => return Poll::Ready(()),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            if self.error.is_some() {
                return Poll::Ready(());
            }
            let flushed = self.wpos == self.wbuf.len();
            if (self.goaway.is_some() || self.peer_goaway) && self.ids.is_empty() && flushed {
                return Poll::Ready(());
            }
            if self.wbuf.len() - self.wpos < HIGH_WATER {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(())) => return Poll::Ready(()),
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => {}
                }
            }
            progress |= self.check_timers(cx);
            if self.error.is_some() {
                return Poll::Ready(());
            }
            // A full socket wakes the task when it drains; streams queued meanwhile wait.
            let write_blocked = self.wbuf.len() - self.wpos >= HIGH_WATER;
            if !progress && (write_blocked || !self.wake.any_woken()) {
                self.release_idle();
                return Poll::Pending;
            }
        }
        if self.wbuf.len() - self.wpos < HIGH_WATER {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Gives back the buffers and stream slots an idle connection does not need.
    fn release_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() != 0 {
            spare_buffers::give_read(std::mem::take(&mut self.rbuf));
        }
        if self.wpos == self.wbuf.len() && self.wbuf.capacity() != 0 {
            self.wbuf.clear();
            self.wpos = 0;
            if self.ids.is_empty() {
                spare_buffers::give_write(std::mem::take(&mut self.wbuf));
            }
        }
        // Waiting on the socket with no stream open: the slab goes (a slot's waker stays,
        // for the next stream to take that slot).
        if self.ids.is_empty() && self.rbuf.capacity() == 0 && self.streams.capacity() != 0 {
            self.streams = Vec::new();
            self.free = Vec::new();
            self.ids = Vec::new();
            self.polled = Vec::new();
            self.wakers.truncate(4);
            self.wakers.shrink_to_fit();
            self.decoder.shrink();
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ()>> {
        if self.rbuf.capacity() == 0 {
            std::task::ready!(self.io.poll_readable(cx));
            self.rbuf = spare_buffers::take_read();
        } else if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(spare_buffers::READ_BUFFER);
        }
        let io = &mut self.io;
        match std::task::ready!(pin!(io.read_buf(&mut self.rbuf)).poll(cx)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(())),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        while self.wpos < self.wbuf.len() {
            let rest = self.wbuf.get(self.wpos..).unwrap_or_default();
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(n)) => self.wpos += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes a frame header into the write buffer, noting it for the frame rules.
    pub(super) fn put_head(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        if self.wbuf.capacity() == 0 {
            self.wbuf = spare_buffers::take_write();
        }
        let h = head(len, kind, flags, stream);
        self.rules.outbound(&h);
        self.wbuf.extend_from_slice(&h);
    }

    pub(super) fn put_u32(&mut self, kind: u8, stream: u32, value: u32) {
        self.put_head(4, kind, 0, stream);
        self.wbuf.extend_from_slice(&value.to_be_bytes());
    }

    /// GOAWAY(NO_ERROR) naming the last stream the connection will serve; those open
    /// finish, then the connection closes.
    fn start_goaway(&mut self) {
        if self.goaway.is_none() {
            self.goaway = Some(self.last_stream);
            self.put_head(8, GOAWAY, 0, 0);
            self.wbuf.extend_from_slice(&self.last_stream.to_be_bytes());
            self.wbuf.extend_from_slice(&NO_ERROR.to_be_bytes());
        }
    }

    pub(super) fn fail(&mut self, e: ConnError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Acts on every complete frame in the read buffer; whether there was one.
    fn process_frames(&mut self) -> bool {
        let mut any = false;
        if self.preface < PREFACE.len() {
            let want = PREFACE.len() - self.preface;
            let have = self.rbuf.len().min(want);
            let expected = PREFACE
                .get(self.preface..self.preface + have)
                .unwrap_or_default();
            if self.rbuf.get(..have) != Some(expected) {
                self.fail(ConnError::Trip(Trip::BadPreface));
                return false;
            }
            let _ = self.rbuf.split_to(have);
            self.preface += have;
            if self.preface < PREFACE.len() {
                return have > 0;
            }
            any = true;
        }
        while self.error.is_none() && self.wbuf.len() - self.wpos < HIGH_WATER {
            let Some(raw) = self.rbuf.get(..HEAD_LEN) else {
                break;
            };
            let mut raw_head = [0u8; HEAD_LEN];
            raw_head.copy_from_slice(raw);
            let h = Head::parse(&raw_head);
            if h.len > DEFAULT_MAX_FRAME {
                self.fail(ConnError::Code(FRAME_SIZE_ERROR));
                break;
            }
            if self.rbuf.len() < HEAD_LEN + h.len {
                self.rbuf.reserve(HEAD_LEN + h.len - self.rbuf.len());
                break;
            }
            let mut frame = self.rbuf.split_to(HEAD_LEN + h.len).freeze();
            let payload = frame.split_off(HEAD_LEN);
            any = true;
            let pad = if matches!(h.kind, DATA | HEADERS) && h.has(PADDED) {
                payload.first().copied().unwrap_or(0)
            } else {
                0
            };
            let mut clock = Instant::now;
            if let Err(trip) = self.rules.inbound(&raw_head, pad, &mut clock) {
                self.fail(ConnError::Trip(trip));
                break;
            }
            if !self.settings_seen && h.kind != SETTINGS {
                self.fail(ConnError::Code(PROTOCOL_ERROR));
                break;
            }
            self.frame(h, payload);
        }
        any
    }

    fn frame(&mut self, h: Head, payload: Bytes) {
        if let Some(b) = &self.block {
            if h.kind != CONTINUATION || h.stream != b.stream {
                return self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
        }
        match h.kind {
            DATA => self.on_data(h, payload),
            HEADERS => self.on_headers(h, payload),
            CONTINUATION => self.on_continuation(h, &payload),
            PRIORITY if h.stream == 0 => self.fail(ConnError::Code(PROTOCOL_ERROR)),
            RST_STREAM => self.on_reset(h, &payload),
            SETTINGS => self.on_settings(h, &payload),
            PUSH_PROMISE => self.fail(ConnError::Code(PROTOCOL_ERROR)),
            PING if h.stream != 0 => self.fail(ConnError::Code(PROTOCOL_ERROR)),
            PING if !h.has(ACK) => {
                self.put_head(8, PING, ACK, 0);
                self.wbuf.extend_from_slice(&payload);
            }
            GOAWAY if h.stream != 0 => self.fail(ConnError::Code(PROTOCOL_ERROR)),
            GOAWAY => self.peer_goaway = true,
            WINDOW_UPDATE => self.on_window_update(h, &payload),
            // PRIORITY, PING acknowledgements and unknown kinds are ignored.
            _ => {}
        }
    }

    fn on_settings(&mut self, h: Head, payload: &[u8]) {
        if h.stream != 0 {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        }
        if h.has(ACK) {
            return;
        }
        self.settings_seen = true;
        for e in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([e[0], e[1]]);
            let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
            if let Err(trip) = self.rules.setting(id, value) {
                return self.fail(ConnError::Trip(trip));
            }
            match id {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_peer_limit(value as usize),
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return self.fail(ConnError::Code(PROTOCOL_ERROR))
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    for &(_, slot) in &self.ids {
                        if let Some(Some(s)) = self.streams.get_mut(slot) {
                            s.send_window += delta;
                            if s.send_window > MAX_WINDOW {
                                self.error = Some(ConnError::Code(FLOW_CONTROL_ERROR));
                            }
                        }
                        if let Some(w) = self.wakers.get(slot) {
                            w.poke();
                        }
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME as u32..=MAX_FRAME_LIMIT).contains(&value) {
                        return self.fail(ConnError::Code(PROTOCOL_ERROR));
                    }
                    self.peer_max_frame = value as usize;
                }
                _ => {}
            }
        }
        self.put_head(0, SETTINGS, ACK, 0);
    }

    fn on_window_update(&mut self, h: Head, payload: &[u8]) {
        let Some(b) = payload.get(..4) else {
            return self.fail(ConnError::Code(FRAME_SIZE_ERROR));
        };
        let inc = i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
        if h.stream == 0 {
            if inc == 0 {
                return self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return self.fail(ConnError::Code(FLOW_CONTROL_ERROR));
            }
            for &(_, slot) in &self.ids {
                if let Some(w) = self.wakers.get(slot) {
                    w.poke();
                }
            }
            return;
        }
        let Some(slot) = self.slot_of(h.stream) else {
            if h.stream > self.last_stream {
                self.fail(ConnError::Code(PROTOCOL_ERROR));
            }
            return;
        };
        if inc == 0 {
            return self.reset(slot, PROTOCOL_ERROR);
        }
        let Some(Some(s)) = self.streams.get_mut(slot) else {
            return;
        };
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            return self.reset(slot, FLOW_CONTROL_ERROR);
        }
        if let Some(w) = self.wakers.get(slot) {
            w.poke();
        }
    }

    fn on_reset(&mut self, h: Head, _payload: &[u8]) {
        if h.stream == 0 || h.stream > self.last_stream {
            return self.fail(ConnError::Code(PROTOCOL_ERROR));
        }
        if let Some(slot) = self.slot_of(h.stream) {
            if let Some(Some(s)) = self.streams.get_mut(slot) {
                s.fail_body(super::body::H2BodyError::Reset);
            }
            self.remove(slot);
        }
    }

    /// Connection-level credit for `n` bytes the client may send again, returned with a
    /// WINDOW_UPDATE once half the window is used.
    pub(super) fn credit(&mut self, n: usize) {
        self.recv_unacked += n;
        let window = self.settings.connection_window.max(DEFAULT_WINDOW) as usize;
        if self.recv_unacked >= window / 2 {
            let inc = self.recv_unacked;
            self.recv_unacked = 0;
            self.recv_window += inc as i64;
            self.put_u32(WINDOW_UPDATE, 0, inc as u32);
        }
    }

    /// Ends a stream with RST_STREAM(`code`).
    pub(super) fn reset(&mut self, slot: usize, code: u32) {
        if let Some(Some(s)) = self.streams.get(slot) {
            let id = s.id;
            self.put_u32(RST_STREAM, id, code);
        }
        self.remove(slot);
    }

    pub(super) fn slot_of(&self, id: u32) -> Option<usize> {
        self.ids.iter().find(|(i, _)| *i == id).map(|&(_, s)| s)
    }

    pub(super) fn insert(&mut self, stream: Stream<S::Body>) {
        let id = stream.id;
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.streams.push(None);
                let slot = self.streams.len() - 1;
                if self.wakers.len() <= slot {
                    self.wakers.push(SlotWaker::new(slot, self.wake.clone()));
                }
                slot
            }
        };
        if let Some(s) = self.streams.get_mut(slot) {
            *s = Some(stream);
        }
        self.ids.push((id, slot));
        self.idle_since = None;
        if let Some(w) = self.wakers.get(slot) {
            w.poke();
        }
    }

    /// Removes a stream once both sides are done with it.
    pub(super) fn maybe_remove(&mut self, slot: usize) {
        if let Some(Some(s)) = self.streams.get(slot) {
            if s.remote_done && s.local_done() {
                self.remove(slot);
            }
        }
    }

    pub(super) fn remove(&mut self, slot: usize) {
        let Some(entry) = self.streams.get_mut(slot) else {
            return;
        };
        let Some(s) = entry.take() else {
            return;
        };
        self.ids.retain(|&(i, _)| i != s.id);
        self.free.push(slot);
        if let Some(inbox) = &s.inbox {
            let mut i = super::body::lock(inbox);
            if !i.end && i.error.is_none() {
                i.error = Some(super::body::H2BodyError::Reset);
            }
            i.wake();
        }
        drop(s);
        if self.ids.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    fn poll_streams(&mut self) {
        let mut polled = std::mem::take(&mut self.polled);
        self.wake.take_woken(&mut polled);
        for &slot in &polled {
            if self.wbuf.len() - self.wpos >= HIGH_WATER {
                // Later: the write buffer drains first.
                if let Some(w) = self.wakers.get(slot) {
                    w.clear();
                    w.poke();
                }
                continue;
            }
            self.poll_stream(slot);
        }
        self.polled = polled;
    }

    /// The idle clock and the lingering streams' deadlines; whether one expired.
    fn check_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut expired = false;
        if let Some(since) = self.idle_since {
            if self.ids.is_empty() && self.goaway.is_none() {
                let at = since + self.settings.idle_timeout;
                if at <= now {
                    self.start_goaway();
                    expired = true;
                } else {
                    next = Some(at);
                }
            }
        }
        let mut late = Vec::new();
        for &(_, slot) in &self.ids {
            if let Some(Some(s)) = self.streams.get(slot) {
                if let Some(at) = s.linger_until {
                    if at <= now {
                        late.push(slot);
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
            }
        }
        for slot in late {
            expired = true;
            self.reset(slot, NO_ERROR);
        }
        let Some(at) = next else {
            self.timer = None;
            return expired;
        };
        let deadline = tokio::time::Instant::from_std(at);
        match &mut self.timer {
            Some((armed, sleep)) if *armed == at => {
                if sleep.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    return true;
                }
            }
            _ => {
                let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
                if sleep.as_mut().poll(cx).is_ready() {
                    return true;
                }
                self.timer = Some((at, sleep));
            }
        }
        expired
    }
}

/// What `Stream::deliver` did with a DATA payload.
pub(super) struct Taken {
    pub delivered: bool,
    pub len: usize,
}
