//! Introspection against a local identity provider: active, inactive, slow, failing and
//! unreachable providers, client authentication, and the answer cache.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::auth::jwks::idp::{Answer, Idp};

fn settings(idp: &Idp) -> IntrospectionSettings {
    IntrospectionSettings {
        timeout: Duration::from_millis(300),
        token_type_hint: Some("access_token".into()),
        ..IntrospectionSettings::new(idp.url("/introspect"), "gateway", "s3cret")
    }
}

fn introspector(settings: IntrospectionSettings) -> Introspector {
    Introspector::new(settings).unwrap_or_else(|e| panic!("introspector: {e}"))
}

fn active(extra: serde_json::Value) -> Answer {
    let mut answer = json!({"active": true, "sub": "bob", "scope": "read write", "exp": crate::timer::unix_seconds() + 600});
    if let (Some(a), Some(e)) = (answer.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    Answer::Json(answer)
}

#[tokio::test]
async fn active_token_yields_its_claims() {
    let idp = Idp::start().await;
    idp.answer("tok-1", active(json!({"client_id": "app"})));
    let verified = introspector(settings(&idp)).introspect("tok-1").await;
    let verified = verified.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified.subject.as_deref(), Some("bob"));
    assert_eq!(verified.scopes, ["read", "write"]);
    assert_eq!(verified.claims.get("client_id"), Some(&json!("app")));
    assert!(!verified.claims.contains_key("active"));
}

#[tokio::test]
async fn inactive_token_is_rejected() {
    let idp = Idp::start().await;
    idp.answer("tok-1", Answer::Json(json!({"active": false})));
    let err = introspector(settings(&idp)).introspect("tok-1").await.err();
    assert_eq!(err, Some(AuthFailure::Inactive));
}

#[tokio::test]
async fn slow_provider_is_unavailable() {
    let idp = Idp::start().await;
    idp.answer("tok-1", Answer::Hang);
    let err = introspector(settings(&idp)).introspect("tok-1").await.err();
    assert!(
        err.as_ref().is_some_and(AuthFailure::is_unavailable),
        "{err:?}"
    );
}

#[tokio::test]
async fn provider_error_status_is_unavailable() {
    let idp = Idp::start().await;
    idp.answer("tok-1", Answer::Status(500));
    let err = introspector(settings(&idp)).introspect("tok-1").await.err();
    assert_eq!(
        err,
        Some(AuthFailure::Unavailable("introspection status 500".into()))
    );
}

#[tokio::test]
async fn unreachable_provider_is_unavailable() {
    let idp = Idp::start().await;
    let introspector = introspector(settings(&idp));
    idp.stop();
    let err = introspector.introspect("tok-1").await.err();
    assert!(
        err.as_ref().is_some_and(AuthFailure::is_unavailable),
        "{err:?}"
    );
}

#[tokio::test]
async fn answer_without_active_is_unavailable() {
    let idp = Idp::start().await;
    idp.answer("tok-1", Answer::Json(json!({"sub": "bob"})));
    let err = introspector(settings(&idp)).introspect("tok-1").await.err();
    assert!(
        err.as_ref().is_some_and(AuthFailure::is_unavailable),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_authenticates_with_basic_and_sends_the_hint() {
    let idp = Idp::start().await;
    let s = IntrospectionSettings {
        client_id: "gate:way".into(),
        client_secret: "s3 cret&".into(),
        ..settings(&idp)
    };
    let _ = introspector(s).introspect("a+b/c").await;
    let (auth, body) = idp.last_request().unwrap_or_default();
    let mut expected = String::from("Basic ");
    b64_encode(b"gate%3Away:s3+cret%26", &mut expected);
    assert_eq!(auth, expected);
    assert_eq!(body, "token=a%2Bb%2Fc&token_type_hint=access_token");
}

#[tokio::test]
async fn active_answer_is_cached() {
    let idp = Idp::start().await;
    idp.answer("tok-1", active(json!({})));
    let introspector = introspector(settings(&idp));
    assert!(introspector.introspect("tok-1").await.is_ok());
    assert!(introspector.introspect("tok-1").await.is_ok());
    assert_eq!(idp.introspect_hits(), 1);
}

#[tokio::test]
async fn inactive_answer_is_not_cached() {
    let idp = Idp::start().await;
    let introspector = introspector(settings(&idp));
    assert!(introspector.introspect("tok-1").await.is_err());
    assert!(introspector.introspect("tok-1").await.is_err());
    assert_eq!(idp.introspect_hits(), 2);
}

#[tokio::test]
async fn cached_answer_does_not_outlive_exp() {
    let idp = Idp::start().await;
    // Whole seconds: two, so that the token is valid for at least one when first asked.
    idp.answer(
        "tok-1",
        active(json!({"exp": crate::timer::unix_seconds() + 2})),
    );
    let introspector = introspector(IntrospectionSettings {
        max_cache_ttl: Duration::from_secs(3600),
        ..settings(&idp)
    });
    assert!(introspector.introspect("tok-1").await.is_ok());
    // Once exp passes, the provider is asked again (and its answer is now expired).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match introspector.introspect("tok-1").await {
            Ok(_) => assert!(Instant::now() < deadline, "cache outlived exp"),
            Err(e) => {
                assert_eq!(e, AuthFailure::Expired);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(idp.introspect_hits(), 2);
}

#[tokio::test]
async fn cached_answer_does_not_outlive_max_ttl() {
    let idp = Idp::start().await;
    idp.answer("tok-1", active(json!({})));
    let introspector = introspector(IntrospectionSettings {
        max_cache_ttl: Duration::ZERO,
        ..settings(&idp)
    });
    assert!(introspector.introspect("tok-1").await.is_ok());
    assert!(introspector.introspect("tok-1").await.is_ok());
    assert_eq!(idp.introspect_hits(), 2);
}

#[tokio::test]
async fn missing_required_scope_is_rejected() {
    let idp = Idp::start().await;
    idp.answer("tok-1", active(json!({})));
    let introspector = introspector(IntrospectionSettings {
        required_scopes: vec!["admin".into()],
        ..settings(&idp)
    });
    let err = introspector.introspect("tok-1").await.err();
    assert_eq!(err, Some(AuthFailure::MissingScope("admin".into())));
}

#[tokio::test]
async fn oversized_token_is_rejected_without_asking() {
    let idp = Idp::start().await;
    let token = "a".repeat(64 * 1024);
    let err = introspector(settings(&idp)).introspect(&token).await.err();
    assert!(
        matches!(err, Some(AuthFailure::TokenTooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(idp.introspect_hits(), 0);
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        let mut out = String::new();
        b64_encode(input.as_bytes(), &mut out);
        assert_eq!(out, expected);
    }
}

#[test]
fn form_encoding_escapes_reserved_characters() {
    let mut out = String::new();
    form_encode("a b&c=d/é", &mut out);
    assert_eq!(out, "a+b%26c%3Dd%2F%C3%A9");
}

#[test]
fn authorization_header_is_sensitive() {
    let header = basic_authorization("id", "secret").unwrap_or_else(|e| panic!("{e}"));
    assert!(header.is_sensitive());
}

#[test]
fn settings_debug_output_hides_the_secret() {
    let text = format!(
        "{:?}",
        IntrospectionSettings::new("https://idp.test/i", "id", "hunter2")
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn non_http_url_is_refused() {
    let err = Introspector::new(IntrospectionSettings::new("ftp://idp.test/i", "a", "b")).err();
    assert!(matches!(err, Some(IntrospectError::BadUrl(_))), "{err:?}");
}

#[test]
fn introspect_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let introspector =
        Introspector::new(IntrospectionSettings::new("https://idp.test/i", "a", "b"));
    let introspector = introspector.unwrap_or_else(|e| panic!("{e}"));
    assert_send(&introspector.introspect("token"));
}
