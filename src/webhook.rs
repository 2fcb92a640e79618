//! JSON POSTed to a receiver that asked for it (job result callbacks, alert
//! notifications): optionally signed with HMAC-SHA256 over the timestamp and the body, and
//! tried again with backoff and jitter while the receiver fails.
//!
//! The signature field is `Ferrogate-Signature: t=UNIX_SECONDS,v1=HEX`, where `HEX` is the
//! HMAC-SHA256, under the shared secret, of `UNIX_SECONDS.BODY`. A receiver recomputes it,
//! compares in constant time, and refuses timestamps older than a few minutes (replays).

use std::time::Duration;

pub const SIGNATURE_FIELD: &str = "ferrogate-signature";

/// The first retry waits this long; each next one twice as long.
const FIRST_RETRY: Duration = Duration::from_millis(200);

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

/// One POST to make.
pub struct Post<'a> {
    pub url: &'a str,
    pub body: Vec<u8>,
    /// Signs each attempt afresh (its own timestamp) when not empty.
    pub secret: &'a [u8],
    /// More header fields.
    pub fields: &'a [(&'static str, String)],
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// POSTs until the receiver answers 2xx or the attempts run out; the last failure when
/// they do.
pub async fn post(client: &reqwest::Client, p: Post<'_>) -> Result<(), String> {
    let mut delay = FIRST_RETRY;
    for attempt in 1..=p.max_attempts.max(1) {
        let mut req = client
            .post(p.url)
            .timeout(p.timeout)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in p.fields {
            req = req.header(*name, value);
        }
        if !p.secret.is_empty() {
            let unix = crate::timer::unix_seconds();
            req = req.header(SIGNATURE_FIELD, signature(p.secret, unix, &p.body));
        }
        let why = match req.body(p.body.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("the receiver answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if attempt >= p.max_attempts {
            return Err(format!("{attempt} attempts failed; the last: {why}"));
        }
        tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        delay = delay.saturating_mul(2);
    }
    Ok(())
}
