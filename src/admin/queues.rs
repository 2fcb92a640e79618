//! `/queues` on the admin listener: each queue's depth and dead letters, and what an
//! operator does with a dead letter.
//!
//! - `GET /queues`: `[{name, depth, dead_letters, oldest_due_age_seconds}]`
//! - `GET /queues/NAME/dead`: the dead-lettered jobs (oldest first, at most 1000)
//! - `POST /queues/NAME/dead/ID/retry`: the job goes back in the queue, its attempts reset
//! - `DELETE /queues/NAME/dead/ID`: the job and its request are removed

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use super::reply;
use crate::proxy::status_json;
use crate::queue::JobId;
use crate::runtime::Shared;

/// Dead letters listed at most in one answer.
const MAX_LISTED: usize = 1000;

pub async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load_full();
    let path = req.uri().path().trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    let not_found = || reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    if parts.is_empty() && req.method() == Method::GET {
        let list: Vec<_> = snap
            .queues
            .iter()
            .map(|q| {
                json!({
                    "name": q.settings.name,
                    "depth": q.depth(),
                    "dead_letters": q.metrics.dead.get(),
                    "oldest_due_age_seconds": q.metrics.oldest_due_age(),
                })
            })
            .collect();
        return json_reply(StatusCode::OK, &json!(list));
    }
    let Some(queue) = parts
        .first()
        .and_then(|name| snap.queues.iter().find(|q| q.settings.name == *name))
    else {
        return not_found();
    };
    let failed = |e: crate::queue::QueueError| {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n").into(),
        )
    };
    let id = parts.get(2).and_then(|id| JobId::parse(id));
    match (req.method(), &parts[1..], id) {
        (&Method::GET, ["dead"], _) => match queue.dead_letters(MAX_LISTED).await {
            Ok(dead) => {
                let list: Vec<_> = dead.iter().map(|(id, job)| status_json(*id, job)).collect();
                json_reply(StatusCode::OK, &json!(list))
            }
            Err(e) => failed(e),
        },
        (&Method::POST, ["dead", _, "retry"], Some(id)) => match queue.retry_dead(id).await {
            Ok(true) => reply(StatusCode::OK, "text/plain", "queued again\n".into()),
            Ok(false) => not_found(),
            Err(e) => failed(e),
        },
        (&Method::DELETE, ["dead", _], Some(id)) => match queue.delete_dead(id).await {
            Ok(true) => reply(StatusCode::OK, "text/plain", "deleted\n".into()),
            Ok(false) => not_found(),
            Err(e) => failed(e),
        },
        _ => not_found(),
    }
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string().into())
}
