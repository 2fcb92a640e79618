//! Which stored URIs an unsafe request invalidates (RFC 9111 §4.4).
//!
//! A 2xx or 3xx answer to a method that is not known to be safe invalidates the target
//! URI, and the `Location` and `Content-Location` URIs when they have the target's origin
//! (other origins are never touched: that would let one site purge another). Relative
//! references are resolved against the target URI (RFC 3986 §5.2). The URLs come out in
//! the normalised form of [`super::key::normalize_url`], for purge-by-URL.

use http::header::{HeaderMap, HeaderName, CONTENT_LOCATION, LOCATION};
use http::{Method, StatusCode};

use super::key::{normalize_authority, normalize_url, Target};

/// A resolved absolute URI, split as the key wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    scheme: String,
    authority: String,
    path_and_query: String,
}

/// Parts of a URI reference (RFC 3986 §4.1); the fragment is dropped.
#[derive(Debug, Clone, Copy)]
struct Reference<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

/// Whether a method is safe (RFC 9110 §9.2.1); unknown methods are not.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The normalised URLs to invalidate after `method` on `target` got `status` and
/// `response`; empty when nothing is invalidated.
pub fn invalidation_urls(
    method: &Method,
    status: StatusCode,
    target: Target<'_>,
    response: &HeaderMap,
) -> Vec<String> {
    let non_error = status.is_success() || status.is_redirection();
    if is_safe_method(method) || !non_error {
        return Vec::new();
    }
    let Ok(target_url) = normalize_url(target) else {
        return Vec::new();
    };
    let Some(target_origin) = origin(target.scheme, target.authority) else {
        return vec![target_url];
    };
    let mut urls = vec![target_url];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(resolved) = header_reference(response, &name).and_then(|r| resolve(target, r))
        else {
            continue;
        };
        if origin(&resolved.scheme, &resolved.authority).as_ref() != Some(&target_origin) {
            continue;
        }
        let url = normalize_url(Target {
            scheme: &resolved.scheme,
            authority: &resolved.authority,
            path_and_query: &resolved.path_and_query,
        });
        if let Ok(url) = url {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    urls
}

/// `(scheme, host[:port])` normalised, or `None` if the authority is unusable.
fn origin(scheme: &str, authority: &str) -> Option<(String, String)> {
    let scheme = scheme.to_ascii_lowercase();
    let authority = normalize_authority(&scheme, authority).ok()?;
    Some((scheme, authority))
}

/// The single value of a URI-valued field; several lines or non-ASCII bytes mean none.
fn header_reference<'a>(response: &'a HeaderMap, name: &HeaderName) -> Option<Reference<'a>> {
    let mut lines = response.get_all(name).iter();
    let value = lines.next()?.to_str().ok()?.trim();
    if lines.next().is_some() || value.is_empty() || value.contains([' ', '\t']) {
        return None;
    }
    Some(parse_reference(value))
}

fn parse_reference(value: &str) -> Reference<'_> {
    let value = value.split_once('#').map_or(value, |(before, _)| before);
    let (scheme, rest) = match value.find([':', '/', '?']) {
        Some(i) if value.as_bytes()[i] == b':' && is_scheme(&value[..i]) => {
            (Some(&value[..i]), &value[i + 1..])
        }
        _ => (None, value),
    };
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    Reference {
        scheme,
        authority,
        path,
        query,
    }
}

fn is_scheme(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// RFC 3986 §5.2.2: resolves `reference` against the target URI.
fn resolve(base: Target<'_>, reference: Reference<'_>) -> Option<Resolved> {
    let (base_path, base_query) = match base.path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base.path_and_query, None),
    };
    let (scheme, authority, path, query) = match reference {
        Reference {
            scheme: Some(scheme),
            authority: Some(authority),
            ..
        } => (
            scheme,
            authority,
            remove_dot_segments(reference.path),
            reference.query,
        ),
        // `scheme:path` without authority (e.g. `mailto:`, `urn:`) has no origin to share.
        Reference {
            scheme: Some(_), ..
        } => return None,
        Reference {
            authority: Some(authority),
            ..
        } => (
            base.scheme,
            authority,
            remove_dot_segments(reference.path),
            reference.query,
        ),
        Reference { path: "", .. } => (
            base.scheme,
            base.authority,
            base_path.to_owned(),
            reference.query.or(base_query),
        ),
        Reference { path, .. } if path.starts_with('/') => (
            base.scheme,
            base.authority,
            remove_dot_segments(path),
            reference.query,
        ),
        Reference { path, .. } => {
            let merged = match base_path.rfind('/') {
                Some(slash) => format!("{}{path}", &base_path[..=slash]),
                None => format!("/{path}"),
            };
            (
                base.scheme,
                base.authority,
                remove_dot_segments(&merged),
                reference.query,
            )
        }
    };
    let mut path_and_query = path;
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Some(Resolved {
        scheme: scheme.to_owned(),
        authority: authority.to_owned(),
        path_and_query,
    })
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            let cut = output.rfind('/').unwrap_or(0);
            output.truncate(cut);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use proptest::prelude::*;

    const TARGET: Target<'static> = Target {
        scheme: "https",
        authority: "api.example",
        path_and_query: "/users/42?x=1",
    };

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    fn urls(method: Method, status: u16, response: &HeaderMap) -> Vec<String> {
        invalidation_urls(
            &method,
            StatusCode::from_u16(status).unwrap(),
            TARGET,
            response,
        )
    }

    #[test]
    fn successful_post_invalidates_the_target() {
        assert_eq!(
            urls(Method::POST, 200, &HeaderMap::new()),
            ["https://api.example/users/42?x=1"]
        );
    }

    #[test]
    fn redirect_answer_also_invalidates() {
        assert_eq!(urls(Method::DELETE, 303, &HeaderMap::new()).len(), 1);
    }

    #[test]
    fn error_answer_invalidates_nothing() {
        assert!(urls(Method::PUT, 404, &HeaderMap::new()).is_empty());
        assert!(urls(Method::PUT, 500, &HeaderMap::new()).is_empty());
    }

    #[test]
    fn safe_methods_invalidate_nothing() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(urls(method, 200, &HeaderMap::new()).is_empty());
        }
    }

    #[test]
    fn unknown_methods_count_as_unsafe() {
        let method = Method::from_bytes(b"PURGEALL").unwrap();
        assert_eq!(urls(method, 204, &HeaderMap::new()).len(), 1);
    }

    #[test]
    fn same_origin_location_is_invalidated() {
        let got = urls(
            Method::POST,
            201,
            &with(LOCATION, "https://API.example:443/users/43"),
        );
        assert_eq!(
            got,
            [
                "https://api.example/users/42?x=1",
                "https://api.example/users/43"
            ]
        );
    }

    #[test]
    fn relative_location_is_resolved_against_the_target() {
        let got = urls(Method::POST, 201, &with(LOCATION, "../groups/7?y=2#frag"));
        assert_eq!(got[1], "https://api.example/groups/7?y=2");
    }

    #[test]
    fn absolute_path_content_location_is_invalidated() {
        let got = urls(
            Method::PUT,
            200,
            &with(CONTENT_LOCATION, "/users/42/profile"),
        );
        assert_eq!(got[1], "https://api.example/users/42/profile");
    }

    #[test]
    fn query_only_reference_keeps_the_target_path() {
        let got = urls(Method::PATCH, 200, &with(LOCATION, "?page=2"));
        assert_eq!(got[1], "https://api.example/users/42?page=2");
    }

    #[test]
    fn cross_origin_location_is_not_invalidated() {
        let got = urls(
            Method::POST,
            201,
            &with(LOCATION, "https://evil.example/users/43"),
        );
        assert_eq!(got, ["https://api.example/users/42?x=1"]);
    }

    #[test]
    fn other_scheme_or_port_is_another_origin() {
        assert_eq!(
            urls(Method::POST, 201, &with(LOCATION, "http://api.example/a")).len(),
            1
        );
        assert_eq!(
            urls(
                Method::POST,
                201,
                &with(LOCATION, "https://api.example:8443/a")
            )
            .len(),
            1
        );
        assert_eq!(
            urls(Method::POST, 201, &with(LOCATION, "//other.example/a")).len(),
            1
        );
    }

    #[test]
    fn location_equal_to_target_is_listed_once() {
        assert_eq!(
            urls(Method::PUT, 200, &with(LOCATION, "/users/42?x=1")).len(),
            1
        );
    }

    #[test]
    fn unusable_locations_are_skipped() {
        assert_eq!(
            urls(Method::POST, 201, &with(LOCATION, "mailto:a@b")).len(),
            1
        );
        assert_eq!(urls(Method::POST, 201, &with(LOCATION, "/a b")).len(), 1);
        assert_eq!(
            urls(
                Method::POST,
                201,
                &with(LOCATION, "https://u@api.example/a")
            )
            .len(),
            1
        );
    }

    #[test]
    fn dot_segments_are_removed_during_resolution() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
        assert_eq!(remove_dot_segments("/.."), "/");
    }

    proptest! {
        #[test]
        fn resolution_never_panics(reference in "\\PC{0,40}", base in "/[a-z/.]{0,20}") {
            let target = Target { scheme: "https", authority: "h", path_and_query: &base };
            let mut response = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&reference) {
                response.insert(LOCATION, value);
            }
            let got = invalidation_urls(&Method::POST, StatusCode::OK, target, &response);
            prop_assert!(!got.is_empty());
        }
    }
}
