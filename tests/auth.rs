//! Authentication, authorization and input validation end to end: every hostile token of the
//! attack list is refused with 401 and never reaches the backend; valid HS, RS, PS, ES and
//! EdDSA tokens pass; API keys, Basic, ACLs, JWKS rotation and introspection against a local
//! identity provider, IP rules, CORS, schema and parameter validation, consumer-keyed rate
//! limits, and no secret in the access log or an error body.
#![allow(clippy::unwrap_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_support::header::b64url_encode;
use auth_support::idp::{Answer, Idp};
use auth_support::testkeys::{self, jwk_with_kid, sign};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::tempdir::Dir;
use support::*;

const HS_SECRET: &str = "0123456789abcdef0123456789abcdef";
const ALICE_KEY: &str = "alice-secret-key-1";
const BOB_KEY: &str = "bob-secret-key-2";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sha256_hex(s: &str) -> String {
    ferrogate::auth::apikey::hash_key(s.as_bytes())
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "iss-a", "aud": "aud-a", "exp": now() + 600, "iat": now()})
}

/// A gateway in front of `backend` with consumers alice (admins) and bob, and the methods:
/// `keys` (X-Api-Key), `qkeys` (?api_key=, hidden upstream), `pw` (Basic), `hs` (HS256),
/// `asym` (RS256, PS256, ES256, EdDSA keys from files). `extra_methods` and `top` add YAML.
fn gateway(
    backend: SocketAddr,
    dir: &Dir,
    extra_methods: &str,
    top: &str,
    routes: &str,
) -> TestGateway {
    let write = |name: &str, pem: &str| {
        let p = dir.path.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let rsa = write("rsa.pem", &testkeys::rsa().public_pem);
    let ec = write("ec.pem", &testkeys::ec256().public_pem);
    let ed = write("ed.pem", &testkeys::ed25519().public_pem);
    let alice_pw = bcrypt::hash("alice-pw", 4).unwrap();
    let (ak, bk) = (sha256_hex(ALICE_KEY), sha256_hex(BOB_KEY));
    let lines = [
        "workers: 1".to_owned(),
        "listeners: [{address: \"127.0.0.1:0\"}]".to_owned(),
        format!("upstreams: {{app: {{targets: [{{address: \"{backend}\"}}]}}}}"),
        "consumers:".to_owned(),
        format!("  alice: {{groups: [admins], api_keys: [\"{ak}\"], password_hash: \"{alice_pw}\"}}"),
        format!("  bob: {{api_keys: [\"{bk}\"]}}"),
        "auth:".to_owned(),
        "  consumer_header: X-Consumer".to_owned(),
        "  methods:".to_owned(),
        "    keys: {api_key: {header: X-Api-Key}}".to_owned(),
        "    qkeys: {api_key: {query: api_key, hide_credentials: true}}".to_owned(),
        "    pw: {basic: {realm: test}}".to_owned(),
        format!("    hs: {{jwt: {{keys: [{{kid: h1, alg: HS256, secret: \"{HS_SECRET}\"}}], issuers: [iss-a], audiences: [aud-a], leeway: 5s, forward_claims: {{sub: X-User}}}}}}"),
        "    asym:".to_owned(),
        "      jwt:".to_owned(),
        "        keys:".to_owned(),
        format!("          - {{kid: r1, alg: RS256, pem_file: \"{rsa}\"}}"),
        format!("          - {{kid: p1, alg: PS256, pem_file: \"{rsa}\"}}"),
        format!("          - {{kid: e1, alg: ES256, pem_file: \"{ec}\"}}"),
        format!("          - {{kid: d1, alg: EdDSA, pem_file: \"{ed}\"}}"),
        "        issuers: [iss-a]".to_owned(),
        "        audiences: [aud-a]".to_owned(),
        "        forward_claims: {sub: X-User}".to_owned(),
    ];
    let yaml = format!(
        "{}\n{extra_methods}{top}routes:\n{routes}",
        lines.join("\n")
    );
    TestGateway::start(&yaml)
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "t");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(
        addr,
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

async fn get_auth(addr: SocketAddr, path: &str, token: &str) -> Got {
    let bearer = format!("Bearer {token}");
    request(addr, Method::GET, path, &[("authorization", &bearer)], "").await
}

fn forge(header: &Value, payload: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(payload),
        b64url_encode(signature)
    )
}

fn hs_token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        Some("h1"),
        &claims(sub),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
}

#[tokio::test]
async fn hostile_tokens_get_401_and_never_reach_the_backend() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-attacks");
    let routes = "  - {match: {path: {prefix: /hs}}, upstream: app, auth: {methods: [hs]}}\n  - {match: {path: {prefix: /asym}}, upstream: app, auth: {methods: [asym]}}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let good = hs_token("carol");
    let parts: Vec<&str> = good.split('.').collect();
    let body = claims("carol").to_string();
    let rsa = testkeys::rsa();
    let mut attacks: Vec<(&str, &str, String)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = forge(&json!({"alg": none, "typ": "JWT"}), body.as_bytes(), b"");
        attacks.push(("alg none", "/hs", t));
    }
    // HS256 keyed with the RSA public key, aimed at the RSA key's kid.
    let confused = sign(
        Algorithm::HS256,
        Some("r1"),
        &claims("carol"),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    );
    attacks.push(("hs256 with rsa public key", "/asym", confused));
    let rs_for_hs = sign(
        Algorithm::RS256,
        Some("h1"),
        &claims("carol"),
        &rsa.encoding,
    );
    attacks.push(("rs token for hs key", "/hs", rs_for_hs));
    let mut expired = claims("carol");
    expired["exp"] = json!(now() - 3600);
    attacks.push((
        "expired",
        "/hs",
        sign(
            Algorithm::HS256,
            Some("h1"),
            &expired,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        ),
    ));
    let mut early = claims("carol");
    early["nbf"] = json!(now() + 3600);
    attacks.push((
        "not yet valid",
        "/hs",
        sign(
            Algorithm::HS256,
            Some("h1"),
            &early,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        ),
    ));
    let mut aud = claims("carol");
    aud["aud"] = json!("other");
    attacks.push((
        "wrong aud",
        "/hs",
        sign(
            Algorithm::HS256,
            Some("h1"),
            &aud,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        ),
    ));
    let mut iss = claims("carol");
    iss["iss"] = json!("evil");
    attacks.push((
        "wrong iss",
        "/hs",
        sign(
            Algorithm::HS256,
            Some("h1"),
            &iss,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        ),
    ));
    let mut admin = claims("admin");
    admin["role"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url_encode(admin.to_string().as_bytes()),
        parts[2]
    );
    attacks.push(("tampered payload", "/hs", tampered));
    attacks.push((
        "stripped signature",
        "/hs",
        format!("{}.{}.", parts[0], parts[1]),
    ));
    let mut sig = parts[2].as_bytes().to_vec();
    sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
    attacks.push((
        "bit-flipped signature",
        "/hs",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(sig).unwrap()
        ),
    ));
    attacks.push(("two segments", "/hs", format!("{}.{}", parts[0], parts[1])));
    attacks.push((
        "five segments",
        "/hs",
        format!("{good}.{}.{}", parts[1], parts[2]),
    ));
    let unknown_kid = sign(
        Algorithm::HS256,
        Some("nope"),
        &claims("carol"),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    attacks.push(("unknown kid", "/hs", unknown_kid));
    let traversal = sign(
        Algorithm::HS256,
        Some("../../../../etc/passwd"),
        &claims("carol"),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    attacks.push(("kid path traversal", "/hs", traversal));
    let jwk_header = json!({"alg": "RS256", "kid": "r1", "jwk": testkeys::rsa2().jwk});
    let embedded = {
        let signing_input = format!(
            "{}.{}",
            b64url_encode(jwk_header.to_string().as_bytes()),
            b64url_encode(body.as_bytes())
        );
        let full = sign(
            Algorithm::RS256,
            Some("r1"),
            &claims("carol"),
            &testkeys::rsa2().encoding,
        );
        format!("{signing_input}.{}", full.rsplit('.').next().unwrap())
    };
    attacks.push(("embedded jwk", "/asym", embedded));
    let jku = forge(
        &json!({"alg": "RS256", "kid": "r1", "jku": "http://127.0.0.1:1/jwks"}),
        body.as_bytes(),
        b"sig",
    );
    attacks.push(("jku elsewhere", "/asym", jku));
    let zeros = forge(
        &json!({"alg": "ES256", "kid": "e1"}),
        body.as_bytes(),
        &[0u8; 64],
    );
    attacks.push(("es256 zero signature", "/asym", zeros));
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(64 * 1024), parts[2]);
    attacks.push(("64 KiB token", "/hs", huge));
    let not_json = forge(
        &json!({"alg": "HS256", "kid": "h1"}),
        b"not json at all",
        b"sig",
    );
    attacks.push(("non-json payload", "/hs", not_json));

    for (what, path, token) in &attacks {
        let got = get_auth(gw.addr, path, token).await;
        // A 64 KiB header is refused at the door (431) before authentication: also fine.
        assert!(
            got.status == StatusCode::UNAUTHORIZED
                || (*what == "64 KiB token"
                    && got.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "{what}: got {}",
            got.status
        );
        assert!(!got.text().contains(token.as_str()), "{what}: token echoed");
    }
    assert_eq!(backend.count(), 0, "a hostile token reached the backend");
    let got = get_auth(gw.addr, "/hs", &good).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn valid_tokens_of_every_family_pass_with_claims_forwarded() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-valid");
    let routes = "  - {match: {path: {prefix: /hs}}, upstream: app, auth: {methods: [hs]}}\n  - {match: {path: {prefix: /asym}}, upstream: app, auth: {methods: [asym]}}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let rsa = testkeys::rsa();
    let tokens = [
        ("/hs", hs_token("alice")),
        (
            "/asym",
            sign(
                Algorithm::RS256,
                Some("r1"),
                &claims("alice"),
                &rsa.encoding,
            ),
        ),
        (
            "/asym",
            sign(
                Algorithm::PS256,
                Some("p1"),
                &claims("alice"),
                &rsa.encoding,
            ),
        ),
        (
            "/asym",
            sign(
                Algorithm::ES256,
                Some("e1"),
                &claims("alice"),
                &testkeys::ec256().encoding,
            ),
        ),
        (
            "/asym",
            sign(
                Algorithm::EdDSA,
                Some("d1"),
                &claims("alice"),
                &testkeys::ed25519().encoding,
            ),
        ),
    ];
    for (path, token) in &tokens {
        let got = get_auth(gw.addr, path, token).await;
        assert_eq!(got.status, StatusCode::OK, "{path} {token}");
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), tokens.len());
    for s in &seen {
        assert_eq!(s.headers.get("x-user").unwrap(), "alice");
        assert_eq!(s.headers.get("x-consumer").unwrap(), "alice");
    }
}

#[tokio::test]
async fn clients_cannot_pose_as_forwarded_claims_or_consumers() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-pose");
    let routes = "  - {match: {path: {prefix: /hs}}, upstream: app, auth: {methods: [hs]}}\n  - {match: {path: {prefix: /open}}, upstream: app}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let bearer = format!("Bearer {}", hs_token("carol"));
    let forged = [
        ("authorization", bearer.as_str()),
        ("x-user", "admin"),
        ("x-consumer", "alice"),
    ];
    assert_eq!(
        request(gw.addr, Method::GET, "/hs", &forged, "")
            .await
            .status,
        StatusCode::OK
    );
    let open = [("x-consumer", "alice")];
    assert_eq!(
        request(gw.addr, Method::GET, "/open", &open, "")
            .await
            .status,
        StatusCode::OK
    );
    let seen = backend.requests();
    assert_eq!(seen[0].headers.get("x-user").unwrap(), "carol");
    // carol is no configured consumer: no consumer header, and the forged one is gone.
    assert!(seen[0].headers.get("x-consumer").is_none());
    assert!(seen[1].headers.get("x-consumer").is_none());
}

#[tokio::test]
async fn api_keys_from_header_and_query_name_their_consumer() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-keys");
    let routes = "  - {match: {path: {prefix: /k}}, upstream: app, auth: {methods: [keys]}}\n  - {match: {path: {prefix: /q}}, upstream: app, auth: {methods: [qkeys]}}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let ok = request(gw.addr, Method::GET, "/k", &[("x-api-key", ALICE_KEY)], "").await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = request(gw.addr, Method::GET, "/k", &[("x-api-key", "wrong")], "").await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.header("www-authenticate").is_some());
    assert_eq!(bad.header("content-type"), Some("application/problem+json"));
    let none = request(gw.addr, Method::GET, "/k", &[], "").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let q = request(
        gw.addr,
        Method::GET,
        &format!("/q?x=1&api_key={BOB_KEY}"),
        &[],
        "",
    )
    .await;
    assert_eq!(q.status, StatusCode::OK);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers.get("x-consumer").unwrap(), "alice");
    assert_eq!(seen[1].headers.get("x-consumer").unwrap(), "bob");
    assert_eq!(
        seen[1].uri.to_string(),
        "/q?x=1",
        "the key must not reach the upstream"
    );
}

#[tokio::test]
async fn basic_auth_and_group_acl() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-basic");
    let routes = "  - {match: {path: {prefix: /pw}}, upstream: app, auth: {methods: [pw]}}\n  - {match: {path: {prefix: /admin}}, upstream: app, auth: {methods: [keys, pw], allow: {groups: [admins]}}}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let basic =
        |user: &str, pw: &str| format!("Basic {}", b64_std(format!("{user}:{pw}").as_bytes()));
    let ok = request(
        gw.addr,
        Method::GET,
        "/pw",
        &[("authorization", &basic("alice", "alice-pw"))],
        "",
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = request(
        gw.addr,
        Method::GET,
        "/pw",
        &[("authorization", &basic("alice", "nope"))],
        "",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm=\"test\""));
    let admin = request(
        gw.addr,
        Method::GET,
        "/admin",
        &[("x-api-key", ALICE_KEY)],
        "",
    )
    .await;
    assert_eq!(admin.status, StatusCode::OK);
    let bob = request(
        gw.addr,
        Method::GET,
        "/admin",
        &[("x-api-key", BOB_KEY)],
        "",
    )
    .await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    assert_eq!(backend.count(), 2);
}

fn b64_std(input: &[u8]) -> String {
    let url = b64url_encode(input).replace('-', "+").replace('_', "/");
    let pad = (4 - url.len() % 4) % 4;
    format!("{url}{}", "=".repeat(pad))
}

#[tokio::test]
async fn jwks_rotation_and_provider_outage_through_the_gateway() {
    let backend = Backend::named("app").await;
    let idp = Idp::start().await;
    let (k1, k2) = (testkeys::rsa(), testkeys::rsa2());
    idp.set_jwks(&[jwk_with_kid(k1, "k1")]);
    let dir = Dir::new("auth-jwks");
    let methods = format!(
        "    idp:\n      jwt:\n        jwks: {{url: \"{}\", refresh_interval: 1h, min_refetch_interval: 50ms, timeout: 500ms}}\n",
        idp.url("/jwks")
    );
    let routes = "  - {upstream: app, auth: {methods: [idp]}}\n";
    let gw = gateway(backend.addr, &dir, &methods, "", routes);
    let t1 = sign(Algorithm::RS256, Some("k1"), &claims("alice"), &k1.encoding);
    let t2 = sign(Algorithm::RS256, Some("k2"), &claims("alice"), &k2.encoding);
    assert_eq!(get_auth(gw.addr, "/", &t1).await.status, StatusCode::OK);
    assert_eq!(
        get_auth(gw.addr, "/", &t2).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Rotation: k2 in, k1 out. An unknown kid triggers a (rate-limited) refetch.
    idp.set_jwks(&[jwk_with_kid(k2, "k2")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_auth(gw.addr, "/", &t2).await.status, StatusCode::OK);
    let fresh_t1 = sign(Algorithm::RS256, Some("k1"), &claims("bob"), &k1.encoding);
    assert_eq!(
        get_auth(gw.addr, "/", &fresh_t1).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Provider down: the last good keys keep working.
    idp.stop();
    let t2b = sign(Algorithm::RS256, Some("k2"), &claims("bob"), &k2.encoding);
    assert_eq!(get_auth(gw.addr, "/", &t2b).await.status, StatusCode::OK);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn introspection_active_inactive_and_timeout() {
    let backend = Backend::named("app").await;
    let idp = Idp::start().await;
    idp.answer(
        "tok-active",
        Answer::Json(json!({"active": true, "sub": "alice", "scope": "read", "exp": now() + 600})),
    );
    idp.answer("tok-inactive", Answer::Json(json!({"active": false})));
    idp.answer("tok-hang", Answer::Hang);
    let dir = Dir::new("auth-introspect");
    let methods = format!(
        "    intro:\n      introspection: {{url: \"{}\", client_id: gw, client_secret: s3cret, timeout: 300ms}}\n",
        idp.url("/introspect")
    );
    let routes = "  - {upstream: app, auth: {methods: [intro], allow: {scopes: [read]}}}\n";
    let gw = gateway(backend.addr, &dir, &methods, "", routes);
    assert_eq!(
        get_auth(gw.addr, "/", "tok-active").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_auth(gw.addr, "/", "tok-inactive").await.status,
        StatusCode::UNAUTHORIZED
    );
    let started = std::time::Instant::now();
    assert_eq!(
        get_auth(gw.addr, "/", "tok-hang").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(backend.count(), 1);
    assert_eq!(
        backend.requests()[0].headers.get("x-consumer").unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn ip_rules_refuse_with_403() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-ip");
    let routes = "  - {match: {path: {prefix: /deny}}, upstream: app, ip_rules: {deny: [127.0.0.0/8]}}\n  - {match: {path: {prefix: /allow}}, upstream: app, ip_rules: {allow: [10.0.0.0/8, \"::1\"]}}\n  - {match: {path: {prefix: /ok}}, upstream: app, ip_rules: {allow: [127.0.0.1]}}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    assert_eq!(
        request(gw.addr, Method::GET, "/deny", &[], "").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        request(gw.addr, Method::GET, "/allow", &[], "")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        request(gw.addr, Method::GET, "/ok", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-cors");
    let routes = "  - upstream: app\n    auth: {methods: [keys]}\n    cors: {origins: [\"https://app.example.com\", \"https://*.example.org\"], methods: [PUT], allowed_headers: [x-api-key], exposed_headers: [x-trace], credentials: true, max_age: 10m}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let pre = [
        ("origin", "https://a.example.org"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-api-key"),
    ];
    let got = request(gw.addr, Method::OPTIONS, "/x", &pre, "").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://a.example.org")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    let evil = [
        ("origin", "https://evil.test"),
        ("access-control-request-method", "PUT"),
    ];
    assert_eq!(
        request(gw.addr, Method::OPTIONS, "/x", &evil, "")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(backend.count(), 0, "preflights never reach the backend");
    let actual = [
        ("origin", "https://app.example.com"),
        ("x-api-key", ALICE_KEY),
    ];
    let got = request(gw.addr, Method::GET, "/x", &actual, "").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(got.header("access-control-expose-headers"), Some("x-trace"));
    // A refusal carries the CORS fields too, so the page can read the 401.
    let refused = request(
        gw.addr,
        Method::GET,
        "/x",
        &[("origin", "https://app.example.com")],
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn bodies_and_parameters_are_validated_with_precise_locations() {
    let backend = Backend::start(false, |req| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::new(full(body))
    })
    .await;
    let dir = Dir::new("auth-schema");
    let routes = "  - upstream: app\n    validate:\n      max_body_bytes: 256\n      body:\n        application/json: {type: object, required: [price], properties: {price: {type: number, minimum: 0}, name: {type: string}}}\n      params:\n        - {name: limit, in: query, min: 1, max: 100}\n        - {name: x-tenant, in: header, required: true, pattern: \"^[a-z]+$\"}\n";
    let gw = gateway(backend.addr, &dir, "", "", routes);
    let json_ct = [("content-type", "application/json"), ("x-tenant", "acme")];
    let got = request(
        gw.addr,
        Method::POST,
        "/items",
        &json_ct,
        r#"{"price": -1}"#,
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(problem["errors"][0]["location"], "/price");
    let empty = request(gw.addr, Method::POST, "/items", &json_ct, "").await;
    assert_eq!(
        empty.status,
        StatusCode::BAD_REQUEST,
        "an empty body is not valid JSON"
    );
    let got = request(
        gw.addr,
        Method::POST,
        "/items",
        &[("content-type", "text/plain"), ("x-tenant", "acme")],
        "x",
    )
    .await;
    assert_eq!(got.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!(r#"{{"price": 1, "name": "{}"}}"#, "x".repeat(400));
    assert_eq!(
        request(gw.addr, Method::POST, "/items", &json_ct, &big)
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let got = request(
        gw.addr,
        Method::GET,
        "/items?limit=500",
        &[("x-tenant", "acme")],
        "",
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert!(got.text().contains("query.limit"), "{}", got.text());
    let got = request(gw.addr, Method::GET, "/items", &[], "").await;
    assert!(got.text().contains("header.x-tenant"), "{}", got.text());
    assert_eq!(backend.count(), 0);
    let ok = request(
        gw.addr,
        Method::POST,
        "/items?limit=5",
        &json_ct,
        r#"{"price": 3}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.text(),
        r#"{"price": 3}"#,
        "the validated body reaches the backend whole"
    );
}

#[tokio::test]
async fn rate_limits_key_on_the_authenticated_consumer() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-rl");
    let top = "rate_limiting:\n  policies:\n    one: {algorithm: fixed_window, limit: 1, window: 1h, key: [consumer]}\n";
    let routes = "  - {upstream: app, auth: {methods: [keys]}, rate_limits: [one]}\n";
    let gw = gateway(backend.addr, &dir, "", top, routes);
    let alice = [("x-api-key", ALICE_KEY)];
    assert_eq!(
        request(gw.addr, Method::GET, "/", &alice, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        request(gw.addr, Method::GET, "/", &alice, "").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let bob = [("x-api-key", BOB_KEY)];
    assert_eq!(
        request(gw.addr, Method::GET, "/", &bob, "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn secrets_stay_out_of_the_access_log_and_error_bodies() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-log");
    let log = dir.path.join("access.log");
    let top = format!("access_log: {{target: \"{}\"}}\n", log.display());
    let routes = "  - {match: {path: {prefix: /k}}, upstream: app, auth: {methods: [keys]}}\n  - {match: {path: {prefix: /q}}, upstream: app, auth: {methods: [qkeys]}}\n  - {match: {path: {prefix: /hs}}, upstream: app, auth: {methods: [hs]}}\n";
    let gw = gateway(backend.addr, &dir, "", &top, routes);
    let token = hs_token("alice");
    let mut bodies = Vec::new();
    bodies.push(request(gw.addr, Method::GET, "/k", &[("x-api-key", ALICE_KEY)], "").await);
    bodies.push(
        request(
            gw.addr,
            Method::GET,
            "/k",
            &[("x-api-key", "guess-secret")],
            "",
        )
        .await,
    );
    bodies.push(
        request(
            gw.addr,
            Method::GET,
            &format!("/q?api_key={BOB_KEY}"),
            &[],
            "",
        )
        .await,
    );
    bodies.push(get_auth(gw.addr, "/hs", &token).await);
    bodies.push(get_auth(gw.addr, "/hs", &format!("{token}x")).await);
    let secrets = [ALICE_KEY, BOB_KEY, "guess-secret", token.as_str()];
    assert!(
        eventually(Duration::from_secs(2), || async {
            std::fs::read_to_string(&log)
                .map(|t| t.lines().count() >= 5)
                .unwrap_or(false)
        })
        .await
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for s in secrets {
        assert!(!text.contains(s), "secret in the access log");
        assert!(
            bodies.iter().all(|b| !b.text().contains(s)),
            "secret in an error body"
        );
    }
    assert!(text.contains("\"consumer\":\"alice\""), "{text}");
}

#[tokio::test]
async fn a_token_without_a_needed_scope_gets_403_insufficient_scope() {
    let backend = Backend::named("app").await;
    let dir = Dir::new("auth-scope");
    let methods = format!(
        "    scoped: {{jwt: {{keys: [{{kid: h1, alg: HS256, secret: \"{HS_SECRET}\"}}], required_scopes: [write]}}}}\n"
    );
    let routes = "  - {match: {path: {prefix: /write}}, upstream: app, auth: {methods: [scoped]}}
  - {match: {path: {prefix: /admin}}, upstream: app, auth: {methods: [hs], allow: {scopes: [admin, ops]}}}
  - {match: {path: {prefix: /no-carol}}, upstream: app, auth: {methods: [hs], allow: {scopes: [read]}, deny: {claims: {sub: [carol]}}}}
";
    let gw = gateway(backend.addr, &dir, &methods, "", routes);
    let mut c = claims("carol");
    c["scope"] = json!("read");
    let token = sign(
        Algorithm::HS256,
        Some("h1"),
        &c,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    let got = get_auth(gw.addr, "/write", &token).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"write\"")
    );
    let got = get_auth(gw.addr, "/admin", &token).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"admin ops\"")
    );
    // A deny-list hit is not a missing scope: a plain 403 without a challenge.
    let got = get_auth(gw.addr, "/no-carol", &token).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.header("www-authenticate"), None);
    let got = get_auth(gw.addr, "/write", "not-a-token").await;
    assert_eq!(
        got.status,
        StatusCode::UNAUTHORIZED,
        "a bad token stays 401"
    );
    assert_eq!(backend.count(), 0);
}
