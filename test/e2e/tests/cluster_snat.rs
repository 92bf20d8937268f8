//! SNAT owned by the host-state reconciler (issue 4 item 4, issue 5 item 1), on the multi-node
//! topology with the real agents: pod traffic leaving the cluster (to the underlay namespace's
//! address, which is no pod CIDR) arrives with the node's transport IP as source; pod to pod
//! across nodes keeps the pod's address; `nft delete table ip weft` in the node's namespace is
//! undone within 1 s and counted; with `noSNAT: true` the table is gone and the outside sees the
//! pod's address. IPv6 (the `ip6 weft` table) on the single-node harness with a dual-stack
//! pod and an "outside" namespace wired to the node by a veth.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{tcp_source_seen, Cluster, ClusterOptions, UNDERLAY_GW};
use weft_e2e::node::{Node, NodeOptions, Pod};
use weft_e2e::{cmd, netns};

fn weft_table(ns: &str) -> Option<String> {
    netns::exec(ns, &["nft", "list", "table", "ip", "weft"]).ok()
}

#[test]
fn pods_leaving_the_cluster_are_masqueraded_unless_no_snat() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let outside: IpAddr = UNDERLAY_GW.parse()?;
    let underlay = cluster.underlay().to_string();
    let (a, a_ip) = cluster.node(1)?.add_pod("a")?;
    let (b, b_ip) = cluster.node(2)?.add_pod("b")?;
    let n1 = cluster.node(1)?;
    let logs = || format!("{}\n---\n{:?}", n1.agent_log(), weft_table(n1.netns()));

    // Out of the cluster: the node's transport IP.
    let seen = tcp_source_seen(&underlay, outside, &a.netns).with_context(logs)?;
    ensure!(seen == n1.ip, "outside saw {seen}, want node IP {}", n1.ip);
    // Pod to pod across nodes: not natted, both ways.
    let seen = tcp_source_seen(&b.netns, b_ip, &a.netns).with_context(logs)?;
    ensure!(seen == a_ip, "pod b saw {seen}, want pod a {a_ip}");
    let seen = tcp_source_seen(&a.netns, a_ip, &b.netns).with_context(logs)?;
    ensure!(seen == b_ip, "pod a saw {seen}, want pod b {b_ip}");

    // Deleted behind the agent's back: restored within 1 s and counted.
    let ns = n1.netns().to_string();
    netns::exec(&ns, &["nft", "delete", "table", "ip", "weft"])?;
    let start = Instant::now();
    while weft_table(&ns).is_none() {
        ensure!(
            start.elapsed() < Duration::from_secs(1),
            "table ip weft not restored within 1 s\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("cluster snat: table restored in {:?}", start.elapsed());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !n1
        .agent_log()
        .lines()
        .any(|l| l.contains("host state repaired") && l.contains("snat"))
    {
        ensure!(Instant::now() < deadline, "repair not logged\n{}", logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = tcp_source_seen(&underlay, outside, &a.netns).with_context(logs)?;
    ensure!(seen == n1.ip, "after repair outside saw {seen}");

    // noSNAT: restart node 1's agent with it; the table goes, the outside sees the pod (the
    // underlay routes node 1's pod CIDR back to it, as a flat network would).
    let node = cluster
        .nodes
        .iter_mut()
        .find(|n| n.index == 1)
        .context("no node 1")?;
    node.stop_agent();
    let mut config = std::fs::read_to_string(&node.config)?;
    config.push_str("noSNAT: true\n");
    std::fs::write(&node.config, config)?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    let start = Instant::now();
    while weft_table(&ns).is_some() {
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "table ip weft still there with noSNAT\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    cmd::run(
        "ip",
        &[
            "-n",
            &underlay,
            "route",
            "add",
            &node.pod_cidr,
            "via",
            &node.ip.to_string(),
        ],
    )?;
    let seen = tcp_source_seen(&underlay, outside, &a.netns).with_context(|| node.agent_log())?;
    ensure!(
        seen == a_ip,
        "with noSNAT outside saw {seen}, want pod {a_ip}"
    );
    drop((a, b));
    Ok(())
}

/// A namespace deleted on drop.
struct Outside(String);

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

#[test]
fn ipv6_pods_leaving_the_node_are_masqueraded() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.244.1.0/24", "fd00:10:244:1::/64"]))?;
    let ns = node.netns().to_string();
    let outside = Outside(format!("{ns}-out"));
    netns::create(&outside.0)?;
    cmd::run(
        "ip",
        &[
            "-n", &ns, "link", "add", "outn", "type", "veth", "peer", "name", "oute", "netns",
            &outside.0,
        ],
    )?;
    for (space, dev, addr) in [
        (&ns, "outn", "fd00:99::1/64"),
        (&outside.0, "oute", "fd00:99::2/64"),
    ] {
        cmd::run(
            "ip",
            &["-n", space, "addr", "add", addr, "dev", dev, "nodad"],
        )?;
        cmd::run("ip", &["-n", space, "link", "set", dev, "up"])?;
    }
    let pod = Pod::create(&node, "v6")?;
    let result = node.add(&pod)?;
    let pod_ip: IpAddr = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .find(IpAddr::is_ipv6)
        .context("no IPv6 pod address")?;
    let table = netns::exec(&ns, &["nft", "list", "table", "ip6", "weft"])?;
    ensure!(table.contains("masquerade"), "{table}");
    let seen = tcp_source_seen(&outside.0, "fd00:99::2".parse()?, &pod.netns)
        .with_context(|| node.agent_log())?;
    ensure!(
        seen == "fd00:99::1".parse::<IpAddr>()?,
        "outside saw {seen} (pod {pod_ip}), want the node's fd00:99::1"
    );
    Ok(())
}
