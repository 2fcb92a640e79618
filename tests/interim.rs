//! Interim (1xx) responses from upstream: relayed to HTTP/1.1 clients before the final
//! response, on the same connection and in order; never to HTTP/1.0 clients; a `100
//! Continue` only to a client that asked, and only once; never stored by the cache; and the
//! exchange always goes on to the final response. The backends are raw TCP servers that
//! send scripted bytes, so the 1xx heads are exactly what a backend writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// What a scripted backend does for each request, in order.
#[derive(Clone, Copy)]
enum Step {
    /// Writes these bytes.
    Send(&'static [u8]),
    /// Reads the request's `Content-Length` bytes of body.
    ReadBody,
}

/// A raw HTTP/1.1 backend running the same script for every request it reads, on
/// keep-alive connections.
struct Scripted {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    /// The bodies it read, one per request with a `ReadBody` step.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    async fn start(script: &'static [Step]) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (requests.clone(), bodies.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, script, count.clone(), seen.clone()));
            }
        });
        Scripted {
            addr,
            requests,
            bodies,
        }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut s: TcpStream,
    script: &'static [Step],
    count: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await
        else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        count.fetch_add(1, Ordering::SeqCst);
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        for step in script {
            match step {
                Step::Send(bytes) => {
                    if s.write_all(bytes).await.is_err() {
                        return;
                    }
                }
                Step::ReadBody => {
                    if read_until(&mut s, &mut buf, |b| (b.len() >= length).then_some(length))
                        .await
                        .is_none()
                    {
                        return;
                    }
                    bodies.lock().unwrap().push(buf.drain(..length).collect());
                }
            }
        }
    }
}

/// Reads into `buf` until `done` finds what it looks for; `None` on EOF or error.
async fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = done(buf) {
            return Some(n);
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nLink: </b.js>; rel=preload\r\n\r\n";
const PROCESSING: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";

/// The early hints as the gateway relays them (field names lower-cased).
const RELAYED_HINTS: &str =
    "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\nlink: </b.js>; rel=preload\r\n\r\n";

fn gateway(backend: &Scripted, route: &str) -> TestGateway {
    TestGateway::start(&config(&[backend.addr], route))
}

const PLAIN: &str = "  - upstream: app\n";

#[tokio::test]
async fn early_hints_reach_an_http11_client_before_the_final_response() {
    let backend = Scripted::start(&[Step::Send(EARLY_HINTS), Step::Send(OK)]).await;
    let gw = gateway(&backend, PLAIN);
    let reply = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with(RELAYED_HINTS), "{reply:?}");
    let final_at = RELAYED_HINTS.len();
    assert!(
        reply[final_at..].starts_with("HTTP/1.1 200 OK\r\n"),
        "{reply:?}"
    );
    assert!(reply.ends_with("\r\n\r\nfinal"), "{reply:?}");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn processing_responses_reach_the_client_in_order_and_the_final_response_follows() {
    let backend = Scripted::start(&[
        Step::Send(PROCESSING),
        Step::Send(PROCESSING),
        Step::Send(EARLY_HINTS),
        Step::Send(OK),
    ])
    .await;
    let gw = gateway(&backend, PLAIN);
    let reply = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let interim =
        format!("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n{RELAYED_HINTS}");
    assert!(reply.starts_with(&interim), "{reply:?}");
    assert!(
        reply[interim.len()..].starts_with("HTTP/1.1 200 OK\r\n"),
        "{reply:?}"
    );
    assert!(reply.ends_with("final"), "{reply:?}");
}

#[tokio::test]
async fn continue_reaches_a_client_that_asked_exactly_once() {
    let backend = Scripted::start(&[Step::Send(CONTINUE), Step::ReadBody, Step::Send(OK)]).await;
    let gw = gateway(&backend, PLAIN);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The client waits for its go-ahead before sending the body.
    let mut got = vec![0u8; CONTINUE.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(got, CONTINUE);
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "a second 100 came: {rest:?}"
    );
    assert!(rest.ends_with("final"), "{rest:?}");
    assert_eq!(*backend.bodies.lock().unwrap(), vec![b"hello".to_vec()]);
}

#[tokio::test]
async fn continue_is_not_relayed_to_a_client_that_did_not_ask() {
    let backend = Scripted::start(&[Step::Send(CONTINUE), Step::ReadBody, Step::Send(OK)]).await;
    let gw = gateway(&backend, PLAIN);
    let reply = raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert!(!reply.contains("100 Continue"), "{reply:?}");
    assert!(reply.ends_with("final"), "{reply:?}");
}

#[tokio::test]
async fn http10_client_gets_no_interim_response() {
    let backend = Scripted::start(&[
        Step::Send(PROCESSING),
        Step::Send(EARLY_HINTS),
        Step::Send(OK),
    ])
    .await;
    let gw = gateway(&backend, PLAIN);
    let reply = raw(gw.addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(status_of(&reply), 200, "{reply:?}");
    assert_eq!(reply.matches("HTTP/1.").count(), 1, "{reply:?}");
    assert!(reply.ends_with("final"), "{reply:?}");
}

#[tokio::test]
async fn interim_responses_never_end_the_exchange_or_the_connection() {
    let backend = Scripted::start(&[Step::Send(EARLY_HINTS), Step::Send(OK)]).await;
    let gw = gateway(&backend, PLAIN);
    let reply = raw(
        gw.addr,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = reply.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["103", "200", "103", "200"], "{reply:?}");
    assert_eq!(reply.matches("final").count(), 2, "{reply:?}");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn cached_route_never_stores_an_interim_response() {
    const CACHEABLE: &[u8] =
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal";
    let backend = Scripted::start(&[Step::Send(EARLY_HINTS), Step::Send(CACHEABLE)]).await;
    let gw = gateway(&backend, "  - upstream: app\n    cache: {}\n");
    let request = b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let miss = raw(gw.addr, request).await;
    assert!(miss.starts_with(RELAYED_HINTS), "{miss:?}");
    assert!(miss.ends_with("final"), "{miss:?}");
    let hit = raw(gw.addr, request).await;
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit:?}");
    assert!(
        hit.to_ascii_lowercase()
            .contains("cache-status: ferrogate;hit"),
        "{hit:?}"
    );
    assert!(hit.ends_with("final"), "{hit:?}");
    assert_eq!(backend.count(), 1, "the second answer came from the cache");
}

#[tokio::test]
async fn http2_client_gets_the_final_response_only() {
    let backend = Scripted::start(&[Step::Send(EARLY_HINTS), Step::Send(OK)]).await;
    let gw = gateway(&backend, PLAIN);
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://a/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "final");
}

/// The gateway's own HTTP/2 server relays interim responses (hyper's could not): curl, a
/// real HTTP/2 client, shows the 103 with its fields before the final response.
#[tokio::test]
async fn http2_client_of_the_native_server_gets_interim_responses_first() {
    let backend = Scripted::start(&[Step::Send(EARLY_HINTS), Step::Send(OK)]).await;
    let gw = TestGateway::start(&config(&[backend.addr], PLAIN).replacen(
        "address: \"127.0.0.1:0\"\n",
        "address: \"127.0.0.1:0\"\n    h2_server: native\n",
        1,
    ));
    let url = format!("http://{}/", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-v", "--http2-prior-knowledge", &url])
            .output()
    })
    .await
    .unwrap()
    .expect("curl is installed (scripts/test.sh)");
    let verbose = String::from_utf8_lossy(&out.stderr);
    let hints = verbose.find("< HTTP/2 103").expect(&verbose);
    let link = verbose
        .find("< link: </b.js>; rel=preload")
        .expect(&verbose);
    let fin = verbose.find("< HTTP/2 200").expect(&verbose);
    assert!(hints < link && link < fin, "{verbose}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "final");
}
