//! Churn bench (issue 7 part 3): 1,000 ADD/DEL cycles at concurrency 16 across the two nodes of
//! a live encap cluster (real OVS netdev, the real agents and plugin), a cross-node ping both
//! ways between a fresh pod and the other node's long-lived pod every 50 cycles; afterwards the
//! veths, OVS ports, IPAM allocations, pod flows, routes and agent files of each node must be
//! exactly those before. The agents' RSS (VmRSS and its anonymous part), open fds and threads are
//! sampled before the first cycle, every 250 completed cycles and at the end, and printed as a
//! series, so warm-up (a plateau) can be told from a slow leak (steady growth).
//!
//! `cargo build --workspace --bins && cargo bench --profile dev -p weft-e2e --bench churn`
//! (`WEFT_CHURN_CYCLES=N` overrides the 1,000 cycles, `WEFT_CHURN_SAMPLE_EVERY=N` the 250).
//! Exits non-zero on any failure or leak.

use anyhow::{ensure, Result};
use weft_e2e::churn;
use weft_e2e::cluster::{Cluster, ClusterOptions};

/// A positive number from environment variable `name`, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let cycles = env_count("WEFT_CHURN_CYCLES", 1000);
    let sample_every = env_count("WEFT_CHURN_SAMPLE_EVERY", 250);
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let anchors = vec![
        cluster.node(1)?.add_pod("anchor-1")?,
        cluster.node(2)?.add_pod("anchor-2")?,
    ];
    let report = churn::run_sampled(&cluster, &anchors, cycles, 16, 50, sample_every)?;
    println!("churn: {}", report.summary());
    println!(
        "agent usage every {sample_every} cycles:\n{}",
        report.series()
    );
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
