//! Concurrency limit of one upstream group: at most `max` requests in flight across every
//! worker, a bounded queue for the next ones, and a wait that ends in 503 rather than
//! growing without bound (HAProxy's `maxconn` + `timeout queue`, nginx's upstream `queue`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by all workers; cheap to check when there is room.
pub struct GroupLimiter {
    slots: Arc<Semaphore>,
    max: usize,
    queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    QueueTimeout,
}

/// One request's slot; dropping it frees the slot for the next queued request.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl GroupLimiter {
    pub fn new(max: usize, queue: usize, queue_timeout: Duration) -> Self {
        GroupLimiter {
            slots: Arc::new(Semaphore::new(max)),
            max,
            queue,
            queue_timeout,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot now, or after waiting in the queue for at most the queue timeout.
    pub async fn acquire(&self) -> Result<Slot, Refusal> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        // Reserve a queue place first so the bound holds under concurrent arrivals.
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.waiting);
        if queued >= self.queue {
            return Err(Refusal::QueueFull);
        }
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Refusal::QueueTimeout),
        }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Leaves the queue however the wait ends (slot, timeout, or the client going away).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_beyond_max_wait_in_the_queue_until_a_slot_frees() {
        let l = Arc::new(GroupLimiter::new(1, 1, Duration::from_secs(5)));
        let first = l.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(l.queued(), 1);
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(l.queued(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let l = Arc::new(GroupLimiter::new(1, 1, Duration::from_secs(5)));
        let _held = l.acquire().await.unwrap();
        let _queued = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(l.acquire().await.err(), Some(Refusal::QueueFull));
    }

    #[tokio::test]
    async fn a_queued_request_gives_up_at_the_queue_timeout() {
        let l = GroupLimiter::new(1, 4, Duration::from_millis(30));
        let _held = l.acquire().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(l.acquire().await.err(), Some(Refusal::QueueTimeout));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(l.queued(), 0);
        assert_eq!(l.in_flight(), 1);
    }

    #[tokio::test]
    async fn no_queue_means_refusal_when_all_slots_are_taken() {
        let l = GroupLimiter::new(2, 0, Duration::from_secs(1));
        let _a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        assert_eq!(l.acquire().await.err(), Some(Refusal::QueueFull));
    }
}
