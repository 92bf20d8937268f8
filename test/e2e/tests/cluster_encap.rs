//! Multi-node encap (real OVS netdev per node, one shared test API server, the real agent and
//! plugin): cross-node pod<->pod ping and TCP for Geneve, VXLAN and GRE over an IPv4 underlay,
//! DF pings at exactly the planned pod MTU, and every managed interface's MTU equal to the plan.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{ping_df, Cluster, ClusterNode, ClusterOptions, GATEWAY, TUNNEL, UPLINK};
use weft_e2e::node::{ping, tcp_roundtrip};
use weft_e2e::Datapath;

/// Two nodes, one pod each; pod<->pod both ways, TCP both ways, node->remote pod, DF at the
/// boundary, MTUs.
fn cross_node(tunnel: &str, pod_mtu: u32) -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, tunnel))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let (a, a_ip) = n1.add_pod("a")?;
    let (b, b_ip) = n2.add_pod("b")?;
    let logs = || format!("{}\n---\n{}", n1.agent_log(), n2.agent_log());

    ping(&a.netns, b_ip).with_context(logs)?;
    ping(&b.netns, a_ip).with_context(logs)?;
    tcp_roundtrip(&b.netns, b_ip, &a.netns).context("tcp a -> b")?;
    tcp_roundtrip(&a.netns, a_ip, &b.netns).context("tcp b -> a")?;
    // The node reaches a remote pod through its gateway route and the tunnel.
    ping(n1.netns(), b_ip).context("node-1 -> pod b")?;
    // The traffic really was encapsulated with the configured protocol by the datapath.
    let datapath = n1.ovs.appctl_vswitchd(&["dpctl/dump-flows"])?;
    let dp = Datapath::current();
    dp.check_encap(&datapath, tunnel, n2.ip)
        .map_err(anyhow::Error::msg)?;
    dp.check_decap(&datapath, n2.ip)
        .map_err(anyhow::Error::msg)?;

    // DF: the largest ICMP payload that fits the pod MTU crosses; one byte more fails locally.
    let max = (pod_mtu - 28) as usize;
    ping_df(&a.netns, b_ip, max).context("DF ping at the pod MTU")?;
    let err = ping_df(&a.netns, b_ip, max + 1).expect_err("DF ping above the pod MTU must fail");
    ensure!(
        err.to_string().contains("message too long"),
        "DF ping above the MTU must fail locally, got: {err}"
    );

    for node in [n1, n2] {
        check_mtus(node, pod_mtu)?;
    }
    // The agents ran as the DaemonSet's ServiceAccount under weft.yml's RBAC: nothing refused.
    let refused = cluster.api.forbidden_requests();
    ensure!(refused.is_empty(), "requests refused by RBAC: {refused:?}");
    Ok(())
}

/// Every interface Weft manages on `node` carries the plan's MTU.
fn check_mtus(node: &ClusterNode, pod_mtu: u32) -> Result<()> {
    let ns = node.netns();
    ensure!(
        ClusterNode::link_mtu(ns, GATEWAY)? == pod_mtu,
        "gateway mtu"
    );
    ensure!(node.interface_column(GATEWAY, "mtu_request")? == pod_mtu.to_string());
    ensure!(node.interface_column(TUNNEL, "mtu_request")? == pod_mtu.to_string());
    ensure!(node.interface_column(TUNNEL, "ofport")? == "32768");
    // The uplink (netdev: NIC on the bridge, the node IP on an internal port) keeps the
    // transport MTU, never a minimum over the bridge's ports.
    ensure!(
        ClusterNode::link_mtu(ns, UPLINK)? == 1500,
        "uplink host port mtu"
    );
    if Datapath::current().attaches_uplink_in_encap() {
        ensure!(node.interface_column(UPLINK, "mtu_request")? == "1500");
        ensure!(node.interface_column("uplink0~", "mtu_request")? == "1500");
    } else {
        // Kernel tunnel vports route through the host: the NIC stays out of the bridge.
        for name in [UPLINK, "uplink0~"] {
            ensure!(
                node.ovs.vsctl(&["port-to-br", name]).is_err(),
                "{name} is a port of the bridge in encap on {}",
                Datapath::current()
            );
        }
    }
    for link in cmd_links(ns)? {
        if link.starts_with("wf") {
            ensure!(
                ClusterNode::link_mtu(ns, &link)? == pod_mtu,
                "host veth {link} mtu"
            );
        }
    }
    Ok(())
}

fn cmd_links(ns: &str) -> Result<Vec<String>> {
    let out = weft_e2e::cmd::run("ip", &["-n", ns, "-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

#[test]
fn geneve_cross_node() -> Result<()> {
    cross_node("geneve", 1450)
}

#[test]
fn vxlan_cross_node() -> Result<()> {
    cross_node("vxlan", 1450)
}

#[test]
fn gre_cross_node() -> Result<()> {
    cross_node("gre", 1458)
}

/// An ovs-vswitchd restart recreates the uplink's internal port without the node IP and the
/// gateway without its peer routes: the agent re-converges the journaled uplink, replays the
/// flows and the routes, and cross-node traffic comes back (netdev encap).
#[test]
fn cross_node_traffic_survives_vswitchd_restart() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (a, a_ip) = cluster.node(1)?.add_pod("a")?;
    let (b, b_ip) = cluster.node(2)?.add_pod("b")?;
    ping(&a.netns, b_ip).context("before the restart")?;
    let peer_ip = cluster.node(2)?.ip;

    let n1 = cluster
        .nodes
        .iter_mut()
        .find(|n| n.index == 1)
        .context("node 1")?;
    let node_ip = n1.ip.to_string();
    n1.ovs.restart_vswitchd()?;
    let n1 = cluster.node(1)?;
    let ns = n1.netns();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addrs = weft_e2e::cmd::run("ip", &["-n", ns, "-o", "addr", "show", "dev", UPLINK])
            .unwrap_or_default();
        let ok = addrs.contains(&node_ip)
            && ping(ns, peer_ip).is_ok()
            && ping(&a.netns, b_ip).is_ok()
            && ping(&b.netns, a_ip).is_ok()
            && ping(ns, b_ip).is_ok();
        if ok {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no cross-node connectivity after ovs-vswitchd restart; {UPLINK}: {addrs}\n\
             node-1 log:\n{}",
            n1.agent_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}
