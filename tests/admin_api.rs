//! The admin API end to end: a real gateway started from a config file on loopback, real
//! backends, changes through `/config`, their validation, versions, rollback, persistence
//! across a restart, roles, and the OpenAPI document.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::tempdir::Dir;
use support::{eventually, get, load_until, send, Backend, Got, TestGateway};

const ROOT: &str = "root-token";
const OPS: &str = "ops-token";
const VIEW: &str = "view-token";

/// A config file with no routes, three admin tokens and a data directory, in `dir`.
fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let hash = ferrogate::config::document::text_hash;
    let text = format!(
        "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n  tokens:\n    - {{name: root, role: admin, sha256: \"{}\"}}\n    - {{name: ops, role: operator, sha256: \"{}\"}}\n    - {{name: watcher, role: viewer, sha256: \"{}\"}}\ndata_dir: state\n{extra}",
        hash(ROOT),
        hash(OPS),
        hash(VIEW)
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One admin request.
async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(admin, req.body(Full::new(body)).unwrap()).await
}

fn json_of(got: &Got) -> Value {
    serde_json::from_slice(&got.body).unwrap_or(Value::Null)
}

/// The current ETag, read from `/status`.
async fn etag(admin: SocketAddr) -> String {
    let got = call(admin, "GET", "/status", Some(VIEW), None, None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.header("etag").unwrap().to_owned()
}

/// Applies a change with the current ETag and asserts it was applied.
async fn change(admin: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Got {
    let tag = etag(admin).await;
    let got = call(admin, method, path, Some(ROOT), Some(&tag), body).await;
    assert!(got.status.is_success(), "{method} {path}: {}", got.text());
    got
}

async fn upstream_and_route(admin: SocketAddr, group: &str, target: SocketAddr) {
    change(
        admin,
        "POST",
        "/config/upstreams",
        Some(json!({"name": group, "targets": [{"address": target.to_string()}]})),
    )
    .await;
    change(
        admin,
        "POST",
        "/config/routes",
        Some(json!({"name": "api", "match": {"path": {"prefix": "/api"}}, "upstream": group})),
    )
    .await;
}

#[tokio::test]
async fn a_route_created_through_the_api_serves_traffic_within_a_second() {
    let dir = Dir::new("admin-create");
    let backend = Backend::named("created").await;
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    assert_eq!(get(gw.addr, "a", "/api").await.status, 404);
    upstream_and_route(admin, "app", backend.addr).await;
    let written = Instant::now();
    let served = eventually(Duration::from_secs(1), || async {
        let got = get(gw.addr, "a", "/api/x").await;
        got.status == 200 && got.text() == "created"
    })
    .await;
    assert!(served, "not served {:?} after the write", written.elapsed());
    eprintln!(
        "served {:?} after the write was answered",
        written.elapsed()
    );
    let routes = json_of(&call(admin, "GET", "/config/routes", Some(VIEW), None, None).await);
    assert_eq!(routes[0]["upstream"], "app");
}

#[tokio::test]
async fn an_invalid_change_gets_422_with_key_paths_and_changes_nothing() {
    let dir = Dir::new("admin-invalid");
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    let before = etag(admin).await;
    let got = call(
        admin,
        "POST",
        "/config/routes",
        Some(ROOT),
        Some(&before),
        Some(json!({"name": "bad", "upstream": "nowhere", "colour": "red"})),
    )
    .await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let errors = json_of(&got)["errors"].clone();
    let paths: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"routes[0].colour"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("routes[0].upstream")),
        "{paths:?}"
    );
    assert_eq!(etag(admin).await, before);
    let missing = call(admin, "GET", "/config/routes/bad", Some(VIEW), None, None).await;
    assert_eq!(missing.status, 404);
    // Nor can a change reach what only the file may change.
    let listeners = call(
        admin,
        "PUT",
        "/config/sections/listeners",
        Some(ROOT),
        Some(&before),
        Some(json!([{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:1"}])),
    )
    .await;
    assert_eq!(listeners.status, 422, "{}", listeners.text());
    assert!(listeners.text().contains("\"path\":\"listeners\""));
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_none_428() {
    let dir = Dir::new("admin-stale");
    let backend = Backend::named("b").await;
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    let old = etag(admin).await;
    upstream_and_route(admin, "app", backend.addr).await;
    let body = json!({"strip_prefix": "/api"});
    let stale = call(
        admin,
        "PATCH",
        "/config/routes/api",
        Some(ROOT),
        Some(&old),
        Some(body.clone()),
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(stale.header("etag"), Some(etag(admin).await.as_str()));
    let none = call(
        admin,
        "PATCH",
        "/config/routes/api",
        Some(ROOT),
        None,
        Some(body),
    )
    .await;
    assert_eq!(none.status, 428);
    let route = json_of(&call(admin, "GET", "/config/routes/api", Some(VIEW), None, None).await);
    assert_eq!(route.get("strip_prefix"), None);
}

#[tokio::test]
async fn rollback_restores_the_previous_behaviour() {
    let dir = Dir::new("admin-rollback");
    let (one, two) = (Backend::named("one").await, Backend::named("two").await);
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    upstream_and_route(admin, "first", one.addr).await;
    let good: u64 = etag(admin).await.trim_matches('"').parse().unwrap();
    change(
        admin,
        "POST",
        "/config/batch",
        Some(json!({"operations": [
            {"op": "create", "path": "/config/upstreams", "value": {"name": "second", "targets": [{"address": two.addr.to_string()}]}},
            {"op": "patch", "path": "/config/routes/api", "value": {"upstream": "second"}},
        ]})),
    )
    .await;
    assert_eq!(get(gw.addr, "a", "/api").await.text(), "two");
    let diff = call(admin, "GET", "/config/diff", Some(VIEW), None, None).await;
    assert!(
        diff.text().contains("+    upstream: second") || diff.text().contains("upstream: second"),
        "{}",
        diff.text()
    );
    let rolled = change(
        admin,
        "POST",
        "/config/rollback",
        Some(json!({"version": good})),
    )
    .await;
    assert_eq!(json_of(&rolled)["version"], good + 2);
    assert_eq!(get(gw.addr, "a", "/api").await.text(), "one");
    let versions = json_of(&call(admin, "GET", "/config/versions", Some(VIEW), None, None).await);
    assert_eq!(
        versions.as_array().unwrap().last().unwrap()["source"],
        "rollback"
    );
    let audit = json_of(&call(admin, "GET", "/config/audit", Some(VIEW), None, None).await);
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["who"], "root");
    assert_eq!(last["version"], good + 2);
    assert!(last["changed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "upstreams.second"));
}

#[tokio::test]
async fn a_hundred_writes_under_load_lose_no_request() {
    let dir = Dir::new("admin-load");
    let backend = Backend::named("steady").await;
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    upstream_and_route(admin, "app", backend.addr).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(load_until(gw.addr, "/api", 20, async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let mut tag = etag(admin).await;
    for i in 0..100 {
        let got = if i % 2 == 0 {
            let route = json!({"name": "extra", "match": {"path": {"prefix": "/extra"}}, "upstream": "app"});
            call(
                admin,
                "POST",
                "/config/routes",
                Some(ROOT),
                Some(&tag),
                Some(route),
            )
            .await
        } else {
            call(
                admin,
                "DELETE",
                "/config/routes/extra",
                Some(ROOT),
                Some(&tag),
                None,
            )
            .await
        };
        assert!(got.status.is_success(), "write {i}: {}", got.text());
        tag = got.header("etag").unwrap().to_owned();
    }
    let writing = started.elapsed();
    eprintln!("100 writes under load took {writing:?}");
    // At least a second of load, and no more than 3 s after the writes.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(writing)).await;
    let _ = stop.send(());
    let report = load.await.unwrap();
    eprintln!("load beside the writes: {report:?}");
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(writing < Duration::from_secs(30));
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_the_wrong_role_403() {
    let dir = Dir::new("admin-roles");
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    let none = call(admin, "GET", "/config/routes", None, None, None).await;
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        none.header("content-type"),
        Some("application/problem+json")
    );
    let wrong = call(admin, "GET", "/config/routes", Some("guess"), None, None).await;
    assert_eq!(wrong.status, 401);
    let tag = etag(admin).await;
    let body = json!({"name": "x", "targets": [{"address": "127.0.0.1:9"}]});
    let viewer = call(
        admin,
        "POST",
        "/config/upstreams",
        Some(VIEW),
        Some(&tag),
        Some(body.clone()),
    )
    .await;
    assert_eq!(viewer.status, 403);
    let ops = call(
        admin,
        "POST",
        "/config/upstreams",
        Some(OPS),
        Some(&tag),
        Some(body),
    )
    .await;
    assert_eq!(ops.status, 403);
    assert_eq!(
        call(admin, "POST", "/reload", Some(VIEW), None, None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(admin, "POST", "/reload", Some(OPS), None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(admin, "GET", "/config", Some(OPS), None, None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(admin, "GET", "/healthz", None, None, None)
            .await
            .status,
        200
    );
    assert_eq!(etag(admin).await, tag);
}

#[tokio::test]
async fn api_changes_survive_a_restart_until_the_file_changes() {
    let dir = Dir::new("admin-restart");
    let backend = Backend::named("kept").await;
    let file = config_file(&dir.path, "");
    let gw = TestGateway::start_file(&file);
    upstream_and_route(gw.admin.unwrap(), "app", backend.addr).await;
    let version = etag(gw.admin.unwrap()).await;
    gw.shutdown(Duration::ZERO);

    let gw = TestGateway::start_file(&file);
    let admin = gw.admin.unwrap();
    assert_eq!(etag(admin).await, version);
    assert_eq!(get(gw.addr, "a", "/api").await.text(), "kept");
    // A reload of the unchanged file keeps them too.
    assert_eq!(
        call(admin, "POST", "/reload", Some(OPS), None, None)
            .await
            .status,
        200
    );
    assert_eq!(get(gw.addr, "a", "/api").await.text(), "kept");
    // A changed file becomes a new version on top; the API versions stay listed.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}# edited\n")).unwrap();
    assert_eq!(
        call(admin, "POST", "/reload", Some(OPS), None, None)
            .await
            .status,
        200
    );
    assert_eq!(get(gw.addr, "a", "/api").await.status, 404);
    let versions = json_of(&call(admin, "GET", "/config/versions", Some(VIEW), None, None).await);
    let sources: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["file", "api", "api", "file"]);
}

#[tokio::test]
async fn secrets_are_write_only_and_the_export_passes_check() {
    let dir = Dir::new("admin-export");
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    let key = ferrogate::config::document::text_hash("alice-key");
    change(
        admin,
        "PUT",
        "/config/consumers/alice",
        Some(json!({"groups": ["staff"], "api_keys": [key]})),
    )
    .await;
    let alice = json_of(
        &call(
            admin,
            "GET",
            "/config/consumers/alice",
            Some(VIEW),
            None,
            None,
        )
        .await,
    );
    let shown = alice["api_keys"][0].as_str().unwrap().to_owned();
    assert!(shown.starts_with("sha256:") && shown.len() == 19, "{shown}");
    assert!(!alice.to_string().contains(&key));
    // Written back as read, the key stays.
    change(
        admin,
        "PATCH",
        "/config/consumers/alice",
        Some(json!({"groups": ["staff", "ops"], "api_keys": [shown]})),
    )
    .await;
    let export = call(admin, "GET", "/config", Some(ROOT), None, None).await;
    assert_eq!(export.status, 200);
    assert!(export.text().contains(&key), "{}", export.text());
    let exported = dir.path.join("exported.yaml");
    std::fs::write(&exported, export.body.as_ref()).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["check", "-c", exported.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let metrics = call(admin, "GET", "/metrics", Some(VIEW), None, None)
        .await
        .text();
    let version = etag(admin).await;
    assert!(
        metrics.contains(&format!(
            "ferrogate_config_version {}",
            version.trim_matches('"')
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_documented_endpoint_answers() {
    let dir = Dir::new("admin-openapi");
    let backend = Backend::named("b").await;
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    upstream_and_route(admin, "app", backend.addr).await;
    let doc = json_of(&call(admin, "GET", "/openapi.json", Some(VIEW), None, None).await);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 20, "{paths:?}");
    for (template, ops) in paths {
        let path = template
            .replace("{group}", "app")
            .replace("{address}", &backend.addr.to_string())
            .replace("{queue}", "none")
            .replace("{job}", "1")
            .replace("{version}", "1")
            .replace(
                "{name}",
                if template.contains("routes") {
                    "api"
                } else if template.contains("sections") {
                    "upstreams"
                } else {
                    "app"
                },
            );
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            // Changes go without If-Match: 428 shows they are served without changing anything.
            let got = call(admin, &method, &path, Some(ROOT), None, Some(json!({}))).await;
            let routed = got.status != 404 || !got.text().contains("no such admin endpoint");
            assert!(
                routed && got.status != 405,
                "{method} {path}: {} {}",
                got.status,
                got.text()
            );
        }
    }
}

/// A TLS client to the admin listener trusting `pki`'s CA, presenting `client` (a name of
/// `pki`) when given; the status of `GET /healthz`, or `None` when TLS or HTTP failed.
async fn healthz_over_tls(
    admin: SocketAddr,
    pki: &support::TestPki,
    client: Option<&str>,
) -> Option<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.file(&format!("{name}.crt")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.file(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let name = ServerName::try_from("admin.test").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get("/healthz")
        .header("host", "admin.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test]
async fn the_admin_listener_can_require_client_certificates() {
    let pki = support::TestPki::new(&["admin.test", "operator"]);
    let file = pki.file("gateway.yaml");
    let text = "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n  tls:\n    certificates: [{cert: admin.test.crt, key: admin.test.key}]\n    client_auth: {ca_file: ca.crt}\n";
    std::fs::write(&file, text).unwrap();
    let gw = TestGateway::start_file(&file);
    let admin = gw.admin.unwrap();
    assert_eq!(
        healthz_over_tls(admin, &pki, Some("operator")).await,
        Some(200)
    );
    assert_eq!(healthz_over_tls(admin, &pki, None).await, None);
    // Plain HTTP gets no answer either.
    let plain = support::raw(admin, b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(!plain.contains("200"), "{plain}");
}

#[tokio::test]
async fn renewed_admin_certificates_are_served_after_a_reload() {
    let old = support::TestPki::new(&["admin.test"]);
    let renewed = support::TestPki::new(&["admin.test"]);
    let file = old.file("gateway.yaml");
    let text = "workers: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n  tls:\n    certificates: [{cert: admin.test.crt, key: admin.test.key}]\n";
    std::fs::write(&file, text).unwrap();
    let gw = TestGateway::start_file(&file);
    let admin = gw.admin.unwrap();
    assert_eq!(healthz_over_tls(admin, &old, None).await, Some(200));
    assert_eq!(healthz_over_tls(admin, &renewed, None).await, None);

    for f in ["admin.test.crt", "admin.test.key"] {
        std::fs::copy(renewed.file(f), old.file(f)).unwrap();
    }
    gw.shared().reload().unwrap();
    assert_eq!(healthz_over_tls(admin, &renewed, None).await, Some(200));
    assert_eq!(healthz_over_tls(admin, &old, None).await, None);
}

#[tokio::test]
async fn a_dry_run_validates_in_full_and_changes_nothing() {
    let dir = Dir::new("admin-dry-run");
    let backend = Backend::named("b").await;
    let gw = TestGateway::start_file(&config_file(&dir.path, ""));
    let admin = gw.admin.unwrap();
    let before = etag(admin).await;
    let bad = call(
        admin,
        "POST",
        "/config/routes?dry_run=true",
        Some(ROOT),
        Some(&before),
        Some(json!({"name": "bad", "upstream": "nowhere"})),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("routes[0].upstream"), "{}", bad.text());
    let group = json!({"name": "app", "targets": [{"address": backend.addr.to_string()}]});
    let good = call(
        admin,
        "POST",
        "/config/upstreams?dry_run=true",
        Some(ROOT),
        Some(&before),
        Some(group.clone()),
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(json_of(&good)["dry_run"], true);
    // Nothing changed: same version, no such group; the change itself still applies.
    assert_eq!(etag(admin).await, before);
    let listed = call(
        admin,
        "GET",
        "/config/upstreams/app",
        Some(VIEW),
        None,
        None,
    )
    .await;
    assert_eq!(listed.status, 404);
    change(admin, "POST", "/config/upstreams", Some(group)).await;
    assert_ne!(etag(admin).await, before);
}
