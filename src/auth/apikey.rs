//! API-key authentication: find the key a request presents (header or query parameter) and
//! map it to its consumer.
//!
//! Keys are stored only as SHA-256 digests, so the configuration and the process memory never
//! hold a usable key. A presented key is hashed and the digest looked up in a map: the lookup
//! time depends on the digest, which says nothing about how close the presented key is to a
//! real one, and the final equality check is constant-time. Digests are uniformly
//! distributed, so the map hashes them by taking their first eight bytes instead of running
//! SipHash again (the map is built at load and never grows, so there is nothing to flood).
//!
//! A key that authenticated once is remembered under the verified-token cache's keyed hash
//! (random key per process, plus the length), so a repeat caller costs one short SipHash run
//! instead of a SHA-256; only keys that matched are remembered, and memory holds no key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256, SHA256_OUTPUT_LEN};
use http::{HeaderMap, HeaderName};

use super::consumer::{Consumer, ConsumerSet};

/// Longest key accepted; longer values are refused before hashing.
pub const MAX_KEY_LEN: usize = 1024;

/// Where a route reads the API key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header carrying the key verbatim (e.g. `x-api-key`).
    Header(HeaderName),
    /// A query parameter (e.g. `api_key`); its value is percent-decoded.
    Query(String),
}

/// The configured keys of one route or of the whole gateway, by digest.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_digest: HashMap<KeyDigest, Arc<Consumer>, BuildHasherDefault<DigestHasher>>,
    /// Keys that authenticated, by keyed hash (bounded by [`MAX_RECENT`]).
    recent: Arc<Mutex<Recent>>,
}

/// Keyed-hash head → (keyed-hash tail, consumer).
type Recent = HashMap<u64, (u64, Arc<Consumer>), BuildHasherDefault<DigestHasher>>;

/// Most remembered keys; the map starts over when full (keys are cheap to verify again).
const MAX_RECENT: usize = 10_000;

/// A key definition rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("api key of consumer {consumer:?} is not a 64-digit hex SHA-256 digest")]
    BadDigest { consumer: String },
    #[error("api key of consumer {consumer:?} names no configured consumer")]
    UnknownConsumer { consumer: String },
    #[error("api key of consumer {consumer:?} is also configured for {other:?}")]
    Duplicate { consumer: String, other: String },
}

/// A SHA-256 digest as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyDigest([u8; SHA256_OUTPUT_LEN]);

/// Passes the digest's first eight bytes through as the hash (see the module docs).
#[derive(Default)]
struct DigestHasher(u64);

impl KeySource {
    /// The key presented by a request, or `None` when it is absent, empty, longer than
    /// [`MAX_KEY_LEN`], or presented twice (an ambiguous request is not authenticated).
    pub fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Option<Cow<'a, [u8]>> {
        let key = match self {
            KeySource::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let first = values.next()?;
                if values.next().is_some() {
                    return None;
                }
                Cow::Borrowed(first.as_bytes())
            }
            KeySource::Query(name) => {
                let mut found = None;
                for (param, value) in query?.split('&').filter_map(|p| p.split_once('=')) {
                    if param == name {
                        if found.is_some() {
                            return None;
                        }
                        found = Some(value);
                    }
                }
                percent_decode(found?)?
            }
        };
        (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
    }

    /// `query` without the key parameter, so neither the upstream nor the access log sees the
    /// key. Borrows when there is nothing to remove.
    pub fn strip_query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let KeySource::Query(name) = self else {
            return Cow::Borrowed(query);
        };
        let is_key = |p: &str| p.split_once('=').map_or(p, |(n, _)| n) == name;
        if !query.split('&').any(is_key) {
            return Cow::Borrowed(query);
        }
        let kept: Vec<&str> = query.split('&').filter(|p| !is_key(p)).collect();
        Cow::Owned(kept.join("&"))
    }
}

impl ApiKeys {
    /// Builds the key map from `(consumer name, hex SHA-256 of the key)` pairs.
    pub fn new(
        consumers: &ConsumerSet,
        entries: Vec<(String, String)>,
    ) -> Result<ApiKeys, ApiKeyError> {
        let mut by_digest =
            HashMap::with_capacity_and_hasher(entries.len(), BuildHasherDefault::default());
        for (name, hex) in entries {
            let Some(digest) = parse_hex_digest(&hex) else {
                return Err(ApiKeyError::BadDigest { consumer: name });
            };
            let Some(consumer) = consumers.get(&name) else {
                return Err(ApiKeyError::UnknownConsumer { consumer: name });
            };
            if let Some(other) = by_digest.insert(KeyDigest(digest), consumer.clone()) {
                return Err(ApiKeyError::Duplicate {
                    consumer: name,
                    other: other.name.to_string(),
                });
            }
        }
        Ok(ApiKeys {
            by_digest,
            recent: Arc::default(),
        })
    }

    /// The consumer owning `presented`, if any.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Arc<Consumer>> {
        let keyed = super::jwt::digest_bytes(presented);
        let (head, tail) = keyed.split_at(8);
        let head = u64::from_le_bytes(head.try_into().unwrap_or_default());
        let tail = u64::from_le_bytes(tail.try_into().unwrap_or_default());
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((t, consumer)) = recent.get(&head) {
            if *t == tail {
                return Some(consumer.clone());
            }
        }
        drop(recent);
        let consumer = self.verify(presented)?;
        recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= MAX_RECENT {
            recent.clear();
        }
        recent.insert(head, (tail, consumer.clone()));
        Some(consumer)
    }

    fn verify(&self, presented: &[u8]) -> Option<Arc<Consumer>> {
        let mut actual = [0u8; SHA256_OUTPUT_LEN];
        actual.copy_from_slice(digest(&SHA256, presented).as_ref());
        let (stored, consumer) = self.by_digest.get_key_value(&KeyDigest(actual))?;
        // The map already compared the digests; this comparison is the one the security
        // argument rests on, so it is explicit and constant-time whatever the map does.
        verify_slices_are_equal(&stored.0, &actual).ok()?;
        Some(consumer.clone())
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The lower-case hex SHA-256 of `key`: the form keys take in the configuration.
pub fn hash_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(2 * SHA256_OUTPUT_LEN);
    for byte in digest(&SHA256, key).as_ref() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Hash for KeyDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if the key type changes; fold bytes in rather than lose them.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn parse_hex_digest(hex: &str) -> Option<[u8; SHA256_OUTPUT_LEN]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * SHA256_OUTPUT_LEN {
        return None;
    }
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; `+` stays a plus (RFC 3986 query semantics, and base64 keys
/// contain `+`). A malformed escape makes the key unusable rather than silently altered.
fn percent_decode(value: &str) -> Option<Cow<'_, [u8]>> {
    let bytes = value.as_bytes();
    if !bytes.contains(&b'%') {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use http::HeaderValue;

    use super::*;

    fn consumers() -> ConsumerSet {
        let mk = |n: &str| Consumer::new(n, vec![], BTreeMap::new()).unwrap();
        ConsumerSet::new(vec![mk("alice"), mk("bob")]).unwrap()
    }

    fn keys() -> ApiKeys {
        ApiKeys::new(
            &consumers(),
            vec![
                ("alice".into(), hash_key(b"alice-key-0123456789")),
                ("bob".into(), hash_key(b"bob-key-0123456789").to_uppercase()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn known_key_authenticates_its_consumer() {
        let keys = keys();
        assert_eq!(
            &*keys.authenticate(b"alice-key-0123456789").unwrap().name,
            "alice"
        );
        assert_eq!(
            &*keys.authenticate(b"bob-key-0123456789").unwrap().name,
            "bob"
        );
    }

    #[test]
    fn unknown_key_is_rejected() {
        let keys = keys();
        assert!(keys.authenticate(b"alice-key-012345678").is_none());
        assert!(keys.authenticate(b"alice-key-01234567890").is_none());
        assert!(keys.authenticate(b"").is_none());
    }

    #[test]
    fn digest_from_config_is_what_the_key_hashes_to() {
        // The constant-time comparison only runs on a map hit: check the digest the map is
        // keyed by is exactly SHA-256 of the key (test vector from FIPS 180-2).
        assert_eq!(
            hash_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_hex_digest(&hash_key(b"abc")).unwrap().to_vec(), {
            digest(&SHA256, b"abc").as_ref().to_vec()
        });
    }

    #[test]
    fn constant_time_check_rejects_a_different_digest_in_the_same_slot() {
        // Two digests sharing the first eight bytes land on the same map hash; only the
        // explicit comparison tells them apart.
        let a = KeyDigest([7u8; 32]);
        let mut other = [7u8; 32];
        other[31] = 8;
        let mut h1 = DigestHasher::default();
        let mut h2 = DigestHasher::default();
        a.hash(&mut h1);
        KeyDigest(other).hash(&mut h2);
        assert_eq!(h1.finish(), h2.finish());
        assert!(verify_slices_are_equal(&a.0, &other).is_err());
        assert_ne!(a, KeyDigest(other));
    }

    #[test]
    fn bad_digest_is_rejected_at_load() {
        for bad in ["abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            let err = ApiKeys::new(&consumers(), vec![("alice".into(), bad.to_string())]);
            assert_eq!(
                err.unwrap_err(),
                ApiKeyError::BadDigest {
                    consumer: "alice".into()
                }
            );
        }
    }

    #[test]
    fn same_key_for_two_consumers_is_rejected_at_load() {
        let h = hash_key(b"shared");
        let err = ApiKeys::new(
            &consumers(),
            vec![("alice".into(), h.clone()), ("bob".into(), h)],
        );
        assert!(matches!(err, Err(ApiKeyError::Duplicate { .. })));
    }

    #[test]
    fn key_for_unknown_consumer_is_rejected_at_load() {
        let err = ApiKeys::new(&consumers(), vec![("carol".into(), hash_key(b"k"))]);
        assert_eq!(
            err.unwrap_err(),
            ApiKeyError::UnknownConsumer {
                consumer: "carol".into()
            }
        );
    }

    #[test]
    fn key_is_read_from_header() {
        let source = KeySource::Header(HeaderName::from_static("x-api-key"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-api-key",
            HeaderValue::from_static("alice-key-0123456789"),
        );
        let key = source.extract(&headers, Some("api_key=other")).unwrap();
        assert_eq!(&*key, b"alice-key-0123456789");
        assert!(keys().authenticate(&key).is_some());
    }

    #[test]
    fn key_is_read_from_query_and_percent_decoded() {
        let source = KeySource::Query("api_key".into());
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("ignored"));
        let key = source
            .extract(&headers, Some("a=1&api_key=k%2Bv+w%3D&b=2"))
            .unwrap();
        assert_eq!(&*key, b"k+v+w=");
    }

    #[test]
    fn key_presented_twice_is_not_accepted() {
        let source = KeySource::Header(HeaderName::from_static("x-api-key"));
        let mut headers = HeaderMap::new();
        headers.append("x-api-key", HeaderValue::from_static("one"));
        headers.append("x-api-key", HeaderValue::from_static("two"));
        assert!(source.extract(&headers, None).is_none());
        let query = KeySource::Query("k".into());
        assert!(query.extract(&HeaderMap::new(), Some("k=1&k=2")).is_none());
    }

    #[test]
    fn missing_empty_oversized_or_malformed_key_is_absent() {
        let source = KeySource::Query("k".into());
        let none = HeaderMap::new();
        assert!(source.extract(&none, None).is_none());
        assert!(source.extract(&none, Some("x=1")).is_none());
        assert!(source.extract(&none, Some("k=")).is_none());
        assert!(source.extract(&none, Some("k=%zz")).is_none());
        let long = format!("k={}", "a".repeat(MAX_KEY_LEN + 1));
        assert!(source.extract(&none, Some(&long)).is_none());
    }

    #[test]
    fn key_parameter_is_stripped_from_the_query() {
        let source = KeySource::Query("api_key".into());
        assert_eq!(source.strip_query("a=1&api_key=secret&b=2"), "a=1&b=2");
        assert_eq!(source.strip_query("api_key=secret"), "");
        assert!(matches!(source.strip_query("a=1"), Cow::Borrowed("a=1")));
    }
}
