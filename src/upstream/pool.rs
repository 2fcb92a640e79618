//! Upstream keep-alive pools, one per worker thread.
//!
//! Each worker runs a single-threaded runtime, so its pool is a plain thread-local map: no
//! lock, no atomics, no hashing of URIs. HTTP/1.1 connections are checked out for one
//! request and come back when the response body has been relayed to its end (a response the
//! client abandoned takes its connection with it, since its state is unknown). HTTP/2 (h2c)
//! targets share one multiplexed connection per worker. Idle connections are closed after
//! the group's `keepalive.idle_timeout` (swept by the worker) and at most
//! `keepalive.max_idle` stay per target. Pools are keyed by target address and client
//! profile, not by config snapshot, so unchanged targets keep their connections over reloads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::config::model::UpstreamProtocol;
use crate::snapshot::ClientProfile;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
}

impl UpstreamError {
    /// The target could not be reached at all (nothing was sent).
    pub fn is_connect(&self) -> bool {
        !matches!(self, UpstreamError::Request(_))
    }
}

type Key = (SocketAddr, ClientProfile);

#[derive(Default)]
struct Idle {
    h1: Vec<(http1::SendRequest<RequestBody>, Instant)>,
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

/// An HTTP/1.1 connection lent to one request; give it back with [`Lease::release`] once
/// the response body has ended.
pub struct Lease {
    key: Key,
    sender: http1::SendRequest<RequestBody>,
}

impl Lease {
    /// Returns the connection to this worker's pool (or closes it when the pool is full).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with_borrow_mut(|pool| {
            let idle = pool.entry(self.key).or_default();
            if idle.h1.len() < self.key.1.max_idle {
                idle.h1.push((self.sender, Instant::now()));
            }
        });
    }
}

/// A failed send, with the request when it never left (so it can be retried elsewhere).
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Request<RequestBody>>,
}

type Sent = Result<(Response<Incoming>, Option<Lease>), SendError>;

/// Sends `req` to `addr` on a pooled connection (or a new one).
pub async fn send(profile: &ClientProfile, addr: SocketAddr, req: Request<RequestBody>) -> Sent {
    let key = (addr, *profile);
    match profile.protocol {
        UpstreamProtocol::Http1 => send_h1(key, req).await,
        UpstreamProtocol::H2c => send_h2(key, req).await.map(|r| (r, None)),
    }
}

fn unsent(error: UpstreamError, req: Request<RequestBody>) -> SendError {
    SendError {
        error,
        unsent: Some(req),
    }
}

fn sent(error: UpstreamError) -> SendError {
    SendError {
        error,
        unsent: None,
    }
}

async fn send_h1(key: Key, req: Request<RequestBody>) -> Sent {
    let mut req = req;
    if let Some(mut sender) = checkout_h1(&key) {
        if sender.ready().await.is_ok() {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(Lease { key, sender }))),
                // The idle connection was closed under us before the request went out:
                // send it on a fresh connection instead.
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(sent(UpstreamError::Request(e.into_error()))),
                },
            }
        }
    }
    let mut sender = match connect_h1(&key).await {
        Ok(s) => s,
        Err(e) => return Err(unsent(e, req)),
    };
    match sender.try_send_request(req).await {
        Ok(resp) => Ok((resp, Some(Lease { key, sender }))),
        Err(mut e) => Err(match e.take_message() {
            Some(r) => unsent(UpstreamError::Request(e.into_error()), r),
            None => sent(UpstreamError::Request(e.into_error())),
        }),
    }
}

fn checkout_h1(key: &Key) -> Option<http1::SendRequest<RequestBody>> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(key)?;
        let limit = key.1.idle_timeout;
        while let Some((sender, since)) = idle.h1.pop() {
            if !sender.is_closed() && since.elapsed() < limit {
                return Some(sender);
            }
        }
        None
    })
}

async fn connect(key: &Key) -> Result<TokioIo<TcpStream>, UpstreamError> {
    let stream = tokio::time::timeout(key.1.connect_timeout, TcpStream::connect(key.0))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

async fn connect_h1(key: &Key) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
    let io = connect(key).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

async fn send_h2(key: Key, req: Request<RequestBody>) -> Result<Response<Incoming>, SendError> {
    let shared = POOL.with_borrow(|pool| {
        pool.get(&key)
            .and_then(|i| i.h2.as_ref())
            .filter(|s| !s.is_closed())
            .cloned()
    });
    let mut sender = match shared {
        Some(s) => s,
        None => {
            let io = match connect(&key).await {
                Ok(io) => io,
                Err(e) => return Err(unsent(e, req)),
            };
            let handshake = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await;
            let (sender, conn) = match handshake {
                Ok(h) => h,
                Err(e) => return Err(unsent(UpstreamError::Handshake(e), req)),
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            POOL.with_borrow_mut(|pool| pool.entry(key).or_default().h2 = Some(sender.clone()));
            sender
        }
    };
    if let Err(e) = sender.ready().await {
        return Err(unsent(UpstreamError::Request(e), req));
    }
    sender
        .try_send_request(req)
        .await
        .map_err(|mut e| match e.take_message() {
            Some(r) => unsent(UpstreamError::Request(e.into_error()), r),
            None => sent(UpstreamError::Request(e.into_error())),
        })
}

/// Closes this worker's idle connections that outlived their idle timeout.
pub fn sweep() {
    POOL.with_borrow_mut(|pool| {
        pool.retain(|key, idle| {
            let limit = key.1.idle_timeout;
            idle.h1
                .retain(|(s, since)| !s.is_closed() && since.elapsed() < limit);
            if idle.h2.as_ref().is_some_and(|s| s.is_closed()) {
                idle.h2 = None;
            }
            !idle.h1.is_empty() || idle.h2.is_some()
        });
    });
}
