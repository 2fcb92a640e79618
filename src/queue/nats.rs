//! The `nats` backend: a queue that several gateway instances share, on NATS JetStream.
//!
//! Names of queue NAME, all under one prefix (`PREFIXNAME…`): the stream `PREFIXNAME`
//! (work-queue retention, subject `PREFIXNAME.ready`) holds one message per job that is
//! pending or running — the job's id and its request — read by the durable pull consumer
//! `dispatchers` with explicit acknowledgements; the key-value buckets `PREFIXNAME-jobs`
//! (the state of jobs pending or running), `PREFIXNAME-done` (finished jobs),
//! `PREFIXNAME-results`, `PREFIXNAME-dead` (dead letters: the job and its request) and
//! `PREFIXNAME-idem` (idempotency keys, created atomically).
//!
//! The stream's limits are the queue's bounds (`max_depth` messages, `max_bytes` bytes,
//! discarding new messages): the server refuses a job over them, for every instance at
//! once. A message delivered and not acknowledged within the visibility timeout (the
//! consumer's ack wait) is delivered again, to any instance: that is how the jobs of an
//! instance that died are taken over. A retry is a negative acknowledgement with the
//! backoff as its delay. An attempt's end writes the job's state and result, then
//! acknowledges the message (which removes it); a job taken again after it finished is
//! acknowledged without an attempt. Finished jobs, results and dead letters expire with
//! their buckets' age (`result_ttl`), idempotency keys with `idempotency_ttl`; both are set
//! when the buckets are created. A job is as durable as the JetStream deployment makes a
//! write (file storage; replicas in a cluster).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::backend::Bounds;
use super::{
    Claimed, Claims, Enqueued, Job, JobId, NewJob, Outcome, QueueError, Status, StoredRequest,
    StoredResponse,
};

/// Time limit of a connection and of each operation on the server.
const TIMEOUT: Duration = Duration::from_secs(2);
const CONSUMER: &str = "dispatchers";
/// Room left under the server's `max_payload` for a stored result's framing.
const PAYLOAD_MARGIN: usize = 4096;

/// A dead letter: the job and the request an operator may send again.
#[derive(Serialize, Deserialize)]
struct DeadLetter {
    job: Job,
    request: StoredRequest,
}

/// A handle on one queue in NATS; clones share the connection.
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<Inner>,
}

/// What a queue's operations need of the server, set up once per connection.
struct Link {
    client: async_nats::Client,
    js: Context,
    consumer: PullConsumer,
    jobs: Store,
    done: Store,
    results: Store,
    dead: Store,
    idem: Store,
}

struct Inner {
    url: String,
    /// `PREFIXNAME`: the stream's name and the start of the buckets' names.
    stream: String,
    subject: String,
    visibility: Duration,
    result_ttl: Duration,
    idempotency_ttl: Duration,
    /// The bounds the stream was last given.
    bounds: Mutex<Bounds>,
    /// When the earliest retry this instance asked for is due (0: none), so that its
    /// dispatcher looks again then rather than at its next poll.
    next_retry: AtomicU64,
    /// Where the connection's tasks run (a runtime that lives as long as the gateway).
    runtime: tokio::runtime::Handle,
    current: ArcSwapOption<Link>,
    connecting: tokio::sync::Mutex<()>,
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The settings of a queue on NATS.
pub struct NatsSettings<'a> {
    pub url: &'a str,
    pub name_prefix: &'a str,
    pub name: &'a str,
    pub visibility: Duration,
    pub result_ttl: Duration,
    pub idempotency_ttl: Duration,
    pub bounds: Bounds,
}

impl NatsQueue {
    /// A queue on the NATS server at `url`; connects on first use.
    pub fn new(s: NatsSettings<'_>, runtime: tokio::runtime::Handle) -> NatsQueue {
        let stream = format!("{}{}", s.name_prefix, s.name);
        NatsQueue {
            inner: Arc::new(Inner {
                url: s.url.to_owned(),
                subject: format!("{stream}.ready"),
                stream,
                visibility: s.visibility,
                result_ttl: s.result_ttl,
                idempotency_ttl: s.idempotency_ttl,
                bounds: Mutex::new(s.bounds),
                next_retry: AtomicU64::new(0),
                runtime,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    async fn link(&self) -> Result<Arc<Link>, QueueError> {
        if let Some(l) = self.inner.current.load_full() {
            return Ok(l);
        }
        let _one = self.inner.connecting.lock().await;
        if let Some(l) = self.inner.current.load_full() {
            return Ok(l);
        }
        let inner = self.inner.clone();
        // The client's tasks run on the gateway's runtime, not on the caller's.
        let setup = self
            .inner
            .runtime
            .spawn(async move { connect(&inner).await });
        let link = tokio::time::timeout(TIMEOUT * 4, setup)
            .await
            .map_err(|_| QueueError::Store("NATS did not answer in time".into()))?
            .map_err(err)??;
        let link = Arc::new(link);
        self.inner.current.store(Some(link.clone()));
        Ok(link)
    }

    /// Runs `f` on the connection under the time limit; after a failure the connection is
    /// set up again on the next call (the server may have restarted without its streams).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(Arc<Link>) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let link = self.link().await?;
        let result = match tokio::time::timeout(TIMEOUT * 2, f(link)).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Store("NATS did not answer in time".into())),
        };
        if let Err(QueueError::Store(_)) = &result {
            self.inner.current.store(None);
        }
        result
    }

    pub async fn enqueue(
        &self,
        new: NewJob,
        id: JobId,
        now: u64,
        bounds: Bounds,
    ) -> Result<Enqueued, QueueError> {
        let job = super::new_job(&new, now);
        let job_bytes = Bytes::from(postcard::to_allocvec(&job).map_err(err)?);
        let mut message = id.0.to_be_bytes().to_vec();
        message.extend(postcard::to_allocvec(&new.request).map_err(err)?);
        let idem = new.idempotency.as_ref().map(|i| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, i.key.as_bytes());
            (
                hex(digest.as_ref()),
                format!("{id}:{}", hex(&i.fingerprint)),
            )
        });
        let this = self.clone();
        self.call(|l| async move {
            this.apply_bounds(&l, bounds).await?;
            let key = id.to_string();
            l.jobs.put(&key, job_bytes.clone()).await.map_err(err)?;
            if let Some((k, v)) = &idem {
                match l.idem.create(k, Bytes::from(v.clone())).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        if let Some(found) = this.named(&l, k, v).await? {
                            l.jobs.purge(&key).await.map_err(err)?;
                            return Ok(found);
                        }
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            let sent =
                l.js.publish(this.inner.subject.clone(), Bytes::from(message))
                    .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(_) => Ok(Enqueued::New(id, job)),
                Err(e) => {
                    // Nothing stays of a job the stream refused.
                    let _ = l.jobs.purge(&key).await;
                    if let Some((k, _)) = &idem {
                        let _ = l.idem.purge(k).await;
                    }
                    let text = e.to_string();
                    if e.kind() == PublishErrorKind::Other && text.contains("maximum") {
                        Err(QueueError::Full)
                    } else {
                        Err(err(text))
                    }
                }
            }
        })
        .await
    }

    /// What an idempotency key that exists names: the job, a conflict, or `None` when its
    /// job is gone (the key is then this request's).
    async fn named(&self, l: &Link, key: &str, mine: &str) -> Result<Option<Enqueued>, QueueError> {
        let held = l.idem.get(key).await.map_err(err)?.unwrap_or_default();
        let held = std::str::from_utf8(&held).unwrap_or_default();
        let (existing, fingerprint) = held.split_once(':').unwrap_or_default();
        let (_, my_fingerprint) = mine.split_once(':').unwrap_or_default();
        if !held.is_empty() && fingerprint != my_fingerprint {
            return Ok(Some(Enqueued::Conflict));
        }
        if let Some(existing) = JobId::parse(existing) {
            if let Some(job) = self.state(l, existing).await? {
                return Ok(Some(Enqueued::Existing(existing, job)));
            }
        }
        l.idem
            .put(key, Bytes::from(mine.to_owned()))
            .await
            .map_err(err)?;
        Ok(None)
    }

    /// Gives the stream new limits when the queue's bounds changed.
    async fn apply_bounds(&self, l: &Link, bounds: Bounds) -> Result<(), QueueError> {
        let current = *self
            .inner
            .bounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current == bounds {
            return Ok(());
        }
        l.js.update_stream(stream_config(&self.inner, bounds))
            .await
            .map_err(err)?;
        *self
            .inner
            .bounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bounds;
        Ok(())
    }

    pub async fn claim(&self, n: usize, now: u64) -> Result<Claims, QueueError> {
        let this = self.clone();
        self.call(|l| async move {
            let mut claims = Claims::default();
            let mut batch = l
                .consumer
                .fetch()
                .max_messages(n)
                .messages()
                .await
                .map_err(err)?;
            while let Some(m) = batch.next().await {
                let m = m.map_err(err)?;
                let receipt = m
                    .reply
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match this.take(&l, &m.payload, &receipt, now).await? {
                    Some(c) => claims.jobs.push(c),
                    // Finished already (taken again after its end) or not a job.
                    None => settle(&l, &receipt, AckKind::Ack).await?,
                }
            }
            let info = l.js.get_stream(&this.inner.stream).await.map_err(err)?;
            claims.depth = Some(info.cached_info().state.messages);
            let due = this.inner.next_retry.load(Ordering::Acquire);
            if due > now {
                claims.next_due = Some(due);
            } else if due != 0 {
                let _ = this.inner.next_retry.compare_exchange(
                    due,
                    0,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Ok(claims)
        })
        .await
    }

    /// The job of a message, marked running; `None` when it has ended.
    async fn take(
        &self,
        l: &Link,
        payload: &[u8],
        receipt: &str,
        now: u64,
    ) -> Result<Option<Claimed>, QueueError> {
        let Some((id, request)) = payload.split_first_chunk::<16>() else {
            return Ok(None);
        };
        let id = JobId(u128::from_be_bytes(*id));
        let Some(bytes) = l.jobs.get(id.to_string()).await.map_err(err)? else {
            return Ok(None);
        };
        let mut job: Job = postcard::from_bytes(&bytes).map_err(err)?;
        let request: StoredRequest = postcard::from_bytes(request).map_err(err)?;
        job.status = Status::Running;
        job.attempts += 1;
        job.updated_ms = now;
        put(&l.jobs, id, &job).await?;
        Ok(Some(Claimed {
            id,
            job,
            request,
            receipt: receipt.to_owned(),
        }))
    }

    pub async fn finish(
        &self,
        id: JobId,
        receipt: &str,
        request: &StoredRequest,
        outcome: Outcome,
        now: u64,
    ) -> Result<Option<Job>, QueueError> {
        let request = request.clone();
        let this = self.clone();
        self.call(|l| async move {
            let key = id.to_string();
            let Some(bytes) = l.jobs.get(&key).await.map_err(err)? else {
                settle(&l, receipt, AckKind::Ack).await?;
                return Ok(None);
            };
            let mut job: Job = postcard::from_bytes(&bytes).map_err(err)?;
            let (kind, at, response) = super::apply_outcome(&mut job, outcome, now);
            if kind == "retry" {
                put(&l.jobs, id, &job).await?;
                let delay = Duration::from_millis(at.saturating_sub(now));
                settle(&l, receipt, AckKind::Nak(Some(delay))).await?;
                let next = &this.inner.next_retry;
                let _ = next.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    (d == 0 || at < d).then_some(at)
                });
                return Ok(Some(job));
            }
            if let Some(r) = response {
                let limit = l.client.server_info().max_payload;
                let bytes = postcard::to_allocvec(&fit(r, limit)).map_err(err)?;
                l.results.put(&key, bytes.into()).await.map_err(err)?;
            }
            if kind == "dead" {
                let dead = DeadLetter {
                    job: job.clone(),
                    request,
                };
                let bytes = postcard::to_allocvec(&dead).map_err(err)?;
                l.dead.put(&key, bytes.into()).await.map_err(err)?;
            } else {
                put(&l.done, id, &job).await?;
            }
            l.jobs.purge(&key).await.map_err(err)?;
            settle(&l, receipt, AckKind::Ack).await?;
            Ok(Some(job))
        })
        .await
    }

    pub async fn revive(&self, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
        let this = self.clone();
        self.call(|l| async move {
            let key = id.to_string();
            let Some(entry) = l.dead.entry(&key).await.map_err(err)? else {
                return Ok(None);
            };
            if entry.operation != Operation::Put {
                return Ok(None);
            }
            let DeadLetter { mut job, request } =
                postcard::from_bytes(&entry.value).map_err(err)?;
            // Only one operator's retry takes the dead letter.
            if l.dead
                .purge_expect_revision(&key, Some(entry.revision))
                .await
                .is_err()
            {
                return Ok(None);
            }
            super::revived(&mut job, now);
            l.results.purge(&key).await.map_err(err)?;
            put(&l.jobs, id, &job).await?;
            let mut message = id.0.to_be_bytes().to_vec();
            message.extend(postcard::to_allocvec(&request).map_err(err)?);
            let ack =
                l.js.publish(this.inner.subject.clone(), message.into())
                    .await
                    .map_err(err)?;
            ack.await.map_err(err)?;
            let size = job.size;
            Ok(Some((job, size)))
        })
        .await
    }

    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        self.call(|l| async move {
            let key = id.to_string();
            if l.dead.get(&key).await.map_err(err)?.is_none() {
                return Ok(false);
            }
            l.dead.purge(&key).await.map_err(err)?;
            l.results.purge(&key).await.map_err(err)?;
            Ok(true)
        })
        .await
    }

    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        let this = self.clone();
        self.call(|l| async move { this.state(&l, id).await }).await
    }

    /// The job's state, wherever it is: running or pending, finished, or dead.
    async fn state(&self, l: &Link, id: JobId) -> Result<Option<Job>, QueueError> {
        let key = id.to_string();
        for bucket in [&l.jobs, &l.done] {
            if let Some(bytes) = bucket.get(&key).await.map_err(err)? {
                return postcard::from_bytes(&bytes).map(Some).map_err(err);
            }
        }
        match l.dead.get(&key).await.map_err(err)? {
            Some(bytes) => postcard::from_bytes::<DeadLetter>(&bytes)
                .map(|d| Some(d.job))
                .map_err(err),
            None => Ok(None),
        }
    }

    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        self.call(|l| async move {
            match l.results.get(id.to_string()).await.map_err(err)? {
                Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(err),
                None => Ok(None),
            }
        })
        .await
    }

    /// Dead letters, oldest first (keys come in the order they were written).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        self.call(|l| async move {
            let mut keys = l.dead.keys().await.map_err(err)?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                if out.len() >= limit {
                    break;
                }
                let key = key.map_err(err)?;
                let Some(id) = JobId::parse(&key) else {
                    continue;
                };
                if let Some(bytes) = l.dead.get(&key).await.map_err(err)? {
                    let dead: DeadLetter = postcard::from_bytes(&bytes).map_err(err)?;
                    out.push((id, dead.job));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Acknowledges (or not, with a delay) a delivered message, and waits until the server has
/// taken the answer.
async fn settle(l: &Link, receipt: &str, kind: AckKind) -> Result<(), QueueError> {
    if receipt.is_empty() {
        return Ok(());
    }
    l.client
        .publish(receipt.to_owned(), kind.into())
        .await
        .map_err(err)?;
    l.client.flush().await.map_err(err)
}

async fn put(bucket: &Store, id: JobId, job: &Job) -> Result<(), QueueError> {
    let bytes = postcard::to_allocvec(job).map_err(err)?;
    bucket
        .put(id.to_string(), bytes.into())
        .await
        .map(drop)
        .map_err(err)
}

/// A response cut to fit in one message of at most `max_payload` bytes.
fn fit(mut r: StoredResponse, max_payload: usize) -> StoredResponse {
    let fields: usize = r.headers.iter().map(|f| f.name.len() + f.value.len()).sum();
    let room = max_payload.saturating_sub(PAYLOAD_MARGIN + fields);
    if r.body.len() > room {
        r.body.truncate(room);
        r.truncated = true;
    }
    r
}

fn stream_config(inner: &Inner, bounds: Bounds) -> stream::Config {
    stream::Config {
        name: inner.stream.clone(),
        subjects: vec![inner.subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        max_messages: i64::try_from(bounds.max_depth).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(bounds.max_bytes).unwrap_or(i64::MAX),
        ..stream::Config::default()
    }
}

/// Connects and makes sure the stream, its consumer and the buckets exist.
async fn connect(inner: &Inner) -> Result<Link, QueueError> {
    let client = async_nats::ConnectOptions::new()
        .name("ferrogate")
        .connection_timeout(TIMEOUT)
        .request_timeout(Some(TIMEOUT))
        .connect(inner.url.as_str())
        .await
        .map_err(err)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(TIMEOUT)
        .build(client.clone());
    let bounds = *inner.bounds.lock().unwrap_or_else(PoisonError::into_inner);
    let config = stream_config(inner, bounds);
    let stream = match js.get_stream(&inner.stream).await {
        Ok(s) => {
            let have = &s.cached_info().config;
            let limits = (config.max_messages, config.max_bytes);
            if (have.max_messages, have.max_bytes) != limits {
                js.update_stream(config).await.map_err(err)?;
            }
            s
        }
        Err(_) => js.create_stream(config).await.map_err(err)?,
    };
    let consumer_config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: inner.visibility,
        max_deliver: -1,
        ..pull::Config::default()
    };
    let consumer = match stream.create_consumer(consumer_config).await {
        Ok(c) => c,
        Err(_) => stream.get_consumer(CONSUMER).await.map_err(err)?,
    };
    // A bucket's stream is made here rather than through the client's bucket creation,
    // which needs account details that servers before 2.10 do not give.
    let bucket = |suffix: &str, max_age: Duration| {
        let js = js.clone();
        let name = format!("{}-{suffix}", inner.stream);
        let config = stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..stream::Config::default()
        };
        async move {
            if js.get_stream(&config.name).await.is_err() {
                js.create_stream(config).await.map_err(err)?;
            }
            js.get_key_value(name).await.map_err(err)
        }
    };
    Ok(Link {
        jobs: bucket("jobs", Duration::ZERO).await?,
        done: bucket("done", inner.result_ttl).await?,
        results: bucket("results", inner.result_ttl).await?,
        dead: bucket("dead", inner.result_ttl).await?,
        idem: bucket("idem", inner.idempotency_ttl).await?,
        client,
        js,
        consumer,
    })
}
