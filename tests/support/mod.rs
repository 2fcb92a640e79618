//! Test support: real HTTP backends on 127.0.0.1:0 that record what reached them, an
//! in-process gateway started from YAML, and small clients (raw TCP, HTTP/1.1, h2c).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod ai_providers;
pub mod alertmanager;
pub mod dnsmasq;
pub mod etcd;
pub mod fixed;
pub mod geo;
pub mod h2raw;
pub mod mmdb;
pub mod nats;
pub mod oidc;
pub mod rabbitmq;
pub mod rawhttp;
pub mod receiver;
pub mod redis;
pub mod webdriver;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
        + Send
        + Sync,
>;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 (and h2c when `h2` is set) backend on loopback, or a TLS one.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// TLS backends: the SNI name of each completed handshake (`None`: no SNI sent).
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    /// TLS backends: the ALPN protocol of each completed handshake.
    pub alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    /// TLS backends: handshakes that failed.
    pub tls_failures: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Backend {
    /// A backend that answers 200 with its `name` as the body.
    pub async fn named(name: &'static str) -> Backend {
        Backend::start(false, move |_req| async move { text(StatusCode::OK, name) }).await
    }

    /// A backend with a custom handler; `h2` serves prior-knowledge HTTP/2 instead of HTTP/1.1.
    pub async fn start<F, Fut>(h2: bool, f: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Backend::start_at("127.0.0.1:0".parse().unwrap(), h2, f).await
    }

    /// Like [`Backend::start`], on a given address (to bring a killed backend back).
    pub async fn start_at<F, Fut>(at: SocketAddr, h2: bool, f: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Backend::launch(at, h2, None, f).await
    }

    /// A TLS backend: HTTP/2 when the handshake chose `h2` by ALPN, HTTP/1.1 otherwise.
    pub async fn start_tls<F, Fut>(tls: tokio_rustls::TlsAcceptor, f: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Backend::launch("127.0.0.1:0".parse().unwrap(), false, Some(tls), f).await
    }

    async fn launch<F, Fut>(
        at: SocketAddr,
        h2: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
        f: F,
    ) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(f(req)));
        let listener = tokio::net::TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let tls_failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Dropping the backend kills it: the listener and every open connection close.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (seen2, conns2) = (seen.clone(), connections.clone());
        let (sni2, alpn2, failures2) = (sni.clone(), alpn.clone(), tls_failures.clone());
        tokio::spawn(async move {
            loop {
                let mut stopped = stopped.clone();
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => return },
                    _ = stopped.wait_for(|s| *s) => return,
                };
                conns2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (handler, seen) = (handler.clone(), seen2.clone());
                let (tls, sni, alpn, failures) =
                    (tls.clone(), sni2.clone(), alpn2.clone(), failures2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        let h = handler.clone();
                        async move { Ok::<_, Infallible>(h(req).await) }
                    });
                    let serve = async move {
                        let Some(acceptor) = tls else {
                            serve_connection(TokioIo::new(stream), h2, svc).await;
                            return;
                        };
                        let Ok(stream) = acceptor.accept(stream).await else {
                            failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        };
                        let session = stream.get_ref().1;
                        let chosen = session.alpn_protocol().map(<[u8]>::to_vec);
                        sni.lock()
                            .unwrap()
                            .push(session.server_name().map(str::to_owned));
                        let h2 = chosen.as_deref() == Some(b"h2");
                        alpn.lock().unwrap().push(chosen);
                        serve_connection(TokioIo::new(stream), h2, svc).await;
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Backend {
            addr,
            seen,
            connections,
            sni,
            alpn,
            tls_failures,
            stop: Some(stop),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

/// Serves one connection with hyper: HTTP/2 when `h2`, else HTTP/1.1 with upgrades.
async fn serve_connection<IO, S>(io: TokioIo<IO>, h2: bool, svc: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await;
    }
}

/// A backend that echoes WebSocket frames after accepting the upgrade.
pub async fn websocket_echo_backend() -> Backend {
    Backend::start(false, websocket_echo).await
}

/// A handler that accepts a WebSocket upgrade and echoes every frame.
pub async fn websocket_echo(mut req: Request<Incoming>) -> Response<BoxBody> {
    if req.headers().get("upgrade").is_none() {
        return text(StatusCode::OK, "no upgrade");
    }
    let key = req.headers()["sec-websocket-key"].clone();
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let up = on.await.unwrap();
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = futures_util::StreamExt::split(ws);
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut rx).await {
            if m.is_close() {
                break;
            }
            let _ = futures_util::SinkExt::send(&mut tx, m).await;
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub requests: usize,
    /// Transport errors and responses with a status of 400 or more.
    pub failures: usize,
    pub statuses: std::collections::BTreeMap<u16, usize>,
    pub bodies: std::collections::BTreeMap<String, usize>,
}

/// `workers` keep-alive clients sending GET `path` until `stop` resolves; a broken
/// connection counts as a failure and is replaced.
pub async fn load_until(
    addr: SocketAddr,
    path: &'static str,
    workers: usize,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    load(addr, path, &[], workers, usize::MAX, stop).await
}

/// Like [`load_until`] on `/`, with extra request fields.
pub async fn load_with(
    addr: SocketAddr,
    headers: &[(&'static str, &'static str)],
    workers: usize,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    load(addr, "/", headers, workers, usize::MAX, stop).await
}

/// Exactly `count` GET requests from `workers` keep-alive clients, with extra headers.
pub async fn load_count(
    addr: SocketAddr,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    workers: usize,
    count: usize,
) -> LoadReport {
    load(addr, path, headers, workers, count, std::future::pending()).await
}

async fn load(
    addr: SocketAddr,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    workers: usize,
    count: usize,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(count));
    let headers: Arc<Vec<(&'static str, &'static str)>> = Arc::new(headers.to_vec());
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, left, headers) = (done.clone(), left.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = LoadReport::default();
            let mut conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
            let take = || {
                left.fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            };
            while !done.load(std::sync::atomic::Ordering::Relaxed) && take() {
                if conn.is_none() {
                    let Ok(stream) = TcpStream::connect(addr).await else {
                        r.requests += 1;
                        r.failures += 1;
                        continue;
                    };
                    let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                    tokio::spawn(c);
                    conn = Some(tx);
                }
                let tx = conn.as_mut().unwrap();
                let mut req = Request::get(path).header("host", "test");
                for (k, v) in headers.iter() {
                    req = req.header(*k, *v);
                }
                let req = req.body(Full::new(Bytes::new())).unwrap();
                r.requests += 1;
                let sent = tokio::time::timeout(Duration::from_secs(5), async {
                    let resp = tx.send_request(req).await?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                })
                .await;
                match sent {
                    Ok(Ok((status, body))) => {
                        *r.statuses.entry(status.as_u16()).or_default() += 1;
                        *r.bodies
                            .entry(String::from_utf8_lossy(&body).into_owned())
                            .or_default() += 1;
                        if status.as_u16() >= 400 {
                            r.failures += 1;
                        }
                    }
                    _ => {
                        r.failures += 1;
                        conn = None;
                    }
                }
            }
            r
        }));
    }
    let all = futures_util::future::join_all(tasks);
    tokio::pin!(all);
    let results = tokio::select! {
        r = &mut all => r,
        _ = stop => {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            all.await
        }
    };
    let mut total = LoadReport::default();
    for r in results {
        let r = r.unwrap();
        total.requests += r.requests;
        total.failures += r.failures;
        for (k, v) in r.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        for (k, v) in r.bodies {
            *total.bodies.entry(k).or_default() += v;
        }
    }
    total
}

/// POSTs to the admin listener; returns the status.
pub async fn admin_post(admin: SocketAddr, path: &str) -> u16 {
    let req = Request::post(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(admin, req).await.status.as_u16()
}

pub fn text(status: StatusCode, body: &'static str) -> Response<BoxBody> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

pub fn full(b: Bytes) -> BoxBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// A gateway running in this process on a config built from YAML.
pub struct TestGateway {
    gateway: Option<ferrogate::Gateway>,
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl TestGateway {
    /// Starts a gateway; `yaml` should use `127.0.0.1:0` listener addresses.
    pub fn start(yaml: &str) -> TestGateway {
        Self::start_in(yaml, Path::new("."), None)
    }

    /// Starts from a config file on disk, watched for changes.
    pub fn start_file(path: &Path) -> TestGateway {
        let yaml = std::fs::read_to_string(path).unwrap();
        Self::start_in(&yaml, path.parent().unwrap(), Some(path))
    }

    fn start_in(yaml: &str, base: &Path, path: Option<&Path>) -> TestGateway {
        let config = match ferrogate::config::parse(yaml, base) {
            Ok(c) => c,
            Err(e) => panic!("test config is invalid:\n{e}\n{yaml}"),
        };
        let gateway = ferrogate::Gateway::start(
            config,
            ferrogate::StartOptions {
                config_path: path.map(Path::to_path_buf),
                watch: path.is_some(),
            },
        )
        .unwrap();
        TestGateway {
            addr: gateway.listener_addrs()[0],
            addrs: gateway.listener_addrs().to_vec(),
            admin: gateway.admin_addr(),
            gateway: Some(gateway),
        }
    }

    pub fn shared(&self) -> &Arc<ferrogate::gateway::Shared> {
        &self.gateway.as_ref().unwrap().shared
    }

    /// Graceful shutdown with a drain time; returns connections cut at the end.
    pub fn shutdown(mut self, drain: Duration) -> usize {
        self.gateway.take().unwrap().shutdown(drain)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown(Duration::ZERO);
        }
    }
}

/// Sends raw bytes and reads until the peer closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of the first response in raw HTTP/1.1 output.
pub fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A simple HTTP/1.1 response: status, headers, body.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request on a fresh HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    collect(resp).await
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// GET `path` with a Host header.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(addr, req).await
}

/// A request with the given method, path, Host `a` and extra fields.
pub async fn request(
    gw: std::net::SocketAddr,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a");
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    send(gw, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal gateway config: one listener on port 0, one upstream `app` with the given
/// targets, and the given routes YAML (indented as list items under `routes:`).
pub fn config(targets: &[SocketAddr], routes: &str) -> String {
    let mut t = String::new();
    for a in targets {
        t.push_str(&format!("      - address: \"{a}\"\n"));
    }
    format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\nupstreams:\n  app:\n    targets:\n{t}routes:\n{routes}"
    )
}

/// A test CA and server certificates signed by it, written as PEM files in a temp dir.
pub struct TestPki {
    pub dir: tempdir::Dir,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl TestPki {
    /// One certificate per name, files `<name>.crt` / `<name>.key`; the CA in `ca.crt`.
    pub fn new(names: &[&str]) -> TestPki {
        let dir = tempdir::Dir::new("pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Ferrogate Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path.join("ca.crt"), ca_cert.pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        for name in names {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path.join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.path.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        TestPki {
            dir,
            ca_der: ca_cert.der().clone(),
        }
    }

    /// The path of a file in the PKI's directory (`ca.crt`, `<name>.crt`, `<name>.key`).
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path.join(name)
    }

    /// A TLS server with this CA's certificate for `name`, offering `alpn`.
    pub fn acceptor(&self, name: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tls_acceptor(
            &self.file(&format!("{name}.crt")),
            &self.file(&format!("{name}.key")),
            alpn,
            None,
        )
    }

    /// A TLS client trusting only this CA, offering the given ALPN protocols.
    pub fn client(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// A TLS acceptor serving the certificate `cert` with key `key` (PEM files), offering the
/// ALPN protocols `alpn`, and requiring a client certificate from `client_ca`'s CAs if given.
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
    client_ca: Option<&Path>,
) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(der.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A gateway process a test started: killed when dropped, so a test that fails half-way
/// leaves no gateway running. Used as the `Child` it holds.
pub struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already gone when the test killed it or it exited: nothing to do then.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `BIN run -c path` (the gateway binary, `env!("CARGO_BIN_EXE_ferrogate")`) and
/// waits for its "listening on" line.
pub fn spawn_run(bin: &str, path: &Path) -> (Running, SocketAddr) {
    use std::io::BufRead;
    // Held from the start: a gateway that never says it listens is killed too.
    let mut child = Running(
        std::process::Command::new(bin)
            .args(["run", "-c"])
            .arg(path)
            .env("FERROGATE_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the gateway starts");
        if let Some(a) = line.split("listening on ").nth(1) {
            break a.trim().parse().unwrap();
        }
    };
    (child, addr)
}

/// [`spawn_run`], also waiting for the admin listener's address.
pub fn spawn_run_with_admin(bin: &str, path: &Path) -> (Running, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = Running(
        std::process::Command::new(bin)
            .args(["run", "-c"])
            .arg(path)
            .env("FERROGATE_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut listen, mut admin) = (None, None);
    let mut line = String::new();
    while admin.is_none() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the gateway starts"
        );
        if let Some(a) = line.split("listening on ").nth(1) {
            listen.get_or_insert(a.trim().parse().unwrap());
        }
        if let Some(a) = line.split("admin on http://").nth(1) {
            admin = Some(a.trim().parse().unwrap());
        }
    }
    // The rest of the log is read and dropped, so the gateway never blocks writing it.
    std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
    (child, listen.unwrap(), admin.unwrap())
}

/// Temporary directories removed on drop.
pub mod tempdir {
    use std::path::PathBuf;

    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "ferrogate-test-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
