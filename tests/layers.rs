//! The import map: top-level modules of `src/` import only from their own
//! layer or a lower one, and no two of them import each other, directly or
//! through others. The layer order is written once, in `src/lib.rs` under
//! "## Layers"; every top-level module must appear there exactly once.
//!
//! Why a test and not a tool: it runs with the suite, needs nothing
//! installed, and its failure names the file and line of the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One `crate::NAME` reference from a top-level module to another.
#[derive(Debug, Clone)]
struct Import {
    from: String,
    to: String,
    at: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Layer of every module, read from the `## Layers` block of `src/lib.rs`:
/// a fenced text block whose lines are `N  name name ...`.
fn layers() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| l.trim() == "## Layers")
        .expect("src/lib.rs has no `## Layers` section");
    let mut out = BTreeMap::new();
    let mut fence = 0;
    for line in &doc[start..] {
        if line.trim_start().starts_with("```") {
            fence += 1;
            if fence == 2 {
                break;
            }
            continue;
        }
        if fence != 1 {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(n) = words.next() else { continue };
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| panic!("src/lib.rs layers: `{line}` does not start with a number"));
        for m in words {
            assert!(
                out.insert(m.to_string(), n).is_none(),
                "src/lib.rs layers: `{m}` is listed twice"
            );
        }
    }
    assert!(
        !out.is_empty(),
        "src/lib.rs: the `## Layers` block is empty"
    );
    out
}

/// The top-level modules that exist: `src/x.rs` and `src/x/`.
fn modules() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir()
            || (p.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main")
        {
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments (line comments and doc comments), line by line.
/// String literals are kept: `crate::` rarely appears in one, and a false
/// edge would show up as a failure to look at, not a silent pass.
fn code_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let mut l = line.to_string();
        if in_block {
            match l.find("*/") {
                Some(i) => {
                    l = l[i + 2..].to_string();
                    in_block = false;
                }
                None => {
                    out.push(String::new());
                    continue;
                }
            }
        }
        if let Some(i) = l.find("/*") {
            if !l[i..].contains("*/") {
                in_block = true;
            }
            l.truncate(i);
        }
        if let Some(i) = l.find("//") {
            l.truncate(i);
        }
        out.push(l);
    }
    out
}

/// Every top-level module named after `crate::` in `text`, with its line:
/// `crate::a::b`, and each first segment inside `use crate::{a::x, b}`.
fn references(text: &str) -> Vec<(String, usize)> {
    let lines = code_lines(text);
    let joined: String = lines.join("\n");
    let bytes = joined.as_bytes();
    let line_of = |i: usize| joined[..i].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = joined[i..].find("crate::") {
        let at = i + off;
        let before = at.checked_sub(1).map(|b| bytes[b]);
        i = at + "crate::".len();
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue;
        }
        if joined[i..].starts_with('{') {
            // A group: take the first segment of every top-level item.
            let mut depth = 0;
            let mut item_start = true;
            let mut j = i;
            while j < bytes.len() {
                let c = bytes[j] as char;
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        let end = joined[j..]
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .map_or(joined.len(), |e| j + e);
                        out.push((joined[j..end].to_string(), line_of(j)));
                        item_start = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            let end = joined[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(joined.len(), |e| i + e);
            if end > i {
                out.push((joined[i..end].to_string(), line_of(at)));
            }
        }
    }
    out
}

fn imports() -> Vec<Import> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let known = modules();
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let from = first.trim_end_matches(".rs").to_string();
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (to, line) in references(&text) {
            if to != from && known.contains(&to) {
                out.push(Import {
                    from: from.clone(),
                    to,
                    at: format!("src/{}:{line}", rel.display()),
                });
            }
        }
    }
    out
}

#[test]
fn every_module_has_a_layer() {
    let layers = layers();
    let modules = modules();
    let missing: Vec<_> = modules
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    let stale: Vec<_> = layers.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "src/lib.rs `## Layers`: modules without a layer: {missing:?}; listed but not in src/: {stale:?}"
    );
}

#[test]
fn imports_point_down() {
    let layers = layers();
    let upward: Vec<String> = imports()
        .into_iter()
        .filter_map(|i| {
            let (a, b) = (layers.get(&i.from)?, layers.get(&i.to)?);
            (b > a).then(|| {
                format!(
                    "{}: `{}` (layer {a}) imports `{}` (layer {b})",
                    i.at, i.from, i.to
                )
            })
        })
        .collect();
    assert!(
        upward.is_empty(),
        "{} upward imports:\n{}",
        upward.len(),
        upward.join("\n")
    );
}

#[test]
fn no_circle_between_modules() {
    let all = imports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &all {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    // Reachability by depth-first search from every module: a circle is a
    // pair that reach each other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(m) = stack.pop() {
            for n in edges.get(m).into_iter().flatten() {
                if seen.insert(*n) {
                    stack.push(n);
                }
            }
        }
        seen
    };
    let mut circles = Vec::new();
    for i in &all {
        if reach(&i.to).contains(i.from.as_str()) {
            circles.push(format!(
                "{}: `{}` imports `{}`, which leads back to `{}`",
                i.at, i.from, i.to, i.from
            ));
        }
    }
    assert!(
        circles.is_empty(),
        "{} imports close a circle:\n{}",
        circles.len(),
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let text = "use crate::{a::X, b,\n  c::{d, e}};\n// crate::z is a comment\nfn f() { crate::f::g(); x_crate::h(); }\n";
    let got: Vec<String> = references(text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, ["a", "b", "c", "f"]);
}
