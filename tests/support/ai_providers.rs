//! Model providers on 127.0.0.1 that speak their protocols as the real ones do: OpenAI's
//! chat completions and embeddings (JSON, and SSE streams of `chat.completion.chunk` with
//! `data: [DONE]` and a usage chunk when asked), Azure's deployment URLs, Anthropic's
//! Messages API (JSON, and its named SSE events, tool use, `error` events); errors in each
//! provider's shape, 429 with `retry-after`, streams that fail before or after their first
//! token, and a stream whose every event waits until the test lets it go. Each records
//! what it received (path and query, fields, JSON body) so tests check translation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{full, Backend, BoxBody};

/// How a provider answers.
#[derive(Clone)]
pub enum Script {
    /// OpenAI: "Hello there!" in three chunks when streamed; usage 11 in, 3 out.
    OpenAi,
    /// OpenAI-compatible without any `usage` field (so the gateway estimates).
    OpenAiNoUsage,
    /// Anthropic Messages: text, or a `tool_use` block when the request has tools; usage
    /// 21 in, 6 out.
    Anthropic,
    /// An error answer in the provider's shape (`anthropic` picks Anthropic's shape).
    Fail {
        status: u16,
        retry_after: Option<u64>,
        anthropic: bool,
    },
    /// Takes the request and never answers.
    Hang,
    /// 200 with an event stream that ends before any event.
    StreamEndsEarly,
    /// OpenAI stream: one content chunk, then the connection breaks.
    StreamBreaksAfterFirst,
    /// Anthropic stream: message_start, one text delta, then an `overloaded_error` event.
    AnthropicErrorAfterFirst,
    /// OpenAI stream whose every chunk waits for a go from the test.
    Gated(Arc<tokio::sync::Mutex<mpsc::Receiver<()>>>),
}

/// What a provider received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Provider {
    pub backend: Backend,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Provider {
    pub async fn start(script: Script) -> Provider {
        let received = Arc::new(Mutex::new(Vec::new()));
        let r2 = received.clone();
        let backend = Backend::start(false, move |req: Request<Incoming>| {
            let (script, received) = (script.clone(), r2.clone());
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                received.lock().unwrap().push(Received {
                    path_and_query: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body: body.clone(),
                });
                answer(script, body).await
            }
        })
        .await;
        Provider { backend, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.backend.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A provider whose stream the test releases chunk by chunk: send `()` for each chunk.
pub async fn gated() -> (Provider, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel(16);
    let p = Provider::start(Script::Gated(Arc::new(tokio::sync::Mutex::new(rx)))).await;
    (p, tx)
}

fn json_answer(status: StatusCode, v: &Value) -> Response<BoxBody> {
    let mut r = Response::new(full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A streamed answer fed through the returned sender; an `Err` breaks the connection.
fn event_stream() -> (
    mpsc::Sender<Result<Bytes, std::io::Error>>,
    Response<BoxBody>,
) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let body = StreamBody::new(stream).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    (tx, r)
}

fn chunk(content: Option<&str>, finish: Option<&str>) -> String {
    let delta = match content {
        Some(c) => json!({"content": c}),
        None => json!({"role": "assistant", "content": ""}),
    };
    let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "tiny", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

const WORDS: [&str; 3] = ["Hello", " there", "!"];

async fn answer(script: Script, req: Value) -> Response<BoxBody> {
    let stream = req["stream"] == json!(true);
    let include_usage = req.pointer("/stream_options/include_usage") == Some(&json!(true));
    match script {
        Script::OpenAi | Script::OpenAiNoUsage => {
            let usage = matches!(script, Script::OpenAi);
            if req.get("input").is_some() {
                let mut v = json!({"object": "list", "model": req["model"],
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]});
                if usage {
                    v["usage"] = json!({"prompt_tokens": 4, "total_tokens": 4});
                }
                return json_answer(StatusCode::OK, &v);
            }
            if !stream {
                let mut v = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                    "model": req["model"], "choices": [{"index": 0,
                    "message": {"role": "assistant", "content": WORDS.concat()},
                    "finish_reason": "stop"}]});
                if usage {
                    v["usage"] =
                        json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14});
                }
                return json_answer(StatusCode::OK, &v);
            }
            let (tx, resp) = event_stream();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from(chunk(None, None)))).await;
                for w in WORDS {
                    let _ = tx.send(Ok(Bytes::from(chunk(Some(w), None)))).await;
                }
                let _ = tx
                    .send(Ok(Bytes::from(chunk(Some(""), Some("stop")))))
                    .await;
                if usage && include_usage {
                    let u = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                        "model": "tiny", "choices": [],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}});
                    let _ = tx.send(Ok(Bytes::from(format!("data: {u}\n\n")))).await;
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            resp
        }
        Script::Anthropic => anthropic(req, stream, false),
        Script::AnthropicErrorAfterFirst => anthropic(req, true, true),
        Script::Fail {
            status,
            retry_after,
            anthropic,
        } => {
            let status = StatusCode::from_u16(status).unwrap();
            let v = match anthropic {
                true => {
                    let kind = match status.as_u16() {
                        429 => "rate_limit_error",
                        529 => "overloaded_error",
                        400 => "invalid_request_error",
                        _ => "api_error",
                    };
                    json!({"type": "error", "error": {"type": kind, "message": "provider says no"}})
                }
                false => {
                    json!({"error": {"message": "provider says no", "type": "requests", "code": "rate_limit_exceeded"}})
                }
            };
            let mut r = json_answer(status, &v);
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", s.into());
            }
            r
        }
        Script::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json_answer(StatusCode::OK, &json!({}))
        }
        Script::StreamEndsEarly => {
            let (tx, resp) = event_stream();
            drop(tx);
            resp
        }
        Script::StreamBreaksAfterFirst => {
            let (tx, resp) = event_stream();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from(chunk(Some("Hel"), None)))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("broken"))).await;
            });
            resp
        }
        Script::Gated(go) => {
            let (tx, resp) = event_stream();
            tokio::spawn(async move {
                let mut go = go.lock().await;
                for (i, w) in WORDS.iter().enumerate() {
                    if i > 0 && go.recv().await.is_none() {
                        return;
                    }
                    let _ = tx.send(Ok(Bytes::from(chunk(Some(w), None)))).await;
                }
                let _ = go.recv().await;
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            resp
        }
    }
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn anthropic(req: Value, stream: bool, fail: bool) -> Response<BoxBody> {
    let tools = req.get("tools").is_some();
    let usage_in = 21;
    if !stream {
        let content = match tools {
            true => json!([{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]),
            false => json!([{"type": "text", "text": WORDS.concat()}]),
        };
        let v = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": req["model"],
            "content": content, "stop_reason": if tools { "tool_use" } else { "end_turn" },
            "stop_sequence": null, "usage": {"input_tokens": usage_in, "output_tokens": 6}});
        return json_answer(StatusCode::OK, &v);
    }
    let (tx, resp) = event_stream();
    tokio::spawn(async move {
        let mut events = vec![
            sse(
                "message_start",
                &json!({"type": "message_start", "message": {"id": "msg_1",
                "type": "message", "role": "assistant", "model": req["model"], "content": [],
                "stop_reason": null, "usage": {"input_tokens": usage_in, "output_tokens": 1}}}),
            ),
            sse("ping", &json!({"type": "ping"})),
        ];
        if fail {
            events.push(sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"}}),
            ));
            events.push(sse(
                "error",
                &json!({"type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
        } else if tools {
            events.push(sse("content_block_start", &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})));
            for part in ["{\"city\":", " \"Paris\"}"] {
                events.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
            events.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ));
        } else {
            events.push(sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for w in WORDS {
                events.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}}),
                ));
            }
            events.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ));
        }
        if !fail {
            let stop = if tools { "tool_use" } else { "end_turn" };
            events.push(sse("message_delta", &json!({"type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 6}})));
            events.push(sse("message_stop", &json!({"type": "message_stop"})));
        }
        for e in events {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    });
    resp
}
