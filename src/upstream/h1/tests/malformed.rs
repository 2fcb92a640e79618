//! Responses a gateway must refuse: each gives an error, never a guessed body.

use super::*;

/// The error of a GET answered with `reply`, whether the head or the body carries it.
async fn error_of(reply: &'static [u8]) -> H1Error {
    error_with(reply, H1Limits::default()).await
}

async fn error_with(reply: &'static [u8], limits: H1Limits) -> H1Error {
    match fetch_with(reply, limits).await {
        Ok((resp, data)) => panic!("accepted: {resp:?} {data:?}"),
        Err(e) => e,
    }
}

fn is_malformed(e: &H1Error) -> bool {
    matches!(e, H1Error::Malformed(_))
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn two_different_content_lengths_are_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn content_length_list_of_different_values_is_refused() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabcd").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn repeated_identical_content_lengths_are_accepted() {
    let (_, data) =
        fetch(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\nabc")
            .await
            .unwrap();
    assert_eq!(data, b"abc");
}

#[tokio::test]
async fn non_numeric_content_length_is_refused() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 3x\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\nabc",
    ] {
        let e = error_of(reply).await;
        assert!(is_malformed(&e), "{e:?}");
    }
}

#[tokio::test]
async fn invalid_chunk_size_is_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            .await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn chunk_size_overflowing_64_bits_is_refused() {
    let e = error_of(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\nabc\r\n",
    )
    .await;
    assert!(
        matches!(e, H1Error::Malformed("chunk size overflows")),
        "{e:?}"
    );
}

#[tokio::test]
async fn over_long_chunk_extension_is_refused() {
    let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=".to_vec();
    reply.extend(std::iter::repeat_n(b'a', 5000));
    reply.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    let e = error_of(reply.leak()).await;
    assert!(
        matches!(e, H1Error::Malformed("chunk-size line too long")),
        "{e:?}"
    );
}

#[tokio::test]
async fn bare_lf_after_chunk_size_is_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn chunk_data_not_followed_by_crlf_is_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n")
            .await;
    assert!(
        matches!(e, H1Error::Malformed("chunk data not ended by crlf")),
        "{e:?}"
    );
}

#[tokio::test]
async fn chunked_applied_twice_is_refused() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn chunked_applied_twice_around_another_coding_is_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip, chunked\r\n\r\n0\r\n\r\n")
            .await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn transfer_encoding_in_http10_response_is_refused() {
    let e = error_of(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn head_over_the_limit_is_refused() {
    let limits = H1Limits {
        max_head_bytes: 1024,
        ..H1Limits::default()
    };
    let mut reply = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    reply.extend(std::iter::repeat_n(b'v', 2000));
    reply.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let e = error_with(reply.leak(), limits).await;
    assert!(matches!(e, H1Error::HeadTooLarge(1024)), "{e:?}");
}

#[tokio::test]
async fn unterminated_head_over_the_limit_is_refused() {
    let limits = H1Limits {
        max_head_bytes: 1024,
        ..H1Limits::default()
    };
    let mut reply = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    reply.extend(std::iter::repeat_n(b'v', 4000));
    let e = error_with(reply.leak(), limits).await;
    assert!(matches!(e, H1Error::HeadTooLarge(1024)), "{e:?}");
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let limits = H1Limits {
        max_headers: 4,
        ..H1Limits::default()
    };
    let e = error_with(
        b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n",
        limits,
    )
    .await;
    assert!(matches!(e, H1Error::TooManyHeaders(4)), "{e:?}");
}

#[tokio::test]
async fn obs_fold_is_refused() {
    let e =
        error_of(b"HTTP/1.1 200 OK\r\nx-folded: first\r\n  second\r\ncontent-length: 0\r\n\r\n")
            .await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn invalid_header_name_is_refused() {
    let e = error_of(b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 0\r\n\r\n").await;
    assert!(
        matches!(e, H1Error::Malformed("invalid header name")),
        "{e:?}"
    );
}

#[tokio::test]
async fn space_before_colon_is_refused() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ncontent-length : 0\r\n\r\n").await;
    assert!(is_malformed(&e), "{e:?}");
}

#[tokio::test]
async fn invalid_status_line_is_refused() {
    for reply in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
    ] {
        let e = error_of(reply).await;
        assert!(is_malformed(&e), "{e:?}");
    }
}

#[tokio::test]
async fn eof_mid_content_length_body_is_an_error() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf").await;
    assert!(matches!(e, H1Error::Closed), "{e:?}");
}

#[tokio::test]
async fn eof_mid_chunked_body_is_an_error() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel").await;
    assert!(matches!(e, H1Error::Closed), "{e:?}");
}

#[tokio::test]
async fn eof_before_last_chunk_is_an_error() {
    let e = error_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    assert!(matches!(e, H1Error::Closed), "{e:?}");
}

#[tokio::test]
async fn eof_mid_head_is_an_error_with_a_partial_response() {
    let (addr, _server) =
        scripted(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-le", Then::Close).await;
    let failure = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, H1Error::Closed), "{failure:?}");
    assert!(!failure.no_response, "part of a response came back");
    assert!(!failure.untouched, "the upstream may have acted on it");
}
