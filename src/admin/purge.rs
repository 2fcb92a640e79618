//! `POST /cache/purge`: removes stored responses by exact URL, URL prefix, surrogate key, or
//! all of them. The body is one JSON object: `{"url": "http://host/path?query"}`,
//! `{"prefix": "http://host/path/"}`, `{"surrogate_key": "key"}` or `{"all": true}`. URLs are
//! normalised as cache keys are, so any spelling of a URL purges its entries. The answer is
//! `{"purged": N}`, the number of stored responses removed (in memory here, or in the Redis
//! tier when it held more). With a Redis tier the purge also removes the tier's copies and is
//! published to every instance; if Redis fails, the answer is 502 after the local purge.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::reply;
use crate::cache::key::{normalize_url, Target};
use crate::cache::service::Purge;
use crate::runtime::Shared;

/// Largest purge request body.
const MAX_BODY: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    surrogate_key: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn purge(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("the purge request body could not be read (64 KiB at most)"),
    };
    let parsed: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(&format!("invalid purge request: {e}")),
    };
    let purge = match to_purge(parsed) {
        Ok(p) => p,
        Err(why) => return bad(why),
    };
    let mut purged = match shared.kept.caches.store() {
        Some(store) => purge.apply(&store),
        None => 0,
    };
    if let Some(tier) = shared.kept.caches.shared_tier() {
        match purge.apply_shared(&tier).await {
            Ok(n) => purged = purged.max(n),
            Err(e) => {
                return reply(
                    StatusCode::BAD_GATEWAY,
                    "text/plain",
                    format!("purged {purged} locally; the Redis tier failed: {e}\n").into(),
                )
            }
        }
    }
    shared.metrics.cache.purged(purged);
    reply(
        StatusCode::OK,
        "application/json",
        format!("{{\"purged\":{purged}}}\n").into(),
    )
}

fn to_purge(p: PurgeRequest) -> Result<Purge, &'static str> {
    let given = usize::from(p.url.is_some())
        + usize::from(p.prefix.is_some())
        + usize::from(p.surrogate_key.is_some())
        + usize::from(p.all);
    if given != 1 {
        return Err("give exactly one of url, prefix, surrogate_key, all");
    }
    if let Some(url) = p.url {
        return normalized(&url).map(Purge::Url);
    }
    if let Some(prefix) = p.prefix {
        return normalized(&prefix).map(Purge::Prefix);
    }
    if let Some(key) = p.surrogate_key {
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err("surrogate_key must be one non-empty key");
        }
        return Ok(Purge::Surrogate(key));
    }
    Ok(Purge::All)
}

/// An absolute http(s) URL in the normalised form of cache keys.
fn normalized(url: &str) -> Result<String, &'static str> {
    const NEEDS: &str = "url and prefix must be absolute http or https URLs";
    let uri: http::Uri = url.parse().map_err(|_| NEEDS)?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(NEEDS),
    };
    let authority = uri.authority().ok_or(NEEDS)?.as_str();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    normalize_url(Target {
        scheme,
        authority,
        path_and_query,
    })
    .map_err(|_| NEEDS)
}

fn bad(why: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_REQUEST,
        "text/plain",
        format!("{why}\n").into(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<Purge, &'static str> {
        to_purge(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn url_is_normalised_like_a_cache_key() {
        assert_eq!(
            request(r#"{"url": "HTTP://Example.com:80/a?b=2&a=1"}"#),
            Ok(Purge::Url("http://example.com/a?a=1&b=2".into()))
        );
    }

    #[test]
    fn exactly_one_kind_is_required() {
        assert!(request(r#"{"url": "http://a/", "all": true}"#).is_err());
        assert!(request("{}").is_err());
    }

    #[test]
    fn relative_urls_are_refused() {
        assert!(request(r#"{"prefix": "/only/a/path"}"#).is_err());
    }

    #[test]
    fn all_purges_everything() {
        assert_eq!(request(r#"{"all": true}"#), Ok(Purge::All));
    }
}
