//! Helpers shared by the `ops_*` e2e tests: running the real `weftctl` against a node's agent
//! config, and scraping the agent's Prometheus endpoint through a strict text-format parser.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use weft_e2e::netns;

/// The output formats every command supports.
pub const FORMATS: [&str; 3] = ["table", "json", "yaml"];

/// One weftctl run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {self:?}"))
    }
}

/// The `weftctl` binary bound to one agent config file (`--config`).
pub struct Ctl {
    /// The binary.
    pub bin: PathBuf,
    /// The agent config weftctl takes its defaults (API socket) from.
    pub config: PathBuf,
}

impl Ctl {
    /// weftctl next to the built agent, reading `config`.
    pub fn new(config: &Path) -> Result<Ctl> {
        let bin = weft_e2e::node::Binaries::locate()?
            .agent
            .with_file_name("weftctl");
        ensure!(
            bin.exists(),
            "{} missing: cargo build --workspace --bins",
            bin.display()
        );
        Ok(Ctl {
            bin,
            config: config.to_path_buf(),
        })
    }

    /// Runs weftctl with the agent config as its default source (`--config`).
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("--timeout")
            .arg("20")
            .args(args)
            .output()
            .context("running weftctl")?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs and requires exit code `code`.
    pub fn expect(&self, code: i32, args: &[&str]) -> Result<Run> {
        let run = self.run(args)?;
        ensure!(
            run.code == code,
            "weftctl {args:?}: exit {} (want {code}): {run:?}",
            run.code
        );
        Ok(run)
    }

    /// Runs in every format; checks JSON and YAML parse to the same shape. Returns the table
    /// and the JSON value.
    pub fn formats(&self, code: i32, args: &[&str]) -> Result<(String, Value)> {
        let mut table = String::new();
        let mut json = Value::Null;
        for format in FORMATS {
            let mut full: Vec<&str> = args.to_vec();
            full.extend(["-o", format]);
            let run = self.expect(code, &full)?;
            ensure!(!run.stdout.trim().is_empty(), "{full:?} printed nothing");
            match format {
                "table" => table = run.stdout,
                "json" => json = run.json()?,
                _ => {
                    let yaml: Value = serde_yaml::from_str(&run.stdout)
                        .with_context(|| format!("{full:?} is not YAML: {}", run.stdout))?;
                    ensure!(!yaml.is_null(), "{full:?}: empty YAML");
                    // Counters like uptime move between calls: compare the shape only.
                    ensure!(
                        same_keys(&yaml, &json),
                        "{full:?}: YAML and JSON differ:\n{yaml}\n{json}"
                    );
                }
            }
        }
        Ok((table, json))
    }
}

fn same_keys(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_keys(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len(),
        _ => true,
    }
}

/// One parsed scrape: the declared families (`name` -> type) and the samples
/// (`name{labels}` exactly as exposed -> value).
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> `counter`, `gauge`, `histogram`, ...
    pub families: BTreeMap<String, String>,
    /// Sample key -> value.
    pub samples: BTreeMap<String, f64>,
}

impl Exposition {
    /// The sample `key`, 0 when absent (counters with no observation yet).
    pub fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// The sum over the samples of family-level metric `name` whose labels contain `filter`.
    pub fn sum(&self, name: &str, filter: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name) && (filter.is_empty() || k.contains(filter))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Scrapes `http://addr/metrics` inside namespace `ns` and parses it strictly.
pub fn scrape(ns: &str, addr: &str) -> Result<Exposition> {
    let addr: SocketAddr = addr.parse()?;
    let mut stream = netns::tcp_connect_in(ns, addr).context("connecting to metrics")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: weft\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").context("no HTTP head")?;
    ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    ensure!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse_exposition(body)
}

/// A strict parser of the Prometheus text format 0.0.4 as Weft writes it: every family has one
/// `# HELP` and one `# TYPE` line before its samples, no family is declared twice, every
/// sample belongs to the family declared last (histograms: `_bucket`, `_sum`, `_count`), label
/// sets are well formed and unique, values are numbers, and histogram buckets are cumulative
/// with `+Inf` equal to `_count`.
pub fn parse_exposition(body: &str) -> Result<Exposition> {
    let mut out = Exposition::default();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for (n, line) in body.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').with_context(at)?;
            check_name(name).with_context(at)?;
            ensure!(helped.insert(name.to_string()), "duplicate HELP, {}", at());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').with_context(at)?;
            ensure!(helped.contains(name), "TYPE before HELP, {}", at());
            ensure!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown type, {}",
                at()
            );
            ensure!(
                out.families
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "duplicate family, {}",
                at()
            );
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        ensure!(!line.starts_with('#'), "stray comment, {}", at());
        let (key, value) = line.rsplit_once(' ').with_context(at)?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().with_context(at)?,
        };
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => (name, Some(rest.strip_suffix('}').with_context(at)?)),
            None => (key, None),
        };
        check_name(name).with_context(at)?;
        if let Some(labels) = labels {
            check_labels(labels).with_context(at)?;
        }
        let (family, kind) = current
            .as_ref()
            .with_context(|| format!("sample before TYPE, {}", at()))?;
        let belongs = if kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family.as_str()))
        } else {
            name == family
        };
        ensure!(belongs, "sample outside family {family}, {}", at());
        ensure!(
            out.samples.insert(key.to_string(), value).is_none(),
            "duplicate sample, {}",
            at()
        );
    }
    check_histograms(&out)?;
    Ok(out)
}

fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    ensure!(
        first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    Ok(())
}

/// `a="x",b="y"`: names valid, values quoted with only `\\`, `\"`, `\n` escapes, no repeats.
fn check_labels(text: &str) -> Result<()> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").context("label without =\"")?;
        check_name(name)?;
        ensure!(names.insert(name), "label {name} repeated");
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, '\\' | '"' | 'n') => escaped = false,
                (true, other) => bail!("bad escape \\{other}"),
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, _) => {}
            }
        }
        let end = end.context("unterminated label value")?;
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else {
            ensure!(rest.is_empty(), "junk after label value: {rest:?}");
        }
    }
    Ok(())
}

/// Buckets cumulative per label set, `+Inf` == `_count`, `_sum` present.
fn check_histograms(exp: &Exposition) -> Result<()> {
    for (family, _) in exp.families.iter().filter(|(_, k)| *k == "histogram") {
        // label set without `le` -> [(le, value)] in exposition (sorted by key) order
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (key, value) in &exp.samples {
            let Some(labels) = key
                .strip_prefix(&format!("{family}_bucket{{"))
                .and_then(|l| l.strip_suffix('}'))
            else {
                continue;
            };
            let (rest, le) = labels.rsplit_once("le=\"").context("bucket without le")?;
            let le = le.strip_suffix('"').context("le unterminated")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            series
                .entry(rest.trim_end_matches(',').to_string())
                .or_default()
                .push((le, *value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            ensure!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{{{labels}}} buckets not cumulative: {buckets:?}"
            );
            let inf = buckets.last().map(|b| b.1).unwrap_or(0.0);
            let braces = |s: &str| {
                if labels.is_empty() {
                    format!("{family}{s}")
                } else {
                    format!("{family}{s}{{{labels}}}")
                }
            };
            ensure!(
                buckets.last().is_some_and(|b| b.0.is_infinite()),
                "{family}{{{labels}}} has no +Inf bucket"
            );
            ensure!(
                exp.samples.get(&braces("_count")) == Some(&inf),
                "{family}{{{labels}}}: +Inf bucket {inf} != _count"
            );
            ensure!(
                exp.samples.contains_key(&braces("_sum")),
                "{family}{{{labels}}} has no _sum"
            );
        }
    }
    Ok(())
}
