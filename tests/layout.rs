//! The source layout's rules, checked on the files themselves: the modules of
//! `src/` import each other without a cycle (the layers read top-down), no file is
//! much over 600 lines, and no code is pulled in with `#[path]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a source file may grow before it should be split.
const MAX_LINES: usize = 650;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs`
/// is `a::b`; `src/lib.rs` is the crate root, `""`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its comment lines (so that doc links do not count
/// as imports).
fn code_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")).collect()
}

/// The `crate::` paths a file mentions, as module paths: each path is cut at its
/// longest prefix that names a module, so `crate::a::b::Thing` counts as `a::b`
/// when that module exists, else `a`. Names re-exported at the root
/// (`crate::Router`) count as the module that defines them. Braced groups
/// (`use crate::{a::X, b::Y}`) are expanded one level.
fn imports(
    text: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
    this: &str,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code = code_lines(text).join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                paths.push(item.trim().to_owned());
            }
        } else {
            let end =
                rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            paths.push(rest[..end].to_owned());
        }
    }
    // `use super::X` in `a::b` names `a`.
    if let Some((parent, _)) = this.rsplit_once("::") {
        if code.contains("super::") {
            found.insert(parent.to_owned());
        }
    }
    for path in paths {
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut module = None;
        for n in (1..=segments.len()).rev() {
            let candidate = segments[..n].join("::");
            if modules.contains(&candidate) {
                module = Some(candidate);
                break;
            }
        }
        let module = module.or_else(|| segments.first().and_then(|name| reexports.get(*name).cloned()));
        if let Some(m) = module {
            if m != this && !this.starts_with(&format!("{m}::")) {
                found.insert(m);
            }
        }
    }
    found
}

/// `pub use a::{X, Y};` and `pub use a::X;` at the crate root: name -> module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code_lines(lib).join(" ");
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let (module, names) = match rest.split_once("::{") {
            Some((m, names)) => (m.trim(), names.trim_end_matches('}').to_owned()),
            None => match rest.rsplit_once("::") {
                Some((m, name)) => (m.trim(), name.to_owned()),
                None => continue,
            },
        };
        for name in names.split(',') {
            let name = name.trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

struct Source {
    module: String,
    path: PathBuf,
    text: String,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| Source {
            module: module_of(&src, &path),
            text: fs::read_to_string(&path).expect("read"),
            path,
        })
        .collect()
}

/// The import graph of the library's modules. The crate root (which re-exports
/// everything) and the unit tests (which may reach anything) are left out.
fn graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let lib = sources.iter().find(|s| s.module.is_empty()).expect("src/lib.rs");
    let reexports = root_reexports(&lib.text);
    sources
        .iter()
        .filter(|s| !s.module.is_empty() && s.module != "tests")
        .map(|s| (s.module.clone(), imports(&s.text, &modules, &reexports, &s.module)))
        .collect()
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let sources = sources();
    let graph = graph(&sources);
    // The checker itself must see the imports it is meant to judge.
    assert!(graph["router"].contains("routing"), "router imports routing: {:?}", graph["router"]);
    assert!(graph["shard"].contains("inbox"), "shard imports inbox: {:?}", graph["shard"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle among src/ modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
    graph.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|s| s.text.lines().count() > MAX_LINES)
        .map(|s| format!("{} ({} lines)", s.path.display(), s.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn no_code_is_included_by_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "cli/src", "workloads/src", "fuzz-model/src"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let attribute = ["#[", "path"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            fs::read_to_string(f).is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with(&attribute)))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "files included by path: {offenders:?}");
}

/// Prints the graph, one module a line:
/// `cargo test --test layout print_the_import_graph -- --ignored --nocapture`.
#[test]
#[ignore = "a tool, not a check"]
fn print_the_import_graph() {
    for (m, deps) in graph(&sources()) {
        println!("{m:14} -> {}", deps.into_iter().collect::<Vec<_>>().join(", "));
    }
}
