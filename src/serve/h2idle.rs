//! The idle clock of one downstream HTTP/2 connection: counts its open streams (from the
//! request reaching the service until its response body is dropped) and tells how long
//! the connection has had none, so that the connection can be closed with GOAWAY after
//! the listener's idle timeout. hyper's HTTP/2 server has keep-alive PINGs but no idle
//! timeout of its own.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The streams of one connection; clones share the count.
#[derive(Clone, Debug)]
pub struct Streams(Arc<Counts>);

/// One open stream; dropping it closes it.
#[derive(Debug)]
pub struct OpenStream(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    start: Instant,
    open: AtomicUsize,
    /// When the last stream closed, in milliseconds since `start`.
    idle_since_ms: AtomicU64,
}

pin_project! {
    /// A response body that keeps its stream open until it is dropped.
    pub struct Counted<B> {
        #[pin]
        body: B,
        stream: OpenStream,
    }
}

impl Streams {
    /// A connection just opened: idle from now.
    pub fn new() -> Self {
        Streams(Arc::new(Counts {
            start: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }))
    }

    pub fn open(&self) -> OpenStream {
        self.0.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.0.clone())
    }

    /// How long until the connection has been idle for `timeout`, if nothing opens
    /// meanwhile: zero once it has; `timeout` while a stream is open (ask again then).
    pub fn until_idle(&self, timeout: Duration, now: Instant) -> Duration {
        if self.0.open.load(Ordering::Relaxed) > 0 {
            return timeout;
        }
        let since = Duration::from_millis(self.0.idle_since_ms.load(Ordering::Relaxed));
        let idle = now.saturating_duration_since(self.0.start + since);
        timeout.saturating_sub(idle)
    }
}

impl Default for Streams {
    fn default() -> Self {
        Streams::new()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        // The time first: once the count reads zero, it must be the right one.
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> Counted<B> {
    pub fn new(body: B, stream: OpenStream) -> Self {
        Counted { body, stream }
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn new_connection_is_idle_from_its_start() {
        let streams = Streams::new();
        let later = Instant::now() + Duration::from_secs(4);
        let left = streams.until_idle(TIMEOUT, later);
        assert!(left <= Duration::from_secs(6), "{left:?}");
        assert_eq!(streams.until_idle(TIMEOUT, later + TIMEOUT), Duration::ZERO);
    }

    #[test]
    fn connection_with_an_open_stream_is_never_idle() {
        let streams = Streams::new();
        let _open = streams.open();
        let much_later = Instant::now() + 10 * TIMEOUT;
        assert_eq!(streams.until_idle(TIMEOUT, much_later), TIMEOUT);
    }

    #[test]
    fn idle_time_counts_from_the_last_stream_closing() {
        let streams = Streams::new();
        let (a, b) = (streams.open(), streams.open());
        drop(a);
        let much_later = Instant::now() + 10 * TIMEOUT;
        assert_eq!(streams.until_idle(TIMEOUT, much_later), TIMEOUT);
        drop(b);
        let now = Instant::now();
        assert!(streams.until_idle(TIMEOUT, now) > TIMEOUT - Duration::from_secs(1));
        assert_eq!(
            streams.until_idle(TIMEOUT, now + TIMEOUT + Duration::from_millis(2)),
            Duration::ZERO
        );
    }
}
