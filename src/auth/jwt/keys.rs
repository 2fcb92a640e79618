//! Turns configured key material (secret, PEM, JWK) and JWKS entries into verification keys,
//! each pinned to exactly one algorithm and checked once at load (size, curve, point on the
//! curve), so the request path never meets a key it cannot use.

use std::str::FromStr;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
    ED25519, RSA_PKCS1_2048_8192_SHA256,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

use super::header::b64url_decode;
use super::{KeyMaterial, KeySpec};

/// Smallest RSA modulus accepted (NIST SP 800-131A; aws-lc refuses smaller ones anyway).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus aws-lc verifies.
const MAX_RSA_BITS: usize = 8192;

/// A verification key usable for exactly one algorithm.
#[derive(Clone)]
pub(crate) struct PinnedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PinnedKey {
    pub(crate) fn from_spec(spec: &KeySpec) -> Result<PinnedKey, String> {
        match &spec.material {
            KeyMaterial::Secret(secret) => {
                let key = hmac_key(spec.alg, secret)?;
                Ok(PinnedKey::pinned(spec.kid.clone(), spec.alg, key))
            }
            KeyMaterial::Pem(pem) => {
                let key = pem_key(spec.alg, pem)?;
                Ok(PinnedKey::pinned(spec.kid.clone(), spec.alg, key))
            }
            KeyMaterial::Jwk(jwk) => {
                let mut key = PinnedKey::from_jwk(jwk, Some(spec.alg), &[], true)?;
                if spec.kid.is_some() {
                    key.kid = spec.kid.clone();
                }
                Ok(key)
            }
        }
    }

    /// Builds a key from one JWK. `pinned` is the configured algorithm (a JWK `alg`, if any,
    /// must agree); without it the algorithm comes from `alg` or, where unambiguous, from the
    /// key type. `allowed` (when non-empty) limits the algorithms; `symmetric` admits `oct` keys.
    pub(crate) fn from_jwk(
        jwk: &Value,
        pinned: Option<Algorithm>,
        allowed: &[Algorithm],
        symmetric: bool,
    ) -> Result<PinnedKey, String> {
        let Value::Object(fields) = jwk else {
            return Err("jwk is not a json object".into());
        };
        let text = |name: &str| -> Result<Option<&str>, String> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("jwk {name} is not a string")),
            }
        };
        let kty = text("kty")?.ok_or("jwk has no kty")?;
        if let Some(usage) = text("use")? {
            if usage != "sig" {
                return Err(format!("jwk use is {usage:?}, not \"sig\""));
            }
        }
        if let Some(ops) = fields.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err("jwk key_ops does not include \"verify\"".into());
            }
        }
        let declared = match text("alg")? {
            Some(name) => Some(
                Algorithm::from_str(name)
                    .map_err(|_| format!("jwk alg {name:?} is not supported"))?,
            ),
            None => None,
        };
        if let (Some(pinned), Some(declared)) = (pinned, declared) {
            if pinned != declared {
                return Err(format!(
                    "jwk alg {declared:?} differs from the configured {pinned:?}"
                ));
            }
        }
        let crv = text("crv")?;
        let alg = match pinned.or(declared) {
            Some(alg) => alg,
            None => infer_algorithm(kty, crv, allowed)?,
        };
        if !allowed.is_empty() && !allowed.contains(&alg) {
            return Err(format!("algorithm {alg:?} is not allowed"));
        }
        let field = |name: &str| -> Result<Vec<u8>, String> {
            let value = text(name)?.ok_or_else(|| format!("jwk has no {name}"))?;
            b64url_decode(value.as_bytes()).ok_or_else(|| format!("jwk {name} is not base64url"))
        };
        let key = match (kty, alg.family()) {
            ("RSA", AlgorithmFamily::Rsa) => rsa_key(&field("n")?, &field("e")?)?,
            ("EC", AlgorithmFamily::Ec) => {
                check_curve(alg, crv)?;
                let mut point = vec![0x04];
                point.extend_from_slice(&field("x")?);
                point.extend_from_slice(&field("y")?);
                ec_key(alg, &point)?
            }
            ("OKP", AlgorithmFamily::Ed) => {
                if crv != Some("Ed25519") {
                    return Err(format!("okp curve {crv:?} is not Ed25519"));
                }
                ed_key(&field("x")?)?
            }
            ("oct", AlgorithmFamily::Hmac) if symmetric => hmac_key(alg, &field("k")?)?,
            ("oct", AlgorithmFamily::Hmac) => {
                return Err("symmetric keys are not accepted from a key set url".into())
            }
            (kty, _) => return Err(format!("jwk kty {kty:?} cannot be used with {alg:?}")),
        };
        Ok(PinnedKey::pinned(text("kid")?.map(str::to_owned), alg, key))
    }

    fn pinned(kid: Option<String>, alg: Algorithm, key: DecodingKey) -> PinnedKey {
        debug_assert_eq!(
            key.family(),
            alg.family(),
            "key family matches its algorithm"
        );
        PinnedKey { kid, alg, key }
    }

    /// Whether this key may check a token with header `alg` and `kid`. The algorithm must be
    /// the pinned one; a key without a kid matches any kid, a token without a kid any key.
    pub(crate) fn matches(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.alg == alg
            && match (&self.kid, kid) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.key
    }

    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn alg(&self) -> Algorithm {
        self.alg
    }
}

/// The algorithm of a JWK without `alg`, only where the key type leaves no choice.
fn infer_algorithm(
    kty: &str,
    crv: Option<&str>,
    allowed: &[Algorithm],
) -> Result<Algorithm, String> {
    match (kty, crv) {
        ("EC", Some("P-256")) => Ok(Algorithm::ES256),
        ("EC", Some("P-384")) => Ok(Algorithm::ES384),
        ("OKP", Some("Ed25519")) => Ok(Algorithm::EdDSA),
        ("RSA", _) => {
            let mut rsa = allowed
                .iter()
                .filter(|a| a.family() == AlgorithmFamily::Rsa);
            match (rsa.next(), rsa.next()) {
                (Some(alg), None) => Ok(*alg),
                _ => Err("rsa jwk without alg needs exactly one allowed rsa algorithm".into()),
            }
        }
        _ => Err(format!("no algorithm for jwk kty {kty:?} crv {crv:?}")),
    }
}

fn check_curve(alg: Algorithm, crv: Option<&str>) -> Result<(), String> {
    let expected = if alg == Algorithm::ES256 {
        "P-256"
    } else {
        "P-384"
    };
    if crv == Some(expected) {
        Ok(())
    } else {
        Err(format!("ec curve {crv:?} does not match {alg:?}"))
    }
}

fn hmac_key(alg: Algorithm, secret: &[u8]) -> Result<DecodingKey, String> {
    // RFC 7518 §3.2: the key must be at least as long as the hash output.
    let min = match alg {
        Algorithm::HS256 => 32,
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => return Err(format!("a secret cannot be used with {alg:?}")),
    };
    if secret.len() < min {
        return Err(format!(
            "secret of {} bytes is shorter than the {min} {alg:?} needs",
            secret.len()
        ));
    }
    Ok(DecodingKey::from_secret(secret))
}

fn pem_key(alg: Algorithm, pem: &str) -> Result<DecodingKey, String> {
    let pem = pem.trim_start();
    let spki = pem.starts_with("-----BEGIN PUBLIC KEY-----");
    let pkcs1 = pem.starts_with("-----BEGIN RSA PUBLIC KEY-----");
    if !spki && !pkcs1 {
        // Private keys and certificates are refused: a verifier needs only the public key.
        return Err("pem is not a PUBLIC KEY or RSA PUBLIC KEY block".into());
    }
    let bad = |e: jsonwebtoken::errors::Error| format!("pem does not hold a {alg:?} key: {e}");
    match alg.family() {
        AlgorithmFamily::Rsa => {
            let der = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(bad)?;
            let der = der.try_get_as_bytes().map_err(bad)?;
            let public = aws_lc_rs::rsa::PublicKey::from_der(der)
                .map_err(|e| format!("pem rsa key rejected: {e}"))?;
            rsa_key(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
            )
        }
        AlgorithmFamily::Ec if spki => {
            let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?;
            ec_key(alg, key.try_get_as_bytes().map_err(bad)?)
        }
        AlgorithmFamily::Ed if spki => {
            let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(bad)?;
            ed_key(key.try_get_as_bytes().map_err(bad)?)
        }
        AlgorithmFamily::Hmac => Err(format!("a pem key cannot be used with {alg:?}")),
        _ => Err(format!("RSA PUBLIC KEY pem cannot be used with {alg:?}")),
    }
}

fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "rsa modulus of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
        ));
    }
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| format!("rsa key rejected: {e}"))?;
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn ec_key(alg: Algorithm, point: &[u8]) -> Result<DecodingKey, String> {
    let verify = if alg == Algorithm::ES256 {
        &ECDSA_P256_SHA256_FIXED
    } else {
        &ECDSA_P384_SHA384_FIXED
    };
    // Parsing checks the point is on the curve of that size.
    ParsedPublicKey::new(verify, point).map_err(|e| format!("ec key rejected for {alg:?}: {e}"))?;
    Ok(DecodingKey::from_ec_der(point))
}

fn ed_key(public: &[u8]) -> Result<DecodingKey, String> {
    ParsedPublicKey::new(&ED25519, public).map_err(|e| format!("ed25519 key rejected: {e}"))?;
    Ok(DecodingKey::from_ed_der(public))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::super::testkeys;
    use super::*;

    fn spec(alg: Algorithm, material: KeyMaterial) -> KeySpec {
        KeySpec {
            kid: None,
            alg,
            material,
        }
    }

    #[test]
    fn short_hmac_secret_is_rejected() {
        let err = PinnedKey::from_spec(&spec(Algorithm::HS256, KeyMaterial::Secret(vec![1; 31])))
            .unwrap_err();
        assert!(err.contains("31 bytes"), "{err}");
    }

    #[test]
    fn secret_for_rsa_algorithm_is_rejected() {
        let err = PinnedKey::from_spec(&spec(Algorithm::RS256, KeyMaterial::Secret(vec![1; 64])))
            .unwrap_err();
        assert!(err.contains("cannot be used"), "{err}");
    }

    #[test]
    fn pem_key_for_hmac_is_rejected() {
        let pem = testkeys::rsa().public_pem.clone();
        let err = PinnedKey::from_spec(&spec(Algorithm::HS256, KeyMaterial::Pem(pem))).unwrap_err();
        assert!(err.contains("HS256"), "{err}");
    }

    #[test]
    fn private_key_pem_is_rejected() {
        let pem = testkeys::rsa().private_pem.clone();
        let err = PinnedKey::from_spec(&spec(Algorithm::RS256, KeyMaterial::Pem(pem))).unwrap_err();
        assert!(err.contains("PUBLIC KEY"), "{err}");
    }

    #[test]
    fn p256_pem_for_es384_is_rejected() {
        let pem = testkeys::ec256().public_pem.clone();
        assert!(PinnedKey::from_spec(&spec(Algorithm::ES384, KeyMaterial::Pem(pem))).is_err());
    }

    #[test]
    fn ec_pem_for_rsa_algorithm_is_rejected() {
        let pem = testkeys::ec256().public_pem.clone();
        assert!(PinnedKey::from_spec(&spec(Algorithm::RS256, KeyMaterial::Pem(pem))).is_err());
    }

    #[test]
    fn small_rsa_modulus_is_rejected() {
        let jwk = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
        let err = PinnedKey::from_jwk(&jwk, Some(Algorithm::RS256), &[], false).unwrap_err();
        assert!(err.contains("bits"), "{err}");
    }

    #[test]
    fn ec_point_off_the_curve_is_rejected() {
        let zeros = super::super::header::b64url_encode(&[0; 32]);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": zeros, "y": zeros});
        assert!(PinnedKey::from_jwk(&jwk, None, &[], false).is_err());
    }

    #[test]
    fn jwk_with_encryption_use_is_rejected() {
        let mut jwk = testkeys::ec256().jwk.clone();
        jwk["use"] = json!("enc");
        let err = PinnedKey::from_jwk(&jwk, None, &[], false).unwrap_err();
        assert!(err.contains("enc"), "{err}");
    }

    #[test]
    fn jwk_alg_conflicting_with_configuration_is_rejected() {
        let mut jwk = testkeys::rsa().jwk.clone();
        jwk["alg"] = json!("RS256");
        assert!(PinnedKey::from_jwk(&jwk, Some(Algorithm::PS256), &[], false).is_err());
    }

    #[test]
    fn ec_jwk_without_alg_takes_it_from_the_curve() {
        let mut jwk = testkeys::ec384().jwk.clone();
        jwk.as_object_mut().unwrap().remove("alg");
        let key = PinnedKey::from_jwk(&jwk, None, &[], false).unwrap();
        assert_eq!(key.alg(), Algorithm::ES384);
    }

    #[test]
    fn okp_jwk_without_alg_is_eddsa() {
        let mut jwk = testkeys::ed25519().jwk.clone();
        jwk.as_object_mut().unwrap().remove("alg");
        let key = PinnedKey::from_jwk(&jwk, None, &[], false).unwrap();
        assert_eq!(key.alg(), Algorithm::EdDSA);
    }

    #[test]
    fn rsa_jwk_without_alg_needs_one_allowed_rsa_algorithm() {
        let mut jwk = testkeys::rsa().jwk.clone();
        jwk.as_object_mut().unwrap().remove("alg");
        assert!(PinnedKey::from_jwk(&jwk, None, &[], false).is_err());
        let both = [Algorithm::RS256, Algorithm::PS256];
        assert!(PinnedKey::from_jwk(&jwk, None, &both, false).is_err());
        let one = [Algorithm::RS256, Algorithm::ES256];
        let key = PinnedKey::from_jwk(&jwk, None, &one, false).unwrap();
        assert_eq!(key.alg(), Algorithm::RS256);
    }

    #[test]
    fn oct_jwk_from_a_key_set_is_rejected() {
        let jwk = json!({"kty": "oct", "alg": "HS256", "k": super::super::header::b64url_encode(&[7; 32])});
        assert!(PinnedKey::from_jwk(&jwk, None, &[], false).is_err());
        assert!(PinnedKey::from_jwk(&jwk, None, &[], true).is_ok());
    }

    #[test]
    fn key_without_kid_matches_any_kid_of_its_algorithm() {
        let key = PinnedKey::from_spec(&spec(Algorithm::HS256, KeyMaterial::Secret(vec![1; 32])))
            .unwrap();
        assert!(key.matches(Algorithm::HS256, Some("anything")));
        assert!(!key.matches(Algorithm::HS384, None));
    }

    #[test]
    fn key_with_kid_matches_only_that_kid() {
        let mut s = spec(Algorithm::HS256, KeyMaterial::Secret(vec![1; 32]));
        s.kid = Some("a".into());
        let key = PinnedKey::from_spec(&s).unwrap();
        assert!(key.matches(Algorithm::HS256, Some("a")));
        assert!(!key.matches(Algorithm::HS256, Some("A")));
        assert!(key.matches(Algorithm::HS256, None));
    }
}
