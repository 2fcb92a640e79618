//! Tests of the strict guard.
#![allow(clippy::unwrap_used)]

use super::*;
use std::future::poll_fn;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

const LIMITS: StrictLimits = StrictLimits {
    max_request_line: 128,
    max_header_bytes: 512,
    max_headers: 8,
    max_chunk_extension: 32,
};

#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Pending,
    Error(io::ErrorKind),
}

fn guard() -> (DuplexStream, StrictIo<DuplexStream>) {
    let (client, server) = duplex(1 << 16);
    (client, StrictIo::new(server, LIMITS))
}

/// One poll with a `room`-byte buffer: None if pending.
async fn poll_sized(io: &mut StrictIo<DuplexStream>, room: usize) -> Option<io::Result<Vec<u8>>> {
    let mut space = vec![0u8; room];
    poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut space);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().to_vec()))),
        }
    })
    .await
}

/// Everything released until the guard stops, and how it stopped. The client's bytes
/// are already in the duplex, so no waiting is involved.
async fn drain(io: &mut StrictIo<DuplexStream>) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    loop {
        match poll_sized(io, 4096).await {
            None => return (out, End::Pending),
            Some(Ok(b)) if b.is_empty() => return (out, End::Eof),
            Some(Ok(b)) => out.extend_from_slice(&b),
            Some(Err(e)) => return (out, End::Error(e.kind())),
        }
    }
}

/// What reaches the client once the server shuts the connection down.
async fn shutdown_output(mut client: DuplexStream, io: &mut StrictIo<DuplexStream>) -> String {
    io.shutdown().await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn released_after_close(request: &[u8]) -> Vec<u8> {
    let (mut client, mut io) = guard();
    client.write_all(request).await.unwrap();
    client.shutdown().await.unwrap();
    let (released, end) = drain(&mut io).await;
    assert_eq!(end, End::Eof);
    assert_eq!(io.rejection(), None);
    released
}

async fn assert_refused(request: &[u8], status: u16) {
    let (mut client, mut io) = guard();
    client.write_all(request).await.unwrap();
    let (released, end) = drain(&mut io).await;
    assert!(
        released.is_empty(),
        "released {:?}",
        String::from_utf8_lossy(&released)
    );
    assert_eq!(end, End::Eof);
    assert_eq!(io.rejection().map(|r| r.status.as_u16()), Some(status));
    let written = shutdown_output(client, &mut io).await;
    let title = StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    assert!(
        written.starts_with(&format!("HTTP/1.1 {status} {title}\r\n")),
        "{written}"
    );
}

macro_rules! refused {
    ($($name:ident: $status:expr, $request:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            assert_refused($request, $status).await;
        }
    )*};
}

refused! {
    content_length_with_transfer_encoding_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    equal_duplicate_content_length_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    content_length_list_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx";
    signed_content_length_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx";
    empty_content_length_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n";
    content_length_overflowing_u64_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n";
    coding_after_chunked_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
    chunked_twice_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n";
    chunked_twice_across_fields_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    empty_transfer_coding_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n";
    unknown_transfer_coding_is_refused_with_501: 501,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n";
    gzip_transfer_coding_is_refused_with_501: 501,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    transfer_encoding_in_http10_is_refused_with_400: 400,
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    obs_fold_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n";
    whitespace_before_first_field_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n";
    bare_cr_in_field_value_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n";
    bare_cr_in_request_line_is_refused_with_400: 400,
        b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n";
    bare_lf_after_request_line_is_refused_with_400: 400,
        b"GET / HTTP/1.1\nHost: a\r\n\r\n";
    bare_lf_after_field_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\n\r\n";
    bare_lf_ending_head_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\n\n";
    nul_in_field_value_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n";
    del_in_field_value_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n";
    escape_in_field_value_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[0m\r\n\r\n";
    nul_in_request_target_is_refused_with_400: 400,
        b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    tab_in_request_line_is_refused_with_400: 400,
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n";
    non_ascii_request_target_is_refused_with_400: 400,
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n";
    whitespace_before_colon_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n";
    empty_field_name_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n";
    non_token_field_name_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n";
    field_line_without_colon_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nXA\r\n\r\n";
    missing_host_in_http11_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n";
    second_host_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n";
    host_with_path_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n";
    empty_host_is_refused_with_400: 400,
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n";
    relative_target_is_refused_with_400: 400,
        b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n";
    asterisk_target_for_get_is_refused_with_400: 400,
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n";
    non_http_absolute_target_is_refused_with_400: 400,
        b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    userinfo_in_absolute_target_is_refused_with_400: 400,
        b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    absolute_target_without_authority_is_refused_with_400: 400,
        b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n";
    fragment_in_target_is_refused_with_400: 400,
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n";
    connect_is_refused_with_501: 501,
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    non_token_method_is_refused_with_400: 400,
        b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n";
    http2_version_is_refused_with_505: 505,
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n";
    garbage_version_is_refused_with_400: 400,
        b"GET / HTXP/1.1\r\nHost: a\r\n\r\n";
    lowercase_version_is_refused_with_400: 400,
        b"GET / http/1.1\r\nHost: a\r\n\r\n";
    http09_request_line_is_refused_with_400: 400,
        b"GET /\r\n\r\n";
    double_space_before_target_is_refused_with_400: 400,
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n";
    double_space_before_version_is_refused_with_400: 400,
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n";
    trailing_space_after_version_is_refused_with_400: 400,
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n";
    five_leading_empty_lines_are_refused_with_400: 400,
        b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    invalid_first_chunk_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    empty_first_chunk_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n";
    chunk_size_of_17_digits_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n";
    junk_after_chunk_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n";
    trailing_space_after_chunk_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n";
    chunk_extension_over_limit_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
    unterminated_chunk_extension_over_limit_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    bare_lf_after_first_chunk_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n";
}

#[tokio::test]
async fn request_line_over_limit_is_refused_with_414() {
    let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
    assert_refused(request.as_bytes(), 414).await;
}

#[tokio::test]
async fn unterminated_request_line_over_limit_is_refused_with_414() {
    let request = format!("GET /{}", "a".repeat(200));
    assert_refused(request.as_bytes(), 414).await;
}

#[tokio::test]
async fn request_line_at_limit_is_accepted() {
    // 128 bytes: "GET /" (5) + 114 + " HTTP/1.1" (9).
    let request = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(114));
    assert_eq!(
        released_after_close(request.as_bytes()).await,
        request.as_bytes()
    );
}

#[tokio::test]
async fn header_section_over_limit_is_refused_with_431() {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(600)
    );
    assert_refused(request.as_bytes(), 431).await;
}

#[tokio::test]
async fn header_section_at_limit_is_accepted() {
    // Section = "Host: a\r\n" (9) + "X-A: " (5) + value + "\r\n" (2) + "\r\n" (2) = 512.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(494)
    );
    assert_eq!(
        released_after_close(request.as_bytes()).await,
        request.as_bytes()
    );
}

#[tokio::test]
async fn too_many_header_fields_are_refused_with_431() {
    let mut request = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for _ in 0..8 {
        request.extend_from_slice(b"X-A: b\r\n");
    }
    request.extend_from_slice(b"\r\n");
    assert_refused(&request, 431).await;
}

#[tokio::test]
async fn refusal_body_is_problem_json_with_detail() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    let written = shutdown_output(client, &mut io).await;
    let body = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"more than one host field"}"#;
    let expected = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(written, expected);
}

#[tokio::test]
async fn simple_get_is_released_unchanged() {
    let request = b"GET /a?b=c HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn pipelined_gets_are_released_unchanged() {
    let request = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn post_with_content_length_then_get_is_released_unchanged() {
    let request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nGET / \0\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn chunked_post_with_extensions_and_trailers_is_released_unchanged() {
    let request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;a=b\r\nwiki\r\n5 ; c = \"d \\\" e\"\r\npedia\r\nE;x\r\n in\r\n\r\nchunks.\r\n0\r\n\
        Expires: never\r\nX-Sum: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn uppercase_transfer_coding_and_absolute_form_are_accepted() {
    let request = b"POST http://a.test/x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn asterisk_form_options_is_accepted() {
    let request = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn http10_request_without_host_is_accepted() {
    let request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn obs_text_and_tab_in_field_value_are_accepted() {
    let request = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tb\r\n\r\n";
    assert_eq!(released_after_close(request).await, request);
}

#[tokio::test]
async fn leading_empty_lines_are_dropped() {
    let released = released_after_close(
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(
        released,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    );
}

#[tokio::test]
async fn head_split_into_single_bytes_is_released_only_when_complete() {
    let request = b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n";
    let (mut client, mut io) = guard();
    for (i, byte) in request.iter().enumerate() {
        client.write_all(&[*byte]).await.unwrap();
        let (released, end) = drain(&mut io).await;
        assert_eq!(end, End::Pending);
        if i + 1 < request.len() {
            assert!(released.is_empty(), "released after byte {i}");
        } else {
            assert_eq!(released, request);
        }
    }
}

#[tokio::test]
async fn chunked_head_is_held_until_first_chunk_size_arrives() {
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (mut client, mut io) = guard();
    client.write_all(head).await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    client.write_all(b"5").await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    client.write_all(b"\r\n").await.unwrap();
    let (released, _) = drain(&mut io).await;
    assert_eq!(released, [&head[..], b"5\r\n"].concat());
}

#[tokio::test]
async fn expect_continue_chunked_head_is_released_without_body() {
    let head =
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (mut client, mut io) = guard();
    client.write_all(head).await.unwrap();
    assert_eq!(drain(&mut io).await, (head.to_vec(), End::Pending));
}

#[tokio::test]
async fn invalid_later_chunk_size_ends_body_with_invalid_data() {
    let (mut client, mut io) = guard();
    let valid = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n";
    client.write_all(valid).await.unwrap();
    client.write_all(b"g\r\nx\r\n0\r\n\r\n").await.unwrap();
    let (released, end) = drain(&mut io).await;
    assert_eq!(released, valid);
    assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
    assert_eq!(io.rejection(), Some(INVALID_CHUNK_SIZE));
}

#[tokio::test]
async fn missing_crlf_after_chunk_data_ends_body_with_invalid_data() {
    let (mut client, mut io) = guard();
    let valid = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx";
    client.write_all(valid).await.unwrap();
    client.write_all(b"yz\r\n0\r\n\r\n").await.unwrap();
    let (released, end) = drain(&mut io).await;
    assert_eq!(released, valid);
    assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
}

#[tokio::test]
async fn framing_field_in_trailers_ends_body_with_invalid_data() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let (_, end) = drain(&mut io).await;
    assert_eq!(end, End::Error(io::ErrorKind::InvalidData));
}

#[tokio::test]
async fn refusal_inside_a_released_body_writes_no_reply() {
    let (mut client, mut io) = guard();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nzz\r\n",
        )
        .await
        .unwrap();
    drain(&mut io).await;
    assert_eq!(shutdown_output(client, &mut io).await, "");
}

#[tokio::test]
async fn refusal_after_pipelined_request_waits_for_its_response() {
    let (mut client, mut io) = guard();
    let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(good).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (good.to_vec(), End::Pending));
    io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nh")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    io.write_all(b"i").await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    let written = shutdown_output(client, &mut io).await;
    assert!(
        written.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 400 Bad Request\r\n"
        ),
        "{written}"
    );
}

#[tokio::test]
async fn refusal_waits_for_end_of_chunked_response() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    io.write_all(b"3\r\nabc\r\n").await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    io.write_all(b"0\r\n\r\n").await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
}

#[tokio::test]
async fn response_to_head_request_has_no_body() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
}

#[tokio::test]
async fn continue_response_does_not_answer_the_request() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nxBAD\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    io.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
}

#[tokio::test]
async fn refusal_gets_no_reply_after_server_said_close() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        shutdown_output(client, &mut io).await,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn bytes_after_connection_close_request_are_never_checked() {
    let (mut client, mut io) = guard();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    client.write_all(request).await.unwrap();
    client.write_all(b"\0garbage\r\n\r\n").await.unwrap();
    assert_eq!(drain(&mut io).await, (request.to_vec(), End::Pending));
    assert_eq!(io.rejection(), None);
}

#[tokio::test]
async fn bytes_after_101_pass_through_unchecked() {
    let (mut client, mut io) = guard();
    let request =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    client.write_all(request).await.unwrap();
    assert_eq!(drain(&mut io).await, (request.to_vec(), End::Pending));
    let frame = b"\x82\x05\0\r\n\n\x7f";
    client.write_all(frame).await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    io.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut io).await, (frame.to_vec(), End::Pending));
    client.write_all(b"\0\0\r").await.unwrap();
    assert_eq!(drain(&mut io).await, (b"\0\0\r".to_vec(), End::Pending));
}

#[tokio::test]
async fn split_101_status_line_still_switches() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n\0raw")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.").await.unwrap();
    io.write_all(b"1 10").await.unwrap();
    io.write_all(b"1 Switching Protocols\r\n\r").await.unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Pending));
    io.write_all(b"\n").await.unwrap();
    assert_eq!(drain(&mut io).await, (b"\0raw".to_vec(), End::Pending));
}

#[tokio::test]
async fn refused_upgrade_resumes_checking() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n\0raw\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    io.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
    assert_eq!(io.rejection(), Some(CONTROL_IN_REQUEST_LINE));
}

#[tokio::test]
async fn vectored_writes_are_followed() {
    let (mut client, mut io) = guard();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n")
        .await
        .unwrap();
    drain(&mut io).await;
    let parts = [
        io::IoSlice::new(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"),
        io::IoSlice::new(b"abc"),
    ];
    let n = poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &parts))
        .await
        .unwrap();
    assert_eq!(n, 41);
    assert_eq!(drain(&mut io).await, (Vec::new(), End::Eof));
}

#[test]
fn chunk_extension_grammar_is_enforced() {
    assert!(is_chunk_ext(b";a"));
    assert!(is_chunk_ext(b" ; a = b ;c=\"x\\\"y\""));
    assert!(!is_chunk_ext(b";"));
    assert!(!is_chunk_ext(b";a="));
    assert!(!is_chunk_ext(b";a=\"open"));
    assert!(!is_chunk_ext(b";a "));
    assert!(!is_chunk_ext(b";a\0"));
}

mod hyper_server {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Serves one connection through the guard; answers with the body length, 400 on a
    /// body error, and echoes raw bytes after a 101.
    fn spawn_server(io: StrictIo<DuplexStream>, body_errors: Arc<AtomicUsize>) {
        let svc = service_fn(move |mut req: http::Request<Incoming>| {
            let body_errors = body_errors.clone();
            async move {
                if req.headers().contains_key(http::header::UPGRADE) {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut raw = TokioIo::new(upgrade.await.unwrap());
                        let mut buf = [0u8; 64];
                        let n = raw.read(&mut buf).await.unwrap();
                        raw.write_all(&buf[..n]).await.unwrap();
                    });
                    let res = http::Response::builder()
                        .status(101)
                        .header("upgrade", "raw")
                        .header("connection", "upgrade")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    return Ok::<_, Infallible>(res);
                }
                let (status, text) = match req.into_body().collect().await {
                    Ok(body) => (200, format!("got {}", body.to_bytes().len())),
                    Err(_) => {
                        body_errors.fetch_add(1, Ordering::SeqCst);
                        (400, "body error".to_owned())
                    }
                };
                let res = http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(text)))
                    .unwrap();
                Ok(res)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades()
                .await;
        });
    }

    #[tokio::test]
    async fn hyper_answers_earlier_request_then_the_refusal() {
        let (mut client, io) = guard();
        spawn_server(io, Arc::default());
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let first = out.find("HTTP/1.1 200 OK").unwrap();
        let second = out.find("HTTP/1.1 400 Bad Request").unwrap();
        assert!(first < second, "{out}");
        assert!(out.contains("got 3"), "{out}");
        assert!(
            out.ends_with(r#""detail":"content-length with transfer-encoding"}"#),
            "{out}"
        );
    }

    #[tokio::test]
    async fn half_closed_client_still_gets_earlier_response_and_refusal() {
        let (mut client, io) = guard();
        spawn_server(io, Arc::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with(r#""detail":"missing host"}"#), "{out}");
    }

    #[tokio::test]
    async fn half_closed_client_gets_response_to_connection_close_request() {
        let (mut client, io) = guard();
        spawn_server(io, Arc::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("got 0"), "{out}");
    }

    #[tokio::test]
    async fn hyper_body_fails_on_bad_later_chunk() {
        let (mut client, io) = guard();
        let errors = Arc::new(AtomicUsize::new(0));
        spawn_server(io, errors.clone());
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n1x\r\ny\r\n0\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(errors.load(Ordering::SeqCst), 1);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.ends_with("body error"), "{out}");
    }

    #[tokio::test]
    async fn hyper_upgrade_carries_raw_bytes() {
        let (mut client, io) = guard();
        spawn_server(io, Arc::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "));
        client.write_all(b"\0\r\n\x7fraw").await.unwrap();
        let mut echo = [0u8; 7];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"\0\r\n\x7fraw");
    }
}

mod valid_requests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Body {
        Empty,
        Length(Vec<u8>),
        Chunked {
            chunks: Vec<Vec<u8>>,
            ext: bool,
            trailer: bool,
        },
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "X-CUSTOM"]);
        let path = "/[a-zA-Z0-9/._~%-]{0,20}";
        let headers = prop::collection::vec(("x-[a-z0-9-]{1,10}", "[ -~]{0,24}"), 0..5);
        let body = prop_oneof![
            Just(Body::Empty),
            prop::collection::vec(any::<u8>(), 0..600).prop_map(Body::Length),
            (
                prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..4),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(chunks, ext, trailer)| Body::Chunked {
                    chunks,
                    ext,
                    trailer
                }),
        ];
        (method, path, headers, body).prop_map(|(method, path, headers, body)| {
            let mut r = format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n");
            for (name, value) in headers {
                r.push_str(&format!("{name}: {value}\r\n"));
            }
            let mut r = r.into_bytes();
            match body {
                Body::Empty => r.extend_from_slice(b"\r\n"),
                Body::Length(bytes) => {
                    r.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes(),
                    );
                    r.extend_from_slice(&bytes);
                }
                Body::Chunked {
                    chunks,
                    ext,
                    trailer,
                } => {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for chunk in chunks {
                        r.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
                        if ext {
                            r.extend_from_slice(b";a=b ; c=\"d e\"");
                        }
                        r.extend_from_slice(b"\r\n");
                        r.extend_from_slice(&chunk);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n");
                    if trailer {
                        r.extend_from_slice(b"x-trailer: yes\r\n");
                    }
                    r.extend_from_slice(b"\r\n");
                }
            }
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn valid_pipelined_requests_are_released_byte_for_byte(
            requests in prop::collection::vec(request(), 1..4),
            writes in prop::collection::vec(1usize..80, 1..16),
            reads in prop::collection::vec(1usize..120, 1..16),
        ) {
            let wire = requests.concat();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let released = runtime.block_on(async {
                let (mut client, mut io) = guard();
                let mut released = Vec::new();
                let (mut pos, mut turn) = (0, 0);
                let mut closed = false;
                let mut stalled = 0;
                loop {
                    if pos < wire.len() {
                        let n = writes[turn % writes.len()].min(wire.len() - pos);
                        client.write_all(&wire[pos..pos + n]).await.unwrap();
                        pos += n;
                    } else if !closed {
                        client.shutdown().await.unwrap();
                        closed = true;
                    }
                    turn += 1;
                    match poll_sized(&mut io, reads[turn % reads.len()]).await {
                        None => {
                            // Let the runtime run: tokio's cooperative budget makes the duplex
                            // answer Pending after enough polls without a yield.
                            tokio::task::yield_now().await;
                            if closed {
                                // Everything was sent: the guard must finish, not wait forever.
                                stalled += 1;
                                assert!(stalled < 1000, "the guard stalled after the client closed");
                            }
                        }
                        Some(Ok(bytes)) if bytes.is_empty() => break,
                        Some(Ok(bytes)) => released.extend_from_slice(&bytes),
                        Some(Err(e)) => panic!("{e}"),
                    }
                }
                assert_eq!(io.rejection(), None);
                released
            });
            prop_assert_eq!(released, wire);
        }
    }
}
