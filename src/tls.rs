//! Downstream TLS: a rustls server config per listener, with certificates chosen by SNI.
//!
//! Certificates are read when a snapshot is built, so a reload picks up renewed files.
//! Selection order: a certificate whose configured `server_names` contain the SNI name
//! exactly; then one whose `*.suffix` name covers it; then the first certificate without
//! configured names that is valid for the SNI name (its SAN list); then the first
//! certificate (clients that send no SNI, or an unknown name, get the default).
//!
//! A listener with `client_auth` also verifies client certificates against its CA bundle
//! (read again on every reload too); [`ClientCert`] reads the names of the one presented.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::model::{ClientAuth, ClientAuthMode, Tls, TlsVersion};

use crate::certs::client_roots;
pub use crate::certs::ClientCert;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificates[{index}]: cannot read {path}: {reason}")]
    Read {
        index: usize,
        path: String,
        reason: String,
    },
    #[error("certificates[{index}]: {reason}")]
    Key { index: usize, reason: String },
    #[error("client_auth.ca_file: {0}")]
    ClientCa(String),
    #[error("{0}")]
    Config(String),
}

/// Builds the rustls config of one listener.
pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_verifier = match &tls.client_auth {
        Some(c) => Some(client_verifier(c, &provider)?),
        None => None,
    };
    let mut resolver = SniResolver::default();
    for (index, c) in tls.certificates.iter().enumerate() {
        let key = Arc::new(load_certified_key(
            index,
            &c.cert_path,
            &c.key_path,
            &provider,
        )?);
        if c.server_names.is_empty() {
            resolver.by_san.push(key.clone());
        }
        for name in &c.server_names {
            match name.strip_prefix("*.") {
                Some(suffix) => resolver.wildcard.push((format!(".{suffix}"), key.clone())),
                None => {
                    resolver
                        .exact
                        .entry(name.clone())
                        .or_insert_with(|| key.clone());
                }
            }
        }
        if resolver.default.is_none() {
            resolver.default = Some(key);
        }
    }
    // Longest suffix first, so `*.a.example.com` beats `*.example.com`.
    resolver
        .wildcard
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if tls.h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// The verifier of a listener's client certificates: chains to the bundle's CAs, with the
/// client-auth key usage; `optional` also admits clients that send no certificate.
fn client_verifier(
    auth: &ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = client_roots(&auth.ca_path).map_err(TlsError::ClientCa)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

fn load_certified_key(
    index: usize,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read_err = |path: &Path, reason: String| TlsError::Read {
        index,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| read_err(cert_path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(read_err(cert_path, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| read_err(key_path, e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key {
        index,
        reason: e.to_string(),
    })
}

#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    by_san: Vec<Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn lookup(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&sni) {
            return Some(k);
        }
        if let Some((_, k)) = self
            .wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
        {
            return Some(k);
        }
        let name = ServerName::try_from(sni.as_str()).ok()?;
        self.by_san.iter().find(|k| {
            k.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|sni| self.lookup(sni))
            .or(self.default.as_ref())
            .cloned()
    }
}
