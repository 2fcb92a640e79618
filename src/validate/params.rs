//! Query and header parameter rules of a route: required, pattern, enum, integer range and
//! maximum length, reported as [`Violation`]s located at `query.NAME` or `header.NAME`.
//!
//! Every value of a repeated parameter is checked. Query values are decoded as HTML forms
//! and most frameworks do (`%XX` escapes, `+` for a space) before checking, so a rule sees
//! what the upstream will see. Patterns follow JSON Schema's convention: unanchored, so
//! write `^…$` to constrain the whole value. Messages describe the rule, never the value.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use regex::{Regex, RegexBuilder};

use super::schema::Violation;

/// Compiled-size bound for a configured pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParamIn {
    #[default]
    Query,
    Header,
}

/// One configured parameter rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamRule {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    /// A regex the value must contain a match of.
    pub pattern: Option<String>,
    /// Allowed values (exact); empty means any.
    pub allowed: Vec<String>,
    /// Inclusive integer range; either bound set makes the value an integer.
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// Most characters (not bytes).
    pub max_length: Option<usize>,
}

/// The compiled parameter rules of one route.
#[derive(Debug, Clone, Default)]
pub struct ParamRules {
    query: Vec<Compiled>,
    headers: Vec<(HeaderName, Compiled)>,
}

/// A rule rejected at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("header parameter name {0:?} is invalid")]
    BadHeaderName(String),
    #[error("parameter {name:?} has an invalid pattern: {reason}")]
    BadPattern { name: String, reason: String },
    #[error("parameter {name:?} has min {min} above max {max}")]
    EmptyRange { name: String, min: i64, max: i64 },
    #[error("parameter {0:?} is empty")]
    EmptyName(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: ParamRule,
    location: String,
    pattern: Option<Regex>,
}

impl ParamRules {
    /// Compiles the rules.
    pub fn new(rules: Vec<ParamRule>) -> Result<ParamRules, ParamError> {
        let mut compiled = ParamRules::default();
        for rule in rules {
            if rule.name.is_empty() {
                return Err(ParamError::EmptyName(rule.name));
            }
            if let (Some(min), Some(max)) = (rule.min, rule.max) {
                if min > max {
                    return Err(ParamError::EmptyRange {
                        name: rule.name,
                        min,
                        max,
                    });
                }
            }
            let pattern = match &rule.pattern {
                Some(p) => Some(
                    RegexBuilder::new(p)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| ParamError::BadPattern {
                            name: rule.name.clone(),
                            reason: e.to_string(),
                        })?,
                ),
                None => None,
            };
            match rule.location {
                ParamIn::Query => {
                    let location = format!("query.{}", rule.name);
                    compiled.query.push(Compiled {
                        rule,
                        location,
                        pattern,
                    });
                }
                ParamIn::Header => {
                    let name = HeaderName::try_from(rule.name.as_str())
                        .map_err(|_| ParamError::BadHeaderName(rule.name.clone()))?;
                    let location = format!("header.{name}");
                    compiled.headers.push((
                        name,
                        Compiled {
                            rule,
                            location,
                            pattern,
                        },
                    ));
                }
            }
        }
        Ok(compiled)
    }

    /// Checks a request's query string and headers against every rule.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        for rule in &self.query {
            let mut seen = false;
            let pairs = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|p| !p.is_empty());
            for pair in pairs {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if form_decode(name).as_deref() != Some(rule.rule.name.as_bytes()) {
                    continue;
                }
                seen = true;
                match form_decode(value).map(|v| String::from_utf8(v.into_owned())) {
                    Some(Ok(text)) => rule.check_value(&text, &mut violations),
                    _ => rule.violate("must be valid percent-encoded UTF-8", &mut violations),
                }
            }
            if !seen && rule.rule.required {
                rule.violate("is required", &mut violations);
            }
        }
        for (name, rule) in &self.headers {
            let mut seen = false;
            for value in headers.get_all(name) {
                seen = true;
                match value.to_str() {
                    Ok(text) => rule.check_value(text, &mut violations),
                    Err(_) => rule.violate("must be visible ASCII", &mut violations),
                }
            }
            if !seen && rule.rule.required {
                rule.violate("is required", &mut violations);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

impl Compiled {
    fn check_value(&self, value: &str, out: &mut Vec<Violation>) {
        let rule = &self.rule;
        if let Some(max) = rule.max_length {
            if value.chars().count() > max {
                self.violate(&format!("must be at most {max} characters long"), out);
            }
        }
        if !rule.allowed.is_empty() && !rule.allowed.iter().any(|a| a == value) {
            self.violate(&format!("must be one of: {}", rule.allowed.join(", ")), out);
        }
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(value) {
                self.violate(&format!("must match the pattern {}", pattern.as_str()), out);
            }
        }
        if rule.min.is_some() || rule.max.is_some() {
            match parse_integer(value) {
                None => self.violate("must be an integer", out),
                Some(n) => {
                    if let Some(min) = rule.min.filter(|&min| n < min) {
                        self.violate(&format!("must be at least {min}"), out);
                    }
                    if let Some(max) = rule.max.filter(|&max| n > max) {
                        self.violate(&format!("must be at most {max}"), out);
                    }
                }
            }
        }
    }

    fn violate(&self, message: &str, out: &mut Vec<Violation>) {
        out.push(Violation {
            location: self.location.clone(),
            message: message.into(),
        });
    }
}

/// A decimal integer: optional `-`, then digits only (no `+`, spaces or exponent).
fn parse_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `application/x-www-form-urlencoded` decoding; `None` on a malformed escape.
fn form_decode(raw: &str) -> Option<Cow<'_, [u8]>> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn query_rule(name: &str) -> ParamRule {
        ParamRule {
            name: name.into(),
            location: ParamIn::Query,
            ..ParamRule::default()
        }
    }

    fn header_rule(name: &str) -> ParamRule {
        ParamRule {
            name: name.into(),
            location: ParamIn::Header,
            ..ParamRule::default()
        }
    }

    fn check(rules: Vec<ParamRule>, query: &str) -> Vec<Violation> {
        ParamRules::new(rules)
            .unwrap()
            .check(&HeaderMap::new(), Some(query))
            .err()
            .unwrap_or_default()
    }

    fn at(location: &str, message: &str) -> Violation {
        Violation {
            location: location.into(),
            message: message.into(),
        }
    }

    #[test]
    fn missing_required_query_parameter_is_reported() {
        let rule = ParamRule {
            required: true,
            ..query_rule("page")
        };
        assert_eq!(
            check(vec![rule.clone()], "size=2"),
            [at("query.page", "is required")]
        );
        assert!(check(vec![rule], "page=1").is_empty());
    }

    #[test]
    fn missing_required_header_is_reported() {
        let rules = ParamRules::new(vec![ParamRule {
            required: true,
            ..header_rule("X-Tenant")
        }])
        .unwrap();
        assert_eq!(
            rules.check(&HeaderMap::new(), None),
            Err(vec![at("header.x-tenant", "is required")])
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        assert_eq!(rules.check(&headers, None), Ok(()));
    }

    #[test]
    fn integer_range_is_enforced() {
        let rule = ParamRule {
            min: Some(1),
            max: Some(100),
            ..query_rule("size")
        };
        assert!(check(vec![rule.clone()], "size=100").is_empty());
        assert_eq!(
            check(vec![rule.clone()], "size=0"),
            [at("query.size", "must be at least 1")]
        );
        assert_eq!(
            check(vec![rule.clone()], "size=101"),
            [at("query.size", "must be at most 100")]
        );
        assert_eq!(
            check(vec![rule.clone()], "size=1e2"),
            [at("query.size", "must be an integer")]
        );
        assert_eq!(
            check(vec![rule], "size=+5"),
            [at("query.size", "must be an integer")]
        );
    }

    #[test]
    fn enum_rule_lists_the_allowed_values() {
        let rule = ParamRule {
            allowed: vec!["asc".into(), "desc".into()],
            ..query_rule("order")
        };
        assert!(check(vec![rule.clone()], "order=desc").is_empty());
        assert_eq!(
            check(vec![rule], "order=up"),
            [at("query.order", "must be one of: asc, desc")]
        );
    }

    #[test]
    fn pattern_rule_is_applied_to_the_decoded_value() {
        let rule = ParamRule {
            pattern: Some("^[a-z ]+$".into()),
            ..query_rule("q")
        };
        assert!(check(vec![rule.clone()], "q=hello+world%21").len() == 1);
        assert!(check(vec![rule.clone()], "q=hello+world").is_empty());
        assert!(check(vec![rule], "q=hello%20world").is_empty());
    }

    #[test]
    fn max_length_counts_characters() {
        let rule = ParamRule {
            max_length: Some(3),
            ..query_rule("c")
        };
        assert!(check(vec![rule.clone()], "c=%C3%A9%C3%A9%C3%A9").is_empty());
        assert_eq!(
            check(vec![rule], "c=abcd"),
            [at("query.c", "must be at most 3 characters long")]
        );
    }

    #[test]
    fn every_value_of_a_repeated_parameter_is_checked() {
        let rule = ParamRule {
            allowed: vec!["a".into()],
            ..query_rule("t")
        };
        assert_eq!(check(vec![rule], "t=a&t=b&t=a").len(), 1);
    }

    #[test]
    fn malformed_escape_is_a_violation() {
        let rule = query_rule("q");
        assert_eq!(
            check(vec![rule], "q=%E0%A4"),
            [at("query.q", "must be valid percent-encoded UTF-8")]
        );
    }

    #[test]
    fn value_is_never_echoed() {
        let secret = "sk_live_123456789abcdef";
        let rules = vec![
            ParamRule {
                max_length: Some(4),
                pattern: Some("^x$".into()),
                min: Some(0),
                ..query_rule("token")
            },
            ParamRule {
                allowed: vec!["a".into()],
                ..header_rule("x-key")
            },
        ];
        let compiled = ParamRules::new(rules).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-key", HeaderValue::from_static("sk_live_123456789abcdef"));
        let violations = compiled
            .check(&headers, Some(&format!("token={secret}")))
            .unwrap_err();
        assert_eq!(violations.len(), 4);
        let text = format!("{violations:?}");
        assert!(!text.contains(secret), "{text}");
    }

    #[test]
    fn bad_rules_are_rejected_at_load() {
        let bad_pattern = ParamRule {
            pattern: Some("(".into()),
            ..query_rule("q")
        };
        assert!(matches!(
            ParamRules::new(vec![bad_pattern]),
            Err(ParamError::BadPattern { .. })
        ));
        let range = ParamRule {
            min: Some(5),
            max: Some(1),
            ..query_rule("n")
        };
        assert!(matches!(
            ParamRules::new(vec![range]),
            Err(ParamError::EmptyRange { .. })
        ));
        assert!(matches!(
            ParamRules::new(vec![header_rule("bad header")]),
            Err(ParamError::BadHeaderName(_))
        ));
        assert!(matches!(
            ParamRules::new(vec![query_rule("")]),
            Err(ParamError::EmptyName(_))
        ));
    }
}
