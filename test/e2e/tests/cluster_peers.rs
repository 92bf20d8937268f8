//! Peers follow the Node objects: a peer whose Node is deleted loses its flows and host routes
//! on every other node, a node added later becomes reachable, and each agent publishes its
//! transport address on its Node.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_e2e::cluster::{eventually, Cluster, ClusterNode, ClusterOptions};
use weft_e2e::node::ping;

/// Peer flows have cookie category 4.
const PEER: u64 = 4;

/// How long a convergence may take.
const WAIT: Duration = Duration::from_secs(10);

fn peer_state(node: &ClusterNode) -> Result<(Vec<String>, Vec<String>)> {
    Ok((node.flows_of_category(PEER)?, node.gateway_routes()?))
}

#[test]
fn peers_follow_node_objects() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(3, "geneve"))?;

    // Every agent publishes its transport address (asynchronously, right after it is ready).
    for node in &cluster.nodes {
        eventually(
            &format!("{} to publish its transport address", node.name),
            WAIT,
            || {
                let object = cluster
                    .api
                    .get_node(&node.name)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let published =
                    object["metadata"]["annotations"]["weft.dev/transport-address"].as_str();
                Ok(published == Some(node.ip.to_string().as_str()))
            },
        )?;
    }

    // Node 1 routes both peers: one L3 flow and one ARP answer each, one route each.
    let n1 = cluster.node(1)?;
    eventually("node-1 to route two peers", WAIT, || {
        let (flows, routes) = peer_state(n1)?;
        Ok(flows.len() == 4 && routes.len() == 2)
    })?;
    let (flows, routes) = peer_state(n1)?;
    ensure!(
        routes
            .iter()
            .any(|r| r.starts_with("10.244.3.0/24 via 10.244.3.1") && r.contains("onlink")),
        "{routes:?}"
    );
    ensure!(
        flows.iter().any(|f| f.contains("nw_dst=10.244.3.0/24")
            && f.contains("set_field:192.168.60.13->tun_dst")),
        "{flows:?}"
    );

    let (a, a_ip) = cluster.node(1)?.add_pod("a")?;
    let (_c, c_ip) = cluster.node(3)?.add_pod("c")?;
    ping(&a.netns, c_ip).context("a -> c before node-3 is deleted")?;

    // Node 3's Node object is deleted: node 1 and 2 drop its flows and routes.
    cluster.remove_node(3)?;
    for index in [1, 2] {
        let node = cluster.node(index)?;
        eventually(&format!("{} to forget node-3", node.name), WAIT, || {
            let (flows, routes) = peer_state(node)?;
            Ok(flows.len() == 2
                && routes.len() == 1
                && flows.iter().all(|f| !f.contains("10.244.3."))
                && routes.iter().all(|r| !r.contains("10.244.3.")))
        })?;
    }

    // A node added later is reachable from the existing ones, and routes to them.
    let n4 = cluster.add_node()?;
    ensure!(n4.index == 4);
    let (d, d_ip) = n4.add_pod("d")?;
    let n1 = cluster.node(1)?;
    eventually("node-1 to route node-4", WAIT, || {
        Ok(n1
            .gateway_routes()?
            .iter()
            .any(|r| r.starts_with("10.244.4.0/24")))
    })?;
    ping(&a.netns, d_ip).context("a -> d")?;
    ping(&d.netns, a_ip).context("d -> a")?;
    Ok(())
}
