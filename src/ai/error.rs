//! Errors in the OpenAI error shape (`{"error":{"message","type","code"}}`), the form every
//! answer of an `ai` route takes when it fails, whichever provider failed.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, `server_error`, …
    pub kind: &'static str,
    pub code: Option<String>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            code: None,
            retry_after: None,
        }
    }

    /// A malformed or refused request (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The provider could not be reached or failed, with no target left to try.
    pub fn upstream(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::new(status, "server_error", message)
    }

    /// The error object alone (`{"message","type","code"}`).
    pub fn object(&self) -> serde_json::Value {
        json!({"message": self.message, "type": self.kind, "code": self.code})
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        Bytes::from(json!({ "error": self.object() }).to_string())
    }

    /// The same error as one server-sent event, for a stream already under way.
    pub fn event(&self) -> Bytes {
        Bytes::from(format!("data: {}\n\n", json!({ "error": self.object() })))
    }
}

/// OpenAI's error `type` for a status a provider answered with.
pub fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_error_has_the_openai_shape() {
        let e = ApiError::invalid("model is required").with_code("missing_model");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
        assert_eq!(v["error"]["message"], "model is required");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "missing_model");
        assert!(e.event().starts_with(b"data: {\"error\""));
    }
}
