//! Field report 3: changing the host-side veth's MAC under live traffic loses nothing, because
//! pods only ever resolve the virtual MAC and the pipeline never uses host veth MACs.

mod pipeline_support;

use std::time::Duration;

use anyhow::Result;
use ovs_flows::pipeline::VIRTUAL_MAC;
use pipeline_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_veth_mac_change_under_100pps_ping_loses_nothing() -> Result<()> {
    let node = Node::start(2).await?;
    let (p1, p2) = (node.ns(1), node.ns(2));
    // Resolve everything first, so the pings below measure steady-state forwarding.
    for (ns, dst) in [
        (p1, GW4.to_string()),
        (p1, GW6.to_string()),
        (p2, pod_ip4(1)),
    ] {
        assert_eq!(ping(ns, &dst, None, 1, "0.2")?.lost(), 0, "{ns} -> {dst}");
    }
    // 100 pps for 1.5 s each: pod1 -> gateway (v4, v6) and pod2 -> pod1 (v4).
    let runs = [
        ping_command(p1, GW4, None, 150, "0.01").spawn()?,
        ping_command(p1, GW6, None, 150, "0.01").spawn()?,
        ping_command(p2, &pod_ip4(1), None, 150, "0.01").spawn()?,
    ];
    let ovs_ns = node.ovs.netns();
    for gen in 1..=3u8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for p in &node.pods {
            let mac = host_veth_mac(p.pod.ofport, gen);
            ip(&["-n", ovs_ns, "link", "set", &p.host_veth, "address", &mac])?;
        }
    }
    let veth = ip(&["-n", ovs_ns, "link", "show", &node.pods[0].host_veth])?;
    assert!(
        veth.contains(&host_veth_mac(1, 3)),
        "host veth MAC changed: {veth}"
    );
    for (i, run) in runs.into_iter().enumerate() {
        let stats = finish_ping(run)?;
        assert_eq!(stats.sent, 150, "run {i}: {stats:?}");
        assert_eq!(stats.lost(), 0, "run {i} lost packets: {stats:?}");
    }
    let gw = GW4.parse()?;
    assert_eq!(
        neighbor_mac(p1, &gw)?,
        Some(VIRTUAL_MAC.to_string()),
        "the pod's gateway entry is still the virtual MAC"
    );
    Ok(())
}
