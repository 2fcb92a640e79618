//! OpenID Connect login end to end against a real provider (the `oidc-provider` package,
//! started once for this binary by `support::oidc`): the redirect to log in, the callback,
//! the session with the access token forwarded, refresh with a short token lifetime (one
//! refresh however many requests wait), logout, and refused callbacks that create no
//! session.
#![allow(clippy::unwrap_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use http::StatusCode;
use support::oidc::{fetch, location, Browser, Provider};
use support::redis::RedisServer;
use support::*;

/// The client secret every test client gets, read by the gateway from this variable.
const SECRET_VAR: &str = "FERROGATE_TEST_OIDC_SECRET";
const SECRET: &str = "a-test-client-secret-of-some-length";

fn secret_in_env() {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var(SECRET_VAR, SECRET));
}

/// A gateway with one route to `backend` logging users in as client `client`, with
/// `extra` settings under `oidc:`.
fn gateway(backend: SocketAddr, client: &str, extra: &str) -> TestGateway {
    secret_in_env();
    let provider = Provider::get();
    let routes = format!(
        "  - upstream: app
    oidc:
      discovery: {}/.well-known/openid-configuration
      client_id: {client}
      client_secret_env: {SECRET_VAR}
      cookie_secure: false
      logout_path: /oidc/logout
      scopes: [email]
      forward_claims: {{email: X-User-Email}}
{extra}",
        provider.issuer()
    );
    TestGateway::start(&config(&[backend], &routes))
}

/// Logs `user` in through the gateway at `gw`, starting at `path`; returns the browser.
async fn logged_in(gw: SocketAddr, path: &str, user: &str) -> Browser {
    let mut browser = Browser::new();
    let start = format!("http://{gw}{path}");
    let callback = browser
        .login_until(&start, user, &format!("{gw}/oidc/callback"))
        .await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.text());
    assert_eq!(back.header("location"), Some(path));
    browser
}

fn bearer_seen(backend: &Backend) -> Vec<String> {
    backend
        .requests()
        .iter()
        .filter_map(|s| s.headers.get("authorization"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_browser_logs_in_and_the_backend_gets_the_access_token_and_claims() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-basic", "");
    Provider::get()
        .register("login-basic", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let first = browser.get(&format!("http://{}/page?x=1", gw.addr)).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let to = first.header("location").unwrap();
    assert!(to.starts_with(&format!("{}/auth?", Provider::get().issuer())));
    for part in [
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "scope=openid+email",
    ] {
        assert!(to.contains(part), "{to} lacks {part}");
    }
    assert_eq!(backend.count(), 0);

    let mut browser = logged_in(gw.addr, "/page?x=1", "alice").await;
    let session = browser.jar[&gw.addr.to_string()]["ferrogate_session"].clone();
    browser
        .jar
        .get_mut(&gw.addr.to_string())
        .unwrap()
        .insert("theme".into(), "dark".into());
    let got = browser.get(&format!("http://{}/page?x=1", gw.addr)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    let seen = backend.requests().pop().unwrap();
    let auth = seen.headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("Bearer ") && auth.len() > 20, "{auth}");
    assert_eq!(seen.headers["x-user-email"], "alice@example.test");
    // The session cookie stays at the gateway; the application's own cookies go through.
    let cookies = seen.headers["cookie"].to_str().unwrap();
    assert_eq!(cookies, "theme=dark");
    assert!(!cookies.contains(&session));
}

#[tokio::test]
async fn the_session_cookie_is_http_only_lax_and_host_only() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-cookie", "");
    Provider::get()
        .register("login-cookie", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}/", gw.addr),
            "alice",
            &format!("{}/oidc/callback", gw.addr),
        )
        .await;
    let back = browser.get(&callback).await;
    let set: Vec<&str> = back
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("ferrogate_session="))
        .unwrap();
    assert!(session.contains("; HttpOnly") && session.contains("; SameSite=Lax"));
    assert!(!session.to_ascii_lowercase().contains("domain="));
    assert!(set
        .iter()
        .any(|c| c.starts_with("ferrogate_session_login=;") && c.contains("Max-Age=0")));
}

#[tokio::test]
async fn an_api_request_without_a_session_gets_401_and_never_reaches_the_backend() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-api", "");
    let got = fetch(
        "GET",
        &format!("http://{}/api/items", gw.addr),
        &[("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(got.header("www-authenticate"), Some("Bearer"));
    let posted = fetch(
        "POST",
        &format!("http://{}/page", gw.addr),
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(posted.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_tampered_session_cookie_is_not_a_session() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-tamper", "");
    Provider::get()
        .register("login-tamper", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = logged_in(gw.addr, "/", "alice").await;
    let jar = browser.jar.get_mut(&gw.addr.to_string()).unwrap();
    let id = jar["ferrogate_session"].clone();
    let mut tampered = id.into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    jar.insert(
        "ferrogate_session".into(),
        String::from_utf8(tampered).unwrap(),
    );
    browser.fields = vec![("accept".into(), "application/json".into())];
    let got = browser.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn concurrent_requests_during_a_refresh_wait_for_one_refresh_and_rotation_holds() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-refresh", "      refresh_before: 1s\n");
    let provider = Provider::get();
    provider
        .register("login-refresh", SECRET, &[gw.addr], 3)
        .await;
    let browser = logged_in(gw.addr, "/", "alice").await;
    let ok = browser.clone().get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(provider.grants("login-refresh", "refresh_token").await, 0);

    // The token (3 s) is due for refresh one second before it ends.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let mut b = browser.clone();
        let url = format!("http://{}/", gw.addr);
        waiting.push(tokio::spawn(async move { b.get(&url).await.status }));
    }
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(provider.grants("login-refresh", "refresh_token").await, 1);
    let tokens = bearer_seen(&backend);
    assert_ne!(tokens[0], tokens[tokens.len() - 1], "a new access token");
    assert_eq!(
        tokens[1..]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "all waiting requests use the one refreshed token"
    );

    // The provider rotates refresh tokens: a second refresh works only with the new one.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = browser.clone().get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(provider.grants("login-refresh", "refresh_token").await, 2);
}

#[tokio::test]
async fn a_failed_refresh_ends_the_session() {
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        "login-refresh-fails",
        "      refresh_before: 1s\n",
    );
    let provider = Provider::get();
    provider
        .register("login-refresh-fails", SECRET, &[gw.addr], 2)
        .await;
    let browser = logged_in(gw.addr, "/", "alice").await;
    // The provider no longer knows the gateway's secret: the refresh is refused.
    provider
        .register(
            "login-refresh-fails",
            "another-secret-entirely",
            &[gw.addr],
            2,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut api = browser.clone();
    api.fields = vec![("accept".into(), "application/json".into())];
    let got = api.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    // The session is gone: a browser is sent to log in again.
    let again = browser.clone().get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(again.status, StatusCode::FOUND);
    assert!(again
        .header("location")
        .unwrap()
        .starts_with(&provider.issuer()));
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn logout_ends_the_session_and_sends_the_user_to_the_provider() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-logout", "");
    let provider = Provider::get();
    provider
        .register("login-logout", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = logged_in(gw.addr, "/", "alice").await;
    let before = browser.clone();
    let out = browser
        .get(&format!("http://{}/oidc/logout", gw.addr))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    let to = out.header("location").unwrap();
    assert!(to.starts_with(&format!(
        "{}/session/end?id_token_hint=ey",
        provider.issuer()
    )));
    let back = format!("http://{}/", gw.addr)
        .replace(':', "%3A")
        .replace('/', "%2F");
    assert!(
        to.contains(&format!("post_logout_redirect_uri={back}")),
        "{to}"
    );
    assert!(!browser.jar[&gw.addr.to_string()].contains_key("ferrogate_session"));
    // The provider accepts the hint and sends the browser back.
    let ended = browser.get(to).await;
    assert!(ended.status.is_success() || ended.status.is_redirection());
    // The old cookie no longer opens a session.
    let mut old = before;
    old.fields = vec![("accept".into(), "application/json".into())];
    let got = old.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_forged_or_replayed_state_is_refused_and_creates_no_session() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-state", "");
    Provider::get()
        .register("login-state", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}/", gw.addr),
            "alice",
            &format!("{}/oidc/callback", gw.addr),
        )
        .await;
    // Forged: a state the gateway never issued.
    let forged = callback.replace("state=", "state=x");
    let got = browser.clone().get(&forged).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert!(got.text().contains("state"), "{}", got.text());
    assert!(got.header("set-cookie").is_none());
    // Another browser (without the login cookie) cannot complete this login.
    let mut other = Browser::new();
    let stolen = other.get(&callback).await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST);
    assert!(stolen.header("set-cookie").is_none());
    // The state was used by that attempt: the right browser is refused too, and again.
    let late = browser.get(&callback).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert!(late.header("set-cookie").is_none());
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_callback_is_good_once() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-replay", "");
    Provider::get()
        .register("login-replay", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}/", gw.addr),
            "alice",
            &format!("{}/oidc/callback", gw.addr),
        )
        .await;
    let mut replay = browser.clone();
    let first = browser.get(&callback).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let second = replay.get(&callback).await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert!(second.header("set-cookie").is_none());
    let _ = location(&callback, &first);
}

#[tokio::test]
async fn a_back_channel_logout_ends_the_users_sessions() {
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        "login-backchannel",
        "      backchannel_logout_path: /oidc/backchannel\n",
    );
    let provider = Provider::get();
    provider
        .register("login-backchannel", SECRET, &[gw.addr], 3600)
        .await;
    let mut bob = logged_in(gw.addr, "/", "bob").await;
    let mut carol = logged_in(gw.addr, "/", "carol").await;
    for b in [&mut bob, &mut carol] {
        b.fields = vec![("accept".into(), "application/json".into())];
        assert_eq!(b.get(&format!("http://{}/", gw.addr)).await.status, 200);
    }
    let ended = provider.end_sessions_of("bob").await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text());
    assert_eq!(
        provider.backchannel_deliveries("login-backchannel").await,
        1
    );
    let got = bob.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    // Another user's session is untouched.
    let got = carol.get(&format!("http://{}/", gw.addr)).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn a_forged_logout_token_ends_nothing() {
    let backend = Backend::named("app").await;
    let gw = gateway(
        backend.addr,
        "login-backchannel-forged",
        "      backchannel_logout_path: /oidc/backchannel\n",
    );
    Provider::get()
        .register("login-backchannel-forged", SECRET, &[gw.addr], 3600)
        .await;
    let mut bob = logged_in(gw.addr, "/", "bob").await;
    let url = format!("http://{}/oidc/backchannel", gw.addr);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for body in [
        "",
        "logout_token=not.a.jwt",
        "logout_token=eyJhbGciOiJub25lIn0.e30.",
    ] {
        let got = fetch("POST", &url, &form, body).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{body}");
    }
    bob.fields = vec![("accept".into(), "application/json".into())];
    assert_eq!(bob.get(&format!("http://{}/", gw.addr)).await.status, 200);
    assert_eq!(backend.count(), 1);
}

/// Two gateways sharing sessions through Redis, both logging users in as `client`.
fn shared_pair(
    backend: SocketAddr,
    client: &str,
    redis: &RedisServer,
) -> (TestGateway, TestGateway) {
    shared_pair_with(backend, client, redis, "")
}

/// As [`shared_pair`], with `extra` settings under `oidc:`.
fn shared_pair_with(
    backend: SocketAddr,
    client: &str,
    redis: &RedisServer,
    extra: &str,
) -> (TestGateway, TestGateway) {
    secret_in_env();
    let yaml = |_| {
        let routes = format!(
            "  - upstream: app
    oidc:
      discovery: {}/.well-known/openid-configuration
      client_id: {client}
      client_secret_env: {SECRET_VAR}
      cookie_secure: false
      sessions: redis
      backchannel_logout_path: /oidc/backchannel
{extra}",
            Provider::get().issuer()
        );
        format!(
            "redis:\n  url: {}\n  timeout: 1s\n{}",
            redis.url(),
            config(&[backend], &routes)
        )
    };
    (TestGateway::start(&yaml(0)), TestGateway::start(&yaml(1)))
}

/// The browser's cookies for `from` copied to `to` (a balancer in front of both).
fn same_cookies(browser: &mut Browser, from: SocketAddr, to: SocketAddr) {
    let jar = browser.jar[&from.to_string()].clone();
    browser.jar.insert(to.to_string(), jar);
    browser.fields = vec![("accept".into(), "application/json".into())];
}

#[tokio::test]
async fn sessions_in_redis_are_seen_by_every_instance_and_back_channel_logout_ends_them_on_all() {
    let redis = RedisServer::start();
    let backend = Backend::named("app").await;
    let (a, b) = shared_pair(backend.addr, "login-shared", &redis);
    let provider = Provider::get();
    provider
        .register("login-shared", SECRET, &[a.addr, b.addr], 3600)
        .await;
    // Logged in through B; the provider's back-channel logout goes to A.
    let mut dave = logged_in(b.addr, "/", "dave").await;
    same_cookies(&mut dave, b.addr, a.addr);
    for gw in [a.addr, b.addr] {
        let got = dave.get(&format!("http://{gw}/")).await;
        assert_eq!(got.status, StatusCode::OK, "via {gw}");
    }
    let ended = provider.end_sessions_of("dave").await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text());
    assert_eq!(provider.backchannel_deliveries("login-shared").await, 1);
    for gw in [a.addr, b.addr] {
        let got = dave.get(&format!("http://{gw}/")).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "via {gw}");
    }
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn a_redis_session_store_that_is_down_answers_503_not_a_session() {
    let mut redis = RedisServer::start();
    let backend = Backend::named("app").await;
    let (a, _b) = shared_pair(backend.addr, "login-shared-down", &redis);
    Provider::get()
        .register("login-shared-down", SECRET, &[a.addr], 3600)
        .await;
    let mut erin = logged_in(a.addr, "/", "erin").await;
    erin.fields = vec![("accept".into(), "application/json".into())];
    assert_eq!(erin.get(&format!("http://{}/", a.addr)).await.status, 200);
    redis.stop();
    let got = erin.get(&format!("http://{}/", a.addr)).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.count(), 1);
}

/// A gateway whose upstream group gets a client-credentials token of `client`.
fn service_gateway(backend: SocketAddr, client: &str, extra: &str) -> TestGateway {
    secret_in_env();
    let yaml = format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
upstreams:
  svc:
    targets: [{{address: \"{backend}\"}}]
    client_credentials:
      token_url: {}/token
      client_id: {client}
      client_secret_env: {SECRET_VAR}
{extra}routes:
  - upstream: svc
",
        Provider::get().issuer()
    );
    TestGateway::start(&yaml)
}

#[tokio::test]
async fn an_upstream_gets_one_client_credentials_token_for_concurrent_requests() {
    let backend = Backend::named("svc").await;
    let gw = service_gateway(backend.addr, "service-cc", "");
    let provider = Provider::get();
    provider
        .register("service-cc", SECRET, &[gw.addr], 3600)
        .await;
    let mut calls = Vec::new();
    for _ in 0..6 {
        let url = format!("http://{}/orders", gw.addr);
        calls.push(tokio::spawn(async move {
            fetch("GET", &url, &[("authorization", "Bearer client-sent")], "")
                .await
                .status
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(provider.grants("service-cc", "client_credentials").await, 1);
    let tokens = bearer_seen(&backend);
    assert_eq!(tokens.len(), 6);
    assert!(tokens
        .iter()
        .all(|t| t == &tokens[0] && t != "Bearer client-sent"));
}

#[tokio::test]
async fn a_client_credentials_token_is_replaced_before_it_expires() {
    let backend = Backend::named("svc").await;
    let gw = service_gateway(
        backend.addr,
        "service-cc-short",
        "      refresh_before: 1s\n",
    );
    let provider = Provider::get();
    provider
        .register("service-cc-short", SECRET, &[gw.addr], 2)
        .await;
    let url = format!("http://{}/", gw.addr);
    assert_eq!(fetch("GET", &url, &[], "").await.status, StatusCode::OK);
    assert_eq!(fetch("GET", &url, &[], "").await.status, StatusCode::OK);
    assert_eq!(
        provider
            .grants("service-cc-short", "client_credentials")
            .await,
        1
    );
    // Renewed one second before the two-second token ends.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fetch("GET", &url, &[], "").await.status, StatusCode::OK);
    assert_eq!(
        provider
            .grants("service-cc-short", "client_credentials")
            .await,
        2
    );
    let tokens = bearer_seen(&backend);
    assert_eq!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
}

#[tokio::test]
async fn a_refused_client_credentials_grant_answers_503_and_reaches_no_upstream() {
    let backend = Backend::named("svc").await;
    let gw = service_gateway(backend.addr, "service-cc-refused", "");
    Provider::get()
        .register(
            "service-cc-refused",
            "not-the-gateways-secret",
            &[gw.addr],
            3600,
        )
        .await;
    let got = fetch("GET", &format!("http://{}/", gw.addr), &[], "").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn with_redis_a_login_started_on_one_instance_completes_on_another() {
    let redis = RedisServer::start();
    let backend = Backend::named("app").await;
    let (a, b) = shared_pair(backend.addr, "login-shared-callback", &redis);
    Provider::get()
        .register("login-shared-callback", SECRET, &[a.addr, b.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}/start", a.addr),
            "frank",
            &format!("{}/oidc/callback", a.addr),
        )
        .await;
    // The balancer sends the callback to B (with the browser's cookies for the site).
    let on_b = callback.replace(&a.addr.to_string(), &b.addr.to_string());
    let jar = browser.jar[&a.addr.to_string()].clone();
    browser.jar.insert(b.addr.to_string(), jar);
    let back = browser.get(&on_b).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.text());
    assert_eq!(back.header("location"), Some("/start"));
    same_cookies(&mut browser, b.addr, a.addr);
    let got = browser.get(&format!("http://{}/start", a.addr)).await;
    assert_eq!(got.status, StatusCode::OK);
    // The state was taken: the same callback on A is refused.
    let again = browser.get(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_in_memory_survive_a_configuration_reload() {
    secret_in_env();
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let dir = tempdir::Dir::new("oidc-reload");
    let path = dir.path.join("gateway.yaml");
    let yaml = |backend: SocketAddr| {
        let routes = format!(
            "  - upstream: app
    oidc:
      discovery: {}/.well-known/openid-configuration
      client_id: login-reload
      client_secret_env: {SECRET_VAR}
      cookie_secure: false
",
            Provider::get().issuer()
        );
        config(&[backend], &routes)
    };
    let write = |text: String| {
        let tmp = dir.path.join("gateway.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(yaml(one.addr));
    let gw = TestGateway::start_file(&path);
    Provider::get()
        .register("login-reload", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = logged_in(gw.addr, "/", "grace").await;
    browser.fields = vec![("accept".into(), "application/json".into())];
    assert_eq!(
        browser.get(&format!("http://{}/", gw.addr)).await.text(),
        "one"
    );
    write(yaml(two.addr));
    let url = format!("http://{}/", gw.addr);
    let reloaded = eventually(Duration::from_secs(5), || {
        let mut b = browser.clone();
        let url = url.clone();
        async move { b.get(&url).await.text() == "two" }
    })
    .await;
    assert!(
        reloaded,
        "the session still opens the route after the reload"
    );
}

/// A gateway whose upstream group authenticates as `client` with the RSA test key (`kid`
/// gw-1), and the provider's registration of `client` with the public key `registered`.
async fn private_key_gateway(
    backend: SocketAddr,
    client: &str,
    dir: &tempdir::Dir,
    registered: &auth_support::testkeys::TestKey,
) -> TestGateway {
    let pem = dir.path.join("gateway-key.pem");
    std::fs::write(&pem, &auth_support::testkeys::rsa().private_pem).unwrap();
    let yaml = format!(
        "workers: 1
listeners: [{{address: \"127.0.0.1:0\"}}]
upstreams:
  svc:
    targets: [{{address: \"{backend}\"}}]
    client_credentials:
      token_url: {}/token
      client_id: {client}
      private_key_file: {}
      private_key_kid: gw-1
routes:
  - upstream: svc
",
        Provider::get().issuer(),
        pem.display()
    );
    let gw = TestGateway::start(&yaml);
    let mut jwk = auth_support::testkeys::jwk_with_kid(registered, "gw-1");
    jwk["use"] = "sig".into();
    Provider::get()
        .register_metadata(&serde_json::json!({
            "client_id": client,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "RS256",
            "jwks": {"keys": [jwk]},
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        }))
        .await;
    gw
}

#[tokio::test]
async fn a_client_credentials_token_is_obtained_with_a_private_key_jwt() {
    let backend = Backend::named("svc").await;
    let dir = tempdir::Dir::new("oidc-pkjwt");
    let key = auth_support::testkeys::rsa();
    let gw = private_key_gateway(backend.addr, "service-pkjwt", &dir, key).await;
    let got = fetch("GET", &format!("http://{}/", gw.addr), &[], "").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(
        Provider::get()
            .grants("service-pkjwt", "client_credentials")
            .await,
        1
    );
    assert!(bearer_seen(&backend)[0].starts_with("Bearer "));
}

#[tokio::test]
async fn a_private_key_the_provider_does_not_know_gets_no_token() {
    let backend = Backend::named("svc").await;
    let dir = tempdir::Dir::new("oidc-pkjwt-foreign");
    let other = auth_support::testkeys::rsa2();
    let gw = private_key_gateway(backend.addr, "service-pkjwt-foreign", &dir, other).await;
    let got = fetch("GET", &format!("http://{}/", gw.addr), &[], "").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn with_redis_instances_refreshing_the_same_session_ask_the_provider_once() {
    let redis = RedisServer::start();
    let backend = Backend::named("app").await;
    let (a, b) = shared_pair_with(
        backend.addr,
        "login-shared-refresh",
        &redis,
        "      refresh_before: 1s\n",
    );
    let provider = Provider::get();
    provider
        .register("login-shared-refresh", SECRET, &[a.addr, b.addr], 3)
        .await;
    let mut browser = logged_in(a.addr, "/", "heidi").await;
    same_cookies(&mut browser, a.addr, b.addr);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut waiting = Vec::new();
    for i in 0..8 {
        let mut br = browser.clone();
        let url = format!("http://{}/", if i % 2 == 0 { a.addr } else { b.addr });
        waiting.push(tokio::spawn(async move { br.get(&url).await.status }));
    }
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        provider
            .grants("login-shared-refresh", "refresh_token")
            .await,
        1
    );
    let tokens = bearer_seen(&backend);
    assert_eq!(
        tokens
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "both instances send the one refreshed token"
    );
}

#[tokio::test]
async fn a_logged_in_request_still_passes_the_routes_parameter_rules() {
    let backend = Backend::named("app").await;
    let yaml_params = "    validate: {params: [{name: page, in: query, pattern: \"^[0-9]+$\"}]}\n";
    secret_in_env();
    let routes = format!(
        "  - upstream: app
{yaml_params}    oidc:
      discovery: {}/.well-known/openid-configuration
      client_id: login-params
      client_secret_env: {SECRET_VAR}
      cookie_secure: false
",
        Provider::get().issuer()
    );
    let gw = TestGateway::start(&config(&[backend.addr], &routes));
    Provider::get()
        .register("login-params", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = logged_in(gw.addr, "/?page=1", "ivan").await;
    let ok = browser.get(&format!("http://{}/?page=2", gw.addr)).await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = browser.get(&format!("http://{}/?page=x", gw.addr)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn after_login_the_browser_is_never_sent_to_another_site() {
    let backend = Backend::named("app").await;
    let gw = gateway(backend.addr, "login-open-redirect", "");
    Provider::get()
        .register("login-open-redirect", SECRET, &[gw.addr], 3600)
        .await;
    let mut browser = Browser::new();
    let callback = browser
        .login_until(
            &format!("http://{}//evil.example/x", gw.addr),
            "judy",
            &format!("{}/oidc/callback", gw.addr),
        )
        .await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, StatusCode::FOUND);
    assert_eq!(back.header("location"), Some("/"));
}
