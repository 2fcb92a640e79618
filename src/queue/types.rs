//! What a queue stores: jobs (a request and its state), results, and what a delivery
//! attempt ended with.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::QueueError;

/// A job's id: the millisecond it was made (48 bits) then 80 random bits, written as 32
/// lower-case hex digits. The random part keeps ids unguessable; the time in front keeps the
/// ids of jobs accepted together next to each other in a store's key order, so that a
/// batch of them changes a few pages of the embedded store rather than one page per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub u128);

impl JobId {
    /// A new id for a job made at `now_ms`, its random part from the system's source.
    pub fn new(now_ms: u64) -> JobId {
        let mut bytes = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system source failing is not expected; fall back to the process's
            // generator rather than refusing the job.
            bytes = fastrand::u128(..).to_le_bytes();
        }
        let random = u128::from_le_bytes(bytes) & ((1u128 << 80) - 1);
        let time = u128::from(now_ms & ((1u64 << 48) - 1));
        JobId(time << 80 | random)
    }

    /// The id written as 32 hex digits, or `None`.
    pub fn parse(s: &str) -> Option<JobId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(JobId)
    }
}

impl JobId {
    /// The id's 32 lower-case hex digits, without formatting machinery.
    pub fn hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (124 - 4 * i)) & 0xf;
            *slot = DIGITS[nibble as usize];
        }
        out
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its first or next attempt.
    Pending,
    /// An attempt is under way.
    Running,
    /// The upstream answered with a status that is not retried and below 400.
    Succeeded,
    /// The upstream answered 400 or more (not retried), or the attempts ran out.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    /// No attempt will follow (a dead letter may still be retried by an operator).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed)
    }
}

/// A job's state: what status pages show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub status: Status,
    /// Attempts started so far.
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When the next attempt is due (pending jobs).
    pub next_ms: u64,
    /// The consumer that created the job, when its route authenticates consumers.
    pub owner: Option<String>,
    /// The route that accepted the job (its name) and where its status lives.
    pub route: String,
    pub status_path: String,
    /// The attempts ran out: the job is in the dead-letter list.
    pub dead: bool,
    /// Why the last attempt failed, when it did.
    pub error: Option<String>,
    /// The upstream's status, once the job is finished with a response.
    pub result_status: Option<u16>,
    /// Bytes of the stored request (counted against `max_bytes` while pending or running).
    pub size: u64,
    /// Where the result is POSTed once the job is finished.
    pub callback: Option<String>,
}

/// A header field as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The request of a job, as the client sent it (after the gateway's checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: Vec<Field>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The client's socket address (`IP:PORT`), the listener it came in on, and whether
    /// its connection was TLS: delivery forwards it as the client's request.
    pub peer: String,
    pub listener: u32,
    pub tls: bool,
    /// The request id the 202 carried; delivery sends the same one.
    pub request_id: String,
}

impl StoredRequest {
    /// Bytes counted against the queue's `max_bytes`.
    pub fn size(&self) -> u64 {
        let fields: usize = self
            .headers
            .iter()
            .map(|f| f.name.len() + f.value.len())
            .sum();
        (self.body.len() + fields + self.uri.len()) as u64
    }
}

/// An upstream response kept as a job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<Field>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The body was longer than `max_result_bytes` and is cut there.
    pub truncated: bool,
}

/// A job to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub request: StoredRequest,
    pub owner: Option<String>,
    pub route: String,
    pub status_path: String,
    /// Where the result is POSTed once the job is finished.
    pub callback: Option<String>,
    /// The request's `Idempotency-Key` (scoped to its owner), what identifies the request it
    /// came with (a digest of method, target and body), and how long the key holds.
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 32],
    pub ttl: Duration,
}

/// What storing a job did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new job, durable now.
    New(JobId, Job),
    /// The idempotency key names this job already, created by the same request.
    Existing(JobId, Job),
    /// The idempotency key names a job created by a different request.
    Conflict,
}

/// Jobs taken for delivery, and when the next one is due when none is now.
#[derive(Debug, Default)]
pub struct Claims {
    pub jobs: Vec<Claimed>,
    /// Due time of the first job still waiting (`now` or later when none was taken).
    pub next_due: Option<u64>,
    /// Due time of the oldest job that is due but was not taken (for the age metric).
    pub oldest_due: Option<u64>,
    /// Jobs pending or running in the whole queue, when the backend counts them for every
    /// instance (Redis).
    pub depth: Option<u64>,
}

/// A job taken for an attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: JobId,
    pub job: Job,
    pub request: StoredRequest,
    /// What the backend needs to let go of the job when the attempt ends (the Redis
    /// stream entry; empty for the embedded backend).
    pub receipt: String,
}

/// A delivery attempt that ended, and how: what a dispatcher hands back to its queue.
#[derive(Debug)]
pub struct Ended {
    pub claimed: Claimed,
    pub outcome: Outcome,
}

/// What one dispatcher turn recorded and took.
#[derive(Debug)]
pub struct Turned {
    /// Per ended attempt, in the order given: the job and its new state (`None`: the job
    /// is gone), or why the end could not be recorded (the job then runs again).
    pub finished: Vec<(JobId, Result<Option<Job>, QueueError>)>,
    /// The jobs taken, or why none could be.
    pub claims: Result<Claims, QueueError>,
}

impl Turned {
    /// A turn of which nothing was recorded nor taken.
    pub fn failed(ids: impl Iterator<Item = JobId>, why: &str) -> Turned {
        Turned {
            finished: ids
                .map(|id| (id, Err(QueueError::Store(why.to_owned()))))
                .collect(),
            claims: Err(QueueError::Store(why.to_owned())),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The upstream answered with a status that is not retried: the job is finished
    /// (succeeded below 400, failed otherwise) with this response as its result.
    Answered(StoredResponse),
    /// Try again at this time (milliseconds since the epoch).
    Retry { at_ms: u64, error: String },
    /// The attempts ran out: the job is dead-lettered, with the last response if any.
    Dead {
        error: String,
        response: Option<StoredResponse>,
    },
}

/// Outcome names in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Succeeded,
    Failed,
    Retried,
    Dead,
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Answered(r) if r.status < 400 => OutcomeKind::Succeeded,
            Outcome::Answered(_) => OutcomeKind::Failed,
            Outcome::Retry { .. } => OutcomeKind::Retried,
            Outcome::Dead { .. } => OutcomeKind::Dead,
        }
    }
}
