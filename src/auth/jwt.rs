//! Verifies signed JWTs (RFC 7519, JWS compact form) for a route: keys pinned to one algorithm
//! each, claims checked against the route's policy, and verified tokens cached so a warm
//! request skips the signature check.
//!
//! The header is parsed here before any key is touched, so `alg: none`, unknown algorithms and
//! the key-carrying header parameters (`jwk`, `jku`, `x5u`, `x5c`) are refused outright rather
//! than ignored: a token that asks to be checked with a key it brings itself is hostile.

mod cache;
mod claims;
mod header;
mod keys;
#[cfg(test)]
pub(crate) mod testkeys;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksClient, JwksSettings, JwksStats};
use super::token::MAX_TOKEN_LEN;

pub(crate) use cache::{digest, digest_bytes, TokenCache};
pub(crate) use claims::ClaimPolicy;
pub(crate) use keys::PinnedKey;

/// Most keys one token may be tried against. Tokens normally name their key (`kid`); without
/// one, every key of the right algorithm is a candidate, and this bound keeps a token from
/// costing more than a few signature checks.
const MAX_CANDIDATES: usize = 4;

/// Upper bound on the configured leeway: more is a configuration mistake, and it keeps the
/// time arithmetic far from overflow.
const MAX_LEEWAY_SECS: u64 = 24 * 3600;

/// The longest attacker-supplied text (`alg`, `kid`) kept in a failure for the logs.
const MAX_LOGGED: usize = 64;

/// Every algorithm this module can verify; `none` is deliberately not representable.
pub const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A route's JWT policy, validated.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Keys from the configuration.
    pub keys: Vec<KeySpec>,
    /// Keys fetched from the identity provider, alongside (or instead of) `keys`.
    pub jwks: Option<JwksSettings>,
    /// Accepted `iss` values; empty means the issuer is not checked. When set, `iss` is required.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (any one must appear); empty means the audience is not checked.
    /// When set, `aud` is required.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (whole seconds, at most a day).
    pub leeway: Duration,
    /// Claims that must be present (non-null). `exp` is always required.
    pub required_claims: Vec<String>,
    /// Scopes that must all be granted (from `scope` or `scp`).
    pub required_scopes: Vec<String>,
    /// Claims copied to upstream request headers.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// Entries in the verified-token cache; 0 turns it off.
    pub cache_size: usize,
    /// Longest time a verified token is trusted without a new signature check (never past `exp`).
    pub cache_ttl: Duration,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            keys: Vec::new(),
            jwks: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
            required_claims: Vec::new(),
            required_scopes: Vec::new(),
            forward_claims: Vec::new(),
            cache_size: 10_000,
            cache_ttl: Duration::from_secs(300),
        }
    }
}

/// One configured verification key, pinned to exactly one algorithm.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Matched exactly against the token's `kid`; a key without one matches any `kid`.
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub material: KeyMaterial,
}

/// The key itself.
#[derive(Clone)]
pub enum KeyMaterial {
    /// HMAC secret (HS*), at least as long as the hash output (RFC 7518 §3.2).
    Secret(Vec<u8>),
    /// `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` PEM, for RS*, PS*, ES* and EdDSA.
    Pem(String),
    /// A single JWK (RFC 7517); `oct` keys only with an HS* algorithm.
    Jwk(Value),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        match self {
            KeyMaterial::Secret(s) => write!(f, "Secret({} bytes)", s.len()),
            KeyMaterial::Pem(_) => f.write_str("Pem"),
            KeyMaterial::Jwk(_) => f.write_str("Jwk"),
        }
    }
}

/// Configuration errors, all reported at once.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{}", join(.0))]
    Keys(Vec<KeyError>),
    #[error("no keys configured and no jwks url")]
    NoKeys,
    #[error("jwks: {0}")]
    Jwks(String),
}

/// One unusable configured key.
#[derive(Debug, thiserror::Error)]
#[error("key {index} (kid {kid:?}, {alg:?}): {reason}")]
pub struct KeyError {
    pub index: usize,
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub reason: String,
}

fn join(errors: &[KeyError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Why a credential was refused. The text is for logs; clients only ever see a generic 401 (or
/// 503 for [`AuthFailure::Unavailable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credential in the request")]
    MissingToken,
    #[error("credential of {len} bytes is over the limit")]
    TokenTooLarge { len: usize },
    #[error("malformed credential: {0}")]
    MalformedCredential(&'static str),
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted")]
    ForbiddenAlgorithm(String),
    #[error("token header carries {0:?}, which is never trusted")]
    UntrustedHeader(&'static str),
    #[error("no key for kid {kid:?} and {alg:?}")]
    UnknownKey { kid: Option<String>, alg: Algorithm },
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("issuer not accepted")]
    WrongIssuer,
    #[error("audience not accepted")]
    WrongAudience,
    #[error("required claim {0:?} missing")]
    MissingClaim(String),
    #[error("claim {0:?} has the wrong type")]
    InvalidClaim(String),
    #[error("required scope {0:?} not granted")]
    MissingScope(String),
    #[error("token is not active")]
    Inactive,
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
}

impl AuthFailure {
    /// True when the identity provider, not the client, is at fault: answer 503, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthFailure::Unavailable(_))
    }

    /// The `WWW-Authenticate` value for the 401 answer (RFC 6750 §3): no error code when the
    /// request had no credential, `invalid_token` for every other reason so the client learns
    /// nothing about which check failed. `None` for the 503 case.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        match self {
            AuthFailure::Unavailable(_) => None,
            AuthFailure::MissingToken => Some(HeaderValue::from_static("Bearer")),
            AuthFailure::MissingScope(scope) => Some(insufficient_scope(Some(scope))),
            _ => Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        }
    }
}

/// The RFC 6750 §3.1 challenge of a valid token that lacks a scope, naming the scopes (a
/// space-separated list) when each is a plain scope token.
pub fn insufficient_scope(scope: Option<&str>) -> HeaderValue {
    const BARE: &str = "Bearer error=\"insufficient_scope\"";
    let plain = |s: &&str| {
        s.split(' ').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
    };
    match scope.filter(plain) {
        Some(s) => HeaderValue::from_str(&format!("{BARE}, scope=\"{s}\""))
            .unwrap_or(HeaderValue::from_static(BARE)),
        None => HeaderValue::from_static(BARE),
    }
}

/// A verified credential: what the access phase hands to later filters and the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `sub`.
    pub subject: Option<Arc<str>>,
    pub claims: Arc<Map<String, Value>>,
    pub scopes: Vec<String>,
    /// Headers to set on the upstream request (the proxy must also strip any client-sent
    /// header of these names, see [`JwtVerifier::forwarded_headers`]).
    pub forward: Vec<(HeaderName, HeaderValue)>,
    /// `exp`, when the token has one.
    pub expires_at: Option<SystemTime>,
}

/// Verifies tokens for one route. Cheap to clone; clones share keys and cache.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<PinnedKey>,
    jwks: Option<JwksClient>,
    validations: Validations,
    leeway: u64,
    policy: ClaimPolicy,
    cache: TokenCache,
    cache_ttl: Duration,
}

/// One prepared `Validation` per algorithm, so the cold path does not rebuild them.
pub(crate) struct Validations(Vec<(Algorithm, Validation)>);

impl JwtVerifier {
    /// Checks every key (all failures reported together) and prepares the validations. JWKS
    /// keys are fetched by a background task started by [`JwtVerifier::start`] or, failing
    /// that, by the first [`JwtVerifier::verify`].
    pub fn new(settings: JwtSettings) -> Result<JwtVerifier, JwtError> {
        if settings.keys.is_empty() && settings.jwks.is_none() {
            return Err(JwtError::NoKeys);
        }
        let mut keys = Vec::with_capacity(settings.keys.len());
        let mut errors = Vec::new();
        for (index, spec) in settings.keys.iter().enumerate() {
            match PinnedKey::from_spec(spec) {
                Ok(key) => keys.push(key),
                Err(reason) => errors.push(KeyError {
                    index,
                    kid: spec.kid.clone(),
                    alg: spec.alg,
                    reason,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(JwtError::Keys(errors));
        }
        let jwks = match settings.jwks {
            Some(jwks) => Some(JwksClient::new(jwks).map_err(|e| JwtError::Jwks(e.to_string()))?),
            None => None,
        };
        let validations = Validations::new(&settings.issuers, &settings.audiences, settings.leeway);
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                keys,
                jwks,
                validations,
                leeway: settings.leeway.as_secs().min(MAX_LEEWAY_SECS),
                policy: ClaimPolicy::new(
                    settings.required_claims,
                    settings.required_scopes,
                    settings.forward_claims,
                ),
                cache: TokenCache::new(settings.cache_size),
                cache_ttl: settings.cache_ttl,
            }),
        })
    }

    /// Starts the JWKS fetcher on `handle` (no-op without JWKS, or when already running).
    pub fn start(&self, handle: &tokio::runtime::Handle) {
        if let Some(jwks) = &self.inner.jwks {
            jwks.start(handle);
        }
    }

    /// JWKS fetch counters, when a JWKS URL is configured.
    pub fn jwks_stats(&self) -> Option<JwksStats> {
        self.inner.jwks.as_ref().map(JwksClient::stats)
    }

    /// Header names this verifier sets upstream; the proxy removes client-sent copies of them
    /// so a client cannot pose as a claim.
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.inner.policy.forwarded_headers()
    }

    /// Verifies `token` (the compact JWS, without scheme). A warm cache answers without any
    /// parsing or signature check.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthFailure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::TokenTooLarge { len: token.len() });
        }
        let inner = &*self.inner;
        let generation = match &inner.jwks {
            Some(jwks) => {
                jwks.ensure_started();
                jwks.keys().generation
            }
            None => 0,
        };
        let key = digest(token);
        let now = Instant::now();
        if let Some(hit) = inner.cache.get(&key, generation, now) {
            return Ok(hit);
        }

        let header = header::parse(token)?;
        let mut result = inner.verify_uncached(token, &header);
        if let (Err(AuthFailure::UnknownKey { .. }), Some(jwks)) = (&result, &inner.jwks) {
            // The provider may have rotated keys since the last fetch.
            if jwks.refetch_for_unknown_kid().await {
                result = inner.verify_uncached(token, &header);
            }
        }
        let (verified, generation) = result?;
        let verified = Arc::new(verified);
        let until = cache_deadline(now, inner.cache_ttl, verified.expires_at);
        inner
            .cache
            .insert(key, Arc::clone(&verified), until, generation, now);
        Ok(verified)
    }
}

impl Inner {
    fn verify_uncached(
        &self,
        token: &str,
        header: &header::TokenHeader,
    ) -> Result<(Verified, u64), AuthFailure> {
        let validation = self.validations.get(header.alg);
        let kid = header.kid.as_deref();
        // One snapshot for the whole check, so the cache entry is stamped with the generation
        // of the keys that actually verified it.
        let jwks_keys = self.jwks.as_ref().map(JwksClient::keys);
        let generation = jwks_keys.as_ref().map_or(0, |set| set.generation);
        let jwks_slice: &[PinnedKey] = jwks_keys.as_ref().map_or(&[], |set| &set.keys);
        let candidates = self
            .keys
            .iter()
            .chain(jwks_slice)
            .filter(|key| key.matches(header.alg, kid))
            .take(MAX_CANDIDATES);
        let mut failure = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), validation) {
                Ok(data) => return self.accept(data.claims).map(|v| (v, generation)),
                // Another key of the same algorithm may still match.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
                    failure = Some(AuthFailure::BadSignature)
                }
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(failure.unwrap_or_else(|| unknown_key(header)))
    }

    /// Checks what jsonwebtoken does not (`iat`, route claims and scopes) on a token whose
    /// signature and registered claims already passed.
    fn accept(&self, claims: Map<String, Value>) -> Result<Verified, AuthFailure> {
        let now = crate::timer::unix_seconds();
        match claims.get("iat") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                let iat = n.as_f64().unwrap_or(f64::MAX);
                if iat > (now + self.leeway) as f64 {
                    return Err(AuthFailure::IssuedInFuture);
                }
            }
            Some(_) => return Err(AuthFailure::InvalidClaim("iat".into())),
        }
        let expires_at = numeric_date(&claims, "exp")?;
        self.policy.apply(claims, expires_at)
    }
}

impl Validations {
    fn new(issuers: &[String], audiences: &[String], leeway: Duration) -> Self {
        let list = ALGORITHMS
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = leeway.as_secs().min(MAX_LEEWAY_SECS);
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if issuers.is_empty() {
                    v.iss = None;
                } else {
                    v.set_issuer(issuers);
                    required.push("iss");
                }
                // jsonwebtoken rejects any `aud` when no audience is configured; without a
                // configured audience the claim is simply not checked.
                if audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
        Validations(list)
    }

    fn get(&self, alg: Algorithm) -> &Validation {
        let found = self.0.iter().find(|(a, _)| *a == alg);
        debug_assert!(
            found.is_some(),
            "every supported algorithm has a validation"
        );
        // Unreachable fallback: an empty algorithm list makes jsonwebtoken refuse the token.
        found.map_or(&NO_ALGORITHM, |(_, v)| v)
    }
}

static NO_ALGORITHM: std::sync::LazyLock<Validation> = std::sync::LazyLock::new(|| {
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms.clear();
    v
});

fn unknown_key(header: &header::TokenHeader) -> AuthFailure {
    AuthFailure::UnknownKey {
        kid: header.kid.as_deref().map(clip),
        alg: header.alg,
    }
}

fn map_error(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthFailure::MissingClaim(clip(c)),
        ErrorKind::InvalidClaimFormat(c) => AuthFailure::InvalidClaim(clip(c)),
        ErrorKind::Json(_) => AuthFailure::Malformed("payload is not a json object"),
        ErrorKind::Base64(_) => AuthFailure::Malformed("bad base64url"),
        ErrorKind::Utf8(_) => AuthFailure::Malformed("payload is not utf-8"),
        ErrorKind::InvalidToken => AuthFailure::Malformed("bad structure"),
        // Key or provider trouble on our side; for the client it is a token that does not verify.
        other => {
            tracing::debug!(error = ?other, "jwt verification error");
            AuthFailure::BadSignature
        }
    }
}

/// Reads a NumericDate claim (RFC 7519 §2) as a time; `None` when absent or out of range.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<SystemTime>, AuthFailure> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n
            .as_f64()
            .filter(|secs| *secs >= 0.0)
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .and_then(|d| UNIX_EPOCH.checked_add(d))),
        Some(_) => Err(AuthFailure::InvalidClaim(name.into())),
    }
}

/// When a cached verification stops being trusted: after `ttl`, and never after `exp`.
pub(crate) fn cache_deadline(
    now: Instant,
    ttl: Duration,
    expires_at: Option<SystemTime>,
) -> Instant {
    let left = match expires_at {
        Some(exp) => exp
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(ttl),
        None => ttl,
    };
    now.checked_add(left).unwrap_or(now)
}

/// Bounds attacker-supplied text kept for logs.
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_LOGGED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
