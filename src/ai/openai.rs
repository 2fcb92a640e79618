//! OpenAI and OpenAI-compatible servers, and Azure OpenAI: the upstream request (URL, key
//! field, the body with the provider's model), usage read from answers, and a stream relayed
//! event by event with `stream_options.include_usage` asked for so its last chunk carries
//! usage (that chunk is not shown to a client that did not ask for it).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::front::{Checked, Endpoint};
use super::sse::Event;
use super::usage::{self, Usage};
use super::ApiError;
use crate::config::model::{AiProvider, AiProviderKind, AiTokenizer};

/// An upstream request, ready to send.
#[derive(Debug)]
pub struct Outbound {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The request to an OpenAI-compatible or Azure provider for `model`.
pub fn request(
    p: &AiProvider,
    endpoint: Endpoint,
    model: &str,
    req: &Checked,
) -> Result<Outbound, ApiError> {
    let path = match endpoint {
        Endpoint::Embeddings => "embeddings",
        _ => "chat/completions",
    };
    let mut headers = HeaderMap::new();
    let url = match &p.kind {
        AiProviderKind::Azure {
            api_version,
            deployments,
        } => {
            let deployment = deployments.get(model).map_or(model, String::as_str);
            if let Some(k) = &p.key {
                headers.insert(HeaderName::from_static("api-key"), secret(k)?);
            }
            format!(
                "{}/openai/deployments/{deployment}/{path}?api-version={api_version}",
                p.url
            )
        }
        _ => {
            if let Some(k) = &p.key {
                headers.insert(http::header::AUTHORIZATION, secret(&format!("Bearer {k}"))?);
            }
            format!("{}/{path}", p.url)
        }
    };
    let mut body = req.body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), json!(model));
        if req.stream {
            let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), json!(true));
            }
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Outbound {
        url,
        headers,
        body: Bytes::from(body.to_string()),
    })
}

/// A key as a header value, marked sensitive (HTTP/2 never indexes it).
pub fn secret(text: &str) -> Result<HeaderValue, ApiError> {
    let mut v = HeaderValue::from_str(text).map_err(|_| {
        ApiError::upstream(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "the provider key is not a valid field value",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Usage of a whole (non-streamed) answer; counted from the text with `tokenizer` when it
/// has none.
pub fn usage_of(
    answer: &Value,
    req: &Checked,
    endpoint: Endpoint,
    tokenizer: AiTokenizer,
) -> Usage {
    let u = answer.get("usage");
    let field = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64);
    match (field("prompt_tokens"), field("completion_tokens")) {
        (Some(input), output) => Usage {
            input,
            output: output.unwrap_or(0),
            estimated: false,
        },
        _ => {
            let input = match endpoint {
                Endpoint::Chat => usage::count_messages(tokenizer, &req.body["messages"]),
                _ => input_text_tokens(&req.body["input"], tokenizer),
            };
            let text = answer
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .unwrap_or("");
            Usage {
                input,
                output: usage::count(tokenizer, text),
                estimated: true,
            }
        }
    }
}

fn input_text_tokens(input: &Value, tokenizer: AiTokenizer) -> u64 {
    match input {
        Value::String(s) => usage::count(tokenizer, s),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or(0, |s| usage::count(tokenizer, s)))
            .sum(),
        _ => 0,
    }
}

/// A relayed stream's state: what the events said so far.
#[derive(Debug, Default)]
pub struct Stream {
    /// The client asked for the usage chunk itself.
    pub wants_usage: bool,
    pub usage: Option<Usage>,
    /// Output text seen, counted at the end when the provider reports no usage.
    pub text_bytes: String,
    pub done: bool,
}

impl Stream {
    /// Appends what the client gets of `ev` to `out`; `Err` for an error event (relayed as
    /// it came, it ends the stream).
    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) -> Result<(), ApiError> {
        if ev.data == "[DONE]" {
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            // Not JSON: relayed untouched.
            push_data(out, &ev.data);
            return Ok(());
        };
        if let Some(err) = chunk.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            let mut e = ApiError::upstream(http::StatusCode::BAD_GATEWAY, message);
            if let Some(k) = err.get("type").and_then(Value::as_str) {
                e.kind = static_kind(k);
            }
            return Err(e);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            let field = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                input: field("prompt_tokens"),
                output: field("completion_tokens"),
                estimated: false,
            });
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        if let Some(list) = choices {
            for c in list {
                if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                    self.text_bytes.push_str(t);
                }
            }
        }
        let usage_only = choices.is_none_or(|c| c.is_empty()) && self.usage.is_some();
        if !usage_only || self.wants_usage {
            push_data(out, &ev.data);
        }
        Ok(())
    }
}

/// One `data:` event.
pub fn push_data(out: &mut Vec<u8>, data: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// OpenAI's error types as static text (anything else is a server error).
pub fn static_kind(k: &str) -> &'static str {
    match k {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" | "requests" | "tokens" => "rate_limit_error",
        "not_found_error" => "invalid_request_error",
        "overloaded_error" => "overloaded_error",
        _ => "server_error",
    }
}

/// A provider's error answer in the OpenAI shape: its message kept, its type mapped.
pub fn error_of(status: http::StatusCode, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error");
    let message = err
        .and_then(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
        .unwrap_or("the provider refused the request");
    let kind = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .map_or(super::error::kind_of(status), static_kind);
    let mut e = ApiError::new(status, kind, message);
    e.code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Event {
        Event {
            name: None,
            data: data.to_owned(),
        }
    }

    #[test]
    fn the_usage_chunk_is_kept_from_a_client_that_did_not_ask_for_it() {
        let mut s = Stream::default();
        let mut out = Vec::new();
        let text = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        s.event(&ev(text), &mut out).unwrap();
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        s.event(&ev(usage), &mut out).unwrap();
        s.event(&ev("[DONE]"), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, format!("data: {text}\n\ndata: [DONE]\n\n"));
        assert_eq!(s.usage.unwrap().input, 5);
        assert_eq!(s.text_bytes, "Hi");
    }
}
