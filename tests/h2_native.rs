//! The gateway's own HTTP/2 server (`h2_server: native`) with real HTTP/2 clients: hyper's
//! client (the h2 library: its own HPACK, flow control and stream handling) for many
//! concurrent streams, large bodies both ways, trailers and field values, curl for interim
//! responses, and h2load for a burst of requests on few connections. The frame-level
//! conformance of both servers is `tests/h2_conformance.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use support::*;

fn gateway(backend: SocketAddr) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\n    h2_server: native\nadmin:\n  address: \"127.0.0.1:0\"\nupstreams:\n  app:\n    targets:\n      - address: \"{backend}\"\nroutes:\n  - upstream: app\n"
    ))
}

/// A backend that answers each request with its method, path, body length and the value
/// of `x-echo`, and a body of `x-size` bytes when asked.
async fn echo_backend() -> Backend {
    Backend::start(false, |req: Request<hyper::body::Incoming>| async move {
        let size: usize = req
            .headers()
            .get("x-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let echo = req
            .headers()
            .get("x-echo")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let text = if size > 0 {
            Bytes::from(vec![b'z'; size])
        } else {
            Bytes::from(format!("{method} {path} {} {echo}", body.len()))
        };
        let mut resp = http::Response::new(full(text));
        resp.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        resp
    })
    .await
}

async fn client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn req(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://a{path}"))
        .body(Full::new(body))
        .unwrap()
}

#[tokio::test]
async fn many_concurrent_streams_are_answered_each_with_its_own_response() {
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let tx = client(gw.addr).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let mut tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = if i % 2 == 0 {
                req("GET", &format!("/get/{i}"), Bytes::new())
            } else {
                req(
                    "POST",
                    &format!("/post/{i}"),
                    Bytes::from(vec![b'p'; i * 100]),
                )
            };
            r.headers_mut()
                .insert("x-echo", format!("value {i}").parse().unwrap());
            let resp = tx.send_request(r).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["content-type"], "text/plain");
            assert!(resp.headers().contains_key("x-request-id"));
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let want = if i % 2 == 0 {
                format!("GET /get/{i} 0 value {i}")
            } else {
                format!("POST /post/{i} {} value {i}", i * 100)
            };
            assert_eq!(body, want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(backend.count(), 60);
}

#[tokio::test]
async fn a_large_response_flows_through_the_client_windows() {
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut tx = client(gw.addr).await;
    let mut r = req("GET", "/big", Bytes::new());
    r.headers_mut().insert("x-size", "3000000".parse().unwrap());
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(r))
        .await
        .unwrap()
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the whole body within 10 s")
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 3_000_000);
    assert!(body.iter().all(|&b| b == b'z'));
}

#[tokio::test]
async fn a_large_request_body_reaches_the_backend_whole() {
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut tx = client(gw.addr).await;
    // Far above the stream and connection windows: the gateway must return credit.
    let r = req("PUT", "/upload", Bytes::from(vec![b'u'; 2_500_000]));
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(r))
        .await
        .unwrap()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "PUT /upload 2500000 ");
}

#[tokio::test]
async fn a_route_the_gateway_answers_itself_reaches_the_client() {
    let backend = echo_backend().await;
    let gw = TestGateway::start(&format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\n    h2_server: native\nupstreams:\n  app:\n    targets:\n      - address: \"{}\"\nroutes:\n  - match: {{path: {{prefix: /app}}}}\n    upstream: app\n",
        backend.addr
    ));
    let mut tx = client(gw.addr).await;
    let resp = tx
        .send_request(req("GET", "/nowhere", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_malformed_request_is_reset_and_never_forwarded() {
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut c = support::h2raw::H2Raw::connect(gw.addr).await;
    // A connection-specific field (RFC 9113 §8.2.2).
    let mut block = support::h2raw::request_block("GET", "/x", None);
    block.extend(support::h2raw::literal("connection", "close"));
    c.headers(1, &block, true).await;
    assert_eq!(
        c.ending(1).await,
        support::h2raw::Ending::Reset(support::h2raw::PROTOCOL_ERROR)
    );
    // The connection goes on serving.
    c.headers(3, &support::h2raw::request_block("GET", "/y", None), true)
        .await;
    assert!(c.response_end(3).await.is_some(), "{:?}", c.seen);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn h2load_completes_every_request_on_few_connections() {
    if std::process::Command::new("h2load")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("h2load is not installed (scripts/test.sh installs nghttp2-client)");
    }
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let url = format!("http://{}/load", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("h2load")
            .args(["-n", "400", "-c", "4", "-m", "10", &url])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("400 total, 400 started, 400 done, 400 succeeded"),
        "{text}"
    );
}

/// The guard's flood limits hold on the native server: it checks every frame it reads
/// with the same rules.
#[tokio::test]
async fn rapid_reset_is_cut_with_enhance_your_calm() {
    use support::h2raw::*;
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut c = H2Raw::connect(gw.addr).await;
    let mut wire = Vec::new();
    for i in 0..1000u32 {
        let id = 1 + 2 * i;
        wire.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &request_block("GET", "/r", None),
        ));
        wire.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    c.write(&wire).await;
    assert_eq!(c.goaway().await, Ending::GoAway(0xb), "{:?}", c.seen.len());
}

#[tokio::test]
async fn a_continuation_flood_is_cut_with_enhance_your_calm() {
    use support::h2raw::*;
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut c = H2Raw::connect(gw.addr).await;
    let mut wire = frame(HEADERS, 0, 1, &request_block("GET", "/c", None));
    for _ in 0..40 {
        wire.extend(frame(CONTINUATION, 0, 1, &literal("x-a", "b")));
    }
    c.write(&wire).await;
    assert_eq!(c.goaway().await, Ending::GoAway(0xb), "{:?}", c.seen);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn an_extended_connect_is_refused_as_the_protocol_is_not_advertised() {
    use support::h2raw::*;
    let backend = echo_backend().await;
    let gw = gateway(backend.addr);
    let mut c = H2Raw::connect(gw.addr).await;
    let mut block = vec![0x02, 7];
    block.extend(b"CONNECT");
    block.push(0x86);
    block.extend([0x04, 5]);
    block.extend(b"/chat");
    block.extend([0x01, 1, b'a']);
    block.extend(literal(":protocol", "websocket"));
    c.headers(1, &block, false).await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
    let s = c
        .seen
        .iter()
        .find(|f| f.kind == SETTINGS && !f.has(ACK))
        .unwrap();
    assert!(
        !s.settings().iter().any(|(id, _)| *id == 0x8),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL advertised: {:?}",
        s.settings()
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_open_streams_finish() {
    use support::h2raw::*;
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        text(StatusCode::OK, "done")
    })
    .await;
    let gw = gateway(slow.addr);
    let mut c = H2Raw::connect(gw.addr).await;
    c.headers(1, &request_block("GET", "/slow", None), true)
        .await;
    let waited = support::eventually(Duration::from_secs(2), || async { slow.count() == 1 });
    assert!(waited.await);
    let cut = tokio::task::spawn_blocking(move || gw.shutdown(Duration::from_secs(5)));
    let end = c.response_end(1).await;
    assert!(end.is_some(), "the open stream was answered: {:?}", c.seen);
    let goaway = c.seen.iter().find(|f| f.kind == GOAWAY).cloned();
    let goaway = match goaway {
        Some(g) => g,
        None => c.until(|f| f.kind == GOAWAY).await.unwrap(),
    };
    assert_eq!(goaway.word(0), 1, "GOAWAY names stream 1 as the last");
    assert_eq!(goaway.word(4), NO_ERROR);
    assert!(
        c.closed().await,
        "the connection closes once the stream is done"
    );
    assert_eq!(cut.await.unwrap(), 0, "no connection was cut");
}
