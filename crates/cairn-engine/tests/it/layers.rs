//! The engine's files in layers: each file imports only files declared before it (in
//! `src/lib.rs`, and within a directory module in its `mod.rs`), so no circle of imports
//! can form. This reads the sources the way a reviewer would (`crate::...` and `super::...`
//! paths, names re-exported by `lib.rs` and `mod.rs` resolved to the file that defines
//! them) and names the first import that goes the wrong way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module declared in `lib.rs` or a directory's `mod.rs`, in order.
struct Module {
    /// `name` or `dir/name`.
    node: String,
    file: PathBuf,
}

/// The `mod` declarations of a file, in order, and what its `pub use` lines re-export
/// (item name to the module that defines it).
fn declarations(text: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut mods = Vec::new();
    let mut exports = BTreeMap::new();
    let mut pending = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            && let Some(name) = rest.strip_suffix(';')
        {
            mods.push(name.to_string());
        }
        if line.starts_with("pub use ") || !pending.is_empty() {
            pending.push_str(line);
            pending.push(' ');
            if line.ends_with(';') {
                let stmt = pending
                    .trim_start_matches("pub use ")
                    .trim_end_matches("; ");
                if let Some((module, items)) = stmt.split_once("::") {
                    let items =
                        items.trim_matches(|c| c == '{' || c == '}' || c == ' ' || c == ';');
                    for item in items.split(',') {
                        // `MAX_HOPS as MAX_TRIGGER_HOPS`: the name others use is the alias.
                        let name = item.split(" as ").last().unwrap_or("").trim();
                        if !name.is_empty() {
                            exports.insert(name.to_string(), module.trim().to_string());
                        }
                    }
                }
                pending.clear();
            }
        }
    }
    (mods, exports)
}

/// The source a reviewer reads: no test module, no comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segments of every path after `prefix` (`crate::a::b`, `crate::{a, b::c}`):
/// each as the one or two leading identifiers.
fn paths_after(code: &str, prefix: &str) -> Vec<(String, Option<String>)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let entries: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
            // The top-level entries of the group.
            let mut depth = 1;
            let mut entry = String::new();
            let mut entries = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        entries.push(std::mem::take(&mut entry));
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    entry.push(c);
                }
            }
            entries.push(entry);
            entries
        } else {
            vec![rest.to_string()]
        };
        for e in entries {
            let e = e.trim();
            let first = ident(e);
            if first.is_empty() {
                continue;
            }
            let second = e[first.len()..].strip_prefix("::").map(ident);
            out.push((first, second.filter(|s| !s.is_empty())));
        }
    }
    out
}

#[test]
fn every_engine_file_imports_only_files_declared_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (top, mut exports) = declarations(&code(&src.join("lib.rs")));
    let mut order: Vec<Module> = Vec::new();
    let mut dirs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &top {
        let dir = src.join(m);
        if dir.join("mod.rs").exists() {
            let (subs, sub_exports) = declarations(&code(&dir.join("mod.rs")));
            order.push(Module {
                node: m.clone(),
                file: dir.join("mod.rs"),
            });
            for s in &subs {
                order.push(Module {
                    node: format!("{m}/{s}"),
                    file: dir.join(format!("{s}.rs")),
                });
            }
            // A name the directory re-exports from a file of its own is that file's.
            for (item, from) in sub_exports {
                if subs.contains(&from) {
                    exports.insert(item, format!("{m}/{from}"));
                }
            }
            dirs.insert(m.clone(), subs);
        } else {
            order.push(Module {
                node: m.clone(),
                file: src.join(format!("{m}.rs")),
            });
        }
    }
    let position: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.node.as_str(), i))
        .collect();
    let resolve = |first: &str, second: Option<&str>| -> Option<String> {
        if let Some(subs) = dirs.get(first) {
            return Some(match second {
                Some(s) if subs.iter().any(|x| x == s) => format!("{first}/{s}"),
                Some(item)
                    if exports
                        .get(item)
                        .is_some_and(|m| m.starts_with(&format!("{first}/"))) =>
                {
                    exports[item].clone()
                }
                _ => first.to_string(),
            });
        }
        if position.contains_key(first) {
            return Some(first.to_string());
        }
        exports.get(first).cloned()
    };
    let mut wrong = Vec::new();
    let mut edges = 0;
    for (i, m) in order.iter().enumerate() {
        let text = code(&m.file);
        let mut targets = BTreeSet::new();
        for (first, second) in paths_after(&text, "crate::") {
            if let Some(t) = resolve(&first, second.as_deref()) {
                targets.insert(t);
            }
        }
        if let Some((dir, _)) = m.node.split_once('/') {
            for (first, _) in paths_after(&text, "super::") {
                targets.insert(match dirs[dir].contains(&first) {
                    true => format!("{dir}/{first}"),
                    false => exports
                        .get(&first)
                        .filter(|t| t.starts_with(&format!("{dir}/")))
                        .cloned()
                        .unwrap_or_else(|| dir.to_string()),
                });
            }
        }
        for t in targets {
            if t == m.node {
                continue;
            }
            edges += 1;
            let at = position[t.as_str()];
            // A directory's `mod.rs` may name its own files (it declares them).
            let own = t.starts_with(&format!("{}/", m.node));
            if at > i && !own {
                wrong.push(format!(
                    "{} imports {}, declared after it",
                    m.file.display(),
                    t
                ));
            }
        }
    }
    // The reading found the engine's imports (so an empty list means something).
    assert!(order.len() > 25, "only {} files found", order.len());
    assert!(edges > 60, "only {edges} imports found");
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}
