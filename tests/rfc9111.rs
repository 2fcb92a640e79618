//! RFC 9111 conformance, table-driven: each scenario is an origin response, two requests in
//! a row through a caching route, and what the second one must get (whether it reached the
//! origin, its status, its Cache-Status). One gateway and one origin serve the whole table,
//! each scenario on its own path.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::Response;
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
