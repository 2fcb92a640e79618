//! The `redis` backend: a queue that several gateway instances share, on Redis Streams with
//! a consumer group.
//!
//! Keys of queue NAME, all under one hash tag (`PREFIX{NAME}:…`, one cluster slot, so the
//! scripts below touch one node): `job:ID` (the job, postcard), `req:ID` (its request),
//! `res:ID` (its result), `stream` (ready jobs: an entry per job due now, read by the
//! consumer group `dispatchers`), `delayed` (a sorted set of jobs waiting for a retry, by
//! due time), `dead` (dead letters, by expiry), `depth` and `bytes` (pending and running
//! jobs, for every instance's bounds), `idem:HASH` (idempotency keys, expiring).
//!
//! Each instance reads new entries with `XREADGROUP` as its own consumer; an entry taken by
//! an instance that died stays pending in the group and is taken over by another with
//! `XAUTOCLAIM` once it has been idle for the visibility timeout (longer than an attempt
//! may take). An attempt's end acknowledges and deletes the entry; a second end of the same
//! entry (after a takeover) changes the job but not the counts. Accepts, claims and ends
//! are scripts or transactions: atomic on the server. A job is as durable as the Redis
//! deployment's persistence makes a write (`appendonly yes`, `appendfsync always` for every
//! acknowledged job to survive a Redis crash).
//!
//! The `rabbitmq` backend keeps its jobs' state here too, with the same keys and scripts and
//! no stream ([`RedisQueue::state_only`]): its ready jobs are messages on the broker, and a
//! job counts in the bounds while its request has no expiry.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{RedisError, Script, Value};
use arc_swap::ArcSwapOption;

use super::backend::Bounds;
use super::{
    Claimed, Claims, Enqueued, Idempotency, Job, JobId, NewJob, Outcome, QueueError, Status,
    StoredRequest, StoredResponse,
};
use crate::config::model::{Redis, RedisDeployment};
use crate::redis_link::Conn;

const GROUP: &str = "dispatchers";
/// Retry-delayed jobs moved to the stream in one claim at most.
const MOVE_AT_ONCE: u32 = 100;

const ENQUEUE: &str = r"
local p = KEYS[1]
if ARGV[7] ~= '' then
  local v = redis.call('GET', p .. 'idem:' .. ARGV[7])
  if v then
    local sep = string.find(v, ':', 1, true)
    local existing = string.sub(v, 1, sep - 1)
    if string.sub(v, sep + 1) ~= ARGV[9] then return {'conflict'} end
    local job = redis.call('GET', p .. 'job:' .. existing)
    if job then return {'existing', existing, job} end
  end
end
local depth = tonumber(redis.call('GET', p .. 'depth') or '0')
local bytes = tonumber(redis.call('GET', p .. 'bytes') or '0')
if depth >= tonumber(ARGV[5]) or bytes + tonumber(ARGV[4]) > tonumber(ARGV[6]) then
  return {'full'}
end
redis.call('SET', p .. 'job:' .. ARGV[1], ARGV[2])
redis.call('SET', p .. 'req:' .. ARGV[1], ARGV[3])
if ARGV[10] == '1' then redis.call('XADD', p .. 'stream', '*', 'id', ARGV[1]) end
redis.call('INCR', p .. 'depth')
redis.call('INCRBY', p .. 'bytes', ARGV[4])
if ARGV[7] ~= '' then
  redis.call('SET', p .. 'idem:' .. ARGV[7], ARGV[1] .. ':' .. ARGV[9], 'PX', ARGV[8])
end
return {'new'}
";

const MOVE_DUE: &str = r"
local p = KEYS[1]
local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'delayed', id)
  redis.call('XADD', p .. 'stream', '*', 'id', id)
end
local first = redis.call('ZRANGE', p .. 'delayed', 0, 0, 'WITHSCORES')
return {first[2] or '', redis.call('GET', p .. 'depth') or '0'}
";

const FINISH: &str = r"
local p = KEYS[1]
local acked
if ARGV[2] == '' then
  -- The ready queue is elsewhere: the job counts while its request has no expiry.
  acked = (redis.call('PTTL', p .. 'req:' .. ARGV[1]) == -1) and 1 or 0
else
  acked = redis.call('XACK', p .. 'stream', 'dispatchers', ARGV[2])
  redis.call('XDEL', p .. 'stream', ARGV[2])
end
if acked == 0 then
  redis.call('SET', p .. 'job:' .. ARGV[1], ARGV[4], 'KEEPTTL')
  return 0
end
if ARGV[3] == 'retry' then
  redis.call('SET', p .. 'job:' .. ARGV[1], ARGV[4])
  if ARGV[2] ~= '' then redis.call('ZADD', p .. 'delayed', ARGV[7], ARGV[1]) end
  return 1
end
redis.call('SET', p .. 'job:' .. ARGV[1], ARGV[4], 'PX', ARGV[6])
if ARGV[5] ~= '' then redis.call('SET', p .. 'res:' .. ARGV[1], ARGV[5], 'PX', ARGV[6]) end
if ARGV[3] == 'dead' then
  redis.call('PEXPIRE', p .. 'req:' .. ARGV[1], ARGV[6])
  redis.call('ZADD', p .. 'dead', ARGV[7], ARGV[1])
else
  redis.call('DEL', p .. 'req:' .. ARGV[1])
end
redis.call('DECR', p .. 'depth')
redis.call('DECRBY', p .. 'bytes', ARGV[8])
return 1
";

const REVIVE: &str = r"
local p = KEYS[1]
if redis.call('ZREM', p .. 'dead', ARGV[1]) == 0 then return 0 end
redis.call('SET', p .. 'job:' .. ARGV[1], ARGV[2])
redis.call('PERSIST', p .. 'req:' .. ARGV[1])
redis.call('DEL', p .. 'res:' .. ARGV[1])
if ARGV[4] == '1' then redis.call('XADD', p .. 'stream', '*', 'id', ARGV[1]) end
redis.call('INCR', p .. 'depth')
redis.call('INCRBY', p .. 'bytes', ARGV[3])
return 1
";

/// Undoes an accept whose job the ready queue elsewhere did not take: the job's keys, its
/// share of the counts, and its idempotency key when it names this job.
const FORGET: &str = r"
local p = KEYS[1]
if redis.call('DEL', p .. 'job:' .. ARGV[1], p .. 'req:' .. ARGV[1]) == 0 then return 0 end
redis.call('DECR', p .. 'depth')
redis.call('DECRBY', p .. 'bytes', ARGV[2])
if ARGV[3] ~= '' then
  local v = redis.call('GET', p .. 'idem:' .. ARGV[3])
  if v and string.sub(v, 1, 32) == ARGV[1] then redis.call('DEL', p .. 'idem:' .. ARGV[3]) end
end
return 1
";

/// A handle on one queue in Redis; clones share the connection.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// `PREFIX{NAME}:`
    prefix: String,
    /// This instance's consumer name in the group.
    consumer: String,
    visibility: Duration,
    link: Link,
    /// The connection generation the consumer group was last made sure of on.
    group_on: std::sync::atomic::AtomicU64,
    /// Ready jobs are entries of the queue's stream; without it they are messages on a
    /// broker (RabbitMQ) and Redis keeps only their state.
    stream: bool,
}

/// One Redis connection, made on first use on a long-lived runtime and made again after it
/// broke; shared by the queues and the publishers on one deployment.
pub struct Link {
    timeout: Duration,
    deployment: RedisDeployment,
    /// Where the connection's driver runs (a runtime that lives as long as the gateway).
    runtime: tokio::runtime::Handle,
    current: ArcSwapOption<(Conn, u64)>,
    connecting: tokio::sync::Mutex<u64>,
}

impl Link {
    pub fn new(redis: &Redis, runtime: tokio::runtime::Handle) -> Link {
        Link {
            timeout: redis.timeout.max(Duration::from_secs(1)),
            deployment: redis.deployment.clone(),
            runtime,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    /// The connection and its generation (which changes with every new connection).
    async fn conn(&self) -> Result<(Conn, u64), QueueError> {
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        let mut made = self.connecting.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        let deployment = self.deployment.clone();
        let connect = self.runtime.spawn(connect(deployment));
        let conn = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| QueueError::Store("Redis did not answer in time".into()))?
            .map_err(err)??;
        *made += 1;
        self.current.store(Some(Arc::new((conn.clone(), *made))));
        Ok((conn, *made))
    }

    /// Runs `f` on the connection under the time limit; a broken connection is dropped
    /// so that the next call connects again.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let (conn, _) = self.conn().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    self.current.store(None);
                }
                Err(err(e))
            }
            Err(_) => {
                self.current.store(None);
                Err(QueueError::Store("Redis did not answer in time".into()))
            }
        }
    }
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The idempotency key's name (a digest of it), its time in milliseconds and the request's
/// fingerprint, as the scripts take them; empty without a key.
fn idempotency_args(idempotency: Option<&Idempotency>) -> (String, u64, String) {
    match idempotency {
        Some(i) => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, i.key.as_bytes());
            (
                hex(digest.as_ref()),
                i.ttl.as_millis() as u64,
                hex(&i.fingerprint),
            )
        }
        None => (String::new(), 0, String::new()),
    }
}

impl RedisQueue {
    /// A queue on `redis`; connects on first use.
    pub fn new(
        redis: &Redis,
        key_prefix: &str,
        name: &str,
        visibility: Duration,
        runtime: tokio::runtime::Handle,
    ) -> RedisQueue {
        RedisQueue::made(redis, key_prefix, name, visibility, runtime, true)
    }

    /// The state of a queue whose ready jobs a broker holds: jobs, requests, results, dead
    /// letters, idempotency keys and the bounds' counts, and no stream.
    pub fn state_only(
        redis: &Redis,
        key_prefix: &str,
        name: &str,
        runtime: tokio::runtime::Handle,
    ) -> RedisQueue {
        RedisQueue::made(redis, key_prefix, name, Duration::ZERO, runtime, false)
    }

    fn made(
        redis: &Redis,
        key_prefix: &str,
        name: &str,
        visibility: Duration,
        runtime: tokio::runtime::Handle,
        stream: bool,
    ) -> RedisQueue {
        RedisQueue {
            inner: Arc::new(Inner {
                prefix: format!("{key_prefix}{{{name}}}:"),
                consumer: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
                visibility,
                link: Link::new(redis, runtime),
                group_on: std::sync::atomic::AtomicU64::new(0),
                stream,
            }),
        }
    }

    /// `1` when ready jobs are entries of the stream (a script argument).
    fn stream_flag(&self) -> &'static str {
        match self.inner.stream {
            true => "1",
            false => "0",
        }
    }

    fn key(&self, what: &str, id: JobId) -> String {
        format!("{}{what}:{id}", self.inner.prefix)
    }

    /// Runs `f` on the connection, once the consumer group is sure to exist on it (made
    /// when a connection is new: the server may have restarted without its data).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        use std::sync::atomic::Ordering;
        let (_, generation) = self.inner.link.conn().await?;
        if self.inner.stream && self.inner.group_on.load(Ordering::Acquire) != generation {
            let stream = format!("{}stream", self.inner.prefix);
            // The group reads the stream from its start, so entries added before it
            // existed are delivered too.
            let made: Result<Value, QueueError> = self
                .inner
                .link
                .call(|mut c| async move {
                    let made: Result<Value, RedisError> = ::redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(stream)
                        .arg(GROUP)
                        .arg("0")
                        .arg("MKSTREAM")
                        .query_async(&mut c)
                        .await;
                    match made {
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(Value::Okay),
                        other => other,
                    }
                })
                .await;
            made?;
            self.inner.group_on.store(generation, Ordering::Release);
        }
        self.inner.link.call(f).await
    }

    pub async fn enqueue(
        &self,
        new: NewJob,
        id: JobId,
        now: u64,
        bounds: Bounds,
    ) -> Result<Enqueued, QueueError> {
        let job = super::new_job(&new, now);
        let job_bytes = postcard::to_allocvec(&job).map_err(err)?;
        let req_bytes = postcard::to_allocvec(&new.request).map_err(err)?;
        let (idem_key, idem_ttl, fingerprint) = idempotency_args(new.idempotency.as_ref());
        let prefix = self.inner.prefix.clone();
        let flag = self.stream_flag();
        let reply: Vec<Vec<u8>> = self
            .call(|mut c| async move {
                Script::new(ENQUEUE)
                    .key(prefix)
                    .arg(id.to_string())
                    .arg(job_bytes)
                    .arg(req_bytes)
                    .arg(job.size)
                    .arg(bounds.max_depth)
                    .arg(bounds.max_bytes)
                    .arg(idem_key)
                    .arg(idem_ttl.max(1))
                    .arg(fingerprint)
                    .arg(flag)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"new") => Ok(Enqueued::New(id, job)),
            Some(b"conflict") => Ok(Enqueued::Conflict),
            Some(b"full") => Err(QueueError::Full),
            Some(b"existing") => {
                let existing = reply
                    .get(1)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(JobId::parse)
                    .ok_or_else(|| err("malformed idempotency entry"))?;
                let job = postcard::from_bytes(reply.get(2).map_or(&[][..], Vec::as_slice))
                    .map_err(err)?;
                Ok(Enqueued::Existing(existing, job))
            }
            _ => Err(err("unexpected answer to an enqueue")),
        }
    }

    pub async fn claim(&self, n: usize, now: u64) -> Result<Claims, QueueError> {
        let prefix = self.inner.prefix.clone();
        let moved: Vec<String> = self
            .call(|mut c| async move {
                Script::new(MOVE_DUE)
                    .key(prefix)
                    .arg(now)
                    .arg(MOVE_AT_ONCE)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut claims = Claims {
            next_due: moved
                .first()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|d| d as u64),
            depth: moved.get(1).and_then(|s| s.parse().ok()),
            ..Claims::default()
        };
        let stream = format!("{}stream", self.inner.prefix);
        let consumer = self.inner.consumer.clone();
        let idle = self.inner.visibility.as_millis() as u64;
        // Entries an instance took and never finished (it died), then new ones.
        let (s, c2) = (stream.clone(), consumer.clone());
        let stale: Value = self
            .call(|mut c| async move {
                ::redis::cmd("XAUTOCLAIM")
                    .arg(s)
                    .arg(GROUP)
                    .arg(c2)
                    .arg(idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(n)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut entries = autoclaimed(&stale);
        if entries.len() < n {
            let want = n - entries.len();
            let fresh: Value = self
                .call(|mut c| async move {
                    ::redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(want)
                        .arg("STREAMS")
                        .arg(stream)
                        .arg(">")
                        .query_async(&mut c)
                        .await
                })
                .await?;
            entries.extend(read_group(&fresh));
        }
        // All at once, so that the connection pipelines them.
        let taken = entries
            .iter()
            .map(|(receipt, id)| self.take(*id, receipt, now));
        let taken = futures_util::future::join_all(taken).await;
        for ((receipt, _), took) in entries.iter().zip(taken) {
            match took? {
                Some(c) => claims.jobs.push(c),
                None => self.drop_entry(receipt).await?,
            }
        }
        Ok(claims)
    }

    /// Removes a job just stored whose ready message a broker refused (its request's size
    /// and idempotency key), as if it had never been accepted.
    pub async fn forget(
        &self,
        id: JobId,
        size: u64,
        idempotency: Option<&Idempotency>,
    ) -> Result<(), QueueError> {
        let (idem_key, _, _) = idempotency_args(idempotency);
        let prefix = self.inner.prefix.clone();
        self.call(|mut c| async move {
            Script::new(FORGET)
                .key(prefix)
                .arg(id.to_string())
                .arg(size)
                .arg(idem_key)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Jobs pending or running, as every instance counts them.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let key = format!("{}depth", self.inner.prefix);
        let depth: Option<u64> = self
            .call(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(depth.unwrap_or(0))
    }

    /// The job of a ready entry or message, marked running; `None` when it is gone or
    /// finished.
    pub async fn take(
        &self,
        id: JobId,
        receipt: &str,
        now: u64,
    ) -> Result<Option<Claimed>, QueueError> {
        let (jk, rk) = (self.key("job", id), self.key("req", id));
        let (job, req): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .call(|mut c| async move { ::redis::pipe().get(jk).get(rk).query_async(&mut c).await })
            .await?;
        let (Some(job), Some(req)) = (job, req) else {
            return Ok(None);
        };
        let mut job: Job = postcard::from_bytes(&job).map_err(err)?;
        if job.status.is_final() {
            return Ok(None);
        }
        let request: StoredRequest = postcard::from_bytes(&req).map_err(err)?;
        job.status = Status::Running;
        job.attempts += 1;
        job.updated_ms = now;
        let bytes = postcard::to_allocvec(&job).map_err(err)?;
        let jk = self.key("job", id);
        let () = self
            .call(|mut c| async move {
                ::redis::cmd("SET")
                    .arg(jk)
                    .arg(bytes)
                    .arg("KEEPTTL")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(Some(Claimed {
            id,
            job,
            request,
            receipt: receipt.to_owned(),
        }))
    }

    async fn drop_entry(&self, receipt: &str) -> Result<(), QueueError> {
        if receipt.is_empty() {
            return Ok(());
        }
        let stream = format!("{}stream", self.inner.prefix);
        let receipt = receipt.to_owned();
        self.call(|mut c| async move {
            ::redis::pipe()
                .cmd("XACK")
                .arg(&stream)
                .arg(GROUP)
                .arg(&receipt)
                .ignore()
                .cmd("XDEL")
                .arg(&stream)
                .arg(&receipt)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub async fn finish(
        &self,
        id: JobId,
        receipt: &str,
        outcome: Outcome,
        now: u64,
        ttl: Duration,
    ) -> Result<Option<Job>, QueueError> {
        let Some(mut job) = self.job(id).await? else {
            self.drop_entry(receipt).await?;
            return Ok(None);
        };
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let (kind, score, response) = super::apply_outcome(&mut job, outcome, now);
        let score = match kind {
            "dead" => now.saturating_add(ttl_ms),
            _ => score,
        };
        let job_bytes = postcard::to_allocvec(&job).map_err(err)?;
        let res_bytes = match &response {
            Some(r) => postcard::to_allocvec(r).map_err(err)?,
            None => Vec::new(),
        };
        let prefix = self.inner.prefix.clone();
        let receipt = receipt.to_owned();
        let size = job.size;
        let _: i64 = self
            .call(|mut c| async move {
                Script::new(FINISH)
                    .key(prefix)
                    .arg(id.to_string())
                    .arg(receipt)
                    .arg(kind)
                    .arg(job_bytes)
                    .arg(res_bytes)
                    .arg(ttl_ms)
                    .arg(score)
                    .arg(size)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(Some(job))
    }

    pub async fn revive(&self, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
        let Some(mut job) = self.job(id).await? else {
            return Ok(None);
        };
        if !job.dead {
            return Ok(None);
        }
        super::revived(&mut job, now);
        let bytes = postcard::to_allocvec(&job).map_err(err)?;
        let prefix = self.inner.prefix.clone();
        let size = job.size;
        let flag = self.stream_flag();
        let done: i64 = self
            .call(|mut c| async move {
                Script::new(REVIVE)
                    .key(prefix)
                    .arg(id.to_string())
                    .arg(bytes)
                    .arg(size)
                    .arg(flag)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((done == 1).then_some((job, size)))
    }

    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        let dead = format!("{}dead", self.inner.prefix);
        let keys = [
            self.key("job", id),
            self.key("req", id),
            self.key("res", id),
        ];
        let removed: i64 = self
            .call(|mut c| async move {
                ::redis::cmd("ZREM")
                    .arg(dead)
                    .arg(id.to_string())
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if removed == 0 {
            return Ok(false);
        }
        self.call(|mut c| async move {
            ::redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        Ok(true)
    }

    /// Dead letters whose time is up leave the list (their keys expire by themselves).
    pub async fn sweep(&self, now: u64) -> Result<u64, QueueError> {
        let dead = format!("{}dead", self.inner.prefix);
        let removed: u64 = self
            .call(|mut c| async move {
                ::redis::cmd("ZREMRANGEBYSCORE")
                    .arg(dead)
                    .arg("-inf")
                    .arg(now)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(removed)
    }

    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        self.decoded("job", id).await
    }

    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        self.decoded("res", id).await
    }

    /// The value of the job's key `what`, decoded; `None` when the key is gone.
    async fn decoded<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        id: JobId,
    ) -> Result<Option<T>, QueueError> {
        let key = self.key(what, id);
        let bytes: Option<Vec<u8>> = self
            .call(|mut c| async move { ::redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        bytes
            .map(|b| postcard::from_bytes(&b).map_err(err))
            .transpose()
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        let dead = format!("{}dead", self.inner.prefix);
        let ids: Vec<String> = self
            .call(|mut c| async move {
                ::redis::cmd("ZRANGE")
                    .arg(dead)
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for id in ids.iter().filter_map(|s| JobId::parse(s)) {
            if let Some(job) = self.job(id).await? {
                out.push((id, job));
            }
        }
        Ok(out)
    }
}

async fn connect(deployment: RedisDeployment) -> Result<Conn, QueueError> {
    match deployment {
        RedisDeployment::Standalone(url) => ::redis::Client::open(url.as_str())
            .map_err(err)?
            .get_multiplexed_async_connection()
            .await
            .map(Conn::Single)
            .map_err(err),
        RedisDeployment::Cluster(urls) => ::redis::cluster::ClusterClient::new(urls)
            .map_err(err)?
            .get_async_connection()
            .await
            .map(Conn::Cluster)
            .map_err(err),
        RedisDeployment::Sentinel { .. } => Err(QueueError::Store(
            "queues do not support Redis Sentinel yet".into(),
        )),
    }
}

/// `(entry id, job id)` of the entries an `XAUTOCLAIM` took.
fn autoclaimed(v: &Value) -> Vec<(String, JobId)> {
    match v {
        Value::Array(parts) => parts.get(1).map(entries).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `(entry id, job id)` of the entries an `XREADGROUP` read.
fn read_group(v: &Value) -> Vec<(String, JobId)> {
    let Value::Array(streams) = v else {
        return Vec::new();
    };
    streams
        .iter()
        .filter_map(|s| match s {
            Value::Array(pair) => pair.get(1).map(entries),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Stream entries `[[entry id, [field, value, …]], …]` whose field `id` names a job.
fn entries(v: &Value) -> Vec<(String, JobId)> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let Value::Array(e) = e else { return None };
            let receipt = text(e.first()?)?;
            let Value::Array(fields) = e.get(1)? else {
                return None;
            };
            let id = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("id"))
                .and_then(|kv| text(kv.get(1)?))
                .and_then(|s| JobId::parse(&s))?;
            Some((receipt, id))
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
