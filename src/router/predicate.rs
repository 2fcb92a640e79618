//! The conditions besides host and path that a route puts on a request: method, headers,
//! query, the client's location.

use http::{HeaderMap, Method};

use super::RequestView;
use crate::config::model::{HeaderPredicate, QueryPredicate, RouteMatch, ValueTest};
use crate::geo::Condition;

/// Method, header and query conditions of one route.
#[derive(Debug)]
pub(super) struct Predicates {
    /// Empty means any method.
    methods: Box<[Method]>,
    headers: Box<[HeaderPredicate]>,
    query: Box<[QueryPredicate]>,
    geo: Option<Condition>,
}

impl Predicates {
    pub(super) fn new(m: &RouteMatch) -> Self {
        Predicates {
            methods: m.methods.as_slice().into(),
            headers: m.headers.as_slice().into(),
            query: m.query.as_slice().into(),
            geo: m.geo.as_ref().map(Condition::new),
        }
    }

    /// Whether every condition holds for the request. The location is looked up only when
    /// the route has a condition on it and every other condition held.
    pub(super) fn accept(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|p| header_holds(p, req.headers))
            && self.query.iter().all(|p| query_holds(p, req.query))
            && self
                .geo
                .as_ref()
                .is_none_or(|c| req.geo.is_some_and(|g| c.holds(g.get())))
    }
}

fn header_holds(p: &HeaderPredicate, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&p.name).iter();
    match &p.test {
        ValueTest::Present => values.next().is_some(),
        ValueTest::Absent => values.next().is_none(),
        ValueTest::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
        ValueTest::Regex(re) => {
            values.any(|v| std::str::from_utf8(v.as_bytes()).is_ok_and(|s| re.is_match(s)))
        }
    }
}

fn query_holds(p: &QueryPredicate, query: Option<&str>) -> bool {
    let mut values = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(name, _)| *name == p.name)
        .map(|(_, value)| value);
    match &p.test {
        ValueTest::Present => values.next().is_some(),
        ValueTest::Absent => values.next().is_none(),
        ValueTest::Exact(want) => values.any(|v| v == want),
        ValueTest::Regex(re) => values.any(|v| re.is_match(v)),
    }
}
