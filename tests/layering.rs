//! The module layers of docs/architecture.md hold in `src/`: no module refers to a module of
//! a higher layer, and modules of one layer do not refer to each other in a circle. The
//! table in docs/architecture.md ("## Layers") is the rule; this test reads it, reads every
//! `crate::…` path in the code of `src/` (comments left out), and names each offending
//! reference with its file and line.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// One layer of the table: its name and the modules (top-level, or `folder::module` where a
/// folder's module sits in another layer than the folder) that belong to it.
#[derive(Debug)]
struct Layer {
    name: String,
    units: Vec<String>,
}

/// One `crate::…` path in the code of a file.
#[derive(Debug)]
struct Reference {
    file: String,
    line: usize,
    path: String,
}

/// Reads the `## Layers` table of docs/architecture.md: a row per layer, lowest first, its
/// modules written as `code` in the second column.
fn layers(doc: &str) -> Vec<Layer> {
    let mut rows = doc
        .lines()
        .skip_while(|l| l.trim() != "## Layers")
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2);
    let mut out = Vec::new();
    for row in rows.by_ref() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(name), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let units = modules
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        out.push(Layer {
            name: (*name).to_owned(),
            units,
        });
    }
    out
}

/// The module path of a file under `src/` (`auth/jwt/keys.rs` → `auth::jwt::keys`); the
/// crate root is the empty path.
fn module_of(rel: &str) -> String {
    let stem = rel.trim_end_matches(".rs");
    let mut parts: Vec<&str> = stem.split('/').collect();
    if matches!(parts.last(), Some(&"mod") | Some(&"lib") | Some(&"main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its comments and string literals, line breaks kept.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut block = 0usize;
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if block > 0 {
            match (c, next) {
                ('*', Some('/')) => {
                    chars.next();
                    block -= 1;
                }
                ('/', Some('*')) => {
                    chars.next();
                    block += 1;
                }
                ('\n', _) => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                block = 1;
            }
            ('"', _) => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every `crate::…` path in `code`, groups (`crate::{a, b::{c, d}}`) spread into one path each.
fn references(file: &str, code: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if preceded {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let mut paths = Vec::new();
        let end = parse_tree(code, from, String::new(), &mut paths);
        from = end.max(from);
        for path in paths {
            out.push(Reference {
                file: file.to_owned(),
                line,
                path,
            });
        }
    }
    out
}

/// Parses a use-tree at `at` (after `crate::` or inside a group) with `prefix` before it;
/// returns where it ends.
fn parse_tree(code: &str, mut at: usize, prefix: String, out: &mut Vec<String>) -> usize {
    let bytes = code.as_bytes();
    let mut path = prefix;
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                at = parse_tree(code, at, path.clone(), out);
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
            }
        }
        let ident_start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        let ident = &code[ident_start..at];
        if ident.is_empty() || ident == "self" {
            if !path.is_empty() {
                out.push(path);
            }
            return at;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(ident);
        if code[at..].starts_with("::") {
            at += 2;
            continue;
        }
        out.push(path);
        return at;
    }
}

/// The unit a module path belongs to: the longest unit of the table it starts with.
fn unit_of<'a>(path: &str, units: &'a BTreeMap<String, usize>) -> Option<&'a str> {
    units
        .keys()
        .filter(|u| path == u.as_str() || path.starts_with(&format!("{u}::")))
        .max_by_key(|u| u.len())
        .map(String::as_str)
}

/// What is wrong with `files` (path under `src/`, text) under `layers`, one line each.
fn violations(layers: &[Layer], files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut rank = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        for unit in &layer.units {
            rank.insert(unit.clone(), i);
        }
    }
    // Unit-to-unit edges within one layer, with one place each was seen, for circles.
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, text) in files {
        let module = module_of(rel);
        if module.is_empty() {
            continue; // the crate root declares the modules
        }
        let Some(from) = unit_of(&module, &rank) else {
            problems.push(format!(
                "src/{rel}: module `{module}` is in no layer of docs/architecture.md"
            ));
            continue;
        };
        for r in references(rel, &code_only(text)) {
            let Some(to) = unit_of(&r.path, &rank) else {
                continue; // a crate-root item or a module the check above reports
            };
            if to == from {
                continue;
            }
            let (lf, lt) = (rank[from], rank[to]);
            if lt > lf {
                problems.push(format!(
                    "src/{}:{}: `crate::{}`: `{from}` (layer {}) refers to `{to}` of the higher layer {}",
                    r.file, r.line, r.path, layers[lf].name, layers[lt].name
                ));
            } else if lt == lf {
                edges
                    .entry(from.to_owned())
                    .or_default()
                    .entry(to.to_owned())
                    .or_insert_with(|| format!("src/{}:{}", r.file, r.line));
            }
        }
    }
    problems.extend(circles(&edges));
    problems
}

/// Each circle among the units of one layer, named with one reference per step.
fn circles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).map(|m| m.keys()).into_iter().flatten() {
                if next == start {
                    let mut ring = trail.clone();
                    // One report per circle, whichever unit it is seen from.
                    let low = ring
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, u)| u.as_str())
                        .map(|(i, _)| i);
                    ring.rotate_left(low.unwrap_or(0));
                    found.insert(ring);
                } else if !trail.contains(next) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|ring| {
            let steps: Vec<String> = ring
                .iter()
                .zip(ring.iter().cycle().skip(1))
                .map(|(a, b)| format!("`{a}` → `{b}` ({})", edges[a][b]))
                .collect();
            format!("circle within one layer: {}", steps.join(", "))
        })
        .collect()
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}

fn project() -> (Vec<Layer>, Vec<(String, String)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut files = Vec::new();
    source_files(&root.join("src"), &root.join("src"), &mut files);
    (layers(&doc), files)
}

#[test]
fn no_module_refers_to_a_higher_layer_or_in_a_circle() {
    let (layers, files) = project();
    assert!(
        layers.len() >= 5,
        "the layers table of docs/architecture.md was not found"
    );
    let problems = violations(&layers, &files);
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn an_upward_import_added_to_the_tree_is_named() {
    let (layers, mut files) = project();
    let timer = files.iter_mut().find(|(rel, _)| rel == "timer.rs").unwrap();
    timer.1.push_str("\nuse crate::gateway::Gateway;\n");
    let problems = violations(&layers, &files);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("src/timer.rs:"), "{}", problems[0]);
    assert!(
        problems[0].contains("`crate::gateway::Gateway`"),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("higher layer"), "{}", problems[0]);
}

#[test]
fn grouped_and_inline_paths_are_read_and_comments_are_not() {
    let doc =
        "## Layers\n\n| layer | modules |\n|---|---|\n| low | `a`, `b::c` |\n| high | `b` |\n";
    let layers = layers(doc);
    assert_eq!(layers.len(), 2);
    let files = vec![
        ("a.rs".to_owned(), "use crate::{x, b::{y, z}};\n".to_owned()),
        (
            "b/c.rs".to_owned(),
            "// crate::b::q in a comment\nfn f() { crate::b::q(); }\n".to_owned(),
        ),
        (
            "b/mod.rs".to_owned(),
            "fn g() { let s = \"crate::zz\"; crate::b::c::h(); crate::a::k(); }\n".to_owned(),
        ),
    ];
    let problems = violations(&layers, &files);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("src/a.rs:1: `crate::b::y`"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("src/a.rs:1: `crate::b::z`"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("src/b/c.rs:2: `crate::b::q`"),
        "{}",
        problems[2]
    );
}

#[test]
fn a_circle_within_one_layer_is_named() {
    let doc = "## Layers\n\n| layer | modules |\n|---|---|\n| one | `a`, `b`, `c` |\n";
    let files = vec![
        ("a.rs".to_owned(), "use crate::b::X;\n".to_owned()),
        ("b.rs".to_owned(), "use crate::c::Y;\n".to_owned()),
        ("c.rs".to_owned(), "\nuse crate::a::Z;\n".to_owned()),
    ];
    let problems = violations(&layers(doc), &files);
    assert_eq!(
        problems,
        vec!["circle within one layer: `a` → `b` (src/a.rs:1), `b` → `c` (src/b.rs:1), `c` → `a` (src/c.rs:2)"]
    );
}

#[test]
fn a_module_outside_the_table_is_named() {
    let doc = "## Layers\n\n| layer | modules |\n|---|---|\n| one | `a` |\n";
    let files = vec![("new_thing.rs".to_owned(), String::new())];
    let problems = violations(&layers(doc), &files);
    assert_eq!(
        problems,
        vec!["src/new_thing.rs: module `new_thing` is in no layer of docs/architecture.md"]
    );
}
