//! The traffic history end to end: requests recorded per route, target, consumer and client,
//! written to the data directory, read back through the admin listener's `/stats` after a
//! restart; bad queries refused with what is wrong.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use support::*;

fn yaml(backend: SocketAddr, dir: &std::path::Path) -> String {
    format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
data_dir: \"{}\"
history: {{max_names: 10}}
upstreams:
  app: {{targets: [{{address: \"{backend}\"}}]}}
  down: {{targets: [{{address: \"127.0.0.1:1\"}}]}}
routes:
  - name: broken
    match: {{path: {{prefix: /broken}}}}
    upstream: down
  - name: orders
    upstream: app
",
        dir.display()
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn stats(admin: SocketAddr, query: &str) -> (StatusCode, serde_json::Value) {
    let got = get(admin, "admin", &format!("/stats{query}")).await;
    (got.status, serde_json::from_slice(&got.body).unwrap())
}

/// The sum of a series' values.
fn total(v: &serde_json::Value) -> f64 {
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .sum()
}

#[tokio::test]
async fn the_history_answers_a_range_query_after_a_restart() {
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("history");
    let start = now();
    // A gateway process records the requests, and writes the points of its last seconds
    // as SIGTERM stops it.
    let config = dir.path.join("gateway.yaml");
    std::fs::write(&config, yaml(backend.addr, &dir.path)).unwrap();
    let (mut first, addr) = spawn_run(env!("CARGO_BIN_EXE_ferrogate"), &config);
    for i in 0..20 {
        assert_eq!(
            get(addr, "shop.test", &format!("/orders/{i}")).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..5 {
        let got = get(addr, "shop.test", "/broken").await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    }
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(first.wait().unwrap().success());

    // Another one on the same data directory reads them.
    let gw = TestGateway::start(&yaml(backend.addr, &dir.path));
    let admin = gw.admin.unwrap();
    let range = format!("from={}&to={}", start - 20, now() + 20);
    let (status, orders) = stats(admin, &format!("?metric=requests&route=orders&{range}")).await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert_eq!(total(&orders), 20.0, "{orders}");
    assert_eq!(orders["step"], 10);
    let (_, errors) = stats(admin, &format!("?metric=errors&route=broken&{range}")).await;
    assert_eq!(total(&errors), 5.0, "{errors}");
    let (_, all) = stats(admin, &format!("?metric=requests&{range}")).await;
    assert_eq!(total(&all), 25.0, "the gateway's own series: {all}");
    let (_, p99) = stats(admin, &format!("?metric=p99&route=orders&{range}")).await;
    let slowest = p99["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .fold(0.0, f64::max);
    assert!(slowest > 0.0 && slowest < 5_000.0, "p99 in ms: {p99}");
    let (_, minutes) = stats(
        admin,
        &format!("?metric=requests&route=orders&step=60&{range}"),
    )
    .await;
    assert_eq!(total(&minutes), 20.0, "1-minute points: {minutes}");
    let (_, bytes) = stats(admin, &format!("?metric=bytes_out&route=orders&{range}")).await;
    assert!(total(&bytes) >= 20.0 * 3.0, "{bytes}");

    let (_, top) = stats(admin, &format!("/top?dimension=route&{range}")).await;
    assert_eq!(top["top"][0]["name"], "orders", "{top}");
    assert_eq!(top["top"][0]["value"], 20.0);
    assert_eq!(top["top"][1]["name"], "broken");
    let (_, targets) = stats(admin, &format!("/top?dimension=target&metric=5xx&{range}")).await;
    assert_eq!(targets["top"][0]["value"], 5.0, "{targets}");
    let (_, clients) = stats(admin, &format!("/top?dimension=client&{range}")).await;
    assert_eq!(clients["top"][0]["name"], "127.0.0.1", "{clients}");
    assert_eq!(clients["top"][0]["value"], 25.0);
}

#[tokio::test]
async fn a_bad_query_is_refused_with_what_is_wrong() {
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("history-bad");
    let gw = TestGateway::start(&yaml(backend.addr, &dir.path));
    let admin = gw.admin.unwrap();
    for (query, says) in [
        ("?metric=speed", "metric: unknown \\\"speed\\\""),
        ("?step=7", "step: a multiple of 10 seconds"),
        ("?from=20&to=10", "from: after to"),
        ("?from=yesterday", "from: not a number"),
        (
            "/top?dimension=planet",
            "dimension: route, target, consumer or client",
        ),
    ] {
        let got = get(admin, "admin", &format!("/stats{query}")).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(got.text().contains(says), "{query}: {}", got.text());
    }
}

#[tokio::test]
async fn the_history_keeps_the_cache_hit_ratio_and_each_targets_health() {
    let backend = Backend::start(false, |_req| async {
        let mut r = text(StatusCode::OK, "cacheable");
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=60"),
        );
        r
    })
    .await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let start = now();
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
history: {{}}
upstreams:
  app: {{targets: [{{address: \"{}\"}}]}}
  pair:
    targets: [{{address: \"{}\"}}, {{address: \"{dead}\"}}]
    health_check: {{active: {{path: /, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1}}}}
routes:
  - {{name: pair, match: {{path: {{prefix: /pair}}}}, upstream: pair}}
  - {{name: cached, upstream: app, cache: {{}}}}
",
        backend.addr, backend.addr
    ));
    // One miss, then three hits of the same URL.
    for _ in 0..4 {
        assert_eq!(get(gw.addr, "a.test", "/page").await.status, 200);
    }
    // The dead target is found unhealthy before the sample is taken.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    gw.shared()
        .snapshot
        .load()
        .history
        .as_ref()
        .unwrap()
        .flush();
    let admin = gw.admin.unwrap();
    let range = format!("from={}&to={}", start - 20, now() + 20);
    let (status, ratio) = stats(
        admin,
        &format!("?metric=cache_hit_ratio&route=cached&{range}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ratio}");
    let values: Vec<f64> = ratio["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .collect();
    assert_eq!(values, [0.75], "{ratio}");
    let (_, hits) = stats(admin, &format!("?metric=cache_hits&route=cached&{range}")).await;
    assert_eq!(total(&hits), 3.0, "{hits}");
    let health = |t: SocketAddr| format!("?metric=healthy_ratio&target={t}&{range}");
    let (_, live) = stats(admin, &health(backend.addr)).await;
    assert!(
        live["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[1] == 1.0),
        "{live}"
    );
    let (_, gone) = stats(admin, &health(dead)).await;
    let samples: Vec<f64> = gone["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .collect();
    assert!(
        !samples.is_empty() && samples.iter().all(|v| *v == 0.0),
        "{gone}"
    );
}
