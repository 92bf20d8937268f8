//! Field report 1: no MTU literal in any template, manifest or script the project ships. Every
//! interface takes its MTU from the agent's plan (the conflist has none at all: the agent's
//! `cniconf` unit test checks that), so a file under `build/`, or a config/manifest example in
//! `docs/`, that writes a number after an `mtu` key or flag is a defect.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};

/// Whether `line` sets an MTU to a literal: `mtu`, `mtu_request`, `mtuRequest`, `--mtu` ...
/// followed by separators (`:`, `=`, quotes, spaces) and a digit.
fn mtu_literal(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("mtu") {
        let after = &rest[at + 3..];
        let tail = after.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '_');
        let value = tail.trim_start_matches([' ', '\t', ':', '=', '"', '\'']);
        let separated = value.len() < tail.len();
        if separated && value.starts_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
        rest = after;
    }
    false
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

/// Lines inside fenced code blocks of a markdown file (config and manifest examples).
fn fenced_lines(text: &str) -> Vec<(usize, &str)> {
    let mut inside = false;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            lines.push((n + 1, line));
        }
    }
    lines
}

#[test]
fn the_detector_sees_literals_and_not_prose() {
    for literal in [
        "mtu: 1450",
        "  \"mtu\": 9001,",
        "ip link set eth0 mtu 1500",
        "--mtu=1400",
        "mtu_request=1450",
        "mtuRequest: 1450",
        "MTU 1500",
    ] {
        assert!(mtu_literal(literal), "{literal}");
    }
    for prose in [
        "# print the MTU plan",
        "transport MTU - 50",
        "the mtu_request from the plan",
        "MTU of the plan",
    ] {
        assert!(!mtu_literal(prose), "{prose}");
    }
}

#[test]
fn no_mtu_literal_in_templates_manifests_or_scripts() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut build = Vec::new();
    files_under(&root.join("build"), &mut build);
    ensure!(!build.is_empty(), "no files under build/");
    for path in &build {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if mtu_literal(line) {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    let mut docs = Vec::new();
    files_under(&root.join("docs"), &mut docs);
    for path in docs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(path)?;
        for (n, line) in fenced_lines(&text) {
            // `mtu: 0` ("take it from the plan") is the one value allowed in an example.
            if mtu_literal(line) && !line.to_ascii_lowercase().contains("mtu: 0") {
                found.push(format!("{}:{n}: {line}", path.display()));
            }
        }
    }
    ensure!(found.is_empty(), "MTU literals:\n{}", found.join("\n"));
    Ok(())
}
