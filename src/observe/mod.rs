//! Observability: Prometheus metrics, the JSON access log, distributed tracing and the
//! traffic history.

pub mod access_log;
pub mod history;
pub mod metrics;
pub mod trace;
