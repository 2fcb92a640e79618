//! A real `nats-server` with JetStream for tests: started on a free loopback port with its
//! store in a temporary directory, stopped and started again (same port, same store) on
//! demand, killed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::redis::free_port;
use super::tempdir::Dir;

/// How long a fresh server may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(5);
/// Fresh ports tried before giving up (another process may take the port we picked).
const PORT_ATTEMPTS: usize = 5;

/// One `nats-server -js` process on `127.0.0.1:port`.
pub struct NatsServer {
    port: u16,
    store: Dir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it answers PING. Panics when
    /// `nats-server` is missing or never becomes ready: the test cannot run without it.
    pub fn start() -> NatsServer {
        let store = Dir::new("nats");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, &store) {
                Ok(child) => {
                    return NatsServer {
                        port,
                        store,
                        child: Some(child),
                    }
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start nats-server: {last}");
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (stopping the running one first).
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match spawn(self.port, &self.store) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    last = e;
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        panic!("cannot restart nats-server on port {}: {last}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `nats-server -js` on `port` and waits for PING; on failure the process is gone.
fn spawn(port: u16, store: &Dir) -> Result<Child, String> {
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(&store.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nats-server not runnable (is it installed?): {e}"))?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nats-server on port {port} exited with {status}"));
        }
        if ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "nats-server on port {port} not ready in {READY_WITHIN:?}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the server's INFO, sends CONNECT and PING, and expects PONG.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .is_err()
    {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return false;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(6).any(|w| w == b"PONG\r\n") {
            return true;
        }
    }
    false
}
