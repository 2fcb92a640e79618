//! Clients that leave while their request waits on the upstream: the upstream request is
//! cancelled at once and logged as 499 (HTTP/1.1 connection closed or reset, HTTP/2 stream
//! reset), while a half-closed client whose complete request was its last still gets its
//! answer, and bytes of a pipelined request read while waiting are kept.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::rawhttp::Late;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALL: &str = "  - name: all\n    upstream: app\n";

/// A gateway in front of `backend` writing its access log to `log`; `server` serves the
/// listener's HTTP/2 (`hyper` or `native`).
fn gateway_on(backend: &Late, log: &Path, server: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{}access_log:\n  enabled: true\n  target: {}\n",
        config(&[backend.addr], ALL).replacen(
            "address: \"127.0.0.1:0\"\n",
            &format!("address: \"127.0.0.1:0\"\n    h2_server: {server}\n"),
            1
        ),
        log.display()
    ))
}

/// A gateway with its access log in a directory of its own, in front of a backend that
/// answers after `delay`.
struct Setup {
    backend: Late,
    log: PathBuf,
    gw: TestGateway,
    _dir: tempdir::Dir,
}

impl Setup {
    async fn start(name: &str, delay: Duration) -> Setup {
        Self::start_on(name, delay, "hyper").await
    }

    async fn start_on(name: &str, delay: Duration, server: &str) -> Setup {
        let backend = Late::start(delay).await;
        let dir = tempdir::Dir::new(name);
        let log = dir.path.join("access.log");
        let gw = gateway_on(&backend, &log, server);
        Setup {
            backend,
            log,
            gw,
            _dir: dir,
        }
    }
}

/// The access-log lines, once `n` have been written.
async fn log_lines(log: &PathBuf, n: usize) -> Vec<String> {
    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(log).is_ok_and(|t| t.lines().count() >= n)
    })
    .await;
    assert!(written, "{n} access-log lines are written");
    let text = std::fs::read_to_string(log).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// Waits until the backend has `n` requests.
async fn backend_has(backend: &Late, n: usize) {
    let seen = eventually(Duration::from_secs(5), || async {
        backend.seen().len() >= n
    })
    .await;
    assert!(seen, "the backend received {n} request(s)");
}

/// Asserts the backend's connection was closed by the gateway within a second of `left`,
/// without an answer.
async fn upstream_cancelled(backend: &Late, left: Instant) {
    let closed = eventually(Duration::from_secs(5), || async {
        backend.seen()[0].closed.is_some()
    })
    .await;
    assert!(closed, "the gateway closed the upstream connection");
    let ex = &backend.seen()[0];
    let after = ex.closed.unwrap().saturating_duration_since(left);
    assert!(
        after < Duration::from_secs(1),
        "cancelled promptly, not when the answer came ({after:?})"
    );
    assert!(!ex.answered);
}

#[tokio::test]
async fn client_closing_while_its_request_waits_cancels_the_upstream_request_with_499() {
    let Setup {
        backend,
        log,
        gw,
        _dir,
    } = Setup::start("abort", Duration::from_secs(10)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    backend_has(&backend, 1).await;
    drop(client);
    upstream_cancelled(&backend, Instant::now()).await;
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    assert!(lines[0].contains("\"status\":499"), "{}", lines[0]);
    assert!(lines[0].contains("\"path\":\"/slow\""), "{}", lines[0]);
    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    assert!(
        metrics.contains(r#"ferrogate_requests_total{route="all",method="GET",status="499"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn client_resetting_while_its_request_waits_cancels_the_upstream_request_with_499() {
    let Setup {
        backend,
        log,
        gw,
        _dir,
    } = Setup::start("reset", Duration::from_secs(10)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    // Linger 0: the close is a reset, not a FIN.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    client
        .write_all(b"POST /reset HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nbody")
        .await
        .unwrap();
    backend_has(&backend, 1).await;
    drop(client);
    upstream_cancelled(&backend, Instant::now()).await;
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains("\"status\":499"), "{}", lines[0]);
    assert!(lines[0].contains("\"bytes_in\":4"), "{}", lines[0]);
}

/// Sends `request`, shuts the client's write side, and reads the whole answer.
async fn half_closed_exchange(request: &[u8]) -> (String, Vec<LateSeen>, Vec<String>) {
    let Setup {
        backend,
        log,
        gw,
        _dir,
    } = Setup::start("half", Duration::from_millis(300)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client.write_all(request).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer));
    read.await.unwrap().unwrap();
    let lines = log_lines(&log, 1).await;
    let seen = backend
        .seen()
        .iter()
        .map(|e| LateSeen {
            answered: e.answered,
            closed: e.closed.is_some(),
        })
        .collect();
    (String::from_utf8_lossy(&answer).into_owned(), seen, lines)
}

#[derive(Debug, PartialEq)]
struct LateSeen {
    answered: bool,
    closed: bool,
}

#[tokio::test]
async fn half_closed_http10_client_still_gets_its_answer() {
    let (answer, seen, lines) =
        half_closed_exchange(b"GET /half HTTP/1.0\r\nhost: a\r\n\r\n").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let done = LateSeen {
        answered: true,
        closed: false,
    };
    assert_eq!(seen, [done]);
    assert!(lines[0].contains("\"status\":200"), "{}", lines[0]);
}

#[tokio::test]
async fn half_closed_client_sending_connection_close_still_gets_its_answer() {
    let request =
        b"PUT /half HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi";
    let (answer, seen, lines) = half_closed_exchange(request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let done = LateSeen {
        answered: true,
        closed: false,
    };
    assert_eq!(seen, [done]);
    assert!(lines[0].contains("\"status\":200"), "{}", lines[0]);
}

#[tokio::test]
async fn pipelined_request_arriving_while_one_waits_is_kept_and_answered_in_order() {
    let Setup {
        backend, gw, _dir, ..
    } = Setup::start("pipe", Duration::from_millis(200)).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    backend_has(&backend, 1).await;
    // Read by the gateway while the first request waits.
    client
        .write_all(b"GET /second HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer));
    read.await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let paths: Vec<_> = backend
        .seen()
        .iter()
        .map(|e| e.head.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/first", "/second"]);
}

#[tokio::test]
async fn http2_stream_reset_while_its_request_waits_cancels_it_with_499() {
    http2_stream_reset_cancels_with_499_on("hyper").await;
}

#[tokio::test]
async fn http2_stream_reset_on_the_native_server_cancels_it_with_499() {
    http2_stream_reset_cancels_with_499_on("native").await;
}

async fn http2_stream_reset_cancels_with_499_on(server: &str) {
    let Setup {
        backend,
        log,
        gw,
        _dir,
    } = Setup::start_on("h2reset", Duration::from_secs(10), server).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://a/h2slow")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let waiting = tx.send_request(req);
    tokio::select! {
        _ = waiting => panic!("the request was answered"),
        _ = backend_has(&backend, 1) => {}
    }
    // The response future is dropped: the client resets the stream (RST_STREAM CANCEL),
    // and keeps the connection open.
    upstream_cancelled(&backend, Instant::now()).await;
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains("\"status\":499"), "{}", lines[0]);
    assert!(lines[0].contains("\"path\":\"/h2slow\""), "{}", lines[0]);
    drop(tx);
}
