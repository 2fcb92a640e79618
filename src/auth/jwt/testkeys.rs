//! Test key pairs, generated once per test run, and a token signer for them.

use std::sync::OnceLock;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;

/// One generated key pair in the forms the tests need.
pub(crate) struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
    /// Public JWK including `alg` (the algorithm the pair was made for).
    pub jwk: Value,
    pub encoding: EncodingKey,
}

fn make(alg: &'static rcgen::SignatureAlgorithm, jwt_alg: Algorithm) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap_or_else(|e| panic!("keygen: {e}"));
    let private_pem = pair.serialize_pem();
    let encoding = match jwt_alg.family() {
        jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_ed_pem(private_pem.as_bytes()),
    }
    .unwrap_or_else(|e| panic!("encoding key: {e}"));
    let mut jwk = if jwt_alg == Algorithm::EdDSA {
        // jsonwebtoken only derives Ed25519 JWKs from PKCS#8 v1; rcgen writes v2.
        let x = super::header::b64url_encode(pair.public_key_raw());
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x})
    } else {
        let jwk = Jwk::from_encoding_key(&encoding, jwt_alg).unwrap_or_else(|e| panic!("jwk: {e}"));
        serde_json::to_value(jwk).unwrap_or_else(|e| panic!("jwk json: {e}"))
    };
    if let Some(fields) = jwk.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    TestKey {
        public_pem: pair.public_key_pem(),
        private_pem,
        jwk,
        encoding,
    }
}

pub(crate) fn rsa() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make(&rcgen::PKCS_RSA_SHA256, Algorithm::RS256))
}

/// A second RSA pair, for rotation tests.
pub(crate) fn rsa2() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make(&rcgen::PKCS_RSA_SHA256, Algorithm::RS256))
}

pub(crate) fn ec256() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256))
}

pub(crate) fn ec384() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make(&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384))
}

pub(crate) fn ed25519() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| make(&rcgen::PKCS_ED25519, Algorithm::EdDSA))
}

/// `jwk` with `kid` set.
pub(crate) fn jwk_with_kid(key: &TestKey, kid: &str) -> Value {
    let mut jwk = key.jwk.clone();
    jwk["kid"] = Value::String(kid.into());
    jwk
}

/// Signs `claims` with `key` under `alg`, naming `kid` in the header.
pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap_or_else(|e| panic!("sign: {e}"))
}
