//! Validation of `redis` and `rate_limiting`: the Redis deployment and the named rate-limit
//! policies that routes refer to.

use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;

use super::file;
use super::model::*;
use super::validate::{opt_duration, parse_duration, Errors};
use crate::ratelimit::spec::{Algorithm, QuotaPeriod};

/// Default bound of the in-process store: about 100 MB at the worst.
const DEFAULT_MAX_KEYS: usize = 1_000_000;

pub(super) fn redis(errs: &mut Errors, r: &file::Redis) -> Option<Redis> {
    let at = "redis";
    errs.unknown_in(at, &r);
    let timeout = opt_duration(
        errs,
        "redis.timeout",
        &r.timeout,
        Duration::from_millis(100),
    );
    if timeout.is_zero() {
        errs.push("redis.timeout", "must be more than 0");
    }
    let check_url = |errs: &mut Errors, at: String, url: &str| {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            errs.push(
                at,
                format!("invalid Redis URL {url:?}; use redis://host:port"),
            );
        }
    };
    let deployment = match (&r.url, &r.sentinel, r.cluster.is_empty()) {
        (Some(url), None, true) => {
            check_url(errs, "redis.url".to_owned(), url);
            RedisDeployment::Standalone(url.clone())
        }
        (None, Some(s), true) => {
            errs.unknown_in("redis.sentinel", &s);
            if s.urls.is_empty() {
                errs.push("redis.sentinel.urls", "at least one sentinel");
            }
            for (i, u) in s.urls.iter().enumerate() {
                check_url(errs, format!("redis.sentinel.urls[{i}]"), u);
            }
            RedisDeployment::Sentinel {
                master: s.master.clone(),
                urls: s.urls.clone(),
            }
        }
        (None, None, false) => {
            for (i, u) in r.cluster.iter().enumerate() {
                check_url(errs, format!("redis.cluster[{i}]"), u);
            }
            RedisDeployment::Cluster(r.cluster.clone())
        }
        _ => {
            errs.push(at, "set exactly one of url, sentinel and cluster");
            return None;
        }
    };
    Some(Redis {
        deployment,
        timeout,
    })
}

pub(super) fn rate_limiting(
    errs: &mut Errors,
    r: Option<&file::RateLimiting>,
    has_redis: bool,
    has_auth: bool,
    has_geo: bool,
) -> RateLimiting {
    let Some(r) = r else {
        return RateLimiting {
            max_keys: DEFAULT_MAX_KEYS,
            ..RateLimiting::default()
        };
    };
    errs.unknown_in("rate_limiting", &r);
    let max_keys = r.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        errs.push("rate_limiting.max_keys", "must be at least 1");
    }
    let consumer_header = r.consumer_header.as_ref().and_then(|h| {
        HeaderName::from_str(h)
            .map_err(|_| {
                errs.push(
                    "rate_limiting.consumer_header",
                    format!("invalid header name {h:?}"),
                );
            })
            .ok()
    });
    let policies = r
        .policies
        .iter()
        .filter_map(|(name, p)| {
            let at = format!("rate_limiting.policies.{name}");
            let policy = policy(errs, &at, name, p, has_redis)?;
            if policy.key.contains(&KeyPart::Consumer) && consumer_header.is_none() && !has_auth {
                errs.push(
                    format!("{at}.key"),
                    "the consumer key part needs auth.methods or rate_limiting.consumer_header",
                );
            }
            let metadata = policy.key.iter().any(|k| matches!(k, KeyPart::Metadata(_)));
            if metadata && !has_auth {
                errs.push(
                    format!("{at}.key"),
                    "metadata key parts need auth.methods (they read the authenticated consumer)",
                );
            }
            if policy.key.iter().any(|k| matches!(k, KeyPart::Geo(_))) && !has_geo {
                errs.push(
                    format!("{at}.key"),
                    "geo key parts need the top-level `geo` section",
                );
            }
            Some(policy)
        })
        .collect();
    RateLimiting {
        max_keys,
        consumer_header,
        policies,
    }
}

fn policy(
    errs: &mut Errors,
    at: &str,
    name: &str,
    p: &file::RatePolicy,
    has_redis: bool,
) -> Option<RatePolicy> {
    errs.unknown_in(at, &p);
    let algorithm = algorithm(errs, at, p)?;
    let key = p
        .key
        .iter()
        .enumerate()
        .filter_map(|(i, k)| key_part(errs, &format!("{at}.key[{i}]"), k))
        .collect();
    let ipv6_prefix = p.ipv6_prefix.unwrap_or(64);
    if ipv6_prefix == 0 || ipv6_prefix > 128 {
        errs.push(format!("{at}.ipv6_prefix"), "must be 1 to 128");
    }
    let store = store(errs, at, p, &algorithm, has_redis);
    Some(RatePolicy {
        name: name.to_owned(),
        algorithm,
        key,
        ipv6_prefix,
        store,
        x_headers: p.x_ratelimit_headers.unwrap_or(false),
    })
}

fn algorithm(errs: &mut Errors, at: &str, p: &file::RatePolicy) -> Option<Algorithm> {
    // Which of limit, window, rate, period, burst each algorithm takes.
    let (uses, algorithm): (&[&str], _) = match p.algorithm.as_str() {
        "fixed_window" => (
            &["limit", "window"],
            Algorithm::FixedWindow {
                limit: positive(errs, at, "limit", p.limit)?,
                window: window(errs, at, p)?,
            },
        ),
        "sliding_window" => (
            &["limit", "window"],
            Algorithm::SlidingWindow {
                limit: positive(errs, at, "limit", p.limit)?,
                window: window(errs, at, p)?,
            },
        ),
        "token_bucket" => {
            let rate = positive(errs, at, "rate", p.rate)?;
            let period = match &p.period {
                None => Duration::from_secs(1),
                Some(s) => match parse_duration(s) {
                    Some(d) if !d.is_zero() => d,
                    _ => {
                        errs.push(
                            format!("{at}.period"),
                            format!("invalid period {s:?}; use e.g. 1s or 1m"),
                        );
                        return None;
                    }
                },
            };
            let burst = match p.burst {
                None => rate,
                Some(b) => positive(errs, at, "burst", Some(b))?,
            };
            (
                &["rate", "period", "burst"],
                Algorithm::TokenBucket {
                    rate,
                    period,
                    burst,
                },
            )
        }
        "quota" => {
            let period = match p.period.as_deref() {
                Some("hour") => QuotaPeriod::Hour,
                Some("day") => QuotaPeriod::Day,
                Some("month") => QuotaPeriod::Month,
                other => {
                    errs.push(
                        format!("{at}.period"),
                        format!("a quota period is hour, day or month, not {other:?}"),
                    );
                    return None;
                }
            };
            (
                &["limit", "period"],
                Algorithm::Quota {
                    limit: positive(errs, at, "limit", p.limit)?,
                    period,
                },
            )
        }
        "concurrency" => (
            &["limit"],
            Algorithm::Concurrency {
                max: positive(errs, at, "limit", p.limit)?,
            },
        ),
        other => {
            errs.push(
                format!("{at}.algorithm"),
                format!(
                    "unknown algorithm {other:?}; use fixed_window, sliding_window, \
                     token_bucket, quota or concurrency"
                ),
            );
            return None;
        }
    };
    let given = [
        ("limit", p.limit.is_some()),
        ("window", p.window.is_some()),
        ("rate", p.rate.is_some()),
        ("period", p.period.is_some()),
        ("burst", p.burst.is_some()),
    ];
    for (key, set) in given {
        if set && !uses.contains(&key) {
            errs.push(
                format!("{at}.{key}"),
                format!("not used by {}", p.algorithm),
            );
        }
    }
    Some(algorithm)
}

fn positive(errs: &mut Errors, at: &str, key: &str, v: Option<u64>) -> Option<u64> {
    match v {
        Some(n) if n > 0 => Some(n),
        Some(_) => {
            errs.push(format!("{at}.{key}"), "must be at least 1");
            None
        }
        None => {
            errs.push(format!("{at}.{key}"), "required");
            None
        }
    }
}

fn window(errs: &mut Errors, at: &str, p: &file::RatePolicy) -> Option<Duration> {
    let Some(s) = &p.window else {
        errs.push(format!("{at}.window"), "required");
        return None;
    };
    match parse_duration(s) {
        Some(d) if d >= Duration::from_millis(1) => Some(d),
        _ => {
            errs.push(
                format!("{at}.window"),
                format!("invalid window {s:?}; use e.g. 1s or 1m"),
            );
            None
        }
    }
}

fn key_part(errs: &mut Errors, at: &str, k: &str) -> Option<KeyPart> {
    Some(match k {
        "client_ip" => KeyPart::ClientIp,
        "consumer" => KeyPart::Consumer,
        "route" => KeyPart::Route,
        "path" => KeyPart::Path,
        _ if k.starts_with("metadata:") => {
            let field = k.trim_start_matches("metadata:").trim();
            if field.is_empty() {
                errs.push(at, "metadata: needs a field name, e.g. metadata:team");
                return None;
            }
            KeyPart::Metadata(field.to_owned())
        }
        _ if k.starts_with("geo:") => {
            return super::geo::field(errs, at, k.trim_start_matches("geo:")).map(KeyPart::Geo)
        }
        _ => match k.strip_prefix("header:") {
            Some(h) => match HeaderName::from_str(h.trim()) {
                Ok(name) => KeyPart::Header(name),
                Err(_) => {
                    errs.push(at, format!("invalid header name {h:?}"));
                    return None;
                }
            },
            None => {
                errs.push(
                    at,
                    format!(
                        "unknown key part {k:?}; use client_ip, consumer, route, path, \
                         header:NAME, metadata:FIELD or geo:FIELD"
                    ),
                );
                return None;
            }
        },
    })
}

fn store(
    errs: &mut Errors,
    at: &str,
    p: &file::RatePolicy,
    algorithm: &Algorithm,
    has_redis: bool,
) -> RateStore {
    let redis_keys = [
        ("redis_mode", p.redis_mode.is_some()),
        ("batch_interval", p.batch_interval.is_some()),
        ("batch_max_pending", p.batch_max_pending.is_some()),
        ("on_redis_error", p.on_redis_error.is_some()),
    ];
    match p.store.as_deref().unwrap_or("local") {
        "local" => {
            for (key, set) in redis_keys {
                if set {
                    errs.push(format!("{at}.{key}"), "only for store: redis");
                }
            }
            RateStore::Local
        }
        "redis" => {
            if !has_redis {
                errs.push(format!("{at}.store"), "store redis needs a top-level redis");
            }
            let fail_open = match p.on_redis_error.as_deref() {
                None | Some("local") => true,
                Some("reject") => false,
                Some(other) => {
                    errs.push(
                        format!("{at}.on_redis_error"),
                        format!("use local (fail open) or reject (503), not {other:?}"),
                    );
                    true
                }
            };
            let batched = match p.redis_mode.as_deref() {
                None | Some("strict") => false,
                Some("batched") => true,
                Some(other) => {
                    errs.push(
                        format!("{at}.redis_mode"),
                        format!("use strict or batched, not {other:?}"),
                    );
                    false
                }
            };
            if !batched {
                for (key, set) in &redis_keys[1..3] {
                    if *set {
                        errs.push(format!("{at}.{key}"), "only for redis_mode: batched");
                    }
                }
            }
            let batch = batched.then(|| {
                if matches!(
                    algorithm,
                    Algorithm::TokenBucket { .. } | Algorithm::Concurrency { .. }
                ) {
                    errs.push(
                        format!("{at}.redis_mode"),
                        "token_bucket and concurrency are strict only",
                    );
                }
                let max_pending = p.batch_max_pending.unwrap_or(10);
                if max_pending == 0 {
                    errs.push(format!("{at}.batch_max_pending"), "must be at least 1");
                }
                RateBatch {
                    interval: opt_duration(
                        errs,
                        &format!("{at}.batch_interval"),
                        &p.batch_interval,
                        Duration::from_millis(5),
                    ),
                    max_pending,
                }
            });
            RateStore::Redis { batch, fail_open }
        }
        other => {
            errs.push(
                format!("{at}.store"),
                format!("use local or redis, not {other:?}"),
            );
            RateStore::Local
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    fn errors(yaml: &str) -> Vec<String> {
        match crate::config::parse(yaml, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const BASE: &str = "listeners: [{address: 127.0.0.1:0}]\nupstreams: {u: {targets: [{address: 127.0.0.1:1}]}}\n";

    #[test]
    fn every_policy_problem_is_reported_with_its_path() {
        let yaml = format!(
            "{BASE}rate_limiting:\n  policies:\n    a: {{algorithm: fixed_window, limit: 0, window: 1s}}\n    b: {{algorithm: leaky, limit: 1}}\n    c: {{algorithm: quota, limit: 5, period: week}}\n    d: {{algorithm: sliding_window, limit: 5, window: 1s, burst: 3, key: [nope]}}\n    e: {{algorithm: token_bucket, rate: 5, store: redis}}\n    f: {{algorithm: fixed_window, limit: 5, window: 1m, key: ['metadata:', 'metadata:team']}}\nroutes: [{{upstream: u, rate_limits: [a, zz]}}]\n"
        );
        let errs = errors(&yaml);
        for want in [
            "rate_limiting.policies.a.limit: must be at least 1",
            "rate_limiting.policies.b.algorithm: unknown algorithm \"leaky\"",
            "rate_limiting.policies.c.period: a quota period is hour, day or month",
            "rate_limiting.policies.d.burst: not used by sliding_window",
            "rate_limiting.policies.d.key[0]: unknown key part \"nope\"",
            "rate_limiting.policies.e.store: store redis needs a top-level redis",
            "rate_limiting.policies.f.key[0]: metadata: needs a field name",
            "rate_limiting.policies.f.key: metadata key parts need auth.methods",
            "routes[0].rate_limits[1]: no rate-limit policy named \"zz\"",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn redis_needs_exactly_one_deployment() {
        let errs = errors(&format!(
            "{BASE}redis: {{url: redis://a:1, cluster: [redis://b:2]}}\nroutes: [{{upstream: u}}]\n"
        ));
        assert_eq!(
            errs,
            vec!["redis: set exactly one of url, sentinel and cluster"]
        );
    }

    #[test]
    fn batched_token_bucket_is_refused() {
        let errs = errors(&format!(
            "{BASE}redis: {{url: redis://127.0.0.1:6379}}\nrate_limiting:\n  policies:\n    t: {{algorithm: token_bucket, rate: 5, store: redis, redis_mode: batched}}\nroutes: [{{upstream: u, rate_limits: [t]}}]\n"
        ));
        assert_eq!(
            errs,
            vec![
                "rate_limiting.policies.t.redis_mode: token_bucket and concurrency are strict only"
            ]
        );
    }

    #[test]
    fn a_full_policy_set_is_accepted() {
        let errs = errors(&format!(
            "{BASE}redis: {{url: redis://127.0.0.1:6379, timeout: 50ms}}\nrate_limiting:\n  max_keys: 1000\n  consumer_header: x-consumer\n  policies:\n    f: {{algorithm: fixed_window, limit: 10, window: 1s, key: [client_ip, route]}}\n    s: {{algorithm: sliding_window, limit: 10, window: 1m, key: ['header:x-api-key'], store: redis, redis_mode: batched, batch_interval: 5ms, batch_max_pending: 4, on_redis_error: reject}}\n    t: {{algorithm: token_bucket, rate: 5, period: 1s, burst: 10, key: [consumer]}}\n    q: {{algorithm: quota, limit: 1000, period: month, key: [path], store: redis}}\n    c: {{algorithm: concurrency, limit: 2}}\nroutes: [{{upstream: u, rate_limits: [f, s, t, q, c]}}]\n"
        ));
        assert!(errs.is_empty(), "{errs:#?}");
    }
}
