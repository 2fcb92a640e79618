//! Active health checks: probes each target of one upstream group on a timer and reports
//! the results to the group's `GroupHealth`.
//!
//! Every probe uses a fresh connection (never the request pool), so a probe sees what a new
//! request would see: over TLS it makes the handshake requests make, with the group's
//! trust anchors, server name and client certificate. A TCP probe passes when the connect
//! (and handshake) succeeds; an HTTP probe sends one request (HTTP/1.1 with
//! `Connection: close`, or HTTP/2 when the target chose `h2` by ALPN) and passes when the
//! status is in the expected ranges. Each target has its own timer so one slow target does not delay the others;
//! intervals are jittered by ±10% so that gateways started together do not probe in step.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::health::GroupHealth;
use super::stream::{self, ConnectError, UpstreamStream};
use super::tls::TlsClient;

const AGENT: &str = "ferrogate-health-check";
/// Response body bytes read at most; the status is all a probe needs, reading a little lets
/// small responses finish cleanly.
const MAX_BODY: usize = 16 * 1024;
const JITTER: f64 = 0.1;
/// Floor on the pause between probes, so a zero interval cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Expected statuses when none are configured.
const DEFAULT_EXPECTED: (u16, u16) = (200, 399);

/// What a probe checks: the validated config's check kind.
pub use crate::config::model::CheckKind as ProbeKind;

/// Active check settings of one upstream group.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub kind: ProbeKind,
    pub interval: Duration,
    /// Bound on one whole probe, connect and TLS handshake included.
    pub timeout: Duration,
    /// The group's TLS client, when its targets speak TLS.
    pub tls: Option<Arc<TlsClient>>,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("{0}")]
    Connect(#[source] ConnectError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid probe request: {0}")]
    Request(#[source] http::Error),
    #[error("http exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("unexpected status {0}")]
    Status(StatusCode),
}

/// Probes `targets` (address, index in `group`) until `stop` turns true or its sender is
/// dropped. The first probe of each target is immediate.
pub async fn run(
    targets: Vec<(SocketAddr, usize)>,
    group: Arc<GroupHealth>,
    settings: ProbeSettings,
    stop: watch::Receiver<bool>,
) {
    let loops = targets
        .into_iter()
        .map(|(addr, index)| probe_target(addr, index, &group, &settings, stop.clone()));
    futures_util::future::join_all(loops).await;
}

async fn probe_target(
    addr: SocketAddr,
    index: usize,
    group: &GroupHealth,
    settings: &ProbeSettings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let result = tokio::select! {
            result = tokio::time::timeout(settings.timeout, probe_once(addr, settings)) => {
                result.unwrap_or(Err(ProbeError::Timeout(settings.timeout)))
            }
            () = stopped(&mut stop) => return,
        };
        let flipped = group.probe_result(index, result.is_ok());
        match (&result, flipped) {
            (Err(error), true) => {
                tracing::warn!(target_addr = %addr, %error, "upstream target marked down by health check");
            }
            (Ok(()), true) => {
                tracing::info!(target_addr = %addr, "upstream target marked up by health check");
            }
            (Err(error), false) => {
                tracing::debug!(target_addr = %addr, %error, "health check failed");
            }
            (Ok(()), false) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(jittered(settings.interval)) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: stop as well.
    let _ = stop.wait_for(|&stop| stop).await;
}

async fn probe_once(addr: SocketAddr, settings: &ProbeSettings) -> Result<(), ProbeError> {
    let stream = stream::connect(addr, settings.tls.as_deref(), settings.timeout)
        .await
        .map_err(ProbeError::Connect)?;
    let ProbeKind::Http {
        method,
        path,
        host,
        expected,
    } = &settings.kind
    else {
        return Ok(());
    };
    let h2 = stream.alpn_protocol() == Some(b"h2");
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, AGENT);
    // HTTP/2 has no Connection field; its connection ends when the probe drops it.
    if !h2 {
        request = request.header(CONNECTION, "close");
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let status = if h2 {
        exchange_h2(stream, request).await?
    } else {
        exchange(stream, request).await?
    };
    if status_expected(status, expected) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// Sends `request` on `stream` (HTTP/1.1) and returns the response status, reading at most
/// `MAX_BODY` bytes of the body.
async fn exchange(
    stream: UpstreamStream,
    request: Request<Empty<Bytes>>,
) -> Result<StatusCode, ProbeError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Http)?;
    let response = async move {
        let response = sender.send_request(request).await?;
        Ok::<_, hyper::Error>(read_status(response).await)
    };
    drive(response, conn).await
}

/// Awaits `response` while driving its connection here rather than spawned, so the probe's
/// timeout ends both.
async fn drive(
    response: impl Future<Output = Result<StatusCode, hyper::Error>>,
    conn: impl Future<Output = Result<(), hyper::Error>>,
) -> Result<StatusCode, ProbeError> {
    tokio::pin!(response, conn);
    tokio::select! {
        result = &mut response => result.map_err(ProbeError::Http),
        result = &mut conn => {
            // With `Connection: close` the connection may finish before the response is
            // taken; the response then is already buffered (or its send fails).
            result.map_err(ProbeError::Http)?;
            response.await.map_err(ProbeError::Http)
        }
    }
}

/// As [`exchange`], over HTTP/2 (a target that chose `h2` by ALPN).
async fn exchange_h2(
    stream: UpstreamStream,
    request: Request<Empty<Bytes>>,
) -> Result<StatusCode, ProbeError> {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
    let response = async move {
        let response = sender.send_request(request).await?;
        Ok::<_, hyper::Error>(read_status(response).await)
    };
    drive(response, conn).await
}

/// The status, after reading up to `MAX_BODY` bytes of the body so small responses end
/// cleanly; a body error changes nothing, the status was the answer.
async fn read_status(response: http::Response<hyper::body::Incoming>) -> StatusCode {
    let status = response.status();
    let mut body = response.into_body();
    let mut read = 0;
    while read < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => break,
        }
    }
    status
}

fn status_expected(status: StatusCode, expected: &[(u16, u16)]) -> bool {
    let code = status.as_u16();
    let within = |&(low, high): &(u16, u16)| (low..=high).contains(&code);
    if expected.is_empty() {
        within(&DEFAULT_EXPECTED)
    } else {
        expected.iter().any(within)
    }
}

fn jittered(interval: Duration) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * fastrand::f64();
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
        .unwrap_or(interval)
        .max(MIN_INTERVAL)
}

#[cfg(test)]
#[path = "probe/tests.rs"]
mod tests;
