//! Restart safety on a live two-node encap cluster (real OVS netdev, the real agents):
//!
//! - the agents of both nodes restarted one after the other under a 100 pps cross-node pod
//!   ping: not one echo lost (the ping runs to completion, so none is in flight at the end);
//! - the real `weft-agent` killed with SIGKILL at every step of the uplink attach, before and
//!   after the step's journal entry (the test-only hook `WEFT_TEST_CRASH_AT` makes the agent
//!   kill itself there), then started normally: the journal holds a finished attach, the node
//!   IP is on exactly one interface (the internal port), the node and the pods are reachable
//!   across the underlay.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{
    ping_count, Cluster, ClusterNode, ClusterOptions, UPLINK, UPLINK_ATTACH_STEPS,
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

    for step in UPLINK_ATTACH_STEPS {
        for when in ["before", "after"] {
            let point = format!("attach:{step}:{when}");
            // Detach (graceful stop with --restore-uplink), so the next start attaches.
            n1.stop_agent();
            ensure!(
                n1.uplink_journal()?.is_none(),
                "{point}: journal left after --restore-uplink"
            );
            ensure!(
                holders(n1, &n1_ip.to_string())? == [UPLINK],
                "{point}: the node IP is not back on the NIC only"
            );
            // The crash.
            n1.start_agent_with(&restore, &[("WEFT_TEST_CRASH_AT", point.as_str())])?;
            let status = n1
                .wait_agent_exit(Duration::from_secs(30))
                .with_context(|| format!("{point}: the agent did not kill itself"))?;
            ensure!(
                status.signal() == Some(9),
                "{point}: agent exited with {status:?}, not SIGKILL\n{}",
                n1.agent_log()
            );
            // (Killed before `recorded` was written: no journal at all.)
            let journal = n1.uplink_journal()?.unwrap_or_default();
            let done = journal["attach"].as_array().cloned().unwrap_or_default();
            ensure!(
                done.iter().any(|s| s == step) == (when == "after"),
                "{point}: journal after the crash: {journal}"
            );
            // The next start converges.
            n1.start_agent_with(&restore, &[])?;
            n1.wait_ready(Duration::from_secs(30))
                .with_context(|| format!("start after the crash at {point}"))?;
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
    Ok(())
}
