//! The workspace's layering, checked from source (issue 12), so it stays as drawn in
//! docs/architecture.md:
//! - no import cycle between files of a crate, other than a module and its own children (a child
//!   naming its parent module through `super::`/`crate::` is how Rust modules are written; a file
//!   reaching a sibling, a cousin or another module that reaches back is a cycle);
//! - `weft-plan` (the pure planners) never depends, even indirectly, on an IO crate (tokio,
//!   netlink, kube, nix, ...): read from Cargo.lock, so a new transitive dependency is caught too.
//!
//! The scan is a small tokenizer, not a Rust parser: it follows every path that starts with
//! `crate::`, `super::`, `self::` or a child module's name, in `use` trees (braces expanded) and
//! inline, skipping comments, string literals and `#[cfg(test)]` modules. A path resolves to the
//! longest prefix that names a module file (`a.rs` or `a/mod.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// Crates whose `src/` is checked for cycles, by directory under the workspace root.
const CRATES: &[&str] = &["agent", "plan", "cni", "ovs-flows"];

/// Crates `weft-plan` may never reach (IO, runtime, kernel, Kubernetes).
const PLAN_FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "rtnetlink",
    "netlink-packet-route",
    "netlink-proto",
    "netlink-sys",
    "kube",
    "kube-client",
    "k8s-openapi",
    "nix",
    "libc",
    "jsonrpsee",
    "hyper",
    "futures",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Punct(char),
}

/// Tokens of `src`, with comments, string and char literals removed.
fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c == '/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && {
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            b.get(j) == Some(&b'"')
        } {
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            match src[j..].find(&close) {
                Some(at) => i = j + at + close.len(),
                None => i = b.len(),
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
        } else if c == ':' && b.get(i + 1) == Some(&b':') {
            out.push(Tok::Path);
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// A crate's module files: module path (segments) -> file.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue; // binaries are crates of their own
                }
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                if stem == "mod" || (prefix.is_empty() && (stem == "lib" || stem == "main")) {
                    // the directory's own module
                } else {
                    p.push(stem.to_string());
                }
                out.insert(p, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// Paths (absolute module segments + item) that `toks`, the file of module `module`, names.
fn referenced_paths(
    toks: &[Tok],
    module: &[String],
    modules: &BTreeMap<Vec<String>, PathBuf>,
) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // Inline modules: (brace depth at which they close, name or None for a cfg(test) one).
    let mut inline: Vec<(usize, Option<String>)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let current = |inline: &[(usize, Option<String>)]| -> Option<Vec<String>> {
        let mut m = module.to_vec();
        for (_, name) in inline {
            m.push(name.clone()?);
        }
        Some(m)
    };
    let is_child = |m: &[String], name: &str| {
        let mut p = m.to_vec();
        p.push(name.to_string());
        modules.contains_key(&p)
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    let test_only = i >= 7
                        && toks[i - 7..i]
                            == [
                                Tok::Punct('#'),
                                Tok::Punct('['),
                                Tok::Ident("cfg".into()),
                                Tok::Punct('('),
                                Tok::Ident("test".into()),
                                Tok::Punct(')'),
                                Tok::Punct(']'),
                            ];
                    inline.push((depth + 1, (!test_only).then(|| name.clone())));
                }
                i += 1;
            }
            Tok::Ident(kw) if kw == "use" => {
                let Some(m) = current(&inline) else {
                    i += 1;
                    continue;
                };
                let mut trees = Vec::new();
                i = use_tree(toks, i + 1, Vec::new(), &mut trees);
                for rel in trees {
                    if let Some(abs) = absolute(&rel, &m, &is_child) {
                        found.push(abs);
                    }
                }
            }
            Tok::Ident(first)
                if toks.get(i + 1) == Some(&Tok::Path) && (i == 0 || toks[i - 1] != Tok::Path) =>
            {
                let Some(m) = current(&inline) else {
                    i += 1;
                    continue;
                };
                let mut rel = vec![first.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::Path) {
                    match toks.get(j + 1) {
                        Some(Tok::Ident(s)) => {
                            rel.push(s.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(abs) = absolute(&rel, &m, &is_child) {
                    found.push(abs);
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    found
}

/// Parses one use tree at `i` (after `use` or inside braces), pushing every leaf path; returns the
/// index after the tree's end (`;`, `,` or the closing brace, not consumed for the last two).
fn use_tree(toks: &[Tok], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(i) {
            Some(Tok::Ident(s)) if s == "as" => {
                i += 2;
                out.push(path);
                break;
            }
            Some(Tok::Ident(s)) => {
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                i += 1;
            }
            Some(Tok::Path) => i += 1,
            Some(Tok::Punct('*')) => {
                out.push(path.clone());
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    i = use_tree(toks, i, path.clone(), out);
                    match toks.get(i) {
                        Some(Tok::Punct(',')) => i += 1,
                        Some(Tok::Punct('}')) => {
                            i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if toks.get(i) == Some(&Tok::Punct('}')) {
                        i += 1;
                        break;
                    }
                }
                break;
            }
            _ => {
                out.push(path);
                break;
            }
        }
    }
    if toks.get(i) == Some(&Tok::Punct(';')) {
        i += 1;
    }
    i
}

/// `rel` (as written in module `m`) made absolute, or None for an external crate or a local name.
fn absolute(
    rel: &[String],
    m: &[String],
    is_child: &dyn Fn(&[String], &str) -> bool,
) -> Option<Vec<String>> {
    let mut abs = m.to_vec();
    let mut rest = rel;
    match rel.first().map(String::as_str) {
        Some("crate") => {
            abs.clear();
            rest = &rel[1..];
        }
        Some("self") | Some("super") => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => {}
                    "super" => {
                        abs.pop()?;
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) if is_child(m, first) => {}
        _ => return None,
    }
    abs.extend(rest.iter().cloned());
    Some(abs)
}

/// The module file a path lands in: its longest prefix that is a module file.
fn resolve(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))
        .unwrap_or_default()
}

/// File-level import graph of one crate: module -> modules it names, without a module's edges to
/// its own ancestors (a child using its parent's items is the normal shape).
fn import_graph(src: &Path) -> Result<BTreeMap<Vec<String>, BTreeSet<Vec<String>>>> {
    let modules = module_files(src);
    ensure!(!modules.is_empty(), "no rust files under {}", src.display());
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let edges: BTreeSet<Vec<String>> = referenced_paths(&tokens(&text), module, &modules)
            .iter()
            .map(|p| resolve(p, &modules))
            .filter(|target| target != module && !module.starts_with(target))
            .collect();
        graph.insert(module.clone(), edges);
    }
    Ok(graph)
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'g> {
        graph: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g [String], usize>,
        low: BTreeMap<&'g [String], usize>,
        stack: Vec<&'g [String]>,
        on_stack: BTreeSet<&'g [String]>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g [String]) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_slice();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_vec());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_slice()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "(root)".to_string()
    } else {
        module.join("::")
    }
}

fn crate_cycles(dir: &str) -> Result<Vec<String>> {
    let src = workspace().join(dir).join("src");
    if !src.exists() {
        return Ok(Vec::new());
    }
    let graph = import_graph(&src)?;
    Ok(cycles(&graph)
        .iter()
        .map(|scc| {
            let names: Vec<String> = scc.iter().map(|m| show(m)).collect();
            format!("{dir}: {{{}}}", names.join(", "))
        })
        .collect())
}

#[test]
fn the_scanner_follows_use_trees_inline_paths_and_skips_tests() {
    let modules: BTreeMap<Vec<String>, PathBuf> = [
        vec![],
        vec!["a".to_string()],
        vec!["a".to_string(), "b".to_string()],
        vec!["a".to_string(), "c".to_string()],
        vec!["d".to_string()],
    ]
    .into_iter()
    .map(|m| (m, PathBuf::new()))
    .collect();
    let src = r#"
        use crate::{d::{self, X}, a::c::Y as Z};
        use super::c::W; // crate::not::this
        use b::Inner;
        fn f() { let s = "crate::d::Q"; crate::d::call(); self::b::g::<u8>(); '"'; }
        #[cfg(test)]
        mod tests { use super::*; use crate::a::c::T; }
        mod inner { use super::super::d::V; }
    "#;
    let module = vec!["a".to_string(), "b".to_string()];
    let found: BTreeSet<String> = referenced_paths(&tokens(src), &module, &modules)
        .iter()
        .map(|p| show(&resolve(p, &modules)))
        .collect();
    let want: BTreeSet<String> = ["d", "a::c", "a"].iter().map(|s| s.to_string()).collect();
    // `self::b` from a::b names a::b::b (not a file): resolves to a::b itself (dropped later);
    // `b::Inner` is not a child of a::b; `super::super::d` from a::b::inner is a::d -> a.
    let found: BTreeSet<String> = found.into_iter().filter(|m| m != "a::b").collect();
    assert_eq!(found, want);

    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = [
        (vec!["x".into()], [vec!["y".into()]].into()),
        (vec!["y".into()], [vec!["x".into()]].into()),
        (vec!["z".into()], [vec!["x".into()]].into()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        cycles(&graph),
        vec![vec![vec!["x".to_string()], vec!["y".to_string()]]]
    );
}

/// Cycles still present, to be broken (issue 12). The check fails on any cycle not listed here,
/// and on a listed one that is gone (so this list only ever shrinks).
const KNOWN_CYCLES: &[&str] = &[];

#[test]
fn no_import_cycle_between_files_of_a_crate() -> Result<()> {
    let mut found = Vec::new();
    for dir in CRATES {
        found.extend(crate_cycles(dir)?);
    }
    for cycle in &found {
        eprintln!("cycle: {cycle}");
    }
    let known: BTreeSet<&str> = KNOWN_CYCLES.iter().copied().collect();
    let new: Vec<&String> = found
        .iter()
        .filter(|c| !known.contains(c.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN_CYCLES
        .iter()
        .filter(|k| !found.iter().any(|c| c == **k))
        .collect();
    ensure!(
        new.is_empty(),
        "import cycles between files:\n{}",
        new.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        gone.is_empty(),
        "cycles fixed, remove them from KNOWN_CYCLES: {gone:?}"
    );
    Ok(())
}

/// The agent's parts: each owns one concern and is wired by the composition root ([`ROOT`]) alone.
/// A part may use the shared lower modules (config, ovsdb, netns, iface, ipam, metrics, ...) and
/// `weft_plan`, never another part or the root.
const PARTS: &[&str] = &["api", "cniserver", "hoststate", "k8s", "uplink"];

/// The agent's composition root: the only module that imports the parts and wires them.
const ROOT: &str = "node";

/// Part -> part/root imports still present, to be removed (issue 12); a ratchet like
/// [`KNOWN_CYCLES`].
const KNOWN_PART_IMPORTS: &[&str] = &[];

#[test]
fn agent_parts_import_no_other_part_nor_the_root() -> Result<()> {
    let graph = import_graph(&workspace().join("agent/src"))?;
    let part_of = |m: &[String]| -> Option<String> {
        let top = m.first()?;
        (PARTS.contains(&top.as_str()) || top == ROOT).then(|| top.clone())
    };
    let mut found = BTreeSet::new();
    for (from, targets) in &graph {
        let Some(from_part) = part_of(from) else {
            continue;
        };
        if from_part == ROOT {
            continue;
        }
        for to in targets {
            if let Some(to_part) = part_of(to) {
                if to_part != from_part {
                    found.insert(format!("{} -> {}", show(from), show(to)));
                }
            }
        }
    }
    for edge in &found {
        eprintln!("part import: {edge}");
    }
    let known: BTreeSet<String> = KNOWN_PART_IMPORTS.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    ensure!(
        new.is_empty(),
        "parts importing another part or the root:\n{}",
        new.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        gone.is_empty(),
        "part imports removed, drop them from KNOWN_PART_IMPORTS: {gone:?}"
    );
    Ok(())
}

/// Packages reachable from `root` in Cargo.lock (each `[[package]]` lists its dependencies).
fn lock_closure(lock: &str, root: &str) -> BTreeSet<String> {
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut name = None;
        let mut list = Vec::new();
        let mut in_deps = false;
        for line in block.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_string());
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line.starts_with(']') {
                in_deps = false;
            } else if in_deps {
                // `"name"` or `"name version"` or `"name version (source)"`
                let entry = line.trim_matches(|c| c == '"' || c == ',');
                if let Some(dep) = entry.split_whitespace().next() {
                    list.push(dep.to_string());
                }
            }
        }
        if let Some(n) = name {
            deps.entry(n).or_default().extend(list);
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(deps.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn weft_plan_depends_on_no_io_crate() -> Result<()> {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock"))?;
    let reach = lock_closure(&lock, "weft-plan");
    if !reach.contains("weft-plan") {
        // Not created yet: nothing to check (this test is written before the crate).
        return Ok(());
    }
    let bad: Vec<&str> = PLAN_FORBIDDEN
        .iter()
        .copied()
        .filter(|f| reach.contains(*f))
        .collect();
    ensure!(
        bad.is_empty(),
        "weft-plan reaches IO crates {bad:?} (all: {reach:?})"
    );
    Ok(())
}
