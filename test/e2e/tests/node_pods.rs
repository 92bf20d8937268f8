//! Single-node proof of issue 3: pods wired by the real `weft` plugin through the real
//! `weft-agent` on real OVS reach each other, the gateway and the node, by ping and TCP, for
//! IPv4, IPv6 and dual-stack nodes; CHECK passes; DEL leaves nothing behind.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::net::IpAddr;

use anyhow::{ensure, Result};
use serde_json::Value;
use weft_e2e::cmd;
use weft_e2e::node::{ping, tcp_roundtrip, Node, NodeOptions, Pod, NODE_IP4, NODE_IP6};

/// The pod's addresses from an ADD result.
fn ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

fn gateways(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["gateway"].as_str()?.parse().ok())
        .collect()
}

fn connectivity(cidrs: &[&str]) -> Result<()> {
    let node = Node::start(NodeOptions::new(cidrs))?;
    // The agent asked ovs-vswitchd for the datapath's features and found all the pipeline needs.
    let log = node.agent_log();
    ensure!(
        log.contains("datapath has every feature the pipeline needs"),
        "no datapath check in the agent log:\n{log}"
    );
    let a = Pod::create(&node, "web-a")?;
    let b = Pod::create(&node, "web-b")?;
    let ra = node.add(&a)?;
    let rb = node.add(&b)?;
    let (ips_a, ips_b) = (ips(&ra), ips(&rb));
    ensure!(ips_a.len() == cidrs.len(), "one IP per family: {ra}");
    ensure!(ips_a.iter().all(|ip| !ips_b.contains(ip)), "distinct IPs");

    // The result: host end and pod end, MTU from the plan (1500 dummy uplink - 50 Geneve).
    ensure!(ra["cniVersion"] == "1.1.0", "{ra}");
    ensure!(ra["interfaces"][1]["name"] == "eth0", "{ra}");
    ensure!(ra["interfaces"][1]["sandbox"] == a.path().as_str(), "{ra}");
    ensure!(ra["interfaces"][1]["mtu"] == 1450, "{ra}");
    ensure!(ra["ips"][0]["interface"] == 1, "{ra}");
    let mtu = a.exec(&["cat", "/sys/class/net/eth0/mtu"])?;
    ensure!(mtu.trim() == "1450", "pod MTU {mtu}");

    for (i, ip_b) in ips_b.iter().enumerate() {
        ping(&a.netns, *ip_b)?;
        tcp_roundtrip(&b.netns, *ip_b, &a.netns)?;
        let gw = gateways(&rb)[i];
        ping(&b.netns, gw)?;
        tcp_roundtrip(node.netns(), gw, &b.netns)?;
        let node_ip: IpAddr = if ip_b.is_ipv4() { NODE_IP4 } else { NODE_IP6 }.parse()?;
        ping(&b.netns, node_ip)?;
        tcp_roundtrip(node.netns(), node_ip, &b.netns)?;
        // And the node reaches the pod.
        tcp_roundtrip(&a.netns, ips_a[i], node.netns())?;
    }

    // Host ends are inert for the host stack (netdev delivers their frames to it too).
    for host in node.links_with_prefix("wf")? {
        let link = cmd::run(
            "ip",
            &["-n", node.netns(), "-o", "link", "show", "dev", &host],
        )?;
        ensure!(link.contains("NOARP"), "{host}: {link}");
        let v6 = weft_e2e::netns::exec(
            node.netns(),
            &[
                "cat",
                &format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"),
            ],
        )?;
        ensure!(v6.trim() == "1", "{host}: ipv6 not disabled");
    }

    // CHECK with the ADD result as prevResult.
    let mut check = a.call();
    let mut conf = node.netconf("1.1.0");
    conf["prevResult"] = ra.clone();
    check.config = Some(conf);
    let out = node.plugin("CHECK", &check)?;
    ensure!(out.success, "CHECK failed: {}", out.stdout);

    node.del(&a)?;
    node.del(&b)?;
    ensure!(node.links_with_prefix("wf")?.is_empty(), "veths left");
    ensure!(
        node.pod_ports()?.is_empty(),
        "ports left: {:?}",
        node.pod_ports()?
    );
    ensure!(node.ipam_allocations()?.is_empty(), "ips left");
    let pod_flows = node.pod_flows()?;
    ensure!(pod_flows.is_empty(), "pod flows left: {pod_flows:#?}");
    Ok(())
}

#[test]
fn ipv4_pods_reach_pods_gateway_and_node() -> Result<()> {
    connectivity(&["10.244.1.0/24"])
}

#[test]
fn ipv6_pods_reach_pods_gateway_and_node() -> Result<()> {
    connectivity(&["fd00:10:244:1::/64"])
}

#[test]
fn dual_stack_pods_reach_pods_gateway_and_node() -> Result<()> {
    connectivity(&["10.244.1.0/24", "fd00:10:244:1::/64"])
}
