//! HTTP Basic authentication (RFC 7617): parse the `Authorization: Basic` credentials and
//! verify them against per-consumer bcrypt or Argon2 password hashes.
//!
//! The user-id is the consumer name. Three timing and cost choices:
//!
//! - An unknown user still pays one full password-hash verification (against the first
//!   configured credential's hash, result discarded), so response time does not tell which
//!   user names exist. With a mix of bcrypt and Argon2 costs the match is approximate.
//! - Password hashes are deliberately slow (bcrypt cost 12 is about 250 ms), far too slow to
//!   run per request. A successful verification is therefore cached for a short `cache_ttl`,
//!   keyed by HMAC-SHA256 of (user, password) under a random per-instance key, so repeated
//!   requests with the same credentials cost one HMAC. The trade-off: while an entry lives,
//!   a memory dump of the process exposes a fast keyed hash of that password instead of a
//!   slow one (the key is in the same memory), and a password changed in the configuration
//!   takes effect at reload, which builds a new [`BasicAuth`] with an empty cache. Wrong
//!   passwords are never cached, so guessing always pays the slow hash. The cache is one
//!   mutex shared by all workers, held for a single map operation: next to even one HMAC
//!   that is cheap, and Basic auth is not the method for the highest request rates.
//! - [`BasicAuth::verify`] blocks for the hash's whole cost on a miss: call
//!   [`BasicAuth::cached`] on the request path first and run `verify` on a blocking pool.
//!
//! bcrypt only uses the first 72 bytes of a password (as every bcrypt implementation does,
//! so hashes from `htpasswd` keep working); Argon2 uses all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use http::HeaderValue;

use super::consumer::{Consumer, ConsumerSet};

/// Longest `Authorization` header value accepted.
pub const MAX_HEADER_LEN: usize = 4096;

/// Settings of one Basic-auth verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicSettings {
    /// Realm named in the `WWW-Authenticate` challenge.
    pub realm: String,
    /// How long a successful verification is remembered; zero disables the cache.
    pub cache_ttl: Duration,
    /// Most remembered verifications.
    pub cache_size: usize,
}

/// Credentials decoded from an `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: String,
    pub password: String,
}

/// Verifies Basic credentials against configured password hashes.
pub struct BasicAuth {
    users: HashMap<Arc<str>, Credential>,
    /// Verified in place of a real hash when the user is unknown (see the module docs).
    dummy: Option<StoredHash>,
    challenge: HeaderValue,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
    cache_key: hmac::Key,
    cache_ttl: Duration,
    cache_size: usize,
}

/// Why a header or a configured credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error("authorization header is not basic credentials")]
    NotBasic,
    #[error("authorization header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("basic credentials are not valid base64")]
    BadBase64,
    #[error("basic credentials are not utf-8")]
    NotUtf8,
    #[error("basic credentials have no colon between user and password")]
    NoColon,
    #[error("basic credentials contain a control character")]
    ControlCharacter,
    #[error(
        "password hash of consumer {consumer:?} is not bcrypt ($2a$, $2b$, $2y$) or argon2 (phc)"
    )]
    BadHash { consumer: String },
    #[error("basic credential names unknown consumer {consumer:?}")]
    UnknownConsumer { consumer: String },
    #[error("consumer {consumer:?} has two basic credentials")]
    Duplicate { consumer: String },
    #[error("realm {realm:?} cannot be sent in a header")]
    BadRealm { realm: String },
    #[error("no system randomness for the credential cache key")]
    Random,
}

struct Credential {
    consumer: Arc<Consumer>,
    hash: StoredHash,
}

/// A password hash checked at load; the string is re-parsed per verification because
/// Argon2's parsed form borrows it, and parsing costs nothing next to the hash itself.
#[derive(Clone)]
enum StoredHash {
    Bcrypt(String),
    Argon2(String),
}

struct CacheEntry {
    consumer: Arc<Consumer>,
    expires: Instant,
}

impl std::fmt::Debug for BasicCredentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BasicAuth {
    /// Never prints hashes or cached entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .field("challenge", &self.challenge)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_size", &self.cache_size)
            .finish_non_exhaustive()
    }
}

impl BasicCredentials {
    /// Parses an `Authorization` header value of the `Basic` scheme.
    pub fn parse(value: &[u8]) -> Result<BasicCredentials, BasicError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(BasicError::TooLong);
        }
        let Some((scheme, rest)) = split_scheme(value) else {
            return Err(BasicError::NotBasic);
        };
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return Err(BasicError::NotBasic);
        }
        let decoded = decode_base64(rest.trim_ascii()).ok_or(BasicError::BadBase64)?;
        let text = String::from_utf8(decoded).map_err(|_| BasicError::NotUtf8)?;
        if text.chars().any(char::is_control) {
            return Err(BasicError::ControlCharacter);
        }
        let (user, password) = text.split_once(':').ok_or(BasicError::NoColon)?;
        Ok(BasicCredentials {
            user: user.into(),
            password: password.into(),
        })
    }
}

impl BasicAuth {
    /// Builds a verifier from `(consumer name, password hash)` pairs; the consumer name is
    /// the Basic user-id.
    pub fn new(
        consumers: &ConsumerSet,
        entries: Vec<(String, String)>,
        settings: &BasicSettings,
    ) -> Result<BasicAuth, BasicError> {
        let mut users = HashMap::with_capacity(entries.len());
        let mut dummy = None;
        for (name, hash) in entries {
            let Some(stored) = StoredHash::parse(&hash) else {
                return Err(BasicError::BadHash { consumer: name });
            };
            let Some(consumer) = consumers.get(&name) else {
                return Err(BasicError::UnknownConsumer { consumer: name });
            };
            dummy.get_or_insert_with(|| stored.clone());
            let credential = Credential {
                consumer: consumer.clone(),
                hash: stored,
            };
            if users.insert(consumer.name.clone(), credential).is_some() {
                return Err(BasicError::Duplicate { consumer: name });
            }
        }
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| BasicError::Random)?;
        Ok(BasicAuth {
            users,
            dummy,
            challenge: challenge(&settings.realm)?,
            cache: Mutex::new(HashMap::new()),
            cache_key,
            cache_ttl: settings.cache_ttl,
            cache_size: settings.cache_size,
        })
    }

    /// The consumer for `creds` if they were verified within the cache ttl. Cheap: one HMAC
    /// and a map lookup.
    pub fn cached(&self, creds: &BasicCredentials, now: Instant) -> Option<Arc<Consumer>> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let key = self.cache_key(creds);
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(&key)?;
        (entry.expires > now).then(|| entry.consumer.clone())
    }

    /// The consumer for `creds`, from the cache or by verifying the password hash (slow:
    /// run it on a blocking pool). Unknown users and wrong passwords yield `None` after the
    /// same amount of hashing work.
    pub fn verify(&self, creds: &BasicCredentials, now: Instant) -> Option<Arc<Consumer>> {
        if let Some(consumer) = self.cached(creds, now) {
            return Some(consumer);
        }
        let password = creds.password.as_bytes();
        let Some(credential) = self.users.get(creds.user.as_str()) else {
            if let Some(dummy) = &self.dummy {
                let _ = dummy.verify(password);
            }
            return None;
        };
        if !credential.hash.verify(password) {
            return None;
        }
        self.remember(creds, credential.consumer.clone(), now);
        Some(credential.consumer.clone())
    }

    /// The `WWW-Authenticate` value to send with a 401.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    fn remember(&self, creds: &BasicCredentials, consumer: Arc<Consumer>, now: Instant) {
        if self.cache_ttl.is_zero() || self.cache_size == 0 {
            return;
        }
        let key = self.cache_key(creds);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.cache_size && !cache.contains_key(&key) {
            // Full: drop what expired; if nothing did, drop an arbitrary entry (the map's
            // iteration order is randomized per process), costing that user one slow verify.
            cache.retain(|_, entry| entry.expires > now);
            if cache.len() >= self.cache_size {
                let victim = cache.keys().next().copied();
                if let Some(victim) = victim {
                    cache.remove(&victim);
                }
            }
        }
        cache.insert(
            key,
            CacheEntry {
                consumer,
                expires: now + self.cache_ttl,
            },
        );
    }

    /// HMAC over the length-prefixed user and the password, so ("ab", "c") and ("a", "bc")
    /// differ.
    fn cache_key(&self, creds: &BasicCredentials) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(creds.user.len() as u64).to_be_bytes());
        ctx.update(creds.user.as_bytes());
        ctx.update(creds.password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl StoredHash {
    fn parse(hash: &str) -> Option<StoredHash> {
        let is_bcrypt = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
        if is_bcrypt {
            let parts: bcrypt::HashParts = hash.parse().ok()?;
            return (4..=31)
                .contains(&parts.get_cost())
                .then(|| StoredHash::Bcrypt(hash.into()));
        }
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = parsed.algorithm.as_str();
        let is_argon2 = matches!(algorithm, "argon2id" | "argon2i" | "argon2d");
        // Check the parameters are usable now rather than failing every request later.
        let usable =
            is_argon2 && argon2::Params::try_from(&parsed).is_ok() && parsed.hash.is_some();
        usable.then(|| StoredHash::Argon2(hash.into()))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            StoredHash::Argon2(hash) => PasswordHash::new(hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok()),
        }
    }
}

/// Builds `Basic realm="…", charset="UTF-8"` (RFC 7617 §2.1), escaping the realm as a
/// quoted-string.
pub fn challenge(realm: &str) -> Result<HeaderValue, BasicError> {
    let bad = || BasicError::BadRealm {
        realm: realm.into(),
    };
    if realm.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(bad());
    }
    let mut value = String::with_capacity(realm.len() + 40);
    value.push_str("Basic realm=\"");
    for c in realm.chars() {
        if matches!(c, '"' | '\\') {
            value.push('\\');
        }
        value.push(c);
    }
    value.push_str("\", charset=\"UTF-8\"");
    HeaderValue::from_str(&value).map_err(|_| bad())
}

/// Splits `scheme SP+ rest`.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    Some((&value[..space], &value[space + 1..]))
}

/// Standard-alphabet base64 (RFC 4648 §4); padding optional, since some clients omit it.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let unpadded = match input {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => input,
    };
    if unpadded.len() % 4 == 1 || (unpadded.len() != input.len() && input.len() % 4 != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in unpadded {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use argon2::password_hash::{PasswordHasher, SaltString};

    use super::*;

    fn settings(ttl: Duration) -> BasicSettings {
        BasicSettings {
            realm: "api".into(),
            cache_ttl: ttl,
            cache_size: 2,
        }
    }

    fn consumers() -> ConsumerSet {
        let mk = |n: &str| Consumer::new(n, vec![], BTreeMap::new()).unwrap();
        ConsumerSet::new(vec![mk("alice"), mk("bob"), mk("carol")]).unwrap()
    }

    fn argon2_hash(password: &str) -> String {
        // Small parameters keep the test fast; verification reads them from the hash.
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"fixed-test-salt!").unwrap();
        hasher
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn auth(ttl: Duration) -> BasicAuth {
        let entries = vec![
            ("alice".to_string(), bcrypt::hash("alice-pw", 4).unwrap()),
            ("bob".to_string(), argon2_hash("bob-pw")),
        ];
        BasicAuth::new(&consumers(), entries, &settings(ttl)).unwrap()
    }

    fn creds(user: &str, password: &str) -> BasicCredentials {
        BasicCredentials {
            user: user.into(),
            password: password.into(),
        }
    }

    fn header(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", encode_base64(user_pass.as_bytes())).into_bytes()
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn header_is_parsed_into_user_and_password() {
        let parsed = BasicCredentials::parse(&header("alice:pa:ss wörd")).unwrap();
        assert_eq!(parsed, creds("alice", "pa:ss wörd"));
    }

    #[test]
    fn scheme_is_case_insensitive_and_padding_optional() {
        let parsed = BasicCredentials::parse(b"bAsIc  YWxpY2U6cHc").unwrap();
        assert_eq!(parsed, creds("alice", "pw"));
    }

    #[test]
    fn rfc_7617_example_decodes() {
        let parsed = BasicCredentials::parse(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert_eq!(parsed, creds("Aladdin", "open sesame"));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(
            BasicCredentials::parse(b"Bearer abc"),
            Err(BasicError::NotBasic)
        );
        assert_eq!(BasicCredentials::parse(b"Basic"), Err(BasicError::NotBasic));
        assert_eq!(
            BasicCredentials::parse(b"Basic a$b="),
            Err(BasicError::BadBase64)
        );
        assert_eq!(
            BasicCredentials::parse(b"Basic YWxpY2U="),
            Err(BasicError::NoColon)
        );
        assert_eq!(
            BasicCredentials::parse(&header("a\u{1}:b")),
            Err(BasicError::ControlCharacter)
        );
        let not_utf8 = format!("Basic {}", encode_base64(b"a:\xff"));
        assert_eq!(
            BasicCredentials::parse(not_utf8.as_bytes()),
            Err(BasicError::NotUtf8)
        );
        let long = vec![b'A'; MAX_HEADER_LEN + 1];
        assert_eq!(BasicCredentials::parse(&long), Err(BasicError::TooLong));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!("{:?}", creds("alice", "hunter2-secret"));
        assert!(text.contains("alice"));
        assert!(!text.contains("hunter2-secret"));
    }

    #[test]
    fn bcrypt_password_authenticates() {
        let consumer = auth(Duration::ZERO).verify(&creds("alice", "alice-pw"), Instant::now());
        assert_eq!(&*consumer.unwrap().name, "alice");
    }

    #[test]
    fn argon2_password_authenticates() {
        let consumer = auth(Duration::ZERO).verify(&creds("bob", "bob-pw"), Instant::now());
        assert_eq!(&*consumer.unwrap().name, "bob");
    }

    #[test]
    fn bcrypt_2y_prefix_is_accepted() {
        let hash = bcrypt::hash("pw", 4).unwrap().replacen("$2b$", "$2y$", 1);
        let auth = BasicAuth::new(
            &consumers(),
            vec![("alice".into(), hash)],
            &settings(Duration::ZERO),
        )
        .unwrap();
        assert!(auth.verify(&creds("alice", "pw"), Instant::now()).is_some());
    }

    #[test]
    fn wrong_password_is_rejected() {
        let auth = auth(Duration::from_secs(60));
        assert!(auth
            .verify(&creds("alice", "bob-pw"), Instant::now())
            .is_none());
        assert!(auth
            .verify(&creds("bob", "alice-pw"), Instant::now())
            .is_none());
        assert!(auth.verify(&creds("alice", ""), Instant::now()).is_none());
    }

    #[test]
    fn unknown_user_is_rejected() {
        let auth = auth(Duration::from_secs(60));
        assert!(auth
            .verify(&creds("mallory", "alice-pw"), Instant::now())
            .is_none());
        // A consumer without a Basic credential is unknown to Basic auth.
        assert!(auth
            .verify(&creds("carol", "alice-pw"), Instant::now())
            .is_none());
    }

    #[test]
    fn success_is_cached_until_ttl() {
        let auth = auth(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(auth.cached(&creds("alice", "alice-pw"), t0).is_none());
        assert!(auth.verify(&creds("alice", "alice-pw"), t0).is_some());
        assert!(auth
            .cached(&creds("alice", "alice-pw"), t0 + Duration::from_secs(29))
            .is_some());
        assert!(auth
            .cached(&creds("alice", "alice-pw"), t0 + Duration::from_secs(30))
            .is_none());
    }

    #[test]
    fn failure_is_not_cached() {
        let auth = auth(Duration::from_secs(30));
        let now = Instant::now();
        assert!(auth.verify(&creds("alice", "wrong"), now).is_none());
        assert!(auth.cached(&creds("alice", "wrong"), now).is_none());
        assert!(auth.cached(&creds("alice", "alice-pw"), now).is_none());
    }

    #[test]
    fn cache_stays_within_its_size() {
        let auth = auth(Duration::from_secs(30));
        let now = Instant::now();
        let alice = consumers().get("alice").unwrap().clone();
        for user in ["u1", "u2", "u3", "u4"] {
            auth.remember(&creds(user, "pw"), alice.clone(), now);
        }
        assert_eq!(auth.cache.lock().unwrap().len(), 2);
        assert!(auth.cached(&creds("u4", "pw"), now).is_some());
    }

    #[test]
    fn cache_key_separates_user_from_password() {
        let auth = auth(Duration::from_secs(30));
        assert_ne!(
            auth.cache_key(&creds("ab", "c")),
            auth.cache_key(&creds("a", "bc"))
        );
    }

    #[test]
    fn unknown_user_is_verified_against_a_real_hash() {
        // The timing guard: an unknown user pays the same kind of hash as the first user.
        let auth = auth(Duration::ZERO);
        assert!(matches!(auth.dummy, Some(StoredHash::Bcrypt(_))));
        let empty = BasicAuth::new(&consumers(), vec![], &settings(Duration::ZERO)).unwrap();
        assert!(empty.dummy.is_none());
        assert!(empty.verify(&creds("alice", "x"), Instant::now()).is_none());
    }

    #[test]
    fn invalid_hashes_are_rejected_at_load() {
        for bad in [
            "plain",
            "$2x$04$abcdefghijklmnopqrstuv",
            "$1$salt$hash",
            "$argon2id$v=19$bad",
        ] {
            let err = BasicAuth::new(
                &consumers(),
                vec![("alice".into(), bad.into())],
                &settings(Duration::ZERO),
            );
            assert!(matches!(err, Err(BasicError::BadHash { .. })), "{bad}");
        }
    }

    #[test]
    fn challenge_quotes_the_realm() {
        assert_eq!(
            challenge("my api").unwrap(),
            "Basic realm=\"my api\", charset=\"UTF-8\""
        );
        assert_eq!(
            challenge("a\"b\\c").unwrap(),
            "Basic realm=\"a\\\"b\\\\c\", charset=\"UTF-8\""
        );
        assert!(challenge("bad\r\nrealm").is_err());
        assert_eq!(
            auth(Duration::ZERO).challenge(),
            "Basic realm=\"api\", charset=\"UTF-8\""
        );
    }
}
