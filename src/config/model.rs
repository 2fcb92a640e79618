//! Validated configuration: every value parsed into the type the gateway uses.
//!
//! Built by `validate.rs` from the file types; compiled into the runtime snapshot by
//! `snapshot.rs`. Nothing here is read on the request path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::ai::{
    AiAlias, AiBudget, AiCacheSettings, AiCounts, AiPrice, AiPrompt, AiProvider, AiProviderKind,
    AiRoute, AiTarget, AiTokenizer,
};

use http::{HeaderName, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use regex::Regex;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker runtimes; 0 means one per core.
    pub workers: usize,
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub access_log: AccessLog,
    pub metrics_enabled: bool,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub shutdown_drain: Duration,
    pub redis: Option<Redis>,
    pub rate_limiting: RateLimiting,
    pub access: AccessControl,
    pub cache: CacheSettings,
    /// Durable job queues of queued routes (`queues`), by name.
    pub queues: Vec<QueueSettings>,
    /// Client locations (`geo`), when configured.
    pub geo: Option<GeoSettings>,
    /// The resolver of targets given by name.
    pub dns: DnsSettings,
    /// Where this instance runs (`locality`), for locality-aware groups.
    pub locality: Place,
    /// Distributed tracing (`tracing`), when configured.
    pub tracing: Option<TracingSettings>,
    /// The traffic history (`history`), when configured.
    pub history: Option<HistorySettings>,
    /// Alerting (`alerts`), when configured.
    pub alerts: Option<AlertSettings>,
    /// Directory of the config file, against which relative paths are resolved.
    pub base_dir: PathBuf,
    /// Where the gateway keeps its state on disk (`data_dir`).
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// Prior-knowledge HTTP/2 on a plain-text listener.
    pub h2c: H2cMode,
    /// Which server speaks HTTP/2 to clients.
    pub h2_server: H2Server,
    pub tls: Option<Tls>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    /// A client's `traceparent` is continued rather than replaced (`trust_trace_context`).
    pub trust_trace_context: bool,
}

/// The server of a listener's HTTP/2 connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum H2Server {
    /// hyper's HTTP/2 server behind the frame guard.
    #[default]
    Hyper,
    /// The gateway's own (`serve::h2`).
    Native,
}

/// Whether a plain-text listener speaks prior-knowledge HTTP/2 (h2c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2cMode {
    /// HTTP/1.1 only.
    Off,
    /// HTTP/2 when a connection starts with its preface, HTTP/1.1 otherwise.
    BesideHttp1,
    /// HTTP/2 only: anything but the preface gets GOAWAY(PROTOCOL_ERROR).
    Only,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    /// Offer h2 through ALPN.
    pub h2: bool,
    /// Client certificate verification (mutual TLS); `None` asks for no certificate.
    pub client_auth: Option<ClientAuth>,
}

/// How a listener verifies client certificates.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca_path: PathBuf,
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// The handshake fails without a valid client certificate.
    Required,
    /// A client may send none; one that is sent must verify.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SNI names this certificate answers; empty means the names in the certificate.
    pub server_names: Vec<String>,
}

/// Downstream parsing limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_chunk_extension: usize,
    /// Time from the first byte of a request head to its end (slowloris).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Largest request body; routes may set their own (413 beyond it).
    pub max_body_bytes: Option<u64>,
    /// Open connections on this listener (accepting pauses at the limit).
    pub max_connections: Option<usize>,
    /// Open connections per client address (more are closed at once).
    pub max_connections_per_ip: Option<usize>,
    pub h2_max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a client may send on a stream
    /// before the gateway has read them.
    pub h2_initial_stream_window: u32,
    /// The same for all streams of a connection together.
    pub h2_initial_connection_window: u32,
    /// How long an HTTP/2 connection may stay without an open stream; then GOAWAY.
    pub h2_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_chunk_extension: 256,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            max_body_bytes: None,
            max_connections: None,
            max_connections_per_ip: None,
            h2_max_concurrent_streams: 128,
            h2_initial_stream_window: 1024 * 1024,
            h2_initial_connection_window: 1024 * 1024,
            h2_idle_timeout: Duration::from_secs(75),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
    /// Bearer tokens; empty: the listener asks for none.
    pub tokens: Vec<AdminToken>,
    /// Applied configuration versions kept.
    pub versions_kept: usize,
    /// TLS (and client certificates, with `client_auth`) on the admin listener.
    pub tls: Option<Tls>,
    /// The etcd cluster holding the configuration, when several instances share it.
    pub etcd: Option<Etcd>,
}

/// Where the configuration of several instances lives in etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Etcd {
    /// Client URLs (`http://host:port`, no trailing `/`), tried in turn.
    pub endpoints: Vec<String>,
    /// The key holding the configuration document (`prefix` + `config`).
    pub key: String,
    /// Time limit of one request.
    pub timeout: Duration,
}

/// One admin bearer token: who it is, what it may do, and the SHA-256 of the token.
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub role: AdminRole,
    /// `None` when `token_env` named an unset variable: the token admits no one.
    pub sha256: Option<[u8; 32]>,
}

/// What an admin token may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Reads: state, metrics, the configuration (secrets as fingerprints).
    Viewer,
    /// Also purge, drain and reload.
    Operator,
    /// Also configuration changes.
    Admin,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Operator => "operator",
            AdminRole::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    pub enabled: bool,
    pub target: LogTarget,
    /// `sample_success`: lines a second written in full, and the share kept past them.
    pub sample_success: Option<(u64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub balancer: BalancerKind,
    /// Targets given by address.
    pub targets: Vec<Target>,
    /// Targets given by name, resolved while the gateway runs.
    pub dns_targets: Vec<DnsTarget>,
    /// Prefer targets in this instance's zone, then region (`locality`).
    pub locality: Option<GroupLocality>,
    pub protocol: UpstreamProtocol,
    /// TLS to the targets; plain TCP when `None`.
    pub tls: Option<UpstreamTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive_idle: Duration,
    pub keepalive_max_idle: usize,
    pub active_check: Option<ActiveCheck>,
    pub passive_check: Option<PassiveCheck>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Requests in flight to the group at once; more wait in the queue.
    pub max_concurrent_requests: Option<usize>,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    pub sticky: Option<Sticky>,
    /// The group's own token, from the client credentials grant (`client_credentials`).
    pub client_credentials: Option<crate::auth::oidc::credentials::ClientCredentialsSettings>,
}

#[derive(Debug, Clone)]
pub struct ActiveCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// What an active probe checks.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// The connect succeeds.
    Tcp,
    /// One HTTP/1.1 request answers with an expected status.
    Http {
        method: Method,
        /// Path and query, e.g. `/healthz`.
        path: String,
        /// Host header; the target address when None.
        host: Option<String>,
        /// Inclusive status ranges that count as healthy; empty means 200..=399.
        expected: Vec<(u16, u16)>,
    },
}

#[derive(Debug, Clone)]
pub struct PassiveCheck {
    /// 5xx responses in a row that eject a target; 0 turns the rule off.
    pub consecutive_5xx: u32,
    /// Connect errors, resets or timeouts in a row that eject a target; 0 turns it off.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u8,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    /// Failures (5xx included) in a row that open the circuit; 0 turns the rule off.
    pub consecutive_failures: u32,
    /// Share of failures within `window` that opens the circuit; 0 turns the rule off.
    pub error_ratio: f64,
    /// Outcomes needed within `window` before `error_ratio` applies.
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    /// Trial requests admitted at once while half-open (at least 1).
    pub half_open_probes: u32,
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie: String,
    pub ttl: Option<Duration>,
    pub secret: Option<String>,
    /// `Some(true)`: `Secure` always; `Some(false)`: never; `None`: on TLS connections.
    pub secure: Option<bool>,
    /// The `SameSite` attribute's value: `Strict`, `Lax` or `None`.
    pub same_site: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalancerKind {
    RoundRobin,
    LeastConnections,
    Random,
    PeakEwma,
    ConsistentHash(HashKey),
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 (gRPC backends): with prior knowledge on plain TCP (`h2c`), negotiated by ALPN
    /// over TLS (`h2`).
    H2,
}

/// How the gateway speaks TLS to an upstream group's targets.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Sent as SNI and matched against the certificate; `None` sends no SNI and matches the
    /// certificate against the target's IP address.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
    /// PEM bundle of trusted CAs; `None` trusts the system roots.
    pub ca_path: Option<PathBuf>,
    /// Certificate chain and key presented to targets that ask for a client certificate.
    pub client_certificate: Option<ClientCertificate>,
    /// `false` accepts any certificate (the handshake still proves the key).
    pub verify: bool,
}

#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u32,
    /// Where the target runs, for locality-aware balancing.
    pub place: Place,
}

/// A region and a zone within it (`region: eu-west`, `zone: eu-west-1a`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub region: Option<String>,
    pub zone: Option<String>,
}

/// A group's preference for nearby targets (`upstreams.NAME.locality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLocality {
    /// The client's place rather than this instance's decides the tiers, when its location
    /// has the fields.
    pub client: Option<ClientPlace>,
    /// A tier (same zone, same region) takes the traffic while at least this share of its
    /// targets is available (healthy, not draining, not full), in percent.
    pub min_available_percent: u8,
    /// A target with this many requests in flight counts as full.
    pub max_in_flight: Option<u64>,
}

/// Which location fields name a client's zone and region (`locality.client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPlace {
    pub zone: Option<GeoField>,
    pub region: Option<GeoField>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name; defaults to `route-<index>`.
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    /// Forward `Upgrade` (WebSocket) requests on this route.
    pub websocket: bool,
    /// The life of the route's WebSocket tunnels (`tunnel`).
    pub tunnel: TunnelSettings,
    pub timeouts: RouteTimeouts,
    pub retry: Option<RetryPolicy>,
    /// Overrides the listener's `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Names of the rate-limit policies applied, in order.
    pub rate_limits: Vec<String>,
    pub access: RouteAccess,
    /// HTTP caching of this route's responses (RFC 9111), when configured.
    pub cache: Option<RouteCache>,
    /// Fields set, added and removed on the upstream request (`request_headers`).
    pub request_headers: Option<HeaderEdits>,
    /// Fields set, added and removed on the response to the client (`response_headers`).
    pub response_headers: Option<HeaderEdits>,
    /// The route stores requests in a queue (`queue`), or answers for the jobs of such a
    /// route (the status route made for it at load).
    pub queue: Option<RouteQueue>,
    /// The route writes requests to a Redis stream, a NATS subject or a RabbitMQ exchange
    /// (`publish`); its action forwards nowhere.
    pub publish: Option<PublishAction>,
    /// The route answers the OpenAI-compatible API from model providers (`ai`).
    pub ai: Option<std::sync::Arc<AiRoute>>,
}

/// Where a `publish` route writes requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAction {
    pub target: PublishTarget,
    /// Request fields written with each message.
    pub headers: Vec<HeaderName>,
    /// Approximate trimming of a Redis stream.
    pub max_len: Option<u64>,
}

/// The stream, subject or exchange a `publish` route writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTarget {
    /// A stream on the top-level `redis`.
    Redis { stream: String },
    /// A subject that a JetStream stream captures, on the server at `url`.
    Nats { url: String, subject: String },
    /// An exchange and routing key on the broker at `url` (the top-level `rabbitmq`).
    RabbitMq {
        url: String,
        exchange: String,
        routing_key: String,
    },
}

impl PublishTarget {
    /// The name of what is written to, for logs and the 202's body.
    pub fn name(&self) -> &str {
        match self {
            PublishTarget::Redis { stream } => stream,
            PublishTarget::Nats { subject, .. } => subject,
            PublishTarget::RabbitMq { exchange, .. } => exchange,
        }
    }
}

/// What a route does with a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQueue {
    /// One of `Config::queues`.
    pub queue: String,
    /// Status URLs are `status_path/ID`, without a trailing slash.
    pub status_path: String,
    pub role: QueueRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// Accepted requests are stored and answered with 202.
    Accept,
    /// The route answers for the jobs of the queued route named here: status, result,
    /// events.
    Status,
}

/// A durable job queue (`queues.NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub name: String,
    pub backend: QueueBackend,
    pub concurrency: usize,
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub retry_statuses: Vec<u16>,
    pub max_depth: u64,
    pub max_bytes: u64,
    pub result_ttl: Duration,
    pub max_result_bytes: usize,
    pub idempotency_ttl: Duration,
    pub callback: Option<CallbackSettings>,
}

/// Signed POSTs of finished jobs' results (`queues.NAME.callback`).
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    pub url: Option<String>,
    /// Prefixes a client-given URL must start with.
    pub allow: Vec<String>,
    pub secret: Vec<u8>,
    pub max_attempts: u32,
    pub timeout: Duration,
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("url", &self.url)
            .field("allow", &self.allow)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a queue keeps its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    /// A file in this directory, synced before a job is acknowledged.
    Embedded { dir: PathBuf },
    /// Redis Streams on the top-level `redis`, shared by every instance.
    Redis {
        redis: Redis,
        key_prefix: String,
        /// A job taken by an instance that has not finished it after this long is taken
        /// over by another (it died).
        visibility_timeout: Duration,
    },
    /// NATS JetStream at `url`: a work-queue stream of ready jobs and key-value buckets of
    /// their state, shared by every instance.
    Nats {
        url: String,
        /// Prefix of the stream and bucket names.
        name_prefix: String,
        /// As for Redis: an unacknowledged job is delivered again after this long.
        visibility_timeout: Duration,
    },
    /// RabbitMQ at `url` (the top-level `rabbitmq`): a durable queue of ready jobs, their
    /// state in the top-level `redis`; shared by every instance.
    RabbitMq {
        url: String,
        redis: Redis,
        /// Prefix of the broker's queue names and of the Redis keys.
        key_prefix: String,
    },
}

/// Fields a route removes, sets and adds on one side of the exchange, in that order.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    pub remove: Vec<HeaderName>,
    /// Replace every field of the name with this one.
    pub set: Vec<(HeaderName, ValueTemplate)>,
    /// Append a field, keeping those already there.
    pub add: Vec<(HeaderName, ValueTemplate)>,
}

/// A field value with placeholders, split into parts at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate(pub Vec<TemplatePart>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Var(Var),
}

/// What a placeholder in a field value stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `{client_ip}`: the client address, read through trusted proxies.
    ClientIp,
    /// `{request_id}`: the request's `X-Request-Id`.
    RequestId,
    /// `{consumer}`: the authenticated consumer (or token subject).
    Consumer,
    /// `{route}`: the route's name.
    Route,
    /// `{param.NAME}`: a parameter of the route's path template.
    Param(String),
    /// `{geo.FIELD}`: a field of the client's location.
    Geo(GeoField),
}
/// Limits of a route's WebSocket tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// Closed after this long with no byte relayed either way.
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    /// A side silent this long is pinged; silent as long again, it is taken as gone.
    pub ping_interval: Option<Duration>,
    /// Largest message (sum of its frames' payloads), closed with 1009 beyond.
    pub max_message_bytes: Option<u64>,
    /// Open tunnels at once on the route (503 beyond).
    pub max_open: Option<usize>,
    /// Open tunnels at once per client address on the route (429 beyond).
    pub max_open_per_ip: Option<usize>,
}

impl TunnelSettings {
    /// `tunnel.idle_timeout` when not given.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            idle_timeout: Self::DEFAULT_IDLE,
            max_lifetime: None,
            ping_interval: None,
            max_message_bytes: None,
            max_open: None,
            max_open_per_ip: None,
        }
    }
}

/// Per-route upstream timeouts; `None` falls back to the upstream group's setting.
#[derive(Debug, Clone, Default)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub response_header: Option<Duration>,
    /// Longest pause between two pieces of the upstream response body.
    pub idle: Option<Duration>,
    /// The whole exchange, body included.
    pub total: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub statuses: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    /// Also retry methods that are not idempotent (only failures before sending are retried
    /// otherwise).
    pub non_idempotent: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_ratio: f64,
    pub budget_min_per_second: u32,
}

/// What a request must look like for a route to apply.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Empty means any host.
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderPredicate>,
    pub query: Vec<QueryPredicate>,
    /// Conditions on the client's location (`geo`).
    pub geo: Option<GeoMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com`, stored as the lower-case suffix `.example.com`.
    WildcardSuffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
    Prefix(String),
    /// `/users/{id}/posts/{*rest}` (matchit syntax).
    Template(String),
    Regex(Regex),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_owned())
    }
}

#[derive(Debug, Clone)]
pub struct HeaderPredicate {
    pub name: HeaderName,
    pub test: ValueTest,
}

#[derive(Debug, Clone)]
pub struct QueryPredicate {
    pub name: String,
    pub test: ValueTest,
}

#[derive(Debug, Clone)]
pub enum ValueTest {
    Present,
    Absent,
    Exact(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum Action {
    Proxy(ProxyAction),
    Redirect(Redirect),
    /// The gateway answers itself (`respond`).
    Respond(Respond),
}

/// A fixed answer: status, fields (`Content-Type` included) and body.
#[derive(Debug, Clone)]
pub struct Respond {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct ProxyAction {
    /// One entry for a plain route; several split traffic by weight.
    pub upstreams: Vec<WeightedUpstream>,
    /// A header whose value names one of `upstreams` forces that group.
    pub split_header: Option<HeaderName>,
    pub mirror: Option<Mirror>,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<PathRewrite>,
    pub host_rewrite: Option<HeaderValue>,
    /// Groups for clients of given locations, tried in order before `upstreams`.
    pub geo_upstreams: Vec<GeoUpstream>,
}

#[derive(Debug, Clone)]
pub struct WeightedUpstream {
    pub name: String,
    pub weight: u32,
}

/// Copies of requests sent to a shadow group; its responses are discarded.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub upstream: String,
    /// Share of requests mirrored, 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the whole path; `{name}` inserts a template parameter.
    Replace(String),
    /// Regex substitution on the path (`$1`, `${name}`).
    Regex { pattern: Regex, replacement: String },
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub status: StatusCode,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub strip_query: bool,
}

/// Where the Redis deployment is and how long any call to it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    pub deployment: RedisDeployment,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisDeployment {
    Standalone(String),
    Sentinel { master: String, urls: Vec<String> },
    Cluster(Vec<String>),
}

#[derive(Debug, Clone, Default)]
pub struct RateLimiting {
    /// Most keys the in-process store holds, over all policies.
    pub max_keys: usize,
    /// Header naming the consumer until authentication provides one.
    pub consumer_header: Option<HeaderName>,
    pub policies: Vec<RatePolicy>,
}

#[derive(Debug, Clone)]
pub struct RatePolicy {
    pub name: String,
    pub algorithm: crate::ratelimit::spec::Algorithm,
    /// Parts of the counting key, in order; empty means one counter for the policy.
    pub key: Vec<KeyPart>,
    /// IPv6 client addresses are grouped by this prefix length.
    pub ipv6_prefix: u8,
    pub store: RateStore,
    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub x_headers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    Consumer,
    Route,
    Path,
    Header(HeaderName),
    /// A field of the client's location (`geo:country`).
    Geo(GeoField),
    /// A field of the authenticated consumer's `metadata` (`metadata:team`): consumers with
    /// the same value share a count (a team's budget).
    Metadata(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateStore {
    Local,
    Redis {
        /// Decide locally and push counts in batches instead of one round trip per request.
        batch: Option<RateBatch>,
        /// When Redis fails: count locally (true) or answer 503 (false).
        fail_open: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBatch {
    pub interval: Duration,
    /// Unconfirmed admissions one instance may make per key before it waits for a flush.
    pub max_pending: u64,
}

/// Consumers and the authentication methods routes name (`consumers:` and `auth:`).
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    pub consumers: Vec<ConsumerDef>,
    /// Request header telling the upstream the consumer's name; client copies are removed.
    pub consumer_header: Option<HeaderName>,
    pub methods: std::collections::BTreeMap<String, AuthMethodDef>,
}

#[derive(Debug, Clone)]
pub struct ConsumerDef {
    pub name: String,
    pub groups: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Hex SHA-256 digests of the consumer's API keys.
    pub api_keys: Vec<String>,
    pub password_hash: Option<String>,
    /// Client-certificate names (CN or SAN, as the `mtls` method reads them) that are this
    /// consumer.
    pub certificate_names: Vec<String>,
}

/// One named authentication method.
#[derive(Debug, Clone)]
pub enum AuthMethodDef {
    ApiKey {
        source: crate::auth::apikey::KeySource,
        hide: bool,
    },
    Basic {
        settings: crate::auth::basic::BasicSettings,
        hide: bool,
    },
    Jwt {
        settings: crate::auth::jwt::JwtSettings,
        source: crate::auth::token::TokenSource,
        hide: bool,
    },
    Introspection {
        settings: crate::auth::introspect::IntrospectionSettings,
        source: crate::auth::token::TokenSource,
        hide: bool,
    },
    /// The client certificate verified by the listener's `tls.client_auth`.
    Mtls {
        consumer_from: crate::auth::mtls::ConsumerFrom,
    },
}

/// A route's access phase: CORS, IP rules, authentication and authorization, validation.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    pub cors: Option<crate::auth::cors::CorsSettings>,
    /// `(allow, deny)` on the trusted client address.
    pub ip_rules: Option<(Vec<IpNet>, Vec<IpNet>)>,
    /// Accepted method names (any of) and the allow/deny rule.
    pub auth: Option<(Vec<String>, crate::auth::acl::AccessRule)>,
    pub params: Vec<crate::validate::params::ParamRule>,
    /// `(content type, schema)` pairs; empty means bodies are not validated.
    pub body_schemas: Vec<(String, serde_json::Value)>,
    pub body_max: usize,
    /// OpenID Connect login for browser routes (`oidc`).
    pub oidc: Option<crate::auth::oidc::OidcSettings>,
}

/// The shared HTTP cache (top-level `cache`): one store for every cached route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of stored responses in memory (bodies, fields and per-entry overhead).
    pub max_bytes: usize,
    /// Larger responses are relayed but not stored.
    pub max_object_bytes: usize,
    /// How long a request waits for another request fetching the same key (coalescing)
    /// before it goes to the origin itself.
    pub lock_timeout: Duration,
    /// Heuristic freshness (RFC 9111 §4.2.2): this share of the time since Last-Modified,
    /// in percent, at most `heuristic_max`; 0 disables heuristics.
    pub heuristic_percent: u32,
    pub heuristic_max: Duration,
    /// Response field listing surrogate keys (space separated) for purges; it is removed
    /// before the response reaches the client.
    pub surrogate_header: HeaderName,
    /// Name of this cache in `Cache-Status` (RFC 9211).
    pub status_name: String,
    /// Remove `CDN-Cache-Control` and `Surrogate-Control` from responses to clients too
    /// (`Ferrogate-Cache-Control` always goes).
    pub strip_targeted: bool,
    /// Share stored responses and purges through the top-level `redis`.
    pub redis: Option<CacheRedis>,
}

/// The Redis tier of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRedis {
    /// Prefix of every key the cache writes, and of its purge channel.
    pub prefix: String,
    /// Larger responses stay in memory only.
    pub max_object_bytes: usize,
}

/// Per-route caching (`routes[].cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCache {
    /// Request header values added to the cache key.
    pub key_headers: Vec<HeaderName>,
    /// Cookie values added to the cache key (hashed, never stored in clear).
    pub key_cookies: Vec<String>,
    /// Add the authenticated consumer to the cache key.
    pub key_consumer: bool,
    /// Fields of the client's location added to the cache key.
    pub key_geo: Vec<GeoField>,
    /// Store responses that carry Set-Cookie (they are then served to every client).
    pub store_set_cookie: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: 256 << 20,
            max_object_bytes: 8 << 20,
            lock_timeout: Duration::from_secs(5),
            heuristic_percent: 10,
            heuristic_max: Duration::from_secs(24 * 3600),
            surrogate_header: HeaderName::from_static("surrogate-key"),
            status_name: "ferrogate".to_string(),
            strip_targeted: false,
            redis: None,
        }
    }
}

/// Where client locations come from (top-level `geo`), and what the gateway does with them
/// on every proxied request.
#[derive(Debug, Clone)]
pub struct GeoSettings {
    /// MaxMind-format databases (`.mmdb`), asked in order: a field comes from the first that
    /// has it (a City and an ASN database together).
    pub databases: Vec<PathBuf>,
    /// CIDR table: networks and their labels, the longest prefix winning.
    pub networks: Vec<(IpNet, String)>,
    /// Values of the fields a lookup did not find.
    pub default: GeoDefaults,
    /// Fields set on every upstream request from the client's location.
    pub headers: Vec<(HeaderName, GeoField)>,
    /// How often the databases' files are checked for a change.
    pub reload_interval: Duration,
    /// Countries with their own series in the per-country request metric; empty: no metric.
    pub metrics_countries: Vec<String>,
}

/// What an unknown location counts as, field by field (`geo.default`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoDefaults {
    pub country: Option<String>,
    pub continent: Option<String>,
    pub subdivision: Option<String>,
    pub asn: Option<u32>,
    pub label: Option<String>,
}

/// One field of a client's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoField {
    /// ISO 3166-1 alpha-2 code (`DE`).
    Country,
    /// Continent code (`EU`).
    Continent,
    /// First ISO 3166-2 subdivision code, without the country (`BY`).
    Subdivision,
    /// Autonomous system number.
    Asn,
    /// Label of the CIDR table.
    Label,
}

/// Location conditions of a route (`match.geo`, `geo_upstreams[].when`): every list given
/// must hold; a list holds when any of its values does (`not_*`: when none does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoMatch {
    pub countries: Vec<String>,
    pub continents: Vec<String>,
    pub subdivisions: Vec<String>,
    pub asns: Vec<u32>,
    pub labels: Vec<String>,
    pub not_countries: Vec<String>,
    pub not_continents: Vec<String>,
    pub not_subdivisions: Vec<String>,
    pub not_asns: Vec<u32>,
    pub not_labels: Vec<String>,
}

/// A route's upstream group for clients of one location (`geo_upstreams`).
#[derive(Debug, Clone)]
pub struct GeoUpstream {
    pub when: GeoMatch,
    pub upstream: String,
}

/// How targets given by name are resolved (`dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers; empty means the system's (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub timeout: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Targets given by a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub query: DnsQuery,
    /// Weight of each address (A/AAAA); SRV records carry their own.
    pub weight: u32,
    pub place: Place,
}

/// What is asked of the resolver for a [`DnsTarget`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsQuery {
    /// A and AAAA records of `name`, each address a target on `port`.
    Host { name: String, port: u16 },
    /// SRV records of `name`: target hosts, ports and weights.
    Srv { name: String },
}

impl std::fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsQuery::Host { name, port } => write!(f, "{name}:{port}"),
            DnsQuery::Srv { name } => write!(f, "srv {name}"),
        }
    }
}

/// Distributed tracing (`tracing`): sampling and the OTLP export.
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// Share of traces recorded from their start.
    pub sample_ratio: f64,
    /// 5xx answers (and requests never answered) are exported whatever the ratio said.
    pub sample_errors: bool,
    /// Requests slower than this are exported whatever the ratio said.
    pub sample_slower_than: Option<Duration>,
    pub service_name: String,
    /// The full URL (HTTP: with its `/v1/traces` path).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Extra fields of every export, lower-case names.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub queue_size: usize,
    pub batch_size: usize,
    pub export_interval: Duration,
}

/// How spans are sent (`tracing.otlp.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// The traffic history (`history`).
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Retention of 10-second points.
    pub keep_fine: Duration,
    /// Retention of 1-minute points.
    pub keep_coarse: Duration,
    /// Names kept per dimension in a point.
    pub max_names: usize,
}

/// Alerting (`alerts`): rules, how often they are evaluated, and the notifiers.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub evaluate_every: Duration,
    /// A firing alert is notified again this often.
    pub repeat_every: Duration,
    pub notifiers: Vec<NotifierSettings>,
    pub rules: Vec<AlertRule>,
}

/// One receiver of alert notifications (`alerts.notifiers.NAME`).
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    pub name: String,
    pub kind: NotifierKind,
    /// The webhook or Slack URL, or the Alertmanager's base URL (no trailing `/`).
    pub url: String,
    /// The webhook's HMAC key (empty for the other kinds).
    pub secret: Vec<u8>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// What a notifier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierKind {
    /// JSON, signed with HMAC-SHA256.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack,
    /// The Alertmanager v2 API (`POST /api/v2/alerts`).
    Alertmanager,
}

/// One alert rule (`alerts.rules[]`).
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub metric: Metric,
    pub scope: AlertScope,
    /// Fires while the value is above (`true`) or below (`false`) `threshold`.
    pub above: bool,
    pub threshold: f64,
    pub window: Duration,
    /// Compare the relative change against the window this long before.
    pub change_over: Option<Duration>,
    /// How long the condition must hold before the alert fires (`for`).
    pub hold: Duration,
    pub severity: Severity,
    /// Indices into `AlertSettings::notifiers`.
    pub notify: Vec<usize>,
    pub summary: Option<String>,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertScope {
    Gateway,
    Route(String),
    Upstream(String),
    Target(String),
    Consumer(String),
}

impl AlertScope {
    /// The dimension's name, as `/stats` takes it.
    pub fn dimension(&self) -> &'static str {
        match self {
            AlertScope::Gateway => "gateway",
            AlertScope::Route(_) => "route",
            AlertScope::Upstream(_) => "upstream",
            AlertScope::Target(_) => "target",
            AlertScope::Consumer(_) => "consumer",
        }
    }

    /// The scope's name (empty for the gateway).
    pub fn name(&self) -> &str {
        match self {
            AlertScope::Gateway => "",
            AlertScope::Route(n)
            | AlertScope::Upstream(n)
            | AlertScope::Target(n)
            | AlertScope::Consumer(n) => n,
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A quantity of the traffic history (the `metric` of `/stats` and of alert rules), or the
/// healthy targets of a group (alert rules only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Requests,
    /// Requests per second.
    Rps,
    /// 5xx answers.
    Errors,
    /// The share of 5xx answers.
    ErrorRatio,
    /// Answers of one class: 1 to 5.
    Class(u8),
    BytesIn,
    BytesOut,
    /// 429 answers.
    RateLimited,
    /// A latency quantile, in milliseconds.
    Quantile(f64),
    /// Answers from the cache, on routes that cache.
    CacheHits,
    /// The share of requests on routes that cache that the cache answered.
    CacheHitRatio,
    /// Targets: the share of health samples that found them able to take requests.
    HealthyRatio,
    /// Targets of an upstream group that may take requests now.
    HealthyTargets,
}

impl Metric {
    /// The names of the history's metrics, for errors.
    pub const HISTORY_NAMES: &'static str = "requests, rps, errors, error_ratio, 1xx..5xx, \
         bytes_in, bytes_out, rate_limited, p50, p90, p95, p99, cache_hits, cache_hit_ratio or \
         healthy_ratio";

    pub fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "requests" => Metric::Requests,
            "rps" => Metric::Rps,
            "errors" => Metric::Errors,
            "error_ratio" => Metric::ErrorRatio,
            "1xx" | "2xx" | "3xx" | "4xx" | "5xx" => Metric::Class(name.as_bytes()[0] - b'0'),
            "bytes_in" => Metric::BytesIn,
            "bytes_out" => Metric::BytesOut,
            "rate_limited" => Metric::RateLimited,
            "p50" => Metric::Quantile(0.5),
            "p90" => Metric::Quantile(0.9),
            "p95" => Metric::Quantile(0.95),
            "p99" => Metric::Quantile(0.99),
            "cache_hits" => Metric::CacheHits,
            "cache_hit_ratio" => Metric::CacheHitRatio,
            "healthy_ratio" => Metric::HealthyRatio,
            "healthy_targets" => Metric::HealthyTargets,
            _ => return None,
        })
    }

    /// The metric's name, as written.
    pub fn name(self) -> String {
        match self {
            Metric::Requests => "requests".into(),
            Metric::Rps => "rps".into(),
            Metric::Errors => "errors".into(),
            Metric::ErrorRatio => "error_ratio".into(),
            Metric::Class(c) => format!("{c}xx"),
            Metric::BytesIn => "bytes_in".into(),
            Metric::BytesOut => "bytes_out".into(),
            Metric::RateLimited => "rate_limited".into(),
            Metric::Quantile(q) => format!("p{}", (q * 100.0).round()),
            Metric::CacheHits => "cache_hits".into(),
            Metric::CacheHitRatio => "cache_hit_ratio".into(),
            Metric::HealthyRatio => "healthy_ratio".into(),
            Metric::HealthyTargets => "healthy_targets".into(),
        }
    }

    /// A count of something (an integer), not a rate, ratio or time.
    pub fn is_count(self) -> bool {
        !matches!(
            self,
            Metric::Rps
                | Metric::ErrorRatio
                | Metric::Quantile(_)
                | Metric::CacheHitRatio
                | Metric::HealthyRatio
        )
    }
}
