//! The `embedded` backend: one redb file per queue in the queue's directory.
//!
//! redb (a pure-Rust, copy-on-write B-tree store with ACID transactions) was chosen over
//! an LSM store such as fjall because a queue's working set is small and short-lived (jobs
//! are written, read once, finished and swept), which a B-tree with in-place page reuse
//! keeps compact without compaction, and because every change here touches several tables
//! at once (the job, its place in the ready order, its idempotency key), which redb commits
//! in one transaction. Its commits are durable (fsync) when they return.
//!
//! Every write goes through one writer thread, which takes every command waiting and
//! commits them in one transaction: accepts arriving together share one sync (group
//! commit). Accepts and operator changes are committed durably; claims and attempt outcomes
//! are not synced on their own (a crash can only forget that a job was taken or finished,
//! so it runs again: delivery is at least once) and become durable with the next synced
//! commit. Reads (status pages, results) take a read transaction on the caller's thread.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition,
};
use tokio::sync::oneshot;

use super::{
    Claimed, Claims, Ended, Enqueued, Job, JobId, NewJob, Outcome, QueueError, Status,
    StoredRequest, StoredResponse, Turned,
};

/// Job id → `Job` (postcard).
const JOBS: TableDefinition<u128, &[u8]> = TableDefinition::new("jobs");
/// Job id → `StoredRequest` (postcard), while the job may still be delivered.
const REQUESTS: TableDefinition<u128, &[u8]> = TableDefinition::new("requests");
/// Job id → `StoredResponse` (postcard) of a finished job.
const RESULTS: TableDefinition<u128, &[u8]> = TableDefinition::new("results");
/// (due time, job id): pending jobs in the order they are due.
const READY: TableDefinition<(u64, u128), ()> = TableDefinition::new("ready");
/// (expiry time, job id): finished jobs, removed with their results when it passes.
const EXPIRY: TableDefinition<(u64, u128), ()> = TableDefinition::new("expiry");
/// Dead-lettered jobs.
const DEAD: TableDefinition<u128, ()> = TableDefinition::new("dead");
/// Owner-scoped idempotency key → job id (16 bytes LE), request fingerprint (32), expiry (8 LE).
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// (expiry time, key): idempotency keys in the order they expire.
const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// Commands taken together in one transaction at most.
const MAX_BATCH: usize = 1024;

/// What the store holds at open.
pub struct Counts {
    pub depth: u64,
    pub bytes: u64,
    pub dead: u64,
}

/// A handle on one queue's file; clones share the writer thread.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    writer: mpsc::Sender<Command>,
}

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

enum Command {
    Enqueue(Box<NewJob>, JobId, u64, Reply<Enqueued>),
    /// Attempts that ended, recorded, then up to `n` due jobs taken.
    Turn(Vec<Ended>, usize, u64, Duration, oneshot::Sender<Turned>),
    Revive(JobId, u64, Reply<Option<(Job, u64)>>),
    DeleteDead(JobId, Reply<bool>),
    Sweep(u64, Reply<u64>),
}

impl Command {
    /// Whether the command's commit must be synced before it is answered.
    fn durable(&self) -> bool {
        matches!(
            self,
            Command::Enqueue(..) | Command::Revive(..) | Command::DeleteDead(..)
        )
    }
}

fn store_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, QueueError> {
    postcard::to_allocvec(v).map_err(store_err)
}

fn decode<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T, QueueError> {
    postcard::from_bytes(b).map_err(store_err)
}

impl Embedded {
    /// Opens or creates `dir/NAME.redb`; running jobs become pending again (their attempt
    /// ended with the process that made it).
    pub fn open(dir: &Path, name: &str, now: u64) -> Result<(Embedded, Counts), QueueError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{name}.redb"));
        let db = Database::create(&path)
            .map_err(|e| QueueError::Store(format!("cannot open {}: {e}", path.display())))?;
        let counts = recover(&db, now)?;
        let db = Arc::new(db);
        let (writer, commands) = mpsc::channel();
        let for_thread = db.clone();
        std::thread::Builder::new()
            .name(format!("ferrogate-queue-{name}"))
            .spawn(move || write_loop(&for_thread, &commands))
            .map_err(store_err)?;
        Ok((Embedded { db, writer }, counts))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .map_err(|_| QueueError::Store("the queue's writer has stopped".into()))?;
        rx.await
            .map_err(|_| QueueError::Store("the queue's writer has stopped".into()))?
    }

    pub async fn enqueue(&self, new: NewJob, id: JobId, now: u64) -> Result<Enqueued, QueueError> {
        self.call(|r| Command::Enqueue(Box::new(new), id, now, r))
            .await
    }

    /// Records the attempts that ended and takes up to `n` due jobs, in one transaction
    /// (not synced on its own: a crash forgets it, and the jobs run again).
    pub async fn turn(&self, ended: Vec<Ended>, n: usize, now: u64, ttl: Duration) -> Turned {
        const STOPPED: &str = "the queue's writer has stopped";
        let ids: Vec<JobId> = ended.iter().map(|e| e.claimed.id).collect();
        let (tx, rx) = oneshot::channel();
        if self
            .writer
            .send(Command::Turn(ended, n, now, ttl, tx))
            .is_err()
        {
            return Turned::failed(ids.into_iter(), STOPPED);
        }
        rx.await
            .unwrap_or_else(|_| Turned::failed(ids.into_iter(), STOPPED))
    }

    pub async fn revive(&self, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
        self.call(|r| Command::Revive(id, now, r)).await
    }

    pub async fn delete_dead(&self, id: JobId) -> Result<bool, QueueError> {
        self.call(|r| Command::DeleteDead(id, r)).await
    }

    pub async fn sweep(&self, now: u64) -> Result<u64, QueueError> {
        self.call(|r| Command::Sweep(now, r)).await
    }

    /// The job, until the sweep after its time is up removes it.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        let read = self.db.begin_read().map_err(store_err)?;
        let jobs = read.open_table(JOBS).map_err(store_err)?;
        let Some(bytes) = jobs.get(id.0).map_err(store_err)? else {
            return Ok(None);
        };
        decode(bytes.value()).map(Some)
    }

    pub async fn result(&self, id: JobId) -> Result<Option<StoredResponse>, QueueError> {
        let read = self.db.begin_read().map_err(store_err)?;
        let results = read.open_table(RESULTS).map_err(store_err)?;
        let found = results.get(id.0).map_err(store_err)?;
        found.map(|b| decode(b.value())).transpose()
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(JobId, Job)>, QueueError> {
        let read = self.db.begin_read().map_err(store_err)?;
        let dead = read.open_table(DEAD).map_err(store_err)?;
        let jobs = read.open_table(JOBS).map_err(store_err)?;
        let mut out = Vec::new();
        for entry in dead.iter().map_err(store_err)?.take(limit) {
            let (id, _) = entry.map_err(store_err)?;
            if let Some(job) = jobs.get(id.value()).map_err(store_err)? {
                out.push((JobId(id.value()), decode::<Job>(job.value())?));
            }
        }
        out.sort_by_key(|(_, j)| j.updated_ms);
        Ok(out)
    }
}

/// Makes running jobs pending again and counts what the file holds.
fn recover(db: &Database, now: u64) -> Result<Counts, QueueError> {
    let write = db.begin_write().map_err(store_err)?;
    let mut counts = Counts {
        depth: 0,
        bytes: 0,
        dead: 0,
    };
    {
        let mut jobs = write.open_table(JOBS).map_err(store_err)?;
        let mut ready = write.open_table(READY).map_err(store_err)?;
        // Opened so that read transactions find every table.
        write.open_table(REQUESTS).map_err(store_err)?;
        write.open_table(RESULTS).map_err(store_err)?;
        write.open_table(EXPIRY).map_err(store_err)?;
        counts.dead = write
            .open_table(DEAD)
            .map_err(store_err)?
            .len()
            .map_err(store_err)?;
        write.open_table(IDEMPOTENCY).map_err(store_err)?;
        write.open_table(IDEMPOTENCY_EXPIRY).map_err(store_err)?;
        let mut interrupted = Vec::new();
        for entry in jobs.iter().map_err(store_err)? {
            let (id, bytes) = entry.map_err(store_err)?;
            let job: Job = decode(bytes.value())?;
            if !job.status.is_final() {
                counts.depth += 1;
                counts.bytes += job.size;
            }
            if job.status == Status::Running {
                interrupted.push((id.value(), job));
            }
        }
        for (id, mut job) in interrupted {
            job.status = Status::Pending;
            job.next_ms = now;
            job.updated_ms = now;
            jobs.insert(id, encode(&job)?.as_slice())
                .map_err(store_err)?;
            ready.insert((now, id), ()).map_err(store_err)?;
        }
    }
    write.commit().map_err(store_err)?;
    Ok(counts)
}

/// The writer thread: every waiting command in one transaction, then their answers.
fn write_loop(db: &Database, commands: &mpsc::Receiver<Command>) {
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        // The first command wakes this thread, often while its sender's thread still has
        // more to send (the answers of the last commit woke many requests at once). Giving
        // way until a round brings nothing new puts them all in this transaction and its one
        // sync, rather than one small commit followed by a large one.
        loop {
            std::thread::yield_now();
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() >= MAX_BATCH {
                break;
            }
        }
        run_batch(db, batch);
    }
}

/// An answer waiting for its transaction's commit.
enum Answer {
    Enqueue(Reply<Enqueued>, Result<Enqueued, QueueError>),
    Turn(oneshot::Sender<Turned>, Turned),
    Revive(
        Reply<Option<(Job, u64)>>,
        Result<Option<(Job, u64)>, QueueError>,
    ),
    DeleteDead(Reply<bool>, Result<bool, QueueError>),
    Sweep(Reply<u64>, Result<u64, QueueError>),
}

impl Answer {
    /// Sends the answer, or the commit's failure instead of a success.
    fn send(self, failed: Option<&str>) {
        fn pick<T>(r: Result<T, QueueError>, failed: Option<&str>) -> Result<T, QueueError> {
            match failed {
                Some(e) => Err(QueueError::Store(e.to_owned())),
                None => r,
            }
        }
        // A caller that went away is not the store's concern.
        match self {
            Answer::Enqueue(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Turn(tx, t) => drop(tx.send(match failed {
                Some(e) => Turned::failed(t.finished.into_iter().map(|(id, _)| id), e),
                None => t,
            })),
            Answer::Revive(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::DeleteDead(tx, r) => drop(tx.send(pick(r, failed))),
            Answer::Sweep(tx, r) => drop(tx.send(pick(r, failed))),
        }
    }
}

fn run_batch(db: &Database, batch: Vec<Command>) {
    let durable = batch.iter().any(Command::durable);
    let mut write = match db.begin_write() {
        Ok(w) => w,
        Err(e) => {
            let e = e.to_string();
            for c in batch {
                answer_unrun(c, &e);
            }
            return;
        }
    };
    if !durable {
        // Claims and outcomes alone: a crash forgets them, and the jobs run again.
        let _ = write.set_durability(Durability::None);
    }
    let mut answers = Vec::with_capacity(batch.len());
    match Tables::open(&write) {
        Ok(mut t) => {
            for c in batch {
                answers.push(apply(&mut t, c));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for c in batch {
                answer_unrun(c, &e);
            }
            return;
        }
    }
    let failed = write.commit().err().map(|e| e.to_string());
    for a in answers {
        a.send(failed.as_deref());
    }
}

/// Answers a command that never ran.
fn answer_unrun(c: Command, e: &str) {
    let err = QueueError::Store(e.to_owned());
    let answer = match c {
        Command::Enqueue(_, _, _, tx) => Answer::Enqueue(tx, Err(err)),
        Command::Turn(ended, _, _, _, tx) => {
            let ids = ended.iter().map(|e| e.claimed.id);
            Answer::Turn(tx, Turned::failed(ids, e))
        }
        Command::Revive(_, _, tx) => Answer::Revive(tx, Err(err)),
        Command::DeleteDead(_, tx) => Answer::DeleteDead(tx, Err(err)),
        Command::Sweep(_, tx) => Answer::Sweep(tx, Err(err)),
    };
    answer.send(None);
}

/// Every table of the file, opened once for a whole batch of commands (opening one is a
/// lookup in the file's table tree and, when it closes, a write back to it).
struct Tables<'t> {
    jobs: Table<'t, u128, &'static [u8]>,
    requests: Table<'t, u128, &'static [u8]>,
    results: Table<'t, u128, &'static [u8]>,
    ready: Table<'t, (u64, u128), ()>,
    expiry: Table<'t, (u64, u128), ()>,
    dead: Table<'t, u128, ()>,
    idempotency: Table<'t, &'static str, &'static [u8]>,
    idempotency_expiry: Table<'t, (u64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(w: &'t redb::WriteTransaction) -> Result<Tables<'t>, QueueError> {
        Ok(Tables {
            jobs: w.open_table(JOBS).map_err(store_err)?,
            requests: w.open_table(REQUESTS).map_err(store_err)?,
            results: w.open_table(RESULTS).map_err(store_err)?,
            ready: w.open_table(READY).map_err(store_err)?,
            expiry: w.open_table(EXPIRY).map_err(store_err)?,
            dead: w.open_table(DEAD).map_err(store_err)?,
            idempotency: w.open_table(IDEMPOTENCY).map_err(store_err)?,
            idempotency_expiry: w.open_table(IDEMPOTENCY_EXPIRY).map_err(store_err)?,
        })
    }
}

fn apply(w: &mut Tables<'_>, c: Command) -> Answer {
    match c {
        Command::Enqueue(new, id, now, tx) => Answer::Enqueue(tx, enqueue(w, *new, id, now)),
        Command::Turn(ended, n, now, ttl, tx) => {
            let finished = ended
                .into_iter()
                .map(|e| (e.claimed.id, finish(w, e.claimed.id, e.outcome, now, ttl)))
                .collect();
            let claims = match n {
                0 => Ok(Claims::default()),
                _ => claim(w, n, now),
            };
            Answer::Turn(tx, Turned { finished, claims })
        }
        Command::Revive(id, now, tx) => Answer::Revive(tx, revive(w, id, now)),
        Command::DeleteDead(id, tx) => Answer::DeleteDead(tx, delete_dead(w, id)),
        Command::Sweep(now, tx) => Answer::Sweep(tx, sweep(w, now)),
    }
}

fn enqueue(w: &mut Tables<'_>, new: NewJob, id: JobId, now: u64) -> Result<Enqueued, QueueError> {
    let jobs = &mut w.jobs;
    if let Some(idem) = &new.idempotency {
        let keys = &mut w.idempotency;
        let found = keys
            .get(idem.key.as_str())
            .map_err(store_err)?
            .map(|v| v.value().to_vec());
        if let Some(v) = found {
            let (existing, fingerprint, expires) = idempotency_value(&v)?;
            if expires > now {
                if fingerprint != idem.fingerprint {
                    return Ok(Enqueued::Conflict);
                }
                if let Some(b) = jobs.get(existing).map_err(store_err)? {
                    return Ok(Enqueued::Existing(JobId(existing), decode(b.value())?));
                }
            }
        }
        let expires = now.saturating_add(idem.ttl.as_millis() as u64);
        let mut value = Vec::with_capacity(56);
        value.extend_from_slice(&id.0.to_le_bytes());
        value.extend_from_slice(&idem.fingerprint);
        value.extend_from_slice(&expires.to_le_bytes());
        keys.insert(idem.key.as_str(), value.as_slice())
            .map_err(store_err)?;
        let order = &mut w.idempotency_expiry;
        order
            .insert((expires, idem.key.as_str()), ())
            .map_err(store_err)?;
    }
    let job = super::new_job(&new, now);
    jobs.insert(id.0, encode(&job)?.as_slice())
        .map_err(store_err)?;
    let requests = &mut w.requests;
    requests
        .insert(id.0, encode(&new.request)?.as_slice())
        .map_err(store_err)?;
    let ready = &mut w.ready;
    ready.insert((now, id.0), ()).map_err(store_err)?;
    Ok(Enqueued::New(id, job))
}

fn idempotency_value(v: &[u8]) -> Result<(u128, [u8; 32], u64), QueueError> {
    let bad = || QueueError::Store("malformed idempotency entry".into());
    let id = u128::from_le_bytes(v.get(..16).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let fp: [u8; 32] = v
        .get(16..48)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let exp = u64::from_le_bytes(
        v.get(48..56)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    Ok((id, fp, exp))
}

fn claim(w: &mut Tables<'_>, n: usize, now: u64) -> Result<Claims, QueueError> {
    let ready = &mut w.ready;
    let jobs = &mut w.jobs;
    let requests = &w.requests;
    let mut claims = Claims::default();
    while claims.jobs.len() < n {
        let first = ready.first().map_err(store_err)?.map(|(k, _)| k.value());
        let Some((due, id)) = first else {
            break;
        };
        if due > now {
            break;
        }
        ready.remove((due, id)).map_err(store_err)?;
        let job = jobs
            .get(id)
            .map_err(store_err)?
            .map(|b| decode::<Job>(b.value()));
        let request = requests
            .get(id)
            .map_err(store_err)?
            .map(|b| decode::<StoredRequest>(b.value()));
        let (Some(job), Some(request)) = (job, request) else {
            // An order entry without its job (deleted): nothing to run.
            continue;
        };
        let (mut job, request) = (job?, request?);
        job.status = Status::Running;
        job.attempts += 1;
        job.updated_ms = now;
        jobs.insert(id, encode(&job)?.as_slice())
            .map_err(store_err)?;
        claims.jobs.push(Claimed {
            id: JobId(id),
            job,
            request,
            receipt: String::new(),
        });
    }
    let next = ready.first().map_err(store_err)?.map(|(k, _)| k.value().0);
    match next {
        Some(due) if due <= now => claims.oldest_due = Some(due),
        _ => {}
    }
    claims.next_due = next;
    Ok(claims)
}

fn finish(
    w: &mut Tables<'_>,
    id: JobId,
    outcome: Outcome,
    now: u64,
    ttl: Duration,
) -> Result<Option<Job>, QueueError> {
    let jobs = &mut w.jobs;
    let Some(mut job) = jobs
        .get(id.0)
        .map_err(store_err)?
        .map(|b| decode::<Job>(b.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    job.updated_ms = now;
    let expires = now.saturating_add(ttl.as_millis() as u64);
    let results = &mut w.results;
    let requests = &mut w.requests;
    let expiry = &mut w.expiry;
    let (kind, at_ms, response) = super::apply_outcome(&mut job, outcome, now);
    if let Some(response) = &response {
        results
            .insert(id.0, encode(response)?.as_slice())
            .map_err(store_err)?;
    }
    match kind {
        "retry" => {
            let ready = &mut w.ready;
            ready.insert((at_ms, id.0), ()).map_err(store_err)?;
        }
        "dead" => {
            // The request stays, so that an operator can send the job again.
            let dead = &mut w.dead;
            dead.insert(id.0, ()).map_err(store_err)?;
            expiry.insert((expires, id.0), ()).map_err(store_err)?;
        }
        _ => {
            requests.remove(id.0).map_err(store_err)?;
            expiry.insert((expires, id.0), ()).map_err(store_err)?;
        }
    }
    jobs.insert(id.0, encode(&job)?.as_slice())
        .map_err(store_err)?;
    Ok(Some(job))
}

/// A dead letter back to pending, its attempts reset; its size is counted again.
fn revive(w: &mut Tables<'_>, id: JobId, now: u64) -> Result<Option<(Job, u64)>, QueueError> {
    let dead = &mut w.dead;
    if dead.remove(id.0).map_err(store_err)?.is_none() {
        return Ok(None);
    }
    let jobs = &mut w.jobs;
    let Some(mut job) = jobs
        .get(id.0)
        .map_err(store_err)?
        .map(|b| decode::<Job>(b.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    let expiry = &mut w.expiry;
    expiry.retain(|(_, j), ()| j != id.0).map_err(store_err)?;
    w.results.remove(id.0).map_err(store_err)?;
    super::revived(&mut job, now);
    jobs.insert(id.0, encode(&job)?.as_slice())
        .map_err(store_err)?;
    let ready = &mut w.ready;
    ready.insert((now, id.0), ()).map_err(store_err)?;
    let size = job.size;
    Ok(Some((job, size)))
}

fn delete_dead(w: &mut Tables<'_>, id: JobId) -> Result<bool, QueueError> {
    let dead = &mut w.dead;
    if dead.remove(id.0).map_err(store_err)?.is_none() {
        return Ok(false);
    }
    remove_job(w, id.0)?;
    let expiry = &mut w.expiry;
    expiry.retain(|(_, j), ()| j != id.0).map_err(store_err)?;
    Ok(true)
}

fn remove_job(w: &mut Tables<'_>, id: u128) -> Result<(), QueueError> {
    w.jobs.remove(id).map_err(store_err)?;
    w.requests.remove(id).map_err(store_err)?;
    w.results.remove(id).map_err(store_err)?;
    Ok(())
}

/// Removes expired finished jobs (dead letters among them) and idempotency keys; answers
/// how many dead letters went.
fn sweep(w: &mut Tables<'_>, now: u64) -> Result<u64, QueueError> {
    let mut expired = Vec::new();
    {
        let expiry = &mut w.expiry;
        for entry in expiry
            .extract_if(..=(now, u128::MAX), |_, ()| true)
            .map_err(store_err)?
        {
            let (k, _) = entry.map_err(store_err)?;
            expired.push(k.value().1);
        }
    }
    let mut dead_removed = 0;
    {
        let dead = &mut w.dead;
        for id in &expired {
            if dead.remove(*id).map_err(store_err)?.is_some() {
                dead_removed += 1;
            }
        }
    }
    for id in expired {
        remove_job(w, id)?;
    }
    let mut keys = Vec::new();
    {
        let order = &mut w.idempotency_expiry;
        for entry in order
            .extract_if(..=(now, "\u{10FFFF}"), |_, ()| true)
            .map_err(store_err)?
        {
            let (k, _) = entry.map_err(store_err)?;
            keys.push(k.value().1.to_owned());
        }
    }
    let idem = &mut w.idempotency;
    for key in keys {
        // A key given again after it expired has a later expiry of its own.
        let current = idem
            .get(key.as_str())
            .map_err(store_err)?
            .map(|v| v.value().to_vec());
        if let Some(v) = current {
            if idempotency_value(&v)?.2 <= now {
                idem.remove(key.as_str()).map_err(store_err)?;
            }
        }
    }
    Ok(dead_removed)
}
