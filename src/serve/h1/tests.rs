//! Tests of the downstream HTTP/1.1 connection, over real sockets on 127.0.0.1: a test
//! handler records what reached it, and raw clients send exactly the bytes under test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

mod exchange;
mod lifecycle;
mod refused;
mod valid;

type TestBody = BoxBody<Bytes, std::io::Error>;

const LIMITS: StrictLimits = StrictLimits {
    max_request_line: 128,
    max_header_bytes: 512,
    max_headers: 8,
    max_chunk_extension: 32,
};

const SETTINGS: Settings = Settings {
    limits: LIMITS,
    header_timeout: Duration::from_secs(5),
    keepalive_timeout: Duration::from_secs(5),
};

/// What the handler saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    version: http::Version,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
    body_failed: bool,
}

impl crate::message::ExtraFields for TestBody {}

/// A handler built from a closure.
struct Handler<F>(F);

impl<F, Fut> Service for Handler<F>
where
    F: Fn(Request<DownstreamBody>) -> Fut + Send + Sync,
    Fut: Future<Output = Response<TestBody>> + Send,
{
    type Body = TestBody;

    fn call(
        &self,
        req: &mut Request<DownstreamBody>,
        _interim: &dyn crate::message::Interim,
    ) -> impl Future<Output = Response<TestBody>> + Send {
        (self.0)(std::mem::replace(req, Request::new(DownstreamBody::Empty)))
    }
}

/// A listener serving every connection with `handler`.
struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

async fn serve_with<F, Fut>(settings: Settings, handler: F) -> Server
where
    F: Fn(Request<DownstreamBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = Handler(handler.clone());
            tokio::spawn(serve(
                Box::new(stream),
                Vec::new(),
                settings,
                svc,
                rx.clone(),
            ));
        }
    });
    Server { addr, shutdown }
}

/// A server whose handler reads each body to its end, records the request in `seen`, and
/// answers 200 with `METHOD TARGET BODY-LENGTH`.
async fn recording(settings: Settings) -> (Server, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = serve_with(settings, move |req| {
        let log = log.clone();
        async move {
            let got = read_request(req).await;
            let text = format!("{} {} {}", got.method, got.uri, got.body.len());
            let status = if got.body_failed { 400 } else { 200 };
            log.lock().unwrap().push(got);
            reply(status, text)
        }
    })
    .await;
    (server, seen)
}

async fn read_request(req: Request<DownstreamBody>) -> Seen {
    let (parts, mut body) = req.into_parts();
    let mut seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body: Vec::new(),
        trailers: None,
        body_failed: false,
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => seen.body.extend_from_slice(&data),
                Err(frame) => seen.trailers = frame.into_trailers().ok(),
            },
            Err(_) => {
                seen.body_failed = true;
                break;
            }
        }
    }
    seen
}

fn reply(status: u16, text: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder().status(status).body(full(text)).unwrap()
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Sends `bytes` on a fresh connection and reads until the server closes (5 s at most).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server did not close: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// One response read off a kept-alive connection.
#[derive(Debug)]
struct Reply {
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The value of a field (names compared without case).
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A raw client that reads responses one at a time.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; its body framed by content-length, chunked, or the close.
    async fn response(&mut self, head_request: bool) -> Reply {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "closed before a response head");
        };
        let head = String::from_utf8(self.buf.drain(..end).collect()).unwrap();
        let mut reply = Reply {
            head,
            body: Vec::new(),
        };
        let status = reply.status();
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return reply;
        }
        if let Some(n) = reply
            .field("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < n {
                assert!(self.fill().await, "closed inside a body");
            }
            reply.body = self.buf.drain(..n).collect();
        } else if reply.field("transfer-encoding") == Some("chunked") {
            reply.body = self.chunked().await;
        } else {
            while self.fill().await {}
            reply.body = std::mem::take(&mut self.buf);
        }
        reply
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "closed inside a chunked body");
            };
            let line = String::from_utf8(self.buf.drain(..line_end + 2).collect()).unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
            if size == 0 {
                // The trailer section, up to its empty line.
                loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                        if line == b"\r\n" {
                            return body;
                        }
                        body.extend_from_slice(b"[trailer ");
                        body.extend_from_slice(&line[..line.len() - 2]);
                        body.extend_from_slice(b"]");
                    } else {
                        assert!(self.fill().await, "closed inside trailers");
                    }
                }
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// True when the server closed the connection (after anything still buffered).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}
