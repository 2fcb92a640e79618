//! A real `dnsmasq` for tests: an authoritative-only DNS server on a free loopback port,
//! answering from a hosts file (changed with [`Dnsmasq::set_hosts`], re-read on SIGHUP) and
//! from SRV and host records given at start; answers carry a TTL of one second. Killed on
//! drop.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tempdir::Dir;

/// One `dnsmasq` process on `127.0.0.1:port`.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    hosts: PathBuf,
    child: Option<Child>,
    _dir: Dir,
}

/// An SRV record: service name, target host, port, weight.
pub struct Srv<'a> {
    pub name: &'a str,
    pub target: &'a str,
    pub port: u16,
    pub weight: u16,
}

impl Dnsmasq {
    /// Starts a server answering `hosts` (`(address, name)` lines), `records` (fixed
    /// `name,address` host records) and `srv`; waits until it answers `ready.test`.
    pub fn start(hosts: &[(&str, &str)], records: &[(&str, &str)], srv: &[Srv<'_>]) -> Dnsmasq {
        let dir = Dir::new("dnsmasq");
        let hosts_file = dir.path.join("hosts");
        write_hosts(&hosts_file, hosts);
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_udp_port();
            let mut cmd = Command::new(binary());
            cmd.args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-daemon",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local-ttl=1",
                "--pid-file=",
                "--conf-file=/dev/null",
                "--host-record=ready.test,127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts_file.display()));
            if is_root() {
                cmd.args(["--user=root", "--group=root"]);
            }
            for (name, address) in records {
                cmd.arg(format!("--host-record={name},{address}"));
            }
            for s in srv {
                cmd.arg(format!(
                    "--srv-host={},{},{},0,{}",
                    s.name, s.target, s.port, s.weight
                ));
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dnsmasq runs (apt-get install dnsmasq-base)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_ready(&mut child, addr) {
                return Dnsmasq {
                    addr,
                    hosts: hosts_file,
                    child: Some(child),
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(mut e) = child.stderr.take() {
                last.clear();
                let _ = std::io::Read::read_to_string(&mut e, &mut last);
            }
        }
        panic!("cannot start dnsmasq: {last}");
    }

    /// Replaces the hosts file and tells the server to read it again.
    pub fn set_hosts(&self, hosts: &[(&str, &str)]) {
        write_hosts(&self.hosts, hosts);
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server: queries go unanswered from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the server answers, or has exited, or 5 s passed.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if query_a(addr, "ready.test") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn write_hosts(path: &PathBuf, hosts: &[(&str, &str)]) {
    let text: String = hosts.iter().map(|(a, n)| format!("{a} {n}\n")).collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one A query for `name` and says whether an answer came back with a record.
fn query_a(server: SocketAddr, name: &str) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send_to(&q, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        // The answer count (bytes 6 and 7) is not zero.
        Ok(n) if n >= 12 => buf[0] == 0x12 && (buf[6] != 0 || buf[7] != 0),
        _ => false,
    }
}
