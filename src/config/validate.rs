//! File types → validated model. Collects every problem with its key path instead of
//! stopping at the first, so `ferrogate check` can list them all.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use regex::Regex;

use super::file;
use super::model::*;
use super::{ConfigError, ConfigErrors};

/// How long an idle upstream connection stays pooled unless `keepalive.idle_timeout` says
/// otherwise. Below the shortest common backend keep-alive (Node's 5 s): the side that closes
/// an idle connection must be the gateway, or a request may go out on a connection the
/// backend is closing, and a request whose body was written cannot be retried (502).
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(4);

/// Problems found so far, each with its key path.
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports every key of `x` the gateway does not know, with the closest known key when
    /// one is a likely misspelling.
    pub(super) fn unknown_in<T: file::Keys>(&mut self, path: &str, x: &T) {
        for key in x.unknown().keys() {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match file::suggestion(key, T::KEYS) {
                Some(known) => self.push(at, format!("unknown key; did you mean {known:?}?")),
                None => self.push(at, "unknown key"),
            }
        }
    }
}

/// Validates a parsed file into the model, or returns every problem found.
pub fn validate(f: file::File, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Errors(Vec::new());
    errs.unknown_in("", &f);

    let listeners = f
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| listener(&mut errs, &format!("listeners[{i}]"), i, l, base_dir))
        .collect::<Vec<_>>();
    if f.listeners.is_empty() {
        errs.push("listeners", "at least one listener is required");
    }
    let mut seen = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        if !seen.insert(l.address) {
            errs.push(
                format!("listeners[{i}].address"),
                format!("{} is used by two listeners", l.address),
            );
        }
    }

    let admin = f
        .admin
        .as_ref()
        .and_then(|a| super::admin::admin(&mut errs, a, base_dir));
    let data_dir = match f.data_dir.as_deref() {
        Some("") => {
            errs.push("data_dir", "empty path");
            None
        }
        d => d.map(|d| base_dir.join(d)),
    };

    let access_log = match &f.access_log {
        None => AccessLog {
            enabled: false,
            target: LogTarget::Stdout,
            sample_success: None,
        },
        Some(a) => {
            errs.unknown_in("access_log", &a);
            let target = match a.target.as_deref() {
                None | Some("stdout") => LogTarget::Stdout,
                Some("stderr") => LogTarget::Stderr,
                Some("") => {
                    errs.push("access_log.target", "empty target");
                    LogTarget::Stdout
                }
                Some(p) => LogTarget::File(base_dir.join(p)),
            };
            let sample_success = a.sample_success.as_ref().map(|s| {
                errs.unknown_in("access_log.sample_success", &s);
                if !(0.0..=1.0).contains(&s.ratio) {
                    errs.push("access_log.sample_success.ratio", "a share between 0 and 1");
                }
                (s.above_per_second.unwrap_or(1000), s.ratio)
            });
            AccessLog {
                enabled: a.enabled.unwrap_or(true),
                target,
                sample_success,
            }
        }
    };
    let metrics_enabled = match &f.metrics {
        None => true,
        Some(m) => {
            errs.unknown_in("metrics", &m);
            m.enabled.unwrap_or(true)
        }
    };

    let upstreams = f
        .upstreams
        .iter()
        .filter_map(|(name, u)| upstream(&mut errs, name, u, base_dir, f.geo.is_some()))
        .collect::<Vec<_>>();
    let upstream_names: HashSet<&str> = f.upstreams.keys().map(String::as_str).collect();

    let geo = f
        .geo
        .as_ref()
        .map(|g| super::geo::settings(&mut errs, g, base_dir));
    let mut route_names = HashSet::new();
    let mut routes = Vec::new();
    let mut route_at = Vec::new();
    let no_methods = std::collections::BTreeMap::new();
    let rabbitmq = super::queue::rabbitmq(&mut errs, f.rabbitmq.as_ref());
    let known = Known {
        upstreams: &upstream_names,
        queues: &f.queues,
        has_redis: f.redis.is_some(),
        rabbitmq: rabbitmq.as_deref(),
        geo: geo.as_ref(),
    };
    for (i, r) in f.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Some(mut route) = route(&mut errs, &at, i, r, &known) {
            let methods = f.auth.as_ref().map(|a| &a.methods);
            route.access =
                super::access::route_access(&mut errs, &at, r, methods.unwrap_or(&no_methods));
            if !route_names.insert(route.name.clone()) {
                errs.push(
                    format!("{at}.name"),
                    format!("route name {:?} is used twice", route.name),
                );
            }
            routes.push(route);
            route_at.push(i);
        }
    }
    let indexed: Vec<(usize, &Route)> = route_at.iter().copied().zip(routes.iter()).collect();
    super::shadow::unreachable(&mut errs, &indexed);
    let status_routes: Vec<Route> = routes
        .iter()
        .filter_map(super::queue::status_route)
        .collect();
    routes.extend(status_routes);

    let redis = f
        .redis
        .as_ref()
        .and_then(|r| super::ratelimit::redis(&mut errs, r));
    for (route, &i) in routes.iter_mut().zip(&route_at) {
        let Some(url) = route
            .access
            .oidc
            .as_mut()
            .and_then(|o| o.redis_url.as_mut())
        else {
            continue;
        };
        match redis.as_ref().map(|r| &r.deployment) {
            Some(RedisDeployment::Standalone(u)) => u.clone_into(url),
            Some(_) => errs.push(
                format!("routes[{i}].oidc.sessions"),
                "sessions in redis need a standalone redis (a url)",
            ),
            None => errs.push(
                format!("routes[{i}].oidc.sessions"),
                "sessions in redis need the top-level redis",
            ),
        }
    }
    let rate_limiting = super::ratelimit::rate_limiting(
        &mut errs,
        f.rate_limiting.as_ref(),
        f.redis.is_some(),
        f.auth.as_ref().is_some_and(|a| !a.methods.is_empty()),
        geo.is_some(),
    );
    super::ai::check_budgets(&mut errs, &f.routes, &rate_limiting);
    for (i, r) in f.routes.iter().enumerate() {
        for (j, name) in r.rate_limits.iter().enumerate() {
            let known = f
                .rate_limiting
                .as_ref()
                .is_some_and(|rl| rl.policies.contains_key(name));
            if !known {
                errs.push(
                    format!("routes[{i}].rate_limits[{j}]"),
                    format!("no rate-limit policy named {name:?}"),
                );
            }
        }
    }

    let queues = super::queue::queues(
        &mut errs,
        &f.queues,
        base_dir,
        redis.as_ref(),
        rabbitmq.as_deref(),
    );
    let access = super::access::access_control(&mut errs, &f, base_dir);
    let cache = super::cache::settings(&mut errs, f.cache.as_ref(), f.redis.is_some());

    let dns = super::dns::settings(&mut errs, f.dns.as_ref());
    let locality = super::locality::instance(&mut errs, &f);
    let tracing = f
        .tracing
        .as_ref()
        .map(|t| super::tracing::settings(&mut errs, t));
    let history = f
        .history
        .as_ref()
        .map(|h| super::tracing::history(&mut errs, h));
    let alerts = f.alerts.as_ref().map(|a| {
        let route_names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        let group_names: Vec<String> = upstreams.iter().map(|u| u.name.clone()).collect();
        super::alerts::settings(&mut errs, a, &route_names, &group_names, history.is_some())
    });
    let shutdown_drain = opt_duration(
        &mut errs,
        "shutdown_drain",
        &f.shutdown_drain,
        Duration::from_secs(30),
    );
    let workers = f.workers.unwrap_or(0);
    if workers > 1024 {
        errs.push("workers", "at most 1024 workers");
    }

    if errs.0.is_empty() {
        Ok(Config {
            workers,
            listeners,
            admin,
            access_log,
            metrics_enabled,
            upstreams,
            routes,
            shutdown_drain,
            redis,
            rate_limiting,
            access,
            cache,
            queues,
            geo,
            dns,
            locality,
            tracing,
            history,
            alerts,
            base_dir: base_dir.to_path_buf(),
            data_dir,
        })
    } else {
        Err(ConfigErrors(errs.0))
    }
}

fn listener(
    errs: &mut Errors,
    at: &str,
    index: usize,
    l: &file::Listener,
    base_dir: &Path,
) -> Option<Listener> {
    errs.unknown_in(at, &l);
    let address = socket_addr(errs, &format!("{at}.address"), &l.address);
    let trusted_proxies = l
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| cidr(errs, &format!("{at}.trusted_proxies[{i}]"), s))
        .collect();
    let tls = l
        .tls
        .as_ref()
        .map(|t| tls(errs, &format!("{at}.tls"), t, base_dir));
    let limits = limits(errs, &format!("{at}.limits"), l.limits.as_ref());
    let h2c = match &l.h2c {
        None => H2cMode::BesideHttp1,
        Some(file::H2c::Flag(false)) => H2cMode::Off,
        Some(file::H2c::Flag(true)) => H2cMode::BesideHttp1,
        Some(file::H2c::Mode(m)) if m == "only" => H2cMode::Only,
        Some(file::H2c::Mode(m)) => {
            errs.push(
                format!("{at}.h2c"),
                format!("unknown h2c mode {m:?}; use true, false or only"),
            );
            H2cMode::BesideHttp1
        }
    };
    let h2_server = match l.h2_server.as_deref() {
        None | Some("hyper") => H2Server::Hyper,
        Some("native") => H2Server::Native,
        Some(other) => {
            errs.push(
                format!("{at}.h2_server"),
                format!("unknown HTTP/2 server {other:?}; use hyper or native"),
            );
            H2Server::Hyper
        }
    };
    if l.tls.is_some() && matches!(l.h2c, Some(file::H2c::Flag(true) | file::H2c::Mode(_))) {
        errs.push(
            format!("{at}.h2c"),
            "h2c is for plain-text listeners; use tls.h2 on a TLS listener",
        );
    }
    Some(Listener {
        name: l
            .name
            .clone()
            .unwrap_or_else(|| format!("listener-{index}")),
        address: address?,
        h2c,
        h2_server,
        tls,
        trusted_proxies,
        limits,
        trust_trace_context: l.trust_trace_context,
    })
}

pub(super) fn tls(errs: &mut Errors, at: &str, t: &file::Tls, base_dir: &Path) -> Tls {
    errs.unknown_in(at, &t);
    if t.certificates.is_empty() {
        errs.push(format!("{at}.certificates"), "at least one certificate");
    }
    let certificates = t
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("{at}.certificates[{i}]");
            errs.unknown_in(&at, &c);
            for (key, p) in [("cert", &c.cert), ("key", &c.key)] {
                if !base_dir.join(p).is_file() {
                    errs.push(format!("{at}.{key}"), format!("no such file: {p}"));
                }
            }
            Certificate {
                cert_path: base_dir.join(&c.cert),
                key_path: base_dir.join(&c.key),
                server_names: c
                    .server_names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
            }
        })
        .collect();
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(v) => {
            errs.push(
                format!("{at}.min_version"),
                format!("unsupported TLS version {v:?}; use \"1.2\" or \"1.3\""),
            );
            TlsVersion::Tls12
        }
    };
    Tls {
        certificates,
        min_version,
        h2: t.h2.unwrap_or(true),
        client_auth: t
            .client_auth
            .as_ref()
            .and_then(|c| client_auth(errs, &format!("{at}.client_auth"), c, base_dir)),
    }
}

/// `tls.client_auth`; the CA bundle is read and parsed here so `check` reports a bad one.
fn client_auth(
    errs: &mut Errors,
    at: &str,
    c: &file::ClientAuth,
    base_dir: &Path,
) -> Option<ClientAuth> {
    errs.unknown_in(at, &c);
    let mode = match c.mode.as_deref() {
        None | Some("required") => ClientAuthMode::Required,
        Some("optional") => ClientAuthMode::Optional,
        Some(m) => {
            errs.push(
                format!("{at}.mode"),
                format!("unknown mode {m:?}; use required or optional"),
            );
            ClientAuthMode::Required
        }
    };
    let Some(file) = &c.ca_file else {
        errs.push(
            format!("{at}.ca_file"),
            "required: the PEM bundle of CAs that client certificates must chain to",
        );
        return None;
    };
    let ca_path = base_dir.join(file);
    if !ca_path.is_file() {
        errs.push(format!("{at}.ca_file"), format!("no such file: {file}"));
        return None;
    }
    if let Err(e) = crate::certs::client_roots(&ca_path) {
        errs.push(format!("{at}.ca_file"), e);
        return None;
    }
    Some(ClientAuth { ca_path, mode })
}

fn limits(errs: &mut Errors, at: &str, l: Option<&file::Limits>) -> Limits {
    let d = Limits::default();
    let Some(l) = l else { return d };
    errs.unknown_in(at, &l);
    let mut size = |key: &str, v: Option<usize>, default: usize, min: usize| match v {
        Some(v) if v < min => {
            errs.push(format!("{at}.{key}"), format!("must be at least {min}"));
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_request_line = size(
        "max_request_line",
        l.max_request_line,
        d.max_request_line,
        64,
    );
    let max_header_bytes = size(
        "max_header_bytes",
        l.max_header_bytes,
        d.max_header_bytes,
        256,
    );
    let max_headers = size("max_headers", l.max_headers, d.max_headers, 1);
    let max_chunk_extension = size(
        "max_chunk_extension",
        l.max_chunk_extension,
        d.max_chunk_extension,
        0,
    );
    let mut duration = |key: &str, v: &Option<String>, default: Duration| {
        opt_duration(errs, &format!("{at}.{key}"), v, default)
    };
    let header_timeout = duration("header_timeout", &l.header_timeout, d.header_timeout);
    let keepalive_timeout = duration(
        "keepalive_timeout",
        &l.keepalive_timeout,
        d.keepalive_timeout,
    );
    let body_timeout = duration("body_timeout", &l.body_timeout, d.body_timeout);
    for (key, v) in [
        ("max_connections", l.max_connections),
        ("max_connections_per_ip", l.max_connections_per_ip),
    ] {
        if v == Some(0) {
            errs.push(format!("{at}.{key}"), "must be at least 1");
        }
    }
    let mut bounded = |key: &str, v: Option<u32>, default: u32, (min, max): (u32, u32)| match v {
        Some(v) if v < min || v > max => {
            errs.push(
                format!("{at}.{key}"),
                format!("must be between {min} and {max}"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let h2_max_concurrent_streams = bounded(
        "h2_max_concurrent_streams",
        l.h2_max_concurrent_streams,
        d.h2_max_concurrent_streams,
        H2_STREAMS,
    );
    let h2_initial_stream_window = bounded(
        "h2_initial_stream_window",
        l.h2_initial_stream_window,
        d.h2_initial_stream_window,
        H2_STREAM_WINDOW,
    );
    let h2_initial_connection_window = bounded(
        "h2_initial_connection_window",
        l.h2_initial_connection_window,
        d.h2_initial_connection_window,
        H2_CONNECTION_WINDOW,
    );
    // One idle notion for both protocols unless HTTP/2 gets its own (as nginx does).
    let h2_idle_timeout = opt_duration(
        errs,
        &format!("{at}.h2_idle_timeout"),
        &l.h2_idle_timeout,
        keepalive_timeout,
    );
    if h2_idle_timeout.is_zero() {
        errs.push(format!("{at}.h2_idle_timeout"), "must be more than 0");
    }
    Limits {
        max_request_line,
        max_header_bytes,
        max_headers,
        max_chunk_extension,
        header_timeout,
        keepalive_timeout,
        body_timeout,
        max_body_bytes: l.max_body_bytes,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        h2_max_concurrent_streams,
        h2_initial_stream_window,
        h2_initial_connection_window,
        h2_idle_timeout,
    }
}

/// Bounds of the HTTP/2 settings a listener advertises. Streams: at least one, and few
/// enough that `streams x stream window` of buffered request bodies stays bounded.
/// Windows: at least the protocol's 65,535 (less stalls uploads for no gain), at most
/// 16 MiB per stream and 64 MiB per connection, the memory a client may make the gateway
/// hold for bytes it has not read yet.
const H2_STREAMS: (u32, u32) = (1, 1000);
const H2_STREAM_WINDOW: (u32, u32) = (65_535, 16 << 20);
const H2_CONNECTION_WINDOW: (u32, u32) = (65_535, 64 << 20);

fn upstream(
    errs: &mut Errors,
    name: &str,
    u: &file::Upstream,
    base_dir: &Path,
    geo: bool,
) -> Option<Upstream> {
    let at = format!("upstreams.{name}");
    errs.unknown_in(&at, &u);
    if name.is_empty() {
        errs.push(&at, "empty upstream name");
    }
    if u.targets.is_empty() {
        errs.push(format!("{at}.targets"), "at least one target");
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut dns_targets = Vec::new();
    for (i, t) in u.targets.iter().enumerate() {
        let at = format!("{at}.targets[{i}]");
        errs.unknown_in(&at, &t);
        let weight = t.weight.unwrap_or(1);
        if weight == 0 || weight > 10_000 {
            errs.push(format!("{at}.weight"), "weight must be 1..=10000");
        }
        let place = super::locality::target_place(errs, &at, t);
        match super::dns::target(errs, &at, t) {
            Some(query) => dns_targets.push(DnsTarget {
                query,
                weight,
                place,
            }),
            None if t.srv != Some(true) => {
                if let Some(address) = socket_addr(errs, &format!("{at}.address"), &t.address) {
                    targets.push(Target {
                        address,
                        weight,
                        place,
                    });
                }
            }
            None => {}
        }
    }
    let hash_key = u
        .hash_on
        .as_deref()
        .map(|h| hash_key(errs, &format!("{at}.hash_on"), h));
    let balancer = match (u.balancer.as_deref().unwrap_or("round_robin"), hash_key) {
        ("round_robin", None) => BalancerKind::RoundRobin,
        ("least_connections", None) => BalancerKind::LeastConnections,
        ("random", None) => BalancerKind::Random,
        ("peak_ewma", None) => BalancerKind::PeakEwma,
        ("consistent_hash", key) => {
            BalancerKind::ConsistentHash(key.flatten().unwrap_or(HashKey::ClientIp))
        }
        (b @ ("round_robin" | "least_connections" | "random" | "peak_ewma"), Some(_)) => {
            errs.push(
                format!("{at}.hash_on"),
                format!("hash_on applies to consistent_hash, not {b}"),
            );
            BalancerKind::RoundRobin
        }
        (other, _) => {
            errs.push(
                format!("{at}.balancer"),
                format!(
                    "unknown balancer {other:?}; use round_robin, least_connections, random, \
                     peak_ewma or consistent_hash"
                ),
            );
            BalancerKind::RoundRobin
        }
    };
    let protocol = super::upstream_tls::protocol(errs, &at, u);
    let tls = u
        .tls
        .as_ref()
        .and_then(|t| super::upstream_tls::tls(errs, &at, t, base_dir));
    let (keepalive_idle, keepalive_max_idle) = match &u.keepalive {
        None => (DEFAULT_KEEPALIVE_IDLE, 256),
        Some(k) => {
            errs.unknown_in(&format!("{at}.keepalive"), &k);
            (
                opt_duration(
                    errs,
                    &format!("{at}.keepalive.idle_timeout"),
                    &k.idle_timeout,
                    DEFAULT_KEEPALIVE_IDLE,
                ),
                k.max_idle.unwrap_or(256),
            )
        }
    };
    Some(Upstream {
        name: name.to_owned(),
        balancer,
        targets,
        dns_targets,
        locality: u
            .locality
            .as_ref()
            .map(|l| super::locality::group(errs, &format!("{at}.locality"), l, geo)),
        protocol,
        tls,
        connect_timeout: opt_duration(
            errs,
            &format!("{at}.connect_timeout"),
            &u.connect_timeout,
            Duration::from_secs(5),
        ),
        request_timeout: opt_duration(
            errs,
            &format!("{at}.request_timeout"),
            &u.request_timeout,
            Duration::from_secs(60),
        ),
        keepalive_idle,
        keepalive_max_idle,
        client_credentials: u.client_credentials.as_ref().and_then(|c| {
            let at = format!("{at}.client_credentials");
            super::oidc::client_credentials(errs, &at, c, base_dir)
        }),
        ..super::resilience::upstream(errs, &at, u)
    })
}

fn hash_key(errs: &mut Errors, at: &str, h: &str) -> Option<HashKey> {
    match h.split_once(':') {
        None if h == "client_ip" => Some(HashKey::ClientIp),
        None if h == "path" => Some(HashKey::Path),
        Some(("header", name)) => match HeaderName::from_str(name) {
            Ok(n) => Some(HashKey::Header(n)),
            Err(_) => {
                errs.push(at, format!("invalid header name {name:?}"));
                None
            }
        },
        Some(("cookie", name)) if !name.is_empty() => Some(HashKey::Cookie(name.to_owned())),
        _ => {
            errs.push(
                at,
                format!("unknown hash key {h:?}; use client_ip, path, header:NAME or cookie:NAME"),
            );
            None
        }
    }
}

/// What a route may refer to elsewhere in the file.
struct Known<'a> {
    upstreams: &'a HashSet<&'a str>,
    queues: &'a std::collections::BTreeMap<String, file::JobQueue>,
    has_redis: bool,
    /// The top-level `rabbitmq`'s URL, when set.
    rabbitmq: Option<&'a str>,
    geo: Option<&'a GeoSettings>,
}

fn route(
    errs: &mut Errors,
    at: &str,
    index: usize,
    r: &file::Route,
    known: &Known<'_>,
) -> Option<Route> {
    let Known {
        upstreams,
        queues,
        has_redis,
        rabbitmq,
        geo,
    } = *known;
    errs.unknown_in(at, &r);
    let default_match = file::Match::default();
    let m = r.matcher.as_ref().unwrap_or(&default_match);
    let mut matcher = route_match(errs, &format!("{at}.match"), m);
    matcher.geo = m
        .geo
        .as_ref()
        .map(|g| super::geo::condition(errs, &format!("{at}.match.geo"), g, geo));
    let proxies = r.upstream.is_some() || !r.split.is_empty();
    let publishes = r.publish.is_some() || r.ai.is_some();
    let kinds = [
        (proxies, "upstream (or split)"),
        (r.redirect.is_some(), "redirect"),
        (r.respond.is_some(), "respond"),
        (r.publish.is_some(), "publish"),
        (r.ai.is_some(), "ai"),
    ];
    let set: Vec<&str> = kinds.iter().filter(|k| k.0).map(|k| k.1).collect();
    if set.len() != 1 {
        let message = match set.is_empty() {
            true => "a route needs upstream, split, redirect, respond, publish or ai".to_owned(),
            false => format!(
                "a route has one of upstream, split, redirect, respond, publish or ai, not {}",
                set.join(" and ")
            ),
        };
        errs.push(at, message);
        return None;
    }
    let action = if proxies {
        let targets = super::resilience::split(errs, at, r, upstreams);
        super::resilience::check_mirror(errs, at, r, upstreams);
        let mut action = proxy_action(errs, at, r, targets, &matcher);
        action.geo_upstreams = super::geo::upstreams(errs, at, r, upstreams, geo);
        Action::Proxy(action)
    } else if let Some(rd) = &r.redirect {
        Action::Redirect(redirect(errs, &format!("{at}.redirect"), rd))
    } else if let Some(rs) = &r.respond {
        Action::Respond(respond(errs, &format!("{at}.respond"), rs))
    } else if publishes {
        let kind = if r.ai.is_some() { "ai" } else { "publish" };
        super::queue::forbids_forwarding(errs, at, r, kind);
        Action::Proxy(proxy_action(errs, at, r, Vec::new(), &matcher))
    } else {
        return None;
    };
    if !proxies && !publishes {
        let kind = set.first().copied().unwrap_or("redirect");
        for (key, set) in [
            ("strip_prefix", r.strip_prefix.is_some()),
            ("rewrite", r.rewrite.is_some()),
            ("websocket", r.websocket.is_some()),
            ("tunnel", r.tunnel.is_some()),
            ("split_header", r.split_header.is_some()),
            ("geo_upstreams", !r.geo_upstreams.is_empty()),
            ("timeouts", r.timeouts.is_some()),
            ("retry", r.retry.is_some()),
            ("mirror", r.mirror.is_some()),
            ("max_body_bytes", r.max_body_bytes.is_some()),
            ("rate_limits", !r.rate_limits.is_empty()),
            ("auth", r.auth.is_some()),
            ("ip_rules", r.ip_rules.is_some()),
            ("cors", r.cors.is_some()),
            ("validate", r.validate.is_some()),
            ("cache", r.cache.is_some()),
            ("request_headers", r.request_headers.is_some()),
            ("response_headers", r.response_headers.is_some()),
            ("queue", r.queue.is_some()),
        ] {
            if set {
                errs.push(format!("{at}.{key}"), format!("not allowed with {kind}"));
            }
        }
    }
    let edits = |errs: &mut Errors, key: &str, e: &Option<file::HeaderEdits>| {
        e.as_ref().map(|e| {
            let at = format!("{at}.{key}");
            super::transform::edits(errs, &at, e, &matcher.path, geo.is_some())
        })
    };
    let request_headers = edits(errs, "request_headers", &r.request_headers);
    let response_headers = edits(errs, "response_headers", &r.response_headers);
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| format!("route-{index}")),
        matcher,
        action,
        websocket: r.websocket.unwrap_or(false),
        tunnel: super::resilience::tunnel(errs, at, r),
        timeouts: super::resilience::timeouts(errs, &format!("{at}.timeouts"), &r.timeouts),
        retry: r
            .retry
            .as_ref()
            .map(|rt| super::resilience::retry(errs, &format!("{at}.retry"), rt)),
        max_body_bytes: r.max_body_bytes,
        rate_limits: r.rate_limits.clone(),
        access: RouteAccess::default(),
        cache: r.cache.as_ref().map(|c| {
            let at = format!("{at}.cache");
            super::cache::route(errs, &at, c, r.auth.is_some(), geo.is_some())
        }),
        request_headers,
        response_headers,
        queue: match proxies {
            true => super::queue::route_queue(errs, &format!("{at}.queue"), r, queues),
            false => None,
        },
        publish: r.publish.as_ref().map(|p| {
            let at = format!("{at}.publish");
            super::queue::publish(errs, &at, p, has_redis, rabbitmq)
        }),
        ai: r
            .ai
            .as_ref()
            .map(|a| std::sync::Arc::new(super::ai::route(errs, &format!("{at}.ai"), a))),
    })
}

fn route_match(errs: &mut Errors, at: &str, m: &file::Match) -> RouteMatch {
    errs.unknown_in(at, &m);
    let hosts = m
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| host_match(errs, &format!("{at}.hosts[{i}]"), h))
        .collect();
    let path = match &m.path {
        None => PathMatch::default(),
        Some(p) => path_match(errs, &format!("{at}.path"), p),
    };
    let methods = m
        .methods
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let upper = s.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    errs.push(
                        format!("{at}.methods[{i}]"),
                        format!("invalid method {s:?}"),
                    );
                    None
                }
            }
        })
        .collect();
    let headers = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let at = format!("{at}.headers[{i}]");
            let test = value_test(errs, &at, p);
            match HeaderName::from_str(&p.name) {
                Ok(name) => Some(HeaderPredicate { name, test: test? }),
                Err(_) => {
                    errs.push(
                        format!("{at}.name"),
                        format!("invalid header name {:?}", p.name),
                    );
                    None
                }
            }
        })
        .collect();
    let query = m
        .query
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let at = format!("{at}.query[{i}]");
            if p.name.is_empty() {
                errs.push(format!("{at}.name"), "empty query parameter name");
            }
            Some(QueryPredicate {
                name: p.name.clone(),
                test: value_test(errs, &at, p)?,
            })
        })
        .collect();
    RouteMatch {
        hosts,
        path,
        methods,
        headers,
        query,
        geo: None,
    }
}

fn host_match(errs: &mut Errors, at: &str, h: &str) -> Option<HostMatch> {
    let h = h.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(rest) = h.strip_prefix("*.") {
        if valid(rest) {
            return Some(HostMatch::WildcardSuffix(format!(".{rest}")));
        }
    } else if valid(&h) {
        return Some(HostMatch::Exact(h));
    }
    errs.push(
        at,
        format!("invalid host {h:?}; use a name like api.example.com or *.example.com"),
    );
    None
}

fn path_match(errs: &mut Errors, at: &str, p: &file::PathMatch) -> PathMatch {
    errs.unknown_in(at, &p);
    let set = [&p.exact, &p.prefix, &p.template, &p.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set != 1 {
        errs.push(at, "exactly one of exact, prefix, template or regex");
        return PathMatch::default();
    }
    let must_start_with_slash = |errs: &mut Errors, key: &str, v: &str| {
        if !v.starts_with('/') {
            errs.push(format!("{at}.{key}"), format!("{v:?} must start with '/'"));
        }
    };
    if let Some(v) = &p.exact {
        must_start_with_slash(errs, "exact", v);
        PathMatch::Exact(v.clone())
    } else if let Some(v) = &p.prefix {
        must_start_with_slash(errs, "prefix", v);
        PathMatch::Prefix(v.clone())
    } else if let Some(v) = &p.template {
        must_start_with_slash(errs, "template", v);
        PathMatch::Template(v.clone())
    } else if let Some(v) = &p.regex {
        match Regex::new(v) {
            Ok(r) => PathMatch::Regex(r),
            Err(e) => {
                errs.push(format!("{at}.regex"), format!("invalid regex: {e}"));
                PathMatch::default()
            }
        }
    } else {
        PathMatch::default()
    }
}

fn value_test(errs: &mut Errors, at: &str, p: &file::Predicate) -> Option<ValueTest> {
    errs.unknown_in(at, &p);
    match (&p.exact, &p.regex, p.present) {
        (Some(v), None, None) => Some(ValueTest::Exact(v.clone())),
        (None, Some(r), None) => match Regex::new(r) {
            Ok(r) => Some(ValueTest::Regex(r)),
            Err(e) => {
                errs.push(format!("{at}.regex"), format!("invalid regex: {e}"));
                None
            }
        },
        (None, None, Some(true)) => Some(ValueTest::Present),
        (None, None, Some(false)) => Some(ValueTest::Absent),
        (None, None, None) => Some(ValueTest::Present),
        _ => {
            errs.push(at, "at most one of exact, regex or present");
            None
        }
    }
}

fn proxy_action(
    errs: &mut Errors,
    at: &str,
    r: &file::Route,
    upstreams: Vec<WeightedUpstream>,
    matcher: &RouteMatch,
) -> ProxyAction {
    if let Some(p) = &r.strip_prefix {
        if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) {
            errs.push(
                format!("{at}.strip_prefix"),
                format!("{p:?} must start with '/' and not end with '/'"),
            );
        }
    }
    let mut rewrite = None;
    let mut host_rewrite = None;
    if let Some(rw) = &r.rewrite {
        let at = format!("{at}.rewrite");
        errs.unknown_in(&at, &rw);
        rewrite = match (&rw.path, &rw.regex, &rw.replacement) {
            (Some(p), None, None) => {
                if !p.starts_with('/') {
                    errs.push(format!("{at}.path"), format!("{p:?} must start with '/'"));
                }
                if p.contains('{') && !matches!(matcher.path, PathMatch::Template(_)) {
                    errs.push(
                        format!("{at}.path"),
                        "{param} substitution needs a template path match",
                    );
                }
                Some(PathRewrite::Replace(p.clone()))
            }
            (None, Some(re), Some(rep)) => match Regex::new(re) {
                Ok(pattern) => Some(PathRewrite::Regex {
                    pattern,
                    replacement: rep.clone(),
                }),
                Err(e) => {
                    errs.push(format!("{at}.regex"), format!("invalid regex: {e}"));
                    None
                }
            },
            (None, None, None) => None,
            _ => {
                errs.push(&at, "use either path, or regex with replacement");
                None
            }
        };
        if let Some(h) = &rw.host {
            match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => host_rewrite = Some(v),
                _ => errs.push(format!("{at}.host"), format!("invalid host {h:?}")),
            }
        }
    }
    ProxyAction {
        upstreams,
        split_header: super::resilience::split_header(errs, at, r),
        mirror: super::resilience::mirror(errs, at, r),
        strip_prefix: r.strip_prefix.clone(),
        rewrite,
        host_rewrite,
        geo_upstreams: Vec::new(),
    }
}

fn redirect(errs: &mut Errors, at: &str, r: &file::Redirect) -> Redirect {
    errs.unknown_in(at, &r);
    let status = match r.status.unwrap_or(302) {
        s @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(s).unwrap_or(StatusCode::FOUND),
        s => {
            errs.push(
                format!("{at}.status"),
                format!("{s} is not a redirect status; use 301, 302, 303, 307 or 308"),
            );
            StatusCode::FOUND
        }
    };
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            errs.push(
                format!("{at}.scheme"),
                format!("{s:?} must be http or https"),
            );
        }
    }
    if let Some(p) = &r.path {
        if !p.starts_with('/') {
            errs.push(format!("{at}.path"), format!("{p:?} must start with '/'"));
        }
    }
    Redirect {
        status,
        scheme: r.scheme.clone(),
        host: r.host.clone(),
        port: r.port,
        path: r.path.clone(),
        strip_query: r.strip_query.unwrap_or(false),
    }
}

/// `respond`: status (default 200), body, content type and fields of a fixed answer.
fn respond(errs: &mut Errors, at: &str, r: &file::Respond) -> Respond {
    errs.unknown_in(at, &r);
    let status = match r.status.unwrap_or(200) {
        s @ 200..=599 => StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
        s => {
            errs.push(
                format!("{at}.status"),
                format!("{s} cannot be answered; use a status from 200 to 599"),
            );
            StatusCode::OK
        }
    };
    let body = r.body.clone().unwrap_or_default();
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if bodiless && !body.is_empty() {
        errs.push(
            format!("{at}.body"),
            format!("a {} answer has no body", status.as_u16()),
        );
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in &r.headers {
        let key = format!("{at}.headers.{name}");
        let Ok(n) = HeaderName::from_str(name) else {
            errs.push(key, format!("invalid header name {name:?}"));
            continue;
        };
        if matches!(
            n.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "content-type" | "trailer"
        ) {
            let why = match n.as_str() {
                "content-type" => "set it with `content_type`",
                _ => "the gateway frames the answer itself",
            };
            errs.push(key, format!("{n} cannot be set here: {why}"));
            continue;
        }
        match HeaderValue::from_str(value) {
            Ok(v) => {
                headers.append(n, v);
            }
            Err(_) => errs.push(key, format!("{value:?} is not a valid field value")),
        }
    }
    let content_type = match &r.content_type {
        Some(t) => Some(t.as_str()),
        None if !body.is_empty() => Some("text/plain; charset=utf-8"),
        None => None,
    };
    if let Some(t) = content_type {
        match HeaderValue::from_str(t) {
            Ok(v) => {
                headers.insert(http::header::CONTENT_TYPE, v);
            }
            Err(_) => errs.push(
                format!("{at}.content_type"),
                format!("{t:?} is not a valid content type"),
            ),
        }
    }
    Respond {
        status,
        headers,
        body: bytes::Bytes::from(body),
    }
}

pub(super) fn socket_addr(errs: &mut Errors, at: &str, s: &str) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                at,
                format!("invalid address {s:?}; use IP:PORT like 127.0.0.1:8080"),
            );
            None
        }
    }
}

fn cidr(errs: &mut Errors, at: &str, s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(IpNet::from(ip));
    }
    errs.push(
        at,
        format!("invalid CIDR {s:?}; use 10.0.0.0/8 or an address"),
    );
    None
}

/// A signing key given as `secret` or in the environment variable `secret_env` (exactly one,
/// at least `min` bytes), reported at `at`.
pub(super) fn secret_or_env(
    errs: &mut Errors,
    at: &str,
    secret: Option<&String>,
    secret_env: Option<&String>,
    min: usize,
) -> Vec<u8> {
    let secret = match (secret, secret_env) {
        (Some(s), None) => s.as_bytes().to_vec(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => v.into_bytes(),
            _ => {
                errs.push(
                    format!("{at}.secret_env"),
                    format!("the environment variable {var} is not set"),
                );
                Vec::new()
            }
        },
        _ => {
            errs.push(at, "needs exactly one of secret and secret_env");
            Vec::new()
        }
    };
    if !secret.is_empty() && secret.len() < min {
        errs.push(at, format!("the secret must be at least {min} bytes"));
    }
    secret
}

pub(super) fn opt_duration(
    errs: &mut Errors,
    at: &str,
    v: &Option<String>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Some(d) => d,
            None => {
                errs.push(
                    at,
                    format!("invalid duration {s:?}; use e.g. 250ms, 5s, 2m"),
                );
                default
            }
        },
    }
}

/// `250ms`, `5s`, `2m`, `1h`, `1d`; whole numbers only.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "d" => Some(Duration::from_secs(n.checked_mul(86_400)?)),
        _ => None,
    }
}

/// A size given as an integer, or as a string: whole bytes (`"4096"`) or a whole number with
/// a binary suffix (`512KiB`, `8MiB`, `1GiB`). Decimal suffixes (`MB`) are refused rather
/// than guessed at.
pub(super) fn parse_byte_size(v: &file::ByteSize) -> Option<u64> {
    let s = match v {
        file::ByteSize::Bytes(n) => return Some(*n),
        file::ByteSize::Text(s) => s.trim(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A size that must be more than 0: `default` when absent, `None` (reported) when invalid.
pub(super) fn opt_positive_size(
    errs: &mut Errors,
    at: &str,
    v: &Option<file::ByteSize>,
    default: usize,
) -> Option<usize> {
    let Some(v) = v else {
        return Some(default);
    };
    match parse_byte_size(v).map(usize::try_from) {
        Some(Ok(0)) => {
            errs.push(at, "must be more than 0");
            None
        }
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errs.push(at, "too large for this platform");
            None
        }
        None => {
            let text = match v {
                file::ByteSize::Bytes(n) => n.to_string(),
                file::ByteSize::Text(s) => s.clone(),
            };
            errs.push(
                at,
                format!("invalid size {text:?}; use bytes or e.g. 512KiB, 8MiB, 1GiB"),
            );
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match crate::config::parse(yaml, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_group_by_the_clients_place_needs_geo_and_known_fields() {
        let errs = errors(
            "listeners: [{address: 127.0.0.1:0}]
upstreams:
  app:
    locality: {client: {zone: town}}
    targets: [{address: 127.0.0.1:1, zone: a}]
routes:
  - upstream: app
",
        );
        let all = errs.join("\n");
        assert!(
            all.contains("upstreams.app.locality.client: needs the top-level `geo`"),
            "{all}"
        );
        assert!(
            all.contains("upstreams.app.locality.client.zone: unknown geo field \"town\""),
            "{all}"
        );
        assert!(!all.contains("top-level `locality`"), "{all}");
    }

    const OK: &str = "
listeners: [{address: 127.0.0.1:8080}]
upstreams:
  api: {targets: [{address: 127.0.0.1:9001}]}
routes:
  - match: {path: {prefix: /}}
    upstream: api
";

    #[test]
    fn minimal_config_is_valid() {
        assert_eq!(errors(OK), Vec::<String>::new());
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let yaml = "
listeners: [{address: 127.0.0.1:80800}]
upstreams:
  api: {targets: [{address: 127.0.0.1:9001}], balancer: fastest}
routes:
  - match: {path: {regex: '(('}}
    upstream: nope
    colour: blue
";
        let errs = errors(yaml);
        assert_eq!(
            errs.len(),
            5,
            "all five problems are listed at once: {errs:#?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("listeners[0].address: ")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("upstreams.api.balancer: ")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("routes[0].match.path.regex: ")));
        assert!(errs.iter().any(|e| e.starts_with("routes[0].upstream: ")));
        assert!(errs.iter().any(|e| e == "routes[0].colour: unknown key"));
    }

    #[test]
    fn tunnel_settings_are_checked_with_their_paths() {
        let yaml = "
listeners: [{address: 127.0.0.1:8080}]
upstreams:
  api: {targets: [{address: 127.0.0.1:9001}]}
routes:
  - match: {path: {prefix: /a}}
    upstream: api
    tunnel: {idle_timeout: 0s}
  - upstream: api
    websocket: true
    tunnel: {max_lifetime: soon, max_message_bytes: 1MB, max_open: 0, ping_intervl: 5s}
";
        let errs = errors(yaml);
        for want in [
            "routes[0].tunnel: needs `websocket: true` on the route",
            "routes[0].tunnel.idle_timeout: must be more than 0",
            "routes[1].tunnel.max_lifetime: invalid duration",
            "routes[1].tunnel.max_message_bytes: must be a size",
            "routes[1].tunnel.max_open: must be more than 0",
            "routes[1].tunnel.ping_intervl: unknown key; did you mean \"ping_interval\"?",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }

    #[test]
    fn tunnels_close_after_an_idle_hour_by_default() {
        let config =
            crate::config::parse(&format!("{OK}    websocket: true\n"), Path::new(".")).unwrap();
        let t = config.routes[0].tunnel;
        assert_eq!(t.idle_timeout, Duration::from_secs(3600));
        assert_eq!(
            (t.max_lifetime, t.ping_interval, t.max_open),
            (None, None, None)
        );
    }

    #[test]
    fn upstream_idle_timeout_defaults_below_common_backend_keepalive() {
        let config = crate::config::parse(OK, Path::new(".")).unwrap();
        let idle = config.upstreams[0].keepalive_idle;
        assert_eq!(idle, Duration::from_secs(4));
        assert!(
            idle < Duration::from_secs(5),
            "the pool must give idle connections up before Node's 5 s keepAliveTimeout"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn durations_accept_days() {
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn wildcard_hosts_are_stored_as_suffixes() {
        let cfg = crate::config::parse(
            &OK.replace(
                "{path: {prefix: /}}",
                "{hosts: ['*.Example.com'], path: {prefix: /}}",
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            cfg.routes[0].matcher.hosts,
            vec![HostMatch::WildcardSuffix(".example.com".into())]
        );
    }

    #[test]
    fn client_auth_without_a_readable_ca_file_is_reported_at_its_path() {
        let tls = |client_auth: &str| {
            OK.replace(
                "listeners: [{address: 127.0.0.1:8080}]",
                &format!(
                    "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates: [{{cert: Cargo.toml, key: Cargo.toml}}]\n      client_auth: {client_auth}"
                ),
            )
        };
        let errs = errors(&tls("{ca_file: missing-ca.pem}"));
        assert_eq!(
            errs,
            ["listeners[0].tls.client_auth.ca_file: no such file: missing-ca.pem"]
        );
        let errs = errors(&tls("{mode: optional}"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("listeners[0].tls.client_auth.ca_file: required"));
        // A file that holds no certificate is refused at check time too.
        let errs = errors(&tls("{ca_file: Cargo.toml}"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("listeners[0].tls.client_auth.ca_file: no certificate in"),
            "{errs:?}"
        );
        let errs = errors(&tls("{ca_file: Cargo.toml, mode: sometimes}"));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("listeners[0].tls.client_auth.mode: unknown mode")));
    }

    #[test]
    fn mtls_method_and_certificate_names_are_checked_with_their_paths() {
        let yaml = format!(
            "{OK}consumers:
  alice: {{certificate_names: [svc]}}
  bob: {{certificate_names: [bob, svc, \"\"]}}
auth:
  methods:
    cert: {{mtls: {{consumer_from: san_dns}}}}
    odd: {{mtls: {{consumer_from: issuer}}}}
"
        );
        let errs = errors(&yaml);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with("consumers.bob.certificate_names[1]: "));
        assert!(errs[0].contains("also listed by consumer \"alice\""));
        assert!(errs[1].starts_with("consumers.bob.certificate_names[2]: "));
        assert!(errs[2].starts_with("auth.methods.odd.mtls.consumer_from: unknown source"));
    }

    fn with_listener(listener: &str) -> String {
        format!(
            "listeners:\n  - address: 127.0.0.1:8080\n{listener}upstreams:\n  api: {{targets: [{{address: 127.0.0.1:9001}}]}}\nroutes:\n  - upstream: api\n"
        )
    }

    fn first_listener(listener: &str) -> Listener {
        match crate::config::parse(&with_listener(listener), Path::new(".")) {
            Ok(c) => c.listeners[0].clone(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn h2c_is_true_false_or_only() {
        assert_eq!(first_listener("").h2c, H2cMode::BesideHttp1);
        assert_eq!(first_listener("    h2c: true\n").h2c, H2cMode::BesideHttp1);
        assert_eq!(first_listener("    h2c: false\n").h2c, H2cMode::Off);
        assert_eq!(first_listener("    h2c: only\n").h2c, H2cMode::Only);
        assert_eq!(
            errors(&with_listener("    h2c: sometimes\n")),
            ["listeners[0].h2c: unknown h2c mode \"sometimes\"; use true, false or only"]
        );
    }

    #[test]
    fn h2_server_is_hyper_or_native() {
        assert_eq!(first_listener("").h2_server, H2Server::Hyper);
        assert_eq!(
            first_listener("    h2_server: hyper\n").h2_server,
            H2Server::Hyper
        );
        assert_eq!(
            first_listener("    h2_server: native\n").h2_server,
            H2Server::Native
        );
        assert_eq!(
            errors(&with_listener("    h2_server: h2o\n")),
            ["listeners[0].h2_server: unknown HTTP/2 server \"h2o\"; use hyper or native"]
        );
    }

    #[test]
    fn http2_settings_reach_the_model() {
        let l = first_listener(
            "    limits:\n      h2_max_concurrent_streams: 50\n      h2_initial_stream_window: 65535\n      h2_initial_connection_window: 67108864\n      h2_idle_timeout: 30s\n",
        );
        assert_eq!(l.limits.h2_max_concurrent_streams, 50);
        assert_eq!(l.limits.h2_initial_stream_window, 65_535);
        assert_eq!(l.limits.h2_initial_connection_window, 64 << 20);
        assert_eq!(l.limits.h2_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn http2_idle_timeout_defaults_to_the_keepalive_timeout() {
        let l = first_listener("    limits:\n      keepalive_timeout: 20s\n");
        assert_eq!(l.limits.h2_idle_timeout, Duration::from_secs(20));
        assert_eq!(
            first_listener("").limits.h2_idle_timeout,
            first_listener("").limits.keepalive_timeout
        );
    }

    #[test]
    fn http2_settings_out_of_bounds_are_reported_with_their_paths() {
        let errs = errors(&with_listener(
            "    limits:\n      h2_max_concurrent_streams: 1001\n      h2_initial_stream_window: 65534\n      h2_initial_connection_window: 67108865\n      h2_idle_timeout: 0s\n",
        ));
        assert_eq!(
            errs,
            [
                "listeners[0].limits.h2_max_concurrent_streams: must be between 1 and 1000",
                "listeners[0].limits.h2_initial_stream_window: must be between 65535 and 16777216",
                "listeners[0].limits.h2_initial_connection_window: must be between 65535 and 67108864",
                "listeners[0].limits.h2_idle_timeout: must be more than 0",
            ]
        );
        assert_eq!(
            errors(&with_listener(
                "    limits:\n      h2_max_concurrent_streams: 0\n"
            )),
            ["listeners[0].limits.h2_max_concurrent_streams: must be between 1 and 1000"]
        );
    }
}
