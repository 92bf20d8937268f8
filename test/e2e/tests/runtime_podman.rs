//! Issue 13 (part 5): containers made by a real podman (Debian's 4.3, rootful, runc) with its
//! CNI network backend reading the conflist the real `weft-agent install-cni` wrote
//! (`--network weft`), through podman's own libcni, with the chained `portmap` for `-p`.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it) and the packages of
//! `build/install-deps` (podman, runc, busybox-static, containernetworking-plugins, iptables).

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, ensure, Context, Result};
use weft_e2e::cluster::ClusterNode;
use weft_e2e::node::{tcp_read, CniDirs, Node, NodeOptions, GATEWAY, NODE_IP4};
use weft_e2e::podman::Podman;

const POD_CIDR: &str = "10.244.0.0/24";
/// The plan's pod MTU on a harness node: 1500 (uplink) - 50 (Geneve over IPv4).
const POD_MTU: u32 = 1450;
const HOST_PORT: u16 = 18081;

fn node_with_podman() -> Result<(CniDirs, Node, Podman)> {
    let cni = CniDirs::new()?;
    let mut options = NodeOptions::new(&[POD_CIDR]);
    options.extra_config = cni.agent_config(&["portmap"]);
    let node = Node::start(options)?;
    node.install_cni(&["--chained-plugins-from", "/usr/lib/cni"])?;
    let podman = Podman::new(node.netns(), &cni.conf, &cni.bin)?;
    Ok((cni, node, podman))
}

fn ping_from(podman: &Podman, container: &str, dst: IpAddr) -> Result<()> {
    let dst = dst.to_string();
    podman
        .exec(container, &["ping", "-c", "2", "-W", "2", &dst])
        .map(drop)
        .with_context(|| format!("ping {dst} from podman container {container}"))
}

#[test]
fn podman_containers_reach_pods_gateway_node_and_host_ports_and_leave_nothing() -> Result<()> {
    let (_cni, node, podman) = node_with_podman()?;
    let port = format!("{HOST_PORT}:8080");
    podman.run_container(
        "web-a",
        &["--publish", &port],
        &["nc", "-ll", "-p", "8080", "-e", "hostname"],
    )?;
    podman.run_container("web-b", &[], &["sleep", "1000000"])?;
    let ip_a = podman.ip("web-a")?;
    let ip_b = podman.ip("web-b")?;
    ensure!(ip_a != ip_b, "distinct IPs: {ip_a}");

    let mtu: u32 = podman
        .exec("web-a", &["cat", "/sys/class/net/eth0/mtu"])?
        .trim()
        .parse()?;
    ensure!(
        mtu == POD_MTU,
        "container eth0 MTU {mtu}, planned {POD_MTU}"
    );
    ensure!(
        ClusterNode::link_mtu(node.netns(), GATEWAY)? == POD_MTU,
        "gateway MTU"
    );
    let addrs = podman.exec("web-a", &["ip", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(addrs.contains(&format!("inet {ip_a}/")), "{addrs}");

    let routes = podman.exec("web-b", &["ip", "route", "show", "default"])?;
    let gateway: IpAddr = routes
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .ok_or_else(|| anyhow!("no default route in web-b: {routes:?}"))?
        .parse()?;
    ping_from(&podman, "web-b", ip_a)?;
    ping_from(&podman, "web-a", ip_b)?;
    ping_from(&podman, "web-b", gateway)?;
    ping_from(&podman, "web-b", NODE_IP4.parse()?)?;

    // `--publish` through the chained portmap: the node's address, from the node.
    let hostname = podman.exec("web-a", &["hostname"])?;
    let served = tcp_read(node.netns(), SocketAddr::new(NODE_IP4.parse()?, HOST_PORT))?;
    ensure!(
        served.trim() == hostname.trim(),
        "hostPort served {served:?}"
    );

    // Stopped and started again: a new attachment for the same container, nothing leaked.
    podman.run(&["stop", "--time", "0", "web-a"])?;
    podman.run(&["start", "web-a"])?;
    let ip_a = podman.ip("web-a")?;
    ping_from(&podman, "web-b", ip_a).context("web-a after stop/start")?;
    ensure!(
        node.pod_ports()?.len() == 2,
        "ports: {:?}",
        node.pod_ports()?
    );

    podman.run(&["rm", "--force", "--time", "0", "web-a", "web-b"])?;
    node.assert_no_pod_state()
}

/// Issue 13 part 2: a second interface of the same container (`podman run --network
/// weft,weft2`: CNI_IFNAME eth0 then eth1, one container ID), as Multus adds one. Both work and
/// the second never disturbs the first; removing the container leaves nothing.
#[test]
fn podman_second_interface_of_a_container_keeps_the_first() -> Result<()> {
    let (cni, node, podman) = node_with_podman()?;
    // A second network on the same plugin and agent.
    let weft = std::fs::read_to_string(cni.conf.join("10-weft.conflist"))?;
    let second = weft.replace("\"name\": \"weft\"", "\"name\": \"weft2\"");
    ensure!(second != weft, "network name not found in {weft}");
    std::fs::write(cni.conf.join("20-weft2.conflist"), second)?;
    podman.run_container("peer", &[], &["sleep", "1000000"])?;
    podman.run(&[
        "run",
        "--detach",
        "--network",
        "weft,weft2",
        "--name",
        "multi",
        &podman.image.name,
        "sleep",
        "1000000",
    ])?;
    let links = podman.exec("multi", &["ip", "-o", "-4", "addr", "show"])?;
    ensure!(
        links.contains(" eth0 ") && links.contains(" eth1 "),
        "both interfaces with an address: {links}"
    );
    let ip = podman.ip("multi")?;
    ping_from(&podman, "peer", ip).context("eth0 after eth1 was added")?;
    ensure!(
        node.pod_ports()?.len() == 3,
        "ports: {:?}",
        node.pod_ports()?
    );
    podman.run(&["rm", "--force", "--time", "0", "multi", "peer"])?;
    node.assert_no_pod_state()
}

/// Why the conflist's `cniVersion` defaults to 1.0.0 (issue 13 part 1), through podman 4.3's
/// libcni 1.1: with `cniVersion: 1.1.0` podman rejects the whole conflist (the chained
/// `portmap` 1.1.1 stops at 1.0.0), so `--network weft` does not exist, and podman writes no
/// config of its own into the CNI config dir (only its `cni.lock`).
#[test]
fn podman_cannot_use_a_1_1_0_conflist() -> Result<()> {
    let cni = CniDirs::new()?;
    let mut options = NodeOptions::new(&[POD_CIDR]);
    options.extra_config = format!("{}cniVersion: 1.1.0\n", cni.agent_config(&["portmap"]));
    let node = Node::start(options)?;
    node.install_cni(&["--chained-plugins-from", "/usr/lib/cni"])?;
    let podman = Podman::new(node.netns(), &cni.conf, &cni.bin)?;
    let out = podman.output(&[
        "run",
        "--detach",
        "--network",
        "weft",
        "--name",
        "old",
        &podman.image.name,
        "sleep",
        "1000000",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "podman ran a container on a 1.1.0 conflist"
    );
    ensure!(
        stderr.contains("plugin portmap does not support config version")
            && stderr.contains("network not found"),
        "{stderr}"
    );
    let files: Vec<String> = std::fs::read_dir(&cni.conf)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|x| n.ends_with(x))
        })
        .collect();
    ensure!(files == ["10-weft.conflist"], "CNI configs: {files:?}");
    node.assert_no_pod_state()
}
