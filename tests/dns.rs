//! Upstream targets given by name, against a real dnsmasq on loopback: every address of a
//! name is a target, records added and removed under load move traffic without a failed
//! request, SRV records give ports and weights, and a DNS server that stops answering
//! leaves traffic on the last good addresses.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::dnsmasq::{Dnsmasq, Srv};
use support::*;

/// Two backends named `a` and `b` on 127.0.0.2 and 127.0.0.3, on one port.
async fn pair() -> (Backend, Backend, u16) {
    let a = Backend::start_at("127.0.0.2:0".parse().unwrap(), false, |_req| async {
        text(http::StatusCode::OK, "a")
    })
    .await;
    let port = a.addr.port();
    let b = Backend::start_at(
        SocketAddr::from(([127, 0, 0, 3], port)),
        false,
        |_req| async { text(http::StatusCode::OK, "b") },
    )
    .await;
    (a, b, port)
}

/// A gateway whose upstream `app` has the target `target` (YAML flow map), resolved by `dns`.
fn gateway(dns: &Dnsmasq, target: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
dns: {{servers: [\"{}\"], min_ttl: 200ms, timeout: 300ms}}
upstreams:
  app: {{targets: [{target}]}}
routes: [{{upstream: app}}]
",
        dns.addr
    ))
}

/// Runs `during` while 4 clients load the gateway, and returns what they saw.
async fn under_load<F: std::future::Future<Output = ()>>(
    gw: &TestGateway,
    during: F,
) -> LoadReport {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = gw.addr;
    let load = tokio::spawn(async move {
        load_until(addr, "/", 4, async {
            let _ = stop_rx.await;
        })
        .await
    });
    during.await;
    stop_tx.send(()).unwrap();
    load.await.unwrap()
}

/// Whether, within 5 s, a run of 20 requests gets exactly the bodies in `want`.
async fn serves_only(gw: &TestGateway, want: &[&str]) -> bool {
    eventually(Duration::from_secs(5), || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(get(gw.addr, "a", "/").await.text());
        }
        seen.iter().map(String::as_str).eq(want.iter().copied())
    })
    .await
}

#[tokio::test]
async fn added_and_removed_records_move_traffic_under_load_without_a_failure() {
    let (_a, _b, port) = pair().await;
    let dns = Dnsmasq::start(&[("127.0.0.2", "api.test")], &[], &[]);
    let gw = gateway(&dns, &format!("{{address: \"api.test:{port}\"}}"));
    assert!(
        serves_only(&gw, &["a"]).await,
        "the first address serves at once"
    );
    let report = under_load(&gw, async {
        dns.set_hosts(&[("127.0.0.2", "api.test"), ("127.0.0.3", "api.test")]);
        assert!(
            serves_only(&gw, &["a", "b"]).await,
            "the added address gets traffic"
        );
        dns.set_hosts(&[("127.0.0.3", "api.test")]);
        assert!(
            serves_only(&gw, &["b"]).await,
            "the removed address gets none"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    assert!(report.requests > 50, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(
        report.bodies.contains_key("a") && report.bodies.contains_key("b"),
        "{report:?}"
    );
}

#[tokio::test]
async fn srv_records_give_the_targets_their_ports_and_weights() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let dns = Dnsmasq::start(
        &[],
        &[("a.svc.test", "127.0.0.1"), ("b.svc.test", "127.0.0.1")],
        &[
            Srv {
                name: "_http._tcp.svc.test",
                target: "a.svc.test",
                port: a.addr.port(),
                weight: 3,
            },
            Srv {
                name: "_http._tcp.svc.test",
                target: "b.svc.test",
                port: b.addr.port(),
                weight: 1,
            },
        ],
    );
    let gw = gateway(&dns, "{address: _http._tcp.svc.test, srv: true}");
    let report = load_count(gw.addr, "/", &[], 2, 400).await;
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(report.bodies.get("a"), Some(&300), "{report:?}");
    assert_eq!(report.bodies.get("b"), Some(&100), "{report:?}");
}

#[tokio::test]
async fn a_stopped_dns_server_leaves_traffic_on_the_last_good_set() {
    let (_a, _b, port) = pair().await;
    let mut dns = Dnsmasq::start(
        &[("127.0.0.2", "api.test"), ("127.0.0.3", "api.test")],
        &[],
        &[],
    );
    let gw = gateway(&dns, &format!("{{address: \"api.test:{port}\"}}"));
    assert!(serves_only(&gw, &["a", "b"]).await);
    let admin = gw.admin.unwrap();
    let report = under_load(&gw, async {
        dns.stop();
        // Past the one-second TTL: the name is asked again, unanswered.
        let stale = eventually(Duration::from_secs(5), || async {
            let m = get(admin, "admin", "/metrics").await.text();
            m.contains("ferrogate_dns_stale{target=\"api.test:")
                && m.lines()
                    .any(|l| l.starts_with("ferrogate_dns_stale{") && l.ends_with(" 1"))
                && m.contains("result=\"failed\"")
        })
        .await;
        assert!(stale, "the failure shows in the metrics");
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(
        report.bodies.contains_key("a") && report.bodies.contains_key("b"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_name_that_never_resolved_answers_503_until_it_does() {
    let (_a, _b, port) = pair().await;
    let dns = Dnsmasq::start(&[], &[], &[]);
    let gw = gateway(&dns, &format!("{{address: \"api.test:{port}\"}}"));
    assert_eq!(get(gw.addr, "a", "/").await.status, 503);
    dns.set_hosts(&[("127.0.0.3", "api.test")]);
    assert!(serves_only(&gw, &["b"]).await);
}

#[test]
fn target_names_and_dns_settings_are_checked_with_their_key_paths() {
    let yaml = "listeners: [{address: 127.0.0.1:0}]
dns: {servers: [nameserver], min_ttl: 10ms, max_ttl: 1s}
upstreams:
  u: {targets: [{address: 'not a name', srv: true}, {address: 'api.test:0'}]}
routes: [{upstream: u}]
";
    let errors = ferrogate::config::parse(yaml, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    for expected in [
        "dns.servers[0]: invalid address",
        "dns.min_ttl: at least 100ms",
        "upstreams.u.targets[0].address: invalid SRV name",
        "upstreams.u.targets[1].address: invalid address",
    ] {
        assert!(
            errors.contains(expected),
            "{expected} missing in:\n{errors}"
        );
    }
}
