//! The `rabbitmq` backend: a queue that several gateway instances share, its ready jobs on
//! a RabbitMQ broker and their state in Redis.
//!
//! RabbitMQ holds messages, not state one can read back by key: a job's status, request,
//! result, idempotency key, dead letter and the queue's bounds live in the top-level Redis,
//! in the keys the `redis` backend uses (its code, without the stream: [`RedisQueue`] made
//! with [`RedisQueue::state_only`]). The broker holds one message per ready job, its id:
//!
//! - `PREFIXNAME`: a durable queue of persistent messages, published with confirms (an
//!   accept answers 202 only once the broker confirmed the message; otherwise the job's
//!   keys are removed again and the answer is 503);
//! - `PREFIXNAME.delay.K`: durable delay queues, one per power of two of the delay (K: the
//!   delay is below 2^K ms), whose messages expire after their own TTL and are
//!   dead-lettered back to `PREFIXNAME`: a retry's backoff. Messages of one delay queue
//!   expire in order, so a retry may wait up to twice its delay behind a longer one.
//!
//! Dispatchers take messages with `basic.get` and manual acknowledgements: a message is
//! acknowledged once the attempt's outcome is written to Redis (and a retry's delayed
//! message confirmed). The broker gives the unacknowledged messages of an instance whose
//! connection closed (it died) to the next instance that asks, so no visibility timeout is
//! needed. A message whose job is finished already (delivered again after its end) is
//! acknowledged without an attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::backend::Bounds;
use super::redis::RedisQueue;
use super::{Claims, Enqueued, Job, JobId, NewJob, Outcome, QueueError, StoredResponse};
use crate::config::model::Redis;

/// Time limit of a connection and of each operation on the broker.
const TIMEOUT: Duration = Duration::from_secs(2);
/// AMQP's persistent delivery mode: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

/// A connection and its one channel (in confirm mode), numbered: queues declare what they
/// need again on a new one (the broker may have restarted without them).
struct Session {
    connection: Connection,
    channel: Channel,
    generation: u64,
}

/// A connection to a broker, made on first use on a long-lived runtime and made again after
/// it broke; used by a queue or by a publish route.
pub struct Amqp {
    url: String,
    /// Where the connection's tasks run (a runtime that lives as long as the gateway).
    runtime: tokio::runtime::Handle,
    current: ArcSwapOption<Session>,
    connecting: tokio::sync::Mutex<u64>,
}

impl Amqp {
    pub fn new(url: &str, runtime: tokio::runtime::Handle) -> Amqp {
        Amqp {
            url: url.to_owned(),
            runtime,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    async fn session(&self) -> Result<Arc<Session>, QueueError> {
        let usable = |s: &Session| s.channel.status().connected();
        if let Some(s) = self.current.load_full().filter(|s| usable(s)) {
            return Ok(s);
        }
        let mut made = self.connecting.lock().await;
        if let Some(s) = self.current.load_full().filter(|s| usable(s)) {
            return Ok(s);
        }
        self.drop_session();
        let url = self.url.clone();
        // The connection's tasks run on the gateway's runtime, not on the caller's.
        let connect = self.runtime.spawn(async move {
            let connection = Connection::connect(&url, ConnectionProperties::default())
                .await
                .map_err(err)?;
            let channel = connection.create_channel().await.map_err(err)?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(err)?;
            Ok::<_, QueueError>((connection, channel))
        });
        let (connection, channel) = tokio::time::timeout(TIMEOUT, connect)
            .await
            .map_err(|_| QueueError::Store("RabbitMQ did not answer in time".into()))?
            .map_err(err)??;
        *made += 1;
        let session = Arc::new(Session {
            connection,
            channel,
            generation: *made,
        });
        self.current.store(Some(session.clone()));
        Ok(session)
    }

    /// Closes the current connection (in the background), if any.
    fn drop_session(&self) {
        if let Some(old) = self.current.swap(None) {
            self.runtime.spawn(async move {
                let _ = old.connection.close(200, "".into()).await;
            });
        }
    }

    /// Runs `f` on the channel under the time limit; a channel the broker closed (or a
    /// broker that does not answer) is replaced on the next call.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let session = self.session().await?;
        match tokio::time::timeout(TIMEOUT, f(session.channel.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !session.channel.status().connected() {
                    self.drop_session();
                }
                Err(e)
            }
            Err(_) => {
                self.drop_session();
                Err(QueueError::Store("RabbitMQ did not answer in time".into()))
            }
        }
    }

    /// Publishes one message and waits for the broker's confirm. `mandatory`: a message no
    /// queue took is an error, not a success.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: Vec<u8>,
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), QueueError> {
        let (exchange, routing_key) = (ShortString::from(exchange), ShortString::from(routing_key));
        self.call(|ch| async move {
            let options = BasicPublishOptions {
                mandatory,
                immediate: false,
            };
            let confirm = ch
                .basic_publish(exchange, routing_key, options, &payload, properties)
                .await
                .map_err(err)?;
            match confirm.await.map_err(err)? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(returned)) => Err(QueueError::Store(format!(
                    "no queue took the message: {}",
                    returned.reply_text
                ))),
                Confirmation::Nack(_) => Err(err("the broker refused the message")),
                Confirmation::NotRequested => Err(err("the broker did not confirm the message")),
            }
        })
        .await
    }
}

/// A handle on one queue on RabbitMQ (and Redis); clones share the connections.
#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

struct Inner {
    state: RedisQueue,
    amqp: Amqp,
    /// `PREFIXNAME`: the queue of ready jobs, and the start of its delay queues' names.
    queue: String,
    /// The connection generation the queues were declared on, and the delay queues
    /// declared on it (bit K: `PREFIXNAME.delay.K`).
    declared: Mutex<(u64, u64)>,
    /// Messages taken and not yet acknowledged, by the receipt their claim carries.
    held: Mutex<HashMap<String, Acker>>,
    receipts: AtomicU64,
}

/// The settings of a queue on RabbitMQ.
pub struct RabbitSettings<'a> {
    pub url: &'a str,
    pub redis: &'a Redis,
    pub key_prefix: &'a str,
    pub name: &'a str,
}

impl RabbitQueue {
    /// A queue on the broker at `url` and the Redis deployment; connects on first use.
    pub fn new(s: RabbitSettings<'_>, runtime: tokio::runtime::Handle) -> RabbitQueue {
        RabbitQueue {
            inner: Arc::new(Inner {
                state: RedisQueue::state_only(s.redis, s.key_prefix, s.name, runtime.clone()),
                amqp: Amqp::new(s.url, runtime),
                queue: format!("{}{}", s.key_prefix, s.name),
                declared: Mutex::new((0, 0)),
                held: Mutex::new(HashMap::new()),
                receipts: AtomicU64::new(0),
            }),
        }
    }

    fn delay_queue(&self, bucket: u32) -> String {
        format!("{}.delay.{bucket}", self.inner.queue)
    }

    /// Declares the ready queue (and, with `bucket`, that delay queue) when the current
    /// connection has not seen it yet.
    async fn declare(&self, bucket: Option<u32>) -> Result<(), QueueError> {
        let session = self.inner.amqp.session().await?;
        let (generation, mask) = *self
            .inner
            .declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut mask = if generation == session.generation {
            mask
        } else {
            0
        };
        if generation != session.generation {
            let name = ShortString::from(self.inner.queue.clone());
            self.inner
                .amqp
                .call(|ch| async move { declare(&ch, name, FieldTable::default()).await })
                .await?;
        }
        if let Some(k) = bucket.filter(|k| mask & (1 << k) == 0) {
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.inner.queue.as_str().into()),
            );
            let name = ShortString::from(self.delay_queue(k));
            self.inner
                .amqp
                .call(|ch| async move { declare(&ch, name, args).await })
                .await?;
            mask |= 1 << k;
        }
        *self
            .inner
            .declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (session.generation, mask);
        Ok(())
    }

    /// Publishes a job's ready message, after `delay` when given, and waits for the
    /// broker's confirm.
    async fn ready(&self, id: JobId, delay: Option<u64>) -> Result<(), QueueError> {
        let bucket = delay.map(|ms| 64 - ms.max(1).leading_zeros());
        self.declare(bucket).await?;
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_message_id(id.to_string().into());
        let queue = match (bucket, delay) {
            (Some(k), Some(ms)) => {
                properties = properties.with_expiration(ms.max(1).to_string().into());
                self.delay_queue(k)
            }
            _ => self.inner.queue.clone(),
        };
        let payload = id.to_string().into_bytes();
        self.inner
            .amqp
            .publish("", &queue, payload, properties, true)
            .await
    }

    pub async fn enqueue(
        &self,
        new: NewJob,
        id: JobId,
        now: u64,
        bounds: Bounds,
    ) -> Result<Enqueued, QueueError> {
        let size = new.request.size();
        let idempotency = new.idempotency.clone();
        let stored = self.inner.state.enqueue(new, id, now, bounds).await?;
        if let Enqueued::New(..) = stored {
            if let Err(e) = self.ready(id, None).await {
                // Not confirmed: the job was never accepted.
                if let Err(undo) = self
                    .inner
                    .state
                    .forget(id, size, idempotency.as_ref())
                    .await
                {
                    tracing::warn!(job = %id, "cannot remove a job the broker did not take: {undo}");
                }
                return Err(e);
            }
        }
        Ok(stored)
    }

    pub async fn claim(&self, n: usize, now: u64) -> Result<Claims, QueueError> {
        self.declare(None).await?;
        let mut claims = Claims {
            depth: Some(self.inner.state.depth().await?),
            ..Claims::default()
        };
        while claims.jobs.len() < n {
            let queue = ShortString::from(self.inner.queue.clone());
            let got = self
                .inner
                .amqp
                .call(|ch| async move {
                    ch.basic_get(queue, BasicGetOptions { no_ack: false })
                        .await
                        .map_err(err)
                })
                .await?;
            let Some(message) = got else {
                break;
            };
            let acker = message.delivery.acker.clone();
            let id = std::str::from_utf8(&message.delivery.data)
                .ok()
                .and_then(JobId::parse);
            let Some(id) = id else {
                // Not a job's message: nothing to deliver.
                let _ = acker.ack(BasicAckOptions::default()).await;
                continue;
            };
            let receipt = format!("{:x}", self.inner.receipts.fetch_add(1, Ordering::Relaxed));
            match self.inner.state.take(id, &receipt, now).await {
                Ok(Some(c)) => {
                    self.held().insert(receipt, acker);
                    claims.jobs.push(c);
                }
                // Finished already (delivered again after its end) or gone.
                Ok(None) => {
                    let _ = acker.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    requeue(&acker).await;
                    return Err(e);
                }
            }
        }
        Ok(claims)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Acker>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn finish(
        &self,
        id: JobId,
        receipt: &str,
        outcome: Outcome,
        now: u64,
        ttl: Duration,
    ) -> Result<Option<Job>, QueueError> {
        let acker = self.held().remove(receipt);
        let retry_in = match &outcome {
            Outcome::Retry { at_ms, .. } => Some(at_ms.saturating_sub(now)),
            _ => None,
        };
        let written = match self.inner.state.finish(id, "", outcome, now, ttl).await {
            Ok(job) => job,
            Err(e) => {
                // Delivered again, by this instance or another.
                if let Some(a) = &acker {
                    requeue(a).await;
                }
                return Err(e);
            }
        };
        if let (Some(delay), Some(_)) = (retry_in, &written) {
            if let Err(e) = self.ready(id, Some(delay)).await {
                if let Some(a) = &acker {
                    requeue(a).await;
                }
                return Err(e);
            }
        }
        if let Some(a) = acker {
            // A failed ack leaves the message to come back once the channel closes; the job
            // is then finished (and acknowledged without an attempt) or tried again.
            if let Err(e) = a.ack(BasicAckOptions::default()).await {
                tracing::debug!(job = %id, "cannot acknowledge a delivery: {e}");
            }
        }
        Ok(written)
    }

    pub async fn revive(&self, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
        let Some(revived) = self.inner.state.revive(id, now).await? else {
            return Ok(None);
        };
        self.ready(id, None).await?;
        Ok(Some(revived))
    }

    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        self.inner.state.delete_dead(id).await
    }

    pub async fn sweep(&self, now: u64) -> Result<u64, QueueError> {
        self.inner.state.sweep(now).await
    }

    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        self.inner.state.job(id).await
    }

    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        self.inner.state.result(id).await
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        self.inner.state.dead_letters(limit).await
    }
}

async fn declare(ch: &Channel, name: ShortString, args: FieldTable) -> Result<(), QueueError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name, options, args)
        .await
        .map(drop)
        .map_err(err)
}

/// Gives a taken message back to the broker at once (for any instance to take).
async fn requeue(acker: &Acker) {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    let _ = acker.nack(options).await;
}
