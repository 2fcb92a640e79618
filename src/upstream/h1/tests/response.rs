//! Reading well-formed responses: heads, body lengths, interim and upgrade responses.

use super::*;

#[tokio::test]
async fn content_length_body_is_read_exactly() {
    let (resp, data) =
        fetch(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(data, b"hello");
}

#[tokio::test]
async fn header_values_and_repeated_fields_are_kept() {
    let (resp, _) = fetch(
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX-Empty:\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(resp.headers()["x-empty"], "");
}

#[tokio::test]
async fn connection_options_and_keep_alive_are_read_but_not_kept() {
    let (resp, _) = fetch(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(resp.headers().get("connection").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
}

#[tokio::test]
async fn connection_naming_a_field_is_kept_for_the_proxy_to_strip() {
    let (resp, _) = fetch(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["connection"], "keep-alive, x-hop");
    assert_eq!(resp.headers()["x-hop"], "1");
}

#[tokio::test]
async fn content_length_body_reports_exact_size_hint() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
        Then::Drain,
    )
    .await;
    let resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(3));
}

#[tokio::test]
async fn chunked_body_with_extensions_and_trailers_is_decoded() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n7 ; ext\r\n, world\r\nA\r\n0123456789\r\n\
          0\r\nx-trailer: done\r\nx-other: 2\r\n\r\n",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    let (data, trailers) = collect(resp.body_mut()).await.unwrap();
    assert_eq!(data, b"hello, world0123456789");
    let trailers = trailers.unwrap();
    assert_eq!(trailers["x-trailer"], "done");
    assert_eq!(trailers["x-other"], "2");
    assert!(
        resp.body_mut().take_conn().is_some(),
        "chunked 1.1 response is reusable"
    );
}

#[tokio::test]
async fn chunked_body_without_trailers_yields_no_trailers_frame() {
    let (_, data) =
        fetch(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
    assert_eq!(data, b"abc");
}

#[tokio::test]
async fn close_delimited_body_is_read_to_eof_and_not_reused() {
    let (mut resp, data) =
        fetch(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
            .await
            .unwrap();
    assert_eq!(data, b"until the end");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_read_to_eof() {
    let (mut resp, data) =
        fetch(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nraw bytes")
            .await
            .unwrap();
    assert_eq!(data, b"raw bytes");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn head_response_has_no_body_despite_content_length() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
        Then::Drain,
    )
    .await;
    let mut req = Request::head("/").body(Empty::<Bytes>::new()).unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "1234");
    assert!(resp.body().is_end_stream());
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"");
    assert!(resp.body_mut().take_conn().is_some());
}

#[tokio::test]
async fn no_content_response_has_no_body() {
    let (addr, _server) =
        scripted(b"\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n", Then::Drain).await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.body().is_end_stream());
    assert!(
        resp.body_mut().take_conn().is_some(),
        "taken before any poll"
    );
}

#[tokio::test]
async fn not_modified_response_has_no_body_despite_content_length() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 50\r\n\r\n",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"");
    assert!(resp.body_mut().take_conn().is_some());
}

/// An interim response as relayed: status and fields.
type Relayed = (u16, Vec<(String, String)>);

/// Records the interim responses handed to it.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<Relayed>>);

impl crate::message::Interim for Recorded {
    fn relay(&self, status: http::StatusCode, fields: &HeaderMap) {
        let fields = fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        self.0.lock().unwrap().push((status.as_u16(), fields));
    }

    fn poll_flush(&self, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }
}

#[tokio::test]
async fn interim_responses_are_relayed_in_order_and_the_final_one_is_returned() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Close,
    )
    .await;
    let sink = Recorded::default();
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), Some(&sink))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    let link = ("link".to_owned(), "</style.css>; rel=preload".to_owned());
    assert_eq!(
        *sink.0.lock().unwrap(),
        vec![(102, vec![]), (103, vec![link]), (100, vec![])]
    );
}

#[tokio::test]
async fn continue_and_early_hints_are_skipped_without_a_relay() {
    let (resp, data) = fetch(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("link").is_none(),
        "hints are not merged into the final head"
    );
    assert_eq!(data, b"ok");
}

#[tokio::test]
async fn switching_protocols_gives_the_stream_and_bytes_read_past_the_head() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].ends_with(b"\r\n\r\n"));
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nHELLO")
            .await
            .unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        stream.write_all(b"pong").await.unwrap();
    });
    let mut req = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.body().is_end_stream());
    assert!(resp.body_mut().take_conn().is_none());
    let (mut stream, leftover) = resp.body_mut().take_upgraded().unwrap();
    assert_eq!(leftover, "HELLO");
    stream.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    server.await.unwrap();
}

#[tokio::test]
async fn bare_lf_line_endings_are_accepted_in_the_head() {
    let (resp, data) = fetch(b"HTTP/1.1 200 OK\ncontent-length: 2\nx-a: b\n\nok")
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-a"], "b");
    assert_eq!(data, b"ok");
}

#[tokio::test]
async fn limits_above_the_stack_slots_still_parse() {
    let limits = H1Limits {
        max_headers: 500,
        ..H1Limits::default()
    };
    let (resp, data) = fetch_with(
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok",
        limits,
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-a"], "1");
    assert_eq!(data, b"ok");
}

#[tokio::test]
async fn head_split_across_reads_is_reassembled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await.unwrap();
        // Spaced out so that the parts arrive in separate reads.
        for part in [
            &b"HTTP/1.1 200 OK\r\ncontent-"[..],
            b"length: 4\r\n\r",
            b"\nda",
            b"ta",
        ] {
            stream.write_all(part).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "4");
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"data");
}
