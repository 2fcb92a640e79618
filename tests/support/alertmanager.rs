//! A real Prometheus Alertmanager (Debian `prometheus-alertmanager`) for tests: started on
//! a free loopback port with clustering off, passing every alert to one webhook receiver
//! at once, killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Alertmanager {
    pub addr: SocketAddr,
    child: Child,
    _dir: super::tempdir::Dir,
}

impl Alertmanager {
    /// Starts one that sends every alert group, and its resolution, to `webhook` (a URL)
    /// within about a second; waits until it is ready.
    pub fn start(webhook: &str) -> Alertmanager {
        let dir = super::tempdir::Dir::new("alertmanager");
        let config = dir.path.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 100ms\n  \
                 group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
                 webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus-alertmanager is required (apt-get install prometheus-alertmanager)",
            );
        let am = Alertmanager {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !am.ready() {
            assert!(
                Instant::now() < deadline,
                "alertmanager did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        am
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let req = "GET /-/ready HTTP/1.1\r\nHost: am\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }

    /// `http://IP:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
