//! The configuration file as written: serde types that mirror the YAML, nothing more.
//!
//! Unknown keys are errors: a typo in a gateway config is a security bug. They are collected
//! (not rejected by serde at the first one) so that `check` lists every one of them. Values
//! stay close to their text here; `validate.rs` parses them and reports every problem with
//! its key path.

use std::collections::BTreeMap;

use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
pub struct Listener {
    #[serde(flatten)]
    pub unknown: Unknown,
    #[serde(default)]
    pub name: Option<String>,
    pub address: String,
    #[serde(default)]
    pub h2c: Option<bool>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: Option<Limits>,
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
    /// `http1` (default) or `h2c`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub keepalive: Option<Keepalive>,
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
    pub websocket: Option<bool>,
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
