//! Requests as the handler sees them, and responses as the client gets them.

use super::*;

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn request_reaches_the_handler_with_method_target_version_and_fields() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /a?b=c HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\nX-Two: 1\r\nx-two:  2 \r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status(), 200);
    let got = seen(&log).remove(0);
    assert_eq!(got.method, "GET");
    assert_eq!(got.uri, "/a?b=c");
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.headers["host"], "example.test:8080");
    assert_eq!(got.headers["accept"], "*/*");
    let twos: Vec<_> = got.headers.get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
}

#[tokio::test]
async fn bytes_read_before_serving_begin_the_first_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_shutdown, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = Handler(move |req| {
            let log = log.clone();
            async move {
                let got = read_request(req).await;
                log.lock().unwrap().push(got);
                reply(200, "ok")
            }
        });
        serve(
            Box::new(stream),
            b"GET /sniffed HT".to_vec(),
            SETTINGS,
            svc,
            rx,
        )
        .await;
    });
    let mut c = Client::connect(addr).await;
    c.send(b"TP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    assert_eq!(seen.lock().unwrap()[0].uri, "/sniffed");
}

#[tokio::test]
async fn field_values_keep_obs_text_and_inner_tabs() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tb\r\nX-Empty:\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status(), 200);
    let got = seen(&log).remove(0);
    assert_eq!(got.headers["x-a"].as_bytes(), b"caf\xc3\xa9\tb");
    assert_eq!(got.headers["x-empty"], "");
}

#[tokio::test]
async fn absolute_and_asterisk_targets_reach_the_handler() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status(), 200);
    assert_eq!(c.response(false).await.status(), 200);
    let got = seen(&log);
    assert_eq!(got[0].uri, "http://a.test/x");
    assert_eq!(got[1].uri, "*");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nGET / \0\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"GET /1 0");
    assert_eq!(c.response(false).await.body, b"POST /2 9");
    assert_eq!(c.response(false).await.body, b"GET /3 0");
    assert_eq!(seen(&log)[1].body, b"GET / \0\r\n");
}

#[tokio::test]
async fn leading_empty_lines_are_ignored() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"GET /1 0");
    assert_eq!(c.response(false).await.body, b"GET /2 0");
    assert_eq!(seen(&log).len(), 2);
}

#[tokio::test]
async fn head_split_into_single_bytes_is_dispatched_once_complete() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    for byte in b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n" {
        c.send(&[*byte]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.response(false).await.body, b"GET /a 0");
    assert_eq!(seen(&log)[0].headers["x-a"], "b");
}

#[tokio::test]
async fn chunked_body_with_extensions_and_trailers_is_decoded() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;a=b\r\nwiki\r\n5 ; c = \"d \\\" e\"\r\npedia\r\nE;x\r\n in\r\n\r\nchunks.\r\n0\r\n\
        Expires: never\r\nX-Sum: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.status(), 200);
    assert_eq!(c.response(false).await.body, b"GET /next 0");
    let got = seen(&log).remove(0);
    assert_eq!(got.body, b"wikipedia in\r\n\r\nchunks.");
    let trailers = got.trailers.unwrap();
    assert_eq!(trailers["expires"], "never");
    assert_eq!(trailers["x-sum"], "1");
}

#[tokio::test]
async fn uppercase_chunked_coding_is_decoded() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.status(), 200);
    let got = seen(&log).remove(0);
    assert_eq!(got.body, b"abc");
    assert!(got.trailers.is_none());
}

#[tokio::test]
async fn bad_chunk_arriving_after_dispatch_fails_the_body_and_closes_after_the_answer() {
    // The handler says when it has the first data frame, then reads on.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let server = serve_with(SETTINGS, move |req| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut got = Vec::new();
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame.map(|f| f.into_data()) {
                    Ok(Ok(data)) => got.extend_from_slice(&data),
                    Ok(Err(_)) => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                if let Some(tx) = first_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
            let status = if failed { 400 } else { 200 };
            reply(status, got)
        }
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
        .await;
    // The body streams: the broken chunk comes after the handler has started reading it.
    first_rx.await.unwrap();
    c.send(b"1x\r\ny\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let out = read_to_close(&mut c.s).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    assert!(
        out.ends_with("\r\n\r\nx"),
        "the handler had the first chunk: {out}"
    );
}

#[tokio::test]
async fn client_closing_inside_a_body_fails_it() {
    let (server, log) = recording(SETTINGS).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let out = read_to_close(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let got = seen(&log).remove(0);
    assert!(got.body_failed);
    assert_eq!(got.body, b"abc");
}

#[tokio::test]
async fn http10_request_is_answered_in_http10_and_closed() {
    let (server, log) = recording(SETTINGS).await;
    let out = exchange(server.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(!out.contains("connection:"), "{out}");
    assert_eq!(seen(&log)[0].version, http::Version::HTTP_10);
}

#[tokio::test]
async fn http10_keep_alive_is_kept_and_said() {
    let (server, _) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let first = c.response(false).await;
    assert_eq!(first.field("connection"), Some("keep-alive"));
    c.send(b"GET /2 HTTP/1.0\r\n\r\n").await;
    assert_eq!(c.response(false).await.body, b"GET /2 0");
    assert!(c.closed().await);
}

#[tokio::test]
async fn connection_close_request_gets_close_and_the_connection_ends() {
    let (server, log) = recording(SETTINGS).await;
    let out = exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\0garbage\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    assert_eq!(seen(&log).len(), 1);
}

#[tokio::test]
async fn half_closed_client_gets_the_response_to_its_request() {
    let (server, _) = recording(SETTINGS).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let out = read_to_close(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("GET / 0"), "{out}");
}

/// A server answering every request with `status`, `fields` and `body`.
async fn answering(
    status: u16,
    fields: &'static [(&'static str, &'static str)],
    body: fn() -> TestBody,
) -> Server {
    serve_with(SETTINGS, move |_req| async move {
        let mut resp = Response::new(body());
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (name, value) in fields {
            resp.headers_mut()
                .append(*name, http::HeaderValue::from_static(value));
        }
        resp
    })
    .await
}

/// A body of unknown length: its frames, then the end.
fn streamed(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> TestBody {
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[tokio::test]
async fn known_length_body_gets_a_content_length() {
    let server = answering(200, &[], || full("hello")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.field("content-length"), Some("5"));
    assert_eq!(r.body, b"hello");
    assert!(
        r.field("date").is_some_and(|d| d.ends_with(" GMT")),
        "{}",
        r.head
    );
}

#[tokio::test]
async fn handler_fields_and_date_are_kept() {
    let server = answering(
        201,
        &[("x-a", "1"), ("date", "Sun, 06 Nov 1994 08:49:37 GMT")],
        || full(""),
    )
    .await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 201 Created\r\n"), "{}", r.head);
    assert_eq!(r.field("x-a"), Some("1"));
    assert_eq!(r.field("date"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
    assert_eq!(r.head.matches("date:").count(), 1);
    assert_eq!(r.field("content-length"), Some("0"));
}

#[tokio::test]
async fn unknown_length_body_is_chunked_on_http11() {
    let server = answering(200, &[], || {
        streamed(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::data(Bytes::from("cde"))),
        ])
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.field("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"abcde");
    assert_eq!(c.response(false).await.body, b"abcde");
}

#[tokio::test]
async fn unknown_length_body_is_close_delimited_on_http10() {
    let server = answering(200, &[], || {
        streamed(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::data(Bytes::from("cde"))),
        ])
    })
    .await;
    let out = exchange(
        server.addr,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(!out.contains("transfer-encoding"), "{out}");
    assert!(!out.contains("keep-alive"), "{out}");
    assert!(out.ends_with("\r\n\r\nabcde"), "{out}");
}

#[tokio::test]
async fn announced_trailers_follow_a_chunked_body() {
    let server = answering(200, &[("trailer", "x-sum")], || {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("7"));
        trailers.insert("x-other", http::HeaderValue::from_static("no"));
        streamed(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::trailers(trailers)),
        ])
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.body, b"ab[trailer x-sum: 7]");
}

#[tokio::test]
async fn response_to_head_has_no_body_but_says_its_length() {
    let server = answering(200, &[], || full("hello")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let head = c.response(true).await;
    assert_eq!(head.field("content-length"), Some("5"));
    assert_eq!(c.response(false).await.body, b"hello");
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_or_length() {
    for status in [204u16, 304] {
        let server = answering(status, &[], || full("ignored")).await;
        let mut c = Client::connect(server.addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!(r.status(), status);
        assert_eq!(r.field("content-length"), None, "{}", r.head);
        assert_eq!(
            c.response(false).await.status(),
            status,
            "the next response follows at once"
        );
    }
}

#[tokio::test]
async fn body_shorter_than_its_content_length_cuts_the_connection() {
    let server = answering(200, &[("content-length", "10")], || {
        streamed(vec![Ok(Frame::data(Bytes::from("abc")))])
    })
    .await;
    let out = exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(out.ends_with("\r\n\r\nabc"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}

#[tokio::test]
async fn failing_body_ends_the_chunked_response_without_its_last_chunk() {
    let server = answering(200, &[], || {
        streamed(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Err(std::io::Error::other("upstream reset")),
        ])
    })
    .await;
    let out = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(out.ends_with("\r\n\r\n2\r\nab\r\n"), "{out:?}");
}

#[tokio::test]
async fn expect_continue_gets_100_when_the_body_is_read() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.head, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"abc").await;
    assert_eq!(c.response(false).await.body, b"POST / 3");
    assert_eq!(seen(&log)[0].body, b"abc");
}

#[tokio::test]
async fn expect_continue_chunked_request_is_dispatched_before_its_body() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.status(), 100);
    c.send(b"2\r\nab\r\n0\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    assert_eq!(seen(&log)[0].body, b"ab");
}

#[tokio::test]
async fn expect_continue_answered_without_the_body_gets_no_100_and_closes() {
    let server = answering(401, &[], || full("no")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.field("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn expect_continue_body_sent_anyway_is_drained_and_the_connection_kept() {
    let server = answering(401, &[], || full("no")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 401, "no 100 first: {}", r.head);
    assert_eq!(r.field("connection"), None);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 401);
}

#[tokio::test]
async fn small_unread_body_is_drained_and_the_connection_kept() {
    let server = answering(200, &[], || full("ok")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.field("connection"), None);
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.body, b"ok");
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.body, b"ok");
}

#[tokio::test]
async fn large_unread_body_closes_the_connection() {
    let server = answering(413, &[], || full("too big")).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\nabc")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.field("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn body_kept_past_its_exchange_reads_nothing_more() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve_with(SETTINGS, move |req: Request<DownstreamBody>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(req.into_body());
            reply(200, "kept")
        }
    })
    .await;
    let mut rx = rx;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab")
        .await;
    assert_eq!(c.response(false).await.body, b"kept");
    let mut body = rx.recv().await.unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.body, b"kept");
    assert!(
        body.frame().await.unwrap().is_err(),
        "a stale body reads nothing"
    );
}
