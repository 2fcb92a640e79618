//! The exporter: finished request records from the queue, in batches, as OTLP spans to the
//! configured receiver (HTTP/protobuf or gRPC). It runs on a background runtime; an export
//! that fails or takes too long loses its batch (counted), and records that arrive
//! meanwhile wait in the bounded queue or are dropped there.
//!
//! The records become OTLP's protobuf messages (the `opentelemetry-proto` types) directly:
//! no SDK span data in between, so an exported request costs its encoding and little else.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::mpsc;

use super::{ChildKind, ChildSpan, RequestTrace};
use crate::config::model::{OtlpProtocol, TracingSettings};
use crate::observe::metrics::TraceMetrics;

/// Takes records from `rx` until every sender is gone (the configuration was replaced),
/// then exports what is left and ends.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Box<RequestTrace>>,
    settings: TracingSettings,
    metrics: TraceMetrics,
) {
    let mut client = match Client::build(&settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, endpoint = %settings.endpoint, "no span exporter; spans are dropped");
            while rx.recv().await.is_some() {
                metrics.dropped.inc();
            }
            return;
        }
    };
    let mut batch = Vec::with_capacity(settings.batch_size);
    loop {
        let Some(first) = rx.recv().await else {
            break;
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + settings.export_interval;
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(t)) => batch.push(t),
                Ok(None) | Err(_) => break,
            }
        }
        send(&mut client, &mut batch, &settings, &metrics).await;
    }
    if !batch.is_empty() {
        send(&mut client, &mut batch, &settings, &metrics).await;
    }
}

/// Where spans go: an OTLP/HTTP receiver, or an OTLP/gRPC one.
enum Client {
    Http {
        http: reqwest::Client,
        url: String,
        headers: http::HeaderMap,
    },
    Grpc {
        grpc: TraceServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

impl Client {
    fn build(s: &TracingSettings) -> Result<Client, String> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &s.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            headers.insert(name, value);
        }
        Ok(match s.protocol {
            OtlpProtocol::Http => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                Client::Http {
                    http: reqwest::Client::builder()
                        .timeout(s.timeout)
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| e.to_string())?,
                    url: s.endpoint.clone(),
                    headers,
                }
            }
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                    .map_err(|e| e.to_string())?
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout)
                    .connect_lazy();
                Client::Grpc {
                    grpc: TraceServiceClient::new(channel),
                    metadata: tonic::metadata::MetadataMap::from_headers(headers),
                }
            }
        })
    }

    async fn export(&mut self, request: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Client::Http { http, url, headers } => {
                let resp = http
                    .post(url.as_str())
                    .headers(headers.clone())
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("the receiver answered {s}")),
                }
            }
            Client::Grpc { grpc, metadata } => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                grpc.export(req).await.map(drop).map_err(|e| e.to_string())
            }
        }
    }
}

// The records come boxed through the queue (a request moves a pointer, not the record).
#[allow(clippy::vec_box)]
async fn send(
    client: &mut Client,
    batch: &mut Vec<Box<RequestTrace>>,
    settings: &TracingSettings,
    metrics: &TraceMetrics,
) {
    let mut spans = Vec::with_capacity(batch.len() * 2);
    for t in batch.drain(..) {
        push_spans(&t, &mut spans);
    }
    let n = spans.len() as u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", &settings.service_name)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ferrogate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    match tokio::time::timeout(settings.timeout, client.export(request)).await {
        Ok(Ok(())) => {
            metrics.exported.inc_by(n);
        }
        Ok(Err(e)) => {
            metrics.failed.inc_by(n);
            tracing::warn!(error = %e, spans = n, "span export failed");
        }
        Err(_) => {
            metrics.failed.inc_by(n);
            tracing::warn!(spans = n, "span export timed out");
        }
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn error_status() -> Option<Status> {
    Some(Status {
        message: String::new(),
        code: StatusCode::Error as i32,
    })
}

/// The request's span and its children, as OTLP spans.
fn push_spans(t: &RequestTrace, out: &mut Vec<Span>) {
    let trace_id = t.trace_id().to_be_bytes().to_vec();
    let trace_state = t
        .tracestate
        .as_ref()
        .and_then(|s| s.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Wall-clock times from the monotonic offsets, against the request's arrival time.
    let time = t.time.unwrap_or_else(SystemTime::now);
    let at = |i: std::time::Instant| unix_nanos(time + i.saturating_duration_since(t.start));
    let r = &t.request;
    let method = r.method.as_str();
    let name = match &t.route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let host = r
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(without_port);
    let mut attributes = vec![
        text("http.request.method", method),
        text("url.path", r.path.as_str()),
        text("url.scheme", r.scheme),
        text("server.address", host.unwrap_or("")),
        text("client.address", &r.client.to_string()),
        text("network.protocol.version", version(r.version)),
    ];
    if let Some(route) = &t.route {
        attributes.push(text("ferrogate.route", route));
    }
    if t.status != 0 {
        attributes.push(int("http.response.status_code", i64::from(t.status)));
    }
    let status = if t.status >= 500 {
        attributes.push(text("error.type", &t.status.to_string()));
        error_status()
    } else {
        None
    };
    let span_id = t.span_id.to_be_bytes().to_vec();
    out.push(Span {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        trace_state: trace_state.clone(),
        parent_span_id: t.parent.map_or(Vec::new(), |p| p.to_be_bytes().to_vec()),
        // The W3C flags (sampled), and whether the parent is remote (OTLP's flag bits).
        flags: 0x01 | 0x100 | if t.parent.is_some() { 0x200 } else { 0 },
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(time),
        end_time_unix_nano: at(t.end),
        attributes,
        status,
        ..Default::default()
    });
    for c in t.spans.iter() {
        let (kind, name, attributes, status) = child(c, method);
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: c.span_id.to_be_bytes().to_vec(),
            trace_state: trace_state.clone(),
            parent_span_id: span_id.clone(),
            flags: 0x01 | 0x100,
            name,
            kind: kind as i32,
            start_time_unix_nano: at(c.start),
            end_time_unix_nano: at(c.end),
            attributes,
            status,
            ..Default::default()
        });
    }
}

/// A child span's kind, name, attributes and status.
fn child(c: &ChildSpan, method: &str) -> (SpanKind, String, Vec<KeyValue>, Option<Status>) {
    match &c.kind {
        ChildKind::Phase(phase) => (SpanKind::Internal, (*phase).to_owned(), Vec::new(), None),
        ChildKind::Attempt(a) => {
            let mut attrs = vec![
                text("http.request.method", method),
                text("server.address", &a.target.ip().to_string()),
                int("server.port", i64::from(a.target.port())),
                text("ferrogate.upstream", &a.upstream),
            ];
            if a.status != 0 {
                attrs.push(int("http.response.status_code", i64::from(a.status)));
            }
            if a.resend > 0 {
                attrs.push(int("http.request.resend_count", i64::from(a.resend)));
            }
            let error = match a.error {
                Some(e) => Some(e.to_owned()),
                None => (a.status >= 400).then(|| a.status.to_string()),
            };
            let status = error.map(|e| {
                attrs.push(text("error.type", &e));
                Status {
                    message: String::new(),
                    code: StatusCode::Error as i32,
                }
            });
            (SpanKind::Client, method.to_owned(), attrs, status)
        }
    }
}

/// `host[:port]` without its port (an IPv6 literal keeps its brackets).
fn without_port(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
        _ => h,
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
