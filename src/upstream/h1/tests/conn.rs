//! Connection life: reuse, staleness, early responses and large bodies in constant memory.

use std::time::{Duration, Instant};

use http_body_util::{Full, StreamBody};

use super::*;

/// Polls `cond` until it holds, for at most a second (the reactor needs a turn or two).
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

fn echo_path(req: Request<hyper::body::Incoming>) -> Response<BoxBody> {
    let path = Bytes::copy_from_slice(req.uri().path().as_bytes());
    Response::new(boxed(Full::new(path)))
}

#[tokio::test]
async fn keep_alive_carries_two_requests_on_one_connection() {
    let (addr, accepted) = hyper_server(echo_path).await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/first"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"/first");
    let mut conn = resp
        .body_mut()
        .take_conn()
        .expect("reusable after a clean end");
    assert!(conn.is_usable());
    let mut resp = conn
        .send(&mut get("/second"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"/second");
    assert!(resp.body_mut().take_conn().is_some());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Counts the upload as it streams in, then answers with the count (chunked: no length).
fn count_upload(req: Request<hyper::body::Incoming>) -> Response<BoxBody> {
    let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let mut body = req.into_body();
        let mut n = 0;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.into_data().map_or(0, |d| d.len());
        }
        let _ = tx.send(n);
    });
    let count = futures_util::stream::once(async move {
        let n = rx.await.unwrap_or(0);
        Ok(Frame::data(Bytes::from(n.to_string())))
    });
    Response::new(boxed(StreamBody::new(Box::pin(count))))
}

#[tokio::test]
async fn keep_alive_works_with_chunked_bodies_both_ways() {
    let (addr, accepted) = hyper_server(count_upload).await;
    let mut req = Request::post("/").body(blocks(2, End::Finish)).unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"32768");
    let conn = resp
        .body_mut()
        .take_conn()
        .expect("reusable after a chunked upload");
    let mut req = Request::post("/").body(blocks(1, End::Finish)).unwrap();
    let mut resp = conn.send(&mut req, &Added::default(), None).await.unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"16384");
    assert!(resp.body_mut().take_conn().is_some());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_close_response_is_not_reused() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\nok",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn http10_response_is_not_reused() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_10);
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn bytes_after_the_response_make_the_connection_unusable() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn unread_body_keeps_the_connection_out_of_the_pool() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Drain,
    )
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/"), &Added::default(), None)
        .await
        .unwrap();
    assert!(
        resp.body_mut().take_conn().is_none(),
        "the body is still unread"
    );
}

#[tokio::test]
async fn idle_connection_closed_by_server_turns_unusable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conn = connect(addr).await;
    let (server_side, _) = listener.accept().await.unwrap();
    assert!(conn.is_usable(), "a fresh idle connection is usable");
    drop(server_side);
    assert!(eventually(|| !conn.is_usable()).await);
}

#[tokio::test]
async fn unsolicited_bytes_make_an_idle_connection_unusable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conn = connect(addr).await;
    let (mut server_side, _) = listener.accept().await.unwrap();
    server_side
        .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        .await
        .unwrap();
    assert!(eventually(|| !conn.is_usable()).await);
}

#[tokio::test]
async fn send_on_a_closed_connection_hands_the_request_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conn = connect(addr).await;
    drop(listener.accept().await.unwrap());
    let mut req = get("/retry-me");
    let failure = conn
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap_err();
    assert!(failure.no_response, "{failure:?}");
    assert!(failure.untouched, "nothing of the request was consumed");
    assert_eq!(req.uri(), "/retry-me");
}

#[tokio::test]
async fn early_final_response_stops_the_upload() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n",
        Then::Drain,
    )
    .await;
    // An upload that would never end: only the early response can stop it.
    let body = blocks(usize::MAX, End::Finish);
    let dropped = body.dropped.clone();
    let mut req = Request::post("/upload").body(body).unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the request body is released"
    );
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"");
    assert!(
        resp.body_mut().take_conn().is_none(),
        "the upload was cut short"
    );
}

#[tokio::test]
async fn early_final_response_is_seen_while_the_upstream_does_not_read() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n\r\ndenied",
        Then::Close,
    )
    .await;
    // 1 MiB the server never reads, then a body that never ends.
    let mut req = Request::post("/upload")
        .body(blocks(64, End::Stall))
        .unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"denied");
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn early_success_response_keeps_the_upload_going() {
    let (addr, accepted) = hyper_server(count_upload).await;
    // hyper answers 200 before reading the body: the upload continues as the body streams.
    let mut req = Request::post("/").body(blocks(256, End::Finish)).unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        collect(resp.body_mut()).await.unwrap().0,
        (256 * BLOCK.len()).to_string().as_bytes()
    );
    let conn = resp
        .body_mut()
        .take_conn()
        .expect("both messages ended cleanly");
    let mut resp = conn
        .send(&mut get("/again"), &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"0");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn success_response_ending_before_the_upload_cuts_it_short() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Drain,
    )
    .await;
    let body = blocks(usize::MAX, End::Finish);
    let dropped = body.dropped.clone();
    let mut req = Request::post("/").body(body).unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the rest of the upload is abandoned"
    );
    assert!(resp.body_mut().take_conn().is_none());
}

#[tokio::test]
async fn large_response_streams_through_a_bounded_buffer() {
    const TOTAL: usize = 64 << 20;
    let (addr, _) = hyper_server(|_req: Request<hyper::body::Incoming>| {
        let frames = futures_util::stream::iter(
            std::iter::repeat_n((), TOTAL / BLOCK.len())
                .map(|()| Ok(Frame::data(Bytes::from_static(&BLOCK)))),
        );
        Response::new(boxed(StreamBody::new(frames)))
    })
    .await;
    let mut resp = connect(addr)
        .await
        .send(&mut get("/big"), &Added::default(), None)
        .await
        .unwrap();
    let mut total = 0;
    let mut largest_buffer = 0;
    while let Some(frame) = resp.body_mut().frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.iter().all(|&b| b == b'x') || data.is_empty());
        total += data.len();
        if let Some(conn) = resp.body().conn_ref() {
            largest_buffer = largest_buffer.max(conn.rbuf.capacity());
        }
    }
    assert_eq!(total, TOTAL);
    assert!(
        largest_buffer < 1 << 20,
        "read buffer grew to {largest_buffer}"
    );
    assert!(resp.body_mut().take_conn().is_some());
}

#[tokio::test]
async fn large_request_body_streams_through_a_bounded_buffer() {
    const FRAMES: usize = 4096;
    let (addr, _) = hyper_server(count_upload).await;
    let mut req = Request::post("/upload")
        .body(blocks(FRAMES, End::Finish))
        .unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    let (data, _) = collect(resp.body_mut()).await.unwrap();
    assert_eq!(data, (FRAMES * BLOCK.len()).to_string().as_bytes());
    let conn = resp.body().conn_ref().expect("kept for reuse");
    assert!(
        conn.wbuf.capacity() < 64 * 1024,
        "write buffer grew to {}",
        conn.wbuf.capacity()
    );
    assert!(conn.rbuf.capacity() < 1 << 20);
}
