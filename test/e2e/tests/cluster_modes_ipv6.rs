//! Encap over an IPv6 underlay (two nodes whose InternalIPs and transport addresses are IPv6,
//! IPv4 pods, real OVS netdev, the real agents): Geneve and VXLAN carry cross-node pod traffic
//! in IPv6 tunnel headers with pod MTU = transport MTU - 70 (1430), DF pings at exactly 1430
//! pass and one byte more fails locally; GRE with an IPv6 underlay is refused at start with an
//! error naming both. (OVS 3.1 does not learn IPv6 tunnel next hops on netdev: the agents set
//! them from the peers' published uplink MACs, `peers::TunnelNeighbours`.)

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{
    ping_count, ping_df, Cluster, ClusterNode, ClusterOptions, GATEWAY, TUNNEL,
};
use weft_e2e::node::{ping, tcp_roundtrip};
use weft_e2e::Datapath;

const POD_MTU: u32 = 1500 - 70;

fn options(tunnel: &str) -> ClusterOptions {
    ClusterOptions {
        underlay_ipv6: true,
        ..ClusterOptions::encap(2, tunnel)
    }
}

fn cross_node_over_ipv6(tunnel: &str) -> Result<()> {
    let mut cluster = Cluster::start(options(tunnel))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    ensure!(n1.ip.is_ipv6() && n2.ip.is_ipv6(), "IPv6 InternalIPs");
    let (a, a_ip) = n1.add_pod("a")?;
    let (b, b_ip) = n2.add_pod("b")?;
    let logs = || {
        let mut text = format!("{}\n---\n{}", n1.agent_log(), n2.agent_log());
        for node in [n1, n2] {
            for args in [
                &["dpctl/dump-flows"][..],
                &["tnl/neigh/show"],
                &["ovs/route/show"],
            ] {
                let out = node
                    .ovs
                    .appctl_vswitchd(args)
                    .unwrap_or_else(|e| e.to_string());
                text += &format!("\n--- {} {args:?}:\n{out}", node.name);
            }
        }
        text
    };

    // Each agent publishes its IPv6 transport address.
    for node in [n1, n2] {
        let object = cluster
            .api
            .get_node(&node.name)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(
            object["metadata"]["annotations"]["weft.dev/transport-address"].as_str()
                == Some(node.ip.to_string().as_str()),
            "{}: transport address annotation: {}",
            node.name,
            object["metadata"]
        );
    }
    ping(&a.netns, b_ip).with_context(logs)?;
    ping(&b.netns, a_ip).with_context(logs)?;
    tcp_roundtrip(&b.netns, b_ip, &a.netns).context("tcp a -> b")?;
    ping(n1.netns(), b_ip).context("node-1 -> pod b")?;
    let datapath = n1.ovs.appctl_vswitchd(&["dpctl/dump-flows"])?;
    // Encapsulated with an IPv6 outer header towards node-2.
    Datapath::current()
        .check_encap(&datapath, tunnel, n2.ip)
        .map_err(anyhow::Error::msg)?;
    if Datapath::current() == Datapath::Netdev {
        ensure!(
            datapath.contains(&format!("ipv6(src={}", n1.ip)),
            "no IPv6 outer header from {}:\n{datapath}",
            n1.ip
        );
    }

    // The agents set each other as OVS tunnel neighbours (OVS's userspace tunnelling does not
    // learn them over IPv6; the kernel datapath's vports use the host's neighbour table).
    let native_tunnelling = Datapath::current() == Datapath::Netdev;
    for (node, peer) in [(n1, n2), (n2, n1)] {
        if !native_tunnelling {
            break;
        }
        let table = node.ovs.appctl_vswitchd(&["tnl/neigh/show"])?;
        ensure!(
            table.contains(&peer.ip.to_string()),
            "{}: no tunnel neighbour {}:\n{table}",
            node.name,
            peer.ip
        );
    }

    let max = (POD_MTU - 28) as usize;
    ping_df(&a.netns, b_ip, max).context("DF ping at the pod MTU")?;
    ping_df(&b.netns, a_ip, max).context("DF ping at the pod MTU back")?;
    let err = ping_df(&a.netns, b_ip, max + 1).expect_err("DF ping above the pod MTU must fail");
    ensure!(
        err.to_string().contains("message too long"),
        "DF ping above the MTU must fail locally, got: {err}"
    );
    for node in [n1, n2] {
        let ns = node.netns();
        ensure!(
            ClusterNode::link_mtu(ns, GATEWAY)? == POD_MTU,
            "gateway mtu"
        );
        ensure!(node.interface_column(TUNNEL, "mtu_request")? == POD_MTU.to_string());
        ensure!(node.interface_column(GATEWAY, "mtu_request")? == POD_MTU.to_string());
    }
    ensure!(
        ClusterNode::link_mtu(&a.netns, "eth0")? == POD_MTU,
        "pod mtu"
    );

    // ovs-vswitchd restart on node 1: its tunnel neighbours die with it; the agent sets them
    // again right after its flow replay (not on the 30 s peer resync), so traffic is back in
    // seconds.
    let peer_ip = cluster.node(2)?.ip.to_string();
    cluster.nodes[0].ovs.restart_vswitchd()?;
    let restarted = std::time::Instant::now();
    let n1 = cluster.node(1)?;
    loop {
        let (_, received) = ping_count(&a.netns, b_ip, 1, "0.2")?;
        if received == 1 {
            break;
        }
        ensure!(
            restarted.elapsed() < std::time::Duration::from_secs(10),
            "{tunnel}: no traffic 10 s after the ovs-vswitchd restart:\n{}",
            n1.agent_log()
        );
    }
    let back = restarted.elapsed();
    println!(
        "{tunnel} over IPv6: pod traffic back {:.2} s after the ovs-vswitchd restart",
        back.as_secs_f64()
    );
    let table = n1.ovs.appctl_vswitchd(&["tnl/neigh/show"])?;
    ensure!(
        !native_tunnelling || table.contains(&peer_ip),
        "no tunnel neighbour {peer_ip} after the restart:\n{table}"
    );
    ensure!(
        back < std::time::Duration::from_secs(5),
        "{tunnel}: traffic took {back:?} to come back after the ovs-vswitchd restart"
    );
    Ok(())
}

#[test]
fn geneve_over_ipv6_underlay() -> Result<()> {
    cross_node_over_ipv6("geneve")
}

#[test]
fn vxlan_over_ipv6_underlay() -> Result<()> {
    cross_node_over_ipv6("vxlan")
}

#[test]
fn gre_with_ipv6_underlay_is_refused_at_start() -> Result<()> {
    let err = match Cluster::start(ClusterOptions {
        nodes: 1,
        ..options("gre")
    }) {
        Ok(_) => anyhow::bail!("an agent started with GRE over an IPv6 underlay"),
        Err(err) => format!("{err:#}"),
    };
    ensure!(
        err.contains("exited: true")
            && err.contains("tunnelType gre needs an IPv4 underlay")
            && err.contains("IPv6"),
        "expected the agent to exit with an error naming gre and the IPv6 underlay, got:\n{err}"
    );
    Ok(())
}
