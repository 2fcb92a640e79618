//! Header transforms of a route: fields removed, set and added on one message, with values
//! filled in from the request (client address, request id, consumer, route, path
//! parameters, the client's location). Compiled once per configuration; values without placeholders are ready-made.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::model::{HeaderEdits, TemplatePart, Var};
use crate::router::Params;

/// One side's edits, compiled: removed, then set (replacing), then added (appending).
#[derive(Debug)]
pub struct Edits {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, Value)]>,
    add: Box<[(HeaderName, Value)]>,
}

/// What a placeholder can be filled with, for one request.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    /// The authenticated consumer or token subject, when there is one.
    pub consumer: Option<&'a str>,
    pub route: &'a str,
    pub params: &'a Params<'a>,
    /// The matched path, which `params` index.
    pub path: &'a str,
    /// The client's location, when the route looked it up.
    pub geo: Option<&'a crate::geo::Location>,
}

#[derive(Debug)]
enum Value {
    Fixed(HeaderValue),
    Template(Box<[TemplatePart]>),
}

/// Fields resolved for one request, applied later to whatever answers it.
#[derive(Debug, Default)]
pub struct Resolved {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    pub fn new(e: &HeaderEdits) -> Edits {
        let compile = |list: &[(HeaderName, crate::config::model::ValueTemplate)]| {
            list.iter()
                .map(|(name, t)| (name.clone(), Value::new(&t.0)))
                .collect()
        };
        Edits {
            remove: e.remove.clone().into(),
            set: compile(&e.set),
            add: compile(&e.add),
        }
    }

    /// Applies the edits to `headers`. A field whose placeholder has no value for this
    /// request (no consumer, say), or whose filled-in value is not a valid field value, is
    /// left out.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            match value.fill(vars) {
                Some(v) => {
                    headers.insert(name.clone(), v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        for (name, value) in self.add.iter() {
            if let Some(v) = value.fill(vars) {
                headers.append(name.clone(), v);
            }
        }
    }

    /// The fields for this request, to apply later ([`Resolved::apply`]).
    pub fn resolve(&self, vars: &Vars<'_>) -> Resolved {
        let fill = |list: &[(HeaderName, Value)]| {
            list.iter()
                .filter_map(|(n, v)| Some((n.clone(), v.fill(vars)?)))
                .collect()
        };
        Resolved {
            remove: self
                .remove
                .iter()
                .chain(self.set.iter().map(|(n, _)| n))
                .cloned()
                .collect(),
            set: fill(&self.set),
            add: fill(&self.add),
        }
    }
}

impl Resolved {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

impl Value {
    fn new(parts: &[TemplatePart]) -> Value {
        match parts {
            [] => Value::Fixed(HeaderValue::from_static("")),
            [TemplatePart::Text(t)] => match HeaderValue::from_str(t) {
                Ok(v) => Value::Fixed(v),
                Err(_) => Value::Template(parts.into()),
            },
            _ => Value::Template(parts.into()),
        }
    }

    fn fill(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let parts = match self {
            Value::Fixed(v) => return Some(v.clone()),
            Value::Template(parts) => parts,
        };
        let mut out = String::new();
        for part in parts.iter() {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Var(Var::ClientIp) => {
                    use std::fmt::Write;
                    let _ = write!(out, "{}", vars.client_ip.to_canonical());
                }
                TemplatePart::Var(Var::RequestId) => out.push_str(vars.request_id.to_str().ok()?),
                TemplatePart::Var(Var::Consumer) => out.push_str(vars.consumer?),
                TemplatePart::Var(Var::Route) => out.push_str(vars.route),
                TemplatePart::Var(Var::Param(name)) => {
                    out.push_str(vars.params.get(name, vars.path)?)
                }
                TemplatePart::Var(Var::Geo(field)) => vars.geo?.text(*field)?.push_to(&mut out),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::ValueTemplate;

    fn edits(set: &[(&str, Vec<TemplatePart>)], add: &[(&str, &str)], remove: &[&str]) -> Edits {
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap();
        Edits::new(&HeaderEdits {
            remove: remove.iter().map(|n| name(n)).collect(),
            set: set
                .iter()
                .map(|(n, p)| (name(n), ValueTemplate(p.clone())))
                .collect(),
            add: add
                .iter()
                .map(|(n, v)| {
                    (
                        name(n),
                        ValueTemplate(vec![TemplatePart::Text(v.to_string())]),
                    )
                })
                .collect(),
        })
    }

    fn vars<'a>(
        id: &'a HeaderValue,
        params: &'a Params<'a>,
        consumer: Option<&'a str>,
    ) -> Vars<'a> {
        Vars {
            client_ip: "::ffff:192.0.2.7".parse().unwrap(),
            request_id: id,
            consumer,
            route: "api",
            params,
            path: "/",
            geo: None,
        }
    }

    #[test]
    fn removes_then_sets_then_adds_with_placeholders_filled() {
        let e = edits(
            &[(
                "x-client",
                vec![
                    TemplatePart::Text("ip=".into()),
                    TemplatePart::Var(Var::ClientIp),
                    TemplatePart::Text(" route=".into()),
                    TemplatePart::Var(Var::Route),
                ],
            )],
            &[("x-tag", "b")],
            &["x-secret"],
        );
        let mut h = HeaderMap::new();
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.append("x-client", HeaderValue::from_static("forged"));
        h.append("x-client", HeaderValue::from_static("forged2"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        let (id, params) = (HeaderValue::from_static("r1"), Params::default());
        e.apply(&mut h, &vars(&id, &params, None));
        assert!(h.get("x-secret").is_none());
        let client: Vec<_> = h.get_all("x-client").iter().collect();
        assert_eq!(client, ["ip=192.0.2.7 route=api"]);
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn a_field_whose_placeholder_has_no_value_is_left_out() {
        let e = edits(
            &[("x-consumer", vec![TemplatePart::Var(Var::Consumer)])],
            &[],
            &[],
        );
        let (id, params) = (HeaderValue::from_static("r1"), Params::default());
        let mut h = HeaderMap::new();
        h.insert("x-consumer", HeaderValue::from_static("forged"));
        e.apply(&mut h, &vars(&id, &params, None));
        assert!(h.get("x-consumer").is_none(), "a client's copy is not kept");
        e.apply(&mut h, &vars(&id, &params, Some("alice")));
        assert_eq!(h["x-consumer"], "alice");
        let r = e.resolve(&vars(&id, &params, Some("bob")));
        r.apply(&mut h);
        assert_eq!(h["x-consumer"], "bob");
    }
}
