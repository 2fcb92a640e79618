//! The client over TLS: uploads leave nothing behind in the TLS session, and an idle
//! connection stays usable through session tickets until the server closes it.

use std::time::Duration;

use http_body_util::Full;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpSocket;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::upstream::stream::UpstreamStream;

/// Socket buffers far smaller than rustls's own (64 KiB), so a write leaves TLS records in
/// the session whenever the peer has not read yet.
const SMALL_BUFFER: u32 = 4096;

/// A server and a client config for `127.0.0.1`, from one self-signed certificate.
fn configs() -> (TlsAcceptor, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(client)),
    )
}

/// A TLS hyper server with small socket buffers answering with the length of the request
/// body it read.
async fn tls_server(acceptor: TlsAcceptor) -> SocketAddr {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                        let n = req
                            .into_body()
                            .collect()
                            .await
                            .map_or(0, |b| b.to_bytes().len());
                        let body = boxed(Full::new(Bytes::from(n.to_string())));
                        Ok::<_, Infallible>(Response::new(body))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn tls_conn(addr: SocketAddr, connector: &TlsConnector) -> Box<H1Conn> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    H1Conn::new(UpstreamStream::Tls(Box::new(tls)), H1Limits::default())
}

async fn text_of(resp: Response<H1Body>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn an_upload_is_flushed_out_of_the_tls_session_before_the_response_is_awaited() {
    let (acceptor, connector) = configs();
    let addr = tls_server(acceptor).await;
    let conn = tls_conn(addr, &connector).await;
    let body = Full::new(Bytes::from(vec![b'x'; 1 << 20]));
    let mut req = Request::post("/upload")
        .header("host", "a")
        .body(body)
        .unwrap();
    let exchange =
        async { text_of(conn.send(&mut req, &Added::default(), None).await.unwrap()).await };
    let got = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the upload stalled with records left in the tls session");
    assert_eq!(got, "1048576");
}

#[tokio::test]
async fn a_tls_connection_stays_usable_between_requests_until_the_server_closes_it() {
    let (acceptor, connector) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !contains(&head, b"\r\n\r\n") {
            let n = tls.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let _ = closed.await;
        tls.shutdown().await.unwrap();
    });
    let conn = tls_conn(addr, &connector).await;
    let mut req = Request::get("/")
        .header("host", "a")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut resp = conn.send(&mut req, &Added::default(), None).await.unwrap();
    while resp.body_mut().frame().await.is_some() {}
    let mut conn = resp.body_mut().take_conn().unwrap();
    // TLS 1.3 session tickets arrive after the handshake: records without data.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(conn.is_usable(), "idle, with only session tickets read");
    close.send(()).unwrap();
    server.await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !conn.is_usable() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "close_notify makes the connection unusable");
}
