//! The exporter: finished request records from the queue, in batches, as OTLP spans to the
//! configured receiver (HTTP/protobuf or gRPC). It runs on a background runtime; an export
//! that fails or takes too long loses its batch (counted), and records that arrive
//! meanwhile wait in the bounded queue or are dropped there.
//!
//! A batch is written as OTLP's protobuf bytes straight from the records (`otlp.rs`), and
//! sent as the body of an OTLP/HTTP request or of the gRPC `TraceService/Export` call.

use bytes::{Buf, BufMut};
use tokio::sync::mpsc;

use super::{otlp, RequestTrace};
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
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

/// The gRPC method spans are sent to.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

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
                    grpc: tonic::client::Grpc::new(channel),
                    metadata: tonic::metadata::MetadataMap::from_headers(headers),
                }
            }
        })
    }

    /// Sends one `ExportTraceServiceRequest`, already encoded.
    async fn export(&mut self, request: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Http { http, url, headers } => {
                let resp = http
                    .post(url.as_str())
                    .headers(headers.clone())
                    .body(request)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("the receiver answered {s}")),
                }
            }
            Client::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|e| e.to_string())?;
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                let path = http::uri::PathAndQuery::from_static(EXPORT);
                grpc.unary(req, path, Encoded)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A gRPC codec for a message already encoded: its bytes go out as they are, and the
/// answer (an `ExportTraceServiceResponse`) is read and dropped.
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
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
    let n = batch.iter().map(|t| 1 + t.spans.len() as u64).sum::<u64>();
    let request = otlp::request(batch, &settings.service_name);
    batch.clear();
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
