//! Observability: Prometheus metrics, the JSON access log, and distributed tracing.

pub mod access_log;
pub mod metrics;
pub mod trace;
