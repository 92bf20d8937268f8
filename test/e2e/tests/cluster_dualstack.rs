//! Multi-node dual-stack pods (two nodes, real OVS netdev per node, one shared test API server,
//! the real agent and plugin, IPv4 underlay): each Node has the podCIDRs `10.244.i.0/24` and
//! `fd00:10:244:i::/64`, so every pod gets one address of each family. For encap with Geneve,
//! VXLAN and GRE (an IPv4 GRE tunnel carries IPv6 pods: the inner frame is Ethernet) and for
//! noEncap: cross-node pod<->pod ping and TCP for both families in both directions, DF pings at
//! exactly the planned maximum (pod MTU - 28 for IPv4, pod MTU - 48 for IPv6) pass and one byte
//! more fails locally with "message too long", and the node reaches a remote pod.
//!
//! Node -> remote pod over both families in every mode: in encap the host routes each peer's
//! pod CIDR `via PEER_GATEWAY dev weft-gw0 onlink` (docs/architecture.md, host state); in
//! noEncap via the peer's node IP of the same family, and for IPv6 pods over this IPv4-only
//! underlay (no IPv6 node IP) through the gateway as in encap.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{check_df_boundary, Cluster, ClusterNode, ClusterOptions};
use weft_e2e::node::{ping, tcp_roundtrip};

fn options(mode: &str, tunnel: &str) -> ClusterOptions {
    ClusterOptions {
        mode: mode.into(),
        dual_stack_pods: true,
        ..ClusterOptions::encap(2, tunnel)
    }
}

/// Both agents' logs, for failure messages.
fn logs(nodes: &[&ClusterNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}:\n{}", n.name, n.agent_log()))
        .collect()
}

fn dual_stack_cross_node(mode: &str, tunnel: &str, pod_mtu: u32) -> Result<()> {
    let cluster = Cluster::start(options(mode, tunnel))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let logs = || logs(&[n1, n2]);
    for node in [n1, n2] {
        let object = cluster
            .api
            .get_node(&node.name)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let cidrs = &object["spec"]["podCIDRs"];
        ensure!(
            cidrs.as_array().map(Vec::len) == Some(2),
            "{}: dual-stack podCIDRs expected: {cidrs}",
            node.name
        );
    }
    let (a, a4, a6) = n1.add_pod_dual("a")?;
    let (b, b4, b6) = n2.add_pod_dual("b")?;
    for (ip, node) in [(a6, n1), (b6, n2)] {
        let cidr = node.pod_cidr6.as_deref().context("pod_cidr6")?;
        let network: Ipv6Addr = cidr.trim_end_matches("/64").parse()?;
        let in_cidr = matches!(ip, IpAddr::V6(v6) if v6.segments()[..4] == network.segments()[..4]);
        ensure!(in_cidr, "{ip} not in {cidr}");
    }
    ensure!(
        ClusterNode::link_mtu(&a.netns, "eth0")? == pod_mtu,
        "pod mtu"
    );

    for (src, dst) in [(&a, b4), (&b, a4), (&a, b6), (&b, a6)] {
        ping(&src.netns, dst)
            .with_context(|| format!("{} -> {dst}", src.name))
            .with_context(logs)?;
    }
    for (server, server_ip, client) in [(&b, b4, &a), (&a, a4, &b), (&b, b6, &a), (&a, a6, &b)] {
        tcp_roundtrip(&server.netns, server_ip, &client.netns)
            .with_context(|| format!("tcp {} -> {} ({server_ip})", client.name, server.name))?;
    }
    // The node reaches a remote pod of either family through its host routes.
    for dst in [b4, b6] {
        ping(n1.netns(), dst)
            .with_context(|| format!("node-1 -> pod b {dst}"))
            .with_context(logs)?;
    }
    let routes = weft_e2e::cmd::run("ip", &["-n", n1.netns(), "-6", "route", "show"])?;
    let peer_cidr6 = n2.pod_cidr6.as_deref().context("pod_cidr6")?;
    ensure!(
        routes
            .lines()
            .any(|l| l.starts_with(peer_cidr6) && l.contains("onlink")),
        "node-1 has no onlink IPv6 route to {peer_cidr6}:\n{routes}"
    );

    // DF at the planned maximum of each family crosses both ways; one byte more fails locally.
    for (src, dst) in [(&a, b4), (&b, a4), (&a, b6), (&b, a6)] {
        check_df_boundary(&src.netns, dst, pod_mtu).with_context(logs)?;
    }
    Ok(())
}

#[test]
fn geneve_dual_stack_pods() -> Result<()> {
    dual_stack_cross_node("encap", "geneve", 1450)
}

#[test]
fn vxlan_dual_stack_pods() -> Result<()> {
    dual_stack_cross_node("encap", "vxlan", 1450)
}

#[test]
fn gre_dual_stack_pods() -> Result<()> {
    dual_stack_cross_node("encap", "gre", 1458)
}

#[test]
fn noencap_dual_stack_pods() -> Result<()> {
    dual_stack_cross_node("noEncap", "geneve", 1500)
}
