//! Reliability scenarios against a gateway binary (the release build, from
//! `bench/reliability.sh`): real backends on 127.0.0.1, the gateway as a child process, and
//! a table of scenario, requests, failures and result. Exits 1 if any scenario fails.
//!
//! Usage: `cargo run --release --example reliability -- target/release/ferrogate`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway binary running one config, with its admin listener.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    path: PathBuf,
    _dir: tempdir::Dir,
}

impl Gateway {
    /// `body` is the config after the listener and admin sections.
    async fn start(bin: &Path, body: &str) -> Gateway {
        let dir = tempdir::Dir::new("reliability");
        let (addr, admin) = (free_port(), free_port());
        let path = dir.path.join("gateway.yaml");
        std::fs::write(&path, yaml(addr, admin, body)).unwrap();
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(&path)
            .env("FERROGATE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway binary");
        let up = eventually(Duration::from_secs(10), || async {
            TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "gateway did not start");
        Gateway {
            child,
            addr,
            admin,
            path,
            _dir: dir,
        }
    }

    async fn reload(&self, body: &str) -> bool {
        std::fs::write(&self.path, yaml(self.addr, self.admin, body)).unwrap();
        admin_post(self.admin, "/reload").await == 200
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn yaml(addr: SocketAddr, admin: SocketAddr, body: &str) -> String {
    format!(
        "workers: 2\nlisteners:\n  - address: \"{addr}\"\n    limits:\n      header_timeout: 1s\n\
         admin:\n  address: \"{admin}\"\n{body}"
    )
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn group(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let targets: String = addrs
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!("  {name}:\n    targets:\n{targets}{extra}")
}

/// One row of the table.
struct Outcome {
    scenario: &'static str,
    requests: usize,
    failures: usize,
    ok: bool,
    note: String,
}

async fn killed_backend(bin: &Path) -> Outcome {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    retry:\n      attempts: 3\n      \
         on: [connect_failure, reset]\n",
        group(
            "app",
            &[a.addr, b.addr, c.addr],
            "    health_check:\n      passive:\n        consecutive_failures: 2\n"
        )
    );
    let gw = Gateway::start(bin, &body).await;
    let r = load_until(gw.addr, "/", 32, async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(b);
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    Outcome {
        scenario: "backend killed under load (idempotent, retried)",
        requests: r.requests,
        failures: r.failures,
        ok: r.failures == 0 && r.requests > 1000,
        note: String::new(),
    }
}

async fn hanging_backend(bin: &Path) -> Outcome {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(StatusCode::OK, "late")
    })
    .await;
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    timeouts:\n      response_header: 500ms\n",
        group("app", &[slow.addr], "")
    );
    let gw = Gateway::start(bin, &body).await;
    let mut failures = 0;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let got = get(gw.addr, "test", "/").await;
        let took = started.elapsed();
        worst = worst.max(took);
        if got.status != StatusCode::GATEWAY_TIMEOUT
            || took < Duration::from_millis(500)
            || took > Duration::from_millis(1500)
        {
            failures += 1;
        }
    }
    Outcome {
        scenario: "hanging backend gives 504 at the timeout",
        requests: 10,
        failures,
        ok: failures == 0,
        note: format!("slowest {} ms (timeout 500 ms)", worst.as_millis()),
    }
}

async fn all_down(bin: &Path) -> Outcome {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let (addr_a, addr_b) = (a.addr, b.addr);
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group(
            "app",
            &[addr_a, addr_b],
            "    health_check:\n      active:\n        type: tcp\n        interval: 100ms\n        \
             timeout: 100ms\n        healthy_threshold: 1\n        unhealthy_threshold: 1\n"
        )
    );
    let gw = Gateway::start(bin, &body).await;
    drop((a, b));
    let all_503 = eventually(Duration::from_secs(3), || async {
        get(gw.addr, "test", "/").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let mut failures = usize::from(!all_503);
    let mut worst = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let got = get(gw.addr, "test", "/").await;
        worst = worst.max(started.elapsed());
        if got.status != StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    let _back =
        Backend::start_at(addr_a, false, |_req| async { text(StatusCode::OK, "back") }).await;
    let recovered = eventually(Duration::from_secs(3), || async {
        get(gw.addr, "test", "/").await.text() == "back"
    })
    .await;
    failures += usize::from(!recovered);
    Outcome {
        scenario: "all targets down: 503 at once, then recovery",
        requests: 100,
        failures,
        ok: failures == 0 && worst < Duration::from_millis(50),
        note: format!(
            "slowest 503 {} ms; recovered: {recovered}",
            worst.as_millis()
        ),
    }
}

async fn slowloris(bin: &Path) -> Outcome {
    let a = Backend::named("a").await;
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[a.addr], "")
    );
    let gw = Gateway::start(bin, &body).await;
    let addr = gw.addr;
    let drippers: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.ok()?;
                let started = Instant::now();
                for byte in
                    b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                {
                    if s.write_all(&[*byte]).await.is_err()
                        || started.elapsed() > Duration::from_secs(3)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
                Some((started.elapsed(), status_of(&String::from_utf8_lossy(&out))))
            })
        })
        .collect();
    let mut failures = 0;
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        if get(addr, "test", "/").await.status != StatusCode::OK {
            failures += 1;
        }
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut cut_late = 0;
    for d in drippers {
        match d.await.unwrap() {
            Some((took, 408)) if took < Duration::from_millis(1800) => {}
            _ => cut_late += 1,
        }
    }
    Outcome {
        scenario: "200 header drippers cut at the 1 s deadline",
        requests: 50,
        failures: failures + cut_late,
        ok: failures == 0 && cut_late == 0 && worst < Duration::from_millis(200),
        note: format!("normal clients: slowest {} ms", worst.as_millis()),
    }
}

async fn reload_storm(bin: &Path) -> Outcome {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let body = |balancer: &str| {
        format!(
            "upstreams:\n{}routes:\n  - upstream: app\n",
            group(
                "app",
                &[a.addr, b.addr],
                &format!("    balancer: {balancer}\n")
            )
        )
    };
    let gw = Gateway::start(bin, &body("round_robin")).await;
    let mut reloads = 0;
    let mut reload_failures = 0;
    let r = load_until(gw.addr, "/", 32, async {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let balancer = if i % 2 == 0 {
                "least_connections"
            } else {
                "round_robin"
            };
            if gw.reload(&body(balancer)).await {
                reloads += 1;
            } else {
                reload_failures += 1;
            }
        }
    })
    .await;
    Outcome {
        scenario: "config reload every 100 ms under load",
        requests: r.requests,
        failures: r.failures + reload_failures,
        ok: r.failures == 0 && reload_failures == 0,
        note: format!("{reloads} reloads"),
    }
}

async fn remove_target(bin: &Path) -> Outcome {
    let a = Backend::named("a").await;
    let b = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text(StatusCode::OK, "b")
    })
    .await;
    let both = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[a.addr, b.addr], "")
    );
    let only_a = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[a.addr], "")
    );
    let gw = Gateway::start(bin, &both).await;
    let mut reloaded = false;
    let r = load_until(gw.addr, "/", 32, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reloaded = gw.reload(&only_a).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    let before = b.count();
    let after = load_count(gw.addr, "/", &[], 4, 200).await;
    let ok = r.failures == 0 && reloaded && b.count() == before && after.failures == 0;
    Outcome {
        scenario: "target removed under load",
        requests: r.requests + after.requests,
        failures: r.failures + after.failures,
        ok,
        note: format!("removed target got {} requests after", b.count() - before),
    }
}

async fn sticky(bin: &Path) -> Outcome {
    let backends = [
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &addrs, "    sticky: {cookie: pin}\n")
    );
    let gw = Gateway::start(bin, &body).await;
    let first = get(gw.addr, "test", "/").await;
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .to_owned();
    let leaked = addrs.iter().any(|a| cookie.contains(&a.port().to_string()));
    let cookie: &'static str = Box::leak(cookie.into_boxed_str());
    let r = load_count(gw.addr, "/", &[("cookie", cookie)], 4, 1000).await;
    let pinned = r.bodies.get(&first.text()).copied().unwrap_or(0);
    Outcome {
        scenario: "sticky cookie pins a client",
        requests: r.requests,
        failures: r.failures + (r.requests - pinned),
        ok: !cookie.is_empty() && !leaked && pinned == 1000,
        note: format!("{pinned} of 1000 on the pinned target"),
    }
}

async fn split(bin: &Path) -> Outcome {
    let stable = Backend::named("stable").await;
    let canary = Backend::named("canary").await;
    let body = format!(
        "upstreams:\n{}{}routes:\n  - split:\n      - {{upstream: stable, weight: 90}}\n      \
         - {{upstream: canary, weight: 10}}\n",
        group("stable", &[stable.addr], ""),
        group("canary", &[canary.addr], "")
    );
    let gw = Gateway::start(bin, &body).await;
    let r = load_count(gw.addr, "/", &[], 16, 10_000).await;
    let share = r.bodies.get("canary").copied().unwrap_or(0) as f64 / 100.0;
    Outcome {
        scenario: "90/10 split over 10,000 requests",
        requests: r.requests,
        failures: r.failures,
        ok: r.failures == 0 && (7.0..=13.0).contains(&share),
        note: format!("canary {share:.1}%"),
    }
}

async fn retry_budget(bin: &Path) -> Outcome {
    let a = Backend::start(false, |_req| async {
        text(StatusCode::SERVICE_UNAVAILABLE, "no")
    })
    .await;
    let b = Backend::start(false, |_req| async {
        text(StatusCode::SERVICE_UNAVAILABLE, "no")
    })
    .await;
    let body = format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    retry:\n      attempts: 3\n      on: [503]\n      \
         backoff: {{base: 1ms, max: 2ms}}\n      budget: {{ratio: 0.2, min_per_second: 1}}\n",
        group("app", &[a.addr, b.addr], "")
    );
    let gw = Gateway::start(bin, &body).await;
    let r = load_count(gw.addr, "/", &[], 8, 2000).await;
    let attempts = a.count() + b.count();
    let cap = 2000 + 400 + 10 + 16;
    Outcome {
        scenario: "retry budget caps retries when all targets fail",
        requests: r.requests,
        // Every answer is the backends' 503 here; what matters is the attempt count.
        failures: usize::from(attempts > cap),
        ok: attempts > 2000 && attempts <= cap,
        note: format!("{attempts} upstream attempts (cap {cap}, 6000 without a budget)"),
    }
}

fn main() -> ExitCode {
    let Some(bin) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: reliability PATH-TO-FERROGATE");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let outcomes = rt.block_on(async {
        vec![
            killed_backend(&bin).await,
            hanging_backend(&bin).await,
            all_down(&bin).await,
            slowloris(&bin).await,
            reload_storm(&bin).await,
            remove_target(&bin).await,
            sticky(&bin).await,
            split(&bin).await,
            retry_budget(&bin).await,
        ]
    });
    println!(
        "| {:<50} | {:>8} | {:>8} | {:<6} | note",
        "scenario", "requests", "failures", "result"
    );
    println!(
        "|{}|{}|{}|{}|------",
        "-".repeat(52),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(8)
    );
    for o in &outcomes {
        println!(
            "| {:<50} | {:>8} | {:>8} | {:<6} | {}",
            o.scenario,
            o.requests,
            o.failures,
            if o.ok { "pass" } else { "FAIL" },
            o.note
        );
    }
    println!("({} s)", started.elapsed().as_secs());
    if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
