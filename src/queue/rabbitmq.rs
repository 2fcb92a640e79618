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
//! Dispatchers receive messages from a consumer (`basic.consume` on a channel of its own,
//! manual acknowledgements, a prefetch of the queue's `concurrency`): the broker pushes up
//! to that many ready messages ahead, kept here until a dispatcher turn takes them, so a job
//! costs no round trip to be fetched. A message is acknowledged once the attempt's outcome
//! is written to Redis (and a retry's delayed message confirmed). The broker gives the
//! unacknowledged messages of a channel that closed (the instance died, or lost its
//! connection) to the consumers left, so no visibility timeout is needed. A message whose
//! job is finished already (delivered again after its end) is acknowledged without an
//! attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
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
    /// The consumer of the ready queue, started by the first claim.
    consumer: tokio::sync::Mutex<Option<Consumer>>,
    /// Woken when the broker pushes a message (the queue's dispatchers wait on it).
    wake: Arc<tokio::sync::Notify>,
}

/// A consumer of the ready queue on a channel of its own.
struct Consumer {
    channel: Channel,
    /// The session the channel belongs to: a new connection needs a new consumer.
    generation: u64,
    /// The prefetch it was started with (the queue's `concurrency`).
    prefetch: u16,
    tag: ShortString,
    /// Cleared when the broker ended the consumer (its channel closed, or it cancelled it).
    live: Arc<std::sync::atomic::AtomicBool>,
    /// Messages the broker pushed and no turn has taken yet (unacknowledged, so at most
    /// `prefetch` of them with the ones under way).
    pushed: tokio::sync::mpsc::UnboundedReceiver<Delivery>,
    push: tokio::sync::mpsc::UnboundedSender<Delivery>,
}

/// The settings of a queue on RabbitMQ.
pub struct RabbitSettings<'a> {
    pub url: &'a str,
    pub redis: &'a Redis,
    pub key_prefix: &'a str,
    pub name: &'a str,
    /// Woken when a message arrives for the dispatchers.
    pub wake: Arc<tokio::sync::Notify>,
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
                consumer: tokio::sync::Mutex::new(None),
                wake: s.wake,
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

    /// Takes up to `n` of the messages the broker pushed (none waited for), starting or
    /// renewing the consumer first when needed, and marks their jobs running in Redis.
    pub async fn claim(&self, n: usize, now: u64, prefetch: usize) -> Result<Claims, QueueError> {
        self.declare(None).await?;
        let mut claims = Claims {
            depth: Some(self.inner.state.depth().await?),
            ..Claims::default()
        };
        let prefetch = u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX);
        let mut pushed = Vec::new();
        {
            let mut consumer = self.inner.consumer.lock().await;
            let c = self.consuming(&mut consumer, prefetch).await?;
            while pushed.len() < n {
                match c.pushed.try_recv() {
                    Ok(d) => pushed.push(d),
                    Err(_) => break,
                }
            }
        }
        // The jobs' states read and marked together: the Redis connection pipelines them.
        let takes = pushed.into_iter().map(|d| async move {
            let id = std::str::from_utf8(&d.data).ok().and_then(JobId::parse);
            let Some(id) = id else {
                // Not a job's message: nothing to deliver.
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                return Ok(None);
            };
            let receipt = format!("{:x}", self.inner.receipts.fetch_add(1, Ordering::Relaxed));
            match self.inner.state.take(id, &receipt, now).await {
                Ok(Some(c)) => {
                    self.held().insert(receipt, d.acker);
                    Ok(Some(c))
                }
                // Finished already (delivered again after its end) or gone.
                Ok(None) => {
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    Ok(None)
                }
                Err(e) => {
                    requeue(&d.acker).await;
                    Err(e)
                }
            }
        });
        let mut failed = None;
        for taken in futures_util::future::join_all(takes).await {
            match taken {
                Ok(Some(c)) => claims.jobs.push(c),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            // The jobs taken are delivered; the others were given back.
            Some(e) if claims.jobs.is_empty() => Err(e),
            _ => Ok(claims),
        }
    }

    /// The consumer, started anew when there is none, its channel closed, the connection
    /// was made again, or the prefetch changed.
    async fn consuming<'c>(
        &self,
        slot: &'c mut Option<Consumer>,
        prefetch: u16,
    ) -> Result<&'c mut Consumer, QueueError> {
        let session = self.inner.amqp.session().await?;
        let usable = |c: &Consumer| {
            c.generation == session.generation
                && c.channel.status().connected()
                && c.live.load(Ordering::Acquire)
        };
        match slot.take() {
            Some(c) if usable(&c) && c.prefetch == prefetch => return Ok(slot.insert(c)),
            Some(c) if usable(&c) => {
                // A new prefetch applies to consumers started after it: the old consumer
                // stops, and its messages, pushed or under way, stay on this channel (and
                // are acknowledged on it).
                let channel = c.channel.clone();
                match self
                    .consume(channel.clone(), prefetch, c.generation, Some(c))
                    .await
                {
                    Ok(c) => return Ok(slot.insert(c)),
                    Err(e) => {
                        // Its messages go back to the queue rather than wait on a channel
                        // no consumer reads.
                        close_channel(&self.inner.amqp.runtime, channel);
                        return Err(e);
                    }
                }
            }
            // A closed channel's messages went back to the queue: those pushed here are
            // dropped with it (their acknowledgements would fail), and come again.
            Some(c) => close_channel(&self.inner.amqp.runtime, c.channel),
            None => {}
        }
        let generation = session.generation;
        let open = self
            .inner
            .amqp
            .runtime
            .spawn(async move { session.connection.create_channel().await.map_err(err) });
        let channel = tokio::time::timeout(TIMEOUT, open)
            .await
            .map_err(|_| QueueError::Store("RabbitMQ did not answer in time".into()))?
            .map_err(err)??;
        let c = self.consume(channel, prefetch, generation, None).await?;
        Ok(slot.insert(c))
    }

    /// Starts a consumer of the ready queue on `channel` with `prefetch`, replacing `old`
    /// (on the same channel) when given. Its messages are forwarded by a task on the
    /// connection's runtime, which wakes the dispatchers.
    async fn consume(
        &self,
        channel: Channel,
        prefetch: u16,
        generation: u64,
        old: Option<Consumer>,
    ) -> Result<Consumer, QueueError> {
        let queue = ShortString::from(self.inner.queue.clone());
        let ch = channel.clone();
        let old_tag = old.as_ref().map(|c| c.tag.clone());
        let start = self.inner.amqp.runtime.spawn(async move {
            ch.basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .map_err(err)?;
            if let Some(tag) = old_tag {
                ch.basic_cancel(tag, BasicCancelOptions::default())
                    .await
                    .map_err(err)?;
            }
            let options = BasicConsumeOptions {
                no_ack: false,
                ..BasicConsumeOptions::default()
            };
            ch.basic_consume(queue, "".into(), options, FieldTable::default())
                .await
                .map_err(err)
        });
        let stream = tokio::time::timeout(TIMEOUT, start)
            .await
            .map_err(|_| QueueError::Store("RabbitMQ did not answer in time".into()))?
            .map_err(err)??;
        let (push, pushed) = match old {
            Some(c) => (c.push, c.pushed),
            None => tokio::sync::mpsc::unbounded_channel(),
        };
        let (to, wake) = (push.clone(), self.inner.wake.clone());
        let tag = stream.tag();
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ending = live.clone();
        self.inner.amqp.runtime.spawn(async move {
            let mut stream = stream;
            while let Some(Ok(delivery)) = stream.next().await {
                if to.send(delivery).is_err() {
                    return;
                }
                wake.notify_one();
            }
            // Cancelled or closed: the next turn starts a consumer again.
            ending.store(false, Ordering::Release);
            wake.notify_one();
        });
        Ok(Consumer {
            channel,
            generation,
            prefetch,
            tag,
            live,
            pushed,
            push,
        })
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

/// Closes a consumer's channel in the background.
fn close_channel(runtime: &tokio::runtime::Handle, channel: Channel) {
    runtime.spawn(async move {
        let _ = channel.close(200, "".into()).await;
    });
}

/// Gives a taken message back to the broker at once (for any instance to take).
async fn requeue(acker: &Acker) {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    let _ = acker.nack(options).await;
}
