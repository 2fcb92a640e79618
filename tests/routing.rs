//! Routing end to end: hosts, paths, methods, headers and query; rewrites; redirects; 404.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

/// Three backends named a, b, c and a gateway with upstreams ua, ub, uc pointing at them.
struct Fixture {
    a: Backend,
    b: Backend,
    c: Backend,
    gw: TestGateway,
}

async fn fixture(routes: &str) -> Fixture {
    let (a, b, c) = (
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    );
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
upstreams:
  ua: {{targets: [{{address: \"{}\"}}]}}
  ub: {{targets: [{{address: \"{}\"}}]}}
  uc: {{targets: [{{address: \"{}\"}}]}}
routes:
{routes}",
        a.addr, b.addr, c.addr
    );
    let gw = TestGateway::start(&yaml);
    Fixture { a, b, c, gw }
}

#[tokio::test]
async fn exact_host_beats_wildcard_which_beats_any_host() {
    let f = fixture(
        "  - {match: {path: {prefix: /}}, upstream: uc}
  - {match: {hosts: ['*.example.com']}, upstream: ub}
  - {match: {hosts: [api.example.com]}, upstream: ua}
",
    )
    .await;
    assert_eq!(get(f.gw.addr, "api.example.com", "/").await.text(), "a");
    assert_eq!(
        get(f.gw.addr, "API.example.com:8080", "/").await.text(),
        "a"
    );
    assert_eq!(get(f.gw.addr, "www.example.com", "/").await.text(), "b");
    assert_eq!(
        get(f.gw.addr, "deep.www.example.com", "/").await.text(),
        "b"
    );
    assert_eq!(get(f.gw.addr, "example.com", "/").await.text(), "c");
}

#[tokio::test]
async fn exact_path_beats_template_beats_prefix_beats_regex() {
    let f = fixture(
        "  - {match: {path: {regex: '^/users'}}, upstream: uc}
  - {match: {path: {prefix: /users}}, upstream: ub}
  - {match: {path: {template: '/users/{id}'}}, upstream: ua}
  - {name: me, match: {path: {exact: /users/me}}, upstream: uc}
",
    )
    .await;
    assert_eq!(get(f.gw.addr, "h", "/users/me").await.text(), "c");
    assert_eq!(get(f.gw.addr, "h", "/users/42").await.text(), "a");
    assert_eq!(get(f.gw.addr, "h", "/users/42/posts").await.text(), "b");
    assert_eq!(
        get(f.gw.addr, "h", "/usersX").await.text(),
        "c",
        "prefix is segment-aware"
    );
}

#[tokio::test]
async fn methods_headers_and_query_select_routes() {
    let f = fixture(
        "  - {match: {methods: [POST]}, upstream: ua}
  - {match: {headers: [{name: x-canary, exact: 'yes'}]}, upstream: ub}
  - {match: {query: [{name: v, exact: '2'}]}, upstream: uc}
",
    )
    .await;
    let post = Request::post("/")
        .header("host", "h")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(send(f.gw.addr, post).await.text(), "a");
    let canary = Request::get("/")
        .header("host", "h")
        .header("x-canary", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(f.gw.addr, canary).await.text(), "b");
    assert_eq!(get(f.gw.addr, "h", "/?a=1&v=2").await.text(), "c");
    assert_eq!(get(f.gw.addr, "h", "/?v=3").await.status, 404);
    assert_eq!(f.a.count() + f.b.count() + f.c.count(), 3);
}

#[tokio::test]
async fn no_route_is_404_problem_json_and_reaches_no_backend() {
    let f = fixture("  - {match: {hosts: [only.example.com]}, upstream: ua}\n").await;
    let got = get(f.gw.addr, "other.example.com", "/missing").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        got.text(),
        r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no route matches this request"}"#
    );
    assert!(got.header("x-request-id").is_some());
    assert_eq!(
        got.header("via"),
        Some("1.1 ferrogate"),
        "the gateway's own answers carry Via like relayed ones"
    );
    assert_eq!(f.a.count(), 0);
}

#[tokio::test]
async fn strip_prefix_and_template_rewrite_change_the_upstream_path_and_keep_the_query() {
    let f = fixture(
        "  - {match: {path: {prefix: /api}}, upstream: ua, strip_prefix: /api}
  - {match: {path: {template: '/users/{id}'}}, upstream: ub, rewrite: {path: '/v2/people/{id}'}}
  - {match: {path: {prefix: /old}}, upstream: uc, rewrite: {regex: '^/old/(.*)$', replacement: '/new/$1', host: internal.example}}
",
    )
    .await;
    get(f.gw.addr, "h", "/api/items?page=2").await;
    assert_eq!(f.a.requests()[0].uri, "/items?page=2");
    get(f.gw.addr, "h", "/users/7").await;
    assert_eq!(f.b.requests()[0].uri, "/v2/people/7");
    get(f.gw.addr, "h", "/old/x/y").await;
    let seen = &f.c.requests()[0];
    assert_eq!(seen.uri, "/new/x/y");
    assert_eq!(seen.headers["host"], "internal.example");
    assert_eq!(
        seen.headers["x-forwarded-host"], "h",
        "the client's host is still reported"
    );
}

#[tokio::test]
async fn redirect_routes_answer_without_a_backend() {
    let f = fixture(
        "  - {match: {path: {prefix: /old}}, redirect: {status: 301, path: /new}}
  - {match: {hosts: [www.example.com]}, redirect: {status: 308, scheme: https}}
",
    )
    .await;
    let got = get(f.gw.addr, "h:8080", "/old?q=1").await;
    assert_eq!(got.status, 301);
    assert_eq!(got.header("location"), Some("http://h:8080/new?q=1"));
    let got = get(f.gw.addr, "www.example.com", "/a").await;
    assert_eq!(got.status, 308);
    assert_eq!(got.header("location"), Some("https://www.example.com/a"));
    assert_eq!(f.a.count() + f.b.count() + f.c.count(), 0);
}

#[tokio::test]
async fn a_respond_route_answers_itself_without_an_upstream() {
    let f = fixture(
        "  - name: maintenance
    match: {path: {prefix: /shop}}
    respond:
      status: 503
      body: back soon
      content_type: text/plain
      headers: {retry-after: '120', cache-control: no-store}
  - {match: {path: {exact: /healthz}}, respond: {}}
  - {upstream: ua}
",
    )
    .await;
    let got = get(f.gw.addr, "h", "/shop/cart").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "back soon");
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("retry-after"), Some("120"));
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert!(got.header("x-request-id").is_some());
    assert_eq!(got.header("via"), Some("1.1 ferrogate"));
    let got = get(f.gw.addr, "h", "/healthz").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, ""));
    assert_eq!(f.a.count(), 0, "no request reached the upstream");
    assert_eq!(get(f.gw.addr, "h", "/other").await.text(), "a");
}

#[tokio::test]
async fn a_reload_with_a_route_that_can_never_match_is_refused() {
    let a = Backend::named("a").await;
    let dir = tempdir::Dir::new("shadow");
    let path = dir.path.join("gateway.yaml");
    let good = config(&[a.addr], "  - {upstream: app}\n");
    std::fs::write(&path, &good).unwrap();
    let gw = TestGateway::start_file(&path);
    let shadowed = config(
        &[a.addr],
        "  - {name: all, upstream: app}
  - {name: deny, match: {path: {regex: '^/admin'}}, respond: {status: 403}}
",
    );
    std::fs::write(&path, shadowed).unwrap();
    let admin = gw.admin.unwrap();
    let reply = raw(
        admin,
        b"POST /reload HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), 422, "{reply}");
    assert!(
        reply.contains("routes[1]: route \"deny\" can never match: routes[0] (\"all\")"),
        "{reply}"
    );
    let got = get(gw.addr, "h", "/admin").await;
    assert_eq!(
        (got.status.as_u16(), got.text().as_str()),
        (200, "a"),
        "the running config stays"
    );
}
