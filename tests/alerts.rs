//! Alerting end to end: rules over the traffic history and upstream health fire and resolve,
//! and their notifications reach real receivers: a webhook that checks the HMAC signature
//! (and fails the first attempt, so the sender tries again), a Slack-compatible receiver,
//! and a real Prometheus Alertmanager that passes the alert on to its own webhook. A
//! receiver that never answers adds no latency to requests.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::alertmanager::Alertmanager;
use support::receiver::Receiver;
use support::*;

const SECRET: &[u8] = b"alert-signing-secret-0123";

/// A backend that answers 500 on `/fail` and 200 elsewhere.
async fn app() -> Backend {
    Backend::start(
        false,
        |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path().starts_with("/fail") {
                text(StatusCode::INTERNAL_SERVER_ERROR, "broken")
            } else {
                text(StatusCode::OK, "fine")
            }
        },
    )
    .await
}

async fn alerts(admin: SocketAddr) -> serde_json::Value {
    let got = get(admin, "admin", "/alerts").await;
    assert_eq!(got.status, StatusCode::OK);
    serde_json::from_slice(&got.body).unwrap()
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let ok = eventually(Duration::from_secs(5), || {
        let v = f();
        async move { v }
    })
    .await;
    assert!(ok, "timed out waiting for {what}");
}

#[tokio::test]
async fn an_alert_fires_and_resolves_with_signed_webhook_and_slack_notifications() {
    let backend = app().await;
    let hook = Receiver::start(Some(SECRET), 1).await;
    let slack = Receiver::start(None, 0).await;
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
history: {{}}
upstreams:
  app: {{targets: [{{address: \"{}\"}}]}}
routes:
  - {{name: api, upstream: app}}
alerts:
  evaluate_every: 100ms
  notifiers:
    ops: {{kind: webhook, url: \"http://{}/alerts\", secret: \"{}\"}}
    chat: {{kind: slack, url: \"http://{}/services/T0/B0/x\"}}
  rules:
    - name: api-errors
      metric: error_ratio
      route: api
      above: 0.5
      window: 10s
      for: 300ms
      severity: critical
      summary: the api fails
",
        backend.addr,
        hook.backend.addr,
        std::str::from_utf8(SECRET).unwrap(),
        slack.backend.addr
    ));
    let admin = gw.admin.unwrap();
    assert_eq!(alerts(admin).await["active"], serde_json::json!([]));

    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "a.test", "/fail").await.status, 500);
    }
    until("the firing notification", || {
        hook.received().iter().any(|r| r.body["status"] == "firing")
    })
    .await;
    // Not before the condition held for its `for`.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let now = alerts(admin).await;
    let active = &now["active"][0];
    assert_eq!(active["rule"], "api-errors", "{now}");
    assert_eq!(active["state"], "firing");
    assert_eq!(active["severity"], "critical");
    assert_eq!(
        active["scope"],
        serde_json::json!({"dimension": "route", "name": "api"})
    );
    assert_eq!(active["metric"], "error_ratio");
    assert!(active["value"].as_f64().unwrap() > 0.5, "{now}");

    let firing = hook.received();
    let first = &firing[0];
    assert_eq!(first.path, "/alerts");
    assert_eq!(first.signed, Some(true), "the signature verifies");
    assert_eq!(
        first.body["alerts"][0]["rule"], "api-errors",
        "{:?}",
        first.body
    );
    assert_eq!(first.body["alerts"][0]["summary"], "the api fails");
    until("the Slack message", || !slack.received().is_empty()).await;
    let message = slack.received()[0].body["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("[FIRING] api-errors (critical): the api fails"),
        "{message}"
    );

    // Successful requests bring the ratio under the threshold: resolved.
    for _ in 0..30 {
        assert_eq!(get(gw.addr, "a.test", "/ok").await.status, 200);
    }
    until("the resolved notification", || {
        hook.received()
            .iter()
            .any(|r| r.body["status"] == "resolved")
    })
    .await;
    let now = alerts(admin).await;
    assert_eq!(now["active"], serde_json::json!([]), "{now}");
    assert_eq!(now["recent"][0]["state"], "resolved");
    assert!(now["recent"][0]["resolved_at"].as_u64().is_some());
    until("the Slack resolution", || {
        slack.received().iter().any(|r| {
            r.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("[RESOLVED] api-errors"))
        })
    })
    .await;
    // One firing and one resolved notification each, every one signed; the webhook's
    // first attempt was refused and tried again.
    let all = hook.received();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|r| r.signed == Some(true)));
    assert_eq!(
        hook.backend.count(),
        3,
        "one refused attempt, then two accepted"
    );
    let metrics = get(admin, "admin", "/metrics").await.text();
    assert!(
        metrics
            .contains("ferrogate_alert_notifications_total{notifier=\"ops\",outcome=\"sent\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("ferrogate_alerts_firing 0"));
}

#[tokio::test]
async fn alertmanager_receives_a_group_without_healthy_targets_and_its_resolution() {
    let hook = Receiver::start(None, 0).await;
    let am = Alertmanager::start(&format!("http://{}/am", hook.backend.addr));
    // The target's port is free now; a backend comes up on it later.
    let target = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
upstreams:
  pay:
    targets: [{{address: \"{target}\"}}]
    health_check: {{active: {{path: /, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1, healthy_threshold: 1}}}}
routes:
  - {{name: pay, upstream: pay}}
alerts:
  evaluate_every: 100ms
  notifiers:
    am: {{kind: alertmanager, url: \"{}/\"}}
  rules:
    - {{name: pay-down, metric: healthy_targets, upstream: pay, below: 1, severity: critical}}
",
        am.url()
    ));
    let admin = gw.admin.unwrap();
    let fired = eventually(Duration::from_secs(8), || {
        let got = hook.received();
        async move {
            got.iter().any(|r| {
                r.body["status"] == "firing"
                    && r.body["alerts"][0]["labels"]["alertname"] == "pay-down"
            })
        }
    })
    .await;
    assert!(
        fired,
        "Alertmanager passed the alert on: {:?}",
        hook.received()
    );
    let first = hook
        .received()
        .into_iter()
        .find(|r| r.body["status"] == "firing")
        .unwrap();
    let labels = &first.body["alerts"][0]["labels"];
    assert_eq!(labels["severity"], "critical", "{labels}");
    assert_eq!(labels["upstream"], "pay");
    assert_eq!(alerts(admin).await["active"][0]["value"], 0.0);

    // The target comes up: healthy again, resolved, and Alertmanager says so too.
    let _up = Backend::start_at(target, false, |_req| async { text(StatusCode::OK, "up") }).await;
    let resolved = eventually(Duration::from_secs(8), || {
        let got = hook.received();
        async move { got.iter().any(|r| r.body["status"] == "resolved") }
    })
    .await;
    assert!(resolved, "{:?}", hook.received());
    assert_eq!(alerts(admin).await["active"], serde_json::json!([]));
}

#[tokio::test]
async fn a_receiver_that_never_answers_adds_no_latency_and_firing_alerts_are_repeated() {
    let backend = app().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let hook = Receiver::start(Some(SECRET), 0).await;
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
history: {{}}
upstreams:
  app: {{targets: [{{address: \"{}\"}}]}}
routes:
  - {{name: api, upstream: app}}
alerts:
  evaluate_every: 100ms
  repeat_every: 1s
  notifiers:
    stuck: {{kind: webhook, url: \"http://{silent_addr}/\", secret: \"{}\", timeout: 30s, max_attempts: 1}}
    ops: {{kind: webhook, url: \"http://{}/\", secret: \"{}\"}}
  rules:
    - {{name: any-traffic, metric: requests, above: 0, window: 10s}}
",
        backend.addr,
        std::str::from_utf8(SECRET).unwrap(),
        hook.backend.addr,
        std::str::from_utf8(SECRET).unwrap()
    ));
    let mut slowest = Duration::ZERO;
    let end = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < end {
        let t = Instant::now();
        assert_eq!(get(gw.addr, "a.test", "/ok").await.status, 200);
        slowest = slowest.max(t.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Firing at once, told again every second: the working receiver heard it at least
    // twice while the stuck one held its connections open.
    let firing = hook
        .received()
        .iter()
        .filter(|r| r.body["status"] == "firing")
        .count();
    assert!(firing >= 2, "{:?}", hook.received());
    assert!(
        !held.lock().unwrap().is_empty(),
        "the stuck receiver was tried"
    );
    assert!(
        slowest < Duration::from_millis(200),
        "the slowest of {n} requests took {slowest:?}"
    );
}

#[tokio::test]
async fn without_rules_the_alerts_endpoint_answers_empty_lists() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], "  - upstream: app\n"));
    let v = alerts(gw.admin.unwrap()).await;
    assert_eq!(v, serde_json::json!({"active": [], "recent": []}));
}
