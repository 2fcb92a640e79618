//! A route's claim policy, shared by JWT verification and token introspection: required
//! claims, required scopes (`scope` as a space-separated string, `scp` as an array or string)
//! and the claims copied to upstream headers.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::{AuthFailure, Verified};

/// Longest claim value forwarded as a header; longer values are left out rather than cut.
const MAX_FORWARD_LEN: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimPolicy {
    required_claims: Vec<String>,
    required_scopes: Vec<String>,
    forward: Vec<(String, HeaderName)>,
}

impl ClaimPolicy {
    pub(crate) fn new(
        required_claims: Vec<String>,
        required_scopes: Vec<String>,
        forward: Vec<(String, HeaderName)>,
    ) -> Self {
        ClaimPolicy {
            required_claims,
            required_scopes,
            forward,
        }
    }

    pub(crate) fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward.iter().map(|(_, h)| h)
    }

    /// Checks `claims` against the policy and builds the verified credential.
    pub(crate) fn apply(
        &self,
        claims: Map<String, Value>,
        expires_at: Option<SystemTime>,
    ) -> Result<Verified, AuthFailure> {
        for name in &self.required_claims {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(AuthFailure::MissingClaim(name.clone()));
            }
        }
        let scopes = scopes(&claims)?;
        for needed in &self.required_scopes {
            if !scopes.iter().any(|s| s == needed) {
                return Err(AuthFailure::MissingScope(needed.clone()));
            }
        }
        let forward = self
            .forward
            .iter()
            .filter_map(|(claim, header)| {
                let value = header_value(claims.get(claim)?);
                if value.is_none() {
                    tracing::debug!(claim = %claim, "claim not forwarded: not a header-safe value");
                }
                Some((header.clone(), value?))
            })
            .collect();
        let subject = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(sub)) => Some(Arc::from(sub.as_str())),
            Some(_) => return Err(AuthFailure::InvalidClaim("sub".into())),
        };
        Ok(Verified {
            subject,
            claims: Arc::new(claims),
            scopes,
            forward,
            expires_at,
        })
    }
}

/// Scopes from `scope` (RFC 8693 §4.2, RFC 7662: space-separated) and `scp` (array, or a
/// space-separated string as some providers send it).
fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, AuthFailure> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(AuthFailure::InvalidClaim(name.into()));
                    };
                    out.push(s.clone());
                }
            }
            Some(_) => return Err(AuthFailure::InvalidClaim(name.into())),
        }
    }
    Ok(out)
}

/// A claim as a header value: strings as they are, numbers and booleans in JSON form, arrays
/// of those joined with `,` (a list in the RFC 9110 §5.6.1 sense). Objects and values with
/// characters a header cannot carry are not forwarded.
fn header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::String(s) if !s.contains(',') => Some(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(item.to_string()),
                    _ => None,
                })
                .collect();
            parts?.join(",")
        }
        Value::Null | Value::Object(_) => return None,
    };
    if text.len() > MAX_FORWARD_LEN {
        return None;
    }
    // Visible ASCII and spaces only: no CR/LF, and no obs-text a backend may mis-decode.
    if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn policy_forwarding(claim: &str) -> ClaimPolicy {
        ClaimPolicy::new(
            vec![],
            vec![],
            vec![(claim.into(), HeaderName::from_static("x-claim"))],
        )
    }

    #[test]
    fn space_separated_scope_is_split() {
        let got = scopes(&claims(json!({"scope": "read  write"}))).unwrap();
        assert_eq!(got, ["read", "write"]);
    }

    #[test]
    fn scp_array_is_read() {
        let got = scopes(&claims(json!({"scp": ["read", "admin"]}))).unwrap();
        assert_eq!(got, ["read", "admin"]);
    }

    #[test]
    fn scp_with_a_number_is_invalid() {
        let err = scopes(&claims(json!({"scp": ["read", 1]}))).unwrap_err();
        assert_eq!(err, AuthFailure::InvalidClaim("scp".into()));
    }

    #[test]
    fn missing_required_scope_is_named() {
        let policy = ClaimPolicy::new(vec![], vec!["write".into()], vec![]);
        let err = policy
            .apply(claims(json!({"scope": "read"})), None)
            .unwrap_err();
        assert_eq!(err, AuthFailure::MissingScope("write".into()));
    }

    #[test]
    fn null_required_claim_counts_as_missing() {
        let policy = ClaimPolicy::new(vec!["tenant".into()], vec![], vec![]);
        let err = policy
            .apply(claims(json!({"tenant": null})), None)
            .unwrap_err();
        assert_eq!(err, AuthFailure::MissingClaim("tenant".into()));
    }

    #[test]
    fn string_claim_is_forwarded() {
        let v = policy_forwarding("tenant")
            .apply(claims(json!({"tenant": "acme"})), None)
            .unwrap();
        assert_eq!(
            v.forward,
            [(
                HeaderName::from_static("x-claim"),
                HeaderValue::from_static("acme")
            )]
        );
    }

    #[test]
    fn array_claim_is_forwarded_as_a_list() {
        let v = policy_forwarding("roles")
            .apply(claims(json!({"roles": ["a", "b"]})), None)
            .unwrap();
        assert_eq!(v.forward[0].1, "a,b");
    }

    #[test]
    fn claim_with_a_newline_is_not_forwarded() {
        let v = policy_forwarding("t")
            .apply(claims(json!({"t": "a\r\nx-admin: 1"})), None)
            .unwrap();
        assert!(v.forward.is_empty());
    }

    #[test]
    fn object_claim_is_not_forwarded() {
        let v = policy_forwarding("t")
            .apply(claims(json!({"t": {"a": 1}})), None)
            .unwrap();
        assert!(v.forward.is_empty());
    }

    #[test]
    fn numeric_subject_is_invalid() {
        let err = ClaimPolicy::default()
            .apply(claims(json!({"sub": 5})), None)
            .unwrap_err();
        assert_eq!(err, AuthFailure::InvalidClaim("sub".into()));
    }
}
