use std::path::Path;
use std::time::Duration;

use http::HeaderName;

use crate::config::file::ByteSize;
use crate::config::model::{CacheRedis, CacheSettings, Config, RouteCache};
use crate::config::validate::parse_byte_size;

const BASE: &str =
    "listeners: [{address: 127.0.0.1:0}]\nupstreams: {app: {targets: [{address: 127.0.0.1:1}]}}\n";
const REDIS: &str = "redis: {url: redis://127.0.0.1:6379}\n";
const ROUTE: &str = "routes: [{upstream: app}]\n";

fn parse(yaml: &str) -> Result<Config, Vec<String>> {
    crate::config::parse(yaml, Path::new("."))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// The errors of a file made of `BASE` and `rest`.
fn errors(rest: &str) -> Vec<String> {
    parse(&format!("{BASE}{rest}")).err().unwrap_or_default()
}

/// The errors of a file whose top-level `cache` is `cache` (flow-style YAML).
fn cache_errors(cache: &str) -> Vec<String> {
    errors(&format!("cache: {cache}\n{ROUTE}"))
}

fn settings(cache: &str) -> CacheSettings {
    parse(&format!("{BASE}{REDIS}cache: {cache}\n{ROUTE}"))
        .unwrap()
        .cache
}

/// The cache of the only route, whose `cache` block is `cache`.
fn route_cache(cache: &str) -> Option<RouteCache> {
    let mut cfg = parse(&format!(
        "{BASE}routes:\n  - upstream: app\n    cache: {cache}\n"
    ))
    .unwrap();
    cfg.routes.remove(0).cache
}

fn route_errors(cache: &str) -> Vec<String> {
    errors(&format!("routes:\n  - upstream: app\n    cache: {cache}\n"))
}

#[test]
fn without_a_cache_section_the_defaults_apply() {
    let cfg = parse(&format!("{BASE}{ROUTE}")).unwrap();
    assert_eq!(cfg.cache, CacheSettings::default());
}

#[test]
fn every_cache_key_reaches_the_model() {
    let got = settings(
        "{max_bytes: 64MiB, max_object_bytes: 512KiB, lock_timeout: 2s, heuristic_percent: 0, \
         heuristic_max: 1h, surrogate_header: X-Purge-Keys, status_name: edge-1, \
         strip_targeted: true, redis: {prefix: 'app:c:', max_object_bytes: 65536}}",
    );
    assert_eq!(
        got,
        CacheSettings {
            max_bytes: 64 << 20,
            max_object_bytes: 512 << 10,
            lock_timeout: Duration::from_secs(2),
            heuristic_percent: 0,
            heuristic_max: Duration::from_secs(3600),
            surrogate_header: HeaderName::from_static("x-purge-keys"),
            status_name: "edge-1".to_owned(),
            strip_targeted: true,
            redis: Some(CacheRedis {
                prefix: "app:c:".to_owned(),
                max_object_bytes: 65536,
            }),
        }
    );
}

#[test]
fn sizes_are_integers_or_binary_suffixed_strings() {
    let size = |s: &str| parse_byte_size(&ByteSize::Text(s.to_owned()));
    assert_eq!(parse_byte_size(&ByteSize::Bytes(1000)), Some(1000));
    assert_eq!(size("4096"), Some(4096));
    assert_eq!(size("2KiB"), Some(2048));
    assert_eq!(size("3MiB"), Some(3 << 20));
    assert_eq!(size("1GiB"), Some(1 << 30));
}

#[test]
fn sizes_with_decimal_or_unknown_suffixes_are_refused() {
    let size = |s: &str| parse_byte_size(&ByteSize::Text(s.to_owned()));
    for s in ["8MB", "8mib", "1.5MiB", "MiB", "", "-1"] {
        assert_eq!(size(s), None, "{s:?}");
    }
}

#[test]
fn an_overflowing_size_is_refused() {
    assert_eq!(
        parse_byte_size(&ByteSize::Text("18446744073709551615GiB".to_owned())),
        None
    );
}

#[test]
fn an_invalid_size_is_reported_with_its_path() {
    assert_eq!(
        cache_errors("{max_bytes: 8MB}"),
        ["cache.max_bytes: invalid size \"8MB\"; use bytes or e.g. 512KiB, 8MiB, 1GiB"]
    );
}

#[test]
fn zero_max_bytes_is_refused() {
    assert_eq!(
        cache_errors("{max_bytes: 0}"),
        ["cache.max_bytes: must be more than 0"]
    );
}

#[test]
fn zero_max_object_bytes_is_refused() {
    assert_eq!(
        cache_errors("{max_object_bytes: 0KiB}"),
        ["cache.max_object_bytes: must be more than 0"]
    );
}

#[test]
fn an_object_limit_above_the_store_size_is_refused() {
    assert_eq!(
        cache_errors("{max_bytes: 1MiB, max_object_bytes: 2MiB}"),
        ["cache.max_object_bytes: 2097152 bytes is more than max_bytes (1048576 bytes)"]
    );
}

#[test]
fn an_object_limit_equal_to_the_store_size_is_accepted() {
    let got = settings("{max_bytes: 1MiB, max_object_bytes: 1048576}");
    assert_eq!((got.max_bytes, got.max_object_bytes), (1 << 20, 1 << 20));
}

#[test]
fn zero_lock_timeout_is_refused() {
    assert_eq!(
        cache_errors("{lock_timeout: 0s}"),
        ["cache.lock_timeout: must be more than 0"]
    );
}

#[test]
fn lock_timeout_above_a_minute_is_refused() {
    assert_eq!(
        cache_errors("{lock_timeout: 61s}"),
        ["cache.lock_timeout: must be at most 60s"]
    );
}

#[test]
fn lock_timeout_of_exactly_a_minute_is_accepted() {
    assert_eq!(
        settings("{lock_timeout: 1m}").lock_timeout,
        Duration::from_secs(60)
    );
}

#[test]
fn an_invalid_lock_timeout_is_reported_once() {
    assert_eq!(
        cache_errors("{lock_timeout: soon}"),
        ["cache.lock_timeout: invalid duration \"soon\"; use e.g. 250ms, 5s, 2m"]
    );
}

#[test]
fn heuristic_percent_above_100_is_refused() {
    assert_eq!(
        cache_errors("{heuristic_percent: 101}"),
        ["cache.heuristic_percent: 101 is not a percentage; use 0 to 100 (0 turns heuristics off)"]
    );
}

#[test]
fn heuristic_max_accepts_days() {
    assert_eq!(
        settings("{heuristic_max: 2d}").heuristic_max,
        Duration::from_secs(2 * 86_400)
    );
}

#[test]
fn an_invalid_heuristic_max_is_reported_with_its_path() {
    let errs = cache_errors("{heuristic_max: 1w}");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("cache.heuristic_max: invalid duration \"1w\""));
}

#[test]
fn the_surrogate_header_is_stored_lower_case() {
    assert_eq!(
        settings("{surrogate_header: Surrogate-Key}").surrogate_header,
        HeaderName::from_static("surrogate-key")
    );
}

#[test]
fn an_invalid_surrogate_header_is_refused() {
    assert_eq!(
        cache_errors("{surrogate_header: 'bad header'}"),
        ["cache.surrogate_header: invalid header name \"bad header\""]
    );
}

#[test]
fn an_empty_status_name_is_refused() {
    let errs = cache_errors("{status_name: ''}");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("cache.status_name: invalid cache name \"\""));
}

#[test]
fn a_status_name_of_64_characters_is_accepted() {
    let name = "a".repeat(64);
    assert_eq!(
        settings(&format!("{{status_name: {name}}}")).status_name,
        name
    );
}

#[test]
fn a_status_name_over_64_characters_is_refused() {
    let errs = cache_errors(&format!("{{status_name: {}}}", "a".repeat(65)));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("cache.status_name: invalid cache name"));
}

#[test]
fn a_status_name_with_a_separator_is_refused() {
    let errs = cache_errors("{status_name: 'edge;hit'}");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("cache.status_name: invalid cache name \"edge;hit\""));
}

#[test]
fn the_redis_tier_without_a_top_level_redis_is_refused() {
    assert_eq!(
        cache_errors("{redis: {}}"),
        ["cache.redis: the shared cache tier needs a top-level redis"]
    );
}

#[test]
fn the_redis_tier_has_defaults() {
    assert_eq!(
        settings("{redis: {}}").redis,
        Some(CacheRedis {
            prefix: "ferrogate:cache:".to_owned(),
            max_object_bytes: 1 << 20,
        })
    );
}

#[test]
fn a_redis_key_with_no_value_turns_the_tier_on() {
    let cfg = parse(&format!("{BASE}{REDIS}cache:\n  redis:\n{ROUTE}")).unwrap();
    assert!(cfg.cache.redis.is_some());
}

#[test]
fn an_empty_redis_prefix_is_refused() {
    assert_eq!(
        errors(&format!("{REDIS}cache: {{redis: {{prefix: ''}}}}\n{ROUTE}")),
        ["cache.redis.prefix: must not be empty"]
    );
}

#[test]
fn a_redis_prefix_with_whitespace_is_refused() {
    assert_eq!(
        errors(&format!(
            "{REDIS}cache: {{redis: {{prefix: 'my cache:'}}}}\n{ROUTE}"
        )),
        ["cache.redis.prefix: \"my cache:\" must not contain whitespace or control characters"]
    );
}

#[test]
fn a_redis_prefix_with_a_control_character_is_refused() {
    let errs = errors(&format!(
        "{REDIS}cache: {{redis: {{prefix: \"c\\x01\"}}}}\n{ROUTE}"
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("cache.redis.prefix: "), "{errs:#?}");
}

#[test]
fn zero_redis_max_object_bytes_is_refused() {
    assert_eq!(
        errors(&format!(
            "{REDIS}cache: {{redis: {{max_object_bytes: 0}}}}\n{ROUTE}"
        )),
        ["cache.redis.max_object_bytes: must be more than 0"]
    );
}

#[test]
fn unknown_cache_keys_are_reported_with_their_paths() {
    let errs = errors(&format!(
        "{REDIS}cache: {{max_size: 1, redis: {{ttl: 5s}}}}\nroutes: [{{upstream: app, cache: {{vary: [a]}}}}]\n"
    ));
    assert_eq!(
        errs,
        [
            "routes[0].cache.vary: unknown key",
            "cache.max_size: unknown key",
            "cache.redis.ttl: unknown key",
        ]
    );
}

#[test]
fn a_route_without_cache_is_not_cached() {
    let cfg = parse(&format!("{BASE}{ROUTE}")).unwrap();
    assert_eq!(cfg.routes[0].cache, None);
}

#[test]
fn an_empty_route_cache_turns_caching_on_with_defaults() {
    assert_eq!(route_cache("{}"), Some(RouteCache::default()));
}

#[test]
fn a_route_cache_key_with_no_value_turns_caching_on() {
    assert_eq!(route_cache(""), Some(RouteCache::default()));
}

#[test]
fn route_cache_keys_reach_the_model() {
    assert_eq!(
        route_cache(
            "{key_headers: [Accept-Language], key_cookies: [region], store_set_cookie: true}"
        ),
        Some(RouteCache {
            key_headers: vec![HeaderName::from_static("accept-language")],
            key_cookies: vec!["region".to_owned()],
            key_consumer: false,
            key_geo: vec![],
            store_set_cookie: true,
        })
    );
}

#[test]
fn an_invalid_key_header_is_refused() {
    assert_eq!(
        route_errors("{key_headers: [accept, 'x y']}"),
        ["routes[0].cache.key_headers[1]: invalid header name \"x y\""]
    );
}

#[test]
fn authorization_is_refused_as_a_key_header() {
    assert_eq!(
        route_errors("{key_headers: [Authorization]}"),
        ["routes[0].cache.key_headers[0]: authorization is not a cache key part; use key_consumer on an authenticated route"]
    );
}

#[test]
fn cookie_is_refused_as_a_key_header() {
    assert_eq!(
        route_errors("{key_headers: [accept, COOKIE]}"),
        ["routes[0].cache.key_headers[1]: cookie is not a cache key part; name the cookies in key_cookies"]
    );
}

#[test]
fn a_cookie_name_with_a_separator_is_refused() {
    assert_eq!(
        route_errors("{key_cookies: [region, 'a=b']}"),
        ["routes[0].cache.key_cookies[1]: invalid cookie name \"a=b\""]
    );
}

#[test]
fn an_empty_cookie_name_is_refused() {
    assert_eq!(
        route_errors("{key_cookies: ['']}"),
        ["routes[0].cache.key_cookies[0]: invalid cookie name \"\""]
    );
}

#[test]
fn key_consumer_without_route_auth_is_refused() {
    assert_eq!(
        route_errors("{key_consumer: true}"),
        ["routes[0].cache.key_consumer: needs auth on the route: only an authenticated consumer may be part of the key"]
    );
}

#[test]
fn key_consumer_on_an_authenticated_route_is_accepted() {
    let cfg = parse(&format!(
        "{BASE}auth: {{methods: {{keys: {{api_key: {{header: x-api-key}}}}}}}}\nroutes:\n  - upstream: app\n    auth: {{methods: [keys]}}\n    cache: {{key_consumer: true}}\n"
    ))
    .unwrap();
    assert!(cfg.routes[0].cache.as_ref().unwrap().key_consumer);
}

#[test]
fn cache_on_a_redirect_route_is_refused() {
    assert_eq!(
        errors("routes: [{redirect: {scheme: https}, cache: {}}]\n"),
        ["routes[0].cache: not allowed with redirect"]
    );
}

#[test]
fn three_cache_mistakes_are_all_reported() {
    let errs = errors(
        "cache: {max_object_bytes: 0, redis: {}}\nroutes: [{upstream: app, cache: {key_headers: [cookie]}}]\n",
    );
    assert_eq!(
        errs,
        [
            "routes[0].cache.key_headers[0]: cookie is not a cache key part; name the cookies in key_cookies",
            "cache.max_object_bytes: must be more than 0",
            "cache.redis: the shared cache tier needs a top-level redis",
        ]
    );
}

#[test]
fn a_negative_size_is_reported_with_its_path() {
    assert_eq!(
        cache_errors("{max_bytes: -1}"),
        ["cache.max_bytes: invalid size \"-1\"; use bytes or e.g. 512KiB, 8MiB, 1GiB"]
    );
}

#[test]
fn a_fractional_size_is_reported_with_its_path() {
    assert_eq!(
        cache_errors("{max_object_bytes: 1.5}"),
        ["cache.max_object_bytes: invalid size \"1.5\"; use bytes or e.g. 512KiB, 8MiB, 1GiB"]
    );
}
