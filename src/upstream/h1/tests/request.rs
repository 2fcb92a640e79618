//! What goes on the wire for a request: the head and the body framing.

use http_body_util::{Full, StreamBody};

use super::*;

const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

/// Sends `req` to a server that replies once it has seen `until`; returns what it received.
async fn received<B>(req: Request<B>, until: &'static [u8]) -> Vec<u8>
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let mut req = req.map(boxed);
    let (addr, server) = scripted(until, OK_EMPTY, Then::Drain).await;
    let resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    server.await.unwrap()
}

#[tokio::test]
async fn get_head_is_request_line_then_fields_in_order() {
    let req = Request::get("http://upstream.test/a/b?x=1&y=%20")
        .header("host", "upstream.test")
        .header("X-Request-Id", "abc")
        .header("accept", "*/*")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let got = received(req, b"\r\n\r\n").await;
    assert_eq!(
        got,
        b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nhost: upstream.test\r\nx-request-id: abc\r\naccept: */*\r\n\r\n"
    );
}

#[tokio::test]
async fn empty_path_is_sent_as_slash() {
    let req = Request::get("http://upstream.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let got = received(req, b"\r\n\r\n").await;
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn post_with_empty_body_gets_content_length_zero() {
    let req = Request::post("/submit")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let got = received(req, b"\r\n\r\n").await;
    assert_eq!(got, b"POST /submit HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
}

#[tokio::test]
async fn get_with_empty_body_gets_no_framing_header() {
    let req = Request::delete("/item")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let got = received(req, b"\r\n\r\n").await;
    assert_eq!(got, b"DELETE /item HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn body_of_known_size_gets_content_length() {
    let req = Request::put("/doc")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let got = received(req, b"hello").await;
    assert_eq!(got, b"PUT /doc HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello");
}

#[tokio::test]
async fn declared_content_length_is_sent_as_is() {
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::data(Bytes::from_static(b"de"))),
    ]);
    let req = Request::post("/up")
        .header("content-length", "5")
        .body(StreamBody::new(frames))
        .unwrap();
    let got = received(req, b"abcde").await;
    assert_eq!(got, b"POST /up HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcde");
}

#[tokio::test]
async fn streamed_body_without_length_is_chunked_with_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "f00d".parse().unwrap());
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello "))),
        Ok(Frame::data(Bytes::new())),
        Ok(Frame::data(Bytes::from_static(b"chunked world!!!!"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let req = Request::post("/stream")
        .body(StreamBody::new(frames))
        .unwrap();
    let got = received(req, b"f00d\r\n\r\n").await;
    assert_eq!(
        got,
        &b"POST /stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
           6\r\nhello \r\n11\r\nchunked world!!!!\r\n0\r\nx-checksum: f00d\r\n\r\n"[..]
    );
}

#[tokio::test]
async fn chunked_body_without_trailers_ends_with_last_chunk() {
    let req = Request::post("/s").body(blocks(1, End::Finish)).unwrap();
    let got = received(req, b"\r\n0\r\n\r\n").await;
    let head = b"POST /s HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4000\r\n";
    assert!(got.starts_with(head));
    assert_eq!(got.len(), head.len() + BLOCK.len() + b"\r\n0\r\n\r\n".len());
    assert!(got.ends_with(b"x\r\n0\r\n\r\n"));
}

#[tokio::test]
async fn body_shorter_than_content_length_is_an_error() {
    let (addr, _server) = scripted(b"\r\n\r\n", OK_EMPTY, Then::Drain).await;
    let mut req = Request::post("/")
        .header("content-length", "10")
        .body(Full::new(Bytes::from_static(b"short")))
        .unwrap();
    let failure = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, H1Error::BodyLength(10)),
        "{failure:?}"
    );
    assert!(!failure.untouched, "part of the body was taken");
}

#[tokio::test]
async fn body_longer_than_content_length_is_an_error() {
    let (addr, _server) = scripted(b"never", OK_EMPTY, Then::Drain).await;
    let mut req = Request::post("/")
        .header("content-length", "3")
        .body(Full::new(Bytes::from_static(b"too long")))
        .unwrap();
    let failure = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, H1Error::BodyLength(3)),
        "{failure:?}"
    );
}

#[tokio::test]
async fn invalid_request_content_length_hands_the_request_back() {
    let (addr, _server) = scripted(b"never", OK_EMPTY, Then::Drain).await;
    let mut req = Request::post("/")
        .header("content-length", "-1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let failure = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, H1Error::Request(_)), "{failure:?}");
    assert!(
        failure.untouched,
        "nothing was sent: the request can go elsewhere"
    );
}

#[tokio::test]
async fn failing_request_body_is_reported_as_body_error() {
    let (addr, _server) = scripted(b"never", OK_EMPTY, Then::Drain).await;
    let frames = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("client went away")),
    ]);
    let mut req = Request::post("/")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let failure = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, H1Error::Body(_)), "{failure:?}");
    assert!(!failure.no_response);
}

#[tokio::test]
async fn request_saying_connection_close_leaves_connection_unusable() {
    let (addr, _server) = scripted(
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Drain,
    )
    .await;
    let mut req = Request::get("/")
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut resp = connect(addr)
        .await
        .send(&mut req, &Added::default(), None)
        .await
        .unwrap();
    assert_eq!(collect(resp.body_mut()).await.unwrap().0, b"ok");
    assert!(resp.body_mut().take_conn().is_none());
}
