//! A real `redis-server` for tests: started on a free loopback port with persistence off,
//! stopped (and restartable on the same port) on demand, killed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(5);
/// Fresh ports tried before giving up (another process may take the port we picked).
const PORT_ATTEMPTS: usize = 5;

/// One `redis-server` process on `127.0.0.1:port`.
pub struct RedisServer {
    port: u16,
    /// Given before the standard options (a config file must come first).
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING. Panics when
    /// `redis-server` is missing or never becomes ready: the test cannot run without it.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with `args` before the standard options: a config file and
    /// `--sentinel` for a Sentinel, `--cluster-enabled yes ...` for a cluster node.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, &args) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        args,
                        child: Some(child),
                    }
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start redis-server: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: clients see their connections reset) and waits
    /// for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty server on the same port and arguments (stopping the running one
    /// first).
    pub fn restart(&mut self) {
        self.stop();
        // The old process released the port when it died; a few retries cover a slow kernel.
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match spawn(self.port, &self.args) {
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
        panic!("cannot restart redis-server on port {}: {last}", self.port);
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as with
    /// a hung or unreachable server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Whether the server answers PING now.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill {signal} redis-server failed"
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago (bound to 0, read, closed).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Spawns `redis-server` on `port` and waits for PING; on failure the process is gone.
fn spawn(port: u16, args: &[String]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(args)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server not runnable (is it installed?): {e}"))?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Most likely the port (or a cluster node's bus port, +10000) was taken.
            return Err(format!("redis-server on port {port} exited with {status}"));
        }
        if ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} not ready in {READY_WITHIN:?}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends PING and expects `+PONG`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
