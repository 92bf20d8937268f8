//! CNI requests that are abandoned, raced or interrupted (issue 13 part 3), through the real
//! `weft` plugin, the real agent and real OVS:
//!
//! - an ADD whose plugin gave up (agent stalled past `agentTimeoutSeconds`) never runs later,
//!   not even after the runtime's DEL: before, the agent ran the DEL (nothing to do) and then
//!   the abandoned ADD, which attached and leaked (4 of 4 tries);
//! - a DEL wins over an earlier ADD of the same (container ID, ifname) still running: the ADD
//!   is cancelled and rolled back, the DEL then finds nothing;
//! - SIGTERM 50 ms after 10 concurrent ADDs began: every ADD is finished or rolled back before
//!   the agent exits (before: 6 of 10 pods kept an eth0 without addresses and a host veth);
//!   and SIGTERM while 10 ADDs surely are in flight (ovsdb-server stalled): all rolled back;
//! - SIGKILL during 10 concurrent ADDs: the restarted agent sweeps every half-made attachment
//!   (a host veth without its OVS port, an OVS port without its veth);
//! - ovsdb-server away longer than the plugin's timeout: the ADDs are rolled back at the
//!   plugin's deadline and nothing is created when ovsdb-server returns (before: the plugin
//!   gave up at 30 s and the agent still finished all 10 pods at 47 s). CI runs a short
//!   variant (3 pods, 4 s timeout, 7 s away); the issue's numbers (10 pods, 30 s, 40 s) are
//!   `#[ignore]`d for time (about a minute): `cargo test -p weft-e2e --test cni_abandoned --
//!   --ignored`.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use weft_e2e::cmd;
use weft_e2e::netns;
use weft_e2e::node::{Node, NodeOptions, PluginCall, PluginOutput, Pod};

const POD_CIDR: &str = "10.244.0.0/24";

/// The node's network config with `agentTimeoutSeconds` set.
fn netconf(node: &Node, timeout_s: u64) -> Value {
    let mut conf = node.netconf("1.0.0");
    conf["agentTimeoutSeconds"] = timeout_s.into();
    conf
}

fn call_with(pod: &Pod, conf: &Value) -> PluginCall {
    PluginCall {
        config: Some(conf.clone()),
        ..pod.call()
    }
}

/// Whether the pod has an `eth0`, and whether it has an IPv4 address on it.
fn eth0(pod: &Pod) -> (bool, bool) {
    let link = netns::exec(&pod.netns, &["ip", "-o", "link", "show", "eth0"]).is_ok();
    let addr = netns::exec(
        &pod.netns,
        &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    )
    .map(|out| out.contains("inet "))
    .unwrap_or(false);
    (link, addr)
}

/// Runs `command` for every pod at once (one plugin process each, as a runtime starting many
/// pods does); `during` runs while they are in flight.
fn concurrently(
    node: &Node,
    pods: &[Pod],
    command: &'static str,
    conf: &Value,
    during: impl FnOnce() -> Result<()>,
) -> Result<Vec<PluginOutput>> {
    let runtime = node.runtime();
    let handles: Vec<_> = pods
        .iter()
        .map(|pod| {
            let runtime = runtime.clone();
            let call = call_with(pod, conf);
            std::thread::spawn(move || runtime.call(command, &call))
        })
        .collect();
    let during = during();
    let outs = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("plugin thread panicked"))?
        })
        .collect::<Result<Vec<_>>>()?;
    during?;
    Ok(outs)
}

/// SIGSTOPs a process for as long as it lives; SIGCONT on drop (also when the test fails).
struct Stalled(Pid);

impl Stalled {
    fn new(pid: u32) -> Result<Self> {
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGSTOP)?;
        Ok(Stalled(pid))
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn wait_for_log(node: &Node, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !node.agent_log().contains(needle) {
        ensure!(
            Instant::now() < deadline,
            "agent never logged {needle:?}; log:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The agent stalled (SIGSTOP) past the plugin's 2 s timeout: ADD and then DEL answer code 11
/// from the plugin. Once the agent runs again it sees both; the ADD must not run (its plugin is
/// gone and its deadline passed, and a DEL started after it arrived), so nothing leaks, and the
/// pod's next sandbox is wired normally.
#[test]
fn an_add_its_plugin_gave_up_on_never_runs_after_the_del() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pod = Pod::create(&node, "stalled")?;
    let call = call_with(&pod, &netconf(&node, 2));
    let stalled = Stalled::new(node.agent_pid().context("agent pid")?)?;
    let add = node.plugin("ADD", &call)?;
    ensure!(
        add.code() == Some(11),
        "ADD to a stalled agent: {}",
        add.stdout
    );
    let del = node.plugin("DEL", &call)?;
    ensure!(
        del.code() == Some(11),
        "DEL to a stalled agent: {}",
        del.stdout
    );
    drop(stalled);
    // Time for the agent to see both requests and for a wrongly resumed ADD to finish (an ADD
    // takes ~30 ms here).
    std::thread::sleep(Duration::from_secs(2));
    ensure!(node.agent_running(), "agent exited:\n{}", node.agent_log());
    ensure!(
        eth0(&pod) == (false, false),
        "the abandoned ADD wired the pod"
    );
    node.assert_no_pod_state()
        .context("the abandoned ADD left state")?;
    wait_for_log(&node, "add abandoned", Duration::from_secs(5))?;
    // The runtime's next sandbox of the pod (before: 117, host name taken).
    let next = Pod::create(&node, "stalled")?;
    node.add(&next).context("ADD of the next sandbox")?;
    node.del(&next)?;
    node.assert_no_pod_state()
}

/// ovsdb-server stopped, so an ADD waits in its port creation; a DEL of the same attachment
/// arrives meanwhile. When ovsdb-server returns, the ADD is rolled back and answers code 11
/// ("a del of the attachment arrived"), the DEL succeeds, and nothing of the pod is left.
#[test]
fn a_del_wins_over_an_earlier_add_still_running() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pod = Pod::create(&node, "raced")?;
    let conf = netconf(&node, 20);
    node.ovs.stop_ovsdb()?;
    let runtime = node.runtime();
    let add_call = call_with(&pod, &conf);
    let add = std::thread::spawn(move || runtime.call("ADD", &add_call));
    std::thread::sleep(Duration::from_millis(700));
    let runtime = node.runtime();
    let del_call = call_with(&pod, &conf);
    let del = std::thread::spawn(move || runtime.call("DEL", &del_call));
    std::thread::sleep(Duration::from_millis(1500));
    node.ovs.start_ovsdb()?;
    let add = add.join().map_err(|_| anyhow::anyhow!("ADD thread"))??;
    let del = del.join().map_err(|_| anyhow::anyhow!("DEL thread"))??;
    ensure!(
        add.code() == Some(11) && add.stdout.contains("a del of the attachment arrived"),
        "ADD raced by a DEL: {} (after {:?})",
        add.stdout,
        add.elapsed
    );
    ensure!(del.success, "DEL: {}", del.stdout);
    ensure!(eth0(&pod) == (false, false), "the cancelled ADD left eth0");
    node.assert_no_pod_state()
}

/// SIGTERM 50 ms after 10 concurrent ADDs began (a rolling update): every ADD answers, and
/// each pod is either fully wired (its ADD succeeded) or has nothing (its ADD failed with 11):
/// no eth0 without addresses, no host veth of a failed pod. The restarted agent then serves
/// the runtime's DELs and nothing is left.
#[test]
fn sigterm_during_concurrent_adds_finishes_or_rolls_back_each() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pods = (0..10)
        .map(|i| Pod::create(&node, &format!("term{i}")))
        .collect::<Result<Vec<_>>>()?;
    let conf = netconf(&node, 30);
    let started = Instant::now();
    let outs = concurrently(&node, &pods, "ADD", &conf, || {
        std::thread::sleep(Duration::from_millis(50));
        node.signal_agent(Signal::SIGTERM)
    })?;
    let answered = started.elapsed();
    let status = node
        .wait_agent_exit(Duration::from_secs(20))
        .context("the agent did not exit within 20 s of SIGTERM")?;
    let exited = started.elapsed();
    ensure!(status.success(), "agent exit status {status}");
    let mut wired = Vec::new();
    for (pod, out) in pods.iter().zip(&outs) {
        let (link, addr) = eth0(pod);
        if out.success {
            ensure!(
                link && addr,
                "pod {} ADD succeeded without eth0+address",
                pod.name
            );
            wired.push(pod.name.clone());
        } else {
            ensure!(
                out.code() == Some(11),
                "pod {}: ADD failed with other than 11: {}",
                pod.name,
                out.stdout
            );
            ensure!(
                !link,
                "pod {}: ADD failed but eth0 is there (address: {addr}): half-made",
                pod.name
            );
        }
    }
    let veths = node.links_with_prefix("wf")?;
    ensure!(
        veths.len() == wired.len(),
        "host veths {veths:?} for wired pods {wired:?}"
    );
    println!(
        "SIGTERM at 50 ms: {} of 10 ADDs wired, {} rolled back; all answered after {answered:?}, agent exited after {exited:?}",
        wired.len(),
        10 - wired.len()
    );
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    for pod in &pods {
        node.del(pod)?;
    }
    node.assert_no_pod_state()
}

/// ovsdb-server stalled (SIGSTOP), so 10 concurrent ADDs are surely in flight (each waiting
/// for its port) when the agent gets SIGTERM: each is rolled back and answers code 11, the
/// agent exits within its drain bound, and no pod has an eth0 or a host veth. The port
/// creations ovsdb-server had already received run when it resumes; the restarted agent's start
/// sweep removes them (ports without veths), and nothing is left after the runtime's DELs.
#[test]
fn sigterm_with_adds_waiting_for_ovsdb_rolls_each_back() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pods = (0..10)
        .map(|i| Pod::create(&node, &format!("stall{i}")))
        .collect::<Result<Vec<_>>>()?;
    let conf = netconf(&node, 30);
    let stalled = Stalled::new(node.ovs.ovsdb_pid().context("ovsdb-server pid")?)?;
    let started = Instant::now();
    let outs = concurrently(&node, &pods, "ADD", &conf, || {
        std::thread::sleep(Duration::from_millis(1500));
        node.signal_agent(Signal::SIGTERM)
    })?;
    let status = node.wait_agent_exit(Duration::from_secs(20));
    let log = node.agent_log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let status = status.with_context(|| {
        format!(
            "the agent did not exit within 20 s of SIGTERM; log tail:\n{}",
            tail.iter().rev().copied().collect::<Vec<_>>().join("\n")
        )
    })?;
    let exited = started.elapsed();
    ensure!(status.success(), "agent exit status {status}");
    for (pod, out) in pods.iter().zip(&outs) {
        ensure!(
            out.code() == Some(11) && out.stdout.contains("the agent is stopping"),
            "pod {}: ADD when the agent stopped: {}",
            pod.name,
            out.stdout
        );
        ensure!(eth0(pod) == (false, false), "pod {}: half-made", pod.name);
    }
    let veths = node.links_with_prefix("wf")?;
    ensure!(veths.is_empty(), "host veths left: {veths:?}");
    println!("SIGTERM 1.5 s into 10 ADDs stuck on a stalled ovsdb-server: all rolled back, agent exited {exited:?} after the ADDs began");
    drop(stalled);
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    for pod in &pods {
        node.del(pod)?;
    }
    node.assert_no_pod_state()
}

/// SIGKILL during 10 concurrent ADDs, plus the two half-made shapes made by hand (a host veth
/// named like Weft's whose pod end has no address and no OVS port; an attachment whose host
/// veth vanished while the agent was down): the restarted agent's start sweep removes every
/// half-made attachment, keeps the complete ones, and releases the swept IPs.
#[test]
fn a_start_sweeps_what_a_killed_agent_left_half_made() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let conf = netconf(&node, 30);
    let vanished = Pod::create(&node, "vanish")?;
    let result = node.add(&vanished)?;
    let vanished_ip = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let vanished_veth = result["interfaces"][0]["name"]
        .as_str()
        .context("host interface in the ADD result")?
        .to_string();
    let pods = (0..10)
        .map(|i| Pod::create(&node, &format!("kill{i}")))
        .collect::<Result<Vec<_>>>()?;
    let pid = node.agent_pid().context("agent pid")?;
    let outs = concurrently(&node, &pods, "ADD", &conf, || {
        std::thread::sleep(Duration::from_millis(50));
        kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
        Ok(())
    })?;
    node.kill_agent();
    cmd::run("ip", &["-n", node.netns(), "link", "del", &vanished_veth])?;
    let half = Pod::create(&node, "half")?;
    cmd::run(
        "ip",
        &[
            "-n",
            node.netns(),
            "link",
            "add",
            "wfhalf-abcdef",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &half.netns,
        ],
    )?;
    let before: Vec<(bool, bool)> = pods.iter().map(eth0).collect();
    let half_made = before.iter().filter(|(link, addr)| *link && !*addr).count();
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    let log = node.agent_log();
    ensure!(log.contains("start sweep"), "no start sweep logged:\n{log}");
    ensure!(
        eth0(&half) == (false, false),
        "hand-made half attachment kept"
    );
    ensure!(
        !node.pod_ports()?.contains(&vanished_veth),
        "port of the vanished veth kept"
    );
    let ips = node.ipam_allocations()?;
    ensure!(
        !serde_json::to_string(&ips)?.contains(vanished_ip.split('/').next().unwrap_or("-")),
        "IP {vanished_ip} of the vanished attachment kept: {ips:?}"
    );
    let mut complete = 0;
    for (pod, out) in pods.iter().zip(&outs) {
        match eth0(pod) {
            (true, true) => complete += 1,
            (false, false) => {}
            (true, false) => anyhow::bail!("pod {}: eth0 without address kept", pod.name),
            (false, true) => unreachable!(),
        }
        ensure!(
            !out.success || eth0(pod).1,
            "pod {} answered success, now unwired",
            pod.name
        );
    }
    ensure!(
        node.links_with_prefix("wf")?.len() == complete,
        "host veths {:?} for {complete} complete attachments",
        node.links_with_prefix("wf")?
    );
    println!(
        "SIGKILL at 50 ms: {half_made} of 10 pods half-made before the restart, {complete} complete kept, the rest swept"
    );
    for pod in pods.iter().chain([&vanished, &half]) {
        node.del(pod)?;
    }
    node.assert_no_pod_state()
}

/// ovsdb-server away for `away` while `count` ADDs with a `timeout_s` plugin timeout run: each
/// answers code 11 before the plugin's timeout, and when ovsdb-server returns nothing of those
/// pods appears (no port, veth, IP, eth0); a new pod then works.
fn ovsdb_away(count: usize, timeout_s: u64, away: Duration) -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pods = (0..count)
        .map(|i| Pod::create(&node, &format!("away{i}")))
        .collect::<Result<Vec<_>>>()?;
    let conf = netconf(&node, timeout_s);
    node.ovs.stop_ovsdb()?;
    let stopped = Instant::now();
    let outs = concurrently(&node, &pods, "ADD", &conf, || Ok(()))?;
    for (pod, out) in pods.iter().zip(&outs) {
        ensure!(
            out.code() == Some(11),
            "pod {}: ADD with ovsdb-server away: {}",
            pod.name,
            out.stdout
        );
        ensure!(
            out.elapsed < Duration::from_secs(timeout_s),
            "pod {}: the agent answered after the plugin's timeout ({:?})",
            pod.name,
            out.elapsed
        );
        ensure!(eth0(pod) == (false, false), "pod {}: eth0 left", pod.name);
    }
    let slowest = outs.iter().map(|o| o.elapsed).max().unwrap_or_default();
    std::thread::sleep(away.saturating_sub(stopped.elapsed()));
    node.ovs.start_ovsdb()?;
    // A new ADD goes through once the agent has reconnected; anything the abandoned ADDs had
    // queued would have been sent before it.
    let probe = Pod::create(&node, "probe")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = node.plugin("ADD", &call_with(&probe, &netconf(&node, 10)))?;
        if out.success {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "ADD after ovsdb-server returned: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.del(&probe)?;
    // Time for anything wrongly finished late to show.
    std::thread::sleep(Duration::from_secs(1));
    for pod in &pods {
        ensure!(
            eth0(pod) == (false, false),
            "pod {}: wired after all",
            pod.name
        );
    }
    node.assert_no_pod_state()?;
    println!(
        "ovsdb-server away {away:?}, plugin timeout {timeout_s} s: {count} ADDs answered 11 within {slowest:?}, nothing created after it returned"
    );
    Ok(())
}

#[test]
fn adds_waiting_for_an_absent_ovsdb_are_rolled_back_at_the_plugins_deadline() -> Result<()> {
    ovsdb_away(3, 4, Duration::from_secs(7))
}

/// The issue's numbers: 10 ADDs, plugin timeout 30 s, ovsdb-server away 40 s (~60 s).
#[test]
#[ignore = "about a minute; the short variant runs in CI"]
fn adds_waiting_for_an_absent_ovsdb_issue_numbers() -> Result<()> {
    ovsdb_away(10, 30, Duration::from_secs(40))
}
