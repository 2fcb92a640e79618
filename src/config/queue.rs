//! Validation of queued routes: the top-level `queues` and each route's `queue` block, every
//! problem reported with its key path; and the status route each queued route gets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Method};

use super::file;
use super::model::{
    CallbackSettings, PathMatch, PublishAction, PublishTarget, QueueBackend, QueueRole,
    QueueSettings, Redis, RedisDeployment, Route, RouteMatch, RouteQueue,
};
use super::validate::{opt_duration, opt_positive_size, secret_or_env, Errors};

const DEFAULT_DIR: &str = "data/queues";
const DEFAULT_KEY_PREFIX: &str = "ferrogate:queue:";
const DEFAULT_NATS_PREFIX: &str = "ferrogate-queue-";
const DEFAULT_RETRY_STATUSES: [u16; 4] = [429, 502, 503, 504];

/// The top-level `queues`, sorted by name.
pub(super) fn queues(
    errs: &mut Errors,
    q: &BTreeMap<String, file::JobQueue>,
    base_dir: &Path,
    redis: Option<&Redis>,
    rabbitmq: Option<&str>,
) -> Vec<QueueSettings> {
    let stores = Stores { redis, rabbitmq };
    q.iter()
        .map(|(name, q)| settings(errs, &format!("queues.{name}"), name, q, base_dir, stores))
        .collect()
}

/// The shared servers a queue's backend may use: the top-level `redis` and `rabbitmq`.
#[derive(Clone, Copy)]
struct Stores<'a> {
    redis: Option<&'a Redis>,
    rabbitmq: Option<&'a str>,
}

/// The top-level `rabbitmq`: its URL, when it is one.
pub(super) fn rabbitmq(errs: &mut Errors, r: Option<&file::RabbitMq>) -> Option<String> {
    let r = r?;
    errs.unknown_in("rabbitmq", &r);
    if r.url.is_empty() {
        errs.push(
            "rabbitmq.url",
            "the broker's URL is required (amqp://HOST:PORT)",
        );
        return None;
    }
    if !(r.url.starts_with("amqp://") || r.url.starts_with("amqps://")) {
        errs.push(
            "rabbitmq.url",
            format!(
                "invalid AMQP URL {:?}; use amqp://HOST:PORT or amqps://HOST:PORT",
                r.url
            ),
        );
        return None;
    }
    Some(r.url.clone())
}

fn settings(
    errs: &mut Errors,
    at: &str,
    name: &str,
    q: &file::JobQueue,
    base_dir: &Path,
    stores: Stores<'_>,
) -> QueueSettings {
    let redis = stores.redis;
    errs.unknown_in(at, &q);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        errs.push(at, "a queue name is letters, digits, '-' and '_'");
    }
    let embedded = || QueueBackend::Embedded {
        dir: base_dir.join(q.path.as_deref().unwrap_or(DEFAULT_DIR)),
    };
    let backend = match q.backend.as_deref() {
        None | Some("embedded") => embedded(),
        Some("redis") => match redis {
            Some(r) if !matches!(r.deployment, RedisDeployment::Sentinel { .. }) => {
                QueueBackend::Redis {
                    redis: r.clone(),
                    key_prefix: q
                        .key_prefix
                        .clone()
                        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
                    // Set below, once the attempt time limit is known.
                    visibility_timeout: Duration::ZERO,
                }
            }
            Some(_) => {
                errs.push(
                    format!("{at}.backend"),
                    "queues use a standalone Redis (redis.url) or a cluster (redis.cluster), not Sentinel yet",
                );
                embedded()
            }
            None => {
                errs.push(
                    format!("{at}.backend"),
                    "the redis backend needs the top-level redis",
                );
                embedded()
            }
        },
        Some("nats") => nats(errs, at, q),
        Some("rabbitmq") => rabbitmq_backend(errs, at, q, stores).unwrap_or_else(embedded),
        Some(other) => {
            errs.push(
                format!("{at}.backend"),
                format!("unknown backend {other:?}; use embedded, redis, nats or rabbitmq"),
            );
            embedded()
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
    let mut backend = backend;
    if let QueueBackend::Redis {
        visibility_timeout, ..
    }
    | QueueBackend::Nats {
        visibility_timeout, ..
    } = &mut backend
    {
        *visibility_timeout = opt_duration(
            errs,
            &format!("{at}.visibility_timeout"),
            &q.visibility_timeout,
            attempt_timeout + Duration::from_secs(30),
        );
        if *visibility_timeout <= attempt_timeout {
            errs.push(
                format!("{at}.visibility_timeout"),
                "must be longer than attempt_timeout (a live instance's job would be taken over)",
            );
        }
    } else {
        let rabbitmq = q.backend.as_deref() == Some("rabbitmq");
        if q.key_prefix.is_some() && !rabbitmq {
            errs.push(
                format!("{at}.key_prefix"),
                "only for the redis, nats and rabbitmq backends",
            );
        }
        if q.visibility_timeout.is_some() {
            // RabbitMQ gives a dead instance's messages back when its connection closes.
            errs.push(
                format!("{at}.visibility_timeout"),
                "only for the redis and nats backends",
            );
        }
    }
    if q.nats_url.is_some() && !matches!(backend, QueueBackend::Nats { .. }) {
        errs.push(format!("{at}.nats_url"), "only for the nats backend");
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
        callback: q
            .callback
            .as_ref()
            .map(|c| callback(errs, &format!("{at}.callback"), c)),
    }
}

/// Whether `url` is an absolute `http` or `https` URL with a host.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) && url.parse::<http::Uri>().is_ok()
}

fn callback(errs: &mut Errors, at: &str, c: &file::Callback) -> CallbackSettings {
    errs.unknown_in(at, &c);
    if let Some(url) = &c.url {
        if !is_http_url(url) {
            errs.push(format!("{at}.url"), "an absolute http:// or https:// URL");
        }
    }
    for (i, prefix) in c.allow.iter().enumerate() {
        // A prefix must name at least the origin and a path, or `http://a.example` would
        // let `http://a.example.evil.test/` through.
        let has_path = prefix
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if !is_http_url(prefix) || !has_path {
            errs.push(
                format!("{at}.allow[{i}]"),
                "a URL prefix with scheme, host and a path, e.g. https://hooks.example.com/",
            );
        }
    }
    if c.url.is_none() && c.allow.is_empty() {
        errs.push(at, "needs url, allow, or both");
    }
    let secret = secret_or_env(errs, at, c.secret.as_ref(), c.secret_env.as_ref(), 16);
    let max_attempts = c.max_attempts.unwrap_or(5);
    if !(1..=20).contains(&max_attempts) {
        errs.push(format!("{at}.max_attempts"), "must be 1 to 20");
    }
    CallbackSettings {
        url: c.url.clone(),
        allow: c.allow.clone(),
        secret,
        max_attempts,
        timeout: opt_duration(
            errs,
            &format!("{at}.timeout"),
            &c.timeout,
            Duration::from_secs(10),
        ),
    }
}

/// The `rabbitmq` backend: the top-level `rabbitmq` for ready jobs and the top-level
/// `redis` for their state, both required; `None` after reporting what is missing.
fn rabbitmq_backend(
    errs: &mut Errors,
    at: &str,
    q: &file::JobQueue,
    stores: Stores<'_>,
) -> Option<QueueBackend> {
    let key = format!("{at}.backend");
    if stores.rabbitmq.is_none() {
        errs.push(
            &key,
            "the rabbitmq backend needs the top-level rabbitmq (url)",
        );
    }
    match stores.redis {
        None => errs.push(
            &key,
            "the rabbitmq backend keeps job state in the top-level redis, which is missing",
        ),
        Some(r) if matches!(r.deployment, RedisDeployment::Sentinel { .. }) => errs.push(
            &key,
            "queues use a standalone Redis (redis.url) or a cluster (redis.cluster), not Sentinel yet",
        ),
        Some(_) => {}
    }
    let prefix = q
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if prefix.len() > 200 || prefix.bytes().any(|b| !b.is_ascii_graphic()) {
        errs.push(
            format!("{at}.key_prefix"),
            "at most 200 visible ASCII characters (a RabbitMQ queue name)",
        );
    } else if prefix.starts_with("amq.") {
        errs.push(
            format!("{at}.key_prefix"),
            "RabbitMQ keeps queue names starting with amq. for itself",
        );
    }
    Some(QueueBackend::RabbitMq {
        url: stores.rabbitmq?.to_owned(),
        redis: stores.redis?.clone(),
        key_prefix: prefix,
    })
}

/// The `nats` backend: its server and the prefix of its stream and bucket names (the
/// visibility timeout is set by the caller).
fn nats(errs: &mut Errors, at: &str, q: &file::JobQueue) -> QueueBackend {
    let url = q.nats_url.clone().unwrap_or_default();
    if url.is_empty() {
        errs.push(
            format!("{at}.nats_url"),
            "the nats backend needs nats_url (nats://HOST:PORT)",
        );
    } else if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        errs.push(
            format!("{at}.nats_url"),
            format!("invalid NATS URL {url:?}; use nats://HOST:PORT or tls://HOST:PORT"),
        );
    }
    let name_prefix = q
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_NATS_PREFIX.to_owned());
    if !name_prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        errs.push(
            format!("{at}.key_prefix"),
            "NATS stream and bucket names take letters, digits, '-' and '_'",
        );
    }
    QueueBackend::Nats {
        url,
        name_prefix,
        visibility_timeout: Duration::ZERO,
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

/// The keys a route of `kind` (`publish`, `ai`) cannot have: it forwards to no group.
pub(super) fn forbids_forwarding(errs: &mut Errors, at: &str, r: &file::Route, kind: &str) {
    for (key, set) in [
        ("strip_prefix", r.strip_prefix.is_some()),
        ("rewrite", r.rewrite.is_some()),
        ("websocket", r.websocket.is_some()),
        ("split_header", r.split_header.is_some()),
        ("timeouts", r.timeouts.is_some()),
        ("retry", r.retry.is_some()),
        ("mirror", r.mirror.is_some()),
        ("cache", r.cache.is_some()),
        ("request_headers", r.request_headers.is_some()),
        ("queue", r.queue.is_some()),
    ] {
        if set {
            errs.push(format!("{at}.{key}"), format!("not allowed with {kind}"));
        }
    }
}

/// A route's `publish` block; `has_redis` says whether the top-level `redis` is set,
/// `rabbitmq` is the top-level `rabbitmq`'s URL when set.
pub(super) fn publish(
    errs: &mut Errors,
    at: &str,
    p: &file::Publish,
    has_redis: bool,
    rabbitmq: Option<&str>,
) -> PublishAction {
    errs.unknown_in(at, &p);
    let redis = !p.redis_stream.is_empty();
    let targets = [
        redis,
        p.nats_subject.is_some(),
        p.rabbitmq_exchange.is_some(),
    ];
    match targets.iter().filter(|t| **t).count() {
        0 => errs.push(
            at,
            "one of redis_stream, nats_subject and rabbitmq_exchange is required",
        ),
        1 => {}
        _ => errs.push(
            at,
            "one of redis_stream, nats_subject and rabbitmq_exchange, not more",
        ),
    }
    let only = |errs: &mut Errors, key: &str, set: bool, with: &str| {
        if set {
            errs.push(format!("{at}.{key}"), format!("only with {with}"));
        }
    };
    only(
        errs,
        "max_len",
        p.max_len.is_some() && !redis,
        "redis_stream",
    );
    only(
        errs,
        "nats_url",
        p.nats_url.is_some() && p.nats_subject.is_none(),
        "nats_subject",
    );
    only(
        errs,
        "routing_key",
        p.routing_key.is_some() && p.rabbitmq_exchange.is_none(),
        "rabbitmq_exchange",
    );
    let target = if let Some(subject) = &p.nats_subject {
        let plain = subject.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"*>".contains(&b))
        });
        if !plain {
            errs.push(
                format!("{at}.nats_subject"),
                format!(
                    "invalid subject {subject:?}: dot-separated tokens, no spaces or wildcards"
                ),
            );
        }
        let url = p.nats_url.clone().unwrap_or_default();
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            errs.push(
                format!("{at}.nats_url"),
                "publishing to NATS needs nats_url (nats://HOST:PORT or tls://HOST:PORT)",
            );
        }
        PublishTarget::Nats {
            url,
            subject: subject.clone(),
        }
    } else if let Some(exchange) = &p.rabbitmq_exchange {
        let routing_key = p.routing_key.clone().unwrap_or_default();
        for (key, v) in [
            ("rabbitmq_exchange", exchange),
            ("routing_key", &routing_key),
        ] {
            if v.len() > 255 {
                errs.push(format!("{at}.{key}"), "at most 255 bytes");
            }
        }
        if rabbitmq.is_none() {
            errs.push(
                format!("{at}.rabbitmq_exchange"),
                "publishing to RabbitMQ needs the top-level rabbitmq",
            );
        }
        PublishTarget::RabbitMq {
            url: rabbitmq.unwrap_or_default().to_owned(),
            exchange: exchange.clone(),
            routing_key,
        }
    } else {
        if redis && !has_redis {
            errs.push(at, "publishing needs the top-level redis");
        }
        PublishTarget::Redis {
            stream: p.redis_stream.clone(),
        }
    };
    if p.max_len == Some(0) {
        errs.push(format!("{at}.max_len"), "must be more than 0");
    }
    let names = p
        .headers
        .clone()
        .unwrap_or_else(|| vec!["content-type".to_owned()]);
    let headers = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                errs.push(
                    format!("{at}.headers[{i}]"),
                    format!("invalid field name {n:?}"),
                );
                None
            }
        })
        .collect();
    PublishAction {
        target,
        headers,
        max_len: p.max_len,
    }
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
        geo: None,
    };
    status.rate_limits.clear();
    status.cache = None;
    status.request_headers = None;
    status.retry = None;
    status.publish = None;
    status.queue = Some(RouteQueue {
        role: QueueRole::Status,
        ..q.clone()
    });
    Some(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use crate::config::model::{PublishTarget, QueueBackend, QueueRole};

    fn parse(yaml: &str) -> Result<crate::config::model::Config, Vec<String>> {
        crate::config::parse(yaml, Path::new("/srv/gw"))
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    const HEAD: &str = "listeners: [{address: 127.0.0.1:8080}]
upstreams: {app: {targets: [{address: 127.0.0.1:9001}]}}
";

    #[test]
    fn a_queued_route_gets_a_status_route_with_its_hosts_and_auth() {
        let c = parse(&format!(
            "{HEAD}queues: {{reports: {{}}}}
routes:
  - {{name: r, match: {{hosts: [a.test], path: {{prefix: /r}}, methods: [POST]}}, upstream: app, queue: {{name: reports}}}}
"
        ))
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        let status = &c.routes[1];
        assert_eq!(status.name, "r.jobs");
        assert_eq!(status.matcher.hosts, c.routes[0].matcher.hosts);
        let q = status.queue.as_ref().unwrap();
        assert_eq!(
            (q.role, q.status_path.as_str()),
            (QueueRole::Status, "/jobs/reports")
        );
        let s = &c.queues[0];
        assert_eq!(
            s.backend,
            QueueBackend::Embedded {
                dir: Path::new("/srv/gw/data/queues").to_path_buf()
            }
        );
        assert_eq!((s.concurrency, s.max_attempts), (4, 5));
        assert_eq!(s.retry_statuses, [429, 502, 503, 504]);
    }

    #[test]
    fn every_queue_mistake_is_reported_with_its_path() {
        let errs = parse(&format!(
            "{HEAD}queues:
  q: {{backend: kafka, concurrency: 0, max_attempts: 0, retry_delay: 10s, max_retry_delay: 1s, retry_statuses: [99], max_depth: 0, result_ttl: soon, callback: {{allow: ['http://a.example'], secret: short, url: 'ftp://x'}}}}
  r: {{backend: redis, callback: {{secret: 0123456789abcdef, secret_env: X}}}}
routes:
  - {{name: a, match: {{path: {{prefix: /a}}}}, upstream: app, websocket: true, queue: {{name: nope, status_path: 'jobs/{{x}}'}}}}
  - {{name: b, match: {{path: {{prefix: /b}}}}, redirect: {{path: /c}}, queue: {{name: q}}}}
  - {{name: c, match: {{path: {{prefix: /c}}}}, publish: {{redis_stream: '', headers: ['bad name'], max_len: 0}}, retry: {{attempts: 2}}}}
  - {{name: d, match: {{path: {{prefix: /d}}}}, upstream: app, publish: {{redis_stream: s}}}}
"
        ))
        .unwrap_err();
        for expected in [
            "queues.q.backend: unknown backend \"kafka\"; use embedded, redis, nats or rabbitmq",
            "queues.q.concurrency: must be 1 to 1024",
            "queues.q.max_attempts: must be 1 to 100",
            "queues.q.max_retry_delay: must not be shorter than retry_delay",
            "queues.q.retry_statuses[0]: not an HTTP status",
            "queues.q.max_depth: must be more than 0",
            "queues.q.result_ttl: invalid duration",
            "queues.q.callback.allow[0]: a URL prefix with scheme, host and a path",
            "queues.q.callback.url: an absolute http:// or https:// URL",
            "queues.q.callback: the secret must be at least 16 bytes",
            "queues.r.backend: the redis backend needs the top-level redis",
            "queues.r.callback: needs url, allow, or both",
            "queues.r.callback: needs exactly one of secret and secret_env",
            "routes[0].queue.name: no queue named \"nope\"",
            "routes[0].queue.status_path: a path such as",
            "routes[0].websocket: not allowed with queue",
            "routes[1].queue: not allowed with redirect",
            "routes[2].publish: one of redis_stream, nats_subject and rabbitmq_exchange is required",
            "routes[2].publish.max_len: only with redis_stream",
            "routes[2].publish.max_len: must be more than 0",
            "routes[2].publish.headers[0]: invalid field name",
            "routes[2].retry: not allowed with publish",
            "routes[3]: a route has one of upstream, split, redirect, respond, publish or ai, not upstream (or split) and publish",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn a_rabbitmq_queue_takes_the_top_level_rabbitmq_and_redis() {
        let c = parse(&format!(
            "{HEAD}redis: {{url: redis://127.0.0.1:6379}}
rabbitmq: {{url: amqp://127.0.0.1:5672/%2f}}
queues: {{q: {{backend: rabbitmq, key_prefix: 'jobs.'}}}}
routes:
  - {{name: r, match: {{path: {{prefix: /r}}}}, upstream: app, queue: {{name: q}}}}
  - {{name: p, match: {{path: {{prefix: /p}}}}, publish: {{rabbitmq_exchange: events, routing_key: created}}}}
  - {{name: n, match: {{path: {{prefix: /n}}}}, publish: {{nats_subject: orders.created, nats_url: nats://127.0.0.1:4222}}}}
"
        ))
        .unwrap();
        let QueueBackend::RabbitMq {
            url, key_prefix, ..
        } = &c.queues[0].backend
        else {
            panic!("not a rabbitmq queue: {:?}", c.queues[0].backend);
        };
        assert_eq!(
            (url.as_str(), key_prefix.as_str()),
            ("amqp://127.0.0.1:5672/%2f", "jobs.")
        );
        assert_eq!(
            c.routes[1].publish.as_ref().unwrap().target,
            PublishTarget::RabbitMq {
                url: "amqp://127.0.0.1:5672/%2f".into(),
                exchange: "events".into(),
                routing_key: "created".into(),
            }
        );
        assert_eq!(
            c.routes[2].publish.as_ref().unwrap().target,
            PublishTarget::Nats {
                url: "nats://127.0.0.1:4222".into(),
                subject: "orders.created".into(),
            }
        );
    }

    #[test]
    fn every_rabbitmq_and_publish_target_mistake_is_reported_with_its_path() {
        let errs = parse(&format!(
            "{HEAD}rabbitmq: {{url: 'http://x', vhost: a}}
queues:
  a: {{backend: rabbitmq, visibility_timeout: 5s, key_prefix: amq.x}}
routes:
  - {{name: a, match: {{path: {{prefix: /a}}}}, upstream: app, queue: {{name: a}}}}
  - {{name: b, match: {{path: {{prefix: /b}}}}, publish: {{nats_subject: 'orders.*', max_len: 5}}}}
  - {{name: c, match: {{path: {{prefix: /c}}}}, publish: {{rabbitmq_exchange: e, nats_url: 'nats://x:1'}}}}
  - {{name: d, match: {{path: {{prefix: /d}}}}, publish: {{redis_stream: s, rabbitmq_exchange: e}}}}
  - {{name: e, match: {{path: {{prefix: /e}}}}, publish: {{redis_stream: s, routing_key: k}}}}
"
        ))
        .unwrap_err();
        for expected in [
            "rabbitmq.url: invalid AMQP URL \"http://x\"",
            "rabbitmq.vhost: unknown key",
            "queues.a.backend: the rabbitmq backend needs the top-level rabbitmq",
            "queues.a.backend: the rabbitmq backend keeps job state in the top-level redis",
            "queues.a.visibility_timeout: only for the redis and nats backends",
            "queues.a.key_prefix: RabbitMQ keeps queue names starting with amq.",
            "routes[1].publish.nats_subject: invalid subject \"orders.*\"",
            "routes[1].publish.nats_url: publishing to NATS needs nats_url",
            "routes[1].publish.max_len: only with redis_stream",
            "routes[2].publish.nats_url: only with nats_subject",
            "routes[2].publish.rabbitmq_exchange: publishing to RabbitMQ needs the top-level rabbitmq",
            "routes[3].publish: one of redis_stream, nats_subject and rabbitmq_exchange, not more",
            "routes[4].publish.routing_key: only with rabbitmq_exchange",
            "routes[4].publish: publishing needs the top-level redis",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn a_nats_queue_takes_its_url_prefix_and_visibility_timeout() {
        let c = parse(&format!(
            "{HEAD}queues: {{q: {{backend: nats, nats_url: nats://127.0.0.1:4222, attempt_timeout: 10s}}}}
routes: [{{name: r, match: {{path: {{prefix: /r}}}}, upstream: app, queue: {{name: q}}}}]
"
        ))
        .unwrap();
        assert_eq!(
            c.queues[0].backend,
            QueueBackend::Nats {
                url: "nats://127.0.0.1:4222".into(),
                name_prefix: "ferrogate-queue-".into(),
                visibility_timeout: std::time::Duration::from_secs(40),
            }
        );
    }

    #[test]
    fn every_nats_queue_mistake_is_reported_with_its_path() {
        let errs = parse(&format!(
            "{HEAD}queues:
  a: {{backend: nats}}
  b: {{backend: nats, nats_url: 'http://x:1', key_prefix: 'a.b', attempt_timeout: 5s, visibility_timeout: 5s}}
  c: {{nats_url: 'nats://x:1', key_prefix: p}}
routes: [{{name: r, match: {{path: {{prefix: /r}}}}, upstream: app, queue: {{name: a}}}}]
"
        ))
        .unwrap_err();
        for expected in [
            "queues.a.nats_url: the nats backend needs nats_url",
            "queues.b.nats_url: invalid NATS URL \"http://x:1\"",
            "queues.b.key_prefix: NATS stream and bucket names take",
            "queues.b.visibility_timeout: must be longer than attempt_timeout",
            "queues.c.nats_url: only for the nats backend",
            "queues.c.key_prefix: only for the redis, nats and rabbitmq backends",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
    }
}
