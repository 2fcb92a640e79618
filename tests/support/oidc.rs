//! A real OpenID Connect provider for tests: the npm package `oidc-provider` run by node on
//! a free loopback port, once per test binary (`tests/support/oidc/provider.mjs` says what it
//! offers). The package is installed into `target/oidc-provider/` when missing. Also a
//! small browser: a cookie jar per host that follows the login redirects with plain HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::redis::free_port;
use super::{send, Got};

/// The pinned provider version.
pub const PACKAGE: &str = "oidc-provider@9.13.3";
/// How long node may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The running provider.
pub struct Provider {
    pub port: u16,
    /// Held so the provider lives as long as the test process (it exits when this closes).
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

impl Provider {
    /// The provider of this test binary, started on first use.
    pub fn get() -> &'static Provider {
        static ONE: OnceLock<Provider> = OnceLock::new();
        ONE.get_or_init(start)
    }

    /// `http://127.0.0.1:PORT`
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Registers a confidential client `id` with secret `secret`, redirect and logout URIs
    /// on `gateways` (`/oidc/callback`, `/`, `/oidc/backchannel`), all grants, and the
    /// access-token lifetime `ttl_secs`.
    pub async fn register(&self, id: &str, secret: &str, gateways: &[SocketAddr], ttl_secs: u64) {
        let uris = |path: &str| -> Vec<String> {
            gateways
                .iter()
                .map(|g| format!("http://{g}{path}"))
                .collect()
        };
        let meta = serde_json::json!({
            "client_id": id,
            "client_secret": secret,
            "redirect_uris": uris("/oidc/callback"),
            "post_logout_redirect_uris": uris("/"),
            "backchannel_logout_uri": uris("/oidc/backchannel")[0],
            "backchannel_logout_session_required": true,
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "access_token_ttl": ttl_secs,
        });
        self.register_metadata(&meta).await;
    }

    /// Registers (or replaces) a client with exactly this metadata (plus the test-only
    /// `access_token_ttl`).
    pub async fn register_metadata(&self, meta: &serde_json::Value) {
        let got = self.post_json("/test/clients", &meta.to_string()).await;
        assert_eq!(got.status, 201, "client registration: {}", got.text());
    }

    /// Successful token grants of `client_id` of one type (`refresh_token`, ...).
    pub async fn grants(&self, client_id: &str, grant_type: &str) -> u64 {
        let got = fetch(
            "GET",
            &format!("{}/test/grants?client_id={client_id}", self.issuer()),
            &[],
            "",
        )
        .await;
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        v[grant_type].as_u64().unwrap_or(0)
    }

    /// Back-channel logout tokens the provider delivered to `client_id`.
    pub async fn backchannel_deliveries(&self, client_id: &str) -> u64 {
        let url = format!("{}/test/backchannel?client_id={client_id}", self.issuer());
        let got = fetch("GET", &url, &[], "").await;
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        v["delivered"].as_u64().unwrap_or(0)
    }

    /// Ends the provider sessions of `sub`, which sends back-channel logout tokens.
    pub async fn end_sessions_of(&self, sub: &str) -> Got {
        let url = format!("{}/test/end-session?sub={sub}", self.issuer());
        fetch("POST", &url, &[], "").await
    }

    async fn post_json(&self, path: &str, body: &str) -> Got {
        let url = format!("{}{path}", self.issuer());
        fetch("POST", &url, &[("content-type", "application/json")], body).await
    }
}

/// `target/oidc-provider` of this package.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc-provider")
}

/// Installs the package into the cache directory when missing.
fn install(dir: &Path) {
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        "{\"name\":\"ferrogate-oidc-tests\",\"private\":true}\n",
    )
    .unwrap();
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", PACKAGE])
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("npm is required for the OIDC tests (scripts/test.sh): {e}"));
    assert!(status.success(), "npm install {PACKAGE} failed");
}

fn start() -> Provider {
    let dir = cache_dir();
    install(&dir);
    let script = dir.join("provider.mjs");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc/provider.mjs");
    std::fs::copy(&source, &script).unwrap();
    let port = free_port();
    let mut child = Command::new("node")
        .arg(&script)
        .env("OIDC_PORT", port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("node is required for the OIDC tests (scripts/test.sh): {e}"));
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // The script prints `ready ISSUER` once it listens.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("ready ") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + READY_WITHIN;
    if rx.recv_timeout(deadline - Instant::now()).is_err() {
        let _ = child.kill();
        panic!("oidc-provider did not start on port {port}");
    }
    Provider {
        port,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

/// One request to an absolute `http://` URL on a fresh connection.
pub async fn fetch(method: &str, url: &str, fields: &[(&str, &str)], body: &str) -> Got {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_owned();
    let addr: SocketAddr = authority.parse().unwrap();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority);
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    send(addr, req).await
}

/// A browser enough for a login: one cookie jar per host and port, no scripts.
#[derive(Default, Clone)]
pub struct Browser {
    pub jar: HashMap<String, HashMap<String, String>>,
    /// Sent with every request (e.g. `accept`).
    pub fields: Vec<(String, String)>,
}

impl Browser {
    /// A browser that asks for HTML, as a navigation does.
    pub fn new() -> Browser {
        Browser {
            jar: HashMap::new(),
            fields: vec![("accept".into(), "text/html,*/*;q=0.8".into())],
        }
    }

    /// One request to an absolute URL with this browser's cookies for its host; cookies it
    /// sets are kept (an expired or empty one removed).
    pub async fn request(&mut self, method: &str, url: &str, body: &str) -> Got {
        let authority = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let cookie = self.cookie_header(&authority);
        let mut fields: Vec<(&str, &str)> = self
            .fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if !cookie.is_empty() {
            fields.push(("cookie", &cookie));
        }
        if method == "POST" {
            fields.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let got = fetch(method, url, &fields, body).await;
        let jar = self.jar.entry(authority).or_default();
        for set in got.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let gone = value.is_empty() || set.to_ascii_lowercase().contains("max-age=0");
            if gone {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        got
    }

    pub async fn get(&mut self, url: &str) -> Got {
        self.request("GET", url, "").await
    }

    /// The `cookie` field this browser sends to `authority`.
    pub fn cookie_header(&self, authority: &str) -> String {
        self.jar.get(authority).map_or_else(String::new, |c| {
            c.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Follows redirects from `url` while they stay off `stop_at` (an authority and path
    /// prefix such as `127.0.0.1:8080/oidc/callback`), logging in as `user` when the
    /// provider shows its form. Returns the URL of the first redirect to `stop_at`.
    pub async fn login_until(&mut self, url: &str, user: &str, stop_at: &str) -> String {
        let mut url = url.to_owned();
        for _ in 0..10 {
            if url.trim_start_matches("http://").starts_with(stop_at) {
                return url;
            }
            let got = self.get(&url).await;
            let next = if got.status == 200 && url.contains("/interaction/") {
                let posted = self.request("POST", &url, &format!("login={user}")).await;
                assert_eq!(posted.status, 303, "login form: {}", posted.text());
                location(&url, &posted)
            } else {
                assert!(
                    got.status.is_redirection(),
                    "{url} answered {}: {}",
                    got.status,
                    got.text()
                );
                location(&url, &got)
            };
            url = next;
        }
        panic!("too many redirects before {stop_at}");
    }
}

/// The absolute target of a redirect from `base`.
pub fn location(base: &str, got: &Got) -> String {
    let to = got.header("location").expect("a redirect has a location");
    if to.starts_with("http://") {
        return to.to_owned();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}{to}")
}
