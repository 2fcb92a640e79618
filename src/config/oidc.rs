//! Validation of the OpenID Connect settings: a route's `oidc` block and an upstream group's
//! `client_credentials`.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::access::{check_url, forward_claims};
use super::file;
use super::validate::{opt_duration, Errors};
use crate::auth::oidc::credentials::ClientCredentialsSettings;
use crate::auth::oidc::provider::{Credential, PrivateKey};
use crate::auth::oidc::{OidcSettings, Unauthenticated};

/// A route's `oidc` block.
pub(super) fn route(errs: &mut Errors, at: &str, o: &file::Oidc) -> Option<OidcSettings> {
    errs.unknown_in(at, &o);
    if o.discovery.is_empty() {
        errs.push(format!("{at}.discovery"), "required");
    } else {
        check_url(errs, &format!("{at}.discovery"), &o.discovery);
    }
    if o.client_id.is_empty() {
        errs.push(format!("{at}.client_id"), "required");
    }
    let client_secret = secret_env(errs, at, o.client_secret_env.as_deref());
    let path = |errs: &mut Errors, key: &str, v: &Option<String>| -> Option<String> {
        let p = v.as_ref()?;
        if !p.starts_with('/') || p.contains(['?', '#']) {
            errs.push(format!("{at}.{key}"), format!("{p:?} is not a path"));
        }
        Some(p.clone())
    };
    let redirect_path = path(errs, "redirect_path", &o.redirect_path)
        .unwrap_or_else(|| "/oidc/callback".to_owned());
    let logout_path = path(errs, "logout_path", &o.logout_path);
    let backchannel_logout_path = path(errs, "backchannel_logout_path", &o.backchannel_logout_path);
    if let Some(to) = &o.post_logout_redirect {
        if !to.starts_with('/') {
            check_url(errs, &format!("{at}.post_logout_redirect"), to);
        }
    }
    let unauthenticated = match o.unauthenticated.as_deref() {
        None | Some("auto") => Unauthenticated::Auto,
        Some("redirect") => Unauthenticated::Redirect,
        Some("deny") => Unauthenticated::Deny,
        Some(other) => {
            errs.push(
                format!("{at}.unauthenticated"),
                format!("{other:?} is not auto, redirect or deny"),
            );
            Unauthenticated::Auto
        }
    };
    let cookie_name = o
        .cookie_name
        .clone()
        .unwrap_or_else(|| "ferrogate_session".to_owned());
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if cookie_name.is_empty() || !cookie_name.chars().all(token_char) {
        errs.push(
            format!("{at}.cookie_name"),
            format!("{cookie_name:?} is not a cookie name"),
        );
    }
    let mut scopes = vec!["openid".to_owned()];
    for (i, s) in o.scopes.iter().enumerate() {
        if !is_scope(s) {
            errs.push(format!("{at}.scopes[{i}]"), format!("{s:?} is not a scope"));
        } else if s != "openid" {
            scopes.push(s.clone());
        }
    }
    let d = |errs: &mut Errors, key: &str, v: &Option<String>, default: u64| {
        opt_duration(
            errs,
            &format!("{at}.{key}"),
            v,
            Duration::from_secs(default),
        )
    };
    let idle_timeout = d(errs, "idle_timeout", &o.idle_timeout, 1800);
    let absolute_timeout = d(errs, "absolute_timeout", &o.absolute_timeout, 8 * 3600);
    let refresh_before = d(errs, "refresh_before", &o.refresh_before, 30);
    let timeout = d(errs, "timeout", &o.timeout, 5);
    for (key, v) in [
        ("idle_timeout", idle_timeout),
        ("absolute_timeout", absolute_timeout),
        ("timeout", timeout),
    ] {
        if v.as_secs() == 0 {
            errs.push(format!("{at}.{key}"), "must be at least 1s");
        }
    }
    Some(OidcSettings {
        discovery_url: o.discovery.clone(),
        client_id: o.client_id.clone(),
        client_secret,
        redirect_path,
        logout_path,
        post_logout_redirect: o.post_logout_redirect.clone(),
        backchannel_logout_path,
        scopes: scopes.join(" "),
        unauthenticated,
        cookie_name,
        cookie_secure: o.cookie_secure.unwrap_or(true),
        idle_timeout,
        absolute_timeout,
        refresh_before,
        forward_access_token: o.forward_access_token.unwrap_or(true),
        forward_claims: forward_claims(errs, &format!("{at}.forward_claims"), &o.forward_claims),
        timeout,
        leeway: Duration::from_secs(60),
        // Filled in from the top-level `redis` once it is read (validate.rs).
        redis_url: match o.sessions.as_deref() {
            None | Some("memory") => None,
            Some("redis") => Some(String::new()),
            Some(other) => {
                errs.push(
                    format!("{at}.sessions"),
                    format!("{other:?} is not memory or redis"),
                );
                None
            }
        },
    })
}

/// The client secret named by `client_secret_env` (required, set and not empty).
fn secret_env(errs: &mut Errors, at: &str, var: Option<&str>) -> String {
    let at = format!("{at}.client_secret_env");
    let Some(var) = var else {
        errs.push(at, "required");
        return String::new();
    };
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            errs.push(at, format!("the environment variable {var} is not set"));
            String::new()
        }
    }
}

/// An upstream group's `client_credentials` block.
pub(super) fn client_credentials(
    errs: &mut Errors,
    at: &str,
    c: &file::ClientCredentials,
    base_dir: &Path,
) -> Option<ClientCredentialsSettings> {
    errs.unknown_in(at, &c);
    if c.token_url.is_empty() {
        errs.push(format!("{at}.token_url"), "required");
    } else {
        check_url(errs, &format!("{at}.token_url"), &c.token_url);
    }
    if c.client_id.is_empty() {
        errs.push(format!("{at}.client_id"), "required");
    }
    let credential = match (&c.client_secret_env, &c.private_key_file) {
        (Some(_), Some(_)) => {
            errs.push(at, "client_secret_env or private_key_file, not both");
            Credential::Secret(String::new())
        }
        (_, Some(file)) => private_key(errs, at, c, &base_dir.join(file)),
        (var, None) => Credential::Secret(secret_env(errs, at, var.as_deref())),
    };
    for (i, s) in c.scopes.iter().enumerate() {
        if !is_scope(s) {
            errs.push(format!("{at}.scopes[{i}]"), format!("{s:?} is not a scope"));
        }
    }
    let timeout = opt_duration(
        errs,
        &format!("{at}.timeout"),
        &c.timeout,
        Duration::from_secs(5),
    );
    if timeout.is_zero() {
        errs.push(format!("{at}.timeout"), "must be at least 1s");
    }
    Some(ClientCredentialsSettings {
        token_url: c.token_url.clone(),
        client_id: c.client_id.clone(),
        credential,
        scope: c.scopes.join(" "),
        audience: c.audience.clone(),
        refresh_before: opt_duration(
            errs,
            &format!("{at}.refresh_before"),
            &c.refresh_before,
            Duration::from_secs(30),
        ),
        timeout,
    })
}

/// The `private_key_jwt` key of a `client_credentials` block.
fn private_key(
    errs: &mut Errors,
    at: &str,
    c: &file::ClientCredentials,
    path: &Path,
) -> Credential {
    let alg = match c
        .private_key_alg
        .as_deref()
        .unwrap_or("RS256")
        .parse::<Algorithm>()
    {
        Ok(a) => a,
        Err(_) => {
            errs.push(format!("{at}.private_key_alg"), "not a JWS algorithm");
            Algorithm::RS256
        }
    };
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => {
            errs.push(
                format!("{at}.private_key_file"),
                format!("{}: {e}", path.display()),
            );
            return Credential::Secret(String::new());
        }
    };
    match PrivateKey::from_pem(&pem, alg, c.private_key_kid.clone()) {
        Ok(key) => Credential::PrivateKey(key),
        Err(e) => {
            errs.push(format!("{at}.private_key_file"), e);
            Credential::Secret(String::new())
        }
    }
}

/// A scope token (RFC 6749 §3.3): printable ASCII without space, `"` and `\`.
fn is_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    fn errors(yaml: &str) -> String {
        match crate::config::parse(yaml, Path::new(".")) {
            Ok(_) => String::new(),
            Err(e) => {
                e.0.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    #[test]
    fn every_oidc_mistake_is_reported_at_its_key() {
        let all = errors(
            "listeners: [{address: 127.0.0.1:0}]
upstreams:
  app:
    targets: [{address: 127.0.0.1:1}]
    client_credentials: {token_url: ftp://idp/token, client_secret_env: FERROGATE_UNSET_VAR_1, scopes: [\"a b\"]}
routes:
  - upstream: app
    oidc:
      discovery: idp.example.com
      client_secret_env: FERROGATE_UNSET_VAR_2
      redirect_path: callback
      unauthenticated: sometimes
      cookie_name: \"bad;name\"
      idle_timeout: 0s
      sessions: redis
      scopes: [\"\"]
      forward_claim: {}
",
        );
        for expected in [
            "routes[0].oidc.discovery: \"idp.example.com\" is not an http:// or https:// URL",
            "routes[0].oidc.client_id: required",
            "routes[0].oidc.client_secret_env: the environment variable FERROGATE_UNSET_VAR_2 is not set",
            "routes[0].oidc.redirect_path: \"callback\" is not a path",
            "routes[0].oidc.unauthenticated: \"sometimes\" is not auto, redirect or deny",
            "routes[0].oidc.cookie_name: \"bad;name\" is not a cookie name",
            "routes[0].oidc.idle_timeout: must be at least 1s",
            "routes[0].oidc.sessions: sessions in redis need the top-level redis",
            "routes[0].oidc.scopes[0]: \"\" is not a scope",
            "routes[0].oidc.forward_claim",
            "upstreams.app.client_credentials.token_url",
            "upstreams.app.client_credentials.client_id: required",
            "upstreams.app.client_credentials.client_secret_env",
            "upstreams.app.client_credentials.scopes[0]: \"a b\" is not a scope",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn a_route_cannot_both_log_in_and_check_credentials() {
        std::env::set_var("FERROGATE_OIDC_CONFIG_TEST", "s3cret");
        let all = errors(
            "listeners: [{address: 127.0.0.1:0}]
upstreams: {app: {targets: [{address: 127.0.0.1:1}]}}
auth: {methods: {k: {api_key: {}}}}
routes:
  - upstream: app
    auth: {methods: [k]}
    oidc: {discovery: \"https://idp/.well-known/openid-configuration\", client_id: gw, client_secret_env: FERROGATE_OIDC_CONFIG_TEST}
",
        );
        assert!(all.contains("routes[0].oidc: a route logs users in with oidc or checks credentials with auth, not both"), "{all}");
    }
}
