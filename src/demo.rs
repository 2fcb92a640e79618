//! `ferrogate demo`: built-in backends on loopback and an example config that shows routing,
//! load balancing, redirects, rate limiting, API-key authentication, caching, a queued route
//! and metrics without anything else installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The demo configuration; `{alpha}`, `{beta}` and `{gamma}` become backend addresses,
/// `{queue_dir}` the directory of the queued route's jobs.
pub const CONFIG_TEMPLATE: &str = r#"# Ferrogate demo configuration (docs/config.md explains every key).
listeners:
  - name: public
    address: "{listen}"
admin:
  address: "{admin}"
# The traffic history behind the dashboard (http://ADMIN/ui/) and /stats, in memory here.
history: {}
access_log:
  enabled: true
  target: stdout
upstreams:
  demo:
    balancer: round_robin
    targets:
      - {address: "{alpha}", weight: 2}
      - {address: "{beta}"}
      - {address: "{gamma}"}
  sticky:
    balancer: consistent_hash
    hash_on: "header:x-user"
    targets:
      - {address: "{alpha}"}
      - {address: "{beta}"}
      - {address: "{gamma}"}
consumers:
  demo-user:
    groups: [demo]
    # SHA-256 of the key "demo-key"; clients send the key itself in X-Api-Key.
    api_keys: ["c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"]
auth:
  consumer_header: X-Consumer
  methods:
    keys: {api_key: {header: X-Api-Key}}
rate_limiting:
  policies:
    five_per_10s:
      algorithm: sliding_window
      limit: 5
      window: 10s
      key: [client_ip]
      x_ratelimit_headers: true
queues:
  reports: {path: "{queue_dir}", concurrency: 2}
routes:
  - name: api
    match: {path: {prefix: /api}}
    upstream: demo
    strip_prefix: /api
  - name: users
    match: {path: {template: "/users/{id}"}, methods: [GET]}
    upstream: sticky
    rewrite: {path: "/profile/{id}"}
  - name: limited
    match: {path: {prefix: /limited}}
    upstream: demo
    rate_limits: [five_per_10s]
  - name: private
    match: {path: {prefix: /private}}
    upstream: demo
    auth: {methods: [keys], allow: {groups: [demo]}}
  - name: cached
    match: {path: {prefix: /cached}}
    upstream: demo
    cache: {}
  - name: old-docs
    match: {path: {prefix: /old}}
    redirect: {status: 301, path: /api/docs}
  # 202 at once; the (slow) backend gets the job later. Status at /jobs/reports/ID.
  - name: reports
    match: {path: {prefix: /reports}, methods: [POST]}
    upstream: demo
    queue: {name: reports}
"#;

/// How long the demo backends take to answer `/reports` (a slow job).
const REPORT_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts one demo backend on `127.0.0.1:0` on its own thread; it answers every request
/// with a small JSON document naming itself and echoing the request line.
pub fn spawn_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| async move {
                            if req.uri().path().starts_with("/reports") {
                                tokio::time::sleep(REPORT_TIME).await;
                            }
                            Ok::<_, Infallible>(answer(name, &req))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .replace(['"', '\\'], "")
    };
    let body = format!(
        "{{\"backend\":\"{name}\",\"method\":\"{}\",\"path\":\"{}\",\"x_forwarded_for\":\"{}\",\"x_request_id\":\"{}\"}}\n",
        req.method(),
        req.uri().path().replace(['"', '\\'], ""),
        header("x-forwarded-for"),
        header("x-request-id"),
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if req.uri().path().starts_with("/cached") {
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=30"),
        );
    }
    r
}

/// The requests of the demo's own traffic, in turn: most succeed, some are refused (429,
/// 401, 404), so the dashboard has rates, errors and latencies to show at once.
const TRAFFIC: &[&str] = &[
    "GET /api/hello",
    "GET /users/42\r\nx-user: ada",
    "GET /api/items",
    "GET /cached/page",
    "GET /private\r\nx-api-key: demo-key",
    "GET /api/hello",
    "GET /limited",
    "GET /users/7\r\nx-user: grace",
    "GET /private",
    "GET /nowhere",
];

/// Sends the demo's own traffic to the gateway at `gateway` from a thread of its own: about
/// four requests a second, for as long as the process runs.
pub fn spawn_traffic(gateway: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    std::thread::Builder::new()
        .name("demo-traffic".into())
        .spawn(move || {
            for line in TRAFFIC.iter().cycle() {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let Ok(mut s) = std::net::TcpStream::connect(gateway) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let (head, extra) = line.split_once("\r\n").unwrap_or((line, ""));
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!("{extra}\r\n")
                };
                let req = format!(
                    "{head} HTTP/1.1\r\nhost: demo.test\r\n{extra}connection: close\r\n\r\n"
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let _ = s.read_to_end(&mut Vec::new());
                }
            }
        })?;
    Ok(())
}

/// The demo config text for the given addresses and queue directory.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: [SocketAddr; 3],
    queue_dir: &std::path::Path,
) -> String {
    CONFIG_TEMPLATE
        .replace("{queue_dir}", &queue_dir.display().to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{alpha}", &backends[0].to_string())
        .replace("{beta}", &backends[1].to_string())
        .replace("{gamma}", &backends[2].to_string())
}
