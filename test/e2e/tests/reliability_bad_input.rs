//! Issue 7 bad-input catalogue: malformed and hostile CNI invocations through the real `weft`
//! binary against one real agent. Every row asserts the CNI error code (spec 1.1.0 codes 1-11,
//! Weft's 100+) and that the error object is well formed, and after every row the node is
//! compared with its state before the table: no new link in the node or the probe pod, OVS port,
//! IPAM allocation, pod flow or agent file. Stateful rows (duplicate ADD, DEL before ADD, GC and
//! CHECK against live pods) follow the table. Each row is documented in docs/cni-errors.md.
//!
//! Extends test/e2e/tests/node_bad_input.rs (nonexistent netns, long ifname, taken ifname,
//! exhausted CIDR, no agent, not ready), whose cases are not repeated here.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use weft_e2e::netns;
use weft_e2e::node::{Node, NodeOptions, PluginOutput, Pod};

/// What the node looks like; compared before and after every row.
#[derive(Debug, PartialEq, Eq)]
struct State {
    links: BTreeSet<String>,
    ports: BTreeSet<String>,
    allocations: BTreeSet<String>,
    pod_flows: usize,
    files: BTreeSet<String>,
}

fn files_under(dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            files_under(&path, out)?;
        } else {
            out.insert(path.display().to_string());
        }
    }
    Ok(())
}

fn state(node: &Node) -> Result<State> {
    let mut files = BTreeSet::new();
    let agent_dir = node.data_dir.parent().context("agent dir")?;
    files_under(agent_dir, &mut files)?;
    Ok(State {
        links: node.links_with_prefix("")?.into_iter().collect(),
        ports: node.all_ports()?.into_iter().collect(),
        allocations: node.ipam_allocations()?.keys().cloned().collect(),
        pod_flows: node.pod_flows()?.len(),
        files,
    })
}

/// The node's state once it stops changing (the agent finishes background work such as the
/// uplink journal after it reports ready): two equal snapshots 300 ms apart.
fn settled(node: &Node) -> Result<State> {
    let mut last = state(node)?;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = state(node)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    bail!("node state keeps changing: {last:?}")
}

/// Whether the node is back at `baseline`, allowing up to 3 s for background writes in flight.
fn back_at(node: &Node, baseline: &State) -> Result<Option<State>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let now = state(node)?;
        if now == *baseline {
            return Ok(None);
        }
        if std::time::Instant::now() > deadline {
            return Ok(Some(now));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Links inside a pod namespace besides `lo`.
fn pod_links(pod: &Pod) -> Result<Vec<String>> {
    let out = pod.exec(&["ip", "-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "lo")
        .collect())
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
fn run_raw(plugin: &Path, env: &BTreeMap<String, OsString>, stdin: &[u8]) -> Result<PluginOutput> {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().context("cannot run the weft plugin")?;
    if let Some(mut input) = child.stdin.take() {
        // The plugin stops reading after its stdin limit: a broken pipe is expected then.
        let _ = input.write_all(stdin);
    }
    let output = child.wait_with_output()?;
    Ok(PluginOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// The outcome a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exit 0.
    Success,
    /// An error object with this code.
    Code(u64),
}

/// One catalogue row: a change to a valid invocation of the probe pod.
struct Row {
    name: &'static str,
    command: &'static str,
    /// Variables to set (`Some`) or remove (`None`) on top of the pod's valid environment.
    env: Vec<(&'static str, Option<OsString>)>,
    /// Stdin; `None`: the node's valid 1.1.0 config.
    stdin: Option<Vec<u8>>,
    expect: Expect,
}

fn row(name: &'static str, command: &'static str, expect: Expect) -> Row {
    Row {
        name,
        command,
        env: Vec::new(),
        stdin: None,
        expect,
    }
}

impl Row {
    fn set(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((key, Some(value.into())));
        self
    }

    fn unset(mut self, key: &'static str) -> Self {
        self.env.push((key, None));
        self
    }

    fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    fn conf(self, conf: &Value) -> Self {
        self.stdin(conf.to_string())
    }
}

/// The node's valid config with `patch`'s keys merged in (a `null` value removes the key).
fn patched(node: &Node, version: &str, patch: Value) -> Value {
    let mut conf = node.netconf(version);
    if let (Some(obj), Some(patch)) = (conf.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    conf
}

fn catalogue(node: &Node, pod: &Pod) -> Vec<Row> {
    use Expect::{Code, Success};
    let conf = |patch: Value| patched(node, "1.1.0", patch);
    let v = |version: &str| patched(node, version, json!({}));
    let prev_v1 = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": pod.path()}],
        "ips": [{"address": "10.244.9.5/24", "gateway": "10.244.9.1", "interface": 0}]});
    let with_prev = |prev: Value| conf(json!({"prevResult": prev}));
    let nested = format!(
        r#"{{"cniVersion":"1.1.0","name":"weft","type":"weft","agentSocket":"{}","x":{}{}}}"#,
        node.cni_socket.display(),
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let padding = "x".repeat(1024 * 1024);
    vec![
        // --- environment (code 4)
        row("CNI_COMMAND missing", "ADD", Code(4)).unset("CNI_COMMAND"),
        row("CNI_COMMAND lower case", "ADD", Code(4)).set("CNI_COMMAND", "add"),
        row("CNI_COMMAND unknown verb", "ADD", Code(4)).set("CNI_COMMAND", "DELETE"),
        row("ADD without CNI_CONTAINERID", "ADD", Code(4)).unset("CNI_CONTAINERID"),
        row("ADD without CNI_NETNS", "ADD", Code(4)).unset("CNI_NETNS"),
        row("ADD without CNI_IFNAME", "ADD", Code(4)).unset("CNI_IFNAME"),
        row("CHECK without CNI_NETNS", "CHECK", Code(4))
            .unset("CNI_NETNS")
            .conf(&with_prev(prev_v1.clone())),
        row("DEL without CNI_CONTAINERID", "DEL", Code(4)).unset("CNI_CONTAINERID"),
        row("GC without CNI_PATH", "GC", Code(4))
            .unset("CNI_PATH")
            .conf(&conf(json!({"cni.dev/valid-attachments": []}))),
        row("CNI_CONTAINERID path traversal", "ADD", Code(4)).set("CNI_CONTAINERID", "../../etc"),
        row("CNI_CONTAINERID leading '-'", "ADD", Code(4)).set("CNI_CONTAINERID", "-rf"),
        row("CNI_CONTAINERID with newline", "ADD", Code(4)).set("CNI_CONTAINERID", "c1\nc2"),
        row("CNI_NETNS relative path", "ADD", Code(4)).set("CNI_NETNS", "run/netns/x"),
        row("CNI_NETNS '..' traversal", "ADD", Code(4))
            .set("CNI_NETNS", format!("{}/../../../proc/1/ns/net", pod.path())),
        row("CNI_NETNS a regular file", "ADD", Code(4)).set("CNI_NETNS", "/etc/hostname"),
        row("CNI_NETNS a directory", "ADD", Code(4)).set("CNI_NETNS", "/run"),
        row("CNI_NETNS /dev/null", "ADD", Code(4)).set("CNI_NETNS", "/dev/null"),
        row("CNI_IFNAME with '/'", "ADD", Code(4)).set("CNI_IFNAME", "eth/0"),
        row("CNI_IFNAME with ' '", "ADD", Code(4)).set("CNI_IFNAME", "eth 0"),
        row("CNI_IFNAME '.'", "ADD", Code(4)).set("CNI_IFNAME", "."),
        row("CNI_IFNAME '..'", "ADD", Code(4)).set("CNI_IFNAME", ".."),
        row("CNI_IFNAME '../eth0'", "ADD", Code(4)).set("CNI_IFNAME", "../eth0"),
        row("CNI_IFNAME with ':'", "ADD", Code(4)).set("CNI_IFNAME", "eth0:1"),
        row("CNI_IFNAME with newline", "ADD", Code(4)).set("CNI_IFNAME", "eth\n0"),
        row("CNI_IFNAME not UTF-8", "ADD", Code(4))
            .set("CNI_IFNAME", OsString::from_vec(vec![b'e', 0xff, b'0'])),
        row("CNI_IFNAME 'lo' (exists in every netns)", "ADD", Code(110)).set("CNI_IFNAME", "lo"),
        row("CNI_ARGS pair without '='", "ADD", Code(4))
            .set("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME"),
        row("CNI_ARGS empty key", "ADD", Code(4)).set("CNI_ARGS", "=x"),
        // --- stdin: decoding (code 6)
        row("empty stdin", "ADD", Code(6)).stdin(""),
        row("truncated JSON", "ADD", Code(6)).stdin(r#"{"cniVersion":"1.1.0","name":"#),
        row("JSON array", "ADD", Code(6)).stdin("[]"),
        row("JSON string", "ADD", Code(6)).stdin(r#""weft""#),
        row("not UTF-8", "ADD", Code(6)).stdin(vec![b'{', 0xff, 0xfe, b'}']),
        row("cniVersion a number", "ADD", Code(6)).conf(&conf(json!({"cniVersion": 1.1}))),
        row("name an object", "ADD", Code(6)).conf(&conf(json!({"name": {"a": 1}}))),
        row("agentTimeoutSeconds a string", "ADD", Code(6))
            .conf(&conf(json!({"agentTimeoutSeconds": "30"}))),
        row("agentTimeoutSeconds above u64", "ADD", Code(6)).stdin(format!(
            r#"{{"cniVersion":"1.1.0","name":"weft","type":"weft","agentTimeoutSeconds":18446744073709551616,"agentSocket":"{}"}}"#,
            node.cni_socket.display()
        )),
        row("JSON nested 5000 deep", "ADD", Code(6)).stdin(nested),
        row("stdin larger than 16 MiB", "ADD", Code(6)).stdin(vec![b' '; 17 * 1024 * 1024]),
        row("prevResult a string", "CHECK", Code(6)).conf(&with_prev(json!("eth0"))),
        row("prevResult with a bad address", "CHECK", Code(6)).conf(&with_prev(
            json!({"ips": [{"address": "10.244.9.300/24", "interface": 0}]}),
        )),
        row("GC list not an array", "GC", Code(6))
            .conf(&conf(json!({"cni.dev/valid-attachments": "all"}))),
        row("GC entry without ifname", "GC", Code(6))
            .conf(&conf(json!({"cni.dev/valid-attachments": [{"containerID": "c1"}]}))),
        row("GC entry with numeric containerID", "GC", Code(6)).conf(&conf(
            json!({"cni.dev/valid-attachments": [{"containerID": 7, "ifname": "eth0"}]}),
        )),
        // --- network config values (code 7)
        row("cniVersion missing", "ADD", Code(7)).conf(&conf(json!({"cniVersion": null}))),
        row("name missing", "ADD", Code(7)).conf(&conf(json!({"name": null}))),
        row("type missing", "ADD", Code(7)).conf(&conf(json!({"type": null}))),
        row("name path traversal", "ADD", Code(7)).conf(&conf(json!({"name": "../weft"}))),
        row("agentSocket relative", "ADD", Code(7)).conf(&conf(json!({"agentSocket": "cni.sock"}))),
        row("agentTimeoutSeconds 0", "ADD", Code(7)).conf(&conf(json!({"agentTimeoutSeconds": 0}))),
        row("agentTimeoutSeconds huge", "ADD", Code(7))
            .conf(&conf(json!({"agentTimeoutSeconds": 1_000_000_000u64}))),
        row("CHECK without prevResult", "CHECK", Code(7)),
        row("prevResult ip names a missing interface", "CHECK", Code(7)).conf(&with_prev(
            json!({"interfaces": [], "ips": [{"address": "10.244.9.5/24", "interface": 3}]}),
        )),
        row("prevResult gateway of the other family", "CHECK", Code(7)).conf(&with_prev(
            json!({"ips": [{"address": "10.244.9.5/24", "gateway": "fd00::1"}]}),
        )),
        // --- versions (code 1)
        row("cniVersion 0.2.0", "ADD", Code(1)).conf(&v("0.2.0")),
        row("cniVersion 9.9.9", "ADD", Code(1)).conf(&v("9.9.9")),
        row("cniVersion '1.1'", "ADD", Code(1)).conf(&v("1.1")),
        row("CHECK in 0.3.1", "CHECK", Code(1)).conf(&patched(
            node,
            "0.3.1",
            json!({"prevResult": {"cniVersion": "0.3.1", "ips": []}}),
        )),
        row("STATUS in 1.0.0", "STATUS", Code(1)).conf(&v("1.0.0")),
        row("GC in 0.4.0", "GC", Code(1)).conf(&v("0.4.0")),
        // --- the agent is not where the config says (code 11)
        row("agentSocket does not exist", "ADD", Code(11))
            .conf(&conf(json!({"agentSocket": "/run/weft-e2e-no-such-agent.sock"}))),
        row("agentSocket a regular file", "ADD", Code(11))
            .conf(&conf(json!({"agentSocket": "/etc/hostname"}))),
        // --- accepted as the spec asks
        row("STATUS", "STATUS", Success),
        row("STATUS ignores attachment variables", "STATUS", Success)
            .set("CNI_CONTAINERID", "../../x")
            .set("CNI_IFNAME", "a/b"),
        row("STATUS with 1 MiB of unknown keys", "STATUS", Success)
            .conf(&conf(json!({"padding": padding}))),
        row("VERSION with garbage stdin", "VERSION", Success).stdin("\u{0}garbage"),
        row("DEL before ADD", "DEL", Success),
        row("DEL before ADD without CNI_NETNS", "DEL", Success).unset("CNI_NETNS"),
        row("DEL with a netns that does not exist", "DEL", Success)
            .set("CNI_NETNS", "/run/netns/weft-e2e-never-existed"),
        row("GC without valid-attachments (removes nothing)", "GC", Success),
    ]
}

#[test]
fn bad_input_catalogue() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.244.9.0/24", "fd00:99::/64"]))?;
    // A first ADD/DEL so the agent's files (IPAM store) exist before the baseline.
    let warm = Pod::create(&node, "warm")?;
    node.add(&warm)?;
    node.del(&warm)?;
    let baseline = settled(&node)?;
    let probe = Pod::create(&node, "probe")?;

    let rows = catalogue(&node, &probe);
    ensure!(rows.len() >= 40, "catalogue has {} rows", rows.len());
    let mut failures = Vec::new();
    let mut report = String::new();
    for row in &rows {
        let mut env: BTreeMap<String, OsString> = BTreeMap::new();
        let call = probe.call();
        for (key, value) in [
            ("CNI_COMMAND", Some(row.command.to_string())),
            ("CNI_CONTAINERID", call.container_id),
            ("CNI_NETNS", call.netns),
            ("CNI_IFNAME", call.ifname),
            ("CNI_ARGS", call.args),
            ("CNI_PATH", Some("/opt/cni/bin".to_string())),
        ] {
            if let Some(value) = value {
                env.insert(key.to_string(), value.into());
            }
        }
        for (key, value) in &row.env {
            match value {
                Some(value) => env.insert(key.to_string(), value.clone()),
                None => env.remove(*key),
            };
        }
        let stdin = row
            .stdin
            .clone()
            .unwrap_or_else(|| node.netconf("1.1.0").to_string().into_bytes());
        let out = run_raw(&node.bins.plugin, &env, &stdin)?;
        let got = if out.success {
            Expect::Success
        } else {
            match out.code() {
                Some(code) => Expect::Code(code),
                None => {
                    failures.push(format!("{}: no error object: {:?}", row.name, out.stdout));
                    continue;
                }
            }
        };
        if got != row.expect {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}: {}",
                row.name, row.expect, out.stdout
            ));
        }
        if let Expect::Code(_) = got {
            let err = out.json()?;
            if err["msg"].as_str().is_none_or(str::is_empty) || !err["cniVersion"].is_string() {
                failures.push(format!("{}: malformed error object {err}", row.name));
            }
            report.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.name,
                row.command,
                err["code"],
                err["msg"].as_str().unwrap_or_default()
            ));
        } else {
            report.push_str(&format!("| {} | {} | 0 | |\n", row.name, row.command));
        }
        if let Some(now) = back_at(&node, &baseline)? {
            failures.push(format!(
                "{}: left state behind: {now:?} (before: {baseline:?})",
                row.name
            ));
        }
        let inside = pod_links(&probe)?;
        if !inside.is_empty() {
            failures.push(format!("{}: left {inside:?} in the pod", row.name));
        }
    }
    eprintln!("catalogue ({} rows):\n{report}", rows.len());
    ensure!(
        node.agent_log().matches("panicked").count() == 0,
        "the agent panicked"
    );
    if !failures.is_empty() {
        bail!(
            "{} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }

    stateful_rows(&node, &probe, &baseline)?;
    direct_rpc_rows(&node, &probe, &baseline)
}

/// Sends `lines` to the agent's CNI socket as a client bypassing the plugin, and reads one
/// answer per line.
fn rpc(node: &Node, lines: &[String]) -> Result<Vec<Value>> {
    use std::io::{BufRead, BufReader};
    let mut stream = std::os::unix::net::UnixStream::connect(&node.cni_socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    for line in lines {
        stream.write_all(line.as_bytes())?;
        stream.write_all(b"\n")?;
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut answers = Vec::new();
    for _ in lines {
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        answers.push(serde_json::from_str(&answer).with_context(|| format!("answer {answer:?}"))?);
    }
    Ok(answers)
}

/// Requests written straight to the socket (any root process can): the agent repeats the
/// plugin's checks, answers malformed frames with JSON-RPC errors and keeps serving.
fn direct_rpc_rows(node: &Node, probe: &Pod, baseline: &State) -> Result<()> {
    let request = |id: u64, method: &str, container: &str, netns: &str, ifname: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": [{
            "command": method.trim_start_matches("cni_").to_uppercase(), "cniVersion": "1.1.0",
            "containerId": container, "netns": netns, "ifname": ifname,
            "args": {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "direct"},
            "networkName": "weft", "networkConfig": {}, "prevResult": null,
            "validAttachments": null}]})
        .to_string()
    };
    let path = probe.path();
    let cases: Vec<(String, i64)> = vec![
        (request(1, "cni_add", "../../etc", &path, "eth0"), 4),
        (
            request(
                2,
                "cni_add",
                "c1",
                &format!("{path}/../../../proc/1/ns/net"),
                "eth0",
            ),
            4,
        ),
        (request(3, "cni_add", "c1", "relative", "eth0"), 4),
        (request(4, "cni_add", "c1", &path, "../x"), 4),
        (request(5, "cni_add", "", &path, "eth0"), 4),
        (request(6, "cni_del", "a b", &path, "eth0"), 4),
        (request(10, "cni_add", &"c".repeat(255), &path, "eth0"), 4),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"cni_add\",\"params\":[{\"command\":1}]}"
                .into(),
            -32602,
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"cni_exec\",\"params\":[]}".into(),
            -32601,
        ),
        ("not json at all".into(), -32700),
        ("[1,2,3]".into(), -32600),
    ];
    let lines: Vec<String> = cases.iter().map(|(l, _)| l.clone()).collect();
    let answers = rpc(node, &lines)?;
    let mut codes: Vec<i64> = answers
        .iter()
        .map(|a| a["error"]["code"].as_i64().unwrap_or(0))
        .collect();
    let mut expected: Vec<i64> = cases.iter().map(|(_, c)| *c).collect();
    // Answers come in order of completion: compare as multisets.
    codes.sort_unstable();
    expected.sort_unstable();
    ensure!(
        codes == expected,
        "direct RPC codes {codes:?}, expected {expected:?}: {answers:?}"
    );
    if let Some(now) = back_at(node, baseline)? {
        bail!("direct RPC left {now:?}");
    }
    ensure!(pod_links(probe)?.is_empty());
    // The agent still serves.
    let status = rpc(node, &[request(9, "cni_status", "", "", "")])?;
    ensure!(
        status[0]["error"].is_null(),
        "STATUS after hostile frames: {status:?}"
    );
    Ok(())
}

/// Rows that need a live pod: duplicate ADD, CHECK and GC against it, DEL twice, and config keys
/// of the wrong type that Weft does not read.
fn stateful_rows(node: &Node, probe: &Pod, baseline: &State) -> Result<()> {
    let code = |out: &PluginOutput, expected: u64, what: &str| -> Result<()> {
        ensure!(
            out.code() == Some(expected),
            "{what}: expected code {expected}, got {:?}: {}",
            out.code(),
            out.stdout
        );
        Ok(())
    };
    let first = node.add(probe)?;
    // Duplicate ADD: the same attachment answers its existing result (idempotent), nothing new.
    let links = node.links_with_prefix("wf")?;
    let again = node.add(probe)?;
    ensure!(
        again == first,
        "duplicate ADD answered {again} after {first}"
    );
    ensure!(
        node.links_with_prefix("wf")? == links && node.ipam_allocations()?.len() == 2,
        "duplicate ADD created more"
    );
    // Another container id into the same netns while the first is attached: its own
    // attachment (own host veth name), but the netns's eth0 is taken (110), and nothing of the
    // second ADD stays.
    let mut other = probe.call();
    other.container_id = Some("0therc0ntainer".into());
    code(
        &node.plugin("ADD", &other)?,
        110,
        "ADD of another container into the same netns and ifname",
    )?;
    ensure!(
        node.ipam_allocations()?.len() == 2,
        "failed ADD kept its IPs"
    );

    let check = |prev: Value, ifname: &str| -> Result<PluginOutput> {
        let mut call = probe.call();
        call.ifname = Some(ifname.into());
        let mut conf = node.netconf("1.1.0");
        conf["prevResult"] = prev;
        call.config = Some(conf);
        node.plugin("CHECK", &call)
    };
    ensure!(
        check(first.clone(), "eth0")?.success,
        "CHECK of the live pod"
    );
    code(
        &check(first.clone(), "eth1")?,
        3,
        "CHECK of a known container, unknown ifname",
    )?;
    // prevResult of an older version's shape (0.4.0: ips carry "version") decodes and matches.
    let mut old = first.clone();
    old["cniVersion"] = json!("0.4.0");
    if let Some(ips) = old["ips"].as_array_mut() {
        for ip in ips {
            let v4 = ip["address"].as_str().is_some_and(|a| a.contains('.'));
            ip["version"] = json!(if v4 { "4" } else { "6" });
        }
    }
    ensure!(
        check(old, "eth0")?.success,
        "CHECK with a 0.4.0-shaped prevResult"
    );
    // A prevResult claiming addresses the pod does not have: the CHECK fails (116).
    let mut wrong = first.clone();
    wrong["ips"][0]["address"] = json!("10.244.9.250/24");
    code(
        &check(wrong, "eth0")?,
        116,
        "CHECK with a foreign prevResult",
    )?;

    // GC: an empty-looking but hostile list keeps the live pod when it is listed.
    let gc = |list: Value| -> Result<PluginOutput> {
        let mut conf = node.netconf("1.1.0");
        conf["cni.dev/valid-attachments"] = list;
        let mut call = probe.call();
        call.config = Some(conf);
        node.plugin("GC", &call)
    };
    let live = json!({"containerID": probe.container_id, "ifname": "eth0"});
    let out = gc(json!([live,
        {"containerID": "../../etc", "ifname": "../x"},
        {"containerID": "", "ifname": ""},
        {"containerID": probe.container_id, "ifname": "eth0", "extra": [1, 2]}]))?;
    ensure!(out.success, "GC with odd entries: {}", out.stdout);
    ensure!(
        node.ipam_allocations()?.len() == 2 && pod_links(probe)? == ["eth0"],
        "GC removed the listed pod"
    );
    code(&gc(json!([live, 7]))?, 6, "GC list with a non-object entry")?;
    ensure!(
        node.ipam_allocations()?.len() == 2,
        "a rejected GC removed something"
    );
    let out = gc(Value::Null)?;
    ensure!(
        out.success && node.ipam_allocations()?.len() == 2,
        "GC null"
    );

    node.del(probe)?;
    node.del(probe)?;
    if let Some(now) = back_at(node, baseline)? {
        bail!("DEL left state: {now:?}");
    }
    ensure!(pod_links(probe)?.is_empty(), "DEL left the pod interface");

    // Config keys of the wrong type that Weft does not read: tolerated (spec: ignore what is
    // not understood), and the pod is wired and removed normally.
    let mut call = probe.call();
    let mut conf = node.netconf("1.1.0");
    conf["args"] = json!("not-an-object");
    conf["runtimeConfig"] = json!(42);
    conf["capabilities"] = json!([1]);
    call.config = Some(conf.clone());
    let out = node.plugin("ADD", &call)?;
    ensure!(
        out.success,
        "ADD with odd args/runtimeConfig: {}",
        out.stdout
    );
    let out = node.plugin("DEL", &call)?;
    ensure!(
        out.success,
        "DEL with odd args/runtimeConfig: {}",
        out.stdout
    );

    // A container id past Weft's bound (it becomes the host veth's alias): code 4, nothing made.
    let mut call = probe.call();
    call.container_id = Some(format!("c{}", "0".repeat(254)));
    code(
        &node.plugin("ADD", &call)?,
        4,
        "ADD with a 255-byte container id",
    )?;
    // The longest accepted container id with a 4 KiB pod name (CNI_ARGS): wired, then removed.
    call.container_id = Some(format!("c{}", "0".repeat(253)));
    call.args = Some(format!(
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
        "p".repeat(4096)
    ));
    let out = node.plugin("ADD", &call)?;
    ensure!(out.success, "ADD with long names: {}", out.stdout);
    let out = node.plugin("DEL", &call)?;
    ensure!(out.success, "DEL with long names: {}", out.stdout);

    if let Some(now) = back_at(node, baseline)? {
        bail!("left state: {now:?}");
    }
    ensure!(pod_links(probe)?.is_empty());
    ensure!(netns::list().contains(&probe.netns), "probe netns intact");
    Ok(())
}
