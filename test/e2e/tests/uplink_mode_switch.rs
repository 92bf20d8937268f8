//! Field report 2 on one node, through the real binaries: an encap node (netdev, so the uplink
//! is attached) gets a pod with the encap MTU (1450); restarted in noEncap, the uplink and its
//! internal port carry the configured/transport MTU 1500 (never the old pod's 1450), the old
//! pod is reported, a new pod gets 1500; restarted with `reconcilePodMTU: true`, the old pod is
//! fixed live and DF pings at the new maximum pass between old and new pods. Node IP
//! reachability holds across attach, restarts and the detach of `--restore-uplink`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_e2e::node::{self, Node, NodeOptions, Pod, NODE_IP4, TUNNEL, UPLINK};

fn iface(node: &Node, name: &str, column: &str) -> Result<String> {
    Ok(node
        .ovs
        .vsctl(&["get", "Interface", name, column])?
        .trim()
        .to_string())
}

fn pod_ip(result: &serde_json::Value) -> Result<IpAddr> {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .context("no address in the ADD result")?;
    Ok(cidr.split('/').next().unwrap_or_default().parse()?)
}

fn pod_mtu(pod: &Pod) -> Result<String> {
    Ok(pod
        .exec(&["cat", "/sys/class/net/eth0/mtu"])?
        .trim()
        .to_string())
}

fn uplink_attached_at(node: &Node, mtu: &str) -> Result<()> {
    let renamed = format!("{UPLINK}~");
    ensure!(iface(node, &renamed, "ofport")? == "32770", "uplink ofport");
    ensure!(
        iface(node, UPLINK, "ofport")? == "32771",
        "internal port ofport"
    );
    for port in [UPLINK, renamed.as_str()] {
        ensure!(
            iface(node, port, "mtu_request")? == mtu,
            "{port} mtu_request"
        );
        ensure!(iface(node, port, "mtu")? == mtu, "{port} mtu");
    }
    Ok(())
}

#[test]
fn noencap_restart_takes_the_uplink_mtu_from_the_plan_and_reports_old_pods() -> Result<()> {
    let mut node = Node::start(NodeOptions {
        agent_args: vec!["--restore-uplink".into()],
        ..NodeOptions::new(&["10.244.1.0/24"])
    })?;
    uplink_attached_at(&node, "1500").context("encap on netdev attaches the uplink")?;
    ensure!(
        node.all_ports()?.iter().any(|p| p == TUNNEL),
        "encap: no tunnel port"
    );
    let old = Pod::create(&node, "coredns")?;
    let old_ip = pod_ip(&node.add(&old)?)?;
    ensure!(pod_mtu(&old)? == "1450", "encap pod MTU");
    node::ping(&old.netns, NODE_IP4.parse()?).context("old pod -> node ip (encap)")?;

    node.restart_agent_with("trafficEncapMode: noEncap\n", Duration::from_secs(30))?;
    uplink_attached_at(&node, "1500").context("noEncap: uplink MTU from the plan, not 1450")?;
    let ports = node.all_ports()?;
    ensure!(
        !ports.iter().any(|p| p == TUNNEL),
        "noEncap: the mode switch must remove the tunnel port: {ports:?}"
    );
    let log = node.agent_log();
    ensure!(
        log.contains("pod mtu differs from the plan") && log.contains("default/coredns"),
        "old pod not reported:\n{log}"
    );
    ensure!(
        pod_mtu(&old)? == "1450",
        "not fixed without reconcilePodMTU"
    );
    let new = Pod::create(&node, "web")?;
    let new_ip = pod_ip(&node.add(&new)?)?;
    ensure!(pod_mtu(&new)? == "1500", "noEncap pod MTU");
    node::ping(&new.netns, NODE_IP4.parse()?).context("new pod -> node ip (noEncap)")?;

    node.restart_agent_with("reconcilePodMTU: true\n", Duration::from_secs(30))?;
    ensure!(pod_mtu(&old)? == "1500", "old pod fixed live");
    ensure!(
        node.agent_log().contains("pod mtu fixed live"),
        "fix not logged"
    );
    for (from, to) in [(&old, new_ip), (&new, old_ip)] {
        let dst = to.to_string();
        from.exec(&[
            "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1472", &dst,
        ])
        .with_context(|| format!("DF ping at 1500 from {} to {dst}", from.name))?;
    }

    // Graceful stop with --restore-uplink: the NIC gets its name, addresses and routes back.
    node.stop_agent();
    let ports = node.all_ports()?;
    ensure!(
        !ports.iter().any(|p| p.starts_with(UPLINK)),
        "uplink ports left after --restore-uplink: {ports:?}"
    );
    let link = weft_e2e::cmd::run(
        "ip",
        &["-n", node.netns(), "-d", "addr", "show", "dev", UPLINK],
    )?;
    ensure!(
        link.contains("veth") && link.contains(NODE_IP4),
        "nic not restored: {link}"
    );
    ensure!(
        node.links_with_prefix(&format!("{UPLINK}~"))?.is_empty(),
        "renamed nic left"
    );
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    uplink_attached_at(&node, "1500").context("attached again after restart")?;
    node::ping(&old.netns, NODE_IP4.parse()?).context("old pod -> node ip after re-attach")?;
    Ok(())
}
