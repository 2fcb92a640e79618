//! Lifecycle: admin endpoints and metrics, reload on file change (valid and invalid),
//! in-flight requests on their starting snapshot, graceful shutdown, the access log.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const ALL: &str = "  - name: all\n    upstream: app\n";

#[tokio::test]
async fn admin_serves_health_readiness_and_metrics() {
    let backend = Backend::named("app").await;
    let gw = TestGateway::start(&config(&[backend.addr], ALL));
    let admin = gw.admin.unwrap();
    assert_eq!(get(admin, "admin", "/healthz").await.status, 200);
    assert_eq!(get(admin, "admin", "/readyz").await.status, 200);
    for _ in 0..3 {
        get(gw.addr, "a", "/x").await;
    }
    let m = get(admin, "admin", "/metrics").await.text();
    assert!(
        m.contains(r#"ferrogate_requests_total{route="all",method="GET",status="200"} 3"#),
        "{m}"
    );
    assert!(m.contains("ferrogate_request_duration_seconds"), "{m}");
    assert!(m.contains("ferrogate_upstream_duration_seconds"), "{m}");
    assert!(m.contains("ferrogate_connections_open"), "{m}");
}

fn write_config(path: &std::path::Path, body: &str) {
    // Write then rename, as config management tools do, so the watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_changed_config_file_is_reloaded_and_an_invalid_one_is_refused() {
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let dir = tempdir::Dir::new("reload");
    let path = dir.path.join("gateway.yaml");
    write_config(&path, &config(&[one.addr], ALL));
    let gw = TestGateway::start_file(&path);
    assert_eq!(get(gw.addr, "a", "/").await.text(), "one");
    write_config(&path, &config(&[two.addr], ALL));
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(gw.addr, "a", "/").await.text() == "two"
        })
        .await,
        "the new upstream is used after the file changes"
    );

    write_config(&path, "listeners: [{address: nonsense}]\nroutes: 7\n");
    let admin = gw.admin.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(admin, "admin", "/metrics")
                .await
                .text()
                .contains(r#"ferrogate_config_reloads_total{result="failed"} 1"#)
        })
        .await,
        "the failed reload is counted"
    );
    assert_eq!(
        get(gw.addr, "a", "/").await.text(),
        "two",
        "the running config stays"
    );
}

#[tokio::test]
async fn in_flight_request_finishes_on_its_snapshot_across_a_reload() {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        text(StatusCode::OK, "slow")
    })
    .await;
    let fast = Backend::named("fast").await;
    let dir = tempdir::Dir::new("inflight");
    let path = dir.path.join("gateway.yaml");
    write_config(&path, &config(&[slow.addr], ALL));
    let gw = TestGateway::start_file(&path);
    let addr = gw.addr;
    let pending = tokio::spawn(async move { get(addr, "a", "/").await });
    assert!(eventually(Duration::from_secs(2), || async { slow.count() == 1 }).await);
    write_config(&path, &config(&[fast.addr], ALL));
    gw.shared().reload().unwrap();
    let done = pending.await.unwrap();
    assert_eq!(done.status, 200);
    assert_eq!(done.text(), "slow");
    assert_eq!(get(gw.addr, "a", "/").await.text(), "fast");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let slow = Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        text(StatusCode::OK, "done")
    })
    .await;
    let gw = TestGateway::start(&config(&[slow.addr], ALL));
    let addr = gw.addr;
    let pending = tokio::spawn(async move { get(addr, "a", "/").await });
    assert!(eventually(Duration::from_secs(2), || async { slow.count() == 1 }).await);
    let cut = tokio::task::spawn_blocking(move || gw.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(cut, 0, "no connection was cut");
    let done = pending.await.unwrap();
    assert_eq!(done.status, 200);
    assert_eq!(done.text(), "done");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("log");
    let log = dir.path.join("access.log");
    let yaml = format!(
        "{}access_log:\n  enabled: true\n  target: {}\n",
        config(&[backend.addr], ALL),
        log.display()
    );
    let gw = TestGateway::start(&yaml);
    get(gw.addr, "a", "/one?secret=1").await;
    get(gw.addr, "a", "/two").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
        })
        .await,
        "two lines are written"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    for field in [
        "\"time\":\"",
        "\"request_id\":\"",
        "\"client_ip\":\"127.0.0.1\"",
        "\"method\":\"GET\"",
        "\"host\":\"a\"",
        "\"path\":\"/one\"",
        "\"status\":200",
        "\"bytes_in\":0",
        "\"bytes_out\":3",
        "\"duration_ms\":",
        "\"route\":\"all\"",
        &format!("\"upstream\":\"{}\"", backend.addr),
        "\"upstream_ms\":",
    ] {
        assert!(first.contains(field), "{field} missing in {first}");
    }
    assert!(!text.contains("secret"), "query strings are not logged");
}

#[tokio::test]
async fn access_log_can_be_switched_off() {
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("nolog");
    let log = dir.path.join("access.log");
    let yaml = format!(
        "{}access_log:\n  enabled: false\n  target: {}\n",
        config(&[backend.addr], ALL),
        log.display()
    );
    let gw = TestGateway::start(&yaml);
    get(gw.addr, "a", "/").await;
    drop(gw);
    assert!(!log.exists() || std::fs::read_to_string(&log).unwrap().is_empty());
}

#[tokio::test]
async fn readyz_answers_503_while_the_gateway_drains() {
    let (release, released) = tokio::sync::watch::channel(false);
    let slow = Backend::start(false, move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            text(StatusCode::OK, "done")
        }
    })
    .await;
    let gw = TestGateway::start(&config(&[slow.addr], ALL));
    let (addr, admin) = (gw.addr, gw.admin.unwrap());
    let pending = tokio::spawn(async move { get(addr, "a", "/").await });
    assert!(eventually(Duration::from_secs(2), || async { slow.count() == 1 }).await);
    let draining = tokio::task::spawn_blocking(move || gw.shutdown(Duration::from_secs(5)));
    assert!(
        eventually(Duration::from_secs(2), || async {
            get(admin, "admin", "/readyz").await.status == 503
        })
        .await,
        "the admin listener answers 503 during the drain"
    );
    assert_eq!(get(admin, "admin", "/healthz").await.status, 200);
    release.send(true).unwrap();
    assert_eq!(pending.await.unwrap().status, 200);
    assert_eq!(draining.await.unwrap(), 0);
}
