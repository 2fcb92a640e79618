//! Coarse time limits for the request path, on one wheel per worker thread.
//!
//! An upstream attempt's time limit is set on every request and almost never reached, and a
//! few milliseconds late is fine when it is. tokio's timer is exact and general, and pays for
//! it on every request: a driver lock and a hierarchical wheel insert when the limit is
//! armed, the same again when it is cancelled. Here, arming is a slot in a slab and a push on
//! a bucket, cancelling is freeing the slot (a stale bucket entry is skipped when its bucket
//! comes round). One task per wheel ticks every [`TICK`] while limits are armed, wakes the
//! expired ones, and ends when none is left.
//!
//! The wheel is found through the thread that arms a limit, and each limit holds its wheel,
//! so a task that moves between threads (a multi-threaded runtime) still cancels on the
//! right wheel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Resolution: a limit ends at the first tick at or after it.
pub const TICK: Duration = Duration::from_millis(4);
/// Buckets on the wheel: one revolution is about a second; longer limits go round again.
const BUCKETS: usize = 256;

/// The time limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("time limit reached")]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// A future with a time limit: see [`timeout`].
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        deadline: Instant,
        entry: Option<Entry>,
    }
}

/// Seconds since the Unix epoch, now (0 for a clock set before it).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch, now (0 for a clock set before it).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `inner` for at most `limit` (rounded up to the next [`TICK`]). The limit is armed
/// only if `inner` is not ready on its first poll.
pub fn timeout<F: Future>(limit: Duration, inner: F) -> Timeout<F> {
    timeout_at(Instant::now() + limit, inner)
}

/// Runs `inner` until `deadline` (rounded up to the next [`TICK`]; one already past ends at
/// the next tick).
pub fn timeout_at<F: Future>(deadline: Instant, inner: F) -> Timeout<F> {
    Timeout {
        inner,
        deadline,
        entry: None,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.entry {
            Some(entry) => {
                if entry.fired(cx.waker()) {
                    return Poll::Ready(Err(Elapsed));
                }
            }
            None => *this.entry = Some(Entry::arm(*this.deadline, cx.waker())),
        }
        Poll::Pending
    }
}

thread_local! {
    static WHEEL: Arc<Wheel> = Arc::new(Wheel::new());
}

struct Wheel {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Tick 0.
    origin: Instant,
    /// The last tick whose bucket was processed.
    now_tick: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Per bucket, `(slot, generation)` of the limits armed for a tick that falls in it.
    buckets: Vec<Vec<(u32, u32)>>,
    armed: usize,
    /// A tick task is running for this wheel.
    driven: bool,
    /// Which task: the one that ends clears `driven` only if it is still the current one.
    driver: u64,
}

struct Slot {
    generation: u32,
    tick: u64,
    state: State,
}

enum State {
    Free,
    Armed(Waker),
    Fired,
}

/// One armed limit; dropping it cancels the limit.
struct Entry {
    wheel: Arc<Wheel>,
    slot: u32,
}

impl Entry {
    fn arm(deadline: Instant, waker: &Waker) -> Entry {
        // A thread being torn down has no wheel left: a wheel of its own still works.
        let wheel = WHEEL
            .try_with(Arc::clone)
            .unwrap_or_else(|_| Arc::new(Wheel::new()));
        let (slot, new_driver) = {
            let mut w = wheel.lock();
            let new_driver = (!w.driven).then(|| {
                // Nothing was processed while no task ran: the wheel starts from now.
                w.now_tick = w.tick_of(Instant::now());
                w.driven = true;
                w.driver = w.driver.wrapping_add(1);
                w.driver
            });
            let tick = w.tick_of(deadline).max(w.now_tick + 1);
            (w.insert(tick, waker.clone()), new_driver)
        };
        if let Some(id) = new_driver {
            tokio::spawn(drive(Driver {
                wheel: wheel.clone(),
                id,
            }));
        }
        Entry { wheel, slot }
    }

    /// True once the limit has run out; otherwise `waker` is the one to wake then.
    fn fired(&self, waker: &Waker) -> bool {
        let mut w = self.wheel.lock();
        match &mut w.slots[self.slot as usize].state {
            State::Armed(current) => {
                if !current.will_wake(waker) {
                    current.clone_from(waker);
                }
                false
            }
            State::Fired | State::Free => true,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut w = self.wheel.lock();
        let slot = &mut w.slots[self.slot as usize];
        let was = std::mem::replace(&mut slot.state, State::Free);
        if matches!(was, State::Armed(_)) {
            w.armed -= 1;
        }
        w.free.push(self.slot);
    }
}

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            inner: Mutex::new(Inner {
                origin: Instant::now(),
                now_tick: 0,
                slots: Vec::new(),
                free: Vec::new(),
                buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
                armed: 0,
                driven: false,
                driver: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// The tick at or after `t`.
    fn tick_of(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.origin).as_nanos();
        let tick = TICK.as_nanos();
        u64::try_from(nanos.div_ceil(tick)).unwrap_or(u64::MAX)
    }

    fn insert(&mut self, tick: u64, waker: Waker) -> u32 {
        let state = State::Armed(waker);
        let slot = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.generation = s.generation.wrapping_add(1);
                s.tick = tick;
                s.state = state;
                i
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    tick,
                    state,
                });
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.slots[slot as usize].generation;
        self.buckets[bucket_of(tick)].push((slot, generation));
        self.armed += 1;
        slot
    }

    /// Fires every limit whose tick is at or before `target`; returns their wakers.
    fn advance(&mut self, target: u64, fired: &mut Vec<Waker>) {
        let ticks = target.saturating_sub(self.now_tick).min(BUCKETS as u64);
        for step in 1..=ticks {
            let b = bucket_of(self.now_tick + step);
            let mut bucket = std::mem::take(&mut self.buckets[b]);
            bucket.retain(|&(i, generation)| {
                let Some(s) = self.slots.get_mut(i as usize) else {
                    return false;
                };
                if s.generation != generation || !matches!(s.state, State::Armed(_)) {
                    return false;
                }
                if s.tick > target {
                    return true;
                }
                if let State::Armed(w) = std::mem::replace(&mut s.state, State::Fired) {
                    fired.push(w);
                }
                self.armed -= 1;
                false
            });
            self.buckets[b] = bucket;
        }
        self.now_tick = self.now_tick.max(target);
    }
}

fn bucket_of(tick: u64) -> usize {
    (tick % BUCKETS as u64) as usize
}

/// The wheel a tick task drives. When the task ends, or is dropped with its runtime, the
/// wheel learns that no task drives it any more, so the next armed limit starts one.
struct Driver {
    wheel: Arc<Wheel>,
    id: u64,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut w = self.wheel.lock();
        if w.driver == self.id {
            w.driven = false;
        }
    }
}

/// Ticks until no limit is armed.
async fn drive(driver: Driver) {
    let mut fired = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        let idle = {
            let mut w = driver.wheel.lock();
            // Ticks are rounded up from deadlines: the ones strictly before now have passed.
            let target = w.tick_of(Instant::now()).saturating_sub(1);
            w.advance(target, &mut fired);
            // Decided under the lock: a limit armed after it starts its own task.
            let idle = w.armed == 0;
            if idle {
                w.driven = false;
            }
            idle
        };
        for waker in fired.drain(..) {
            waker.wake();
        }
        if idle {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    #[tokio::test]
    async fn ready_future_is_never_timed() {
        let r = timeout(Duration::ZERO, async { 7 }).await;
        assert_eq!(r, Ok(7));
    }

    #[tokio::test]
    async fn limit_already_past_ends_at_the_next_tick() {
        let start = Instant::now();
        let r = timeout(Duration::ZERO, pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        assert!(start.elapsed() < 20 * TICK, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn pending_future_ends_at_its_limit_rounded_to_a_tick() {
        let start = Instant::now();
        let r = timeout(Duration::from_millis(30), pending::<()>()).await;
        let took = start.elapsed();
        assert_eq!(r, Err(Elapsed));
        assert!(took >= Duration::from_millis(30), "fired early: {took:?}");
        assert!(
            took < Duration::from_millis(30) + 20 * TICK,
            "fired late: {took:?}"
        );
    }

    #[tokio::test]
    async fn future_finishing_first_wins_and_cancels_its_limit() {
        let r = timeout(Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            "done"
        })
        .await;
        assert_eq!(r, Ok("done"));
        let armed = WHEEL.with(|w| w.lock().armed);
        assert_eq!(armed, 0, "a finished future leaves nothing armed");
    }

    #[tokio::test]
    async fn many_limits_fire_in_deadline_order_and_the_wheel_goes_idle() {
        let mut set = tokio::task::JoinSet::new();
        for ms in [45u64, 5, 25, 15, 35] {
            set.spawn(async move {
                let _ = timeout(Duration::from_millis(ms), pending::<()>()).await;
                ms
            });
        }
        let mut order = Vec::new();
        while let Some(ms) = set.join_next().await {
            order.push(ms.unwrap_or_default());
        }
        assert_eq!(order, [5, 15, 25, 35, 45]);
        // The tick task ends once nothing is armed.
        tokio::time::sleep(3 * TICK).await;
        assert!(!WHEEL.with(|w| w.lock().driven), "no task left ticking");
    }

    #[tokio::test]
    async fn limits_longer_than_a_revolution_wait_their_turn() {
        let long = Duration::from_millis(1_200);
        assert!(long > TICK * BUCKETS as u32);
        let start = Instant::now();
        let r = timeout(long, pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        assert!(start.elapsed() >= long);
    }

    #[test]
    fn a_new_runtime_on_the_same_thread_gets_a_new_tick_task() {
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            let r = rt.block_on(async {
                // Armed, then the runtime goes away with its tick task mid-wait.
                tokio::spawn(timeout(Duration::from_secs(60), pending::<()>()));
                tokio::task::yield_now().await;
                // Without a tick task this would never end: tokio's own timer bounds it.
                let ours = timeout(Duration::from_millis(10), pending::<()>());
                tokio::time::timeout(Duration::from_secs(2), ours).await
            });
            assert_eq!(r, Ok(Err(Elapsed)), "the limit ended on the wheel, in time");
            drop(rt);
        }
    }
}
