//! No import cycles between the modules of any crate: each crate's top-level modules, with an edge
//! from a module to every other one it names through `crate::` (or `super::` at the top level), form
//! a directed acyclic graph. Comments are skipped (doc links are not imports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The identifiers at the top level of a `{ a::b, c, d::{e} }` group starting after its `{`.
fn group_heads(s: &str) -> (Vec<String>, usize) {
    let (mut depth, mut buf, mut heads) = (1, String::new(), Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 || (depth == 1 && c == ',') {
            heads.push(buf.trim().split("::").next().unwrap_or("").trim().to_string());
            buf.clear();
            if depth == 0 {
                return (heads, i);
            }
        } else if depth == 1 {
            buf.push(c);
        }
    }
    (heads, s.len())
}

/// The modules `src` names after `crate::` or (when `top_level`) `super::`.
fn named_modules(src: &str, top_level: bool) -> BTreeSet<String> {
    let code: String = src
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let prefixes: &[&str] = if top_level { &["crate::", "super::"] } else { &["crate::"] };
    for prefix in prefixes {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let (heads, end) = group_heads(group);
                names.extend(heads);
                rest = &group[end..];
            } else {
                let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                names.insert(ident);
            }
        }
    }
    names
}

/// A cycle in the graph, if there is one (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        v: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        path.push(v.to_string());
        for w in edges.get(v).into_iter().flatten() {
            match state.get(w.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == w).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(w.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(w, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in edges.keys() {
        if !state.contains_key(v) {
            if let Some(c) = visit(v, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The module graph of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |f: &Path| {
        let rel = f.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        (first.trim_end_matches(".rs").to_string(), rel.components().count() == 1)
    };
    let modules: BTreeSet<String> = files.iter().map(|f| top(f).0).filter(|m| m != "lib" && m != "main").collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let (m, top_level) = top(f);
        if !modules.contains(&m) {
            continue;
        }
        let named = named_modules(&std::fs::read_to_string(f).unwrap(), top_level);
        let e = edges.entry(m.clone()).or_default();
        e.extend(named.into_iter().filter(|n| n != &m && modules.contains(n)));
    }
    edges
}

#[test]
fn no_crate_has_an_import_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut checked = 0;
    for e in std::fs::read_dir(crates).unwrap() {
        let src = e.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: import cycle {}", src.display(), cycle.join(" -> "));
        }
        checked += 1;
    }
    assert!(checked >= 7, "found only {checked} crates under {}", crates.display());
}

#[test]
fn the_scan_sees_cycles_and_groups() {
    let named =
        named_modules("use crate::{a::X, b::{Y, Z}};\n// crate::c\nfn f() { crate::d::g(); super::e::h() }", true);
    assert_eq!(named, ["a", "b", "d", "e"].iter().map(|s| s.to_string()).collect());
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    assert_eq!(find_cycle(&g), None);
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}
