//! Tests of the upstream HTTP/1.1 client over real sockets on 127.0.0.1: scripted raw
//! servers for exact bytes, a hyper server for realistic exchanges.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{H1Body, H1Conn, H1Error, H1Limits};
use crate::upstream::added::Added;

mod conn;
mod malformed;
mod memo;
mod request;
mod response;
mod tls;

/// What a scripted server does once it has written its reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Closes the connection.
    Close,
    /// Keeps reading until the client closes, recording what it sends.
    Drain,
}

/// A one-connection server: reads until what it received contains `until`, writes `reply`,
/// then closes or drains. Its task returns every byte it received.
async fn scripted(
    until: &'static [u8],
    reply: &'static [u8],
    then: Then,
) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        while !contains(&received, until) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(reply).await;
        if then == Then::Drain {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
        }
        received
    });
    (addr, task)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A hyper HTTP/1.1 server answering every request with `handler`; counts connections.
async fn hyper_server<F>(handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<hyper::body::Incoming>) -> Response<BoxBody> + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn boxed<B: Body<Data = Bytes, Error = Infallible> + Send + 'static>(body: B) -> BoxBody {
    body.boxed_unsync()
}

async fn connect(addr: SocketAddr) -> Box<H1Conn> {
    connect_with(addr, H1Limits::default()).await
}

async fn connect_with(addr: SocketAddr, limits: H1Limits) -> Box<H1Conn> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    H1Conn::new(stream.into(), limits)
}

fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header("host", "upstream.test")
        .body(Empty::new())
        .unwrap()
}

/// Everything the body yields: its data, and its trailers if any.
async fn collect(body: &mut H1Body) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((data, trailers))
}

/// Sends a GET to a server replying `reply` and closing, and reads the whole response.
async fn fetch(reply: &'static [u8]) -> Result<(Response<H1Body>, Vec<u8>), H1Error> {
    fetch_with(reply, H1Limits::default()).await
}

async fn fetch_with(
    reply: &'static [u8],
    limits: H1Limits,
) -> Result<(Response<H1Body>, Vec<u8>), H1Error> {
    let (addr, _server) = scripted(b"\r\n\r\n", reply, Then::Close).await;
    let conn = connect_with(addr, limits).await;
    let mut resp = conn
        .send(&mut get("/"), &Added::default(), None)
        .await
        .map_err(|f| f.error)?;
    let (data, _) = collect(resp.body_mut()).await?;
    Ok((resp, data))
}

static BLOCK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

/// A request body of `frames` blocks of 16 KiB, then `end`; no size hint, so it is chunked.
struct Blocks {
    frames: usize,
    end: End,
    /// Set when the body is dropped: the client let go of the upload.
    dropped: Arc<AtomicBool>,
}

fn blocks(frames: usize, end: End) -> Blocks {
    Blocks {
        frames,
        end,
        dropped: Arc::default(),
    }
}

impl Default for Blocks {
    fn default() -> Self {
        blocks(0, End::Finish)
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

enum End {
    Finish,
    /// Never ends: an upload the upstream stops reading.
    Stall,
}

impl Body for Blocks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames > 0 {
            self.frames -= 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&BLOCK)))));
        }
        match self.end {
            End::Finish => Poll::Ready(None),
            End::Stall => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
