//! Upstream keep-alive pools, one per worker thread.
//!
//! Each worker runs a single-threaded runtime, so its pool is a plain thread-local map: no
//! lock, no atomics, no hashing of URIs. HTTP/1.1 exchanges use the gateway's own client
//! connection ([`H1Conn`]): the request's task writes the head and reads the response itself,
//! with no connection task in between. A connection is checked out for one request and comes
//! back when the response body has been relayed to its end (a response the client abandoned
//! takes its connection with it, since its state is unknown). HTTP/2 (h2c) targets share one
//! multiplexed hyper connection per worker. Idle connections are closed after the group's
//! `keepalive.idle_timeout` (swept by the worker) and at most `keepalive.max_idle` stay per
//! target. Pools are keyed by target address and client profile, not by config snapshot, so
//! unchanged targets keep their connections over reloads; the profile includes the group's
//! TLS fingerprint, so changed TLS settings or files start new connections. Over TLS, h2
//! targets are reached by ALPN `h2` and HTTP/1.1 ones offer `http/1.1`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::added::Added;
use super::h1::{H1Body, H1Conn, H1Error, H1Limits};
use super::request_body::RequestBody;
use super::retry::is_idempotent;
use super::stream::{self, ConnectError, UpstreamStream};
use super::tls::TlsClient;
use crate::config::model::UpstreamProtocol;
use crate::message::{BodyError, Interim};

/// Settings that decide which pooled upstream client a group uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientProfile {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// TLS to the targets. Compared by fingerprint (settings and file contents), so an
    /// unchanged reload keeps pooled connections and a changed one does not reuse them.
    pub tls: Option<Arc<TlsClient>>,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    #[error("{0}")]
    Exchange(#[source] H1Error),
}

impl UpstreamError {
    /// The target could not be reached at all (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::Handshake(_)
        )
    }
}

/// What a pool is kept for: a target address and how the gateway talks to it.
pub(super) type Key = (SocketAddr, ClientProfile);

#[derive(Default)]
struct Idle {
    h1: Vec<(Box<H1Conn>, Instant)>,
    h2: Option<http2::SendRequest<RequestBody>>,
}

thread_local! {
    static POOL: RefCell<HashMap<Key, Idle, BuildHasherDefault<KeyHasher>>> =
        RefCell::new(HashMap::default());
}

/// A cheap multiply-rotate hasher for pool keys: they come from our own config, not from
/// clients, so SipHash's flooding resistance buys nothing on this per-request lookup.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The response body of an upstream exchange. An HTTP/1.1 body owns its connection and,
/// once relayed to a clean end, [`UpstreamBody::recycle`] puts the connection back in this
/// worker's pool (the connection knows its pool's key).
pub struct UpstreamBody {
    kind: Kind,
}

enum Kind {
    H1(H1Body),
    H2(Incoming),
}

impl UpstreamBody {
    /// Returns the connection of a cleanly ended HTTP/1.1 body to this worker's pool (or
    /// closes it when the pool is full); does nothing otherwise.
    pub fn recycle(&mut self, now: Instant) {
        let Kind::H1(body) = &mut self.kind else {
            return;
        };
        let Some(conn) = body.take_conn() else {
            return;
        };
        let Some(key) = conn.home.as_ref() else {
            return;
        };
        let idle_limit = key.1.max_idle;
        // A plain profile clones as cheaply as a copy; a TLS one adds a reference count.
        let key = key.clone();
        POOL.with_borrow_mut(|pool| {
            let idle = pool.entry(key).or_default();
            if idle.h1.len() < idle_limit {
                idle.h1.push((conn, now));
            }
        });
    }

    /// After a `101 Switching Protocols`: the upstream stream and the bytes already read
    /// past the response head (they belong to the new protocol).
    pub fn take_upgraded(&mut self) -> Option<(UpstreamStream, Bytes)> {
        match &mut self.kind {
            Kind::H1(body) => body.take_upgraded(),
            Kind::H2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::H1(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Kind::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::H1(body) => body.is_end_stream(),
            Kind::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::H1(body) => body.size_hint(),
            Kind::H2(body) => body.size_hint(),
        }
    }
}

/// A failed send.
pub struct SendError {
    pub error: UpstreamError,
    /// The request never left and is as it was: it can go to another target.
    pub unsent: bool,
}

type Sent = Result<Response<UpstreamBody>, SendError>;

/// Sends `req` with the gateway's `added` fields to `addr` on a pooled connection (or a new
/// one); `now` is the attempt's start, against which idle connections are aged. The request
/// stays the caller's, to send again when the error says it never left. An HTTP/1.1
/// upstream's interim responses go to `interim`; hyper's HTTP/2 client drops them.
pub async fn send(
    profile: &ClientProfile,
    addr: SocketAddr,
    req: &mut Request<RequestBody>,
    added: &Added,
    now: Instant,
    interim: Option<&dyn Interim>,
) -> Sent {
    match profile.protocol {
        UpstreamProtocol::Http1 => send_h1(addr, profile, req, added, now, interim).await,
        UpstreamProtocol::H2 => {
            added.insert_into(req.headers_mut());
            send_h2((addr, profile.clone()), req).await
        }
    }
}

fn unsent(error: UpstreamError) -> SendError {
    SendError {
        error,
        unsent: true,
    }
}

fn sent(error: UpstreamError) -> SendError {
    SendError {
        error,
        unsent: false,
    }
}

async fn send_h1(
    addr: SocketAddr,
    profile: &ClientProfile,
    req: &mut Request<RequestBody>,
    added: &Added,
    now: Instant,
    interim: Option<&dyn Interim>,
) -> Sent {
    let key = (addr, profile.clone());
    if let Some(conn) = checkout_h1(&key, now) {
        match conn.send(req, added, interim).await {
            Ok(resp) => return Ok(h1_response(resp)),
            // The server closed the idle connection as the request went out: nothing came
            // back and none of the body was read, so an idempotent request goes again on a
            // fresh connection (the others cannot know it was not processed).
            Err(f) if f.untouched && f.no_response && is_idempotent(req.method()) => {}
            Err(f) => return Err(sent(UpstreamError::Exchange(f.error))),
        }
    }
    // New connections are the rare path: boxing the connect (and TLS handshake) future keeps
    // its size out of every request's future.
    let mut conn = match Box::pin(connect(&key)).await {
        Ok(stream) => H1Conn::new(stream, H1Limits::default()),
        Err(e) => return Err(unsent(e)),
    };
    conn.home = Some(key);
    match conn.send(req, added, interim).await {
        Ok(resp) => Ok(h1_response(resp)),
        Err(failure) => Err(sent(UpstreamError::Exchange(failure.error))),
    }
}

fn h1_response(resp: Response<H1Body>) -> Response<UpstreamBody> {
    resp.map(|body| UpstreamBody {
        kind: Kind::H1(body),
    })
}

fn checkout_h1(key: &Key, now: Instant) -> Option<Box<H1Conn>> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(key)?;
        let limit = key.1.idle_timeout;
        while let Some((mut conn, since)) = idle.h1.pop() {
            if now.saturating_duration_since(since) < limit && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    })
}

async fn connect(key: &Key) -> Result<UpstreamStream, UpstreamError> {
    let profile = &key.1;
    stream::connect(key.0, profile.tls.as_deref(), profile.connect_timeout)
        .await
        .map_err(|e| {
            if let ConnectError::Tls(error) = &e {
                // A TLS failure is a configuration problem on one side or the other, not
                // load: say which target and why where operators look.
                crate::warn_throttled!(target_addr = %key.0, %error, "upstream tls handshake failed");
            }
            UpstreamError::Connect(e)
        })
}

async fn send_h2(key: Key, req: &mut Request<RequestBody>) -> Sent {
    let shared = POOL.with_borrow(|pool| {
        pool.get(&key)
            .and_then(|i| i.h2.as_ref())
            .filter(|s| !s.is_closed())
            .cloned()
    });
    let mut sender = match shared {
        Some(s) => s,
        // Boxed as in `send_h1`: connecting is rare, its future large.
        None => match Box::pin(connect_h2(key)).await {
            Ok(s) => s,
            Err(e) => return Err(unsent(e)),
        },
    };
    if let Err(e) = sender.ready().await {
        return Err(unsent(UpstreamError::Request(e)));
    }
    // A WebSocket upgrade goes as an extended CONNECT (RFC 8441).
    let websocket = super::h2connect::to_connect(req);
    // hyper takes the request; it hands it back when it never left.
    let owned = std::mem::replace(req, Request::new(RequestBody::empty()));
    match sender.try_send_request(owned).await {
        Ok(resp) => {
            let mut resp = resp.map(|body| UpstreamBody {
                kind: Kind::H2(body),
            });
            if let Some(key) = &websocket {
                super::h2connect::to_switch(&mut resp, key);
            }
            Ok(resp)
        }
        Err(mut e) => Err(match e.take_message() {
            Some(r) => {
                *req = r;
                if let Some(key) = websocket {
                    super::h2connect::undo_connect(req, key);
                }
                unsent(UpstreamError::Request(e.into_error()))
            }
            None => sent(UpstreamError::Request(e.into_error())),
        }),
    }
}

/// A new HTTP/2 connection to the key's target, driven by its own task and shared through
/// this worker's pool.
async fn connect_h2(key: Key) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
    let io = TokioIo::new(connect(&key).await?);
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    POOL.with_borrow_mut(|pool| {
        pool.entry(key).or_default().h2 = Some(sender.clone());
    });
    Ok(sender)
}

/// Closes this worker's idle connections that outlived their idle timeout or that the
/// upstream closed.
pub fn sweep() {
    POOL.with_borrow_mut(|pool| {
        pool.retain(|key, idle| {
            let limit = key.1.idle_timeout;
            idle.h1
                .retain_mut(|(c, since)| since.elapsed() < limit && c.is_usable());
            if idle.h2.as_ref().is_some_and(|s| s.is_closed()) {
                idle.h2 = None;
            }
            !idle.h1.is_empty() || idle.h2.is_some()
        });
    });
}
