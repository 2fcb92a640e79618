//! The connection over time: keep-alive deadline, graceful shutdown, protocol upgrade.

use super::*;

#[tokio::test]
async fn idle_connection_closes_after_the_keep_alive_timeout() {
    let settings = Settings {
        keepalive_timeout: Duration::from_millis(200),
        ..SETTINGS
    };
    let (server, _) = recording(settings).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    let started = std::time::Instant::now();
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn keep_alive_deadline_restarts_with_each_request() {
    let settings = Settings {
        keepalive_timeout: Duration::from_millis(300),
        ..SETTINGS
    };
    let (server, log) = recording(settings).await;
    let mut c = Client::connect(server.addr).await;
    for _ in 0..4 {
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(c.response(false).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection_at_once() {
    let (server, _) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status(), 200);
    server.shutdown.send(true).unwrap();
    let started = std::time::Instant::now();
    assert!(c.closed().await);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn shutdown_lets_the_response_in_flight_finish_then_closes() {
    let (release, released) = watch::channel(false);
    let server = serve_with(SETTINGS, move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            reply(200, "late")
        }
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown.send(true).unwrap();
    release.send(true).unwrap();
    let r = c.response(false).await;
    assert_eq!(r.body, b"late");
    assert_eq!(r.field("connection"), Some("close"));
    assert!(c.closed().await);
}

/// A server that answers an upgrade request with 101 and then echoes what it reads on the
/// upgraded connection, after the bytes it already had.
async fn upgrading() -> Server {
    serve_with(SETTINGS, |mut req: Request<DownstreamBody>| async move {
        let Some(on) = upgrade::on(&mut req) else {
            return reply(200, "not upgraded");
        };
        tokio::spawn(async move {
            let Some(mut up) = on.upgraded().await else {
                return;
            };
            let mut got = up.read.to_vec();
            let mut buf = [0u8; 64];
            let n = up.io.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            up.io.write_all(&got).await.unwrap();
        });
        Response::builder()
            .status(101)
            .header("upgrade", "raw")
            .header("connection", "upgrade")
            .body(full(""))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn upgrade_hands_over_the_stream_with_the_bytes_read_past_the_head() {
    let server = upgrading().await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n\0early")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 101);
    assert_eq!(r.field("content-length"), None, "{}", r.head);
    assert_eq!(r.field("transfer-encoding"), None, "{}", r.head);
    c.send(b"\r\n\x7flate").await;
    let mut echo = std::mem::take(&mut c.buf);
    while echo.len() < 12 {
        let mut buf = [0u8; 64];
        let n = c.s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the echo");
        echo.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echo, b"\0early\r\n\x7flate");
}

#[tokio::test]
async fn upgrade_answered_without_101_goes_on_with_the_next_request() {
    let (server, log) = recording(SETTINGS).await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.body, b"GET /ws 0");
    assert_eq!(c.response(false).await.body, b"GET /next 0");
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn raw_bytes_after_a_refused_upgrade_are_checked_as_a_request() {
    let (server, _) = recording(SETTINGS).await;
    let out = exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n\0raw\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.ends_with(r#""detail":"control character in request line"}"#),
        "{out}"
    );
}
