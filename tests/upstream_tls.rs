//! TLS to upstream targets (`upstreams.NAME.tls`): certificates verified against `ca_file`,
//! the server name sent as SNI and matched, client certificates, `verify: false`, h2 by ALPN,
//! WebSocket tunnels, pooled connections, health probes, `check` and reload; against real
//! rustls backends on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One listener, an admin listener, upstream `app` with `targets` and `group` (YAML lines
/// under the group, e.g. its `tls` block), and one route to it with `route` under it.
fn gateway_yaml(targets: &[SocketAddr], group: &str, route: &str) -> String {
    let targets: String = targets
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n\
         upstreams:\n  app:\n    targets:\n{targets}{group}routes:\n  - upstream: app\n{route}"
    )
}

/// A `tls` block trusting `pki`'s CA, with `extra` keys (`key: value, ...`) added.
fn tls_block(pki: &TestPki, extra: &str) -> String {
    let ca = pki.file("ca.crt");
    let sep = if extra.is_empty() { "" } else { ", " };
    format!("    tls: {{ca_file: \"{}\"{sep}{extra}}}\n", ca.display())
}

/// A TLS backend with `pki`'s certificate for `name`, answering `app`.
async fn tls_backend(pki: &TestPki, name: &str) -> Backend {
    Backend::start_tls(pki.acceptor(name, &[b"http/1.1"]), |_req| async {
        text(StatusCode::OK, "app")
    })
    .await
}

async fn metrics(gw: &TestGateway) -> String {
    get(gw.admin.unwrap(), "admin", "/metrics").await.text()
}

#[tokio::test]
async fn request_through_a_tls_upstream_verified_by_ca_file_is_proxied() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    let got = get(gw.addr, "api.example.com", "/v1/users").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v1/users");
    assert_eq!(seen[0].headers["host"], "api.example.com");
    assert_eq!(*backend.alpn.lock().unwrap(), [Some(b"http/1.1".to_vec())]);
}

#[tokio::test]
async fn without_server_name_no_sni_is_sent_and_the_ip_is_verified() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
    assert_eq!(*backend.sni.lock().unwrap(), [None]);
}

#[tokio::test]
async fn a_backend_certificate_from_another_ca_gets_502_and_never_reaches_the_handler() {
    let pki = TestPki::new(&[]);
    let foreign = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&foreign, "127.0.0.1").await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(backend.count(), 0);
    assert!(
        eventually(Duration::from_secs(2), || async {
            backend.tls_failures.load(Ordering::SeqCst) == 1
        })
        .await,
        "the backend saw the handshake fail"
    );
}

#[tokio::test]
async fn a_handshake_failure_counts_as_an_upstream_attempt_without_response() {
    let pki = TestPki::new(&[]);
    let foreign = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&foreign, "127.0.0.1").await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::BAD_GATEWAY);
    let text = metrics(&gw).await;
    let line = format!(
        "ferrogate_upstream_requests_total{{upstream=\"app\",target=\"{}\",status=\"0\"}} 1",
        backend.addr
    );
    assert!(text.contains(&line), "{text}");
}

#[tokio::test]
async fn server_name_is_sent_as_sni_and_matched_against_the_certificate() {
    let pki = TestPki::new(&["api.internal"]);
    let backend = tls_backend(&pki, "api.internal").await;
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        &tls_block(&pki, "server_name: api.internal"),
        "",
    ));
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    assert_eq!(
        *backend.sni.lock().unwrap(),
        [Some("api.internal".to_owned())]
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_gets_502() {
    let pki = TestPki::new(&["other.internal"]);
    let backend = tls_backend(&pki, "other.internal").await;
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        &tls_block(&pki, "server_name: api.internal"),
        "",
    ));
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_handshake_that_never_finishes_fails_at_the_connect_timeout() {
    let pki = TestPki::new(&[]);
    // Accepts TCP connections and never answers the ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let gw = TestGateway::start(&gateway_yaml(
        &[addr],
        &format!(
            "    connect_timeout: 300ms
    request_timeout: 10s
{}",
            tls_block(&pki, "")
        ),
        "",
    ));
    let started = std::time::Instant::now();
    let got = get(gw.addr, "a", "/").await;
    let took = started.elapsed();
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A backend (certificate from `server`) that requires a client certificate from `clients`'
/// CA.
async fn mtls_backend(server: &TestPki, clients: &TestPki) -> Backend {
    let acceptor = tls_acceptor(
        &server.file("127.0.0.1.crt"),
        &server.file("127.0.0.1.key"),
        &[b"http/1.1"],
        Some(&clients.file("ca.crt")),
    );
    Backend::start_tls(acceptor, |_req| async { text(StatusCode::OK, "app") }).await
}

#[tokio::test]
async fn the_client_certificate_is_presented_to_a_backend_that_requires_one() {
    let server = TestPki::new(&["127.0.0.1"]);
    let clients = TestPki::new(&["gateway.internal"]);
    let backend = mtls_backend(&server, &clients).await;
    let cert = format!(
        "client_certificate: {{cert: \"{}\", key: \"{}\"}}",
        clients.file("gateway.internal.crt").display(),
        clients.file("gateway.internal.key").display()
    );
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        &tls_block(&server, &cert),
        "",
    ));
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_backend_that_requires_a_client_certificate_refuses_a_gateway_without_one() {
    let server = TestPki::new(&["127.0.0.1"]);
    let clients = TestPki::new(&[]);
    let backend = mtls_backend(&server, &clients).await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&server, ""), ""));
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn twenty_sequential_requests_share_one_tls_connection() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "a", "/").await.text(), "app");
    }
    assert_eq!(backend.count(), 20);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
}

/// A TLS backend that answers one request per connection with keep-alive, then closes the
/// connection (close_notify and FIN) while the gateway holds it idle.
async fn closing_backend(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let acceptor = pki.acceptor("127.0.0.1", &[b"http/1.1"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (acceptor, closed) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request head ended early");
                    head.extend_from_slice(&buf[..n]);
                }
                tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                tls.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                tls.shutdown().await.unwrap();
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test]
async fn an_idle_tls_connection_the_backend_closed_is_not_reused() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let (addr, accepted, closed) = closing_backend(&pki).await;
    let gw = TestGateway::start(&gateway_yaml(&[addr], &tls_block(&pki, ""), ""));
    assert_eq!(get(gw.addr, "a", "/").await.text(), "ok");
    assert!(
        eventually(Duration::from_secs(2), || async {
            closed.load(Ordering::SeqCst) == 1
        })
        .await
    );
    // Let the gateway's worker see the close_notify arrive while the connection is idle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not idempotent: sent on the closed connection it would fail, not be retried.
    let got = request(gw.addr, "POST", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn verify_false_accepts_a_self_signed_backend() {
    let dir = tempdir::Dir::new("self-signed");
    let cert = rcgen::generate_simple_self_signed(vec!["self.example".to_owned()]).unwrap();
    std::fs::write(dir.path.join("self.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path.join("self.key"), cert.signing_key.serialize_pem()).unwrap();
    let acceptor = tls_acceptor(
        &dir.path.join("self.crt"),
        &dir.path.join("self.key"),
        &[b"http/1.1"],
        None,
    );
    let backend = Backend::start_tls(acceptor, |_req| async { text(StatusCode::OK, "app") }).await;
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        "    tls: {verify: false}\n",
        "",
    ));
    let got = get(gw.addr, "a", "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
}

#[tokio::test]
async fn h2_over_tls_reaches_a_backend_that_chose_h2_by_alpn() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = Backend::start_tls(pki.acceptor("127.0.0.1", &[b"h2"]), |req| async move {
        let mut resp = text(StatusCode::OK, "grpc-ish");
        let scheme = req.uri().scheme_str().unwrap_or("none").to_owned();
        resp.headers_mut()
            .insert("x-scheme", scheme.parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        &format!("    protocol: h2\n{}", tls_block(&pki, "")),
        "",
    ));
    let got = get(gw.addr, "a", "/svc/Method").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "grpc-ish");
    assert_eq!(got.header("x-scheme"), Some("https"));
    assert_eq!(*backend.alpn.lock().unwrap(), [Some(b"h2".to_vec())]);
    let seen = backend.requests();
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].uri.path(), "/svc/Method");
}

#[tokio::test]
async fn websocket_echo_runs_through_a_tls_upstream() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend =
        Backend::start_tls(pki.acceptor("127.0.0.1", &[b"http/1.1"]), websocket_echo).await;
    let gw = TestGateway::start(&gateway_yaml(
        &[backend.addr],
        &tls_block(&pki, ""),
        "    websocket: true\n",
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
}

#[tokio::test]
async fn active_health_check_over_tls_marks_a_wrong_ca_target_down() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let foreign = TestPki::new(&["127.0.0.1"]);
    let good = tls_backend(&pki, "127.0.0.1").await;
    let bad = tls_backend(&foreign, "127.0.0.1").await;
    let check = "    health_check:\n      active:\n        path: /healthz\n        interval: 50ms\n        \
                 timeout: 500ms\n        healthy_threshold: 1\n        unhealthy_threshold: 1\n";
    let gw = TestGateway::start(&gateway_yaml(
        &[good.addr, bad.addr],
        &format!("{}{check}", tls_block(&pki, "")),
        "",
    ));
    let healthy = |state: &str, addr: SocketAddr| {
        let json: serde_json::Value = serde_json::from_str(state).unwrap();
        json["upstreams"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["address"] == addr.to_string())
            .map(|t| t["healthy"] == true)
            .unwrap()
    };
    let admin = gw.admin.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            let state = get(admin, "admin", "/upstreams").await.text();
            !healthy(&state, bad.addr) && good.count() >= 2
        })
        .await,
        "the wrong-CA target is marked down while the good one is probed over TLS"
    );
    let state = get(admin, "admin", "/upstreams").await.text();
    assert!(healthy(&state, good.addr), "{state}");
    assert!(good.requests().iter().all(|s| s.uri == "/healthz"));
    assert_eq!(bad.count(), 0);
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
    }
}

#[test]
fn check_lists_three_tls_mistakes_with_their_key_paths() {
    let dir = tempdir::Dir::new("check-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["gateway.internal".to_owned()]).unwrap();
    std::fs::write(dir.path.join("client.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path.join("empty-ca.pem"), "").unwrap();
    let path = dir.path.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: 127.0.0.1:8080}]
upstreams:
  api:
    targets: [{address: 10.0.0.5:443}]
    tls:
      server_name: \"api internal\"
      ca_file: empty-ca.pem
      client_certificate: {cert: client.crt}
routes:
  - upstream: api
",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("3 problem(s)"), "{text}");
    for expected in [
        "upstreams.api.tls.server_name: invalid server name \"api internal\"",
        "upstreams.api.tls.ca_file: no certificate in",
        "upstreams.api.tls.client_certificate.key: required with client_certificate",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// A gateway config file in `dir` with upstream `app` trusting the CA in `ca`.
fn write_config(dir: &Path, backend: SocketAddr, ca: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let yaml = gateway_yaml(
        &[backend],
        &format!("    tls: {{ca_file: \"{}\"}}\n", ca.display()),
        "",
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn a_reload_that_switches_the_ca_file_stops_using_pooled_connections() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let foreign = TestPki::new(&[]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let dir = tempdir::Dir::new("reload-ca");
    let path = write_config(&dir.path, backend.addr, &pki.file("ca.crt"));
    let gw = TestGateway::start_file(&path);
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);

    write_config(&dir.path, backend.addr, &foreign.file("ca.crt"));
    gw.shared().reload().unwrap();
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.count(), 1, "the pooled connection was not used");

    write_config(&dir.path, backend.addr, &pki.file("ca.crt"));
    gw.shared().reload().unwrap();
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reload_that_rewrites_the_ca_file_in_place_takes_effect() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let foreign = TestPki::new(&[]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let dir = tempdir::Dir::new("reload-ca-bytes");
    let ca = dir.path.join("upstream-ca.crt");
    std::fs::copy(pki.file("ca.crt"), &ca).unwrap();
    let path = write_config(&dir.path, backend.addr, &ca);
    let gw = TestGateway::start_file(&path);
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);

    std::fs::copy(foreign.file("ca.crt"), &ca).unwrap();
    gw.shared().reload().unwrap();
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_unchanged_reload_keeps_pooled_tls_connections() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let dir = tempdir::Dir::new("reload-same");
    let path = write_config(&dir.path, backend.addr, &pki.file("ca.crt"));
    let gw = TestGateway::start_file(&path);
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
    gw.shared().reload().unwrap();
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
    assert_eq!(backend.count(), 2);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reload_with_an_unreadable_ca_file_keeps_the_running_config() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(&pki, "127.0.0.1").await;
    let dir = tempdir::Dir::new("reload-bad");
    let path = write_config(&dir.path, backend.addr, &pki.file("ca.crt"));
    let gw = TestGateway::start_file(&path);
    write_config(&dir.path, backend.addr, &dir.path.join("missing.crt"));
    let err = gw.shared().reload().unwrap_err().to_string();
    assert!(
        err.contains("upstreams.app.tls.ca_file: no such file"),
        "{err}"
    );
    assert_eq!(get(gw.addr, "a", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_large_request_body_goes_through_a_tls_upstream_whole() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = Backend::start_tls(pki.acceptor("127.0.0.1", &[b"http/1.1"]), |req| async {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut resp = text(StatusCode::OK, "stored");
        resp.headers_mut()
            .insert("x-received", body.len().to_string().parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(&[backend.addr], &tls_block(&pki, ""), ""));
    let body = Bytes::from(vec![b'x'; 4 << 20]);
    let req = Request::post("/upload")
        .header("host", "a")
        .body(Full::new(body))
        .unwrap();
    let got = send(gw.addr, req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("x-received"), Some("4194304"));
}
