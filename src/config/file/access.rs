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
    #[serde(default)]
    pub groups: Vec<String>,
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
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    #[serde(default)]
    pub basic: Option<Basic>,
    #[serde(default)]
    pub jwt: Option<Jwt>,
    #[serde(default)]
    pub introspection: Option<Introspection>,
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
    #[serde(default)]
    pub header: Option<String>,
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
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default)]
    pub cache_ttl: Option<String>,
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
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Jwt {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    #[serde(default)]
    pub jwks: Option<Jwks>,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub leeway: Option<String>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub token: Option<TokenSource>,
    #[serde(default)]
    pub cache_size: Option<usize>,
    #[serde(default)]
    pub cache_ttl: Option<String>,
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
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub pem: Option<String>,
    #[serde(default)]
    pub pem_file: Option<String>,
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Jwks {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub refresh_interval: Option<String>,
    #[serde(default)]
    pub min_refetch_interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Introspection {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub cache_size: Option<usize>,
    #[serde(default)]
    pub max_cache_ttl: Option<String>,
    #[serde(default)]
    pub token_type_hint: Option<String>,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub token: Option<TokenSource>,
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
    #[serde(default)]
    pub allow: Option<Matchers>,
    #[serde(default)]
    pub deny: Option<Matchers>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Matchers {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub consumers: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
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
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Cors {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub origins: Vec<String>,
    /// Entries matched as whole-origin regular expressions.
    #[serde(default)]
    pub origin_regexes: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    #[serde(default)]
    pub credentials: Option<bool>,
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
    #[serde(default)]
    pub params: Vec<Param>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Param {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    #[serde(default)]
    pub name: String,
    /// `query` (default) or `header`.
    #[serde(default, rename = "in")]
    pub location: Option<String>,
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default)]
    pub max_length: Option<usize>,
}
