//! Cache-Control parsing (RFC 9111 §5.2, RFC 5861, RFC 8246) for requests and responses.
//!
//! Every field line is read; directive names are case-insensitive; arguments may be tokens
//! or quoted strings whatever form the RFC says senders use (§5.2: recipients accept both).
//! Unknown directives are ignored (§5.2.3). Invalid or repeated values follow one rule:
//! the most restrictive reading wins (§4.2.1):
//!
//! - response `max-age` / `s-maxage`: invalid, or repeated with different values → 0, so the
//!   response is stale on arrival ("consider the response stale"); identical repeats are one;
//! - request `max-age`: invalid → 0; repeats → the smallest;
//! - request `min-fresh`: invalid → 2^31 (never fresh enough); repeats → the largest;
//! - `max-stale`, `stale-while-revalidate`, `stale-if-error`: invalid → absent (no
//!   permission to serve stale); repeats → the smallest;
//! - `no-cache` / `private`: the unqualified form wins over field lists; field lists add up;
//!   an empty or malformed field list counts as unqualified.
//!
//! `Pragma: no-cache` counts as request `no-cache` only when the request has no
//! Cache-Control field at all (RFC 9111 §5.4).
//!
//! A response's directives come from its first valid targeted field (RFC 9213), in the
//! order of [`TARGETED`], when it has one; Cache-Control (and `Expires`) are then ignored.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, CACHE_CONTROL, PRAGMA};

/// Compares a directive name with a lower-case literal, case-insensitively.
macro_rules! match_directive {
    ($name:expr, $($literal:literal => $action:expr),+ $(,)?) => {{
        let name: &[u8] = $name;
        $(if name.eq_ignore_ascii_case($literal.as_bytes()) { $action; } else)+ {}
    }};
}

/// The targeted cache-control fields this cache obeys, first match wins (RFC 9213 §2.1):
/// its own, then the one for every CDN, then the older `Surrogate-Control`.
pub static TARGETED: [HeaderName; 3] = [
    HeaderName::from_static("ferrogate-cache-control"),
    HeaderName::from_static("cdn-cache-control"),
    HeaderName::from_static("surrogate-control"),
];

/// The largest delta-seconds value kept (RFC 9111 §1.2.2): larger values saturate here.
pub const DELTA_SECONDS_MAX: u32 = 1 << 31;

/// Directives of a request's Cache-Control (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    pub max_age: Option<u32>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<u32>,
    pub no_cache: bool,
    pub no_store: bool,
    pub no_transform: bool,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u32>,
}

/// Directives of a response's Cache-Control (RFC 9111 §5.2.2, RFC 5861, RFC 8246).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub no_cache: FieldScope,
    pub private: FieldScope,
    pub no_store: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    /// The directives came from a targeted field: `Expires` does not count either.
    pub targeted: bool,
}

/// How far a `no-cache` or `private` response directive reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldScope {
    #[default]
    Absent,
    /// Unqualified: the whole response.
    Whole,
    /// Qualified: only these header fields (deduplicated, in first-seen order).
    Fields(Vec<HeaderName>),
}

/// A request's `max-stale`: without a value the client takes a response of any staleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    Any,
    Within(u32),
}

/// Accumulates one delta-seconds directive across repeats.
#[derive(Debug, Default)]
struct DeltaSlot {
    seen: bool,
    invalid: bool,
    min: u32,
    max: u32,
}

/// Accumulates `max-stale`, which may appear without a value.
#[derive(Debug, Default)]
struct MaxStaleSlot {
    invalid: bool,
    value: Option<MaxStale>,
}

impl RequestDirectives {
    /// Parses the request's Cache-Control lines, or `Pragma: no-cache` when there are none.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        if !headers.contains_key(CACHE_CONTROL) {
            out.no_cache = pragma_no_cache(headers);
            return out;
        }
        let (mut max_age, mut min_fresh, mut sie) = Default::default();
        let mut max_stale = MaxStaleSlot::default();
        for (name, arg) in directives(headers) {
            match_directive!(name,
                "max-age" => slot(&mut max_age, arg),
                "max-stale" => max_stale.add(arg),
                "min-fresh" => slot(&mut min_fresh, arg),
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "no-transform" => out.no_transform = true,
                "only-if-cached" => out.only_if_cached = true,
                "stale-if-error" => slot(&mut sie, arg),
            );
        }
        out.max_age = max_age.finish(|s| if s.invalid { 0 } else { s.min });
        out.min_fresh = min_fresh.finish(|s| if s.invalid { DELTA_SECONDS_MAX } else { s.max });
        out.max_stale = max_stale.finish();
        out.stale_if_error = permission(sie);
        out
    }
}

impl ResponseDirectives {
    /// Parses the response's policy field: its first valid targeted field, else all its
    /// Cache-Control lines.
    pub fn parse(headers: &HeaderMap) -> Self {
        let field = TARGETED
            .iter()
            .find(|name| valid_targeted(headers, name))
            .unwrap_or(&CACHE_CONTROL);
        let mut out = Self {
            targeted: *field != CACHE_CONTROL,
            ..Self::default()
        };
        let (mut max_age, mut s_maxage, mut swr, mut sie) = Default::default();
        // Surrogate-Control values may name the surrogate they target (`max-age=60;edge`,
        // W3C Edge Architecture); this cache reads every one as its own.
        let surrogate = *field == TARGETED[2];
        for (name, arg) in directives_of(headers, field) {
            let arg = match (surrogate, arg) {
                (true, Some(a)) => Some(untargeted(a)),
                (_, arg) => arg,
            };
            match_directive!(name,
                "max-age" => slot(&mut max_age, arg),
                "s-maxage" => slot(&mut s_maxage, arg),
                "no-cache" => out.no_cache.add(arg),
                "private" => out.private.add(arg),
                "no-store" => out.no_store = true,
                "public" => out.public = true,
                "must-revalidate" => out.must_revalidate = true,
                "proxy-revalidate" => out.proxy_revalidate = true,
                "must-understand" => out.must_understand = true,
                "no-transform" => out.no_transform = true,
                "immutable" => out.immutable = true,
                "stale-while-revalidate" => slot(&mut swr, arg),
                "stale-if-error" => slot(&mut sie, arg),
            );
        }
        out.max_age = max_age.finish(stale_when_ambiguous);
        out.s_maxage = s_maxage.finish(stale_when_ambiguous);
        out.stale_while_revalidate = permission(swr);
        out.stale_if_error = permission(sie);
        out
    }

    /// Whether the response states its own freshness lifetime (RFC 9111 §4.2.1) in
    /// Cache-Control; `Expires` is checked separately.
    pub fn has_explicit_lifetime(&self) -> bool {
        self.max_age.is_some() || self.s_maxage.is_some()
    }

    /// Whether a shared cache must not serve this response stale (RFC 9111 §4.2.4):
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` (which implies proxy-revalidate)
    /// or unqualified `no-cache`.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate
            || self.proxy_revalidate
            || self.s_maxage.is_some()
            || self.no_cache == FieldScope::Whole
    }
}

impl FieldScope {
    /// The field names of a qualified directive; empty for absent or unqualified.
    pub fn field_names(&self) -> &[HeaderName] {
        match self {
            FieldScope::Fields(names) => names,
            FieldScope::Absent | FieldScope::Whole => &[],
        }
    }

    fn add(&mut self, arg: Option<Cow<'_, [u8]>>) {
        let names = arg.as_deref().and_then(field_name_list);
        match (std::mem::take(self), names) {
            (FieldScope::Whole, _) | (_, None) => *self = FieldScope::Whole,
            (FieldScope::Absent, Some(names)) => *self = FieldScope::Fields(names),
            (FieldScope::Fields(mut known), Some(names)) => {
                for name in names {
                    if !known.contains(&name) {
                        known.push(name);
                    }
                }
                *self = FieldScope::Fields(known);
            }
        }
    }
}

impl DeltaSlot {
    fn finish(self, resolve: impl FnOnce(&DeltaSlot) -> u32) -> Option<u32> {
        self.seen.then(|| resolve(&self))
    }
}

impl MaxStaleSlot {
    fn add(&mut self, arg: Option<Cow<'_, [u8]>>) {
        let next = match arg {
            None => MaxStale::Any,
            Some(arg) => match parse_delta_seconds(&arg) {
                Some(secs) => MaxStale::Within(secs),
                None => {
                    self.invalid = true;
                    return;
                }
            },
        };
        self.value = Some(match (self.value, next) {
            (Some(MaxStale::Within(a)), MaxStale::Within(b)) => MaxStale::Within(a.min(b)),
            (Some(MaxStale::Within(a)), MaxStale::Any) => MaxStale::Within(a),
            (_, next) => next,
        });
    }

    fn finish(self) -> Option<MaxStale> {
        if self.invalid {
            None
        } else {
            self.value
        }
    }
}

/// Parses delta-seconds (1*DIGIT), saturating at 2^31 (RFC 9111 §1.2.2).
pub fn parse_delta_seconds(value: &[u8]) -> Option<u32> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut total: u64 = 0;
    for &digit in value {
        total = total * 10 + u64::from(digit - b'0');
        if total >= u64::from(DELTA_SECONDS_MAX) {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    u32::try_from(total).ok()
}

fn slot(slot: &mut DeltaSlot, arg: Option<Cow<'_, [u8]>>) {
    match arg.as_deref().and_then(parse_delta_seconds) {
        Some(secs) if slot.seen => {
            slot.min = slot.min.min(secs);
            slot.max = slot.max.max(secs);
        }
        Some(secs) => {
            slot.min = secs;
            slot.max = secs;
        }
        None => slot.invalid = true,
    }
    slot.seen = true;
}

/// Response max-age / s-maxage: ambiguity means stale (RFC 9111 §4.2.1).
fn stale_when_ambiguous(slot: &DeltaSlot) -> u32 {
    if slot.invalid || slot.min != slot.max {
        0
    } else {
        slot.min
    }
}

/// A permission to serve stale: invalid grants nothing, repeats grant the least.
fn permission(slot: DeltaSlot) -> Option<u32> {
    (slot.seen && !slot.invalid).then_some(slot.min)
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(PRAGMA)
        .iter()
        .any(|line| split_list(line.as_bytes()).any(|item| item.eq_ignore_ascii_case(b"no-cache")))
}

/// `"Set-Cookie, X-Token"` (or a bare token) → header names; `None` if empty or malformed.
fn field_name_list(arg: &[u8]) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for item in split_list(arg) {
        let name = HeaderName::from_bytes(item).ok()?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    (!names.is_empty()).then_some(names)
}

/// One directive: its name and its unquoted argument.
type Directive<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// All directives of all Cache-Control lines.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = Directive<'_>> {
    directives_of(headers, &CACHE_CONTROL)
}

/// All directives of all lines of field `name`.
fn directives_of<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Directive<'h>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|line| split_list(line.as_bytes()))
        .filter_map(split_directive)
}

/// A targeted field is used only when present and well-formed (RFC 9213 §2.1): at least
/// one member, and every member a lower-case `key` or `key=value`. An invalid one is
/// ignored, as if absent.
fn valid_targeted(headers: &HeaderMap, name: &HeaderName) -> bool {
    let mut members = headers
        .get_all(name)
        .iter()
        .flat_map(|line| split_list(line.as_bytes()))
        .peekable();
    if members.peek().is_none() {
        return false;
    }
    members.all(|m| {
        split_directive(m).is_some_and(|(key, arg)| {
            key.first()
                .is_some_and(|b| b.is_ascii_lowercase() || *b == b'*')
                && !key.iter().any(u8::is_ascii_uppercase)
                && arg.is_none_or(|a| !a.is_empty())
        })
    })
}

/// A Surrogate-Control argument without its `;target` suffix.
fn untargeted(arg: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    match arg.iter().position(|&b| b == b';') {
        None => arg,
        Some(at) => Cow::Owned(trim(&arg[..at]).to_vec()),
    }
}

/// Removes the targeted fields from a response to a client (`cache.strip_targeted`).
pub fn strip_targeted(headers: &mut HeaderMap) {
    for name in &TARGETED {
        headers.remove(name);
    }
}

/// `name[=arg]`; the argument is unquoted when it is a quoted string. Names that are not
/// tokens make the element unknown, hence ignored.
fn split_directive(element: &[u8]) -> Option<Directive<'_>> {
    let (name, arg) = match element.iter().position(|&b| b == b'=') {
        Some(eq) => (trim(&element[..eq]), Some(trim(&element[eq + 1..]))),
        None => (element, None),
    };
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    Some((name, arg.map(unquote)))
}

/// A quoted string's content with escapes resolved; other values are returned as they are.
/// An unterminated quote keeps its raw bytes, which then fail any argument parse.
fn unquote(arg: &[u8]) -> Cow<'_, [u8]> {
    let Some(inner) = arg.strip_prefix(b"\"").and_then(|a| a.strip_suffix(b"\"")) else {
        return Cow::Borrowed(arg);
    };
    if !inner.contains(&b'\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            if let Some(&escaped) = bytes.next() {
                out.push(escaped);
            }
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// Splits a comma-separated list at commas outside quoted strings, trimming OWS and
/// dropping empty elements (RFC 9110 §5.6.1).
pub(crate) fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || loop {
        let current = rest?;
        let end = list_element_end(current);
        let (element, tail) = match current.get(end..) {
            Some([b',', tail @ ..]) => (&current[..end], Some(tail)),
            _ => (current, None),
        };
        rest = tail;
        let element = trim(element);
        if !element.is_empty() {
            return Some(element);
        }
    })
}

/// Index of the first comma outside a quoted string, or the length.
fn list_element_end(value: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        match (in_quotes, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => in_quotes = !in_quotes,
            (false, _, b',') => return i,
            _ => {}
        }
    }
    value.len()
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// RFC 9110 §5.6.2 tchar.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "control/tests.rs"]
mod tests;
