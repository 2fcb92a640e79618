//! The configuration file as written: serde types that mirror the YAML, nothing more.
//!
//! Unknown keys are errors: a typo in a gateway config is a security bug. They are collected
//! (not rejected by serde at the first one) so that `check` lists every one of them. Values
//! stay close to their text here; `validate.rs` parses them and reports every problem with
//! its key path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

mod access;
mod ai;
mod alerts;
mod cache;
mod geo;
mod keys;
mod queue;
mod tracing;
pub use access::*;
pub use ai::*;
pub use alerts::*;
pub use cache::*;
pub use geo::*;
pub use keys::{suggestion, Keys};
pub use queue::*;
pub use tracing::*;

/// Keys the file has but the gateway does not know; `validate.rs` reports each one.
pub type Unknown = BTreeMap<String, serde::de::IgnoredAny>;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct File {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Worker threads, each with its own runtime and sockets; 0 (default) = one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Where clients connect (at least one).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin listener: metrics, health, reload.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// The JSON access log (off when absent).
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// Prometheus metrics (on by default).
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Named groups of backend targets.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Ordered routes: the most specific match wins (docs/config.md, Routes).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// On SIGTERM or SIGINT, how long open requests may take before the gateway exits (default
    /// 30s).
    #[serde(default)]
    pub shutdown_drain: Option<String>,
    /// The Redis deployment for cluster-wide rate limits and the shared cache tier.
    #[serde(default)]
    pub redis: Option<Redis>,
    /// Named rate-limit policies that routes apply.
    #[serde(default)]
    pub rate_limiting: Option<RateLimiting>,
    /// Named identities that authentication methods recognise.
    #[serde(default)]
    pub consumers: BTreeMap<String, Consumer>,
    /// Authentication methods that routes refer to by name.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The HTTP cache that routes with a `cache` block share.
    #[serde(default)]
    pub cache: Option<Cache>,
    /// Named durable job queues that routes with a `queue` block store requests in.
    #[serde(default)]
    pub queues: BTreeMap<String, JobQueue>,
    /// The RabbitMQ broker of `rabbitmq` queues and of publish routes to an exchange.
    #[serde(default)]
    pub rabbitmq: Option<RabbitMq>,
    /// Client locations: geo databases and a CIDR table, for routing, keys and headers.
    #[serde(default)]
    pub geo: Option<Geo>,
    /// How targets given by name are resolved.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Where this instance runs, for upstream groups with `locality`.
    #[serde(default)]
    pub locality: Option<Locality>,
    /// Distributed tracing: trace context on every request, spans exported over OTLP.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// The traffic history kept in the data directory, read through `/stats`.
    #[serde(default)]
    pub history: Option<History>,
    /// Alert rules over the history and the notifiers they tell.
    #[serde(default)]
    pub alerts: Option<Alerts>,
    /// Directory of the state the gateway keeps on disk: configuration versions written
    /// through the admin API and their audit log (off when absent: kept in memory only).
    #[serde(default)]
    pub data_dir: Option<String>,
}

/// `dns`: the resolver of targets given by name.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Dns {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Name servers as `IP:PORT` (default: those of /etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<String>,
    /// A record set is resolved again after its TTL, but not sooner than this (default 1s).
    #[serde(default)]
    pub min_ttl: Option<String>,
    /// Nor later than this (default 5m).
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// One resolution waits at most this long (default 2s); a failure keeps the last good
    /// set.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The Redis deployment shared by cluster-wide features: exactly one of `url`, `sentinel`
/// and `cluster`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Redis {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Standalone Redis: `redis://HOST:PORT`.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Sentinel: the master name and the sentinels.
    #[serde(default)]
    pub sentinel: Option<Sentinel>,
    /// Redis Cluster: seed node URLs.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// No Redis call waits longer (default 100ms).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Sentinel {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The monitored master's name.
    pub master: String,
    /// Sentinel URLs.
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimiting {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Most keys the in-process store holds over all policies (default 1000000).
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Header naming the consumer on requests no `auth` method authenticated.
    #[serde(default)]
    pub consumer_header: Option<String>,
    /// Named policies that routes apply with `rate_limits`.
    #[serde(default)]
    pub policies: BTreeMap<String, RatePolicy>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RatePolicy {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `fixed_window`, `sliding_window`, `token_bucket`, `quota` or `concurrency`.
    pub algorithm: String,
    /// Requests per `window` (fixed, sliding), per `period` (quota), or in flight
    /// (concurrency).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Window of `fixed_window` and `sliding_window`.
    #[serde(default)]
    pub window: Option<String>,
    /// `token_bucket`: tokens per `period`.
    #[serde(default)]
    pub rate: Option<u64>,
    /// `token_bucket`: the duration `rate` is per (default 1s); `quota`: `hour`, `day` or
    /// `month`.
    #[serde(default)]
    pub period: Option<String>,
    /// `token_bucket`: tokens at most at once (default `rate`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// Parts of the counting key: `client_ip`, `consumer`, `route`, `path`, `header:NAME`
    /// (default: one counter).
    #[serde(default)]
    pub key: Vec<String>,
    /// IPv6 clients are counted per prefix of this length (default 64).
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    /// `local` (default, in process) or `redis` (cluster-wide).
    #[serde(default)]
    pub store: Option<String>,
    /// `strict` (default: one Redis round trip per decision) or `batched`.
    #[serde(default)]
    pub redis_mode: Option<String>,
    /// `batched`: how often counts are pushed to Redis (default 5ms).
    #[serde(default)]
    pub batch_interval: Option<String>,
    /// `batched`: admissions per key before Redis confirms them (default 10).
    #[serde(default)]
    pub batch_max_pending: Option<u64>,
    /// `local` (default: fall back to this instance's count) or `reject` (503).
    #[serde(default)]
    pub on_redis_error: Option<String>,
    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    #[serde(default)]
    pub x_ratelimit_headers: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Listener {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Label in metrics (default `listener-N`).
    #[serde(default)]
    pub name: Option<String>,
    /// `IP:PORT` to bind (`[::]:443` for IPv6).
    pub address: String,
    /// Plain-text listeners: `true` (default) also accepts prior-knowledge HTTP/2, `false`
    /// HTTP/1.1 only, `only` HTTP/2 only.
    #[serde(default)]
    pub h2c: Option<H2c>,
    /// Which server speaks HTTP/2 to clients: `hyper` (default) or `native`, the
    /// gateway's own (no WebSocket over HTTP/2 yet; docs/operations.md).
    #[serde(default)]
    pub h2_server: Option<String>,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Addresses or CIDRs whose X-Forwarded-For, -Proto and -Host are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Size, time and connection limits of this listener.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// With `tracing`: continue the trace a client's `traceparent` names (and pass its
    /// `tracestate` on) rather than start a new one (default false).
    #[serde(default)]
    pub trust_trace_context: bool,
}

/// `h2c`: `true`, `false`, or `only`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum H2c {
    Flag(bool),
    Mode(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Tls {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Certificate chains and keys, chosen by SNI.
    pub certificates: Vec<Certificate>,
    /// `"1.2"` (default: TLS 1.2 and 1.3) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Offer `h2` by ALPN (default `true`).
    #[serde(default)]
    pub h2: Option<bool>,
    /// Verify client certificates (mutual TLS).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// `tls.client_auth`: verify client certificates against a CA bundle.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientAuth {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// PEM bundle of the CAs client certificates must chain to.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `required` (default) or `optional`.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Certificate {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// PEM certificate chain file (relative to the config file).
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// SNI names this certificate answers (default: the names in the certificate).
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Limits {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Longer request lines get 414 (default 8192).
    pub max_request_line: Option<usize>,
    /// Larger header sections get 431 (default 32768).
    pub max_header_bytes: Option<usize>,
    /// More header fields get 431 (default 100).
    pub max_headers: Option<usize>,
    /// Longer chunk extensions get 400 (default 256).
    pub max_chunk_extension: Option<usize>,
    /// From the first byte of a request head to its end (default 10s); then 408.
    pub header_timeout: Option<String>,
    /// An idle HTTP/1.1 connection closes after this (default 75s).
    pub keepalive_timeout: Option<String>,
    /// Longest wait for the next piece of a request body (default 60s); then 408.
    pub body_timeout: Option<String>,
    /// Larger request bodies get 413 (default: no limit); routes may override.
    pub max_body_bytes: Option<u64>,
    /// Open connections on this listener; more wait in the kernel backlog.
    pub max_connections: Option<usize>,
    /// Open connections per client address; more are closed at once.
    pub max_connections_per_ip: Option<usize>,
    /// HTTP/2 streams per connection (default 128).
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 initial stream window in bytes (default 1048576).
    pub h2_initial_stream_window: Option<u32>,
    /// HTTP/2 initial connection window in bytes (default 1048576).
    pub h2_initial_connection_window: Option<u32>,
    /// An HTTP/2 connection without an open stream closes after this (default:
    /// `keepalive_timeout`).
    pub h2_idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Admin {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `IP:PORT` of the admin listener; keep it private.
    pub address: String,
    /// Bearer tokens of the admin listener, each with a role; none: no authentication
    /// (keep the listener on loopback then).
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// Applied configuration versions kept for `GET /config/versions` and rollback
    /// (default 50).
    #[serde(default)]
    pub versions_kept: Option<usize>,
    /// TLS on the admin listener, with `client_auth` for mutual TLS (certificates read
    /// again on reload; turning TLS on or off needs a restart).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Keep the configuration in etcd, shared by every instance pointed at the same key
    /// (this file's other keys then seed it once, when the key is absent).
    #[serde(default)]
    pub etcd: Option<Etcd>,
}

/// `admin.etcd`: the etcd cluster that holds the configuration of several instances.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Etcd {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Client URLs of the etcd members (`http://10.0.0.7:2379`), tried in turn.
    pub endpoints: Vec<String>,
    /// Prefix of the gateway's keys; the configuration is the key `PREFIX` + `config`
    /// (default `/ferrogate/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Time limit of one etcd request (default `2s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `admin.tokens[]`: one bearer token of the admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AdminToken {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Who the token is: written to the audit log of configuration changes.
    pub name: String,
    /// `viewer` (reads), `operator` (also purge, drain, reload) or `admin` (also
    /// configuration changes).
    pub role: String,
    /// Lower-case hex SHA-256 digest of the token (one of `sha256` and `token_env`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Environment variable holding the token itself, read when the configuration loads.
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AccessLog {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Write one JSON line per request (default `true` when the section exists).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `stdout`, `stderr` or a file path.
    #[serde(default)]
    pub target: Option<String>,
    /// At high rates, write only a share of the lines of successful requests.
    #[serde(default)]
    pub sample_success: Option<SampleSuccess>,
}

/// `access_log.sample_success`: past `above_per_second` lines in a second, only `ratio` of
/// the lines of requests answered under 400 are written (errors always are).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SampleSuccess {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Lines a second written in full before sampling starts (default 1000).
    #[serde(default)]
    pub above_per_second: Option<u64>,
    /// Share of successful requests' lines written past it, 0 to 1.
    pub ratio: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Metrics {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `false` stops recording (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Upstream {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The group's backends.
    pub targets: Vec<Target>,
    /// `round_robin` (default), `least_connections`, `random`, `peak_ewma` or
    /// `consistent_hash`.
    #[serde(default)]
    pub balancer: Option<String>,
    /// For `consistent_hash`: `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// `http1` (default), `h2c`, or `h2` (with `tls`).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Speak TLS to the targets.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// TCP connect (and TLS handshake) to a target (default 5s).
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// From sending the request to receiving the response head (default 60s); then 504.
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// Idle pooled connections to the targets.
    #[serde(default)]
    pub keepalive: Option<Keepalive>,
    /// Active probes and passive ejection.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Per-target circuit breaker (off when absent).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Requests in flight to the group across all workers; more wait in `queue`.
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
    /// Requests waiting for `max_concurrent_requests`.
    #[serde(default)]
    pub queue: Option<Queue>,
    /// Cookie-based session persistence.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// Prefer targets in this instance's zone, then region (needs the top-level `locality`).
    #[serde(default, deserialize_with = "cache::present")]
    pub locality: Option<GroupLocality>,
    /// Send the group a token the gateway obtains with the OAuth 2.0 client credentials
    /// grant, as `Authorization: Bearer` (docs/oidc.md).
    #[serde(default)]
    pub client_credentials: Option<ClientCredentials>,
}

/// `upstreams.NAME.tls`: TLS to the group's targets.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(flatten)]
    #[schemars(skip)]
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
    /// `false` skips certificate verification (testing only; default `true`).
    #[serde(default)]
    pub verify: Option<bool>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientCertificate {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// PEM certificate chain file.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key file.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Active probes of every target.
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    /// Ejection of targets that fail real requests.
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActiveCheck {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Probe path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Probe method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// Host of the probe (default: the target address).
    #[serde(default)]
    pub host: Option<String>,
    /// Statuses or ranges: `200`, `"200-399"`.
    #[serde(default)]
    pub expected_statuses: Vec<StatusSpec>,
    /// Time between probes (default 5s).
    #[serde(default)]
    pub interval: Option<String>,
    /// Probe time limit (default 1s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Successes in a row that make a target healthy (default 2).
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that make a target unhealthy (default 3).
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
}

/// A status code or a `"low-high"` range.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Text(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PassiveCheck {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// 5xx responses in a row that eject a target (default 5).
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    /// Connect errors, resets and timeouts in a row that eject a target (default 5).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// First ejection time, doubled for each earlier ejection (default 30s).
    #[serde(default)]
    pub base_ejection: Option<String>,
    /// Longest ejection (default 300s).
    #[serde(default)]
    pub max_ejection: Option<String>,
    /// Never eject more of the group at once (default 50).
    #[serde(default)]
    pub max_ejected_percent: Option<u8>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Failures in a row that open the circuit (default 5).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Share of failed requests over `window` that opens the circuit (off by default).
    #[serde(default)]
    pub error_ratio: Option<f64>,
    /// Requests seen in `window` before `error_ratio` applies (default 20).
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// Window of `error_ratio` (default 10s).
    #[serde(default)]
    pub window: Option<String>,
    /// How long the circuit stays open (default 10s).
    #[serde(default)]
    pub open_for: Option<String>,
    /// Trial requests admitted after `open_for` (default 1).
    #[serde(default)]
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Queue {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Waiting requests at most (default `max_concurrent_requests`); beyond it, 503.
    #[serde(default)]
    pub size: Option<usize>,
    /// How long a request may wait (default 1s); then 503.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Sticky {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Cookie name (default `fg_sticky`).
    #[serde(default)]
    pub cookie: Option<String>,
    /// Cookie lifetime (default: a session cookie).
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

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Keepalive {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Idle pooled connections close after this (default 4s); keep it below the targets' own
    /// keep-alive timeout.
    pub idle_timeout: Option<String>,
    /// Idle connections kept per target and worker (default 256).
    pub max_idle: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Target {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `IP:PORT` of the backend, or `NAME:PORT`: every address of the name's A/AAAA records,
    /// resolved again when their TTL ends (see `dns`).
    pub address: String,
    /// 1 to 10000 (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// `true`: `address` is an SRV name (`_http._tcp.api.internal`) whose records give the
    /// targets, their ports and weights.
    #[serde(default)]
    pub srv: Option<bool>,
    /// The region the target runs in, for groups with `locality`.
    #[serde(default)]
    pub region: Option<String>,
    /// The zone the target runs in, for groups with `locality`.
    #[serde(default)]
    pub zone: Option<String>,
}

/// `locality` of this instance: where it runs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Locality {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// This instance's region (`eu-west`).
    #[serde(default)]
    pub region: Option<String>,
    /// This instance's zone (`eu-west-1a`).
    #[serde(default)]
    pub zone: Option<String>,
}

/// `upstreams.NAME.locality`: prefer targets in this instance's zone, then its region, then
/// any, spilling over when the nearer ones are unavailable or full.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GroupLocality {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// A zone or region keeps the traffic while at least this percentage of its targets is
    /// available (default 50).
    #[serde(default)]
    pub min_available_percent: Option<u8>,
    /// A target with this many requests in flight counts as full (default: no limit).
    #[serde(default)]
    pub max_in_flight: Option<u64>,
    /// Prefer the client's zone and region rather than this instance's: which location
    /// field (`label`, `country`, `continent`, `subdivision`, `asn`) names each.
    #[serde(default)]
    pub client: Option<ClientPlace>,
}

/// `upstreams.NAME.locality.client`: the client's zone and region, each read from a field
/// of its location (`geo`). A field the location lacks falls back to this instance's place.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientPlace {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The location field that names the client's zone (for example `label`).
    #[serde(default)]
    pub zone: Option<String>,
    /// The location field that names the client's region (for example `continent`).
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Route {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Label in metrics and the access log.
    #[serde(default)]
    pub name: Option<String>,
    /// What requests the route takes (default: every request).
    #[serde(default, rename = "match")]
    pub matcher: Option<Match>,
    /// The upstream group that serves the route.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Remove this leading path prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Rewrite the path or the Host sent upstream.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Answer directly, without an upstream (deny, maintenance and health routes).
    #[serde(default)]
    pub respond: Option<Respond>,
    /// `true` forwards WebSocket upgrades (default: Upgrade is stripped).
    #[serde(default)]
    pub websocket: Option<bool>,
    /// Limits of the WebSocket tunnels of this route (needs `websocket: true`).
    #[serde(default)]
    pub tunnel: Option<Tunnel>,
    /// Instead of `upstream`: a weighted split between groups (canary).
    #[serde(default)]
    pub split: Vec<SplitEntry>,
    /// A request header whose value names one of the split's groups forces that group.
    #[serde(default)]
    pub split_header: Option<String>,
    /// Groups for clients of given locations, the first that applies winning over
    /// `upstream` and `split` (needs `geo`).
    #[serde(default)]
    pub geo_upstreams: Vec<GeoUpstream>,
    /// Copy requests to a shadow group; its responses are discarded.
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// Upstream time limits of this route.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Retries on other targets.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Request body limit of this route (overrides the listener's); larger bodies get 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Names of `rate_limiting.policies` applied to this route, in order.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Authentication and authorisation.
    #[serde(default)]
    pub auth: Option<RouteAuth>,
    /// Log browser users in with an OpenID Connect provider (docs/oidc.md).
    #[serde(default)]
    pub oidc: Option<Oidc>,
    /// Client addresses allowed or denied.
    #[serde(default)]
    pub ip_rules: Option<IpRules>,
    /// CORS: preflight answers and response fields.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Parameter rules and JSON Schemas for request bodies.
    #[serde(default)]
    pub validate: Option<Validate>,
    /// Cache this route's responses (`cache: {}` for the defaults).
    #[serde(default, deserialize_with = "cache::present")]
    pub cache: Option<RouteCache>,
    /// Fields removed, set and added on the request to the upstream.
    #[serde(default)]
    pub request_headers: Option<HeaderEdits>,
    /// Fields removed, set and added on the response to the client.
    #[serde(default)]
    pub response_headers: Option<HeaderEdits>,
    /// Store accepted requests in a queue and answer `202 Accepted`; the upstream gets
    /// them later (docs/async.md).
    #[serde(default)]
    pub queue: Option<RouteQueue>,
    /// Write the request to a Redis stream, a NATS subject or a RabbitMQ exchange and answer
    /// `202 Accepted`, instead of forwarding it (docs/async.md).
    #[serde(default)]
    pub publish: Option<Publish>,
    /// Answer the OpenAI-compatible API (or a prompt endpoint) from model providers,
    /// instead of forwarding (docs/ai-gateway.md).
    #[serde(default)]
    pub ai: Option<RouteAi>,
}

/// `respond`: the gateway answers the route's requests itself.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Respond {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Status code of the answer (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// Body of the answer (default empty).
    #[serde(default)]
    pub body: Option<String>,
    /// `Content-Type` of the body (default `text/plain; charset=utf-8` when there is one).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Further response fields, name to value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `request_headers` / `response_headers`: fields set, added and removed on a route.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Fields set (replacing any value), name to value; values may use `{client_ip}`,
    /// `{request_id}`, `{consumer}`, `{route}`, `{param.NAME}` and `{geo.FIELD}`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Fields added beside any existing value, name to value (placeholders as in `set`).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Field names removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SplitEntry {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// An upstream group.
    pub upstream: String,
    /// Relative share (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Mirror {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The shadow group.
    pub upstream: String,
    /// Share of requests copied (default 100).
    #[serde(default)]
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// TCP connect to a target (default: the upstream's `connect_timeout`).
    #[serde(default)]
    pub connect: Option<String>,
    /// Until the response head arrives, per attempt (default: the upstream's
    /// `request_timeout`); then 504.
    #[serde(default)]
    pub response_header: Option<String>,
    /// Longest pause inside the upstream response body; then the response is cut.
    #[serde(default)]
    pub idle: Option<String>,
    /// The whole exchange, retries and body included.
    #[serde(default)]
    pub total: Option<String>,
}

/// `tunnel`: the life of a route's WebSocket tunnels.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Tunnel {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// A tunnel with no byte relayed either way for this long is closed (default 1h).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// A tunnel open this long is closed, busy or not (default: no limit).
    #[serde(default)]
    pub max_lifetime: Option<String>,
    /// The gateway pings a side silent for this long, and closes the tunnel when it stays
    /// silent as long again (default: no pings).
    #[serde(default)]
    pub ping_interval: Option<String>,
    /// Largest WebSocket message (or frame), e.g. `1MiB`; a larger one closes the tunnel
    /// with 1009 (default: no limit).
    #[serde(default)]
    pub max_message_bytes: Option<ByteSize>,
    /// Tunnels open at once on this route; more are refused with 503 (default: no limit).
    #[serde(default)]
    pub max_open: Option<usize>,
    /// Tunnels open at once per client address on this route; more are refused with 429
    /// (default: no limit).
    #[serde(default)]
    pub max_open_per_ip: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Retry {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Tries in all (default 2, at most 10), each on another target when there is one.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// `connect_failure`, `reset`, `timeout` and status codes.
    #[serde(default)]
    pub on: Vec<StatusSpec>,
    /// Response-head timeout of one attempt.
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// `true` also retries POST and PATCH after they were sent.
    #[serde(default)]
    pub non_idempotent: Option<bool>,
    /// Full-jitter exponential backoff between attempts.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Retries at most this share of requests, over 10 s.
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Backoff {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// First backoff (default 25ms).
    #[serde(default)]
    pub base: Option<String>,
    /// Longest backoff (default 250ms).
    #[serde(default)]
    pub max: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Budget {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Share of requests that may be retries (default 0.2).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Retries allowed per second beyond `ratio` (default 10).
    #[serde(default)]
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Match {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Exact names or wildcards (`*.example.com`); empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// One of `exact`, `prefix`, `template` or `regex` (default: prefix `/`).
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Methods such as `[GET, HEAD]`; empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<Predicate>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default)]
    pub query: Vec<Predicate>,
    /// Conditions on the client's location (needs `geo`).
    #[serde(default)]
    pub geo: Option<GeoMatch>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The whole path.
    pub exact: Option<String>,
    /// A leading path, segment-aware: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub prefix: Option<String>,
    /// A template such as `/users/{id}` (`{*rest}` for a tail).
    pub template: Option<String>,
    /// A regular expression matched against the whole path.
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Predicate {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Header or query parameter name.
    pub name: String,
    /// The value must equal this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value must match this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: must be present; `false`: must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rewrite {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Replace the path; `{name}` inserts a template parameter.
    #[serde(default)]
    pub path: Option<String>,
    /// Regular expression substituted in the path (with `replacement`).
    #[serde(default)]
    pub regex: Option<String>,
    /// Replacement for `regex` (`$1`, `${name}`).
    #[serde(default)]
    pub replacement: Option<String>,
    /// Host sent upstream instead of the client's.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Redirect {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default)]
    pub status: Option<u16>,
    /// Scheme of the Location (default: the request's).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Host of the Location (default: the request's).
    #[serde(default)]
    pub host: Option<String>,
    /// Port of the Location (default: the request's).
    #[serde(default)]
    pub port: Option<u16>,
    /// Path of the Location (default: the request's).
    #[serde(default)]
    pub path: Option<String>,
    /// Drop the query string from the Location.
    #[serde(default)]
    pub strip_query: Option<bool>,
}
