//! Memory an open, idle WebSocket tunnel holds in the gateway (docs/operations.md, "WebSocket
//! tunnels"): heap bytes allocated and not freed, counted by a global allocator wrapper,
//! with many tunnels that each relayed one message both ways and then stay open and silent.
//!
//! The bound is twice an idle HTTP/1.1 connection's (2 KiB, `tests/idle_memory.rs`): a
//! tunnel has two sockets. Each tunnel is four sockets in this one process (client, the
//! gateway's two, backend) and the process may open 20,000 (10,000 tunnels would need that
//! many in the gateway alone), so the measurement opens [`TUNNELS`] and divides; what a
//! tunnel holds does not depend on how many others are open.
//! Counted: the tunnel's task, its two socket registrations, its relay state and timer; not
//! the kernel's socket buffers nor allocator overhead.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::fixed::read_head;
use support::TestGateway;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Tunnels opened for the measurement (four sockets each).
const TUNNELS: usize = 4000;
/// Heap bytes an idle tunnel may hold: twice the idle HTTP/1.1 connection's 2 KiB.
const TUNNEL_BOUND: usize = 4096;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: mem.test\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// "ping" from the client, masked with a zero key.
const CLIENT_FRAME: &[u8] = &[0x81, 0x84, 0, 0, 0, 0, b'p', b'i', b'n', b'g'];
/// "pong" back from the server, unmasked.
const SERVER_FRAME: &[u8] = &[0x81, 0x04, b'p', b'o', b'n', b'g'];

/// A WebSocket backend on one thread: it accepts an upgrade, answers 101, reads the
/// client's one message, answers one, and keeps the socket open; nothing is allocated per
/// tunnel (the sockets go into room reserved before).
fn backend(count: usize) -> (SocketAddr, mpsc::Receiver<Vec<TcpStream>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(count);
        let mut buf = [0u8; 2048];
        while kept.len() < count {
            let (mut conn, _) = listener.accept().unwrap();
            read_head(&mut conn, &mut buf).unwrap();
            conn.write_all(SWITCH).unwrap();
            conn.read_exact(&mut buf[..CLIENT_FRAME.len()]).unwrap();
            assert_eq!(&buf[..CLIENT_FRAME.len()], CLIENT_FRAME);
            conn.write_all(SERVER_FRAME).unwrap();
            kept.push(conn);
        }
        tx.send(kept).unwrap();
    });
    (addr, rx)
}

/// Opens a tunnel through the gateway and relays one message each way.
fn open_tunnel(gw: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(gw).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(UPGRADE).unwrap();
    let mut buf = [0u8; 2048];
    let n = read_head(&mut conn, &mut buf).unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 101 "), "not switched");
    assert!(n == buf[..n].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
    conn.write_all(CLIENT_FRAME).unwrap();
    conn.read_exact(&mut buf[..SERVER_FRAME.len()]).unwrap();
    assert_eq!(&buf[..SERVER_FRAME.len()], SERVER_FRAME);
    conn
}

#[test]
fn an_idle_tunnel_holds_under_four_kib() {
    let warm = 50;
    let (backend, kept) = backend(warm + TUNNELS);
    let gw = TestGateway::start(&format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n\
         metrics:\n  enabled: true\naccess_log:\n  enabled: false\n\
         upstreams:\n  app:\n    targets:\n      - address: \"{backend}\"\n\
         routes:\n  - name: ws\n    upstream: app\n    websocket: true\n"
    ));
    // Warm up: metric series, kept buffers and maps, the runtime's first slab pages.
    let mut conns = Vec::with_capacity(warm + TUNNELS);
    for _ in 0..warm {
        conns.push(open_tunnel(gw.addr));
    }
    let region = Region::new(GLOBAL);
    for _ in 0..TUNNELS {
        conns.push(open_tunnel(gw.addr));
    }
    // Every tunnel gave its buffers back when its next read found nothing.
    std::thread::sleep(Duration::from_millis(300));
    let stats = region.change();
    let held =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    let per_tunnel = usize::try_from(held).unwrap_or(0) / TUNNELS;
    eprintln!("heap bytes per idle tunnel ({TUNNELS} tunnels): {per_tunnel}");
    assert_eq!(
        gw.shared().snapshot.load().tunnels.open(),
        warm + TUNNELS,
        "every tunnel is open"
    );
    assert!(
        per_tunnel <= TUNNEL_BOUND,
        "an idle tunnel holds {per_tunnel} bytes, bound {TUNNEL_BOUND}"
    );
    drop(conns);
    drop(kept.recv_timeout(Duration::from_secs(5)));
}
