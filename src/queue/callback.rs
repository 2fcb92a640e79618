//! Result callbacks: a finished job's result POSTed to a URL as JSON, signed with
//! HMAC-SHA256 under the queue's secret, and tried again with backoff when the receiver
//! fails (`webhook`: the signature's format).

use base64::Engine as _;
use serde_json::json;

use super::{Job, JobId, StoredResponse};
use crate::config::model::CallbackSettings;

/// Whether a client-given callback URL starts with one of the allowed prefixes.
pub fn allowed(settings: &CallbackSettings, url: &str) -> bool {
    url.parse::<http::Uri>().is_ok() && settings.allow.iter().any(|p| url.starts_with(p.as_str()))
}

/// The JSON document a callback carries: the job and, once it has one, its result.
pub fn document(
    id: JobId,
    job: &Job,
    status_url: &str,
    result: Option<&StoredResponse>,
) -> Vec<u8> {
    let mut v = json!({
        "id": id.to_string(),
        "status": job.status.as_str(),
        "attempts": job.attempts,
        "status_url": status_url,
    });
    if job.dead {
        v["dead_letter"] = json!(true);
    }
    if let Some(e) = &job.error {
        v["error"] = json!(e);
    }
    if let Some(r) = result {
        let headers: serde_json::Map<String, serde_json::Value> = r
            .headers
            .iter()
            .map(|f| (f.name.clone(), json!(String::from_utf8_lossy(&f.value))))
            .collect();
        let mut result = json!({"status": r.status, "headers": headers, "truncated": r.truncated});
        match std::str::from_utf8(&r.body) {
            Ok(text) => result["body"] = json!(text),
            Err(_) => {
                result["body_base64"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(&r.body))
            }
        }
        v["result"] = result;
    }
    v.to_string().into_bytes()
}

/// POSTs `body` to `url` until the receiver answers 2xx or the attempts run out; each
/// attempt is signed afresh (its own timestamp).
pub async fn deliver(
    client: &reqwest::Client,
    settings: &CallbackSettings,
    id: JobId,
    url: &str,
    body: Vec<u8>,
) {
    let post = crate::webhook::Post {
        url,
        body,
        secret: &settings.secret,
        fields: &[("x-job-id", id.to_string())],
        timeout: settings.timeout,
        max_attempts: settings.max_attempts,
    };
    if let Err(why) = crate::webhook::post(client, post).await {
        tracing::warn!(job = %id, "the result callback to {url} failed: {why}");
    }
}
