//! noEncap across an L3 underlay (real OVS netdev per node, the real agents and plugin): node
//! A sits on the underlay `192.168.60.0/24`, node C on a second subnet `192.168.61.0/24` behind
//! a router namespace that routes both subnets and every node's pod CIDR. The agents give an
//! off-segment peer no peer flows (no rewrite to its uplink MAC) and route its pod CIDR via the
//! host's next hop toward its node IP (the router), never via the unreachable node IP itself.
//! Pod A <-> pod C ping and TCP in both directions.

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{eventually, Cluster, ClusterOptions, ROUTER_IP, UPLINK};
use weft_e2e::node::{ping, tcp_roundtrip};

/// Peer flows have cookie category 4.
const PEER: u64 = 4;

/// `ip route show DST` in the node namespace `ns` (main table).
fn route_of(ns: &str, dst: &str) -> Result<String> {
    weft_e2e::cmd::run("ip", &["-n", ns, "route", "show", dst])
}

#[test]
fn noencap_peer_behind_a_router() -> Result<()> {
    let started = std::time::Instant::now();
    let mut cluster = Cluster::start(ClusterOptions {
        mode: "noEncap".into(),
        ..ClusterOptions::encap(1, "geneve")
    })?;
    cluster.add_routed_node()?;
    let (a, c) = (cluster.node(1)?, cluster.node(2)?);
    ensure!(
        c.ip.to_string().starts_with("192.168.61."),
        "node C on the routed subnet: {}",
        c.ip
    );
    let logs = || format!("{}\n---\n{}", a.agent_log(), c.agent_log());

    // Each node routes the other's pod CIDR via its router, out of the uplink internal port.
    let router_c = "192.168.61.1";
    for (node, peer, gateway) in [(a, c, ROUTER_IP), (c, a, router_c)] {
        let want = format!("via {gateway} dev {UPLINK} proto 87");
        eventually(
            &format!("{} to route {} via {gateway}", node.name, peer.pod_cidr),
            std::time::Duration::from_secs(15),
            || Ok(route_of(node.netns(), &peer.pod_cidr)?.contains(&want)),
        )
        .with_context(logs)?;
        let route = route_of(node.netns(), &peer.pod_cidr)?;
        ensure!(
            !route.contains(&format!("via {} ", peer.ip)),
            "{}: route to {} via the off-segment node IP: {route}",
            node.name,
            peer.pod_cidr
        );
        // No peer flows: nothing rewrites to the off-segment peer's uplink MAC.
        let flows = node.flows_of_category(PEER)?;
        ensure!(
            !flows.iter().any(|f| f.contains(&peer.pod_cidr)),
            "{}: peer flows for the off-segment peer {}:\n{flows:#?}",
            node.name,
            peer.name
        );
    }
    ensure!(
        a.agent_log().contains("off this node's segment"),
        "node A logs why C gets no peer flows:\n{}",
        a.agent_log()
    );

    // Count pod-to-pod packets the router forwards.
    let router = cluster.router_netns()?;
    weft_e2e::cmd::run(
        "ip",
        &[
            "netns", "exec", &router, "nft", "add table ip podfwd; add chain ip podfwd counted { type filter hook forward priority 0; }; add rule ip podfwd counted ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 counter",
        ],
    )?;
    let (pa, pa_ip) = a.add_pod("a")?;
    let (pc, pc_ip) = c.add_pod("c")?;
    ping(&pa.netns, pc_ip).with_context(logs)?;
    ping(&pc.netns, pa_ip).with_context(logs)?;
    tcp_roundtrip(&pc.netns, pc_ip, &pa.netns).context("tcp a -> c")?;
    tcp_roundtrip(&pa.netns, pa_ip, &pc.netns).context("tcp c -> a")?;
    // A and C share no L2 segment: the router forwarded the pod-to-pod packets themselves.
    let counted = weft_e2e::cmd::run(
        "ip",
        &[
            "netns", "exec", &router, "nft", "list", "table", "ip", "podfwd",
        ],
    )?;
    let packets: u64 = counted
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure!(
        packets >= 4,
        "the router forwarded no pod traffic:\n{counted}"
    );
    println!(
        "noencap_peer_behind_a_router: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
