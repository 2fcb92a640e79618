//! Upstream TLS: the rustls client of one upstream group, built at load from its `tls` block
//! (trust anchors, client certificate, ALPN from the group's protocol), with a fingerprint of
//! everything that went into it, so the pool keeps connections over a reload that changed
//! nothing and stops using them when a setting or a file changed.
//!
//! Files are read once per build and the fingerprint covers their bytes, so a renewed CA
//! bundle or client certificate counts as a change even when the config text is the same.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;

use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;

use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::certs::{key_error, read_chain, read_key, read_roots};
use crate::config::model::{UpstreamProtocol, UpstreamTls};

/// Why a group's TLS client could not be built (a file changed since validation, or the
/// system has no root certificates).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("ca_file: {0}")]
    Ca(String),
    #[error("no system root certificates could be loaded{0}; set ca_file")]
    SystemRoots(String),
    #[error("client_certificate.cert: {0}")]
    Cert(String),
    #[error("client_certificate.key: {0}")]
    Key(String),
    #[error("{0}")]
    Config(String),
}

/// A group's compiled TLS client: every connection to its targets is made with it.
pub struct TlsClient {
    connector: TlsConnector,
    /// `None`: no SNI, and the certificate is matched against the target's IP address.
    server_name: Option<ServerName<'static>>,
    /// SHA-256 of the settings and of the bytes of every file read: clients with equal
    /// fingerprints make interchangeable connections.
    fingerprint: [u8; 32],
}

/// The fingerprint being computed; each part is framed by its length so that no two
/// different sequences of parts hash alike.
struct Fingerprint(digest::Context);

/// `verify: false`: any certificate is accepted. The handshake signature is still checked,
/// which proves the peer holds the key of the certificate it sent, not who it is.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl TlsClient {
    /// Builds the client of one group, reading its files (so a reload sees renewed ones).
    pub fn build(
        tls: &UpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Result<TlsClient, UpstreamTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut print = Fingerprint(digest::Context::new(&digest::SHA256));
        let alpn: &[u8] = match protocol {
            UpstreamProtocol::Http1 => b"http/1.1",
            UpstreamProtocol::H2 => b"h2",
        };
        print.add(alpn);
        print.add(
            tls.server_name
                .as_ref()
                .map(|n| n.to_str())
                .unwrap_or_default()
                .as_bytes(),
        );
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| UpstreamTlsError::Config(e.to_string()))?;
        let builder = if !tls.verify {
            print.add(b"accept any certificate");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else if let Some(path) = &tls.ca_path {
            let (roots, bytes) = read_roots(path).map_err(UpstreamTlsError::Ca)?;
            print.add(b"ca_file");
            print.add(&bytes);
            builder.with_root_certificates(roots)
        } else {
            print.add(b"system roots");
            builder.with_root_certificates(system_roots(&mut print)?)
        };
        let mut config = match &tls.client_certificate {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let (chain, cert_bytes) =
                    read_chain(&c.cert_path).map_err(UpstreamTlsError::Cert)?;
                let (key, key_bytes) = read_key(&c.key_path).map_err(UpstreamTlsError::Key)?;
                print.add(&cert_bytes);
                print.add(&key_bytes);
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| UpstreamTlsError::Key(key_error(&e)))?
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(print.0.finish().as_ref());
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: tls.server_name.clone(),
            fingerprint,
        })
    }

    /// The TLS handshake on a connected stream to `addr`.
    pub async fn handshake(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        self.connector.connect(name, tcp).await
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for TlsClient {}

impl Hash for TlsClient {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field(
                "fingerprint",
                &format_args!("{:02x?}", &self.fingerprint[..4]),
            )
            .finish()
    }
}

impl Fingerprint {
    fn add(&mut self, part: &[u8]) {
        self.0.update(&(part.len() as u64).to_le_bytes());
        self.0.update(part);
    }
}

/// The platform's trust anchors (`SSL_CERT_FILE` / `SSL_CERT_DIR` override where they are
/// looked for), read again on every build like the other files.
fn system_roots(print: &mut Fingerprint) -> Result<RootCertStore, UpstreamTlsError> {
    let found = rustls_native_certs::load_native_certs();
    for der in &found.certs {
        print.add(der);
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(UpstreamTlsError::SystemRoots(why));
    }
    Ok(roots)
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::certs::certified_key;

    /// A directory with a CA certificate (`ca.crt`) and a client certificate and key, removed
    /// on drop.
    struct Files(PathBuf);

    impl Files {
        fn new() -> Files {
            let dir = std::env::temp_dir().join(format!(
                "ferrogate-upstream-tls-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let files = Files(dir);
            files.write_ca();
            let client = rcgen::generate_simple_self_signed(vec!["gw.internal".into()]).unwrap();
            std::fs::write(files.0.join("client.crt"), client.cert.pem()).unwrap();
            std::fs::write(
                files.0.join("client.key"),
                client.signing_key.serialize_pem(),
            )
            .unwrap();
            files
        }

        /// A new CA certificate in `ca.crt`, replacing the old one.
        fn write_ca(&self) {
            let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".into()]).unwrap();
            std::fs::write(self.0.join("ca.crt"), ca.cert.pem()).unwrap();
        }

        fn settings(&self) -> UpstreamTls {
            UpstreamTls {
                server_name: Some(ServerName::try_from("api.internal").unwrap()),
                ca_path: Some(self.0.join("ca.crt")),
                client_certificate: Some(crate::config::model::ClientCertificate {
                    cert_path: self.0.join("client.crt"),
                    key_path: self.0.join("client.key"),
                }),
                verify: true,
            }
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn build(tls: &UpstreamTls, protocol: UpstreamProtocol) -> TlsClient {
        TlsClient::build(tls, protocol).unwrap()
    }

    #[test]
    fn the_same_settings_and_files_build_equal_clients() {
        let files = Files::new();
        let tls = files.settings();
        assert_eq!(
            build(&tls, UpstreamProtocol::Http1),
            build(&tls, UpstreamProtocol::Http1)
        );
    }

    #[test]
    fn a_changed_setting_builds_a_different_client() {
        let files = Files::new();
        let tls = files.settings();
        let first = build(&tls, UpstreamProtocol::Http1);
        assert_ne!(first, build(&tls, UpstreamProtocol::H2));
        let other_name = UpstreamTls {
            server_name: Some(ServerName::try_from("other.internal").unwrap()),
            ..tls.clone()
        };
        assert_ne!(first, build(&other_name, UpstreamProtocol::Http1));
        let no_client_cert = UpstreamTls {
            client_certificate: None,
            ..tls.clone()
        };
        assert_ne!(first, build(&no_client_cert, UpstreamProtocol::Http1));
        let unverified = UpstreamTls {
            verify: false,
            ..tls
        };
        assert_ne!(first, build(&unverified, UpstreamProtocol::Http1));
    }

    #[test]
    fn a_rewritten_ca_file_builds_a_different_client() {
        let files = Files::new();
        let tls = files.settings();
        let first = build(&tls, UpstreamProtocol::Http1);
        files.write_ca();
        assert_ne!(first, build(&tls, UpstreamProtocol::Http1));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let files = Files::new();
        let other = rcgen::generate_simple_self_signed(vec!["x.internal".into()]).unwrap();
        std::fs::write(
            files.0.join("client.key"),
            other.signing_key.serialize_pem(),
        )
        .unwrap();
        let (chain, _) = read_chain(&files.0.join("client.crt")).unwrap();
        let (key, _) = read_key(&files.0.join("client.key")).unwrap();
        assert_eq!(
            certified_key(chain, key).unwrap_err(),
            "the key does not belong to the certificate"
        );
    }
}
