//! The exporter: finished request records from the queue, in batches, as OTLP spans to the
//! configured receiver (HTTP/protobuf or gRPC). It runs on a background runtime; an export
//! that fails or takes too long loses its batch (counted), and records that arrive
//! meanwhile wait in the bounded queue or are dropped there.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
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
    let exporter = match build(&settings) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, endpoint = %settings.endpoint, "no span exporter; spans are dropped");
            while rx.recv().await.is_some() {
                metrics.dropped.inc();
            }
            return;
        }
    };
    let scope = InstrumentationScope::builder("ferrogate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
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
        send(&exporter, &scope, &mut batch, &settings, &metrics).await;
    }
    if !batch.is_empty() {
        send(&exporter, &scope, &mut batch, &settings, &metrics).await;
    }
}

// The records come boxed through the queue (a request moves a pointer, not the record).
#[allow(clippy::vec_box)]
async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    scope: &InstrumentationScope,
    batch: &mut Vec<Box<RequestTrace>>,
    settings: &TracingSettings,
    metrics: &TraceMetrics,
) {
    let spans: Vec<SpanData> = batch.drain(..).flat_map(|t| spans(&t, scope)).collect();
    let n = spans.len() as u64;
    match tokio::time::timeout(settings.timeout, exporter.export(spans)).await {
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

fn build(
    s: &TracingSettings,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let mut exporter = match s.protocol {
        OtlpProtocol::Http => {
            let headers: HashMap<String, String> = s.headers.iter().cloned().collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&s.endpoint)
                .with_timeout(s.timeout)
                .with_headers(headers)
                .build()?
        }
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (name, value) in &s.headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) {
                    map.insert(n, v);
                }
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&s.endpoint)
                .with_timeout(s.timeout)
                .with_metadata(metadata)
                .build()?
        }
    };
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(s.service_name.clone())
            .build(),
    );
    Ok(exporter)
}

/// The request's span and its children, as the SDK's span data.
fn spans(t: &RequestTrace, scope: &InstrumentationScope) -> Vec<SpanData> {
    let trace_id = TraceId::from_bytes(t.trace_id().to_be_bytes());
    let state = t
        .tracestate
        .as_ref()
        .and_then(|s| s.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = |span: u64, remote| {
        SpanContext::new(
            trace_id,
            SpanId::from_bytes(span.to_be_bytes()),
            TraceFlags::SAMPLED,
            remote,
            state.clone(),
        )
    };
    // Wall-clock times from the monotonic offsets, against the request's arrival time.
    let time = t.time.unwrap_or_else(SystemTime::now);
    let at = |i: std::time::Instant| time + i.saturating_duration_since(t.start);
    let r = &t.request;
    let method = r.method.as_str().to_owned();
    let name = match &t.route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", r.uri.path().to_owned()),
        KeyValue::new("url.scheme", r.scheme),
        KeyValue::new(
            "server.address",
            r.host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(without_port)
                .unwrap_or("")
                .to_owned(),
        ),
        KeyValue::new("client.address", r.client.to_string()),
        KeyValue::new("network.protocol.version", version(r.version)),
    ];
    if let Some(route) = &t.route {
        attributes.push(KeyValue::new("ferrogate.route", route.to_string()));
    }
    if t.status != 0 {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(t.status),
        ));
    }
    let status = if t.status >= 500 {
        attributes.push(KeyValue::new("error.type", t.status.to_string()));
        Status::error("")
    } else {
        Status::Unset
    };
    let mut out = Vec::with_capacity(1 + t.spans.len());
    out.push(SpanData {
        span_context: context(t.span_id, false),
        parent_span_id: t
            .parent
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_be_bytes())),
        parent_span_is_remote: t.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: time,
        end_time: at(t.end),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    });
    for c in t.spans.iter() {
        out.push(child(
            t,
            c,
            &method,
            context(c.span_id, false),
            at(c.start),
            at(c.end),
            scope,
        ));
    }
    out
}

fn child(
    t: &RequestTrace,
    c: &ChildSpan,
    method: &str,
    span_context: SpanContext,
    start_time: SystemTime,
    end_time: SystemTime,
    scope: &InstrumentationScope,
) -> SpanData {
    let (kind, name, attributes, status) = match &c.kind {
        ChildKind::Phase(phase) => (
            SpanKind::Internal,
            Cow::Borrowed(*phase),
            Vec::new(),
            Status::Unset,
        ),
        ChildKind::Attempt(a) => {
            let mut attrs = vec![
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("server.address", a.target.ip().to_string()),
                KeyValue::new("server.port", i64::from(a.target.port())),
                KeyValue::new("ferrogate.upstream", a.upstream.to_string()),
            ];
            if a.status != 0 {
                attrs.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(a.status),
                ));
            }
            if a.resend > 0 {
                attrs.push(KeyValue::new(
                    "http.request.resend_count",
                    i64::from(a.resend),
                ));
            }
            let error = a
                .error
                .map(Cow::Borrowed)
                .or_else(|| (a.status >= 400).then(|| Cow::Owned(a.status.to_string())));
            let status = match error {
                Some(e) => {
                    attrs.push(KeyValue::new("error.type", e));
                    Status::error("")
                }
                None => Status::Unset,
            };
            (
                SpanKind::Client,
                Cow::Owned(method.to_owned()),
                attrs,
                status,
            )
        }
    };
    SpanData {
        span_context,
        parent_span_id: SpanId::from_bytes(t.span_id.to_be_bytes()),
        parent_span_is_remote: false,
        span_kind: kind,
        name,
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
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
