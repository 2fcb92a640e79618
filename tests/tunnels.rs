//! WebSocket tunnels over their whole life, with a real WebSocket client and server
//! (tungstenite) on both sides of the gateway: idle and lifetime limits, close frames on
//! shutdown, the access-log line written at the end with the bytes relayed, pings, the
//! message-size limit and the open-tunnel limits.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the WebSocket server behind the gateway saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Message(usize),
    Ping,
    Close(Option<u16>),
    /// The connection ended.
    Gone,
}

/// A WebSocket server that echoes messages and reports what it receives.
async fn ws_backend() -> (Backend, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = Backend::start(false, move |mut req| {
        let tx = tx.clone();
        async move {
            let key = req.headers()["sec-websocket-key"].clone();
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(serve_ws(on, tx));
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .header("sec-websocket-accept", accept)
                .body(full(bytes::Bytes::new()))
                .unwrap()
        }
    })
    .await;
    (backend, rx)
}

/// Echoes the messages of the WebSocket on `on` and reports what arrives.
async fn serve_ws(on: hyper::upgrade::OnUpgrade, tx: mpsc::UnboundedSender<Seen>) {
    let io = TokioIo::new(on.await.unwrap());
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(_) | Message::Binary(_) => {
                let _ = tx.send(Seen::Message(m.len()));
                let _ = ws.send(m).await;
            }
            Message::Ping(_) => {
                let _ = tx.send(Seen::Ping);
            }
            Message::Close(f) => {
                let _ = tx.send(Seen::Close(f.map(|f| u16::from(f.code))));
            }
            _ => {}
        }
    }
    let _ = tx.send(Seen::Gone);
}

/// A WebSocket server over prior-knowledge HTTP/2 (RFC 8441): it advertises extended
/// CONNECT and accepts `:protocol websocket` on any path.
async fn h2_ws_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            let svc = hyper::service::service_fn(move |mut req: http::Request<_>| {
                let tx = tx.clone();
                async move {
                    let websocket = req.method() == http::Method::CONNECT
                        && req
                            .extensions()
                            .get::<hyper::ext::Protocol>()
                            .is_some_and(|p| p.as_str() == "websocket");
                    let mut resp = Response::new(full(bytes::Bytes::new()));
                    if websocket {
                        tokio::spawn(serve_ws(hyper::upgrade::on(&mut req), tx));
                    } else {
                        *resp.status_mut() = StatusCode::BAD_REQUEST;
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let mut server =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                server.enable_connect_protocol();
                let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    (addr, rx)
}

/// A gateway with one WebSocket route with `tunnel` settings, logging to a file.
fn gateway(backend: SocketAddr, tunnel: &str, dir: &tempdir::Dir) -> (TestGateway, PathBuf) {
    let log = dir.path.join("access.log");
    let routes =
        format!("  - name: ws\n    upstream: app\n    websocket: true\n    tunnel: {tunnel}\n");
    let yaml = format!(
        "{}access_log:\n  enabled: true\n  target: {}\n",
        config(&[backend], &routes),
        log.display()
    );
    (TestGateway::start(&yaml), log)
}

async fn connect(addr: SocketAddr) -> Client {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends a text message and reads its echo.
async fn echo(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), text);
}

/// Reads until a close frame (answering pings) and returns its code; panics after `limit`.
async fn close_code(ws: &mut Client, limit: Duration) -> Option<u16> {
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("no close frame before the error {e}"),
            }
        }
        panic!("the connection ended without a close frame")
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("a close frame in time")
}

/// Waits for `want` among what the backend reports.
async fn backend_sees(rx: &mut mpsc::UnboundedReceiver<Seen>, want: Seen) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(s) = rx.recv().await {
            if s == want {
                return;
            }
        }
        panic!("the backend stopped reporting before {want:?}");
    });
    found
        .await
        .unwrap_or_else(|_| panic!("the backend never saw {want:?}"));
}

/// The access-log line of the tunnel, once written.
async fn tunnel_line(log: &PathBuf) -> serde_json::Value {
    let mut line = None;
    let written = eventually(Duration::from_secs(5), || {
        let found = std::fs::read_to_string(log).ok().and_then(|t| {
            t.lines()
                .find(|l| l.contains("close_reason"))
                .map(str::to_owned)
        });
        let ok = found.is_some();
        line = found;
        async move { ok }
    })
    .await;
    assert!(written, "the tunnel's log line is written when it ends");
    serde_json::from_str(line.as_deref().unwrap()).unwrap()
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_with_1001_to_both_sides_and_logged_at_its_end() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-idle");
    let (gw, log) = gateway(backend.addr, "{idle_timeout: 300ms}", &dir);
    let mut ws = connect(gw.addr).await;
    let opened = Instant::now();
    echo(&mut ws, "hello").await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(1001)
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(300),
        "closed after {lived:?}"
    );
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
    let line = tunnel_line(&log).await;
    assert_eq!(line["status"], 101);
    assert_eq!(line["close_reason"], "idle");
    // "hello" went up masked (2 + 4 + 5 bytes) and came back unmasked (2 + 5); the
    // gateway's own close frames are not counted.
    assert_eq!(line["bytes_in"], 11);
    assert_eq!(line["bytes_out"], 7);
    assert!(line["duration_ms"].as_f64().unwrap() >= 300.0, "{line}");
    drop(gw);
}

#[tokio::test]
async fn a_busy_tunnel_is_closed_at_its_maximum_lifetime() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-life");
    let (gw, log) = gateway(
        backend.addr,
        "{idle_timeout: 10s, max_lifetime: 600ms}",
        &dir,
    );
    let mut ws = connect(gw.addr).await;
    let opened = Instant::now();
    // Busy all along: the idle limit never applies.
    let code = loop {
        match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => ws.send(Message::text("tick")).await.unwrap(),
        }
        assert!(opened.elapsed() < Duration::from_secs(3), "closed in time");
    };
    assert_eq!(code, Some(1001));
    assert!(opened.elapsed() >= Duration::from_millis(600));
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
    assert_eq!(tunnel_line(&log).await["close_reason"], "lifetime");
}

#[tokio::test]
async fn shutdown_lets_tunnels_run_through_the_drain_then_closes_both_ends_with_1001() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-shutdown");
    let (gw, log) = gateway(backend.addr, "{}", &dir);
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "before").await;
    let drain = Duration::from_millis(800);
    let started = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || gw.shutdown(drain));
    // The tunnel still relays during the drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo(&mut ws, "during the drain").await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(1001)
    );
    let at = started.elapsed();
    assert!(at >= drain, "the close came after the drain, at {at:?}");
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
    // The client answers the close and the gateway's side ends: no error, no reset.
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(3), ws.next()).await,
        Ok(None)
    ));
    stopping.await.unwrap();
    let line = tunnel_line(&log).await;
    assert_eq!(line["close_reason"], "shutdown");
    assert_eq!(line["bytes_in"], (2 + 4 + 6) + (2 + 4 + 16));
    assert_eq!(line["bytes_out"], (2 + 6) + (2 + 16));
}

#[tokio::test]
async fn a_client_close_is_relayed_and_logged_as_the_client_s() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-client");
    let (gw, log) = gateway(backend.addr, "{}", &dir);
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "bye").await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    backend_sees(&mut seen, Seen::Close(Some(1000))).await;
    let line = tunnel_line(&log).await;
    assert_eq!(line["close_reason"], "client");
    drop(gw);
}

#[tokio::test]
async fn a_message_over_the_limit_closes_its_sender_with_1009_and_never_reaches_the_backend() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-big");
    let (gw, log) = gateway(backend.addr, "{max_message_bytes: 1KiB}", &dir);
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "small").await;
    ws.send(Message::binary(vec![7u8; 2000])).await.unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(1009)
    );
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
    assert_eq!(tunnel_line(&log).await["close_reason"], "too_large");
    drop(gw);
    let rest: Vec<Seen> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
    assert!(!rest.contains(&Seen::Message(2000)), "{rest:?}");
}

#[tokio::test]
async fn the_gateway_pings_both_sides_of_a_silent_tunnel() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-ping");
    let (gw, _log) = gateway(backend.addr, "{ping_interval: 200ms}", &dir);
    let mut ws = connect(gw.addr).await;
    let ping = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(Ok(Message::Ping(_))) = ws.next().await {
                return;
            }
        }
    });
    ping.await.expect("the client is pinged");
    backend_sees(&mut seen, Seen::Ping).await;
    // Both sides answer (tungstenite does while it reads): the tunnel stays open over
    // several ping intervals and is still usable.
    let mut pings = 1;
    let listen = tokio::time::timeout(Duration::from_millis(900), async {
        while let Some(m) = ws.next().await {
            match m.unwrap() {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert!(listen.await.is_err(), "the tunnel stayed open");
    assert!(pings >= 2, "pinged again while silent");
    echo(&mut ws, "still here").await;
    drop(gw);
}

#[tokio::test]
async fn tunnels_over_the_per_client_limit_are_refused_with_429_before_the_upgrade() {
    let (backend, _seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-ip");
    let (gw, log) = gateway(backend.addr, "{max_open_per_ip: 2}", &dir);
    let mut first = connect(gw.addr).await;
    let _second = connect(gw.addr).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_eq!(
        backend.count(),
        2,
        "the refused upgrade never reached the backend"
    );
    first.close(None).await.unwrap();
    let reopened = eventually(Duration::from_secs(3), || async {
        tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
            .await
            .is_ok()
    })
    .await;
    assert!(reopened, "a closed tunnel frees its place");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("\"status\":429"), "{text}");
}

#[tokio::test]
async fn tunnels_over_the_route_limit_are_refused_with_503() {
    let (backend, _seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-route");
    let (gw, _log) = gateway(backend.addr, "{max_open: 1}", &dir);
    let _first = connect(gw.addr).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    let metrics = reqwest_free_metrics(gw.admin.unwrap()).await;
    assert!(
        metrics.contains("ferrogate_tunnels_refused_total{route=\"ws\",reason=\"route_limit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrogate_tunnels_open{route=\"ws\"} 1"),
        "{metrics}"
    );
}

/// The admin `/metrics` text.
async fn reqwest_free_metrics(admin: SocketAddr) -> String {
    get(admin, "admin", "/metrics").await.text()
}

/// A masked client frame (RFC 6455 §5.3).
fn client_frame(opcode: u8, payload: &[u8]) -> bytes::Bytes {
    assert!(payload.len() < 126);
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f.into()
}

/// Reads `n` bytes of an HTTP/2 stream's body.
async fn read_h2(recv: &mut h2::RecvStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let data = tokio::time::timeout(Duration::from_secs(3), recv.data())
            .await
            .expect("data in time")
            .expect("the stream stays open")
            .unwrap();
        let _ = recv.flow_control().release_capacity(data.len());
        got.extend_from_slice(&data);
    }
    got
}

/// Opens a WebSocket over HTTP/2 to the gateway (RFC 8441) with the `h2` crate: the client,
/// the response and the stream to send on.
async fn h2_websocket(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    http::Response<h2::RecvStream>,
    h2::SendStream<bytes::Bytes>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut enabled = client.is_extended_connect_protocol_enabled();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !enabled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        enabled = client.is_extended_connect_protocol_enabled();
    }
    assert!(
        enabled,
        "the gateway sends SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{}/chat", addr))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .unwrap();
    let (resp, send) = client.send_request(req, false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(3), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    (client, resp, send)
}

#[tokio::test]
async fn a_websocket_session_runs_over_http2_extended_connect() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-h2");
    let (gw, log) = gateway(backend.addr, "{}", &dir);
    let (mut client, resp, mut send) = h2_websocket(gw.addr).await;
    let mut recv = resp.into_body();
    for text in ["hello over h2", "and again"] {
        send.send_data(client_frame(0x1, text.as_bytes()), false)
            .unwrap();
        let echo = read_h2(&mut recv, 2 + text.len()).await;
        assert_eq!(
            echo[..2],
            [0x81, text.len() as u8],
            "an unmasked text frame"
        );
        assert_eq!(&echo[2..], text.as_bytes());
        backend_sees(&mut seen, Seen::Message(text.len())).await;
    }
    send.send_data(client_frame(0x8, &1000u16.to_be_bytes()), false)
        .unwrap();
    backend_sees(&mut seen, Seen::Close(Some(1000))).await;
    let line = tunnel_line(&log).await;
    assert_eq!(line["close_reason"], "client");
    assert_eq!(line["status"], 200, "the status the client got");
    // The two echoes and the backend's close frame in answer (code only).
    assert_eq!(line["bytes_out"], (2 + 13) + (2 + 9) + (2 + 2));
    // Extended CONNECT for any other protocol is not implemented.
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{}/udp", gw.addr))
        .extension(h2::ext::Protocol::from_static("connect-udp"))
        .body(())
        .unwrap();
    let (resp, _send) = client.send_request(req, false).unwrap();
    assert_eq!(resp.await.unwrap().status(), 501);
    assert_eq!(backend.count(), 1, "only the WebSocket reached the backend");
    drop(gw);
}

#[tokio::test]
async fn a_reload_leaves_open_tunnels_running_on_their_settings() {
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-reload");
    let file = dir.path.join("gateway.yaml");
    let routes = |tunnel: &str| {
        format!("  - name: ws\n    upstream: app\n    websocket: true\n    tunnel: {tunnel}\n")
    };
    std::fs::write(
        &file,
        config(&[backend.addr], &routes("{idle_timeout: 10s}")),
    )
    .unwrap();
    let gw = TestGateway::start_file(&file);
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "before").await;
    std::fs::write(&file, config(&[backend.addr], &routes("{max_open: 5}"))).unwrap();
    assert_eq!(admin_post(gw.admin.unwrap(), "/reload").await, 200);
    echo(&mut ws, "after the reload").await;
    ws.close(None).await.unwrap();
    backend_sees(&mut seen, Seen::Close(None)).await;
}

#[tokio::test]
async fn a_side_that_leaves_the_gateway_s_ping_unanswered_is_taken_as_gone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, mut seen) = ws_backend().await;
    let dir = tempdir::Dir::new("ws-dead");
    let (gw, log) = gateway(backend.addr, "{ping_interval: 200ms}", &dir);
    // A client that completes the handshake and then never answers anything.
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut got));
    read.await
        .expect("the gateway ends the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    let frames = &got[head_end..];
    assert_eq!(frames[..2], [0x89, 0x00], "an empty ping first");
    assert_eq!(frames[2..6], [0x88, 12, 0x03, 0xe9], "then a close 1001");
    assert_eq!(&frames[6..], b"going away");
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
    assert_eq!(tunnel_line(&log).await["close_reason"], "ping_timeout");
}

#[tokio::test]
async fn a_tunnel_over_tls_gets_its_close_frame_before_the_connection_ends() {
    let (backend, mut seen) = ws_backend().await;
    let pki = TestPki::new(&["ws.example.com"]);
    let d = pki.dir.path.display();
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners:
  - address: 127.0.0.1:0
    tls:
      certificates: [{{cert: {d}/ws.example.com.crt, key: {d}/ws.example.com.key}}]
upstreams:
  app: {{targets: [{{address: \"{}\"}}]}}
routes:
  - upstream: app
    websocket: true
    tunnel: {{idle_timeout: 300ms}}
",
        backend.addr
    ));
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("ws.example.com").unwrap();
    let tls = pki
        .client(&[b"http/1.1"], rustls::DEFAULT_VERSIONS)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.example.com/chat", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "over tls");
    let code = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    });
    assert_eq!(code.await.unwrap(), Some(1001));
    backend_sees(&mut seen, Seen::Close(Some(1001))).await;
}

#[tokio::test]
async fn a_websocket_session_reaches_an_http2_upstream_as_an_extended_connect() {
    let (backend, mut seen) = h2_ws_backend().await;
    let dir = tempdir::Dir::new("ws-h2-up");
    let log = dir.path.join("access.log");
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
access_log: {{target: {}}}
upstreams:
  app: {{protocol: h2c, targets: [{{address: \"{backend}\"}}]}}
routes:
  - name: ws
    upstream: app
    websocket: true
",
        log.display()
    ));
    // tungstenite checks the Sec-WebSocket-Accept the gateway made for its key.
    let mut ws = connect(gw.addr).await;
    echo(&mut ws, "to an h2 upstream").await;
    backend_sees(&mut seen, Seen::Message(17)).await;
    ws.close(None).await.unwrap();
    backend_sees(&mut seen, Seen::Close(None)).await;
    let line = tunnel_line(&log).await;
    assert_eq!(line["status"], 101);
    assert_eq!(line["close_reason"], "client");
}

#[tokio::test]
async fn http2_on_both_sides_carries_a_websocket_session() {
    let (backend, mut seen) = h2_ws_backend().await;
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
upstreams:
  app: {{protocol: h2c, targets: [{{address: \"{backend}\"}}]}}
routes:
  - upstream: app
    websocket: true
"
    ));
    let (_client, resp, mut send) = h2_websocket(gw.addr).await;
    let mut recv = resp.into_body();
    send.send_data(client_frame(0x2, b"both h2"), false)
        .unwrap();
    let echo = read_h2(&mut recv, 2 + 7).await;
    assert_eq!(echo, [&[0x82, 7][..], b"both h2"].concat());
    backend_sees(&mut seen, Seen::Message(7)).await;
}

#[tokio::test]
async fn an_http2_upstream_without_extended_connect_answers_the_upgrade_with_502() {
    // An h2c backend that does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL.
    let backend = Backend::start(true, websocket_echo).await;
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
upstreams:
  app: {{protocol: h2c, targets: [{{address: \"{}\"}}]}}
routes:
  - upstream: app
    websocket: true
",
        backend.addr
    ));
    match tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 502);
        }
        other => panic!("expected a 502, got {other:?}"),
    }
}
