//! Consumers (named identities with groups and metadata) and the [`Identity`] every
//! authentication method yields.
//!
//! A consumer is what rate limiting keys on, what the access log names and what the upstream
//! is told about (as a configurable header), so its name is restricted at load to characters
//! that are safe in a header value and a log line, and that header value is built once here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderValue;
use serde_json::{Map, Value};

/// Longest consumer or group name accepted.
const MAX_NAME_LEN: usize = 128;

/// A named identity with its groups and free-form metadata.
///
/// Built with [`Consumer::new`], which checks the name and prepares its header value.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Unique name; safe for a header value and a log line.
    pub name: Arc<str>,
    /// Groups the consumer belongs to, deduplicated, in configuration order.
    pub groups: Vec<Arc<str>>,
    /// Operator-defined data (team, plan…), not interpreted by the gateway.
    pub metadata: BTreeMap<String, String>,
    /// `name` as a header value, built once at load for the upstream consumer header.
    header: HeaderValue,
}

/// What an authentication method established about the downstream caller.
///
/// API keys and Basic auth fill `consumer`; token methods fill `subject`, `scopes` and
/// `claims`, and `consumer` when the subject names a configured consumer.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The configured consumer, when the credential maps to one.
    pub consumer: Option<Arc<Consumer>>,
    /// The token subject (`sub`), when a token method authenticated the request.
    pub subject: Option<Arc<str>>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Verified token claims.
    pub claims: Option<Arc<Map<String, Value>>>,
    /// Which method authenticated the request (`"api_key"`, `"basic"`, `"jwt"`…), for logs.
    pub method: &'static str,
}

/// All configured consumers, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct ConsumerSet {
    by_name: HashMap<Arc<str>, Arc<Consumer>>,
}

/// A consumer definition rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer name is empty")]
    EmptyName,
    #[error("consumer name {name:?} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong { name: String },
    #[error("consumer name {name:?} has a character outside letters, digits and `._-@:`")]
    BadName { name: String },
    #[error("consumer {consumer:?} has an invalid group name {group:?}")]
    BadGroup { consumer: String, group: String },
    #[error("consumer {name:?} is defined twice")]
    Duplicate { name: String },
}

impl Consumer {
    /// Checks the name and group names and prepares the header value.
    pub fn new(
        name: &str,
        groups: Vec<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Consumer, ConsumerError> {
        check_name(name)?;
        let header = HeaderValue::from_str(name)
            .map_err(|_| ConsumerError::BadName { name: name.into() })?;
        let mut kept: Vec<Arc<str>> = Vec::with_capacity(groups.len());
        for group in groups {
            if check_name(&group).is_err() {
                return Err(ConsumerError::BadGroup {
                    consumer: name.into(),
                    group,
                });
            }
            if !kept.iter().any(|g| **g == *group) {
                kept.push(group.into());
            }
        }
        Ok(Consumer {
            name: name.into(),
            groups: kept,
            metadata,
            header,
        })
    }

    /// The name as a header value, for the configurable upstream consumer header.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether the consumer belongs to `group` (exact, case-sensitive).
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| **g == *group)
    }
}

impl Identity {
    /// The identity of a consumer authenticated by a credential bound to it.
    pub fn for_consumer(consumer: Arc<Consumer>, method: &'static str) -> Identity {
        Identity {
            consumer: Some(consumer),
            method,
            ..Identity::default()
        }
    }

    /// The name rate limiting and the access log use: the consumer's name, else the subject.
    pub fn name(&self) -> Option<&str> {
        match &self.consumer {
            Some(consumer) => Some(&consumer.name),
            None => self.subject.as_deref(),
        }
    }

    /// Whether `scope` was granted (exact, case-sensitive, as OAuth 2.0 scopes are).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

impl ConsumerSet {
    /// Indexes `consumers` by name; a name defined twice is an error.
    pub fn new(consumers: Vec<Consumer>) -> Result<ConsumerSet, ConsumerError> {
        let mut by_name = HashMap::with_capacity(consumers.len());
        for consumer in consumers {
            let name = consumer.name.clone();
            if by_name.insert(name.clone(), Arc::new(consumer)).is_some() {
                return Err(ConsumerError::Duplicate {
                    name: name.to_string(),
                });
            }
        }
        Ok(ConsumerSet { by_name })
    }

    /// The consumer called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name)
    }

    /// The consumer a token subject designates: the one whose name equals the subject, so a
    /// token-authenticated caller shares rate limits, ACL entries and log name with the
    /// consumer of the same name.
    pub fn by_subject(&self, subject: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(subject)
    }

    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no consumer is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Names go into headers, log lines and metric labels: keep them to a small, unambiguous
/// character set rather than escaping them everywhere.
fn check_name(name: &str) -> Result<(), ConsumerError> {
    if name.is_empty() {
        return Err(ConsumerError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ConsumerError::NameTooLong { name: name.into() });
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ConsumerError::BadName { name: name.into() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn consumer(name: &str, groups: &[&str]) -> Consumer {
        Consumer::new(
            name,
            groups.iter().map(|g| g.to_string()).collect(),
            BTreeMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn consumer_is_found_by_name() {
        let set = ConsumerSet::new(vec![consumer("alice", &[]), consumer("bob", &[])]).unwrap();
        assert_eq!(&*set.get("bob").unwrap().name, "bob");
        assert!(set.get("carol").is_none());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn subject_designates_the_consumer_of_the_same_name() {
        let set = ConsumerSet::new(vec![consumer("svc-billing", &["internal"])]).unwrap();
        assert!(set.by_subject("svc-billing").unwrap().in_group("internal"));
        assert!(set.by_subject("svc-other").is_none());
    }

    #[test]
    fn duplicate_consumer_name_is_rejected() {
        let err = ConsumerSet::new(vec![consumer("alice", &[]), consumer("alice", &[])]);
        assert_eq!(
            err.unwrap_err(),
            ConsumerError::Duplicate {
                name: "alice".into()
            }
        );
    }

    #[test]
    fn name_unsafe_for_a_header_is_rejected() {
        for bad in ["", "al ice", "a\r\nx: y", "ünï", "a,b"] {
            assert!(
                Consumer::new(bad, vec![], BTreeMap::new()).is_err(),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            Consumer::new(&long, vec![], BTreeMap::new()),
            Err(ConsumerError::NameTooLong { .. })
        ));
    }

    #[test]
    fn header_value_is_the_name() {
        let c = consumer("team-a@example.com", &[]);
        assert_eq!(c.header_value(), "team-a@example.com");
    }

    #[test]
    fn groups_are_deduplicated_in_order() {
        let c = consumer("alice", &["ops", "dev", "ops"]);
        let groups: Vec<&str> = c.groups.iter().map(|g| &**g).collect();
        assert_eq!(groups, ["ops", "dev"]);
    }

    #[test]
    fn bad_group_name_is_rejected() {
        let err = Consumer::new("alice", vec!["a b".into()], BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ConsumerError::BadGroup { .. }));
    }

    #[test]
    fn identity_name_prefers_consumer_over_subject() {
        let mut id = Identity::for_consumer(Arc::new(consumer("alice", &[])), "api_key");
        id.subject = Some("sub-1".into());
        assert_eq!(id.name(), Some("alice"));
        let token_only = Identity {
            subject: Some("sub-1".into()),
            ..Identity::default()
        };
        assert_eq!(token_only.name(), Some("sub-1"));
    }
}
