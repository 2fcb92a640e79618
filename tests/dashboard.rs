//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (`support/webdriver.rs`) against a running gateway with real traffic to real backends.
//! Each test saves screenshots under `target/dashboard-screenshots/` and fails when a page
//! logged a script, network or content-security-policy error.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use support::webdriver::Browser;
use support::*;

/// The SHA-256 of `s3cret`, the admin token of the tests that sign in.
const TOKEN_SHA256: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

/// One browser at a time: the machine running the tests may have two cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A gateway started from a configuration file (the configuration API writes versions
/// only for one), in a directory removed with it.
fn start(yaml: &str) -> (TestGateway, tempdir::Dir) {
    let dir = tempdir::Dir::new("dashboard");
    let path = dir.path.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    (TestGateway::start_file(&path), dir)
}

fn yaml(backend: SocketAddr, extra: &str) -> String {
    format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
admin:
  address: \"127.0.0.1:0\"
{extra}history: {{}}
upstreams:
  app: {{targets: [{{address: \"{backend}\"}}]}}
routes:
  - name: orders
    match: {{path: {{prefix: /orders}}}}
    upstream: app
  - name: catalog
    upstream: app
"
    )
}

/// Requests every 20 ms to two routes until the flag is lowered.
fn traffic(addr: SocketAddr) -> Arc<AtomicBool> {
    let on = Arc::new(AtomicBool::new(true));
    let flag = on.clone();
    tokio::spawn(async move {
        let mut i = 0u32;
        while flag.load(Ordering::Relaxed) {
            let path = if i % 3 == 0 {
                "/catalog/1"
            } else {
                "/orders/1"
            };
            let _ = get(addr, "shop.test", path).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    on
}

async fn no_errors(b: &Browser, page: &str) {
    let errors = b.errors().await;
    assert!(errors.is_empty(), "{page} logged errors: {errors:#?}");
}

#[tokio::test]
async fn the_overview_shows_live_rates_of_real_traffic_within_seconds() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let (gw, _dir) = start(&yaml(backend.addr, ""));
    let base = format!("http://{}", gw.admin.unwrap());
    let on = traffic(gw.addrs[0]);
    let b = Browser::open(1280, 1000).await;
    b.page(&base, "").await;
    let rps = b
        .wait_for(
            "a non-zero live request rate",
            "Number(document.getElementById('live-rps').dataset.value) > 0 && document.getElementById('live-rps').dataset.value",
            Duration::from_secs(8),
        )
        .await;
    let rps: f64 = rps.as_str().unwrap().parse().unwrap();
    assert!(
        rps > 5.0 && rps < 200.0,
        "about 40 requests a second: {rps}"
    );
    b.wait_for(
        "a route in the live table",
        "document.querySelector('#main a[href=\"#/routes/orders\"]')",
        Duration::from_secs(5),
    )
    .await;
    b.wait_for(
        "three seconds on the live chart",
        "document.querySelector('#main .chart') && Number(document.querySelector('#main .chart').dataset.points) >= 3",
        Duration::from_secs(6),
    )
    .await;
    b.screenshot("overview").await;
    no_errors(&b, "the overview").await;
    // At a phone's width nothing overflows the page sideways.
    b.resize(390, 844).await;
    let wide = b
        .wait_for(
            "the page laid out at phone width",
            "document.documentElement.clientWidth <= 400 && String(document.documentElement.scrollWidth)",
            Duration::from_secs(3),
        )
        .await;
    if wide.as_str().unwrap().parse::<u32>().unwrap() > 400 {
        let culprits = b
            .run(
                "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > 400).slice(0, 12).map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`);",
                json!([]),
            )
            .await;
        panic!("page wider than the phone: {wide}: {culprits:#}");
    }
    b.screenshot("overview-phone").await;
    on.store(false, Ordering::Relaxed);
}

#[tokio::test]
async fn a_routes_history_chart_draws_after_a_restart() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("dashboard-history");
    let config = dir.path.join("gateway.yaml");
    let data = format!("data_dir: \"{}\"\n", dir.path.display());
    std::fs::write(&config, yaml(backend.addr, &data)).unwrap();
    let bin = env!("CARGO_BIN_EXE_ferrogate");
    let (mut first, addr, _) = spawn_run_with_admin(bin, &config);
    for i in 0..30 {
        let got = get(addr, "shop.test", &format!("/orders/{i}")).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success() && first.wait().unwrap().success());

    let (_second, _, admin) = spawn_run_with_admin(bin, &config);
    let b = Browser::open(1280, 1000).await;
    b.page(&format!("http://{admin}"), "routes/orders").await;
    let total = b
        .wait_for(
            "the history chart of route orders",
            "document.querySelector('#history-rps') && Number(document.querySelector('#history-rps').dataset.total) > 0 && document.querySelector('#history-rps').dataset.total",
            Duration::from_secs(8),
        )
        .await;
    let per_second: f64 = total.as_str().unwrap().parse().unwrap();
    // 30 requests in 10-second points: the rates sum to 3 per second.
    assert!((per_second - 3.0).abs() < 0.01, "{per_second}");
    b.wait_for(
        "the route's configuration",
        "document.getElementById('item-config').textContent.includes('\"upstream\": \"app\"')",
        Duration::from_secs(5),
    )
    .await;
    b.screenshot("route").await;
    no_errors(&b, "the route page").await;
}

#[tokio::test]
async fn an_invalid_edit_shows_each_problem_at_its_key_and_a_valid_one_becomes_a_version() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let tokens = format!("  tokens: [{{name: ops, role: admin, sha256: \"{TOKEN_SHA256}\"}}]\n");
    let (gw, _dir) = start(&yaml(backend.addr, &tokens));
    let base = format!("http://{}", gw.admin.unwrap());
    let b = Browser::open(1280, 1100).await;
    // The page loads without a token; its API calls need one, so it asks.
    b.page(&base, "config/edit/routes/orders").await;
    b.wait_for(
        "the login form",
        "document.getElementById('main').dataset.page === 'login'",
        Duration::from_secs(5),
    )
    .await;
    b.type_into("#token", "s3cret").await;
    b.click(".login button[type=submit]").await;
    b.wait_for(
        "the loaded route",
        "document.getElementById('edit-text').value.includes('\"upstream\": \"app\"')",
        Duration::from_secs(8),
    )
    .await;

    let bad =
        r#"{"match": {"path": {"prefix": "/orders"}}, "upstream": "nowhere", "colour": "red"}"#;
    b.type_into("#edit-text", bad).await;
    // Checked before anything is applied: every problem at its key.
    b.click("#edit-check").await;
    let problems = b
        .wait_for(
            "the refused edit's problems",
            "Array.from(document.querySelectorAll('.problems li')).map(li => li.textContent).join('\\n')",
            Duration::from_secs(5),
        )
        .await;
    let problems = problems.as_str().unwrap();
    assert!(
        problems.contains("routes[0].upstream: ") && problems.contains("nowhere"),
        "{problems}"
    );
    assert!(problems.contains("routes[0].colour: "), "{problems}");
    b.screenshot("config-refused").await;
    let got = get(gw.addrs[0], "shop.test", "/orders/1").await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the refused edit changed nothing"
    );

    let good = r#"{"match": {"path": {"prefix": "/shop"}}, "upstream": "app"}"#;
    b.type_into("#edit-text", good).await;
    b.click("#edit-check").await;
    b.wait_for(
        "the checked edit",
        "document.getElementById('edit-valid')",
        Duration::from_secs(5),
    )
    .await;
    let versions = b
        .run(
            "return Array.from(document.querySelectorAll('.version')).map(v => v.textContent).join(',');",
            json!([]),
        )
        .await;
    assert_eq!(versions, "1", "a check applies nothing");
    b.click("#edit-apply").await;
    b.wait_for(
        "the applied edit",
        "document.getElementById('edit-applied')",
        Duration::from_secs(5),
    )
    .await;
    b.wait_for(
        "version 2 in the versions list",
        "Array.from(document.querySelectorAll('.version')).some(v => v.textContent === '2')",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        get(gw.addrs[0], "shop.test", "/shop/1").await.status,
        StatusCode::OK,
        "the applied edit serves"
    );
    b.screenshot("config").await;
    no_errors(&b, "the configuration page").await;
}

#[tokio::test]
async fn draining_a_target_from_its_page_changes_its_state() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let (gw, _dir) = start(&yaml(backend.addr, ""));
    let admin = gw.admin.unwrap();
    let on = traffic(gw.addrs[0]);
    let b = Browser::open(1280, 900).await;
    b.page(&format!("http://{admin}"), "upstreams/app").await;
    let state = format!(
        "document.querySelector('.target-state[data-address=\"{}\"]').textContent",
        backend.addr
    );
    let before = b
        .wait_for("the target's state", &state, Duration::from_secs(5))
        .await;
    assert_eq!(before, "ready");
    b.click(&format!("button[data-drain=\"{}\"]", backend.addr))
        .await;
    b.wait_for(
        "the drained state",
        &format!("{state} === 'draining'"),
        Duration::from_secs(5),
    )
    .await;
    let upstreams = get(admin, "admin", "/upstreams").await;
    let v: serde_json::Value = serde_json::from_slice(&upstreams.body).unwrap();
    assert_eq!(v["upstreams"][0]["targets"][0]["draining"], true, "{v}");
    b.screenshot("upstream").await;
    no_errors(&b, "the upstream page").await;
    on.store(false, Ordering::Relaxed);
}

#[tokio::test]
async fn every_main_page_renders_without_errors() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let (gw, _dir) = start(&yaml(backend.addr, ""));
    let base = format!("http://{}", gw.admin.unwrap());
    for i in 0..10 {
        get(gw.addrs[0], "shop.test", &format!("/orders/{i}")).await;
    }
    let b = Browser::open(1280, 900).await;
    for page in [
        "routes",
        "upstreams",
        "consumers",
        "alerts",
        "cache",
        "queues",
    ] {
        b.page(&base, page).await;
        let failed = b
            .run(
                "return Array.from(document.querySelectorAll('#main .error')).map(e => e.textContent).join('\\n');",
                json!([]),
            )
            .await;
        assert_eq!(failed, "", "{page} shows an error");
        b.screenshot(page).await;
        no_errors(&b, page).await;
    }
    // Without rules the alerts page says that nothing fires.
    b.page(&base, "alerts").await;
    let text = b
        .run(
            "return document.getElementById('main').textContent;",
            json!([]),
        )
        .await;
    assert!(
        text.as_str().unwrap().contains("Nothing is firing"),
        "{text}"
    );
    // Every page is reachable from the menu by keyboard: the links are in tab order.
    let links = b
        .run(
            "return Array.from(document.querySelectorAll('nav a')).filter(a => a.tabIndex >= 0).length;",
            json!([]),
        )
        .await;
    assert_eq!(links, 8);
}

#[tokio::test]
async fn the_pages_load_without_a_token_while_the_api_and_live_stream_ask_for_one() {
    let backend = Backend::named("app").await;
    let tokens = format!("  tokens: [{{name: ops, role: viewer, sha256: \"{TOKEN_SHA256}\"}}]\n");
    let (gw, _dir) = start(&yaml(backend.addr, &tokens));
    let admin = gw.admin.unwrap();
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let got = get(admin, "admin", path).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(got.header("content-type"), Some(content_type), "{path}");
        let csp = got.header("content-security-policy").unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{csp}"
        );
        assert_eq!(got.header("cache-control"), Some("no-cache"));
    }
    assert_eq!(get(admin, "admin", "/ui/nothing.js").await.status, 404);
    let refused = get(admin, "admin", "/stats/live").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    // With the token, the stream answers events.
    let client = reqwest::Client::new();
    let mut live = client
        .get(format!("http://{admin}/stats/live"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let event = next_event(&mut live).await;
    assert!(event["gateway"]["rps"].is_number(), "{event}");
}

/// The next `data:` event of a live stream, parsed (within 5 s).
async fn next_event(stream: &mut reqwest::Response) -> serde_json::Value {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(start) = text.find("data: ") {
            if let Some(end) = text[start..].find("\n\n") {
                let v = serde_json::from_str(&text[start + 6..start + end]).unwrap();
                return v;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_demo_prints_the_dashboard_address_with_its_own_traffic_flowing() {
    use std::io::BufRead;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    let dashboard = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the demo starts");
        if let Some(url) = line.strip_prefix("Dashboard: ") {
            break url.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
    let base = dashboard
        .strip_suffix("/ui/")
        .expect("the dashboard's address");
    let page = reqwest::get(&dashboard).await.unwrap();
    assert_eq!(page.status(), 200);
    let mut live = reqwest::get(format!("{base}/stats/live")).await.unwrap();
    let mut seen = 0.0;
    for _ in 0..3 {
        seen = next_event(&mut live).await["gateway"]["rps"]
            .as_f64()
            .unwrap();
        if seen > 0.0 {
            break;
        }
    }
    let _ = demo.kill();
    let _ = demo.wait();
    assert!(
        seen > 0.0,
        "the demo's own traffic shows in the live stream"
    );
}

#[tokio::test]
async fn a_firing_alert_shows_with_its_rule_and_the_chart_of_its_metric() {
    let _one = ONE_BROWSER.lock().await;
    let backend = Backend::named("app").await;
    let rules = "alerts:
  evaluate_every: 100ms
  rules:
    - {name: orders-busy, metric: requests, route: orders, above: 0, window: 10s, severity: critical}
";
    let (gw, _dir) = start(&yaml(backend.addr, rules));
    let base = format!("http://{}", gw.admin.unwrap());
    for i in 0..5 {
        get(gw.addrs[0], "shop.test", &format!("/orders/{i}")).await;
    }
    let firing = eventually(Duration::from_secs(5), || async {
        let got = get(gw.admin.unwrap(), "admin", "/alerts").await;
        got.text().contains("\"state\":\"firing\"")
    })
    .await;
    assert!(firing, "the rule fires");
    let b = Browser::open(1280, 900).await;
    b.page(&base, "alerts").await;
    let shown = b
        .run(
            "return [document.getElementById('main').textContent, \
             document.querySelectorAll('#alert-chart canvas').length];",
            json!([]),
        )
        .await;
    let text = shown[0].as_str().unwrap();
    assert!(text.contains("orders-busy"), "{text}");
    assert!(text.contains("firing"), "{text}");
    assert!(text.contains("route orders"), "{text}");
    assert!(
        shown[1].as_u64().unwrap() >= 1,
        "the chart of the metric is drawn: {shown}"
    );
    b.screenshot("alerts-firing").await;
    no_errors(&b, "alerts").await;
}
