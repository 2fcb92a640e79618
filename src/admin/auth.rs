//! Who calls the admin listener: an `Authorization: Bearer` token checked against the
//! SHA-256 digests of `admin.tokens` (in constant time), and whether its role may do what an
//! endpoint needs. Without tokens configured the listener asks for none.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use bytes::Bytes;

use super::problem;
use crate::config::model::{Admin, AdminRole};

/// The caller of an admin request.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    /// The token's name (`anonymous` without tokens configured): the audit log's `who`.
    pub name: String,
}

/// The caller of a request that needs `role`, or the 401 or 403 answer.
pub(super) fn check(
    admin: Option<&Admin>,
    headers: &HeaderMap,
    role: AdminRole,
) -> Result<Caller, Box<Response<Full<Bytes>>>> {
    let tokens = admin.map_or(&[][..], |a| &a.tokens[..]);
    if tokens.is_empty() {
        return Ok(Caller {
            name: "anonymous".into(),
        });
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else {
        return Err(Box::new(unauthenticated(
            "an admin bearer token is required",
        )));
    };
    let digest = crate::config::document::digest(presented.as_bytes());
    // Every token is compared, so the time taken does not tell which one matched.
    let mut found = None;
    for t in tokens {
        if let Some(d) = &t.sha256 {
            if verify_slices_are_equal(d, &digest).is_ok() && found.is_none() {
                found = Some(t);
            }
        }
    }
    let Some(token) = found else {
        return Err(Box::new(unauthenticated(
            "the admin bearer token is not valid",
        )));
    };
    if token.role < role {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            &format!(
                "the token {:?} has the role {}; this needs {}",
                token.name,
                token.role.as_str(),
                role.as_str()
            ),
        )));
    }
    Ok(Caller {
        name: token.name.clone(),
    })
}

fn unauthenticated(detail: &str) -> Response<Full<Bytes>> {
    let mut r = problem(StatusCode::UNAUTHORIZED, detail);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferrogate-admin\""),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::AdminToken;

    fn admin() -> Admin {
        Admin {
            address: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![
                AdminToken {
                    name: "ops".into(),
                    role: AdminRole::Operator,
                    sha256: Some(crate::config::document::digest(b"ops-token")),
                },
                AdminToken {
                    name: "unset".into(),
                    role: AdminRole::Admin,
                    sha256: None,
                },
            ],
            versions_kept: 5,
            tls: None,
            etcd: None,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_valid_token_with_enough_role_is_admitted_by_name() {
        let c = check(Some(&admin()), &bearer("ops-token"), AdminRole::Viewer).unwrap();
        assert_eq!(c.name, "ops");
    }

    #[test]
    fn a_missing_or_wrong_token_gets_401_and_a_too_small_role_403() {
        let a = admin();
        let none = check(Some(&a), &HeaderMap::new(), AdminRole::Viewer).unwrap_err();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        assert!(none.headers().contains_key(header::WWW_AUTHENTICATE));
        let wrong = check(Some(&a), &bearer("nope"), AdminRole::Viewer).unwrap_err();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let small = check(Some(&a), &bearer("ops-token"), AdminRole::Admin).unwrap_err();
        assert_eq!(small.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn without_tokens_everyone_is_admitted() {
        let mut a = admin();
        a.tokens.clear();
        assert!(check(Some(&a), &HeaderMap::new(), AdminRole::Admin).is_ok());
    }
}
