//! The documentation cannot drift from the tree: the Layout section of
//! `docs/design.md` names every top-level module of `src/` (`src/x.rs` or
//! `src/x/`) and every top-level folder of the repository, and nothing
//! that is gone; every relative link in `README.md` and `docs/*.md` points
//! at a file that exists (and, into a Markdown file, at a heading that
//! exists).
//!
//! The Layout is a fenced block in the section `## Layout`; each line
//! starts with a path (a folder ends in `/`), then what it holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The paths the Layout lists, each with its line in `docs/design.md`.
fn layout() -> Vec<(String, usize)> {
    let text = read("docs/design.md");
    let mut in_section = false;
    let mut in_fence = false;
    let mut paths = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            in_section = line.trim() == "## Layout";
            continue;
        }
        if !in_section {
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence && let Some(path) = line.split_whitespace().next() {
            paths.push((path.to_string(), i + 1));
        }
    }
    assert!(
        !paths.is_empty(),
        "docs/design.md has no `## Layout` section with a fenced list of paths"
    );
    paths
}

/// `src/x.rs` and `src/x/` for every top-level file and folder of `src/`.
fn src_entries() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(root().join("src")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.insert(format!("src/{name}/"));
        } else if name.ends_with(".rs") {
            out.insert(format!("src/{name}"));
        }
    }
    out
}

/// The repository's top-level folders, `name/`: those git tracks files in
/// (so build output and ignored files do not count); without git, every
/// folder but `.git` and `target`.
fn top_level_folders() -> BTreeSet<String> {
    let git = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output();
    match git {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split('\0')
            .filter_map(|p| p.split_once('/').map(|(dir, _)| format!("{dir}/")))
            .collect(),
        _ => std::fs::read_dir(root())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".git" && n != "target")
            .map(|n| format!("{n}/"))
            .collect(),
    }
}

#[test]
fn layout_lists_every_top_level_module_and_folder() {
    let listed: BTreeSet<String> = layout().into_iter().map(|(p, _)| p).collect();
    let missing: Vec<String> = src_entries()
        .into_iter()
        .chain(top_level_folders())
        .filter(|p| !listed.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/design.md's Layout does not list {missing:?}: add a line `PATH  what it holds` \
         for each (for a module, as src/lib.rs's module map describes it)"
    );
}

#[test]
fn layout_lists_nothing_that_is_gone() {
    let gone: Vec<String> = layout()
        .into_iter()
        .filter(|(p, _)| {
            let at = root().join(p);
            if p.ends_with('/') {
                !at.is_dir()
            } else {
                !at.is_file()
            }
        })
        .map(|(p, line)| format!("docs/design.md:{line}: {p}"))
        .collect();
    assert!(
        gone.is_empty(),
        "the Layout lists what does not exist:\n{}",
        gone.join("\n")
    );
}

/// README.md and every `docs/*.md`, relative to the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Link targets outside code, with their line: `[text](target)` and
/// reference definitions `[name]: target`.
fn links(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Text outside inline code spans.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push((target.trim_matches(['<', '>']).to_string(), i + 1));
            rest = &rest[end..];
        }
        let t = prose.trim_start();
        if t.starts_with('[')
            && let Some((label, target)) = t.split_once("]:")
            && !label.contains(']')
            && let Some(target) = target.split_whitespace().next()
        {
            out.push((target.to_string(), i + 1));
        }
    }
    out
}

/// GitHub's anchors of a Markdown file's headings: lower case, spaces to
/// `-`, punctuation dropped; a repeated anchor gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while out.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        out.insert(candidate);
    }
    out
}

#[test]
fn relative_links_point_at_existing_files() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap().to_path_buf();
        for (target, line) in links(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let (rel, shown) = if path.is_empty() {
                (PathBuf::from(&file), file.clone())
            } else {
                (dir.join(path), path.to_string())
            };
            let at = root().join(&rel);
            if !at.exists() {
                broken.push(format!("{file}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor
                && at.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&at).unwrap()).contains(anchor)
            {
                broken.push(format!(
                    "{file}:{line}: {target}: {shown} has no heading #{anchor}"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_and_anchor_parsing() {
    let text = "see [a](docs/a.md#x-y) and `[not](code)`\n```\n[no](fence)\n```\n[r]: b.md\n";
    assert_eq!(
        links(text),
        vec![("docs/a.md#x-y".to_string(), 1), ("b.md".to_string(), 5)]
    );
    let a = anchors("# T\n## `promql`: one, two\n## How (the model)\n## How (the model)\n");
    assert!(a.contains("promql-one-two"), "{a:?}");
    assert!(
        a.contains("how-the-model") && a.contains("how-the-model-1"),
        "{a:?}"
    );
}
