//! Request-body validation against JSON Schemas (draft 2020-12), one schema per content type
//! of a route, with failures reported as RFC 9457 problem details.
//!
//! Schemas are compiled at load, offline (a `$ref` to anything outside the schema is a load
//! error, never a fetch), with linear-time regexes for `pattern` and with `format` asserted
//! (the draft makes it an annotation by default; a gateway validating input wants
//! `"format": "email"` to mean something).
//!
//! A violation names where the body failed (a JSON pointer) and which rule it broke, and
//! never the offending value: bodies carry passwords and tokens, and error bodies and logs
//! must not repeat them. Messages are therefore built here from the error kind, using only
//! text from the schema (limits, formats, patterns, property names it defines).
//!
//! A schema for `application/json` also covers `+json` types (`application/merge-patch+json`)
//! that have no schema of their own; other media types cannot be validated and are refused
//! (415). A `charset` other than UTF-8 is refused too: JSON is UTF-8 (RFC 8259 §8.1).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::{json, Value};

/// Most violations reported for one body; the rest would only lengthen the answer.
pub const MAX_VIOLATIONS: usize = 20;

/// Longest location reported; longer ones (huge property names) are cut.
const MAX_LOCATION_LEN: usize = 256;

/// The compiled body schemas of one route.
#[derive(Debug)]
pub struct BodySchemas {
    /// (media type essence, validator); a handful per route, so a list.
    schemas: Vec<(String, Validator)>,
    max_body: usize,
}

/// One place where a request broke a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the body (`/items/0/price`, `""` for the whole body), or
    /// `query.NAME` / `header.NAME` for parameters.
    pub location: String,
    /// Which rule was broken, without the offending value.
    pub message: String,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No schema for this content type (or none given): 415.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// Larger than the validation limit: 413.
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Not valid JSON, or not valid against the schema: 400 with [`problem_body`].
    #[error("body failed validation at {} location(s)", .0.len())]
    Invalid(Vec<Violation>),
}

/// A schema rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("content type {0:?} is not application/json or a +json type")]
    NotJson(String),
    #[error("content type {0:?} has two schemas")]
    Duplicate(String),
    #[error("schema for {content_type:?} is invalid: {reason}")]
    Invalid {
        content_type: String,
        reason: String,
    },
}

impl BodySchemas {
    /// Compiles `(content type, schema)` pairs; bodies over `max_body` bytes are refused.
    pub fn new(schemas: Vec<(String, Value)>, max_body: usize) -> Result<BodySchemas, SchemaError> {
        let mut compiled: Vec<(String, Validator)> = Vec::with_capacity(schemas.len());
        let options = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .offline()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex());
        for (content_type, schema) in schemas {
            let Some(essence) = json_essence(&content_type) else {
                return Err(SchemaError::NotJson(content_type));
            };
            if compiled.iter().any(|(e, _)| *e == essence) {
                return Err(SchemaError::Duplicate(content_type));
            }
            let validator = options.build(&schema).map_err(|e| SchemaError::Invalid {
                content_type,
                reason: e.to_string(),
            })?;
            compiled.push((essence, validator));
        }
        Ok(BodySchemas {
            schemas: compiled,
            max_body,
        })
    }

    /// Largest body validated.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Checks a complete body sent with `content_type`.
    pub fn validate(&self, content_type: Option<&str>, body: &[u8]) -> Result<(), BodyError> {
        let validator = content_type
            .and_then(|ct| self.validator_for(ct))
            .ok_or(BodyError::UnsupportedMediaType)?;
        if body.len() > self.max_body {
            return Err(BodyError::TooLarge {
                limit: self.max_body,
            });
        }
        let instance: Value = serde_json::from_slice(body)
            .map_err(|e| BodyError::Invalid(vec![malformed_json(&e)]))?;
        let mut violations = Vec::new();
        for error in validator.iter_errors(&instance) {
            push_violations(&error, &mut violations);
            if violations.len() >= MAX_VIOLATIONS {
                violations.truncate(MAX_VIOLATIONS);
                break;
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(BodyError::Invalid(violations))
        }
    }

    fn validator_for(&self, content_type: &str) -> Option<&Validator> {
        let essence = json_essence(content_type)?;
        let charset_ok = content_type.split(';').skip(1).all(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return true;
            };
            !name.trim().eq_ignore_ascii_case("charset")
                || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        });
        if !charset_ok {
            return None;
        }
        let find = |wanted: &str| {
            self.schemas
                .iter()
                .find(|(e, _)| e == wanted)
                .map(|(_, v)| v)
        };
        find(&essence).or_else(|| find("application/json"))
    }
}

/// RFC 9457 problem details for a 400 caused by `violations`, with an `errors` member
/// listing `{location, detail}` pairs.
pub fn problem_body(violations: &[Violation]) -> String {
    let errors: Vec<Value> = violations
        .iter()
        .map(|v| json!({ "location": v.location, "detail": v.message }))
        .collect();
    json!({
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "the request failed validation",
        "errors": errors,
    })
    .to_string()
}

/// The lower-case `type/subtype` of a JSON media type, or `None` for any other type.
fn json_essence(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let json = essence == "application/json" || subtype.ends_with("+json");
    (token(kind) && token(subtype) && json).then_some(essence)
}

/// serde_json's messages do not quote the input, but only the category and the position are
/// kept: the location is the whole body, the position says where parsing stopped.
fn malformed_json(error: &serde_json::Error) -> Violation {
    let what = match error.classify() {
        serde_json::error::Category::Eof => "body ends before the JSON value is complete",
        _ => "body is not valid JSON",
    };
    Violation {
        location: String::new(),
        message: format!("{what} (line {}, column {})", error.line(), error.column()),
    }
}

fn push_violations(error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let path = error.instance_path().as_str();
    let at = |location: String, message: String| Violation {
        location: clip(location),
        message,
    };
    match error.kind() {
        // One violation per offending member, located at the member itself.
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                out.push(at(child(path, name), "property is not allowed".into()));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(at(child(path, name), "required property is missing".into()));
        }
        kind => out.push(at(path.into(), message(kind))),
    }
}

/// Describes the broken rule from the schema's side only.
fn message(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::AdditionalItems { limit } => format!("array must have at most {limit} items"),
        K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => {
            "property is not allowed".into()
        }
        K::AnyOf { .. } => "does not match any allowed alternative (anyOf)".into(),
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "could not be checked against its pattern".into()
        }
        K::Constant { .. } => "must equal the value fixed by the schema".into(),
        K::Contains => "array has no item matching the schema (contains)".into(),
        K::ContentEncoding { content_encoding } => format!("must be valid {content_encoding}"),
        K::ContentMediaType { content_media_type } => format!("must be valid {content_media_type}"),
        K::Custom { keyword, .. } => format!("does not satisfy {keyword}"),
        K::Enum { .. } => "must be one of the allowed values".into(),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::FalseSchema => "no value is allowed here".into(),
        K::Format { format } => format!("must be a valid {format}"),
        K::FromUtf8 { .. } => "decoded content is not UTF-8".into(),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::Not { .. } => "matches a schema it must not match (not)".into(),
        K::OneOfMultipleValid { .. } => "matches more than one alternative (oneOf)".into(),
        K::OneOfNotValid { .. } => "does not match any alternative (oneOf)".into(),
        K::Pattern { pattern } => format!("must match the pattern {pattern}"),
        K::PropertyNames { .. } => "has a property name that is not allowed".into(),
        K::Required { property } => format!("property {property} is required"),
        K::Type { kind } => format!("must be of type {}", type_names(kind)),
        K::UnevaluatedItems { .. } => "array has items the schema does not allow".into(),
        K::UniqueItems => "array items must be unique".into(),
        K::Referencing(_) => "schema reference could not be resolved".into(),
    }
}

fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.to_string(),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// `path/name` with `name` escaped as a JSON pointer token (RFC 6901).
fn child(path: &str, name: &str) -> String {
    let mut out = String::with_capacity(path.len() + name.len() + 1);
    out.push_str(path);
    out.push('/');
    for c in name.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

fn clip(mut location: String) -> String {
    if location.len() > MAX_LOCATION_LEN {
        let mut cut = MAX_LOCATION_LEN;
        while !location.is_char_boundary(cut) {
            cut -= 1;
        }
        location.truncate(cut);
        location.push('…');
    }
    location
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn order_schema() -> Value {
        json!({
            "type": "object",
            "required": ["id", "items"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "email": {"type": "string", "format": "email"},
                "note": {"type": "string", "maxLength": 8},
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "price"],
                        "properties": {
                            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
                            "price": {"type": "number", "minimum": 0}
                        }
                    }
                }
            }
        })
    }

    fn schemas() -> BodySchemas {
        BodySchemas::new(vec![("application/json".into(), order_schema())], 1024).unwrap()
    }

    fn violations(body: &str) -> Vec<Violation> {
        match schemas().validate(Some("application/json"), body.as_bytes()) {
            Err(BodyError::Invalid(v)) => v,
            other => panic!("expected violations, got {other:?}"),
        }
    }

    fn locations(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.location.as_str()).collect()
    }

    const VALID: &str =
        r#"{"id":"6f1c2a9e-0000-4000-8000-000000000001","items":[{"sku":"ABC-1","price":2.5}]}"#;

    #[test]
    fn valid_body_passes() {
        assert_eq!(
            schemas().validate(Some("application/json"), VALID.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn invalid_value_is_located_precisely() {
        let v = violations(
            r#"{"id":"6f1c2a9e-0000-4000-8000-000000000001","items":[{"sku":"ABC-1","price":1},{"sku":"x","price":-3}]}"#,
        );
        let message = |loc: &str| &v.iter().find(|v| v.location == loc).unwrap().message;
        assert_eq!(v.len(), 2);
        assert_eq!(message("/items/1/price"), "must be at least 0");
        assert_eq!(
            message("/items/1/sku"),
            "must match the pattern ^[A-Z]{3}-[0-9]+$"
        );
    }

    #[test]
    fn missing_property_is_located_at_the_member() {
        let v = violations(r#"{"items":[{"sku":"ABC-1"}]}"#);
        let mut found = locations(&v);
        found.sort_unstable();
        assert_eq!(found, ["/id", "/items/0/price"]);
        assert!(v
            .iter()
            .all(|v| v.message == "required property is missing"));
    }

    #[test]
    fn unexpected_property_is_located_and_escaped() {
        let v = violations(
            r#"{"id":"6f1c2a9e-0000-4000-8000-000000000001","items":[{"sku":"ABC-1","price":1}],"a/b~c":1}"#,
        );
        assert_eq!(locations(&v), ["/a~1b~0c"]);
        assert_eq!(v[0].message, "property is not allowed");
    }

    #[test]
    fn wrong_type_names_the_expected_type() {
        let v = violations(r#"{"id":7,"items":[{"sku":"ABC-1","price":1}]}"#);
        assert_eq!(
            v,
            [Violation {
                location: "/id".into(),
                message: "must be of type string".into()
            }]
        );
    }

    #[test]
    fn format_is_asserted() {
        let v = violations(r#"{"id":"not-a-uuid","items":[{"sku":"ABC-1","price":1}]}"#);
        assert_eq!(
            v,
            [Violation {
                location: "/id".into(),
                message: "must be a valid uuid".into()
            }]
        );
    }

    #[test]
    fn invalid_json_is_reported_with_its_position() {
        let v = violations("{\n  \"id\": \"x\",\n  \"items\": [1,]\n}");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].location, "");
        assert_eq!(v[0].message, "body is not valid JSON (line 3, column 15)");
        let cut = violations(r#"{"id": "#);
        assert!(cut[0]
            .message
            .starts_with("body ends before the JSON value is complete"));
    }

    #[test]
    fn secret_in_a_failing_value_is_not_echoed() {
        let secret = "sk_live_9f8e7d6c5b4a3928";
        let bodies = [
            format!(r#"{{"id":"{secret}","items":[{{"sku":"ABC-1","price":1}}]}}"#),
            format!(
                r#"{{"id":"6f1c2a9e-0000-4000-8000-000000000001","note":"{secret}","items":[{{"sku":"{secret}","price":"{secret}"}}]}}"#
            ),
            format!(
                r#"{{"id":"6f1c2a9e-0000-4000-8000-000000000001","email":"{secret}","items":[]}}"#
            ),
            format!(r#"{{"id": "{secret}" "#),
        ];
        for body in bodies {
            let v = violations(&body);
            assert!(!v.is_empty());
            let problem = problem_body(&v);
            assert!(!problem.contains(secret), "{problem}");
            assert!(!problem.contains("sk_live"), "{problem}");
        }
    }

    #[test]
    fn problem_body_is_rfc_9457_json_with_errors() {
        let v = vec![Violation {
            location: "/a\"b".into(),
            message: "must be \"x\"".into(),
        }];
        let parsed: Value = serde_json::from_str(&problem_body(&v)).unwrap();
        assert_eq!(parsed["status"], 400);
        assert_eq!(parsed["type"], "about:blank");
        assert_eq!(parsed["errors"][0]["location"], "/a\"b");
        assert_eq!(parsed["errors"][0]["detail"], "must be \"x\"");
    }

    #[test]
    fn unsupported_content_type_is_a_distinct_error() {
        let s = schemas();
        assert_eq!(
            s.validate(Some("text/plain"), b"{}"),
            Err(BodyError::UnsupportedMediaType)
        );
        assert_eq!(
            s.validate(None, b"{}"),
            Err(BodyError::UnsupportedMediaType)
        );
        assert_eq!(
            s.validate(Some("application/json; charset=latin1"), b"{}"),
            Err(BodyError::UnsupportedMediaType)
        );
    }

    #[test]
    fn json_schema_covers_parameters_and_json_suffix_types() {
        let s = schemas();
        for ct in [
            "Application/JSON; charset=\"UTF-8\"",
            "application/merge-patch+json",
        ] {
            assert_eq!(s.validate(Some(ct), VALID.as_bytes()), Ok(()), "{ct}");
        }
    }

    #[test]
    fn specific_suffix_type_uses_its_own_schema() {
        let s = BodySchemas::new(
            vec![
                ("application/json".into(), json!({"type": "object"})),
                ("application/vnd.list+json".into(), json!({"type": "array"})),
            ],
            1024,
        )
        .unwrap();
        assert_eq!(s.validate(Some("application/vnd.list+json"), b"[]"), Ok(()));
        assert!(s
            .validate(Some("application/vnd.list+json"), b"{}")
            .is_err());
        assert_eq!(s.validate(Some("application/other+json"), b"{}"), Ok(()));
    }

    #[test]
    fn oversized_body_is_refused() {
        let s = BodySchemas::new(vec![("application/json".into(), json!({}))], 4).unwrap();
        assert_eq!(
            s.validate(Some("application/json"), b"[1,2]"),
            Err(BodyError::TooLarge { limit: 4 })
        );
    }

    #[test]
    fn violations_are_capped() {
        let s = BodySchemas::new(
            vec![(
                "application/json".into(),
                json!({"items": {"type": "string"}}),
            )],
            1 << 16,
        )
        .unwrap();
        let body = format!("[{}0]", "0,".repeat(100));
        match s.validate(Some("application/json"), body.as_bytes()) {
            Err(BodyError::Invalid(v)) => assert_eq!(v.len(), MAX_VIOLATIONS),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn remote_reference_is_a_load_error() {
        let schema = json!({"$ref": "https://example.com/schema.json"});
        let err = BodySchemas::new(vec![("application/json".into(), schema)], 1024).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid { .. }));
    }

    #[test]
    fn non_json_content_type_is_a_load_error() {
        let err = BodySchemas::new(vec![("text/xml".into(), json!({}))], 1024).unwrap_err();
        assert_eq!(err, SchemaError::NotJson("text/xml".into()));
    }

    #[test]
    fn huge_property_name_is_clipped_in_the_location() {
        let s = BodySchemas::new(
            vec![(
                "application/json".into(),
                json!({"additionalProperties": false}),
            )],
            1 << 16,
        )
        .unwrap();
        let body = format!(r#"{{"{}":1}}"#, "k".repeat(5000));
        let Err(BodyError::Invalid(v)) = s.validate(Some("application/json"), body.as_bytes())
        else {
            panic!("expected a violation");
        };
        assert!(v[0].location.len() <= MAX_LOCATION_LEN + '…'.len_utf8());
    }
}
