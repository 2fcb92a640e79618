//! CORS answered by the gateway: preflight requests get their answer here without reaching
//! the upstream, and responses to actual cross-origin requests get their
//! `Access-Control-*` headers here (the gateway's answer replaces the upstream's).
//!
//! Origins match an exact entry (ASCII case-insensitive), a pattern `https://*.example.com`
//! (`*` stands for one or more DNS labels, so it matches `https://a.b.example.com` but not
//! `https://example.com`; a port must be written in the pattern to be accepted), a regex
//! entry (anchored: it must match the whole origin), or `*`.
//!
//! `*` with credentials cannot be answered with a literal `*` (browsers reject it), so the
//! request's origin is echoed instead, with `Vary: Origin` so caches keep answers apart.
//! The origin `null` (sandboxed iframes, `file:` pages, some redirects) is shared by every
//! such document on the web, so only an exact `null` entry admits it and `*` with
//! credentials never does; `*` without credentials answers `*`, which admits it harmlessly.
//!
//! A preflight's requested method and headers are checked case-insensitively and echoed
//! back, which satisfies the browser's byte-wise comparison whatever the case it used. The
//! CORS-safelisted methods (GET, HEAD, POST) are always accepted, as the Fetch standard
//! does; CORS does not protect a server from requests, it decides which pages may read them.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

/// Longest `Origin` or `Access-Control-Request-Headers` value considered.
const MAX_VALUE_LEN: usize = 4096;

/// The CORS policy of a route as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    pub origins: Vec<OriginRule>,
    /// Methods beyond GET, HEAD and POST that pages may use.
    pub methods: Vec<Method>,
    /// Request headers pages may send; an entry `*` allows any.
    pub allowed_headers: Vec<String>,
    /// Response headers pages may read beyond the safelisted ones; `*` (all) only without
    /// credentials.
    pub exposed_headers: Vec<String>,
    /// Whether pages may send cookies and HTTP authentication.
    pub credentials: bool,
    /// How long browsers may cache a preflight answer.
    pub max_age: Option<Duration>,
}

/// One origin entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: any origin.
    Any,
    /// `https://app.example.com` or `null`.
    Exact(String),
    /// `https://*.example.com`.
    Pattern(String),
    /// A regex that must match the whole origin.
    Regex(String),
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    any_origin: bool,
    exact: Vec<String>,
    patterns: Vec<Pattern>,
    regexes: Vec<Regex>,
    methods: Vec<Method>,
    any_header: bool,
    allowed_headers: Vec<HeaderName>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// What to do with a request that may be a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Not a preflight: route it normally.
    NotCors,
    /// Answer 204 with these headers, without calling the upstream.
    Allowed(HeaderMap),
    /// Answer 403 without CORS headers: the browser will refuse the actual request.
    Denied(CorsDenial),
}

/// Why a preflight was refused (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorsDenial {
    #[error("origin not allowed")]
    Origin,
    #[error("requested method not allowed")]
    Method,
    #[error("requested header not allowed")]
    Headers,
}

/// A CORS setting rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("origin {0:?} is not scheme://host[:port] or null")]
    BadOrigin(String),
    #[error("origin pattern {0:?} must look like scheme://*.domain[:port]")]
    BadPattern(String),
    #[error("origin regex {pattern:?} does not compile: {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("header name {0:?} is invalid")]
    BadHeader(String),
    #[error("exposed header `*` is not allowed with credentials (browsers read it literally)")]
    WildcardExposeWithCredentials,
}

/// `scheme://` + one or more labels + `.suffix[:port]`, all lower case.
#[derive(Debug, Clone)]
struct Pattern {
    prefix: String,
    suffix: String,
}

const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const STAR: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

impl OriginRule {
    /// Reads a configured entry: `*`, `~regex`, a pattern containing `*`, else exact.
    pub fn parse(entry: &str) -> OriginRule {
        if entry == "*" {
            OriginRule::Any
        } else if let Some(re) = entry.strip_prefix('~') {
            OriginRule::Regex(re.into())
        } else if entry.contains('*') {
            OriginRule::Pattern(entry.into())
        } else {
            OriginRule::Exact(entry.into())
        }
    }
}

impl CorsPolicy {
    /// Compiles the settings, checking every entry.
    pub fn new(settings: &CorsSettings) -> Result<CorsPolicy, CorsError> {
        let mut policy = CorsPolicy {
            any_origin: false,
            exact: Vec::new(),
            patterns: Vec::new(),
            regexes: Vec::new(),
            methods: settings.methods.clone(),
            any_header: false,
            allowed_headers: Vec::new(),
            exposed: None,
            credentials: settings.credentials,
            max_age: settings.max_age.map(|d| HeaderValue::from(d.as_secs())),
        };
        for rule in &settings.origins {
            match rule {
                OriginRule::Any => policy.any_origin = true,
                OriginRule::Exact(origin) => policy.exact.push(check_origin(origin)?),
                OriginRule::Pattern(p) => policy.patterns.push(Pattern::new(p)?),
                OriginRule::Regex(re) => {
                    policy
                        .regexes
                        .push(Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                            CorsError::BadRegex {
                                pattern: re.clone(),
                                reason: e.to_string(),
                            }
                        })?)
                }
            }
        }
        for name in &settings.allowed_headers {
            if name == "*" {
                policy.any_header = true;
            } else {
                let parsed = HeaderName::try_from(name.as_str())
                    .map_err(|_| CorsError::BadHeader(name.clone()))?;
                policy.allowed_headers.push(parsed);
            }
        }
        policy.exposed = exposed_value(&settings.exposed_headers, settings.credentials)?;
        Ok(policy)
    }

    /// Classifies a request and, for a preflight, computes the answer.
    pub fn preflight(&self, headers: &HeaderMap, method: &Method) -> Preflight {
        if method != Method::OPTIONS {
            return Preflight::NotCors;
        }
        let Some(requested) = headers.get(ACCESS_CONTROL_REQUEST_METHOD) else {
            return Preflight::NotCors;
        };
        if !headers.contains_key(ORIGIN) {
            return Preflight::NotCors;
        }
        let Some(allow_origin) = self.allow_origin(headers) else {
            return Preflight::Denied(CorsDenial::Origin);
        };
        if !self.method_allowed(requested.as_bytes()) {
            return Preflight::Denied(CorsDenial::Method);
        }
        let requested_headers = match self.headers_allowed(headers) {
            Ok(value) => value,
            Err(denial) => return Preflight::Denied(denial),
        };
        let mut answer = HeaderMap::with_capacity(6);
        answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        answer.insert(VARY, VARY_PREFLIGHT);
        if self.credentials {
            answer.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        answer.insert(ACCESS_CONTROL_ALLOW_METHODS, requested.clone());
        if let Some(value) = requested_headers {
            answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        if let Some(max_age) = &self.max_age {
            answer.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        Preflight::Allowed(answer)
    }

    /// Sets the CORS headers of a response to an actual (non-preflight) request, replacing
    /// any the upstream sent.
    pub fn actual(&self, request: &HeaderMap, response: &mut HeaderMap) {
        response.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        response.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        response.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
        if self.varies_by_origin() {
            // Also without an Origin header: a cache must not hand this origin-less answer
            // to a cross-origin request.
            append_vary_origin(response);
        }
        let Some(allow_origin) = self.allow_origin(request) else {
            return;
        };
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            response.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(exposed) = &self.exposed {
            response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }

    /// Whether the answer depends on the request's origin (anything but a plain `*`).
    fn varies_by_origin(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its origin is allowed.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if !self.varies_by_origin() {
            return Some(STAR);
        }
        let mut all = headers.get_all(ORIGIN).iter();
        let origin = all.next()?;
        if all.next().is_some() || origin.len() > MAX_VALUE_LEN {
            return None;
        }
        let text = origin.to_str().ok()?;
        self.origin_allowed(text).then(|| origin.clone())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.exact.iter().any(|e| e.eq_ignore_ascii_case(origin)) {
            return true;
        }
        if origin == "null" {
            return false;
        }
        self.any_origin
            || self.patterns.iter().any(|p| p.matches(origin))
            || self.regexes.iter().any(|r| r.is_match(origin))
    }

    fn method_allowed(&self, requested: &[u8]) -> bool {
        let safelisted = [&b"GET"[..], b"HEAD", b"POST"];
        safelisted.iter().any(|m| m.eq_ignore_ascii_case(requested))
            || self
                .methods
                .iter()
                .any(|m| m.as_str().as_bytes().eq_ignore_ascii_case(requested))
    }

    /// The requested headers to echo (None when none were requested), if all are allowed.
    fn headers_allowed(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, CorsDenial> {
        let mut values = headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() || value.len() > MAX_VALUE_LEN {
            return Err(CorsDenial::Headers);
        }
        let text = value.to_str().map_err(|_| CorsDenial::Headers)?;
        let mut any = false;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            any = true;
            let known = self
                .allowed_headers
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(name));
            let token = HeaderName::try_from(name).is_ok();
            if !token || !(self.any_header || known) {
                return Err(CorsDenial::Headers);
            }
        }
        Ok(any.then(|| value.clone()))
    }
}

impl Pattern {
    fn new(pattern: &str) -> Result<Pattern, CorsError> {
        let bad = || CorsError::BadPattern(pattern.into());
        let lower = pattern.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
        let suffix = rest.strip_prefix('*').ok_or_else(bad)?;
        let valid_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        let host = suffix.strip_prefix('.').ok_or_else(bad)?;
        let (host, port) = match host.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host, None),
        };
        let valid_port =
            port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !valid_scheme || !valid_port || !host.split('.').all(is_label) {
            return Err(bad());
        }
        Ok(Pattern {
            prefix: format!("{scheme}://"),
            suffix: suffix.into(),
        })
    }

    fn matches(&self, origin: &str) -> bool {
        let bytes = origin.as_bytes();
        let (p, s) = (self.prefix.len(), self.suffix.len());
        if bytes.len() <= p + s
            || !bytes[..p].eq_ignore_ascii_case(self.prefix.as_bytes())
            || !bytes[bytes.len() - s..].eq_ignore_ascii_case(self.suffix.as_bytes())
        {
            return false;
        }
        // The bytes compared above are ASCII, so these offsets are character boundaries.
        origin
            .get(p..bytes.len() - s)
            .is_some_and(|labels| labels.split('.').all(is_label))
    }
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks an exact origin entry: `null`, or `scheme://host[:port]` with no path.
fn check_origin(origin: &str) -> Result<String, CorsError> {
    let bad = || CorsError::BadOrigin(origin.into());
    if origin == "null" {
        return Ok(origin.into());
    }
    let (scheme, authority) = origin.split_once("://").ok_or_else(bad)?;
    let ok = !scheme.is_empty()
        && !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@'])
        && HeaderValue::from_str(origin).is_ok()
        && !origin.contains(char::is_whitespace);
    ok.then(|| origin.to_ascii_lowercase()).ok_or_else(bad)
}

fn exposed_value(names: &[String], credentials: bool) -> Result<Option<HeaderValue>, CorsError> {
    if names.is_empty() {
        return Ok(None);
    }
    for name in names {
        if name == "*" {
            if credentials {
                return Err(CorsError::WildcardExposeWithCredentials);
            }
        } else if HeaderName::try_from(name.as_str()).is_err() {
            return Err(CorsError::BadHeader(name.clone()));
        }
    }
    let joined = names.join(", ");
    HeaderValue::from_str(&joined)
        .map(Some)
        .map_err(|_| CorsError::BadHeader(joined))
}

/// Appends `Vary: Origin` unless some `Vary` value already lists it (or is `*`).
fn append_vary_origin(response: &mut HeaderMap) {
    let present = response.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        response.append(VARY, VARY_ORIGIN);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::new(&CorsSettings {
            origins: origins.iter().map(|o| OriginRule::parse(o)).collect(),
            methods: vec![Method::PUT, Method::DELETE],
            allowed_headers: vec!["content-type".into(), "x-request-id".into()],
            exposed_headers: vec!["x-ratelimit-remaining".into(), "etag".into()],
            credentials,
            max_age: Some(Duration::from_secs(600)),
        })
        .unwrap()
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn allowed(result: Preflight) -> HeaderMap {
        match result {
            Preflight::Allowed(headers) => headers,
            other => panic!("expected an allowed preflight, got {other:?}"),
        }
    }

    #[test]
    fn preflight_from_listed_origin_is_answered() {
        let policy = policy(&["https://app.example.com"], false);
        let req = request(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "Content-Type, X-Request-Id",
            ),
        ]);
        let answer = allowed(policy.preflight(&req, &Method::OPTIONS));
        assert_eq!(
            answer[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(
            answer[ACCESS_CONTROL_ALLOW_HEADERS],
            "Content-Type, X-Request-Id"
        );
        assert_eq!(answer[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(answer[VARY], VARY_PREFLIGHT);
        assert!(!answer.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn preflight_from_unlisted_origin_is_denied() {
        let policy = policy(&["https://app.example.com"], false);
        let req = request(&[
            ("origin", "https://evil.example.net"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(
            policy.preflight(&req, &Method::OPTIONS),
            Preflight::Denied(CorsDenial::Origin)
        );
    }

    #[test]
    fn request_without_preflight_markers_is_not_cors() {
        let policy = policy(&["*"], false);
        let plain_options = request(&[("origin", "https://a.example")]);
        assert_eq!(
            policy.preflight(&plain_options, &Method::OPTIONS),
            Preflight::NotCors
        );
        let no_origin = request(&[("access-control-request-method", "PUT")]);
        assert_eq!(
            policy.preflight(&no_origin, &Method::OPTIONS),
            Preflight::NotCors
        );
        let get = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(policy.preflight(&get, &Method::GET), Preflight::NotCors);
    }

    #[test]
    fn requested_method_is_checked_case_insensitively() {
        let policy = policy(&["*"], false);
        let ok = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "delete"),
        ]);
        let answer = allowed(policy.preflight(&ok, &Method::OPTIONS));
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_METHODS], "delete");
        let patch = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PATCH"),
        ]);
        assert_eq!(
            policy.preflight(&patch, &Method::OPTIONS),
            Preflight::Denied(CorsDenial::Method)
        );
    }

    #[test]
    fn safelisted_method_is_always_accepted() {
        let policy = policy(&["*"], false);
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(matches!(
            policy.preflight(&req, &Method::OPTIONS),
            Preflight::Allowed(_)
        ));
    }

    #[test]
    fn unlisted_requested_header_is_denied() {
        let policy = policy(&["*"], false);
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "content-type,authorization",
            ),
        ]);
        assert_eq!(
            policy.preflight(&req, &Method::OPTIONS),
            Preflight::Denied(CorsDenial::Headers)
        );
    }

    #[test]
    fn wildcard_header_entry_echoes_requested_headers() {
        let mut settings = CorsSettings {
            origins: vec![OriginRule::Any],
            allowed_headers: vec!["*".into()],
            ..CorsSettings::default()
        };
        settings.credentials = true;
        let policy = CorsPolicy::new(&settings).unwrap();
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "authorization, x-anything",
            ),
        ]);
        let answer = allowed(policy.preflight(&req, &Method::OPTIONS));
        assert_eq!(
            answer[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, x-anything"
        );
    }

    #[test]
    fn any_origin_with_credentials_echoes_the_origin() {
        let policy = policy(&["*"], true);
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        let answer = allowed(policy.preflight(&req, &Method::OPTIONS));
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn any_origin_without_credentials_answers_star() {
        let policy = policy(&["*"], false);
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(
            allowed(policy.preflight(&req, &Method::OPTIONS))[ACCESS_CONTROL_ALLOW_ORIGIN],
            "*"
        );
    }

    #[test]
    fn null_origin_needs_an_exact_entry() {
        let req = request(&[("origin", "null"), ("access-control-request-method", "GET")]);
        let star_credentials = policy(&["*"], true);
        assert_eq!(
            star_credentials.preflight(&req, &Method::OPTIONS),
            Preflight::Denied(CorsDenial::Origin)
        );
        let listed = policy(&["null"], true);
        assert_eq!(
            allowed(listed.preflight(&req, &Method::OPTIONS))[ACCESS_CONTROL_ALLOW_ORIGIN],
            "null"
        );
        let pattern = policy(&["~.*"], true);
        assert!(matches!(
            pattern.preflight(&req, &Method::OPTIONS),
            Preflight::Denied(_)
        ));
    }

    #[test]
    fn pattern_origin_matches_one_or_more_labels() {
        let policy = policy(&["https://*.example.com"], true);
        let ok = |o: &str| policy.origin_allowed(o);
        assert!(ok("https://app.example.com"));
        assert!(ok("https://a.b.example.com"));
        assert!(ok("HTTPS://App.Example.COM"));
        assert!(!ok("https://example.com"));
        assert!(!ok("https://.example.com"));
        assert!(!ok("http://app.example.com"));
        assert!(!ok("https://app.example.com:8443"));
        assert!(!ok("https://evil.com/.example.com"));
        assert!(!ok("https://app.example.com.evil.net"));
        assert!(!ok("https://user@app.example.com"));
    }

    #[test]
    fn pattern_with_port_requires_that_port() {
        let policy = policy(&["https://*.example.com:8443"], false);
        assert!(policy.origin_allowed("https://a.example.com:8443"));
        assert!(!policy.origin_allowed("https://a.example.com"));
    }

    #[test]
    fn regex_origin_must_match_the_whole_origin() {
        let policy = policy(&[r"~https://app[0-9]+\.example\.com"], false);
        assert!(policy.origin_allowed("https://app7.example.com"));
        assert!(!policy.origin_allowed("https://app7.example.com.evil.net"));
        assert!(!policy.origin_allowed("xhttps://app7.example.com"));
    }

    #[test]
    fn bad_entries_are_rejected_at_load() {
        let build = |rule: OriginRule| {
            CorsPolicy::new(&CorsSettings {
                origins: vec![rule],
                ..CorsSettings::default()
            })
        };
        assert!(matches!(
            build(OriginRule::Exact("https://a.example/".into())),
            Err(CorsError::BadOrigin(_))
        ));
        assert!(matches!(
            build(OriginRule::Exact("a.example".into())),
            Err(CorsError::BadOrigin(_))
        ));
        for bad in [
            "https://*example.com",
            "https://a.*.example.com",
            "*.example.com",
            "https://*.",
            "https://*.example.com:",
        ] {
            assert!(
                matches!(build(OriginRule::parse(bad)), Err(CorsError::BadPattern(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            build(OriginRule::Regex("(".into())),
            Err(CorsError::BadRegex { .. })
        ));
        let star_exposed = CorsSettings {
            exposed_headers: vec!["*".into()],
            credentials: true,
            ..CorsSettings::default()
        };
        assert_eq!(
            CorsPolicy::new(&star_exposed).unwrap_err(),
            CorsError::WildcardExposeWithCredentials
        );
    }

    #[test]
    fn actual_response_gets_origin_credentials_and_exposed_headers() {
        let policy = policy(&["https://app.example.com"], true);
        let req = request(&[("origin", "https://app.example.com")]);
        let mut resp = HeaderMap::new();
        policy.actual(&req, &mut resp);
        assert_eq!(resp[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(resp[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            resp[ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-ratelimit-remaining, etag"
        );
        assert_eq!(resp[VARY], "Origin");
    }

    #[test]
    fn actual_response_to_unlisted_origin_loses_upstream_cors_headers() {
        let policy = policy(&["https://app.example.com"], false);
        let req = request(&[("origin", "https://evil.example.net")]);
        let mut resp = request(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
        ]);
        policy.actual(&req, &mut resp);
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert_eq!(resp[VARY], "Origin");
    }

    #[test]
    fn vary_origin_is_appended_once() {
        let policy = policy(&["https://app.example.com"], false);
        let req = request(&[("origin", "https://app.example.com")]);
        let mut resp = request(&[("vary", "Accept-Encoding")]);
        policy.actual(&req, &mut resp);
        policy.actual(&req, &mut resp);
        let vary: Vec<_> = resp.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        let mut listed = request(&[("vary", "accept-encoding, origin")]);
        policy.actual(&req, &mut listed);
        assert_eq!(listed.get_all(VARY).iter().count(), 1);
    }

    #[test]
    fn star_policy_without_credentials_does_not_vary() {
        let policy = policy(&["*"], false);
        let mut resp = HeaderMap::new();
        policy.actual(&request(&[("origin", "https://a.example")]), &mut resp);
        assert_eq!(resp[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!resp.contains_key(VARY));
    }

    #[test]
    fn two_origin_headers_are_not_allowed() {
        let policy = policy(&["https://a.example", "https://b.example"], false);
        let req = request(&[
            ("origin", "https://a.example"),
            ("origin", "https://b.example"),
        ]);
        let mut resp = HeaderMap::new();
        policy.actual(&req, &mut resp);
        assert!(!resp.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
