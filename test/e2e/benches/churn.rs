//! Churn bench (issue 7 part 3): 1,000 ADD/DEL cycles at concurrency 16 across the two nodes of
//! a live encap cluster (real OVS netdev, the real agents and plugin), a cross-node ping both
//! ways between a fresh pod and the other node's long-lived pod every 50 cycles; afterwards the
//! veths, OVS ports, IPAM allocations, pod flows, routes and agent files of each node must be
//! exactly those before, and the agents' RSS and open fds at start and end are printed.
//!
//! `cargo build --workspace --bins && cargo bench -p weft-e2e --bench churn`
//! (`WEFT_CHURN_CYCLES=N` overrides the 1,000 cycles). Exits non-zero on any failure or leak.

use anyhow::{ensure, Result};
use weft_e2e::churn;
use weft_e2e::cluster::{Cluster, ClusterOptions};

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let cycles = std::env::var("WEFT_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let anchors = vec![
        cluster.node(1)?.add_pod("anchor-1")?,
        cluster.node(2)?.add_pod("anchor-2")?,
    ];
    let report = churn::run(&cluster, &anchors, cycles, 16, 50)?;
    println!("churn: {}", report.summary());
    for failure in report.failures.iter().take(10) {
        println!("  {failure}");
    }
    let leaks = report.leaks();
    for leak in &leaks {
        println!("  leak {leak}");
    }
    ensure!(
        report.failures.is_empty() && leaks.is_empty(),
        "churn failed"
    );
    Ok(())
}
