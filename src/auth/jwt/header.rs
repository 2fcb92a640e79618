//! Reads the JOSE header of a compact JWS before any key is chosen, refusing what must never be
//! honoured: `alg: none` in any casing, unknown algorithms, keys or key URLs carried by the
//! token (`jwk`, `jku`, `x5u`, `x5c`) and critical extensions (`crit`) this verifier does not
//! implement (RFC 7515 §4.1.11).

use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{clip, AuthFailure};

/// Longest `kid` accepted; key ids are short labels, never paths or documents.
const MAX_KID_LEN: usize = 256;

/// Header parameters that would let the token choose its own verification key. Refused rather
/// than ignored, so no later code can be tempted to use them.
const UNTRUSTED: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

/// The parts of the header that select a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Splits `token` into its three segments and reads the header.
pub(crate) fn parse(token: &str) -> Result<TokenHeader, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(head), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed("not three segments"));
    };
    let bytes = b64url_decode(head.as_bytes()).ok_or(AuthFailure::Malformed("header base64url"))?;
    let fields: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthFailure::Malformed("header is not a json object"))?;

    let alg = match fields.get("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(AuthFailure::Malformed("header has no alg")),
    };
    if alg.trim().eq_ignore_ascii_case("none") {
        return Err(AuthFailure::ForbiddenAlgorithm(clip(alg)));
    }
    // Exact, case-sensitive names (RFC 7518 §3.1): `hs256` is not `HS256`.
    let alg = Algorithm::from_str(alg).map_err(|_| AuthFailure::ForbiddenAlgorithm(clip(alg)))?;
    if let Some(name) = UNTRUSTED.iter().find(|name| fields.contains_key(**name)) {
        return Err(AuthFailure::UntrustedHeader(name));
    }
    let kid = match fields.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid.clone()),
        Some(Value::String(_)) => return Err(AuthFailure::Malformed("kid too long")),
        Some(_) => return Err(AuthFailure::Malformed("kid is not a string")),
    };
    if payload.is_empty() {
        return Err(AuthFailure::Malformed("empty payload"));
    }
    if signature.is_empty() {
        return Err(AuthFailure::Malformed("missing signature"));
    }
    Ok(TokenHeader { alg, kid })
}

/// Strict base64url without padding (RFC 7515 §2): other alphabets, padding and non-zero
/// trailing bits are refused, so each encoded form has exactly one decoding.
pub(crate) fn b64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in input {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last character.
    if acc != 0 {
        return None;
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// base64url without padding; used by tests to build hostile tokens.
#[cfg(test)]
pub(crate) fn b64url_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        format!("{}.e30.c2ln", b64url_encode(header.as_bytes()))
    }

    #[test]
    fn header_with_alg_and_kid_is_read() {
        let h = parse(&token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)).unwrap();
        assert_eq!(
            h,
            TokenHeader {
                alg: Algorithm::RS256,
                kid: Some("k1".into())
            }
        );
    }

    #[test]
    fn lowercase_algorithm_name_is_refused() {
        let err = parse(&token(r#"{"alg":"hs256"}"#)).unwrap_err();
        assert!(matches!(err, AuthFailure::ForbiddenAlgorithm(_)), "{err}");
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let err = parse(&token(r#"{"alg":"ES512"}"#)).unwrap_err();
        assert!(matches!(err, AuthFailure::ForbiddenAlgorithm(_)), "{err}");
    }

    #[test]
    fn padded_none_is_refused_as_none() {
        let err = parse(&token(r#"{"alg":" none "}"#)).unwrap_err();
        assert_eq!(err, AuthFailure::ForbiddenAlgorithm(" none ".into()));
    }

    #[test]
    fn missing_alg_is_malformed() {
        let err = parse(&token(r#"{"kid":"a"}"#)).unwrap_err();
        assert!(matches!(err, AuthFailure::Malformed(_)), "{err}");
    }

    #[test]
    fn crit_header_is_refused() {
        let err = parse(&token(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#)).unwrap_err();
        assert_eq!(err, AuthFailure::UntrustedHeader("crit"));
    }

    #[test]
    fn x5c_header_is_refused() {
        let err = parse(&token(r#"{"alg":"RS256","x5c":["MII"]}"#)).unwrap_err();
        assert_eq!(err, AuthFailure::UntrustedHeader("x5c"));
    }

    #[test]
    fn numeric_kid_is_malformed() {
        let err = parse(&token(r#"{"alg":"HS256","kid":7}"#)).unwrap_err();
        assert!(matches!(err, AuthFailure::Malformed(_)), "{err}");
    }

    #[test]
    fn header_that_is_a_json_array_is_malformed() {
        let err = parse(&token(r#"["alg","HS256"]"#)).unwrap_err();
        assert!(matches!(err, AuthFailure::Malformed(_)), "{err}");
    }

    #[test]
    fn padded_base64_is_refused() {
        assert_eq!(b64url_decode(b"YQ=="), None);
        assert_eq!(b64url_decode(b"YQ").unwrap(), b"a");
    }

    #[test]
    fn standard_alphabet_is_refused() {
        assert_eq!(b64url_decode(b"+/"), None);
    }

    #[test]
    fn non_zero_trailing_bits_are_refused() {
        // "YR" decodes to 'a' with a leftover bit set.
        assert_eq!(b64url_decode(b"YR"), None);
    }

    proptest::proptest! {
        #[test]
        fn base64url_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let encoded = b64url_encode(&bytes);
            proptest::prop_assert_eq!(b64url_decode(encoded.as_bytes()), Some(bytes));
        }

        #[test]
        fn header_parsing_never_panics(text in "\\PC{0,120}") {
            let _ = parse(&text);
            let _ = parse(&token(&text));
        }
    }
}
