//! Resources of the configuration API as places in the configuration document: routes (a
//! list, named by `name`), upstream groups and consumers (mappings by name), a group's
//! targets (a list, named by `address`) and any top-level section. Reads and changes here
//! work on a document; validating and applying the result is `Shared::change`'s.

use serde_json::{Map, Value};

use super::endpoints::{Kind, Write};
use crate::config::document;
use crate::runtime::ChangeError;

/// The collection of `kind` in `doc`: a list or a mapping.
fn collection<'a>(
    doc: &'a mut Value,
    kind: Kind,
    params: &[String],
) -> Result<&'a mut Value, ChangeError> {
    let root = doc;
    let (parent, key, empty) = match kind {
        Kind::Section => return Ok(root),
        Kind::Route => (root, "routes", Value::Array(Vec::new())),
        Kind::Upstream => (root, "upstreams", Value::Object(Map::new())),
        Kind::Consumer => (root, "consumers", Value::Object(Map::new())),
        Kind::Target => {
            let group = param(params, 0)?;
            let upstream = root
                .get_mut("upstreams")
                .and_then(|u| u.get_mut(group))
                .filter(|u| u.is_object())
                .ok_or_else(|| not_found(format!("no upstream group {group:?}")))?;
            (upstream, "targets", Value::Array(Vec::new()))
        }
    };
    let Value::Object(parent) = parent else {
        return Err(rejected(409, format!("{key}'s parent is not a mapping")));
    };
    // A missing collection reads as an empty one (a change that finds nothing in it is
    // refused, so an empty one added then is never applied).
    let slot = parent.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = empty;
    }
    Ok(slot)
}

/// The field that names an item of a list collection.
fn name_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Target => "address",
        _ => "name",
    }
}

/// The collection of `kind`, secrets as fingerprints.
pub(super) fn list(doc: &Value, kind: Kind, params: &[String]) -> Result<Value, ChangeError> {
    let mut doc = document::masked(doc);
    Ok(collection(&mut doc, kind, params)?.clone())
}

/// One item, secrets as fingerprints.
pub(super) fn get(doc: &Value, kind: Kind, params: &[String]) -> Result<Value, ChangeError> {
    let mut doc = document::masked(doc);
    let id = param(params, usize::from(kind == Kind::Target))?.to_owned();
    let c = collection(&mut doc, kind, params)?;
    item(c, kind, &id).map(|v| v.clone())
}

/// Applies one change to `doc`. For a create, the item's name comes from the body (`name`,
/// removed from the body of a mapping's item; `address` for a target).
pub(super) fn change(
    doc: &mut Value,
    kind: Kind,
    write: Write,
    params: &[String],
    body: Option<&Value>,
) -> Result<(), ChangeError> {
    let body = match (write, body) {
        (Write::Delete, _) => Value::Null,
        (_, Some(b)) if b.is_object() || kind == Kind::Section || write == Write::Patch => {
            b.clone()
        }
        _ => return Err(rejected(400, "the body must be a JSON object".into())),
    };
    let list = matches!(kind, Kind::Route | Kind::Target);
    let field = name_field(kind);
    let id_index = usize::from(kind == Kind::Target);
    let (id, mut body) = match write {
        Write::Create => {
            let mut body = body;
            let named = body.get(field).and_then(Value::as_str).map(str::to_owned);
            let Some(id) = named.filter(|n| !n.is_empty()) else {
                return Err(rejected(400, format!("the body needs a {field:?}")));
            };
            if !list {
                if let Value::Object(m) = &mut body {
                    m.remove(field);
                }
            }
            (id, body)
        }
        _ => (param(params, id_index)?.to_owned(), body),
    };
    let c = collection(doc, kind, params)?;
    match write {
        Write::Create => {
            if position(c, kind, &id)?.is_some() {
                return Err(rejected(409, format!("{id:?} exists; use PUT or PATCH")));
            }
            insert(c, kind, id, body)
        }
        Write::Replace => {
            if list {
                match body.get(field) {
                    None => {
                        if let Value::Object(m) = &mut body {
                            m.insert(field.into(), Value::String(id.clone()));
                        }
                    }
                    Some(v) if v.as_str() == Some(id.as_str()) => {}
                    Some(_) => {
                        return Err(rejected(400, format!("the body's {field:?} is not {id:?}")))
                    }
                }
            }
            match position(c, kind, &id)? {
                Some(at) => set(c, at, &id, body),
                None => insert(c, kind, id, body),
            }
        }
        Write::Patch => {
            let at = position(c, kind, &id)?.ok_or_else(|| missing(kind, &id))?;
            let mut current = item(c, kind, &id)?.clone();
            document::merge_patch(&mut current, &body);
            set(c, at, &id, current)
        }
        Write::Delete => {
            let at = position(c, kind, &id)?.ok_or_else(|| missing(kind, &id))?;
            match c {
                Value::Array(a) => {
                    a.remove(at);
                }
                Value::Object(m) => {
                    m.remove(&id);
                }
                _ => {}
            }
            Ok(())
        }
    }
}

/// Where the item named `id` is: its index in a list (0 for a mapping's key).
fn position(c: &Value, kind: Kind, id: &str) -> Result<Option<usize>, ChangeError> {
    match c {
        Value::Array(a) => {
            let field = name_field(kind);
            let mut found = a
                .iter()
                .enumerate()
                .filter(|(_, v)| v.get(field).and_then(Value::as_str) == Some(id));
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(Some(i)),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(rejected(
                    409,
                    format!("two items have the {field} {id:?}; edit the file to tell them apart"),
                )),
            }
        }
        Value::Object(m) => Ok(m.contains_key(id).then_some(0)),
        _ => Err(rejected(
            409,
            "the collection is not a list or mapping".into(),
        )),
    }
}

fn item<'a>(c: &'a mut Value, kind: Kind, id: &str) -> Result<&'a mut Value, ChangeError> {
    let at = position(c, kind, id)?.ok_or_else(|| missing(kind, id))?;
    match c {
        Value::Array(a) => a.get_mut(at),
        Value::Object(m) => m.get_mut(id),
        _ => None,
    }
    .ok_or_else(|| missing(kind, id))
}

fn insert(c: &mut Value, kind: Kind, id: String, body: Value) -> Result<(), ChangeError> {
    match c {
        Value::Array(a) => a.push(body),
        Value::Object(m) => {
            m.insert(id, body);
        }
        _ => return Err(missing(kind, &id)),
    }
    Ok(())
}

fn set(c: &mut Value, at: usize, id: &str, body: Value) -> Result<(), ChangeError> {
    let slot = match c {
        Value::Array(a) => a.get_mut(at),
        Value::Object(m) => m.get_mut(id),
        _ => None,
    };
    if let Some(slot) = slot {
        *slot = body;
    }
    Ok(())
}

fn param(params: &[String], i: usize) -> Result<&str, ChangeError> {
    params
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| rejected(400, "a path parameter is missing".into()))
}

fn missing(kind: Kind, id: &str) -> ChangeError {
    let what = match kind {
        Kind::Route => "route",
        Kind::Upstream => "upstream group",
        Kind::Target => "target",
        Kind::Consumer => "consumer",
        Kind::Section => "section",
    };
    not_found(format!("no {what} {id:?}"))
}

fn not_found(message: String) -> ChangeError {
    rejected(404, message)
}

pub(super) fn rejected(status: u16, message: String) -> ChangeError {
    ChangeError::Rejected { status, message }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn routes_are_created_named_replaced_patched_and_deleted() {
        let mut doc = json!({"listeners": []});
        let route = json!({"name": "a", "upstream": "x"});
        change(&mut doc, Kind::Route, Write::Create, &[], Some(&route)).unwrap();
        assert_eq!(doc["routes"], json!([{"name": "a", "upstream": "x"}]));
        let again = change(&mut doc, Kind::Route, Write::Create, &[], Some(&route));
        assert!(matches!(
            again,
            Err(ChangeError::Rejected { status: 409, .. })
        ));
        let patch = json!({"strip_prefix": "/a"});
        change(
            &mut doc,
            Kind::Route,
            Write::Patch,
            &p(&["a"]),
            Some(&patch),
        )
        .unwrap();
        assert_eq!(doc["routes"][0]["strip_prefix"], "/a");
        let put = json!({"upstream": "y"});
        change(
            &mut doc,
            Kind::Route,
            Write::Replace,
            &p(&["a"]),
            Some(&put),
        )
        .unwrap();
        assert_eq!(doc["routes"], json!([{"name": "a", "upstream": "y"}]));
        change(&mut doc, Kind::Route, Write::Delete, &p(&["a"]), None).unwrap();
        assert_eq!(doc["routes"], json!([]));
    }

    #[test]
    fn a_mapping_item_takes_its_name_from_the_body() {
        let mut doc = json!({});
        let body = json!({"name": "api", "targets": [{"address": "127.0.0.1:1"}]});
        change(&mut doc, Kind::Upstream, Write::Create, &[], Some(&body)).unwrap();
        assert_eq!(
            doc["upstreams"]["api"],
            json!({"targets": [{"address": "127.0.0.1:1"}]})
        );
        let t = json!({"address": "127.0.0.1:2", "weight": 2});
        change(
            &mut doc,
            Kind::Target,
            Write::Create,
            &p(&["api"]),
            Some(&t),
        )
        .unwrap();
        let got = get(&doc, Kind::Target, &p(&["api", "127.0.0.1:2"])).unwrap();
        assert_eq!(got["weight"], 2);
        let none = get(&doc, Kind::Target, &p(&["nope", "127.0.0.1:2"]));
        assert!(matches!(
            none,
            Err(ChangeError::Rejected { status: 404, .. })
        ));
    }
}
