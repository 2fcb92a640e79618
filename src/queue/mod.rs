//! Durable job queues for queued routes: a job is a stored request, accepted once it is
//! written (and synced) and delivered later by the queue's dispatchers, at least once.
//!
//! A [`Queue`] is one named queue: its settings, its store, its depth bounds, the wake-up
//! of its dispatchers and the feed of status changes that event streams follow. The store
//! is a backend behind one interface ([`embedded`]: a file on local disk; [`redis`],
//! [`nats`] and [`rabbitmq`]: servers every instance shares). This module knows
//! nothing of routes or of the pipeline: jobs are requests as bytes, and outcomes are what
//! a dispatcher reports.

mod backend;
pub mod callback;
pub mod embedded;
mod metrics;
pub mod nats;
pub mod publish;
pub mod rabbitmq;
pub mod redis;
mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::model::{QueueBackend, QueueSettings};
pub use metrics::QueueMetrics;
pub use types::*;

/// Why a queue refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `max_depth` jobs or `max_bytes` bytes: try again later.
    #[error("the queue is full")]
    Full,
    /// The store could not be read or written: nothing was stored.
    #[error("the queue's store failed: {0}")]
    Store(String),
}

use backend::{Backend, Bounds};

/// A status change, as event streams follow them.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: JobId,
    pub job: Job,
}

/// One named queue, shared by the workers that accept into it and its dispatchers.
pub struct Queue {
    pub settings: QueueSettings,
    core: Arc<Core>,
}

/// What a queue keeps across reloads that change its settings.
pub struct Core {
    store: Backend,
    /// Jobs pending or running, and their request bytes: the bounds an accept checks.
    depth: AtomicU64,
    bytes: AtomicU64,
    /// Woken when a job becomes ready now (accepted, retried by an operator, or pushed by
    /// a broker).
    wake: Arc<tokio::sync::Notify>,
    events: tokio::sync::broadcast::Sender<Event>,
    pub metrics: metrics::QueueCounters,
}

impl std::ops::Deref for Queue {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Queue {
    /// Opens (or creates) the queue's store; jobs that were running when the gateway last
    /// stopped are pending again.
    /// `runtime` runs the connections of a backend on a server (Redis, NATS, RabbitMQ);
    /// without one such a queue cannot open.
    pub fn open(
        settings: QueueSettings,
        metrics: &QueueMetrics,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Queue, QueueError> {
        // A shared backend's counts are kept on its server.
        let mut counts = embedded::Counts {
            depth: 0,
            bytes: 0,
            dead: 0,
        };
        let connections = |server: &str| {
            runtime
                .clone()
                .ok_or_else(|| QueueError::Store(format!("no runtime for the {server} connection")))
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let store = match &settings.backend {
            QueueBackend::Embedded { dir } => {
                let (store, found) =
                    embedded::Embedded::open(dir, &settings.name, crate::timer::unix_millis())?;
                counts = found;
                Backend::Embedded(store)
            }
            QueueBackend::Redis {
                redis,
                key_prefix,
                visibility_timeout,
            } => Backend::Redis(redis::RedisQueue::new(
                redis,
                key_prefix,
                &settings.name,
                *visibility_timeout,
                connections("Redis")?,
            )),
            QueueBackend::Nats {
                url,
                name_prefix,
                visibility_timeout,
            } => Backend::Nats(nats::NatsQueue::new(
                nats::NatsSettings {
                    url,
                    name_prefix,
                    name: &settings.name,
                    visibility: *visibility_timeout,
                    result_ttl: settings.result_ttl,
                    idempotency_ttl: settings.idempotency_ttl,
                    bounds: Bounds {
                        max_depth: settings.max_depth,
                        max_bytes: settings.max_bytes,
                    },
                },
                connections("NATS")?,
            )),
            QueueBackend::RabbitMq {
                url,
                redis,
                key_prefix,
            } => Backend::RabbitMq(rabbitmq::RabbitQueue::new(
                rabbitmq::RabbitSettings {
                    url,
                    redis,
                    key_prefix,
                    name: &settings.name,
                    wake: wake.clone(),
                },
                connections("RabbitMQ")?,
            )),
        };
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let counters = metrics.queue(&settings.name);
        counters.set_depth(counts.depth, counts.dead);
        let core = Core {
            depth: AtomicU64::new(counts.depth),
            bytes: AtomicU64::new(counts.bytes),
            store,
            wake,
            events,
            metrics: counters,
        };
        Ok(Queue {
            settings,
            core: Arc::new(core),
        })
    }

    /// Stores a new job (or finds the one its idempotency key names). The job is durable
    /// when this returns `Ok(Enqueued::New)`.
    pub async fn enqueue(&self, new: NewJob) -> Result<Enqueued, QueueError> {
        let size = new.request.size();
        let s = &self.settings;
        let bounds = Bounds {
            max_depth: s.max_depth,
            max_bytes: s.max_bytes,
        };
        // A local queue is bounded here; a shared one where every instance counts.
        let local = self.store.is_local();
        if local {
            let depth = self.depth.fetch_add(1, Ordering::AcqRel);
            let bytes = self.bytes.fetch_add(size, Ordering::AcqRel);
            if depth >= s.max_depth || bytes.saturating_add(size) > s.max_bytes {
                self.release(size);
                self.metrics.refused_full.inc();
                return Err(QueueError::Full);
            }
        }
        let started = std::time::Instant::now();
        let now = crate::timer::unix_millis();
        let result = self.store.enqueue(new, JobId::new(now), now, bounds).await;
        match &result {
            Ok(Enqueued::New(id, job)) => {
                self.metrics.accepted(started.elapsed());
                if !local {
                    self.depth.fetch_add(1, Ordering::AcqRel);
                }
                self.metrics.depth.set(self.depth() as i64);
                self.publish(*id, job);
                self.wake.notify_one();
            }
            Ok(_) if local => self.release(size),
            Ok(_) => {}
            Err(QueueError::Full) => {
                self.metrics.refused_full.inc();
            }
            Err(QueueError::Store(_)) => {
                if local {
                    self.release(size);
                }
                self.metrics.refused_unavailable.inc();
            }
        }
        result
    }

    fn release(&self, size: u64) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Jobs pending or running.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Acquire)
    }

    /// One dispatcher turn: records the attempts that ended (the jobs' new states are in
    /// [`Turned::finished`], in the same order), then takes up to `n` jobs that are due,
    /// marking them running; with none due, says when the next one will be.
    pub async fn turn(&self, ended: Vec<Ended>, n: usize) -> Turned {
        let now = crate::timer::unix_millis();
        let ends: Vec<_> = ended
            .iter()
            .map(|e| (e.claimed.job.size, e.outcome.kind()))
            .collect();
        let turned = self
            .store
            .turn(
                ended,
                n,
                now,
                self.settings.result_ttl,
                self.settings.concurrency,
            )
            .await;
        for ((size, kind), (id, finished)) in ends.into_iter().zip(&turned.finished) {
            let Ok(job) = finished else {
                continue;
            };
            self.metrics.delivered(kind);
            if kind != OutcomeKind::Retried && self.store.is_local() {
                self.release(size);
            }
            if let Some(job) = job {
                if job.dead {
                    self.metrics.dead.inc();
                }
                self.publish(*id, job);
            }
        }
        if let Ok(claims) = &turned.claims {
            for c in &claims.jobs {
                self.metrics.attempts.inc();
                self.publish(c.id, &c.job);
            }
            if n > 0 {
                let age = claims.oldest_due.map_or(0, |due| now.saturating_sub(due));
                self.metrics.set_oldest(Duration::from_millis(age));
            }
            if let Some(depth) = claims.depth {
                // A shared queue's depth, as every instance counts it.
                self.depth.store(depth, Ordering::Release);
            }
        }
        self.metrics.depth.set(self.depth() as i64);
        turned
    }

    /// The job's state, when it exists and has not expired.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        self.store.job(id).await
    }

    /// The stored response of a finished job.
    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        self.store.result(id).await
    }

    /// Dead-lettered jobs, oldest first, at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        self.store.dead_letters(limit).await
    }

    /// Puts a dead-lettered job back in the queue with its attempts reset; `false` when
    /// there is no such dead letter.
    pub async fn retry_dead(&self, id: JobId) -> Result<bool, QueueError> {
        let Some((job, size)) = self.store.revive(id, crate::timer::unix_millis()).await? else {
            return Ok(false);
        };
        if self.store.is_local() {
            self.depth.fetch_add(1, Ordering::AcqRel);
            self.bytes.fetch_add(size, Ordering::AcqRel);
        }
        self.metrics.dead.dec();
        self.metrics.depth.set(self.depth() as i64);
        self.publish(id, &job);
        self.wake.notify_one();
        Ok(true)
    }

    /// Deletes a dead-lettered job; `false` when there is no such dead letter.
    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        let deleted = self.store.delete_dead(id).await?;
        if deleted {
            self.metrics.dead.dec();
        }
        Ok(deleted)
    }

    /// Removes finished jobs, results and idempotency keys whose time is up.
    pub async fn sweep(&self) -> Result<(), QueueError> {
        let dead_removed = self.store.sweep(crate::timer::unix_millis()).await?;
        self.metrics.dead.dec_by(dead_removed as i64);
        Ok(())
    }

    /// Status changes of every job of this queue from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn publish(&self, id: JobId, job: &Job) {
        // Most jobs have no one following them: no copy then.
        if self.events.receiver_count() == 0 {
            return;
        }
        // A subscriber gone in between is not an error.
        let _ = self.events.send(Event {
            id,
            job: job.clone(),
        });
    }

    /// The delay before attempt `attempts + 1`: `retry_delay` doubled per attempt made,
    /// at most `max_retry_delay`, with full jitter (a uniform share of it).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let s = &self.settings;
        let doubled = s
            .retry_delay
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let cap = doubled.min(s.max_retry_delay);
        cap.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Keeps queues open across reloads: a reload that keeps a queue's name and backend keeps
/// its store and counts (its other settings take effect), and a queue dropped from the
/// configuration closes once nothing uses it.
#[derive(Default)]
pub struct Queues {
    open: Mutex<Vec<Arc<Queue>>>,
}

impl Queues {
    /// The queue for `settings`: the open one of that name and backend, with the new
    /// settings, or a newly opened store.
    pub fn get(
        &self,
        settings: &QueueSettings,
        metrics: &QueueMetrics,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Arc<Queue>, QueueError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|q| Arc::strong_count(&q.core) > 1 || Arc::strong_count(q) > 1);
        let same = |q: &&Arc<Queue>| {
            q.settings.name == settings.name && q.settings.backend == settings.backend
        };
        if let Some(q) = open.iter().find(same) {
            if q.settings == *settings {
                return Ok(q.clone());
            }
            // The store stays; the settings are the new ones.
            let q = Arc::new(q.with_settings(settings.clone()));
            open.retain(|o| o.settings.name != settings.name);
            open.push(q.clone());
            return Ok(q);
        }
        let q = Arc::new(Queue::open(settings.clone(), metrics, runtime)?);
        open.push(q.clone());
        Ok(q)
    }
}

impl Queue {
    fn with_settings(&self, settings: QueueSettings) -> Queue {
        Queue {
            settings,
            core: self.core.clone(),
        }
    }

    /// Waits until a job may be ready now.
    pub async fn woken(&self) {
        self.core.wake.notified().await;
    }
}

/// A new job's state, pending now.
fn new_job(new: &NewJob, now: u64) -> Job {
    Job {
        status: Status::Pending,
        attempts: 0,
        created_ms: now,
        updated_ms: now,
        next_ms: now,
        owner: new.owner.clone(),
        route: new.route.clone(),
        status_path: new.status_path.clone(),
        dead: false,
        error: None,
        result_status: None,
        size: new.request.size(),
        callback: new.callback.clone(),
    }
}

/// Applies an attempt's outcome to the job's state; answers what the backend must do
/// (`done`, `retry` or `dead`), the retry's due time, and the response to keep.
fn apply_outcome(
    job: &mut Job,
    outcome: Outcome,
    now: u64,
) -> (&'static str, u64, Option<StoredResponse>) {
    job.updated_ms = now;
    match outcome {
        Outcome::Answered(response) => {
            job.status = match response.status < 400 {
                true => Status::Succeeded,
                false => Status::Failed,
            };
            job.result_status = Some(response.status);
            job.error = None;
            ("done", now, Some(response))
        }
        Outcome::Retry { at_ms, error } => {
            job.status = Status::Pending;
            job.next_ms = at_ms;
            job.error = Some(error);
            ("retry", at_ms, None)
        }
        Outcome::Dead { error, response } => {
            job.status = Status::Failed;
            job.dead = true;
            job.error = Some(error);
            job.result_status = response.as_ref().map(|r| r.status);
            ("dead", now, response)
        }
    }
}

/// A dead letter made pending again, its attempts reset.
fn revived(job: &mut Job, now: u64) {
    job.status = Status::Pending;
    job.dead = false;
    job.attempts = 0;
    job.result_status = None;
    job.next_ms = now;
    job.updated_ms = now;
}
