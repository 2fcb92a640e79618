//! Validation of a route's header transforms (`request_headers`, `response_headers`): field
//! names, value templates and their placeholders, and the fields no transform may touch.

use std::str::FromStr;

use http::{HeaderName, HeaderValue};

use super::file;
use super::model::{GeoField, HeaderEdits, PathMatch, TemplatePart, ValueTemplate, Var};
use super::validate::Errors;

/// Fields that frame or route the message, or that the gateway writes itself: a transform
/// that touched them could desynchronize framing or forge the gateway's own fields.
const REFUSED: &[(&str, &str)] = &[
    ("content-length", "it frames the message"),
    ("transfer-encoding", "it frames the message"),
    ("connection", "it is hop-by-hop"),
    ("keep-alive", "it is hop-by-hop"),
    ("proxy-connection", "it is hop-by-hop"),
    ("te", "it is hop-by-hop"),
    ("trailer", "it frames the message"),
    ("upgrade", "it is hop-by-hop (use `websocket: true`)"),
    ("host", "it routes the request (use `rewrite.host`)"),
    ("via", "the gateway writes it"),
    ("x-request-id", "the gateway writes it"),
    ("x-forwarded-for", "the gateway writes it"),
    ("x-forwarded-proto", "the gateway writes it"),
    ("x-forwarded-host", "the gateway writes it"),
];

/// Validates one side's edits; `path` is the route's path match (for `{param.NAME}`).
pub(super) fn edits(
    errs: &mut Errors,
    at: &str,
    e: &file::HeaderEdits,
    path: &PathMatch,
    geo: bool,
) -> HeaderEdits {
    errs.unknown_in(at, &e);
    let mut out = HeaderEdits::default();
    for (i, name) in e.remove.iter().enumerate() {
        if let Some(name) = field_name(errs, &format!("{at}.remove[{i}]"), name) {
            out.remove.push(name);
        }
    }
    for (key, map, list) in [("set", &e.set, &mut out.set), ("add", &e.add, &mut out.add)] {
        for (name, value) in map {
            let at = format!("{at}.{key}.{name}");
            let name = field_name(errs, &at, name);
            let value = template(errs, &at, value, path, geo);
            if let (Some(name), Some(value)) = (name, value) {
                list.push((name, value));
            }
        }
    }
    for (name, _) in &out.set {
        if out.remove.contains(name) {
            errs.push(
                format!("{at}.remove"),
                format!("{name} is both set and removed"),
            );
        }
    }
    out
}

fn field_name(errs: &mut Errors, at: &str, name: &str) -> Option<HeaderName> {
    let Ok(parsed) = HeaderName::from_str(name) else {
        errs.push(at, format!("invalid header name {name:?}"));
        return None;
    };
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == parsed.as_str()) {
        errs.push(
            at,
            format!("{parsed} cannot be changed by a transform: {why}"),
        );
        return None;
    }
    Some(parsed)
}

/// Splits `text` into literal parts and `{placeholders}`; `{{` and `}}` are literal braces.
pub(super) fn template(
    errs: &mut Errors,
    at: &str,
    text: &str,
    path: &PathMatch,
    geo: bool,
) -> Option<ValueTemplate> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    let mut ok = true;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match var(&name, path, geo) {
                    Ok(v) => {
                        if !literal.is_empty() {
                            parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
                        }
                        parts.push(TemplatePart::Var(v));
                    }
                    Err(why) => {
                        errs.push(at, why);
                        ok = false;
                    }
                }
            }
            '}' => {
                errs.push(at, "a lone `}`: write `}}` for a literal brace");
                ok = false;
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Text(literal));
    }
    for part in &parts {
        if let TemplatePart::Text(t) = part {
            if HeaderValue::from_str(t).is_err() {
                errs.push(at, format!("{t:?} is not a valid field value"));
                ok = false;
            }
        }
    }
    ok.then_some(ValueTemplate(parts))
}

fn var(name: &str, path: &PathMatch, geo: bool) -> Result<Var, String> {
    match name {
        "client_ip" => Ok(Var::ClientIp),
        "request_id" => Ok(Var::RequestId),
        "consumer" => Ok(Var::Consumer),
        "route" => Ok(Var::Route),
        _ => {
            if let Some(param) = name.strip_prefix("param.") {
                return match template_params(path).any(|p| p == param) {
                    true => Ok(Var::Param(param.to_owned())),
                    false => Err(format!(
                        "{{{name}}}: the route's path template has no parameter {param:?}"
                    )),
                };
            }
            if let Some(field) = name.strip_prefix("geo.") {
                if !geo {
                    return Err(format!(
                        "{{{name}}}: geo fields need the top-level `geo` section"
                    ));
                }
                return GeoField::from_name(field).map(Var::Geo).ok_or_else(|| {
                    format!(
                        "{{{name}}}: unknown geo field; use country, continent, subdivision, \
                         asn or label"
                    )
                });
            }
            Err(format!(
                "unknown placeholder {{{name}}}; use client_ip, request_id, consumer, route, \
                 param.NAME or geo.FIELD (write {{{{ for a literal brace)"
            ))
        }
    }
}

/// Parameter names of a template path (`{id}`, `{*rest}`); none for other path kinds.
fn template_params(path: &PathMatch) -> impl Iterator<Item = &str> {
    let text = match path {
        PathMatch::Template(t) => t.as_str(),
        _ => "",
    };
    text.split('{').skip(1).filter_map(|s| {
        s.split_once('}')
            .map(|(name, _)| name.trim_start_matches('*'))
    })
}
