//! Batched counting (fixed windows, quotas, sliding windows): each instance decides locally
//! against the last global count Redis told it plus its own unconfirmed admissions, and one
//! background task per store pushes the increments in pipelined batches, reading the global
//! counts back in the same round trip.
//!
//! Rule, per key and window: admit iff `known + pending + cost <= limit` and
//! `pending < max_pending`, where `known` is the global count of the last answer and
//! `pending` the admissions that answer did not include. When `pending` reaches
//! `max_pending` the key is pushed at once and further requests wait for that push.
//!
//! Bound: `known` only lags the true count, so a refusal is always right. Take the instance
//! whose last admission relied on the latest answer: it kept its total within `limit` given
//! everything pushed until then, and each other instance has less than `max_pending + cost`
//! admissions beyond its own latest answer. So with N instances at most
//! `limit + (N - 1) * max_pending` pass per window with unit costs, within the documented
//! `limit + N * max_pending - 1`. A sliding window weighs the previous window's global count
//! as last read.
//!
//! Windows follow each instance's own clock (decisions are local), so instances whose clocks
//! disagree by `d` may count a request in different windows for `d` around a boundary. A
//! window's admissions not yet pushed when the next window starts at that instance are
//! dropped (the window is over; for sliding windows they are missing from the other
//! instances' weight of the previous window). A failed push stays pending and is sent again:
//! if it had landed, it counts twice, which errs on the strict side.
//!
//! Memory: at most `max_keys` entries; an entry goes once its window no longer matters and its
//! counts are pushed. When full, requests for new keys fall back to the strict check.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::RedisResult;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::super::algo;
use super::super::spec::{now_micros, quota_window, Algorithm, Decision, Micros, QuotaPeriod};
use super::link::{Conn, Link};
use super::scripts::micros;
use super::{classify, Stats};

/// How one policy batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Longest an admission stays unpushed.
    pub interval: Duration,
    /// Unconfirmed admissions one instance may make per key before it waits for a push.
    pub max_pending: u64,
}

const SHARDS: usize = 16;
/// Keys pushed per round; the rest go in the next round, right after.
const MAX_JOBS: usize = 4096;
/// How often entries whose windows are over are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Extra life of a pushed count in Redis, for instances whose clocks lag.
const KEY_SLACK_MS: u64 = 1_000;
/// Extra life of a quota's count: the period may have just turned at another instance.
const QUOTA_SLACK_MS: u64 = 60_000;

/// The per-key counts of one store, sharded so worker threads rarely meet on a lock.
pub(super) struct Table {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    /// Wakes the flusher: a key has new admissions, or one reached `max_pending`.
    wake: Notify,
    /// Bumped after every push round; requests waiting for room watch it.
    pub(super) rounds: watch::Sender<u64>,
}

/// What [`Table::admit`] decided.
pub(super) enum Admit {
    Decided(Decision),
    /// `max_pending` reached: wait for the next push round and ask again.
    Wait,
    /// The table is full: check strictly instead.
    NoRoom,
    /// Not a batched algorithm (token bucket, concurrency): check strictly.
    NotBatched,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Box<str>, Entry>,
    /// Keys with admissions not pushed yet.
    queue: Vec<Box<str>>,
}

struct Entry {
    rule: Rule,
    /// Window number (fixed and sliding windows) or period end (quotas) of the counts.
    window: u64,
    /// The global count of `window` as Redis last answered.
    known: u64,
    /// Sliding windows: the global count of the window before.
    previous: u64,
    /// Admitted here and not confirmed by Redis yet (including `in_flight`).
    pending: u64,
    in_flight: u64,
    queued: bool,
    /// When queued: push no later than this.
    due: Instant,
    interval: Duration,
    max_pending: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Fixed(Micros),
    Sliding(Micros),
    Quota(QuotaPeriod),
}

/// One key's increment for one push round.
struct Job {
    shard: usize,
    name: Box<str>,
    rule: Rule,
    window: u64,
    delta: u64,
    ttl_ms: u64,
}

impl Table {
    pub(super) fn new(max_keys: usize) -> Table {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            wake: Notify::new(),
            rounds: watch::Sender::new(0),
        }
    }

    /// Decides one request locally; never waits.
    pub(super) fn admit(
        &self,
        name: &str,
        alg: &Algorithm,
        limits: BatchLimits,
        now: Micros,
        cost: u64,
    ) -> Admit {
        let Some(rule) = Rule::of(alg) else {
            return Admit::NotBatched;
        };
        let mut shard = lock(&self.shards[self.shard_of(name)]);
        let Shard { entries, queue } = &mut *shard;
        if !entries.contains_key(name) {
            if entries.len() >= self.per_shard {
                return Admit::NoRoom;
            }
            entries.insert(name.into(), Entry::new(rule, now));
        }
        let Some(entry) = entries.get_mut(name) else {
            return Admit::NoRoom;
        };
        if entry.rule != rule {
            // The policy changed with a reload: its old counts mean nothing now.
            *entry = Entry::new(rule, now);
        }
        entry.roll(now);
        entry.interval = limits.interval;
        entry.max_pending = limits.max_pending.max(1);
        let Some(decision) = entry.decide(alg, now, cost) else {
            return Admit::NotBatched;
        };
        if !decision.allowed {
            return Admit::Decided(decision);
        }
        if entry.pending >= entry.max_pending {
            return Admit::Wait;
        }
        entry.pending = entry.pending.saturating_add(cost);
        if !entry.queued {
            entry.queued = true;
            entry.due = Instant::now() + limits.interval;
            queue.push(name.into());
            self.wake.notify_one();
        } else if entry.pending >= entry.max_pending {
            self.wake.notify_one();
        }
        Admit::Decided(decision)
    }

    /// Asks the flusher for a round now (a request waits for room).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    fn shard_of(&self, name: &str) -> usize {
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        (self.hasher.hash_one(name) % SHARDS as u64) as usize
    }

    /// Takes the keys due for a push (or full); returns them and when the next one is due.
    fn collect(&self, now: Instant) -> (Vec<Job>, Option<Instant>) {
        let now_us = now_micros();
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        for (index, shard) in self.shards.iter().enumerate() {
            let mut shard = lock(shard);
            let Shard { entries, queue } = &mut *shard;
            for name in std::mem::take(queue) {
                let Some(entry) = entries.get_mut(&*name) else {
                    continue;
                };
                if entry.pending == 0 {
                    // Its window rolled over before the push.
                    entry.queued = false;
                    continue;
                }
                let full = entry.pending >= entry.max_pending;
                if jobs.len() < MAX_JOBS && (full || entry.due <= now) {
                    entry.queued = false;
                    entry.in_flight = entry.pending;
                    jobs.push(Job {
                        shard: index,
                        rule: entry.rule,
                        window: entry.window,
                        delta: entry.pending,
                        ttl_ms: entry.ttl_ms(now_us),
                        name,
                    });
                } else {
                    next = Some(next.map_or(entry.due, |n| n.min(entry.due)));
                    queue.push(name);
                }
            }
        }
        (jobs, next)
    }

    /// Applies one round's answers: confirmed admissions leave `pending`, the global counts
    /// become `known`. Failed pushes stay pending and go again after their interval.
    fn apply(&self, jobs: Vec<Job>, results: Vec<RedisResult<(u64, Option<u64>)>>) {
        for (job, result) in jobs.into_iter().zip(results) {
            let mut shard = lock(&self.shards[job.shard]);
            let Shard { entries, queue } = &mut *shard;
            let Some(entry) = entries.get_mut(&*job.name) else {
                continue;
            };
            if entry.rule != job.rule {
                continue;
            }
            if entry.window == job.window {
                entry.in_flight = 0;
                match result {
                    Ok((global, previous)) => {
                        entry.pending = entry.pending.saturating_sub(job.delta);
                        entry.known = entry.known.max(global);
                        if let Some(previous) = previous {
                            entry.previous = entry.previous.max(previous);
                        }
                    }
                    Err(_) if !entry.queued => {
                        entry.queued = true;
                        entry.due = Instant::now() + entry.interval;
                        queue.push(job.name);
                    }
                    Err(_) => {}
                }
            } else if let (Rule::Sliding(_), Ok((global, _))) = (entry.rule, result) {
                // The window rolled during the push: its count is now the previous one.
                if entry.window == job.window.saturating_add(1) {
                    entry.previous = entry.previous.max(global);
                }
            }
        }
    }

    /// Drops entries whose windows no longer matter and whose counts are pushed.
    fn sweep(&self, now: Micros) {
        for shard in self.shards.iter() {
            lock(shard)
                .entries
                .retain(|_, e| e.queued || e.in_flight > 0 || e.expires_at() > now);
        }
    }
}

impl Entry {
    fn new(rule: Rule, now: Micros) -> Entry {
        Entry {
            rule,
            window: rule.window_of(now),
            known: 0,
            previous: 0,
            pending: 0,
            in_flight: 0,
            queued: false,
            due: Instant::now(),
            interval: Duration::ZERO,
            max_pending: 1,
        }
    }

    /// Moves the counts to the window holding `now` (never back).
    fn roll(&mut self, now: Micros) {
        let window = self.rule.window_of(now);
        if window <= self.window {
            return;
        }
        self.previous = match self.rule {
            Rule::Sliding(_) if window == self.window.saturating_add(1) => {
                self.known.saturating_add(self.pending)
            }
            _ => 0,
        };
        self.window = window;
        self.known = 0;
        self.pending = 0;
        self.in_flight = 0;
    }

    /// The local store's rule applied to the counts this instance knows of.
    fn decide(&self, alg: &Algorithm, now: Micros, cost: u64) -> Option<Decision> {
        let count = self.known.saturating_add(self.pending);
        Some(match *alg {
            Algorithm::FixedWindow { limit, window } => {
                let mut s = algo::Window {
                    index: self.window,
                    count,
                };
                algo::fixed_window(&mut s, limit, window, now, cost)
            }
            Algorithm::SlidingWindow { limit, window } => {
                let mut s = algo::Sliding {
                    index: self.window,
                    current: count,
                    previous: self.previous,
                };
                algo::sliding_window(&mut s, limit, window, now, cost)
            }
            Algorithm::Quota { limit, period } => {
                let mut s = algo::QuotaCount {
                    end: self.window,
                    count,
                };
                algo::quota(&mut s, limit, period, now, cost)
            }
            Algorithm::TokenBucket { .. } | Algorithm::Concurrency { .. } => return None,
        })
    }

    /// When the counts stop mattering.
    fn expires_at(&self) -> Micros {
        match self.rule {
            Rule::Fixed(len) => self.window.saturating_add(1).saturating_mul(len),
            Rule::Sliding(len) => self.window.saturating_add(2).saturating_mul(len),
            Rule::Quota(_) => self.window,
        }
    }

    fn ttl_ms(&self, now: Micros) -> u64 {
        let slack = match self.rule {
            Rule::Quota(_) => QUOTA_SLACK_MS,
            Rule::Fixed(_) | Rule::Sliding(_) => KEY_SLACK_MS,
        };
        self.expires_at()
            .saturating_sub(now)
            .div_ceil(1_000)
            .saturating_add(slack)
    }
}

impl Rule {
    fn of(alg: &Algorithm) -> Option<Rule> {
        match *alg {
            Algorithm::FixedWindow { window, .. } => Some(Rule::Fixed(micros(window))),
            Algorithm::SlidingWindow { window, .. } => Some(Rule::Sliding(micros(window))),
            Algorithm::Quota { period, .. } => Some(Rule::Quota(period)),
            Algorithm::TokenBucket { .. } | Algorithm::Concurrency { .. } => None,
        }
    }

    fn window_of(self, now: Micros) -> u64 {
        match self {
            Rule::Fixed(len) | Rule::Sliding(len) => now / len,
            Rule::Quota(period) => quota_window(period, now).1,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Rule::Fixed(_) => "bf",
            Rule::Sliding(_) => "bs",
            Rule::Quota(_) => "bq",
        }
    }
}

impl Job {
    /// `INCRBY` the window's count, refresh its expiry and, for sliding windows, read the
    /// previous window's count: one pipeline, one slot (the keys share the hash tag).
    async fn send(&self, conn: &mut Conn) -> RedisResult<(u64, Option<u64>)> {
        let suffix = self.rule.suffix();
        let key = format!("{}:{suffix}:{}", self.name, self.window);
        let mut pipe = ::redis::pipe();
        pipe.cmd("INCRBY").arg(&key).arg(self.delta);
        pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms).ignore();
        if let Rule::Sliding(_) = self.rule {
            let previous = format!("{}:{suffix}:{}", self.name, self.window.saturating_sub(1));
            pipe.cmd("GET").arg(previous);
            pipe.query_async(conn).await
        } else {
            let (global,): (u64,) = pipe.query_async(conn).await?;
            Ok((global, None))
        }
    }
}

/// The flusher: one per store, until `stop` is dropped.
pub(super) async fn flush_loop(
    table: Arc<Table>,
    link: Arc<Link>,
    stats: Arc<Stats>,
    timeout: Duration,
    mut stop: watch::Receiver<()>,
) {
    let mut sweep_at = Instant::now() + SWEEP_EVERY;
    loop {
        let now = Instant::now();
        let (jobs, next_due) = table.collect(now);
        if !jobs.is_empty() {
            let results = push(&link, &stats, &jobs, timeout).await;
            table.apply(jobs, results);
            table.rounds.send_modify(|n| *n = n.wrapping_add(1));
        }
        if now >= sweep_at {
            table.sweep(now_micros());
            sweep_at = now + SWEEP_EVERY;
        }
        let until = next_due.map_or(sweep_at, |due| due.min(sweep_at));
        tokio::select! {
            () = table.wake.notified() => {}
            () = tokio::time::sleep_until(until) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Sends every job at once: on one multiplexed connection they share the writes, and in a
/// cluster each goes to its key's node.
async fn push(
    link: &Link,
    stats: &Stats,
    jobs: &[Job],
    timeout: Duration,
) -> Vec<RedisResult<(u64, Option<u64>)>> {
    use std::sync::atomic::Ordering::Relaxed;

    stats.pushed_keys.fetch_add(jobs.len() as u64, Relaxed);
    let Some(conn) = link.conn() else {
        stats.push_errors.fetch_add(jobs.len() as u64, Relaxed);
        return jobs.iter().map(|_| Err(not_connected())).collect();
    };
    let calls = jobs.iter().map(|job| {
        let mut conn = conn.clone();
        async move {
            match tokio::time::timeout(timeout, job.send(&mut conn)).await {
                Ok(result) => result,
                Err(_) => Err(::redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                ))),
            }
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut failed = 0;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        failed += 1;
        if failed == 1 {
            // Classifying also tells the link when the connection looks broken.
            let error = classify(link, timeout, e.clone());
            tracing::debug!(%error, "rate limit: batched push to Redis failed");
        }
    }
    stats.push_errors.fetch_add(failed, Relaxed);
    results
}

fn not_connected() -> ::redis::RedisError {
    ::redis::RedisError::from((::redis::ErrorKind::Io, "redis is not connected"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
