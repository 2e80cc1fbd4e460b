//! The shape of the code, checked from the source: each integration is its own part over a core
//! that names none of them, nothing imports in a circle, and every integration keeps its files
//! where the README's "Adding an integration" says. `cargo test architecture -- --nocapture`
//! prints the import graph of the parts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The parts that assemble the hub from the registry (`chaos` as processes, to break it);
/// everything else but the integrations is the core.
const SHELL: [&str; 3] = ["cli", "startup", "chaos"];
const REGISTRY: &str = "integrations";

/// One source file: its module path (`integrations::wallet::routes`) and production text.
struct File {
    module: Vec<String>,
    text: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `consumers/<name>/x.rs` is mounted at
/// `integrations::<name>::consumers::x`; `src/main.rs` is the binary, not the library.
fn module_of(path: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = path
        .strip_prefix(ROOT)
        .unwrap()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    match file.trim_end_matches(".rs") {
        "main" if parts == ["src"] => return None,
        "mod" | "lib" => {}
        stem => parts.push(stem.to_string()),
    }
    match parts.first().map(String::as_str) {
        Some("src") => Some(parts[1..].to_vec()),
        Some("consumers") => {
            let mut module = vec![REGISTRY.to_string(), parts[1].clone(), "consumers".into()];
            module.extend(parts[2..].iter().cloned());
            Some(module)
        }
        _ => None,
    }
}

/// The file's text without comment lines and without its tests (at the bottom, by convention).
fn production_text(source: &str) -> String {
    let source = match source.find("#[cfg(test)]") {
        Some(at) => &source[..at],
        None => source,
    };
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files() -> Vec<File> {
    let mut paths = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut paths);
    rust_files(&Path::new(ROOT).join("consumers"), &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let module = module_of(&path)?;
            let text = production_text(&std::fs::read_to_string(&path).unwrap());
            Some(File { module, text })
        })
        .collect()
}

/// Every path the text names from `crate::`, `$crate::` or `super::`, expanded (`use
/// crate::{a, b::{c, d}}` names `a`, `b::c`, `b::d`) and made absolute.
fn referenced_paths(file: &File) -> Vec<Vec<String>> {
    let text = &file.text;
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let Some(offset) = rest
            .find("crate::")
            .into_iter()
            .chain(rest.find("super::"))
            .min()
        else {
            break;
        };
        let start = at + offset;
        let preceded = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b':'
        };
        let (base, mut cursor) = if text[start..].starts_with("crate::") {
            (Vec::new(), start + "crate::".len())
        } else {
            // `super::super::x`: up one module per `super`; a mod.rs or lib is its own module.
            let mut base = file.module.clone();
            let mut cursor = start;
            while text[cursor..].starts_with("super::") {
                base.pop();
                cursor += "super::".len();
            }
            (base, cursor)
        };
        if !preceded {
            let mut paths = Vec::new();
            cursor = parse_tree(text, cursor, base, &mut paths);
            found.extend(paths);
        }
        at = cursor.max(start + 1);
    }
    found
}

/// Parses `a::b::{c, d::e}` at `at` into full paths under `prefix`; returns where it stopped.
fn parse_tree(text: &str, mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    let mut path = prefix;
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                at = parse_tree(text, at, path.clone(), out);
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        if start == at {
            out.push(path);
            return at;
        }
        path.push(text[start..at].to_string());
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            out.push(path);
            return at;
        }
    }
}

/// The part a module belongs to: a core module (`runtime`), the registry, the shell, or an
/// integration (`integrations::wallet`).
fn part_of(module: &[String]) -> String {
    match module {
        [first, name, ..] if first == REGISTRY => format!("{REGISTRY}::{name}"),
        [first, ..] => first.clone(),
        [] => "lib".into(),
    }
}

fn is_integration(part: &str) -> bool {
    part.starts_with(&format!("{REGISTRY}::"))
}

fn is_core(part: &str) -> bool {
    !is_integration(part) && part != REGISTRY && part != "lib" && !SHELL.contains(&part)
}

/// Every module the crate has: one per file, plus inline `mod name {` blocks.
fn known_modules(files: &[File]) -> BTreeSet<Vec<String>> {
    let mut known = BTreeSet::new();
    for file in files {
        known.insert(file.module.clone());
        for line in file.text.lines() {
            let line = line.trim_start().trim_start_matches("pub ");
            if let Some(rest) = line.strip_prefix("mod ")
                && let Some(name) = rest.strip_suffix(" {")
            {
                let mut module = file.module.clone();
                module.push(name.to_string());
                known.insert(module);
            }
        }
    }
    known
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// module → the modules it names.
fn module_graph(files: &[File]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known = known_modules(files);
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in files {
        let edges = graph.entry(file.module.clone()).or_default();
        for path in referenced_paths(file) {
            if let Some(target) = resolve(&path, &known)
                && target != file.module
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if it has one.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        node: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        done: &mut BTreeSet<N>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn is_ancestor(a: &[String], b: &[String]) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

#[test]
fn the_parsing_sees_what_rust_sees() {
    let file = File {
        module: vec!["integrations".into(), "wallet".into(), "routes".into()],
        text: "use super::{schemas, subjects};\nuse crate::ingress::{self, ApiError,\n  Parent};\n\
               let x = crate::telemetry::trace_uuid(&s); let url = \"http://x\";\n\
               use super::super::registry::thing;"
            .into(),
    };
    let paths: Vec<String> = referenced_paths(&file)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "integrations::wallet::schemas",
            "integrations::wallet::subjects",
            "ingress::self",
            "ingress::ApiError",
            "ingress::Parent",
            "telemetry::trace_uuid",
            "integrations::registry::thing",
        ]
    );
    let cyclic: BTreeMap<u8, BTreeSet<u8>> = [
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1])),
    ]
    .into();
    assert_eq!(find_cycle(&cyclic), Some(vec![1, 2, 3, 1]));
    let acyclic: BTreeMap<u8, BTreeSet<u8>> =
        [(1, BTreeSet::from([2, 3])), (2, BTreeSet::from([3]))].into();
    assert_eq!(find_cycle(&acyclic), None);
}

/// The core names no integration (nor the registry), an integration names only the core and
/// itself, and nothing imports in a circle.
#[test]
fn integrations_sit_on_a_core_that_names_none_of_them() {
    let files = files();
    let modules = module_graph(&files);
    let mut parts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, targets) in &modules {
        let from = part_of(module);
        parts.entry(from.clone()).or_default();
        for target in targets {
            let to = part_of(target);
            if to == from {
                continue;
            }
            // The core and each integration name only the core; the assembly names anything.
            let allowed = !(is_core(&from) || is_integration(&from)) || is_core(&to);
            if !allowed {
                wrong.push(format!("{} names {}", module.join("::"), target.join("::")));
            }
            parts.entry(from.clone()).or_default().insert(to);
        }
    }
    println!("the import graph of the parts (core modules, the registry, each integration):");
    for (part, targets) in &parts {
        let kind = if is_integration(part) {
            "integration"
        } else if is_core(part) {
            "core"
        } else {
            "assembly"
        };
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("  {part:<24} {kind:<12} → {}", targets.join(", "));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(find_cycle(&parts), None, "a cycle between parts");

    // Within a part, a child may use its parent; any other circle is a cycle.
    let mut within: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, targets) in &modules {
        let edges = within.entry(module.clone()).or_default();
        for target in targets {
            if part_of(target) == part_of(module)
                && !is_ancestor(target, module)
                && !is_ancestor(module, target)
            {
                edges.insert(target.clone());
            }
        }
    }
    assert_eq!(find_cycle(&within), None, "a cycle between modules");
}

/// Only an integration's registration (its `mod.rs`) names its consumers: its routes never
/// import a consumer.
#[test]
fn routes_never_import_consumers() {
    let files = files();
    let graph = module_graph(&files);
    for (module, targets) in &graph {
        let part = part_of(module);
        if !is_integration(&part)
            || module.len() == 2
            || module.get(2).map(String::as_str) == Some("consumers")
        {
            continue;
        }
        for target in targets {
            assert!(
                target.get(2).map(String::as_str) != Some("consumers"),
                "{} imports {}",
                module.join("::"),
                target.join("::")
            );
        }
    }
}

/// Every registered integration has its folders, and nothing sits in `consumers/`,
/// `schemas/` or `migrations/` for an integration that is not registered.
#[test]
fn every_integration_keeps_its_files_in_its_folders() {
    let names: BTreeSet<&str> = ihub::integrations::ALL.iter().map(|i| i.name).collect();
    for integration in ihub::integrations::ALL {
        let name = integration.name;
        let root = Path::new(ROOT);
        assert!(
            root.join("src/integrations")
                .join(name)
                .join("mod.rs")
                .is_file(),
            "{name}"
        );
        assert!(root.join("schemas").join(name).is_dir(), "schemas/{name}/");
        if !integration.consumers.is_empty() {
            assert!(
                root.join("consumers").join(name).join("mod.rs").is_file(),
                "consumers/{name}/"
            );
        }
        for consumer in integration.consumers {
            assert!(
                root.join(consumer.file.path()).is_file(),
                "{}",
                consumer.file.path()
            );
        }
    }
    for dir in ["consumers", "schemas", "src/integrations"] {
        for entry in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let folder = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    names.contains(folder.as_str()),
                    "{dir}/{folder} is no registered integration"
                );
            }
        }
    }
    // Migrations are named NNNN_<integration>[_what].sql.
    for entry in std::fs::read_dir(Path::new(ROOT).join("migrations")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let owner = name
            .trim_end_matches(".sql")
            .split_once('_')
            .map(|(_, rest)| rest.split('_').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        assert!(
            names.contains(owner.as_str()),
            "migrations/{name} names no integration"
        );
    }
}
