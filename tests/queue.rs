//! Queued routes end to end, on the embedded backend, then on Redis, NATS and RabbitMQ
//! shared by two instances: a request answered 202 and delivered later to a real backend, its status,
//! result, events, retries, dead letters, idempotency keys, owners, bounds, and jobs
//! surviving a SIGKILL of the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::nats::NatsServer;
use support::rabbitmq::{RabbitServer, Relay};
use support::redis::RedisServer;
use support::tempdir::Dir;
use support::*;

/// What the backend saw of one delivery.
#[derive(Debug, Clone)]
struct Delivery {
    job: String,
    method: String,
    path: String,
    body: Bytes,
    consumer: Option<String>,
    request_id: Option<String>,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// A stream entry as `XRANGE` answers it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A backend that records each delivery and answers with `status(n)` for the n-th
/// (from 0), after `delay`.
async fn recording_backend(delay: Duration, status: fn(usize) -> u16) -> (Backend, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let n = Arc::new(AtomicUsize::new(0));
    let backend = Backend::start(false, move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        let n = n.fetch_add(1, Ordering::SeqCst);
        async move {
            let field = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let job = field("x-job-id").unwrap_or_default();
            let consumer = field("x-consumer");
            let request_id = field("x-request-id");
            let method = req.method().to_string();
            let path = req.uri().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push(Delivery {
                job,
                method,
                path,
                body: body.clone(),
                consumer,
                request_id,
            });
            tokio::time::sleep(delay).await;
            let code = StatusCode::from_u16(status(n)).unwrap();
            let mut resp = http::Response::new(full(Bytes::from(format!("done:{}", body.len()))));
            *resp.status_mut() = code;
            resp.headers_mut()
                .insert("x-backend", http::HeaderValue::from_static("yes"));
            resp
        }
    })
    .await;
    (backend, log)
}

fn gateway(backend: SocketAddr, dir: &Dir, queue: &str, route: &str) -> TestGateway {
    let store = format!("path: \"{}\"", dir.path.display());
    TestGateway::start(&yaml(backend, "", &store, queue, route))
}

fn yaml(backend: SocketAddr, top: &str, store: &str, queue: &str, route: &str) -> String {
    format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
admin: {{address: \"127.0.0.1:0\"}}
{top}upstreams: {{app: {{targets: [{{address: \"{backend}\"}}]}}}}
queues:
  q: {{{store}, retry_delay: 20ms, max_retry_delay: 50ms{queue}}}
routes:
  - {{name: jobs, match: {{path: {{prefix: /jobs}}, methods: [POST]}}, upstream: app, queue: {{name: q}}{route}}}
"
    )
}

async fn post(gw: SocketAddr, path: &str, body: &str, fields: &[(&str, &str)]) -> Got {
    let mut req = Request::post(path).header("host", "a");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    send(
        gw,
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

fn sha256_hex(s: &str) -> String {
    ferrogate::auth::apikey::hash_key(s.as_bytes())
}

fn json(got: &Got) -> serde_json::Value {
    serde_json::from_slice(&got.body).unwrap_or_else(|_| panic!("not JSON: {}", got.text()))
}

/// Polls the job's status until it is final; answers the last status response.
async fn until_final(gw: SocketAddr, url: &str, fields: &[(&str, &str)]) -> Got {
    for _ in 0..250 {
        let got = request(gw, "GET", url, fields).await;
        if got.status == StatusCode::SEE_OTHER
            || json(&got)["status"] == "failed"
            || json(&got)["status"] == "succeeded"
        {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job at {url} did not finish");
}

#[tokio::test]
async fn a_queued_request_is_answered_202_then_delivered_and_its_result_served() {
    let dir = Dir::new("queue-basic");
    let (backend, log) = recording_backend(Duration::ZERO, |_| 201).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let got = post(
        gw.addr,
        "/jobs/report?x=1",
        "payload",
        &[("x-custom", "kept")],
    )
    .await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let job = json(&got);
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(job["status"], "pending");
    let url = format!("/jobs/q/{id}");
    assert_eq!(job["status_url"], url.as_str());
    assert_eq!(got.header("location"), Some(url.as_str()));
    let request_id = got.header("x-request-id").unwrap().to_owned();

    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        done.header("location"),
        Some(format!("{url}/result").as_str())
    );
    assert_eq!(json(&done)["status"], "succeeded");
    assert_eq!(json(&done)["attempts"], 1);
    let delivered = log.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1);
    let d = &delivered[0];
    assert_eq!(d.job, id);
    assert_eq!(
        (d.method.as_str(), d.path.as_str()),
        ("POST", "/jobs/report?x=1")
    );
    assert_eq!(&d.body[..], b"payload");
    assert_eq!(d.request_id.as_deref(), Some(request_id.as_str()));
    let seen = backend.requests();
    assert_eq!(seen[0].headers["x-custom"], "kept");

    let result = request(gw.addr, "GET", &format!("{url}/result"), &[]).await;
    assert_eq!(result.status, StatusCode::CREATED);
    assert_eq!(result.text(), "done:7");
    assert_eq!(result.header("x-backend"), Some("yes"));
    assert_eq!(result.header("x-job-id"), Some(id.as_str()));
}

#[tokio::test]
async fn unknown_and_malformed_job_ids_are_404_problems() {
    let dir = Dir::new("queue-404");
    let (backend, _) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", "");
    for path in [
        "/jobs/q/0123456789abcdef0123456789abcdef",
        "/jobs/q/nothex",
        "/jobs/q/0123456789abcdef0123456789abcdef/other",
    ] {
        let got = request(gw.addr, "GET", path, &[]).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
    }
}

#[tokio::test]
async fn retried_statuses_are_tried_again_then_dead_lettered_and_an_operator_can_retry() {
    let dir = Dir::new("queue-dead");
    // Two 503s use up the attempts; the operator's retry then gets a 200.
    let (backend, log) = recording_backend(Duration::ZERO, |n| if n < 2 { 503 } else { 200 }).await;
    let gw = gateway(backend.addr, &dir, ", max_attempts: 2", "");
    let got = post(gw.addr, "/jobs/x", "b", &[]).await;
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    let url = format!("/jobs/q/{id}");
    let done = until_final(gw.addr, &url, &[]).await;
    let status = json(&done);
    assert_eq!(status["status"], "failed");
    assert_eq!(status["dead_letter"], true);
    assert_eq!(status["attempts"], 2);
    assert_eq!(status["error"], "the upstream answered 503");
    assert_eq!(log.lock().unwrap().len(), 2);

    let admin = gw.admin.unwrap();
    let dead = get(admin, "a", "/queues/q/dead").await;
    let list: serde_json::Value = serde_json::from_slice(&dead.body).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let listed = get(admin, "a", "/queues").await;
    assert!(
        listed.text().contains("\"dead_letters\":1"),
        "{}",
        listed.text()
    );
    let queues: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    // Nothing is due now: no job waits for a dispatcher.
    assert_eq!(queues[0]["oldest_due_age_seconds"], 0.0, "{queues}");

    assert_eq!(
        admin_post(admin, &format!("/queues/q/dead/{id}/retry")).await,
        200
    );
    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(json(&done)["status"], "succeeded");
    assert_eq!(log.lock().unwrap().len(), 3);
    assert_eq!(
        admin_post(admin, &format!("/queues/q/dead/{id}/retry")).await,
        404
    );
}

#[tokio::test]
async fn a_dead_letter_can_be_deleted() {
    let dir = Dir::new("queue-delete");
    let (backend, _) = recording_backend(Duration::ZERO, |_| 502).await;
    let gw = gateway(backend.addr, &dir, ", max_attempts: 1", "");
    let got = post(gw.addr, "/jobs/x", "b", &[]).await;
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    until_final(gw.addr, &format!("/jobs/q/{id}"), &[]).await;
    let admin = gw.admin.unwrap();
    let del = Request::delete(format!("/queues/q/dead/{id}"))
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(admin, del).await.status, StatusCode::OK);
    let gone = request(gw.addr, "GET", &format!("/jobs/q/{id}"), &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_status_that_is_not_retried_ends_the_job_as_failed_with_its_result() {
    let dir = Dir::new("queue-failed");
    let (backend, log) = recording_backend(Duration::ZERO, |_| 422).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let got = post(gw.addr, "/jobs/x", "b", &[]).await;
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    let done = until_final(gw.addr, &format!("/jobs/q/{id}"), &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(json(&done)["status"], "failed");
    assert_eq!(json(&done)["result_status"], 422);
    assert!(json(&done).get("dead_letter").is_none());
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_is_retried_until_it_comes_back() {
    let dir = Dir::new("queue-connect");
    // A port nothing listens on yet.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = spare.local_addr().unwrap();
    drop(spare);
    let gw = gateway(at, &dir, ", max_attempts: 50", "");
    let got = post(gw.addr, "/jobs/x", "late", &[]).await;
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    let url = format!("/jobs/q/{id}");
    assert!(
        eventually(Duration::from_secs(3), || async {
            json(&request(gw.addr, "GET", &url, &[]).await)["attempts"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        })
        .await
    );
    let pending = json(&request(gw.addr, "GET", &url, &[]).await);
    assert!(
        pending["error"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
            || pending["error"].as_str().unwrap().contains("connection"),
        "{pending}"
    );
    let _backend = Backend::start_at(at, false, |_req| async { text(StatusCode::OK, "ok") }).await;
    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(json(&done)["status"], "succeeded");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_job_and_refuses_another_request() {
    let dir = Dir::new("queue-idem");
    let (backend, log) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let key = [("idempotency-key", "order-42")];
    let first = post(gw.addr, "/jobs/x", "same", &key).await;
    let again = post(gw.addr, "/jobs/x", "same", &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(json(&first)["id"], json(&again)["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = post(gw.addr, "/jobs/x", "different", &key).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    let id = json(&first)["id"].as_str().unwrap().to_owned();
    until_final(gw.addr, &format!("/jobs/q/{id}"), &[]).await;
    assert_eq!(log.lock().unwrap().len(), 1, "one job, delivered once");
}

#[tokio::test]
async fn only_the_consumer_that_created_a_job_can_read_it() {
    let dir = Dir::new("queue-owner");
    let store = format!("path: \"{}\"", dir.path.display());
    only_its_creator_reads_a_job("", &store).await;
}

/// Alice's job (on the queue store `store`, with the top-level YAML `top`) is hers alone.
async fn only_its_creator_reads_a_job(top: &str, store: &str) {
    let (backend, log) = recording_backend(Duration::ZERO, |_| 200).await;
    let yaml = format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
{top}upstreams: {{app: {{targets: [{{address: \"{}\"}}]}}}}
consumers:
  alice: {{api_keys: [\"{}\"]}}
  bob: {{api_keys: [\"{}\"]}}
auth:
  consumer_header: X-Consumer
  methods:
    keys: {{api_key: {{header: X-Api-Key}}}}
queues:
  q: {{{store}}}
routes:
  - {{name: jobs, match: {{path: {{prefix: /jobs}}, methods: [POST]}}, upstream: app, queue: {{name: q}}, auth: {{methods: [keys]}}}}
",
        backend.addr,
        sha256_hex("alice-key"),
        sha256_hex("bob-key"),
    );
    let gw = TestGateway::start(&yaml);
    let alice = [("x-api-key", "alice-key")];
    let bob = [("x-api-key", "bob-key")];
    assert_eq!(
        post(gw.addr, "/jobs/x", "b", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let got = post(gw.addr, "/jobs/x", "b", &alice).await;
    assert_eq!(got.status, StatusCode::ACCEPTED);
    let url = json(&got)["status_url"].as_str().unwrap().to_owned();
    let done = until_final(gw.addr, &url, &alice).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        request(gw.addr, "GET", &url, &bob).await.status,
        StatusCode::NOT_FOUND
    );
    let result = format!("{url}/result");
    assert_eq!(
        request(gw.addr, "GET", &result, &bob).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        request(gw.addr, "GET", &url, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        request(gw.addr, "GET", &result, &alice).await.status,
        StatusCode::OK
    );
    // The upstream learned who sent the job, as it would have for a forwarded request.
    assert_eq!(log.lock().unwrap()[0].consumer.as_deref(), Some("alice"));
}

#[tokio::test]
async fn status_changes_stream_as_server_sent_events() {
    let dir = Dir::new("queue-sse");
    let (backend, _) = recording_backend(Duration::from_millis(300), |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let got = post(gw.addr, "/jobs/x", "b", &[]).await;
    let url = json(&got)["status_url"].as_str().unwrap().to_owned();
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("{url}/events"))
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("the stream ends once the job is final")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let statuses: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["status"].to_string())
        .collect();
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("\"succeeded\""),
        "{text}"
    );
    assert!(statuses.iter().any(|s| s == "\"running\""), "{text}");
    assert!(text.contains("event: status\n"));
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_stores_nothing() {
    let dir = Dir::new("queue-full");
    let (backend, log) = recording_backend(Duration::from_millis(500), |_| 200).await;
    let gw = gateway(backend.addr, &dir, ", max_depth: 1, concurrency: 1", "");
    assert_eq!(
        post(gw.addr, "/jobs/x", "1", &[]).await.status,
        StatusCode::ACCEPTED
    );
    let full = post(gw.addr, "/jobs/x", "2", &[]).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.header("retry-after"), Some("5"));
    assert_eq!(
        full.header("content-type"),
        Some("application/problem+json")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(log.lock().unwrap().len(), 1);
    // Room again once the first is done.
    assert_eq!(
        post(gw.addr, "/jobs/x", "3", &[]).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_and_never_queued() {
    let dir = Dir::new("queue-413");
    let (backend, log) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", ", max_body_bytes: 8");
    let got = post(gw.addr, "/jobs/x", "far more than eight bytes", &[]).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(log.lock().unwrap().is_empty());
    let listed = get(gw.admin.unwrap(), "a", "/queues").await;
    assert!(listed.text().contains("\"depth\":0"), "{}", listed.text());
}

#[tokio::test]
async fn a_load_of_jobs_is_delivered_at_most_concurrency_at_a_time() {
    let dir = Dir::new("queue-level");
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (o, m) = (open.clone(), most.clone());
    let backend = Backend::start(false, move |_req| {
        let (o, m) = (o.clone(), m.clone());
        async move {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            o.fetch_sub(1, Ordering::SeqCst);
            text(StatusCode::OK, "ok")
        }
    })
    .await;
    let gw = gateway(backend.addr, &dir, ", concurrency: 3", "");
    let mut sent = Vec::new();
    for i in 0..30 {
        let addr = gw.addr;
        sent.push(tokio::spawn(async move {
            post(addr, "/jobs/x", &i.to_string(), &[]).await.status
        }));
    }
    for s in sent {
        assert_eq!(s.await.unwrap(), StatusCode::ACCEPTED);
    }
    assert!(eventually(Duration::from_secs(5), || async { backend.count() == 30 }).await);
    assert!(
        most.load(Ordering::SeqCst) <= 3,
        "{} at once",
        most.load(Ordering::SeqCst)
    );
    assert!(most.load(Ordering::SeqCst) >= 2);
}

/// Accepts on keep-alive connections from `tasks` clients until `stop_at` jobs are accepted
/// in all (or a connection fails: the gateway was killed); answers the accepted ids.
async fn accept_load(
    gw: SocketAddr,
    tasks: usize,
    stop_at: usize,
    accepted: Arc<Mutex<Vec<String>>>,
) {
    let mut running = Vec::new();
    for t in 0..tasks {
        let accepted = accepted.clone();
        running.push(tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(gw).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(io).await else {
                return;
            };
            tokio::spawn(conn);
            for i in 0.. {
                if accepted.lock().unwrap().len() >= stop_at {
                    return;
                }
                let req = Request::post("/jobs/load")
                    .header("host", "a")
                    .body(Full::new(Bytes::from(format!("{t}-{i}"))))
                    .unwrap();
                let Ok(resp) = tx.send_request(req).await else {
                    return;
                };
                if resp.status() != StatusCode::ACCEPTED {
                    return;
                }
                let Ok(body) = resp.into_body().collect().await else {
                    return;
                };
                let v: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                accepted
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    for r in running {
        let _ = r.await;
    }
}

/// 2,000 jobs accepted under load, the gateway killed with SIGKILL part-way and started
/// again on the same queue file: every job that was answered 202 is delivered.
#[tokio::test]
async fn every_accepted_job_is_delivered_after_the_gateway_is_killed() {
    let dir = Dir::new("queue-crash");
    let (backend, log) = recording_backend(Duration::from_millis(2), |_| 200).await;
    let path = dir.path.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
upstreams: {{app: {{targets: [{{address: \"{}\"}}]}}}}
queues:
  q: {{path: queue, concurrency: 2}}
routes:
  - {{name: jobs, match: {{path: {{prefix: /jobs}}, methods: [POST]}}, upstream: app, queue: {{name: q}}}}
",
            backend.addr
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_ferrogate");
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let (mut first, addr) = spawn_run(bin, &path);
    let load = tokio::spawn(accept_load(addr, 16, 2000, accepted.clone()));
    assert!(
        eventually(Duration::from_secs(10), || async {
            accepted.lock().unwrap().len() >= 1000
        })
        .await,
        "1,000 jobs accepted"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    load.await.unwrap();
    let before_kill = accepted.lock().unwrap().len();
    assert!(before_kill < 2000, "the kill came part-way");
    let delivered_before = log.lock().unwrap().len();

    let (mut second, addr) = spawn_run(bin, &path);
    accept_load(addr, 16, 2000, accepted.clone()).await;
    let ids: Vec<String> = accepted.lock().unwrap().clone();
    assert!(ids.len() >= 2000);
    let all_delivered = eventually(Duration::from_secs(20), || async {
        let seen: std::collections::HashSet<String> =
            log.lock().unwrap().iter().map(|d| d.job.clone()).collect();
        ids.iter().all(|id| seen.contains(id))
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let seen: std::collections::HashSet<String> =
        log.lock().unwrap().iter().map(|d| d.job.clone()).collect();
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    assert!(
        all_delivered,
        "{missing} of {} accepted jobs never delivered",
        ids.len()
    );
    assert!(
        delivered_before < before_kill,
        "jobs were still pending when the gateway was killed ({delivered_before} of {before_kill} delivered)"
    );
}

/// A queue store that several instances share: the top-level YAML it needs and the queue's
/// keys (backend, names, time limits).
struct Shared {
    top: String,
    store: String,
    /// The store takes over a dead instance's jobs after `visibility_timeout` (RabbitMQ
    /// does when the instance's connection closes, and has no such key).
    visibility: bool,
}

fn on_redis(url: &str, prefix: &str) -> Shared {
    Shared {
        top: format!("redis: {{url: \"{url}\"}}\n"),
        store: format!("backend: redis, key_prefix: \"{prefix}\""),
        visibility: true,
    }
}

fn on_nats(url: &str, prefix: &str) -> Shared {
    Shared {
        top: String::new(),
        store: format!("backend: nats, nats_url: \"{url}\", key_prefix: \"{prefix}\""),
        visibility: true,
    }
}

/// A queue on RabbitMQ at `amqp`, its state on Redis at `redis`.
fn on_rabbitmq(amqp: &str, redis: &str, prefix: &str) -> Shared {
    Shared {
        top: format!("redis: {{url: \"{redis}\"}}\nrabbitmq: {{url: \"{amqp}\"}}\n"),
        store: format!("backend: rabbitmq, key_prefix: \"{prefix}\""),
        visibility: false,
    }
}

/// A queue on the shared broker with keys and names under `prefix`, its state on a Redis
/// that lives as long as the first value.
fn rabbitmq_and_redis(prefix: &str) -> (RedisServer, Shared) {
    let redis = RedisServer::start();
    let shared = on_rabbitmq(&RabbitServer::shared().url(), &redis.url(), prefix);
    (redis, shared)
}

/// The keys that say how soon a dead instance's jobs are taken over, where the store has
/// them.
fn takeover(shared: &Shared, after: &str) -> String {
    match shared.visibility {
        true => format!(", visibility_timeout: {after}"),
        false => String::new(),
    }
}

/// A gateway whose queue `q` is on the shared store.
fn shared_gateway(backend: SocketAddr, shared: &Shared, queue: &str) -> TestGateway {
    let store = format!(
        "{}, attempt_timeout: 2s{}",
        shared.store,
        takeover(shared, "3s")
    );
    TestGateway::start(&yaml(backend, &shared.top, &store, queue, ""))
}

async fn a_job_is_delivered_and_its_result_served(shared: &Shared) {
    let (backend, log) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = shared_gateway(backend.addr, shared, "");
    let got = post(gw.addr, "/jobs/a", "on a broker", &[]).await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let url = json(&got)["status_url"].as_str().unwrap().to_owned();
    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let result = request(gw.addr, "GET", &format!("{url}/result"), &[]).await;
    assert_eq!(result.text(), "done:11");
    assert_eq!(&log.lock().unwrap()[0].body[..], b"on a broker");
}

#[tokio::test]
async fn on_redis_a_job_is_delivered_and_its_result_served() {
    let redis = RedisServer::start();
    a_job_is_delivered_and_its_result_served(&on_redis(&redis.url(), "t1:")).await;
}

#[tokio::test]
async fn on_nats_a_job_is_delivered_and_its_result_served() {
    let nats = NatsServer::start();
    a_job_is_delivered_and_its_result_served(&on_nats(&nats.url(), "t1-")).await;
}

async fn two_instances_share_jobs_idempotency_keys_and_bounds(shared: &Shared) {
    let (backend, log) = recording_backend(Duration::from_millis(300), |_| 200).await;
    let bounds = ", max_depth: 2, concurrency: 1";
    let one = shared_gateway(backend.addr, shared, bounds);
    let two = shared_gateway(backend.addr, shared, bounds);
    let key = [("idempotency-key", "k-1")];
    let first = post(one.addr, "/jobs/a", "x", &key).await;
    let again = post(two.addr, "/jobs/a", "x", &key).await;
    assert_eq!(json(&first)["id"], json(&again)["id"], "the key is shared");
    assert_eq!(
        post(two.addr, "/jobs/a", "y", &key).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        post(two.addr, "/jobs/a", "2", &[]).await.status,
        StatusCode::ACCEPTED
    );
    // Two jobs in the shared queue: the third is refused by either instance.
    let full = post(one.addr, "/jobs/a", "3", &[]).await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.text()
    );
    let url = json(&first)["status_url"].as_str().unwrap().to_owned();
    let done = until_final(two.addr, &url, &[]).await;
    assert_eq!(json(&done)["status"], "succeeded");
    assert!(
        eventually(Duration::from_secs(5), || async {
            log.lock().unwrap().len() == 2
        })
        .await
    );
}

#[tokio::test]
async fn on_redis_two_instances_share_jobs_idempotency_keys_and_bounds() {
    let redis = RedisServer::start();
    two_instances_share_jobs_idempotency_keys_and_bounds(&on_redis(&redis.url(), "t2:")).await;
}

#[tokio::test]
async fn on_nats_two_instances_share_jobs_idempotency_keys_and_bounds() {
    let nats = NatsServer::start();
    two_instances_share_jobs_idempotency_keys_and_bounds(&on_nats(&nats.url(), "t2-")).await;
}

async fn retries_end_in_a_dead_letter_an_operator_can_retry(shared: &Shared) {
    let (backend, log) = recording_backend(Duration::ZERO, |n| if n < 2 { 502 } else { 200 }).await;
    let gw = shared_gateway(backend.addr, shared, ", max_attempts: 2");
    let got = post(gw.addr, "/jobs/a", "b", &[]).await;
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    let url = format!("/jobs/q/{id}");
    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(json(&done)["dead_letter"], true);
    assert_eq!(json(&done)["attempts"], 2);
    let admin = gw.admin.unwrap();
    let dead = get(admin, "a", "/queues/q/dead").await;
    assert!(dead.text().contains(&id), "{}", dead.text());
    assert_eq!(
        admin_post(admin, &format!("/queues/q/dead/{id}/retry")).await,
        200
    );
    let done = until_final(gw.addr, &url, &[]).await;
    assert_eq!(json(&done)["status"], "succeeded");
    assert_eq!(log.lock().unwrap().len(), 3);
    let dead = get(admin, "a", "/queues/q/dead").await;
    assert!(!dead.text().contains(&id), "{}", dead.text());
}

#[tokio::test]
async fn on_redis_retries_end_in_a_dead_letter_an_operator_can_retry() {
    let redis = RedisServer::start();
    retries_end_in_a_dead_letter_an_operator_can_retry(&on_redis(&redis.url(), "t3:")).await;
}

#[tokio::test]
async fn on_nats_retries_end_in_a_dead_letter_an_operator_can_retry() {
    let nats = NatsServer::start();
    retries_end_in_a_dead_letter_an_operator_can_retry(&on_nats(&nats.url(), "t3-")).await;
}

/// The store stopped (`down`): a request is answered 503 and nothing is stored; once the
/// store is back (`up`), requests are accepted again.
async fn unreachable_the_gateway_answers_503(
    shared: &Shared,
    down: impl FnOnce(),
    up: impl FnOnce(),
) {
    let (backend, _) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = shared_gateway(backend.addr, shared, "");
    assert_eq!(
        post(gw.addr, "/jobs/a", "b", &[]).await.status,
        StatusCode::ACCEPTED
    );
    down();
    let got = post(gw.addr, "/jobs/a", "b", &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    up();
    let ok = eventually(Duration::from_secs(8), || async {
        post(gw.addr, "/jobs/a", "b", &[]).await.status == StatusCode::ACCEPTED
    })
    .await;
    assert!(ok, "accepts again once the store is back");
}

#[tokio::test]
async fn on_redis_unreachable_the_gateway_answers_503_and_stores_nothing() {
    let redis = std::cell::RefCell::new(RedisServer::start());
    let shared = on_redis(&redis.borrow().url(), "t4:");
    unreachable_the_gateway_answers_503(
        &shared,
        || redis.borrow_mut().stop(),
        || redis.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test]
async fn on_nats_unreachable_the_gateway_answers_503_and_stores_nothing() {
    let nats = std::cell::RefCell::new(NatsServer::start());
    let shared = on_nats(&nats.borrow().url(), "t4-");
    unreachable_the_gateway_answers_503(
        &shared,
        || nats.borrow_mut().stop(),
        || nats.borrow_mut().restart(),
    )
    .await;
}

/// 2,000 jobs accepted under load on a queue shared by two instances: the first is killed
/// with SIGKILL part-way and stays down; the second delivers every accepted job, those the
/// first had taken included.
async fn a_second_instance_finishes_the_jobs_of_one_that_was_killed(shared: &Shared, tag: &str) {
    let dir = Dir::new(tag);
    let (backend, log) = recording_backend(Duration::from_millis(2), |_| 200).await;
    let path = dir.path.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
{}upstreams: {{app: {{targets: [{{address: \"{}\"}}]}}}}
queues:
  q: {{{}, concurrency: 2, attempt_timeout: 500ms{}}}
routes:
  - {{name: jobs, match: {{path: {{prefix: /jobs}}, methods: [POST]}}, upstream: app, queue: {{name: q}}}}
",
            shared.top,
            backend.addr,
            shared.store,
            takeover(shared, "1s")
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_ferrogate");
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let (mut first, first_addr) = spawn_run(bin, &path);
    let (mut second, second_addr) = spawn_run(bin, &path);
    let load = tokio::spawn(accept_load(first_addr, 16, 2000, accepted.clone()));
    assert!(
        eventually(Duration::from_secs(10), || async {
            accepted.lock().unwrap().len() >= 1000
        })
        .await,
        "1,000 jobs accepted"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    load.await.unwrap();
    assert!(
        accepted.lock().unwrap().len() < 2000,
        "the kill came part-way"
    );
    accept_load(second_addr, 16, 2000, accepted.clone()).await;
    let ids: Vec<String> = accepted.lock().unwrap().clone();
    assert!(ids.len() >= 2000);
    let all_delivered = eventually(Duration::from_secs(20), || async {
        let seen: std::collections::HashSet<String> =
            log.lock().unwrap().iter().map(|d| d.job.clone()).collect();
        ids.iter().all(|id| seen.contains(id))
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let seen: std::collections::HashSet<String> =
        log.lock().unwrap().iter().map(|d| d.job.clone()).collect();
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    assert!(
        all_delivered,
        "{missing} of {} accepted jobs never delivered",
        ids.len()
    );
}

#[tokio::test]
async fn on_redis_a_second_instance_finishes_the_jobs_of_one_that_was_killed() {
    let redis = RedisServer::start();
    let shared = on_redis(&redis.url(), "ferrogate:queue:");
    a_second_instance_finishes_the_jobs_of_one_that_was_killed(&shared, "queue-redis-crash").await;
}

#[tokio::test]
async fn on_nats_a_second_instance_finishes_the_jobs_of_one_that_was_killed() {
    let nats = NatsServer::start();
    let shared = on_nats(&nats.url(), "ferrogate-queue-");
    a_second_instance_finishes_the_jobs_of_one_that_was_killed(&shared, "queue-nats-crash").await;
}

#[tokio::test]
async fn on_rabbitmq_a_job_is_delivered_and_its_result_served() {
    let (_redis, shared) = rabbitmq_and_redis("t1:");
    a_job_is_delivered_and_its_result_served(&shared).await;
}

#[tokio::test]
async fn on_rabbitmq_two_instances_share_jobs_idempotency_keys_and_bounds() {
    let (_redis, shared) = rabbitmq_and_redis("t2:");
    two_instances_share_jobs_idempotency_keys_and_bounds(&shared).await;
}

#[tokio::test]
async fn on_rabbitmq_retries_end_in_a_dead_letter_an_operator_can_retry() {
    let (_redis, shared) = rabbitmq_and_redis("t3:");
    retries_end_in_a_dead_letter_an_operator_can_retry(&shared).await;
}

#[tokio::test]
async fn on_rabbitmq_only_the_consumer_that_created_a_job_can_read_it() {
    let (_redis, shared) = rabbitmq_and_redis("t5:");
    only_its_creator_reads_a_job(&shared.top, &shared.store).await;
}

#[tokio::test]
async fn on_rabbitmq_the_broker_or_redis_unreachable_the_gateway_answers_503() {
    let rabbit = RabbitServer::shared();
    let redis = std::cell::RefCell::new(RedisServer::start());
    let relay = std::cell::RefCell::new(Relay::start(rabbit.port()));
    let shared = on_rabbitmq(&relay.borrow().url(), &redis.borrow().url(), "t4:");
    unreachable_the_gateway_answers_503(
        &shared,
        || relay.borrow_mut().stop(),
        || relay.borrow_mut().restart(),
    )
    .await;
    unreachable_the_gateway_answers_503(
        &shared,
        || redis.borrow_mut().stop(),
        || redis.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test]
async fn on_rabbitmq_a_second_instance_finishes_the_jobs_of_one_that_was_killed() {
    let (_redis, shared) = rabbitmq_and_redis("crash:");
    a_second_instance_finishes_the_jobs_of_one_that_was_killed(&shared, "queue-rabbit-crash").await;
}

/// On RabbitMQ, the broker pushes up to `concurrency` messages to the instance's consumer:
/// four jobs are under way at once, never more. When the connection (and with it the
/// consumer's channel) is cut while they are under way, the broker takes their messages
/// back; once it is reachable again the consumer starts anew, the jobs that ended meanwhile
/// are acknowledged without a second attempt, and every job is delivered: none is lost.
#[tokio::test]
async fn on_rabbitmq_the_consumer_delivers_in_parallel_and_loses_nothing_when_its_channel_closes() {
    let rabbit = RabbitServer::shared();
    let redis = RedisServer::start();
    let mut relay = Relay::start(rabbit.port());
    let shared = on_rabbitmq(&relay.url(), &redis.url(), "t6:");
    let (now, most, seen) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
    );
    let (n, m, log) = (now.clone(), most.clone(), seen.clone());
    let backend = Backend::start(false, move |req: Request<hyper::body::Incoming>| {
        let (n, m, log) = (n.clone(), m.clone(), log.clone());
        async move {
            let job = req.headers()["x-job-id"].to_str().unwrap().to_owned();
            m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            log.lock().unwrap().push(job);
            http::Response::new(full(Bytes::from_static(b"done")))
        }
    })
    .await;
    let store = format!("{}, attempt_timeout: 5s, concurrency: 4", shared.store);
    let gw = TestGateway::start(&yaml(backend.addr, &shared.top, &store, "", ""));
    let mut urls = Vec::new();
    for i in 0..12 {
        let got = post(gw.addr, "/jobs/a", &format!("job {i}"), &[]).await;
        assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
        urls.push(json(&got)["status_url"].as_str().unwrap().to_owned());
    }
    let parallel = eventually(Duration::from_secs(5), || async {
        now.load(Ordering::SeqCst) == 4
    })
    .await;
    assert!(parallel, "four attempts under way at once");
    // Four messages unacknowledged on the consumer's channel when it closes.
    relay.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    relay.restart();
    for url in &urls {
        let done = until_final(gw.addr, url, &[]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    }
    let seen = seen.lock().unwrap().clone();
    for url in &urls {
        let id = url.rsplit('/').next().unwrap();
        assert!(seen.iter().any(|j| j == id), "job {id} was delivered");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        4,
        "at most `concurrency` at once"
    );
    assert!(
        seen.len() <= 12 + 4,
        "only the jobs under way when the channel closed may come twice: {}",
        seen.len()
    );
}

/// A backend that answers after 300 ms and counts the requests under way: now, and the
/// most at once.
async fn counting_backend() -> (Backend, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (now.clone(), most.clone());
    let backend = Backend::start(false, move |_req: Request<hyper::body::Incoming>| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            http::Response::new(full(Bytes::from_static(b"done")))
        }
    })
    .await;
    (backend, now, most)
}

/// On RabbitMQ, a reload that raises the queue's `concurrency` starts the consumer again
/// with the new prefetch: more jobs run at once, and every job is delivered.
#[tokio::test]
async fn on_rabbitmq_a_reload_that_raises_concurrency_raises_the_prefetch() {
    let (_redis, shared) = rabbitmq_and_redis("t7:");
    let (backend, _, most) = counting_backend().await;
    let dir = Dir::new("rabbit-reload");
    let path = dir.path.join("gateway.yaml");
    let config = |c: u32| {
        let store = format!("{}, attempt_timeout: 5s, concurrency: {c}", shared.store);
        yaml(backend.addr, &shared.top, &store, "", "")
    };
    std::fs::write(&path, config(2)).unwrap();
    let gw = TestGateway::start_file(&path);
    let run = |n: usize| async move {
        let mut urls = Vec::new();
        for _ in 0..n {
            let got = post(gw.addr, "/jobs/a", "x", &[]).await;
            assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
            urls.push(json(&got)["status_url"].as_str().unwrap().to_owned());
        }
        for url in &urls {
            let done = until_final(gw.addr, url, &[]).await;
            assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
        }
    };
    run(6).await;
    assert_eq!(most.load(Ordering::SeqCst), 2, "at most 2 at once");
    std::fs::write(&path, config(4)).unwrap();
    let raised = eventually(Duration::from_secs(10), || async {
        run(8).await;
        most.load(Ordering::SeqCst) == 4
    })
    .await;
    assert!(raised, "4 at once after the reload");
}

const CALLBACK_SECRET: &str = "a-secret-of-32-bytes-for-testing";

/// What a callback receiver got: the body, and whether its signature checked out.
type Received = Arc<Mutex<Vec<(serde_json::Value, bool)>>>;

/// A receiver that checks each callback's signature; it answers 500 to the first.
async fn callback_receiver() -> (Backend, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let n = Arc::new(AtomicUsize::new(0));
    let backend = Backend::start(false, move |req: Request<hyper::body::Incoming>| {
        let (seen, n) = (seen.clone(), n.clone());
        async move {
            let signature = req.headers()["ferrogate-signature"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let valid = support::receiver::signed_by(CALLBACK_SECRET.as_bytes(), &signature, &body);
            seen.lock()
                .unwrap()
                .push((serde_json::from_slice(&body).unwrap(), valid));
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "try again");
            }
            text(StatusCode::OK, "thanks")
        }
    })
    .await;
    (backend, got)
}

#[tokio::test]
async fn a_finished_job_is_posted_signed_to_its_callback_and_retried_when_refused() {
    let dir = Dir::new("queue-callback");
    let (backend, _) = recording_backend(Duration::ZERO, |_| 200).await;
    let (receiver, got) = callback_receiver().await;
    let allow = format!("http://{}/hooks/", receiver.addr);
    let gw = gateway(
        backend.addr,
        &dir,
        &format!(", callback: {{allow: [\"{allow}\"], secret: {CALLBACK_SECRET}}}"),
        "",
    );
    let posted = post(
        gw.addr,
        "/jobs/a",
        "with callback",
        &[("callback-url", &format!("{allow}job"))],
    )
    .await;
    assert_eq!(posted.status, StatusCode::ACCEPTED);
    let id = json(&posted)["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(5), || async {
            got.lock().unwrap().len() >= 2
        })
        .await
    );
    let got = got.lock().unwrap().clone();
    assert!(
        got.iter().all(|(_, valid)| *valid),
        "every signature checks out"
    );
    let (doc, _) = &got[1];
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["result"]["status"], 200);
    assert_eq!(doc["result"]["body"], "done:13");
    assert_eq!(receiver.requests()[0].uri.path(), "/hooks/job");

    // A URL outside the allow list is refused before anything is stored.
    let refused = post(
        gw.addr,
        "/jobs/a",
        "x",
        &[("callback-url", "http://127.0.0.1:1/elsewhere")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let sneaky = format!("http://{}/hooksX", receiver.addr);
    let refused = post(gw.addr, "/jobs/a", "x", &[("callback-url", &sneaky)]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_callback_url_is_refused_where_the_queue_has_no_allow_list() {
    let dir = Dir::new("queue-no-callback");
    let (backend, log) = recording_backend(Duration::ZERO, |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let got = post(
        gw.addr,
        "/jobs/a",
        "x",
        &[("callback-url", "http://127.0.0.1:9/x")],
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_publish_route_writes_the_request_to_a_redis_stream_and_answers_202() {
    let mut redis = RedisServer::start();
    let yaml = format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
redis: {{url: \"{}\"}}
routes:
  - {{name: events, match: {{path: {{prefix: /events}}, methods: [POST]}}, max_body_bytes: 64, publish: {{redis_stream: orders, headers: [content-type, x-tenant], max_len: 1000}}}}
",
        redis.url()
    );
    let gw = TestGateway::start(&yaml);
    let got = post(
        gw.addr,
        "/events/created?x=1",
        "{\"order\":7}",
        &[
            ("content-type", "application/json"),
            ("x-tenant", "acme"),
            ("x-other", "no"),
        ],
    )
    .await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let id = json(&got)["id"].as_str().unwrap().to_owned();
    let request_id = got.header("x-request-id").unwrap().to_owned();

    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let entries: Vec<StreamEntry> = ::redis::cmd("XRANGE")
        .arg("orders")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, id);
    let field = |name: &str| {
        entries[0]
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(field("body").as_deref(), Some("{\"order\":7}"));
    assert_eq!(field("method").as_deref(), Some("POST"));
    assert_eq!(field("path").as_deref(), Some("/events/created?x=1"));
    assert_eq!(field("request_id"), Some(request_id));
    assert_eq!(field("h:x-tenant").as_deref(), Some("acme"));
    assert_eq!(field("h:content-type").as_deref(), Some("application/json"));
    assert_eq!(field("h:x-other"), None);

    let big = "x".repeat(100);
    assert_eq!(
        post(gw.addr, "/events/big", &big, &[]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    redis.stop();
    let down = post(gw.addr, "/events/created", "{}", &[]).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        down.header("content-type"),
        Some("application/problem+json")
    );
}

/// A gateway with publish routes: `/events` to `events`, `/lost` to `lost` (YAML `publish`
/// blocks), on the top-level YAML `top`.
fn publishing_gateway(top: &str, events: &str, lost: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
{top}routes:
  - {{name: events, match: {{path: {{prefix: /events}}, methods: [POST]}}, publish: {{{events}, headers: [content-type, x-tenant]}}}}
  - {{name: lost, match: {{path: {{prefix: /lost}}, methods: [POST]}}, publish: {{{lost}}}}}
"
    ))
}

/// Posts an order event; answers the 202's body and request id.
async fn post_order(gw: SocketAddr) -> (serde_json::Value, String) {
    let fields = [
        ("content-type", "application/json"),
        ("x-tenant", "acme"),
        ("x-other", "no"),
    ];
    let got = post(gw, "/events/created?x=1", "{\"order\":7}", &fields).await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let request_id = got.header("x-request-id").unwrap().to_owned();
    (json(&got), request_id)
}

/// The parts of [`post_order`]'s message other than the body, as `part` reads them;
/// request fields are named `FIELD_PREFIX` + name.
fn has_the_order_parts(
    part: impl Fn(&str) -> Option<String>,
    request_id: &str,
    field_prefix: &str,
) {
    let field = |name: &str| part(&format!("{field_prefix}{name}"));
    assert_eq!(part("method").as_deref(), Some("POST"));
    assert_eq!(part("path").as_deref(), Some("/events/created?x=1"));
    assert_eq!(part("request_id").as_deref(), Some(request_id));
    assert_eq!(field("x-tenant").as_deref(), Some("acme"));
    assert_eq!(field("content-type").as_deref(), Some("application/json"));
    assert_eq!(field("x-other"), None, "only the selected fields");
}

/// A 503 problem, nothing published.
async fn refused(gw: SocketAddr, path: &str) {
    let got = post(gw, path, "{}", &[]).await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        got.text()
    );
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn a_publish_route_writes_the_request_to_a_nats_subject_and_answers_202() {
    let mut nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let url = nats.url();
    let gw = publishing_gateway(
        "",
        &format!("nats_subject: orders.created, nats_url: \"{url}\""),
        // No stream captures this subject: nothing would store the message.
        &format!("nats_subject: nowhere.x, nats_url: \"{url}\""),
    );
    let (doc, request_id) = post_order(gw.addr).await;
    assert_eq!(doc["id"], "ORDERS:1");
    assert_eq!(doc["subject"], "orders.created");

    let m = stream.get_raw_message(1).await.unwrap();
    assert_eq!(&m.payload[..], b"{\"order\":7}");
    let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    has_the_order_parts(header, &request_id, "h-");

    refused(gw.addr, "/lost").await;
    nats.stop();
    refused(gw.addr, "/events/created").await;
}

#[tokio::test]
async fn a_publish_route_writes_the_request_to_a_rabbitmq_exchange_and_answers_202() {
    use lapin::options::{BasicGetOptions, QueueBindOptions};
    let rabbit = RabbitServer::shared();
    let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let kind = lapin::ExchangeKind::Direct;
    ch.exchange_declare(
        "p-events".into(),
        kind,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("p-created".into(), Default::default(), Default::default())
        .await
        .unwrap();
    let bind = QueueBindOptions::default();
    ch.queue_bind(
        "p-created".into(),
        "p-events".into(),
        "created".into(),
        bind,
        Default::default(),
    )
    .await
    .unwrap();
    let mut relay = Relay::start(rabbit.port());
    let gw = publishing_gateway(
        &format!("rabbitmq: {{url: \"{}\"}}\n", relay.url()),
        "rabbitmq_exchange: p-events, routing_key: created",
        // No queue is bound with this key: the broker would drop the message.
        "rabbitmq_exchange: p-events, routing_key: nobody",
    );
    let (doc, request_id) = post_order(gw.addr).await;
    assert_eq!(doc["id"], request_id.as_str());
    assert_eq!(doc["exchange"], "p-events");

    let got = ch
        .basic_get("p-created".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is in the bound queue");
    assert_eq!(&got.delivery.data[..], b"{\"order\":7}");
    let headers = got
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let header = |name: &str| match headers.inner().get(name) {
        Some(lapin::types::AMQPValue::LongString(v)) => {
            Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
        }
        _ => None,
    };
    has_the_order_parts(header, &request_id, "h:");

    refused(gw.addr, "/lost").await;
    relay.stop();
    refused(gw.addr, "/events/created").await;
}

#[tokio::test]
async fn status_changes_stream_over_a_websocket_and_it_closes_when_the_job_is_done() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = Dir::new("queue-ws");
    let (backend, _) = recording_backend(Duration::from_millis(300), |_| 200).await;
    let gw = gateway(backend.addr, &dir, "", "");
    let got = post(gw.addr, "/jobs/x", "b", &[]).await;
    let url = json(&got)["status_url"].as_str().unwrap().to_owned();
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}{url}/events", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut statuses = Vec::new();
    let mut closed = None;
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    statuses.push(v["status"].as_str().unwrap().to_owned());
                }
                Message::Close(frame) => {
                    closed = frame.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the socket closes once the job is final");
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|s| s == "running"), "{statuses:?}");
    assert_eq!(closed, Some(1000));
}
