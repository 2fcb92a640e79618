//! Rate limiting end to end: local policies through the gateway (429 with Retry-After and
//! problem+json, RateLimit fields, shared policies, keys, concurrency), and cluster-wide
//! policies on a real `redis-server` shared by three gateways (strict and batched), with
//! Redis stopped and restarted under them. Windows are an hour long so that no test
//! straddles a window boundary by chance.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::redis::RedisServer;
use support::*;

/// A gateway with the given `rate_limiting`/`redis` YAML and routes (list items).
fn gateway(backend: SocketAddr, top: &str, routes: &str) -> TestGateway {
    let yaml = format!(
        "workers: 2\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n\
         upstreams:\n  app:\n    targets:\n      - address: \"{backend}\"\n{top}routes:\n{routes}"
    );
    TestGateway::start(&yaml)
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(path).header("host", "t");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// `n` requests, `parallel` at a time, spread over `gateways`; returns the count per status.
async fn burst(
    gateways: &[SocketAddr],
    path: &'static str,
    n: usize,
    parallel: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let mut statuses = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < n {
        let mut tasks = Vec::new();
        for j in i..(i + parallel).min(n) {
            let addr = gateways[j % gateways.len()];
            tasks.push(tokio::spawn(async move {
                get_with(addr, path, &[]).await.status
            }));
        }
        for t in tasks {
            *statuses.entry(t.await.unwrap().as_u16()).or_default() += 1;
        }
        i += parallel;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_is_429_with_retry_after_and_problem_json_and_never_reaches_the_backend() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    tight: {algorithm: fixed_window, limit: 3, window: 1h}\n",
        "  - upstream: app\n    rate_limits: [tight]\n",
    );
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "t", "/").await.status, StatusCode::OK);
    }
    let refused = get(gw.addr, "t", "/").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        refused.text().contains("\"status\":429"),
        "{}",
        refused.text()
    );
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "retry-after {wait}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"tight\";q=3;w=3600")
    );
    assert!(refused
        .header("ratelimit")
        .unwrap()
        .starts_with("\"tight\";r=0;t="));
    assert_eq!(backend.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_responses_carry_ratelimit_fields_and_x_headers() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    p: {algorithm: sliding_window, limit: 10, window: 10s, x_ratelimit_headers: true}\n",
        "  - upstream: app\n    rate_limits: [p]\n",
    );
    let first = get(gw.addr, "t", "/").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("ratelimit-policy"), Some("\"p\";q=10;w=10"));
    assert!(first
        .header("ratelimit")
        .unwrap()
        .starts_with("\"p\";r=9;t="));
    assert_eq!(first.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("9"));
    let second = get(gw.addr, "t", "/").await;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_answers_on_a_limited_route_carry_the_fields_too() {
    let backend = Backend::named("a").await;
    let top =
        "rate_limiting:\n  policies:\n    p: {algorithm: fixed_window, limit: 10, window: 1m}\n";
    let yaml = format!(
        "workers: 1\nlisteners: [{{address: \"127.0.0.1:0\"}}]\nupstreams:\n  app: {{targets: [{{address: \"{}\"}}]}}\n  dead: {{targets: [{{address: \"127.0.0.1:1\"}}]}}\n{top}routes:\n  - {{match: {{path: {{prefix: /down}}}}, upstream: dead, rate_limits: [p], max_body_bytes: 1}}\n  - {{upstream: app, rate_limits: [p], cache: {{}}}}\n",
        backend.addr
    );
    let gw = TestGateway::start(&yaml);
    let failed = get(gw.addr, "t", "/down").await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.header("ratelimit-policy"), Some("\"p\";q=10;w=60"));
    assert!(failed
        .header("ratelimit")
        .unwrap()
        .starts_with("\"p\";r=9;t="));
    let req = Request::post("/down")
        .header("host", "t")
        .header("content-length", "10")
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    let too_large = send(gw.addr, req).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.header("ratelimit-policy"),
        Some("\"p\";q=10;w=60"),
        "an answer before the policies were checked still names them"
    );
    assert!(too_large.header("ratelimit").is_none(), "but has no count");
    let only_cached = get_with(gw.addr, "/x", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(only_cached.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(only_cached
        .header("ratelimit")
        .unwrap()
        .starts_with("\"p\";r=8;t="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_by_two_routes_counts_once_across_them() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    shared: {algorithm: fixed_window, limit: 4, window: 1h}\n",
        "  - match: {path: {prefix: /a}}\n    upstream: app\n    rate_limits: [shared]\n  \
         - match: {path: {prefix: /b}}\n    upstream: app\n    rate_limits: [shared]\n",
    );
    let mut ok = 0;
    for path in ["/a", "/b", "/a", "/b", "/a", "/b"] {
        if get(gw.addr, "t", path).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_count_each_value_separately() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    per_key: {algorithm: token_bucket, rate: 1, period: 1m, burst: 2, key: ['header:x-api-key']}\n",
        "  - upstream: app\n    rate_limits: [per_key]\n",
    );
    let status = |key: &'static str| {
        let addr = gw.addr;
        async move { get_with(addr, "/", &[("x-api-key", key)]).await.status }
    };
    assert_eq!(status("alice").await, StatusCode::OK);
    assert_eq!(status("alice").await, StatusCode::OK);
    assert_eq!(status("alice").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status("bob").await, StatusCode::OK);
    assert_eq!(status("bob").await, StatusCode::OK);
    assert_eq!(status("bob").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policy_refuses_while_the_limit_is_in_flight_and_frees_at_the_end() {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        text(StatusCode::OK, "slow")
    })
    .await;
    let gw = gateway(
        slow.addr,
        "rate_limiting:\n  policies:\n    two: {algorithm: concurrency, limit: 2}\n",
        "  - upstream: app\n    rate_limits: [two]\n",
    );
    let addr = gw.addr;
    let in_flight: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "t", "/").await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let third = get(gw.addr, "t", "/").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.header("retry-after"), Some("1"));
    for t in in_flight {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(get(gw.addr, "t", "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_two_workers_are_admitted_exactly_the_limit() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    p: {algorithm: sliding_window, limit: 50, window: 1h}\n",
        "  - upstream: app\n    rate_limits: [p]\n",
    );
    let statuses = burst(&[gw.addr], "/", 120, 24).await;
    assert_eq!(statuses.get(&200), Some(&50), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&70), "{statuses:?}");
    assert_eq!(backend.count(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_allowed_and_rejected_per_policy() {
    let backend = Backend::named("a").await;
    let gw = gateway(
        backend.addr,
        "rate_limiting:\n  policies:\n    m: {algorithm: fixed_window, limit: 2, window: 1h}\n",
        "  - upstream: app\n    rate_limits: [m]\n",
    );
    for _ in 0..5 {
        get(gw.addr, "t", "/").await;
    }
    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    assert!(
        metrics.contains("ferrogate_ratelimit_requests_total{policy=\"m\",outcome=\"allowed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrogate_ratelimit_requests_total{policy=\"m\",outcome=\"rejected\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrogate_ratelimit_local_keys 1"),
        "{metrics}"
    );
}

// ---- Redis ----

fn redis_top(redis: &RedisServer, policy: &str) -> String {
    format!(
        "redis:\n  url: {}\n  timeout: 1s\nrate_limiting:\n  policies:\n    p: {policy}\n",
        redis.url()
    )
}

fn three_gateways(backend: SocketAddr, top: &str) -> Vec<TestGateway> {
    (0..3)
        .map(|_| gateway(backend, top, "  - upstream: app\n    rate_limits: [p]\n"))
        .collect()
}

async fn three_gateways_admit_exactly(policy: &str, limit: usize) {
    let redis = RedisServer::start();
    let backend = Backend::named("a").await;
    // Fail closed: a Redis call slowed past its timeout on a loaded machine then answers
    // 503 instead of being admitted by the local fallback, so the count of 200s stays exact.
    let policy = policy.replace('}', ", on_redis_error: reject}");
    let gws = three_gateways(backend.addr, &redis_top(&redis, &policy));
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    let statuses = burst(&addrs, "/", limit * 3, 30).await;
    assert_eq!(statuses.get(&200), Some(&limit), "{policy}: {statuses:?}");
    let refused = statuses.get(&429).unwrap_or(&0) + statuses.get(&503).unwrap_or(&0);
    assert_eq!(refused, limit * 2, "{policy}: {statuses:?}");
    assert_eq!(backend.count(), limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_a_strict_fixed_window_exactly() {
    three_gateways_admit_exactly(
        "{algorithm: fixed_window, limit: 40, window: 1h, store: redis}",
        40,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_a_strict_sliding_window_exactly() {
    three_gateways_admit_exactly(
        "{algorithm: sliding_window, limit: 40, window: 1h, store: redis}",
        40,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_a_strict_token_bucket_exactly() {
    three_gateways_admit_exactly(
        "{algorithm: token_bucket, rate: 1, period: 1m, burst: 40, store: redis}",
        40,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_mode_stays_within_its_documented_bound() {
    let redis = RedisServer::start();
    let backend = Backend::named("a").await;
    let gws = three_gateways(
        backend.addr,
        &redis_top(
            &redis,
            "{algorithm: fixed_window, limit: 60, window: 1h, store: redis, redis_mode: batched, batch_interval: 5ms, batch_max_pending: 4, on_redis_error: reject}",
        ),
    );
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    let statuses = burst(&addrs, "/", 240, 30).await;
    let admitted = statuses.get(&200).copied().unwrap_or(0);
    // limit + instances × max_pending − 1 (docs/config.md)
    assert!(admitted < 60 + 3 * 4, "{statuses:?}");
    assert!(admitted >= 60 - 3 * 4, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_to_local_limits_and_closed_to_503_within_the_timeout() {
    let mut redis = RedisServer::start();
    let backend = Backend::named("a").await;
    let top = format!(
        "redis:\n  url: {}\n  timeout: 200ms\nrate_limiting:\n  policies:\n    \
         open: {{algorithm: fixed_window, limit: 5, window: 1h, store: redis, on_redis_error: local}}\n    \
         closed: {{algorithm: fixed_window, limit: 5, window: 1h, store: redis, on_redis_error: reject}}\n",
        redis.url()
    );
    let gw = gateway(
        backend.addr,
        &top,
        "  - match: {path: {prefix: /open}}\n    upstream: app\n    rate_limits: [open]\n  \
         - match: {path: {prefix: /closed}}\n    upstream: app\n    rate_limits: [closed]\n",
    );
    assert_eq!(get(gw.addr, "t", "/open").await.status, StatusCode::OK);
    assert_eq!(get(gw.addr, "t", "/closed").await.status, StatusCode::OK);
    redis.stop();

    let mut open = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        open.push(get(gw.addr, "t", "/open").await.status);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    // The local fallback has its own count with the same limit.
    assert_eq!(
        open.iter().filter(|s| **s == StatusCode::OK).count(),
        5,
        "{open:?}"
    );
    assert_eq!(open[5], StatusCode::TOO_MANY_REQUESTS);

    let start = Instant::now();
    let closed = get(gw.addr, "t", "/closed").await;
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        closed.header("retry-after"),
        Some("1"),
        "a fail-closed 503 says when to come back"
    );
    assert_eq!(
        closed.header("ratelimit-policy"),
        Some("\"closed\";q=5;w=3600")
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    assert!(
        metrics.contains("ferrogate_ratelimit_fallbacks_total{policy=\"open\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrogate_redis_errors_total{"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_redis_brings_cluster_wide_limits_back_without_a_gateway_restart() {
    let mut redis = RedisServer::start();
    let backend = Backend::named("a").await;
    let top = redis_top(
        &redis,
        "{algorithm: fixed_window, limit: 5, window: 1h, store: redis, on_redis_error: reject}",
    );
    let gws = three_gateways(backend.addr, &top);
    redis.stop();
    assert_eq!(
        get(gws[0].addr, "t", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    redis.restart();
    // Each gateway reconnects in the background; the first request each admits uses up
    // three of the five, and then the three share the last two.
    for gw in &gws {
        let back = eventually(Duration::from_secs(5), || async {
            get(gw.addr, "t", "/").await.status == StatusCode::OK
        })
        .await;
        assert!(back, "a gateway did not reconnect to Redis");
    }
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    let statuses = burst(&addrs, "/", 9, 3).await;
    assert_eq!(statuses.get(&200), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&7), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_team_share_a_metadata_keyed_limit() {
    let backend = Backend::named("a").await;
    let key = |k: &str| ferrogate::auth::apikey::hash_key(k.as_bytes());
    let top = format!(
        "consumers:\n\
         \x20 alice: {{api_keys: [\"{}\"], metadata: {{team: payments}}}}\n\
         \x20 bob: {{api_keys: [\"{}\"], metadata: {{team: payments}}}}\n\
         \x20 carol: {{api_keys: [\"{}\"], metadata: {{team: search}}}}\n\
         \x20 dave: {{api_keys: [\"{}\"]}}\n\
         auth:\n  methods:\n    keys: {{api_key: {{header: x-api-key}}}}\n\
         rate_limiting:\n  policies:\n    per_team: {{algorithm: fixed_window, limit: 2, window: 1h, key: ['metadata:team']}}\n",
        key("ka"),
        key("kb"),
        key("kc"),
        key("kd"),
    );
    let gw = gateway(
        backend.addr,
        &top,
        "  - upstream: app\n    auth: {methods: [keys]}\n    rate_limits: [per_team]\n",
    );
    let status = |k: &'static str| {
        let addr = gw.addr;
        async move { get_with(addr, "/", &[("x-api-key", k)]).await.status }
    };
    // alice and bob draw on the payments team's two requests between them.
    assert_eq!(status("ka").await, StatusCode::OK);
    assert_eq!(status("kb").await, StatusCode::OK);
    assert_eq!(status("ka").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status("kb").await, StatusCode::TOO_MANY_REQUESTS);
    // Another team, and a consumer with no team (counted on its own), have their own.
    assert_eq!(status("kc").await, StatusCode::OK);
    assert_eq!(status("kc").await, StatusCode::OK);
    assert_eq!(status("kc").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status("kd").await, StatusCode::OK);
    assert_eq!(status("kd").await, StatusCode::OK);
    assert_eq!(status("kd").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        backend.count(),
        6,
        "refused requests never reached the backend"
    );
}
