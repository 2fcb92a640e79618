//! Logins in progress: the `state`, `nonce` and PKCE verifier (RFC 7636, S256) of each
//! authorization request, kept until its callback comes back (once) or it expires, and the
//! authorization URL that starts it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// How long a login may take at the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Logins in progress kept at most; past it the oldest expired ones go first, then new
/// logins are refused (a flood of unauthenticated requests must not grow memory).
const MAX_PENDING: usize = 100_000;

/// One authorization request waiting for its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub nonce: String,
    pub verifier: String,
    /// Path and query of the request that started the login (always a local path).
    pub original: String,
    pub redirect_uri: String,
    /// In a shared store the key's expiry bounds the login instead.
    #[serde(skip, default = "Instant::now")]
    started: Instant,
}

/// Logins in progress, by `state`.
#[derive(Default)]
pub struct Logins {
    pending: Mutex<HashMap<String, PendingLogin>>,
}

/// What starting a login produced.
pub struct Started {
    pub state: String,
    pub url: String,
}

/// A new login: its `state`, authorization URL and what its callback needs; `None` without
/// randomness.
pub fn begin(
    authorization_endpoint: &str,
    client_id: &str,
    scopes: &str,
    redirect_uri: String,
    original: String,
) -> Option<(Started, PendingLogin)> {
    let state = random_token()?;
    let nonce = random_token()?;
    let verifier = random_token()?;
    let challenge = pkce_challenge(&verifier);
    let sep = if authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{authorization_endpoint}{sep}response_type=code&client_id={}&redirect_uri={}\
         &scope={}&state={state}&nonce={nonce}&code_challenge={challenge}\
         &code_challenge_method=S256",
        form_encode(client_id),
        form_encode(&redirect_uri),
        form_encode(scopes),
    );
    let login = PendingLogin {
        nonce,
        verifier,
        original,
        redirect_uri,
        started: Instant::now(),
    };
    Some((Started { state, url }, login))
}

impl Logins {
    /// Keeps a login until its callback; false when too many are in progress.
    pub fn keep(&self, state: String, login: PendingLogin) -> bool {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| now.duration_since(p.started) < LOGIN_TTL);
            if pending.len() >= MAX_PENDING {
                return false;
            }
        }
        pending.insert(state, login);
        true
    }

    /// Takes the login of `state` (a state is good for one callback), if it has not expired.
    pub fn take(&self, state: &str) -> Option<PendingLogin> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let login = pending.remove(state)?;
        (login.started.elapsed() < LOGIN_TTL).then_some(login)
    }
}

/// 32 random bytes, base64url without padding (43 characters); `None` without randomness.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 code challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// Decodes one form-encoded (or percent-encoded) query value; `None` when not UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of parameter `name` in a query or form body.
pub fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| form_decode(v)).flatten()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_is_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            pkce_challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn form_values_round_trip() {
        let s = "a b&c=d/é%";
        assert_eq!(form_decode(&form_encode(s)).unwrap(), s);
        assert_eq!(param("x=1&state=a%2Fb&y", "state").unwrap(), "a/b");
        assert!(param("x=%zz", "x").is_none());
        assert!(param("x=%4", "x").is_none());
    }

    #[test]
    fn a_state_is_good_for_one_callback() {
        let logins = Logins::default();
        let (s, login) = begin(
            "http://idp/auth",
            "gw",
            "openid",
            "http://gw/cb".into(),
            "/".into(),
        )
        .unwrap();
        assert!(s.url.contains("code_challenge_method=S256"));
        assert!(logins.keep(s.state.clone(), login));
        assert!(logins.take(&s.state).is_some());
        assert!(logins.take(&s.state).is_none());
    }
}
