//! File types of queued routes: the top-level `queues` and a route's `queue` block.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{ByteSize, Unknown};

/// `queues.NAME`: a durable job queue that `queue` routes store accepted requests in, and
/// whose dispatchers deliver them to the route's upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JobQueue {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Where jobs are kept: `embedded` (default), a file on this machine's disk written and
    /// synced before the 202 is sent; `redis`, Redis Streams on the top-level `redis`,
    /// shared by every gateway instance; `nats`, NATS JetStream at `nats_url`, shared by
    /// every gateway instance; `rabbitmq`, a durable queue on the top-level `rabbitmq` with
    /// the jobs' state in the top-level `redis`, shared by every gateway instance.
    #[serde(default)]
    pub backend: Option<String>,
    /// `embedded`: the directory of the queue's file, relative to the config file's
    /// directory (default `data/queues`).
    #[serde(default)]
    pub path: Option<String>,
    /// Jobs delivered at the same time (default 4): bursts wait in the queue instead.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Time limit of one delivery attempt, response body included (default 5m).
    #[serde(default)]
    pub attempt_timeout: Option<String>,
    /// Delivery attempts before a job is dead-lettered (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry (default 1s); doubled per attempt, with full jitter.
    #[serde(default)]
    pub retry_delay: Option<String>,
    /// Longest delay between attempts (default 5m).
    #[serde(default)]
    pub max_retry_delay: Option<String>,
    /// Upstream statuses that are retried like a connection error (default 429, 502, 503,
    /// 504); any other answer ends the job.
    #[serde(default)]
    pub retry_statuses: Option<Vec<u16>>,
    /// Jobs pending or running at most (default 100000); more get 503 with `Retry-After`.
    #[serde(default)]
    pub max_depth: Option<u64>,
    /// Bytes of pending and running requests at most (default 256MiB).
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// How long a finished job, its result and a dead letter are kept (default 24h).
    #[serde(default)]
    pub result_ttl: Option<String>,
    /// Bytes of an upstream response body kept as a job's result (default 1MiB); a longer
    /// body is cut there and the result says so.
    #[serde(default)]
    pub max_result_bytes: Option<ByteSize>,
    /// How long an `Idempotency-Key` names its job (default 24h).
    #[serde(default)]
    pub idempotency_ttl: Option<String>,
    /// `redis`: prefix of the queue's keys (default `ferrogate:queue:`); `nats`: prefix of
    /// the queue's stream and key-value bucket names, letters, digits, `-` and `_` (default
    /// `ferrogate-queue-`); `rabbitmq`: prefix of the broker's queue names and of the Redis
    /// keys (default `ferrogate:queue:`).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// `redis`, `nats`: a job an instance took and has not finished after this long is taken over
    /// by another instance (default: `attempt_timeout` plus 30s).
    #[serde(default)]
    pub visibility_timeout: Option<String>,
    /// `nats`: the NATS server, `nats://HOST:PORT` (or `tls://HOST:PORT`), with JetStream
    /// enabled.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// A signed POST of each finished job's result to a URL.
    #[serde(default)]
    pub callback: Option<Callback>,
}

/// `queues.NAME.callback`: when a job is finished, its result is POSTed, signed with
/// HMAC-SHA256, to `url` or to the URL the client gave in `Callback-Url` (only when it
/// starts with one of `allow`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Callback {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Where results go when the client names no URL.
    #[serde(default)]
    pub url: Option<String>,
    /// URL prefixes (`https://hooks.example.com/`) a client's `Callback-Url` may start with;
    /// without any, clients cannot name one.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The signing key.
    #[serde(default)]
    pub secret: Option<String>,
    /// Or: the environment variable that holds the signing key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// POSTs tried at most (default 5), with backoff between them.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Time limit of one POST (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A route's `queue`: accepted requests are stored and answered with `202 Accepted`, and
/// delivered to the route's upstream later.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RouteQueue {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// One of the top-level `queues`.
    #[serde(default)]
    pub name: String,
    /// The path under which the gateway answers for this route's jobs:
    /// `STATUS_PATH/ID`, `…/ID/result`, `…/ID/events` (default `/jobs/<queue name>`).
    #[serde(default)]
    pub status_path: Option<String>,
}

/// `rabbitmq`: the RabbitMQ broker that `rabbitmq` queues and publish routes to an exchange
/// use.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RabbitMq {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The broker, `amqp://USER:PASS@HOST:PORT/VHOST` (or `amqps://…`).
    #[serde(default)]
    pub url: String,
}

/// A route's `publish`: the request is written to a Redis stream (on the top-level
/// `redis`), a NATS JetStream subject or a RabbitMQ exchange (on the top-level `rabbitmq`)
/// and answered `202 Accepted` once stored; the team's own workers read it. Exactly one of
/// `redis_stream`, `nats_subject` and `rabbitmq_exchange`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Publish {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The Redis stream's key.
    #[serde(default)]
    pub redis_stream: String,
    /// The NATS subject, captured by a JetStream stream (the 202 follows its ack).
    #[serde(default)]
    pub nats_subject: Option<String>,
    /// With `nats_subject`: the NATS server, `nats://HOST:PORT` (or `tls://HOST:PORT`).
    #[serde(default)]
    pub nats_url: Option<String>,
    /// The RabbitMQ exchange (`""`: the default exchange); the 202 follows the broker's
    /// confirm, and a message no queue takes is refused.
    #[serde(default)]
    pub rabbitmq_exchange: Option<String>,
    /// With `rabbitmq_exchange`: the routing key (default `""`).
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Request fields written with the message (default `[content-type]`).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// `redis_stream`: trim the stream to about this many messages (default: no trimming).
    #[serde(default)]
    pub max_len: Option<u64>,
}
