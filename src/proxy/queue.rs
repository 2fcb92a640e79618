//! QUEUE: a queued route stores the request as a job and answers `202 Accepted` with the
//! job's status URL, once the job is durably stored; its status route answers for the
//! route's jobs (status, result, a stream of status changes). Delivery is the dispatchers'
//! (`proxy::deliver`, `runtime::dispatch`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use super::access::{identify_upstream, strip_query_param};
use super::body::ProxyBody;
use super::error::ProxyError;
use super::headers::is_hop_by_hop;
use super::request::Arrival;
use super::route::Routed;
use super::validate::read_whole;
use super::{ConnInfo, Stop};
use crate::auth::gate::Authenticated;
use crate::cache::date::rfc3339_ms_bytes;
use crate::message::websocket::{self, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};
use crate::queue::{
    Enqueued, Field, Idempotency, Job, JobId, NewJob, Queue, QueueError, StoredRequest,
};
use crate::serve::h1::upgrade::OnUpgrade;
use crate::serve::DownstreamBody;
use crate::snapshot::{QueueRoute, Snapshot};
use crate::tunnel::frames::{self, Frames};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The field that names a job on its delivery and on its result.
pub(crate) const X_JOB_ID: HeaderName = HeaderName::from_static("x-job-id");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const CALLBACK_URL: HeaderName = HeaderName::from_static("callback-url");
/// Longest `Idempotency-Key` kept.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// An event stream sends a comment this often, so that idle connections stay open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Fields not stored with a job: they describe the client's connection, not the request.
fn stored_field(name: &HeaderName) -> bool {
    !is_hop_by_hop(name)
        && !matches!(
            *name,
            header::TRAILER | header::EXPECT | header::CONTENT_LENGTH
        )
}

/// Stores the request of a queued route as a job: `202` with `Location` and the job as
/// JSON; the job named by an `Idempotency-Key` already given with the same request; `422`
/// for the key given with another request; `503` when the queue is full or cannot store.
#[allow(clippy::too_many_arguments)]
pub(super) async fn accept(
    snap: &Snapshot,
    conn: &ConnInfo,
    routed: &Routed<'_>,
    q: &QueueRoute,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
) -> Stop {
    let queue = &q.queue;
    let body = match validated {
        Some(b) => b,
        None => {
            let limit = max_body
                .unwrap_or(queue.settings.max_bytes)
                .min(queue.settings.max_bytes);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            match read_whole(req.body_mut(), limit).await {
                Ok(b) => b,
                Err(e) => return Stop::Fail(e),
            }
        }
    };
    let callback = match callback_url(req, queue) {
        Ok(c) => c,
        Err(e) => return Stop::Fail(e),
    };
    let owner = caller.and_then(|a| a.identity.name()).map(str::to_owned);
    let idempotency = match idempotency(req, &body, owner.as_deref(), queue) {
        Ok(i) => i,
        Err(e) => return Stop::Fail(e),
    };
    let mut headers = req.headers().clone();
    let hidden = identify_upstream(
        &mut headers,
        &routed.route.reserved_headers,
        snap.auth.consumer_header.as_ref(),
        caller,
    );
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = match &hidden {
        Some(param) => strip_query_param(target, param),
        None => target.to_owned(),
    };
    headers.insert(crate::message::X_REQUEST_ID, arrival.request_id.clone());
    let request = StoredRequest {
        method: req.method().as_str().to_owned(),
        uri,
        headers: headers
            .iter()
            .filter(|(n, _)| stored_field(n))
            .map(|(n, v)| Field {
                name: n.as_str().to_owned(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        body: body.to_vec(),
        peer: conn.peer.to_string(),
        listener: conn.listener as u32,
        tls: conn.tls,
        request_id: arrival.request_id.to_str().unwrap_or("").to_owned(),
    };
    let new = NewJob {
        request,
        owner,
        route: routed.route.name.to_string(),
        status_path: q.status_path.to_string(),
        callback,
        idempotency,
    };
    let name = || Arc::from(queue.settings.name.as_str());
    let (id, job, replayed) = match queue.enqueue(new).await {
        Ok(Enqueued::New(id, job)) => (id, job, false),
        Ok(Enqueued::Existing(id, job)) => (id, job, true),
        Ok(Enqueued::Conflict) => return Stop::Fail(ProxyError::IdempotencyConflict),
        Err(QueueError::Full) => return Stop::Fail(ProxyError::QueueFull(name())),
        Err(QueueError::Store(e)) => {
            tracing::error!(queue = %queue.settings.name, "cannot store a job: {e}");
            return Stop::Fail(ProxyError::QueueUnavailable(name()));
        }
    };
    let mut resp = json_text_response(StatusCode::ACCEPTED, status_text(id, &job));
    let url = status_url(&q.status_path, id);
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&id.hex()) {
        resp.headers_mut().insert(X_JOB_ID, v);
    }
    if replayed {
        resp.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    resp.headers_mut()
        .insert(crate::message::X_REQUEST_ID, arrival.request_id.clone());
    Stop::respond(resp)
}

/// Where the job's result goes: the client's `Callback-Url` when the queue's allow list
/// admits it (400 otherwise: never an open relay), else the queue's own callback URL.
fn callback_url(
    req: &Request<DownstreamBody>,
    queue: &Queue,
) -> Result<Option<String>, ProxyError> {
    let settings = queue.settings.callback.as_ref();
    let Some(given) = req.headers().get(CALLBACK_URL) else {
        return Ok(settings.and_then(|c| c.url.clone()));
    };
    let url = given.to_str().unwrap_or("").trim();
    match settings {
        Some(c) if crate::queue::callback::allowed(c, url) => Ok(Some(url.to_owned())),
        _ => Err(ProxyError::BadRequest(
            "Callback-Url is not allowed on this route",
        )),
    }
}

/// The request's `Idempotency-Key`, scoped to its owner, with a digest of the request.
fn idempotency(
    req: &Request<DownstreamBody>,
    body: &[u8],
    owner: Option<&str>,
    queue: &Queue,
) -> Result<Option<Idempotency>, ProxyError> {
    let Some(key) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .ok()
        .map(|k| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or(ProxyError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible characters",
        ))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(req.method().as_str().as_bytes());
    ctx.update(b" ");
    ctx.update(
        req.uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    ctx.update(b"\n");
    ctx.update(body);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(ctx.finish().as_ref());
    Ok(Some(Idempotency {
        key: format!("{}\n{key}", owner.unwrap_or("")),
        fingerprint,
        ttl: queue.settings.idempotency_ttl,
    }))
}

/// What the status route was asked for.
enum Asked {
    Status,
    Result,
    Events,
}

/// The status route of a queued route: `STATUS_PATH/ID` (the job as JSON, or `303` to its
/// result once finished), `…/ID/result` (the upstream's stored response) and `…/ID/events`
/// (server-sent events, one per status change). A job of another owner is not found.
pub(super) async fn status(
    q: &QueueRoute,
    req: &mut Request<DownstreamBody>,
    arrival: &Arrival,
    caller: Option<&Authenticated>,
) -> Stop {
    let rest = req
        .uri()
        .path()
        .strip_prefix(&*q.status_path)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or("");
    let (id, asked) = match rest.split_once('/') {
        None => (rest, Asked::Status),
        Some((id, "result")) => (id, Asked::Result),
        Some((id, "events")) => (id, Asked::Events),
        Some(_) => return Stop::Fail(ProxyError::JobNotFound),
    };
    let Some(id) = JobId::parse(id) else {
        return Stop::Fail(ProxyError::JobNotFound);
    };
    let job = match q.queue.job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Stop::Fail(ProxyError::JobNotFound),
        Err(e) => {
            tracing::error!(queue = %q.queue.settings.name, "cannot read a job: {e}");
            let name = Arc::from(q.queue.settings.name.as_str());
            return Stop::Fail(ProxyError::QueueUnavailable(name));
        }
    };
    // Only the consumer that created a job sees it; to anyone else it does not exist.
    let owned = match &job.owner {
        Some(owner) => caller.and_then(|a| a.identity.name()) == Some(owner.as_str()),
        None => true,
    };
    if job.status_path != *q.status_path || !owned {
        return Stop::Fail(ProxyError::JobNotFound);
    }
    let mut resp = match asked {
        Asked::Status => {
            let mut resp = json_text_response(StatusCode::OK, status_text(id, &job));
            if job.result_status.is_some() && job.status.is_final() {
                *resp.status_mut() = StatusCode::SEE_OTHER;
                let url = format!("{}/result", status_url(&q.status_path, id));
                if let Ok(v) = HeaderValue::from_str(&url) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
            }
            resp
        }
        Asked::Result => match q.queue.result(id).await {
            Ok(Some(stored)) if job.status.is_final() => result_response(stored),
            Ok(_) => return Stop::Fail(ProxyError::JobNotFinished),
            Err(e) => {
                tracing::error!(queue = %q.queue.settings.name, "cannot read a result: {e}");
                let name = Arc::from(q.queue.settings.name.as_str());
                return Stop::Fail(ProxyError::QueueUnavailable(name));
            }
        },
        Asked::Events => match websocket_handshake(req) {
            Some((on, key)) => events_websocket(q.queue.clone(), id, job, on, &key, req.version()),
            None => events(q.queue.clone(), id, job),
        },
    };
    if let Ok(v) = HeaderValue::from_bytes(&id.hex()) {
        resp.headers_mut().insert(X_JOB_ID, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(crate::message::X_REQUEST_ID, arrival.request_id.clone());
    Stop::respond(resp)
}

fn status_url(status_path: &str, id: JobId) -> String {
    let mut url = String::with_capacity(status_path.len() + 33);
    url.push_str(status_path);
    url.push('/');
    url.push_str(std::str::from_utf8(&id.hex()).unwrap_or_default());
    url
}

/// A job as status pages and events show it.
pub(crate) fn status_json(id: JobId, job: &Job) -> serde_json::Value {
    serde_json::from_str(&status_text(id, job)).unwrap_or_default()
}

/// [`status_json`] as text, written directly (the 202 of every accepted job carries it):
/// the same members in the same (sorted) order.
pub(crate) fn status_text(id: JobId, job: &Job) -> String {
    let hex = id.hex();
    let hex = std::str::from_utf8(&hex).unwrap_or_default();
    let mut numbers = itoa::Buffer::new();
    let mut out = String::with_capacity(320);
    out.push_str("{\"attempts\":");
    out.push_str(numbers.format(job.attempts));
    push_time(&mut out, ",\"created_at\":", job.created_ms);
    if job.dead {
        out.push_str(",\"dead_letter\":true");
    }
    if let Some(e) = &job.error {
        out.push_str(",\"error\":");
        push_json_str(&mut out, e);
    }
    out.push_str(",\"id\":\"");
    out.push_str(hex);
    out.push('"');
    if job.status == crate::queue::Status::Pending && job.attempts > 0 {
        push_time(&mut out, ",\"next_attempt_at\":", job.next_ms);
    }
    let url = |out: &mut String, tail: &str| {
        let mut full = String::with_capacity(job.status_path.len() + 40);
        full.push_str(&job.status_path);
        full.push('/');
        full.push_str(hex);
        full.push_str(tail);
        push_json_str(out, &full);
    };
    if let Some(status) = job.result_status {
        out.push_str(",\"result_status\":");
        out.push_str(numbers.format(status));
        out.push_str(",\"result_url\":");
        url(&mut out, "/result");
    }
    out.push_str(",\"status\":\"");
    out.push_str(job.status.as_str());
    out.push_str("\",\"status_url\":");
    url(&mut out, "");
    push_time(&mut out, ",\"updated_at\":", job.updated_ms);
    out.push('}');
    out
}

/// `member` (`,"name":`) and the time as an RFC 3339 string.
fn push_time(out: &mut String, member: &str, ms: u64) {
    out.push_str(member);
    out.push('"');
    out.push_str(std::str::from_utf8(&rfc3339_ms_bytes(ms)).unwrap_or_default());
    out.push('"');
}

/// `v` as a JSON string.
fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                out.push(char::from(HEX[(u32::from(c) >> 4) as usize]));
                out.push(char::from(HEX[(u32::from(c) & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(super) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    json_text_response(status, v.to_string())
}

fn json_text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The upstream's response as it was stored.
fn result_response(stored: crate::queue::StoredResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(stored.body)));
    *resp.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for f in stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(&f.value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    if stored.truncated {
        resp.headers_mut().insert(
            HeaderName::from_static("x-job-result-truncated"),
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// The job's next state that differs from `last`, as status changes come (or from the
/// store, when changes were missed); `None` when the feed ends.
async fn next_change(
    changes: &mut tokio::sync::broadcast::Receiver<crate::queue::Event>,
    queue: &Queue,
    id: JobId,
    last: &Job,
) -> Option<Job> {
    loop {
        let job = match changes.recv().await {
            Ok(e) if e.id == id => e.job,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                queue.job(id).await.ok().flatten()?
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        if job != *last {
            return Some(job);
        }
    }
}

/// Server-sent events: the job now, then each change of its status, until it is final.
fn events(queue: Arc<Queue>, id: JobId, job: Job) -> Response<ProxyBody> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut changes = queue.subscribe();
    tokio::spawn(async move {
        let mut last = job;
        if tx.send(event(id, &last)).await.is_err() || last.status.is_final() {
            return;
        }
        loop {
            let next = tokio::select! {
                next = next_change(&mut changes, &queue, id, &last) => next,
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
            };
            let Some(job) = next else { return };
            last = job;
            if tx.send(event(id, &last)).await.is_err() || last.status.is_final() {
                return;
            }
        }
    });
    let mut resp = Response::new(ProxyBody::stream(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// The upgrade handle and key of a WebSocket handshake (HTTP/1.1, or an HTTP/2 extended
/// CONNECT made into one).
fn websocket_handshake(req: &mut Request<DownstreamBody>) -> Option<(OnUpgrade, HeaderValue)> {
    let asks = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get(SEC_WEBSOCKET_KEY)?.clone();
    if !asks {
        return None;
    }
    Some((crate::serve::h1::upgrade::on(req)?, key))
}

/// The event stream as a WebSocket: a text message with the job now and at each change,
/// then a close (1000) once it is final. Pings keep idle paths open; the client's close or
/// departure ends it.
fn events_websocket(
    queue: Arc<Queue>,
    id: JobId,
    job: Job,
    on: OnUpgrade,
    key: &HeaderValue,
    version: http::Version,
) -> Response<ProxyBody> {
    let mut changes = queue.subscribe();
    tokio::spawn(async move {
        let Some(up) = on.upgraded().await else {
            return;
        };
        let mut io = up.io;
        let mut from_client = Frames::default();
        from_client.walk(&up.read, false, None, false);
        let mut last = job;
        let mut buf = [0u8; 512];
        let mut send = frames::text(status_text(id, &last).as_bytes());
        while !last.status.is_final() && !from_client.closing {
            if io.write_all(&send).await.is_err() {
                return;
            }
            let next = tokio::select! {
                next = next_change(&mut changes, &queue, id, &last) => next,
                read = io.read(&mut buf) => match read {
                    Ok(n) if n > 0 => {
                        from_client.walk(&buf[..n], false, None, false);
                        send = Vec::new();
                        continue;
                    }
                    _ => return,
                },
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    send = frames::Own::ping(false).as_bytes().to_vec();
                    continue;
                }
            };
            let Some(job) = next else { return };
            last = job;
            send = frames::text(status_text(id, &last).as_bytes());
        }
        if !from_client.closing {
            send.extend_from_slice(frames::Own::close(1000, "job finished", false).as_bytes());
        } else {
            send = frames::Own::close(1000, "", false).as_bytes().to_vec();
        }
        let _ = io.write_all(&send).await;
        let _ = io.flush().await;
        // The client answers with its close and leaves; the gateway does not wait long.
        let _ = tokio::time::timeout(Duration::from_secs(2), io.read(&mut buf)).await;
        let _ = io.shutdown().await;
    });
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, websocket::accept(key.as_bytes()));
    if version == http::Version::HTTP_2 {
        // RFC 8441: the extended CONNECT is answered with 200.
        crate::serve::h2connect::answer(&mut resp);
    }
    resp
}

fn event(id: JobId, job: &Job) -> Bytes {
    Bytes::from(format!("event: status\ndata: {}\n\n", status_text(id, job)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::queue::Status;
    use serde_json::json;

    fn job() -> Job {
        Job {
            status: Status::Pending,
            attempts: 2,
            created_ms: 1_796_630_462_345,
            updated_ms: 1_796_630_463_000,
            next_ms: 1_796_630_470_001,
            owner: None,
            route: "jobs".into(),
            status_path: "/jobs/\"status\"".into(),
            dead: true,
            error: Some("the upstream said \"no\"\n\\\u{1}é".into()),
            result_status: Some(503),
            size: 10,
            callback: None,
        }
    }

    #[test]
    fn the_status_document_is_json_with_every_member_escaped() {
        let id = JobId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = status_text(id, &job());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let url = "/jobs/\"status\"/0123456789abcdef0011223344556677";
        assert_eq!(
            v,
            json!({
                "attempts": 2,
                "created_at": "2026-12-07T08:01:02.345Z",
                "dead_letter": true,
                "error": "the upstream said \"no\"\n\\\u{1}é",
                "id": "0123456789abcdef0011223344556677",
                "next_attempt_at": "2026-12-07T08:01:10.001Z",
                "result_status": 503,
                "result_url": format!("{url}/result"),
                "status": "pending",
                "status_url": url,
                "updated_at": "2026-12-07T08:01:03.000Z",
            })
        );
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
    }

    #[test]
    fn a_new_job_shows_no_optional_member() {
        let mut j = job();
        (j.attempts, j.dead, j.error, j.result_status) = (0, false, None, None);
        j.status_path = "/jobs".into();
        let v: serde_json::Value = serde_json::from_str(&status_text(JobId(1), &j)).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "attempts",
                "created_at",
                "id",
                "status",
                "status_url",
                "updated_at"
            ]
        );
        assert_eq!(v["status_url"], "/jobs/00000000000000000000000000000001");
    }
}
