//! HTTP caching end to end: a real origin on loopback, the gateway caching in front of it:
//! storing and hits, coalescing, stale serving, validation failures, invalidation, key
//! parts, purges, metrics and two instances sharing Redis. The RFC 9111 scenario table is in
//! tests/rfc9111.rs.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::*;

const CACHED: &str = "  - upstream: app\n    cache: {}\n";

const GET: &str = "GET";
const NONE: &[(&str, &str)] = &[];

#[tokio::test]
async fn a_miss_is_stored_and_says_so_and_a_hit_has_an_age() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"hello")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    let miss = get(gw.addr, "a", "/x").await;
    assert_eq!(
        miss.header("cache-status"),
        Some("ferrogate;fwd=uri-miss;fwd-status=200;stored")
    );
    let hit = get(gw.addr, "a", "/x").await;
    assert_eq!(hit.text(), "hello");
    assert!(hit
        .header("cache-status")
        .unwrap()
        .starts_with("ferrogate;hit;ttl="));
    assert!(hit.header("age").is_some());
    assert!(hit.header("x-request-id").is_some());
    assert_ne!(hit.header("x-request-id"), miss.header("x-request-id"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_request() {
    let origin = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"slow")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    let mut all = Vec::new();
    for _ in 0..20 {
        all.push(tokio::spawn(get(gw.addr, "a", "/same")));
    }
    for task in all {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "slow");
    }
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    let origin = Backend::start(false, move |_req| {
        let n = v.load(Ordering::SeqCst);
        async move {
            Response::builder()
                .header("cache-control", "max-age=0, stale-while-revalidate=600")
                .body(full(Bytes::from(format!("v{n}"))))
                .unwrap()
        }
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/swr").await.text(), "v1");
    version.store(2, Ordering::SeqCst);
    let stale = get(gw.addr, "a", "/swr").await;
    assert_eq!(stale.text(), "v1", "served stale without waiting");
    assert!(stale
        .header("cache-status")
        .unwrap()
        .contains("detail=stale"));
    let refreshed = eventually(Duration::from_secs(3), || async {
        get(gw.addr, "a", "/swr").await.text() == "v2"
    })
    .await;
    assert!(refreshed, "the background refresh stored the new response");
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_response_when_the_origin_fails() {
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let origin = Backend::start(false, move |_req| {
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                return text(StatusCode::SERVICE_UNAVAILABLE, "down");
            }
            Response::builder()
                .header("cache-control", "max-age=0, stale-if-error=600")
                .header("etag", "\"a\"")
                .body(full(Bytes::from_static(b"good")))
                .unwrap()
        }
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/sie").await.text(), "good");
    failing.store(true, Ordering::SeqCst);
    let got = get(gw.addr, "a", "/sie").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "good");
    assert!(got
        .header("cache-status")
        .unwrap()
        .contains("stale-if-error"));
    assert_eq!(origin.count(), 2, "the origin was asked");
}

#[tokio::test]
async fn stale_if_error_also_covers_an_unreachable_origin() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=0, stale-if-error=600")
            .body(full(Bytes::from_static(b"kept")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/down").await.text(), "kept");
    drop(origin);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = get(gw.addr, "a", "/down").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "kept");
}

#[tokio::test]
async fn must_revalidate_with_the_origin_unreachable_is_504() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=0, must-revalidate")
            .header("etag", "\"m\"")
            .body(full(Bytes::from_static(b"strict")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/mr").await.text(), "strict");
    drop(origin);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = get(gw.addr, "a", "/mr").await;
    assert_eq!(got.status, 504);
    assert_eq!(
        got.header("cache-status"),
        Some("ferrogate;fwd=stale;detail=upstream-error")
    );
}

#[tokio::test]
async fn validation_sends_the_stored_validators_and_a_304_refreshes_the_entry() {
    let origin = Backend::start(false, |req| async move {
        if req.headers().get("if-none-match").is_some() {
            return Response::builder()
                .status(304)
                .header("cache-control", "max-age=60")
                .header("etag", "\"e1\"")
                .body(full(Bytes::new()))
                .unwrap();
        }
        Response::builder()
            .header("cache-control", "max-age=0")
            .header("etag", "\"e1\"")
            .header("x-origin", "first")
            .body(full(Bytes::from_static(b"payload")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/v").await.text(), "payload");
    let validated = request(gw.addr, GET, "/v", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(validated.status, 200);
    assert_eq!(validated.text(), "payload");
    assert_eq!(validated.header("x-origin"), Some("first"));
    let sent = origin.requests();
    assert_eq!(
        sent[1].headers["if-none-match"], "\"e1\"",
        "the cache's validator"
    );
    // The 304 made the entry fresh for a minute.
    let hit = get(gw.addr, "a", "/v").await;
    assert!(hit.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_successful_post_invalidates_the_stored_get() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"doc")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    get(gw.addr, "a", "/doc").await;
    get(gw.addr, "a", "/doc").await;
    assert_eq!(origin.count(), 1);
    let post = request(gw.addr, "POST", "/doc", NONE).await;
    assert!(post.header("cache-status").unwrap().contains("fwd=method"));
    get(gw.addr, "a", "/doc").await;
    assert_eq!(
        origin.count(),
        3,
        "the GET after the POST went to the origin"
    );
}

#[tokio::test]
async fn the_surrogate_key_field_is_not_sent_to_clients() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "product-1 catalog")
            .body(full(Bytes::from_static(b"p1")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(
        get(gw.addr, "a", "/p/1").await.header("surrogate-key"),
        None
    );
    assert_eq!(
        get(gw.addr, "a", "/p/1").await.header("surrogate-key"),
        None
    );
}

#[tokio::test]
async fn a_large_body_streams_to_the_first_client_and_is_served_whole_from_cache() {
    let big = Bytes::from(vec![b'z'; 3 << 20]);
    let body = big.clone();
    let origin = Backend::start(false, move |_req| {
        let body = body.clone();
        async move {
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/big").await.body, big);
    let hit = get(gw.addr, "a", "/big").await;
    assert_eq!(hit.body, big);
    assert!(hit.header("cache-status").unwrap().contains("hit"));
}

#[tokio::test]
async fn routes_without_cache_are_untouched() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let routes = "  - {match: {path: {prefix: /c}}, upstream: app, cache: {}}\n  - upstream: app\n";
    let gw = TestGateway::start(&config(&[origin.addr], routes));
    let plain = get(gw.addr, "a", "/other").await;
    assert_eq!(plain.header("cache-status"), None);
    get(gw.addr, "a", "/other").await;
    assert_eq!(origin.count(), 2);
}

/// POSTs a purge to the admin listener; returns the status and the body.
async fn purge(gw: &TestGateway, json: &str) -> (u16, String) {
    let req = Request::post("/cache/purge")
        .header("host", "admin")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap();
    let got = send(gw.admin.unwrap(), req).await;
    (got.status.as_u16(), got.text())
}

async fn tagged_origin() -> Backend {
    Backend::start(false, |req| async move {
        let tag = match req.uri().path() {
            "/p/1" => "product-1 catalog",
            "/p/2" => "product-2 catalog",
            _ => "other",
        };
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("surrogate-key", tag)
            .body(full(Bytes::from_static(b"item")))
            .unwrap()
    })
    .await
}

async fn is_hit(gw: &TestGateway, path: &str) -> bool {
    get(gw.addr, "a", path)
        .await
        .header("cache-status")
        .is_some_and(|s| s.contains(";hit"))
}

async fn fill(gw: &TestGateway, paths: &[&str]) {
    for p in paths {
        get(gw.addr, "a", p).await;
        assert!(is_hit(gw, p).await, "{p} is stored");
    }
}

#[tokio::test]
async fn purge_by_surrogate_key_removes_only_tagged_responses() {
    let origin = tagged_origin().await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    fill(&gw, &["/p/1", "/p/2", "/q"]).await;
    assert_eq!(
        purge(&gw, r#"{"surrogate_key": "product-1"}"#).await,
        (200, "{\"purged\":1}\n".to_string())
    );
    assert!(!is_hit(&gw, "/p/1").await);
    assert!(is_hit(&gw, "/p/2").await);
    assert_eq!(purge(&gw, r#"{"surrogate_key": "catalog"}"#).await.0, 200);
    assert!(!is_hit(&gw, "/p/2").await);
    assert!(is_hit(&gw, "/q").await);
}

#[tokio::test]
async fn purge_by_url_and_by_prefix() {
    let origin = tagged_origin().await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    fill(&gw, &["/p/1", "/p/2", "/q"]).await;
    // Any spelling of the URL: the host's case and the default port do not matter.
    let (status, body) = purge(&gw, r#"{"url": "http://A:80/p/1"}"#).await;
    assert_eq!((status, body.as_str()), (200, "{\"purged\":1}\n"));
    assert!(!is_hit(&gw, "/p/1").await);
    assert!(is_hit(&gw, "/p/2").await);
    assert_eq!(purge(&gw, r#"{"prefix": "http://a/p/"}"#).await.0, 200);
    assert!(!is_hit(&gw, "/p/2").await);
    assert!(is_hit(&gw, "/q").await);
    assert_eq!(purge(&gw, r#"{"all": true}"#).await.0, 200);
    assert!(!is_hit(&gw, "/q").await);
}

#[tokio::test]
async fn a_malformed_purge_is_refused_and_purges_nothing() {
    let origin = tagged_origin().await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    fill(&gw, &["/q"]).await;
    assert_eq!(purge(&gw, "{not json").await.0, 400);
    assert_eq!(purge(&gw, r#"{"url": "/relative"}"#).await.0, 400);
    assert_eq!(
        purge(&gw, r#"{"all": true, "url": "http://a/q"}"#).await.0,
        400
    );
    assert!(is_hit(&gw, "/q").await);
}

#[tokio::test]
async fn cache_metrics_count_hits_misses_and_stored_bytes() {
    let origin = tagged_origin().await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    fill(&gw, &["/q"]).await;
    let req = Request::get("/metrics")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let text = send(gw.admin.unwrap(), req).await.text();
    assert!(
        text.contains("ferrogate_cache_requests_total{route=\"route-0\",outcome=\"hit\"} 1"),
        "{text}"
    );
    assert!(text.contains("ferrogate_cache_requests_total{route=\"route-0\",outcome=\"miss\"} 1"));
    let bytes_line = text
        .lines()
        .find(|l| l.starts_with("ferrogate_cache_stored_bytes "))
        .unwrap();
    assert_ne!(bytes_line, "ferrogate_cache_stored_bytes 0");
}

#[tokio::test]
async fn two_instances_share_stored_responses_and_purges_through_redis() {
    let redis = support::redis::RedisServer::start();
    let origin = tagged_origin().await;
    let yaml = format!(
        "redis:\n  url: {}\n  timeout: 1s\ncache:\n  redis: {{}}\n{}",
        redis.url(),
        config(&[origin.addr], CACHED)
    );
    let a = TestGateway::start(&yaml);
    let b = TestGateway::start(&yaml);
    let only_cached = [("cache-control", "only-if-cached")];
    // Both tiers connect in the background; a purge answers 200 once its instance's has.
    let connected = eventually(Duration::from_secs(5), || async {
        purge(&a, r#"{"all": true}"#).await.0 == 200 && purge(&b, r#"{"all": true}"#).await.0 == 200
    })
    .await;
    assert!(connected, "both instances reach Redis");
    // Filled on one instance...
    assert_eq!(get(a.addr, "a", "/p/1").await.status, 200);
    // ...hit on the other, without the origin (the copy reaches Redis just after the fill).
    let shared = eventually(Duration::from_secs(3), || async {
        let got = request(b.addr, GET, "/p/1", &only_cached).await;
        got.status == 200
            && got
                .header("cache-status")
                .unwrap()
                .contains("detail=shared")
    })
    .await;
    assert!(shared, "instance b served a's response from Redis");
    assert!(is_hit(&b, "/p/1").await, "and keeps a copy in memory");
    assert_eq!(origin.count(), 1);
    // Purged on one instance: gone from both within a second.
    assert_eq!(purge(&b, r#"{"surrogate_key": "product-1"}"#).await.0, 200);
    let gone = eventually(Duration::from_secs(1), || async {
        request(a.addr, GET, "/p/1", &only_cached).await.status == 504
            && request(b.addr, GET, "/p/1", &only_cached).await.status == 504
    })
    .await;
    assert!(gone, "the purge reached both instances");
}

/// An origin that counts requests and lets the cache keep everything for a minute.
async fn counting_origin() -> Backend {
    Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"v")))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn key_headers_and_cookies_keep_separate_copies() {
    let origin = counting_origin().await;
    let routes = "  - upstream: app\n    cache: {key_headers: [X-Tenant], key_cookies: [region]}\n";
    let gw = TestGateway::start(&config(&[origin.addr], routes));
    let t1 = [("x-tenant", "one"), ("cookie", "a=1; region=eu")];
    let t2 = [("x-tenant", "two"), ("cookie", "region=eu")];
    let t1_us = [("x-tenant", "one"), ("cookie", "region=us")];
    let t1_other_cookie = [("x-tenant", "one"), ("cookie", "region=eu; b=2")];
    for fields in [&t1, &t2, &t1_us] {
        request(gw.addr, GET, "/k", fields).await;
    }
    assert_eq!(origin.count(), 3, "each tenant and region is its own entry");
    let again = request(gw.addr, GET, "/k", &t1_other_cookie).await;
    assert!(again.header("cache-status").unwrap().contains(";hit"));
    assert_eq!(origin.count(), 3, "other cookies are not part of the key");
}

#[tokio::test]
async fn key_consumer_gives_each_consumer_its_own_copy() {
    let origin = counting_origin().await;
    let yaml = format!(
        "consumers:\n  a: {{api_keys: [\"{}\"]}}\n  b: {{api_keys: [\"{}\"]}}\nauth:\n  methods:\n    keys: {{api_key: {{header: X-Api-Key}}}}\n{}",
        ferrogate::auth::apikey::hash_key(b"key-a"),
        ferrogate::auth::apikey::hash_key(b"key-b"),
        config(
            &[origin.addr],
            "  - upstream: app\n    auth: {methods: [keys]}\n    cache: {key_consumer: true}\n"
        )
    );
    let gw = TestGateway::start(&yaml);
    request(gw.addr, GET, "/me", &[("x-api-key", "key-a")]).await;
    request(gw.addr, GET, "/me", &[("x-api-key", "key-b")]).await;
    assert_eq!(origin.count(), 2);
    let hit = request(gw.addr, GET, "/me", &[("x-api-key", "key-a")]).await;
    assert!(hit.header("cache-status").unwrap().contains(";hit"));
    // A cached response is still only served to callers the route admits.
    assert_eq!(request(gw.addr, GET, "/me", NONE).await.status, 401);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_stale_response_is_served_when_the_origin_is_unreachable_and_says_so() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=0")
            .header("etag", "\"k\"")
            .body(full(Bytes::from_static(b"kept")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/gone").await.text(), "kept");
    drop(origin);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = get(gw.addr, "a", "/gone").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "kept"));
    let status = got.header("cache-status").unwrap();
    assert!(
        status.contains("hit") && status.contains("detail=stale-origin-unreachable"),
        "{status}"
    );
}

#[tokio::test]
async fn a_targeted_field_takes_precedence_and_the_gateways_own_never_reaches_clients() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=60")
            .header("ferrogate-cache-control", "max-age=60")
            .body(full(Bytes::from_static(b"edge")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    let first = get(gw.addr, "a", "/t").await;
    assert_eq!(
        first.header("cache-control"),
        Some("no-store"),
        "clients keep theirs"
    );
    assert_eq!(first.header("cdn-cache-control"), Some("max-age=60"));
    assert!(first.header("ferrogate-cache-control").is_none());
    let second = get(gw.addr, "a", "/t").await;
    assert!(second.header("cache-status").unwrap().contains(";hit"));
    assert!(second.header("ferrogate-cache-control").is_none());
    assert_eq!(origin.count(), 1, "stored despite Cache-Control: no-store");

    let stripping = config(&[origin.addr], CACHED)
        .replace("routes:\n", "cache: {strip_targeted: true}\nroutes:\n");
    let gw = TestGateway::start(&stripping);
    let got = get(gw.addr, "a", "/t").await;
    assert!(got.header("cdn-cache-control").is_none());
    assert_eq!(got.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_range_is_answered_with_206_from_the_stored_response() {
    let origin = Backend::start(false, |_req| async {
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("etag", "\"r\"")
            .body(full(Bytes::from_static(b"0123456789")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/r").await.text(), "0123456789");
    let part = request(gw.addr, GET, "/r", &[("range", "bytes=2-4")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    let matching = [("range", "bytes=-3"), ("if-range", "\"r\"")];
    assert_eq!(request(gw.addr, GET, "/r", &matching).await.text(), "789");
    let changed = [("range", "bytes=-3"), ("if-range", "\"other\"")];
    let whole = request(gw.addr, GET, "/r", &changed).await;
    assert_eq!(
        (whole.status.as_u16(), whole.text().as_str()),
        (200, "0123456789")
    );
    let past = request(gw.addr, GET, "/r", &[("range", "bytes=20-")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */10"));
    assert_eq!(origin.count(), 1, "every answer came from the store");
}

#[tokio::test]
async fn a_200_to_head_refreshes_the_stored_get_and_head_is_answered_from_it() {
    let origin = Backend::start(false, |req| async move {
        let head = req.method() == http::Method::HEAD;
        Response::builder()
            .header(
                "cache-control",
                if head { "max-age=60" } else { "max-age=0" },
            )
            .header("etag", "\"h\"")
            .header("x-version", if head { "2" } else { "1" })
            .body(full(Bytes::from_static(if head { b"" } else { b"body" })))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    assert_eq!(get(gw.addr, "a", "/h").await.header("x-version"), Some("1"));
    let head = request(gw.addr, "HEAD", "/h", NONE).await;
    assert_eq!(head.header("x-version"), Some("2"));
    let after = get(gw.addr, "a", "/h").await;
    assert!(after.header("cache-status").unwrap().contains(";hit"));
    assert_eq!(
        after.header("x-version"),
        Some("2"),
        "the HEAD's fields were stored"
    );
    assert_eq!(after.text(), "body", "with the stored body");
    let head = request(gw.addr, "HEAD", "/h", NONE).await;
    assert!(head.header("cache-status").unwrap().contains(";hit"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn the_gateways_own_answers_on_a_cached_route_carry_cache_status() {
    let yaml = "workers: 1\nlisteners: [{address: \"127.0.0.1:0\"}]\n\
        upstreams:\n  dead: {targets: [{address: \"127.0.0.1:1\"}]}\n\
        routes:\n  - {upstream: dead, cache: {}, max_body_bytes: 1}\n";
    let gw = TestGateway::start(yaml);
    let failed = get(gw.addr, "a", "/x").await;
    assert_eq!(failed.status, 502);
    assert_eq!(
        failed.header("cache-status"),
        Some("ferrogate;fwd=uri-miss;detail=upstream-error")
    );
    let refused = request(gw.addr, "POST", "/x", &[("content-length", "10")]).await;
    assert_eq!(refused.status, 413);
    assert_eq!(
        refused.header("cache-status"),
        Some("ferrogate;fwd=bypass;detail=gateway-answer")
    );
}
