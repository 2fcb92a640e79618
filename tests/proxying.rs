//! Proxying: forwarding headers, hop-by-hop rules, keep-alive reuse, upstream errors,
//! WebSocket, server-sent events, h2c and gRPC trailers.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

const ALL: &str = "  - upstream: app\n";

#[tokio::test]
async fn forwarding_headers_are_added_and_client_xff_from_untrusted_peer_is_replaced() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let req = Request::get("/x")
        .header("host", "api.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(gw.addr, req).await;
    assert_eq!(got.status, 200);
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(seen.headers["host"], "api.example.com");
    assert_eq!(seen.headers["via"], "1.1 ferrogate");
    let id = seen.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "a request id is generated");
    assert_eq!(
        got.header("x-request-id"),
        Some(id),
        "and returned to the client"
    );
}

#[tokio::test]
async fn client_xff_is_kept_and_appended_from_a_trusted_proxy() {
    let backend = Backend::named("app").await;
    let yaml = config(&[backend.addr], ALL).replace(
        "  - address: \"127.0.0.1:0\"\n",
        "  - address: \"127.0.0.1:0\"\n    trusted_proxies: [127.0.0.0/8]\n",
    );
    let gw = TestGateway::start(&yaml);
    let req = Request::get("/x")
        .header("host", "a")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "abc-123")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(gw.addr, req).await;
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["x-request-id"], "abc-123",
        "a client request id is propagated"
    );
    assert_eq!(got.header("x-request-id"), Some("abc-123"));
}

/// Sends a request carrying its own copies of every field the gateway sets, through a route
/// that rewrites the host, and returns what the backend saw.
async fn gateway_fields_seen(h2c_upstream: bool, trusted: bool) -> Seen {
    let backend = Backend::start(h2c_upstream, |_| async { text(StatusCode::OK, "ok") }).await;
    let routes = "  - upstream: app\n    rewrite: {host: internal.example}\n";
    let mut yaml = config(&[backend.addr], routes);
    if h2c_upstream {
        yaml = yaml.replace("  app:\n", "  app:\n    protocol: h2c\n");
    }
    if trusted {
        yaml = yaml.replace(
            "  - address: \"127.0.0.1:0\"\n",
            "  - address: \"127.0.0.1:0\"\n    trusted_proxies: [127.0.0.0/8]\n",
        );
    }
    let gw = TestGateway::start(&yaml);
    let got = raw(
        gw.addr,
        b"GET /f HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: 203.0.113.9\r\n\
          X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: front.example\r\nVia: 1.0 edge\r\nX-Request-Id: abc-123\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&got), 200, "{got}");
    backend.requests().remove(0)
}

fn once<'a>(seen: &'a Seen, name: &str) -> &'a str {
    let all: Vec<_> = seen.headers.get_all(name).iter().collect();
    assert_eq!(all.len(), 1, "{name} arrives once: {all:?}");
    all[0].to_str().unwrap()
}

#[tokio::test]
async fn each_gateway_field_reaches_the_upstream_once_whatever_the_client_sent() {
    for h2c in [false, true] {
        let seen = gateway_fields_seen(h2c, false).await;
        assert_eq!(once(&seen, "x-forwarded-for"), "127.0.0.1", "h2c={h2c}");
        assert_eq!(once(&seen, "x-forwarded-proto"), "http");
        assert_eq!(once(&seen, "x-forwarded-host"), "api.example.com");
        assert_eq!(once(&seen, "via"), "1.0 edge, 1.1 ferrogate");
        assert_eq!(once(&seen, "x-request-id"), "abc-123");
        let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
        // Over HTTP/2 the host may travel as the authority instead of a field.
        assert!(
            hosts == ["internal.example"] || h2c && hosts.is_empty(),
            "the rewritten host, once: {hosts:?}"
        );

        let seen = gateway_fields_seen(h2c, true).await;
        assert_eq!(
            once(&seen, "x-forwarded-for"),
            "203.0.113.9, 127.0.0.1",
            "a trusted peer's first X-Forwarded-For line is extended (h2c={h2c})"
        );
        assert_eq!(once(&seen, "x-forwarded-proto"), "https");
        assert_eq!(once(&seen, "x-forwarded-host"), "front.example");
    }
}

#[tokio::test]
async fn hop_by_hop_and_connection_nominated_headers_are_stripped_both_ways() {
    let backend = Backend::start(false, |_req| async {
        let mut r = text(StatusCode::OK, "ok");
        r.headers_mut()
            .insert("connection", "x-internal".parse().unwrap());
        r.headers_mut()
            .insert("x-internal", "secret".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        r
    })
    .await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let reply = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: gzip\r\nProxy-Authorization: Basic eA==\r\nX-Keep: 1\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), 200);
    let lower = reply.to_ascii_lowercase();
    assert!(!lower.contains("x-internal"), "{reply}");
    assert!(!lower.contains("keep-alive"), "{reply}");
    let seen = &backend.requests()[0];
    for h in [
        "x-drop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(!seen.headers.contains_key(h), "{h} reached the backend");
    }
    assert_eq!(seen.headers["x-keep"], "1");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "a", "/").await.status, 200);
    }
    assert_eq!(backend.count(), 20);
    let conns = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        conns, 1,
        "20 sequential requests use one pooled upstream connection"
    );
}

/// A raw HTTP/1.1 upstream that answers the first request on each connection with
/// keep-alive, then reads the second and closes without a reply: what a server closing an
/// idle connection looks like to a request that was already on its way.
async fn closes_after_first_exchange() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                for exchange in 0..2 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    if exchange == 0 {
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        let _ = s.write_all(reply).await;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn idempotent_request_on_a_connection_closed_under_it_goes_again_on_a_fresh_one() {
    let (addr, conns) = closes_after_first_exchange().await;
    let gw = TestGateway::start(&config(&[addr], ALL));
    assert_eq!(get(gw.addr, "a", "/").await.status, 200);
    let again = get(gw.addr, "a", "/").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.text(), "ok");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn post_on_a_connection_closed_under_it_is_not_sent_twice() {
    let (addr, conns) = closes_after_first_exchange().await;
    let gw = TestGateway::start(&config(&[addr], ALL));
    assert_eq!(get(gw.addr, "a", "/").await.status, 200);
    let post = Request::post("/")
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.addr, post).await.status, 502);
    assert_eq!(conns.load(Ordering::SeqCst), 1, "the POST was not repeated");
}

#[tokio::test]
async fn refused_upstream_gives_502_problem_json() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(&config(&[dead], ALL));
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert!(got.text().contains("\"status\":502"));
    assert!(
        !got.text().contains("127.0.0.1"),
        "no internal address leaks"
    );
}

#[tokio::test]
async fn hanging_upstream_gives_504_at_the_request_timeout() {
    let backend = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        text(StatusCode::OK, "late")
    })
    .await;
    let yaml =
        config(&[backend.addr], ALL).replace("  app:\n", "  app:\n    request_timeout: 300ms\n");
    let gw = TestGateway::start(&yaml);
    let t = std::time::Instant::now();
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, 504);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn websocket_echo_passes_through_on_a_websocket_route() {
    let backend = websocket_echo_backend().await;
    let gw = TestGateway::start(&config(
        &[backend.addr],
        "  - upstream: app\n    websocket: true\n",
    ));
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for msg in ["hello", "world"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    let bin = vec![0u8, 1, 2, 255];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bin.clone()))
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().to_vec(), bin);
}

#[tokio::test]
async fn upgrade_is_not_forwarded_on_a_route_without_websocket() {
    let backend = websocket_echo_backend().await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let reply = raw(
        gw.addr,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), 200);
    assert!(reply.ends_with("no upgrade"));
    assert!(!backend.requests()[0].headers.contains_key("upgrade"));
}

#[tokio::test]
async fn upgrade_to_h2c_is_never_tunnelled() {
    let backend = websocket_echo_backend().await;
    let gw = TestGateway::start(&config(
        &[backend.addr],
        "  - upstream: app\n    websocket: true\n",
    ));
    let reply = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), 200);
    let seen = &backend.requests()[0];
    assert!(!seen.headers.contains_key("upgrade"));
    assert!(!seen.headers.contains_key("http2-settings"));
}

#[tokio::test]
async fn server_sent_events_stream_without_buffering() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let backend = Backend::start(false, move |_req| {
        let mut release = release_rx.clone();
        async move {
            let stream = async_stream(move |tx| async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))))
                    .await;
                let _ = release.wait_for(|r| *r).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))))
                    .await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(stream)
                .unwrap()
        }
    })
    .await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/events")
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = tx.send_request(req).await.unwrap().into_body();
    let first = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("the first event arrives while the backend still holds the stream open")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    release_tx.send(true).unwrap();
    let second = body.frame().await.unwrap().unwrap();
    assert_eq!(second.into_data().unwrap(), "data: second\n\n");
}

/// A response body fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> BoxBody
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    StreamBody::new(s).boxed_unsync()
}

/// An HTTP/2 prior-knowledge (h2c) client connection to `addr`.
async fn h2c_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// The client's view of the gateway's response fields, over HTTP/1.1 and h2c, from an
/// upstream that sends `upstream_fields` of its own.
async fn gateway_fields_returned(upstream_fields: &'static [(&'static str, &'static str)]) {
    let backend = Backend::start(false, move |_| async move {
        let mut resp = text(StatusCode::OK, "ok");
        for (name, value) in upstream_fields {
            resp.headers_mut().append(*name, value.parse().unwrap());
        }
        resp
    })
    .await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let via = if upstream_fields.iter().any(|(n, _)| *n == "via") {
        "1.1 backend, 1.1 ferrogate"
    } else {
        "1.1 ferrogate"
    };
    let h1 = send(
        gw.addr,
        Request::get("/f")
            .header("host", "a")
            .header("x-request-id", "client-id")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let mut tx = h2c_client(gw.addr).await;
    let req = Request::get(format!("http://{}/f", gw.addr))
        .header("x-request-id", "client-id")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let h2 = collect(tx.send_request(req).await.unwrap()).await;
    for (got, version) in [(h1, "HTTP/1.1"), (h2, "h2c")] {
        assert_eq!(got.status, 200, "{version}");
        let ids: Vec<_> = got.headers.get_all("x-request-id").iter().collect();
        assert_eq!(
            ids,
            ["client-id"],
            "one request id, the gateway's ({version})"
        );
        let vias: Vec<_> = got.headers.get_all("via").iter().collect();
        assert_eq!(vias, [via], "one Via listing the gateway ({version})");
        assert_eq!(
            got.header("x-extra"),
            upstream_fields.first().map(|_| "kept")
        );
    }
}

#[tokio::test]
async fn each_gateway_field_reaches_the_client_once_whatever_the_upstream_sent() {
    gateway_fields_returned(&[]).await;
    gateway_fields_returned(&[
        ("x-extra", "kept"),
        ("x-request-id", "upstream-id"),
        ("via", "1.1 backend"),
    ])
    .await;
    gateway_fields_returned(&[("x-extra", "kept"), ("x-request-id", "upstream-id")]).await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let mut tx = h2c_client(gw.addr).await;
    let req = Request::get(format!("http://{}/h2", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "app");
    assert_eq!(backend.requests()[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn grpc_over_h2c_keeps_trailers() {
    let backend = Backend::start(true, |req| async move {
        assert_eq!(req.version(), http::Version::HTTP_2);
        let body = async_stream(|tx| async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))))
                .await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "fine".parse().unwrap());
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap()
    })
    .await;
    let yaml = config(&[backend.addr], ALL).replace("  app:\n", "  app:\n    protocol: h2c\n");
    let gw = TestGateway::start(&yaml);
    let mut tx = h2c_client(gw.addr).await;
    let req = Request::post(format!("http://{}/pkg.Svc/Call", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    assert_eq!(backend.requests()[0].headers["te"], "trailers");
}

#[tokio::test]
async fn header_transforms_edit_the_upstream_request_and_every_response_of_the_route() {
    let backend = Backend::start(false, |_req| async {
        let mut resp = text(StatusCode::OK, "user");
        let h = resp.headers_mut();
        h.insert("x-powered-by", "php".parse().unwrap());
        h.insert("server", "apache".parse().unwrap());
        resp
    })
    .await;
    let yaml = format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
upstreams:
  app: {{targets: [{{address: \"{}\"}}]}}
  dead: {{targets: [{{address: \"127.0.0.1:1\"}}]}}
routes:
  - name: users
    match: {{path: {{template: '/users/{{id}}'}}}}
    upstream: app
    request_headers:
      set: {{x-user-id: '{{param.id}}', x-client: 'ip {{client_ip}}', x-route: '{{route}}', x-who: '{{consumer}}'}}
      add: {{x-tag: gateway}}
      remove: [x-debug]
    response_headers:
      set: {{x-trace: 'id={{request_id}}', server: edge}}
      remove: [x-powered-by]
  - name: down
    match: {{path: {{prefix: /down}}}}
    upstream: dead
    response_headers: {{add: {{x-env: prod}}}}
",
        backend.addr
    );
    let gw = TestGateway::start(&yaml);
    let got = request(
        gw.addr,
        "GET",
        "/users/42",
        &[("x-debug", "1"), ("x-tag", "client"), ("x-who", "forged")],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["x-user-id"], "42");
    assert_eq!(seen.headers["x-client"], "ip 127.0.0.1");
    assert_eq!(seen.headers["x-route"], "users");
    assert!(seen.headers.get("x-debug").is_none());
    assert!(
        seen.headers.get("x-who").is_none(),
        "a placeholder without a value leaves the field out, the client's copy too"
    );
    let tags: Vec<_> = seen.headers.get_all("x-tag").iter().collect();
    assert_eq!(tags, ["client", "gateway"]);
    let id = got.header("x-request-id").unwrap();
    assert_eq!(got.header("x-trace"), Some(format!("id={id}").as_str()));
    assert_eq!(got.header("server"), Some("edge"));
    assert!(got.header("x-powered-by").is_none());

    let failed = get(gw.addr, "a", "/down").await;
    assert_eq!(failed.status, 502);
    assert_eq!(
        failed.header("x-env"),
        Some("prod"),
        "the gateway's own answers get them too"
    );
}
