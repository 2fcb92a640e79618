//! What a matched route does to the request target: path rewriting for proxied routes and
//! the `Location` of redirects.

use std::borrow::Cow;

use crate::config::model::{PathRewrite, ProxyAction, Redirect};

use super::Matched;

/// The upstream path for a proxied request: `strip_prefix` first, then `rewrite`.
///
/// `strip_prefix` is segment-aware (`/api` strips from `/api/x` and `/api`, not `/apix`)
/// and leaves at least `/`. `Replace` substitutes `{name}` (or `{*name}`) with template
/// parameters of the original path; an unknown name inserts nothing. `Regex` replaces the
/// first match, expanding `$1` and `${name}`. The result always starts with `/`.
///
/// Returns `Cow::Borrowed(path)` exactly when the path is unchanged, so the caller can keep
/// the original request target.
pub fn rewrite_path<'p>(
    action: &ProxyAction,
    matched: &Matched<'_>,
    path: &'p str,
) -> Cow<'p, str> {
    let stripped = match &action.strip_prefix {
        Some(prefix) => strip(prefix, path),
        None => path,
    };
    let rewritten = match &action.rewrite {
        None => Cow::Borrowed(stripped),
        Some(PathRewrite::Replace(template)) => Cow::Owned(substitute(template, matched, path)),
        Some(PathRewrite::Regex {
            pattern,
            replacement,
        }) => pattern.replace(stripped, replacement.as_str()),
    };
    if *rewritten == *path {
        return Cow::Borrowed(path);
    }
    match rewritten {
        Cow::Owned(mut s) => {
            if !s.starts_with('/') {
                s.insert(0, '/');
            }
            Cow::Owned(s)
        }
        Cow::Borrowed(s) if s.starts_with('/') => Cow::Owned(s.to_owned()),
        Cow::Borrowed(s) => {
            let mut out = String::with_capacity(s.len() + 1);
            out.push('/');
            out.push_str(s);
            Cow::Owned(out)
        }
    }
}

/// `path` without `prefix` when it starts with it at a segment boundary.
fn strip<'p>(prefix: &str, path: &'p str) -> &'p str {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return path;
    }
    match path.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// `template` with each `{name}` replaced by that parameter's value in `path`.
fn substitute(template: &str, matched: &Matched<'_>, path: &str) -> String {
    let mut out = String::with_capacity(template.len() + path.len());
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let Some((name, tail)) = after.split_once('}') else {
            // An unclosed brace is literal text.
            out.push('{');
            rest = after;
            break;
        };
        let name = name.strip_prefix('*').unwrap_or(name);
        if let Some(value) = matched.params.get(name, path) {
            out.push_str(value);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The `Location` of a redirect: each part the redirect leaves unset comes from the request.
///
/// `host_with_port` is the request's `Host` (port included, `""` when absent). The request
/// port is kept only when neither the scheme nor the host changes; a configured port equal
/// to the scheme's default is left out. Without any host the location is relative
/// (`/path?query`). The request query is appended (after `&` when the configured path has
/// its own query) unless `strip_query` is set.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host_with_port: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let target_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (request_host, request_port) = split_host_port(host_with_port);
    let host = r.host.as_deref().unwrap_or(request_host);
    let path = r.path.as_deref().unwrap_or(path);
    let query = query.filter(|q| !r.strip_query && !q.is_empty());

    let mut out = String::with_capacity(
        target_scheme.len() + host.len() + path.len() + query.map_or(0, str::len) + 16,
    );
    if !host.is_empty() {
        out.push_str(target_scheme);
        out.push_str("://");
        out.push_str(host);
        let mut port_buf = itoa::Buffer::new();
        let port = match r.port {
            Some(p) if Some(p) == default_port(target_scheme) => None,
            Some(p) => Some(port_buf.format(p)),
            None if r.host.is_none() && target_scheme.eq_ignore_ascii_case(scheme) => request_port,
            None => None,
        };
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push(if path.contains('?') { '&' } else { '?' });
        out.push_str(q);
    }
    out
}

/// Splits `host[:port]`, including bracketed IPv6 literals.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    let colon = if s.starts_with('[') {
        s.find(']')
            .map(|close| close + 1)
            .filter(|&i| s.as_bytes().get(i) == Some(&b':'))
    } else {
        s.find(':')
    };
    match colon {
        Some(i) => (&s[..i], s.get(i + 1..).filter(|p| !p.is_empty())),
        None => (s, None),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}
