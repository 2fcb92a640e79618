//! The configuration as a JSON document, as the admin API reads and changes it: read from the
//! YAML file's text with the file's own key names, written back as YAML that `parse` (and so
//! `ferrogate check`) reads, secrets replaced by fingerprints on the way out and put back on
//! the way in, JSON merge patches (RFC 7396), and what changed between two documents.

use serde_json::{Map, Value};

use super::ConfigError;

/// Where secrets sit in a document (`*`: any key or index). They leave the gateway only as
/// fingerprints.
const SECRETS: &[&[&str]] = &[
    &["consumers", "*", "api_keys", "*"],
    &["consumers", "*", "password_hash"],
    &["auth", "methods", "*", "jwt", "keys", "*", "secret"],
    &["auth", "methods", "*", "introspection", "client_secret"],
    &["admin", "tokens", "*", "sha256"],
    // A hosted tracing backend's API key travels in these.
    &["tracing", "otlp", "headers", "*"],
    // A webhook's signing key; a Slack URL is itself a credential.
    &["alerts", "notifiers", "*", "secret"],
    &["alerts", "notifiers", "*", "url"],
    // Model providers' API keys.
    &["routes", "*", "ai", "providers", "*", "api_key"],
];

/// Prefix of a secret's fingerprint.
const FINGERPRINT_PREFIX: &str = "sha256:";

/// Reads YAML text into a document.
pub fn from_yaml(text: &str) -> Result<Value, ConfigError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError {
        path: String::new(),
        message: format!("invalid YAML: {e}"),
    })?;
    match doc {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(doc),
        _ => Err(ConfigError {
            path: String::new(),
            message: "the configuration must be a mapping".into(),
        }),
    }
}

/// Writes a document as YAML text.
pub fn to_yaml(doc: &Value) -> String {
    serde_saphyr::to_string(doc).unwrap_or_default()
}

/// `sha256:` and the first 12 hex digits of the SHA-256 of a secret.
pub fn fingerprint(secret: &str) -> String {
    let digest = super::admin::sha256(secret.as_bytes());
    let mut out = String::from(FINGERPRINT_PREFIX);
    for b in &digest[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The SHA-256 digest of `bytes` (admin tokens are compared by theirs).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    super::admin::sha256(bytes)
}

/// The lower-case hex SHA-256 of a text (of a configuration file, to see it changed).
pub fn text_hash(text: &str) -> String {
    super::admin::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A copy of `doc` with every secret replaced by its fingerprint.
pub fn masked(doc: &Value) -> Value {
    let mut out = doc.clone();
    for pattern in SECRETS {
        visit(&mut out, pattern, &mut |v| {
            if let Value::String(s) = v {
                *s = fingerprint(s);
            }
        });
    }
    out
}

/// Puts back, in a changed document, the secrets of `before` where the change carries their
/// fingerprints (a document read, edited and written back keeps its secrets).
pub fn restore_secrets(doc: &mut Value, before: &Value) {
    let mut known = std::collections::HashMap::new();
    let mut before = before.clone();
    for pattern in SECRETS {
        visit(&mut before, pattern, &mut |v| {
            if let Value::String(s) = v {
                known.insert(fingerprint(s), s.clone());
            }
        });
    }
    for pattern in SECRETS {
        visit(doc, pattern, &mut |v| {
            if let Value::String(s) = v {
                if let Some(secret) = known.get(s.as_str()) {
                    *s = secret.clone();
                }
            }
        });
    }
}

/// Calls `f` on every value of `doc` at `pattern`.
fn visit(doc: &mut Value, pattern: &[&str], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = pattern.split_first() else {
        f(doc);
        return;
    };
    match (doc, *first) {
        (Value::Object(m), "*") => m.values_mut().for_each(|v| visit(v, rest, f)),
        (Value::Array(a), "*") => a.iter_mut().for_each(|v| visit(v, rest, f)),
        (Value::Object(m), key) => {
            if let Some(v) = m.get_mut(key) {
                visit(v, rest, f);
            }
        }
        _ => {}
    }
}

/// Applies a JSON merge patch (RFC 7396) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Key paths (two levels deep at most: `upstreams.api`, `routes[3]`) whose values differ
/// between two documents.
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    differences(before, after, "", 2, &mut out);
    out
}

fn differences(a: &Value, b: &Value, at: &str, depth: usize, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if depth > 0 => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let none = Value::Null;
                let (va, vb) = (x.get(k).unwrap_or(&none), y.get(k).unwrap_or(&none));
                differences(va, vb, &join(k), depth - 1, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if depth > 0 => {
            for i in 0..x.len().max(y.len()) {
                let none = Value::Null;
                let (va, vb) = (x.get(i).unwrap_or(&none), y.get(i).unwrap_or(&none));
                differences(va, vb, &format!("{at}[{i}]"), depth - 1, out);
            }
        }
        _ => out.push(if at.is_empty() {
            "(all)".into()
        } else {
            at.into()
        }),
    }
}

/// A unified diff of two texts by lines, with three lines of context around each change.
/// Texts longer than a few thousand lines are compared as wholly replaced.
pub fn diff_lines(old: &str, new: &str) -> String {
    const CONTEXT: usize = 3;
    const MAX_LINES: usize = 4000;
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table, from the ends.
    let ops: Vec<(char, &str)> = if a.len() > MAX_LINES || b.len() > MAX_LINES {
        a.iter()
            .map(|l| ('-', *l))
            .chain(b.iter().map(|l| ('+', *l)))
            .collect()
    } else {
        let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j, mut ops) = (0, 0, Vec::new());
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                ops.push((' ', a[i]));
                i += 1;
                j += 1;
            } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
                // Removals before additions, as diff(1) writes them.
                ops.push(('-', a[i]));
                i += 1;
            } else {
                ops.push(('+', b[j]));
                j += 1;
            }
        }
        ops
    };
    let near_change = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        ops[lo..hi].iter().any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if *c == ' ' && !near_change(k) {
            skipped = true;
            continue;
        }
        if skipped && !out.is_empty() {
            out.push_str("@@\n");
        }
        skipped = false;
        out.push(*c);
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_example_config_survives_a_round_trip_through_the_document() {
        // The OIDC example takes its client secret from the environment, as a deployment
        // would; any value passes the check.
        if std::env::var_os("OIDC_CLIENT_SECRET").is_none() {
            std::env::set_var("OIDC_CLIENT_SECRET", "example-secret");
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let doc = from_yaml(&text).unwrap();
            let again = from_yaml(&to_yaml(&doc)).unwrap();
            assert_eq!(doc, again, "{}", path.display());
            let base = path.parent().unwrap();
            if let Err(e) = super::super::parse(&to_yaml(&doc), base) {
                panic!("{}: {e}\n{}", path.display(), to_yaml(&doc));
            }
        }
    }

    #[test]
    fn strings_that_look_like_other_scalars_stay_strings() {
        let doc = json!({"a": "8080", "b": "yes", "c": "null", "d": "1.5", "e": "~", "f": "a: b"});
        assert_eq!(from_yaml(&to_yaml(&doc)).unwrap(), doc);
    }

    #[test]
    fn secrets_are_masked_and_restored_from_their_fingerprints() {
        let doc = json!({"consumers": {"ada": {"api_keys": ["k1", "k2"], "groups": ["g"]}}});
        let masked = masked(&doc);
        assert_eq!(masked["consumers"]["ada"]["api_keys"][0], fingerprint("k1"));
        assert_eq!(masked["consumers"]["ada"]["groups"][0], "g");
        let mut edited = masked.clone();
        edited["consumers"]["ada"]["api_keys"][1] = json!("k3");
        restore_secrets(&mut edited, &doc);
        assert_eq!(edited["consumers"]["ada"]["api_keys"], json!(["k1", "k3"]));
    }

    #[test]
    fn model_provider_keys_leave_only_as_fingerprints() {
        let doc = json!({"routes": [{"ai": {"providers": {"claude": {"kind": "anthropic",
            "api_key": "sk-ant-1", "api_key_env": "ANTHROPIC_API_KEY"}}}}]});
        let masked = masked(&doc);
        let p = &masked["routes"][0]["ai"]["providers"]["claude"];
        assert_eq!(p["api_key"], fingerprint("sk-ant-1"));
        // The variable's name is not the secret.
        assert_eq!(p["api_key_env"], "ANTHROPIC_API_KEY");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "n": [1]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    }

    #[test]
    fn changed_paths_name_what_differs() {
        let a = json!({"upstreams": {"x": {"targets": []}}, "routes": [{"name": "a"}]});
        let b = json!({"upstreams": {"x": {"targets": [1]}, "y": {}}, "routes": [{"name": "a"}]});
        assert_eq!(changed_paths(&a, &b), vec!["upstreams.x", "upstreams.y"]);
    }

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\n";
        assert_eq!(diff_lines(old, new), " b\n c\n d\n-e\n+E\n f\n g\n h\n");
    }
}
