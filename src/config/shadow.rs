//! Routes that can never match: for every request such a route matches, another route comes
//! first in the router's order (docs/config.md, "Precedence") and accepts it too.
//!
//! The check is sound, not complete: it reports a route only when it can prove the other
//! route always wins (same host tier, a path that covers the route's paths and comes first,
//! conditions that the route's own imply). Overlaps it cannot prove stay allowed.

use super::model::{HeaderPredicate, HostMatch, PathMatch, QueryPredicate, Route, ValueTest};
use super::validate::Errors;

/// Reports every route in `routes` (with its index in the file) that another always beats.
pub(super) fn unreachable(errs: &mut Errors, routes: &[(usize, &Route)]) {
    for (bi, (b_at, b)) in routes.iter().enumerate() {
        let winner = routes
            .iter()
            .enumerate()
            .filter(|(ai, _)| *ai != bi)
            .find(|(ai, (_, a))| always_beats(a, *ai < bi, b));
        if let Some((_, (a_at, a))) = winner {
            errs.push(
                format!("routes[{b_at}]"),
                format!(
                    "route {:?} can never match: routes[{a_at}] ({:?}) comes first for every \
                     request it matches (see the precedence rule in docs/config.md); reorder, \
                     narrow routes[{a_at}] or remove routes[{b_at}]",
                    b.name, a.name
                ),
            );
        }
    }
}

/// Whether `a` is tried before `b` and accepts every request `b` matches; `a_earlier` says
/// `a` comes first in the file.
fn always_beats(a: &Route, a_earlier: bool, b: &Route) -> bool {
    let (am, bm) = (&a.matcher, &b.matcher);
    // Every host tier `b` sits in must hold `a` too: tiers are separate tables.
    same_tiers(&am.hosts, &bm.hosts)
        && path_covers(&am.path, a_earlier, &bm.path)
        && (am.methods.is_empty()
            || (!bm.methods.is_empty() && bm.methods.iter().all(|m| am.methods.contains(m))))
        && am
            .headers
            .iter()
            .all(|p| bm.headers.iter().any(|q| same_header(p, q)))
        && am
            .query
            .iter()
            .all(|p| bm.query.iter().any(|q| same_query(p, q)))
        // A location condition narrows `a` unless `b` has the same one.
        && (am.geo.is_none() || am.geo == bm.geo)
}

fn same_tiers(a: &[HostMatch], b: &[HostMatch]) -> bool {
    if b.is_empty() || a.is_empty() {
        return a.is_empty() && b.is_empty();
    }
    let norm = |h: &HostMatch| match h {
        HostMatch::Exact(h) => (false, h.to_ascii_lowercase()),
        HostMatch::WildcardSuffix(s) => {
            let s = s.to_ascii_lowercase();
            (true, s.strip_prefix('.').map(str::to_owned).unwrap_or(s))
        }
    };
    b.iter().all(|h| a.iter().any(|g| norm(g) == norm(h)))
}

/// Whether `a`'s path matches every path `b`'s does and comes before it in one host tier:
/// exact, then template, then prefix (longest first), then regex, then file order.
fn path_covers(a: &PathMatch, a_earlier: bool, b: &PathMatch) -> bool {
    match (a, b) {
        (PathMatch::Exact(x), PathMatch::Exact(y)) => a_earlier && x == y,
        (PathMatch::Template(x), PathMatch::Template(y)) => a_earlier && x == y,
        (PathMatch::Prefix(p), PathMatch::Prefix(q)) => a_earlier && p == q,
        (PathMatch::Prefix(p), PathMatch::Regex(r)) => {
            p == "/" || literal_start(r.as_str()).is_some_and(|l| prefix_holds_for_all(p, &l))
        }
        (PathMatch::Regex(x), PathMatch::Regex(y)) => {
            a_earlier && (x.as_str() == y.as_str() || matches_every_path(x.as_str()))
        }
        _ => false,
    }
}

/// Every path that starts with `start` matches the segment-aware prefix `p`.
fn prefix_holds_for_all(p: &str, start: &str) -> bool {
    start.starts_with(p) && (p.ends_with('/') || start.as_bytes().get(p.len()) == Some(&b'/'))
}

/// A regex that every path (they all start with `/`) matches.
fn matches_every_path(re: &str) -> bool {
    matches!(re, "" | "/" | "^/" | ".*" | "^.*" | "^/.*" | ".*$" | "^.*$")
}

/// The literal text every match of an anchored (`^…`) regex starts with.
fn literal_start(re: &str) -> Option<String> {
    let rest = re.strip_prefix('^')?;
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => e,
                _ => break,
            },
            '.' | '[' | '(' | '|' | '$' | '^' | '{' | '}' | ')' | ']' => break,
            '?' | '*' | '+' => {
                // The last character was optional or repeated: it is not certain.
                out.pop();
                break;
            }
            c => c,
        };
        if matches!(chars.peek(), Some('?' | '*' | '{')) {
            break;
        }
        out.push(literal);
    }
    // An alternation anywhere means the start is not certain.
    (!out.is_empty() && !rest.contains('|')).then_some(out)
}

fn same_test(a: &ValueTest, b: &ValueTest) -> bool {
    match (a, b) {
        (ValueTest::Present, ValueTest::Present) | (ValueTest::Absent, ValueTest::Absent) => true,
        (ValueTest::Present, ValueTest::Exact(_) | ValueTest::Regex(_)) => true,
        (ValueTest::Exact(x), ValueTest::Exact(y)) => x == y,
        (ValueTest::Regex(x), ValueTest::Regex(y)) => x.as_str() == y.as_str(),
        _ => false,
    }
}

/// `b`'s predicate `q` implies `a`'s predicate `p`.
fn same_header(p: &HeaderPredicate, q: &HeaderPredicate) -> bool {
    p.name == q.name && same_test(&p.test, &q.test)
}

fn same_query(p: &QueryPredicate, q: &QueryPredicate) -> bool {
    p.name == q.name && same_test(&p.test, &q.test)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems `parse` finds in a config with these routes (one upstream `u`).
    fn problems(routes: &str) -> Vec<String> {
        let yaml = format!(
            "listeners: [{{address: 127.0.0.1:8080}}]\nupstreams: {{u: {{targets: [{{address: 127.0.0.1:9}}]}}}}\nroutes:\n{routes}"
        );
        match crate::config::parse(&yaml, std::path::Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_regex_route_behind_a_catch_all_prefix_is_reported_with_both_paths() {
        let p = problems(
            "  - {name: all, upstream: u}\n  - {name: deny-admin, match: {path: {regex: '^/admin'}}, respond: {status: 403}}\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "routes[1]: route \"deny-admin\" can never match: routes[0] (\"all\")"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn a_route_after_the_catch_all_in_another_host_tier_or_path_kind_is_reachable() {
        assert!(
            problems("  - {upstream: u}\n  - {match: {hosts: [a.test]}, upstream: u}\n").is_empty()
        );
        assert!(
            problems("  - {upstream: u}\n  - {match: {path: {exact: /x}}, upstream: u}\n")
                .is_empty()
        );
        assert!(
            problems("  - {upstream: u}\n  - {match: {path: {prefix: /x}}, upstream: u}\n")
                .is_empty()
        );
        assert!(problems("  - {match: {path: {prefix: /api}}, upstream: u}\n  - {match: {path: {regex: '^/apix'}}, upstream: u}\n").is_empty());
    }

    #[test]
    fn an_earlier_route_with_conditions_the_later_lacks_does_not_hide_it() {
        assert!(problems("  - {match: {methods: [GET]}, upstream: u}\n  - {match: {path: {regex: x}}, upstream: u}\n").is_empty());
        assert!(problems("  - {match: {headers: [{name: x-a}]}, upstream: u}\n  - {match: {path: {regex: x}}, upstream: u}\n").is_empty());
    }

    #[test]
    fn a_later_route_with_narrower_conditions_is_still_hidden() {
        let p = problems(
            "  - {match: {path: {prefix: /api}, methods: [GET, POST]}, upstream: u}\n  - {match: {path: {regex: '^/api/v[0-9]'}, methods: [GET], headers: [{name: x-a, exact: b}]}, upstream: u}\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        let p = problems("  - {match: {path: {exact: /x}}, upstream: u}\n  - {match: {path: {exact: /x}}, upstream: u}\n");
        assert!(p[0].starts_with("routes[1]:"), "{p:?}");
        let p = problems("  - {match: {hosts: [a.test], path: {prefix: /p}}, upstream: u}\n  - {match: {hosts: [A.test], path: {prefix: /p}}, upstream: u}\n");
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn the_literal_start_of_an_anchored_regex() {
        assert_eq!(literal_start("^/api/v[0-9]+").as_deref(), Some("/api/v"));
        assert_eq!(literal_start("^/admin/").as_deref(), Some("/admin/"));
        assert_eq!(literal_start("^/ab?c").as_deref(), Some("/a"));
        assert_eq!(literal_start("^/a\\.b").as_deref(), Some("/a.b"));
        assert_eq!(literal_start("/admin"), None, "unanchored");
        assert_eq!(literal_start("^/a|^/b"), None, "alternation");
    }

    #[test]
    fn a_segment_prefix_holds_for_every_path_of_a_start() {
        assert!(prefix_holds_for_all("/api", "/api/v"));
        assert!(prefix_holds_for_all("/api/", "/api/v"));
        assert!(
            !prefix_holds_for_all("/api", "/api"),
            "/apix starts with /api"
        );
        assert!(!prefix_holds_for_all("/api", "/apix"));
        assert!(prefix_holds_for_all("/", "/x"));
    }
}
