//! Verification behaviour with configured keys: every listed attack refused with its reason,
//! every supported algorithm accepted, and the cache and claim rules.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderName;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::header::{b64url_decode, b64url_encode};
use super::testkeys::{self, sign};
use super::*;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api";
const SECRET_32: &[u8] = b"0123456789abcdef0123456789abcdef";
const SECRET_48: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef";
const SECRET_64: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn claims() -> Value {
    let now = crate::timer::unix_seconds();
    json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "scope": "read write",
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn settings(keys: Vec<KeySpec>) -> JwtSettings {
    JwtSettings {
        keys,
        issuers: vec![ISSUER.into()],
        audiences: vec![AUDIENCE.into()],
        ..JwtSettings::default()
    }
}

fn secret(alg: Algorithm, secret: &[u8]) -> KeySpec {
    KeySpec {
        kid: None,
        alg,
        material: KeyMaterial::Secret(secret.to_vec()),
    }
}

fn pem(alg: Algorithm, key: &testkeys::TestKey) -> KeySpec {
    KeySpec {
        kid: None,
        alg,
        material: KeyMaterial::Pem(key.public_pem.clone()),
    }
}

fn verifier(keys: Vec<KeySpec>) -> JwtVerifier {
    JwtVerifier::new(settings(keys)).unwrap_or_else(|e| panic!("verifier: {e}"))
}

fn hs256() -> JwtVerifier {
    verifier(vec![secret(Algorithm::HS256, SECRET_32)])
}

fn hs256_token(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET_32),
    )
}

fn rs256() -> JwtVerifier {
    verifier(vec![pem(Algorithm::RS256, testkeys::rsa())])
}

fn rs256_token() -> String {
    sign(Algorithm::RS256, None, &claims(), &testkeys::rsa().encoding)
}

/// `header.payload` in base64url, from JSON texts.
fn unsigned(header: &str, payload: &str) -> String {
    format!(
        "{}.{}",
        b64url_encode(header.as_bytes()),
        b64url_encode(payload.as_bytes())
    )
}

async fn refused(verifier: &JwtVerifier, token: &str) -> AuthFailure {
    match verifier.verify(token).await {
        Ok(v) => panic!("token accepted: {v:?}"),
        Err(e) => {
            assert!(!e.is_unavailable(), "{e}");
            e
        }
    }
}

async fn accepted(verifier: &JwtVerifier, token: &str) -> Arc<Verified> {
    verifier
        .verify(token)
        .await
        .unwrap_or_else(|e| panic!("token refused: {e}"))
}

// ---- attacks -------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_every_casing_is_rejected() {
    let v = hs256();
    let payload = claims().to_string();
    for mask in 0..16u8 {
        let alg: String = "none"
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if mask & (1 << i) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        for signature in ["", "c2ln"] {
            let token = format!("{}.{signature}", unsigned(&header, &payload));
            let err = refused(&v, &token).await;
            assert_eq!(err, AuthFailure::ForbiddenAlgorithm(alg.clone()), "{token}");
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let v = rs256();
    let public_pem = testkeys::rsa().public_pem.as_bytes();
    let token = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(public_pem),
    );
    let err = refused(&v, &token).await;
    assert_eq!(
        err,
        AuthFailure::UnknownKey {
            kid: None,
            alg: Algorithm::HS256
        }
    );
}

#[tokio::test]
async fn rs_token_presented_for_an_hs_key_is_rejected() {
    let err = refused(&hs256(), &rs256_token()).await;
    assert_eq!(
        err,
        AuthFailure::UnknownKey {
            kid: None,
            alg: Algorithm::RS256
        }
    );
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let token = hs256_token(&with(
        claims(),
        "exp",
        json!(crate::timer::unix_seconds() - 3600),
    ));
    assert_eq!(refused(&hs256(), &token).await, AuthFailure::Expired);
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected() {
    let token = hs256_token(&with(
        claims(),
        "nbf",
        json!(crate::timer::unix_seconds() + 3600),
    ));
    assert_eq!(refused(&hs256(), &token).await, AuthFailure::NotYetValid);
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let token = hs256_token(&with(claims(), "aud", json!(["other", "api2"])));
    assert_eq!(refused(&hs256(), &token).await, AuthFailure::WrongAudience);
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let token = hs256_token(&with(claims(), "iss", json!("https://evil.test")));
    assert_eq!(refused(&hs256(), &token).await, AuthFailure::WrongIssuer);
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let token = hs256_token(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64url_encode(with(claims(), "sub", json!("admin")).to_string().as_bytes());
    parts[1] = &forged;
    assert_eq!(
        refused(&hs256(), &parts.join(".")).await,
        AuthFailure::BadSignature
    );
}

#[tokio::test]
async fn stripped_signature_is_rejected() {
    let token = rs256_token();
    let stripped = &token[..=token.rfind('.').unwrap_or(0)];
    let err = refused(&rs256(), stripped).await;
    assert_eq!(err, AuthFailure::Malformed("missing signature"));
}

#[tokio::test]
async fn bit_flipped_signature_is_rejected() {
    let token = rs256_token();
    let (message, signature) = token.rsplit_once('.').unwrap_or_default();
    let mut sig = b64url_decode(signature.as_bytes()).unwrap_or_default();
    sig[17] ^= 0x04;
    let flipped = format!("{message}.{}", b64url_encode(&sig));
    assert_eq!(refused(&rs256(), &flipped).await, AuthFailure::BadSignature);
}

#[tokio::test]
async fn two_segment_token_is_rejected() {
    let token = unsigned(r#"{"alg":"HS256"}"#, &claims().to_string());
    let err = refused(&hs256(), &token).await;
    assert_eq!(err, AuthFailure::Malformed("not three segments"));
}

#[tokio::test]
async fn five_segment_token_is_rejected() {
    // JWE compact form, or a valid JWS with two segments appended.
    let token = format!("{}.aXY.dGFn", hs256_token(&claims()));
    let err = refused(&hs256(), &token).await;
    assert_eq!(err, AuthFailure::Malformed("not three segments"));
}

#[tokio::test]
async fn unknown_kid_is_rejected() {
    let mut key = secret(Algorithm::HS256, SECRET_32);
    key.kid = Some("k1".into());
    let v = verifier(vec![key]);
    let token = sign(
        Algorithm::HS256,
        Some("k2"),
        &claims(),
        &EncodingKey::from_secret(SECRET_32),
    );
    let err = refused(&v, &token).await;
    assert_eq!(
        err,
        AuthFailure::UnknownKey {
            kid: Some("k2".into()),
            alg: Algorithm::HS256
        }
    );
}

#[tokio::test]
async fn kid_with_path_traversal_is_rejected() {
    let mut key = secret(Algorithm::HS256, SECRET_32);
    key.kid = Some("k1".into());
    let v = verifier(vec![key]);
    // The classic attack: point kid at an empty file and sign with an empty secret.
    let kid = "../../../../../../dev/null";
    let token = sign(
        Algorithm::HS256,
        Some(kid),
        &claims(),
        &EncodingKey::from_secret(b""),
    );
    let err = refused(&v, &token).await;
    assert_eq!(
        err,
        AuthFailure::UnknownKey {
            kid: Some(kid.into()),
            alg: Algorithm::HS256
        }
    );
}

#[tokio::test]
async fn embedded_jwk_header_is_rejected() {
    let v = verifier(vec![pem(Algorithm::ES256, testkeys::ec256())]);
    // The attacker signs with a key of their own and ships its public half in the header.
    let attacker = testkeys::ec384();
    let mut header = Header::new(Algorithm::ES384);
    header.jwk = serde_json::from_value(attacker.jwk.clone()).ok();
    assert!(header.jwk.is_some());
    let token = jsonwebtoken::encode(&header, &claims(), &attacker.encoding).unwrap_or_default();
    assert_eq!(
        refused(&v, &token).await,
        AuthFailure::UntrustedHeader("jwk")
    );
}

#[tokio::test]
async fn jku_pointing_elsewhere_is_rejected() {
    let v = rs256();
    let mut header = Header::new(Algorithm::RS256);
    header.jku = Some("https://evil.example/jwks.json".into());
    let token =
        jsonwebtoken::encode(&header, &claims(), &testkeys::rsa().encoding).unwrap_or_default();
    assert_eq!(
        refused(&v, &token).await,
        AuthFailure::UntrustedHeader("jku")
    );
}

#[tokio::test]
async fn x5u_header_is_rejected() {
    let v = rs256();
    let mut header = Header::new(Algorithm::RS256);
    header.x5u = Some("https://evil.example/cert.pem".into());
    let token =
        jsonwebtoken::encode(&header, &claims(), &testkeys::rsa().encoding).unwrap_or_default();
    assert_eq!(
        refused(&v, &token).await,
        AuthFailure::UntrustedHeader("x5u")
    );
}

#[tokio::test]
async fn es256_signature_of_zeros_is_rejected() {
    let v = verifier(vec![pem(Algorithm::ES256, testkeys::ec256())]);
    let token = format!(
        "{}.{}",
        unsigned(r#"{"alg":"ES256","typ":"JWT"}"#, &claims().to_string()),
        b64url_encode(&[0u8; 64])
    );
    assert_eq!(refused(&v, &token).await, AuthFailure::BadSignature);
}

#[tokio::test]
async fn token_of_64_kib_is_rejected() {
    let big = format!("{}.{}", hs256_token(&claims()), "A".repeat(64 * 1024));
    let err = refused(&hs256(), &big).await;
    assert_eq!(err, AuthFailure::TokenTooLarge { len: big.len() });
}

#[tokio::test]
async fn non_json_payload_is_rejected() {
    let message = unsigned(r#"{"alg":"HS256"}"#, "this is not json");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET_32),
        Algorithm::HS256,
    )
    .unwrap_or_default();
    let token = format!("{message}.{signature}");
    let err = refused(&hs256(), &token).await;
    assert_eq!(err, AuthFailure::Malformed("payload is not a json object"));
}

#[tokio::test]
async fn signed_json_array_payload_is_rejected() {
    let message = unsigned(r#"{"alg":"HS256"}"#, "[1,2]");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET_32),
        Algorithm::HS256,
    )
    .unwrap_or_default();
    let err = refused(&hs256(), &format!("{message}.{signature}")).await;
    assert_eq!(err, AuthFailure::Malformed("payload is not a json object"));
}

// ---- every algorithm -----------------------------------------------------------------------

async fn accepts(alg: Algorithm, spec: KeySpec, key: &EncodingKey) {
    let v = verifier(vec![spec]);
    let verified = accepted(&v, &sign(alg, None, &claims(), key)).await;
    assert_eq!(verified.subject.as_deref(), Some("alice"));
}

#[tokio::test]
async fn valid_hs256_token_is_accepted() {
    accepts(
        Algorithm::HS256,
        secret(Algorithm::HS256, SECRET_32),
        &EncodingKey::from_secret(SECRET_32),
    )
    .await;
}

#[tokio::test]
async fn valid_hs384_token_is_accepted() {
    accepts(
        Algorithm::HS384,
        secret(Algorithm::HS384, SECRET_48),
        &EncodingKey::from_secret(SECRET_48),
    )
    .await;
}

#[tokio::test]
async fn valid_hs512_token_is_accepted() {
    accepts(
        Algorithm::HS512,
        secret(Algorithm::HS512, SECRET_64),
        &EncodingKey::from_secret(SECRET_64),
    )
    .await;
}

#[tokio::test]
async fn valid_rs256_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::RS256, pem(Algorithm::RS256, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_rs384_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::RS384, pem(Algorithm::RS384, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_rs512_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::RS512, pem(Algorithm::RS512, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_ps256_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::PS256, pem(Algorithm::PS256, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_ps384_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::PS384, pem(Algorithm::PS384, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_ps512_token_is_accepted() {
    let key = testkeys::rsa();
    accepts(Algorithm::PS512, pem(Algorithm::PS512, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_es256_token_is_accepted() {
    let key = testkeys::ec256();
    accepts(Algorithm::ES256, pem(Algorithm::ES256, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_es384_token_is_accepted() {
    let key = testkeys::ec384();
    accepts(Algorithm::ES384, pem(Algorithm::ES384, key), &key.encoding).await;
}

#[tokio::test]
async fn valid_eddsa_token_is_accepted() {
    let key = testkeys::ed25519();
    accepts(Algorithm::EdDSA, pem(Algorithm::EdDSA, key), &key.encoding).await;
}

#[tokio::test]
async fn token_for_a_configured_jwk_is_accepted() {
    let key = testkeys::ec256();
    let spec = KeySpec {
        kid: None,
        alg: Algorithm::ES256,
        material: KeyMaterial::Jwk(key.jwk.clone()),
    };
    accepts(Algorithm::ES256, spec, &key.encoding).await;
}

#[tokio::test]
async fn rs256_key_does_not_verify_ps256_token() {
    let key = testkeys::rsa();
    let v = verifier(vec![pem(Algorithm::RS256, key)]);
    let token = sign(Algorithm::PS256, None, &claims(), &key.encoding);
    assert_eq!(
        refused(&v, &token).await,
        AuthFailure::UnknownKey {
            kid: None,
            alg: Algorithm::PS256
        }
    );
}

// ---- claims, keys and cache ----------------------------------------------------------------

#[tokio::test]
async fn token_without_exp_is_rejected() {
    let mut c = claims();
    c.as_object_mut().map(|m| m.remove("exp"));
    assert_eq!(
        refused(&hs256(), &hs256_token(&c)).await,
        AuthFailure::MissingClaim("exp".into())
    );
}

#[tokio::test]
async fn token_without_aud_is_rejected_when_an_audience_is_configured() {
    let mut c = claims();
    c.as_object_mut().map(|m| m.remove("aud"));
    assert_eq!(
        refused(&hs256(), &hs256_token(&c)).await,
        AuthFailure::MissingClaim("aud".into())
    );
}

#[tokio::test]
async fn token_issued_in_the_future_is_rejected() {
    let token = hs256_token(&with(
        claims(),
        "iat",
        json!(crate::timer::unix_seconds() + 3600),
    ));
    assert_eq!(refused(&hs256(), &token).await, AuthFailure::IssuedInFuture);
}

#[tokio::test]
async fn expiry_within_leeway_is_accepted() {
    let token = hs256_token(&with(
        claims(),
        "exp",
        json!(crate::timer::unix_seconds() - 10),
    ));
    accepted(&hs256(), &token).await;
}

#[tokio::test]
async fn expiry_beyond_a_zero_leeway_is_rejected() {
    let mut s = settings(vec![secret(Algorithm::HS256, SECRET_32)]);
    s.leeway = Duration::ZERO;
    let v = JwtVerifier::new(s).unwrap_or_else(|e| panic!("{e}"));
    let token = hs256_token(&with(
        claims(),
        "exp",
        json!(crate::timer::unix_seconds() - 2),
    ));
    assert_eq!(refused(&v, &token).await, AuthFailure::Expired);
}

#[tokio::test]
async fn missing_required_claim_is_rejected() {
    let mut s = settings(vec![secret(Algorithm::HS256, SECRET_32)]);
    s.required_claims = vec!["tenant".into()];
    let v = JwtVerifier::new(s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused(&v, &hs256_token(&claims())).await,
        AuthFailure::MissingClaim("tenant".into())
    );
}

#[tokio::test]
async fn missing_required_scope_is_rejected() {
    let mut s = settings(vec![secret(Algorithm::HS256, SECRET_32)]);
    s.required_scopes = vec!["read".into(), "admin".into()];
    let v = JwtVerifier::new(s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused(&v, &hs256_token(&claims())).await,
        AuthFailure::MissingScope("admin".into())
    );
}

#[tokio::test]
async fn granted_scopes_and_forwarded_claims_are_returned() {
    let mut s = settings(vec![secret(Algorithm::HS256, SECRET_32)]);
    s.required_scopes = vec!["write".into()];
    s.forward_claims = vec![("sub".into(), HeaderName::from_static("x-user"))];
    let v = JwtVerifier::new(s).unwrap_or_else(|e| panic!("{e}"));
    let verified = accepted(&v, &hs256_token(&claims())).await;
    assert_eq!(verified.scopes, ["read", "write"]);
    assert_eq!(
        verified.forward,
        [(
            HeaderName::from_static("x-user"),
            http::HeaderValue::from_static("alice")
        )]
    );
    assert_eq!(
        v.forwarded_headers().collect::<Vec<_>>(),
        [&HeaderName::from_static("x-user")]
    );
}

#[tokio::test]
async fn expires_at_is_the_exp_claim() {
    let exp = crate::timer::unix_seconds() + 600;
    let verified = accepted(&hs256(), &hs256_token(&with(claims(), "exp", json!(exp)))).await;
    assert_eq!(
        verified.expires_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
    );
}

#[tokio::test]
async fn second_verification_comes_from_the_cache() {
    let v = rs256();
    let token = rs256_token();
    let first = accepted(&v, &token).await;
    let second = accepted(&v, &token).await;
    assert!(Arc::ptr_eq(&first, &second));
}

#[tokio::test]
async fn disabled_cache_verifies_every_time() {
    let mut s = settings(vec![secret(Algorithm::HS256, SECRET_32)]);
    s.cache_size = 0;
    let v = JwtVerifier::new(s).unwrap_or_else(|e| panic!("{e}"));
    let token = hs256_token(&claims());
    let first = accepted(&v, &token).await;
    assert!(!Arc::ptr_eq(&first, &accepted(&v, &token).await));
}

#[tokio::test]
async fn token_past_exp_but_within_leeway_is_not_cached() {
    let v = hs256();
    let token = hs256_token(&with(
        claims(),
        "exp",
        json!(crate::timer::unix_seconds() - 10),
    ));
    let first = accepted(&v, &token).await;
    assert!(!Arc::ptr_eq(&first, &accepted(&v, &token).await));
}

#[test]
fn cache_deadline_never_passes_exp() {
    let now = Instant::now();
    let exp = SystemTime::now() + Duration::from_secs(2);
    let until = cache_deadline(now, Duration::from_secs(300), Some(exp));
    assert!(until <= now + Duration::from_secs(2));
    let without_exp = cache_deadline(now, Duration::from_secs(300), None);
    assert_eq!(without_exp, now + Duration::from_secs(300));
}

#[tokio::test]
async fn token_without_kid_is_tried_against_each_key_of_its_algorithm() {
    let other: &[u8] = b"another secret of thirty-two b!!";
    let v = verifier(vec![
        secret(Algorithm::HS256, other),
        secret(Algorithm::HS256, SECRET_32),
    ]);
    accepted(&v, &hs256_token(&claims())).await;
}

#[tokio::test]
async fn kid_selects_the_named_key() {
    let mut a = secret(Algorithm::HS256, SECRET_32);
    a.kid = Some("a".into());
    let mut b = secret(Algorithm::HS256, b"another secret of thirty-two b!!");
    b.kid = Some("b".into());
    let v = verifier(vec![a, b]);
    let token = sign(
        Algorithm::HS256,
        Some("b"),
        &claims(),
        &EncodingKey::from_secret(SECRET_32),
    );
    assert_eq!(refused(&v, &token).await, AuthFailure::BadSignature);
}

#[test]
fn every_bad_key_is_reported_with_its_index() {
    let s = settings(vec![
        secret(Algorithm::HS256, b"short"),
        secret(Algorithm::HS256, SECRET_32),
        KeySpec {
            kid: Some("x".into()),
            alg: Algorithm::RS256,
            material: KeyMaterial::Pem("junk".into()),
        },
    ]);
    let Err(JwtError::Keys(errors)) = JwtVerifier::new(s) else {
        panic!("bad keys accepted");
    };
    let indices: Vec<usize> = errors.iter().map(|e| e.index).collect();
    assert_eq!(indices, [0, 2]);
    assert_eq!(errors[1].kid.as_deref(), Some("x"));
}

#[test]
fn verifier_without_any_key_source_is_refused() {
    assert!(matches!(
        JwtVerifier::new(JwtSettings::default()),
        Err(JwtError::NoKeys)
    ));
}

#[test]
fn missing_token_asks_for_bearer_without_error_code() {
    let value = AuthFailure::MissingToken.www_authenticate();
    assert_eq!(value, Some(http::HeaderValue::from_static("Bearer")));
}

#[test]
fn refused_token_gets_invalid_token_challenge() {
    let value = AuthFailure::BadSignature.www_authenticate();
    assert_eq!(
        value,
        Some(http::HeaderValue::from_static(
            "Bearer error=\"invalid_token\""
        ))
    );
}

#[test]
fn unavailable_provider_gets_no_challenge() {
    let failure = AuthFailure::Unavailable("timeout".into());
    assert!(failure.is_unavailable());
    assert_eq!(failure.www_authenticate(), None);
}

#[test]
fn attacker_kid_is_clipped_for_logs() {
    let long = "k".repeat(500);
    assert_eq!(clip(&long).chars().count(), MAX_LOGGED + 1);
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let text = format!("{:?}", secret(Algorithm::HS256, SECRET_32));
    assert!(!text.contains("0123456789abcdef"), "{text}");
}

#[test]
fn verify_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let v = hs256();
    assert_send(&v.verify("token"));
}

#[test]
fn the_insufficient_scope_challenge_names_plain_scopes_only() {
    assert_eq!(
        insufficient_scope(Some("admin ops")),
        "Bearer error=\"insufficient_scope\", scope=\"admin ops\""
    );
    for odd in ["", "a  b", " a", "a\"b", "a\\b"] {
        assert_eq!(
            insufficient_scope(Some(odd)),
            "Bearer error=\"insufficient_scope\"",
            "{odd:?}"
        );
    }
}
