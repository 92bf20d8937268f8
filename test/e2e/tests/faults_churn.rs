//! Short churn (the `churn` bench runs 1,000 cycles): 100 ADD/DEL cycles at concurrency 16
//! across the two nodes of a live encap cluster, a cross-node ping both ways every 25 cycles;
//! afterwards each node's veths, OVS ports, IPAM allocations, pod flows, routes and agent files
//! are exactly those before, and the agents' open fds did not grow.

use anyhow::{ensure, Result};
use weft_e2e::churn;
use weft_e2e::cluster::{Cluster, ClusterOptions};

#[test]
fn hundred_add_del_cycles_across_two_nodes_leak_nothing() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let anchors = vec![
        cluster.node(1)?.add_pod("anchor-1")?,
        cluster.node(2)?.add_pod("anchor-2")?,
    ];
    let report = churn::run(&cluster, &anchors, 100, 16, 25)?;
    println!("churn: {}", report.summary());
    ensure!(
        report.failures.is_empty(),
        "{} cycles failed: {:#?}",
        report.failures.len(),
        report.failures
    );
    ensure!(report.pings == 4, "{} cross-node pings", report.pings);
    let leaks = report.leaks();
    ensure!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    for (name, start, end) in &report.agent {
        // A few fds of slack: connections to OVS and the API server may be mid-reconnect.
        ensure!(
            end.1 <= start.1 + 4,
            "{name}: agent fds grew from {} to {}",
            start.1,
            end.1
        );
    }
    Ok(())
}
