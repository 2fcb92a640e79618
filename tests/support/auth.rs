//! Keys, tokens and a local identity provider for the authentication tests: the library's own
//! test key generator and identity provider, included as they are.
#![allow(dead_code)]

#[path = "../../src/auth/jwt/testkeys.rs"]
pub mod testkeys;

#[path = "../../src/auth/jwks/idp.rs"]
pub mod idp;

pub mod header {
    /// base64url without padding, bit by bit.
    pub(crate) fn b64url_encode(input: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for &b in input {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 6 {
                bits -= 6;
                out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
            }
        }
        if bits > 0 {
            out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
        }
        out
    }
}
