//! Streaming fill of one cache entry: the leader's upstream response is shared with the
//! requests that coalesced behind it (followers) while it arrives, and stored at its end.
//!
//! One buffer per fill: the leader appends body chunks (`Bytes`, shared, never copied per
//! follower); each follower keeps a cursor into it. Followers wait on wakers registered in
//! the buffer's state, which lets [`FillBody`] implement `Stream` and `http_body::Body`
//! directly, without a boxed future per poll.
//!
//! While the fill may still be stored, every chunk is kept (bounded by the object size
//! limit). Once it will not be stored (too large, purged, taken over), it is detached from
//! its key so no new follower joins, and chunks every follower has read are released; a
//! follower more than the object limit behind the leader fails with [`FillError::Lagged`]
//! rather than holding unbounded memory.
//!
//! Lock order: a shard lock may be held while taking a fill's lock, never the reverse.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame};

use super::{Admission, Digest, Entry, Inner};
use crate::cache::freshness::StoredMeta;

/// The response head a fill publishes to its followers.
#[derive(Debug, PartialEq)]
pub struct FillHead {
    pub meta: StoredMeta,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub surrogate_keys: Vec<Box<str>>,
}

/// Why a follower body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("upstream response ended after {received} body bytes, before it was complete")]
    Aborted { received: usize },
    #[error("fell more than {limit} bytes behind the upstream response")]
    Lagged { limit: usize },
}

/// Why a follower must forward its own request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginReason {
    /// No response head within the lock timeout.
    LockTimeout,
    /// The leader gave up before a response head (not storable, upstream error, gone).
    Abandoned,
    /// The leader's response varies on fields whose values differ in this request.
    VaryMismatch,
}

/// What a follower gets.
#[derive(Debug)]
pub enum FollowOutcome {
    /// The leader's response: send `head`, then stream `body`.
    Stream { head: Arc<FillHead>, body: FillBody },
    /// Forward the request upstream (uncached), or look up again.
    GoToOrigin(OriginReason),
}

/// The request that fetches a missing entry. Call [`FillLeader::start`] with a storable
/// response head, [`FillLeader::push`] per body chunk, then [`FillLeader::finish`]; or
/// [`FillLeader::abandon`]. Dropping it unfinished abandons the fill.
#[derive(Debug)]
pub struct FillLeader {
    store: Arc<Inner>,
    digest: Digest,
    fill: Arc<Fill>,
    done: bool,
}

/// A request waiting for another request's response; see [`FillFollower::head`].
#[derive(Debug)]
pub struct FillFollower {
    reader: Reader,
    request: HeaderMap,
    deadline: Instant,
}

/// A follower's view of the leader's body, chunk by chunk as it arrives.
#[derive(Debug)]
pub struct FillBody {
    reader: Reader,
    done: bool,
}

/// The shared state of one fill.
pub(super) struct Fill {
    url: Box<str>,
    /// Object size limit: beyond it the fill is not stored, and lagging readers fail.
    limit: usize,
    state: Mutex<FillState>,
}

/// A registered follower cursor; unregisters on drop.
#[derive(Debug)]
pub(super) struct Reader {
    fill: Arc<Fill>,
    slot: usize,
}

#[derive(Debug)]
struct FillState {
    head: Option<Arc<FillHead>>,
    chunks: VecDeque<Bytes>,
    /// Index of `chunks[0]` among all chunks pushed.
    base: usize,
    /// Bytes in `chunks`.
    retained: usize,
    body_len: usize,
    /// `None` while the fill may still be stored.
    outcome: Option<Admission>,
    /// Whether the head's surrogate keys are in the shard index.
    indexed: bool,
    end: End,
    /// Next chunk index per follower; `None` marks a free slot.
    readers: Vec<Option<usize>>,
    wakers: Vec<Waker>,
    created: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Finished,
    Aborted,
}

impl FillLeader {
    pub(super) fn new(store: Arc<Inner>, digest: Digest, fill: Arc<Fill>) -> Self {
        Self {
            store,
            digest,
            fill,
            done: false,
        }
    }

    /// Publishes the response head to followers. Call once, before any body chunk.
    pub fn start(
        &mut self,
        meta: StoredMeta,
        status: StatusCode,
        headers: HeaderMap,
        surrogate_keys: Vec<Box<str>>,
    ) {
        let head = Arc::new(FillHead {
            meta,
            status,
            headers,
            surrogate_keys,
        });
        self.store
            .shard(&self.digest)
            .start_fill(&self.digest, &self.fill, head);
    }

    /// Appends a body chunk for followers and the stored entry.
    pub fn push(&mut self, chunk: Bytes) {
        if self.fill.push(chunk) {
            self.store.shard(&self.digest).detach_fill(
                &self.digest,
                &self.fill,
                Admission::TooLarge,
            );
        }
    }

    /// Whether the response will still be stored (false once too large or purged); when
    /// false and nobody follows, the caller may stop pushing.
    pub fn is_storing(&self) -> bool {
        self.fill.is_kept()
    }

    /// Ends the body and stores the response, unless it can no longer be stored.
    pub fn finish(mut self) -> Admission {
        self.done = true;
        let Some((head, chunks, len)) = self.fill.finish() else {
            let why = self.fill.outcome().unwrap_or(Admission::Abandoned);
            if why == Admission::Abandoned || why == Admission::TooLarge {
                self.store
                    .shard(&self.digest)
                    .abandon_fill(&self.digest, &self.fill, why);
            }
            return why;
        };
        // Copied once, outside every lock (see `Entry::body`).
        let mut body = BytesMut::with_capacity(len);
        for chunk in &chunks {
            body.extend_from_slice(chunk);
        }
        let entry = Entry {
            meta: head.meta.clone(),
            status: head.status,
            headers: head.headers.clone(),
            body: body.freeze(),
            surrogate_keys: head.surrogate_keys.clone(),
            url: self.fill.url.clone(),
        };
        self.store
            .shard(&self.digest)
            .commit(&self.digest, &self.fill, entry)
    }

    /// Gives up: followers without a head go upstream; followers streaming the body see
    /// it end with [`FillError::Aborted`]. Nothing is stored.
    pub fn abandon(mut self) {
        self.abandon_fill();
    }

    fn abandon_fill(&mut self) {
        self.done = true;
        self.fill.abort();
        self.store
            .shard(&self.digest)
            .abandon_fill(&self.digest, &self.fill, Admission::Abandoned);
    }
}

impl Drop for FillLeader {
    fn drop(&mut self) {
        if !self.done {
            self.abandon_fill();
        }
    }
}

impl FillFollower {
    pub(super) fn new(reader: Reader, request: HeaderMap, deadline: Instant) -> Self {
        Self {
            reader,
            request,
            deadline,
        }
    }

    /// Waits for the leader's response head, at most the lock timeout from the lookup.
    pub async fn head(self) -> FollowOutcome {
        let Self {
            reader,
            request,
            deadline,
        } = self;
        let deadline = tokio::time::Instant::from_std(deadline);
        let waited =
            tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| reader.poll_head(cx)))
                .await;
        match waited {
            Err(_) => FollowOutcome::GoToOrigin(OriginReason::LockTimeout),
            Ok(None) => FollowOutcome::GoToOrigin(OriginReason::Abandoned),
            Ok(Some(head)) if head.meta.vary.matches(&request) => FollowOutcome::Stream {
                head,
                body: FillBody {
                    reader,
                    done: false,
                },
            },
            Ok(Some(_)) => FollowOutcome::GoToOrigin(OriginReason::VaryMismatch),
        }
    }
}

impl FillBody {
    /// The next chunk; `None` at the end of a complete body.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, FillError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.reader.poll_chunk(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done = true;
        }
        polled
    }
}

impl futures_util::Stream for FillBody {
    type Item = Result<Bytes, FillError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

impl Body for FillBody {
    type Data = Bytes;
    type Error = FillError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FillError>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl std::fmt::Debug for Fill {
    /// Without the buffered body, which may be large and is not text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Fill")
            .field("url", &self.url)
            .field("body_len", &state.body_len)
            .field("outcome", &state.outcome)
            .field("end", &state.end)
            .finish_non_exhaustive()
    }
}

impl Fill {
    pub(super) fn new(url: Box<str>, limit: usize) -> Self {
        Self {
            url,
            limit,
            state: Mutex::new(FillState {
                head: None,
                chunks: VecDeque::new(),
                base: 0,
                retained: 0,
                body_len: 0,
                outcome: None,
                indexed: false,
                end: End::Open,
                readers: Vec::new(),
                wakers: Vec::new(),
                created: Instant::now(),
            }),
        }
    }

    pub(super) fn is_kept(&self) -> bool {
        self.lock().outcome.is_none()
    }

    pub(super) fn outcome(&self) -> Option<Admission> {
        self.lock().outcome
    }

    pub(super) fn head(&self) -> Option<Arc<FillHead>> {
        self.lock().head.clone()
    }

    pub(super) fn set_head(&self, head: Arc<FillHead>, indexed: bool) {
        let mut state = self.lock();
        if state.head.is_some() || state.end != End::Open {
            debug_assert!(state.head.is_none(), "fill head set twice");
            return;
        }
        state.head = Some(head);
        state.indexed = indexed;
        state.wake();
    }

    /// Appends a chunk; true when this chunk made the fill too large to store.
    fn push(&self, chunk: Bytes) -> bool {
        let mut state = self.lock();
        if state.end != End::Open || state.head.is_none() {
            debug_assert!(state.head.is_some(), "body chunk pushed before the head");
            return false;
        }
        state.body_len += chunk.len();
        state.retained += chunk.len();
        state.chunks.push_back(chunk);
        let too_large = state.outcome.is_none() && state.body_len > self.limit;
        if too_large {
            state.outcome = Some(Admission::TooLarge);
        }
        if state.outcome.is_some() {
            state.trim(self.limit);
        }
        state.wake();
        too_large
    }

    /// Ends the body; the head and chunks to store, unless the fill is not to be stored.
    fn finish(&self) -> Option<(Arc<FillHead>, Vec<Bytes>, usize)> {
        let mut state = self.lock();
        if state.end != End::Open {
            return None;
        }
        let Some(head) = state.head.clone() else {
            state.end = End::Aborted;
            state.outcome.get_or_insert(Admission::Abandoned);
            state.wake();
            return None;
        };
        state.end = End::Finished;
        state.wake();
        if state.outcome.is_some() {
            return None;
        }
        Some((head, state.chunks.iter().cloned().collect(), state.body_len))
    }

    fn abort(&self) {
        let mut state = self.lock();
        if state.end == End::Open {
            state.end = End::Aborted;
            state.outcome.get_or_insert(Admission::Abandoned);
            state.wake();
        }
    }

    /// Marks the fill as not stored (keeps the first reason). Returns the head when its
    /// surrogate keys were indexed, for the caller to unindex.
    pub(super) fn drop_storage(&self, why: Admission) -> Option<Arc<FillHead>> {
        let mut state = self.lock();
        state.outcome.get_or_insert(why);
        state.trim(self.limit);
        if std::mem::take(&mut state.indexed) {
            state.head.clone()
        } else {
            None
        }
    }

    fn lock(&self) -> MutexGuard<'_, FillState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reader {
    /// Registers a follower, unless a newcomer could not get the whole response from this
    /// fill: it will not be stored, was aborted, or has waited `lock_timeout` for its head.
    pub(super) fn join(fill: &Arc<Fill>, lock_timeout: Duration) -> Option<Self> {
        let mut state = fill.lock();
        let stuck = state.head.is_none() && state.created.elapsed() >= lock_timeout;
        if state.outcome.is_some() || state.end == End::Aborted || stuck {
            return None;
        }
        debug_assert_eq!(state.base, 0, "a fill that may be stored keeps every chunk");
        let slot = match state.readers.iter().position(Option::is_none) {
            Some(free) => {
                state.readers[free] = Some(0);
                free
            }
            None => {
                state.readers.push(Some(0));
                state.readers.len() - 1
            }
        };
        Some(Self {
            fill: Arc::clone(fill),
            slot,
        })
    }

    /// The head once published; `None` if the fill ended without one.
    fn poll_head(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<FillHead>>> {
        let mut state = self.fill.lock();
        if let Some(head) = &state.head {
            return Poll::Ready(Some(Arc::clone(head)));
        }
        if state.end != End::Open {
            return Poll::Ready(None);
        }
        state.register(cx.waker());
        Poll::Pending
    }

    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, FillError>>> {
        let mut state = self.fill.lock();
        let Some(cursor) = state.readers.get(self.slot).copied().flatten() else {
            debug_assert!(false, "reader slot {} not registered", self.slot);
            return Poll::Ready(None);
        };
        if cursor < state.base {
            return Poll::Ready(Some(Err(FillError::Lagged {
                limit: self.fill.limit,
            })));
        }
        if let Some(chunk) = state.chunks.get(cursor - state.base).cloned() {
            state.readers[self.slot] = Some(cursor + 1);
            if state.outcome.is_some() {
                state.trim(self.fill.limit);
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match state.end {
            End::Finished => Poll::Ready(None),
            End::Aborted => Poll::Ready(Some(Err(FillError::Aborted {
                received: state.body_len,
            }))),
            End::Open => {
                state.register(cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.fill.lock();
        if let Some(cursor) = state.readers.get_mut(self.slot) {
            *cursor = None;
        }
        if state.outcome.is_some() {
            state.trim(self.fill.limit);
        }
    }
}

impl FillState {
    /// Releases chunks every reader has passed, then the oldest ones beyond `limit` bytes
    /// (their laggards fail). Only for fills that will not be stored.
    fn trim(&mut self, limit: usize) {
        let end = self.base + self.chunks.len();
        let oldest = self.readers.iter().flatten().copied().min().unwrap_or(end);
        while self.base < oldest || (self.retained > limit && self.chunks.len() > 1) {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.retained -= chunk.len();
            self.base += 1;
        }
    }

    fn register(&mut self, waker: &Waker) {
        if !self.wakers.iter().any(|known| known.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }

    /// Wakes every waiting reader. Called under the lock: a woken task that polls at once
    /// just waits for the lock, and no wake-up can be lost between check and register.
    fn wake(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}
