//! Key-set fetching against a local identity provider: first fetch, rotation (new kid picked
//! up, old kid dropped, cached tokens of a dropped key refused), provider down keeping the last
//! good keys, and the unknown-kid refetch rate limit.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::idp::Idp;
use super::*;
use crate::auth::jwt::testkeys::{self, jwk_with_kid, sign};
use crate::auth::jwt::{AuthFailure, JwtSettings, JwtVerifier};

fn claims(jti: &str) -> Value {
    json!({"sub": "alice", "exp": crate::timer::unix_seconds() + 600, "jti": jti})
}

fn rs256(kid: &str, jti: &str) -> String {
    sign(
        Algorithm::RS256,
        Some(kid),
        &claims(jti),
        &testkeys::rsa().encoding,
    )
}

fn rs256_second_key(kid: &str, jti: &str) -> String {
    sign(
        Algorithm::RS256,
        Some(kid),
        &claims(jti),
        &testkeys::rsa2().encoding,
    )
}

fn jwks_settings(idp: &Idp) -> JwksSettings {
    JwksSettings {
        refresh_interval: Duration::from_secs(3600),
        min_refetch_interval: Duration::ZERO,
        timeout: Duration::from_secs(2),
        ..JwksSettings::new(idp.url("/jwks"))
    }
}

fn verifier(jwks: JwksSettings) -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        jwks: Some(jwks),
        ..JwtSettings::default()
    })
    .unwrap_or_else(|e| panic!("verifier: {e}"))
}

/// Polls `done` every 10 ms for up to 5 s.
async fn eventually(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn first_request_waits_for_the_initial_fetch() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    let verified = v.verify(&rs256("k1", "a")).await;
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn new_kid_is_picked_up() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());

    idp.set_jwks(&[
        jwk_with_kid(testkeys::rsa(), "k1"),
        jwk_with_kid(testkeys::rsa2(), "k2"),
    ]);
    let verified = v.verify(&rs256_second_key("k2", "b")).await;
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn old_kid_is_dropped_after_rotation() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    let old = rs256("k1", "a");
    assert!(v.verify(&old).await.is_ok());

    idp.set_jwks(&[jwk_with_kid(testkeys::rsa2(), "k2")]);
    assert!(v.verify(&rs256_second_key("k2", "b")).await.is_ok());
    // Verified (and cached) before the rotation, refused after it.
    let err = v.verify(&old).await.err();
    assert_eq!(
        err,
        Some(AuthFailure::UnknownKey {
            kid: Some("k1".into()),
            alg: Algorithm::RS256
        })
    );
}

#[tokio::test]
async fn periodic_refresh_picks_up_rotation_without_requests() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(JwksSettings {
        refresh_interval: Duration::from_millis(50),
        min_refetch_interval: Duration::from_secs(3600),
        ..jwks_settings(&idp)
    });
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa2(), "k2")]);
    eventually(|| v.jwks_stats().is_some_and(|s| s.generation == 2)).await;
    assert!(v.verify(&rs256_second_key("k2", "b")).await.is_ok());
}

#[tokio::test]
async fn provider_down_keeps_last_good_keys() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(JwksSettings {
        refresh_interval: Duration::from_millis(50),
        ..jwks_settings(&idp)
    });
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());

    idp.stop();
    eventually(|| v.jwks_stats().is_some_and(|s| s.failures >= 1)).await;
    // A token never seen before, so the answer cannot come from the token cache.
    let verified = v.verify(&rs256("k1", "b")).await;
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!(v.jwks_stats().map(|s| s.keys), Some(1));
}

#[tokio::test]
async fn provider_error_status_keeps_last_good_keys() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());

    idp.set_jwks_raw(503, "unavailable");
    // An unknown kid forces a fetch, which fails.
    assert!(v.verify(&rs256("k9", "b")).await.is_err());
    assert_eq!(v.jwks_stats().map(|s| s.failures), Some(1));
    assert!(v.verify(&rs256("k1", "c")).await.is_ok());
}

#[tokio::test]
async fn key_set_without_usable_keys_keeps_last_good_keys() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());

    idp.set_jwks(&[json!({"kty": "RSA", "kid": "k2", "use": "enc", "n": "AQAB", "e": "AQAB"})]);
    assert!(v.verify(&rs256("k2", "b")).await.is_err());
    assert_eq!(v.jwks_stats().map(|s| s.failures), Some(1));
    assert!(v.verify(&rs256("k1", "c")).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(JwksSettings {
        min_refetch_interval: Duration::from_secs(3600),
        ..jwks_settings(&idp)
    });
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());
    for i in 0..5 {
        let err = v.verify(&rs256(&format!("unknown-{i}"), "b")).await.err();
        assert!(
            matches!(err, Some(AuthFailure::UnknownKey { .. })),
            "{err:?}"
        );
    }
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn unknown_kid_refetch_happens_once_the_interval_passed() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    assert!(v.verify(&rs256("k1", "a")).await.is_ok());
    assert!(v.verify(&rs256("unknown", "b")).await.is_err());
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn jwks_key_is_pinned_to_its_algorithm() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    // Same RSA key and kid, but PS256 instead of the key's RS256.
    let token = sign(
        Algorithm::PS256,
        Some("k1"),
        &claims("a"),
        &testkeys::rsa().encoding,
    );
    let err = v.verify(&token).await.err();
    assert_eq!(
        err,
        Some(AuthFailure::UnknownKey {
            kid: Some("k1".into()),
            alg: Algorithm::PS256
        })
    );
}

#[tokio::test]
async fn jwks_keys_outside_allowed_algorithms_are_skipped() {
    let idp = Idp::start().await;
    idp.set_jwks(&[
        jwk_with_kid(testkeys::rsa(), "k1"),
        jwk_with_kid(testkeys::ec256(), "e1"),
    ]);
    let v = verifier(JwksSettings {
        algorithms: vec![Algorithm::ES256],
        ..jwks_settings(&idp)
    });
    let es = sign(
        Algorithm::ES256,
        Some("e1"),
        &claims("a"),
        &testkeys::ec256().encoding,
    );
    assert!(v.verify(&es).await.is_ok());
    assert!(v.verify(&rs256("k1", "b")).await.is_err());
    assert_eq!(v.jwks_stats().map(|s| s.keys), Some(1));
}

#[tokio::test]
async fn unchanged_key_set_keeps_its_generation() {
    let idp = Idp::start().await;
    idp.set_jwks(&[jwk_with_kid(testkeys::rsa(), "k1")]);
    let v = verifier(jwks_settings(&idp));
    let token = rs256("k1", "a");
    let first = v.verify(&token).await;
    assert!(v.verify(&rs256("unknown", "b")).await.is_err());
    assert_eq!(
        v.jwks_stats().map(|s| (s.fetches, s.generation)),
        Some((2, 1))
    );
    // Same generation, so the cached verification still stands.
    let second = v.verify(&token).await;
    match (first, second) {
        (Ok(a), Ok(b)) => assert!(std::sync::Arc::ptr_eq(&a, &b)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_http_url_is_refused() {
    let err = JwksClient::new(JwksSettings::new("file:///etc/jwks.json")).err();
    assert!(matches!(err, Some(JwksError::BadUrl(_))), "{err:?}");
}

#[test]
fn zero_refresh_interval_is_refused() {
    let settings = JwksSettings {
        refresh_interval: Duration::ZERO,
        ..JwksSettings::new("https://idp.test/jwks")
    };
    assert!(matches!(
        JwksClient::new(settings).err(),
        Some(JwksError::ZeroInterval)
    ));
}

#[test]
fn key_set_document_without_keys_array_is_an_error() {
    assert!(parse_key_set(br#"{"kids":[]}"#, &[]).is_err());
    assert!(parse_key_set(b"<html>", &[]).is_err());
}

#[test]
fn key_set_takes_at_most_the_key_limit() {
    let keys: Vec<Value> = (0..100)
        .map(|i| jwk_with_kid(testkeys::ec256(), &i.to_string()))
        .collect();
    let body = json!({ "keys": keys }).to_string();
    let parsed = parse_key_set(body.as_bytes(), &[]).unwrap_or_default();
    assert_eq!(parsed.len(), MAX_KEYS);
}
