//! Resilience end to end: retries around a killed backend, timeouts, health checks, slow
//! clients, reloads and target removal under load, sticky sessions, traffic splitting,
//! retry budgets, passive ejection, draining, queues, body limits and mirroring.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn targets(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect()
}

/// One listener, an admin listener, upstream `app` (with `upstream_extra` under it) and one
/// catch-all route to it (with `route_extra` under it).
fn gateway_yaml(addrs: &[SocketAddr], upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n\
         upstreams:\n  app:\n    targets:\n{}{upstream_extra}routes:\n  - upstream: app\n{route_extra}",
        targets(addrs)
    )
}

async fn hanging() -> Backend {
    Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        text(StatusCode::OK, "late")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_idempotent_requests_nothing() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr, b.addr, c.addr],
        "    health_check:\n      passive:\n        consecutive_failures: 2\n",
        "    retry:\n      attempts: 3\n      on: [connect_failure, reset]\n",
    ));
    let report = load_until(gw.addr, "/", 8, async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(b);
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(report.bodies.contains_key("b"), "{report:?}");
}

#[tokio::test]
async fn a_hanging_backend_gives_504_at_the_route_timeout() {
    let slow = hanging().await;
    let gw = TestGateway::start(&gateway_yaml(
        &[slow.addr],
        "",
        "    timeouts:\n      response_header: 300ms\n",
    ));
    let started = Instant::now();
    let got = get(gw.addr, "test", "/").await;
    let took = started.elapsed();
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn all_targets_down_gives_503_at_once_and_traffic_recovers() {
    let a = Backend::named("a").await;
    let addr = a.addr;
    let gw = TestGateway::start(&gateway_yaml(
        &[addr],
        "    health_check:\n      active:\n        type: tcp\n        interval: 50ms\n        \
         timeout: 50ms\n        healthy_threshold: 1\n        unhealthy_threshold: 1\n",
        "",
    ));
    assert_eq!(get(gw.addr, "test", "/").await.status, StatusCode::OK);
    drop(a);
    assert!(
        eventually(Duration::from_secs(2), || async {
            get(gw.addr, "test", "/").await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await
    );
    let started = Instant::now();
    let got = get(gw.addr, "test", "/").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(got.header("content-type"), Some("application/problem+json"));

    let _back = Backend::start_at(addr, false, |_req| async { text(StatusCode::OK, "back") }).await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            get(gw.addr, "test", "/").await.text() == "back"
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_drippers_are_cut_at_the_deadline_while_others_are_served() {
    let a = Backend::named("a").await;
    let yaml = gateway_yaml(&[a.addr], "", "").replace(
        "  - address: \"127.0.0.1:0\"\nadmin",
        "  - address: \"127.0.0.1:0\"\n    limits:\n      header_timeout: 500ms\nadmin",
    );
    let gw = TestGateway::start(&yaml);
    let addr = gw.addr;
    let drippers: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let started = Instant::now();
                let head = b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if s.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if started.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                }
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
                (
                    started.elapsed(),
                    String::from_utf8_lossy(&out).into_owned(),
                )
            })
        })
        .collect();
    // Meanwhile ordinary clients get ordinary service.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(get(addr, "test", "/").await.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in drippers {
        let (took, out) = d.await.unwrap();
        assert_eq!(status_of(&out), 408, "{out}");
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
    assert_eq!(a.count(), 10);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_timeout() {
    let a = Backend::named("a").await;
    let yaml = gateway_yaml(&[a.addr], "", "").replace(
        "  - address: \"127.0.0.1:0\"\nadmin",
        "  - address: \"127.0.0.1:0\"\n    limits:\n      keepalive_timeout: 200ms\nadmin",
    );
    let gw = TestGateway::start(&yaml);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the gateway closes the idle connection");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

fn write_config(dir: &tempdir::Dir, yaml: &str) -> std::path::PathBuf {
    let path = dir.path.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_every_100ms_under_load_fails_no_request() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let dir = tempdir::Dir::new("reload-load");
    let yaml = gateway_yaml(&[a.addr, b.addr], "", "");
    let path = write_config(&dir, &yaml);
    let gw = TestGateway::start_file(&path);
    let shared = gw.shared().clone();
    let report = load_until(gw.addr, "/", 6, async move {
        for i in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Alternate a real change so every reload builds a different snapshot.
            let changed = if i % 2 == 0 {
                yaml.replace(
                    "    targets:\n",
                    "    balancer: least_connections\n    targets:\n",
                )
            } else {
                yaml.clone()
            };
            std::fs::write(&path, changed).unwrap();
            let s = shared.clone();
            tokio::task::spawn_blocking(move || s.reload().unwrap())
                .await
                .unwrap();
        }
    })
    .await;
    assert!(report.requests > 200, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_target_under_load_fails_no_request() {
    let a = Backend::named("a").await;
    let b = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text(StatusCode::OK, "b")
    })
    .await;
    let dir = tempdir::Dir::new("remove-target");
    let path = write_config(&dir, &gateway_yaml(&[a.addr, b.addr], "", ""));
    let gw = TestGateway::start_file(&path);
    let shared = gw.shared().clone();
    let only_a = gateway_yaml(&[a.addr], "", "");
    let report = load_until(gw.addr, "/", 6, async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&path, only_a).unwrap();
        tokio::task::spawn_blocking(move || shared.reload().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    assert_eq!(report.failures, 0, "{report:?}");
    let b_before = b.count();
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "test", "/").await.text(), "a");
    }
    assert_eq!(b.count(), b_before, "a removed target gets no new requests");
}

#[tokio::test]
async fn the_sticky_cookie_pins_a_client_to_one_target() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr, b.addr, c.addr],
        "    sticky:\n      cookie: pin\n",
        "",
    ));
    let first = get(gw.addr, "test", "/").await;
    let set = first.header("set-cookie").unwrap().to_owned();
    assert!(set.starts_with("pin="), "{set}");
    for backend in [&a, &b, &c] {
        assert!(!set.contains(&backend.addr.to_string()));
        assert!(!set.contains(&backend.addr.port().to_string()));
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        let req = Request::get("/")
            .header("host", "test")
            .header("cookie", &cookie)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = send(gw.addr, req).await;
        assert_eq!(got.text(), first.text());
        assert!(
            got.header("set-cookie").is_none(),
            "a kept pin is not re-issued"
        );
    }
}

#[tokio::test]
async fn a_pinned_target_that_drains_hands_the_client_to_another() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let gw = TestGateway::start(&gateway_yaml(&[a.addr, b.addr], "    sticky: {}\n", ""));
    let first = get(gw.addr, "test", "/").await;
    let cookie = first
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let pinned = if first.text() == "a" { a.addr } else { b.addr };
    let admin = gw.admin.unwrap();
    assert_eq!(
        admin_post(admin, &format!("/upstreams/app/targets/{pinned}/drain")).await,
        200
    );
    let req = Request::get("/")
        .header("host", "test")
        .header("cookie", &cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(gw.addr, req).await;
    assert_ne!(got.text(), first.text());
    assert!(
        got.header("set-cookie").is_some(),
        "the client gets a new pin"
    );
}

fn split_yaml(stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nupstreams:\n  stable:\n    targets:\n      \
         - address: \"{stable}\"\n  canary:\n    targets:\n      - address: \"{canary}\"\nroutes:\n  \
         - split:\n      - upstream: stable\n        weight: 90\n      - upstream: canary\n        \
         weight: 10\n    split_header: x-canary\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_within_3_points_over_10000_requests() {
    let stable = Backend::named("stable").await;
    let canary = Backend::named("canary").await;
    let gw = TestGateway::start(&split_yaml(stable.addr, canary.addr));
    let report = load_count(gw.addr, "/", &[], 16, 10_000).await;
    assert_eq!(report.failures, 0);
    let share = report.bodies["canary"] as f64 / 10_000.0;
    assert!((0.07..=0.13).contains(&share), "canary share {share}");
}

#[tokio::test]
async fn a_header_forces_one_group_of_a_split() {
    let stable = Backend::named("stable").await;
    let canary = Backend::named("canary").await;
    let gw = TestGateway::start(&split_yaml(stable.addr, canary.addr));
    let report = load_count(gw.addr, "/", &[("x-canary", "canary")], 2, 50).await;
    assert_eq!(report.bodies.get("canary"), Some(&50));
}

#[tokio::test]
async fn the_retry_budget_caps_retries_when_every_target_fails() {
    let a = Backend::start(false, |_req| async {
        text(StatusCode::SERVICE_UNAVAILABLE, "no")
    })
    .await;
    let b = Backend::start(false, |_req| async {
        text(StatusCode::SERVICE_UNAVAILABLE, "no")
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr, b.addr],
        "",
        "    retry:\n      attempts: 3\n      on: [503]\n      backoff:\n        base: 1ms\n        \
         max: 2ms\n      budget:\n        ratio: 0.2\n        min_per_second: 1\n",
    ));
    let report = load_count(gw.addr, "/", &[], 4, 200).await;
    assert_eq!(report.statuses.get(&503), Some(&200));
    let attempts = a.count() + b.count();
    // 200 requests, 20% of them retried, plus a floor of 1/s over the 10 s window.
    assert!(attempts > 200, "retries happen: {attempts}");
    assert!(
        attempts <= 200 + 40 + 10 + 4,
        "the budget holds: {attempts}"
    );
}

#[tokio::test]
async fn consecutive_5xx_eject_a_target_from_the_rotation() {
    let bad = Backend::start(false, |_req| async {
        text(StatusCode::INTERNAL_SERVER_ERROR, "bad")
    })
    .await;
    let good = Backend::named("good").await;
    let gw = TestGateway::start(&gateway_yaml(
        &[bad.addr, good.addr],
        "    health_check:\n      passive:\n        consecutive_5xx: 3\n        base_ejection: 10s\n",
        "",
    ));
    for _ in 0..10 {
        get(gw.addr, "test", "/").await;
    }
    let seen = bad.count();
    assert_eq!(seen, 3, "ejected after three 5xx in a row");
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "test", "/").await.text(), "good");
    }
    let state = get(gw.admin.unwrap(), "admin", "/upstreams").await.text();
    assert!(state.contains("\"ejections\":1"), "{state}");
    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    assert!(
        metrics.contains(&format!(
            "ferrogate_upstream_target_ejected{{upstream=\"app\",target=\"{}\"}} 1",
            bad.addr
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_circuit_opens_on_failures_and_closes_after_a_good_trial() {
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = flaky.clone();
    let a = Backend::start(false, move |_req| {
        let fail = f.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if fail {
                text(StatusCode::BAD_GATEWAY, "down")
            } else {
                text(StatusCode::OK, "up")
            }
        }
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr],
        "    circuit_breaker:\n      consecutive_failures: 3\n      open_for: 300ms\n",
        "",
    ));
    for _ in 0..3 {
        assert_eq!(
            get(gw.addr, "test", "/").await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    let got = get(gw.addr, "test", "/").await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "open: not sent"
    );
    assert_eq!(a.count(), 3);
    flaky.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get(gw.addr, "test", "/").await.text(), "up");
    assert_eq!(get(gw.addr, "test", "/").await.text(), "up");
}

#[tokio::test]
async fn a_drained_target_gets_no_new_requests_until_ready_again() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let gw = TestGateway::start(&gateway_yaml(&[a.addr, b.addr], "", ""));
    let admin = gw.admin.unwrap();
    let path = format!("/upstreams/app/targets/{}/drain", a.addr);
    assert_eq!(admin_post(admin, &path).await, 200);
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "test", "/").await.text(), "b");
    }
    assert!(get(admin, "admin", "/upstreams")
        .await
        .text()
        .contains("\"draining\":true"));
    let ready = format!("/upstreams/app/targets/{}/ready", a.addr);
    assert_eq!(admin_post(admin, &ready).await, 200);
    let report = load_count(gw.addr, "/", &[], 1, 10).await;
    assert_eq!(report.bodies.get("a"), Some(&5));
    assert_eq!(
        admin_post(admin, "/upstreams/app/targets/10.9.9.9:1/drain").await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_queue_answers_503() {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        text(StatusCode::OK, "slow")
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(
        &[slow.addr],
        "    max_concurrent_requests: 1\n    queue:\n      size: 1\n      timeout: 2s\n",
        "",
    ));
    let addr = gw.addr;
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 50)).await;
                get(addr, "test", "/").await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    // One runs, one waits its turn in the queue, the third finds the queue full.
    assert_eq!(statuses, vec![200, 200, 503]);
    assert_eq!(slow.count(), 2);
}

#[tokio::test]
async fn a_body_over_the_route_limit_gets_413_and_never_reaches_the_backend() {
    // The backend reads the whole body before it answers, as most do.
    let a = Backend::start(false, |req: Request<hyper::body::Incoming>| async move {
        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
        text(StatusCode::OK, "a")
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(&[a.addr], "", "    max_body_bytes: 1000\n"));
    let req = Request::post("/")
        .header("host", "test")
        .body(Full::new(Bytes::from(vec![b'x'; 2000])))
        .unwrap();
    assert_eq!(
        send(gw.addr, req).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(a.count(), 0);
    // A chunked body says nothing up front: it is cut when it passes the limit.
    let got = over_limit_chunked(gw.addr).await;
    assert_eq!(status_of(&got), 413, "{got}");
}

/// Sends a chunked body of two 1,000-byte chunks; what came back before the connection
/// closed (within 3 s).
async fn over_limit_chunked(addr: SocketAddr) -> String {
    let more = [
        vec![b'y'; 1000],
        b"\r\n3e8\r\n".to_vec(),
        vec![b'y'; 1000],
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n")
        .await
        .unwrap();
    let _ = s.write_all(&more).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_upstream_that_answered_early_is_relayed_when_the_body_then_passes_the_limit() {
    // The backend answers at once without reading the body, and sends its body later:
    // the upload is cut at the limit meanwhile, and the answer still reaches the client.
    let a = Backend::start(false, |_req| async {
        let later = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"answered")))
        });
        let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(later));
        http::Response::new(body)
    })
    .await;
    let gw = TestGateway::start(&gateway_yaml(&[a.addr], "", "    max_body_bytes: 1000\n"));
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let first = [
        &b"POST / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"[..],
        &[b'y'; 1000],
        b"\r\n",
    ]
    .concat();
    s.write_all(&first).await.unwrap();
    // The answer's head comes through before its body: only then does the rest follow.
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    let rest = [&b"3e8\r\n"[..], &[b'y'; 1000], b"\r\n0\r\n\r\n"].concat();
    let _ = s.write_all(&rest).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("answered\r\n0\r\n\r\n"), "{got}");
}

#[tokio::test]
async fn mirrored_requests_reach_the_shadow_and_the_client_sees_the_primary() {
    let primary = Backend::named("primary").await;
    let shadow = Backend::start(false, |_req| async {
        text(StatusCode::INTERNAL_SERVER_ERROR, "shadow")
    })
    .await;
    let yaml = format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nupstreams:\n  main:\n    targets:\n      \
         - address: \"{}\"\n  shadow:\n    targets:\n      - address: \"{}\"\nroutes:\n  \
         - upstream: main\n    mirror:\n      upstream: shadow\n",
        primary.addr, shadow.addr
    );
    let gw = TestGateway::start(&yaml);
    for _ in 0..5 {
        let got = get(gw.addr, "test", "/copy").await;
        assert_eq!(got.text(), "primary");
    }
    assert!(eventually(Duration::from_secs(2), || async { shadow.count() == 5 }).await);
    assert_eq!(shadow.requests()[0].uri.path(), "/copy");
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_closed_at_once() {
    let a = Backend::named("a").await;
    let yaml = gateway_yaml(&[a.addr], "", "").replace(
        "  - address: \"127.0.0.1:0\"\nadmin",
        "  - address: \"127.0.0.1:0\"\n    limits:\n      max_connections_per_ip: 2\nadmin",
    );
    let gw = TestGateway::start(&yaml);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
        held.push(s);
    }
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed unanswered");
    drop(held);
    // The places come back once the gateway has seen those connections close.
    assert!(
        eventually(Duration::from_secs(2), || async {
            // A refused try may be reset under our feet: no unwrap here.
            let Ok(mut s) = TcpStream::connect(gw.addr).await else {
                return false;
            };
            let req = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
            if s.write_all(req).await.is_err() {
                return false;
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut out)).await;
            status_of(&String::from_utf8_lossy(&out)) == 200
        })
        .await
    );
    // The third connection, and any retry above made before the places came back.
    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "ferrogate_connections_refused_total{listener=\"listener-0\",reason=\"per_ip\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");
}

#[tokio::test]
async fn an_http2_ping_flood_is_cut_with_enhance_your_calm() {
    ping_flood_on("hyper").await;
}

#[tokio::test]
async fn an_http2_ping_flood_on_the_native_server_is_cut_with_enhance_your_calm() {
    ping_flood_on("native").await;
}

async fn ping_flood_on(server: &str) {
    let a = Backend::named("a").await;
    let gw = TestGateway::start(&gateway_yaml(&[a.addr], "", "").replacen(
        "address: \"127.0.0.1:0\"\n",
        &format!("address: \"127.0.0.1:0\"\n    h2_server: {server}\n"),
        1,
    ));
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    for i in 0u64..10_000 {
        out.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]); // PING, 8 bytes
        out.extend_from_slice(&i.to_be_bytes());
    }
    let started = Instant::now();
    let _ = s.write_all(&out).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // Find a GOAWAY frame (type 7) and read its error code.
    let mut at = 0;
    let mut code = None;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 7 && at + 9 + 8 <= got.len() {
            let p = &got[at + 9..];
            code = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(code, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn a_websocket_tunnel_outlives_a_reload() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let echo = websocket_echo_backend().await;
    let dir = tempdir::Dir::new("ws-reload");
    let yaml = gateway_yaml(&[echo.addr], "", "    websocket: true\n");
    let path = write_config(&dir, &yaml);
    let gw = TestGateway::start_file(&path);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    std::fs::write(
        &path,
        yaml.replace("    targets:\n", "    balancer: random\n    targets:\n"),
    )
    .unwrap();
    let shared = gw.shared().clone();
    tokio::task::spawn_blocking(move || shared.reload().unwrap())
        .await
        .unwrap();
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_at_the_body_timeout() {
    let a = Backend::start(false, |req| async move {
        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
        text(StatusCode::OK, "a")
    })
    .await;
    let yaml = gateway_yaml(&[a.addr], "", "").replace(
        "  - address: \"127.0.0.1:0\"\nadmin",
        "  - address: \"127.0.0.1:0\"\n    limits:\n      body_timeout: 300ms\nadmin",
    );
    let gw = TestGateway::start(&yaml);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let took = started.elapsed();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 408);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

/// A backend that sends the head and one chunk of a body, then stalls.
async fn stalling_body() -> Backend {
    Backend::start(false, |_req| async {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"first"))))
                .await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream));
        http::Response::new(body)
    })
    .await
}

#[tokio::test]
async fn a_stalled_response_body_is_cut_at_the_idle_timeout() {
    let a = stalling_body().await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr],
        "",
        "    timeouts:\n      idle: 300ms\n",
    ));
    let started = Instant::now();
    let out = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let took = started.elapsed();
    assert_eq!(status_of(&out), 200);
    assert!(out.contains("first"));
    assert!(
        !out.ends_with("0\r\n\r\n"),
        "the cut body does not look complete: {out:?}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_total_timeout_bounds_the_whole_exchange() {
    let a = stalling_body().await;
    let gw = TestGateway::start(&gateway_yaml(
        &[a.addr],
        "",
        "    timeouts:\n      idle: 5s\n      total: 400ms\n",
    ));
    let started = Instant::now();
    let out = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let took = started.elapsed();
    assert!(out.contains("first"));
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn at_the_listener_connection_limit_new_connections_wait_their_turn() {
    let a = Backend::named("a").await;
    let yaml = gateway_yaml(&[a.addr], "", "").replace(
        "  - address: \"127.0.0.1:0\"\nadmin",
        "  - address: \"127.0.0.1:0\"\n    limits:\n      max_connections: 1\nadmin",
    );
    let gw = TestGateway::start(&yaml);
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    // The second connection is not served while the first is open...
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "no answer while the listener is full");
    // ...and is served as soon as it closes.
    drop(first);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 200);
}
