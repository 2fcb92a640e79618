//! A real `rabbitmq-server` for tests, started once per test binary (it takes seconds to
//! boot) on free loopback ports with its data, logs, configuration and Erlang cookie in a
//! temporary directory, and its own `epmd` port so that test binaries running at the same
//! time do not meet. A watcher process kills the broker and its `epmd` and removes the
//! directory when the test binary exits. Tests keep apart by their queue and exchange names.
//!
//! [`Relay`] stands between a gateway and the broker, so that a test can make the broker
//! unreachable (and reachable again) without stopping the broker other tests share.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::redis::free_port;

/// How long the broker may take to boot (seconds on a loaded machine).
const READY_WITHIN: Duration = Duration::from_secs(90);
const BIN: &str = "/usr/lib/rabbitmq/bin";

/// The broker this test binary shares.
pub struct RabbitServer {
    port: u16,
}

static SHARED: OnceLock<RabbitServer> = OnceLock::new();

impl RabbitServer {
    /// The shared broker, started on first use. Panics when `rabbitmq-server` is missing or
    /// never becomes ready: the test cannot run without it.
    pub fn shared() -> &'static RabbitServer {
        SHARED.get_or_init(start)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> String {
        url(self.port)
    }
}

fn url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn start() -> RabbitServer {
    let dir = std::env::temp_dir().join(format!(
        "ferrogate-test-rabbitmq-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n").unwrap();
    let (port, dist, epmd) = (free_port(), free_port(), free_port());
    let node = format!("ferrogate-test-{}@localhost", std::process::id());
    let mut child = Command::new(Path::new(BIN).join("rabbitmq-server"))
        .env("HOME", &dir)
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("ERL_EPMD_PORT", epmd.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PID_FILE", dir.join("pid"))
        .current_dir(&dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("rabbitmq-server not runnable (is it installed?): {e}"));
    watch(child.id(), epmd, &dir);
    let group = child.id();
    // Reaped when it ends (the watcher kills it once the test binary exits).
    thread::spawn(move || child.wait());
    let deadline = Instant::now() + READY_WITHIN;
    while !answers(port) {
        assert!(
            Instant::now() < deadline,
            "rabbitmq-server (process {group}) on port {port} not ready in {READY_WITHIN:?} (logs in {})",
            dir.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
    RabbitServer { port }
}

/// Starts a process that waits for this test binary to end, then kills the broker's process
/// group and its `epmd` and removes its directory.
fn watch(group: u32, epmd: u16, dir: &Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; \
         kill -9 -{group} 2>/dev/null; \
         export ERL_EPMD_PORT={epmd}; \
         for i in 1 2 3 4 5 6 7 8 9 10; do \
           /usr/lib/erlang/bin/epmd -kill >/dev/null 2>&1; sleep 0.3; \
           /usr/lib/erlang/bin/epmd -names >/dev/null 2>&1 || break; \
         done; \
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

/// Whether the broker completes an AMQP handshake's start: it answers the protocol header
/// with `connection.start` (a method frame, type 1).
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut frame = [0u8; 1];
    s.read_exact(&mut frame).is_ok() && frame[0] == 1
}

/// A TCP relay on a loopback port to the broker: stopped, connections through it are cut
/// and new ones refused, as when the broker is down.
pub struct Relay {
    port: u16,
    target: u16,
    task: Option<tokio::task::AbortHandle>,
}

impl Relay {
    /// A relay to `target` on a free port; call from within a Tokio runtime.
    pub fn start(target: u16) -> Relay {
        let mut relay = Relay {
            port: 0,
            target,
            task: None,
        };
        relay.listen();
        relay
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` through the relay.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Cuts every connection and stops listening.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.listen();
    }

    fn listen(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "cannot listen on port {}: {e}", self.port);
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, target));
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.task = Some(task.abort_handle());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
