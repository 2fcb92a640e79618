//! Malformed requests through the connection loop: each gets its status in a problem+json
//! answer, the connection closes, and the handler never sees it.

use super::*;

/// Sends `request`; asserts the refusal, the close and an untouched handler.
async fn assert_refused(request: &[u8], status: u16) {
    let (server, seen) = recording(SETTINGS).await;
    let out = exchange(server.addr, request).await;
    let title = http::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    assert!(
        out.starts_with(&format!("HTTP/1.1 {status} {title}\r\n")),
        "{:?} got {out:?}",
        String::from_utf8_lossy(request)
    );
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(out.contains("application/problem+json"), "{out}");
    assert!(seen.lock().unwrap().is_empty(), "the handler saw it");
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
    invalid_third_chunk_size_of_a_buffered_body_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n1x\r\nc\r\n0\r\n\r\n";
    chunk_data_longer_than_its_size_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n";
    missing_crlf_after_later_chunk_data_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n2\r\nbc0\r\n\r\n";
    invalid_later_chunk_extension_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1;=x\r\nb\r\n0\r\n\r\n";
    invalid_last_chunk_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0 x\r\n\r\n";
    non_token_trailer_name_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX(T): 1\r\n\r\n";
    obs_fold_in_trailers_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n 2\r\n\r\n";
    bare_lf_ending_trailers_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\n";
    framing_field_in_trailers_is_refused_with_400: 400,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n";
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
async fn header_section_over_limit_is_refused_with_431() {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "a".repeat(600)
    );
    assert_refused(request.as_bytes(), 431).await;
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
    let (server, _) = recording(SETTINGS).await;
    let out = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    let body = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"more than one host field"}"#;
    let expected = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\nVia: 1.1 ferrogate\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(out, expected);
}

#[tokio::test]
async fn head_not_complete_at_the_header_deadline_is_refused_with_408() {
    let settings = Settings {
        header_timeout: Duration::from_millis(200),
        ..SETTINGS
    };
    let (server, seen) = recording(settings).await;
    let started = std::time::Instant::now();
    let out = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(
        out.ends_with(r#""detail":"request header timeout"}"#),
        "{out}"
    );
    assert!(started.elapsed() >= Duration::from_millis(180));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn chunked_request_waits_for_its_first_chunk_size_under_the_header_deadline() {
    let settings = Settings {
        header_timeout: Duration::from_millis(200),
        ..SETTINGS
    };
    let (server, seen) = recording(settings).await;
    let out = exchange(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn earlier_pipelined_request_is_answered_before_the_refusal() {
    let (server, seen) = recording(SETTINGS).await;
    let out = exchange(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    )
    .await;
    let first = out.find("HTTP/1.1 200 OK").unwrap();
    let second = out.find("HTTP/1.1 400 Bad Request").unwrap();
    assert!(first < second, "{out}");
    assert!(out.contains("POST / 3"), "{out}");
    assert!(
        out.ends_with(r#""detail":"content-length with transfer-encoding"}"#),
        "{out}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn half_closed_client_still_gets_earlier_response_and_refusal() {
    let (server, _) = recording(SETTINGS).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let out = read_to_close(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with(r#""detail":"missing host"}"#), "{out}");
}
