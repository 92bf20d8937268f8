//! CNI ADD/DEL latency (issue 3): the `weft` plugin against the reference `bridge` + `host-local`
//! plugins (Debian's containernetworking-plugins), side by side in the same run.
//!
//! Both plugins are executed as libcni executes them: a fresh process per call, the `CNI_*`
//! variables in its environment and the network config on stdin; each call is timed from spawn to
//! exit. Each side has a namespace acting as its node, and the plugin processes are spawned from
//! threads inside it: Weft's is the harness node (its own OVS and the real `weft-agent`); the
//! reference's is a scratch namespace, so its Linux bridge never exists in the host namespace.
//! Pods are fresh namespaces (`ip netns add`, loopback up) made before the clock starts.
//!
//! Per side, interleaved: one untimed warm-up ADD/DEL; 100 ADDs one after another, then their 100
//! DELs; 100 ADDs at concurrency 16, then their 100 DELs at concurrency 16. Every ADD must hand out
//! a distinct IP, and after every DEL phase the side must hold no veth, OVS port, pod flow or IP
//! allocation. Namespaces are deleted on drop (also on failure); a failed ADD phase is followed by
//! a best-effort DEL of every pod.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p weft-e2e --bench cni_add_del
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};
use weft_e2e::node::{Node, NodeOptions};
use weft_e2e::{cmd, netns, ovs};

/// Pods per phase.
const PODS: usize = 100;
/// Parallel runtime calls in the concurrent phases.
const CONCURRENCY: usize = 16;
/// Where Debian installs the reference plugins (also the `CNI_PATH` of both sides).
const REFERENCE_DIR: &str = "/usr/lib/cni";
/// Weft's pod CIDR.
const WEFT_POD_CIDR: &str = "10.70.0.0/16";
/// host-local's subnet.
const REFERENCE_SUBNET: &str = "10.71.0.0/16";
/// The reference's Linux bridge (inside the scratch node namespace).
const REFERENCE_BRIDGE: &str = "cni-bench0";
/// The reference network's name (host-local keeps its allocations under dataDir/<name>/).
const REFERENCE_NETWORK: &str = "bench-bridge";
/// Target: Weft ADD p50 at most this fraction of the reference's.
const TARGET_ADD_RATIO: f64 = 0.5;
/// Target: Weft ADD and DEL p99 at concurrency 16 at most this.
const TARGET_P99: Duration = Duration::from_millis(50);

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--list") {
        // `cargo test --benches` asks harness-less benches to list their tests: there are none.
        return ExitCode::SUCCESS;
    }
    let outcome = run();
    // Everything `run` made is dropped by now, on success and on failure alike.
    let leftovers = leftovers();
    match (&outcome, &leftovers) {
        (Ok(()), Ok(())) => {
            println!("cleanup: no namespace, bridge or process of this run is left");
            ExitCode::SUCCESS
        }
        _ => {
            if let Err(e) = outcome {
                eprintln!("cni_add_del failed: {e:#}");
            }
            if let Err(e) = leftovers {
                eprintln!("cni_add_del left things behind: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let bridge = Path::new(REFERENCE_DIR).join("bridge");
    for plugin in [&bridge, &Path::new(REFERENCE_DIR).join("host-local")] {
        ensure!(
            plugin.exists(),
            "reference plugin {} is missing: install the Debian package \
             containernetworking-plugins (build/install-deps lists it)",
            plugin.display()
        );
    }

    let node = Node::start(NodeOptions::new(&[WEFT_POD_CIDR]))?;
    let agent = node
        .agent_pid()
        .ok_or_else(|| anyhow!("agent of node {} does not run", node.name))?;
    let comm = std::fs::read_to_string(format!("/proc/{agent}/comm"))?;
    ensure!(
        comm.trim() == "weft-agent",
        "pid {agent} is {comm:?}, not weft-agent"
    );
    let weft = Side {
        label: "weft",
        tag: 'w',
        plugin: node.bins.plugin.clone(),
        config: node.netconf("1.0.0").to_string(),
        node_netns: node.netns().to_string(),
    };

    let scratch = Scratch::create()?;
    let host_local_dir = tempfile::tempdir()?;
    let reference = Side {
        label: "bridge",
        tag: 'b',
        plugin: bridge,
        config: json!({
            "cniVersion": "1.0.0",
            "name": REFERENCE_NETWORK,
            "type": "bridge",
            "bridge": REFERENCE_BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": REFERENCE_SUBNET}]],
                "dataDir": host_local_dir.path(),
            },
        })
        .to_string(),
        node_netns: scratch.0.clone(),
    };
    let weft_clean = || weft_is_clean(&node);
    let reference_clean = || reference_is_clean(&scratch.0, host_local_dir.path());

    let sizes = PluginSize::measure(&weft.plugin)?;
    let rss_idle = vm_rss_kib(agent)?;
    let spawn_weft = version_calls(&weft)?;
    let spawn_reference = version_calls(&reference)?;

    for (side, clean) in [
        (&weft, &weft_clean as &dyn Fn() -> Result<()>),
        (&reference, &reference_clean),
    ] {
        let warm = [Sandbox::create(side.tag)?];
        phase(side, "ADD", &warm, 1)?;
        phase(side, "DEL", &warm, 1)?;
        clean().with_context(|| format!("{} after the warm-up", side.label))?;
    }

    let mut rss_loaded = 0;
    let mut log_from = node.agent_log().len();
    let weft_seq = round(&weft, 1, &weft_clean, &mut || {
        rss_loaded = vm_rss_kib(agent)?;
        ensure!(node.pod_ports()?.len() == PODS, "{PODS} pod ports");
        Ok(())
    })?;
    let agent_seq = AgentTimes::parse(&node.agent_log()[log_from..]);
    let ref_seq = round(&reference, 1, &reference_clean, &mut || {
        reference_links_are(&scratch.0, PODS)
    })?;
    log_from = node.agent_log().len();
    let weft_conc = round(&weft, CONCURRENCY, &weft_clean, &mut || {
        ensure!(node.pod_ports()?.len() == PODS, "{PODS} pod ports");
        Ok(())
    })?;
    let agent_conc = AgentTimes::parse(&node.agent_log()[log_from..]);
    let ref_conc = round(&reference, CONCURRENCY, &reference_clean, &mut || {
        reference_links_are(&scratch.0, PODS)
    })?;
    let rss_after = vm_rss_kib(agent)?;

    println!("\nCNI ADD/DEL latency, {PODS} pods per phase, spawn to exit per call (ms)\n");
    println!("| plugin | mode | ADD p50 | ADD p99 | DEL p50 | DEL p99 |");
    println!("|---|---|---|---|---|---|");
    for (label, mode, times) in [
        ("weft", "sequential", &weft_seq),
        ("bridge + host-local", "sequential", &ref_seq),
        ("weft", "concurrency 16", &weft_conc),
        ("bridge + host-local", "concurrency 16", &ref_conc),
    ] {
        println!(
            "| {label} | {mode} | {} | {} | {} | {} |",
            ms(times.add.p50),
            ms(times.add.p99),
            ms(times.del.p50),
            ms(times.del.p99)
        );
    }

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let seq_ratio = ratio(weft_seq.add.p50, ref_seq.add.p50);
    let conc_ratio = ratio(weft_conc.add.p50, ref_conc.add.p50);
    println!("\nratios weft / bridge:");
    println!(
        "  ADD p50 sequential     {seq_ratio:.2}x (target <= {TARGET_ADD_RATIO}x: {})",
        verdict(seq_ratio <= TARGET_ADD_RATIO)
    );
    println!(
        "  ADD p50 concurrency 16 {conc_ratio:.2}x (target <= {TARGET_ADD_RATIO}x: {})",
        verdict(conc_ratio <= TARGET_ADD_RATIO)
    );
    println!(
        "  DEL p50 sequential     {:.2}x, concurrency 16 {:.2}x",
        ratio(weft_seq.del.p50, ref_seq.del.p50),
        ratio(weft_conc.del.p50, ref_conc.del.p50)
    );
    println!(
        "weft p99 at concurrency 16: ADD {} ms, DEL {} ms (target <= {} ms: {})",
        ms(weft_conc.add.p99),
        ms(weft_conc.del.p99),
        TARGET_P99.as_millis(),
        verdict(weft_conc.add.p99 <= TARGET_P99 && weft_conc.del.p99 <= TARGET_P99)
    );
    println!(
        "\nprocess spawn + VERSION (no agent, no netns work), {PODS} sequential calls: \
         weft p50 {} ms p99 {} ms; bridge p50 {} ms p99 {} ms",
        ms(spawn_weft.p50),
        ms(spawn_weft.p99),
        ms(spawn_reference.p50),
        ms(spawn_reference.p99)
    );
    for (mode, agent_times, plugin) in [
        ("sequential", &agent_seq, &weft_seq),
        ("concurrency 16", &agent_conc, &weft_conc),
    ] {
        println!(
            "weft agent-side handling ({mode}, from the agent log, whole ms): ADD p50 {} p99 {} \
             ({} calls), DEL p50 {} p99 {} ({} calls); plugin-side rest at p50: ADD {} ms, DEL {} ms",
            agent_times.add.p50.as_millis(),
            agent_times.add.p99.as_millis(),
            agent_times.add_calls,
            agent_times.del.p50.as_millis(),
            agent_times.del.p99.as_millis(),
            agent_times.del_calls,
            ms(plugin.add.p50.saturating_sub(agent_times.add.p50)),
            ms(plugin.del.p50.saturating_sub(agent_times.del.p50)),
        );
        let steps: Vec<String> = agent_times
            .steps
            .iter()
            .map(|(label, l)| format!("{label} {} / {}", ms(l.p50), ms(l.p99)))
            .collect();
        println!("  agent steps ({mode}), p50 / p99 ms: {}", steps.join(", "));
    }
    println!(
        "\nweft plugin binary: {} (release), {} (strip -o)",
        kib(sizes.release),
        kib(sizes.stripped)
    );
    println!(
        "weft-agent VmRSS: {rss_idle} KiB with 0 pods, {rss_loaded} KiB with {PODS} pods attached, \
         {rss_after} KiB after all were deleted again"
    );
    Ok(())
}

/// One plugin under test and the namespace acting as its node.
struct Side {
    label: &'static str,
    /// Marks its sandboxes' namespace names.
    tag: char,
    plugin: PathBuf,
    /// The network config on stdin.
    config: String,
    /// The plugin processes are spawned from threads inside this namespace.
    node_netns: String,
}

/// A pod sandbox: a fresh network namespace (deleted on drop) and its CNI identity.
struct Sandbox {
    netns: String,
    container_id: String,
    pod: String,
}

impl Sandbox {
    /// Named `wt-<pid>-...` so the harness sweeps it if this process is killed.
    fn create(tag: char) -> Result<Sandbox> {
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let sandbox = Sandbox {
            netns: format!("{}{}-bench{tag}{n}", ovs::PREFIX, std::process::id()),
            container_id: format!("{:016x}{n:08x}", std::process::id()),
            pod: format!("bench-{tag}{n}"),
        };
        netns::create(&sandbox.netns)?;
        Ok(sandbox)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.netns) {
            eprintln!("cannot delete netns {}: {e:#}", self.netns);
        }
    }
}

/// The reference's node: a scratch namespace (deleted on drop, and with it the bridge).
struct Scratch(String);

impl Scratch {
    fn create() -> Result<Scratch> {
        let name = format!("{}{}-benchnode", ovs::PREFIX, std::process::id());
        netns::create(&name)?;
        Ok(Scratch(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.0) {
            eprintln!("cannot delete netns {}: {e:#}", self.0);
        }
    }
}

/// p50 and p99 of a set of timings.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: Duration,
    p99: Duration,
}

impl Latency {
    /// Nearest-rank percentiles.
    fn of(mut times: Vec<Duration>) -> Latency {
        times.sort();
        let rank = |p: usize| {
            let index = (times.len() * p).div_ceil(100).saturating_sub(1);
            times.get(index).copied().unwrap_or_default()
        };
        Latency {
            p50: rank(50),
            p99: rank(99),
        }
    }
}

/// ADD and DEL latency of one round.
struct Round {
    add: Latency,
    del: Latency,
}

/// One libcni-style plugin run; returns its wall time (spawn to exit) and stdout.
fn invoke(side: &Side, command: &str, sandbox: Option<&Sandbox>) -> Result<(Duration, String)> {
    let mut process = Command::new(&side.plugin);
    process
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(sandbox) = sandbox {
        process
            .env("CNI_CONTAINERID", &sandbox.container_id)
            .env("CNI_NETNS", netns::path(&sandbox.netns))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={}",
                    sandbox.pod
                ),
            );
    }
    let started = Instant::now();
    let mut child = process
        .spawn()
        .with_context(|| format!("cannot run {}", side.plugin.display()))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    // A plugin may exit without reading stdin (bridge's VERSION); its answer still counts.
    match stdin.write_all(side.config.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    drop(stdin);
    let output = child.wait_with_output()?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{} {command} of {} failed ({}): {stdout} {}",
        side.label,
        sandbox.map_or("-", |s| &s.pod),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok((elapsed, stdout))
}

/// Runs `command` for every sandbox on `workers` threads inside the side's node namespace;
/// returns each call's wall time and stdout, in completion order.
fn phase(
    side: &Side,
    command: &str,
    sandboxes: &[Sandbox],
    workers: usize,
) -> Result<Vec<(Duration, String)>> {
    let node_ns = File::open(netns::path(&side.node_netns))
        .with_context(|| format!("cannot open netns {}", side.node_netns))?;
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(sandboxes.len()));
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    setns(&node_ns, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("cannot enter netns {}", side.node_netns))?;
                    while let Some(sandbox) = sandboxes.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let result = invoke(side, command, Some(sandbox))?;
                        results.lock().unwrap().push(result);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| match handle.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("worker panicked".to_string()),
            })
            .collect()
    });
    ensure!(
        errors.is_empty(),
        "{} {command}: {} workers failed: {errors:#?}",
        side.label,
        errors.len()
    );
    Ok(results.into_inner().unwrap())
}

/// 100 fresh pods: ADD all on `workers` threads, check, DEL all, check the side is clean.
fn round(
    side: &Side,
    workers: usize,
    clean: &dyn Fn() -> Result<()>,
    after_add: &mut dyn FnMut() -> Result<()>,
) -> Result<Round> {
    let sandboxes: Vec<Sandbox> = (0..PODS)
        .map(|_| Sandbox::create(side.tag))
        .collect::<Result<_>>()?;
    let added = phase(side, "ADD", &sandboxes, workers).and_then(|added| {
        let ips = added
            .iter()
            .map(|(_, stdout)| first_ip(stdout))
            .collect::<Result<BTreeSet<_>>>()?;
        ensure!(
            ips.len() == PODS,
            "{} handed out {} distinct IPs to {PODS} pods",
            side.label,
            ips.len()
        );
        after_add()?;
        Ok(added)
    });
    let added = match added {
        Ok(added) => added,
        Err(e) => {
            for sandbox in &sandboxes {
                let _ = invoke(side, "DEL", Some(sandbox));
            }
            return Err(e.context(format!("{} ADD at concurrency {workers}", side.label)));
        }
    };
    let deleted = phase(side, "DEL", &sandboxes, workers)
        .with_context(|| format!("{} DEL at concurrency {workers}", side.label))?;
    clean().with_context(|| format!("{} after DEL at concurrency {workers}", side.label))?;
    Ok(Round {
        add: Latency::of(added.into_iter().map(|(t, _)| t).collect()),
        del: Latency::of(deleted.into_iter().map(|(t, _)| t).collect()),
    })
}

/// 100 sequential VERSION calls: the cost of starting the plugin process alone.
fn version_calls(side: &Side) -> Result<Latency> {
    let times = (0..PODS)
        .map(|_| invoke(side, "VERSION", None).map(|(t, _)| t))
        .collect::<Result<_>>()?;
    Ok(Latency::of(times))
}

/// The first address of a CNI result.
fn first_ip(result: &str) -> Result<IpAddr> {
    let value: Value =
        serde_json::from_str(result).with_context(|| format!("ADD printed no JSON: {result:?}"))?;
    value["ips"][0]["address"]
        .as_str()
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| anyhow!("ADD result without an IP: {result}"))
}

/// No veth, pod port, pod flow or IP allocation left on Weft's node.
fn weft_is_clean(node: &Node) -> Result<()> {
    let links = node.links_with_prefix("wf")?;
    ensure!(links.is_empty(), "{} veths left: {links:?}", links.len());
    let ports = node.pod_ports()?;
    ensure!(ports.is_empty(), "ports left: {ports:?}");
    let ipam = node.ipam_allocations()?;
    ensure!(ipam.is_empty(), "IP allocations left: {ipam:?}");
    let flows = node.pod_flows()?;
    ensure!(flows.is_empty(), "pod flows left: {flows:#?}");
    Ok(())
}

/// The reference node holds exactly `veths` host veths besides loopback and the bridge.
fn reference_links_are(scratch: &str, veths: usize) -> Result<()> {
    let out = cmd::run("ip", &["-n", scratch, "-o", "link", "show"])?;
    let others: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| *name != "lo" && *name != REFERENCE_BRIDGE)
        .collect();
    ensure!(
        others.len() == veths,
        "{veths} veths expected in {scratch}, found {}: {others:?}",
        others.len()
    );
    Ok(())
}

/// No host veth and no host-local allocation left on the reference node.
fn reference_is_clean(scratch: &str, data_dir: &Path) -> Result<()> {
    reference_links_are(scratch, 0)?;
    let dir = data_dir.join(REFERENCE_NETWORK);
    let allocated: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.parse::<IpAddr>().is_ok())
        .collect();
    ensure!(
        allocated.is_empty(),
        "host-local allocations left: {allocated:?}"
    );
    Ok(())
}

/// Nothing of this run is left: no namespace named after this process, no reference bridge in
/// the host namespace.
fn leftovers() -> Result<()> {
    let mine = format!("{}{}-", ovs::PREFIX, std::process::id());
    let namespaces: Vec<String> = netns::list()
        .into_iter()
        .filter(|name| name.starts_with(&mine))
        .collect();
    ensure!(namespaces.is_empty(), "namespaces left: {namespaces:?}");
    if Path::new("/sys/class/net").join(REFERENCE_BRIDGE).exists() {
        bail!("bridge {REFERENCE_BRIDGE} exists in the host namespace");
    }
    Ok(())
}

/// The weft plugin binary's size as built and stripped.
struct PluginSize {
    release: u64,
    stripped: u64,
}

impl PluginSize {
    fn measure(plugin: &Path) -> Result<PluginSize> {
        let dir = tempfile::tempdir()?;
        let stripped = dir.path().join("weft");
        cmd::run(
            "strip",
            &[
                "-o",
                &stripped.display().to_string(),
                &plugin.display().to_string(),
            ],
        )?;
        Ok(PluginSize {
            release: std::fs::metadata(plugin)?.len(),
            stripped: std::fs::metadata(&stripped)?.len(),
        })
    }
}

/// VmRSS of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// The agent's own handling time per call, from its `pod attached` / `pod detached` log lines
/// (`elapsed_ms`, whole milliseconds).
struct AgentTimes {
    add: Latency,
    add_calls: usize,
    del: Latency,
    del_calls: usize,
    /// Per step (`*_us` fields of the same lines): label and latency.
    steps: Vec<(&'static str, Latency)>,
}

impl AgentTimes {
    fn parse(log: &str) -> AgentTimes {
        let plain = strip_ansi(log);
        let field = |message: &str, key: &str| -> Vec<u64> {
            plain
                .lines()
                .filter(|line| line.contains(message))
                .filter_map(|line| line.split(&format!(" {key}=")).nth(1))
                .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .filter_map(|digits| digits.parse().ok())
                .collect()
        };
        let times = |message: &str| -> Vec<Duration> {
            field(message, "elapsed_ms")
                .into_iter()
                .map(Duration::from_millis)
                .collect()
        };
        let step = |message: &str, key: &str| {
            Latency::of(
                field(message, key)
                    .into_iter()
                    .map(Duration::from_micros)
                    .collect(),
            )
        };
        let add = times("pod attached");
        let del = times("pod detached");
        AgentTimes {
            add_calls: add.len(),
            add: Latency::of(add),
            del_calls: del.len(),
            del: Latency::of(del),
            steps: vec![
                ("ADD veth", step("pod attached", "veth_us")),
                ("ADD port", step("pod attached", "port_us")),
                ("ADD wired", step("pod attached", "wired_us")),
                ("DEL port", step("pod detached", "port_us")),
                ("DEL veth", step("pod detached", "veth_us")),
            ],
        }
    }
}

/// Removes ANSI escape sequences (the agent's log may be coloured).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}
