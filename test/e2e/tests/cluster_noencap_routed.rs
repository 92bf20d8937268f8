//! noEncap across an L3 underlay (real OVS netdev per node, the real agents and plugin): node
//! A sits on the underlay `192.168.60.0/24`, node C on a second subnet `192.168.61.0/24` behind
//! a router namespace that routes both subnets and every node's pod CIDR. The agents give an
//! off-segment peer no peer flows (no rewrite to its uplink MAC) and route its pod CIDR via the
//! host's next hop toward its node IP (the router), never via the unreachable node IP itself.
//! Pod A <-> pod C ping and TCP in both directions. `weftctl get routes` shows the route as
//! converged (via the router, state ok). With the host route toward C removed, C's pod CIDR is
//! listed as unrouted in the agent's status (and comes back with the host route).

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_e2e::cluster::{eventually, Cluster, ClusterOptions, ROUTER_IP, UPLINK};
use weft_e2e::node::{ping, tcp_roundtrip};

mod ops_support;
use ops_support::Ctl;

/// The host-state section of `weftctl get agentinfo`.
fn host_state(ctl: &Ctl) -> Result<Value> {
    let info = ctl.expect(0, &["get", "agentinfo", "-o", "json"])?.json()?;
    Ok(info["sections"]["hostState"].clone())
}

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

    // weftctl shows the route as converged: via the router, present.
    let ctl = Ctl::new(&a.config)?;
    let routes = ctl.expect(0, &["get", "routes", "-o", "json"])?.json()?;
    let to_c: Vec<&Value> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["route"]["destination"] == c.pod_cidr.as_str())
        .collect();
    ensure!(
        !to_c.is_empty()
            && to_c
                .iter()
                .all(|r| r["state"] == "ok" && r["route"]["gateway"] == ROUTER_IP),
        "weftctl get routes for {}: {to_c:#?}",
        c.pod_cidr
    );
    ensure!(
        host_state(&ctl)?["unroutedPeers"] == serde_json::json!([]),
        "{}",
        host_state(&ctl)?
    );
    // The host loses its route toward C's subnet: C's pod CIDR is reported unrouted.
    let subnet = "192.168.61.0/24";
    weft_e2e::cmd::run("ip", &["-n", a.netns(), "route", "del", subnet])?;
    let unrouted = serde_json::json!([format!("{} (no host route to {})", c.pod_cidr, c.ip)]);
    eventually(
        "node A to report C's pod CIDR unrouted",
        std::time::Duration::from_secs(5),
        || Ok(host_state(&ctl)?["unroutedPeers"] == unrouted),
    )
    .with_context(|| format!("{}\n{}", host_state(&ctl).unwrap_or_default(), logs()))?;
    weft_e2e::cmd::run(
        "ip",
        &[
            "-n",
            a.netns(),
            "route",
            "add",
            subnet,
            "via",
            ROUTER_IP,
            "dev",
            UPLINK,
        ],
    )?;
    eventually(
        "node A to route C's pod CIDR again",
        std::time::Duration::from_secs(5),
        || {
            Ok(host_state(&ctl)?["unroutedPeers"] == serde_json::json!([])
                && route_of(a.netns(), &c.pod_cidr)?.contains(ROUTER_IP))
        },
    )
    .with_context(logs)?;
    ping(&pa.netns, pc_ip).with_context(logs)?;
    println!(
        "noencap_peer_behind_a_router: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
