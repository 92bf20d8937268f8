//! The base pipeline on real OVS (netdev) with real traffic: pod <-> pod, pod <-> gateway
//! (node) over IPv4 and IPv6, everything resolved to the virtual MAC, IPv6 neighbor
//! solicitations answered inside the pipeline.

mod pipeline_support;

use std::net::IpAddr;

use anyhow::Result;
use ovs_flows::pipeline::{delete_pod, tables, Registry, VIRTUAL_MAC};
use pipeline_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_gateway_and_node_reach_each_other_through_the_virtual_mac() -> Result<()> {
    let node = Node::start(3).await?;
    assert_eq!(node.ovs.dump_flows(BRIDGE)?, node.expected_flows());
    let vmac = VIRTUAL_MAC.to_string();
    let (p1, p2, p3) = (node.ns(1), node.ns(2), node.ns(3));
    let host = node.ovs.netns();

    let checks: Vec<(&str, &str, String)> = vec![
        ("pod1 -> pod2 v4", p1, pod_ip4(2)),
        ("pod1 -> pod2 v6", p1, pod_ip6(2)),
        ("pod2 -> pod3 v4", p2, pod_ip4(3)),
        ("pod3 -> pod1 v6", p3, pod_ip6(1)),
        ("pod1 -> gateway v4", p1, GW4.to_string()),
        ("pod2 -> gateway v6", p2, GW6.to_string()),
        ("node -> pod3 v4", host, pod_ip4(3)),
        ("node -> pod1 v6", host, pod_ip6(1)),
    ];
    for (what, ns, dst) in &checks {
        let stats = ping(ns, dst, None, 3, "0.2")?;
        assert_eq!(stats.lost(), 0, "{what}: {stats:?}");
        assert_eq!(stats.sent, 3, "{what}: {stats:?}");
    }

    // Pods resolved the gateway, and each other, to the virtual MAC; so did the host for pods.
    for (ns, addr) in [
        (p1, GW4.to_string()),
        (p2, GW6.to_string()),
        (p1, pod_ip4(2)),
        (p1, pod_ip6(2)),
        (host, pod_ip4(3)),
        (host, pod_ip6(1)),
    ] {
        let ip: IpAddr = addr.parse()?;
        assert_eq!(
            neighbor_mac(ns, &ip)?.as_deref(),
            Some(vmac.as_str()),
            "{ns} neighbor {ip}"
        );
    }

    // The advertisements carried the Solicited flag (the entry went straight to REACHABLE; an
    // unsolicited-looking answer leaves it STALE and re-probed) and a target link-layer address
    // option (the entry has the virtual MAC at all): the flags and option type the pipeline
    // writes by `move`, the construction the kernel datapath accepts too.
    for (ns, addr) in [(p2, GW6.to_string()), (p1, pod_ip6(2))] {
        let state = ip(&["-n", ns, "neigh", "show", &addr])?;
        assert!(
            state.contains(" REACHABLE"),
            "{ns} neighbor {addr}: {state}"
        );
    }

    // IPv6 neighbor discovery never left the bridge: the pipeline answered every solicitation
    // (the gateway's responder among them), and no solicitation reached the host's gateway
    // interface or any pod, while the pods and the host did solicit and get advertisements.
    let nd_table = Registry::wave1().number(&tables::NEIGHBOR_DISCOVERY);
    let nd = table_packets(&node.ovs, nd_table)?;
    let count = |needle: &str| -> u64 {
        nd.iter()
            .filter(|(text, _)| text.contains(needle))
            .map(|(_, n)| n)
            .sum()
    };
    let gw_responder = count(&format!("icmp_type=135,nd_target={GW6} actions="));
    let first_pass = count("icmp_type=135,nd_target=");
    let second_pass = count("reg0=0x100/0x100,icmp_type=136 ");
    assert!(gw_responder >= 1, "gateway responder unused: {nd:#?}");
    assert_eq!(first_pass, second_pass, "{nd:#?}");
    assert_eq!(snmp6(host, GATEWAY, "Icmp6InNeighborSolicits")?, 0);
    assert!(snmp6(host, GATEWAY, "Icmp6InNeighborAdvertisements")? >= 1);
    for ns in [p1, p2, p3] {
        assert_eq!(snmp6(ns, "eth0", "Icmp6InNeighborSolicits")?, 0, "{ns}");
        assert!(snmp6(ns, "eth0", "Icmp6OutNeighborSolicits")? >= 1, "{ns}");
        assert!(
            snmp6(ns, "eth0", "Icmp6InNeighborAdvertisements")? >= 1,
            "{ns}"
        );
    }

    // Deleting one pod's flows by cookie removes exactly those, and its traffic stops.
    node.client.flow_mod(&delete_pod(3)).await?;
    let mut expected = node.expected_flows();
    let pod3: Vec<String> = ovs_flows::pipeline::pod_flows(&node.cfg, &node.pods[2].pod)
        .iter()
        .map(ToString::to_string)
        .collect();
    expected.retain(|f| !pod3.contains(f));
    assert_eq!(node.ovs.dump_flows(BRIDGE)?, expected);
    let stats = ping(p1, &pod_ip4(3), None, 2, "0.2")?;
    assert_eq!(
        stats.received, 0,
        "pod3 is unreachable without its flows: {stats:?}"
    );
    let stats = ping(p1, &pod_ip4(2), None, 2, "0.2")?;
    assert_eq!(stats.lost(), 0, "other pods are unaffected: {stats:?}");
    Ok(())
}
