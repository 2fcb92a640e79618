//! Checks opaque tokens with the identity provider's introspection endpoint (RFC 7662):
//! authenticated with HTTP Basic (§2.1, RFC 6749 §2.3.1), answers cached by token digest no
//! longer than the token lives, and a provider that fails kept distinct from a token that is
//! bad (503 versus 401).
//!
//! Only active answers are cached. Caching `active: false` would let a flood of random tokens
//! evict the useful entries, and a provider must be asked about an unknown token anyway.

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::jwt::{
    cache_deadline, digest, numeric_date, AuthFailure, ClaimPolicy, TokenCache, Verified,
};
use super::token::MAX_TOKEN_LEN;

/// Largest introspection answer read.
const MAX_BODY: usize = 64 * 1024;

/// How to reach the introspection endpoint and what an active token must carry.
#[derive(Clone)]
pub struct IntrospectionSettings {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Bound on the whole exchange; past it the request gets 503.
    pub timeout: Duration,
    /// Cached answers; 0 turns the cache off.
    pub cache_size: usize,
    /// Longest an active answer is reused (never past the token's `exp`).
    pub max_cache_ttl: Duration,
    /// `token_type_hint` sent along (e.g. `access_token`).
    pub token_type_hint: Option<String>,
    /// Scopes an active token must be granted (from `scope`).
    pub required_scopes: Vec<String>,
    /// Fields of the answer copied to upstream headers.
    pub forward_claims: Vec<(String, HeaderName)>,
}

impl std::fmt::Debug for IntrospectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionSettings")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .field("cache_size", &self.cache_size)
            .field("max_cache_ttl", &self.max_cache_ttl)
            .finish_non_exhaustive()
    }
}

impl IntrospectionSettings {
    pub fn new(
        url: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        IntrospectionSettings {
            url: url.into(),
            client_id: client_id.into(),
            client_secret: secret.into(),
            timeout: Duration::from_secs(2),
            cache_size: 10_000,
            max_cache_ttl: Duration::from_secs(60),
            token_type_hint: None,
            required_scopes: Vec::new(),
            forward_claims: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("introspection url {0:?} is not an http or https url")]
    BadUrl(String),
    #[error("introspection client credentials cannot form a header")]
    BadCredentials,
    #[error("cannot build the http client: {0}")]
    Client(String),
}

/// An RFC 7662 client for one route.
pub struct Introspector {
    http: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
    hint: Option<String>,
    cache: TokenCache,
    max_cache_ttl: Duration,
    policy: ClaimPolicy,
}

impl Introspector {
    pub fn new(settings: IntrospectionSettings) -> Result<Self, IntrospectError> {
        let url = reqwest::Url::parse(&settings.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| IntrospectError::BadUrl(settings.url.clone()))?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IntrospectError::Client(e.to_string()))?;
        Ok(Introspector {
            http,
            url,
            authorization: basic_authorization(&settings.client_id, &settings.client_secret)?,
            hint: settings.token_type_hint,
            cache: TokenCache::new(settings.cache_size),
            max_cache_ttl: settings.max_cache_ttl,
            policy: ClaimPolicy::new(
                Vec::new(),
                settings.required_scopes,
                settings.forward_claims,
            ),
        })
    }

    /// Header names this introspector sets upstream (strip client-sent copies).
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.policy.forwarded_headers()
    }

    /// Asks the provider about `token` (or answers from the cache). Unreachable, slow or
    /// broken providers give [`AuthFailure::Unavailable`]; `active: false` gives
    /// [`AuthFailure::Inactive`].
    pub async fn introspect(&self, token: &str) -> Result<Arc<Verified>, AuthFailure> {
        if token.is_empty() {
            return Err(AuthFailure::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::TokenTooLarge { len: token.len() });
        }
        let key = digest(token);
        let now = Instant::now();
        if let Some(hit) = self.cache.get(&key, 0, now) {
            return Ok(hit);
        }
        let answer = self.ask(token).await?;
        let verified = Arc::new(self.judge(answer)?);
        let until = cache_deadline(now, self.max_cache_ttl, verified.expires_at);
        self.cache.insert(key, Arc::clone(&verified), until, 0, now);
        Ok(verified)
    }

    async fn ask(&self, token: &str) -> Result<Map<String, Value>, AuthFailure> {
        let mut body = String::with_capacity(token.len() + 48);
        body.push_str("token=");
        form_encode(token, &mut body);
        if let Some(hint) = &self.hint {
            body.push_str("&token_type_hint=");
            form_encode(hint, &mut body);
        }
        let mut response = self
            .http
            .post(self.url.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            )
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        // RFC 7662 §2.2: any token, good or bad, gets a 200; anything else is the provider's
        // (or our client credentials') problem, not the client's.
        if response.status() != http::StatusCode::OK {
            return Err(AuthFailure::Unavailable(format!(
                "introspection status {}",
                response.status().as_u16()
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(AuthFailure::Unavailable(
                    "introspection answer too large".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            AuthFailure::Unavailable("introspection answer is not a json object".into())
        })
    }

    /// Turns an answer into a verdict: inactive, expired or not yet valid answers are refused
    /// even if the provider's clock disagrees with ours.
    fn judge(&self, mut answer: Map<String, Value>) -> Result<Verified, AuthFailure> {
        match answer.remove("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(AuthFailure::Inactive),
            _ => {
                return Err(AuthFailure::Unavailable(
                    "introspection answer lacks a boolean active".into(),
                ))
            }
        }
        let now = SystemTime::now();
        let expires_at = numeric_date(&answer, "exp")?;
        if expires_at.is_some_and(|exp| exp <= now) {
            return Err(AuthFailure::Expired);
        }
        if numeric_date(&answer, "nbf")?.is_some_and(|nbf| nbf > now) {
            return Err(AuthFailure::NotYetValid);
        }
        self.policy.apply(answer, expires_at)
    }
}

fn unavailable(e: reqwest::Error) -> AuthFailure {
    let reason = if e.is_timeout() {
        "introspection timed out".to_owned()
    } else if e.is_connect() {
        "introspection endpoint unreachable".to_owned()
    } else {
        format!("introspection failed: {}", e.without_url())
    };
    AuthFailure::Unavailable(reason)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1 requires, marked
/// sensitive so it is never logged or indexed by HPACK.
fn basic_authorization(id: &str, secret: &str) -> Result<HeaderValue, IntrospectError> {
    let mut pair = String::with_capacity(id.len() + secret.len() + 1);
    form_encode(id, &mut pair);
    pair.push(':');
    form_encode(secret, &mut pair);
    let mut value = String::from("Basic ");
    b64_encode(pair.as_bytes(), &mut value);
    let mut header = HeaderValue::from_str(&value).map_err(|_| IntrospectError::BadCredentials)?;
    header.set_sensitive(true);
    Ok(header)
}

/// application/x-www-form-urlencoded encoding of one value.
fn form_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn b64_encode(input: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}
