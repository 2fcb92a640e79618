//! Result callbacks: a finished job's result POSTed to a URL as JSON, signed with
//! HMAC-SHA256 over the timestamp and the body, and tried again with backoff when the
//! receiver fails.
//!
//! The signature field is `Ferrogate-Signature: t=UNIX_SECONDS,v1=HEX`, where `HEX` is the
//! HMAC-SHA256, under the queue's secret, of `UNIX_SECONDS.BODY`. A receiver recomputes it,
//! compares in constant time, and refuses timestamps older than a few minutes (replays).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;

use super::{Job, JobId, StoredResponse};
use crate::config::model::CallbackSettings;

pub const SIGNATURE_FIELD: &str = "ferrogate-signature";

/// The first retry waits this long; each next one twice as long.
const FIRST_RETRY: Duration = Duration::from_millis(200);

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

/// `t=…,v1=…` for `body` at `unix` seconds.
pub fn signature(secret: &[u8], unix: u64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix},v1={hex}")
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
    let mut delay = FIRST_RETRY;
    for attempt in 1..=settings.max_attempts {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = client
            .post(url)
            .timeout(settings.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-job-id", id.to_string())
            .header(SIGNATURE_FIELD, signature(&settings.secret, unix, &body))
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("the receiver answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if attempt == settings.max_attempts {
            tracing::warn!(job = %id, "the result callback to {url} failed {attempt} times: {why}");
            return;
        }
        tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        delay = delay.saturating_mul(2);
    }
}
