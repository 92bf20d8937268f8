//! Proof of issue 6 on the single-node harness: every `weftctl` command against a running node
//! (real agent, real OVS, pods wired by the real plugin) in every output format; the same
//! commands against a stopped and a killed agent (one-line reason, exit code 1); the API socket
//! is 0600 in a 0700 directory; metrics scraped over HTTP count ADDs; the support bundle holds
//! every part and no secret. `check cni` and `check host` run without an agent on temporary
//! directories.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use weft_e2e::node::{Node, NodeOptions, Pod, NODE_IP4};

const METRICS_ADDR: &str = "127.0.0.1:9476";

mod ops_support;
use ops_support::{Ctl, Run, FORMATS};

/// Scrapes `/metrics` inside the node's namespace (strictly parsed): `name{labels}` -> value.
fn scrape(node: &Node) -> Result<BTreeMap<String, f64>> {
    Ok(ops_support::scrape(node.netns(), METRICS_ADDR)?.samples)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(path, text)?;
    Ok(())
}

const WEFT_CONFLIST: &str = r#"{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft","agentSocket":"/var/run/weft/cni.sock"}]}"#;

#[test]
fn weftctl_against_a_running_then_stopped_agent() -> Result<()> {
    let started = std::time::Instant::now();
    let scratch = tempfile::tempdir()?;
    let cni_dir = scratch.path().join("net.d");
    write(&cni_dir.join("10-weft.conflist"), WEFT_CONFLIST)?;
    let log_file = scratch.path().join("weft-agent-file.log");
    let mut options = NodeOptions::new(&["10.244.7.0/24", "fd00:7::/64"]);
    options.extra_config = format!(
        "metricsBindAddress: {METRICS_ADDR}\nlogFile: {}\ncniConfDir: {}\n",
        log_file.display(),
        cni_dir.display()
    );
    let mut node = Node::start(options)?;
    let ctl = Ctl::new(&node.config)?;

    // The API socket: 0600 in a 0700 directory.
    let socket = node.ovs.rundir().join("agent/run/agent.sock");
    let mode = std::fs::metadata(&socket)?.permissions().mode();
    ensure!(mode & 0o777 == 0o600, "api socket mode {mode:o}");
    let dir_mode = std::fs::metadata(socket.parent().context("dir")?)?
        .permissions()
        .mode();
    ensure!(
        dir_mode & 0o777 == 0o700,
        "api socket dir mode {dir_mode:o}"
    );

    // Metrics before any pod.
    let before = scrape(&node)?;
    ensure!(before["weft_ready"] == 1.0, "{before:?}");
    ensure!(before["weft_pods"] == 0.0, "{before:?}");
    ensure!(
        before["weft_mode{mode=\"encap/geneve\"}"] == 1.0,
        "{before:?}"
    );
    let add_count = "weft_cni_request_duration_seconds_count{verb=\"ADD\"}";
    ensure!(
        before.get(add_count).copied().unwrap_or(0.0) == 0.0,
        "{before:?}"
    );
    ensure!(
        before["weft_host_repairs_total{kind=\"route\"}"] == 0.0,
        "{before:?}"
    );

    // The agent's kubeconfig carries its ServiceAccount token (the test API server checks it):
    // the bundle must not.
    let kubeconfig = node.ovs.rundir().join("agent/kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig)?;
    let secret = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .map(str::to_string)
        .context("the agent's kubeconfig has no token")?;
    ensure!(secret.len() >= 16, "token {secret:?}");

    let a = Pod::create(&node, "web-a")?;
    let b = Pod::create(&node, "web-b")?;
    node.add(&a)?;
    node.add(&b)?;
    let after = scrape(&node)?;
    ensure!(
        after[add_count] == 2.0,
        "ADD count after two ADDs: {after:?}"
    );
    ensure!(after["weft_pods"] == 2.0, "{after:?}");
    ensure!(
        after["weft_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"+Inf\"}"] == 2.0,
        "{after:?}"
    );
    ensure!(
        after["weft_flow_ops_total{op=\"add_pod\",result=\"ok\"}"] == 2.0,
        "{after:?}"
    );
    ensure!(after["weft_mtu_mismatches"] == 0.0, "{after:?}");

    // get agentinfo
    let (table, info) = ctl.formats(0, &["get", "agentinfo"])?;
    ensure!(info["ready"] == true && info["phase"] == "ready", "{info}");
    ensure!(info["node"] == node.name.as_str(), "{info}");
    ensure!(
        info["mtuPlan"]["pod"] == 1450 && info["mtuPlan"]["uplink"] == 1500,
        "{info}"
    );
    ensure!(
        info["datapath"] == weft_e2e::Datapath::current().as_str() && info["bridge"] == "br-int",
        "{info}"
    );
    ensure!(
        info["counters"]["cniAdd"] == 2 && info["counters"]["pods"] == 2,
        "{info}"
    );
    ensure!(
        info["round"].is_u64() && info["mode"] == "encap/geneve",
        "{info}"
    );
    ensure!(
        table.contains("Ready:") && table.contains("pod 1450 gateway 1450"),
        "{table}"
    );

    // get podinterface
    let (table, pods) = ctl.formats(0, &["get", "podinterface"])?;
    ensure!(pods.as_array().map(Vec::len) == Some(2), "{pods}");
    ensure!(
        table.starts_with("NAMESPACE") && table.contains("web-a") && table.contains("web-b"),
        "{table}"
    );
    let (_, one) = ctl.formats(0, &["get", "podinterface", "web-a", "-n", "default"])?;
    ensure!(
        one.as_array().map(Vec::len) == Some(1) && one[0]["name"] == "web-a",
        "{one}"
    );
    let ofport_b = pods
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "web-b")
        .and_then(|p| p["ofport"].as_u64())
        .context("ofport of web-b")?;
    let missing = ctl.expect(1, &["get", "podinterface", "nosuch"])?;
    ensure!(
        missing.stderr.lines().count() == 1 && missing.stderr.contains("nosuch"),
        "{missing:?}"
    );

    // get ovsflows: by pod, by table number and name, by category
    let (table, flows) = ctl.formats(0, &["get", "ovsflows", "--pod", "web-a"])?;
    let flows = flows.as_array().context("flows array")?.clone();
    ensure!(flows.len() >= 5, "{flows:?}");
    ensure!(flows.iter().all(|f| f["category"] == "pod"), "{flows:?}");
    ensure!(
        table.contains("SpoofGuard") && table.contains("cookie=0x"),
        "{table}"
    );
    let (_, t70) = ctl.formats(0, &["get", "ovsflows", "--table", "70"])?;
    let (_, by_name) = ctl.formats(0, &["get", "ovsflows", "--table", "L3Forwarding"])?;
    ensure!(
        t70.as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|x| x["table"] == 70)),
        "{t70}"
    );
    ensure!(
        t70.as_array().map(Vec::len) == by_name.as_array().map(Vec::len),
        "{by_name}"
    );
    let (_, gw) = ctl.formats(0, &["get", "ovsflows", "--category", "gateway"])?;
    ensure!(
        gw.as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|x| x["category"] == "gateway")),
        "{gw}"
    );
    let bad = ctl.expect(1, &["get", "ovsflows", "--table", "NoSuchTable"])?;
    ensure!(
        bad.stderr.lines().count() == 1 && bad.stderr.contains("NoSuchTable"),
        "{bad:?}"
    );

    // get routes: the host planner's pod CIDR routes on the gateway (main table 254 and Weft's
    // table 22342), desired and present
    let (table, routes) = ctl.formats(0, &["get", "routes"])?;
    let states: Vec<(String, u64, String)> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["route"]["destination"].as_str().unwrap_or("").to_string(),
                r["route"]["table"].as_u64().unwrap_or(0),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = [
        ("10.244.7.0/24", 254),
        ("10.244.7.0/24", 22342),
        ("fd00:7::/64", 254),
        ("fd00:7::/64", 22342),
    ]
    .into_iter()
    .map(|(d, t)| (d.to_string(), t, "ok".to_string()))
    .collect();
    ensure!(states == want, "{states:?}");
    ensure!(
        table.contains("weft-gw0") && table.contains("ok"),
        "{table}"
    );

    // get repairs: typed, empty until the host reconciler records any
    let (table, repairs) = ctl.formats(0, &["get", "repairs"])?;
    ensure!(
        repairs == Value::Array(vec![]) && table.contains("No repairs"),
        "{repairs} {table}"
    );
    // A route deleted behind the agent's back: the host reconciler puts it back, and the
    // repair shows in `get repairs` and in the counter.
    let deleted = Command::new("ip")
        .args(["-n", node.ovs.netns(), "route", "del", "10.244.7.0/24"])
        .args(["table", "22342", "proto", "87"])
        .status()?;
    ensure!(deleted.success(), "ip route del: {deleted}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // Wait with one format (the repair may land between two calls of `formats`), then check
    // that every format shows it.
    loop {
        let repairs = ctl.expect(0, &["get", "repairs", "-o", "json"])?.json()?;
        if repairs.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no repair listed: {repairs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, repairs) = ctl.formats(0, &["get", "repairs"])?;
    ensure!(
        repairs[0]["kind"] == "route"
            && repairs[0]["object"]
                .as_str()
                .is_some_and(|o| o.contains("10.244.7.0/24") && o.contains("22342")),
        "{repairs}"
    );
    ensure!(
        scrape(&node)?["weft_host_repairs_total{kind=\"route\"}"] == 1.0,
        "route repair counted once"
    );

    // check mtu: gateway, tunnel, the uplink (internal port and NIC: encap on netdev attaches
    // it), both host veths and both pod interfaces on the plan
    let (table, mtu) = ctl.formats(0, &["check", "mtu"])?;
    ensure!(mtu["mismatches"] == 0, "{mtu}");
    let kinds: Vec<&str> = mtu["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    let mut want = vec!["gateway", "tunnel"];
    if weft_e2e::Datapath::current().attaches_uplink_in_encap() {
        want.extend(["uplink", "uplink"]);
    }
    want.extend(["hostVeth", "hostVeth", "pod", "pod"]);
    ensure!(kinds == want, "{kinds:?}");
    ensure!(
        mtu["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["actual"] == e["planned"]
                && e["planned"] == if e["kind"] == "uplink" { 1500 } else { 1450 }),
        "{mtu}"
    );
    ensure!(
        table.contains("All managed interfaces follow the plan"),
        "{table}"
    );
    // A pod interface off the plan (as a mode switch leaves old pods): exactly that pod is
    // listed, exit 3, and the gauge follows.
    b.exec(&["ip", "link", "set", "eth0", "mtu", "1500"])?;
    let (table, off) = ctl.formats(3, &["check", "mtu"])?;
    ensure!(off["mismatches"] == 1, "{off}");
    ensure!(
        off["podsToFix"] == serde_json::json!(["default/web-b"]),
        "{off}"
    );
    ensure!(
        table.contains("MISMATCH") && table.contains("  default/web-b\n"),
        "{table}"
    );
    ensure!(scrape(&node)?["weft_mtu_mismatches"] == 1.0);
    b.exec(&["ip", "link", "set", "eth0", "mtu", "1450"])?;
    ctl.expect(0, &["check", "mtu"])?;

    // trace-packet: pod to pod (ICMP and TCP), pod to the node IP
    let (table, trace) = ctl.formats(
        0,
        &[
            "trace-packet",
            "--source",
            "web-a",
            "--destination",
            "web-b",
        ],
    )?;
    let want = format!("output to port {ofport_b} (");
    ensure!(
        trace["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with(&want)),
        "{trace}"
    );
    let tables: Vec<u64> = trace["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["table"].as_u64())
        .collect();
    ensure!(
        tables.starts_with(&[0, 20, 30]) && tables.contains(&70) && tables.ends_with(&[120]),
        "{tables:?}"
    );
    ensure!(
        table.contains("table 70 L3Forwarding") && table.contains("Verdict: output to port"),
        "{table}"
    );
    let (_, tcp) = ctl.formats(
        0,
        &[
            "trace-packet",
            "--source",
            "default/web-a",
            "--destination",
            "web-b",
            "--proto",
            "tcp",
            "--dport",
            "8080",
        ],
    )?;
    ensure!(
        tcp["flow"]
            .as_str()
            .is_some_and(|f| f.contains("tcp") && f.contains("tp_dst=8080")),
        "{tcp}"
    );
    ensure!(
        tcp["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with(&want)),
        "{tcp}"
    );
    let (_, to_node) = ctl.formats(
        0,
        &[
            "trace-packet",
            "--source",
            "web-a",
            "--destination",
            NODE_IP4,
        ],
    )?;
    ensure!(
        to_node["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("output to port 32769 (weft-gw0)")),
        "{to_node}"
    );

    // probes and completions
    ctl.expect(0, &["probe", "live"])?;
    ensure!(ctl.expect(0, &["probe", "ready"])?.stdout == "ready\n");
    for shell in ["bash", "zsh", "fish"] {
        let run = ctl.expect(0, &["completion", shell])?;
        ensure!(run.stdout.contains("trace-packet"), "{shell}: {run:?}");
    }

    // check cni against the node's cniConfDir (from --config): Weft alone wins
    let (table, cni) = ctl.formats(0, &["check", "cni"])?;
    ensure!(cni["weftWins"] == true, "{cni}");
    ensure!(
        table.contains("OK: Weft's config is the one loaded"),
        "{table}"
    );

    // supportbundle
    let archive = scratch.path().join("bundle.tar.gz");
    let run = ctl.expect(
        0,
        &["supportbundle", "-o", archive.to_str().context("path")?],
    )?;
    ensure!(
        run.stdout
            .starts_with(&format!("wrote {}", archive.display())),
        "{run:?}"
    );
    let listing = weft_e2e::cmd::run("tar", &["-tzf", archive.to_str().context("path")?])?;
    let extracted = scratch.path().join("extracted");
    std::fs::create_dir_all(&extracted)?;
    weft_e2e::cmd::run(
        "tar",
        &[
            "-xzf",
            archive.to_str().context("path")?,
            "-C",
            extracted.to_str().context("path")?,
        ],
    )?;
    let root = extracted.join("weft-supportbundle");
    for part in [
        "agentinfo.json",
        "podinterfaces.json",
        "ovs/flows.txt",
        "ovs/ovsdb.json",
        "mtu.json",
        "hoststate.json",
        "host/routes.txt",
        "host/rules.txt",
        "host/neighbours.txt",
        "repairs.json",
        "config/weft-agent.conf",
        "config/kubeconfig",
        "cni/10-weft.conflist",
        "logs/weft-agent.log",
        "checks/cni.json",
        "checks/host.json",
    ] {
        ensure!(
            listing.contains(&format!("weft-supportbundle/{part}")),
            "{part} missing:\n{listing}"
        );
        let text = std::fs::read_to_string(root.join(part)).with_context(|| part.to_string())?;
        ensure!(!text.trim().is_empty(), "{part} is empty");
    }
    ensure!(
        !listing.contains("errors.txt"),
        "errors: {:?}",
        std::fs::read_to_string(root.join("errors.txt"))
    );
    let ovsdb: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("ovs/ovsdb.json"))?)?;
    for table in ["Open_vSwitch", "Bridge", "Port", "Interface"] {
        ensure!(
            ovsdb[table].as_array().is_some_and(|rows| !rows.is_empty()),
            "ovsdb dump lacks {table}"
        );
    }
    let flows = std::fs::read_to_string(root.join("ovs/flows.txt"))?;
    ensure!(
        flows.lines().count() > 20 && flows.contains("n_packets="),
        "{flows}"
    );
    let kubeconfig_out = std::fs::read_to_string(root.join("config/kubeconfig"))?;
    ensure!(
        kubeconfig_out.contains("token: REDACTED"),
        "{kubeconfig_out}"
    );
    let mut leaked = Vec::new();
    for entry in walk(&root)? {
        if std::fs::read_to_string(&entry)
            .unwrap_or_default()
            .contains(&secret)
        {
            leaked.push(entry);
        }
    }
    ensure!(leaked.is_empty(), "secret left in {leaked:?}");
    let log = std::fs::read_to_string(root.join("logs/weft-agent.log"))?;
    ensure!(log.contains("node ready"), "{log}");
    eprintln!("bundle contents:\n{listing}");

    // A stopped agent (SIGTERM: the socket is removed): every agent command fails in one line.
    node.stop_agent();
    ensure!(
        !socket.exists(),
        "api socket left behind after a clean stop"
    );
    let not_running = format!("error: agent not running: {} not found\n", socket.display());
    agent_commands_fail(&ctl, &not_running, scratch.path())?;
    // Checks that need no agent still work.
    ctl.expect(0, &["check", "cni"])?;
    // An explicit --socket overrides the config.
    let other = scratch.path().join("other.sock");
    let run = ctl.expect(
        1,
        &[
            "--socket",
            other.to_str().context("path")?,
            "get",
            "agentinfo",
        ],
    )?;
    ensure!(
        run.stderr == format!("error: agent not running: {} not found\n", other.display()),
        "{run:?}"
    );

    // A killed agent leaves a stale socket: refused, still one line.
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    ctl.expect(0, &["probe", "ready"])?;
    node.kill_agent();
    ensure!(socket.exists(), "SIGKILL cannot remove the socket");
    let refused = format!(
        "error: agent not running: {} refused the connection (stale socket)\n",
        socket.display()
    );
    agent_commands_fail(&ctl, &refused, scratch.path())?;
    eprintln!("weftctl e2e took {:?}", started.elapsed());
    Ok(())
}

/// Every command that needs the agent, in every format: exit 1 and exactly `stderr`.
fn agent_commands_fail(ctl: &Ctl, stderr: &str, scratch: &Path) -> Result<()> {
    let commands: [&[&str]; 8] = [
        &["get", "agentinfo"],
        &["get", "podinterface"],
        &["get", "ovsflows", "--table", "70"],
        &["get", "routes"],
        &["get", "repairs"],
        &[
            "trace-packet",
            "--source",
            "web-a",
            "--destination",
            "web-b",
        ],
        &["check", "mtu"],
        &["get", "podinterface", "web-a", "-n", "default"],
    ];
    for command in commands {
        for format in FORMATS {
            let mut args = command.to_vec();
            args.extend(["-o", format]);
            let run = ctl.expect(1, &args)?;
            ensure!(run.stderr == stderr, "{args:?}: {run:?}");
            ensure!(run.stdout.is_empty(), "{args:?}: {run:?}");
        }
    }
    let archive = scratch.join("failed.tar.gz");
    let run = ctl.expect(
        1,
        &["supportbundle", "-o", archive.to_str().context("path")?],
    )?;
    ensure!(run.stderr == stderr && !archive.exists(), "{run:?}");
    for probe in ["live", "ready"] {
        let run = ctl.expect(1, &["probe", probe])?;
        ensure!(run.stderr == stderr, "{run:?}");
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

#[test]
fn check_cni_flags_a_foreign_conflist_and_prints_the_multus_pin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = weft_e2e::node::Binaries::locate()?
        .agent
        .with_file_name("weftctl");
    let net_d = dir.path().join("net.d");
    write(&net_d.join("10-weft.conflist"), WEFT_CONFLIST)?;
    write(
        &net_d.join("05-other.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"other-cni"}]}"#,
    )?;
    write(
        &net_d.join("99-loopback.conf"),
        r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
    )?;
    let run = |format: &str| -> Result<Run> {
        let out = Command::new(&bin)
            .args([
                "--config",
                "/nonexistent/weft-agent.conf",
                "check",
                "cni",
                "--cni-conf-dir",
            ])
            .arg(&net_d)
            .args(["-o", format])
            .output()?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    };
    let table = run("table")?;
    ensure!(table.code == 3, "{table:?}");
    // Runs of spaces (table alignment) collapsed to one.
    let squeezed = table
        .stdout
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for expected in [
        "PROBLEM: 05-other.conflist sorts before 10-weft.conflist: a valid config ahead of Weft's",
        "containerd (go-cni): loads 05-other.conflist",
        "cri-o (ocicni): loads 05-other.conflist",
        "multus \"auto\": loads 05-other.conflist",
        "podman (network weft): loads 10-weft.conflist",
        "\"multusMasterCNI\": \"10-weft.conflist\"",
        "--multus-master-cni-file-name=10-weft.conflist",
        "\"clusterNetwork\": \"weft\"",
    ] {
        ensure!(
            squeezed.contains(expected),
            "missing {expected:?} in:\n{}",
            table.stdout
        );
    }
    let json = run("json")?;
    ensure!(json.code == 3, "{json:?}");
    let v = json.json()?;
    ensure!(
        v["aheadOfWeft"] == serde_json::json!(["05-other.conflist"]),
        "{v}"
    );
    let order: Vec<&str> = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["file"].as_str())
        .collect();
    ensure!(
        order == ["05-other.conflist", "10-weft.conflist", "99-loopback.conf"],
        "{order:?}"
    );
    let yaml = run("yaml")?;
    ensure!(
        yaml.code == 3 && yaml.stdout.contains("runtimeChoice: 05-other.conflist"),
        "{yaml:?}"
    );
    std::fs::remove_file(net_d.join("05-other.conflist"))?;
    ensure!(run("table")?.code == 0);
    // An invalid file first: containerd stops there and loads no network at all (it does not
    // skip to Weft's, as CRI-O does); Multus "auto" takes it too (issue 13 part 4).
    write(&net_d.join("01-broken.conflist"), "{\"name\":")?;
    let broken = run("table")?;
    ensure!(broken.code == 3, "{broken:?}");
    let squeezed = broken
        .stdout
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for expected in [
        "containerd (go-cni): FAILS: 01-broken.conflist is invalid (not a json object): nothing is loaded",
        "cri-o (ocicni): loads 10-weft.conflist",
        "multus \"auto\": FAILS: 01-broken.conflist is invalid",
        "PROBLEM: 01-broken.conflist sorts before 10-weft.conflist: it is invalid, and containerd stops at it",
    ] {
        ensure!(squeezed.contains(expected), "missing {expected:?} in:\n{}", broken.stdout);
    }
    std::fs::remove_file(net_d.join("01-broken.conflist"))?;
    ensure!(run("table")?.code == 0);
    let missing = Command::new(&bin)
        .args([
            "--config",
            "/nonexistent/weft-agent.conf",
            "check",
            "cni",
            "--cni-conf-dir",
            "/nonexistent/net.d",
        ])
        .output()?;
    ensure!(missing.status.code() == Some(1), "{missing:?}");
    ensure!(
        String::from_utf8_lossy(&missing.stderr).lines().count() == 1,
        "{missing:?}"
    );
    Ok(())
}

#[test]
fn check_host_flags_networkd_without_drop_in_and_persistent_mac_policy() -> Result<()> {
    let root = tempfile::tempdir()?;
    let r = root.path();
    let bin = weft_e2e::node::Binaries::locate()?
        .agent
        .with_file_name("weftctl");
    write(
        &r.join("etc/systemd/networkd.conf"),
        "[Network]\n#ManageForeignRoutes=yes\n#SpeedMeter=no\n",
    )?;
    write(
        &r.join("usr/lib/systemd/network/99-default.link"),
        "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\nAlternativeNamesPolicy=database onboard slot path\nMACAddressPolicy=persistent\n",
    )?;
    let run = |format: &str| -> Result<(i32, String)> {
        let out = Command::new(&bin)
            .args([
                "--config",
                "/nonexistent/weft-agent.conf",
                "check",
                "host",
                "--root",
            ])
            .arg(r)
            .args(["-o", format])
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (code, table) = run("table")?;
    ensure!(code == 3, "{table}");
    for expected in [
        "ManageForeignRoutes",
        "ManageForeignRoutingPolicyRules",
        "MACAddressPolicy (wfpod-abcdef)",
        "persistent",
        "/usr/lib/systemd/network/99-default.link",
        "none installed",
    ] {
        ensure!(table.contains(expected), "missing {expected:?}:\n{table}");
    }
    let (code, json) = run("json")?;
    ensure!(code == 3);
    let v: Value = serde_json::from_str(&json)?;
    let problems: Vec<String> = v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["status"] == "problem")
        .map(|f| f["setting"].as_str().unwrap_or("").to_string())
        .collect();
    ensure!(
        problems
            == [
                "ManageForeignRoutes",
                "ManageForeignRoutingPolicyRules",
                "MACAddressPolicy (wfpod-abcdef)"
            ],
        "{problems:?}"
    );
    let networkd = v["dropIns"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["component"] == "networkd")
        .context("networkd drop-in entry")?;
    ensure!(networkd["present"] == false, "{networkd}");
    let (code, yaml) = run("yaml")?;
    ensure!(code == 3 && yaml.contains("status: problem"), "{yaml}");

    // With Weft's drop-ins nothing is left to fight.
    write(
        &r.join("etc/systemd/networkd.conf.d/50-weft.conf"),
        "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
    )?;
    write(
        &r.join("etc/systemd/network/00-weft.link"),
        "[Match]\nOriginalName=wf* weft-*\n\n[Link]\nMACAddressPolicy=none\n",
    )?;
    let (code, table) = run("table")?;
    if code != 0 {
        bail!("drop-ins did not fix it:\n{table}");
    }
    ensure!(
        table.contains("/etc/systemd/networkd.conf.d/50-weft.conf"),
        "{table}"
    );
    Ok(())
}
