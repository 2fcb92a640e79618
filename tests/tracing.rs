//! Distributed tracing end to end: trace context from the client through each upstream
//! attempt to the backend, spans exported to a real OTLP receiver (HTTP/protobuf and gRPC)
//! that decodes the payloads, sampling (head ratio, errors kept), the trace id in error
//! bodies and the access log, and a receiver that is slow or absent costing requests
//! nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// 2 server, 3 client, 1 internal (OTLP's `SpanKind`).
    kind: i32,
    attrs: HashMap<String, String>,
    service: String,
}

/// The spans a receiver took in.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Got>>>);

impl Spans {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut out = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value_text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Got {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        attrs: s
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    value_text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }

    fn of(&self, trace_id: &str) -> Vec<Got> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on loopback: decodes each `POST /v1/traces` body as protobuf,
/// after holding it for `hold`.
async fn http_receiver(hold: Duration) -> (SocketAddr, Spans, Arc<AtomicUsize>) {
    let spans = Spans::default();
    let posts = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (s, p) = (spans.clone(), posts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            let (s, p) = (s.clone(), p.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (s, p) = (s.clone(), p.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        let kind = req.headers().get("content-type").cloned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        tokio::time::sleep(hold).await;
                        p.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(path, "/v1/traces");
                        assert_eq!(kind.unwrap(), "application/x-protobuf");
                        s.take(ExportTraceServiceRequest::decode(body).unwrap());
                        let reply = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(reply))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (addr, spans, posts)
}

struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on loopback.
async fn grpc_receiver() -> (SocketAddr, Spans) {
    let spans = Spans::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Grpc(spans.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    (addr, spans)
}

/// The listener's connections as the stream tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

/// A backend that answers 503 to its first request and 200 after.
async fn fails_once() -> Backend {
    let n = Arc::new(AtomicUsize::new(0));
    Backend::start(false, move |_req| {
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                text(StatusCode::SERVICE_UNAVAILABLE, "busy")
            } else {
                text(StatusCode::OK, "done")
            }
        }
    })
    .await
}

fn gateway(target: SocketAddr, tracing: &str, listener: &str, top: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0{listener}}}]
admin: {{address: 127.0.0.1:0}}
{top}tracing: {tracing}
upstreams:
  app:
    targets: [{{address: \"{target}\"}}]
  down:
    targets: [{{address: \"127.0.0.1:1\"}}]
routes:
  - name: broken
    match: {{path: {{prefix: /broken}}}}
    upstream: down
  - name: orders
    upstream: app
    retry: {{attempts: 2, on: [503]}}
"
    ))
}

async fn eventually_spans(spans: &Spans, trace_id: &str, n: usize) -> Vec<Got> {
    assert!(
        eventually(Duration::from_secs(5), || async {
            spans.of(trace_id).len() >= n
        })
        .await,
        "{n} spans of {trace_id} expected, got {:?}",
        spans.all()
    );
    spans.of(trace_id)
}

#[tokio::test]
async fn a_trusted_callers_trace_runs_through_each_attempt_to_the_upstream() {
    let (receiver, spans, _) = http_receiver(Duration::ZERO).await;
    let backend = fails_once().await;
    let gw = gateway(
        backend.addr,
        &format!("{{otlp: {{endpoint: 'http://{receiver}'}}, export_interval: 50ms, service_name: edge}}"),
        ", trust_trace_context: true",
        "",
    );
    let req = Request::get("/orders/7")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(gw.addr, req).await;
    assert_eq!(got.status, StatusCode::OK, "the retry answered");
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    let mut attempt_spans = Vec::new();
    for s in &seen {
        let tp = s.headers["traceparent"].to_str().unwrap();
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", CLIENT_TRACE, "01"),
            "{tp}"
        );
        assert_ne!(
            parts[2], CLIENT_SPAN,
            "each attempt is a span of the gateway's"
        );
        assert_eq!(s.headers["tracestate"], "vendor=abc");
        attempt_spans.push(parts[2].to_owned());
    }
    assert_ne!(attempt_spans[0], attempt_spans[1]);

    let trace = eventually_spans(&spans, CLIENT_TRACE, 3).await;
    let server = trace.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(
        server.parent, CLIENT_SPAN,
        "the request continues the caller's span"
    );
    assert_eq!(server.name, "GET orders");
    assert_eq!(server.service, "edge");
    assert_eq!(server.attrs["http.response.status_code"], "200");
    assert_eq!(server.attrs["http.request.method"], "GET");
    assert_eq!(server.attrs["url.path"], "/orders/7");
    assert_eq!(server.attrs["server.address"], "shop.test");
    let attempts: Vec<_> = trace.iter().filter(|s| s.kind == 3).collect();
    assert_eq!(attempts.len(), 2, "{trace:?}");
    for (a, sent) in attempts.iter().zip(&attempt_spans) {
        assert_eq!(&a.span_id, sent, "the span the backend was told of");
        assert_eq!(a.parent, server.span_id);
        assert_eq!(a.attrs["server.port"], backend.addr.port().to_string());
    }
    assert_eq!(attempts[0].attrs["http.response.status_code"], "503");
    assert_eq!(attempts[0].attrs["error.type"], "503");
    assert!(!attempts[0].attrs.contains_key("http.request.resend_count"));
    assert_eq!(attempts[1].attrs["http.response.status_code"], "200");
    assert_eq!(attempts[1].attrs["http.request.resend_count"], "1");
}

#[tokio::test]
async fn sampled_out_requests_carry_context_and_errors_are_exported_with_their_trace_id() {
    let (receiver, spans, _) = http_receiver(Duration::ZERO).await;
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("trace-log");
    let log = dir.path.join("access.log");
    let gw = gateway(
        backend.addr,
        &format!(
            "{{sample_ratio: 0, otlp: {{endpoint: 'http://{receiver}'}}, export_interval: 50ms}}"
        ),
        "",
        &format!("access_log: {{target: \"{}\"}}\n", log.display()),
    );
    // The listener does not trust callers: their context is replaced, their state dropped.
    let req = Request::get("/orders/1")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.status, StatusCode::OK);
    let seen = backend.requests();
    let tp = seen[0].headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<_> = tp.split('-').collect();
    assert_ne!(
        parts[1], CLIENT_TRACE,
        "an untrusted caller's trace is not continued"
    );
    assert_eq!(parts[3], "00", "sampled out, and said so upstream");
    assert!(seen[0].headers.get("tracestate").is_none());

    // A failed request is exported whatever the ratio said.
    let failed = get(gw.addr, "shop.test", "/broken").await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
    let trace_id = body["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    let trace = eventually_spans(&spans, &trace_id, 2).await;
    let server = trace.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(server.attrs["http.response.status_code"], "502");
    assert_eq!(server.parent, "", "a trace of the gateway's own");
    let attempt = trace.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(attempt.attrs["error.type"], "connect_error");
    // The sampled-out success was not exported.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(spans.of(parts[1]).is_empty(), "{:?}", spans.all());

    let lines = std::fs::read_to_string(&log).unwrap();
    let logged: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged[0]["trace_id"], parts[1]);
    assert_eq!(logged[1]["trace_id"], trace_id.as_str());
    assert_eq!(logged[1]["span_id"], server.span_id.as_str());
}

#[tokio::test]
async fn spans_are_exported_over_grpc_too() {
    let (receiver, spans) = grpc_receiver().await;
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        &format!(
            "{{otlp: {{endpoint: 'http://{receiver}', protocol: grpc}}, export_interval: 50ms}}"
        ),
        ", trust_trace_context: true",
        "",
    );
    let req = Request::get("/orders/2")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.status, StatusCode::OK);
    let trace = eventually_spans(&spans, CLIENT_TRACE, 2).await;
    assert!(trace.iter().any(|s| s.kind == 2 && s.parent == CLIENT_SPAN));
    assert_eq!(trace[0].service, "ferrogate");
}

/// Sends `n` requests one after another; the slowest one's time.
async fn slowest_of(gw: &TestGateway, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let start = Instant::now();
        let got = get(gw.addr, "shop.test", &format!("/orders/{i}")).await;
        assert_eq!(got.status, StatusCode::OK);
        slowest = slowest.max(start.elapsed());
    }
    slowest
}

#[tokio::test]
async fn a_slow_or_absent_receiver_never_holds_requests_up() {
    let backend = Backend::named("app").await;
    // A receiver that holds every export for 3 s, and a queue of 4: requests go on at once
    // and what does not fit is dropped and counted.
    let (slow, _spans, _posts) = http_receiver(Duration::from_secs(3)).await;
    let gw = gateway(
        backend.addr,
        &format!("{{otlp: {{endpoint: 'http://{slow}', timeout: 5s}}, queue_size: 4, batch_size: 1, export_interval: 10ms}}"),
        "",
        "",
    );
    let slowest = slowest_of(&gw, 60).await;
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    let metrics = get(gw.admin.unwrap(), "admin", "/metrics").await.text();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("ferrogate_trace_requests_dropped_total"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(dropped >= 50, "{dropped} dropped\n{metrics}");

    // Nobody listening at all.
    let gw = gateway(
        backend.addr,
        "{otlp: {endpoint: 'http://127.0.0.1:1'}, export_interval: 10ms}",
        "",
        "",
    );
    let slowest = slowest_of(&gw, 30).await;
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
}

#[tokio::test]
async fn a_bad_tracing_section_is_refused_with_its_key_paths() {
    let yaml = "listeners: [{address: 127.0.0.1:0}]
upstreams: {u: {targets: [{address: 127.0.0.1:9}]}}
routes: [{upstream: u}]
tracing: {sample_ratio: -1, otlp: {endpoint: nowhere, protocol: grpc}}
";
    let err = ferrogate::config::parse(yaml, std::path::Path::new("."))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tracing.sample_ratio"), "{err}");
    assert!(err.contains("tracing.otlp.endpoint"), "{err}");
}

#[tokio::test]
async fn a_queued_jobs_delivery_continues_the_trace_of_the_request_that_queued_it() {
    let (receiver, spans, _) = http_receiver(Duration::ZERO).await;
    let backend = Backend::named("app").await;
    let dir = tempdir::Dir::new("trace-queue");
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0, trust_trace_context: true}}]
tracing: {{otlp: {{endpoint: 'http://{receiver}'}}, export_interval: 50ms}}
upstreams: {{app: {{targets: [{{address: \"{}\"}}]}}}}
queues:
  q: {{path: \"{}\"}}
routes:
  - {{name: jobs, match: {{path: {{prefix: /jobs}}, methods: [POST]}}, upstream: app, queue: {{name: q}}}}
",
        backend.addr,
        dir.path.display()
    ));
    let req = Request::post("/jobs/report")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.status, StatusCode::ACCEPTED);
    assert!(eventually(Duration::from_secs(5), || async { backend.count() == 1 }).await);
    let delivered = backend.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        delivered.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{delivered}"
    );
    // The accepting request's span, the delivery's, and the delivery's attempt.
    let trace = eventually_spans(&spans, CLIENT_TRACE, 3).await;
    let accepted = trace
        .iter()
        .find(|s| s.kind == 2 && s.parent == CLIENT_SPAN)
        .unwrap();
    assert_eq!(accepted.attrs["http.response.status_code"], "202");
    let delivery = trace
        .iter()
        .find(|s| s.kind == 2 && s.parent == accepted.span_id)
        .unwrap_or_else(|| panic!("no delivery span under {}: {trace:?}", accepted.span_id));
    let attempt = trace.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(attempt.parent, delivery.span_id);
    assert!(delivered.contains(&attempt.span_id));
}

#[tokio::test]
async fn a_mirror_copy_carries_the_requests_span() {
    let (receiver, spans, _) = http_receiver(Duration::ZERO).await;
    let primary = Backend::named("primary").await;
    let shadow = Backend::named("shadow").await;
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{address: 127.0.0.1:0, trust_trace_context: true}}]
tracing: {{otlp: {{endpoint: 'http://{receiver}'}}, export_interval: 50ms}}
upstreams:
  main: {{targets: [{{address: \"{}\"}}]}}
  shadow: {{targets: [{{address: \"{}\"}}]}}
routes:
  - {{name: copied, upstream: main, mirror: {{upstream: shadow}}}}
",
        primary.addr, shadow.addr
    ));
    let req = Request::get("/copy")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.status, StatusCode::OK);
    assert!(eventually(Duration::from_secs(3), || async { shadow.count() == 1 }).await);
    let trace = eventually_spans(&spans, CLIENT_TRACE, 2).await;
    let server = trace.iter().find(|s| s.kind == 2).unwrap();
    let copied = shadow.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        copied,
        format!("00-{CLIENT_TRACE}-{}-01", server.span_id),
        "the copy continues the request's own span"
    );
    let sent = primary.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(sent, copied, "the primary's attempt names its own span");
}
