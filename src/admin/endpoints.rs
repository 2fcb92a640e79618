//! Every endpoint of the admin listener in one table: its method, path template, the role it
//! needs and what it does. The router matches requests against it and `/openapi.json` is
//! generated from it, so the two cannot disagree.

use http::Method;

use crate::config::model::AdminRole;

/// A resource of the configuration API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `routes`, a list; a route is named by its `name`.
    Route,
    /// `upstreams`, by name.
    Upstream,
    /// `upstreams.NAME.targets`, a list; a target is named by its `address`.
    Target,
    /// `consumers`, by name (their credentials included, write-only).
    Consumer,
    /// Any other top-level key (`rate_limiting`, `auth`, `cache`, …).
    Section,
}

/// A change of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    Create,
    Replace,
    Patch,
    Delete,
}

/// What an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handler {
    Metrics,
    Healthz,
    Readyz,
    Reload,
    UpstreamState,
    Drain,
    Undrain,
    Purge,
    Queues,
    Status,
    OpenApi,
    Export,
    Versions,
    Version,
    Diff,
    Rollback,
    Batch,
    Audit,
    Stats,
    Alerts,
    /// `/stats/live`: server-sent events, one a second.
    Live,
    /// The dashboard's files.
    Ui,
    List(Kind),
    Get(Kind),
    Change(Kind, Write),
}

pub(super) struct Endpoint {
    pub method: Method,
    /// Segments in braces match one path segment each.
    pub path: &'static str,
    /// `None`: open to anyone (health probes).
    pub role: Option<AdminRole>,
    pub summary: &'static str,
    pub handler: Handler,
}

const VIEWER: Option<AdminRole> = Some(AdminRole::Viewer);
const OPERATOR: Option<AdminRole> = Some(AdminRole::Operator);
const ADMIN: Option<AdminRole> = Some(AdminRole::Admin);

macro_rules! endpoints {
    ($($method:ident $path:literal $role:ident $handler:expr, $summary:literal;)*) => {
        pub(super) static ENDPOINTS: &[Endpoint] = &[$(Endpoint {
            method: Method::$method,
            path: $path,
            role: $role,
            summary: $summary,
            handler: $handler,
        }),*];
    };
}

use Handler::*;
use Kind::*;
use Write::*;

const NONE: Option<AdminRole> = None;

endpoints! {
    GET "/healthz" NONE Healthz, "Liveness: 200 while the process runs";
    GET "/readyz" NONE Readyz, "Readiness: 503 while draining";
    GET "/metrics" VIEWER Metrics, "Prometheus metrics (OpenMetrics text)";
    GET "/status" VIEWER Status, "The configuration version running";
    GET "/openapi.json" VIEWER OpenApi, "This document";
    POST "/reload" OPERATOR Reload, "Reload the configuration file";
    GET "/upstreams" VIEWER UpstreamState, "Upstream groups and their targets' health";
    POST "/upstreams/{group}/targets/{address}/drain" OPERATOR Drain, "Drain a target";
    POST "/upstreams/{group}/targets/{address}/ready" OPERATOR Undrain, "Undo a drain";
    POST "/cache/purge" OPERATOR Purge, "Purge cached responses";
    GET "/stats" VIEWER Stats, "A metric of the traffic history as a series (metric, route|target|consumer|client, from, to, step)";
    GET "/stats/top" VIEWER Stats, "The top names of a dimension over a range (dimension, metric, from, to, n)";
    GET "/alerts" VIEWER Alerts, "Active alerts (pending and firing) and recently resolved ones";
    GET "/stats/live" VIEWER Live, "The last second's traffic, gateway and per route, as server-sent events (one a second)";
    GET "/ui" NONE Ui, "The dashboard (its files need no token; its API calls do)";
    GET "/ui/{file}" NONE Ui, "A file of the dashboard";
    GET "/queues" VIEWER Queues, "Queues: depth and dead letters";
    GET "/queues/{queue}/dead" VIEWER Queues, "A queue's dead-lettered jobs";
    POST "/queues/{queue}/dead/{job}/retry" OPERATOR Queues, "Queue a dead-lettered job again";
    DELETE "/queues/{queue}/dead/{job}" OPERATOR Queues, "Remove a dead-lettered job";
    GET "/config" ADMIN Export, "The running configuration as YAML (secrets included)";
    GET "/config/versions" VIEWER Versions, "The versions kept";
    GET "/config/versions/{version}" VIEWER Version, "One version (secrets as fingerprints)";
    GET "/config/diff" VIEWER Diff, "A diff of two versions' YAML (from, to)";
    POST "/config/rollback" ADMIN Rollback, "Apply an earlier version as a new one";
    POST "/config/batch" ADMIN Batch, "Apply several changes as one version";
    GET "/config/audit" VIEWER Audit, "Applied changes: who, when, what, version";
    GET "/config/routes" VIEWER List(Route), "Routes";
    POST "/config/routes" ADMIN Change(Route, Create), "Add a route (named by name)";
    GET "/config/routes/{name}" VIEWER Get(Route), "A route";
    PUT "/config/routes/{name}" ADMIN Change(Route, Replace), "Replace (or add) a route";
    PATCH "/config/routes/{name}" ADMIN Change(Route, Patch), "Merge-patch a route";
    DELETE "/config/routes/{name}" ADMIN Change(Route, Delete), "Remove a route";
    GET "/config/upstreams" VIEWER List(Upstream), "Upstream groups";
    POST "/config/upstreams" ADMIN Change(Upstream, Create), "Add a group (name in the body)";
    GET "/config/upstreams/{name}" VIEWER Get(Upstream), "A group";
    PUT "/config/upstreams/{name}" ADMIN Change(Upstream, Replace), "Replace (or add) a group";
    PATCH "/config/upstreams/{name}" ADMIN Change(Upstream, Patch), "Merge-patch a group";
    DELETE "/config/upstreams/{name}" ADMIN Change(Upstream, Delete), "Remove a group";
    GET "/config/upstreams/{name}/targets" VIEWER List(Target), "A group's targets";
    POST "/config/upstreams/{name}/targets" ADMIN Change(Target, Create), "Add a target";
    GET "/config/upstreams/{name}/targets/{address}" VIEWER Get(Target), "A target";
    PUT "/config/upstreams/{name}/targets/{address}" ADMIN Change(Target, Replace), "Replace (or add) a target";
    PATCH "/config/upstreams/{name}/targets/{address}" ADMIN Change(Target, Patch), "Merge-patch a target";
    DELETE "/config/upstreams/{name}/targets/{address}" ADMIN Change(Target, Delete), "Remove a target";
    GET "/config/consumers" VIEWER List(Consumer), "Consumers (credentials as fingerprints)";
    POST "/config/consumers" ADMIN Change(Consumer, Create), "Add a consumer (name in the body)";
    GET "/config/consumers/{name}" VIEWER Get(Consumer), "A consumer (credentials as fingerprints)";
    PUT "/config/consumers/{name}" ADMIN Change(Consumer, Replace), "Replace (or add) a consumer";
    PATCH "/config/consumers/{name}" ADMIN Change(Consumer, Patch), "Merge-patch a consumer";
    DELETE "/config/consumers/{name}" ADMIN Change(Consumer, Delete), "Remove a consumer";
    GET "/config/sections" VIEWER List(Section), "The whole configuration as JSON (secrets as fingerprints)";
    GET "/config/sections/{name}" VIEWER Get(Section), "One top-level section";
    PUT "/config/sections/{name}" ADMIN Change(Section, Replace), "Replace (or add) a section";
    PATCH "/config/sections/{name}" ADMIN Change(Section, Patch), "Merge-patch a section";
    DELETE "/config/sections/{name}" ADMIN Change(Section, Delete), "Remove a section";
}

/// The endpoint for a method and path, with the path's parameters (percent-decoded);
/// `Err(true)` when the path exists with other methods.
pub(super) fn find(method: &Method, path: &str) -> Result<(&'static Endpoint, Vec<String>), bool> {
    let mut path_known = false;
    for e in ENDPOINTS {
        if let Some(params) = matches(e.path, path) {
            if e.method == *method {
                return Ok((e, params));
            }
            path_known = true;
        }
    }
    Err(path_known)
}

fn matches(template: &str, path: &str) -> Option<Vec<String>> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(percent_decode(ps)?);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_templates_with_parameters() {
        let (e, params) = find(
            &Method::PUT,
            "/config/upstreams/api/targets/127.0.0.1%3A9101",
        )
        .unwrap();
        assert_eq!(e.handler, Change(Target, Replace));
        assert_eq!(params, ["api", "127.0.0.1:9101"]);
        assert!(matches!(find(&Method::PUT, "/config/versions"), Err(true)));
        assert!(matches!(find(&Method::GET, "/nowhere"), Err(false)));
    }

    #[test]
    fn every_method_and_path_is_listed_once() {
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }
}
