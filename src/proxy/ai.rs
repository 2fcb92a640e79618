//! AI: an `ai` route answers the OpenAI-compatible API (`/chat/completions`, `/embeddings`,
//! `/models`) or its prompt endpoint from its model providers, after the route's auth, ACLs,
//! body limit and rate limits have passed. The request is checked before any provider sees
//! it; errors take the OpenAI error shape. A stream is relayed event by event.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::body::ProxyBody;
use super::log::Completion;
use super::request::Arrival;
use super::route::Routed;
use super::validate::read_whole;
use super::Stop;
use crate::ai::budget::Charges;
use crate::ai::exchange::{Caller, SharedTally};
use crate::ai::front::{self, Checked, Endpoint};
use crate::ai::{Answer, ApiError, Service, Tally};
use crate::auth::gate::Authenticated;
use crate::ratelimit::key::KeyContext;
use crate::serve::DownstreamBody;
use crate::snapshot::Snapshot;

/// Bodies larger than this are refused (413) on a route without its own limit.
const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// What the exchange needs of the request beyond its body.
pub(super) struct Asked<'a> {
    pub snap: &'a Snapshot,
    pub routed: &'a Routed<'a>,
    pub arrival: &'a Arrival,
    pub caller: Option<&'a Authenticated>,
    pub validated: Option<Bytes>,
    pub max_body: Option<u64>,
}

pub(super) async fn answer(
    svc: &Service,
    req: &mut Request<DownstreamBody>,
    asked: Asked<'_>,
    done: &mut Completion,
) -> Stop {
    let tally = Arc::new(Mutex::new(Tally::default()));
    if let Some(log) = done.log_mut() {
        log.ai = Some(tally.clone());
    }
    let result = match &svc.ai.prompt {
        Some(_) => prompt(svc, req, asked, &tally).await,
        None => api(svc, req, asked, &tally).await,
    };
    match result {
        Ok(resp) => Stop::respond(resp),
        Err((e, fields)) => {
            let mut resp = error_response(&e);
            resp.headers_mut().extend(fields);
            Stop::respond(resp)
        }
    }
}

type Failed = (ApiError, HeaderMap);

fn plain(e: ApiError) -> Failed {
    (e, HeaderMap::new())
}

/// The route's budgets admit the request (or refuse it) against its estimate.
async fn admit(
    svc: &Service,
    req: &Request<DownstreamBody>,
    asked: &Asked<'_>,
    checked: &Checked,
) -> Result<Charges, Failed> {
    if svc.budgets.is_empty() {
        return Ok(Charges::default());
    }
    let ctx = KeyContext {
        client_ip: asked.arrival.client_ip,
        route: &asked.routed.route.name,
        path: req.uri().path(),
        headers: req.headers(),
        consumer: asked.caller.and_then(|a| a.identity.name()),
        consumer_header: asked.snap.config.rate_limiting.consumer_header.as_ref(),
        geo: asked.routed.geo.as_ref(),
        metadata: asked
            .caller
            .and_then(|a| a.identity.consumer.as_deref())
            .map(|c| &c.metadata),
    };
    crate::ai::budget::admit(&svc.budgets, &svc.ai, &ctx, checked).await
}

/// Admits `checked` under the budgets and runs the exchange; the budget fields go on the
/// answer, whatever it is.
async fn run(
    svc: &Service,
    req: &Request<DownstreamBody>,
    asked: &Asked<'_>,
    checked: &Checked,
    endpoint: Endpoint,
    tally: &SharedTally,
) -> Result<(Answer, HeaderMap), Failed> {
    let charges = admit(svc, req, asked, checked).await?;
    let mut fields = HeaderMap::new();
    charges.write_fields(&mut fields);
    let caller = Caller {
        consumer: asked.caller.and_then(|a| a.identity.name()),
    };
    match svc
        .exchange(endpoint, checked, caller, tally, charges)
        .await
    {
        Ok(answer) => Ok((answer, fields)),
        Err(e) => Err((e, fields)),
    }
}

/// The OpenAI-compatible API.
async fn api(
    svc: &Service,
    req: &mut Request<DownstreamBody>,
    mut asked: Asked<'_>,
    tally: &SharedTally,
) -> Result<Response<ProxyBody>, Failed> {
    let consumer = asked.caller.and_then(|a| a.identity.name());
    let endpoint = Endpoint::of(req.method(), req.uri().path()).map_err(plain)?;
    if endpoint == Endpoint::Models {
        let list = front::models(&svc.ai, consumer);
        return Ok(json_response(StatusCode::OK, &list));
    }
    let read = body(req, asked.validated.take(), asked.max_body).await;
    let bytes = read.map_err(plain)?;
    let checked = front::check(&svc.ai, endpoint, &bytes, consumer).map_err(plain)?;
    let key = match (&svc.cache, checked.stream) {
        (Some(c), false) => Some(c.key(&checked.body, consumer)),
        _ => None,
    };
    if let (Some(c), Some(k)) = (&svc.cache, &key) {
        if let Some(hit) = c.get(k) {
            if let Ok(mut t) = tally.lock() {
                t.alias.clone_from(&checked.alias);
                t.cache_hit = Some(true);
            }
            let mut resp = json_bytes(StatusCode::OK, hit);
            resp.headers_mut()
                .insert("cache-status", HeaderValue::from_static("ferrogate; hit"));
            return Ok(resp);
        }
    }
    let (answer, fields) = run(svc, req, &asked, &checked, endpoint, tally).await?;
    let mut resp = response(answer);
    resp.headers_mut().extend(fields);
    if let (Some(c), Some(k)) = (&svc.cache, key) {
        if let Some(b) = resp.body_mut().full_bytes_mut() {
            c.put(k, b.clone());
        }
        if let Ok(mut t) = tally.lock() {
            t.cache_hit = Some(false);
        }
        resp.headers_mut().insert(
            "cache-status",
            HeaderValue::from_static("ferrogate; fwd=miss; stored"),
        );
    }
    Ok(resp)
}

/// A prompt endpoint: the body's fields fill the template, the alias answers, and the
/// model's text comes back in the configured field.
async fn prompt(
    svc: &Service,
    req: &mut Request<DownstreamBody>,
    mut asked: Asked<'_>,
    tally: &SharedTally,
) -> Result<Response<ProxyBody>, Failed> {
    let Some(p) = &svc.ai.prompt else {
        return Err(plain(ApiError::invalid("not a prompt endpoint")));
    };
    if req.method() != http::Method::POST {
        let kind = "invalid_request_error";
        let e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, kind, "use POST");
        return Err(plain(e));
    }
    let read = body(req, asked.validated.take(), asked.max_body).await;
    let bytes = read.map_err(plain)?;
    let input: Value = serde_json::from_slice(&bytes)
        .map_err(|e| plain(ApiError::invalid(format!("the body is not JSON: {e}"))))?;
    let text = crate::ai::template::fill(&p.template, &input)
        .map_err(|f| plain(ApiError::invalid(format!("the body has no field {f:?}"))))?;
    let mut messages = Vec::new();
    if let Some(s) = &p.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": text}));
    let chat = json!({"model": p.model, "messages": messages});
    let chat = Bytes::from(chat.to_string());
    let checked = front::check(&svc.ai, Endpoint::Chat, &chat, None).map_err(plain)?;
    let (answer, fields) = run(svc, req, &asked, &checked, Endpoint::Chat, tally).await?;
    let Answer::Full { body, .. } = answer else {
        let e = ApiError::upstream(StatusCode::BAD_GATEWAY, "unexpected stream");
        return Err(plain(e));
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = serde_json::Map::new();
    out.insert(p.output.clone(), json!(content));
    let mut resp = json_response(StatusCode::OK, &Value::Object(out));
    resp.headers_mut().extend(fields);
    Ok(resp)
}

/// The request body, read under the route's limit (or the bytes `validate` read).
async fn body(
    req: &mut Request<DownstreamBody>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
) -> Result<Bytes, ApiError> {
    if let Some(b) = validated {
        return Ok(b);
    }
    let limit = usize::try_from(max_body.unwrap_or(DEFAULT_MAX_BODY)).unwrap_or(usize::MAX);
    read_whole(req.body_mut(), limit).await.map_err(|e| {
        let status = e.status();
        let kind = crate::ai::error::kind_of(status);
        ApiError::new(status, kind, e.to_string())
    })
}

fn response(answer: Answer) -> Response<ProxyBody> {
    match answer {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(ProxyBody::full(body));
            *resp.status_mut() = status;
            resp.headers_mut().extend(headers);
            resp
        }
        Answer::Stream { rest } => {
            let mut resp = Response::new(ProxyBody::stream(rest));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    }
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_response(status: StatusCode, v: &Value) -> Response<ProxyBody> {
    json_bytes(status, Bytes::from(v.to_string()))
}

/// An error in the OpenAI shape, with `Retry-After` when the provider gave one.
fn error_response(e: &ApiError) -> Response<ProxyBody> {
    let mut resp = json_bytes(e.status, e.body());
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}
