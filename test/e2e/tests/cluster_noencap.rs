//! Multi-node noEncap (real OVS netdev per node, one shared test API server, the real agent and
//! plugin): each agent attaches its uplink and publishes its uplink MAC on its Node; pod traffic
//! to a peer's pods leaves by the uplink, unencapsulated, to the peer's uplink MAC. Cross-node
//! pod<->pod ping and TCP, node -> remote pod, and DF pings at exactly 1472 bytes (pod MTU 1500
//! on a 1500 underlay: nothing is subtracted without a tunnel).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use weft_e2e::cluster::{
    eventually, ping_df, Cluster, ClusterNode, ClusterOptions, TUNNEL, UPLINK,
};
use weft_e2e::node::{ping, tcp_roundtrip};
use weft_e2e::Datapath;

/// Peer flows have cookie category 4.
const PEER: u64 = 4;

/// How long a convergence may take.
const WAIT: Duration = Duration::from_secs(15);

/// The MAC of `ifname` in namespace `ns`.
fn link_mac(ns: &str, ifname: &str) -> Result<String> {
    let out = weft_e2e::cmd::run("ip", &["-n", ns, "-o", "link", "show", "dev", ifname])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "link/ether" {
            return Ok(words.next().unwrap_or_default().to_string());
        }
    }
    bail!("no mac for {ifname} in {ns}: {out}")
}

#[test]
fn noencap_cross_node() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        mode: "noEncap".into(),
        ..ClusterOptions::encap(2, "geneve")
    })?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let logs = || format!("{}\n---\n{}", n1.agent_log(), n2.agent_log());

    // Each agent publishes its uplink MAC: the NIC's, now carried by the host internal port.
    let macs: Vec<String> = [n1, n2]
        .iter()
        .map(|n| link_mac(n.netns(), UPLINK))
        .collect::<Result<_>>()?;
    for (node, mac) in [n1, n2].iter().zip(&macs) {
        eventually(
            &format!("{} to publish its uplink mac", node.name),
            WAIT,
            || {
                let object = cluster
                    .api
                    .get_node(&node.name)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Ok(object["metadata"]["annotations"]["weft.dev/uplink-mac"].as_str() == Some(mac))
            },
        )
        .with_context(logs)?;
        let ports = node.ovs.vsctl(&["list-ports", "br-int"])?;
        ensure!(
            !ports.lines().any(|p| p == TUNNEL),
            "noEncap has no tunnel port: {ports}"
        );
    }
    // Each node routes the other's pod CIDR to the peer's uplink MAC, out of the uplink.
    for (node, peer_mac, peer_cidr) in [(n1, &macs[1], &n2.pod_cidr), (n2, &macs[0], &n1.pod_cidr)]
    {
        eventually(&format!("{} to route its peer", node.name), WAIT, || {
            let flows = node.flows_of_category(PEER)?;
            Ok(flows.iter().any(|f| {
                f.contains(&format!("nw_dst={peer_cidr}"))
                    && f.contains(&format!("set_field:{peer_mac}->eth_dst"))
            }) && flows
                .iter()
                .any(|f| f.contains(&format!("dl_dst={peer_mac}")) && f.contains("0x8002->reg1")))
        })
        .with_context(logs)?;
    }

    let (a, a_ip) = n1.add_pod("a")?;
    let (b, b_ip) = n2.add_pod("b")?;
    ping(&a.netns, b_ip).with_context(logs)?;
    ping(&b.netns, a_ip).with_context(logs)?;
    tcp_roundtrip(&b.netns, b_ip, &a.netns).context("tcp a -> b")?;
    tcp_roundtrip(&a.netns, a_ip, &b.netns).context("tcp b -> a")?;
    ping(n1.netns(), b_ip).context("node-1 -> pod b")?;
    // Nothing was encapsulated.
    let datapath = n1.ovs.appctl_vswitchd(&["dpctl/dump-flows"])?;
    ensure!(
        !Datapath::current().shows_tunnels(&datapath),
        "noEncap traffic went through a tunnel:\n{datapath}"
    );

    // DF: a 1500-byte packet (1472 bytes of ICMP payload) crosses; one byte more fails locally.
    ensure!(ClusterNode::link_mtu(&a.netns, "eth0")? == 1500, "pod mtu");
    ping_df(&a.netns, b_ip, 1472).context("DF ping at 1472")?;
    ping_df(&b.netns, a_ip, 1472).context("DF ping at 1472 back")?;
    let err = ping_df(&a.netns, b_ip, 1473).expect_err("DF ping above the pod MTU must fail");
    ensure!(
        err.to_string().contains("message too long"),
        "DF ping above the MTU must fail locally, got: {err}"
    );
    Ok(())
}
