//! Metrics of the span exporter (`tracing`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Spans exported, failed and dropped; shared by every tracer the gateway builds.
#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    /// `ferrogate_trace_spans_exported_total`: spans the receiver accepted.
    pub exported: Counter,
    /// `ferrogate_trace_spans_failed_total`: spans of exports that failed or timed out.
    pub failed: Counter,
    /// `ferrogate_trace_requests_dropped_total`: request records dropped because the export
    /// queue was full.
    pub dropped: Counter,
}

impl TraceMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_trace_spans_exported",
            "Spans accepted by the OTLP receiver",
            self.exported.clone(),
        );
        registry.register(
            "ferrogate_trace_spans_failed",
            "Spans lost to failed or timed-out exports",
            self.failed.clone(),
        );
        registry.register(
            "ferrogate_trace_requests_dropped",
            "Traced requests dropped because the export queue was full",
            self.dropped.clone(),
        );
    }
}
