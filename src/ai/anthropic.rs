//! Anthropic's Messages API, translated both ways: an OpenAI chat request becomes a
//! Messages request (system messages, roles, content parts, `max_tokens`, tools and tool
//! results), and the answer, its streamed events and its errors become OpenAI's
//! `chat.completion`, `chat.completion.chunk` events and error shape.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::front::Checked;
use super::openai::{push_data, secret, Outbound};
use super::sse::Event;
use super::usage::{text_of, Usage};
use super::ApiError;
use crate::config::model::{AiProvider, AiProviderKind};

/// `max_tokens` sent when the request names none (the Messages API requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Messages request for `model`.
pub fn request(p: &AiProvider, model: &str, req: &Checked) -> Result<Outbound, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(k) = &p.key {
        headers.insert(HeaderName::from_static("x-api-key"), secret(k)?);
    }
    if let AiProviderKind::Anthropic { version } = &p.kind {
        let v = HeaderValue::from_str(version).unwrap_or(HeaderValue::from_static("2023-06-01"));
        headers.insert(HeaderName::from_static("anthropic-version"), v);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = translate_request(&req.body, model, req.stream)?;
    Ok(Outbound {
        url: format!("{}/v1/messages", p.url),
        headers,
        body: Bytes::from(body.to_string()),
    })
}

/// An OpenAI chat request as a Messages request.
pub fn translate_request(r: &Value, model: &str, stream: bool) -> Result<Value, ApiError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in r["messages"].as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or("user");
        let (role, parts) = match role {
            "system" | "developer" => {
                if let Some(t) = text_of(m.get("content")) {
                    system.push(t);
                }
                continue;
            }
            "tool" => {
                let content = text_of(m.get("content")).unwrap_or_default();
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                let part = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                ("user", vec![part])
            }
            "assistant" => {
                let mut parts = content_parts(m.get("content"))?;
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call.pointer("/function/arguments").and_then(Value::as_str);
                    let input: Value = match args {
                        Some(a) if !a.trim().is_empty() => {
                            serde_json::from_str(a).map_err(|_| {
                                ApiError::invalid("tool_calls[].function.arguments must be JSON")
                            })?
                        }
                        _ => json!({}),
                    };
                    parts.push(json!({
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": input,
                    }));
                }
                ("assistant", parts)
            }
            _ => ("user", content_parts(m.get("content"))?),
        };
        // The Messages API alternates roles: consecutive messages of one role are one.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(list) = last["content"].as_array_mut() {
                    list.extend(parts);
                }
            }
            _ => messages.push(json!({"role": role, "content": parts})),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    let max = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|k| r[*k].as_u64())
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max));
    for key in ["temperature", "top_p"] {
        if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match r.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            out.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(tools) = r["tools"].as_array() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({
                    "name": f["name"],
                    "input_schema": f.get("parameters").cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    match &r["tool_choice"] {
        Value::String(s) => {
            let kind = match s.as_str() {
                "required" => "any",
                "none" => "none",
                _ => "auto",
            };
            out.insert("tool_choice".into(), json!({"type": kind}));
        }
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name")).cloned();
            out.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
        }
        _ => {}
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// OpenAI content (a string or parts) as Messages content parts.
fn content_parts(content: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts.iter().map(part).collect(),
        Some(_) => Err(ApiError::invalid(
            "content must be a string or an array of parts",
        )),
    }
}

fn part(p: &Value) -> Result<Value, ApiError> {
    match p["type"].as_str() {
        Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
        Some("image_url") => {
            let url = p
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .unwrap_or("");
            let source = match url
                .strip_prefix("data:")
                .and_then(|d| d.split_once(";base64,"))
            {
                Some((media, data)) => {
                    json!({"type": "base64", "media_type": media, "data": data})
                }
                None => json!({"type": "url", "url": url}),
            };
            Ok(json!({"type": "image", "source": source}))
        }
        other => Err(ApiError::invalid(format!(
            "content part type {} is not supported by this model",
            other.unwrap_or("(none)")
        ))),
    }
}

/// OpenAI's `finish_reason` for a Messages `stop_reason`.
pub fn finish_reason(stop: Option<&str>) -> Value {
    match stop {
        None => Value::Null,
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        Some(_) => json!("stop"),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.total()})
}

/// A Messages answer as a `chat.completion`, with its usage.
pub fn translate_answer(a: &Value, created: u64) -> (Value, Usage) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in a["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            _ => {}
        }
    }
    let usage = Usage {
        input: a
            .pointer("/usage/input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output: a
            .pointer("/usage/output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        estimated: false,
    };
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": a["id"],
        "object": "chat.completion",
        "created": created,
        "model": a["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(a["stop_reason"].as_str()),
        }],
        "usage": usage_json(&usage),
    });
    (out, usage)
}

/// A Messages error answer in the OpenAI shape (`overloaded_error`, 529, becomes 503).
pub fn error_of(status: StatusCode, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = v
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the provider refused the request");
    let status = match status.as_u16() {
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => status,
    };
    let kind = match kind {
        "" => super::error::kind_of(status),
        k => super::openai::static_kind(k),
    };
    ApiError::new(status, kind, message)
}

/// A translated stream's state.
#[derive(Debug, Default)]
pub struct Stream {
    pub wants_usage: bool,
    pub created: u64,
    pub id: String,
    pub model: String,
    pub usage: Option<Usage>,
    /// Content block index → tool call index, for tool blocks.
    pub tools: Vec<(u64, usize)>,
    pub text_bytes: String,
    pub done: bool,
}

impl Stream {
    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// Appends the `chat.completion.chunk` events of `ev` to `out`; `Err` for an `error`
    /// event.
    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
        let kind = ev.name.as_deref().or(v["type"].as_str()).unwrap_or("");
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().unwrap_or("").to_owned();
                self.model = m["model"].as_str().unwrap_or("").to_owned();
                let input = m.pointer("/usage/input_tokens").and_then(Value::as_u64);
                self.usage = Some(Usage {
                    input: input.unwrap_or(0),
                    output: 0,
                    estimated: false,
                });
                let c = self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
                push_data(out, &c.to_string());
            }
            "content_block_start" => {
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let tool = self.tools.len();
                    let index = v["index"].as_u64().unwrap_or(0);
                    self.tools.push((index, tool));
                    let delta = json!({"tool_calls": [{
                        "index": tool, "id": b["id"], "type": "function",
                        "function": {"name": b["name"], "arguments": ""},
                    }]});
                    push_data(out, &self.chunk(delta, Value::Null).to_string());
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let t = d["text"].as_str().unwrap_or("");
                        self.text_bytes.push_str(t);
                        let c = self.chunk(json!({"content": t}), Value::Null);
                        push_data(out, &c.to_string());
                    }
                    Some("input_json_delta") => {
                        let index = v["index"].as_u64().unwrap_or(0);
                        let tool = self.tools.iter().find(|(i, _)| *i == index).map(|t| t.1);
                        let delta = json!({"tool_calls": [{
                            "index": tool.unwrap_or(0),
                            "function": {"arguments": d["partial_json"]},
                        }]});
                        push_data(out, &self.chunk(delta, Value::Null).to_string());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    let u = self.usage.get_or_insert_with(Usage::default);
                    u.output = n;
                    if let Some(i) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                        u.input = i;
                    }
                }
                let stop = v.pointer("/delta/stop_reason").and_then(Value::as_str);
                let c = self.chunk(json!({}), finish_reason(stop));
                push_data(out, &c.to_string());
            }
            "message_stop" => {
                self.done = true;
                if let (true, Some(u)) = (self.wants_usage, self.usage) {
                    let mut c = self.chunk(json!({}), Value::Null);
                    c["choices"] = json!([]);
                    c["usage"] = usage_json(&u);
                    push_data(out, &c.to_string());
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                let body = ev.data.as_bytes();
                let status = match v.pointer("/error/type").and_then(Value::as_str) {
                    Some("overloaded_error") => StatusCode::SERVICE_UNAVAILABLE,
                    Some("rate_limit_error") => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_GATEWAY,
                };
                return Err(error_of(status, body));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_tool_calls_and_results_are_translated() {
        let r = json!({
            "model": "smart",
            "max_tokens": 100,
            "stop": "END",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                  "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        });
        let m = translate_request(&r, "claude-x", false).unwrap();
        assert_eq!(m["system"], "Be brief.");
        assert_eq!(m["max_tokens"], 100);
        assert_eq!(m["stop_sequences"], json!(["END"]));
        assert_eq!(m["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(m["messages"][1]["content"][0]["input"]["city"], "Paris");
        assert_eq!(m["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(m["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(m["tool_choice"]["type"], "any");
    }

    #[test]
    fn an_answer_with_a_tool_use_becomes_tool_calls() {
        let a = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 12, "output_tokens": 7}});
        let (c, u) = translate_answer(&a, 1);
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!((u.input, u.output), (12, 7));
        assert_eq!(c["usage"]["total_tokens"], 19);
    }
}
