//! The binary: `check` lists every problem with its key path; every YAML example in
//! docs/config.md passes `check`.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::tempdir;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["check", "-c"])
        // The OIDC examples read their client secret from the environment.
        .env("OIDC_CLIENT_SECRET", "example-secret")
        // The AI examples read a provider key from the environment.
        .env("ANTHROPIC_API_KEY", "example-key")
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_reports_three_separate_mistakes_with_their_paths() {
    let dir = tempdir::Dir::new("check");
    let path = dir.path.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:
  - address: 127.0.0.1:99999
upstreams:
  api:
    targets: [{address: 127.0.0.1:9001}]
routes:
  - match: {path: {prefix: /api}}
    upstream: apii
  - match: {path: {regex: '[unclosed'}}
    upstream: api
",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok, "check must exit non-zero");
    assert!(text.contains("3 problem(s)"), "{text}");
    assert!(
        text.contains("listeners[0].address: invalid address"),
        "{text}"
    );
    assert!(
        text.contains("routes[0].upstream: no upstream named \"apii\""),
        "{text}"
    );
    assert!(
        text.contains("routes[1].match.path.regex: invalid regex"),
        "{text}"
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempdir::Dir::new("check-ok");
    let path = dir.path.join("ok.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams:\n  api: {targets: [{address: 127.0.0.1:9001}]}\nroutes:\n  - upstream: api\n",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
}

/// Every ```yaml block in docs/config.md is a complete config that `check` accepts,
/// unless the block's first line is `# invalid` (examples of mistakes).
#[test]
fn every_example_in_the_config_docs_passes_check() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
    let dir = tempdir::Dir::new("docs");
    // Examples may name certificate files: give them real ones (and a CA bundle).
    let pki = support::TestPki::new(&["api.example.com", "www.example.com"]);
    for name in ["api.example.com", "www.example.com"] {
        for ext in ["crt", "key"] {
            std::fs::copy(
                pki.dir.path.join(format!("{name}.{ext}")),
                dir.path.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    std::fs::copy(pki.dir.path.join("ca.crt"), dir.path.join("clients-ca.crt")).unwrap();
    std::fs::copy(
        pki.dir.path.join("ca.crt"),
        dir.path.join("upstream-ca.crt"),
    )
    .unwrap();
    for ext in ["crt", "key"] {
        std::fs::copy(
            pki.dir.path.join(format!("www.example.com.{ext}")),
            dir.path.join(format!("gateway-client.{ext}")),
        )
        .unwrap();
    }
    // And the geo databases the location examples name.
    let place = |network, country, continent| support::mmdb::Place {
        network,
        country,
        continent,
        subdivision: None,
    };
    support::mmdb::write_city(
        &dir.path.join("GeoLite2-Country.mmdb"),
        &[place("198.51.100.0/24", "DE", "EU")],
    );
    support::mmdb::write_asn(
        &dir.path.join("GeoLite2-ASN.mmdb"),
        &[("198.51.100.0/24", 64496)],
    );
    let mut count = 0;
    let mut rest = docs.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let block = &rest[start + 8..];
        let end = block.find("```").unwrap();
        let yaml = &block[..end];
        rest = &block[end + 3..];
        let path = dir.path.join(format!("example-{count}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let (ok, text) = check(&path);
        if yaml.starts_with("# invalid") {
            assert!(!ok, "example {count} should fail:\n{yaml}");
        } else {
            assert!(ok, "example {count} fails check:\n{yaml}\n{text}");
        }
        count += 1;
    }
    assert!(count >= 5, "docs/config.md has only {count} examples");
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Signals sent the moment the gateway says it listens are handled: the handlers exist
/// before anything is bound, so SIGHUP never meets its default action (ending the process).
#[tokio::test]
async fn sighup_right_after_start_reloads_instead_of_ending_the_process() {
    let dir = tempdir::Dir::new("early-hup");
    let path = dir.path.join("gateway.yaml");
    std::fs::write(
        &path,
        "workers: 1\nlisteners: [{address: 127.0.0.1:0}]\nupstreams:\n  app: {targets: [{address: \"127.0.0.1:9\"}]}\nroutes:\n  - {match: {path: {prefix: /only}}, upstream: app}\n",
    )
    .unwrap();
    let (mut child, addr) = support::spawn_run(env!("CARGO_BIN_EXE_ferrogate"), &path);
    signal(&child, "-HUP");
    signal(&child, "-HUP");
    assert_eq!(support::get(addr, "h", "/").await.status, 404);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gateway still runs"
    );
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// `ferrogate run`: SIGHUP reloads, SIGTERM drains in-flight requests and exits 0.
#[tokio::test]
async fn run_reloads_on_sighup_and_exits_zero_after_draining_on_sigterm() {
    use std::time::Duration;

    let slow = support::Backend::start(false, |_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::text(http::StatusCode::OK, "slow")
    })
    .await;
    let dir = tempdir::Dir::new("run");
    let path = dir.path.join("gateway.yaml");
    let yaml = |prefix: &str| {
        format!(
            "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nupstreams:\n  app: {{targets: [{{address: \"{}\"}}]}}\nroutes:\n  - {{match: {{path: {{prefix: {prefix}}}}}, upstream: app}}\n",
            slow.addr
        )
    };
    std::fs::write(&path, yaml("/only")).unwrap();
    let (mut child, addr) = support::spawn_run(env!("CARGO_BIN_EXE_ferrogate"), &path);
    assert_eq!(support::get(addr, "h", "/").await.status, 404);

    // Change the file and send SIGHUP (the watcher may also see the change; either reloads).
    std::fs::write(&path, yaml("/")).unwrap();
    signal(&child, "-HUP");
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            support::get(addr, "h", "/").await.status == 200
        })
        .await,
        "the reloaded route answers"
    );

    let before = slow.count();
    let pending = tokio::spawn(async move { support::get(addr, "h", "/x").await });
    assert!(support::eventually(Duration::from_secs(2), || async { slow.count() > before }).await);
    signal(&child, "-TERM");
    let got = pending.await.unwrap();
    assert_eq!(
        got.status, 200,
        "the in-flight request completes during the drain"
    );
    assert_eq!(got.text(), "slow");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// The demo's configuration runs as the README's quick start promises: routing, load
/// balancing, rate limiting and the redirect, against its own built-in backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_shows_routing_balancing_limits_and_redirects() {
    let backends = [
        ferrogate::demo::spawn_backend("alpha").unwrap(),
        ferrogate::demo::spawn_backend("beta").unwrap(),
        ferrogate::demo::spawn_backend("gamma").unwrap(),
    ];
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let queue_dir = tempdir::Dir::new("demo-queue");
    let text = ferrogate::demo::config_text(any, any, backends, &queue_dir.path);
    let gw = support::TestGateway::start(&text);

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let got = support::get(gw.addr, "demo", "/api/hello").await;
        assert_eq!(got.status, 200);
        assert!(got.text().contains("\"path\":\"/hello\""), "{}", got.text());
        seen.insert(got.text().split('"').nth(3).unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "round robin reached {seen:?}");

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            support::get(gw.addr, "demo", "/limited")
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    assert_eq!(support::get(gw.addr, "demo", "/private").await.status, 401);
    let req = http::Request::get("/private")
        .header("host", "demo")
        .header("x-api-key", "demo-key")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(support::send(gw.addr, req).await.status, 200);

    let first = support::get(gw.addr, "demo", "/cached/page").await;
    assert!(first.header("cache-status").unwrap().contains("stored"));
    let second = support::get(gw.addr, "demo", "/cached/page").await;
    assert!(second.header("cache-status").unwrap().contains(";hit"));
    assert_eq!(second.body, first.body);

    let redirect = support::get(gw.addr, "demo", "/old").await;
    assert_eq!(redirect.status, 301);

    // The queued route: 202 at once, the slow backend's answer later at the result URL.
    let queued = support::request(gw.addr, "POST", "/reports/monthly", &[]).await;
    assert_eq!(queued.status, 202);
    let status_url = queued.header("location").unwrap().to_owned();
    assert!(status_url.starts_with("/jobs/reports/"), "{status_url}");
    let finished = support::eventually(std::time::Duration::from_secs(8), || async {
        support::get(gw.addr, "demo", &status_url).await.status == 303
    })
    .await;
    assert!(finished, "the job finished");
    let result = support::get(gw.addr, "demo", &format!("{status_url}/result")).await;
    assert!(
        result.text().contains("\"path\":\"/reports/monthly\""),
        "{}",
        result.text()
    );
}

fn ferrogate_stdout(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferrogate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_commit_the_features_and_the_target() {
    let long = ferrogate_stdout(&["--version"]);
    assert!(
        long.starts_with(&format!("ferrogate {}\n", env!("CARGO_PKG_VERSION"))),
        "{long}"
    );
    for line in ["commit: ", "features: ", "target: "] {
        assert!(long.contains(&format!("\n{line}")), "{long}");
    }
    let short = ferrogate_stdout(&["-V"]);
    assert!(short.contains("(commit "), "{short}");
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ferrogate"),
        ("fish", "complete -c ferrogate"),
    ] {
        let script = ferrogate_stdout(&["completions", shell]);
        assert!(script.contains(marker), "{shell}:\n{script}");
        assert!(script.contains("check"), "{shell} completes no subcommand");
    }
}

#[test]
fn manpage_is_roff_and_one_page_per_command_is_written_to_a_directory() {
    let page = ferrogate_stdout(&["manpage"]);
    assert!(page.contains(".TH ferrogate 1"), "{page}");
    assert!(page.contains("SIGHUP"), "the page says how to reload");
    let dir = tempdir::Dir::new("man");
    let out = dir.path.join("man1");
    ferrogate_stdout(&["manpage", "--out-dir", out.to_str().unwrap()]);
    for name in ["ferrogate.1", "ferrogate-run.1", "ferrogate-check.1"] {
        assert!(out.join(name).is_file(), "no {name}");
    }
}

#[test]
fn check_refuses_header_transforms_of_framing_fields_with_their_paths() {
    let dir = tempdir::Dir::new("check-transforms");
    let path = dir.path.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: 127.0.0.1:8080}]
upstreams:
  api: {targets: [{address: 127.0.0.1:9001}]}
routes:
  - upstream: api
    request_headers:
      set: {content-length: '0', x-id: '{param.id}'}
      remove: [transfer-encoding]
    response_headers:
      add: {connection: close, x-geo: '{geo.country}'}
",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    for expected in [
        "routes[0].request_headers.set.content-length: content-length cannot be changed by a transform",
        "routes[0].request_headers.set.x-id: {param.id}: the route's path template has no parameter \"id\"",
        "routes[0].request_headers.remove[0]: transfer-encoding cannot be changed",
        "routes[0].response_headers.add.connection: connection cannot be changed",
        "routes[0].response_headers.add.x-geo: {geo.country}: geo fields need the top-level `geo` section",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

#[test]
fn check_suggests_the_key_meant_and_reports_a_repeated_key_at_its_path() {
    let dir = tempdir::Dir::new("check-keys");
    let path = dir.path.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: 127.0.0.1:8080}]
upstreams:
  api: {targets: [{address: 127.0.0.1:9001}]}
  api: {targets: [{address: 127.0.0.1:9002}]}
routes:
  - upstream: api
    ratelimits: [x]
    colour: blue
",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
    assert!(
        text.contains("upstreams.api: key \"api\" is given 2 times in one mapping; write it once"),
        "{text}"
    );
    assert!(
        text.contains("routes[0].ratelimits: unknown key; did you mean \"rate_limits\"?"),
        "{text}"
    );
    assert!(text.contains("routes[0].colour: unknown key\n"), "{text}");
    assert!(!text.contains("DuplicateKeyPolicy"), "{text}");
}
