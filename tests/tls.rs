//! TLS termination: certificates chosen by SNI, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use support::*;

fn tls_config(pki: &TestPki, backend: std::net::SocketAddr, min_version: &str) -> String {
    let d = pki.dir.path.display();
    format!(
        "workers: 1
listeners:
  - address: 127.0.0.1:0
    tls:
      min_version: \"{min_version}\"
      certificates:
        - {{cert: {d}/a.example.com.crt, key: {d}/a.example.com.key}}
        - {{cert: {d}/b.example.com.crt, key: {d}/b.example.com.key}}
upstreams:
  app: {{targets: [{{address: \"{backend}\"}}]}}
routes:
  - upstream: app
"
    )
}

/// Completes a TLS handshake with SNI `name`.
async fn handshake(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    pki.client(alpn, versions)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

fn leaf_matches(
    stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    pki: &TestPki,
    name: &str,
) -> bool {
    use rustls::pki_types::pem::PemObject;
    let want =
        rustls::pki_types::CertificateDer::from_pem_file(pki.dir.path.join(format!("{name}.crt")))
            .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0] == want
}

#[tokio::test]
async fn each_sni_name_gets_its_own_certificate() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&tls_config(&pki, backend.addr, "1.2"));
    for name in ["a.example.com", "b.example.com"] {
        let s = handshake(
            &pki,
            gw.addr,
            name,
            &[b"http/1.1"],
            rustls::DEFAULT_VERSIONS,
        )
        .await;
        assert!(
            leaf_matches(&s, &pki, name),
            "{name} got another certificate"
        );
    }
}

#[tokio::test]
async fn tls12_and_tls13_are_both_accepted() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&tls_config(&pki, backend.addr, "1.2"));
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let s = handshake(&pki, gw.addr, "a.example.com", &[b"http/1.1"], &[v]).await;
        assert_eq!(s.get_ref().1.protocol_version(), Some(v.version));
    }
}

#[tokio::test]
async fn min_version_13_refuses_tls12() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&tls_config(&pki, backend.addr, "1.3"));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let r = pki
        .client(&[b"http/1.1"], &[&rustls::version::TLS12])
        .connect(ServerName::try_from("a.example.com").unwrap(), tcp)
        .await;
    assert!(
        r.is_err(),
        "a TLS 1.2 handshake must fail on a 1.3-only listener"
    );
}

#[tokio::test]
async fn http1_over_tls_is_proxied_with_forwarded_proto_https() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&tls_config(&pki, backend.addr, "1.2"));
    let s = handshake(
        &pki,
        gw.addr,
        "a.example.com",
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/hello")
        .header("host", "a.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(tx.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "app");
    let seen = backend.requests();
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_proxied() {
    h2_by_alpn_on("hyper").await;
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_served_by_the_native_server() {
    h2_by_alpn_on("native").await;
}

async fn h2_by_alpn_on(server: &str) {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&tls_config(&pki, backend.addr, "1.2").replacen(
        "  - address: 127.0.0.1:0\n",
        &format!("  - address: 127.0.0.1:0\n    h2_server: {server}\n"),
        1,
    ));
    let s = handshake(
        &pki,
        gw.addr,
        "b.example.com",
        &[b"h2", b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://b.example.com/x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let got = collect(resp).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "app");
    }
    assert_eq!(backend.count(), 3);
    assert_eq!(backend.requests()[0].headers["host"], "b.example.com");
}

#[tokio::test]
async fn certificates_are_read_again_on_reload() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let path = pki.dir.path.join("gateway.yaml");
    std::fs::write(&path, tls_config(&pki, backend.addr, "1.2")).unwrap();
    let gw = TestGateway::start_file(&path);
    let first = handshake(
        &pki,
        gw.addr,
        "a.example.com",
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    assert!(leaf_matches(&first, &pki, "a.example.com"));

    // Replace a.example.com's certificate in place with one from another CA, then reload.
    let renewed = TestPki::new(&["a.example.com"]);
    for ext in ["crt", "key"] {
        std::fs::copy(
            renewed.dir.path.join(format!("a.example.com.{ext}")),
            pki.dir.path.join(format!("a.example.com.{ext}")),
        )
        .unwrap();
    }
    gw.shared().reload().unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let s = renewed
        .client(&[b"http/1.1"], rustls::DEFAULT_VERSIONS)
        .connect(ServerName::try_from("a.example.com").unwrap(), tcp)
        .await
        .expect("the renewed certificate (from another CA) is served after the reload");
    assert!(leaf_matches(&s, &pki, "a.example.com"));
}

#[tokio::test]
async fn a_sticky_cookie_issued_over_tls_is_secure_by_default() {
    let pki = TestPki::new(&["a.example.com", "b.example.com"]);
    let backend = Backend::named("app").await;
    let yaml = tls_config(&pki, backend.addr, "1.2").replace(
        "  app: {targets:",
        "  app: {sticky: {same_site: strict}, targets:",
    );
    let gw = TestGateway::start(&yaml);
    let s = handshake(
        &pki,
        gw.addr,
        "a.example.com",
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "a.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(tx.send_request(req).await.unwrap()).await;
    let cookie = got.header("set-cookie").unwrap();
    assert!(cookie.contains("; Secure; SameSite=Strict"), "{cookie}");
}
