//! Secondary cache key (RFC 9111 §4.1): the request fields a response's `Vary` nominates,
//! normalised so that requests that only differ in syntax match.
//!
//! Normalisation applied to every nominated field:
//! - all field lines are combined, as RFC 9110 §5.3 allows for list fields;
//! - list members are split at commas outside quoted strings, trimmed, and empty members
//!   dropped, then re-joined with `,` (so `a,b`, `a , b` and two lines `a` / `b` match);
//! - a field absent from the request only matches an absent field; present but empty is a
//!   different value (an empty `Accept-Encoding` means "identity only").
//!
//! Extra, field-specific normalisation where the field's definition makes it safe:
//! - `Accept-Encoding`, `Accept-Language`, `Accept-Charset`: members are lower-cased (codings,
//!   language tags and charsets are case-insensitive) and whitespace around `;` removed;
//! - `Accept`: type/subtype lower-cased, whitespace around `;` removed; parameter values keep
//!   their case (they may be case-sensitive);
//! - `Cookie`: lines are joined with `; ` (HTTP/2 splits cookies across lines, RFC 9113
//!   §8.2.3) and pairs trimmed;
//! - fields whose value may contain commas that are not list separators (`User-Agent`,
//!   `Referer`, the date-valued conditionals) are only trimmed.
//!
//! Members are never reordered: servers may use member order to break ties between equal
//! quality values (RFC 9110 §12.5.4 notes this for languages), so order is significant.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, VARY};

use super::control::{is_tchar, split_list, trim};

/// What a stored response's `Vary` asks of later requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`: any request for the URI matches.
    #[default]
    Absent,
    /// `Vary: *` (or a malformed `Vary`): no request ever matches without revalidation.
    Any,
    /// The nominated request fields and the original request's normalised values.
    Fields(Vec<VariedField>),
}

/// One nominated request field and its normalised value in the original request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariedField {
    pub name: HeaderName,
    /// `None` when the original request did not carry the field.
    pub value: Option<Bytes>,
}

/// The field names a response's `Vary` nominates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaryNames {
    Absent,
    Any,
    /// Deduplicated, sorted names.
    Fields(Vec<HeaderName>),
}

impl Vary {
    /// The secondary key of a response: its `Vary` names with the request's values.
    pub fn from_exchange(response: &HeaderMap, request: &HeaderMap) -> Self {
        match vary_names(response) {
            VaryNames::Absent => Vary::Absent,
            VaryNames::Any => Vary::Any,
            VaryNames::Fields(names) => Vary::Fields(
                names
                    .into_iter()
                    .map(|name| VariedField {
                        value: normalized_value(&name, request),
                        name,
                    })
                    .collect(),
            ),
        }
    }

    /// Whether `request` selects the stored response.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        match self {
            Vary::Absent => true,
            Vary::Any => false,
            Vary::Fields(fields) => fields
                .iter()
                .all(|field| normalized_value(&field.name, request) == field.value),
        }
    }
}

/// Whether `request` may be served the stored response with secondary key `stored`.
pub fn matches(stored: &Vary, request: &HeaderMap) -> bool {
    stored.matches(request)
}

/// Reads a response's `Vary` names. A member that is neither `*` nor a field name makes
/// the whole `Vary` behave as `*`: the response then never matches, which is safe.
pub fn vary_names(response: &HeaderMap) -> VaryNames {
    let mut names: Vec<HeaderName> = Vec::new();
    let mut any_line = false;
    for line in response.get_all(VARY) {
        any_line = true;
        for member in split_list(line.as_bytes()) {
            if member == b"*" || !member.iter().all(|&b| is_tchar(b)) {
                return VaryNames::Any;
            }
            match HeaderName::from_bytes(member) {
                Ok(name) => names.push(name),
                Err(_) => return VaryNames::Any,
            }
        }
    }
    if !any_line || names.is_empty() {
        return VaryNames::Absent;
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    VaryNames::Fields(names)
}

/// The normalised value of `name` in `request`, `None` when absent.
pub fn normalized_value(name: &HeaderName, request: &HeaderMap) -> Option<Bytes> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let kind = FieldKind::of(name);
    let mut out = Vec::new();
    for line in lines {
        match kind {
            FieldKind::Opaque => {
                if !out.is_empty() {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(trim(line.as_bytes()));
            }
            FieldKind::Cookie => {
                for pair in line.as_bytes().split(|&b| b == b';').map(trim) {
                    if !pair.is_empty() {
                        if !out.is_empty() {
                            out.extend_from_slice(b"; ");
                        }
                        out.extend_from_slice(pair);
                    }
                }
            }
            FieldKind::List(style) => {
                for member in split_list(line.as_bytes()) {
                    if !out.is_empty() {
                        out.push(b',');
                    }
                    push_member(&mut out, member, style);
                }
            }
        }
    }
    Some(Bytes::from(out))
}

/// How a field's value is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Opaque,
    Cookie,
    List(MemberStyle),
}

/// What may be normalised inside one list member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberStyle {
    /// Kept byte for byte.
    AsIs,
    /// Lower-cased entirely; whitespace around `;` removed.
    CaseInsensitive,
    /// Lower-cased before the first `;`; whitespace around `;` removed.
    MediaRange,
}

impl FieldKind {
    fn of(name: &HeaderName) -> Self {
        match name.as_str() {
            "accept-encoding" | "accept-language" | "accept-charset" => {
                FieldKind::List(MemberStyle::CaseInsensitive)
            }
            "accept" => FieldKind::List(MemberStyle::MediaRange),
            "cookie" => FieldKind::Cookie,
            "user-agent"
            | "referer"
            | "date"
            | "if-modified-since"
            | "if-unmodified-since"
            | "if-range" => FieldKind::Opaque,
            _ => FieldKind::List(MemberStyle::AsIs),
        }
    }
}

fn push_member(out: &mut Vec<u8>, member: &[u8], style: MemberStyle) {
    if style == MemberStyle::AsIs {
        out.extend_from_slice(member);
        return;
    }
    let mut lower = true;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut bytes = member.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_quotes {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_quotes = true;
                out.push(b);
            }
            b';' => {
                while out.last().is_some_and(|&l| l == b' ' || l == b'\t') {
                    out.pop();
                }
                out.push(b';');
                while bytes.peek().is_some_and(|&n| n == b' ' || n == b'\t') {
                    bytes.next();
                }
                if style == MemberStyle::MediaRange {
                    lower = false;
                }
            }
            _ if lower => out.push(b.to_ascii_lowercase()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use proptest::prelude::*;

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn stored(vary: &'static str, request: &[(&'static str, &'static str)]) -> Vary {
        Vary::from_exchange(&map(&[("vary", vary)]), &map(request))
    }

    #[test]
    fn response_without_vary_matches_any_request() {
        let key = Vary::from_exchange(&HeaderMap::new(), &map(&[("accept", "text/html")]));
        assert!(key.matches(&map(&[("accept", "image/png")])));
    }

    #[test]
    fn vary_star_never_matches() {
        let key = stored("*", &[]);
        assert_eq!(key, Vary::Any);
        assert!(!key.matches(&HeaderMap::new()));
    }

    #[test]
    fn star_among_names_never_matches() {
        assert_eq!(stored("Accept, *", &[]), Vary::Any);
    }

    #[test]
    fn malformed_vary_member_never_matches() {
        assert_eq!(stored("Accept, x(y)", &[]), Vary::Any);
    }

    #[test]
    fn vary_names_are_case_insensitive_and_deduplicated() {
        let names = vary_names(&map(&[(
            "vary",
            "Accept-Encoding, accept-encoding, Accept",
        )]));
        assert_eq!(
            names,
            VaryNames::Fields(vec![http::header::ACCEPT, http::header::ACCEPT_ENCODING])
        );
    }

    #[test]
    fn vary_names_are_read_from_every_line() {
        let names = vary_names(&map(&[("vary", "accept"), ("vary", "origin")]));
        assert_eq!(
            names,
            VaryNames::Fields(vec![http::header::ACCEPT, http::header::ORIGIN])
        );
    }

    #[test]
    fn empty_vary_is_no_vary() {
        assert_eq!(stored(" ", &[("accept", "x/y")]), Vary::Absent);
    }

    #[test]
    fn same_value_matches() {
        let key = stored("Accept-Encoding", &[("accept-encoding", "gzip, br")]);
        assert!(key.matches(&map(&[("accept-encoding", "gzip, br")])));
    }

    #[test]
    fn different_value_does_not_match() {
        let key = stored("Accept-Encoding", &[("accept-encoding", "gzip")]);
        assert!(!key.matches(&map(&[("accept-encoding", "br")])));
    }

    #[test]
    fn differently_spaced_values_match() {
        let key = stored("Accept-Encoding", &[("accept-encoding", "gzip,br ; q=0.5")]);
        assert!(key.matches(&map(&[("accept-encoding", "gzip ,  br;q=0.5")])));
    }

    #[test]
    fn split_lines_match_the_combined_line() {
        let key = stored("X-Features", &[("x-features", "a, b")]);
        assert!(key.matches(&map(&[("x-features", "a"), ("x-features", "b")])));
    }

    #[test]
    fn member_order_is_significant() {
        let key = stored("Accept-Language", &[("accept-language", "fr, en")]);
        assert!(!key.matches(&map(&[("accept-language", "en, fr")])));
    }

    #[test]
    fn case_insensitive_fields_match_in_any_case() {
        let key = stored("Accept-Encoding", &[("accept-encoding", "GZIP")]);
        assert!(key.matches(&map(&[("accept-encoding", "gzip")])));
    }

    #[test]
    fn unknown_fields_keep_their_case() {
        let key = stored("X-Tenant", &[("x-tenant", "Acme")]);
        assert!(!key.matches(&map(&[("x-tenant", "acme")])));
    }

    #[test]
    fn media_type_parameters_keep_their_case() {
        let key = stored("Accept", &[("accept", "Text/HTML; level=\"A\"")]);
        assert!(key.matches(&map(&[("accept", "text/html;level=\"A\"")])));
        assert!(!key.matches(&map(&[("accept", "text/html;level=\"a\"")])));
    }

    #[test]
    fn commas_in_quoted_strings_are_not_separators() {
        let key = stored("X-List", &[("x-list", "\"a, b\"")]);
        assert!(!key.matches(&map(&[("x-list", "\"a,b\"")])));
    }

    #[test]
    fn absent_field_only_matches_absent_field() {
        let key = stored("Accept-Encoding", &[]);
        assert!(key.matches(&HeaderMap::new()));
        assert!(!key.matches(&map(&[("accept-encoding", "gzip")])));
    }

    #[test]
    fn empty_field_does_not_match_absent_field() {
        let key = stored("Accept-Encoding", &[("accept-encoding", "")]);
        assert!(!key.matches(&HeaderMap::new()));
        assert!(key.matches(&map(&[("accept-encoding", " ")])));
    }

    #[test]
    fn cookie_lines_split_by_http2_match_one_cookie_line() {
        let key = stored("Cookie", &[("cookie", "a=1; b=2")]);
        assert!(key.matches(&map(&[("cookie", "a=1"), ("cookie", "b=2")])));
    }

    #[test]
    fn user_agent_commas_are_kept() {
        let key = stored("User-Agent", &[("user-agent", "x (a, b)")]);
        assert!(!key.matches(&map(&[("user-agent", "x (a,b)")])));
    }

    #[test]
    fn every_nominated_field_must_match() {
        let key = stored(
            "Accept, Origin",
            &[("accept", "a/b"), ("origin", "https://x")],
        );
        assert!(!key.matches(&map(&[("accept", "a/b"), ("origin", "https://y")])));
        assert!(matches(
            &key,
            &map(&[("accept", "a/b"), ("origin", "https://x")])
        ));
    }

    proptest! {
        #[test]
        fn normalisation_never_panics(
            name in prop::sample::select(vec!["accept", "accept-encoding", "cookie", "user-agent", "x-any"]),
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
        ) {
            let mut request = HeaderMap::new();
            let mut response = HeaderMap::new();
            for line in lines {
                if let Ok(value) = HeaderValue::from_bytes(&line) {
                    request.append(name, value.clone());
                    response.append(VARY, value);
                }
            }
            let key = Vary::from_exchange(&response, &request);
            let name = HeaderName::from_static(name);
            let _ = normalized_value(&name, &request);
            if key != Vary::Any {
                prop_assert!(key.matches(&request));
            }
        }
    }
}
