//! HTTP/2 conformance at the frame level: hand-built frames against a real gateway, each
//! answered with the stream or connection error RFC 9113 names for it, including after the
//! gateway has already answered the request; the HTTP/2 listener modes and settings. Every
//! case runs once per HTTP/2 server: hyper's behind the guard, and the gateway's own.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::h2raw::*;
use support::*;

/// Runs each named test once per HTTP/2 server: `name::hyper` and `name::native`.
macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn hyper() {
                super::$name("hyper").await
            }
            #[tokio::test]
            async fn native() {
                super::$name("native").await
            }
        }
    )*};
}

/// `/app` goes to the backend; anything else gets the gateway's own 404 at once. `server`
/// is the listener's HTTP/2 server (`hyper` or `native`): every test runs against both.
fn gateway(backend: SocketAddr, listener: &str, server: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\n    h2_server: {server}\n{listener}admin:\n  address: \"127.0.0.1:0\"\nupstreams:\n  app:\n    targets:\n      - address: \"{backend}\"\nroutes:\n  - match: {{path: {{prefix: /app}}}}\n    upstream: app\n"
    ))
}

/// A backend that answers at once, without reading the request body.
async fn early_backend() -> Backend {
    Backend::start(false, |_| async { text(StatusCode::OK, "early") }).await
}

/// A client that opened stream 1 with a POST declaring `content_length` bytes, sent
/// `sent` of them, and has read the complete response (a 404 of the gateway's own, or the
/// backend's early answer on `/app`).
async fn answered_early(gw: &TestGateway, path: &str, content_length: usize, sent: usize) -> H2Raw {
    let mut c = H2Raw::connect(gw.addr).await;
    c.headers(1, &request_block("POST", path, Some(content_length)), false)
        .await;
    if sent > 0 {
        c.send(DATA, 0, 1, &vec![b'x'; sent]).await;
    }
    let end = c.response_end(1).await;
    assert!(
        end.is_some(),
        "a complete response before the body ended: {:?}",
        c.seen
    );
    c
}

// ----- item: stream errors after an early response -----

async fn body_longer_than_content_length_after_an_early_response_is_a_stream_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 10, 4).await;
    c.send(DATA, END_STREAM, 1, &[b'y'; 20]).await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn body_shorter_than_content_length_after_an_early_response_is_a_stream_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 10, 4).await;
    c.send(DATA, END_STREAM, 1, b"yy").await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn body_shorter_than_content_length_after_an_upstream_early_answer_is_a_stream_error(
    server: &str,
) {
    let backend = early_backend().await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/app/upload", 10, 4).await;
    c.send(DATA, END_STREAM, 1, b"yy").await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn second_headers_without_end_stream_after_an_early_response_is_a_stream_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 10, 10).await;
    c.headers(1, &literal("x-trailer", "1"), false).await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn frame_over_the_maximum_size_after_an_early_response_is_a_frame_size_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 100_000, 0).await;
    // SETTINGS_MAX_FRAME_SIZE is the default 16,384: one byte more.
    c.send(DATA, 0, 1, &vec![b'x'; 16_385]).await;
    assert_eq!(
        c.goaway().await,
        Ending::GoAway(FRAME_SIZE_ERROR),
        "{:?}",
        c.seen
    );
}

async fn window_update_overflowing_a_stream_window_is_a_flow_control_error(server: &str) {
    // The response is larger than the client's connection window, so it is still being
    // sent when the stream's window overflows.
    let backend = Backend::start(false, |_| async {
        http::Response::new(full(bytes::Bytes::from(vec![b'x'; 100_000])))
    })
    .await;
    let gw = gateway(backend.addr, "", server);
    let mut c = H2Raw::connect_with(gw.addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]).await;
    c.headers(1, &request_block("GET", "/app", None), true)
        .await;
    c.until(|f| f.kind == HEADERS && f.stream == 1)
        .await
        .unwrap();
    c.send(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes())
        .await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(FLOW_CONTROL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn window_update_overflowing_the_connection_window_is_a_flow_control_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 10, 0).await;
    c.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    assert_eq!(
        c.goaway().await,
        Ending::GoAway(FLOW_CONTROL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn rest_of_the_body_after_an_early_response_is_read_and_the_stream_closes_cleanly(
    server: &str,
) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = answered_early(&gw, "/nowhere", 10, 4).await;
    c.send(DATA, END_STREAM, 1, b"yyyyyy").await;
    // The stream ended normally on both sides: nothing ends it, the connection serves on.
    c.send(PING, 0, 0, b"pingpong").await;
    let pong = c.until(|f| f.kind == PING && f.has(ACK)).await;
    assert!(pong.is_some(), "{:?}", c.seen);
    assert!(
        !c.seen
            .iter()
            .any(|f| f.kind == RST_STREAM || f.kind == GOAWAY),
        "no reset nor GOAWAY for an honest body: {:?}",
        c.seen
    );
}

// ----- item: error codes -----

async fn initial_window_size_over_the_maximum_is_a_flow_control_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = H2Raw::connect(gw.addr).await;
    c.send(
        SETTINGS,
        0,
        0,
        &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x8000_0000)]),
    )
    .await;
    assert_eq!(
        c.goaway().await,
        Ending::GoAway(FLOW_CONTROL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn initial_window_size_at_the_maximum_is_accepted(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = H2Raw::connect(gw.addr).await;
    c.send(
        SETTINGS,
        0,
        0,
        &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]),
    )
    .await;
    let ack = c
        .until(|f| f.kind == SETTINGS && f.has(ACK) || f.kind == GOAWAY)
        .await;
    assert_eq!(ack.map(|f| f.kind), Some(SETTINGS), "{:?}", c.seen);
}

async fn ping_of_the_wrong_length_is_a_frame_size_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    for payload in [&b"short"[..], &[0; 9][..], &[][..]] {
        let mut c = H2Raw::connect(gw.addr).await;
        c.send(PING, 0, 0, payload).await;
        assert_eq!(
            c.goaway().await,
            Ending::GoAway(FRAME_SIZE_ERROR),
            "PING of {} bytes: {:?}",
            payload.len(),
            c.seen
        );
    }
}

async fn fixed_size_frames_of_the_wrong_length_are_frame_size_errors(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "WINDOW_UPDATE of 3 bytes",
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
        ),
        (
            "RST_STREAM of 5 bytes",
            frame(RST_STREAM, 0, 1, &[0, 0, 0, 0, 8]),
        ),
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]),
        ),
        (
            "SETTINGS ACK with a payload",
            frame(SETTINGS, ACK, 0, &[0; 6]),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = H2Raw::connect(gw.addr).await;
        c.write(&bytes).await;
        assert_eq!(
            c.goaway().await,
            Ending::GoAway(FRAME_SIZE_ERROR),
            "{what}: {:?}",
            c.seen
        );
    }
}

async fn dynamic_table_size_update_above_the_limit_is_a_compression_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = H2Raw::connect(gw.addr).await;
    // A size update to 4097 (the advertised SETTINGS_HEADER_TABLE_SIZE is 4096): 5-bit
    // prefix 31, then 4066 as a varint.
    let mut block = vec![0x3f, 0xe2, 0x1f];
    block.extend(request_block("GET", "/app", None));
    c.headers(1, &block, true).await;
    assert_eq!(
        c.goaway().await,
        Ending::GoAway(COMPRESSION_ERROR),
        "{:?}",
        c.seen
    );
    assert_eq!(backend.count(), 0);
}

async fn dynamic_table_size_update_within_the_limit_is_accepted(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = H2Raw::connect(gw.addr).await;
    // A size update to 0, then the request.
    let mut block = vec![0x20];
    block.extend(request_block("GET", "/app", None));
    c.headers(1, &block, true).await;
    let end = c.response_end(1).await;
    assert!(end.is_some(), "{:?}", c.seen);
    assert_eq!(backend.count(), 1);
}

/// Sends a POST to `/app` with a 2-byte body and then `trailers` as its trailer section,
/// all in one write.
async fn with_trailers(gw: &TestGateway, trailers: &[u8]) -> H2Raw {
    let mut c = H2Raw::connect(gw.addr).await;
    let mut wire = frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block("POST", "/app", Some(2)),
    );
    wire.extend(frame(DATA, 0, 1, b"hi"));
    wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers));
    c.write(&wire).await;
    c
}

async fn trailers_with_pseudo_header_fields_are_refused_and_not_forwarded(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let path = [0x84]; // `:path /`, static entry 4
    let literal_name = [&[0x00, 0x05][..], b":path", &[0x01, b'/']].concat();
    // `:path` Huffman-coded (RFC 7541 appendix B): `:` 1011100, `p` 101011, `a` 00011,
    // `t` 01001, `h` 100111, then ones to the octet.
    let huffman_name = [0x00, 0x84, 0xb9, 0x58, 0xd3, 0x3f, 0x01, b'/'];
    for (what, first) in [
        ("static", &path[..]),
        ("literal", &literal_name[..]),
        ("huffman", &huffman_name[..]),
    ] {
        let mut trailers = first.to_vec();
        trailers.extend(literal("x-trailer", "1"));
        let mut c = with_trailers(&gw, &trailers).await;
        let ending = c.ending(1).await;
        // A malformed request is a stream error (RFC 9113 §8.1.1), which hyper's guard
        // makes a connection error; the native server resets the stream only.
        let expected = match server {
            "native" => Ending::Reset(PROTOCOL_ERROR),
            _ => Ending::GoAway(PROTOCOL_ERROR),
        };
        assert_eq!(ending, expected, "{what}: {:?}", c.seen);
    }
    assert_eq!(
        backend.count(),
        0,
        "the malformed request reached the backend"
    );
}

async fn trailers_with_a_pseudo_header_field_after_a_regular_one_are_refused(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut trailers = literal("x-trailer", "1");
    trailers.push(0x84);
    let mut c = with_trailers(&gw, &trailers).await;
    assert_eq!(
        c.ending(1).await,
        Ending::Reset(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
}

async fn trailers_with_regular_fields_are_accepted(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "", server);
    let mut c = with_trailers(&gw, &literal("x-trailer", "1")).await;
    assert!(c.response_end(1).await.is_some(), "{:?}", c.seen);
    assert!(
        !c.seen
            .iter()
            .any(|f| f.kind == RST_STREAM || f.kind == GOAWAY),
        "{:?}",
        c.seen
    );
    assert_eq!(backend.count(), 1);
}

// ----- item: listener modes and settings -----

async fn h2c_only_listener_answers_http1_with_goaway_protocol_error(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "    h2c: only\n", server);
    let mut c = H2Raw::bare(gw.addr).await;
    c.write(b"GET /app HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        c.goaway().await,
        Ending::GoAway(PROTOCOL_ERROR),
        "{:?}",
        c.seen
    );
    assert!(c.closed().await);
    assert_eq!(backend.count(), 0);
}

async fn h2c_only_listener_serves_prior_knowledge_http2(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "    h2c: only\n", server);
    let mut c = H2Raw::connect(gw.addr).await;
    c.headers(1, &request_block("GET", "/app", None), true)
        .await;
    let end = c.response_end(1).await;
    assert!(end.is_some(), "{:?}", c.seen);
    assert_eq!(backend.count(), 1);
}

async fn h2c_listener_still_serves_http1_beside_prior_knowledge(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "    h2c: true\n", server);
    let reply = raw(
        gw.addr,
        b"GET /app HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), 200, "{reply}");
}

async fn idle_http2_connection_is_closed_with_goaway_after_the_idle_timeout(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        "    limits:\n      h2_idle_timeout: 300ms\n",
        server,
    );
    let mut c = H2Raw::connect(gw.addr).await;
    c.headers(1, &request_block("GET", "/app", None), true)
        .await;
    assert!(c.response_end(1).await.is_some(), "{:?}", c.seen);
    // The idle clock started when the response was sent, a little before this.
    let started = std::time::Instant::now();
    assert_eq!(c.goaway().await, Ending::GoAway(NO_ERROR), "{:?}", c.seen);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "closed before the idle timeout: {:?}",
        started.elapsed()
    );
    assert!(c.closed().await, "the connection closes after the GOAWAY");
}

async fn http2_connection_with_an_open_stream_is_not_idle(server: &str) {
    let backend = Backend::start(false, |_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        text(StatusCode::OK, "slow")
    })
    .await;
    let gw = gateway(
        backend.addr,
        "    limits:\n      h2_idle_timeout: 200ms\n",
        server,
    );
    let mut c = H2Raw::connect(gw.addr).await;
    c.headers(1, &request_block("GET", "/app", None), true)
        .await;
    let end = c.response_end(1).await;
    assert!(end.is_some(), "{:?}", c.seen);
    assert!(
        !c.seen.iter().any(|f| f.kind == GOAWAY),
        "GOAWAY while a request was open: {:?}",
        c.seen
    );
}

async fn advertised_settings_follow_the_listener_limits(server: &str) {
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        "    limits:\n      h2_max_concurrent_streams: 7\n      h2_initial_stream_window: 131072\n      h2_initial_connection_window: 4194304\n      max_header_bytes: 8192\n",
        server,
    );
    let mut c = H2Raw::bare(gw.addr).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    c.write(&hello).await;
    let s = c
        .until(|f| f.kind == SETTINGS && !f.has(ACK))
        .await
        .unwrap();
    let s = s.settings();
    assert!(s.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 7)), "{s:?}");
    assert!(
        s.contains(&(SETTINGS_INITIAL_WINDOW_SIZE, 131_072)),
        "{s:?}"
    );
    assert!(s.contains(&(SETTINGS_MAX_HEADER_LIST_SIZE, 8192)), "{s:?}");
    // The connection window grows from the RFC's 65,535 with a WINDOW_UPDATE on stream 0.
    let grow = c
        .until(|f| f.kind == WINDOW_UPDATE && f.stream == 0)
        .await
        .unwrap();
    assert_eq!(grow.word(0), 4_194_304 - 65_535);
}

both_servers!(
    body_longer_than_content_length_after_an_early_response_is_a_stream_error,
    body_shorter_than_content_length_after_an_early_response_is_a_stream_error,
    body_shorter_than_content_length_after_an_upstream_early_answer_is_a_stream_error,
    second_headers_without_end_stream_after_an_early_response_is_a_stream_error,
    frame_over_the_maximum_size_after_an_early_response_is_a_frame_size_error,
    window_update_overflowing_a_stream_window_is_a_flow_control_error,
    window_update_overflowing_the_connection_window_is_a_flow_control_error,
    rest_of_the_body_after_an_early_response_is_read_and_the_stream_closes_cleanly,
    initial_window_size_over_the_maximum_is_a_flow_control_error,
    initial_window_size_at_the_maximum_is_accepted,
    ping_of_the_wrong_length_is_a_frame_size_error,
    fixed_size_frames_of_the_wrong_length_are_frame_size_errors,
    dynamic_table_size_update_above_the_limit_is_a_compression_error,
    dynamic_table_size_update_within_the_limit_is_accepted,
    trailers_with_pseudo_header_fields_are_refused_and_not_forwarded,
    trailers_with_a_pseudo_header_field_after_a_regular_one_are_refused,
    trailers_with_regular_fields_are_accepted,
    h2c_only_listener_answers_http1_with_goaway_protocol_error,
    h2c_only_listener_serves_prior_knowledge_http2,
    h2c_listener_still_serves_http1_beside_prior_knowledge,
    idle_http2_connection_is_closed_with_goaway_after_the_idle_timeout,
    http2_connection_with_an_open_stream_is_not_idle,
    advertised_settings_follow_the_listener_limits,
);
