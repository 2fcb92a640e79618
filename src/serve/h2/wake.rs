//! Wake-ups of the streams of a native HTTP/2 connection, all polled in the connection's
//! task: one waker per slot of the stream slab, reused by every stream the slot holds (no
//! allocation per stream), queueing its slot and waking the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::task::{ArcWake, AtomicWaker};

#[derive(Default)]
pub struct WakeShared {
    woken: Mutex<Vec<usize>>,
    pub conn: AtomicWaker,
}

pub struct SlotWaker {
    slot: usize,
    queued: AtomicBool,
    shared: Arc<WakeShared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WakeShared {
    /// Moves the woken slots into `into` (emptied first).
    pub fn take_woken(&self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(&mut *lock(&self.woken), into);
    }

    pub fn any_woken(&self) -> bool {
        !lock(&self.woken).is_empty()
    }
}

impl SlotWaker {
    pub fn new(slot: usize, shared: Arc<WakeShared>) -> Arc<Self> {
        Arc::new(SlotWaker {
            slot,
            queued: AtomicBool::new(false),
            shared,
        })
    }

    /// Queues the slot's stream for a poll.
    pub fn poke(self: &Arc<Self>) {
        ArcWake::wake_by_ref(self);
    }

    /// Called before the slot's stream is polled: a wake-up from now on queues it again.
    pub fn clear(&self) {
        self.queued.store(false, Ordering::SeqCst);
    }
}

impl ArcWake for SlotWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::SeqCst) {
            lock(&arc_self.shared.woken).push(arc_self.slot);
            arc_self.shared.conn.wake();
        }
    }
}
