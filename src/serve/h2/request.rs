//! The request of a HEADERS block: pseudo-header fields checked as RFC 9113 §8.3 asks
//! (present, once, before the regular fields, none unknown), regular fields checked
//! (lower-case names, no connection-specific fields, values without CR, LF, NUL or
//! surrounding whitespace, §8.2), and the `http::Request` built from them. A malformed
//! request is a stream error of type PROTOCOL_ERROR and never reaches the pipeline.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::hpack::Field;

/// Room for fields the proxy may add to the request's own map, as over HTTP/1.1.
const GATEWAY_FIELDS: usize = 2;

/// Why a header block is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed: RST_STREAM(PROTOCOL_ERROR).
    Malformed,
    /// Over `max_header_bytes`: answered 431.
    TooLarge,
}

/// A request's fields as they are decoded.
pub struct Head {
    method: Option<Method>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<PathAndQuery>,
    pub headers: HeaderMap,
    pub content_length: Option<u64>,
    regular_seen: bool,
    size: usize,
    max_size: usize,
    refusal: Option<Refusal>,
    /// A trailer section: no pseudo-header field at all.
    trailers: bool,
}

impl Head {
    pub fn new(max_size: usize, trailers: bool) -> Head {
        Head {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: if trailers {
                HeaderMap::new()
            } else {
                crate::spare_maps::take(8 + GATEWAY_FIELDS)
            },
            content_length: None,
            regular_seen: false,
            size: 0,
            max_size,
            refusal: None,
            trailers,
        }
    }

    fn refuse(&mut self, r: Refusal) {
        if self.refusal.is_none() {
            self.refusal = Some(r);
        }
    }

    /// Takes one decoded field.
    pub fn field(&mut self, f: Field<'_>) {
        self.size += f.name.len() + f.value.len() + 32;
        if self.size > self.max_size {
            self.refuse(Refusal::TooLarge);
        }
        if self.refusal.is_some() {
            return;
        }
        if f.name.first() == Some(&b':') {
            if self.regular_seen || self.trailers {
                return self.refuse(Refusal::Malformed);
            }
            self.pseudo(f.name, f.value);
            return;
        }
        self.regular_seen = true;
        self.regular(f);
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) {
        let ok = match name {
            b":method" if self.method.is_none() => Method::from_bytes(value)
                .map(|m| self.method = Some(m))
                .is_ok(),
            b":scheme" if self.scheme.is_none() => Scheme::try_from(value)
                .map(|s| self.scheme = Some(s))
                .is_ok(),
            b":authority" if self.authority.is_none() => {
                Authority::try_from(value)
                    // RFC 9113 §8.3.1: no userinfo.
                    .map(|a| self.authority = Some(a))
                    .is_ok()
                    && !value.contains(&b'@')
            }
            b":path" if self.path.is_none() => {
                !value.is_empty()
                    && PathAndQuery::try_from(value)
                        .map(|p| self.path = Some(p))
                        .is_ok()
            }
            _ => false,
        };
        if !ok {
            self.refuse(Refusal::Malformed);
        }
    }

    fn regular(&mut self, f: Field<'_>) {
        if f.name.iter().any(u8::is_ascii_uppercase) || !value_ok(f.value) {
            return self.refuse(Refusal::Malformed);
        }
        let Ok(name) = HeaderName::from_bytes(f.name) else {
            return self.refuse(Refusal::Malformed);
        };
        // §8.2.2: connection-specific fields; TE only as "trailers".
        let connection_specific = matches!(
            f.name,
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
        );
        if connection_specific || f.name == b"te" && f.value != b"trailers" {
            return self.refuse(Refusal::Malformed);
        }
        if name == http::header::CONTENT_LENGTH && !self.trailers {
            let n = std::str::from_utf8(f.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            match (n, self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return self.refuse(Refusal::Malformed),
            }
        }
        let Ok(mut value) = HeaderValue::from_bytes(f.value) else {
            return self.refuse(Refusal::Malformed);
        };
        value.set_sensitive(f.never_indexed);
        self.headers.append(name, value);
    }

    /// The trailer section's map.
    pub fn into_trailers(self) -> Result<HeaderMap, Refusal> {
        match self.refusal {
            Some(r) => Err(r),
            None => Ok(self.headers),
        }
    }

    /// The request, with `body`.
    pub fn into_request<B>(self, body: B) -> Result<Request<B>, Refusal> {
        if let Some(r) = self.refusal {
            return Err(r);
        }
        let method = self.method.ok_or(Refusal::Malformed)?;
        let uri = if method == Method::CONNECT {
            // §8.5: only :method and :authority.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Refusal::Malformed);
            }
            let authority = self.authority.ok_or(Refusal::Malformed)?;
            Uri::from(authority)
        } else {
            let scheme = self.scheme.ok_or(Refusal::Malformed)?;
            let path = self.path.ok_or(Refusal::Malformed)?;
            let mut parts = http::uri::Parts::default();
            if let Some(a) = self.authority {
                parts.scheme = Some(scheme);
                parts.authority = Some(a);
            }
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).map_err(|_| Refusal::Malformed)?
        };
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers;
        Ok(req)
    }
}

/// §8.2.1: no NUL, CR or LF, and no whitespace at either end.
fn value_ok(v: &[u8]) -> bool {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    !v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') && !edge(v.first()) && !edge(v.last())
}
