//! File types of access control: consumers, authentication methods, and the per-route
//! `auth`, `ip_rules`, `cors` and `validate` blocks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Unknown;

/// A named identity: `consumers: {alice: {groups: [...], api_keys: [...]}}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Consumer {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Groups, for `allow` and `deny`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form strings, not interpreted.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Lower-case hex SHA-256 digests of the consumer's API keys.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// bcrypt (`$2b$…`) or argon2 (`$argon2id$…`) hash for Basic authentication.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Client-certificate names (CN or SAN) that identify this consumer to `mtls` methods.
    #[serde(default)]
    pub certificate_names: Vec<String>,
}

/// `auth:` at the top level: the methods routes refer to by name.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Auth {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Request header that tells the upstream who the consumer is.
    #[serde(default)]
    pub consumer_header: Option<String>,
    /// Named methods; each is exactly one of `api_key`, `basic`, `jwt`, `introspection`,
    /// `mtls`.
    #[serde(default)]
    pub methods: BTreeMap<String, AuthMethod>,
}

/// Exactly one of the kinds.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AuthMethod {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// An API key in a header or query parameter, checked against `consumers.*.api_keys`.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// HTTP Basic, checked against `consumers.*.password_hash`.
    #[serde(default)]
    pub basic: Option<Basic>,
    /// A JSON Web Token verified with keys or a JWKS.
    #[serde(default)]
    pub jwt: Option<Jwt>,
    /// An OAuth 2.0 token checked at an introspection endpoint (RFC 7662).
    #[serde(default)]
    pub introspection: Option<Introspection>,
    /// The client certificate the listener verified.
    #[serde(default)]
    pub mtls: Option<Mtls>,
}

/// Authentication by the client certificate the listener verified.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Mtls {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `subject_cn` (default), `san_dns`, `san_uri` or `san_email`.
    #[serde(default)]
    pub consumer_from: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ApiKey {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Header the key is read from (default `X-Api-Key`).
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter the key is read from instead.
    #[serde(default)]
    pub query: Option<String>,
    /// Remove the key from the request before it goes upstream.
    #[serde(default)]
    pub hide_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Basic {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Realm of the `Basic` challenge (default `ferrogate`).
    #[serde(default)]
    pub realm: Option<String>,
    /// How long a verified password is remembered (default 5m).
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// Remove the credential before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: Option<bool>,
}

/// Where a token is read from: one of `header` (with `scheme`), `cookie`, `query`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TokenSource {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Header the token is read from.
    #[serde(default)]
    pub header: Option<String>,
    /// Scheme before the token in the header (such as `Bearer`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Cookie the token is read from.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Query parameter the token is read from.
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Jwt {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Verification keys, each pinned to its `alg`.
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// A JWKS endpoint the keys are fetched from.
    #[serde(default)]
    pub jwks: Option<Jwks>,
    /// Accepted `iss` values (required when set).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted `aud` values (required when set).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat` (default 60s, at most 24h).
    #[serde(default)]
    pub leeway: Option<String>,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Scopes (`scope` or `scp`) that must be granted.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Where the token is read (default `Authorization: Bearer`).
    #[serde(default)]
    pub token: Option<TokenSource>,
    /// Verified tokens remembered (default 10000).
    #[serde(default)]
    pub cache_size: Option<usize>,
    /// How long a verified token is remembered, never past its `exp` (default 5m).
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// Remove the token before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: Option<bool>,
}

/// One key: `alg` and exactly one of `secret`, `pem`, `pem_file`, `jwk`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JwtKey {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Key id matched against the token's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    #[serde(default)]
    pub alg: Option<String>,
    /// HMAC secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key, inline.
    #[serde(default)]
    pub pem: Option<String>,
    /// PEM public key file.
    #[serde(default)]
    pub pem_file: Option<String>,
    /// A JSON Web Key (RFC 7517), inline.
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Jwks {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// URL of the JSON Web Key Set.
    #[serde(default)]
    pub url: String,
    /// How often the set is fetched again (default 5m).
    #[serde(default)]
    pub refresh_interval: Option<String>,
    /// An unknown `kid` refetches at most this often (default 10s).
    #[serde(default)]
    pub min_refetch_interval: Option<String>,
    /// Fetch time limit (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Algorithms accepted from the set.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Introspection {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The RFC 7662 introspection endpoint.
    #[serde(default)]
    pub url: String,
    /// The gateway's client id (HTTP Basic to the endpoint).
    #[serde(default)]
    pub client_id: String,
    /// The gateway's client secret.
    #[serde(default)]
    pub client_secret: String,
    /// Past it the request gets 503 (default 2s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Active answers remembered (default 10000).
    #[serde(default)]
    pub cache_size: Option<usize>,
    /// Longest an answer is remembered, never past its `exp` (default 60s).
    #[serde(default)]
    pub max_cache_ttl: Option<String>,
    /// Sent as `token_type_hint`.
    #[serde(default)]
    pub token_type_hint: Option<String>,
    /// Scopes that must be granted.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Where the token is read (default `Authorization: Bearer`).
    #[serde(default)]
    pub token: Option<TokenSource>,
    /// Remove the token before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: Option<bool>,
}

/// A route's `auth:` block.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RouteAuth {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Accepted methods, any of, tried in order.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Callers admitted (any of); empty admits every authenticated caller.
    #[serde(default)]
    pub allow: Option<Matchers>,
    /// Callers refused, checked before `allow`.
    #[serde(default)]
    pub deny: Option<Matchers>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Matchers {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Consumer names.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Consumer groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim name → accepted values.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IpRules {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Addresses and CIDRs admitted (all when empty).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Addresses and CIDRs refused with 403.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Cors {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `*`, exact origins or patterns such as `https://*.example.com`.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Entries matched as whole-origin regular expressions.
    #[serde(default)]
    pub origin_regexes: Vec<String>,
    /// Methods allowed beyond the safelisted ones.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request headers allowed beyond the safelisted ones; `["*"]` allows any.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub credentials: Option<bool>,
    /// How long browsers may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<String>,
}

/// A route's `validate:` block.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Validate {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Content type → JSON Schema (draft 2020-12), inline.
    #[serde(default)]
    pub body: BTreeMap<String, serde_json::Value>,
    /// Largest body validated; larger bodies are refused (413). Default 1 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Query and header parameter rules.
    #[serde(default)]
    pub params: Vec<Param>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Param {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Parameter name.
    #[serde(default)]
    pub name: String,
    /// `query` (default) or `header`.
    #[serde(default, rename = "in")]
    pub location: Option<String>,
    /// The parameter must be present.
    #[serde(default)]
    pub required: Option<bool>,
    /// Regular expression the value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The value must be one of these.
    #[serde(default)]
    pub values: Vec<String>,
    /// Smallest integer value.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest integer value.
    #[serde(default)]
    pub max: Option<i64>,
    /// Longest value in bytes.
    #[serde(default)]
    pub max_length: Option<usize>,
}

/// `routes[].oidc`: log browser users in with an OpenID Connect provider (docs/oidc.md).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Oidc {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The provider's discovery document,
    /// `https://idp.example.com/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: String,
    /// The gateway's client id at the provider.
    #[serde(default)]
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The callback path registered at the provider (default `/oidc/callback`); the route
    /// must match it.
    #[serde(default)]
    pub redirect_path: Option<String>,
    /// Requests to this path log the user out, here and at the provider.
    #[serde(default)]
    pub logout_path: Option<String>,
    /// Where the provider sends the user after logout: a path on the request's host or a
    /// URL (default `/`).
    #[serde(default)]
    pub post_logout_redirect: Option<String>,
    /// The provider posts back-channel logout tokens to this path (register it as the
    /// client's `backchannel_logout_uri`); the sessions they name end.
    #[serde(default)]
    pub backchannel_logout_path: Option<String>,
    /// Scopes asked for (default `[openid]`; `openid` is always asked for).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `auto` (default: browser navigations are redirected to log in, other requests get
    /// 401), `redirect` or `deny` (always 401: an API route).
    #[serde(default)]
    pub unauthenticated: Option<String>,
    /// Name of the session cookie (default `ferrogate_session`).
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Mark the cookies `Secure` and prefix their names with `__Host-` (default true; false
    /// only for plain-HTTP development).
    #[serde(default)]
    pub cookie_secure: Option<bool>,
    /// A session unused this long ends (default 30m).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// A session ends this long after login, whatever its use (default 8h).
    #[serde(default)]
    pub absolute_timeout: Option<String>,
    /// An access token this close to expiry is refreshed first (default 30s).
    #[serde(default)]
    pub refresh_before: Option<String>,
    /// Send the access token upstream as `Authorization: Bearer` (default true).
    #[serde(default)]
    pub forward_access_token: Option<bool>,
    /// ID-token claims sent upstream as headers, claim to header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Bound on each call to the provider (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Where sessions live: `memory` (default, this instance) or `redis` (the top-level
    /// standalone `redis`, shared by every instance).
    #[serde(default)]
    pub sessions: Option<String>,
}

/// `upstreams.NAME.client_credentials`: the gateway's own token for the group.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientCredentials {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The provider's token endpoint.
    #[serde(default)]
    pub token_url: String,
    /// The gateway's client id at the provider.
    #[serde(default)]
    pub client_id: String,
    /// The environment variable holding the client secret (or use `private_key_file`).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// PEM private key for `private_key_jwt` client authentication, instead of a secret.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Algorithm of the `private_key_jwt` assertion (default RS256).
    #[serde(default)]
    pub private_key_alg: Option<String>,
    /// `kid` of the assertion, naming the key in the client's registered key set.
    #[serde(default)]
    pub private_key_kid: Option<String>,
    /// Scopes asked for (default none).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Sent as `audience` (the API the token is for, where the provider wants it).
    #[serde(default)]
    pub audience: Option<String>,
    /// A token this close to expiry is replaced first (default 30s).
    #[serde(default)]
    pub refresh_before: Option<String>,
    /// Bound on the token request (default 5s); past it the request gets 503.
    #[serde(default)]
    pub timeout: Option<String>,
}
