//! The `admin` section: the listener's address and TLS, its bearer tokens with their roles,
//! and how many configuration versions are kept.

use std::collections::HashSet;
use std::path::Path;

use std::time::Duration;

use super::file;
use super::model::{Admin, AdminRole, AdminToken, Etcd};
use super::validate::{opt_duration, socket_addr, tls, Errors};

/// Versions kept when `admin.versions_kept` is absent.
const DEFAULT_VERSIONS_KEPT: usize = 50;
/// Prefix of the gateway's etcd keys when `admin.etcd.prefix` is absent.
const DEFAULT_ETCD_PREFIX: &str = "/ferrogate/";
/// Time limit of one etcd request when `admin.etcd.timeout` is absent.
const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn admin(errs: &mut Errors, a: &file::Admin, base_dir: &Path) -> Option<Admin> {
    errs.unknown_in("admin", &a);
    let address = socket_addr(errs, "admin.address", &a.address);
    let mut names = HashSet::new();
    let tokens: Vec<AdminToken> = a
        .tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let at = format!("admin.tokens[{i}]");
            if !names.insert(t.name.as_str()) {
                errs.push(format!("{at}.name"), format!("{:?} is named twice", t.name));
            }
            token(errs, &at, t)
        })
        .collect();
    let versions_kept = a.versions_kept.unwrap_or(DEFAULT_VERSIONS_KEPT);
    if versions_kept == 0 {
        errs.push("admin.versions_kept", "keep at least 1 version");
    }
    let tls = a.tls.as_ref().map(|t| {
        let mut t = tls(errs, "admin.tls", t, base_dir);
        // The admin listener speaks HTTP/1.1 only.
        t.h2 = false;
        t
    });
    let etcd = a.etcd.as_ref().map(|e| etcd(errs, e));
    Some(Admin {
        address: address?,
        tokens,
        versions_kept,
        tls,
        etcd,
    })
}

fn etcd(errs: &mut Errors, e: &file::Etcd) -> Etcd {
    errs.unknown_in("admin.etcd", &e);
    if e.endpoints.is_empty() {
        errs.push("admin.etcd.endpoints", "give at least one etcd client URL");
    }
    let endpoints = e
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let ok = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
                .filter(|u| u.path_and_query().is_none_or(|p| p.as_str() == "/"));
            if ok.is_none() {
                errs.push(
                    format!("admin.etcd.endpoints[{i}]"),
                    format!("{url:?} is not an etcd client URL such as http://127.0.0.1:2379"),
                );
            }
            url.trim_end_matches('/').to_owned()
        })
        .collect();
    let prefix = e.prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX);
    if prefix.is_empty() {
        errs.push(
            "admin.etcd.prefix",
            "empty prefix; leave it out for /ferrogate/",
        );
    }
    let timeout = opt_duration(errs, "admin.etcd.timeout", &e.timeout, DEFAULT_ETCD_TIMEOUT);
    if timeout.is_zero() {
        errs.push("admin.etcd.timeout", "must be more than 0");
    }
    Etcd {
        endpoints,
        key: format!("{prefix}config"),
        timeout,
    }
}

fn token(errs: &mut Errors, at: &str, t: &file::AdminToken) -> Option<AdminToken> {
    errs.unknown_in(at, &t);
    if t.name.is_empty() {
        errs.push(format!("{at}.name"), "empty name");
    }
    let role = match t.role.as_str() {
        "viewer" => Some(AdminRole::Viewer),
        "operator" => Some(AdminRole::Operator),
        "admin" => Some(AdminRole::Admin),
        other => {
            errs.push(
                format!("{at}.role"),
                format!("unknown role {other:?}; use viewer, operator or admin"),
            );
            None
        }
    };
    let sha256 = match (&t.sha256, &t.token_env) {
        (Some(hex), None) => match digest_from_hex(hex) {
            Some(d) => Some(d),
            None => {
                errs.push(
                    format!("{at}.sha256"),
                    "not a lower-case hex SHA-256 digest (64 characters)",
                );
                return None;
            }
        },
        (None, Some(var)) => match std::env::var(var) {
            Ok(token) if !token.is_empty() => Some(sha256(token.as_bytes())),
            // Not an error, so that `check` passes where the secret is not set; the token
            // then admits no one (the listener stays closed) and the start logs a warning.
            _ => None,
        },
        _ => {
            errs.push(at, "give exactly one of sha256 and token_env");
            return None;
        }
    };
    Some(AdminToken {
        name: t.name.clone(),
        role: role?,
        sha256,
    })
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    fn errors(admin: &str) -> String {
        let text = format!("listeners: [{{address: 127.0.0.1:0}}]\nadmin: {admin}\n");
        match super::super::parse(&text, Path::new(".")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tokens_need_a_known_role_and_one_secret() {
        let got = errors(
            "{address: 127.0.0.1:0, tokens: [{name: a, role: root, sha256: abc}, \
             {name: a, role: admin}]}",
        );
        assert!(got.contains("admin.tokens[0].role: unknown role"), "{got}");
        assert!(
            got.contains("admin.tokens[0].sha256: not a lower-case hex"),
            "{got}"
        );
        assert!(
            got.contains("admin.tokens[1].name: \"a\" is named twice"),
            "{got}"
        );
        assert!(got.contains("admin.tokens[1]: give exactly one"), "{got}");
    }

    #[test]
    fn a_token_from_an_unset_variable_admits_no_one() {
        let text = "listeners: [{address: 127.0.0.1:0}]\nadmin: {address: 127.0.0.1:0, \
                    tokens: [{name: ops, role: operator, token_env: FERROGATE_TEST_UNSET_TOKEN}]}\n";
        let c = super::super::parse(text, Path::new(".")).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.tokens[0].sha256, None);
        assert_eq!(admin.versions_kept, 50);
    }

    #[test]
    fn etcd_needs_client_urls_and_a_timeout() {
        let got = errors(
            "{address: 127.0.0.1:0, etcd: {endpoints: [\"127.0.0.1:2379\", \"http://e/x\"], \
             prefix: \"\", timeout: soon, colour: red}}",
        );
        assert!(
            got.contains("admin.etcd.endpoints[0]: \"127.0.0.1:2379\" is not"),
            "{got}"
        );
        assert!(got.contains("admin.etcd.endpoints[1]: "), "{got}");
        assert!(got.contains("admin.etcd.prefix: empty prefix"), "{got}");
        assert!(
            got.contains("admin.etcd.timeout: invalid duration"),
            "{got}"
        );
        assert!(got.contains("admin.etcd.colour"), "{got}");
        assert!(errors("{address: 127.0.0.1:0, etcd: {endpoints: []}}")
            .contains("admin.etcd.endpoints: give at least one"));
    }

    #[test]
    fn etcd_defaults_to_the_ferrogate_prefix() {
        let text = "listeners: [{address: 127.0.0.1:0}]\nadmin: {address: 127.0.0.1:0, \
                    etcd: {endpoints: [\"http://127.0.0.1:2379/\"]}}\n";
        let etcd = super::super::parse(text, Path::new("."))
            .unwrap()
            .admin
            .unwrap()
            .etcd
            .unwrap();
        assert_eq!(etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(etcd.key, "/ferrogate/config");
        assert_eq!(etcd.timeout, std::time::Duration::from_secs(2));
    }
}
