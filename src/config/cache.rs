//! Validation of HTTP caching: the shared store (top-level `cache`) and each route's `cache`
//! block, every problem reported with its key path.

use std::str::FromStr;
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderName;

use super::file;
use super::model::{CacheRedis, CacheSettings, RouteCache};
use super::resilience::is_token_byte;
use super::validate::{opt_duration, opt_positive_size, Errors};

/// A request that waits longer than this for another request's fetch of the same key does
/// better to go to the origin itself; longer values only hide a stuck fetch.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// `Cache-Status` names the cache in every response; keep it short.
const MAX_STATUS_NAME: usize = 64;

const DEFAULT_REDIS_PREFIX: &str = "ferrogate:cache:";

/// Large bodies cost a Redis round trip each and block its single thread; keep them local.
const DEFAULT_REDIS_MAX_OBJECT: usize = 1 << 20;

/// The top-level `cache`; `has_redis` says whether the top-level `redis` is set.
pub(super) fn settings(
    errs: &mut Errors,
    c: Option<&file::Cache>,
    has_redis: bool,
) -> CacheSettings {
    let defaults = CacheSettings::default();
    let Some(c) = c else {
        return defaults;
    };
    errs.unknown_in("cache", &c);
    let max_bytes = opt_positive_size(errs, "cache.max_bytes", &c.max_bytes, defaults.max_bytes);
    let max_object_bytes = opt_positive_size(
        errs,
        "cache.max_object_bytes",
        &c.max_object_bytes,
        defaults.max_object_bytes,
    );
    // Compared only when both are valid, so that one mistake is reported once.
    if let (Some(all), Some(one)) = (max_bytes, max_object_bytes) {
        if one > all {
            errs.push(
                "cache.max_object_bytes",
                format!("{one} bytes is more than max_bytes ({all} bytes)"),
            );
        }
    }
    let lock_timeout = opt_duration(
        errs,
        "cache.lock_timeout",
        &c.lock_timeout,
        defaults.lock_timeout,
    );
    if lock_timeout.is_zero() {
        errs.push("cache.lock_timeout", "must be more than 0");
    } else if lock_timeout > MAX_LOCK_TIMEOUT {
        errs.push("cache.lock_timeout", "must be at most 60s");
    }
    let heuristic_percent = match c.heuristic_percent {
        None => defaults.heuristic_percent,
        Some(p) => match u32::try_from(p) {
            Ok(p) if p <= 100 => p,
            _ => {
                errs.push(
                    "cache.heuristic_percent",
                    format!("{p} is not a percentage; use 0 to 100 (0 turns heuristics off)"),
                );
                defaults.heuristic_percent
            }
        },
    };
    let heuristic_max = opt_duration(
        errs,
        "cache.heuristic_max",
        &c.heuristic_max,
        defaults.heuristic_max,
    );
    let surrogate_header = match &c.surrogate_header {
        None => defaults.surrogate_header,
        // Parsing lower-cases the name, which is how it is stored and compared.
        Some(h) => HeaderName::from_str(h).unwrap_or_else(|_| {
            errs.push(
                "cache.surrogate_header",
                format!("invalid header name {h:?}"),
            );
            defaults.surrogate_header
        }),
    };
    let status_name = match &c.status_name {
        None => defaults.status_name,
        Some(name) => {
            let valid =
                (1..=MAX_STATUS_NAME).contains(&name.len()) && name.bytes().all(is_token_byte);
            if !valid {
                errs.push(
                    "cache.status_name",
                    format!(
                        "invalid cache name {name:?}; use 1 to {MAX_STATUS_NAME} letters, \
                         digits or !#$%&'*+-.^_`|~"
                    ),
                );
            }
            name.clone()
        }
    };
    let redis = c.redis.as_ref().map(|r| redis(errs, r, has_redis));
    CacheSettings {
        max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
        max_object_bytes: max_object_bytes.unwrap_or(defaults.max_object_bytes),
        lock_timeout,
        heuristic_percent,
        heuristic_max,
        surrogate_header,
        status_name,
        strip_targeted: c.strip_targeted.unwrap_or(defaults.strip_targeted),
        redis,
    }
}

fn redis(errs: &mut Errors, r: &file::CacheRedis, has_redis: bool) -> CacheRedis {
    let at = "cache.redis";
    errs.unknown_in(at, &r);
    if !has_redis {
        errs.push(at, "the shared cache tier needs a top-level redis");
    }
    let prefix = r
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned());
    // Keys with spaces or control characters are awkward to inspect and to match in
    // redis-cli; an empty prefix would let purges by prefix reach other applications' keys.
    if prefix.is_empty() {
        errs.push("cache.redis.prefix", "must not be empty");
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errs.push(
            "cache.redis.prefix",
            format!("{prefix:?} must not contain whitespace or control characters"),
        );
    }
    let max_object_bytes = opt_positive_size(
        errs,
        "cache.redis.max_object_bytes",
        &r.max_object_bytes,
        DEFAULT_REDIS_MAX_OBJECT,
    );
    CacheRedis {
        prefix,
        max_object_bytes: max_object_bytes.unwrap_or(DEFAULT_REDIS_MAX_OBJECT),
    }
}

/// A route's `cache` block; `has_auth` says whether the route authenticates its callers.
pub(super) fn route(
    errs: &mut Errors,
    at: &str,
    c: &file::RouteCache,
    has_auth: bool,
    has_geo: bool,
) -> RouteCache {
    errs.unknown_in(at, &c);
    let key_headers = c
        .key_headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let at = format!("{at}.key_headers[{i}]");
            let Ok(name) = HeaderName::from_str(h) else {
                errs.push(at, format!("invalid header name {h:?}"));
                return None;
            };
            // Credentials in the key would give each token its own copy of a response
            // while hiding that the response is per user; name the real dimension instead.
            if name == AUTHORIZATION {
                errs.push(
                    at,
                    "authorization is not a cache key part; use key_consumer on an \
                     authenticated route",
                );
                return None;
            }
            if name == COOKIE {
                errs.push(
                    at,
                    "cookie is not a cache key part; name the cookies in key_cookies",
                );
                return None;
            }
            Some(name)
        })
        .collect();
    for (i, name) in c.key_cookies.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            errs.push(
                format!("{at}.key_cookies[{i}]"),
                format!("invalid cookie name {name:?}"),
            );
        }
    }
    let key_consumer = c.key_consumer.unwrap_or(false);
    // Only an authenticated consumer may select stored responses: a consumer named by a
    // request header (rate limiting's consumer_header) is whatever the client claims, and
    // would let one client read another's cached responses.
    if key_consumer && !has_auth {
        errs.push(
            format!("{at}.key_consumer"),
            "needs auth on the route: only an authenticated consumer may be part of the key",
        );
    }
    if !c.key_geo.is_empty() && !has_geo {
        errs.push(format!("{at}.key_geo"), "needs the top-level `geo` section");
    }
    let key_geo = c
        .key_geo
        .iter()
        .enumerate()
        .filter_map(|(i, f)| super::geo::field(errs, &format!("{at}.key_geo[{i}]"), f))
        .collect();
    RouteCache {
        key_geo,
        key_headers,
        key_cookies: c.key_cookies.clone(),
        key_consumer,
        store_set_cookie: c.store_set_cookie.unwrap_or(false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
