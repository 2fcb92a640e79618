//! HTTP caching end to end: a real origin on loopback, the gateway caching in front of it.
//! The first test is a table of RFC 9111 scenarios (origin response, two requests, what the
//! second one must get); the others cover coalescing, stale serving, validation failures,
//! invalidation, purges and limits.
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

/// One scenario: the origin's answer, two requests in a row, what the second one gets.
struct Case {
    name: &'static str,
    status: u16,
    origin: &'static [(&'static str, &'static str)],
    first: &'static [(&'static str, &'static str)],
    second: &'static [(&'static str, &'static str)],
    second_method: &'static str,
    /// Requests the origin sees for the two requests.
    origin_requests: usize,
    /// Status the second request gets.
    second_status: u16,
    /// A piece of the second response's Cache-Status.
    cache_status: &'static str,
}

const GET: &str = "GET";
const NONE: &[(&str, &str)] = &[];
const ETAG: (&str, &str) = ("etag", "\"v1\"");
const OLD: &str = "Mon, 01 Jan 2001 00:00:00 GMT";

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "max-age is fresh", status: 200, origin: &[("cache-control", "max-age=60")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "ferrogate;hit" },
    Case { name: "s-maxage wins over max-age in a shared cache", status: 200, origin: &[("cache-control", "max-age=0, s-maxage=60")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "expires in the future is fresh", status: 200, origin: &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "expires in the past is stale", status: 200, origin: &[("expires", OLD)], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "invalid expires means expired", status: 200, origin: &[("expires", "0"), ETAG], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=stale" },
    Case { name: "heuristic freshness from last-modified", status: 200, origin: &[("last-modified", OLD)], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "no heuristic for a 500", status: 500, origin: &[("last-modified", OLD)], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 500, cache_status: "fwd=" },
    Case { name: "explicit freshness makes a 404 cacheable", status: 404, origin: &[("cache-control", "max-age=60")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 404, cache_status: "hit" },
    Case { name: "no-store is never stored", status: 200, origin: &[("cache-control", "no-store, max-age=60")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=uri-miss" },
    Case { name: "private is not stored by a shared cache", status: 200, origin: &[("cache-control", "private, max-age=60")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=uri-miss" },
    Case { name: "no-cache is stored but validated", status: 200, origin: &[("cache-control", "no-cache"), ETAG], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=stale;fwd-status=304" },
    Case { name: "set-cookie is not stored by default", status: 200, origin: &[("cache-control", "max-age=60"), ("set-cookie", "s=1")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=uri-miss" },
    Case { name: "authorization without public is not stored", status: 200, origin: &[("cache-control", "max-age=60")], first: &[("authorization", "Bearer x")], second: &[("authorization", "Bearer x")], second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=uri-miss" },
    Case { name: "authorization with public is stored", status: 200, origin: &[("cache-control", "public, max-age=60")], first: &[("authorization", "Bearer x")], second: &[("authorization", "Bearer x")], second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "authorization with s-maxage is stored", status: 200, origin: &[("cache-control", "s-maxage=60")], first: &[("authorization", "Bearer x")], second: &[("authorization", "Bearer x")], second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "vary selects by the nominated field", status: 200, origin: &[("cache-control", "max-age=60"), ("vary", "accept-language")], first: &[("accept-language", "en")], second: &[("accept-language", "fr")], second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "vary values are normalised", status: 200, origin: &[("cache-control", "max-age=60"), ("vary", "accept-encoding")], first: &[("accept-encoding", "gzip,br")], second: &[("accept-encoding", "GZIP , br")], second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "vary star is never served from cache", status: 200, origin: &[("cache-control", "max-age=60"), ("vary", "*")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "request no-cache goes to the origin", status: 200, origin: &[("cache-control", "max-age=60"), ETAG], first: NONE, second: &[("cache-control", "no-cache")], second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "pragma no-cache counts without cache-control", status: 200, origin: &[("cache-control", "max-age=60")], first: NONE, second: &[("pragma", "no-cache")], second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "request max-age=0 goes to the origin", status: 200, origin: &[("cache-control", "max-age=60")], first: NONE, second: &[("cache-control", "max-age=0")], second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "request no-store prevents storing", status: 200, origin: &[("cache-control", "max-age=60")], first: &[("cache-control", "no-store")], second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=uri-miss" },
    Case { name: "only-if-cached is served when stored", status: 200, origin: &[("cache-control", "max-age=60")], first: NONE, second: &[("cache-control", "only-if-cached")], second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "only-if-cached without a stored response is 504", status: 200, origin: &[("cache-control", "no-store")], first: NONE, second: &[("cache-control", "only-if-cached")], second_method: GET, origin_requests: 1, second_status: 504, cache_status: "fwd=request" },
    Case { name: "must-revalidate while fresh is a hit", status: 200, origin: &[("cache-control", "max-age=60, must-revalidate")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "head is answered from a stored get", status: 200, origin: &[("cache-control", "max-age=60")], first: NONE, second: NONE, second_method: "HEAD", origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "if-none-match is answered 304 from cache", status: 200, origin: &[("cache-control", "max-age=60"), ETAG], first: NONE, second: &[("if-none-match", "\"v1\"")], second_method: GET, origin_requests: 1, second_status: 304, cache_status: "hit" },
    Case { name: "weak if-none-match matches", status: 200, origin: &[("cache-control", "max-age=60"), ETAG], first: NONE, second: &[("if-none-match", "W/\"v1\"")], second_method: GET, origin_requests: 1, second_status: 304, cache_status: "hit" },
    Case { name: "if-modified-since is answered 304 from cache", status: 200, origin: &[("cache-control", "max-age=60"), ("last-modified", OLD)], first: NONE, second: &[("if-modified-since", "Tue, 02 Jan 2001 00:00:00 GMT")], second_method: GET, origin_requests: 1, second_status: 304, cache_status: "hit" },
    Case { name: "unknown directives are ignored", status: 200, origin: &[("cache-control", "foo=\"bar, baz\", max-age=60, qux")], first: NONE, second: NONE, second_method: GET, origin_requests: 1, second_status: 200, cache_status: "hit" },
    Case { name: "conflicting max-age values mean stale", status: 200, origin: &[("cache-control", "max-age=60, max-age=120")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "age from upstream counts against freshness", status: 200, origin: &[("cache-control", "max-age=60"), ("age", "100")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 200, cache_status: "fwd=" },
    Case { name: "206 is not stored", status: 206, origin: &[("cache-control", "max-age=60"), ("content-range", "bytes 0-3/10")], first: NONE, second: NONE, second_method: GET, origin_requests: 2, second_status: 206, cache_status: "fwd=" },
];

/// The origin of the table: answers `/t/N` with case N's fields, and 304 to a request whose
/// If-None-Match carries its ETag.
async fn table_origin() -> Backend {
    Backend::start(false, |req| async move {
        let i: usize = req.uri().path()[3..].parse().unwrap();
        let case = &CASES[i];
        let etag = case
            .origin
            .iter()
            .find(|(n, _)| *n == "etag")
            .map(|(_, v)| *v);
        let revalidated = etag.is_some_and(|tag| {
            req.headers()
                .get("if-none-match")
                .is_some_and(|v| v.to_str().unwrap().contains(tag))
        });
        let status = if revalidated { 304 } else { case.status };
        let mut resp = Response::builder().status(status);
        for (name, value) in case.origin {
            resp = resp.header(*name, *value);
        }
        let body = if revalidated { "" } else { "body" };
        resp.body(full(Bytes::from_static(body.as_bytes())))
            .unwrap()
    })
    .await
}

async fn request(
    gw: std::net::SocketAddr,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a");
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    send(gw, req.body(Full::new(Bytes::new())).unwrap()).await
}

fn count_path(backend: &Backend, path: &str) -> usize {
    backend
        .requests()
        .iter()
        .filter(|s| s.uri.path() == path)
        .count()
}

#[tokio::test]
async fn rfc9111_scenarios() {
    let origin = table_origin().await;
    let gw = TestGateway::start(&config(&[origin.addr], CACHED));
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let path = format!("/t/{i}");
        let first = request(gw.addr, GET, &path, case.first).await;
        assert_eq!(first.status.as_u16(), case.status, "{}: first", case.name);
        let second = request(gw.addr, case.second_method, &path, case.second).await;
        let seen = count_path(&origin, &path);
        let cache_status = second.header("cache-status").unwrap_or("").to_string();
        let body_ok = case.second_method != "HEAD" || second.body.is_empty();
        if seen != case.origin_requests
            || second.status.as_u16() != case.second_status
            || !cache_status.contains(case.cache_status)
            || !body_ok
        {
            failures.push(format!(
                "{}: origin saw {seen} (want {}), status {} (want {}), cache-status {cache_status:?} (want {:?})",
                case.name,
                case.origin_requests,
                second.status,
                case.second_status,
                case.cache_status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

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
    assert_eq!(get(gw.addr, "a", "/mr").await.status, 504);
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
