//! Keys given twice in one mapping, found before the file is read into its types and
//! reported with their key path in the gateway's words (the YAML library's own message
//! points at one of its options rather than at the mistake).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ConfigError;

/// Every key that appears more than once in its mapping, in file order. Text that is not
/// valid YAML gives none: the regular parse reports it.
pub(super) fn find(text: &str) -> Vec<ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let Ok(root) = serde_saphyr::from_str_with_options::<Node>(text, options) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    walk(&root, "", &mut found);
    found
}

/// The shape of a YAML document, with every mapping entry kept in order.
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Scalar,
}

fn walk(node: &Node, path: &str, found: &mut Vec<ConfigError>) {
    match node {
        Node::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                let at = match path.is_empty() {
                    true => key.clone(),
                    false => format!("{path}.{key}"),
                };
                let first = entries.iter().position(|(k, _)| k == key);
                if first.is_some_and(|f| f < i) {
                    let times = entries.iter().filter(|(k, _)| k == key).count();
                    // Report a key once, at its second appearance.
                    if entries[..i].iter().filter(|(k, _)| k == key).count() == 1 {
                        found.push(ConfigError {
                            path: at.clone(),
                            message: format!(
                                "key {key:?} is given {times} times in one mapping; write it \
                                 once (which one was meant would be a guess)"
                            ),
                        });
                    }
                    continue;
                }
                walk(value, &at, found);
            }
        }
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        Node::Scalar => {}
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: serde::de::Error>(self, _: $ty) -> Result<Node, E> {
            Ok(Node::Scalar)
        })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str,
        visit_i128: i128, visit_u128: u128, visit_bytes: &[u8]);

    fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key.0, map.next_value::<Node>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text, whatever scalar it is.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        find(text).into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn a_key_given_twice_is_reported_once_at_its_path() {
        let text = "workers: 1\nroutes:\n  - upstream: a\n    upstream: b\n    upstream: c\nworkers: 2\nupstreams:\n  api: {targets: []}\n  api: {targets: []}\n";
        assert_eq!(
            paths(text),
            ["routes[0].upstream", "workers", "upstreams.api"]
        );
        let e = &find(text)[0];
        assert!(
            e.message.starts_with("key \"upstream\" is given 3 times"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_same_key_in_different_mappings_is_fine() {
        assert!(paths("a: {x: 1}\nb: {x: 1}\nl: [{x: 1}, {x: 2}]\n").is_empty());
        assert!(
            paths("not: [valid").is_empty(),
            "the regular parse reports bad YAML"
        );
    }
}
