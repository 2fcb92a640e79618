//! Per-route authorization: allow and deny lists on consumers, groups, scopes and claim
//! values, evaluated against the [`Identity`] an authentication method produced.
//!
//! Order: deny first, then allow. Any deny entry that matches refuses the request, whatever
//! the allow list says. Then, if the allow list is empty, every authenticated identity is
//! allowed; otherwise at least one allow entry must match (entries are alternatives, "any
//! of"). A refusal is a 403; the [`Denial`] says why, for the log only (the client gets a
//! generic body). This runs after authentication: an unauthenticated request is a 401
//! before it gets here.
//!
//! Matching is exact and case-sensitive. Consumer entries match the consumer's name (a
//! token caller has one when its subject names a consumer); claim entries match a
//! top-level claim whose value is a string, a boolean, an integer or an array of those,
//! against the configured values' text (`"true"`, `"42"`).

use serde_json::Value;

use super::consumer::Identity;

/// Allow and deny lists of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: Matchers,
    pub deny: Matchers,
}

/// One list: an identity matches it when any entry matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matchers {
    pub consumers: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub claims: Vec<ClaimMatch>,
}

/// Matches when claim `claim` has (or, for an array, contains) one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMatch {
    pub claim: String,
    pub values: Vec<String>,
}

/// Why an identity was refused (403). Names no claim value: those may be personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("consumer {consumer:?} is denied")]
    Consumer { consumer: String },
    #[error("group {group:?} is denied")]
    Group { group: String },
    #[error("scope {scope:?} is denied")]
    Scope { scope: String },
    #[error("a value of claim {claim:?} is denied")]
    Claim { claim: String },
    #[error("no allow entry matches {who}")]
    NotAllowed { who: String },
}

/// Which entry of a list matched.
enum Hit<'a> {
    Consumer(&'a str),
    Group(&'a str),
    Scope(&'a str),
    Claim(&'a str),
}

impl AccessRule {
    /// The allow list names scopes: a token refused by it lacks a scope.
    pub fn allows_by_scope(&self) -> bool {
        !self.allow.scopes.is_empty()
    }

    /// The scopes the allow list accepts (any one of them).
    pub fn allowed_scopes(&self) -> &[String] {
        &self.allow.scopes
    }

    /// Decides whether `identity` may use the route (see the module docs for the order).
    pub fn check(&self, identity: &Identity) -> Result<(), Denial> {
        if let Some(hit) = self.deny.first_match(identity) {
            return Err(match hit {
                Hit::Consumer(c) => Denial::Consumer { consumer: c.into() },
                Hit::Group(g) => Denial::Group { group: g.into() },
                Hit::Scope(s) => Denial::Scope { scope: s.into() },
                Hit::Claim(c) => Denial::Claim { claim: c.into() },
            });
        }
        if self.allow.is_empty() || self.allow.first_match(identity).is_some() {
            return Ok(());
        }
        let who = identity.name().unwrap_or("anonymous").to_string();
        Err(Denial::NotAllowed { who })
    }
}

impl Matchers {
    /// Whether the list has no entry at all.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
            && self.groups.is_empty()
            && self.scopes.is_empty()
            && self.claims.is_empty()
    }

    fn first_match(&self, identity: &Identity) -> Option<Hit<'_>> {
        if let Some(consumer) = &identity.consumer {
            if let Some(c) = self.consumers.iter().find(|c| **c == *consumer.name) {
                return Some(Hit::Consumer(c));
            }
            if let Some(g) = self.groups.iter().find(|g| consumer.in_group(g)) {
                return Some(Hit::Group(g));
            }
        }
        if let Some(s) = self.scopes.iter().find(|s| identity.has_scope(s)) {
            return Some(Hit::Scope(s));
        }
        let claims = identity.claims.as_deref()?;
        self.claims
            .iter()
            .find(|m| claims.get(&m.claim).is_some_and(|v| m.matches(v)))
            .map(|m| Hit::Claim(&m.claim))
    }
}

impl ClaimMatch {
    fn matches(&self, value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().any(|item| self.matches_scalar(item)),
            scalar => self.matches_scalar(scalar),
        }
    }

    fn matches_scalar(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.values.iter().any(|v| v == s),
            Value::Bool(b) => self
                .values
                .iter()
                .any(|v| v == if *b { "true" } else { "false" }),
            Value::Number(n) => match n.as_i64() {
                Some(n) => self.values.iter().any(|v| v.parse::<i64>() == Ok(n)),
                None => false,
            },
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::json;

    use super::super::consumer::Consumer;
    use super::*;

    fn consumer_identity(name: &str, groups: &[&str]) -> Identity {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        let consumer = Consumer::new(name, groups, BTreeMap::new()).unwrap();
        Identity::for_consumer(Arc::new(consumer), "api_key")
    }

    fn token_identity(scopes: &[&str], claims: Value) -> Identity {
        let Value::Object(claims) = claims else {
            unreachable!("test claims are an object")
        };
        Identity {
            subject: Some("user-1".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: Some(Arc::new(claims)),
            method: "jwt",
            ..Identity::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_rule_allows_any_authenticated_identity() {
        let rule = AccessRule::default();
        assert_eq!(rule.check(&consumer_identity("alice", &[])), Ok(()));
        assert_eq!(rule.check(&token_identity(&[], json!({}))), Ok(()));
    }

    #[test]
    fn deny_beats_allow() {
        let rule = AccessRule {
            allow: Matchers {
                consumers: strings(&["alice"]),
                ..Matchers::default()
            },
            deny: Matchers {
                groups: strings(&["suspended"]),
                ..Matchers::default()
            },
        };
        assert_eq!(rule.check(&consumer_identity("alice", &[])), Ok(()));
        assert_eq!(
            rule.check(&consumer_identity("alice", &["suspended"])),
            Err(Denial::Group {
                group: "suspended".into()
            })
        );
    }

    #[test]
    fn consumer_outside_the_allow_list_is_refused() {
        let rule = AccessRule {
            allow: Matchers {
                consumers: strings(&["alice"]),
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        assert_eq!(
            rule.check(&consumer_identity("bob", &[])),
            Err(Denial::NotAllowed { who: "bob".into() })
        );
    }

    #[test]
    fn denied_consumer_is_refused_with_its_name() {
        let rule = AccessRule {
            deny: Matchers {
                consumers: strings(&["bob"]),
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        let err = rule.check(&consumer_identity("bob", &[])).unwrap_err();
        assert_eq!(err.to_string(), "consumer \"bob\" is denied");
        assert_eq!(rule.check(&consumer_identity("alice", &[])), Ok(()));
    }

    #[test]
    fn group_in_allow_list_admits_its_members() {
        let rule = AccessRule {
            allow: Matchers {
                groups: strings(&["admins", "ops"]),
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        assert_eq!(
            rule.check(&consumer_identity("carol", &["dev", "ops"])),
            Ok(())
        );
        assert!(rule.check(&consumer_identity("dave", &["dev"])).is_err());
    }

    #[test]
    fn scope_rule_matches_granted_scopes() {
        let rule = AccessRule {
            allow: Matchers {
                scopes: strings(&["orders:write"]),
                ..Matchers::default()
            },
            deny: Matchers {
                scopes: strings(&["banned"]),
                ..Matchers::default()
            },
        };
        assert_eq!(
            rule.check(&token_identity(&["orders:read", "orders:write"], json!({}))),
            Ok(())
        );
        assert!(rule
            .check(&token_identity(&["orders:read"], json!({})))
            .is_err());
        assert_eq!(
            rule.check(&token_identity(&["orders:write", "banned"], json!({}))),
            Err(Denial::Scope {
                scope: "banned".into()
            })
        );
    }

    #[test]
    fn claim_rule_matches_string_and_array_claims() {
        let rule = AccessRule {
            allow: Matchers {
                claims: vec![ClaimMatch {
                    claim: "roles".into(),
                    values: strings(&["admin"]),
                }],
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        assert_eq!(
            rule.check(&token_identity(&[], json!({"roles": "admin"}))),
            Ok(())
        );
        assert_eq!(
            rule.check(&token_identity(&[], json!({"roles": ["user", "admin"]}))),
            Ok(())
        );
        assert!(rule
            .check(&token_identity(&[], json!({"roles": ["user"]})))
            .is_err());
        assert!(rule
            .check(&token_identity(&[], json!({"roles": {"admin": true}})))
            .is_err());
        assert!(rule
            .check(&token_identity(&[], json!({"other": "admin"})))
            .is_err());
    }

    #[test]
    fn claim_rule_matches_booleans_and_integers_by_text() {
        let rule = AccessRule {
            allow: Matchers {
                claims: vec![
                    ClaimMatch {
                        claim: "email_verified".into(),
                        values: strings(&["true"]),
                    },
                    ClaimMatch {
                        claim: "tier".into(),
                        values: strings(&["2", "3"]),
                    },
                ],
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        assert_eq!(
            rule.check(&token_identity(&[], json!({"email_verified": true}))),
            Ok(())
        );
        assert!(rule
            .check(&token_identity(&[], json!({"email_verified": false})))
            .is_err());
        assert_eq!(rule.check(&token_identity(&[], json!({"tier": 3}))), Ok(()));
        assert!(rule
            .check(&token_identity(&[], json!({"tier": "1"})))
            .is_err());
    }

    #[test]
    fn denied_claim_value_is_not_named_in_the_reason() {
        let rule = AccessRule {
            deny: Matchers {
                claims: vec![ClaimMatch {
                    claim: "email".into(),
                    values: strings(&["x@evil.test"]),
                }],
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        let err = rule
            .check(&token_identity(&[], json!({"email": "x@evil.test"})))
            .unwrap_err();
        assert_eq!(
            err,
            Denial::Claim {
                claim: "email".into()
            }
        );
        assert!(!err.to_string().contains("evil"));
    }

    #[test]
    fn token_identity_without_consumer_does_not_match_consumer_entries() {
        let rule = AccessRule {
            allow: Matchers {
                consumers: strings(&["user-1"]),
                ..Matchers::default()
            },
            ..AccessRule::default()
        };
        assert_eq!(
            rule.check(&token_identity(&[], json!({}))),
            Err(Denial::NotAllowed {
                who: "user-1".into()
            })
        );
    }
}
