//! The backends behind one interface: every operation of a queue's store, dispatched to
//! the backend its configuration names.

use std::time::Duration;

use super::embedded::Embedded;
use super::nats::NatsQueue;
use super::rabbitmq::RabbitQueue;
use super::redis::RedisQueue;
use super::{Claims, Ended, Enqueued, Job, JobId, NewJob, QueueError, StoredResponse, Turned};

/// A queue's store.
#[derive(Clone)]
pub enum Backend {
    Embedded(Embedded),
    Redis(RedisQueue),
    Nats(NatsQueue),
    RabbitMq(RabbitQueue),
}

/// The bounds of a queue, for backends that check them where every instance sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_depth: u64,
    pub max_bytes: u64,
}

impl Backend {
    /// Whether this process alone holds the queue (its depth is counted here).
    pub fn is_local(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }

    pub async fn enqueue(
        &self,
        new: NewJob,
        id: JobId,
        now: u64,
        bounds: Bounds,
    ) -> Result<Enqueued, QueueError> {
        match self {
            Backend::Embedded(e) => e.enqueue(new, id, now).await,
            Backend::Redis(r) => r.enqueue(new, id, now, bounds).await,
            Backend::Nats(n) => n.enqueue(new, id, now, bounds).await,
            Backend::RabbitMq(q) => q.enqueue(new, id, now, bounds).await,
        }
    }

    /// One dispatcher turn: records the attempts that ended (results, retries, dead
    /// letters), then takes up to `n` due jobs (none when `n` is 0). The embedded store does
    /// both in one transaction; Redis, NATS and RabbitMQ send the ends together, so that the
    /// connection pipelines them, and claim after.
    /// `concurrency` is the queue's: RabbitMQ's consumer is started with it as its prefetch.
    pub async fn turn(
        &self,
        ended: Vec<Ended>,
        n: usize,
        now: u64,
        ttl: Duration,
        concurrency: usize,
    ) -> Turned {
        let finished = match self {
            Backend::Embedded(e) => return e.turn(ended, n, now, ttl).await,
            Backend::Redis(r) => {
                let ends = ended.into_iter().map(|e| async move {
                    let c = e.claimed;
                    (c.id, r.finish(c.id, &c.receipt, e.outcome, now, ttl).await)
                });
                futures_util::future::join_all(ends).await
            }
            Backend::Nats(q) => {
                let ends = ended.into_iter().map(|e| async move {
                    let c = e.claimed;
                    let end = q.finish(c.id, &c.receipt, &c.request, e.outcome, now);
                    (c.id, end.await)
                });
                futures_util::future::join_all(ends).await
            }
            Backend::RabbitMq(q) => {
                let ends = ended.into_iter().map(|e| async move {
                    let c = e.claimed;
                    (c.id, q.finish(c.id, &c.receipt, e.outcome, now, ttl).await)
                });
                futures_util::future::join_all(ends).await
            }
        };
        let claims = match self {
            _ if n == 0 => Ok(Claims::default()),
            Backend::Redis(r) => r.claim(n, now).await,
            Backend::Nats(q) => q.claim(n, now).await,
            Backend::RabbitMq(q) => q.claim(n, now, concurrency).await,
            Backend::Embedded(e) => e.turn(Vec::new(), n, now, ttl).await.claims,
        };
        Turned { finished, claims }
    }

    pub async fn revive(&self, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
        match self {
            Backend::Embedded(e) => e.revive(id, now).await,
            Backend::Redis(r) => r.revive(id, now).await,
            Backend::Nats(n) => n.revive(id, now).await,
            Backend::RabbitMq(q) => q.revive(id, now).await,
        }
    }

    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        match self {
            Backend::Embedded(e) => e.delete_dead(id).await,
            Backend::Redis(r) => r.delete_dead(id).await,
            Backend::Nats(n) => n.delete_dead(id).await,
            Backend::RabbitMq(q) => q.delete_dead(id).await,
        }
    }

    pub async fn sweep(&self, now: u64) -> Result<u64, QueueError> {
        match self {
            Backend::Embedded(e) => e.sweep(now).await,
            Backend::Redis(r) => r.sweep(now).await,
            Backend::Nats(_) => Ok(0),
            Backend::RabbitMq(q) => q.sweep(now).await,
        }
    }

    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        match self {
            Backend::Embedded(e) => e.job(id).await,
            Backend::Redis(r) => r.job(id).await,
            Backend::Nats(n) => n.job(id).await,
            Backend::RabbitMq(q) => q.job(id).await,
        }
    }

    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        match self {
            Backend::Embedded(e) => e.result(id).await,
            Backend::Redis(r) => r.result(id).await,
            Backend::Nats(n) => n.result(id).await,
            Backend::RabbitMq(q) => q.result(id).await,
        }
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        match self {
            Backend::Embedded(e) => e.dead_letters(limit).await,
            Backend::Redis(r) => r.dead_letters(limit).await,
            Backend::Nats(n) => n.dead_letters(limit).await,
            Backend::RabbitMq(q) => q.dead_letters(limit).await,
        }
    }
}
