//! Proof of issue 6 (`check mtu` lists exactly the pods a mode switch left behind) after a REAL
//! mode switch on the node harness: an encap node with two pods (MTU 1450) is restarted in
//! noEncap; `weftctl check mtu` (every format) lists exactly those two pods, planned 1500 vs
//! actual 1450 for both veth ends, and not the pod created after the switch; the
//! `weft_mtu_mismatches` gauge agrees. Restarted with `reconcilePodMTU: true`, it lists none.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;
use weft_e2e::node::{Node, NodeOptions, Pod};

mod ops_support;
use ops_support::Ctl;

const METRICS_ADDR: &str = "127.0.0.1:9477";

/// `(kind, pod, planned, actual)` of every pod-side entry off the plan.
fn off_plan(report: &Value) -> BTreeSet<(String, String, u64, u64)> {
    report["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["actual"] != e["planned"])
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["pod"].as_str().unwrap_or("").to_string(),
                e["planned"].as_u64().unwrap_or(0),
                e["actual"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn check_mtu_lists_exactly_the_pods_an_encap_to_noencap_switch_left_behind() -> Result<()> {
    let mut options = NodeOptions::new(&["10.244.9.0/24"]);
    options.agent_args = vec!["--restore-uplink".into()];
    options.extra_config = format!("metricsBindAddress: {METRICS_ADDR}\n");
    let mut node = Node::start(options)?;
    let ctl = Ctl::new(&node.config)?;
    let mut old = Vec::new();
    for name in ["old-a", "old-b"] {
        let pod = Pod::create(&node, name)?;
        node.add(&pod)?;
        old.push(pod);
    }
    let (_, encap) = ctl.formats(0, &["check", "mtu"])?;
    ensure!(
        encap["mismatches"] == 0 && encap["plan"]["pod"] == 1450,
        "{encap}"
    );

    node.restart_agent_with("trafficEncapMode: noEncap\n", Duration::from_secs(30))?;
    let new = Pod::create(&node, "new-c")?;
    node.add(&new)?;
    let (table, switched) = ctl.formats(3, &["check", "mtu"])?;
    ensure!(switched["plan"]["pod"] == 1500, "{switched}");
    ensure!(
        switched["podsToFix"] == serde_json::json!(["default/old-a", "default/old-b"]),
        "exactly the old pods: {switched}"
    );
    let want: BTreeSet<(String, String, u64, u64)> = ["old-a", "old-b"]
        .into_iter()
        .flat_map(|p| {
            ["hostVeth", "pod"].map(|k| (k.to_string(), format!("default/{p}"), 1500, 1450))
        })
        .collect();
    ensure!(off_plan(&switched) == want, "{switched}");
    ensure!(switched["mismatches"] == 4, "{switched}");
    let new_entries = switched["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["pod"] == "default/new-c")
        .count();
    ensure!(
        new_entries == 2,
        "new pod's veth ends listed as ok: {switched}"
    );
    ensure!(
        table.contains("MISMATCH")
            && table.contains("  default/old-a\n")
            && table.contains("  default/old-b\n")
            && !table.contains("  default/new-c\n"),
        "{table}"
    );
    let gauge = ops_support::scrape(node.netns(), METRICS_ADDR)?.get("weft_mtu_mismatches");
    ensure!(
        gauge == 4.0,
        "weft_mtu_mismatches after the switch: {gauge}"
    );

    node.restart_agent_with("reconcilePodMTU: true\n", Duration::from_secs(30))?;
    let (table, fixed) = ctl.formats(0, &["check", "mtu"])?;
    ensure!(
        fixed["mismatches"] == 0 && fixed["podsToFix"] == serde_json::json!([]),
        "{fixed}"
    );
    ensure!(off_plan(&fixed).is_empty(), "{fixed}");
    ensure!(
        table.contains("All managed interfaces follow the plan"),
        "{table}"
    );
    let gauge = ops_support::scrape(node.netns(), METRICS_ADDR)?.get("weft_mtu_mismatches");
    ensure!(gauge == 0.0, "weft_mtu_mismatches after the fix: {gauge}");
    Ok(())
}
