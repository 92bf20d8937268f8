//! Restart safety on a live two-node encap cluster (real OVS netdev, the real agents):
//!
//! - the agents of both nodes restarted one after the other under a 100 pps cross-node pod
//!   ping: not one echo lost (the ping runs to completion, so none is in flight at the end);
//! - the real `weft-agent` killed with SIGKILL at every step of the uplink attach, before and
//!   after the step's journal entry (the test-only hook `WEFT_TEST_CRASH_AT` makes the agent
//!   kill itself there), then started normally, under a live 100 pps cross-node ping from a pod
//!   of the crashed node: traffic comes back in every case (the loss window of each crash point
//!   is printed, not bounded), the journal holds a finished attach, the node IP is on exactly
//!   one interface (the internal port), the node and the pods are reachable across the underlay.

use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{
    eventually, ping_count, Cluster, ClusterNode, ClusterOptions, LivePing, PingLoss, UPLINK,
    UPLINK_ATTACH_STEPS,
};
use weft_e2e::cmd;
use weft_e2e::node::ping;

#[test]
fn agent_restarts_under_100pps_cross_node_ping_lose_nothing() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (a, _) = cluster.node(1)?.add_pod("a")?;
    let (_b, b_ip) = cluster.node(2)?.add_pod("b")?;
    ping(&a.netns, b_ip).context("before the restarts")?;

    // 1000 echoes at 100 pps (10 s) cover both restarts.
    let netns = a.netns.clone();
    let pinger = std::thread::spawn(move || ping_count(&netns, b_ip, 1000, "0.01"));
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let mut restarts = Vec::new();
    for node in cluster.nodes.iter_mut() {
        let t = Instant::now();
        node.stop_agent();
        node.start_agent()?;
        node.wait_ready(Duration::from_secs(30))?;
        restarts.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let restarted_by = started.elapsed();
    let (sent, received) = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
    println!(
        "agent restarts under 100 pps: restart to ready {restarts:?}, pings {received}/{sent} \
         received, restarts done after {restarted_by:?}"
    );
    ensure!(sent == 1000, "ping sent {sent}");
    ensure!(
        restarted_by < Duration::from_secs(10),
        "the restarts took {restarted_by:?}, longer than the ping ran"
    );
    ensure!(
        received == sent,
        "{} of {sent} pings lost across agent restarts\n{}",
        sent - received,
        cluster.agent_logs()
    );
    Ok(())
}

/// Interfaces of node `node`'s namespace holding `ip`.
fn holders(node: &ClusterNode, ip: &str) -> Result<Vec<String>> {
    let out = cmd::run("ip", &["-n", node.netns(), "-o", "addr", "show"])?;
    Ok(out
        .lines()
        .filter(|l| l.contains(&format!(" {ip}/")))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect())
}

/// One attach under the live ping: when the SIGKILL came (None without a crash), when the
/// restarted agent was ready and when an echo crossed again (all from the attaching start).
struct AttachRun {
    killed: Option<Duration>,
    ready: Duration,
    back: Duration,
    loss: PingLoss,
}

/// Node 1's agent, started detached (its last stop ran `--restore-uplink`), attaches the uplink
/// under a 100 pps ping from `a` (on node 1) to `b_ip` (on node 2), SIGKILLing itself at
/// `crash` if given (then `after_kill` checks the crashed state and the agent is started
/// again); returns when the agent is ready and an echo crossed again (the check that traffic
/// comes back: 30 s at most).
fn attach_under_ping(
    n1: &mut ClusterNode,
    a_ns: &str,
    b_ip: IpAddr,
    crash: Option<&str>,
    after_kill: impl FnOnce(&mut ClusterNode) -> Result<()>,
) -> Result<AttachRun> {
    let restore = vec!["--restore-uplink".to_string()];
    let live = LivePing::start(a_ns, b_ip)?;
    let started = Instant::now();
    let mut killed = None;
    if let Some(point) = crash {
        n1.start_agent_with(&restore, &[("WEFT_TEST_CRASH_AT", point)])?;
        let status = n1
            .wait_agent_exit(Duration::from_secs(30))
            .with_context(|| format!("{point}: the agent did not kill itself"))?;
        killed = Some(started.elapsed());
        ensure!(
            status.signal() == Some(9),
            "{point}: agent exited with {status:?}, not SIGKILL\n{}",
            n1.agent_log()
        );
        after_kill(n1)?;
    }
    let point = crash.unwrap_or("no crash");
    n1.start_agent_with(&restore, &[])?;
    n1.wait_ready(Duration::from_secs(30))
        .with_context(|| format!("start after the crash at {point}"))?;
    let ready = started.elapsed();
    eventually(
        &format!("a cross-node echo after the crash at {point}"),
        Duration::from_secs(30),
        || Ok(ping_count(a_ns, b_ip, 1, "0.01")?.1 == 1),
    )
    .with_context(|| n1.agent_log())?;
    let back = started.elapsed();
    Ok(AttachRun {
        killed,
        ready,
        back,
        loss: live.stop()?,
    })
}

/// SIGKILL of the real agent at each of the 14 uplink attach crash points, with a pod of the
/// crashed node pinging a pod of the other node at 100 pps through the crash and the restart.
///
/// Why this scenario: on the netdev datapath an encap node needs its uplink on the bridge for
/// any cross-node traffic, and an attach runs only on a node that is detached (or after a
/// reboot, which also takes the pods away). The realistic "kill -9 during attach under live
/// traffic" is therefore a node whose pods keep running while its agent was stopped with
/// `--restore-uplink` (an upgrade or reinstall that detaches) and the next agent start is
/// killed in the middle of its attach: the pod's cross-node traffic is down from the detach and
/// must come back once the restarted agent has finished the attach, whatever the crash left.
/// So every case detaches gracefully (not measured), starts the ping, starts the crashing
/// agent, and measures from that start through the kill, the restart, the agent being ready
/// and the first echo back: the loss window (longest run of unanswered echoes x 10 ms) and the
/// longest silence (longest time between replies, which stays right when ping sends slower
/// than 100 pps on a loaded machine). A first, uncrashed attach gives the baseline of an
/// attach alone. The test checks that traffic comes back in every case; the windows are
/// printed (per point, p50 / max), not bounded (speed lives in benchmarks; RELIABILITY.md
/// records them).
#[test]
fn agent_killed_at_every_uplink_attach_step_converges() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (a, a_ip) = cluster.node(1)?.add_pod("a")?;
    let (b, b_ip) = cluster.node(2)?.add_pod("b")?;
    let (n1_ip, n2_ip) = (cluster.node(1)?.ip, cluster.node(2)?.ip);
    let n2_ns = cluster.node(2)?.netns().to_string();
    let restore = vec!["--restore-uplink".to_string()];
    let n1 = cluster
        .nodes
        .iter_mut()
        .find(|n| n.index == 1)
        .context("node 1")?;
    n1.stop_agent();
    n1.start_agent_with(&restore, &[])?;
    n1.wait_ready(Duration::from_secs(30))?;

    // Detach (graceful stop with --restore-uplink), so the next start attaches.
    let detach = |n1: &mut ClusterNode, point: &str| -> Result<()> {
        n1.stop_agent();
        ensure!(
            n1.uplink_journal()?.is_none(),
            "{point}: journal left after --restore-uplink"
        );
        ensure!(
            holders(n1, &n1_ip.to_string())? == [UPLINK],
            "{point}: the node IP is not back on the NIC only"
        );
        Ok(())
    };
    detach(n1, "baseline")?;
    let baseline = attach_under_ping(n1, &a.netns, b_ip, None, |_| Ok(()))?;
    let mut runs = Vec::new();
    for step in UPLINK_ATTACH_STEPS {
        for when in ["before", "after"] {
            let point = format!("attach:{step}:{when}");
            detach(n1, &point)?;
            // The crash, the restart, traffic back.
            let run = attach_under_ping(n1, &a.netns, b_ip, Some(&point), |n1| {
                // (Killed before `recorded` was written: no journal at all.)
                let journal = n1.uplink_journal()?.unwrap_or_default();
                let done = journal["attach"].as_array().cloned().unwrap_or_default();
                ensure!(
                    done.iter().any(|s| s == step) == (when == "after"),
                    "{point}: journal after the crash: {journal}"
                );
                Ok(())
            })?;
            runs.push((point.clone(), run));
            let journal = n1.uplink_journal()?.context("no journal after the start")?;
            ensure!(
                journal["operation"] == "attach"
                    && journal["attach"] == serde_json::json!(UPLINK_ATTACH_STEPS),
                "{point}: journal not a finished attach: {journal}"
            );
            let holding = holders(n1, &n1_ip.to_string())?;
            ensure!(
                holding == [UPLINK]
                    && n1.interface_column(UPLINK, "type")? == "internal"
                    && n1.interface_column(&format!("{UPLINK}~"), "ofport")? == "32770",
                "{point}: node IP on {holding:?} (want the internal port {UPLINK} only)"
            );
            let reach = || -> Result<()> {
                ping(n1.netns(), n2_ip).context("node-1 -> node-2")?;
                ping(&n2_ns, n1_ip).context("node-2 -> node-1")?;
                ping(&a.netns, b_ip).context("pod a -> pod b")?;
                ping(&b.netns, a_ip).context("pod b -> pod a")?;
                ping(&a.netns, n1_ip).context("pod a -> its node")
            };
            reach().with_context(|| format!("after the crash at {point}\n{}", n1.agent_log()))?;
        }
    }
    print_attach_runs(&baseline, &runs);
    Ok(())
}

/// Prints the per-crash-point table and the p50 / max loss window and silence.
fn print_attach_runs(baseline: &AttachRun, runs: &[(String, AttachRun)]) {
    let ms = |d: Duration| d.as_millis();
    println!("uplink attach under 100 pps (times from the attaching start, ms):");
    println!(
        "{:<36} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11}",
        "crash point", "killed", "ready", "back", "window", "silence", "answered"
    );
    let baseline = ("no crash (baseline)".to_string(), baseline);
    let rows = std::iter::once((baseline.0.as_str(), baseline.1))
        .chain(runs.iter().map(|(p, r)| (p.as_str(), r)));
    for (point, run) in rows {
        println!(
            "{point:<36} {:>7} {:>7} {:>7} {:>8} {:>8} {:>5}/{:<5}",
            run.killed.map_or("-".to_string(), |k| ms(k).to_string()),
            ms(run.ready),
            ms(run.back),
            ms(run.loss.window),
            ms(run.loss.silence),
            run.loss.received,
            run.loss.sent
        );
    }
    let p50_max = |pick: fn(&PingLoss) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(|(_, r)| pick(&r.loss)).collect();
        v.sort();
        let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
        (ms(p50), ms(v.last().copied().unwrap_or_default()))
    };
    let (window_p50, window_max) = p50_max(|l| l.window);
    let (silence_p50, silence_max) = p50_max(|l| l.silence);
    println!(
        "over {} crash points: loss window p50 {window_p50} ms, max {window_max} ms; longest \
         silence p50 {silence_p50} ms, max {silence_max} ms (baseline attach: window {} ms, \
         silence {} ms)",
        runs.len(),
        ms(baseline.1.loss.window),
        ms(baseline.1.loss.silence)
    );
}
