//! Path matching within one host tier: exact, template, prefix and regex paths in their order.

use std::cmp::Reverse;
use std::collections::HashMap;

use regex::Regex;

use super::params::Params;
use super::{RouterError, Scope};
use crate::config::model::{PathMatch, Route};

/// The paths of the routes registered for one host tier.
#[derive(Debug, Default)]
pub(super) struct PathTable {
    /// Route indices per exact path, in configuration order.
    exact: HashMap<Box<str>, Vec<usize>>,
    templates: TemplateSet,
    /// Longest prefix first, then configuration order.
    prefixes: Vec<PrefixRule>,
    /// Configuration order.
    regexes: Vec<RegexRule>,
}

#[derive(Debug)]
struct PrefixRule {
    prefix: Box<str>,
    route: usize,
}

#[derive(Debug)]
struct RegexRule {
    regex: Regex,
    route: usize,
}

/// Distinct templates of one host tier; routes sharing a template share an entry.
#[derive(Debug, Default)]
struct TemplateSet {
    /// Maps a path to the entry of its most specific matching template.
    tree: matchit::Router<usize>,
    entries: Vec<TemplateEntry>,
    /// Entry index per template text.
    by_text: HashMap<Box<str>, usize>,
    /// Entry indices, most specific template first.
    order: Vec<usize>,
}

#[derive(Debug)]
struct TemplateEntry {
    /// Configuration order.
    routes: Vec<usize>,
    /// This template alone, for the fallback when the tree's pick refuses the request.
    alone: matchit::Router<()>,
    specificity: Vec<u16>,
}

// Specificity tokens: literal bytes sort as themselves, before any of these.
const PARAM: u16 = 0x100;
const CATCH_ALL: u16 = 0x101;
const END: u16 = 0x102;

impl PathTable {
    /// Registers route `index` (of `routes`) in this table.
    pub(super) fn add(
        &mut self,
        index: usize,
        routes: &[Route],
        scope: &Scope,
    ) -> Result<(), RouterError> {
        let Some(route) = routes.get(index) else {
            debug_assert!(false, "route index {index} out of range");
            return Ok(());
        };
        match &route.matcher.path {
            PathMatch::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(index),
            PathMatch::Template(t) => self.templates.add(t, index, routes, scope)?,
            PathMatch::Prefix(p) => self.prefixes.push(PrefixRule {
                prefix: p.as_str().into(),
                route: index,
            }),
            PathMatch::Regex(r) => self.regexes.push(RegexRule {
                regex: r.clone(),
                route: index,
            }),
        }
        Ok(())
    }

    /// Puts the rules in lookup order once every route is added.
    pub(super) fn finish(&mut self) {
        // Stable: equal lengths keep configuration order.
        self.prefixes.sort_by_key(|r| Reverse(r.prefix.len()));
        let entries = &self.templates.entries;
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| entries[a].specificity.cmp(&entries[b].specificity));
        self.templates.order = order;
    }

    /// The first route, in precedence order, whose path matches and which `accept`s.
    pub(super) fn find<'r>(
        &'r self,
        path: &str,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<(usize, Params<'r>)> {
        if !self.exact.is_empty() {
            if let Some(routes) = self.exact.get(path) {
                if let Some(&route) = routes.iter().find(|&&r| accept(r)) {
                    return Some((route, Params::default()));
                }
            }
        }
        if let Some(found) = self.templates.find(path, &mut accept) {
            return Some(found);
        }
        for rule in &self.prefixes {
            if prefix_matches(&rule.prefix, path) && accept(rule.route) {
                return Some((rule.route, Params::default()));
            }
        }
        for rule in &self.regexes {
            if rule.regex.is_match(path) && accept(rule.route) {
                return Some((rule.route, Params::default()));
            }
        }
        None
    }
}

impl TemplateSet {
    fn add(
        &mut self,
        template: &str,
        index: usize,
        routes: &[Route],
        scope: &Scope,
    ) -> Result<(), RouterError> {
        if let Some(entry) = self
            .by_text
            .get(template)
            .and_then(|&e| self.entries.get_mut(e))
        {
            entry.routes.push(index);
            return Ok(());
        }
        let name = || {
            routes
                .get(index)
                .map_or_else(String::new, |r| r.name.clone())
        };
        let invalid = |reason| RouterError::InvalidTemplate {
            route: name(),
            template: template.to_owned(),
            reason,
        };
        let mut alone = matchit::Router::new();
        alone.insert(template, ()).map_err(invalid)?;
        self.tree
            .insert(template, self.entries.len())
            .map_err(|e| match e {
                matchit::InsertError::Conflict { with } => RouterError::TemplateConflict {
                    route: name(),
                    template: template.to_owned(),
                    other: self
                        .by_text
                        .get(with.as_str())
                        .and_then(|&e| self.entries.get(e))
                        .and_then(|e| e.routes.first())
                        .and_then(|&i| routes.get(i))
                        .map_or_else(|| "?".to_owned(), |r| r.name.clone()),
                    with,
                    scope: scope.to_string(),
                },
                other => invalid(other),
            })?;
        self.by_text.insert(template.into(), self.entries.len());
        self.entries.push(TemplateEntry {
            routes: vec![index],
            alone,
            specificity: specificity(template),
        });
        Ok(())
    }

    fn find<'r>(
        &'r self,
        path: &str,
        accept: &mut impl FnMut(usize) -> bool,
    ) -> Option<(usize, Params<'r>)> {
        if self.entries.is_empty() {
            return None;
        }
        // The tree yields the most specific matching template; none matching means no
        // template can match at all.
        let best = self.tree.at(path).ok()?;
        let first = *best.value;
        if let Some(entry) = self.entries.get(first) {
            if let Some(&route) = entry.routes.iter().find(|&&r| accept(r)) {
                return Some((route, Params::from_matchit(&best.params, path)));
            }
        }
        // Rare: every route of that template refused the request (method, header, query).
        // Less specific templates may still match the path; try them in order.
        for &e in &self.order {
            let Some(entry) = self.entries.get(e).filter(|_| e != first) else {
                continue;
            };
            let Ok(m) = entry.alone.at(path) else {
                continue;
            };
            if let Some(&route) = entry.routes.iter().find(|&&r| accept(r)) {
                return Some((route, Params::from_matchit(&m.params, path)));
            }
        }
        None
    }
}

/// Segment-aware prefix test: `/api` matches `/api` and `/api/x`, not `/apix`.
pub(super) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.as_bytes().strip_prefix(prefix.as_bytes()) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.first() == Some(&b'/'),
    }
}

/// Sort key of a template: smaller is more specific (see the precedence in the module docs).
fn specificity(template: &str) -> Vec<u16> {
    let mut key = Vec::with_capacity(template.len() + 1);
    let mut bytes = template.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            // `{{` and `}}` are escaped literal braces.
            b'{' | b'}' if bytes.peek() == Some(&b) => {
                bytes.next();
                key.push(u16::from(b));
            }
            b'{' => {
                let catch_all = bytes.peek() == Some(&b'*');
                for c in bytes.by_ref() {
                    if c == b'}' {
                        break;
                    }
                }
                key.push(if catch_all { CATCH_ALL } else { PARAM });
            }
            _ => key.push(u16::from(b)),
        }
    }
    key.push(END);
    key
}
