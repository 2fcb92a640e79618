//! A headless Chromium driven over the W3C WebDriver protocol: one `chromedriver` per test
//! binary (started on a free loopback port at first use, stopped by a watcher when the test
//! process ends), one browser session per test. The calls the dashboard tests need: open a
//! page, run a script, wait for a condition, click and type, read the console, screenshot.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The element key of W3C WebDriver element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The shared chromedriver's address, started at first use.
fn driver() -> &'static str {
    // The watcher is held (never waited for: it ends with this process).
    static DRIVER: OnceLock<(String, std::process::Child)> = OnceLock::new();
    &DRIVER
        .get_or_init(|| {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            // The watcher stops chromedriver (and the browsers it runs) once this process ends.
            let watcher = Command::new("sh")
                .args([
                    "-c",
                    "chromedriver --port=\"$1\" --allowed-ips=127.0.0.1 >/dev/null 2>&1 & c=$!; \
                 while kill -0 \"$2\" 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 1; done; \
                 kill $c 2>/dev/null",
                    "sh",
                    &port.to_string(),
                    &std::process::id().to_string(),
                ])
                .stdin(Stdio::null())
                .spawn()
                .expect(
                    "chromedriver runs (apt-get install chromium-driver; scripts/test.sh does)",
                );
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                assert!(Instant::now() < deadline, "chromedriver did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            (format!("http://127.0.0.1:{port}"), watcher)
        })
        .0
}

/// One browser session, ended on drop.
pub struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// A new headless browser, `width` × `height` pixels.
    pub async fn open(width: u32, height: u32) -> Browser {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--disable-background-networking",
                format!("--window-size={width},{height}"),
            ]},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = call(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", driver()),
            &caps,
        )
        .await;
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        Browser {
            http,
            session: format!("{}/session/{id}", driver()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        call(&self.http, reqwest::Method::POST, &url, &body).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Sets the window's size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Polls the expression `js` until it is truthy; its value, or a panic naming `what`.
    /// An expression that throws (an element the page has not rendered yet) is not yet true.
    pub async fn wait_for(&self, what: &str, js: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self
                .run(
                    &format!("try {{ return {js}; }} catch (e) {{ return null; }}"),
                    json!([]),
                )
                .await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .run("return document.body.innerText.slice(0, 2000);", json!([]))
                    .await;
                panic!("waited {limit:?} for {what} ({js}); the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `#/page` of the dashboard at `base` and waits until it has rendered.
    pub async fn page(&self, base: &str, page: &str) {
        self.goto(&format!("{base}/ui/#/{page}")).await;
        self.wait_for(
            &format!("page {page}"),
            "document.getElementById('main') && document.getElementById('main').dataset.ready === 'true'",
            Duration::from_secs(10),
        )
        .await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks the element `css` as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Clears the field `css` and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
    }

    /// Saves a PNG of the window as `target/dashboard-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let url = format!("{}/screenshot", self.session);
        let v = call(&self.http, reqwest::Method::GET, &url, &Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("a base64 PNG");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Errors the page reported: the browser console's (errors, failed loads, CSP
    /// refusals) and those the dashboard's own collector caught.
    pub async fn errors(&self) -> Vec<String> {
        let log = self.post("/se/log", json!({"type": "browser"})).await;
        let mut out: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            // An answer the page expects and explains (a 404 of /alerts, a 422 of a
            // refused edit) is logged by the browser as a failed load: not a page error.
            .filter(|m| !m.contains("the server responded with a status of"))
            .collect();
        let collected = self
            .run(
                "return window.ferrogateErrors || ['no collector'];",
                json!([]),
            )
            .await;
        out.extend(
            collected
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e.as_str().unwrap_or("").to_owned()),
        );
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and its browser) even when the test failed.
        let url = self.session.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = reqwest::Client::new()
                        .delete(&url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                });
            }
        })
        .join();
    }
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, body: &Value) -> Value {
    let mut req = http
        .request(method.clone(), url)
        .timeout(Duration::from_secs(30));
    if method != reqwest::Method::GET {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("webdriver {url}: {e}"));
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "webdriver {method} {url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    v["value"].clone()
}
