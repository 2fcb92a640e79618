//! The dispatchers of the job queues: one thread (`ferrogate-dispatch`) with its own
//! runtime and upstream pools, and on it one loop per queue that takes due jobs up to the
//! queue's `concurrency`, delivers each (`proxy::deliver`) under the queue's attempt time
//! limit, and records the outcome: the result, a retry after a backoff with jitter, or a
//! dead letter once the attempts run out. Loops read the current snapshot for every job,
//! so a reload's settings and routes apply to the next attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::Shared;
use crate::proxy::deliver::{deliver, Delivered};
use crate::queue::{
    callback, Claimed, Ended, Job, JobId, Outcome, Queue, QueueError, StoredResponse,
};
use crate::snapshot::Snapshot;

/// Finished jobs, results and idempotency keys past their time are removed this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A loop looks at its queue at least this often (a job due later, a missed wake-up).
const POLL: Duration = Duration::from_secs(1);

/// The dispatch thread and its queue loops.
pub struct Dispatcher {
    runtime: tokio::runtime::Handle,
    loops: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Dropped with the dispatcher: the thread's runtime then stops.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Dispatcher {
    /// Starts the thread; loops follow with [`Dispatcher::apply`].
    pub fn start() -> std::io::Result<Dispatcher> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ferrogate-dispatch".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                // Ends when the dispatcher is dropped (the sender with it).
                let _ = rt.block_on(stopped);
            })?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the dispatch thread did not start"))??;
        Ok(Dispatcher {
            runtime,
            loops: Mutex::new(HashMap::new()),
            _stop: stop,
        })
    }

    /// Runs one loop per queue of `snap`, ending those of queues it no longer has.
    pub fn apply(&self, snap: &Snapshot, shared: &Weak<Shared>) {
        let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        loops.retain(|name, task| {
            let keep = snap.queues.iter().any(|q| q.settings.name == *name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for q in &snap.queues {
            let name = q.settings.name.clone();
            if loops.contains_key(&name) {
                continue;
            }
            let task = self.runtime.spawn(run_queue(shared.clone(), name.clone()));
            loops.insert(name, task.abort_handle());
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let loops = self.loops.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in loops.values() {
            task.abort();
        }
    }
}

/// The current snapshot and its queue named `name`, while the gateway runs and has one.
fn current(shared: &Weak<Shared>, name: &str) -> Option<(Arc<Snapshot>, Arc<Queue>, bool)> {
    let shared = shared.upgrade()?;
    let snap = shared.snapshot.load_full();
    let queue = snap
        .queues
        .iter()
        .find(|q| q.settings.name == name)?
        .clone();
    Some((snap, queue, shared.is_shutting_down()))
}

async fn run_queue(shared: Weak<Shared>, name: String) {
    let mut in_flight = JoinSet::new();
    let mut ended = Vec::new();
    let mut swept = None::<Instant>;
    loop {
        let Some((snap, queue, stopping)) = current(&shared, &name) else {
            return;
        };
        if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            if let Err(e) = queue.sweep().await {
                tracing::warn!(queue = %name, "cannot remove expired jobs: {e}");
            }
            swept = Some(Instant::now());
        }
        // Shutting down: attempts under way finish and are recorded, no new one starts
        // (the jobs stay pending for the next start).
        let free = match stopping {
            true => 0,
            false => queue.settings.concurrency.saturating_sub(in_flight.len()),
        };
        let mut wait = POLL;
        if free > 0 || !ended.is_empty() {
            // Every attempt that ended since the last turn, recorded together with the
            // claim of as many new jobs: one store operation per turn, not two per job.
            let results = callback_results(&queue, &ended);
            let turned = queue.turn(std::mem::take(&mut ended), free).await;
            recorded(&queue, turned.finished, results);
            match turned.claims {
                Ok(claims) => {
                    let took = claims.jobs.len();
                    for c in claims.jobs {
                        in_flight.spawn(attempt(snap.clone(), queue.clone(), c));
                    }
                    if free > 0 && took == free {
                        continue;
                    }
                    if let Some(due) = claims.next_due {
                        wait =
                            Duration::from_millis(due.saturating_sub(crate::timer::unix_millis()))
                                .min(POLL);
                    }
                }
                Err(e) => tracing::error!(queue = %name, "cannot take jobs: {e}"),
            }
        }
        drop(snap);
        tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                ended.extend(done.ok());
                while let Some(done) = in_flight.try_join_next() {
                    ended.extend(done.ok());
                }
            }
            // With every slot taken a job ready now has to wait anyway: the loop is not
            // woken for it (a wake-up per accept costs the accepting core a switch to this
            // thread and back), and the end of an attempt runs the next turn.
            () = queue.woken(), if free > 0 => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One delivery attempt of a claimed job, and how it ended.
async fn attempt(snap: Arc<Snapshot>, queue: Arc<Queue>, c: Claimed) -> Ended {
    let s = &queue.settings;
    let limit = s.attempt_timeout;
    let sent = deliver(snap, c.id, &c.job.route, &c.request, s.max_result_bytes);
    let delivered = tokio::time::timeout(limit, sent)
        .await
        .unwrap_or_else(|_| Delivered::Failed(format!("no whole answer within {limit:?}")));
    let outcome = match delivered {
        Delivered::Answered(r) if !s.retry_statuses.contains(&r.status) => Outcome::Answered(r),
        Delivered::Answered(r) => {
            let why = format!("the upstream answered {}", r.status);
            again(&queue, &c, why, Some(r))
        }
        Delivered::Failed(why) => again(&queue, &c, why, None),
    };
    Ended {
        claimed: c,
        outcome,
    }
}

/// The results that callbacks will carry, of the ended attempts that finish a job with a
/// callback (kept before the outcomes go to the store).
fn callback_results(queue: &Queue, ended: &[Ended]) -> Vec<(JobId, Option<StoredResponse>)> {
    if queue.settings.callback.is_none() {
        return Vec::new();
    }
    ended
        .iter()
        .filter(|e| e.claimed.job.callback.is_some())
        .filter_map(|e| match &e.outcome {
            Outcome::Answered(r) => Some((e.claimed.id, Some(r.clone()))),
            Outcome::Dead { response, .. } => Some((e.claimed.id, response.clone())),
            Outcome::Retry { .. } => None,
        })
        .collect()
}

/// After the ends of a turn were recorded: the result callbacks of finished jobs, and the
/// ends that could not be recorded (those jobs run again).
fn recorded(
    queue: &Queue,
    finished: Vec<(JobId, Result<Option<Job>, QueueError>)>,
    mut results: Vec<(JobId, Option<StoredResponse>)>,
) {
    let s = &queue.settings;
    for (id, recorded) in finished {
        let job = match recorded {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(queue = %s.name, job = %id, "cannot record a delivery: {e}");
                continue;
            }
        };
        let Some(at) = results.iter().position(|(r, _)| *r == id) else {
            continue;
        };
        let (_, result) = results.swap_remove(at);
        let (Some(url), Some(settings)) = (&job.callback, &s.callback) else {
            continue;
        };
        let status_url = format!("{}/{}", job.status_path, id);
        let body = callback::document(id, &job, &status_url, result.as_ref());
        // Apart from the dispatcher loop, so that a slow receiver holds no delivery slot.
        let (settings, url) = (settings.clone(), url.clone());
        tokio::spawn(async move {
            callback::deliver(&callbacks(), &settings, id, &url, body).await;
        });
    }
}

thread_local! {
    /// The dispatch thread's client for result callbacks (its connections pooled).
    static CALLBACKS: reqwest::Client = reqwest::Client::builder()
        // A receiver's redirect elsewhere is not the configured receiver.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
}

fn callbacks() -> reqwest::Client {
    CALLBACKS.with(Clone::clone)
}

/// A retry after the backoff, or a dead letter when this was the last attempt.
fn again(queue: &Queue, c: &Claimed, error: String, response: Option<StoredResponse>) -> Outcome {
    if c.job.attempts >= queue.settings.max_attempts {
        return Outcome::Dead { error, response };
    }
    let delay = queue.backoff(c.job.attempts);
    Outcome::Retry {
        at_ms: crate::timer::unix_millis().saturating_add(delay.as_millis() as u64),
        error,
    }
}
