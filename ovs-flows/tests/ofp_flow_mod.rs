//! Flow-mods (add, modify, strict variants, delete by match, cookie and table), barriers and
//! flow statistics against real OVS, checked with `ovs-ofctl dump-flows`.

mod ofp_support;

use anyhow::Result;
use ofp_support::*;
use ovs_flows::flow::{Action, Flow, Match};
use ovs_flows::ofp::{ClientError, FlowMod, FlowStatsRequest, TABLE_ALL};

#[tokio::test]
async fn add_modify_and_delete_flows() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;

    let mut flows: Vec<Flow> = (1..=3)
        .map(|n| l3_flow(10, n, 0x1_0000 + u64::from(n)))
        .collect();
    flows.push(l3_flow(10, 4, 0x2_0001));
    for flow in &flows {
        client.flow_mod(&FlowMod::add(flow.clone())).await?;
    }
    assert_eq!(dumped(&ovs)?, displayed(&flows));

    // modify_strict: only the flow with exactly this match and priority.
    let mut changed = flows[0].clone();
    changed.actions = vec![Action::Output(7)];
    client
        .flow_mod(&FlowMod::modify_strict(changed.clone()))
        .await?;
    flows[0].actions = changed.actions.clone();
    assert_eq!(dumped(&ovs)?, displayed(&flows));

    // modify (non-strict) filtered by cookie/mask: flows 1-3 (cookies 0x1_xxxx) get the new
    // actions, flow 4 (0x2_0001) keeps its own.
    let selector = Flow {
        table: 10,
        cookie: 0x1_0000,
        matches: Match::new().ip(),
        actions: vec![Action::DecTtl, Action::GotoTable(20)],
        ..Flow::default()
    };
    client
        .flow_mod(&FlowMod::modify(selector).with_cookie_mask(0xffff_0000))
        .await?;
    for flow in flows.iter_mut().take(3) {
        flow.actions = vec![Action::DecTtl, Action::GotoTable(20)];
    }
    assert_eq!(dumped(&ovs)?, displayed(&flows));

    // delete_strict: a different priority does not match, the right one does.
    let mut wrong_priority = flows[1].clone();
    wrong_priority.priority = 1;
    client
        .flow_mod(&FlowMod::delete_strict(wrong_priority))
        .await?;
    assert_eq!(dumped(&ovs)?.len(), 4);
    client
        .flow_mod(&FlowMod::delete_strict(flows[1].clone()))
        .await?;
    flows.remove(1);
    assert_eq!(dumped(&ovs)?, displayed(&flows));

    // Delete by cookie/mask in all tables: only the 0x2_xxxx flow goes.
    client
        .flow_mod(&FlowMod::delete_by_cookie(0x2_0000, 0xffff_0000))
        .await?;
    flows.retain(|f| f.cookie >> 16 != 2);
    assert_eq!(dumped(&ovs)?, displayed(&flows));

    // Delete by table: other tables keep their flows.
    let other = l3_flow(30, 9, 0x3_0000);
    client.flow_mod(&FlowMod::add(other.clone())).await?;
    client.flow_mod(&FlowMod::delete_table(10)).await?;
    assert_eq!(dumped(&ovs)?, displayed(std::slice::from_ref(&other)));

    // Delete by (non-strict) match.
    client
        .flow_mod(&FlowMod::delete(Flow {
            table: TABLE_ALL,
            matches: Match::new().ip(),
            ..Flow::default()
        }))
        .await?;
    assert!(dumped(&ovs)?.is_empty());
    client.barrier().await?;
    Ok(())
}

#[tokio::test]
async fn rejected_flow_mod_names_the_flow() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let bad = Flow {
        table: 3,
        priority: 5,
        matches: Match::new().ip(),
        actions: vec![Action::Group(99)],
        ..Flow::default()
    };
    let err = client
        .flow_mod(&FlowMod::add(bad.clone()))
        .await
        .unwrap_err();
    match &err {
        ClientError::Rejected { request, error } => {
            assert_eq!(request, &format!("add {bad}"));
            assert_eq!(error.name().as_deref(), Some("OFPBAC_BAD_OUT_GROUP"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(err.to_string().contains("group:99"), "{err}");
    assert!(dumped(&ovs)?.is_empty());
    // The connection is still usable.
    client.barrier().await?;
    Ok(())
}

#[tokio::test]
async fn flow_stats_decode_into_the_installed_flows() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let mut flows: Vec<Flow> = (1..=50)
        .map(|n| l3_flow(5, n, 0x7_0000 + u64::from(n)))
        .collect();
    flows.push(Flow {
        table: 0,
        priority: 1,
        actions: vec![Action::GotoTable(5)],
        ..Flow::default()
    });
    flows.push(Flow {
        table: 6,
        priority: 9,
        idle_timeout: 300,
        hard_timeout: 600,
        matches: Match::new().arp(),
        actions: vec![Action::Output(1)],
        ..Flow::default()
    });
    client
        .bundle(&flows.iter().cloned().map(FlowMod::add).collect::<Vec<_>>())
        .await?;

    let entries = client.dump_flows(&FlowStatsRequest::default()).await?;
    let mut got: Vec<Flow> = entries.iter().map(|e| e.flow.clone()).collect();
    let key = |f: &Flow| (f.table, f.priority, f.cookie, f.to_string());
    got.sort_by_key(key);
    flows.sort_by_key(key);
    assert_eq!(got, flows);
    for entry in &entries {
        assert_eq!(entry.stats.packet_count, Some(0));
        assert_eq!(entry.stats.byte_count, Some(0));
        assert!(entry.stats.duration.is_some());
    }

    // Filters: one table; cookie/mask.
    let table6 = client
        .dump_flows(&FlowStatsRequest {
            table: 6,
            ..FlowStatsRequest::default()
        })
        .await?;
    assert_eq!(table6.len(), 1);
    assert_eq!(table6[0].flow.idle_timeout, 300);
    let by_cookie = client
        .dump_flows(&FlowStatsRequest {
            cookie: 0x7_0000,
            cookie_mask: 0xffff_0000,
            ..FlowStatsRequest::default()
        })
        .await?;
    assert_eq!(by_cookie.len(), 50);
    let by_match = client
        .dump_flows(&FlowStatsRequest {
            matches: Match::new().arp(),
            ..FlowStatsRequest::default()
        })
        .await?;
    assert_eq!(by_match.len(), 1);
    Ok(())
}

#[tokio::test]
async fn multipart_replies_are_reassembled() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    // ~3000 flows of ~100 bytes do not fit one 64 KiB reply: OVS sends several with MORE.
    let flows: Vec<FlowMod> = (1..=3000).map(|n| FlowMod::add(l3_flow(2, n, 9))).collect();
    client.bundle(&flows).await?;
    let entries = client.dump_flows(&FlowStatsRequest::default()).await?;
    assert_eq!(entries.len(), 3000);
    let mut ips: Vec<String> = entries.iter().map(|e| e.flow.matches.to_string()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3000, "every flow exactly once");
    Ok(())
}
