//! One downstream connection: TLS handshake (and the client certificate's names), protocol
//! choice (ALPN, h2c preface, or HTTP/2 only), and the server driving
//! [`crate::proxy::handle`] for each request: the gateway's own HTTP/1.1 connection
//! (`serve::h1`), or hyper's HTTP/2 server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::certs::ClientCert;
use crate::config::model::{H2Server, H2cMode};
use crate::observe::metrics::ResilienceMetrics;
use crate::proxy::{self, ConnInfo};
use crate::runtime::{OpenConnection, Shared};
use crate::serve::conn_limit::ConnPermit;
use crate::serve::h2::Settings as H2Settings;
use crate::serve::h2body::H2RequestBody;
use crate::serve::h2connect::{self, Connect};
use crate::serve::h2guard::{H2Guard, H2GuardLimits, Trip};
use crate::serve::h2idle::{Counted, Streams};
use crate::serve::h2streams::{Driven, StreamExec};
use crate::serve::prefixed::Prefixed;
use crate::serve::strict::StrictLimits;
use crate::serve::{h1, DownstreamBody};
use crate::signal::raised;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection until it closes or the gateway has drained it.
///
/// What the connection needs is taken from the configuration here, and only that moves into
/// the returned future: every idle connection's task is as small as its state.
pub(super) fn serve(
    shared: Arc<Shared>,
    listener: usize,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let open = Shared::connection_opened(&shared, listener);
    let setup = Setup::of(&shared, listener, peer);
    async move {
        let Some(setup) = setup else {
            return;
        };
        let held = Held {
            _permit: permit,
            _open: open,
        };
        if let Some(tls) = setup.tls.clone() {
            // Boxed: the handshake's state is large, and a plain connection's task need
            // not carry room for it.
            Box::pin(serve_tls(shared, setup, tls, stream, held, shutdown)).await;
            return;
        }
        let Setup {
            h1,
            h2,
            conn,
            h2c,
            h2_server,
            ..
        } = setup;
        let mut stream = stream;
        let prefix = match h2c {
            H2cMode::Off => Vec::new(),
            H2cMode::BesideHttp1 | H2cMode::Only => {
                match read_preface(&mut stream, h1.header_timeout).await {
                    Some(p) => p,
                    None => return,
                }
            }
        };
        let conn = Arc::new(conn);
        // HTTP/2 only: whatever came is handed to the HTTP/2 server, whose guard answers
        // anything but the preface with GOAWAY(PROTOCOL_ERROR).
        if h2c == H2cMode::Only || h2c == H2cMode::BesideHttp1 && prefix == H2_PREFACE {
            if h2_server == H2Server::Native {
                serve_h2_native(shared, conn, Box::new(stream), prefix, h2, held, shutdown);
                return;
            }
            let _held = held;
            Box::pin(serve_h2(
                shared,
                conn,
                Prefixed::new(prefix, stream),
                h2,
                shutdown,
            ))
            .await;
        } else {
            serve_h1(shared, conn, Box::new(stream), prefix, h1, held, shutdown);
        }
    }
}

/// What a connection holds until it ends: its place under the listener's connection limits,
/// and its count among the open connections.
struct Held {
    _permit: ConnPermit,
    _open: OpenConnection,
}

/// A listener's settings for one connection, read from the snapshot current at accept.
struct Setup {
    h1: h1::Settings,
    h2: H2Settings,
    conn: ConnInfo,
    tls: Option<Arc<rustls::ServerConfig>>,
    h2c: H2cMode,
    h2_server: H2Server,
}

impl Setup {
    fn of(shared: &Shared, listener: usize, peer: std::net::SocketAddr) -> Option<Setup> {
        let snap = shared.snapshot.load();
        let settings = snap.listeners.get(listener)?;
        let limits = &settings.limits;
        let h1 = h1::Settings {
            limits: StrictLimits {
                max_request_line: limits.max_request_line,
                max_header_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
                max_chunk_extension: limits.max_chunk_extension,
            },
            header_timeout: limits.header_timeout,
            keepalive_timeout: limits.keepalive_timeout,
        };
        let h2 = H2Settings {
            max_streams: limits.h2_max_concurrent_streams,
            max_header_list: u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
            stream_window: limits.h2_initial_stream_window,
            connection_window: limits.h2_initial_connection_window,
            idle_timeout: limits.h2_idle_timeout,
        };
        let conn = ConnInfo {
            peer,
            peer_text: proxy::peer_text(peer.ip()),
            tls: settings.tls.is_some(),
            listener,
            client_cert: None,
        };
        Some(Setup {
            h1,
            h2,
            conn,
            tls: settings.tls.clone(),
            h2c: settings.h2c,
            h2_server: settings.h2_server,
        })
    }
}

/// A TLS connection: the handshake (bounded in time), then HTTP/2 when ALPN chose it,
/// HTTP/1.1 otherwise.
async fn serve_tls(
    shared: Arc<Shared>,
    setup: Setup,
    tls: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    held: Held,
    shutdown: watch::Receiver<bool>,
) {
    let Setup {
        h1,
        h2,
        conn,
        h2_server,
        ..
    } = setup;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
    else {
        return;
    };
    let conn = Arc::new(ConnInfo {
        client_cert: client_cert(stream.get_ref().1),
        ..conn
    });
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        if h2_server == H2Server::Native {
            serve_h2_native(
                shared,
                conn,
                Box::new(stream),
                Vec::new(),
                h2,
                held,
                shutdown,
            );
            return;
        }
        let _held = held;
        Box::pin(serve_h2(shared, conn, stream, h2, shutdown)).await;
    } else {
        serve_h1(
            shared,
            conn,
            Box::new(stream),
            Vec::new(),
            h1,
            held,
            shutdown,
        );
    }
}

/// The names of the end-entity certificate a client presented, once rustls has verified
/// it (a listener without `client_auth` never asks for one).
fn client_cert(tls: &rustls::ServerConnection) -> Option<Arc<ClientCert>> {
    let der = tls.peer_certificates()?.first()?;
    let cert = ClientCert::from_der(der);
    if cert.is_none() {
        tracing::debug!("verified client certificate has unreadable names");
    }
    cert.map(Arc::new)
}

/// Reads until the bytes either are the HTTP/2 preface or cannot be; returns what was read.
async fn read_preface(stream: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        let mut chunk = [0u8; 24];
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let want = H2_PREFACE.len() - buf.len();
            let n = stream.read(&mut chunk[..want]).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(deadline, read).await.ok()??;
    Some(buf)
}

/// Goes on serving the connection as HTTP/1.1 in a task of its own, so that it keeps only
/// what HTTP/1.1 needs, not the room of the handshake or preface check before it: an idle
/// connection's task is that small.
fn serve_h1(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    io: h1::BoxIo,
    read: Vec<u8>,
    settings: h1::Settings,
    held: Held,
    shutdown: watch::Receiver<bool>,
) {
    let proxy = Proxy {
        shared,
        conn,
        _held: held,
    };
    tokio::spawn(h1::serve(io, read, settings, proxy, shutdown));
}

/// The HTTP/1.1 connection's handler: each request through the proxy, on the snapshot
/// current when it arrived.
struct Proxy {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    _held: Held,
}

impl h1::Service for Proxy {
    type Body = crate::proxy::body::ProxyBody;

    fn call(
        &self,
        req: &mut http::Request<DownstreamBody>,
        interim: &dyn crate::message::Interim,
    ) -> impl std::future::Future<Output = http::Response<crate::proxy::body::ProxyBody>> + Send
    {
        proxy::handle(
            self.shared.snapshot.load_full(),
            &self.conn,
            req,
            Some(interim),
        )
    }
}

/// Goes on serving the connection with the gateway's own HTTP/2 server in a task of its
/// own (as `serve_h1` does, for the same reason).
fn serve_h2_native(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    io: h1::BoxIo,
    read: Vec<u8>,
    h2: H2Settings,
    held: Held,
    shutdown: watch::Receiver<bool>,
) {
    let listener = listener_name(&shared, &conn);
    let resilience = shared.metrics.resilience.clone();
    let peer = conn.peer;
    let proxy = Arc::new(Proxy {
        shared,
        conn,
        _held: held,
    });
    let served = crate::serve::h2::serve(io, read, h2, proxy, shutdown);
    tokio::spawn(async move {
        if let Some(t) = served.await {
            report(t, listener.as_ref(), &resilience, peer);
        }
    });
}

async fn serve_h2<I>(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    io: I,
    h2: H2Settings,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = listener_name(&shared, &conn);
    let resilience = shared.metrics.resilience.clone();
    let peer = conn.peer;
    let streams = Streams::new();
    let svc = service(shared, conn, streams.clone());
    // Streams run in this connection's task, not in tasks of their own (`serve::h2streams`).
    let exec = StreamExec::default();
    let mut builder = hyper::server::conn::http2::Builder::new(exec.clone());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_streams)
        // h2's own burst-reset and local-error limits, made explicit.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .max_header_list_size(h2.max_header_list)
        .initial_stream_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window)
        // 400 KiB (the default) per stream adds up on a client that does not read.
        .max_send_buf_size(128 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        // WebSocket over HTTP/2 (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL.
        .enable_connect_protocol();
    // The guard adds what h2 lacks: rate limits on PING, SETTINGS, paced resets, PRIORITY
    // and WINDOW_UPDATE floods, per-block CONTINUATION and header-byte caps, and the error
    // codes RFC 9113 names where h2 answers PROTOCOL_ERROR.
    let guarded = H2Guard::new(io, H2GuardLimits::default());
    let trip = guarded.trip_handle();
    let c = builder.serve_connection(TokioIo::new(guarded), svc);
    let mut c = Driven::new(Box::pin(c), exec);
    let closing = loop {
        let left = streams.until_idle(h2.idle_timeout, Instant::now());
        if left.is_zero() {
            break true;
        }
        tokio::select! {
            _ = &mut c => break false,
            _ = raised(&mut shutdown) => break true,
            _ = tokio::time::sleep(left) => {}
        }
    };
    if closing {
        // GOAWAY(NO_ERROR); open streams finish, then the connection closes.
        c.conn().graceful_shutdown();
        let _ = c.await;
    }
    if let Some(t) = trip.get() {
        report(t, listener.as_ref(), &resilience, peer);
    }
}

/// The name of the connection's listener in the snapshot current now (for the flood log).
fn listener_name(shared: &Shared, conn: &ConnInfo) -> Option<Arc<str>> {
    let snap = shared.snapshot.load();
    snap.listeners.get(conn.listener).map(|l| l.name.clone())
}

/// Logs (and counts, for floods) why the guard ended a connection.
fn report(
    trip: Trip,
    listener: Option<&Arc<str>>,
    resilience: &ResilienceMetrics,
    peer: std::net::SocketAddr,
) {
    if !trip.is_flood() {
        tracing::debug!(%peer, reason = trip.as_str(), "http/2 connection closed: {trip}");
        return;
    }
    if let Some(name) = listener {
        resilience.h2_flood(name, trip.as_str());
    }
    tracing::warn!(%peer, reason = trip.as_str(), "http/2 connection closed: {trip}");
}

fn service(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    streams: Streams,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Counted<crate::proxy::body::ProxyBody>>,
    Error = Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<Counted<crate::proxy::body::ProxyBody>>, Infallible>,
    > + Send,
> + Clone {
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        // Each request keeps the snapshot it started with, whatever reloads happen meanwhile.
        let snap = shared.snapshot.load_full();
        let conn = conn.clone();
        let open = streams.open();
        let mut req = req.map(|body| DownstreamBody::H2(H2RequestBody::new(body)));
        let connect = h2connect::accept(&mut req);
        async move {
            // hyper's HTTP/2 server cannot send interim responses: the client gets the
            // final one only (docs/operations.md, "Interim responses").
            // The pipeline's future is large; boxed, hyper moves a small one into each stream.
            let resp = match connect {
                Connect::Other => not_implemented(),
                _ => Box::pin(proxy::handle(snap, &conn, &mut req, None)).await,
            };
            // hyper writes the map only.
            let (mut parts, mut body) = resp.into_parts();
            body.move_gateway_fields_into(&mut parts.headers);
            // A value unique to each response gains nothing from HPACK's dynamic table, and
            // indexing it evicts the fields that repeat: sent never indexed, it stays out.
            if let Some(id) = parts.headers.get_mut(crate::message::X_REQUEST_ID) {
                id.set_sensitive(true);
            }
            let body = Counted::new(body, open);
            Ok::<_, Infallible>(http::Response::from_parts(parts, body))
        }
    })
}

/// The answer to an extended CONNECT for a protocol other than WebSocket, given before the
/// pipeline (the request names no resource the gateway routes).
fn not_implemented() -> http::Response<crate::proxy::body::ProxyBody> {
    let none = http::HeaderValue::from_static("");
    let mut resp = crate::proxy::error::problem_response(
        http::StatusCode::NOT_IMPLEMENTED,
        "only WebSocket can be opened with an extended CONNECT",
        &none,
    );
    resp.headers_mut().remove(crate::message::X_REQUEST_ID);
    resp
}
