//! The names a verified client certificate carries (subject common name; DNS, URI and email
//! subject alternative names), read once per connection for the `mtls` auth method.
//!
//! rustls has verified the chain before this runs; this only reads names. rustls-webpki
//! offers the DNS and URI names but neither the email names nor the common name, so one walk
//! of our own reads all four (see `der.rs` for how hostile input is handled).

use super::der::{tag, Reader};

/// `2.5.4.3`, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// `2.5.29.17`, id-ce-subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// GeneralName choices read from the subject alternative names (RFC 5280 §4.2.1.6).
const SAN_EMAIL: u8 = tag::implicit(1);
const SAN_DNS: u8 = tag::implicit(2);
const SAN_URI: u8 = tag::implicit(6);

/// Names of a client's end-entity certificate, as the `mtls` method sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's common name; `None` when absent, repeated (ambiguous), not text, or
    /// holding control characters.
    pub subject_cn: Option<String>,
    /// DNS names, lower-cased; entries that are not valid DNS names are left out.
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
}

/// The certificate is not the DER structure RFC 5280 describes.
struct Malformed;

impl ClientCert {
    /// Reads the names of a DER certificate; `None` when it is not a well-formed certificate.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        read(der).ok()
    }
}

fn read(der: &[u8]) -> Result<ClientCert, Malformed> {
    let mut outer = Reader::new(der);
    let cert = outer.expect(tag::SEQUENCE).ok_or(Malformed)?;
    if !outer.is_empty() {
        return Err(Malformed);
    }
    // tbsCertificate; the signature algorithm and value after it were checked by rustls.
    let tbs = Reader::new(cert).expect(tag::SEQUENCE).ok_or(Malformed)?;
    let mut tbs = Reader::new(tbs);
    tbs.optional(tag::explicit(0)).ok_or(Malformed)?; // version
    step(&mut tbs, tag::INTEGER)?; // serialNumber
    step(&mut tbs, tag::SEQUENCE)?; // signature
    step(&mut tbs, tag::SEQUENCE)?; // issuer
    step(&mut tbs, tag::SEQUENCE)?; // validity
    let subject = step(&mut tbs, tag::SEQUENCE)?;
    step(&mut tbs, tag::SEQUENCE)?; // subjectPublicKeyInfo
    tbs.optional(tag::implicit(1)).ok_or(Malformed)?; // issuerUniqueID
    tbs.optional(tag::implicit(2)).ok_or(Malformed)?; // subjectUniqueID
    let extensions = tbs.optional(tag::explicit(3)).ok_or(Malformed)?;
    if !tbs.is_empty() {
        return Err(Malformed);
    }
    let mut names = ClientCert {
        subject_cn: common_name(subject)?,
        ..ClientCert::default()
    };
    if let Some(extensions) = extensions {
        if let Some(san) = subject_alt_name(extensions)? {
            general_names(san, &mut names)?;
        }
    }
    Ok(names)
}

fn step<'a>(r: &mut Reader<'a>, want: u8) -> Result<&'a [u8], Malformed> {
    r.expect(want).ok_or(Malformed)
}

/// The common name of a Name's contents (a SEQUENCE OF RelativeDistinguishedName).
fn common_name(name: &[u8]) -> Result<Option<String>, Malformed> {
    let mut found: Option<&[u8]> = None;
    let mut count = 0usize;
    let mut rdns = Reader::new(name);
    while !rdns.is_empty() {
        let rdn = rdns.expect(tag::SET).ok_or(Malformed)?;
        let mut atvs = Reader::new(rdn);
        while !atvs.is_empty() {
            let atv = atvs.expect(tag::SEQUENCE).ok_or(Malformed)?;
            let mut atv = Reader::new(atv);
            let oid = atv.expect(tag::OID).ok_or(Malformed)?;
            let (value_tag, value) = atv.any().ok_or(Malformed)?;
            if !atv.is_empty() {
                return Err(Malformed);
            }
            if oid == OID_COMMON_NAME {
                count += 1;
                found = matches!(
                    value_tag,
                    tag::UTF8_STRING | tag::PRINTABLE_STRING | tag::IA5_STRING
                )
                .then_some(value);
            }
        }
    }
    // Two common names would make the identity depend on which one a reader picks.
    if count != 1 {
        return Ok(None);
    }
    Ok(found.and_then(text))
}

/// The subjectAltName extension's value (GeneralNames, with its SEQUENCE tag), if present.
fn subject_alt_name(extensions: &[u8]) -> Result<Option<&[u8]>, Malformed> {
    let list = Reader::new(extensions)
        .expect(tag::SEQUENCE)
        .ok_or(Malformed)?;
    let mut list = Reader::new(list);
    let mut found = None;
    while !list.is_empty() {
        let ext = list.expect(tag::SEQUENCE).ok_or(Malformed)?;
        let mut ext = Reader::new(ext);
        let oid = ext.expect(tag::OID).ok_or(Malformed)?;
        ext.optional(tag::BOOLEAN).ok_or(Malformed)?; // critical
        let value = ext.expect(tag::OCTET_STRING).ok_or(Malformed)?;
        if !ext.is_empty() {
            return Err(Malformed);
        }
        if oid == OID_SUBJECT_ALT_NAME {
            // RFC 5280 §4.2: an extension appears at most once.
            if found.is_some() {
                return Err(Malformed);
            }
            found = Some(value);
        }
    }
    Ok(found)
}

fn general_names(san: &[u8], names: &mut ClientCert) -> Result<(), Malformed> {
    let mut outer = Reader::new(san);
    let list = outer.expect(tag::SEQUENCE).ok_or(Malformed)?;
    if !outer.is_empty() {
        return Err(Malformed);
    }
    let mut list = Reader::new(list);
    while !list.is_empty() {
        let (choice, value) = list.any().ok_or(Malformed)?;
        // IA5String values: ASCII only.
        let ascii = || text(value).filter(|s| s.is_ascii());
        match choice {
            SAN_DNS => {
                if let Some(dns) = ascii().map(|s| s.to_ascii_lowercase()) {
                    if rustls_pki_types::DnsName::try_from(dns.as_str()).is_ok() {
                        names.dns_names.push(dns);
                    }
                }
            }
            SAN_URI => names.uris.extend(ascii()),
            SAN_EMAIL => names.emails.extend(ascii()),
            // otherName, x400Address, directoryName, ediPartyName, iPAddress, registeredID.
            _ => {}
        }
    }
    Ok(())
}

/// Non-empty UTF-8 without control characters: names go into logs and rate-limit keys.
fn text(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.is_empty() && !s.chars().any(char::is_control)).then(|| s.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn ia5(s: &str) -> rcgen::string::Ia5String {
        s.try_into().unwrap()
    }

    fn alice() -> Vec<u8> {
        cert(
            Some("alice"),
            vec![
                SanType::DnsName(ia5("Alice.Example")),
                SanType::URI(ia5("spiffe://example.org/ns/prod/sa/alice")),
                SanType::Rfc822Name(ia5("alice@example.com")),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::DnsName(ia5("alice2.example")),
            ],
        )
    }

    /// DER TLV with a length under 128.
    fn tlv(t: u8, value: &[u8]) -> Vec<u8> {
        assert!(value.len() < 0x80);
        let mut out = vec![t, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    fn cn_atv(t: u8, value: &[u8]) -> Vec<u8> {
        let mut atv = tlv(tag::OID, OID_COMMON_NAME);
        atv.extend(tlv(t, value));
        tlv(tag::SET, &tlv(tag::SEQUENCE, &atv))
    }

    #[test]
    fn every_kind_of_name_is_read() {
        let names = ClientCert::from_der(&alice()).unwrap();
        assert_eq!(names.subject_cn.as_deref(), Some("alice"));
        assert_eq!(names.dns_names, ["alice.example", "alice2.example"]);
        assert_eq!(names.uris, ["spiffe://example.org/ns/prod/sa/alice"]);
        assert_eq!(names.emails, ["alice@example.com"]);
    }

    #[test]
    fn dns_and_uri_names_agree_with_webpki() {
        let der = alice();
        let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
        let ours = ClientCert::from_der(&der).unwrap();
        let dns: Vec<String> = ee
            .valid_dns_names()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let uris: Vec<&str> = ee.valid_uri_names().collect();
        assert_eq!(ours.dns_names, dns);
        assert_eq!(ours.uris, uris);
    }

    #[test]
    fn certificate_without_names_has_none() {
        let names = ClientCert::from_der(&cert(None, Vec::new())).unwrap();
        assert_eq!(names, ClientCert::default());
    }

    #[test]
    fn every_truncation_is_refused_without_panicking() {
        let der = alice();
        for len in 0..der.len() {
            assert!(ClientCert::from_der(&der[..len]).is_none(), "prefix {len}");
        }
    }

    #[test]
    fn trailing_bytes_after_the_certificate_are_refused() {
        let mut der = alice();
        der.push(0);
        assert!(ClientCert::from_der(&der).is_none());
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let der = alice();
        for i in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[i] ^= flip;
                let _ = ClientCert::from_der(&bad);
            }
        }
    }

    #[test]
    fn wrong_outer_tag_is_refused() {
        let mut der = alice();
        der[0] = tag::SET;
        assert!(ClientCert::from_der(&der).is_none());
    }

    #[test]
    fn repeated_common_name_is_ambiguous_and_dropped() {
        let mut name = cn_atv(tag::UTF8_STRING, b"alice");
        name.extend(cn_atv(tag::UTF8_STRING, b"mallory"));
        assert_eq!(common_name(&name).ok(), Some(None));
        assert_eq!(
            common_name(&cn_atv(tag::PRINTABLE_STRING, b"alice")).ok(),
            Some(Some("alice".to_owned()))
        );
    }

    #[test]
    fn common_name_with_control_characters_or_odd_encoding_is_dropped() {
        for (t, value) in [
            (tag::UTF8_STRING, &b"ali\nce"[..]),
            (tag::UTF8_STRING, b""),
            (tag::UTF8_STRING, b"\xff\xfe"),
            (0x1e, b"\x00a\x00l"), // BMPString
        ] {
            assert_eq!(common_name(&cn_atv(t, value)).ok(), Some(None), "{value:?}");
        }
    }

    #[test]
    fn malformed_name_structure_is_refused() {
        // An attribute with an extra element after its value.
        let mut atv = tlv(tag::OID, OID_COMMON_NAME);
        atv.extend(tlv(tag::UTF8_STRING, b"alice"));
        atv.extend(tlv(tag::UTF8_STRING, b"extra"));
        let name = tlv(tag::SET, &tlv(tag::SEQUENCE, &atv));
        assert!(common_name(&name).is_err());
        // A SEQUENCE where the SET of an RDN belongs.
        assert!(common_name(&tlv(tag::SEQUENCE, &[])).is_err());
    }

    #[test]
    fn duplicate_subject_alt_name_extension_is_refused() {
        let mut ext = tlv(tag::OID, OID_SUBJECT_ALT_NAME);
        ext.extend(tlv(tag::OCTET_STRING, &tlv(tag::SEQUENCE, &[])));
        let ext = tlv(tag::SEQUENCE, &ext);
        let mut two = ext.clone();
        two.extend(ext.clone());
        assert!(subject_alt_name(&tlv(tag::SEQUENCE, &ext)).is_ok());
        assert!(subject_alt_name(&tlv(tag::SEQUENCE, &two)).is_err());
    }

    #[test]
    fn invalid_dns_names_and_non_ascii_sans_are_left_out() {
        let mut list = tlv(SAN_DNS, b"not a name");
        list.extend(tlv(SAN_DNS, b"ok.example"));
        list.extend(tlv(SAN_EMAIL, "j\u{f6}rg@example.com".as_bytes()));
        list.extend(tlv(SAN_URI, b"urn:x\x07"));
        list.extend(tlv(tag::explicit(0), &[])); // otherName: skipped
        let mut names = ClientCert::default();
        assert!(general_names(&tlv(tag::SEQUENCE, &list), &mut names).is_ok());
        assert_eq!(names.dns_names, ["ok.example"]);
        assert!(names.emails.is_empty());
        assert!(names.uris.is_empty());
    }

    #[test]
    fn general_name_with_a_length_past_the_end_is_refused() {
        let mut names = ClientCert::default();
        let san = [tag::SEQUENCE, 0x04, SAN_DNS, 0x7f, b'a', b'b'];
        assert!(general_names(&san, &mut names).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = ClientCert::from_der(&bytes);
            let _ = common_name(&bytes);
            let _ = subject_alt_name(&bytes);
            let _ = general_names(&bytes, &mut ClientCert::default());
        }
    }
}
