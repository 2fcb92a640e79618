//! The dashboard's files under `/ui/`, built into the binary (docs/dashboard.md): the page,
//! its scripts and styles, and the vendored chart library. They load without a token (they
//! hold no data); every API call the page makes carries the token the user gives it. Each
//! answer carries a strict Content-Security-Policy (this origin only, no inline script)
//! and an ETag, so a browser revalidates instead of downloading again.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Only this origin's scripts, styles, images and API; no frames, no plug-ins, no forms
/// elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal $ct:literal;)*) => {
        static ASSETS: &[Asset] = &[$(Asset {
            name: $name,
            content_type: $ct,
            body: include_bytes!(concat!("ui/", $name)),
        }),*];
    };
}

assets! {
    "index.html" "text/html; charset=utf-8";
    "style.css" "text/css; charset=utf-8";
    "app.js" "text/javascript; charset=utf-8";
    "api.js" "text/javascript; charset=utf-8";
    "dom.js" "text/javascript; charset=utf-8";
    "chart.js" "text/javascript; charset=utf-8";
    "overview.js" "text/javascript; charset=utf-8";
    "tables.js" "text/javascript; charset=utf-8";
    "config.js" "text/javascript; charset=utf-8";
    "operations.js" "text/javascript; charset=utf-8";
    "uPlot.iife.min.js" "text/javascript; charset=utf-8";
    "uPlot.min.css" "text/css; charset=utf-8";
    "uPlot.LICENSE" "text/plain; charset=utf-8";
    "favicon.svg" "image/svg+xml";
}

/// The answer to `GET /ui/` (the page) or `GET /ui/{file}`.
pub(super) fn serve(path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let name = match path.trim_end_matches('/').strip_prefix("/ui") {
        Some("") => "index.html",
        Some(rest) => rest.trim_start_matches('/'),
        None => "",
    };
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return super::problem(StatusCode::NOT_FOUND, "no such dashboard file");
    };
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut r = Response::new(Full::new(if fresh {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    }));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidated on every load: the files change with the binary, their names do not.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, etag.clone());
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// Each file's ETag: a hash of its bytes, computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = crate::config::document::digest(a.body);
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                HeaderValue::from_str(&format!("\"{hex}\""))
                    .unwrap_or(HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_served_with_its_type_policy_and_etag_and_revalidates() {
        let r = serve("/ui/", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
        let etag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("/ui", &again).status(), StatusCode::NOT_MODIFIED);
        let js = serve("/ui/app.js", &HeaderMap::new());
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            serve("/ui/../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn every_file_the_page_names_is_served() {
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".html") || a.name.ends_with(".js"))
        {
            let text = std::str::from_utf8(a.body).unwrap();
            for part in text.split("/ui/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                if name.contains('.') {
                    assert!(
                        ASSETS.iter().any(|x| x.name == name),
                        "{} names /ui/{name}, which is not built in",
                        a.name
                    );
                }
            }
        }
    }
}
