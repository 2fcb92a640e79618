//! The configuration in etcd end to end: three gateway instances on one real etcd member,
//! changes through the admin API of one served by all, compare-and-swap across instances,
//! a bad document put into etcd refused by every instance, and etcd killed and started
//! again (traffic unaffected, changes refused with 503, the instances catching up).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::etcd::EtcdServer;
use support::tempdir::Dir;
use support::{eventually, get, send, Backend, Got, TestGateway};

const ROOT: &str = "root-token";

/// Three instances of one configuration in etcd under `prefix`, each from its own file.
struct Three {
    gateways: Vec<TestGateway>,
    _dirs: Vec<Dir>,
}

impl Three {
    fn start(etcd: &str, prefix: &str) -> Three {
        let mut gateways = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..3 {
            let dir = Dir::new(&format!("etcd-{i}"));
            let path = config_file(&dir, etcd, prefix, "");
            gateways.push(TestGateway::start_file(&path));
            dirs.push(dir);
        }
        Three {
            gateways,
            _dirs: dirs,
        }
    }

    fn admin(&self, i: usize) -> SocketAddr {
        self.gateways[i].admin.unwrap()
    }

    /// Whether every instance answers `path` with 200 and `body`.
    async fn all_serve(&self, path: &str, body: &str) -> bool {
        for gw in &self.gateways {
            let got = get(gw.addr, "a", path).await;
            if got.status != 200 || got.text() != body {
                return false;
            }
        }
        true
    }

    /// Whether all three serve `path` with `body` within `limit`.
    async fn served_within(&self, limit: Duration, path: &str, body: &str) -> bool {
        eventually(limit, || self.all_serve(path, body)).await
    }

    /// The version each instance reports.
    async fn versions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(etag(self.admin(i)).await);
        }
        out
    }
}

/// A file with one admin token, the configuration in etcd, and `extra` (shared keys).
fn config_file(dir: &Dir, etcd: &str, prefix: &str, extra: &str) -> PathBuf {
    let text = format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n  \
         tokens:\n    - {{name: root, role: admin, sha256: \"{}\"}}\n  \
         etcd: {{endpoints: [\"{etcd}\"], prefix: \"{prefix}\", timeout: 1s}}\n{extra}",
        ferrogate::config::document::text_hash(ROOT),
    );
    let path = dir.path.join("gateway.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A prefix of this test's own on a shared member.
fn prefix(tag: &str) -> String {
    format!("/test-{tag}-{}/", fastrand::u64(..))
}

async fn call(admin: SocketAddr, method: &str, path: &str, tag: &str, body: Value) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {ROOT}"))
        .header("if-match", tag)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(admin, req).await
}

/// A `GET` on the admin listener with the token.
async fn admin_get(admin: SocketAddr, path: &str) -> Got {
    let req = Request::builder()
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {ROOT}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(admin, req).await
}

/// A `GET` on the admin listener that must succeed.
async fn read(admin: SocketAddr, path: &str) -> Got {
    let got = admin_get(admin, path).await;
    assert_eq!(got.status, 200, "{path}: {}", got.text());
    got
}

/// The version an instance runs, as its `ETag`.
async fn etag(admin: SocketAddr) -> String {
    read(admin, "/status")
        .await
        .header("etag")
        .unwrap()
        .to_owned()
}

/// The version an instance runs, if it runs one.
async fn try_etag(admin: SocketAddr) -> Option<String> {
    let got = admin_get(admin, "/status").await;
    got.header("etag").map(str::to_owned)
}

/// An upstream group for `target` and a route `/api` to it, as one change.
fn route_to(target: SocketAddr) -> Value {
    json!({"operations": [
        {"op": "replace", "path": "/config/upstreams/app",
         "value": {"targets": [{"address": target.to_string()}]}},
        {"op": "replace", "path": "/config/routes/api",
         "value": {"match": {"path": {"prefix": "/api"}}, "upstream": "app"}},
    ]})
}

/// The same configuration written by hand: bare YAML, as `etcdctl put KEY "$(cat f.yaml)"`.
fn yaml_route_to(target: SocketAddr) -> String {
    format!(
        "upstreams:\n  app:\n    targets: [{{address: \"{target}\"}}]\nroutes:\n  \
         - {{name: api, match: {{path: {{prefix: /api}}}}, upstream: app}}\n"
    )
}

async fn failed_reloads(admin: SocketAddr) -> u64 {
    read(admin, "/metrics")
        .await
        .text()
        .lines()
        .find(|l| l.starts_with("ferrogate_config_reloads_total{result=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_write_through_one_instance_is_served_by_all_three_within_a_second() {
    let etcd = EtcdServer::shared();
    let three = Three::start(&etcd.url(), &prefix("write"));
    let backend = Backend::named("shared").await;
    let before = three.versions().await;
    assert!(before.iter().all(|v| *v == before[0]), "{before:?}");
    assert_eq!(get(three.gateways[2].addr, "a", "/api/x").await.status, 404);

    let got = call(
        three.admin(0),
        "POST",
        "/config/batch",
        &before[0],
        route_to(backend.addr),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let written = Instant::now();
    assert!(
        three
            .served_within(Duration::from_secs(1), "/api/x", "shared")
            .await,
        "not served by all three {:?} after the write",
        written.elapsed()
    );
    eprintln!(
        "served by all three {:?} after the write",
        written.elapsed()
    );
    let after = three.versions().await;
    assert_eq!(after[0], got.header("etag").unwrap());
    assert!(after.iter().all(|v| *v == after[0]), "{after:?}");
    assert_ne!(after[0], before[0]);
}

#[tokio::test]
async fn a_stale_version_gets_412_when_another_instance_wrote_first() {
    let etcd = EtcdServer::shared();
    let three = Three::start(&etcd.url(), &prefix("cas"));
    let backend = Backend::named("first").await;
    let seen = etag(three.admin(1)).await;
    let first = call(
        three.admin(0),
        "POST",
        "/config/batch",
        &seen,
        route_to(backend.addr),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Instance 1 read its version before the write: etcd's revision moved on since.
    let late = call(
        three.admin(1),
        "PATCH",
        "/config/routes/api",
        &seen,
        json!({"strip_prefix": "/api"}),
    )
    .await;
    assert_eq!(late.status, 412, "{}", late.text());
    assert_eq!(late.header("etag"), first.header("etag"));
    assert!(
        three
            .served_within(Duration::from_secs(1), "/api/x", "first")
            .await
    );
}

#[tokio::test]
async fn a_bad_document_put_into_etcd_is_refused_by_every_instance() {
    let etcd = EtcdServer::shared();
    let prefix = prefix("bad");
    let three = Three::start(&etcd.url(), &prefix);
    let good = Backend::named("good").await;
    let tag = etag(three.admin(0)).await;
    let got = call(
        three.admin(0),
        "POST",
        "/config/batch",
        &tag,
        route_to(good.addr),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        three
            .served_within(Duration::from_secs(1), "/api/x", "good")
            .await
    );
    let running = three.versions().await;

    let key = format!("{prefix}config");
    etcd.put(
        &key,
        "routes:\n  - {name: api, match: {path: {prefix: /api}}, upstream: nowhere}\n",
    );
    for i in 0..3 {
        let admin = three.gateways[i].admin.unwrap();
        let refused = eventually(Duration::from_secs(2), || async {
            failed_reloads(admin).await >= 1
        })
        .await;
        assert!(refused, "instance {i} did not refuse the document");
    }
    assert!(three.all_serve("/api/x", "good").await);
    assert_eq!(three.versions().await, running);

    // A good document put the same way is applied by all.
    let next = Backend::named("next").await;
    etcd.put(&key, &yaml_route_to(next.addr));
    assert!(
        three
            .served_within(Duration::from_secs(1), "/api/x", "next")
            .await
    );
}

#[tokio::test]
async fn without_etcd_instances_keep_serving_and_refuse_writes_then_catch_up() {
    let mut etcd = EtcdServer::start();
    let prefix = prefix("down");
    let three = Three::start(&etcd.url(), &prefix);
    let before = Backend::named("before").await;
    let tag = etag(three.admin(0)).await;
    let got = call(
        three.admin(0),
        "POST",
        "/config/batch",
        &tag,
        route_to(before.addr),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        three
            .served_within(Duration::from_secs(1), "/api/x", "before")
            .await
    );

    etcd.stop();
    for _ in 0..20 {
        assert!(three.all_serve("/api/x", "before").await);
    }
    for i in 0..3 {
        let got = call(
            three.admin(i),
            "PATCH",
            "/config/routes/api",
            "*",
            json!({"strip_prefix": "/api"}),
        )
        .await;
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
    }

    etcd.restart();
    // Written by another path while the instances were still reconnecting.
    let after = Backend::named("after").await;
    etcd.put(&format!("{prefix}config"), &yaml_route_to(after.addr));
    let back = Instant::now();
    assert!(
        three
            .served_within(Duration::from_secs(10), "/api/x", "after")
            .await,
        "not caught up {:?} after etcd came back",
        back.elapsed()
    );
    eprintln!("caught up {:?} after etcd came back", back.elapsed());
    let versions = three.versions().await;
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    // And changes go through again.
    let got = call(
        three.admin(2),
        "PATCH",
        "/config/routes/api",
        &versions[0],
        json!({"strip_prefix": "/api"}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
}

#[tokio::test]
async fn an_instance_started_without_etcd_serves_its_file_then_follows_etcd() {
    let mut etcd = EtcdServer::start();
    let prefix = prefix("late");
    etcd.stop();
    let from_file = Backend::named("file").await;
    let dir = Dir::new("etcd-late");
    let path = config_file(&dir, &etcd.url(), &prefix, &yaml_route_to(from_file.addr));
    let gw = TestGateway::start_file(&path);
    let admin = gw.admin.unwrap();
    assert_eq!(get(gw.addr, "a", "/api/x").await.text(), "file");
    let status = call(
        admin,
        "PATCH",
        "/config/routes/api",
        "*",
        json!({"strip_prefix": "/api"}),
    )
    .await;
    assert_eq!(status.status, 503, "{}", status.text());

    etcd.restart();
    // The key is absent: the instance seeds it from its file, as at a start.
    let seeded = eventually(Duration::from_secs(10), || async {
        try_etag(admin).await.is_some()
    })
    .await;
    assert!(seeded, "the instance did not seed etcd once it came back");
    let from_etcd = Backend::named("etcd").await;
    etcd.put(&format!("{prefix}config"), &yaml_route_to(from_etcd.addr));
    let followed = eventually(Duration::from_secs(1), || async {
        get(gw.addr, "a", "/api/x").await.text() == "etcd"
    })
    .await;
    assert!(followed);
}

#[tokio::test]
async fn a_reload_reads_only_the_instances_own_keys_from_the_file() {
    let etcd = EtcdServer::shared();
    let prefix = prefix("reload");
    let dir = Dir::new("etcd-reload");
    let path = config_file(&dir, &etcd.url(), &prefix, "");
    let gw = TestGateway::start_file(&path);
    let admin = gw.admin.unwrap();
    let shared = Backend::named("shared").await;
    let tag = etag(admin).await;
    let got = call(admin, "POST", "/config/batch", &tag, route_to(shared.addr)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let running = etag(admin).await;

    let other = Backend::named("other").await;
    config_file(&dir, &etcd.url(), &prefix, &yaml_route_to(other.addr));
    let reload = call(admin, "POST", "/reload", "*", Value::Null).await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(get(gw.addr, "a", "/api/x").await.text(), "shared");
    assert_eq!(etag(admin).await, running);
}

#[tokio::test]
async fn a_hung_etcd_gets_writes_refused_in_its_timeout_and_traffic_unaffected() {
    let etcd = EtcdServer::start();
    let dir = Dir::new("etcd-hung");
    let gw = TestGateway::start_file(&config_file(&dir, &etcd.url(), &prefix("hung"), ""));
    let admin = gw.admin.unwrap();
    let backend = Backend::named("steady").await;
    let tag = etag(admin).await;
    let got = call(admin, "POST", "/config/batch", &tag, route_to(backend.addr)).await;
    assert_eq!(got.status, 200, "{}", got.text());

    etcd.pause();
    let asked = Instant::now();
    let got = call(
        admin,
        "PATCH",
        "/config/routes/api",
        "*",
        json!({"strip_prefix": "/api"}),
    )
    .await;
    assert_eq!(got.status, 503, "{}", got.text());
    // The file's `timeout: 1s` bounds the wait (with margin for a loaded machine).
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(get(gw.addr, "a", "/api/x").await.text(), "steady");

    etcd.resume();
    let tag = etag(admin).await;
    let got = call(
        admin,
        "PATCH",
        "/config/routes/api",
        &tag,
        json!({"strip_prefix": "/api"}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
}
