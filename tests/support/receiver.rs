//! A real HTTP receiver of signed JSON POSTs (webhooks, callbacks) on loopback: it records
//! each body, its path and whether its `Ferrogate-Signature` verifies, and can fail the
//! first ones to make the sender try again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{text, Backend};

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: serde_json::Value,
    /// The signature verified under the receiver's secret and was fresh; `None` without a
    /// secret.
    pub signed: Option<bool>,
}

pub struct Receiver {
    pub backend: Backend,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers 503 to the first `fail_first` POSTs, 200 to the others.
    pub async fn start(secret: Option<&'static [u8]>, fail_first: usize) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let n = Arc::new(AtomicUsize::new(0));
        let seen = got.clone();
        let backend = Backend::start(false, move |req: Request<Incoming>| {
            let (seen, n) = (seen.clone(), n.clone());
            async move {
                let path = req.uri().path().to_owned();
                let signature = req
                    .headers()
                    .get("ferrogate-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = req.into_body().collect().await.unwrap().to_bytes();
                if n.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "try again");
                }
                let signed = secret.map(|s| signature.is_some_and(|sig| signed_by(s, &sig, &body)));
                seen.lock().unwrap().push(Received {
                    path,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    signed,
                });
                text(StatusCode::OK, "thanks")
            }
        })
        .await;
        Receiver { backend, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Whether `signature` (`t=UNIX,v1=HEX`) is the HMAC-SHA256 under `secret` of
/// `UNIX.BODY`, made within the last minute.
pub fn signed_by(secret: &[u8], signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature.split_once(",v1=") else {
        return false;
    };
    let Some(t) = t.strip_prefix("t=") else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let signed = [t.as_bytes(), b".", body].concat();
    let tag: Option<Vec<u8>> = (0..v1.len() / 2)
        .map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let valid = tag.is_some_and(|tag| aws_lc_rs::hmac::verify(&key, &signed, &tag).is_ok());
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .abs_diff(t.parse().unwrap_or(0));
    valid && age < 60
}
