//! A real `etcd` (Debian `etcd-server`) for tests: one member on free loopback ports with
//! its data in a temporary directory, shared by a test binary or owned by one test, killed
//! (as a crash would) and started again on the same ports and data on demand. A watcher
//! process kills it and removes its data once the test binary ends.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::redis::free_port;

/// How long a fresh member may take to answer `/health`.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Fresh ports tried before giving up.
const PORT_ATTEMPTS: usize = 5;

/// One etcd member.
pub struct EtcdServer {
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

static SHARED: OnceLock<EtcdServer> = OnceLock::new();

impl EtcdServer {
    /// The member this test binary shares (never stopped), started on first use.
    pub fn shared() -> &'static EtcdServer {
        SHARED.get_or_init(EtcdServer::start)
    }

    /// A member of the caller's own, killed on drop. Panics when `etcd` is missing or never
    /// becomes ready: the test cannot run without it.
    pub fn start() -> EtcdServer {
        let dir = std::env::temp_dir().join(format!(
            "ferrogate-test-etcd-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let (client, peer) = (free_port(), free_port());
            match spawn(client, peer, &dir) {
                Ok(child) => {
                    return EtcdServer {
                        client,
                        peer,
                        dir,
                        child: Some(child),
                    }
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start etcd: {last}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Kills the member (SIGKILL: clients see their connections reset) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match spawn(self.client, self.peer, &self.dir) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    last = e;
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("cannot restart etcd on port {}: {last}", self.client);
    }

    /// Freezes the member (SIGSTOP): connections stay open and nothing is answered, as with
    /// a hung member.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`EtcdServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill {signal} etcd failed"
            );
        }
    }

    /// Puts `value` at `key` (through the JSON gateway, as an operator's tool would).
    pub fn put(&self, key: &str, value: &str) {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            B64.encode(key),
            B64.encode(value)
        );
        let answer = post(self.client, "/v3/kv/put", &body).expect("etcd answers a put");
        assert!(answer.starts_with("HTTP/1.1 200"), "put {key}: {answer}");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns a member and waits for `/health`; on failure the process is gone.
fn spawn(client: u16, peer: u16, dir: &std::path::Path) -> Result<Child, String> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut child = Command::new("etcd")
        .args(["--name", "test", "--data-dir"])
        .arg(dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .args(["--log-level", "error"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("etcd not runnable (apt-get install etcd-server): {e}"))?;
    watch(child.id(), dir);
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("etcd on port {client} exited with {status}"));
        }
        if post(client, "/v3/kv/range", "{\"key\":\"AA==\"}")
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "etcd on port {client} not ready in {READY_WITHIN:?}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a process that waits for this test binary to end, then kills the member and
/// removes its data.
fn watch(pid: u32, dir: &std::path::Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pid} 2>/dev/null; \
         rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display()
    );
    let mut watcher = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    thread::spawn(move || watcher.wait());
}

/// One HTTP/1.1 POST of JSON; the whole answer as text, or none when the member does not
/// answer.
fn post(port: u16, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
