//! Bodies stream both ways with backpressure: a 1 GiB upload and a 1 GiB download pass
//! through the gateway while the process's peak memory grows by far less than the body.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use support::*;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A body of `total` bytes made on the fly from one shared chunk.
fn generated(total: u64) -> BoxBody {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let s = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(CHUNK as u64) as usize;
            Some((Ok(Frame::data(chunk.slice(..n))), sent + n as u64))
        }
    });
    StreamBody::new(s).boxed_unsync()
}

async fn drain(mut body: hyper::body::Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_and_download_stream_in_bounded_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let backend = Backend::start(false, move |req| {
        let r = r.clone();
        async move {
            if req.method() == http::Method::POST {
                let n = drain(req.into_body()).await;
                r.store(n, Ordering::SeqCst);
                text(http::StatusCode::OK, "stored")
            } else {
                Response::new(generated(GIB))
            }
        }
    })
    .await;
    let gw = TestGateway::start(
        &config(&[backend.addr], "  - upstream: app\n").replace("workers: 1", "workers: 2"),
    );
    // Warm up so allocator arenas and pools exist before the baseline.
    assert_eq!(get(gw.addr, "a", "/").await.status, 200);
    let before = peak_rss();

    // Upload and download run at once, on two connections, to keep the test short.
    let addr = gw.addr;
    let upload = async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let up = Request::post("/upload")
            .header("host", "a")
            .header("content-length", GIB.to_string())
            .body(generated(GIB))
            .unwrap();
        let resp = tx.send_request(up).await.unwrap();
        assert_eq!(resp.status(), 200);
        drain(resp.into_body()).await;
    };
    let download = async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let down = Request::get("/download")
            .header("host", "a")
            .body(generated(0))
            .unwrap();
        let resp = tx.send_request(down).await.unwrap();
        assert_eq!(resp.status(), 200);
        drain(resp.into_body()).await
    };
    let ((), got) = tokio::join!(upload, download);
    assert_eq!(
        received.load(Ordering::SeqCst),
        GIB,
        "the backend got every byte"
    );
    assert_eq!(got, GIB, "the client got every byte");

    let growth = peak_rss().saturating_sub(before);
    assert!(
        growth < 64 << 20,
        "peak memory grew by {} MiB while 2 GiB streamed",
        growth >> 20
    );
}
