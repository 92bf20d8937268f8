//! Agent start to ready (issue 4): the real `weft-agent` on the harness node with 1,000 peer
//! Nodes in the test API server (podCIDRs and the transport-address annotation, as the peers
//! watcher reads them) and 110 local pods, against a baseline of 0 peers and 0 pods measured in
//! the same run. Time is from the agent process's start (its `/proc` start time) to the first
//! successful CNI STATUS (polled every 5 ms through the real plugin); memory is the agent's
//! `VmHWM` (peak) and `VmRSS` from `/proc/PID/status` right at ready.
//!
//! - cold start: no bridge (`ovs-vsctl del-br`) and an empty dataDir, the uplink restored by
//!   the previous `--restore-uplink` stop: what a first start on a node does;
//! - restart: the agent stopped (SIGTERM) and started again with its bridge, flows and pods
//!   present (the pods' ports and flows are re-adopted).
//!
//! Targets: restart and cold start with 1,000 peers and 110 pods < 1 s, RSS <= 50 MB.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p weft-e2e --bench agent_start
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::json;
use weft_e2e::node::{Node, NodeOptions, PluginCall, Pod, BRIDGE};

/// Peer Nodes in the API server.
const PEERS: usize = 1000;
/// Local pods.
const PODS: usize = 110;
/// Repetitions per scenario.
const REPS: usize = 5;
/// Targets.
const TARGET_READY: Duration = Duration::from_secs(1);
const TARGET_RSS_KIB: u64 = 50 * 1024;

mod bench_support;
use bench_support::median;

fn main() -> ExitCode {
    bench_support::main("agent_start", run)
}

/// One start: time to ready and memory at ready.
#[derive(Debug, Clone)]
struct Start {
    ready: Duration,
    hwm_kib: u64,
    rss_kib: u64,
    /// Milestones of the agent's log (message, ms after "weft-agent starting").
    phases: Vec<(&'static str, f64)>,
}

/// Log messages that mark the start's phases, in order.
const MILESTONES: [&str; 6] = [
    "weft-agent starting",
    "has podCIDRs",
    "restart round persisted",
    "gateway converged",
    "host state reconciler running",
    "node ready",
];

/// Seconds of the day of a log line's RFC 3339 timestamp (ANSI colours stripped).
fn log_time(line: &str) -> Option<f64> {
    let mut plain = String::new();
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    let time = plain.split_whitespace().next()?.split_once('T')?.1;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.get(..9)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The first occurrence of each milestone in `log` (the part written by this start).
fn phases(log: &str) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let mut origin = None;
    for milestone in MILESTONES {
        let Some(t) = log
            .lines()
            .find(|l| l.contains(milestone))
            .and_then(log_time)
        else {
            continue;
        };
        let origin = *origin.get_or_insert(t);
        out.push((milestone, (t - origin) * 1000.0));
    }
    out
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

/// Starts the agent and waits for ready.
fn start(node: &mut Node) -> Result<Start> {
    let log_offset = node.agent_log().len();
    let started = Instant::now();
    node.start_agent()?;
    let pid = node.agent_pid().context("agent pid")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if node.plugin("STATUS", &PluginCall::default())?.success {
            let ready = started.elapsed();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
            ensure!(comm.trim() == "weft-agent", "pid {pid} is {comm:?}");
            let hwm_kib = status_kib(pid, "VmHWM:")?;
            let rss_kib = status_kib(pid, "VmRSS:")?;
            let log = node.agent_log();
            return Ok(Start {
                ready,
                hwm_kib,
                rss_kib,
                phases: phases(log.get(log_offset..).unwrap_or_default()),
            });
        }
        if !node.agent_running() || Instant::now() > deadline {
            bail!("agent not ready; log:\n{}", node.agent_log());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A node without Weft's bridge or state: stop (uplink restored), delete the bridge, empty
/// dataDir, then start.
fn cold_start(node: &mut Node) -> Result<Start> {
    node.stop_agent();
    node.ovs.vsctl(&["--if-exists", "del-br", BRIDGE])?;
    if node.data_dir.exists() {
        std::fs::remove_dir_all(&node.data_dir)?;
    }
    start(node)
}

fn restart(node: &mut Node) -> Result<Start> {
    node.stop_agent();
    start(node)
}

/// Peer flows (cookie category Peer = 4 in bits 40..48) on the bridge.
fn peer_flows(node: &Node) -> Result<usize> {
    Ok(node
        .ovs
        .dump_flows(BRIDGE)?
        .iter()
        .filter(|f| {
            f.strip_prefix("cookie=0x")
                .and_then(|r| r.split(',').next())
                .and_then(|c| u64::from_str_radix(c, 16).ok())
                .is_some_and(|c| (c >> 40) & 0xff == 4)
        })
        .count())
}

struct Summary {
    label: String,
    phases: Vec<(&'static str, f64)>,
    ready_ms: f64,
    max_ready_ms: f64,
    hwm_kib: u64,
    rss_kib: u64,
}

fn summarize(label: &str, starts: &[Start]) -> Summary {
    let ms: Vec<f64> = starts
        .iter()
        .map(|s| s.ready.as_secs_f64() * 1000.0)
        .collect();
    Summary {
        label: label.to_string(),
        phases: starts.last().map(|s| s.phases.clone()).unwrap_or_default(),
        ready_ms: median(ms.clone()),
        max_ready_ms: ms.iter().copied().fold(0.0, f64::max),
        hwm_kib: starts.iter().map(|s| s.hwm_kib).max().unwrap_or(0),
        rss_kib: starts.iter().map(|s| s.rss_kib).max().unwrap_or(0),
    }
}

fn repeat(node: &mut Node, reps: usize, f: fn(&mut Node) -> Result<Start>) -> Result<Vec<Start>> {
    (0..reps).map(|_| f(node)).collect()
}

fn run() -> Result<()> {
    let mut node = Node::start(NodeOptions {
        agent_args: vec!["--restore-uplink".into()],
        ..NodeOptions::new(&["10.80.0.0/24"])
    })?;
    let mut rows = Vec::new();
    rows.push(summarize(
        "cold, 0 peers, 0 pods",
        &repeat(&mut node, REPS, cold_start)?,
    ));
    rows.push(summarize(
        "restart, 0 peers, 0 pods",
        &repeat(&mut node, REPS, restart)?,
    ));

    let created = Instant::now();
    for i in 0..PEERS {
        let name = format!("peer-{i}");
        let cidr = format!("172.{}.{}.0/24", 16 + i / 256, i % 256);
        let transport = format!("10.{}.{}.{}", 100 + i / 62500, (i / 250) % 250, i % 250 + 1);
        node.api
            .create_node(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"weft.dev/transport-address": transport},
                },
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                "status": {"addresses": [{"type": "InternalIP", "address": transport}]},
            }))
            .map_err(|e| anyhow!("creating {name}: {e:?}"))?;
    }
    println!("created {PEERS} peer Nodes in {:?}", created.elapsed());
    let cold_peers = repeat(&mut node, REPS, cold_start)?;
    let flows = peer_flows(&node)?;
    ensure!(
        flows >= PEERS,
        "ready with only {flows} peer flows for {PEERS} peers"
    );
    rows.push(summarize(
        &format!("cold, {PEERS} peers, 0 pods"),
        &cold_peers,
    ));

    let pods: Vec<Pod> = (0..PODS)
        .map(|i| Pod::create(&node, &format!("bench-{i}")))
        .collect::<Result<_>>()?;
    let added = Instant::now();
    for pod in &pods {
        node.add(pod)?;
    }
    println!("added {PODS} pods in {:?}", added.elapsed());
    let restarts = repeat(&mut node, REPS, restart)?;
    ensure!(
        node.pod_ports()?.len() == PODS,
        "pods lost over the restarts"
    );
    ensure!(peer_flows(&node)? >= PEERS, "peer flows lost");
    rows.push(summarize(
        &format!("restart, {PEERS} peers, {PODS} pods"),
        &restarts,
    ));

    let base_ready = rows[1].ready_ms;
    let base_rss = rows[1].rss_kib as f64;
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "scenario (median of 5)", "ready ms", "max ms", "VmHWM MB", "VmRSS MB", "x time", "x rss"
    );
    for row in &rows {
        println!(
            "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>8.2}",
            row.label,
            row.ready_ms,
            row.max_ready_ms,
            row.hwm_kib as f64 / 1024.0,
            row.rss_kib as f64 / 1024.0,
            row.ready_ms / base_ready,
            row.rss_kib as f64 / base_rss,
        );
    }
    println!("\nmilestones of the last start of each scenario (ms after \"weft-agent starting\"):");
    for row in &rows {
        let line: Vec<String> = row
            .phases
            .iter()
            .map(|(m, ms)| format!("{m} {ms:.0}"))
            .collect();
        println!("  {}: {}", row.label, line.join(" | "));
    }
    let worst_ms = rows[2].ready_ms.max(rows[3].ready_ms);
    let worst_hwm = rows.iter().map(|r| r.hwm_kib).max().unwrap_or(0);
    println!(
        "\ntargets: ready < {:?} with {PEERS} peers and {PODS} pods: {} ({worst_ms:.1} ms); \
         peak RSS <= 50 MB: {} ({:.1} MB)",
        TARGET_READY,
        if worst_ms < TARGET_READY.as_secs_f64() * 1000.0 {
            "met"
        } else {
            "MISSED"
        },
        if worst_hwm <= TARGET_RSS_KIB {
            "met"
        } else {
            "MISSED"
        },
        worst_hwm as f64 / 1024.0
    );
    Ok(())
}
