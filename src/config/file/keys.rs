//! The keys each file type knows, for the "did you mean" hint on an unknown key. The lists
//! are checked against the struct definitions by a test, so a new field cannot be left out.

use super::*;

/// A file type whose unknown keys are collected in `unknown`, and the keys it knows.
pub trait Keys {
    /// The keys as written in YAML (`match`, not `matcher`).
    const KEYS: &'static [&'static str];
    fn unknown(&self) -> &Unknown;
}

impl<T: Keys> Keys for &T {
    const KEYS: &'static [&'static str] = T::KEYS;
    fn unknown(&self) -> &Unknown {
        (*self).unknown()
    }
}

macro_rules! keys {
    ($($name:ident: [$($key:literal),* $(,)?],)*) => {
        $(
            impl Keys for $name {
                const KEYS: &'static [&'static str] = &[$($key),*];
                fn unknown(&self) -> &Unknown {
                    &self.unknown
                }
            }
        )*
        /// The known keys of the file type named `name`, for the test below.
        #[cfg(test)]
        fn keys_of(name: &str) -> Option<&'static [&'static str]> {
            match name {
                $(stringify!($name) => Some(<$name as Keys>::KEYS),)*
                _ => None,
            }
        }
    };
}

keys! {
    RouteAi: ["providers", "models", "prices", "max_tokens", "consumers", "budgets", "prompt", "cache"],
    AiProvider: ["kind", "url", "api_key", "api_key_env", "api_version", "deployments", "anthropic_version", "first_token_timeout", "timeout"],
    AiModel: ["targets", "fallback"],
    AiTarget: ["provider", "model", "weight", "tokenizer"],
    AiPrice: ["input", "output"],
    AiConsumer: ["models"],
    AiBudget: ["policy", "counts", "estimate_output"],
    AiPrompt: ["model", "system", "template", "output"],
    AiCache: ["ttl", "max_entries", "per_consumer"],
    File: ["workers", "listeners", "admin", "access_log", "metrics", "upstreams", "routes", "shutdown_drain", "redis", "rate_limiting", "consumers", "auth", "cache", "queues", "rabbitmq", "geo", "dns", "locality", "tracing", "history", "alerts", "data_dir"],
    Redis: ["url", "sentinel", "cluster", "timeout"],
    Sentinel: ["master", "urls"],
    RateLimiting: ["max_keys", "consumer_header", "policies"],
    RatePolicy: ["algorithm", "limit", "window", "rate", "period", "burst", "key", "ipv6_prefix", "store", "redis_mode", "batch_interval", "batch_max_pending", "on_redis_error", "x_ratelimit_headers"],
    Listener: ["name", "address", "h2c", "h2_server", "tls", "trusted_proxies", "limits", "trust_trace_context"],
    Tracing: ["sample_ratio", "sample_errors", "sample_slower_than", "service_name", "otlp", "queue_size", "batch_size", "export_interval"],
    Otlp: ["endpoint", "protocol", "headers", "timeout"],
    History: ["keep_10s", "keep_1m", "max_names"],
    Alerts: ["evaluate_every", "repeat_every", "notifiers", "rules"],
    Notifier: ["kind", "url", "url_env", "secret", "secret_env", "timeout", "max_attempts"],
    AlertRule: ["name", "metric", "route", "upstream", "target", "consumer", "above", "below", "window", "change_over", "for", "severity", "notify", "summary"],
    Tls: ["certificates", "min_version", "h2", "client_auth"],
    ClientAuth: ["ca_file", "mode"],
    Certificate: ["cert", "key", "server_names"],
    Limits: ["max_request_line", "max_header_bytes", "max_headers", "max_chunk_extension", "header_timeout", "keepalive_timeout", "body_timeout", "max_body_bytes", "max_connections", "max_connections_per_ip", "h2_max_concurrent_streams", "h2_initial_stream_window", "h2_initial_connection_window", "h2_idle_timeout"],
    Admin: ["address", "tokens", "versions_kept", "tls", "etcd"],
    Etcd: ["endpoints", "prefix", "timeout"],
    AdminToken: ["name", "role", "sha256", "token_env"],
    AccessLog: ["enabled", "target", "sample_success"],
    SampleSuccess: ["above_per_second", "ratio"],
    Metrics: ["enabled"],
    Upstream: ["targets", "balancer", "hash_on", "protocol", "tls", "connect_timeout", "request_timeout", "keepalive", "health_check", "circuit_breaker", "max_concurrent_requests", "queue", "sticky", "locality", "client_credentials"],
    UpstreamTls: ["server_name", "ca_file", "client_certificate", "verify"],
    ClientCertificate: ["cert", "key"],
    HealthCheck: ["active", "passive"],
    ActiveCheck: ["type", "path", "method", "host", "expected_statuses", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"],
    PassiveCheck: ["consecutive_5xx", "consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent"],
    CircuitBreaker: ["consecutive_failures", "error_ratio", "min_requests", "window", "open_for", "half_open_probes"],
    Queue: ["size", "timeout"],
    Sticky: ["cookie", "ttl", "secret", "secure", "same_site"],
    Keepalive: ["idle_timeout", "max_idle"],
    Target: ["address", "weight", "srv", "region", "zone"],
    Locality: ["region", "zone"],
    GroupLocality: ["min_available_percent", "max_in_flight", "client"],
    ClientPlace: ["zone", "region"],
    Dns: ["servers", "min_ttl", "max_ttl", "timeout"],
    Route: ["name", "match", "upstream", "strip_prefix", "rewrite", "redirect", "respond", "websocket", "tunnel", "split", "split_header", "geo_upstreams", "mirror", "timeouts", "retry", "max_body_bytes", "rate_limits", "auth", "oidc", "ip_rules", "cors", "validate", "cache", "request_headers", "response_headers", "queue", "publish", "ai"],
    Publish: ["redis_stream", "nats_subject", "nats_url", "rabbitmq_exchange", "routing_key", "headers", "max_len"],
    RabbitMq: ["url"],
    JobQueue: ["backend", "path", "concurrency", "attempt_timeout", "max_attempts", "retry_delay", "max_retry_delay", "retry_statuses", "max_depth", "max_bytes", "result_ttl", "max_result_bytes", "idempotency_ttl", "key_prefix", "visibility_timeout", "nats_url", "callback"],
    Callback: ["url", "allow", "secret", "secret_env", "max_attempts", "timeout"],
    RouteQueue: ["name", "status_path"],
    Respond: ["status", "body", "content_type", "headers"],
    HeaderEdits: ["set", "add", "remove"],
    SplitEntry: ["upstream", "weight"],
    Mirror: ["upstream", "percent"],
    Timeouts: ["connect", "response_header", "idle", "total"],
    Tunnel: ["idle_timeout", "max_lifetime", "ping_interval", "max_message_bytes", "max_open", "max_open_per_ip"],
    Retry: ["attempts", "on", "per_try_timeout", "non_idempotent", "backoff", "budget"],
    Backoff: ["base", "max"],
    Budget: ["ratio", "min_per_second"],
    Match: ["hosts", "path", "methods", "headers", "query", "geo"],
    PathMatch: ["exact", "prefix", "template", "regex"],
    Predicate: ["name", "exact", "regex", "present"],
    Rewrite: ["path", "regex", "replacement", "host"],
    Redirect: ["status", "scheme", "host", "port", "path", "strip_query"],
    Geo: ["databases", "networks", "networks_file", "default", "headers", "reload_interval", "metrics_countries"],
    GeoDefault: ["country", "continent", "subdivision", "asn", "label"],
    GeoMatch: ["countries", "continents", "subdivisions", "asns", "labels", "not_countries", "not_continents", "not_subdivisions", "not_asns", "not_labels"],
    GeoUpstream: ["when", "upstream"],
    Consumer: ["groups", "metadata", "api_keys", "password_hash", "certificate_names"],
    Auth: ["consumer_header", "methods"],
    AuthMethod: ["api_key", "basic", "jwt", "introspection", "mtls"],
    Mtls: ["consumer_from"],
    ApiKey: ["header", "query", "hide_credentials"],
    Basic: ["realm", "cache_ttl", "hide_credentials"],
    TokenSource: ["header", "scheme", "cookie", "query"],
    Jwt: ["keys", "jwks", "issuers", "audiences", "leeway", "required_claims", "required_scopes", "forward_claims", "token", "cache_size", "cache_ttl", "hide_credentials"],
    JwtKey: ["kid", "alg", "secret", "pem", "pem_file", "jwk"],
    Jwks: ["url", "refresh_interval", "min_refetch_interval", "timeout", "algorithms"],
    ClientCredentials: ["token_url", "client_id", "client_secret_env", "private_key_file", "private_key_alg", "private_key_kid", "scopes", "audience", "refresh_before", "timeout"],
    Oidc: ["discovery", "client_id", "client_secret_env", "redirect_path", "logout_path", "post_logout_redirect", "backchannel_logout_path", "scopes", "unauthenticated", "cookie_name", "cookie_secure", "idle_timeout", "absolute_timeout", "refresh_before", "forward_access_token", "forward_claims", "timeout", "sessions"],
    Introspection: ["url", "client_id", "client_secret", "timeout", "cache_size", "max_cache_ttl", "token_type_hint", "required_scopes", "forward_claims", "token", "hide_credentials"],
    RouteAuth: ["methods", "allow", "deny"],
    Matchers: ["consumers", "groups", "scopes", "claims"],
    IpRules: ["allow", "deny"],
    Cors: ["origins", "origin_regexes", "methods", "allowed_headers", "exposed_headers", "credentials", "max_age"],
    Validate: ["body", "max_body_bytes", "params"],
    Param: ["name", "in", "required", "pattern", "values", "min", "max", "max_length"],
    Cache: ["max_bytes", "max_object_bytes", "lock_timeout", "heuristic_percent", "heuristic_max", "surrogate_header", "status_name", "strip_targeted", "redis"],
    CacheRedis: ["prefix", "max_object_bytes"],
    RouteCache: ["key_headers", "key_cookies", "key_consumer", "key_geo", "store_set_cookie"],
}

/// The closest known key to `key`, when it is close enough to be a likely misspelling.
pub fn suggestion(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let wanted = key.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (distance(&wanted, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance (insertions, deletions, substitutions, and swaps of neighbours).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Rows of the distance table: two back (for swaps), the previous one, the current one.
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let mut d = (prev[j + 1] + 1).min(row[j] + 1).min(prev[j] + cost);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                d = d.min(before[j - 1] + 1);
            }
            row.push(d);
        }
        before = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The YAML keys of every struct with an `unknown` catch-all in `src`, read from its
    /// definition (`rename = "…"` honoured).
    fn declared(src: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut current: Option<(String, Vec<String>, bool)> = None;
        let mut rename = None;
        for line in src.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.split([' ', '{']).next().unwrap_or("").to_owned();
                current = Some((name, Vec::new(), false));
                continue;
            }
            let Some((_, keys, catch_all)) = current.as_mut() else {
                continue;
            };
            if line == "}" {
                if let Some((name, keys, true)) = current.take() {
                    out.push((name, keys));
                }
                current = None;
                continue;
            }
            if line.starts_with("#[") {
                if let Some(at) = line.find("rename = \"") {
                    let rest = &line[at + 10..];
                    rename = rest.split('"').next().map(str::to_owned);
                }
                continue;
            }
            if let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split(':').next()) {
                match field {
                    "unknown" => *catch_all = true,
                    f => keys.push(rename.take().unwrap_or_else(|| f.to_owned())),
                }
                rename = None;
            }
        }
        out
    }

    #[test]
    fn every_file_type_lists_exactly_its_keys() {
        let sources = [
            include_str!("../file.rs"),
            include_str!("access.rs"),
            include_str!("cache.rs"),
            include_str!("queue.rs"),
            include_str!("geo.rs"),
            include_str!("tracing.rs"),
            include_str!("alerts.rs"),
            include_str!("ai.rs"),
        ];
        let mut seen = 0;
        for (name, keys) in sources.iter().flat_map(|s| declared(s)) {
            let listed = keys_of(&name).unwrap_or_else(|| panic!("{name} has no key list"));
            assert_eq!(listed, keys, "the key list of {name}");
            seen += 1;
        }
        assert!(seen > 50, "only {seen} file types found");
    }

    #[test]
    fn a_close_misspelling_gets_a_suggestion_and_a_far_one_none() {
        let route = <Route as Keys>::KEYS;
        assert_eq!(suggestion("ratelimits", route), Some("rate_limits"));
        assert_eq!(suggestion("upsteam", route), Some("upstream"));
        assert_eq!(suggestion("Strip-Prefix", route), Some("strip_prefix"));
        assert_eq!(suggestion("colour", route), None);
    }
}
