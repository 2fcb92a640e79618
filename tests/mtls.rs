//! Mutual TLS: client certificates verified per listener (`tls.client_auth`, required or
//! optional) and the `mtls` auth method, which takes the caller's identity from the
//! certificate and maps it to a consumer.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;

/// A CA for client certificates, its PEM in `<dir>/<name>.crt`.
struct ClientCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A client certificate and its key, as a TLS client presents them.
struct ClientId {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ClientCa {
    fn new(dir: &Path, name: &str) -> ClientCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} client CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        ClientCa {
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate with common name `cn` and DNS names `dns`.
    fn client(&self, cn: &str, dns: &[&str]) -> ClientId {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientId {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// The gateway's server certificate (for `gw.example`), two client CAs and a backend.
struct Setup {
    pki: TestPki,
    ours: ClientCa,
    foreign: ClientCa,
    alice: ClientId,
    backend: Backend,
}

impl Setup {
    async fn new() -> Setup {
        let pki = TestPki::new(&["gw.example"]);
        let ours = ClientCa::new(&pki.dir.path, "clients");
        let foreign = ClientCa::new(&pki.dir.path, "foreign");
        let alice = ours.client("alice", &["alice.example"]);
        Setup {
            pki,
            ours,
            foreign,
            alice,
            backend: Backend::named("app").await,
        }
    }

    /// A gateway config: one TLS listener with `client_auth` (unless empty), consumers,
    /// methods and routes for the cases below, and `top` added at the top level.
    fn config(&self, client_auth: &str, top: &str) -> String {
        let d = self.pki.dir.path.display();
        let client_auth = if client_auth.is_empty() {
            String::new()
        } else {
            format!("\n      client_auth: {client_auth}")
        };
        format!(
            "workers: 1
{top}listeners:
  - address: 127.0.0.1:0
    tls:
      certificates: [{{cert: {d}/gw.example.crt, key: {d}/gw.example.key}}]{client_auth}
upstreams:
  app: {{targets: [{{address: \"{backend}\"}}]}}
consumers:
  alice: {{groups: [staff], certificate_names: [alice]}}
auth:
  consumer_header: X-Consumer
  methods:
    cert: {{mtls: {{}}}}
    cert-dns: {{mtls: {{consumer_from: san_dns}}}}
routes:
  - {{match: {{path: {{prefix: /open}}}}, upstream: app}}
  - {{match: {{path: {{prefix: /cert}}}}, upstream: app, auth: {{methods: [cert]}}}}
  - {{match: {{path: {{prefix: /dns}}}}, upstream: app, auth: {{methods: [cert-dns]}}}}
  - match: {{path: {{prefix: /staff-denied}}}}
    upstream: app
    auth: {{methods: [cert], deny: {{groups: [staff]}}}}
",
            backend = self.backend.addr,
        )
    }

    fn start(&self, mode: &str) -> TestGateway {
        let d = self.pki.dir.path.display();
        TestGateway::start(&self.config(&format!("{{ca_file: {d}/clients.crt, mode: {mode}}}"), ""))
    }

    /// A TLS client trusting the gateway's CA, presenting `id` if given.
    fn connector(&self, id: Option<&ClientId>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match id {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), PrivateKeyDer::from(id.key.clone_key()))
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// GET `path` over a fresh TLS connection (HTTP/1.1). `Err` when the handshake or the
/// exchange fails: with TLS 1.3 the server refuses a client certificate only after the
/// client has finished its side of the handshake, so the refusal shows on the first request.
async fn try_get(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
) -> Result<Got, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("gw.example").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "gw.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(collect(resp).await)
}

async fn status(addr: SocketAddr, connector: &tokio_rustls::TlsConnector, path: &str) -> u16 {
    try_get(addr, connector, path)
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test]
async fn required_mode_refuses_a_client_without_certificate() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let r = try_get(gw.addr, &s.connector(None, &[b"http/1.1"]), "/open").await;
    assert!(r.is_err(), "answered without a client certificate");
    assert_eq!(s.backend.count(), 0);
}

#[tokio::test]
async fn required_mode_refuses_a_certificate_from_another_ca() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let mallory = s.foreign.client("alice", &["alice.example"]);
    let r = try_get(
        gw.addr,
        &s.connector(Some(&mallory), &[b"http/1.1"]),
        "/open",
    )
    .await;
    assert!(r.is_err(), "a certificate from another CA was admitted");
    assert_eq!(s.backend.count(), 0);
}

#[tokio::test]
async fn required_mode_admits_a_certificate_from_the_ca() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let got = try_get(
        gw.addr,
        &s.connector(Some(&s.alice), &[b"http/1.1"]),
        "/open",
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "app");
}

#[tokio::test]
async fn optional_mode_admits_a_client_without_certificate_on_a_route_without_auth() {
    let s = Setup::new().await;
    let gw = s.start("optional");
    let got = try_get(gw.addr, &s.connector(None, &[b"http/1.1"]), "/open")
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(s.backend.count(), 1);
}

#[tokio::test]
async fn optional_mode_still_refuses_a_certificate_from_another_ca() {
    let s = Setup::new().await;
    let gw = s.start("optional");
    let mallory = s.foreign.client("alice", &[]);
    let r = try_get(
        gw.addr,
        &s.connector(Some(&mallory), &[b"http/1.1"]),
        "/open",
    )
    .await;
    assert!(
        r.is_err(),
        "a certificate that does not verify was admitted"
    );
}

#[tokio::test]
async fn mtls_route_answers_401_without_certificate_and_200_with_one() {
    let s = Setup::new().await;
    let gw = s.start("optional");
    let anonymous = try_get(gw.addr, &s.connector(None, &[b"http/1.1"]), "/cert")
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        s.backend.count(),
        0,
        "a refused request reached the backend"
    );
    let with_cert = s.connector(Some(&s.alice), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &with_cert, "/cert").await, 200);
    assert_eq!(s.backend.count(), 1);
}

#[tokio::test]
async fn certificate_name_maps_to_its_consumer_upstream_and_in_the_access_log() {
    let s = Setup::new().await;
    let log = s.pki.dir.path.join("access.log");
    let d = s.pki.dir.path.display();
    let gw = TestGateway::start(&s.config(
        &format!("{{ca_file: {d}/clients.crt}}"),
        &format!("access_log: {{target: \"{}\"}}\n", log.display()),
    ));
    let connector = s.connector(Some(&s.alice), &[b"http/1.1"]);
    let got = try_get(gw.addr, &connector, "/cert").await.unwrap();
    assert_eq!(got.status, 200);
    let seen = s.backend.requests();
    assert_eq!(seen[0].headers["x-consumer"], "alice");
    assert!(
        eventually(Duration::from_secs(2), || async {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"consumer\":\"alice\""))
        })
        .await,
        "no access-log line names the consumer"
    );
}

#[tokio::test]
async fn client_sent_consumer_header_is_replaced_by_the_certificate_identity() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let bob = s.ours.client("bob", &[]);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = s
        .connector(Some(&bob), &[b"http/1.1"])
        .connect(ServerName::try_from("gw.example").unwrap(), tcp)
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/cert")
        .header("host", "gw.example")
        .header("x-consumer", "alice")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(tx.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    // `bob` is no consumer's certificate name: an identity without a consumer, so no
    // consumer header goes upstream, and the client's copy is gone.
    assert!(s.backend.requests()[0].headers.get("x-consumer").is_none());
}

#[tokio::test]
async fn acl_deny_by_group_refuses_the_mapped_consumer_with_403() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let connector = s.connector(Some(&s.alice), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &connector, "/staff-denied").await, 403);
    assert_eq!(s.backend.count(), 0);
}

#[tokio::test]
async fn san_dns_identity_is_used_when_configured() {
    let s = Setup::new().await;
    let gw = s.start("required");
    let connector = s.connector(Some(&s.alice), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &connector, "/dns").await, 200);
    // `alice.example` is not a certificate name of consumer alice.
    assert!(s.backend.requests()[0].headers.get("x-consumer").is_none());
    let no_dns = s.ours.client("carol", &[]);
    let connector = s.connector(Some(&no_dns), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &connector, "/dns").await, 401);
}

#[tokio::test]
async fn certificate_identity_holds_for_every_request_of_an_h2_connection() {
    certificate_identity_over_h2_on("hyper").await;
}

#[tokio::test]
async fn certificate_identity_holds_for_every_request_of_a_native_h2_connection() {
    certificate_identity_over_h2_on("native").await;
}

async fn certificate_identity_over_h2_on(server: &str) {
    let s = Setup::new().await;
    let d = s.pki.dir.path.display();
    let gw = TestGateway::start(
        &s.config(&format!("{{ca_file: {d}/clients.crt, mode: required}}"), "")
            .replacen(
                "  - address: 127.0.0.1:0\n",
                &format!("  - address: 127.0.0.1:0\n    h2_server: {server}\n"),
                1,
            ),
    );
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = s
        .connector(Some(&s.alice), &[b"h2"])
        .connect(ServerName::try_from("gw.example").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://gw.example/cert")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = collect(tx.send_request(req).await.unwrap()).await;
        assert_eq!(got.status, 200);
    }
    let seen = s.backend.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.headers["x-consumer"] == "alice"));
}

#[tokio::test]
async fn mtls_method_fails_on_a_listener_without_client_auth() {
    let s = Setup::new().await;
    let gw = TestGateway::start(&s.config("", ""));
    // The listener never asks for a certificate, so none is ever presented.
    let connector = s.connector(Some(&s.alice), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &connector, "/open").await, 200);
    assert_eq!(status(gw.addr, &connector, "/cert").await, 401);
}

#[tokio::test]
async fn ca_bundle_is_read_again_on_reload() {
    let s = Setup::new().await;
    let path = s.pki.dir.path.join("gateway.yaml");
    let d = s.pki.dir.path.display();
    std::fs::write(
        &path,
        s.config(&format!("{{ca_file: {d}/clients.crt}}"), ""),
    )
    .unwrap();
    let gw = TestGateway::start_file(&path);
    let alice = s.connector(Some(&s.alice), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &alice, "/cert").await, 200);

    // The bundle now trusts the other CA instead.
    std::fs::copy(
        s.pki.dir.path.join("foreign.crt"),
        s.pki.dir.path.join("clients.crt"),
    )
    .unwrap();
    gw.shared().reload().unwrap();
    assert!(
        try_get(gw.addr, &alice, "/cert").await.is_err(),
        "a certificate from the CA no longer trusted was admitted after the reload"
    );
    let dave = s.foreign.client("dave", &[]);
    let dave = s.connector(Some(&dave), &[b"http/1.1"]);
    assert_eq!(status(gw.addr, &dave, "/cert").await, 200);
}

#[test]
fn check_reports_a_missing_ca_file_with_its_key_path() {
    let dir = tempdir::Dir::new("mtls-check");
    let pki = TestPki::new(&["gw.example"]);
    let d = pki.dir.path.display();
    let path = dir.path.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners:
  - address: 127.0.0.1:8443
    tls:
      certificates: [{{cert: {d}/gw.example.crt, key: {d}/gw.example.key}}]
      client_auth: {{ca_file: no-such-ca.pem, mode: required}}
upstreams:
  app: {{targets: [{{address: 127.0.0.1:9001}}]}}
routes:
  - upstream: app
"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check accepted a missing CA bundle");
    assert!(
        text.contains("listeners[0].tls.client_auth.ca_file: no such file: no-such-ca.pem"),
        "{text}"
    );
}
