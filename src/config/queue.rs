//! Validation of queued routes: the top-level `queues` and each route's `queue` block, every
//! problem reported with its key path; and the status route each queued route gets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::Method;

use super::file;
use super::model::{
    PathMatch, QueueBackend, QueueRole, QueueSettings, Route, RouteMatch, RouteQueue,
};
use super::validate::{opt_duration, opt_positive_size, Errors};

const DEFAULT_DIR: &str = "data/queues";
const DEFAULT_RETRY_STATUSES: [u16; 4] = [429, 502, 503, 504];

/// The top-level `queues`, sorted by name.
pub(super) fn queues(
    errs: &mut Errors,
    q: &BTreeMap<String, file::JobQueue>,
    base_dir: &Path,
) -> Vec<QueueSettings> {
    q.iter()
        .map(|(name, q)| settings(errs, &format!("queues.{name}"), name, q, base_dir))
        .collect()
}

fn settings(
    errs: &mut Errors,
    at: &str,
    name: &str,
    q: &file::JobQueue,
    base_dir: &Path,
) -> QueueSettings {
    errs.unknown_in(at, &q);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        errs.push(at, "a queue name is letters, digits, '-' and '_'");
    }
    let backend = match q.backend.as_deref() {
        None | Some("embedded") => QueueBackend::Embedded {
            dir: base_dir.join(q.path.as_deref().unwrap_or(DEFAULT_DIR)),
        },
        Some(other) => {
            errs.push(
                format!("{at}.backend"),
                format!("unknown backend {other:?}; this build has embedded"),
            );
            QueueBackend::Embedded {
                dir: base_dir.join(DEFAULT_DIR),
            }
        }
    };
    if q.path.as_deref() == Some("") {
        errs.push(format!("{at}.path"), "empty path");
    }
    let concurrency = q.concurrency.unwrap_or(4);
    if !(1..=1024).contains(&concurrency) {
        errs.push(format!("{at}.concurrency"), "must be 1 to 1024");
    }
    let max_attempts = q.max_attempts.unwrap_or(5);
    if !(1..=100).contains(&max_attempts) {
        errs.push(format!("{at}.max_attempts"), "must be 1 to 100");
    }
    let d = |errs: &mut Errors, key: &str, v: &Option<String>, default: u64| {
        let d = opt_duration(
            errs,
            &format!("{at}.{key}"),
            v,
            Duration::from_secs(default),
        );
        if d.is_zero() {
            errs.push(format!("{at}.{key}"), "must be more than 0");
        }
        d
    };
    let attempt_timeout = d(errs, "attempt_timeout", &q.attempt_timeout, 300);
    let retry_delay = d(errs, "retry_delay", &q.retry_delay, 1);
    let max_retry_delay = d(errs, "max_retry_delay", &q.max_retry_delay, 300);
    if max_retry_delay < retry_delay {
        errs.push(
            format!("{at}.max_retry_delay"),
            "must not be shorter than retry_delay",
        );
    }
    let result_ttl = d(errs, "result_ttl", &q.result_ttl, 86_400);
    let idempotency_ttl = d(errs, "idempotency_ttl", &q.idempotency_ttl, 86_400);
    let retry_statuses = match &q.retry_statuses {
        None => DEFAULT_RETRY_STATUSES.to_vec(),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                if !(100..=599).contains(s) {
                    errs.push(format!("{at}.retry_statuses[{i}]"), "not an HTTP status");
                }
            }
            list.clone()
        }
    };
    let max_depth = q.max_depth.unwrap_or(100_000);
    if max_depth == 0 {
        errs.push(format!("{at}.max_depth"), "must be more than 0");
    }
    let size = |errs: &mut Errors, key: &str, v: &Option<file::ByteSize>, default: usize| {
        opt_positive_size(errs, &format!("{at}.{key}"), v, default).unwrap_or(default)
    };
    QueueSettings {
        name: name.to_owned(),
        backend,
        concurrency,
        attempt_timeout,
        max_attempts,
        retry_delay,
        max_retry_delay,
        retry_statuses,
        max_depth,
        max_bytes: size(errs, "max_bytes", &q.max_bytes, 256 << 20) as u64,
        result_ttl,
        max_result_bytes: size(errs, "max_result_bytes", &q.max_result_bytes, 1 << 20),
        idempotency_ttl,
    }
}

/// A route's `queue` block; `proxies` says whether the route forwards (has an upstream).
pub(super) fn route_queue(
    errs: &mut Errors,
    at: &str,
    r: &file::Route,
    queues: &BTreeMap<String, file::JobQueue>,
) -> Option<RouteQueue> {
    let q = r.queue.as_ref()?;
    errs.unknown_in(at, &q);
    if !queues.contains_key(&q.name) {
        errs.push(
            format!("{at}.name"),
            format!("no queue named {:?} in queues", q.name),
        );
    }
    let status_path = match &q.status_path {
        None => format!("/jobs/{}", q.name),
        Some(p) => p.trim_end_matches('/').to_owned(),
    };
    let plain = status_path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"{}*?#%".contains(&b));
    if !status_path.starts_with('/') || status_path.len() < 2 || !plain {
        errs.push(
            format!("{at}.status_path"),
            "a path such as /jobs/reports: '/' then plain characters, no placeholders",
        );
    }
    for (key, set) in [
        ("websocket", r.websocket == Some(true)),
        ("mirror", r.mirror.is_some()),
        ("cache", r.cache.is_some()),
    ] {
        if set {
            errs.push(
                format!("{}.{key}", at.trim_end_matches(".queue")),
                "not allowed with queue",
            );
        }
    }
    Some(RouteQueue {
        queue: q.name.clone(),
        status_path,
        role: QueueRole::Accept,
    })
}

/// The route that answers for a queued route's jobs: the queued route's hosts and access
/// rules (so that a job's owner is identified as at its creation), `GET` and `HEAD` under
/// its status path.
pub(super) fn status_route(queued: &Route) -> Option<Route> {
    let q = queued.queue.as_ref()?;
    let mut status = queued.clone();
    status.name = format!("{}.jobs", queued.name);
    status.matcher = RouteMatch {
        hosts: queued.matcher.hosts.clone(),
        path: PathMatch::Prefix(q.status_path.clone()),
        methods: vec![Method::GET, Method::HEAD],
        headers: Vec::new(),
        query: Vec::new(),
    };
    status.rate_limits.clear();
    status.cache = None;
    status.request_headers = None;
    status.retry = None;
    status.queue = Some(RouteQueue {
        role: QueueRole::Status,
        ..q.clone()
    });
    Some(status)
}
