//! Prompt templates: `{{field}}` replaced by that field of a JSON body (a string as is, any
//! other value as JSON).

use serde_json::Value;

/// The field names a template reads, in order; `None` on a `{{` without its `}}`.
pub fn fields(template: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        let after = &rest[at + 2..];
        let end = after.find("}}")?;
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Some(out)
}

/// `template` filled from `body`; `Err` names the first field the body lacks.
pub fn fill(template: &str, body: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = after[..end].trim();
        match body.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => return Err(name.to_owned()),
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_filled_from_the_body_and_a_missing_one_is_named() {
        let body = serde_json::json!({"text": "long text", "n": 3});
        let t = "Summarize in {{ n }} lines: {{text}}";
        assert_eq!(fields(t), Some(vec!["n", "text"]));
        assert_eq!(
            fill(t, &body),
            Ok("Summarize in 3 lines: long text".to_owned())
        );
        assert_eq!(fill("{{other}}", &body), Err("other".to_owned()));
        assert!(fields("{{open").is_none());
    }
}
