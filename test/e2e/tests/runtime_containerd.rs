//! Issue 13 (part 5): pods made by a real containerd (Debian's 1.6, CRI plugin, runc), driven
//! through CRI as kubelet drives it, networked by the real `weft` plugin that the real
//! `weft-agent install-cni` installed with its conflist, chained `portmap` for hostPorts.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it) and the packages of
//! `build/install-deps` (containerd, runc, busybox-static, containernetworking-plugins,
//! iptables).

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, ensure, Context, Result};
use weft_e2e::cluster::{Cluster, ClusterOptions};
use weft_e2e::containerd::Containerd;
use weft_e2e::cri::{CriClient, PodSpec};
use weft_e2e::node::{CniDirs, Node, NodeOptions, GATEWAY, NODE_IP4};

const POD_CIDR: &str = "10.244.0.0/24";
/// The plan's pod MTU on a harness node: 1500 (uplink) - 50 (Geneve over IPv4).
const POD_MTU: u32 = 1450;
const HOST_PORT: u16 = 18080;

/// A node whose CNI dirs were filled by the real `install-cni`, and a containerd reading them.
fn node_with_containerd() -> Result<(CniDirs, Node, Containerd)> {
    let cni = CniDirs::new()?;
    let mut options = NodeOptions::new(&[POD_CIDR]);
    options.extra_config = cni.agent_config(&["portmap"]);
    let node = Node::start(options)?;
    node.install_cni(&["--chained-plugins-from", "/usr/lib/cni"])?;
    let containerd = Containerd::start(node.netns(), &cni.conf, &cni.bin)?;
    Ok((cni, node, containerd))
}

/// RunPodSandbox + one container running `command`; returns (sandbox id, container id).
fn run_pod(
    cri: &mut CriClient,
    containerd: &Containerd,
    pod: &PodSpec,
    command: &[&str],
) -> Result<(String, String)> {
    let sandbox = cri.run_pod_sandbox(pod)?;
    let container = cri.run_container(&sandbox, pod, "app", &containerd.image.name, command)?;
    Ok((sandbox, container))
}

fn ipv4(ips: &[IpAddr]) -> Result<IpAddr> {
    ips.iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| anyhow!("no IPv4 among {ips:?}"))
}

fn ping_from(cri: &mut CriClient, container: &str, dst: IpAddr) -> Result<()> {
    let dst = dst.to_string();
    cri.exec_ok(container, &["ping", "-c", "2", "-W", "2", &dst])
        .map(drop)
        .with_context(|| format!("ping {dst} from container {container}"))
}

#[test]
fn containerd_pods_reach_pods_gateway_node_and_host_ports_and_leave_nothing() -> Result<()> {
    let (_cni, node, mut containerd) = node_with_containerd()?;
    let mut cri = containerd.cri()?;
    let mut a = PodSpec::new("default", "web-a");
    a.host_ports = vec![(8080, HOST_PORT)];
    let b = PodSpec::new("default", "web-b");
    // Pod a serves its hostname on 8080 (busybox nc, one child per connection).
    let (sandbox_a, app_a) = run_pod(
        &mut cri,
        &containerd,
        &a,
        &["nc", "-ll", "-p", "8080", "-e", "hostname"],
    )?;
    let (sandbox_b, app_b) = run_pod(&mut cri, &containerd, &b, &["sleep", "1000000"])?;
    let ip_a = ipv4(&cri.sandbox_ips(&sandbox_a)?)?;
    let ip_b = ipv4(&cri.sandbox_ips(&sandbox_b)?)?;
    ensure!(ip_a != ip_b, "distinct pod IPs: {ip_a}");

    // eth0 with the planned MTU (the gateway's) and the IP the runtime reported.
    let mtu: u32 = cri
        .exec_ok(&app_a, &["cat", "/sys/class/net/eth0/mtu"])?
        .trim()
        .parse()?;
    ensure!(mtu == POD_MTU, "pod eth0 MTU {mtu}, planned {POD_MTU}");
    let gw_mtu = weft_e2e::cluster::ClusterNode::link_mtu(node.netns(), GATEWAY)?;
    ensure!(gw_mtu == POD_MTU, "gateway MTU {gw_mtu}");
    let addrs = cri.exec_ok(&app_a, &["ip", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(addrs.contains(&format!("inet {ip_a}/")), "{addrs}");

    // Pod to pod, pod to its gateway, pod to the node.
    let routes = cri.exec_ok(&app_b, &["ip", "route", "show", "default"])?;
    let gateway: IpAddr = routes
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .ok_or_else(|| anyhow!("no default route in pod b: {routes:?}"))?
        .parse()?;
    ping_from(&mut cri, &app_b, ip_a)?;
    ping_from(&mut cri, &app_a, ip_b)?;
    ping_from(&mut cri, &app_b, gateway)?;
    ping_from(&mut cri, &app_b, NODE_IP4.parse()?)?;

    // hostPort through the chained portmap: the node's own address, from the node.
    let host_port = SocketAddr::new(NODE_IP4.parse()?, HOST_PORT);
    let served = weft_e2e::node::tcp_read(node.netns(), host_port)?;
    ensure!(
        served.trim() == "web-a",
        "hostPort {host_port} served {served:?}"
    );
    // ... from another pod (DNAT in the node, back out through the gateway) and from the pod
    // itself (hairpin: portmap masquerades it).
    let port = HOST_PORT.to_string();
    for app in [&app_b, &app_a] {
        let served = cri.exec_ok(app, &["nc", "-w", "3", NODE_IP4, &port])?;
        ensure!(
            served.trim() == "web-a",
            "hostPort from pod {app}: {served:?}"
        );
    }

    // containerd restarts (an upgrade): the pods keep their network and their sandboxes.
    let before = containerd.pid();
    containerd.restart()?;
    ensure!(containerd.pid() != before, "containerd was not restarted");
    let mut cri = containerd.cri()?;
    ensure!(
        cri.sandbox_ips(&sandbox_a)? == vec![ip_a],
        "pod a's IP after restart"
    );
    ping_from(&mut cri, &app_a, ip_b)?;
    let served = weft_e2e::node::tcp_read(node.netns(), host_port)?;
    ensure!(
        served.trim() == "web-a",
        "hostPort after restart: {served:?}"
    );

    // Sandboxes removed as kubelet removes them: nothing of them is left.
    for sandbox in [&sandbox_a, &sandbox_b] {
        cri.stop_pod_sandbox(sandbox)?;
        cri.remove_pod_sandbox(sandbox)?;
    }
    ensure!(cri.list_sandboxes()?.is_empty(), "sandboxes left");
    node.assert_no_pod_state()
}

/// Two nodes (encap, Geneve), a containerd on each: pods reach each other across nodes, and a
/// hostPort is reached from outside the node (the underlay) on the node's IP.
#[test]
fn containerd_pods_across_nodes_and_host_port_from_the_underlay() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let mut runtimes = Vec::new();
    for node in &cluster.nodes {
        let dirs = CniDirs::new()?;
        node.install_cni(
            &dirs,
            &["portmap"],
            &["--chained-plugins-from", "/usr/lib/cni"],
        )?;
        let containerd = Containerd::start(node.netns(), &dirs.conf, &dirs.bin)?;
        runtimes.push((containerd, dirs));
    }
    let mut cri1 = runtimes[0].0.cri()?;
    let mut cri2 = runtimes[1].0.cri()?;
    let mut a = PodSpec::new("default", "web-1");
    a.host_ports = vec![(8080, HOST_PORT)];
    let b = PodSpec::new("default", "web-2");
    let (sandbox_a, app_a) = run_pod(
        &mut cri1,
        &runtimes[0].0,
        &a,
        &["nc", "-ll", "-p", "8080", "-e", "hostname"],
    )?;
    let (sandbox_b, app_b) = run_pod(&mut cri2, &runtimes[1].0, &b, &["sleep", "1000000"])?;
    let ip_a = ipv4(&cri1.sandbox_ips(&sandbox_a)?)?;
    let ip_b = ipv4(&cri2.sandbox_ips(&sandbox_b)?)?;
    ping_from(&mut cri1, &app_a, ip_b)?;
    ping_from(&mut cri2, &app_b, ip_a)?;
    ping_from(&mut cri2, &app_b, cluster.nodes[0].ip)?;

    let host_port = SocketAddr::new(cluster.nodes[0].ip, HOST_PORT);
    let served = weft_e2e::node::tcp_read(cluster.underlay(), host_port)
        .with_context(|| cluster.agent_logs())?;
    ensure!(
        served.trim() == "web-1",
        "hostPort {host_port} served {served:?}"
    );
    Ok(())
}

/// Issue 13 part 2, as kubelet does it: the pod's sandbox is recreated (attempt 1) while the
/// old one still exists, then the old sandbox is stopped and removed (its late CNI DEL). The new
/// sandbox must be wired and keep its network through the old one's DEL.
#[test]
fn containerd_sandbox_recreation_then_late_del_of_the_old_sandbox_keeps_the_pod_networked(
) -> Result<()> {
    let (_cni, node, containerd) = node_with_containerd()?;
    let mut cri = containerd.cri()?;
    let peer = PodSpec::new("default", "peer");
    let (_, peer_app) = run_pod(&mut cri, &containerd, &peer, &["sleep", "1000000"])?;
    let mut pod = PodSpec::new("default", "web");
    let (old_sandbox, _) = run_pod(&mut cri, &containerd, &pod, &["sleep", "1000000"])?;
    pod.attempt = 1;
    let (new_sandbox, new_app) = run_pod(&mut cri, &containerd, &pod, &["sleep", "1000000"])?;
    let new_ip = ipv4(&cri.sandbox_ips(&new_sandbox)?)?;
    ping_from(&mut cri, &peer_app, new_ip)?;

    cri.stop_pod_sandbox(&old_sandbox)?;
    cri.remove_pod_sandbox(&old_sandbox)?;
    ping_from(&mut cri, &peer_app, new_ip).context("the new sandbox after the old one's DEL")?;
    ping_from(&mut cri, &new_app, NODE_IP4.parse()?)?;

    containerd.remove_all_sandboxes()?;
    node.assert_no_pod_state()
}

/// Why the conflist's `cniVersion` defaults to 1.0.0 (issue 13 part 1): containerd 1.6 vendors
/// libcni 1.1, which cannot parse a 1.1.0 result, so with `cniVersion: 1.1.0` every sandbox
/// fails after the agent wired it.
#[test]
fn containerd_cannot_use_a_1_1_0_conflist() -> Result<()> {
    let cni = CniDirs::new()?;
    let mut options = NodeOptions::new(&[POD_CIDR]);
    options.extra_config = format!("{}cniVersion: 1.1.0\n", cni.agent_config(&["portmap"]));
    let node = Node::start(options)?;
    node.install_cni(&["--chained-plugins-from", "/usr/lib/cni"])?;
    let conflist = std::fs::read_to_string(cni.conf.join("10-weft.conflist"))?;
    ensure!(conflist.contains("\"1.1.0\""), "{conflist}");
    let containerd = Containerd::start(node.netns(), &cni.conf, &cni.bin)?;
    let err = containerd
        .cri()?
        .run_pod_sandbox(&PodSpec::new("default", "old-conflist"))
        .err()
        .ok_or_else(|| anyhow!("a 1.1.0 conflist worked with containerd"))?;
    ensure!(
        err.to_string()
            .contains("unsupported CNI result version \"1.1.0\""),
        "{err:#}"
    );
    Ok(())
}
