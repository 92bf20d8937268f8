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

mod ops_support;

/// The `kubernetes` section of `weftctl get agentinfo` of the agent reading `config`.
fn kube_status(config: &std::path::Path) -> Result<serde_json::Value> {
    let ctl = ops_support::Ctl::new(config)?;
    let info = ctl.expect(0, &["get", "agentinfo", "-o", "json"])?.json()?;
    Ok(info["sections"]["kubernetes"].clone())
}

/// A metric sample of the agent in namespace `ns` (metrics on 127.0.0.1:9476).
fn metric(ns: &str, name: &str) -> Result<f64> {
    let samples = ops_support::scrape(ns, "127.0.0.1:9476")?.samples;
    samples
        .get(name)
        .copied()
        .with_context(|| format!("no {name} in {samples:?}"))
}

/// node-2's `weft.dev/uplink-mac` annotation as the API server stores it.
fn uplink_mac_annotation(cluster: &Cluster, name: &str) -> Result<Option<String>> {
    let node = cluster
        .api
        .get_node(name)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(node["metadata"]["annotations"]["weft.dev/uplink-mac"]
        .as_str()
        .map(str::to_string))
}

fn peer_flow_to(node: &ClusterNode, mac: &str) -> Result<bool> {
    Ok(node
        .flows_of_category(PEER)?
        .iter()
        .any(|f| f.contains(&format!("set_field:{mac}->eth_dst"))))
}

#[test]
fn noencap_node_annotations_are_reconciled_and_health_is_honest() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        mode: "noEncap".into(),
        extra_config: "metricsBindAddress: 127.0.0.1:9476\n".into(),
        ..ClusterOptions::encap(2, "geneve")
    })?;
    let (n2_name, n2_ns, n2_config) = {
        let n2 = cluster.node(2)?;
        (n2.name.clone(), n2.netns().to_string(), n2.config.clone())
    };
    let mac2 = link_mac(&n2_ns, UPLINK)?;
    let restored = |cluster: &Cluster, what: &str, timeout: Duration| -> Result<()> {
        eventually(what, timeout, || {
            Ok(uplink_mac_annotation(cluster, &n2_name)?.as_deref() == Some(mac2.as_str()))
        })
        .with_context(|| cluster.agent_logs())
    };
    restored(&cluster, "node-2's uplink mac on its node", WAIT)?;
    let n1 = cluster.node(1)?;
    eventually("node-1's peer flows to node-2", WAIT, || {
        peer_flow_to(n1, &mac2)
    })
    .with_context(|| cluster.agent_logs())?;
    let (a, _) = n1.add_pod("a")?;
    let (_b, b_ip) = cluster.node(2)?.add_pod("b")?;
    ping(&a.netns, b_ip).with_context(|| cluster.agent_logs())?;
    let status = kube_status(&n2_config)?;
    ensure!(
        status["apiServer"] == "connected" && status["annotationsInSync"] == true,
        "{status}"
    );
    let published = status["annotationsPublishedUnix"]
        .as_u64()
        .context("annotationsPublishedUnix")?;
    ensure!(metric(&n2_ns, "weft_kube_connected")? == 1.0);
    ensure!(metric(&n2_ns, "weft_node_annotations_in_sync")? == 1.0);

    // A user removes the annotations: node-2's agent writes them back (on the watch event, well
    // before the 30 s resync), and node-1 keeps its peer flows.
    let patch = |cluster: &Cluster, annotations: serde_json::Value| -> Result<()> {
        cluster
            .api
            .patch_node(
                &n2_name,
                serde_json::json!({"metadata": {"annotations": annotations}}),
            )
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    patch(
        &cluster,
        serde_json::json!({"weft.dev/uplink-mac": null, "weft.dev/transport-address": null}),
    )?;
    restored(
        &cluster,
        "node-2's annotations restored",
        Duration::from_secs(5),
    )?;
    // A user edits one to a wrong value: restored too.
    patch(
        &cluster,
        serde_json::json!({"weft.dev/uplink-mac": "02:00:00:00:00:01"}),
    )?;
    restored(
        &cluster,
        "node-2's edited annotation restored",
        Duration::from_secs(5),
    )?;
    let n1 = cluster.node(1)?;
    eventually("node-1's peer flows to node-2 again", WAIT, || {
        peer_flow_to(n1, &mac2)
    })
    .with_context(|| cluster.agent_logs())?;
    ping(&a.netns, b_ip).context("pod a -> pod b after the annotations came back")?;
    ensure!(
        cluster
            .node(2)?
            .agent_log()
            .contains("node annotations restored"),
        "{}",
        cluster.agent_logs()
    );

    // The API server goes away: the agents say so (agentinfo, metrics) and stay ready; an
    // annotation lost meanwhile (a restore from an old backup) comes back after it returns.
    cluster.api.stop();
    eventually("node-2 to report the API server disconnected", WAIT, || {
        Ok(kube_status(&n2_config)?["apiServer"] == "disconnected")
    })
    .with_context(|| cluster.agent_logs())?;
    ensure!(metric(&n2_ns, "weft_kube_connected")? == 0.0);
    ensure!(
        metric(&n2_ns, "weft_ready")? == 1.0,
        "the agent stays ready"
    );
    ping(&a.netns, b_ip).context("pod traffic while the API server is down")?;
    // Long enough for several watch retries.
    std::thread::sleep(Duration::from_secs(5));
    patch(&cluster, serde_json::json!({"weft.dev/uplink-mac": null}))?;
    cluster.api.restart()?;
    restored(
        &cluster,
        "node-2's annotation back after the restore",
        Duration::from_secs(20),
    )?;
    eventually("node-2 connected again", WAIT, || {
        let s = kube_status(&n2_config)?;
        Ok(s["apiServer"] == "connected" && s["annotationsInSync"] == true)
    })
    .with_context(|| cluster.agent_logs())?;
    let status = kube_status(&n2_config)?;
    ensure!(
        status["annotationsPublishedUnix"].as_u64() >= Some(published)
            && status["annotationPublishes"].as_u64() >= Some(4),
        "{status}"
    );
    ensure!(metric(&n2_ns, "weft_kube_request_failures_total")? >= 1.0);
    // Repeated failures were logged with backoff, not on every attempt (each of the two
    // watches: the first failure, and a change of error message at most).
    let log = cluster.node(2)?.agent_log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("node watch failed") && l.contains("WARN"))
        .count();
    ensure!(warnings <= 4, "{warnings} watch failure warnings:\n{log}");
    ping(&a.netns, b_ip).context("pod a -> pod b at the end")?;
    let refused = cluster.api.forbidden_requests();
    ensure!(refused.is_empty(), "requests refused by RBAC: {refused:?}");
    Ok(())
}
