//! The OpenAI-compatible front: which endpoint a request is for, and the checks a request
//! passes before any provider sees it (JSON, `model`, `messages`, `max_tokens` cap, the
//! consumer's allowed models).

use serde_json::{json, Value};

use super::error::ApiError;
use crate::config::model::AiRoute;

/// The endpoints of the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Embeddings,
    Models,
}

impl Endpoint {
    /// The endpoint for `method` and `path` (the last segments of the path decide, so a
    /// route at `/v1/` or at `/openai/v1/` serves both).
    pub fn of(method: &http::Method, path: &str) -> Result<Endpoint, ApiError> {
        let path = path.trim_end_matches('/');
        let (endpoint, wanted) = if path.ends_with("/chat/completions") {
            (Endpoint::Chat, http::Method::POST)
        } else if path.ends_with("/embeddings") {
            (Endpoint::Embeddings, http::Method::POST)
        } else if path.ends_with("/models") {
            (Endpoint::Models, http::Method::GET)
        } else {
            let e = ApiError::new(
                http::StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("unknown endpoint {path}"),
            );
            return Err(e.with_code("unknown_url"));
        };
        if *method != wanted {
            let e = ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                format!("{path} takes {wanted}"),
            );
            return Err(e);
        }
        Ok(endpoint)
    }
}

/// A checked request: its JSON, the alias it names and whether it asks for a stream.
#[derive(Debug, Clone)]
pub struct Checked {
    pub body: Value,
    pub alias: String,
    pub stream: bool,
    /// The client asked for usage in the stream (`stream_options.include_usage`).
    pub wants_usage: bool,
    /// `max_tokens` (or `max_completion_tokens`) as asked, or the route's cap sent instead.
    pub max_tokens: Option<u64>,
}

/// Checks a request body for `endpoint` against the route's rules, for `consumer`.
pub fn check(
    ai: &AiRoute,
    endpoint: Endpoint,
    bytes: &[u8],
    consumer: Option<&str>,
) -> Result<Checked, ApiError> {
    let mut body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let alias = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            let e = ApiError::invalid("you must provide a model parameter");
            return Err(e.with_code("missing_model"));
        }
    };
    allowed(ai, &alias, consumer)?;
    let mut max_tokens = None;
    if endpoint == Endpoint::Chat {
        match obj.get("messages") {
            Some(Value::Array(list)) if !list.is_empty() => {
                for (i, m) in list.iter().enumerate() {
                    let role = m.get("role").and_then(Value::as_str);
                    if !matches!(
                        role,
                        Some("system" | "developer" | "user" | "assistant" | "tool")
                    ) {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}].role must be system, developer, user, assistant or tool"
                        )));
                    }
                }
            }
            _ => return Err(ApiError::invalid("messages must be a non-empty array")),
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => max_tokens = Some(n),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "{key} must be a positive integer"
                        )))
                    }
                },
            }
        }
        if let Some(cap) = ai.max_tokens.map(u64::from) {
            match max_tokens {
                Some(n) if n > cap => {
                    return Err(ApiError::invalid(format!(
                        "max_tokens is {n}; this endpoint allows at most {cap}"
                    )))
                }
                Some(_) => {}
                None => {
                    obj.insert("max_tokens".into(), json!(cap));
                    max_tokens = Some(cap);
                }
            }
        }
    } else if !matches!(obj.get("input"), Some(Value::String(_) | Value::Array(_))) {
        return Err(ApiError::invalid("input must be a string or an array"));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) if endpoint == Endpoint::Chat => *b,
        Some(Value::Bool(false)) => false,
        _ => {
            return Err(ApiError::invalid(
                "stream must be a boolean (chat completions only)",
            ))
        }
    };
    let wants_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Checked {
        body,
        alias,
        stream,
        wants_usage,
        max_tokens,
    })
}

/// Whether `consumer` may use `alias` (and whether the alias exists).
pub fn allowed(ai: &AiRoute, alias: &str, consumer: Option<&str>) -> Result<(), ApiError> {
    let exists = ai.models.contains_key(alias);
    let permitted = ai.consumers.is_empty()
        || consumer
            .and_then(|c| ai.consumers.get(c))
            .is_some_and(|models| models.iter().any(|m| m == alias));
    if !exists || !permitted {
        let e = ApiError::new(
            http::StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model {alias} does not exist or you do not have access to it"),
        );
        return Err(e.with_code("model_not_found"));
    }
    Ok(())
}

/// The `GET /models` answer: the aliases `consumer` may use.
pub fn models(ai: &AiRoute, consumer: Option<&str>) -> Value {
    let data: Vec<Value> = ai
        .models
        .keys()
        .filter(|alias| allowed(ai, alias, consumer).is_ok())
        .map(|alias| json!({"id": alias, "object": "model", "created": 0, "owned_by": "ferrogate"}))
        .collect();
    json!({"object": "list", "data": data})
}
