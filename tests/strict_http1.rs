//! Malformed HTTP/1.1 requests: each gets its status, the connection closes, and nothing
//! reaches the backend.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Sends `request` raw; asserts the status, a closed connection and an untouched backend.
async fn refused(request: &[u8], status: u16) {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], "  - upstream: app\n"));
    let reply = raw(gw.addr, request).await;
    assert_eq!(
        status_of(&reply),
        status,
        "request {:?} got {reply:?}",
        String::from_utf8_lossy(request)
    );
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "the connection is closed: {reply}"
    );
    assert!(reply.contains("application/problem+json"), "{reply}");
    assert_eq!(
        backend.count(),
        0,
        "request {:?} reached the backend",
        String::from_utf8_lossy(request)
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn duplicate_content_length_is_400_even_when_equal() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    )
    .await;
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        400,
    )
    .await;
}

#[tokio::test]
async fn malformed_content_length_is_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        400,
    )
    .await;
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
        400,
    )
    .await;
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn invalid_chunk_size_is_400() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    )
    .await;
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn oversized_chunk_extension_is_400() {
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;".to_vec();
    req.extend(std::iter::repeat_n(b'x', 4096));
    req.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    refused(&req, 400).await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_refused() {
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    )
    .await;
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn obs_fold_is_400() {
    refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn bare_cr_and_bare_lf_are_400() {
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\rne\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\nHost: a\n\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", 400).await;
}

#[tokio::test]
async fn nul_and_control_bytes_are_400() {
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", 400).await;
    refused(b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400).await;
}

#[tokio::test]
async fn invalid_header_names_are_400() {
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", 400).await;
}

#[tokio::test]
async fn missing_or_repeated_host_in_http11_is_400() {
    refused(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400).await;
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400).await;
}

#[tokio::test]
async fn oversized_request_line_is_414_and_header_section_431() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(10_000));
    refused(long_target.as_bytes(), 414).await;
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    refused(big_header.as_bytes(), 431).await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    refused(many.as_bytes(), 431).await;
}

#[tokio::test]
async fn unknown_http_version_and_bad_request_line_are_refused() {
    refused(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505).await;
    refused(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400).await;
    refused(b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400).await;
    refused(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400).await;
}

#[tokio::test]
async fn smuggled_second_request_after_a_valid_one_never_reaches_the_backend() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], "  - upstream: app\n"));
    let reply = raw(
        gw.addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("HTTP/1.1 400"),
        "the second request is refused: {reply}"
    );
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/first");
}

#[tokio::test]
async fn valid_chunked_and_pipelined_requests_pass() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], "  - upstream: app\n"));
    let reply = raw(
        gw.addr,
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    assert_eq!(backend.count(), 2);
}

/// A chunked POST whose body is `body` (everything after the head), sent in one write.
fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
}

#[tokio::test]
async fn invalid_size_in_the_third_chunk_never_reaches_the_backend() {
    refused(
        &chunked_post("1\r\na\r\n1\r\nb\r\nzz\r\nc\r\n0\r\n\r\n"),
        400,
    )
    .await;
}

#[tokio::test]
async fn missing_crlf_after_chunk_data_never_reaches_the_backend() {
    refused(&chunked_post("1\r\na\r\n3\r\nbcdX\r\n0\r\n\r\n"), 400).await;
    refused(&chunked_post("1\r\na\r\n3\r\nbcd0\r\n\r\n"), 400).await;
}

#[tokio::test]
async fn invalid_chunk_extension_in_a_later_chunk_never_reaches_the_backend() {
    refused(&chunked_post("1\r\na\r\n1;\"x\r\nb\r\n0\r\n\r\n"), 400).await;
}

#[tokio::test]
async fn invalid_trailer_field_never_reaches_the_backend() {
    refused(&chunked_post("1\r\na\r\n0\r\nX(T): 1\r\n\r\n"), 400).await;
    refused(&chunked_post("1\r\na\r\n0\r\nX-T 1\r\n\r\n"), 400).await;
    refused(&chunked_post("1\r\na\r\n0\r\nX-T: a\x01b\r\n\r\n"), 400).await;
}

#[tokio::test]
async fn obs_fold_in_trailers_never_reaches_the_backend() {
    refused(
        &chunked_post("1\r\na\r\n0\r\nX-T: 1\r\n folded\r\n\r\n"),
        400,
    )
    .await;
}

#[tokio::test]
async fn framing_field_in_trailers_never_reaches_the_backend() {
    refused(
        &chunked_post("1\r\na\r\n0\r\nContent-Length: 1\r\n\r\n"),
        400,
    )
    .await;
    refused(
        &chunked_post("1\r\na\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400,
    )
    .await;
}

#[tokio::test]
async fn bare_lf_in_a_later_chunk_or_the_trailers_never_reaches_the_backend() {
    refused(&chunked_post("1\r\na\r\n1\nb\r\n0\r\n\r\n"), 400).await;
    refused(&chunked_post("1\r\na\r\n0\r\nX-T: 1\n\r\n"), 400).await;
}

#[tokio::test]
async fn good_chunked_body_with_extensions_and_trailers_reaches_the_backend_whole() {
    let backend = Backend::start(false, |req| async move {
        use http_body_util::BodyExt;
        let collected = req.into_body().collect().await.unwrap();
        let trailer = collected
            .trailers()
            .and_then(|t| t.get("x-sum"))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
        http::Response::new(full(format!("{body}|{trailer}").into()))
    })
    .await;
    let gw = TestGateway::start(&config(&[backend.addr], "  - upstream: app\n"));
    let mut req =
        chunked_post("1;a=b\r\na\r\n2\r\nbc\r\n3 ; q=\"x y\"\r\ndef\r\n0\r\nX-Sum: 6\r\n\r\n");
    req.splice(17..17, b"Connection: close\r\n".iter().copied());
    let reply = raw(gw.addr, &req).await;
    assert_eq!(status_of(&reply), 200, "{reply}");
    assert!(reply.ends_with("abcdef|6"), "{reply}");
    assert_eq!(backend.count(), 1);
}

/// What a raw backend read on its one connection: every byte, and whether the gateway
/// closed the connection (EOF or reset) before 5 s passed.
struct UpstreamRead {
    bytes: Vec<u8>,
    closed: bool,
}

#[tokio::test]
async fn framing_error_in_a_streaming_body_aborts_the_upstream_request_before_its_last_chunk() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<UpstreamRead>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut bytes = Vec::new();
        let mut started = Some(started_tx);
        let mut chunk = [0u8; 4096];
        let closed = loop {
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
            if bytes.windows(9).any(|w| w == b"5\r\nhello\r") {
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
            }
        };
        let _ = read_tx.send(UpstreamRead { bytes, closed });
    });
    let gw = TestGateway::start(&config(&[addr], "  - upstream: app\n"));
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    // The first chunk is upstream before the broken one is sent: the body streams.
    tokio::time::timeout(Duration::from_secs(5), started_rx)
        .await
        .expect("the first chunk reaches the backend")
        .unwrap();
    client.write_all(b"zz\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let upstream = read_rx.await.unwrap();
    let seen = String::from_utf8_lossy(&upstream.bytes).into_owned();
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert!(
        upstream.closed,
        "the upstream connection is closed: {seen:?}"
    );
    assert!(
        seen.ends_with("5\r\nhello\r\n"),
        "no byte after the good chunk: {seen:?}"
    );
}
