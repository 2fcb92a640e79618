//! AI: an `ai` route answers the OpenAI-compatible API (`/chat/completions`, `/embeddings`,
//! `/models`) or its prompt endpoint from its model providers, after the route's auth, ACLs,
//! body limit and rate limits have passed. The request is checked before any provider sees
//! it; errors take the OpenAI error shape. A stream is relayed event by event.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::body::ProxyBody;
use super::log::Completion;
use super::validate::read_whole;
use super::Stop;
use crate::ai::front::{self, Checked, Endpoint};
use crate::ai::{exchange::Caller, Answer, ApiError, Service, Tally};
use crate::auth::gate::Authenticated;
use crate::serve::DownstreamBody;

/// Bodies larger than this are refused (413) on a route without its own limit.
const DEFAULT_MAX_BODY: u64 = 1 << 20;

pub(super) async fn answer(
    svc: &Service,
    req: &mut Request<DownstreamBody>,
    caller: Option<&Authenticated>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
    done: &mut Completion,
) -> Stop {
    let consumer = caller.and_then(|a| a.identity.name());
    let tally = Arc::new(Mutex::new(Tally::default()));
    if let Some(log) = done.log_mut() {
        log.ai = Some(tally.clone());
    }
    let result = match &svc.ai.prompt {
        Some(_) => prompt(svc, req, consumer, validated, max_body, &tally).await,
        None => api(svc, req, consumer, validated, max_body, &tally).await,
    };
    match result {
        Ok(resp) => Stop::respond(resp),
        Err(e) => Stop::respond(error_response(&e)),
    }
}

/// The OpenAI-compatible API.
async fn api(
    svc: &Service,
    req: &mut Request<DownstreamBody>,
    consumer: Option<&str>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
    tally: &crate::ai::exchange::SharedTally,
) -> Result<Response<ProxyBody>, ApiError> {
    let endpoint = Endpoint::of(req.method(), req.uri().path())?;
    if endpoint == Endpoint::Models {
        return Ok(json_response(
            StatusCode::OK,
            &front::models(&svc.ai, consumer),
        ));
    }
    let bytes = body(req, validated, max_body).await?;
    let checked = front::check(&svc.ai, endpoint, &bytes, consumer)?;
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
    let answer = svc
        .exchange(endpoint, &checked, Caller { consumer }, tally)
        .await?;
    let mut resp = response(answer, tally);
    if let (Some(c), Some(k)) = (&svc.cache, key) {
        if let Some(b) = resp.body_mut().full_bytes_mut() {
            c.put(k, b.clone());
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
    consumer: Option<&str>,
    validated: Option<Bytes>,
    max_body: Option<u64>,
    tally: &crate::ai::exchange::SharedTally,
) -> Result<Response<ProxyBody>, ApiError> {
    let Some(p) = &svc.ai.prompt else {
        return Err(ApiError::invalid("not a prompt endpoint"));
    };
    if req.method() != http::Method::POST {
        let e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "use POST",
        );
        return Err(e);
    }
    let bytes = body(req, validated, max_body).await?;
    let input: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let text = crate::ai::template::fill(&p.template, &input)
        .map_err(|f| ApiError::invalid(format!("the body has no field {f:?}")))?;
    let mut messages = Vec::new();
    if let Some(s) = &p.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": text}));
    let chat = json!({"model": p.model, "messages": messages});
    let chat = Bytes::from(chat.to_string());
    let checked: Checked = front::check(&svc.ai, Endpoint::Chat, &chat, None)?;
    let answer = svc
        .exchange(Endpoint::Chat, &checked, Caller { consumer }, tally)
        .await?;
    let Answer::Full { body, .. } = answer else {
        return Err(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "unexpected stream",
        ));
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = serde_json::Map::new();
    out.insert(p.output.clone(), json!(content));
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
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

fn response(answer: Answer, _tally: &crate::ai::exchange::SharedTally) -> Response<ProxyBody> {
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
