//! A keep-alive HTTP/1.1 backend on blocking sockets that answers every request with one
//! fixed response, reading heads into a fixed buffer: it allocates nothing per request, so
//! tests that count the gateway's heap use see only the gateway's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The body of every response.
pub const BODY: &[u8] = b"hello from the backend, a few bytes of body";

/// Starts the backend; setting the flag stops it at its next connection.
pub fn backend() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut response = Vec::new();
        write!(
            response,
            "HTTP/1.1 200 OK\r\nServer: fixed\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            BODY.len()
        )
        .unwrap();
        response.extend_from_slice(BODY);
        for conn in listener.incoming() {
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut conn) = conn else { return };
            let response = response.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while read_head(&mut conn, &mut buf).is_some() {
                    if conn.write_all(&response).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, stop)
}

/// Reads one request or response head (bodiless requests, `Content-Length` responses) into
/// `buf`; returns the bytes read, `None` at EOF.
pub fn read_head(conn: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    loop {
        let got = conn.read(&mut buf[n..]).ok()?;
        if got == 0 {
            return None;
        }
        n += got;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(n);
        }
        if n == buf.len() {
            return None;
        }
    }
}

/// Sends `count` GET requests on one connection, reading each whole response.
pub fn requests(conn: &mut TcpStream, count: usize) {
    let mut buf = [0u8; 8192];
    for _ in 0..count {
        conn.write_all(b"GET /budget HTTP/1.1\r\nHost: budget.test\r\nUser-Agent: t\r\n\r\n")
            .unwrap();
        let mut n = 0;
        loop {
            let got = conn.read(&mut buf[n..]).unwrap();
            assert!(got > 0, "gateway closed the connection");
            n += got;
            if buf[..n].ends_with(BODY) {
                break;
            }
        }
        assert!(buf.starts_with(b"HTTP/1.1 200 "), "not a 200 response");
    }
}

/// A one-worker gateway config: metrics on, access log off, everything to `backend`.
pub fn config(backend: SocketAddr, listener_extra: &str) -> String {
    format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\n{listener_extra}admin:\n  address: \"127.0.0.1:0\"\n\
         metrics:\n  enabled: true\naccess_log:\n  enabled: false\n\
         upstreams:\n  app:\n    targets:\n      - address: \"{backend}\"\n\
         routes:\n  - name: all\n    upstream: app\n"
    )
}
