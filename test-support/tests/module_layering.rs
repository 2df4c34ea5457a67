//! The layering rule of every crate of the workspace: no module imports, directly or through
//! others, a module that imports it.
//!
//! A module's imports are the modules its non-test code names: `crate::a::b` and `super::x`
//! paths (in `use` lines, `{...}` groups included, and in code), and `child::item` paths to
//! its own child modules; `mod x;` declarations are not imports. A folder's `mod.rs` that
//! re-exports its children therefore must not define anything its children import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate (`[]` for the crate root).
type Module = Vec<String>;

/// The crates of the workspace: every folder beside this one with a `Cargo.toml` and a `src`.
fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the workspace folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    crates.sort();
    crates
}

/// Every non-test source file of `src`, with its module path.
fn modules(src: &Path) -> BTreeMap<PathBuf, Module> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder").flatten() {
            let path = entry.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                // Test-only folders (`foo/tests/`) and binaries' own folders hold no layering.
                if name != "tests" && name != "bin" {
                    stack.push(path);
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if stem == "tests" || stem.ends_with("_tests") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("below src");
            let mut module: Module = relative
                .parent()
                .into_iter()
                .flat_map(|p| p.iter())
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let root = module.is_empty() && matches!(stem, "lib" | "main");
            if stem != "mod" && !root {
                module.push(stem.to_owned());
            }
            out.insert(path, module);
        }
    }
    out
}

/// The code of `text` without its test-only modules (`#[cfg(test)] mod x { ... }`) and its
/// comment lines.
fn code(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]\n") {
        let after = &rest[at + "#[cfg(test)]\n".len()..];
        let header = after.lines().next().unwrap_or_default();
        let is_module = header
            .trim_start()
            .trim_start_matches("pub(crate) ")
            .starts_with("mod ")
            && header.trim_end().ends_with('{');
        if !is_module {
            kept.push_str(&rest[..at + "#[cfg(test)]\n".len()]);
            rest = after;
            continue;
        }
        kept.push_str(&rest[..at]);
        rest = &after[block_end(after)..];
    }
    kept.push_str(rest);
    kept.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The offset just past the `}` closing the first `{` of `text` (or its end).
fn block_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The longest module of `known` that `path` (segments from `base`) names.
fn resolve(base: &[String], path: &[&str], known: &BTreeSet<Module>) -> Option<Module> {
    let mut full: Module = base.to_vec();
    let mut rest = path;
    while let Some((&"super", tail)) = rest.split_first() {
        full.pop();
        rest = tail;
    }
    full.extend(rest.iter().map(|s| (*s).to_owned()));
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| known.contains(m))
}

/// The identifier-and-`::` path starting at `at` in `text` (`a::b::c`, stopping at anything
/// else), and whether a `{` group follows it.
fn path_at(text: &str, at: usize) -> (Vec<&str>, Option<&str>) {
    let rest = &text[at..];
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        let len = rest[i..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len() - i);
        if len == 0 {
            break;
        }
        segments.push(&rest[i..i + len]);
        i += len;
        if rest[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    let group = rest[i..]
        .starts_with('{')
        .then(|| rest[i + 1..].split('}').next().unwrap_or_default());
    (segments, group)
}

/// The modules `module` (whose code is `text`) imports.
fn imports(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices("::") {
        // The start of the path this `::` belongs to.
        let mut start = at;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        if start > 1 && &text[start - 2..start] == "::" {
            continue; // Not the first segment.
        }
        let (segments, group) = path_at(text, start);
        let Some(first) = segments.first() else {
            continue;
        };
        let base: Module = match *first {
            "crate" => Vec::new(),
            "super" | "self" => module.clone(),
            child if known.contains(&[module.as_slice(), &[child.to_owned()]].concat()) => {
                module.clone()
            }
            _ => continue,
        };
        let tail: Vec<&str> = match *first {
            "crate" | "self" => segments[1..].to_vec(),
            _ => segments.clone(),
        };
        // `a::{b, c}` names `a::b` and `a::c`, not `a` itself.
        let mut targets = if group.is_some() {
            Vec::new()
        } else {
            vec![tail.clone()]
        };
        for item in group.into_iter().flat_map(|g| g.split(',')) {
            let item = item.trim().split(" as ").next().unwrap_or_default();
            if !item.is_empty() && item != "self" {
                let mut path = tail.clone();
                path.extend(item.split("::").map(str::trim));
                targets.push(path);
            }
        }
        for target in targets {
            if let Some(found) = resolve(&base, &target, known)
                && &found != module
            {
                out.insert(found);
            }
        }
    }
    out
}

/// The groups of modules that import each other (strongly connected, more than one).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Kosaraju: order by finish time, then collect on the reversed graph.
    fn visit<'a>(
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        node: &'a Module,
        seen: &mut BTreeSet<&'a Module>,
        order: &mut Vec<&'a Module>,
    ) {
        if !seen.insert(node) {
            return;
        }
        for next in graph.get(node).into_iter().flatten() {
            visit(graph, next, seen, order);
        }
        order.push(node);
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for node in graph.keys() {
        visit(graph, node, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            reversed.entry(to).or_default().push(from);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut groups = Vec::new();
    for node in order.into_iter().rev() {
        if assigned.contains(node) {
            continue;
        }
        let mut group = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if assigned.insert(n) {
                group.push(n.clone());
                stack.extend(reversed.get(n).into_iter().flatten().copied());
            }
        }
        if group.len() > 1 {
            group.sort();
            groups.push(group);
        }
    }
    groups
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let mut found = Vec::new();
    for krate in crates() {
        let files = modules(&krate.join("src"));
        let known: BTreeSet<Module> = files.values().cloned().collect();
        let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (path, module) in &files {
            let text = std::fs::read_to_string(path).expect("a source file");
            graph
                .entry(module.clone())
                .or_default()
                .extend(imports(module, &code(&text), &known));
        }
        for group in cycles(&graph) {
            let names: Vec<String> = group
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "crate".to_owned()
                    } else {
                        m.join("::")
                    }
                })
                .collect();
            let name = krate.file_name().unwrap_or_default().to_string_lossy();
            found.push(format!("{name}: {}", names.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "modules that import each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_parent_and_child_importing_each_other() {
    let known: BTreeSet<Module> = [
        vec![],
        vec!["a".to_owned()],
        vec!["a".to_owned(), "b".to_owned()],
    ]
    .into_iter()
    .collect();
    let a = vec!["a".to_owned()];
    let b = vec!["a".to_owned(), "b".to_owned()];
    let parent = imports(&a, "pub use b::Thing;\nfn f() { b::go() }", &known);
    let child = imports(&b, "use super::{Shared, b};\n", &known);
    assert_eq!(parent, [b.clone()].into());
    assert_eq!(child, [a.clone()].into());
    let graph: BTreeMap<Module, BTreeSet<Module>> =
        [(a.clone(), parent), (b.clone(), child)].into();
    assert_eq!(cycles(&graph), vec![vec![a, b]]);
}

#[test]
fn test_only_modules_are_not_imports() {
    let text = "use crate::a::Thing;\n#[cfg(test)]\npub(crate) mod tests {\n    use super::*;\n    fn f() { if true { crate::b::go() } }\n}\n#[cfg(test)]\nfn helper() {}\nfn g() { crate::c::run() }\n";
    let kept = code(text);
    assert!(!kept.contains("super::*") && !kept.contains("crate::b"));
    assert!(
        kept.contains("crate::a::Thing")
            && kept.contains("fn helper")
            && kept.contains("crate::c::run")
    );
}
