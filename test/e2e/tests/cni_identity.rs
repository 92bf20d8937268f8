//! The CNI spec's rules for an attachment's identity, (container ID, ifname), and for DEL and
//! CHECK, through the real `weft` plugin and agent (issue 13 part 2, "Proof"). The second
//! interface, late DEL and other-netns cases failed while attachments were keyed on the pod
//! (namespace/name). The same scenarios through real runtimes:
//! `runtime_containerd` and `runtime_podman`.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_e2e::netns;
use weft_e2e::node::{ping, Node, NodeOptions, Pod};

const POD_CIDR: &str = "10.244.0.0/24";

fn ipv4(result: &Value) -> Result<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .with_context(|| format!("no IPv4 in {result}"))
}

/// Spec: "Plugins should generally complete a DEL action without error even if some resources
/// are missing"; a DEL of an attachment that never existed, and a second DEL, succeed.
#[test]
fn del_is_idempotent_and_del_of_an_unknown_attachment_succeeds() -> Result<()> {
    let node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pod = Pod::create(&node, "web")?;
    node.del(&pod).context("DEL before any ADD")?;
    node.add(&pod)?;
    node.del(&pod)?;
    node.del(&pod).context("second DEL")?;
    node.assert_no_pod_state()
}

/// Spec: CHECK of an attachment as ADD made it succeeds; CHECK of one that does not exist fails.
#[test]
fn check_passes_for_an_added_attachment_and_fails_for_an_unknown_one() -> Result<()> {
    let node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let pod = Pod::create(&node, "web")?;
    let result = node.add(&pod)?;
    let mut call = pod.call();
    let mut conf = node.netconf("1.0.0");
    conf["prevResult"] = result.clone();
    call.config = Some(conf.clone());
    let out = node.plugin("CHECK", &call)?;
    ensure!(out.success, "CHECK of a live attachment: {}", out.stdout);
    let other = Pod::create(&node, "never-added")?;
    let mut call = other.call();
    call.config = Some(conf);
    let out = node.plugin("CHECK", &call)?;
    ensure!(!out.success, "CHECK of an unknown attachment passed");
    node.del(&pod)?;
    node.assert_no_pod_state()
}

/// Spec: the attachment is (container ID, ifname). A second interface of the same container
/// (`net2`, as Multus adds one) is its own attachment: both work, and DEL of `net2` leaves
/// `eth0` alone.
#[test]
fn a_second_ifname_of_a_container_is_its_own_attachment() -> Result<()> {
    let node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let peer = Pod::create(&node, "peer")?;
    let peer_ip = ipv4(&node.add(&peer)?)?;
    let pod = Pod::create(&node, "multi")?;
    let eth0 = ipv4(&node.add(&pod)?)?;
    let mut net2 = pod.call();
    net2.ifname = Some("net2".into());
    let out = node.plugin("ADD", &net2)?;
    ensure!(out.success, "ADD net2: {}", out.stdout);
    let net2_ip = ipv4(&out.json()?)?;
    ensure!(net2_ip != eth0, "net2 got eth0's address {eth0}");
    ping(&peer.netns, eth0).context("eth0 after net2 was added")?;
    // net2 has its address and subnet but no default route (eth0 keeps it): traffic bound
    // to net2 leaves by net2, from net2's address, and its replies come back to it.
    netns::exec(
        &pod.netns,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-I",
            "net2",
            &peer_ip.to_string(),
        ],
    )
    .context("ping bound to net2")?;
    let routes = netns::exec(&pod.netns, &["ip", "-4", "route", "show", "default"])?;
    ensure!(
        routes.lines().count() == 1 && routes.contains("dev eth0"),
        "one default route, on eth0: {routes}"
    );
    let out = node.plugin("DEL", &net2)?;
    ensure!(out.success, "DEL net2: {}", out.stdout);
    ping(&peer.netns, eth0).context("eth0 after net2 was deleted")?;
    node.del(&pod)?;
    node.del(&peer)?;
    node.assert_no_pod_state()
}

/// Kubelet recreates a pod's sandbox (new container ID, same pod) and only later deletes the
/// old one: the new sandbox is wired, and the old sandbox's DEL touches only its own attachment.
#[test]
fn a_late_del_of_an_old_sandbox_keeps_the_new_sandbox_networked() -> Result<()> {
    let node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let peer = Pod::create(&node, "peer")?;
    node.add(&peer)?;
    let old = Pod::create(&node, "web")?;
    node.add(&old)?;
    let new = Pod::create(&node, "web")?;
    ensure!(new.container_id != old.container_id, "same container id");
    let ip = ipv4(&node.add(&new).context("ADD of the new sandbox")?)?;
    node.del(&old).context("late DEL of the old sandbox")?;
    ping(&peer.netns, ip).context("the new sandbox after the old one's DEL")?;
    node.del(&new)?;
    node.del(&peer)?;
    node.assert_no_pod_state()
}

/// ADD for a known (container ID, ifname) with another network namespace is an error or a clean
/// replacement, never the old result with no interface in the new namespace.
#[test]
fn add_of_a_known_attachment_in_another_netns_is_not_a_stale_success() -> Result<()> {
    let node = Node::start(NodeOptions::new(&[POD_CIDR]))?;
    let first = Pod::create(&node, "web")?;
    node.add(&first)?;
    let mut second = Pod::create(&node, "web")?;
    second.container_id = first.container_id.clone();
    let out = node.plugin("ADD", &second.call())?;
    if out.success {
        let links = second.exec(&["ip", "-o", "link", "show", "eth0"]);
        ensure!(
            links.is_ok(),
            "ADD answered success ({}) but the new netns has no eth0",
            out.stdout
        );
    }
    node.del(&second)?;
    node.del(&first)?;
    node.assert_no_pod_state()
}
