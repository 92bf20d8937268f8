//! Mode switches on a live two-node cluster (real OVS netdev per node, the real agents and
//! plugin), both directions, with cross-node traffic between pods made in each mode:
//!
//! 1. encap (Geneve, pod MTU 1450): pods `a1`, `b1`.
//! 2. Field report 2: agents restarted in noEncap. The tunnel port is gone, the uplink and its
//!    internal port carry the transport MTU 1500 (never the old pods' 1450), the old pods are
//!    reported and left alone, new pods `a2`, `b2` get 1500; node-1's host reaches a pod on
//!    node-2.
//! 3. Restarted with `reconcilePodMTU: true`: the old pods are fixed live; DF pings at 1500
//!    pass between old and new pods across nodes, one byte more fails locally.
//! 4. The reverse switch: agents restarted in encap with `reconcilePodMTU: true`. The tunnel
//!    port is back (ofport 32768), every managed interface carries the encap plan, the pods made
//!    in noEncap (1500 > 1450) are reported and fixed, new pods `a3`, `b3` get 1450, and DF
//!    pings at 1450 cross the tunnel between old and new pods, one byte more fails locally.
//!
//! With the netdev datapath the uplink stays attached in encap too (userspace tunnels need the
//! endpoint IP on an OVS internal port), so across every switch the uplink journal holds one
//! finished attach; its detach is proven by `uplink_mode_switch` (`--restore-uplink`).

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{
    ping_df, Cluster, ClusterNode, ClusterOptions, GATEWAY, TUNNEL, UPLINK, UPLINK_ATTACH_STEPS,
};
use weft_e2e::node::{ping, Pod};
use weft_e2e::Datapath;

const ENCAP_MTU: u32 = 1450;
const NOENCAP_MTU: u32 = 1500;

/// The uplink is attached, its journal holds a finished attach, and every managed interface
/// carries the plan: gateway and pods (host veth, pod eth0 of `pods`) at `pod_mtu`, the
/// tunnel port (encap only) at `pod_mtu` on ofport 32768, the uplink NIC and internal port at
/// the transport MTU 1500; exactly `off_plan` host veths (old pods not fixed) differ.
fn check_node(
    node: &ClusterNode,
    encap: bool,
    pod_mtu: u32,
    pods: &[&Pod],
    off_plan: usize,
) -> Result<()> {
    let ns = node.netns();
    // noEncap attaches the uplink on both datapaths; encap only on netdev (kernel tunnel vports
    // route through the host, so on system the NIC is left out of the bridge, or detached by
    // the switch back).
    if !encap || Datapath::current().attaches_uplink_in_encap() {
        let journal = node.uplink_journal()?.context("no uplink journal")?;
        ensure!(
            journal["operation"] == "attach"
                && journal["attach"] == serde_json::json!(UPLINK_ATTACH_STEPS),
            "{}: uplink journal not a finished attach: {journal}",
            node.name
        );
        let nic = format!("{UPLINK}~");
        ensure!(node.interface_column(&nic, "ofport")? == "32770");
        ensure!(node.interface_column(UPLINK, "ofport")? == "32771");
        for port in [UPLINK, nic.as_str()] {
            ensure!(
                node.interface_column(port, "mtu_request")? == NOENCAP_MTU.to_string()
                    && ClusterNode::link_mtu(ns, port)? == NOENCAP_MTU,
                "{}: {port} must carry the transport MTU {NOENCAP_MTU}",
                node.name
            );
        }
    } else {
        let journal = node.uplink_journal()?;
        ensure!(
            journal.is_none(),
            "{}: an uplink journal in encap on {}: {journal:?}",
            node.name,
            Datapath::current()
        );
        ensure!(
            node.ovs.vsctl(&["port-to-br", UPLINK]).is_err()
                && ClusterNode::link_mtu(ns, UPLINK)? == NOENCAP_MTU,
            "{}: the NIC {UPLINK} out of the bridge at the transport MTU {NOENCAP_MTU}",
            node.name
        );
    }
    let ports = node.ovs.vsctl(&["list-ports", "br-int"])?;
    let has_tunnel = ports.lines().any(|p| p == TUNNEL);
    ensure!(
        has_tunnel == encap,
        "{}: tunnel port present: {has_tunnel}, encap: {encap}: {ports}",
        node.name
    );
    if encap {
        ensure!(node.interface_column(TUNNEL, "ofport")? == "32768");
        ensure!(node.interface_column(TUNNEL, "mtu_request")? == pod_mtu.to_string());
    }
    ensure!(
        ClusterNode::link_mtu(ns, GATEWAY)? == pod_mtu
            && node.interface_column(GATEWAY, "mtu_request")? == pod_mtu.to_string(),
        "{}: gateway MTU",
        node.name
    );
    let mut off = Vec::new();
    for link in node.links()?.iter().filter(|l| l.starts_with("wf")) {
        let mtu = ClusterNode::link_mtu(ns, link)?;
        if mtu != pod_mtu {
            off.push(format!("{link}={mtu}"));
        }
    }
    ensure!(
        off.len() == off_plan,
        "{}: host veths off the plan {pod_mtu}: {off:?}, expected {off_plan} (old pods not fixed)",
        node.name
    );
    for pod in pods {
        ensure!(
            ClusterNode::link_mtu(&pod.netns, "eth0")? == pod_mtu,
            "{}: pod {} eth0 MTU",
            node.name,
            pod.name
        );
    }
    Ok(())
}

/// DF pings at exactly `mtu` between each pair (both ways) pass; one byte more fails locally
/// with "message too long" (never a silent loss).
fn df_pings(pairs: &[(&Pod, IpAddr, &Pod, IpAddr)], mtu: u32) -> Result<()> {
    let max = (mtu - 28) as usize;
    for (from, from_ip, to, to_ip) in pairs {
        ping_df(&from.netns, *to_ip, max)
            .with_context(|| format!("DF {max} from {} to {}", from.name, to.name))?;
        ping_df(&to.netns, *from_ip, max)
            .with_context(|| format!("DF {max} from {} to {}", to.name, from.name))?;
        let err = ping_df(&from.netns, *to_ip, max + 1)
            .err()
            .with_context(|| format!("DF {} from {} passed", max + 1, from.name))?;
        ensure!(
            err.to_string().contains("message too long"),
            "DF ping above the MTU must fail locally, got: {err}"
        );
    }
    Ok(())
}

/// What node `index` logged since `offset`.
fn logged_since(cluster: &Cluster, index: usize, offset: usize) -> Result<String> {
    let log = cluster.node(index)?.agent_log();
    Ok(log.get(offset..).unwrap_or_default().to_string())
}

/// Each node's new log part reports every pod in `pods` as off plan (and, when `fixed`,
/// as fixed live), and no pod outside it.
fn check_reports(
    cluster: &Cluster,
    offsets: &[usize],
    pods: &[(usize, &[&str])],
    fixed: bool,
) -> Result<()> {
    for (index, names) in pods {
        let log = logged_since(cluster, *index, offsets[index - 1])?;
        let reported: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("pod mtu differs from the plan"))
            .collect();
        ensure!(
            reported.len() == names.len(),
            "node-{index}: expected {names:?} reported, got:\n{}",
            reported.join("\n")
        );
        for name in *names {
            let pod = format!("default/{name}");
            ensure!(
                reported.iter().any(|l| l.contains(&pod)),
                "node-{index}: pod {pod} not reported:\n{log}"
            );
            let was_fixed = log
                .lines()
                .any(|l| l.contains("pod mtu fixed live") && l.contains(&pod));
            ensure!(
                was_fixed == fixed,
                "node-{index}: pod {pod} fixed: {was_fixed}, expected {fixed}"
            );
        }
    }
    Ok(())
}

#[test]
fn switch_encap_to_noencap_and_back_on_a_live_cluster() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;

    // 1. encap.
    let (a1, a1_ip) = cluster.node(1)?.add_pod("a1")?;
    let (b1, b1_ip) = cluster.node(2)?.add_pod("b1")?;
    for index in [1, 2] {
        let pods: &[&Pod] = if index == 1 { &[&a1] } else { &[&b1] };
        check_node(cluster.node(index)?, true, ENCAP_MTU, pods, 0).context("encap")?;
    }
    ping(&a1.netns, b1_ip).with_context(|| cluster.agent_logs())?;

    // 2. encap -> noEncap, old pods reported, not fixed.
    let offsets = cluster.restart_agents_with(&[("trafficEncapMode", "noEncap")])?;
    check_reports(&cluster, &offsets, &[(1, &["a1"]), (2, &["b1"])], false)?;
    ensure!(ClusterNode::link_mtu(&a1.netns, "eth0")? == ENCAP_MTU);
    let (a2, a2_ip) = cluster.node(1)?.add_pod("a2")?;
    let (b2, b2_ip) = cluster.node(2)?.add_pod("b2")?;
    check_node(cluster.node(1)?, false, NOENCAP_MTU, &[&a2], 1)
        .context("noEncap, field report 2")?;
    check_node(cluster.node(2)?, false, NOENCAP_MTU, &[&b2], 1)
        .context("noEncap, field report 2")?;
    ping(&a1.netns, b2_ip).with_context(|| cluster.agent_logs())?;
    ping(&a2.netns, b1_ip).with_context(|| cluster.agent_logs())?;
    // noEncap: node-1's host namespace reaches a pod on node-2 (host -> remote pod).
    ping(cluster.node(1)?.netns(), b1_ip).context("noEncap: node-1 host -> pod b1")?;

    // 3. reconcilePodMTU: old pods fixed live, DF at 1500 between old and new pods.
    let offsets = cluster.restart_agents_with(&[("reconcilePodMTU", "true")])?;
    check_reports(&cluster, &offsets, &[(1, &["a1"]), (2, &["b1"])], true)?;
    check_node(cluster.node(1)?, false, NOENCAP_MTU, &[&a1, &a2], 0)?;
    check_node(cluster.node(2)?, false, NOENCAP_MTU, &[&b1, &b2], 0)?;
    df_pings(
        &[
            (&a1, a1_ip, &b2, b2_ip),
            (&a2, a2_ip, &b1, b1_ip),
            (&a1, a1_ip, &b1, b1_ip),
        ],
        NOENCAP_MTU,
    )
    .with_context(|| cluster.agent_logs())?;

    // 4. noEncap -> encap with reconcilePodMTU: every pod (now 1500) reported and fixed.
    let offsets = cluster.restart_agents_with(&[("trafficEncapMode", "encap")])?;
    check_reports(
        &cluster,
        &offsets,
        &[(1, &["a1", "a2"]), (2, &["b1", "b2"])],
        true,
    )?;
    let (a3, a3_ip) = cluster.node(1)?.add_pod("a3")?;
    let (b3, b3_ip) = cluster.node(2)?.add_pod("b3")?;
    check_node(cluster.node(1)?, true, ENCAP_MTU, &[&a1, &a2, &a3], 0).context("back to encap")?;
    check_node(cluster.node(2)?, true, ENCAP_MTU, &[&b1, &b2, &b3], 0).context("back to encap")?;
    df_pings(
        &[
            (&a1, a1_ip, &b3, b3_ip),
            (&a3, a3_ip, &b2, b2_ip),
            (&a2, a2_ip, &b1, b1_ip),
        ],
        ENCAP_MTU,
    )
    .with_context(|| cluster.agent_logs())?;
    ping(cluster.node(2)?.netns(), a3_ip).context("encap: node-2 host -> pod a3")?;
    // The traffic really crossed the tunnel again.
    let datapath = cluster
        .node(1)?
        .ovs
        .appctl_vswitchd(&["dpctl/dump-flows"])?;
    let n2 = cluster.node(2)?.ip;
    Datapath::current()
        .check_encap(&datapath, "geneve", n2)
        .map_err(|e| anyhow::anyhow!("after the switch back: {e}"))?;
    Ok(())
}
