//! The relay of one tunnel: two directions, each a byte copier that follows the frames
//! passing through it, a coarse timer for the idle, lifetime and ping limits, and the close:
//! close frames at the next boundary of each direction, then the sockets half-closed and
//! drained for a moment so the peers read the close before the connection goes.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::flow::{End, Flow, Owed, GOING_AWAY, TOO_BIG};
use super::{CloseReason, Outcome};
use crate::config::model::TunnelSettings;

/// Time the close may take: the close frames reaching a boundary and being written, then
/// the peers closing their ends.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Bytes each side sent behind the switch, read before the relay started: the client's
/// after its request head, the upstream's after its 101 head.
#[derive(Debug, Default)]
pub struct First {
    pub from_client: Bytes,
    pub from_upstream: Bytes,
}

/// Relays between `client` and `upstream` until the tunnel ends, and says how it ended.
/// `going_away` turning `true` closes it (shutdown).
pub async fn run<C, U>(
    client: C,
    upstream: U,
    first: First,
    limits: &TunnelSettings,
    mut going_away: watch::Receiver<bool>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut relay = Relay::new(client, upstream, first, limits);
    let mut stop = pin!(async move {
        if going_away.wait_for(|away| *away).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    poll_fn(|cx| {
        if relay.closing.is_none() && stop.as_mut().poll(cx).is_ready() {
            relay.begin_close(CloseReason::Shutdown);
        }
        relay.poll(cx)
    })
    .await
}

/// What the timer asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    Nothing,
    /// A ping is owed: the directions must be polled again to write it.
    Ping,
    Close(CloseReason),
}

/// The close in progress.
#[derive(Debug, Clone, Copy)]
struct Closing {
    reason: CloseReason,
    deadline: Instant,
    /// Both directions have ended; the sockets are half-closed and drained.
    lingering: bool,
}

struct Relay<C, U> {
    client: C,
    upstream: U,
    /// Client to upstream.
    up: Flow,
    /// Upstream to client.
    down: Flow,
    limits: TunnelSettings,
    started: Instant,
    /// Set when a ping went to the client / the upstream and nothing came back since.
    pinged_client: Option<Instant>,
    pinged_upstream: Option<Instant>,
    /// Who closed first, as far as the frames and the connections tell.
    first_close: Option<CloseReason>,
    closing: Option<Closing>,
    timer: Pin<Box<Sleep>>,
    armed: Instant,
}

impl<C, U> Relay<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    fn new(client: C, upstream: U, first: First, limits: &TunnelSettings) -> Self {
        let now = Instant::now();
        let max = limits.max_message_bytes;
        let mut relay = Relay {
            client,
            upstream,
            up: Flow::new(first.from_client, true, max, now),
            down: Flow::new(first.from_upstream, false, max, now),
            limits: *limits,
            started: now,
            pinged_client: None,
            pinged_upstream: None,
            first_close: None,
            closing: None,
            timer: Box::pin(tokio::time::sleep_until(now)),
            armed: now,
        };
        let next = relay.next_deadline();
        relay.timer.as_mut().reset(next);
        relay.armed = next;
        relay
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        loop {
            let up = self.up.poll(cx, &mut self.client, &mut self.upstream);
            let down = self.down.poll(cx, &mut self.upstream, &mut self.client);
            self.note_closes();
            if let Some(reason) = self.ended_by(up, down) {
                if self.closing.is_none() {
                    self.begin_close(reason);
                    continue;
                }
            }
            if let Some(closing) = self.closing {
                let both_ended = self.up.ended() && self.down.ended();
                if both_ended && !closing.lingering {
                    self.closing = Some(Closing {
                        lingering: true,
                        ..closing
                    });
                }
                let drained = self.closing.is_some_and(|c| c.lingering) && self.linger(cx);
                if drained || Instant::now() >= closing.deadline {
                    return Poll::Ready(self.outcome(closing.reason));
                }
            }
            match self.poll_timer(cx) {
                Fired::Close(reason) if self.closing.is_none() => self.begin_close(reason),
                Fired::Ping => {}
                _ => return Poll::Pending,
            }
        }
    }

    /// Records which side sent the first close frame.
    fn note_closes(&mut self) {
        if self.first_close.is_none() {
            if self.up.frames.closing {
                self.first_close = Some(CloseReason::Client);
            } else if self.down.frames.closing {
                self.first_close = Some(CloseReason::Upstream);
            }
        }
    }

    /// What the ends of the two directions mean for the tunnel, when it must close.
    fn ended_by(&mut self, up: Poll<End>, down: Poll<End>) -> Option<CloseReason> {
        let first = self.first_close;
        let by_side = |side| first.unwrap_or(side);
        match (up, down) {
            (Poll::Ready(End::TooLarge), _) => {
                self.down.owed = Some(Owed::Close(TOO_BIG));
                Some(CloseReason::TooLarge)
            }
            (_, Poll::Ready(End::TooLarge)) => {
                self.up.owed = Some(Owed::Close(TOO_BIG));
                Some(CloseReason::TooLarge)
            }
            (Poll::Ready(End::Failed), _) | (_, Poll::Ready(End::Failed)) => {
                Some(first.unwrap_or(CloseReason::Error))
            }
            // One side closed its connection: the other gets what was owed and then the
            // close grace to end too.
            (Poll::Ready(End::Eof), _) => Some(by_side(CloseReason::Client)),
            (_, Poll::Ready(End::Eof)) => Some(by_side(CloseReason::Upstream)),
            _ => None,
        }
    }

    /// Starts closing: each direction still open owes its destination a close frame
    /// (unless one is owed already), written at its next frame boundary.
    fn begin_close(&mut self, reason: CloseReason) {
        let peer_closed = matches!(reason, CloseReason::Client | CloseReason::Upstream);
        for flow in [&mut self.up, &mut self.down] {
            // When a side closed (its close frame or its connection), the other side gets
            // that close relayed, not one of the gateway's.
            let open = matches!(flow.end, None | Some(End::TooLarge));
            if open && !peer_closed && !matches!(flow.owed, Some(Owed::Close(_))) {
                flow.owed = Some(Owed::Close(GOING_AWAY));
            }
        }
        self.closing = Some(Closing {
            reason,
            deadline: Instant::now() + CLOSE_GRACE,
            lingering: false,
        });
    }

    /// Half-closes both connections and reads what the peers still send, until both have
    /// closed; true then.
    fn linger(&mut self, cx: &mut Context<'_>) -> bool {
        let client = drain(cx, &mut self.client);
        let upstream = drain(cx, &mut self.upstream);
        client && upstream
    }

    /// The earliest limit that applies now, or the tunnel's close deadline.
    fn next_deadline(&self) -> Instant {
        if let Some(c) = self.closing {
            return c.deadline;
        }
        let active = self.up.active.max(self.down.active);
        let mut next = active + self.limits.idle_timeout;
        if let Some(life) = self.limits.max_lifetime {
            next = next.min(self.started + life);
        }
        if let Some(every) = self.limits.ping_interval {
            for (heard, pinged) in [
                (self.down.heard, self.pinged_upstream),
                (self.up.heard, self.pinged_client),
            ] {
                next = next.min(match pinged {
                    Some(at) => at + every,
                    None => heard + every,
                });
            }
        }
        next
    }

    /// Polls the timer; when it fires, what the limit that was reached asks for.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Fired {
        loop {
            let next = self.next_deadline();
            if next < self.armed || self.timer.is_elapsed() {
                self.timer.as_mut().reset(next);
                self.armed = next;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Fired::Nothing;
            }
            let now = Instant::now();
            if self.closing.is_some() {
                // The close deadline: `poll` sees it on its next pass.
                cx.waker().wake_by_ref();
                return Fired::Nothing;
            }
            let active = self.up.active.max(self.down.active);
            if now >= active + self.limits.idle_timeout {
                return Fired::Close(CloseReason::Idle);
            }
            if self
                .limits
                .max_lifetime
                .is_some_and(|l| now >= self.started + l)
            {
                return Fired::Close(CloseReason::Lifetime);
            }
            if let Some(every) = self.limits.ping_interval {
                let fired = self.check_pings(now, every);
                if fired != Fired::Nothing {
                    return fired;
                }
            }
        }
    }

    /// Pings a side silent for `every`; a side silent for `every` after its ping is gone.
    fn check_pings(&mut self, now: Instant, every: Duration) -> Fired {
        let upstream = ping_side(
            now,
            every,
            &mut self.pinged_upstream,
            &mut self.up,
            &mut self.down,
        );
        if let Fired::Close(_) = upstream {
            return upstream;
        }
        let client = ping_side(
            now,
            every,
            &mut self.pinged_client,
            &mut self.down,
            &mut self.up,
        );
        match (upstream, client) {
            (_, Fired::Close(_)) | (_, Fired::Ping) => client,
            _ => upstream,
        }
    }

    fn outcome(&mut self, reason: CloseReason) -> Outcome {
        self.up.release();
        self.down.release();
        Outcome {
            reason,
            to_upstream: self.up.bytes,
            to_client: self.down.bytes,
        }
    }
}

/// The ping check of one side: `towards` writes to it, `back` reads from it.
fn ping_side(
    now: Instant,
    every: Duration,
    pinged: &mut Option<Instant>,
    towards: &mut Flow,
    back: &mut Flow,
) -> Fired {
    let heard = back.heard;
    match *pinged {
        Some(at) if heard > at => *pinged = None,
        Some(at) if now >= at + every => return Fired::Close(CloseReason::PingTimeout),
        Some(_) => {}
        None if now >= heard + every && towards.end.is_none() => {
            towards.owed.get_or_insert(Owed::Ping);
            back.swallow_pong = true;
            *pinged = Some(now);
            return Fired::Ping;
        }
        None => {}
    }
    Fired::Nothing
}

/// Half-closes `io` and reads what its peer still sends, dropping it; true once the peer
/// has closed (or the connection failed).
fn drain<S: AsyncRead + AsyncWrite + Unpin>(cx: &mut Context<'_>, io: &mut S) -> bool {
    if Pin::new(&mut *io).poll_shutdown(cx).is_pending() {
        return false;
    }
    let mut scratch = [0u8; 512];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A relay between two in-memory pipes; returns the far ends (client, upstream), the
    /// shutdown switch and the relay's task.
    fn relay(
        limits: TunnelSettings,
    ) -> (
        DuplexStream,
        DuplexStream,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Outcome>,
    ) {
        let (client, client_gw) = tokio::io::duplex(64 * 1024);
        let (upstream, upstream_gw) = tokio::io::duplex(64 * 1024);
        let (away, going_away) = watch::channel(false);
        let task = tokio::spawn(async move {
            run(
                client_gw,
                upstream_gw,
                First::default(),
                &limits,
                going_away,
            )
            .await
        });
        (client, upstream, away, task)
    }

    /// Reads exactly `n` bytes.
    async fn read_n(io: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(2), io.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn a_close_waits_for_the_frame_in_flight_to_end() {
        let (mut client, mut upstream, away, task) = relay(TunnelSettings::default());
        // A masked text frame of 10 bytes, of which the first 4 arrive.
        let frame = [
            0x81, 0x8a, 0, 0, 0, 0, b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9',
        ];
        client.write_all(&frame[..10]).await.unwrap();
        assert_eq!(read_n(&mut upstream, 10).await, frame[..10]);
        away.send_replace(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The client is at a boundary (nothing came from the upstream): its close is there.
        assert_eq!(read_n(&mut client, 2).await, [0x88, 12]);
        client.write_all(&frame[10..]).await.unwrap();
        let rest = read_n(&mut upstream, 6 + 2 + 4 + 12).await;
        assert_eq!(rest[..6], frame[10..], "the frame ends first");
        assert_eq!(rest[6..8], [0x88, 0x80 | 12], "then a masked close");
        drop((client, upstream));
        let outcome = task.await.unwrap();
        assert_eq!(outcome.reason, CloseReason::Shutdown);
        assert_eq!(outcome.to_upstream, 16);
    }

    #[tokio::test]
    async fn bytes_split_across_reads_keep_the_frames_in_step() {
        let limits = TunnelSettings {
            max_message_bytes: Some(5),
            ..TunnelSettings::default()
        };
        let (mut client, mut upstream, _away, task) = relay(limits);
        // Two 5-byte frames, the second header split across writes, then a 6-byte one.
        let ok = [0x82, 0x85, 0, 0, 0, 0, 1, 2, 3, 4, 5];
        client.write_all(&ok).await.unwrap();
        client.write_all(&ok[..1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&ok[1..]).await.unwrap();
        assert_eq!(read_n(&mut upstream, 22).await, [ok, ok].concat());
        client
            .write_all(&[0x82, 0x86, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
            .await
            .unwrap();
        let close = read_n(&mut client, 4).await;
        assert_eq!(close, [0x88, 17, 0x03, 0xf1], "1009 to the sender");
        let to_upstream = read_n(&mut upstream, 2).await;
        assert_eq!(to_upstream, [0x88, 0x80 | 12], "1001 to the other side");
        drop((client, upstream));
        let outcome = task.await.unwrap();
        assert_eq!(outcome.reason, CloseReason::TooLarge);
        assert_eq!(outcome.to_upstream, 22);
    }
}
