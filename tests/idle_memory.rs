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

/// Heap bytes held per connection once `CONNECTIONS` connections made one request each and
/// went idle.
fn held_per_idle_connection(gw: &TestGateway) -> usize {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    let region = Region::new(GLOBAL);
    for _ in 0..CONNECTIONS {
        let mut conn = TcpStream::connect(gw.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        requests(&mut conn, 1);
        conns.push(conn);
    }
    // Each connection gave its buffers back when its next read found nothing.
    std::thread::sleep(Duration::from_millis(200));
    let stats = region.change();
    eprintln!("TEMP {stats:?}");
    let held =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    drop(conns);
    usize::try_from(held).unwrap_or(0) / CONNECTIONS
}

#[test]
fn an_idle_http1_connection_holds_under_two_kib() {
    let (backend, stop) = backend();
    let gw = TestGateway::start(&config(backend, "    limits: {keepalive_timeout: 60s}\n"));
    // Warm up: the pooled upstream connection, kept maps and buffers, metrics series.
    let mut warm = TcpStream::connect(gw.addr).unwrap();
    requests(&mut warm, 50);
    let held = held_per_idle_connection(&gw);
    eprintln!("heap bytes per idle HTTP/1.1 connection: {held}");
    assert!(
        held <= H1_BOUND,
        "an idle HTTP/1.1 connection holds {held} bytes, bound {H1_BOUND}"
    );
    stop.store(true, Ordering::Relaxed);
}
