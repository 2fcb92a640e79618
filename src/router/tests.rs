//! One test per precedence rule, predicate kind, rewrite and redirect behaviour.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::*;
use crate::config::model::{
    Action, HeaderPredicate, PathMatch, PathRewrite, ProxyAction, QueryPredicate, Redirect,
    RouteMatch, RouteTimeouts, ValueTest, WeightedUpstream,
};

pub(super) fn route(name: &str, hosts: &[&str], path: PathMatch) -> Route {
    Route {
        name: name.to_owned(),
        matcher: RouteMatch {
            hosts: hosts.iter().map(|h| host(h)).collect(),
            path,
            ..RouteMatch::default()
        },
        action: Action::Proxy(proxy()),
        websocket: false,
        tunnel: Default::default(),
        timeouts: RouteTimeouts::default(),
        retry: None,
        max_body_bytes: None,
        rate_limits: Vec::new(),
        access: Default::default(),
        cache: None,
        request_headers: None,
        response_headers: None,
        queue: None,
        publish: None,
        ai: None,
    }
}

pub(super) fn host(h: &str) -> HostMatch {
    match h.strip_prefix('*') {
        Some(suffix) => HostMatch::WildcardSuffix(suffix.to_owned()),
        None => HostMatch::Exact(h.to_owned()),
    }
}

fn proxy() -> ProxyAction {
    ProxyAction {
        upstreams: vec![WeightedUpstream {
            name: "backend".to_owned(),
            weight: 1,
        }],
        split_header: None,
        mirror: None,
        strip_prefix: None,
        rewrite: None,
        host_rewrite: None,
        geo_upstreams: Vec::new(),
    }
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.to_owned())
}
fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}
fn template(p: &str) -> PathMatch {
    PathMatch::Template(p.to_owned())
}
fn regex(p: &str) -> PathMatch {
    PathMatch::Regex(Regex::new(p).unwrap())
}

fn with_methods(mut r: Route, methods: &[Method]) -> Route {
    r.matcher.methods = methods.to_vec();
    r
}

/// A request to look up; defaults to `GET`, no headers, no query.
struct Req<'a> {
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    method: Method,
    headers: HeaderMap,
}

fn req<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    Req {
        host,
        path,
        query: None,
        method: Method::GET,
        headers: HeaderMap::new(),
    }
}

impl Req<'_> {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            host: self.host,
            path: self.path,
            query: self.query,
            method: &self.method,
            headers: &self.headers,
            geo: None,
        }
    }
}

/// The index of the route `routes` pick for `r`.
fn pick(routes: &[Route], r: &Req<'_>) -> Option<usize> {
    let router = Router::build(routes).unwrap();
    router.find(&r.view()).map(|m| m.route)
}

#[test]
fn exact_host_beats_wildcard_host() {
    let routes = [
        route("wild", &["*.a.com"], prefix("/")),
        route("exact", &["b.a.com"], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("b.a.com", "/")), Some(1));
}

#[test]
fn longest_wildcard_suffix_wins() {
    let routes = [
        route("short", &["*.a.com"], prefix("/")),
        route("long", &["*.b.a.com"], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("x.b.a.com", "/")), Some(1));
    assert_eq!(pick(&routes, &req("x.c.a.com", "/")), Some(0));
}

#[test]
fn any_host_routes_come_last() {
    let routes = [
        route("any", &[], exact("/x")),
        route("wild", &["*.a.com"], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("b.a.com", "/x")), Some(1));
    assert_eq!(pick(&routes, &req("other.org", "/x")), Some(0));
}

#[test]
fn wildcard_host_matches_one_or_more_labels() {
    let routes = [route("wild", &["*.a.com"], prefix("/"))];
    assert_eq!(pick(&routes, &req("b.a.com", "/")), Some(0));
    assert_eq!(pick(&routes, &req("c.b.a.com", "/")), Some(0));
}

#[test]
fn wildcard_host_does_not_match_the_bare_domain() {
    let routes = [route("wild", &["*.a.com"], prefix("/"))];
    assert_eq!(pick(&routes, &req("a.com", "/")), None);
    assert_eq!(pick(&routes, &req(".a.com", "/")), None);
    assert_eq!(pick(&routes, &req("xa.com", "/")), None);
}

#[test]
fn configured_hosts_compare_case_insensitively() {
    let routes = [
        route("exact", &["API.A.com"], prefix("/")),
        route("wild", &["*.B.com"], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("api.a.com", "/")), Some(0));
    assert_eq!(pick(&routes, &req("x.b.com", "/")), Some(1));
}

#[test]
fn missing_host_only_matches_any_host_routes() {
    let routes = [
        route("exact", &["a.com"], prefix("/")),
        route("any", &[], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("", "/")), Some(1));
}

#[test]
fn host_tier_outranks_path_kind() {
    let routes = [
        route("any-exact", &[], exact("/x")),
        route("host-prefix", &["a.com"], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("a.com", "/x")), Some(1));
}

#[test]
fn exact_path_beats_template() {
    let routes = [
        route("template", &[], template("/users/{id}")),
        route("exact", &[], exact("/users/me")),
    ];
    assert_eq!(pick(&routes, &req("", "/users/me")), Some(1));
    assert_eq!(pick(&routes, &req("", "/users/7")), Some(0));
}

#[test]
fn template_beats_prefix() {
    let routes = [
        route("prefix", &[], prefix("/users")),
        route("template", &[], template("/users/{id}")),
    ];
    assert_eq!(pick(&routes, &req("", "/users/7")), Some(1));
    assert_eq!(pick(&routes, &req("", "/users/7/posts")), Some(0));
}

#[test]
fn prefix_beats_regex() {
    let routes = [
        route("regex", &[], regex("^/users/[0-9]+$")),
        route("prefix", &[], prefix("/users")),
    ];
    assert_eq!(pick(&routes, &req("", "/users/7")), Some(1));
}

#[test]
fn regex_matches_when_nothing_else_does() {
    let routes = [
        route("prefix", &[], prefix("/api")),
        route("regex", &[], regex("^/v[0-9]+/")),
    ];
    assert_eq!(pick(&routes, &req("", "/v2/x")), Some(1));
    assert_eq!(pick(&routes, &req("", "/w2/x")), None);
}

#[test]
fn literal_template_segment_beats_parameter() {
    let routes = [
        route("param", &[], template("/users/{id}")),
        route("literal", &[], template("/users/me")),
    ];
    assert_eq!(pick(&routes, &req("", "/users/me")), Some(1));
}

#[test]
fn longest_prefix_wins() {
    let routes = [
        route("short", &[], prefix("/api")),
        route("long", &[], prefix("/api/v1")),
        route("root", &[], prefix("/")),
    ];
    assert_eq!(pick(&routes, &req("", "/api/v1/x")), Some(1));
    assert_eq!(pick(&routes, &req("", "/api/v2")), Some(0));
    assert_eq!(pick(&routes, &req("", "/other")), Some(2));
}

#[test]
fn prefix_is_segment_aware() {
    let routes = [route("api", &[], prefix("/api"))];
    assert_eq!(pick(&routes, &req("", "/api")), Some(0));
    assert_eq!(pick(&routes, &req("", "/api/")), Some(0));
    assert_eq!(pick(&routes, &req("", "/api/x")), Some(0));
    assert_eq!(pick(&routes, &req("", "/apix")), None);
}

#[test]
fn prefix_with_trailing_slash_requires_the_slash() {
    let routes = [route("api", &[], prefix("/api/"))];
    assert_eq!(pick(&routes, &req("", "/api/")), Some(0));
    assert_eq!(pick(&routes, &req("", "/api/x")), Some(0));
    assert_eq!(pick(&routes, &req("", "/api")), None);
}

#[test]
fn root_prefix_matches_every_path() {
    let routes = [route("root", &[], prefix("/"))];
    assert_eq!(pick(&routes, &req("", "/")), Some(0));
    assert_eq!(pick(&routes, &req("", "/a/b")), Some(0));
}

#[test]
fn configuration_order_breaks_ties() {
    let routes = [
        route("first", &[], prefix("/api")),
        route("second", &[], prefix("/api")),
        route("regex-a", &[], regex("^/r")),
        route("regex-b", &[], regex("^/r")),
    ];
    assert_eq!(pick(&routes, &req("", "/api/x")), Some(0));
    assert_eq!(pick(&routes, &req("", "/r")), Some(2));
}

#[test]
fn method_mismatch_falls_through_to_next_candidate() {
    let routes = [
        with_methods(route("get", &["a.com"], exact("/x")), &[Method::GET]),
        route("fallback", &[], prefix("/")),
    ];
    let mut r = req("a.com", "/x");
    r.method = Method::POST;
    assert_eq!(pick(&routes, &r), Some(1));
}

#[test]
fn routes_sharing_a_template_split_by_method() {
    let routes = [
        with_methods(route("read", &[], template("/users/{id}")), &[Method::GET]),
        with_methods(route("write", &[], template("/users/{id}")), &[Method::PUT]),
    ];
    let mut r = req("", "/users/7");
    assert_eq!(pick(&routes, &r), Some(0));
    r.method = Method::PUT;
    assert_eq!(pick(&routes, &r), Some(1));
}

#[test]
fn refused_specific_template_falls_back_to_general_template() {
    let routes = [
        route("catch-all", &[], template("/{*rest}")),
        with_methods(route("me", &[], template("/users/me")), &[Method::GET]),
        route("any-user", &[], template("/users/{id}")),
    ];
    let router = Router::build(&routes).unwrap();
    let mut r = req("", "/users/me");
    r.method = Method::DELETE;
    let m = router.find(&r.view()).unwrap();
    assert_eq!(m.route, 2);
    assert_eq!(m.params.get("id", r.path), Some("me"));
}

#[test]
fn method_mismatch_everywhere_is_no_route() {
    let routes = [with_methods(route("get", &[], prefix("/")), &[Method::GET])];
    let mut r = req("", "/x");
    r.method = Method::POST;
    assert_eq!(pick(&routes, &r), None);
}

fn with_header(mut r: Route, name: &'static str, test: ValueTest) -> Route {
    r.matcher.headers.push(HeaderPredicate {
        name: HeaderName::from_static(name),
        test,
    });
    r
}

#[test]
fn header_exact_compares_value_bytes() {
    let routes = [with_header(
        route("v2", &[], prefix("/")),
        "x-version",
        ValueTest::Exact("2".to_owned()),
    )];
    let mut r = req("", "/");
    r.headers.insert("x-version", HeaderValue::from_static("2"));
    assert_eq!(pick(&routes, &r), Some(0));
    r.headers
        .insert("x-version", HeaderValue::from_static("2 "));
    assert_eq!(pick(&routes, &r), None);
}

#[test]
fn header_regex_skips_values_that_are_not_utf8() {
    let routes = [with_header(
        route("re", &[], prefix("/")),
        "x-tag",
        ValueTest::Regex(Regex::new("^a").unwrap()),
    )];
    let mut r = req("", "/");
    r.headers
        .insert("x-tag", HeaderValue::from_bytes(b"a\xff").unwrap());
    assert_eq!(pick(&routes, &r), None);
    r.headers.append("x-tag", HeaderValue::from_static("abc"));
    assert_eq!(pick(&routes, &r), Some(0));
}

#[test]
fn header_present_and_absent_test_the_name() {
    let routes = [
        with_header(
            route("present", &[], prefix("/")),
            "x-a",
            ValueTest::Present,
        ),
        with_header(route("absent", &[], prefix("/")), "x-a", ValueTest::Absent),
    ];
    let mut r = req("", "/");
    assert_eq!(pick(&routes, &r), Some(1));
    r.headers.insert("x-a", HeaderValue::from_static(""));
    assert_eq!(pick(&routes, &r), Some(0));
}

fn with_query(mut r: Route, name: &str, test: ValueTest) -> Route {
    r.matcher.query.push(QueryPredicate {
        name: name.to_owned(),
        test,
    });
    r
}

#[test]
fn query_exact_compares_raw_pairs() {
    let routes = [with_query(
        route("beta", &[], prefix("/")),
        "v",
        ValueTest::Exact("a%20b".to_owned()),
    )];
    let mut r = req("", "/");
    r.query = Some("x=1&v=a%20b");
    assert_eq!(pick(&routes, &r), Some(0));
    r.query = Some("v=a b");
    assert_eq!(pick(&routes, &r), None);
}

#[test]
fn query_value_splits_on_first_equals() {
    let routes = [with_query(
        route("eq", &[], prefix("/")),
        "k",
        ValueTest::Exact("a=b".to_owned()),
    )];
    let mut r = req("", "/");
    r.query = Some("k=a=b");
    assert_eq!(pick(&routes, &r), Some(0));
}

#[test]
fn query_present_and_absent_test_the_name() {
    let routes = [
        with_query(
            route("present", &[], prefix("/")),
            "debug",
            ValueTest::Present,
        ),
        with_query(
            route("absent", &[], prefix("/")),
            "debug",
            ValueTest::Absent,
        ),
    ];
    let mut r = req("", "/");
    assert_eq!(pick(&routes, &r), Some(1));
    r.query = Some("debug");
    assert_eq!(pick(&routes, &r), Some(0));
    r.query = Some("debugx=1");
    assert_eq!(pick(&routes, &r), Some(1));
}

#[test]
fn query_regex_matches_any_value_of_the_name() {
    let routes = [with_query(
        route("num", &[], prefix("/")),
        "id",
        ValueTest::Regex(Regex::new("^[0-9]+$").unwrap()),
    )];
    let mut r = req("", "/");
    r.query = Some("id=x&id=42");
    assert_eq!(pick(&routes, &r), Some(0));
    r.query = Some("id=x");
    assert_eq!(pick(&routes, &r), None);
}

#[test]
fn template_params_are_captured() {
    let routes = [route("files", &[], template("/users/{id}/files/{*rest}"))];
    let router = Router::build(&routes).unwrap();
    let r = req("", "/users/42/files/a/b.txt");
    let m = router.find(&r.view()).unwrap();
    assert_eq!(m.params.get("id", r.path), Some("42"));
    assert_eq!(m.params.get("rest", r.path), Some("a/b.txt"));
    let all: Vec<_> = m.params.iter(r.path).collect();
    assert_eq!(all, [("id", "42"), ("rest", "a/b.txt")]);
}

#[test]
fn many_template_params_are_all_captured() {
    let routes = [route("deep", &[], template("/{a}/{b}/{c}/{d}/{e}/{f}"))];
    let router = Router::build(&routes).unwrap();
    let r = req("", "/1/2/3/4/5/6");
    let m = router.find(&r.view()).unwrap();
    assert_eq!(m.params.len(), 6);
    assert_eq!(m.params.get("f", r.path), Some("6"));
}

#[test]
fn conflicting_templates_are_rejected_naming_the_route() {
    let routes = [
        route("first", &[], template("/users/{id}")),
        route("second", &[], template("/users/{name}")),
    ];
    let err = Router::build(&routes).unwrap_err();
    assert!(matches!(
        &err,
        RouterError::TemplateConflict { route, other, .. } if route == "second" && other == "first"
    ));
    assert!(err.to_string().contains("\"second\""), "{err}");
}

#[test]
fn invalid_template_is_rejected_naming_the_route() {
    let routes = [route("bad", &[], template("/a/{*rest}/b"))];
    let err = Router::build(&routes).unwrap_err();
    assert!(matches!(&err, RouterError::InvalidTemplate { route, .. } if route == "bad"));
}

#[test]
fn same_template_shape_on_different_hosts_does_not_conflict() {
    let routes = [
        route("a", &["a.com"], template("/users/{id}")),
        route("b", &["b.com"], template("/users/{name}")),
    ];
    assert_eq!(pick(&routes, &req("b.com", "/users/1")), Some(1));
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}

fn rewrite_with(action: &ProxyAction, routes: &[Route], path: &str) -> String {
    let router = Router::build(routes).unwrap();
    let r = req("", path);
    let m = router.find(&r.view()).unwrap();
    rewrite_path(action, &m, path).into_owned()
}

#[test]
fn rewrite_strips_prefix_at_segment_boundary() {
    let action = ProxyAction {
        strip_prefix: Some("/api".to_owned()),
        ..proxy()
    };
    let routes = [route("api", &[], prefix("/api"))];
    assert_eq!(rewrite_with(&action, &routes, "/api/users"), "/users");
    assert_eq!(rewrite_with(&action, &routes, "/api"), "/");
    let any = [route("root", &[], prefix("/"))];
    assert_eq!(rewrite_with(&action, &any, "/apix"), "/apix");
}

#[test]
fn rewrite_leaves_unchanged_path_borrowed() {
    let router = Router::build(&[route("t", &[], template("/x/{id}"))]).unwrap();
    let r = req("", "/x/1");
    let m = router.find(&r.view()).unwrap();
    let action = ProxyAction {
        strip_prefix: Some("/other".to_owned()),
        ..proxy()
    };
    assert!(matches!(
        rewrite_path(&action, &m, r.path),
        Cow::Borrowed("/x/1")
    ));
    let stripped = ProxyAction {
        strip_prefix: Some("/x".to_owned()),
        ..proxy()
    };
    assert!(matches!(rewrite_path(&stripped, &m, r.path), Cow::Owned(p) if p == "/1"));
}

#[test]
fn rewrite_replace_substitutes_template_params() {
    let action = ProxyAction {
        rewrite: Some(PathRewrite::Replace("/v2/accounts/{id}/{*rest}".to_owned())),
        ..proxy()
    };
    let routes = [route("u", &[], template("/users/{id}/{*rest}"))];
    assert_eq!(
        rewrite_with(&action, &routes, "/users/42/a/b"),
        "/v2/accounts/42/a/b"
    );
}

#[test]
fn rewrite_regex_expands_capture_groups() {
    let action = ProxyAction {
        rewrite: Some(PathRewrite::Regex {
            pattern: Regex::new("^/old/(.*)$").unwrap(),
            replacement: "/new/$1".to_owned(),
        }),
        ..proxy()
    };
    let routes = [route("all", &[], prefix("/"))];
    assert_eq!(rewrite_with(&action, &routes, "/old/a/b"), "/new/a/b");
    assert_eq!(rewrite_with(&action, &routes, "/keep"), "/keep");
}

#[test]
fn rewrite_regex_applies_after_strip_prefix() {
    let action = ProxyAction {
        strip_prefix: Some("/api".to_owned()),
        rewrite: Some(PathRewrite::Regex {
            pattern: Regex::new("^/(v[0-9]+)/").unwrap(),
            replacement: "/${1}-beta/".to_owned(),
        }),
        ..proxy()
    };
    let routes = [route("api", &[], prefix("/api"))];
    assert_eq!(rewrite_with(&action, &routes, "/api/v1/x"), "/v1-beta/x");
}

fn redirect() -> Redirect {
    Redirect {
        status: StatusCode::MOVED_PERMANENTLY,
        scheme: None,
        host: None,
        port: None,
        path: None,
        strip_query: false,
    }
}

#[test]
fn redirect_keeps_request_query() {
    let r = Redirect {
        path: Some("/new".to_owned()),
        ..redirect()
    };
    let loc = redirect_location(&r, "http", "a.com:8080", "/old", Some("x=1"));
    assert_eq!(loc, "http://a.com:8080/new?x=1");
}

#[test]
fn redirect_without_query_has_no_question_mark() {
    let r = redirect();
    assert_eq!(
        redirect_location(&r, "http", "a.com", "/p", None),
        "http://a.com/p"
    );
}

#[test]
fn redirect_strip_query_drops_the_query() {
    let r = Redirect {
        strip_query: true,
        ..redirect()
    };
    let loc = redirect_location(&r, "https", "a.com", "/p", Some("x=1"));
    assert_eq!(loc, "https://a.com/p");
}

#[test]
fn redirect_to_https_drops_the_request_port() {
    let r = Redirect {
        scheme: Some("https".to_owned()),
        ..redirect()
    };
    let loc = redirect_location(&r, "http", "a.com:8080", "/p", Some("q"));
    assert_eq!(loc, "https://a.com/p?q");
}

#[test]
fn redirect_port_is_omitted_when_default_for_scheme() {
    let r = Redirect {
        scheme: Some("https".to_owned()),
        port: Some(443),
        ..redirect()
    };
    assert_eq!(
        redirect_location(&r, "http", "[::1]:80", "/", None),
        "https://[::1]/"
    );
    let r = Redirect {
        port: Some(8443),
        ..r
    };
    assert_eq!(
        redirect_location(&r, "http", "[::1]:80", "/", None),
        "https://[::1]:8443/"
    );
}

#[test]
fn redirect_path_with_query_joins_request_query_with_ampersand() {
    let r = Redirect {
        host: Some("b.com".to_owned()),
        path: Some("/login?from=old".to_owned()),
        ..redirect()
    };
    let loc = redirect_location(&r, "https", "a.com:8443", "/p", Some("x=1"));
    assert_eq!(loc, "https://b.com/login?from=old&x=1");
}

#[test]
fn redirect_without_any_host_is_relative() {
    let r = Redirect {
        path: Some("/new".to_owned()),
        ..redirect()
    };
    assert_eq!(
        redirect_location(&r, "http", "", "/old", Some("a=b")),
        "/new?a=b"
    );
}
