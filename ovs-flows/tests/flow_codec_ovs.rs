//! The codec against real OVS 3.1: flows encoded by us are accepted, `ovs-ofctl dump-flows`
//! prints exactly our `Display` text, and OVS's own encoding (flow-desc reply) decodes back
//! to the flows we installed.

mod flow_codec_support;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use flow_codec_support::{sample_flows, RawOf, SAMPLE_GROUP};
use ovs_flows::flow::{canonical_order, port, Action, Controller, Flow};
use weft_e2e::OvsInstance;

/// The flow as OVS keeps it: actions in canonical instruction order, and output to the
/// controller as a (simple) controller action.
fn canonical(f: &Flow) -> Flow {
    let actions = canonical_order(&f.actions)
        .into_iter()
        .map(|a| match a {
            Action::Output(port::CONTROLLER) => Action::Controller(Controller::default()),
            a => a.clone(),
        })
        .collect();
    Flow {
        actions,
        ..f.clone()
    }
}

#[test]
fn flows_install_print_and_decode_like_ovs() -> Result<()> {
    let ovs = OvsInstance::start()?;
    ovs.add_bridge("br0")?;
    ovs.ofctl(&[
        "add-group",
        "br0",
        &format!("group_id={SAMPLE_GROUP},type=all,bucket=output:1"),
    ])?;

    let flows = sample_flows();
    let mut of = RawOf::connect(&ovs.mgmt_socket("br0"))?;
    let mut sent = Vec::new();
    for f in &flows {
        let xid = of.add_flow(f)?;
        sent.push((xid, f.to_string()));
    }
    of.barrier(&sent)?;

    // Display equals what ovs-ofctl prints.
    let dumped = ovs.dump_flows("br0")?;
    let mut ours: Vec<String> = flows.iter().map(|f| f.to_string()).collect();
    ours.sort();
    let missing: Vec<&String> = ours.iter().filter(|s| !dumped.contains(s)).collect();
    let extra: Vec<&String> = dumped.iter().filter(|s| !ours.contains(s)).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "display mismatch\n ours only:\n  {}\n ovs only:\n  {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        extra
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    ensure!(dumped.len() == flows.len(), "{} flows dumped", dumped.len());

    // OVS's own encoding decodes to what we installed.
    let want: BTreeMap<(u8, u16), Flow> = flows
        .iter()
        .map(|f| ((f.table, f.priority), canonical(f)))
        .collect();
    let raw = of.dump_raw()?;
    ensure!(
        raw.len() == flows.len(),
        "{} flows in flow-desc reply",
        raw.len()
    );
    let mut failures = Vec::new();
    for r in &raw {
        let got = r.decode()?;
        match want.get(&(got.table, got.priority)) {
            Some(w) if *w == got => {}
            Some(w) => failures.push(format!("want {w:?}\n got {got:?}")),
            None => failures.push(format!("unexpected {got:?}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "decode mismatch:\n{}",
        failures.join("\n")
    );
    Ok(())
}
