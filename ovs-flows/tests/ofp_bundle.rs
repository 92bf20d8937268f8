//! Atomic bundles against real OVS: all-or-nothing, errors naming the failing flow whether OVS
//! reports them when the message is added or when the bundle is committed, and large bundles.

mod ofp_support;

use std::time::{Duration, Instant};

use anyhow::Result;
use ofp_support::*;
use ovs_flows::flow::{Action, Field, Flow, Match};
use ovs_flows::ofp::{ClientError, FailureStage, FlowMod};

/// Installs one pre-existing flow and returns the dump, so tests can prove nothing changed.
async fn baseline(
    client: &ovs_flows::ofp::Client,
    ovs: &weft_e2e::ovs::OvsInstance,
) -> Result<Vec<String>> {
    client
        .flow_mod(&FlowMod::add(l3_flow(1, 250, 0xba5e)))
        .await?;
    let before = dumped(ovs)?;
    assert_eq!(before.len(), 1);
    Ok(before)
}

#[tokio::test]
async fn bundle_of_ten_flows_is_installed() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let flows: Vec<Flow> = (1..=10).map(|n| l3_flow(4, n, 0x42)).collect();
    client
        .bundle(&flows.iter().cloned().map(FlowMod::add).collect::<Vec<_>>())
        .await?;
    assert_eq!(dumped(&ovs)?, displayed(&flows));
    // A bundle can mix commands: replace five flows by modifying and deleting in one commit.
    let mut mods: Vec<FlowMod> = flows[..5]
        .iter()
        .cloned()
        .map(FlowMod::delete_strict)
        .collect();
    let mut changed = flows[5].clone();
    changed.actions = vec![Action::Output(3)];
    mods.push(FlowMod::modify_strict(changed.clone()));
    client.bundle(&mods).await?;
    let mut expected = flows[6..].to_vec();
    expected.push(changed);
    assert_eq!(dumped(&ovs)?, displayed(&expected));
    Ok(())
}

fn ten_with_bad_at(index: usize, bad: Flow) -> Vec<FlowMod> {
    (1..=10u32)
        .map(|n| {
            if n as usize - 1 == index {
                FlowMod::add(bad.clone())
            } else {
                FlowMod::add(l3_flow(4, n, 0x42))
            }
        })
        .collect()
}

async fn assert_rejected_without_change(
    bad: Flow,
    index: usize,
    stage: FailureStage,
    error_name: &str,
) -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let before = baseline(&client, &ovs).await?;
    let err = client
        .bundle(&ten_with_bad_at(index, bad.clone()))
        .await
        .unwrap_err();
    let ClientError::BundleRejected { size, failures } = &err else {
        panic!("expected a bundle rejection, got {err:?}");
    };
    assert_eq!(*size, 10);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].index, index);
    assert_eq!(failures[0].stage, stage);
    assert_eq!(failures[0].flow_mod, format!("add {bad}"));
    assert_eq!(failures[0].error.name().as_deref(), Some(error_name));
    // Whatever the stage, OVS puts the whole OFPT_BUNDLE_ADD_MESSAGE (34) in the error data,
    // with the flow-mod (14) inside, and uses the add message's xid.
    let outer = failures[0]
        .error
        .offending_header()
        .expect("error data holds a message");
    assert_eq!(outer.msg_type, 34);
    assert_eq!(outer.xid, failures[0].error.xid);
    let inner = failures[0]
        .error
        .offending_bundle_inner()
        .expect("inner message");
    assert_eq!((inner.msg_type, inner.xid), (14, outer.xid));
    let text = err.to_string();
    assert!(
        text.contains(&format!("flow #{index} `add {bad}`")),
        "{text}"
    );
    assert!(text.contains(error_name), "{text}");
    assert_eq!(dumped(&ovs)?, before, "a rejected bundle changes nothing");
    // The connection stays usable and bundles work again afterwards.
    client.bundle(&ten_with_bad_at(99, bad)).await?;
    assert_eq!(dumped(&ovs)?.len(), 11);
    Ok(())
}

#[tokio::test]
async fn missing_group_fails_at_commit_and_changes_nothing() -> Result<()> {
    let bad = Flow {
        table: 4,
        priority: 300,
        matches: Match::new().ip(),
        actions: vec![Action::Group(77)],
        ..Flow::default()
    };
    assert_rejected_without_change(bad, 6, FailureStage::Commit, "OFPBAC_BAD_OUT_GROUP").await
}

#[tokio::test]
async fn backward_goto_table_fails_at_add_and_changes_nothing() -> Result<()> {
    let bad = Flow {
        table: 4,
        priority: 300,
        matches: Match::new().ip(),
        actions: vec![Action::GotoTable(2)],
        ..Flow::default()
    };
    assert_rejected_without_change(bad, 3, FailureStage::Add, "OFPBIC_BAD_TABLE_ID").await
}

#[tokio::test]
async fn missing_match_prerequisite_fails_at_add_and_changes_nothing() -> Result<()> {
    // nw_dst without eth_type=ip.
    let bad = Flow {
        table: 4,
        priority: 300,
        matches: Match::new().field(Field::Ipv4Dst, 0x0a00_0001),
        actions: vec![Action::DecTtl],
        ..Flow::default()
    };
    assert_rejected_without_change(bad, 0, FailureStage::Add, "OFPBMC_BAD_PREREQ").await
}

#[tokio::test]
async fn ten_thousand_flows_in_one_bundle() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let mods: Vec<FlowMod> = (1..=10_000)
        .map(|n| FlowMod::add(l3_flow(10, n, 0x99)))
        .collect();
    let started = Instant::now();
    client.bundle(&mods).await?;
    let took = started.elapsed();
    let count = ovs
        .ofctl(&["--no-stats", "dump-flows", BRIDGE])?
        .lines()
        .filter(|l| l.contains("nw_dst="))
        .count();
    assert_eq!(count, 10_000);
    eprintln!("10000 flows in one bundle: {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    Ok(())
}
