//! The agent's modules import one way (ARCHITECTURE.md): no module imports
//! one that imports it back, and the edges the layout was rebuilt to remove
//! stay gone. Read from the sources, so a new import that runs backwards
//! fails here rather than in review.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A module path below `crate`, e.g. `["aggregator", "view"]`.
type ModPath = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every non-test source file and the module it defines.
fn modules() -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(src_dir()).expect("under src");
            let mut parts: ModPath = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let last = parts.last().cloned().unwrap_or_default();
            if ["tests", "fixtures", "main"].contains(&last.as_str()) {
                continue;
            }
            if last == "mod" || last == "lib" {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            // Unit tests may reach anywhere; only the code itself is held to
            // the layout.
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string();
            out.insert(parts, code);
        }
    }
    out
}

/// Every path the `use` tree at the start of `text` names, each as its
/// segments, and how many bytes the tree took.
fn use_tree(text: &[u8]) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    let mut segment = String::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            segment.push(c as char);
        } else if c == b':' {
            if !segment.is_empty() {
                prefix.push(std::mem::take(&mut segment));
            }
        } else if c == b'{' {
            let (group, used) = use_group(&text[i + 1..]);
            let paths = group
                .into_iter()
                .map(|p| prefix.iter().cloned().chain(p).collect())
                .collect();
            return (paths, i + 1 + used);
        } else if !c.is_ascii_whitespace() || !segment.is_empty() {
            break;
        }
        i += 1;
    }
    if !segment.is_empty() {
        prefix.push(segment);
    }
    (vec![prefix], i)
}

/// The paths of a `{ a, b::c, d::{e, f} }` group, from just after its `{`,
/// and how many bytes it took, its `}` included.
fn use_group(text: &[u8]) -> (Vec<Vec<String>>, usize) {
    let mut paths = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'}' => return (paths, i + 1),
            b',' => i += 1,
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let (inner, used) = use_tree(&text[i..]);
                paths.extend(inner);
                i += used.max(1);
            }
        }
    }
    (paths, i)
}

/// The modules `code` (of module `here`) names through `crate::` and
/// `super::` paths, as the longest known module prefix of each.
fn imports(here: &ModPath, code: &str, known: &BTreeSet<ModPath>) -> BTreeSet<ModPath> {
    // Comments name modules without depending on them.
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let parent = here[..here.len().saturating_sub(1)].to_vec();
    let mut found = BTreeSet::new();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(anchor) {
            let before = rest[..at].chars().last();
            rest = &rest[at + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let (paths, _) = use_tree(rest.as_bytes());
            for path in paths {
                let mut full = base.clone();
                full.extend(path.into_iter().filter(|s| s != "self"));
                let module = (1..=full.len())
                    .rev()
                    .map(|n| full[..n].to_vec())
                    .find(|p| known.contains(p));
                if let Some(module) = module {
                    found.insert(module);
                }
            }
        }
    }
    found
}

/// Module-to-module edges at the top level (`aggregator/view.rs` counts as
/// `aggregator`), and between sibling files of one folder.
fn edges() -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let modules = modules();
    let known: BTreeSet<ModPath> = modules.keys().cloned().collect();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (here, code) in &modules {
        if here.is_empty() {
            continue;
        }
        for target in imports(here, code, &known) {
            if target.is_empty() {
                continue;
            }
            if target[0] != here[0] {
                top.entry(here[0].clone())
                    .or_default()
                    .insert(target[0].clone());
            } else if here.len() == 2 && target.len() == 2 && here != &target {
                siblings
                    .entry(here.join("/"))
                    .or_default()
                    .insert(target.join("/"));
            }
        }
    }
    (top, siblings)
}

/// A cycle through the graph, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (top, siblings) = edges();
    assert!(top.len() > 10, "the graph was read: {top:?}");
    if let Some(c) = cycle(&top) {
        panic!("modules import each other: {}", c.join(" -> "));
    }
    if let Some(c) = cycle(&siblings) {
        panic!("files of one folder import each other: {}", c.join(" -> "));
    }
}

#[test]
fn data_flows_one_way() {
    let (top, _) = edges();
    let forbidden = [
        (
            "aggregator",
            "maps",
            "the aggregator names series by the model, not by the map writer",
        ),
        (
            "aggregator",
            "admin",
            "the aggregator knows nothing of the admin API",
        ),
        (
            "aggregator",
            "export",
            "exporters read the aggregator, not the other way",
        ),
        (
            "probe",
            "export",
            "the probe reader feeds spans through spans::pipeline",
        ),
        (
            "config",
            "aggregator",
            "sources know the model, not the telemetry",
        ),
        (
            "xds",
            "aggregator",
            "sources know the model, not the telemetry",
        ),
        (
            "xds",
            "config",
            "the model holds the limits both sources share",
        ),
        ("model", "maps", "the model is the input of the map writer"),
        (
            "model",
            "aggregator",
            "the model is the input of the aggregator",
        ),
    ];
    for (from, to, why) in forbidden {
        let reached = top.get(from).is_some_and(|t| t.contains(to));
        assert!(!reached, "{from} imports {to}: {why}");
    }
}

#[test]
fn the_aggregator_knows_no_wire_format() {
    let modules = modules();
    for (path, code) in modules
        .iter()
        .filter(|(p, _)| p.first().is_some_and(|m| m == "aggregator"))
    {
        assert!(
            !code.contains("kmesh_api"),
            "{} uses the admin API's types; convert in admin/",
            path.join("/")
        );
    }
}

#[test]
fn the_reader_finds_nested_imports() {
    let known: BTreeSet<ModPath> = [
        vec!["a".to_string()],
        vec!["b".to_string(), "c".to_string()],
    ]
    .into_iter()
    .collect();
    let code = "use crate::{\n    a::Thing,\n    b::{c::{D, E}, f},\n};\nfn g() { crate::a::h(); }";
    let found = imports(&vec!["x".to_string()], code, &known);
    assert_eq!(
        found,
        BTreeSet::from([
            vec!["a".to_string()],
            vec!["b".to_string(), "c".to_string()]
        ])
    );
}
