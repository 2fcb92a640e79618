//! The streams of one downstream HTTP/2 connection, run inside the connection's own task:
//! the executor hyper's HTTP/2 server hands each stream to, and the future that drives the
//! connection and its streams together.
//!
//! Why: with a spawning executor every stream costs a task of its own (allocated, scheduled,
//! woken through the runtime's queue, freed), and every response it sends wakes the
//! connection's task from another one. Here a stream is polled where the connection is: the
//! frames it queues are written in the same turn, and a stream's wake-up wakes the one task,
//! which polls only the woken streams. A stream costs its box and nothing more: it takes a
//! free slot, whose waker is reused by every stream the slot holds. Each worker runs on one
//! thread, so no parallelism is given up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::{waker_ref, ArcWake, AtomicWaker};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds of streams then connection in one poll before yielding to the runtime.
const ROUNDS: usize = 4;

/// The executor of one connection: queues what hyper hands it for [`Driven`] to run.
#[derive(Clone, Default)]
pub struct StreamExec(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Streams handed over and not yet given a slot.
    new: Mutex<Vec<Stream>>,
    /// Slots whose stream was woken since it was last polled.
    woken: Mutex<Vec<usize>>,
    /// Whether `Driven` is being polled (it looks at both queues again before it returns).
    polling: AtomicBool,
    waker: AtomicWaker,
}

/// The waker of one slot, reused by every stream the slot holds: no allocation per stream.
/// A late wake-up meant for an earlier stream only polls the slot's current one once more.
struct SlotWaker {
    slot: usize,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

struct Slot {
    stream: Option<Stream>,
    waker: Arc<SlotWaker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// hyper hands streams over, and streams wake each other, mostly while `Driven` is
    /// polled, which looks at the queues before it returns: a wake-up then would only poll
    /// again.
    fn wake(&self) {
        if !self.polling.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        lock(&self.0.new).push(Box::pin(fut));
        self.0.wake();
    }
}

impl ArcWake for SlotWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::SeqCst) {
            lock(&arc_self.shared.woken).push(arc_self.slot);
            arc_self.shared.wake();
        }
    }
}

/// Drives a connection future and the streams it handed to its [`StreamExec`]; ready with
/// the connection's output once the connection has ended and every stream has finished.
pub struct Driven<C: Future> {
    conn: Pin<Box<C>>,
    done: Option<C::Output>,
    exec: StreamExec,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    /// The woken slots being polled (kept for its allocation).
    polled: Vec<usize>,
}

// Nothing in it is pinned in place: the connection and the streams are boxed.
impl<C: Future> Unpin for Driven<C> {}

impl<C: Future> Driven<C> {
    pub fn new(conn: Pin<Box<C>>, exec: StreamExec) -> Self {
        Driven {
            conn,
            done: None,
            exec,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            polled: Vec::new(),
        }
    }

    /// The connection, to ask it for a graceful shutdown.
    pub fn conn(&mut self) -> Pin<&mut C> {
        self.conn.as_mut()
    }

    /// Gives the streams handed over since the last call a slot each, woken.
    fn admit(&mut self) {
        let shared = &self.exec.0;
        let mut new = lock(&shared.new);
        if new.is_empty() {
            return;
        }
        let mut woken = lock(&shared.woken);
        for stream in new.drain(..) {
            let slot = match self.free.pop() {
                Some(i) => i,
                None => {
                    let waker = Arc::new(SlotWaker {
                        slot: self.slots.len(),
                        queued: AtomicBool::new(false),
                        shared: shared.clone(),
                    });
                    self.slots.push(Slot {
                        stream: None,
                        waker,
                    });
                    self.slots.len() - 1
                }
            };
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            s.stream = Some(stream);
            s.waker.queued.store(true, Ordering::SeqCst);
            woken.push(slot);
            self.live += 1;
        }
    }

    /// Polls each stream woken since the last call once.
    fn poll_woken(&mut self) {
        std::mem::swap(&mut *lock(&self.exec.0.woken), &mut self.polled);
        for &i in &self.polled {
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            slot.waker.queued.store(false, Ordering::SeqCst);
            let Some(stream) = slot.stream.as_mut() else {
                continue;
            };
            let waker = waker_ref(&slot.waker);
            if stream
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                slot.stream = None;
                self.free.push(i);
                self.live -= 1;
            }
        }
        self.polled.clear();
    }

    fn queued(&self) -> bool {
        let shared = &self.exec.0;
        !lock(&shared.new).is_empty() || !lock(&shared.woken).is_empty()
    }
}

impl<C: Future> Future for Driven<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        this.exec.0.waker.register(cx.waker());
        this.exec.0.polling.store(true, Ordering::SeqCst);
        // Streams first (their responses queue frames), then the connection (which writes
        // them, reads what came, and may hand over new streams or wake waiting ones): again
        // while it does.
        for _ in 0..ROUNDS {
            this.admit();
            this.poll_woken();
            if this.done.is_none() {
                if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
                    this.done = Some(out);
                }
            }
            if !this.queued() {
                break;
            }
        }
        this.exec.0.polling.store(false, Ordering::SeqCst);
        // What came in the last round (or from elsewhere meanwhile) runs in the next poll.
        if this.queued() {
            cx.waker().wake_by_ref();
        }
        if this.live == 0 {
            if let Some(out) = this.done.take() {
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    }
}

impl<C: Future> Drop for Driven<C> {
    /// The streams not yet admitted hold the executor, and with it the queue they are in:
    /// they go now. Admitted ones go with the slots.
    fn drop(&mut self) {
        let new = std::mem::take(&mut *lock(&self.exec.0.new));
        drop(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn streams_handed_over_run_to_their_end_with_the_connection() {
        let exec = StreamExec::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let conn = {
            let (exec, ran) = (exec.clone(), ran.clone());
            async move {
                for _ in 0..3 {
                    let ran = ran.clone();
                    exec.execute(async move {
                        tokio::task::yield_now().await;
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                }
                let _ = rx.await;
                7
            }
        };
        let driven = Driven::new(Box::pin(conn), exec.clone());
        // A stream handed over from outside a poll wakes the driver.
        let late = {
            let ran = ran.clone();
            async move {
                tokio::task::yield_now().await;
                exec.execute(async move {
                    ran.fetch_add(10, Ordering::Relaxed);
                });
                let _ = tx.send(());
            }
        };
        let (out, ()) = tokio::join!(driven, late);
        assert_eq!(out, 7);
        assert_eq!(ran.load(Ordering::Relaxed), 13);
    }

    #[tokio::test]
    async fn a_finished_stream_gives_its_slot_to_the_next() {
        let exec = StreamExec::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let conn = {
            let (exec, ran) = (exec.clone(), ran.clone());
            async move {
                for _ in 0..50 {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let ran = ran.clone();
                    exec.execute(async move {
                        let _ = rx.await;
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                    exec.execute(async move {
                        tokio::task::yield_now().await;
                        let _ = tx.send(());
                    });
                    // The pair finishes before the next is handed over.
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        };
        let mut driven = Driven::new(Box::pin(conn), exec);
        (&mut driven).await;
        assert_eq!(ran.load(Ordering::Relaxed), 50);
        assert_eq!(driven.live, 0);
        assert!(driven.slots.len() <= 4, "{} slots", driven.slots.len());
    }
}
