//! The configuration API: reads of the newest version (secrets as fingerprints), changes
//! of resources (one at a time or as a batch), versions, diff, rollback, export, audit and
//! status. Every answer carries the configuration version as its `ETag`; every change needs
//! `If-Match` with it (428 without, 412 when stale).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::auth::Caller;
use super::endpoints::{self, Handler, Kind, Write};
use super::{problem, problem_with, reply, resources};
use crate::config::document;
use crate::runtime::{ChangeError, Shared};

/// Largest request body of the configuration API.
const MAX_BODY: usize = 1024 * 1024;

/// What `If-Match` asks.
enum Expected {
    Missing,
    Any,
    Version(u64),
    Unreadable,
}

pub(super) async fn serve(
    shared: &Arc<Shared>,
    caller: &Caller,
    handler: Handler,
    params: &[String],
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if matches!(
        handler,
        Handler::Change(..) | Handler::Rollback | Handler::Batch
    ) {
        return write(shared, caller, handler, params, req).await;
    }
    read(shared, handler, params, &req)
}

/// A read of the newest version, the versions kept or the audit log.
fn read(
    shared: &Shared,
    handler: Handler,
    params: &[String],
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(versions) = shared.versions() else {
        if handler == Handler::Status {
            return json_reply(StatusCode::OK, &json!({"version": 0}), None);
        }
        return failed(ChangeError::Unavailable, None);
    };
    let Some(current) = versions.current().cloned() else {
        return failed(ChangeError::Unavailable, None);
    };
    let etag = Some(current.version);
    let answer = |r: Result<Value, ChangeError>| match r {
        Ok(v) => json_reply(StatusCode::OK, &v, etag),
        Err(e) => failed(e, etag),
    };
    match handler {
        Handler::Status => json_reply(
            StatusCode::OK,
            &json!({"version": current.version, "time": current.time, "who": current.who,
                    "source": current.source}),
            etag,
        ),
        Handler::Export => {
            let mut r = reply(
                StatusCode::OK,
                "application/yaml",
                document::to_yaml(&current.doc).into(),
            );
            set_etag(r.headers_mut(), current.version);
            r
        }
        Handler::Versions => {
            let list: Vec<Value> = versions
                .list()
                .map(|v| json!({"version": v.version, "time": v.time, "who": v.who, "source": v.source}))
                .collect();
            json_reply(StatusCode::OK, &Value::Array(list), etag)
        }
        Handler::Version => {
            let found = params
                .first()
                .and_then(|n| n.parse::<u64>().ok())
                .and_then(|n| versions.get(n));
            match found {
                Some(v) => json_reply(
                    StatusCode::OK,
                    &json!({"version": v.version, "time": v.time, "who": v.who,
                            "source": v.source, "config": document::masked(&v.doc)}),
                    etag,
                ),
                None => problem(StatusCode::NOT_FOUND, "no such version (or no longer kept)"),
            }
        }
        Handler::Diff => {
            let query = req.uri().query().unwrap_or("");
            let number = |key: &str| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            let to = number("to").unwrap_or(current.version);
            let from = number("from").unwrap_or(to.saturating_sub(1));
            match (versions.get(from), versions.get(to)) {
                (Some(a), Some(b)) => {
                    let a = document::to_yaml(&document::masked(&a.doc));
                    let b = document::to_yaml(&document::masked(&b.doc));
                    let mut r = reply(
                        StatusCode::OK,
                        "text/plain; charset=utf-8",
                        document::diff_lines(&a, &b).into(),
                    );
                    set_etag(r.headers_mut(), current.version);
                    r
                }
                _ => problem(StatusCode::NOT_FOUND, "no such version (or no longer kept)"),
            }
        }
        Handler::Audit => {
            let list: Vec<Value> = versions
                .audit()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect();
            json_reply(StatusCode::OK, &Value::Array(list), etag)
        }
        Handler::List(kind) => answer(resources::list(&current.doc, kind, params)),
        Handler::Get(kind) => answer(resources::get(&current.doc, kind, params)),
        _ => problem(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// A change: one resource, a rollback or a batch, as one new version.
async fn write(
    shared: &Arc<Shared>,
    caller: &Caller,
    handler: Handler,
    params: &[String],
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let expected = match expected(req.headers()) {
        Expected::Missing => {
            return problem(
                StatusCode::PRECONDITION_REQUIRED,
                "changes need If-Match with the configuration version (the ETag)",
            )
        }
        Expected::Unreadable => {
            return failed(
                ChangeError::Stale {
                    current: shared
                        .versions()
                        .and_then(|v| v.current().map(|c| c.version))
                        .unwrap_or(0),
                },
                None,
            )
        }
        Expected::Any => None,
        Expected::Version(n) => Some(n),
    };
    let action = format!("{} {}", req.method(), req.uri().path());
    // `?dry_run=true`: validated and compiled as it would be applied, and not applied.
    let dry_run = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "dry_run=true" || p == "dry_run=1")
    });
    let delete = matches!(handler, Handler::Change(_, Write::Delete));
    let body = if delete {
        None
    } else {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => match serde_json::from_slice::<Value>(&b.to_bytes()) {
                Ok(v) => Some(v),
                Err(e) => return problem(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
            },
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "the body could not be read (1 MiB at most)",
                )
            }
        }
    };
    let (source, result) = match handler {
        Handler::Rollback => {
            let target = body
                .as_ref()
                .and_then(|b| b.get("version"))
                .and_then(Value::as_u64);
            let doc = target.and_then(|n| shared.versions()?.get(n).map(|v| v.doc.clone()));
            let Some(doc) = doc else {
                return problem(
                    StatusCode::NOT_FOUND,
                    "give {\"version\": N} of a version kept (GET /config/versions)",
                );
            };
            (
                "rollback",
                apply(
                    shared,
                    dry_run,
                    &caller.name,
                    "rollback",
                    &action,
                    expected,
                    |_| Ok(doc),
                )
                .await,
            )
        }
        Handler::Batch => {
            let ops = match batch(body.as_ref()) {
                Ok(ops) => ops,
                Err(e) => return failed(e, None),
            };
            let applied = apply(
                shared,
                dry_run,
                &caller.name,
                "api",
                &action,
                expected,
                |doc| {
                    let mut next = doc.clone();
                    for (kind, write, params, value) in &ops {
                        resources::change(&mut next, *kind, *write, params, value.as_ref())?;
                    }
                    Ok(next)
                },
            )
            .await;
            ("api", applied)
        }
        Handler::Change(kind, write) => {
            let applied = apply(
                shared,
                dry_run,
                &caller.name,
                "api",
                &action,
                expected,
                |doc| {
                    let mut next = doc.clone();
                    resources::change(&mut next, kind, write, params, body.as_ref())?;
                    Ok(next)
                },
            )
            .await;
            ("api", applied)
        }
        _ => return problem(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    let created = matches!(handler, Handler::Change(_, Write::Create));
    match result {
        Ok(version) if dry_run => json_reply(
            StatusCode::OK,
            &json!({"version": version, "dry_run": true, "valid": true}),
            Some(version),
        ),
        Ok(version) => json_reply(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &json!({"version": version, "source": source}),
            Some(version),
        ),
        Err(e) => failed(e, None),
    }
}

/// Applies a change where the configuration lives: etcd (compare-and-swap on its revision)
/// or this gateway's versions.
async fn apply(
    shared: &Arc<Shared>,
    dry_run: bool,
    who: &str,
    source: &str,
    action: &str,
    expected: Option<u64>,
    change: impl FnOnce(&Value) -> Result<Value, ChangeError>,
) -> Result<u64, ChangeError> {
    if dry_run {
        shared.check_change(expected, change)
    } else if shared.in_etcd() {
        shared
            .change_in_etcd(who, source, action, expected, change)
            .await
    } else {
        shared.change(who, source, action, expected, change)
    }
}

/// One operation of a batch: the resource, the change, the path's parameters, the body.
type Operation = (Kind, Write, Vec<String>, Option<Value>);

/// The operations of `{"operations": [{"op", "path", "value"}]}`, each path an endpoint of
/// the resource table.
fn batch(body: Option<&Value>) -> Result<Vec<Operation>, ChangeError> {
    let bad = |m: String| resources::rejected(400, m);
    let ops = body
        .and_then(|b| b.get("operations"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the body needs \"operations\": a list".into()))?;
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let method = match op.get("op").and_then(Value::as_str) {
                Some("create") => Method::POST,
                Some("replace") => Method::PUT,
                Some("patch") => Method::PATCH,
                Some("delete") => Method::DELETE,
                _ => {
                    return Err(bad(format!(
                        "operations[{i}].op: one of create, replace, patch, delete"
                    )))
                }
            };
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            match endpoints::find(&method, path) {
                Ok((e, params)) => match e.handler {
                    Handler::Change(kind, write) => {
                        Ok((kind, write, params, op.get("value").cloned()))
                    }
                    _ => Err(bad(format!("operations[{i}].path: not a resource: {path}"))),
                },
                Err(_) => Err(bad(format!("operations[{i}].path: not a resource: {path}"))),
            }
        })
        .collect()
}

fn expected(headers: &HeaderMap) -> Expected {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Expected::Missing;
    };
    let Ok(v) = v.to_str() else {
        return Expected::Unreadable;
    };
    let v = v.trim();
    if v == "*" {
        return Expected::Any;
    }
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    v.parse().map_or(Expected::Unreadable, Expected::Version)
}

/// The answer to a change or read that did not happen.
fn failed(e: ChangeError, etag: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = match &e {
        ChangeError::Unavailable | ChangeError::StoreDown(_) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        ChangeError::Stale { current } => {
            let mut r = problem(
                StatusCode::PRECONDITION_FAILED,
                &format!("{e}; read it again and retry"),
            );
            set_etag(r.headers_mut(), *current);
            return r;
        }
        ChangeError::Invalid(errors) => {
            let list: Vec<Value> = errors
                .iter()
                .map(|e| json!({"path": e.path, "message": e.message}))
                .collect();
            let mut extra = serde_json::Map::new();
            extra.insert("errors".into(), Value::Array(list));
            let detail = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            problem_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("the change was refused; nothing changed:\n{detail}"),
                extra,
            )
        }
        ChangeError::Rejected { status, message } => problem(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        ),
        ChangeError::Storage(m) => problem(StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    if let Some(v) = etag {
        set_etag(r.headers_mut(), v);
    }
    r
}

fn json_reply(status: StatusCode, v: &Value, etag: Option<u64>) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    let mut r = reply(status, "application/json", text.into());
    if let Some(n) = etag {
        set_etag(r.headers_mut(), n);
    }
    r
}

fn set_etag(h: &mut HeaderMap, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        h.insert(header::ETAG, v);
    }
}
