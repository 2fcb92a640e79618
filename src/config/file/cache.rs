//! File types of HTTP caching: the top-level `cache` store and a route's `cache` block.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::Unknown;

/// `cache:` at the top level: the one store every cached route shares.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Cache {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Memory for stored responses (default 256MiB).
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// Larger responses are relayed but not stored (default 8MiB).
    #[serde(default)]
    pub max_object_bytes: Option<ByteSize>,
    /// Concurrent misses on one key wait at most this for the one request upstream (default
    /// 5s).
    #[serde(default)]
    pub lock_timeout: Option<String>,
    // Wider than the model's type so that a huge value is reported with its path, not as
    // a YAML error.
    /// Heuristic freshness: this percentage of the time since `Last-Modified` (default 10).
    #[serde(default)]
    pub heuristic_percent: Option<u64>,
    /// Upper bound of a heuristic lifetime (default 1d).
    #[serde(default)]
    pub heuristic_max: Option<String>,
    /// Response field listing surrogate keys for purges (default `Surrogate-Key`).
    #[serde(default)]
    pub surrogate_header: Option<String>,
    /// This cache's name in `Cache-Status` (default `ferrogate`).
    #[serde(default)]
    pub status_name: Option<String>,
    /// Remove `CDN-Cache-Control` and `Surrogate-Control` from responses to clients
    /// (`Ferrogate-Cache-Control` never reaches them; default false).
    #[serde(default)]
    pub strip_targeted: Option<bool>,
    /// Share stored responses and purges through the top-level `redis`.
    #[serde(default, deserialize_with = "present")]
    pub redis: Option<CacheRedis>,
}

/// `cache.redis`: the shared tier, on the deployment of the top-level `redis`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CacheRedis {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Prefix of every Redis key and of the purge channel (default `ferrogate:cache:`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Larger responses stay in this gateway's memory only (default 1MiB).
    #[serde(default)]
    pub max_object_bytes: Option<ByteSize>,
}

/// A route's `cache:` block; its presence turns caching on for the route.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RouteCache {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Request header values added to the cache key.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// Cookies whose values are added to the cache key.
    #[serde(default)]
    pub key_cookies: Vec<String>,
    /// Add the authenticated consumer to the key (needs `auth` on the route).
    #[serde(default)]
    pub key_consumer: Option<bool>,
    /// Fields of the client's location added to the key: `country`, `continent`,
    /// `subdivision`, `asn`, `label` (needs `geo`).
    #[serde(default)]
    pub key_geo: Vec<String>,
    /// Also store responses that carry `Set-Cookie`.
    #[serde(default)]
    pub store_set_cookie: Option<bool>,
}

/// A block whose presence turns a feature on: `key:` with no value means the defaults, as
/// `key: {}` does, instead of being read as absent.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(|v| Some(v.unwrap_or_default()))
}

/// A size in bytes as written: an integer, or a string such as `512KiB` that `validate.rs`
/// parses. Any other scalar (`-1`, `1.5`, `true`) is kept as text, so that it is reported
/// with its key path instead of failing the whole file.
#[derive(Debug)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ByteSizeVisitor)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: an integer, or digits with KiB, MiB or GiB (8MiB).",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+(KiB|MiB|GiB)?\\s*$"}
            ]
        })
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 1048576 or 8MiB")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize::Bytes(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        Ok(u64::try_from(v).map_or_else(|_| ByteSize::Text(v.to_string()), ByteSize::Bytes))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        Ok(ByteSize::Text(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ByteSize, E> {
        Ok(ByteSize::Text(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        Ok(ByteSize::Text(v.to_owned()))
    }
}
