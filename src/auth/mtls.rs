//! Authentication by client certificate (mutual TLS): the listener's `tls.client_auth` has
//! verified the certificate during the handshake; this method takes one of its names (subject
//! CN or a DNS, URI or email SAN) as the caller's identity, and maps it to a consumer through
//! the consumers' `certificate_names`.
//!
//! A name no consumer lists is still an identity, without a consumer, as a token subject
//! without a consumer is. A connection without a certificate (plain text, a listener without
//! `client_auth`, or `optional` mode and none sent) fails the method as a missing credential.

use std::collections::HashMap;
use std::sync::Arc;

use super::consumer::{Consumer, ConsumerSet, Identity};
use super::jwt::AuthFailure;
use crate::certs::ClientCert;

/// Which certificate name identifies the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsumerFrom {
    #[default]
    SubjectCn,
    SanDns,
    SanUri,
    SanEmail,
}

/// Certificate names of every consumer, shared by all `mtls` methods of a snapshot.
#[derive(Debug, Default)]
pub struct CertificateNames {
    by_name: HashMap<String, Arc<Consumer>>,
}

/// A `certificate_names` entry rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateNameError {
    #[error("consumer {consumer:?} is not defined")]
    UnknownConsumer { consumer: String },
    #[error("empty certificate name")]
    Empty,
    #[error("certificate name {name:?} is also listed by consumer {other:?}")]
    Duplicate { name: String, other: String },
}

impl ConsumerFrom {
    /// Parses the `consumer_from` setting.
    pub fn parse(text: &str) -> Option<ConsumerFrom> {
        match text {
            "subject_cn" => Some(ConsumerFrom::SubjectCn),
            "san_dns" => Some(ConsumerFrom::SanDns),
            "san_uri" => Some(ConsumerFrom::SanUri),
            "san_email" => Some(ConsumerFrom::SanEmail),
            _ => None,
        }
    }

    /// The certificate's names of this kind, in certificate order.
    fn names(self, cert: &ClientCert) -> &[String] {
        match self {
            ConsumerFrom::SubjectCn => cert.subject_cn.as_slice(),
            ConsumerFrom::SanDns => &cert.dns_names,
            ConsumerFrom::SanUri => &cert.uris,
            ConsumerFrom::SanEmail => &cert.emails,
        }
    }
}

impl CertificateNames {
    /// Indexes `(consumer, certificate name)` pairs; a name listed twice is an error, since
    /// it would make the consumer depend on configuration order.
    pub fn new(
        consumers: &ConsumerSet,
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CertificateNames, CertificateNameError> {
        let mut by_name: HashMap<String, Arc<Consumer>> = HashMap::new();
        for (consumer, name) in entries {
            let Some(c) = consumers.get(&consumer) else {
                return Err(CertificateNameError::UnknownConsumer { consumer });
            };
            if name.is_empty() {
                return Err(CertificateNameError::Empty);
            }
            if let Some(other) = by_name.get(&name) {
                return Err(CertificateNameError::Duplicate {
                    name,
                    other: other.name.to_string(),
                });
            }
            by_name.insert(name, c.clone());
        }
        Ok(CertificateNames { by_name })
    }

    /// The identity the certificate's `from` names give: the first name a consumer lists,
    /// else the first name without a consumer.
    pub fn identify(
        &self,
        cert: Option<&ClientCert>,
        from: ConsumerFrom,
    ) -> Result<Identity, AuthFailure> {
        let cert = cert.ok_or(AuthFailure::MissingToken)?;
        let names = from.names(cert);
        let Some(first) = names.first() else {
            return Err(AuthFailure::MalformedCredential(
                "client certificate has no name of the configured kind",
            ));
        };
        let (subject, consumer) = names
            .iter()
            .find_map(|n| Some((n, self.by_name.get(n)?.clone())))
            .map_or((first, None), |(n, c)| (n, Some(c)));
        Ok(Identity {
            consumer,
            subject: Some(Arc::from(subject.as_str())),
            method: "mtls",
            ..Identity::default()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names(entries: &[(&str, &str)]) -> Result<CertificateNames, CertificateNameError> {
        let consumers = ConsumerSet::new(
            ["alice", "bob"]
                .iter()
                .map(|n| Consumer::new(n, vec!["staff".into()], BTreeMap::new()).unwrap())
                .collect(),
        )
        .unwrap();
        CertificateNames::new(
            &consumers,
            entries.iter().map(|(c, n)| (c.to_string(), n.to_string())),
        )
    }

    fn cert() -> ClientCert {
        ClientCert {
            subject_cn: Some("alice".into()),
            dns_names: vec!["www.example".into(), "alice.example".into()],
            uris: vec!["spiffe://example.org/alice".into()],
            emails: Vec::new(),
        }
    }

    #[test]
    fn subject_cn_listed_by_a_consumer_is_that_consumer() {
        let set = names(&[("alice", "alice")]).unwrap();
        let id = set
            .identify(Some(&cert()), ConsumerFrom::SubjectCn)
            .unwrap();
        assert_eq!(&*id.consumer.unwrap().name, "alice");
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.method, "mtls");
    }

    #[test]
    fn first_san_a_consumer_lists_wins_over_earlier_unlisted_ones() {
        let set = names(&[("bob", "alice.example")]).unwrap();
        let id = set.identify(Some(&cert()), ConsumerFrom::SanDns).unwrap();
        assert_eq!(id.name(), Some("bob"));
        assert_eq!(id.subject.as_deref(), Some("alice.example"));
    }

    #[test]
    fn unlisted_name_is_an_identity_without_a_consumer() {
        let set = names(&[]).unwrap();
        let id = set.identify(Some(&cert()), ConsumerFrom::SanUri).unwrap();
        assert!(id.consumer.is_none());
        assert_eq!(id.name(), Some("spiffe://example.org/alice"));
        let id = set.identify(Some(&cert()), ConsumerFrom::SanDns).unwrap();
        assert_eq!(id.name(), Some("www.example"));
    }

    #[test]
    fn no_certificate_is_a_missing_credential() {
        let set = names(&[]).unwrap();
        assert_eq!(
            set.identify(None, ConsumerFrom::SubjectCn).unwrap_err(),
            AuthFailure::MissingToken
        );
    }

    #[test]
    fn certificate_without_the_configured_name_is_refused() {
        let set = names(&[]).unwrap();
        let err = set
            .identify(Some(&cert()), ConsumerFrom::SanEmail)
            .unwrap_err();
        assert!(matches!(err, AuthFailure::MalformedCredential(_)));
    }

    #[test]
    fn name_listed_by_two_consumers_is_rejected() {
        let err = names(&[("alice", "svc"), ("bob", "svc")]).err().unwrap();
        assert_eq!(
            err,
            CertificateNameError::Duplicate {
                name: "svc".into(),
                other: "alice".into()
            }
        );
        assert_eq!(
            names(&[("alice", "")]).err(),
            Some(CertificateNameError::Empty)
        );
    }

    #[test]
    fn consumer_from_parses_the_four_kinds() {
        assert_eq!(
            ConsumerFrom::parse("subject_cn"),
            Some(ConsumerFrom::SubjectCn)
        );
        assert_eq!(ConsumerFrom::parse("san_dns"), Some(ConsumerFrom::SanDns));
        assert_eq!(ConsumerFrom::parse("san_uri"), Some(ConsumerFrom::SanUri));
        assert_eq!(
            ConsumerFrom::parse("san_email"),
            Some(ConsumerFrom::SanEmail)
        );
        assert_eq!(ConsumerFrom::parse("cn"), None);
    }
}
