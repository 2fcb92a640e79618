//! The configuration file as written: serde types that mirror the YAML, nothing more.
//!
//! Unknown keys are errors: a typo in a gateway config is a security bug. They are collected
//! (not rejected by serde at the first one) so that `check` lists every one of them. Values
//! stay close to their text here; `validate.rs` parses them and reports every problem with
//! its key path.

use std::collections::BTreeMap;

use serde::Deserialize;

mod access;
mod cache;
mod keys;
pub use access::*;
pub use cache::*;
pub use keys::{suggestion, Keys};

/// Keys the file has but the gateway does not know; `validate.rs` reports each one.
pub type Unknown = BTreeMap<String, serde::de::IgnoredAny>;

#[derive(Debug, Default, Deserialize)]
pub struct File {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub shutdown_drain: Option<String>,
    #[serde(default)]
    pub redis: Option<Redis>,
    #[serde(default)]
    pub rate_limiting: Option<RateLimiting>,
    #[serde(default)]
    pub consumers: BTreeMap<String, Consumer>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub cache: Option<Cache>,
}

/// The Redis deployment shared by cluster-wide features: exactly one of `url`, `sentinel`
/// and `cluster`.
#[derive(Debug, Deserialize)]
pub struct Redis {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sentinel: Option<Sentinel>,
    #[serde(default)]
    pub cluster: Vec<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Sentinel {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub master: String,
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct RateLimiting {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub max_keys: Option<usize>,
    #[serde(default)]
    pub consumer_header: Option<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, RatePolicy>,
}

#[derive(Debug, Deserialize)]
pub struct RatePolicy {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub algorithm: String,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub rate: Option<u64>,
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub key: Vec<String>,
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub redis_mode: Option<String>,
    #[serde(default)]
    pub batch_interval: Option<String>,
    #[serde(default)]
    pub batch_max_pending: Option<u64>,
    #[serde(default)]
    pub on_redis_error: Option<String>,
    #[serde(default)]
    pub x_ratelimit_headers: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Listener {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub name: Option<String>,
    pub address: String,
    #[serde(default)]
    pub h2c: Option<H2c>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// `h2c`: `true`, `false`, or `only`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum H2c {
    Flag(bool),
    Mode(String),
}

#[derive(Debug, Deserialize)]
pub struct Tls {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub h2: Option<bool>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// `tls.client_auth`: verify client certificates against a CA bundle.
#[derive(Debug, Default, Deserialize)]
pub struct ClientAuth {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `required` (default) or `optional`.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Certificate {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Limits {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub max_request_line: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_chunk_extension: Option<usize>,
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_initial_stream_window: Option<u32>,
    pub h2_initial_connection_window: Option<u32>,
    pub h2_idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Admin {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub address: String,
}

#[derive(Debug, Deserialize)]
pub struct AccessLog {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `stdout`, `stderr` or a file path.
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Upstream {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub balancer: Option<String>,
    /// For `consistent_hash`: `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// `http1` (default), `h2c`, or `h2` (with `tls`).
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub keepalive: Option<Keepalive>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
    #[serde(default)]
    pub queue: Option<Queue>,
    #[serde(default)]
    pub sticky: Option<Sticky>,
}

/// `upstreams.NAME.tls`: TLS to the group's targets.
#[derive(Debug, Default, Deserialize)]
pub struct UpstreamTls {
    #[serde(flatten)]
    pub unknown: Unknown,
    /// SNI and the name the certificate must be valid for.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM bundle of trusted CAs; the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The certificate the gateway presents to targets that ask for one.
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
    #[serde(default)]
    pub verify: Option<bool>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Default, Deserialize)]
pub struct ClientCertificate {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HealthCheck {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Deserialize)]
pub struct ActiveCheck {
    #[serde(flatten)]
    pub unknown: Unknown,
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Statuses or ranges: `200`, `"200-399"`.
    #[serde(default)]
    pub expected_statuses: Vec<StatusSpec>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
}

/// A status code or a `"low-high"` range.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Text(String),
}

#[derive(Debug, Deserialize)]
pub struct PassiveCheck {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    pub base_ejection: Option<String>,
    #[serde(default)]
    pub max_ejection: Option<String>,
    #[serde(default)]
    pub max_ejected_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
pub struct CircuitBreaker {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    pub error_ratio: Option<f64>,
    #[serde(default)]
    pub min_requests: Option<u32>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub open_for: Option<String>,
    #[serde(default)]
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Queue {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub size: Option<usize>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Sticky {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub ttl: Option<String>,
    /// Key for the cookie value's keyed hash; random per process when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// `Secure` always (`true`) or never (`false`); by default on TLS connections.
    #[serde(default)]
    pub secure: Option<bool>,
    /// `strict`, `lax` (default) or `none`.
    #[serde(default)]
    pub same_site: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Keepalive {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub idle_timeout: Option<String>,
    pub max_idle: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct Target {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub address: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Route {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: Option<Match>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub respond: Option<Respond>,
    #[serde(default)]
    pub websocket: Option<bool>,
    #[serde(default)]
    pub split: Vec<SplitEntry>,
    #[serde(default)]
    pub split_header: Option<String>,
    #[serde(default)]
    pub mirror: Option<Mirror>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub rate_limits: Vec<String>,
    #[serde(default)]
    pub auth: Option<RouteAuth>,
    #[serde(default)]
    pub ip_rules: Option<IpRules>,
    #[serde(default)]
    pub cors: Option<Cors>,
    #[serde(default)]
    pub validate: Option<Validate>,
    #[serde(default, deserialize_with = "cache::present")]
    pub cache: Option<RouteCache>,
    #[serde(default)]
    pub request_headers: Option<HeaderEdits>,
    #[serde(default)]
    pub response_headers: Option<HeaderEdits>,
}

/// `respond`: the gateway answers the route's requests itself.
#[derive(Debug, Default, Deserialize)]
pub struct Respond {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `request_headers` / `response_headers`: fields set, added and removed on a route.
#[derive(Debug, Default, Deserialize)]
pub struct HeaderEdits {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct SplitEntry {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub upstream: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Mirror {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub upstream: String,
    #[serde(default)]
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeouts {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub connect: Option<String>,
    #[serde(default)]
    pub response_header: Option<String>,
    #[serde(default)]
    pub idle: Option<String>,
    #[serde(default)]
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Retry {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub attempts: Option<u32>,
    /// `connect_failure`, `reset`, `timeout` and status codes.
    #[serde(default)]
    pub on: Vec<StatusSpec>,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    #[serde(default)]
    pub non_idempotent: Option<bool>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Debug, Deserialize)]
pub struct Backoff {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Budget {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub ratio: Option<f64>,
    #[serde(default)]
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Match {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<Predicate>,
    #[serde(default)]
    pub query: Vec<Predicate>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PathMatch {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub template: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Predicate {
    #[serde(flatten)]
    pub unknown: Unknown,
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Rewrite {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Redirect {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub strip_query: Option<bool>,
}
