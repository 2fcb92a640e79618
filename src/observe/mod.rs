//! Observability: Prometheus metrics, the JSON access log, distributed tracing and the
//! traffic history, and alerting on it.

pub mod access_log;
pub mod alerts;
pub mod history;
pub mod metrics;
pub mod trace;
