//! Sticky sessions: a gateway-issued cookie pins a client to one target of a group.
//!
//! The cookie value is an HMAC-SHA256 of the target's address under the group's secret,
//! truncated to 128 bits and hex-encoded: it names a target without revealing its address,
//! and a client cannot forge a pin to a target it was never given. Without a configured
//! secret each process draws a random one, so pins last for the life of the process; set
//! `sticky.secret` to share pins between gateway instances and across restarts.

use std::net::SocketAddr;

use aws_lc_rs::hmac;
use http::header::{self, HeaderMap, HeaderValue};

use crate::config::model::Sticky;

pub struct StickySessions {
    cookie: String,
    /// `Set-Cookie` value per target for plain-text clients, prepared once.
    set_cookie: Vec<HeaderValue>,
    /// The same for clients on TLS connections.
    set_cookie_tls: Vec<HeaderValue>,
    /// Cookie value per target.
    tokens: Vec<String>,
}

impl StickySessions {
    pub fn new(s: &Sticky, group: &str, targets: &[SocketAddr]) -> Self {
        let key_bytes: Vec<u8> = match &s.secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => (0..32).map(|_| fastrand::u8(..)).collect(),
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        let tokens: Vec<String> = targets
            .iter()
            .map(|t| {
                let tag = hmac::sign(&key, format!("{group}\n{t}").as_bytes());
                tag.as_ref()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        let max_age = s
            .ttl
            .map(|t| format!("; Max-Age={}", t.as_secs()))
            .unwrap_or_default();
        // SameSite=None is dropped by browsers without Secure, so it always has it.
        let secure_on = |tls: bool| s.same_site == "None" || s.secure.unwrap_or(tls);
        let cookies = |tls: bool| {
            let secure = if secure_on(tls) { "; Secure" } else { "" };
            tokens
                .iter()
                .map(|t| {
                    let v = format!(
                        "{}={t}; Path=/; HttpOnly{secure}; SameSite={}{max_age}",
                        s.cookie, s.same_site
                    );
                    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
                })
                .collect::<Vec<_>>()
        };
        StickySessions {
            cookie: s.cookie.clone(),
            set_cookie: cookies(false),
            set_cookie_tls: cookies(true),
            tokens,
        }
    }

    /// The target the request's cookie pins, if it names one of this group's targets.
    pub fn pinned(&self, headers: &HeaderMap) -> Option<usize> {
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == self.cookie).then_some(value.trim())
            })?;
        self.tokens.iter().position(|t| t == value)
    }

    /// The `Set-Cookie` value that pins a client to target `index`; `tls` says whether the
    /// client's connection is TLS.
    pub fn set_cookie(&self, index: usize, tls: bool) -> Option<&HeaderValue> {
        match tls {
            true => self.set_cookie_tls.get(index),
            false => self.set_cookie.get(index),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions(secret: Option<&str>) -> StickySessions {
        sessions_with(secret, None, "Lax")
    }

    fn sessions_with(
        secret: Option<&str>,
        secure: Option<bool>,
        same_site: &'static str,
    ) -> StickySessions {
        let s = Sticky {
            cookie: "fg".into(),
            ttl: None,
            secret: secret.map(str::to_owned),
            secure,
            same_site,
        };
        let targets: Vec<SocketAddr> = vec![
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ];
        StickySessions::new(&s, "api", &targets)
    }

    fn cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_issued_cookie_pins_its_target() {
        let s = sessions(Some("k"));
        let set = s.set_cookie(1, false).unwrap().to_str().unwrap().to_owned();
        let pair = set.split(';').next().unwrap();
        assert_eq!(s.pinned(&cookie(&format!("a=b; {pair}"))), Some(1));
    }

    #[test]
    fn the_cookie_reveals_no_address() {
        let s = sessions(Some("k"));
        let set = s.set_cookie(0, false).unwrap().to_str().unwrap();
        assert!(!set.contains("10.0.0.1"));
        assert!(!set.contains(":80"));
    }

    #[test]
    fn an_unknown_value_pins_nothing() {
        let s = sessions(Some("k"));
        assert_eq!(s.pinned(&cookie("fg=0123")), None);
        assert_eq!(s.pinned(&HeaderMap::new()), None);
    }

    #[test]
    fn instances_sharing_a_secret_agree_on_pins() {
        let a = sessions(Some("shared"));
        let b = sessions(Some("shared"));
        assert_eq!(a.set_cookie(0, false), b.set_cookie(0, false));
        assert_ne!(
            sessions(Some("other")).set_cookie(0, false),
            a.set_cookie(0, false)
        );
    }

    #[test]
    fn the_cookie_is_secure_on_tls_by_default_and_as_configured_otherwise() {
        let attrs = |s: &StickySessions, tls: bool| {
            let v = s.set_cookie(0, tls).unwrap().to_str().unwrap().to_owned();
            v.split("; ").skip(1).map(str::to_owned).collect::<Vec<_>>()
        };
        let auto = sessions_with(Some("k"), None, "Lax");
        assert_eq!(
            attrs(&auto, true),
            ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"]
        );
        assert_eq!(attrs(&auto, false), ["Path=/", "HttpOnly", "SameSite=Lax"]);
        let always = sessions_with(Some("k"), Some(true), "Strict");
        assert_eq!(
            attrs(&always, false),
            ["Path=/", "HttpOnly", "Secure", "SameSite=Strict"]
        );
        let never = sessions_with(Some("k"), Some(false), "Lax");
        assert!(!attrs(&never, true).contains(&"Secure".to_owned()));
        let cross_site = sessions_with(Some("k"), None, "None");
        assert!(attrs(&cross_site, false).contains(&"Secure".to_owned()));
        assert!(attrs(&cross_site, false).contains(&"SameSite=None".to_owned()));
    }
}
