//! Issue 5 on the multi-node topology (two nodes, encap, the real agents): under a 100 pps
//! cross-node pod ping, every Weft route (protocol 87, every table) and rule on node 1 is
//! deleted, as a networkd restart does. The host-state reconciler, which owns the peer routes
//! fed from the agent's peer view, must put them all back within 1 s (p99 over 20 trials), with
//! pings lost bounded by the outage windows. The attached uplink's internal port and renamed NIC
//! are watched links: MTU and state drift on them is restored within 1 s and reported.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{Cluster, ClusterNode, ClusterOptions, LivePing, UPLINK};
use weft_e2e::cmd;
use weft_e2e::node::ping;

const TRIALS: usize = 20;

/// (Weft routes of both families in every table, Weft rules).
fn weft_state(node: &ClusterNode) -> (usize, usize) {
    let ns = node.netns();
    let routes: usize = ["-4", "-6"]
        .iter()
        .map(|family| {
            cmd::run(
                "ip",
                &[
                    "-n", ns, *family, "route", "show", "table", "all", "proto", "87",
                ],
            )
            .unwrap_or_default()
            .lines()
            .count()
        })
        .sum();
    let rules: usize = ["-4", "-6"]
        .iter()
        .map(|family| {
            cmd::run("ip", &["-n", ns, *family, "rule", "show"])
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("proto 87"))
                .count()
        })
        .sum();
    (routes, rules)
}

/// Deletes every Weft route and rule of `family` in `ns`, as a networkd restart does, and
/// checks each deletion did something (a flush of nothing exits 0): a family with no Weft route
/// is left alone, so a break that removed nothing never counts as a repair.
fn break_family(ns: &str, family: &str) -> Result<()> {
    let routes = cmd::run(
        "ip",
        &[
            "-n", ns, family, "route", "show", "table", "all", "proto", "87",
        ],
    )?;
    if !routes.trim().is_empty() {
        let out = cmd::run(
            "ip",
            &[
                "-n", ns, "-s", family, "route", "flush", "table", "all", "proto", "87",
            ],
        )?;
        ensure!(
            out.contains("deleting"),
            "{family} route flush removed nothing: {out}"
        );
    }
    let rules = cmd::run("ip", &["-n", ns, family, "rule", "show", "pref", "30700"])?;
    if !rules.trim().is_empty() {
        cmd::run("ip", &["-n", ns, family, "rule", "del", "pref", "30700"])?;
    }
    Ok(())
}

#[test]
fn peer_routes_and_rules_come_back_under_cross_node_traffic() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let (a, _) = n1.add_pod("a")?;
    let (_b, b_ip) = n2.add_pod("b")?;
    let logs = || format!("{}\n---\n{}", n1.agent_log(), n2.agent_log());
    ping(&a.netns, b_ip).with_context(logs)?;

    // Converged: the local pod CIDR and the peer's, each in main and Weft's table, and the
    // pod-egress rule.
    let converged = weft_state(n1);
    ensure!(converged.0 >= 4 && converged.1 >= 1, "{converged:?}");
    let peer_routes = cmd::run("ip", &["-n", n1.netns(), "route", "show", "proto", "87"])?;
    ensure!(
        peer_routes.contains("onlink"),
        "no peer route on node 1:\n{peer_routes}"
    );

    let pinger = LivePing::start(&a.netns, b_ip)?;
    std::thread::sleep(Duration::from_millis(300));
    let ns = n1.netns();
    let mut times = Vec::new();
    for _ in 0..TRIALS {
        let start = Instant::now();
        // The IPv4 routes and rule are always there (converged): breaking them must work.
        ensure!(
            cmd::run("ip", &["-n", ns, "-4", "rule", "show", "pref", "30700"])?.contains("30700"),
            "no IPv4 rule to break"
        );
        for family in ["-4", "-6"] {
            break_family(ns, family)?;
        }
        while weft_state(n1) != converged {
            ensure!(
                start.elapsed() < Duration::from_secs(2),
                "not restored: {:?} (want {converged:?})\n{}",
                weft_state(n1),
                logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let loss = pinger.stop()?;
    let (sent, received) = (loss.sent, loss.received);
    times.sort();
    let p99 = times[((0.99 * TRIALS as f64).ceil() as usize).clamp(1, TRIALS) - 1];
    let lost = sent.saturating_sub(received);
    println!(
        "cluster hoststate: n={TRIALS} p50={} ms p99={} ms pings lost {lost}/{sent}",
        times[TRIALS / 2].as_millis(),
        p99.as_millis()
    );
    ensure!(sent > 100, "ping did not run ({sent} sent)");
    ensure!(p99 < Duration::from_secs(1), "p99 {p99:?} not below 1 s");
    // Lost pings are bounded by the outage windows (100 pps), plus one in flight per trial.
    let bound: u64 = times.iter().map(|d| d.as_millis() as u64 / 10 + 2).sum();
    ensure!(lost <= bound, "{lost} pings lost, bound {bound}");
    ping(&a.netns, b_ip).with_context(logs)?;
    Ok(())
}

/// Waits up to 1 s for `check`; returns how long it took.
fn within_a_second(what: &str, check: impl Fn() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !check() {
        ensure!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not within 1 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(start.elapsed())
}

#[test]
fn uplink_internal_port_and_nic_drift_is_restored() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let (a, _) = n1.add_pod("a")?;
    let (_b, b_ip) = n2.add_pod("b")?;
    let logs = || n1.agent_log();
    let ns = n1.netns();
    let nic = format!("{UPLINK}~");
    // netdev encap attaches the uplink: the internal port took the NIC's name.
    let planned = ClusterNode::link_mtu(ns, UPLINK)?;
    ensure!(
        ClusterNode::link_mtu(ns, &nic)? == planned,
        "uplink not attached?\n{}",
        logs()
    );
    // MTU raised: ovs-vswitchd re-applies the internal port's `mtu_request` itself; either way
    // it must come back. (A lowered one is the underlay lowered, which the agent follows:
    // ops_underlay_mtu.)
    let wrong = (planned + 100).to_string();
    cmd::run("ip", &["-n", ns, "link", "set", UPLINK, "mtu", &wrong])?;
    within_a_second("uplink internal port mtu", || {
        ClusterNode::link_mtu(ns, UPLINK).ok() == Some(planned)
    })
    .with_context(logs)?;
    // State: nobody but Weft's link watch brings them back up.
    for dev in [UPLINK, nic.as_str()] {
        cmd::run("ip", &["-n", ns, "link", "set", dev, "down"])?;
        let took = within_a_second(&format!("{dev} up"), || {
            cmd::run("ip", &["-n", ns, "-o", "link", "show", "dev", dev])
                .is_ok_and(|l| l.contains(",UP"))
        })
        .with_context(logs)?;
        println!("{dev} state restored in {took:?}");
    }
    let repaired = |what: &str| {
        logs()
            .lines()
            .any(|l| l.contains("host state repaired") && l.contains(what))
    };
    // Both links are also brought up by the uplink's own converge pass (its attach steps are
    // idempotent and run on the OVSDB event the link change causes), which may win the race
    // for either link and logs no repair: the host-state reconciler's log is required for one
    // of them at least, the state (checked above) for both.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(repaired("uplink internal port") || repaired("uplink nic")) {
        ensure!(Instant::now() < deadline, "repairs not logged\n{}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    ping(&a.netns, b_ip).with_context(logs)?;
    Ok(())
}
