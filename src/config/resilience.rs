//! Validation of the resilience settings: health checks, circuit breaking, queues and sticky
//! sessions on upstream groups; traffic splitting, mirroring, timeouts and retries on routes.
//! Defaults follow what Envoy and HAProxy users expect (see docs/operations.md).

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};

use super::file;
use super::model::*;
use super::validate::{opt_duration, Errors};

/// The resilience fields of an upstream group; the caller fills in the rest.
pub(super) fn upstream(errs: &mut Errors, at: &str, u: &file::Upstream) -> Upstream {
    let (active_check, passive_check) = match &u.health_check {
        None => (None, None),
        Some(h) => {
            let at = format!("{at}.health_check");
            errs.unknown_in(&at, &h);
            (
                h.active
                    .as_ref()
                    .map(|a| active(errs, &format!("{at}.active"), a)),
                h.passive
                    .as_ref()
                    .map(|p| passive(errs, &format!("{at}.passive"), p)),
            )
        }
    };
    let circuit_breaker = u
        .circuit_breaker
        .as_ref()
        .map(|c| circuit(errs, &format!("{at}.circuit_breaker"), c));
    if u.max_concurrent_requests == Some(0) {
        errs.push(
            format!("{at}.max_concurrent_requests"),
            "must be at least 1",
        );
    }
    let (queue_size, queue_timeout) = match &u.queue {
        None => (
            u.max_concurrent_requests.unwrap_or(0),
            Duration::from_secs(1),
        ),
        Some(q) => {
            let qat = format!("{at}.queue");
            errs.unknown_in(&qat, &q);
            if u.max_concurrent_requests.is_none() {
                errs.push(&qat, "a queue needs max_concurrent_requests");
            }
            (
                q.size.unwrap_or(u.max_concurrent_requests.unwrap_or(0)),
                opt_duration(
                    errs,
                    &format!("{qat}.timeout"),
                    &q.timeout,
                    Duration::from_secs(1),
                ),
            )
        }
    };
    let sticky = u.sticky.as_ref().map(|s| {
        let at = format!("{at}.sticky");
        errs.unknown_in(&at, &s);
        let cookie = s.cookie.clone().unwrap_or_else(|| "fg_sticky".to_owned());
        if cookie.is_empty() || !cookie.bytes().all(is_token_byte) {
            errs.push(
                format!("{at}.cookie"),
                format!("invalid cookie name {cookie:?}"),
            );
        }
        let same_site = match s.same_site.as_deref() {
            None | Some("lax") => "Lax",
            Some("strict") => "Strict",
            Some("none") => "None",
            Some(other) => {
                errs.push(
                    format!("{at}.same_site"),
                    format!("{other:?} must be strict, lax or none"),
                );
                "Lax"
            }
        };
        if same_site == "None" && s.secure == Some(false) {
            errs.push(
                format!("{at}.same_site"),
                "same_site: none needs a Secure cookie (browsers drop it otherwise); remove secure: false",
            );
        }
        Sticky {
            secure: s.secure,
            same_site,
            cookie,
            ttl: s
                .ttl
                .as_ref()
                .map(|_| opt_duration(errs, &format!("{at}.ttl"), &s.ttl, Duration::ZERO)),
            secret: s.secret.clone(),
        }
    });
    Upstream {
        name: String::new(),
        balancer: BalancerKind::RoundRobin,
        targets: Vec::new(),
        dns_targets: Vec::new(),
        locality: None,
        protocol: UpstreamProtocol::Http1,
        tls: None,
        connect_timeout: Duration::ZERO,
        request_timeout: Duration::ZERO,
        keepalive_idle: Duration::ZERO,
        keepalive_max_idle: 0,
        active_check,
        passive_check,
        circuit_breaker,
        max_concurrent_requests: u.max_concurrent_requests,
        queue_size,
        queue_timeout,
        sticky,
        // Read in validate.rs, which knows the config's directory.
        client_credentials: None,
    }
}

fn active(errs: &mut Errors, at: &str, a: &file::ActiveCheck) -> ActiveCheck {
    errs.unknown_in(at, &a);
    let kind = match a.kind.as_deref().unwrap_or("http") {
        "tcp" => {
            for (key, set) in [
                ("path", a.path.is_some()),
                ("method", a.method.is_some()),
                ("host", a.host.is_some()),
                ("expected_statuses", !a.expected_statuses.is_empty()),
            ] {
                if set {
                    errs.push(format!("{at}.{key}"), "only for type http");
                }
            }
            CheckKind::Tcp
        }
        "http" => {
            let path = a.path.clone().unwrap_or_else(|| "/".to_owned());
            if !path.starts_with('/') {
                errs.push(
                    format!("{at}.path"),
                    format!("{path:?} must start with '/'"),
                );
            }
            let method = a.method.as_deref().unwrap_or("GET");
            let method =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                    errs.push(format!("{at}.method"), format!("invalid method {method:?}"));
                    Method::GET
                });
            let mut expected: Vec<(u16, u16)> = a
                .expected_statuses
                .iter()
                .enumerate()
                .filter_map(|(i, s)| status_range(errs, &format!("{at}.expected_statuses[{i}]"), s))
                .collect();
            if expected.is_empty() {
                expected.push((200, 399));
            }
            CheckKind::Http {
                method,
                path,
                host: a.host.clone(),
                expected,
            }
        }
        other => {
            errs.push(
                format!("{at}.type"),
                format!("unknown check type {other:?}; use http or tcp"),
            );
            CheckKind::Tcp
        }
    };
    let interval = opt_duration(
        errs,
        &format!("{at}.interval"),
        &a.interval,
        Duration::from_secs(5),
    );
    let timeout = opt_duration(
        errs,
        &format!("{at}.timeout"),
        &a.timeout,
        Duration::from_secs(1),
    );
    if interval.is_zero() {
        errs.push(format!("{at}.interval"), "must be more than 0");
    }
    if timeout.is_zero() {
        errs.push(format!("{at}.timeout"), "must be more than 0");
    }
    ActiveCheck {
        kind,
        interval,
        timeout,
        healthy_threshold: at_least_one(errs, at, "healthy_threshold", a.healthy_threshold, 2),
        unhealthy_threshold: at_least_one(
            errs,
            at,
            "unhealthy_threshold",
            a.unhealthy_threshold,
            3,
        ),
    }
}

fn passive(errs: &mut Errors, at: &str, p: &file::PassiveCheck) -> PassiveCheck {
    errs.unknown_in(at, &p);
    let base_ejection = opt_duration(
        errs,
        &format!("{at}.base_ejection"),
        &p.base_ejection,
        Duration::from_secs(30),
    );
    let max_ejection = opt_duration(
        errs,
        &format!("{at}.max_ejection"),
        &p.max_ejection,
        Duration::from_secs(300),
    );
    if base_ejection.is_zero() {
        errs.push(format!("{at}.base_ejection"), "must be more than 0");
    }
    if max_ejection < base_ejection {
        errs.push(
            format!("{at}.max_ejection"),
            "must be at least base_ejection",
        );
    }
    let max_ejected_percent = p.max_ejected_percent.unwrap_or(50);
    if max_ejected_percent > 100 {
        errs.push(format!("{at}.max_ejected_percent"), "must be 0..=100");
    }
    PassiveCheck {
        consecutive_5xx: p.consecutive_5xx.unwrap_or(5),
        consecutive_failures: p.consecutive_failures.unwrap_or(5),
        base_ejection,
        max_ejection,
        max_ejected_percent,
    }
}

fn circuit(errs: &mut Errors, at: &str, c: &file::CircuitBreaker) -> CircuitBreaker {
    errs.unknown_in(at, &c);
    let error_ratio = c.error_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&error_ratio) {
        errs.push(format!("{at}.error_ratio"), "must be between 0 and 1");
    }
    let window = opt_duration(
        errs,
        &format!("{at}.window"),
        &c.window,
        Duration::from_secs(10),
    );
    if window.is_zero() {
        errs.push(format!("{at}.window"), "must be more than 0");
    }
    CircuitBreaker {
        consecutive_failures: c.consecutive_failures.unwrap_or(5),
        error_ratio,
        min_requests: c.min_requests.unwrap_or(20),
        window,
        open_for: opt_duration(
            errs,
            &format!("{at}.open_for"),
            &c.open_for,
            Duration::from_secs(10),
        ),
        half_open_probes: at_least_one(errs, at, "half_open_probes", c.half_open_probes, 1),
    }
}

/// The weighted upstream groups of a proxy route: `upstream`, or the `split` entries.
pub(super) fn split(
    errs: &mut Errors,
    at: &str,
    r: &file::Route,
    known: &HashSet<&str>,
) -> Vec<WeightedUpstream> {
    let check = |errs: &mut Errors, at: String, name: &str| {
        if !known.contains(name) {
            errs.push(at, format!("no upstream named {name:?}"));
        }
    };
    if let Some(up) = &r.upstream {
        check(errs, format!("{at}.upstream"), up);
        if !r.split.is_empty() {
            errs.push(format!("{at}.split"), "use either upstream or split");
        }
        return vec![WeightedUpstream {
            name: up.clone(),
            weight: 1,
        }];
    }
    let mut seen = HashSet::new();
    let entries: Vec<WeightedUpstream> = r
        .split
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let eat = format!("{at}.split[{i}]");
            errs.unknown_in(&eat, &e);
            check(errs, format!("{eat}.upstream"), &e.upstream);
            if !seen.insert(e.upstream.as_str()) {
                errs.push(format!("{eat}.upstream"), "listed twice in one split");
            }
            let weight = e.weight.unwrap_or(1);
            if weight > 10_000 {
                errs.push(format!("{eat}.weight"), "weight must be 0..=10000");
            }
            WeightedUpstream {
                name: e.upstream.clone(),
                weight,
            }
        })
        .collect();
    if entries.iter().all(|e| e.weight == 0) {
        errs.push(format!("{at}.split"), "at least one weight must be above 0");
    }
    entries
}

pub(super) fn split_header(errs: &mut Errors, at: &str, r: &file::Route) -> Option<HeaderName> {
    let name = r.split_header.as_ref()?;
    match HeaderName::from_str(name) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(
                format!("{at}.split_header"),
                format!("invalid header name {name:?}"),
            );
            None
        }
    }
}

pub(super) fn mirror(errs: &mut Errors, at: &str, r: &file::Route) -> Option<Mirror> {
    let m = r.mirror.as_ref()?;
    let at = format!("{at}.mirror");
    errs.unknown_in(&at, &m);
    let percent = m.percent.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&percent) {
        errs.push(format!("{at}.percent"), "must be between 0 and 100");
    }
    Some(Mirror {
        upstream: m.upstream.clone(),
        percent,
    })
}

/// Checks that a mirror names a known group (done where the names are at hand).
pub(super) fn check_mirror(errs: &mut Errors, at: &str, r: &file::Route, known: &HashSet<&str>) {
    if let Some(m) = &r.mirror {
        if !known.contains(m.upstream.as_str()) {
            errs.push(
                format!("{at}.mirror.upstream"),
                format!("no upstream named {:?}", m.upstream),
            );
        }
    }
}

pub(super) fn timeouts(errs: &mut Errors, at: &str, t: &Option<file::Timeouts>) -> RouteTimeouts {
    let Some(t) = t else {
        return RouteTimeouts::default();
    };
    errs.unknown_in(at, &t);
    let mut one = |key: &str, v: &Option<String>| {
        v.as_ref().map(|_| {
            let d = opt_duration(errs, &format!("{at}.{key}"), v, Duration::ZERO);
            if d.is_zero() {
                errs.push(format!("{at}.{key}"), "must be more than 0");
            }
            d
        })
    };
    RouteTimeouts {
        connect: one("connect", &t.connect),
        response_header: one("response_header", &t.response_header),
        idle: one("idle", &t.idle),
        total: one("total", &t.total),
    }
}

/// `tunnel`: the limits of the route's WebSocket tunnels (only with `websocket: true`).
pub(super) fn tunnel(errs: &mut Errors, route_at: &str, r: &file::Route) -> TunnelSettings {
    let Some(t) = &r.tunnel else {
        return TunnelSettings::default();
    };
    let at = format!("{route_at}.tunnel");
    errs.unknown_in(&at, &t);
    if r.websocket != Some(true) {
        errs.push(&at, "needs `websocket: true` on the route");
    }
    let mut positive = |key: &str, v: &Option<String>| {
        let d = v
            .as_ref()
            .map(|_| opt_duration(errs, &format!("{at}.{key}"), v, Duration::MAX))?;
        if d.is_zero() {
            errs.push(format!("{at}.{key}"), "must be more than 0");
        }
        Some(d)
    };
    let idle_timeout = positive("idle_timeout", &t.idle_timeout);
    let max_lifetime = positive("max_lifetime", &t.max_lifetime);
    let ping_interval = positive("ping_interval", &t.ping_interval);
    let max_message_bytes = t.max_message_bytes.as_ref().and_then(|v| {
        let size = super::validate::parse_byte_size(v);
        match size {
            Some(n) if n > 0 => Some(n),
            _ => {
                errs.push(
                    format!("{at}.max_message_bytes"),
                    "must be a size of more than 0, e.g. 65536 or 1MiB",
                );
                None
            }
        }
    });
    let mut count = |key: &str, v: Option<usize>| {
        if v == Some(0) {
            errs.push(format!("{at}.{key}"), "must be more than 0");
        }
        v
    };
    TunnelSettings {
        idle_timeout: idle_timeout.unwrap_or(TunnelSettings::DEFAULT_IDLE),
        max_lifetime,
        ping_interval,
        max_message_bytes,
        max_open: count("max_open", t.max_open),
        max_open_per_ip: count("max_open_per_ip", t.max_open_per_ip),
    }
}

pub(super) fn retry(errs: &mut Errors, at: &str, r: &file::Retry) -> RetryPolicy {
    errs.unknown_in(at, &r);
    let attempts = r.attempts.unwrap_or(2);
    if !(1..=10).contains(&attempts) {
        errs.push(format!("{at}.attempts"), "must be 1..=10");
    }
    let mut policy = RetryPolicy {
        attempts,
        on_connect_failure: r.on.is_empty(),
        on_reset: r.on.is_empty(),
        on_timeout: false,
        statuses: Vec::new(),
        per_try_timeout: None,
        non_idempotent: r.non_idempotent.unwrap_or(false),
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        budget_ratio: 0.2,
        budget_min_per_second: 10,
    };
    for (i, on) in r.on.iter().enumerate() {
        let oat = format!("{at}.on[{i}]");
        match on {
            file::StatusSpec::Text(t) if t == "connect_failure" => policy.on_connect_failure = true,
            file::StatusSpec::Text(t) if t == "reset" => policy.on_reset = true,
            file::StatusSpec::Text(t) if t == "timeout" => policy.on_timeout = true,
            file::StatusSpec::Code(c) if (500..=599).contains(c) || *c == 429 => {
                policy.statuses.push(*c);
            }
            _ => errs.push(
                oat,
                "use connect_failure, reset, timeout, 429 or a 5xx status",
            ),
        }
    }
    if r.per_try_timeout.is_some() {
        policy.per_try_timeout = Some(opt_duration(
            errs,
            &format!("{at}.per_try_timeout"),
            &r.per_try_timeout,
            Duration::ZERO,
        ));
    }
    if let Some(b) = &r.backoff {
        let bat = format!("{at}.backoff");
        errs.unknown_in(&bat, &b);
        policy.backoff_base =
            opt_duration(errs, &format!("{bat}.base"), &b.base, policy.backoff_base);
        policy.backoff_max = opt_duration(errs, &format!("{bat}.max"), &b.max, policy.backoff_max);
        if policy.backoff_max < policy.backoff_base {
            errs.push(format!("{bat}.max"), "must be at least base");
        }
    }
    if let Some(b) = &r.budget {
        let bat = format!("{at}.budget");
        errs.unknown_in(&bat, &b);
        policy.budget_ratio = b.ratio.unwrap_or(policy.budget_ratio);
        if !(0.0..=1.0).contains(&policy.budget_ratio) {
            errs.push(format!("{bat}.ratio"), "must be between 0 and 1");
        }
        policy.budget_min_per_second = b.min_per_second.unwrap_or(policy.budget_min_per_second);
    }
    policy
}

fn status_range(errs: &mut Errors, at: &str, s: &file::StatusSpec) -> Option<(u16, u16)> {
    let range = match s {
        file::StatusSpec::Code(c) => Some((*c, *c)),
        file::StatusSpec::Text(t) => match t.split_once('-') {
            Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
            None => t.trim().parse().ok().map(|c| (c, c)),
        },
    };
    match range {
        Some((a, b)) if (100..=599).contains(&a) && (a..=599).contains(&b) => Some((a, b)),
        _ => {
            errs.push(
                at,
                "use a status such as 200 or a range such as \"200-399\"",
            );
            None
        }
    }
}

fn at_least_one(errs: &mut Errors, at: &str, key: &str, v: Option<u32>, default: u32) -> u32 {
    match v {
        Some(0) => {
            errs.push(format!("{at}.{key}"), "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}

/// RFC 9110 token characters (cookie names are tokens).
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
