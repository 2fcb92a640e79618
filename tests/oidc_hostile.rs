//! OpenID Connect callbacks with ID tokens a real provider would not issue: a provider on
//! 127.0.0.1 (discovery, authorization, token and JWKS endpoints) that answers the code
//! exchange with a token of the test's choosing. Each is refused with 400, and no session
//! is created.
#![allow(clippy::unwrap_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::sync::{Arc, Mutex, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use auth_support::testkeys::{self, jwk_with_kid, sign};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::oidc::Browser;
use support::*;

const SECRET_VAR: &str = "FERROGATE_TEST_OIDC_HOSTILE_SECRET";

/// How the provider's ID token differs from a good one.
#[derive(Clone, Copy)]
enum Flaw {
    None,
    WrongNonce,
    Expired,
    ForeignKey,
    WrongAudience,
    WrongIssuer,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The provider: remembers the nonce of the last authorization request and signs an ID
/// token with `flaw` at the token endpoint.
async fn provider(flaw: Flaw) -> Backend {
    let nonce = Arc::new(Mutex::new(String::new()));
    let own = Arc::new(Mutex::new(String::new()));
    let own2 = own.clone();
    let backend = Backend::start(false, move |req| {
        let nonce = nonce.clone();
        let own = own2.clone();
        async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let issuer = own.lock().unwrap().clone();
            let param = |name: &str| {
                query.split('&').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k == name).then(|| v.to_owned())
                })
            };
            match path.as_str() {
                "/.well-known/openid-configuration" => json_answer(&json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/auth"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                })),
                "/jwks" => json_answer(&json!({"keys": [jwk_with_kid(testkeys::rsa(), "k1")]})),
                "/auth" => {
                    *nonce.lock().unwrap() = param("nonce").unwrap();
                    let redirect = param("redirect_uri")
                        .unwrap()
                        .replace("%3A", ":")
                        .replace("%2F", "/");
                    let to = format!("{redirect}?code=c0de&state={}", param("state").unwrap());
                    let mut r = Response::new(full(Bytes::new()));
                    *r.status_mut() = StatusCode::FOUND;
                    r.headers_mut().insert("location", to.parse().unwrap());
                    r
                }
                "/token" => {
                    let _ = req.into_body().collect().await;
                    let nonce = nonce.lock().unwrap().clone();
                    json_answer(&json!({
                        "access_token": "at-1",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "id_token": id_token(&issuer, &nonce, flaw),
                    }))
                }
                _ => text(StatusCode::NOT_FOUND, "no"),
            }
        }
    })
    .await;
    *own.lock().unwrap() = format!("http://{}", backend.addr);
    backend
}

fn id_token(issuer: &str, nonce: &str, flaw: Flaw) -> String {
    let mut claims = json!({
        "iss": issuer,
        "sub": "mallory",
        "aud": "hostile",
        "exp": now() + 600,
        "iat": now(),
        "nonce": nonce,
    });
    let mut key = testkeys::rsa();
    match flaw {
        Flaw::None => {}
        Flaw::WrongNonce => claims["nonce"] = Value::from("another-login"),
        Flaw::Expired => {
            claims["exp"] = Value::from(now() - 3600);
            claims["iat"] = Value::from(now() - 7200);
        }
        Flaw::ForeignKey => key = testkeys::rsa2(),
        Flaw::WrongAudience => claims["aud"] = Value::from("another-client"),
        Flaw::WrongIssuer => claims["iss"] = Value::from("https://elsewhere.example"),
    }
    sign(Algorithm::RS256, Some("k1"), &claims, &key.encoding)
}

fn json_answer(v: &Value) -> Response<BoxBody> {
    let mut r = Response::new(full(Bytes::from(v.to_string())));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// Logs in through a provider with `flaw`; the callback's answer and the backend.
async fn callback_with(flaw: Flaw) -> (support::Got, Backend, Browser, TestGateway) {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var(SECRET_VAR, "hostile-test-secret"));
    let idp = provider(flaw).await;
    let backend = Backend::named("app").await;
    let routes = format!(
        "  - upstream: app
    oidc:
      discovery: http://{}/.well-known/openid-configuration
      client_id: hostile
      client_secret_env: {SECRET_VAR}
      cookie_secure: false
",
        idp.addr
    );
    let gw = TestGateway::start(&config(&[backend.addr], &routes));
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}/", gw.addr),
            "mallory",
            &format!("{}/oidc/callback", gw.addr),
        )
        .await;
    let got = browser.get(&callback).await;
    (got, backend, browser, gw)
}

async fn refused(flaw: Flaw, reason: &str) {
    let (got, backend, mut browser, gw) = callback_with(flaw).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(got.text().contains(reason), "{}", got.text());
    assert!(got
        .headers
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("ferrogate_session=")));
    browser.fields = vec![("accept".into(), "application/json".into())];
    let after = browser.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_good_id_token_from_this_provider_opens_a_session() {
    let (got, backend, mut browser, gw) = callback_with(Flaw::None).await;
    assert_eq!(got.status, StatusCode::FOUND, "{}", got.text());
    let after = browser.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(
        backend.requests()[0].headers["authorization"],
        "Bearer at-1"
    );
}

#[tokio::test]
async fn an_id_token_with_another_logins_nonce_is_refused() {
    refused(Flaw::WrongNonce, "nonce").await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    refused(Flaw::Expired, "id token not valid").await;
}

#[tokio::test]
async fn an_id_token_signed_by_a_foreign_key_is_refused() {
    refused(Flaw::ForeignKey, "id token not valid").await;
}

#[tokio::test]
async fn an_id_token_for_another_client_is_refused() {
    refused(Flaw::WrongAudience, "id token not valid").await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    refused(Flaw::WrongIssuer, "id token not valid").await;
}
