//! Route matching: picks the configured route for a request; compiled once per configuration.
//!
//! # Precedence
//!
//! The router orders the routes that could apply to a request by the key below and takes the
//! first one whose every condition holds. The order is total, so the same configuration and
//! request always pick the same route.
//!
//! 1. **Host tier.** Routes listing the request host exactly come first. Then routes with a
//!    matching wildcard host, the longest suffix first (`*.b.example.com` before
//!    `*.example.com`). Routes without `hosts` (any host) come last. A route listing several
//!    hosts sits in the best tier any of them reaches.
//!    A wildcard `*.example.com` matches any host that ends in `.example.com` with at least
//!    one character before it: `a.example.com` and `a.b.example.com`, but not `example.com`.
//!    Hosts compare case-insensitively and without port.
//! 2. **Path kind**, within one host tier: `exact` before `template` before `prefix` before
//!    `regex`.
//!    - Among templates, the most specific first, compared left to right: literal text beats
//!      a `{param}`, which beats a `{*catch_all}`; a literal suffix after a parameter
//!      (`/{name}.png`) beats the end of the template (`/{name}`).
//!    - Among prefixes, the longest first. Prefixes are segment-aware: `/api` matches `/api`,
//!      `/api/` and `/api/x` but not `/apix`; `/api/` matches `/api/` and `/api/x`; `/`
//!      matches every path.
//!    - A regex is searched in the path (unanchored: write `^…$` to match the whole path).
//! 3. **Configuration order** breaks the remaining ties (same tier, same exact path, same
//!    template, prefixes of the same length, and all regexes).
//! 4. **Conditions.** A candidate is taken only if its `methods` (empty means any), `headers`
//!    and `query` predicates all hold; otherwise the next candidate in the order above is
//!    tried. When none is left the request has no route (404), even if some route's path
//!    matched.
//!
//! Header predicates: `exact` compares the value bytes, `regex` searches the value (a value
//! that is not UTF-8 never matches), `present`/`absent` test the name. A repeated header
//! matches if any of its values does.
//!
//! Location conditions (`match.geo`) are checked last, so the client's location is looked up
//! only for a candidate whose other conditions held.
//!
//! Query predicates look at the raw query string: pairs split on `&`, name and value split
//! on the first `=` (a pair without `=` has an empty value), nothing percent-decoded. A
//! repeated name matches if any of its values does.

mod params;
mod path;
mod predicate;
mod rewrite;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use http::{HeaderMap, Method};

use crate::config::model::{HostMatch, Route};

pub use params::Params;
pub use rewrite::{redirect_location, rewrite_path};

use path::PathTable;
use predicate::Predicates;

/// Why a set of routes cannot be compiled.
#[derive(thiserror::Error, Debug)]
pub enum RouterError {
    #[error(
        "route {route:?}: path template {template:?} conflicts with {with:?} \
         (route {other:?}) for {scope}"
    )]
    TemplateConflict {
        route: String,
        template: String,
        with: String,
        /// The route that registered `with` first, or `"?"` when it cannot be told.
        other: String,
        scope: String,
    },
    #[error("route {route:?}: invalid path template {template:?}: {reason}")]
    InvalidTemplate {
        route: String,
        template: String,
        reason: matchit::InsertError,
    },
}

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Lower-case, port stripped; `""` when the request names no host.
    pub host: &'a str,
    /// Raw path: starts with `/`, no query.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The client's location, looked up when a route's condition first needs it; `None`
    /// when the configuration has no `geo` section.
    pub geo: Option<&'a crate::geo::Lazy<'a>>,
}

/// The route chosen for a request.
#[derive(Debug, Clone)]
pub struct Matched<'r> {
    /// Index into the routes the router was built from.
    pub route: usize,
    /// Template parameters (empty for other path kinds); values are read from the path.
    pub params: Params<'r>,
}

/// All routes of one configuration, compiled for lookup. Immutable once built.
#[derive(Debug)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, PathTable>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    wildcard_hosts: HashMap<Box<str>, PathTable>,
    /// Longest wildcard suffix, so a long request host is not hashed at every dot.
    longest_wildcard: usize,
    any_host: PathTable,
    /// Per route, indexed like the routes.
    predicates: Vec<Predicates>,
}

/// The host tier a path table serves; names the place of a conflict in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Exact(String),
    /// Suffix with its leading dot.
    Wildcard(String),
    Any,
}

impl Router {
    /// Compiles `routes`; indices in [`Matched::route`] refer to this slice.
    pub fn build(routes: &[Route]) -> Result<Router, RouterError> {
        let mut router = Router {
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            longest_wildcard: 0,
            any_host: PathTable::default(),
            predicates: Vec::with_capacity(routes.len()),
        };
        for (index, route) in routes.iter().enumerate() {
            router.predicates.push(Predicates::new(&route.matcher));
            for scope in scopes(route) {
                let table = match &scope {
                    Scope::Exact(h) => router.exact_hosts.entry(h.as_str().into()).or_default(),
                    Scope::Wildcard(s) => {
                        router.longest_wildcard = router.longest_wildcard.max(s.len());
                        router.wildcard_hosts.entry(s.as_str().into()).or_default()
                    }
                    Scope::Any => &mut router.any_host,
                };
                table.add(index, routes, &scope)?;
            }
        }
        router.exact_hosts.values_mut().for_each(PathTable::finish);
        router
            .wildcard_hosts
            .values_mut()
            .for_each(PathTable::finish);
        router.any_host.finish();
        Ok(router)
    }

    /// Some route names hosts: a request's host must be given to [`Router::find`].
    pub fn by_host(&self) -> bool {
        !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty()
    }

    /// The route for `req`, or `None` when no route applies (404). `req.host` may be empty
    /// when the router is not [`Router::by_host`].
    pub fn find<'r>(&'r self, req: &RequestView<'_>) -> Option<Matched<'r>> {
        let accept = |route: usize| self.predicates.get(route).is_some_and(|p| p.accept(req));
        let matched = |(route, params)| Matched { route, params };

        if let Some(table) = self.exact_hosts.get(req.host) {
            if let Some(found) = table.find(req.path, accept) {
                return Some(matched(found));
            }
        }
        if !self.wildcard_hosts.is_empty() {
            // Scanning dots left to right visits the longest suffixes first.
            for (at, _) in req.host.match_indices('.') {
                let Some(suffix) = req.host.get(at..) else {
                    continue;
                };
                if at == 0 || suffix.len() > self.longest_wildcard {
                    continue;
                }
                if let Some(table) = self.wildcard_hosts.get(suffix) {
                    if let Some(found) = table.find(req.path, accept) {
                        return Some(matched(found));
                    }
                }
            }
        }
        self.any_host.find(req.path, accept).map(matched)
    }
}

/// The distinct host tiers `route` is registered in, with hosts lower-cased.
fn scopes(route: &Route) -> Vec<Scope> {
    let hosts = &route.matcher.hosts;
    if hosts.is_empty() {
        return vec![Scope::Any];
    }
    let mut out = Vec::with_capacity(hosts.len());
    for host in hosts {
        let scope = match host {
            HostMatch::Exact(h) => Scope::Exact(h.to_ascii_lowercase()),
            HostMatch::WildcardSuffix(s) => {
                let s = s.to_ascii_lowercase();
                // The model stores `.example.com`; accept a suffix given without its dot too.
                if s.starts_with('.') {
                    Scope::Wildcard(s)
                } else {
                    Scope::Wildcard(format!(".{s}"))
                }
            }
        };
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    out
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Exact(h) => write!(f, "host {h}"),
            Scope::Wildcard(s) => write!(f, "host *{s}"),
            Scope::Any => f.write_str("any host"),
        }
    }
}
