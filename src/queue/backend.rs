//! The backends behind one interface: every operation of a queue's store, dispatched to
//! the backend its configuration names.

use std::time::Duration;

use super::embedded::Embedded;
use super::nats::NatsQueue;
use super::rabbitmq::RabbitQueue;
use super::redis::RedisQueue;
use super::{
    Claims, Enqueued, Job, JobId, NewJob, Outcome, QueueError, StoredRequest, StoredResponse,
};

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

    pub async fn claim(&self, n: usize, now: u64) -> Result<Claims, QueueError> {
        match self {
            Backend::Embedded(e) => e.claim(n, now).await,
            Backend::Redis(r) => r.claim(n, now).await,
            Backend::Nats(q) => q.claim(n, now).await,
            Backend::RabbitMq(q) => q.claim(n, now).await,
        }
    }

    pub async fn finish(
        &self,
        id: JobId,
        receipt: &str,
        request: &StoredRequest,
        outcome: Outcome,
        now: u64,
        ttl: Duration,
    ) -> Result<Option<Job>, QueueError> {
        match self {
            Backend::Embedded(e) => e.finish(id, outcome, now, ttl).await,
            Backend::Redis(r) => r.finish(id, receipt, outcome, now, ttl).await,
            Backend::Nats(n) => n.finish(id, receipt, request, outcome, now).await,
            Backend::RabbitMq(q) => q.finish(id, receipt, outcome, now, ttl).await,
        }
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
