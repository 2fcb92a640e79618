//! `upstreams.NAME.protocol` and `upstreams.NAME.tls`: the protocol must suit the transport
//! (h2c on plain TCP, h2 over TLS), and the CA bundle and client certificate are read and
//! parsed here so `check` reports a bad file at its own key.

use std::path::{Path, PathBuf};

use rustls_pki_types::ServerName;

use super::file;
use super::model::{ClientCertificate, UpstreamProtocol, UpstreamTls};
use super::validate::Errors;
use crate::certs as pem;

/// The group's protocol, checked against whether it has a `tls` block.
pub(super) fn protocol(errs: &mut Errors, at: &str, u: &file::Upstream) -> UpstreamProtocol {
    let at = format!("{at}.protocol");
    match (u.protocol.as_deref(), u.tls.is_some()) {
        (None | Some("http1"), _) => UpstreamProtocol::Http1,
        (Some("h2c"), false) | (Some("h2"), true) => UpstreamProtocol::H2,
        (Some("h2c"), true) => {
            errs.push(at, "h2c is plain-text HTTP/2; use h2 with tls");
            UpstreamProtocol::H2
        }
        (Some("h2"), false) => {
            errs.push(
                at,
                "h2 is HTTP/2 over TLS and needs tls; use h2c for plain-text HTTP/2",
            );
            UpstreamProtocol::H2
        }
        (Some(p), _) => {
            errs.push(at, format!("unknown protocol {p:?}; use http1, h2c or h2"));
            UpstreamProtocol::Http1
        }
    }
}

/// `tls` of one group; `None` after reporting a problem.
pub(super) fn tls(
    errs: &mut Errors,
    at: &str,
    t: &file::UpstreamTls,
    base_dir: &Path,
) -> Option<UpstreamTls> {
    let at = format!("{at}.tls");
    errs.unknown_in(&at, &t);
    let mut ok = true;
    let server_name = match &t.server_name {
        None => None,
        Some(name) => match ServerName::try_from(name.clone()) {
            Ok(n) => Some(n),
            Err(_) => {
                errs.push(
                    format!("{at}.server_name"),
                    format!("invalid server name {name:?}: not a DNS name or an IP address"),
                );
                ok = false;
                None
            }
        },
    };
    let ca_path = t.ca_file.as_ref().and_then(|f| {
        let path = existing(errs, &format!("{at}.ca_file"), f, base_dir)?;
        match pem::read_roots(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                errs.push(format!("{at}.ca_file"), e);
                None
            }
        }
    });
    ok &= ca_path.is_some() == t.ca_file.is_some();
    let client_certificate = match &t.client_certificate {
        None => None,
        Some(c) => {
            let checked =
                client_certificate(errs, &format!("{at}.client_certificate"), c, base_dir);
            ok &= checked.is_some();
            checked
        }
    };
    ok.then_some(UpstreamTls {
        server_name,
        ca_path,
        client_certificate,
        verify: t.verify.unwrap_or(true),
    })
}

/// Both files present and parsed, and the key is the certificate's.
fn client_certificate(
    errs: &mut Errors,
    at: &str,
    c: &file::ClientCertificate,
    base_dir: &Path,
) -> Option<ClientCertificate> {
    errs.unknown_in(at, &c);
    let mut file = |key: &str, value: &Option<String>, what: &str| match value {
        Some(f) => existing(errs, &format!("{at}.{key}"), f, base_dir),
        None => {
            errs.push(
                format!("{at}.{key}"),
                format!("required with client_certificate: {what}"),
            );
            None
        }
    };
    let cert_path = file("cert", &c.cert, "the PEM certificate chain");
    let key_path = file("key", &c.key, "the PEM private key");
    let chain = cert_path.as_deref().and_then(|p| {
        pem::read_chain(p)
            .map_err(|e| errs.push(format!("{at}.cert"), e))
            .ok()
    });
    let key = key_path.as_deref().and_then(|p| {
        pem::read_key(p)
            .map_err(|e| errs.push(format!("{at}.key"), e))
            .ok()
    });
    let (Some((chain, _)), Some((key, _))) = (chain, key) else {
        return None;
    };
    if let Err(e) = pem::certified_key(chain, key) {
        errs.push(format!("{at}.key"), e);
        return None;
    }
    Some(ClientCertificate {
        cert_path: cert_path?,
        key_path: key_path?,
    })
}

/// The path of a file that exists, or `None` after reporting it missing.
fn existing(errs: &mut Errors, at: &str, file: &str, base_dir: &Path) -> Option<PathBuf> {
    let path = base_dir.join(file);
    if path.is_file() {
        Some(path)
    } else {
        errs.push(at, format!("no such file: {file}"));
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    fn errors(upstream: &str) -> Vec<String> {
        let yaml = format!(
            "listeners: [{{address: 127.0.0.1:8080}}]\nupstreams:\n  api:\n    targets: [{{address: 127.0.0.1:9001}}]\n{upstream}routes:\n  - upstream: api\n"
        );
        match crate::config::parse(&yaml, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn h2_needs_tls_and_h2c_refuses_it() {
        assert_eq!(
            errors("    protocol: h2\n"),
            ["upstreams.api.protocol: h2 is HTTP/2 over TLS and needs tls; use h2c for plain-text HTTP/2"]
        );
        assert_eq!(
            errors("    protocol: h2c\n    tls: {verify: false}\n"),
            ["upstreams.api.protocol: h2c is plain-text HTTP/2; use h2 with tls"]
        );
        assert_eq!(
            errors("    protocol: h2\n    tls: {verify: false}\n"),
            [] as [&str; 0]
        );
    }

    #[test]
    fn unknown_protocol_lists_the_three_known_ones() {
        assert_eq!(
            errors("    protocol: h3\n"),
            ["upstreams.api.protocol: unknown protocol \"h3\"; use http1, h2c or h2"]
        );
    }

    #[test]
    fn server_name_must_be_a_dns_name_or_an_ip_address() {
        assert_eq!(
            errors("    tls: {server_name: \"not a name\"}\n"),
            ["upstreams.api.tls.server_name: invalid server name \"not a name\": not a DNS name or an IP address"]
        );
        assert_eq!(
            errors("    tls: {server_name: api.internal, verify: false}\n"),
            [] as [&str; 0]
        );
        assert_eq!(
            errors("    tls: {server_name: 10.0.0.5, verify: false}\n"),
            [] as [&str; 0]
        );
    }

    #[test]
    fn missing_and_non_pem_files_are_reported_at_their_keys() {
        let errs = errors(
            "    tls:\n      ca_file: missing-ca.pem\n      client_certificate: {cert: Cargo.toml, key: missing.key}\n      colour: blue\n",
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[0], "upstreams.api.tls.colour: unknown key");
        assert_eq!(
            errs[1],
            "upstreams.api.tls.ca_file: no such file: missing-ca.pem"
        );
        assert_eq!(
            errs[2],
            "upstreams.api.tls.client_certificate.key: no such file: missing.key"
        );
        assert!(
            errs[3].starts_with("upstreams.api.tls.client_certificate.cert: no certificate in"),
            "{}",
            errs[3]
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_reported() {
        assert_eq!(
            errors("    tls: {client_certificate: {cert: Cargo.toml}}\n")[0],
            "upstreams.api.tls.client_certificate.key: required with client_certificate: the PEM private key"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_reported() {
        let errs = errors("    tls: {ca_file: Cargo.toml}\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("upstreams.api.tls.ca_file: no certificate in"),
            "{}",
            errs[0]
        );
    }
}
