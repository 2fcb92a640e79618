//! Certificates and keys as files and bytes, before any TLS configuration: PEM bundles of
//! CAs, certificate chains and private keys read with errors that name the file (for
//! `check` and reload failures), and the names a client certificate carries.

mod client_cert;
mod der;

use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client_cert::ClientCert;

/// Reads a PEM bundle of CA certificates (one or more) that client certificates must chain
/// to. The error says what is wrong with the file, for `check` and for reload failures.
pub fn client_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    roots_from_pem(&pem, path)
}

/// The CA certificates of a PEM bundle (read from `path`) as trust anchors; at least one.
pub fn roots_from_pem(pem: &[u8], path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {shown}"));
    }
    let mut roots = RootCertStore::empty();
    for (i, der) in certs.into_iter().enumerate() {
        roots
            .add(der)
            .map_err(|e| format!("certificate {} in {shown}: {e}", i + 1))?;
    }
    Ok(roots)
}

/// Reads a PEM bundle of CA certificates; also returns the file's bytes.
pub fn read_roots(path: &Path) -> Result<(RootCertStore, Vec<u8>), String> {
    let bytes = read(path)?;
    let roots = roots_from_pem(&bytes, path)?;
    Ok((roots, bytes))
}

/// Reads a PEM certificate chain (end-entity first); also returns the file's bytes.
pub fn read_chain(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok((chain, bytes))
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1); also returns the file's bytes.
pub fn read_key(path: &Path) -> Result<(PrivateKeyDer<'static>, Vec<u8>), String> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok((key, bytes)),
        Err(pem::Error::NoItemsFound) => Err(format!("no private key in {}", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Checks that `key` is usable and belongs to the chain's end-entity certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(|_| ())
        .map_err(|e| key_error(&e))
}

/// What is wrong with a key rustls refused, for a config error.
pub fn key_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        e => format!("unusable key: {e}"),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
