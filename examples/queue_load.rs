//! A load client for queued routes (bench/queue.sh): POSTs a small JSON body over keep-alive
//! HTTP/1.1 connections, as fast as they go or at a fixed total rate, and prints what came
//! back and the latency percentiles. At a fixed rate, a request's latency counts from the
//! time it was due, not from when it was sent, so a stalled server is not hidden by the
//! client waiting for it. The connections' requests are spread evenly over each interval
//! (connection `i` of `n` starts `i/n` of an interval later), so that the total rate is
//! steady rather than a burst from every connection at once.
//!
//! Usage: `cargo run --release --example queue_load -- ADDR PATH CONNECTIONS SECONDS [RATE]`
//! (RATE: requests per second in all; 0 or absent: as fast as possible). Prints one line:
//! `requests=N accepted=N other=N errors=N rps=R p50_ms=X p99_ms=Y max_ms=Z`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted: u64,
    other: u64,
    errors: u64,
}

async fn client(
    addr: SocketAddr,
    path: String,
    until: Instant,
    interval: Option<Duration>,
    first_due: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        tally.errors += 1;
        return tally;
    };
    stream.set_nodelay(true).unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = Bytes::from_static(br#"{"report":"monthly","month":"2026-11"}"#);
    let mut due = first_due;
    while Instant::now() < until {
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
        } else {
            due = Instant::now();
        }
        let req = Request::post(path.as_str())
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                tally.latencies.push(due.elapsed());
                match status.as_u16() {
                    200..=299 => tally.accepted += 1,
                    _ => tally.other += 1,
                }
            }
            Err(_) => {
                tally.errors += 1;
                break;
            }
        }
        if let Some(every) = interval {
            due += every;
        }
    }
    tally
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let path = args[2].clone();
    let connections: u32 = args[3].parse().expect("CONNECTIONS");
    let seconds: u64 = args[4].parse().expect("SECONDS");
    let rate: f64 = args.get(5).map_or(0.0, |r| r.parse().expect("RATE"));
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(f64::from(connections) / rate));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    // At a fixed rate, the first requests are due once the connections had time to open,
    // spread over one interval.
    let lead = started + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for i in 0..connections {
        let first_due = match interval {
            Some(every) => lead + every * i / connections,
            None => started,
        };
        tasks.push(tokio::spawn(client(
            addr,
            path.clone(),
            until,
            interval,
            first_due,
        )));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        all.latencies.extend(t.latencies);
        all.accepted += t.accepted;
        all.other += t.other;
        all.errors += t.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies.sort();
    let pct = |p: f64| {
        let i =
            ((all.latencies.len() as f64 * p) as usize).min(all.latencies.len().saturating_sub(1));
        all.latencies
            .get(i)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests={} accepted={} other={} errors={} rps={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        all.latencies.len(),
        all.accepted,
        all.other,
        all.errors,
        all.latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}
