//! Malformed HTTP/1.1 requests: each gets its status, the connection closes, and nothing
//! reaches the backend.
#![allow(clippy::unwrap_used)]

mod support;

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
