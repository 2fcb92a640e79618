//! The `tracing` section (OpenTelemetry traces) and the `history` section (the traffic
//! history), as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Unknown;

/// Distributed tracing: W3C trace context on every request, spans exported over OTLP.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Tracing {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Share of traces recorded from their start, 0 to 1 (default 1). A trusted caller's
    /// sampled flag is followed instead.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Requests answered with a 5xx (or never answered) are exported whatever the ratio
    /// said (default true).
    #[serde(default)]
    pub sample_errors: Option<bool>,
    /// Requests slower than this are exported whatever the ratio said (default: none).
    #[serde(default)]
    pub sample_slower_than: Option<String>,
    /// `service.name` of the spans (default `ferrogate`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Where spans go.
    pub otlp: Otlp,
    /// Finished requests waiting for export; past it, spans are dropped and counted
    /// (default 4096).
    #[serde(default)]
    pub queue_size: Option<usize>,
    /// Requests per export call (default 512).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is exported (default 1s).
    #[serde(default)]
    pub export_interval: Option<String>,
}

/// `tracing.otlp`: the OTLP receiver (a collector, Jaeger, Tempo...).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Otlp {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `http://HOST:PORT` (4318 for `http`, 4317 for `grpc`); with `http`, a URL without a
    /// path gets `/v1/traces`.
    pub endpoint: String,
    /// `http` (HTTP/protobuf, default) or `grpc`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Fields sent with every export (an API key of a hosted backend).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// One export call waits at most this long (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The traffic history: per-10-second and per-minute points kept in the data directory and
/// read through the admin listener's `/stats`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct History {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// How long 10-second points are kept (default 24h).
    #[serde(default)]
    pub keep_10s: Option<String>,
    /// How long 1-minute points are kept (default 30d).
    #[serde(default)]
    pub keep_1m: Option<String>,
    /// Names kept per dimension (route, target, consumer, client) in each point; the rest
    /// are summed as `other` (default 100).
    #[serde(default)]
    pub max_names: Option<usize>,
}
