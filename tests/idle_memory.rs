//! Memory an idle keep-alive connection holds in the gateway (docs/operations.md, "Idle
//! connections"): heap bytes allocated and not freed, counted by a global allocator wrapper,
//! with many connections that each made one request and then stay open and silent.
//!
//! Counted here: the connection's task, its socket registration, its state and timer; not the
//! kernel's socket buffers (not the process's memory) nor allocator overhead. `bench/idle.sh`
//! measures resident memory of the release binary beside nginx and HAProxy.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::fixed::{backend, config, requests};
use support::TestGateway;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Idle connections opened for the measurement.
const CONNECTIONS: usize = 1000;
/// Heap bytes an idle HTTP/1.1 connection may hold.
const H1_BOUND: usize = 2048;

/// The allocator's counts are the whole process's: the tests measure one at a time.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Heap bytes held per connection once `CONNECTIONS` connections made one request each
/// (with `request`) and went idle.
fn held_per_idle_connection(gw: &TestGateway, request: fn(&mut TcpStream)) -> usize {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    let region = Region::new(GLOBAL);
    for _ in 0..CONNECTIONS {
        let mut conn = TcpStream::connect(gw.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        request(&mut conn);
        conns.push(conn);
    }
    // Each connection gave its buffers back when its next read found nothing.
    std::thread::sleep(Duration::from_millis(200));
    let stats = region.change();
    let held =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    drop(conns);
    usize::try_from(held).unwrap_or(0) / CONNECTIONS
}

#[test]
fn an_idle_http1_connection_holds_under_two_kib() {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, stop) = backend();
    let gw = TestGateway::start(&config(backend, "    limits: {keepalive_timeout: 60s}\n"));
    // Warm up: the pooled upstream connection, kept maps and buffers, metrics series.
    let mut warm = TcpStream::connect(gw.addr).unwrap();
    requests(&mut warm, 50);
    let held = held_per_idle_connection(&gw, |c| requests(c, 1));
    eprintln!("heap bytes per idle HTTP/1.1 connection: {held}");
    assert!(
        held <= H1_BOUND,
        "an idle HTTP/1.1 connection holds {held} bytes, bound {H1_BOUND}"
    );
    stop.store(true, Ordering::Relaxed);
}

/// Heap bytes an idle HTTP/2 connection of the gateway's own server may hold (issue 17's
/// bound for every idle connection).
const H2_NATIVE_BOUND: usize = 8192;

/// Sends the HTTP/2 preface, SETTINGS and `count` GETs of `/budget` (one after the other,
/// on streams 1, 3, ...), reading until each response's END_STREAM.
fn h2_requests(conn: &mut TcpStream, count: u32) {
    use std::io::{Read, Write};
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    conn.write_all(&hello).unwrap();
    // :method GET, :scheme http, :path /budget, :authority budget.test: static entries and
    // literals without indexing.
    let mut block = vec![0x82, 0x86, 0x04, 7];
    block.extend(b"/budget");
    block.extend([0x01, 11]);
    block.extend(b"budget.test");
    let mut inbuf = Vec::new();
    for i in 0..count {
        let id = 1 + 2 * i;
        let len = u8::try_from(block.len()).unwrap();
        let mut frame = vec![0, 0, len, 1, 0x5];
        frame.extend(id.to_be_bytes());
        frame.extend(&block);
        conn.write_all(&frame).unwrap();
        'frames: loop {
            while inbuf.len() >= 9 {
                let flen = u32::from_be_bytes([0, inbuf[0], inbuf[1], inbuf[2]]) as usize;
                if inbuf.len() < 9 + flen {
                    break;
                }
                let (kind, flags) = (inbuf[3], inbuf[4]);
                let sid = u32::from_be_bytes([inbuf[5], inbuf[6], inbuf[7], inbuf[8]]);
                inbuf.drain(..9 + flen);
                if sid == id && matches!(kind, 0 | 1) && flags & 1 != 0 {
                    break 'frames;
                }
                assert_ne!(kind, 3, "stream reset");
                assert_ne!(kind, 7, "GOAWAY");
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "gateway closed the connection");
            inbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn an_idle_native_http2_connection_holds_under_eight_kib() {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, stop) = backend();
    let gw = TestGateway::start(&config(
        backend,
        "    h2c: only\n    h2_server: native\n    limits: {h2_idle_timeout: 60s}\n",
    ));
    let mut warm = TcpStream::connect(gw.addr).unwrap();
    h2_requests(&mut warm, 50);
    let held = held_per_idle_connection(&gw, |c| h2_requests(c, 1));
    eprintln!("heap bytes per idle native HTTP/2 connection: {held}");
    assert!(
        held <= H2_NATIVE_BOUND,
        "an idle native HTTP/2 connection holds {held} bytes, bound {H2_NATIVE_BOUND}"
    );
    stop.store(true, Ordering::SeqCst);
}
