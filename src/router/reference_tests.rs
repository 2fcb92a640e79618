//! Property test: the compiled router picks the same route as a naive reference matcher that
//! scans every route, computes the precedence key spelled out in the module docs, and takes
//! the smallest.

#![allow(clippy::unwrap_used)]

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use proptest::sample::select;
use regex::Regex;

use super::tests::route;
use super::{RequestView, Router, RouterError};
use crate::config::model::{HeaderPredicate, PathMatch, QueryPredicate, Route, ValueTest};

const ROUTE_HOSTS: &[&str] = &["a.com", "b.a.com", "*.a.com", "*.b.a.com", "c.com"];
const REQUEST_HOSTS: &[&str] = &["a.com", "b.a.com", "x.b.a.com", "c.a.com", "c.com", ""];
const REGEXES: &[&str] = &["^/a", "b$", "^/c/"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Lit(&'static str),
    Param,
    CatchAll,
}

#[derive(Debug, Clone)]
enum PathSpec {
    Exact(String),
    Prefix(String),
    Template(Vec<Seg>),
    Regex(&'static str),
}

#[derive(Debug, Clone)]
struct RouteSpec {
    hosts: Vec<&'static str>,
    path: PathSpec,
    /// `None` means any method.
    method: Option<Method>,
    /// `Some(true)`: query `q` present; `Some(false)`: absent.
    query_q: Option<bool>,
    /// Requires header `x-h`.
    header: bool,
}

#[derive(Debug, Clone)]
struct RequestSpec {
    host: &'static str,
    path: String,
    method: Method,
    query: Option<&'static str>,
    header: bool,
}

fn literal() -> impl Strategy<Value = &'static str> {
    select(&["a", "b", "c"][..])
}

fn plain_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(literal(), 0..=3), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/{}", segs.join("/"));
        if slash && !segs.is_empty() {
            p.push('/');
        }
        p
    })
}

fn template_segs() -> impl Strategy<Value = Vec<Seg>> {
    let seg = prop_oneof![literal().prop_map(Seg::Lit), Just(Seg::Param)];
    (prop::collection::vec(seg, 0..=3), prop::bool::weighted(0.2)).prop_map(|(mut s, catch)| {
        if catch {
            s.push(Seg::CatchAll);
        }
        s
    })
}

fn path_spec() -> impl Strategy<Value = PathSpec> {
    prop_oneof![
        2 => plain_path().prop_map(PathSpec::Exact),
        2 => plain_path().prop_map(PathSpec::Prefix),
        3 => template_segs().prop_map(PathSpec::Template),
        1 => select(REGEXES).prop_map(PathSpec::Regex),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    select(vec![Method::GET, Method::POST])
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    (
        prop::collection::vec(select(ROUTE_HOSTS), 0..=2),
        path_spec(),
        prop::option::weighted(0.3, method()),
        prop::option::weighted(0.2, any::<bool>()),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(hosts, path, method, query_q, header)| RouteSpec {
            hosts,
            path,
            method,
            query_q,
            header,
        })
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    let seg = prop_oneof![4 => literal(), 1 => Just("d")];
    (
        select(REQUEST_HOSTS),
        prop::collection::vec(seg, 0..=3),
        any::<bool>(),
        method(),
        select(&[None, Some("q=1"), Some("x=1")][..]),
        any::<bool>(),
    )
        .prop_map(|(host, segs, slash, method, query, header)| {
            let mut path = format!("/{}", segs.join("/"));
            if slash && !segs.is_empty() {
                path.push('/');
            }
            RequestSpec {
                host,
                path,
                method,
                query,
                header,
            }
        })
}

fn template_text(segs: &[Seg]) -> String {
    let mut t = String::new();
    for (i, s) in segs.iter().enumerate() {
        t.push('/');
        match s {
            Seg::Lit(l) => t.push_str(l),
            Seg::Param => t.push_str(&format!("{{p{i}}}")),
            Seg::CatchAll => t.push_str("{*rest}"),
        }
    }
    if t.is_empty() {
        t.push('/');
    }
    t
}

fn to_route(i: usize, spec: &RouteSpec) -> Route {
    let path = match &spec.path {
        PathSpec::Exact(p) => PathMatch::Exact(p.clone()),
        PathSpec::Prefix(p) => PathMatch::Prefix(p.clone()),
        PathSpec::Template(segs) => PathMatch::Template(template_text(segs)),
        PathSpec::Regex(r) => PathMatch::Regex(Regex::new(r).unwrap()),
    };
    let mut r = route(&format!("r{i}"), &spec.hosts, path);
    r.matcher.methods = spec.method.iter().cloned().collect();
    if let Some(present) = spec.query_q {
        r.matcher.query.push(QueryPredicate {
            name: "q".to_owned(),
            test: if present {
                ValueTest::Present
            } else {
                ValueTest::Absent
            },
        });
    }
    if spec.header {
        r.matcher.headers.push(HeaderPredicate {
            name: HeaderName::from_static("x-h"),
            test: ValueTest::Present,
        });
    }
    r
}

/// Host tier and rank within it (smaller first), or `None` when no host of the route matches.
fn host_key(hosts: &[&str], request: &str) -> Option<(u8, usize)> {
    if hosts.is_empty() {
        return Some((2, 0));
    }
    hosts
        .iter()
        .filter_map(|h| match h.strip_prefix('*') {
            Some(suffix) => (request.len() > suffix.len() && request.ends_with(suffix))
                .then(|| (1, usize::MAX - suffix.len())),
            None => (*h == request).then_some((0, 0)),
        })
        .min()
}

/// Whether the template matches, with its specificity tokens when it does.
fn template_key(segs: &[Seg], path: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = path[1..].split('/').collect();
    let mut key = Vec::new();
    if segs.is_empty() {
        return (path == "/").then_some(vec![3]);
    }
    for (i, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Lit(l) => {
                if parts.get(i) != Some(l) {
                    return None;
                }
                key.push(0);
            }
            Seg::Param => {
                if parts.get(i).is_none_or(|p| p.is_empty()) {
                    return None;
                }
                key.push(1);
            }
            Seg::CatchAll => {
                let rest = parts.get(i..).map(|r| r.join("/")).unwrap_or_default();
                if rest.is_empty() {
                    return None;
                }
                key.push(2);
                key.push(3);
                return Some(key);
            }
        }
    }
    (parts.len() == segs.len()).then_some(())?;
    key.push(3);
    Some(key)
}

/// Path kind, rank within the kind, template tokens; `None` when the path does not match.
fn path_key(spec: &PathSpec, path: &str) -> Option<(u8, usize, Vec<u8>)> {
    match spec {
        PathSpec::Exact(p) => (p == path).then(|| (0, 0, Vec::new())),
        PathSpec::Template(segs) => template_key(segs, path).map(|k| (1, 0, k)),
        PathSpec::Prefix(p) => {
            let matches = path == p
                || (path.starts_with(p.as_str())
                    && (p.ends_with('/') || path[p.len()..].starts_with('/')));
            matches.then(|| (2, usize::MAX - p.len(), Vec::new()))
        }
        PathSpec::Regex(r) => Regex::new(r)
            .unwrap()
            .is_match(path)
            .then(|| (3, 0, Vec::new())),
    }
}

fn conditions_hold(spec: &RouteSpec, req: &RequestSpec) -> bool {
    let method_ok = spec.method.as_ref().is_none_or(|m| *m == req.method);
    let has_q = req.query == Some("q=1");
    let query_ok = spec.query_q.is_none_or(|present| present == has_q);
    method_ok && query_ok && (!spec.header || req.header)
}

fn reference(specs: &[RouteSpec], req: &RequestSpec) -> Option<usize> {
    specs
        .iter()
        .enumerate()
        .filter(|(_, s)| conditions_hold(s, req))
        .filter_map(|(i, s)| {
            let (tier, host_rank) = host_key(&s.hosts, req.host)?;
            let (kind, path_rank, tokens) = path_key(&s.path, &req.path)?;
            Some(((tier, host_rank, kind, path_rank, tokens, i), i))
        })
        .min()
        .map(|(_, i)| i)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn router_agrees_with_reference_matcher(
        specs in prop::collection::vec(route_spec(), 1..12),
        requests in prop::collection::vec(request_spec(), 1..32),
    ) {
        let routes: Vec<Route> = specs.iter().enumerate().map(|(i, s)| to_route(i, s)).collect();
        let router = match Router::build(&routes) {
            Ok(r) => r,
            Err(RouterError::TemplateConflict { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        for req in &requests {
            let mut headers = HeaderMap::new();
            if req.header {
                headers.insert("x-h", HeaderValue::from_static("1"));
            }
            let view = RequestView {
                host: req.host,
                path: &req.path,
                query: req.query,
                method: &req.method,
                headers: &headers,
                geo: None,
            };
            let got = router.find(&view).map(|m| m.route);
            prop_assert_eq!(got, reference(&specs, req), "request {:?}", req);
        }
    }
}
