//! A one-node Weft datapath on real OVS for the pipeline tests: bridge `br-int` (netdev), the
//! gateway internal port `weft-gw0` (ofport 32769) with its MAC and gateway IPs in the OVS
//! namespace, and "pods" as network namespaces wired by veth pairs, with the base and pod flows
//! installed through the OpenFlow client. Every namespace made here is deleted on drop, even
//! when a test panics (the pods' host-side veths die with the OVS namespace).

#![allow(dead_code)]

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ovs_flows::flow::{Flow, MacAddr};
use ovs_flows::ofp::{Client, ClientConfig, Endpoint};
use ovs_flows::pipeline::{add_all, base_flows, pod_flows, ports, LocalPod, NodeConfig};
use weft_e2e::{cmd, netns, OvsInstance};

/// The bridge every test uses.
pub const BRIDGE: &str = "br-int";
/// The gateway internal port.
pub const GATEWAY: &str = "weft-gw0";
/// Gateway IPv4 address (first address of the IPv4 pod CIDR).
pub const GW4: &str = "10.244.1.1";
/// Gateway IPv6 address (first address of the IPv6 pod CIDR).
pub const GW6: &str = "fd00:10:244:1::1";
/// The gateway internal port's MAC.
pub const GW_MAC: MacAddr = MacAddr::new(0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01);

/// The node configuration of every test (dual-stack, round 7).
pub fn node_config() -> NodeConfig {
    NodeConfig {
        round: 7,
        gateway_mac: GW_MAC,
        gateway_ips: vec![GW4.parse().unwrap(), GW6.parse().unwrap()],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ],
        node_ips: vec!["192.168.50.10".parse().unwrap()],
    }
}

/// Pod number `i` (1-based): ofport `i`, MAC `0a:58:0a:f4:01:(10+i)`, IPs `.(10+i)`.
pub fn pod(i: u8) -> LocalPod {
    LocalPod {
        namespace: "default".into(),
        name: format!("pod{i}"),
        ofport: u32::from(i),
        mac: MacAddr::new(0x0a, 0x58, 0x0a, 0xf4, 0x01, 10 + i),
        ips: vec![pod_ip4(i).parse().unwrap(), pod_ip6(i).parse().unwrap()],
    }
}

/// Pod `i`'s IPv4 address.
pub fn pod_ip4(i: u8) -> String {
    format!("10.244.1.{}", 10 + i)
}

/// Pod `i`'s IPv6 address.
pub fn pod_ip6(i: u8) -> String {
    format!("fd00:10:244:1::{}", 10 + i)
}

/// A running node: OVS, the gateway, pods, and the OpenFlow client that installed the flows.
pub struct Node {
    /// Pod namespaces (deleted on drop).
    pub pods: Vec<PodNs>,
    /// Configuration the flows were computed from.
    pub cfg: NodeConfig,
    /// OpenFlow client on br-int.
    pub client: Client,
    /// The private OVS (dropped last: namespaces first).
    pub ovs: OvsInstance,
}

/// One pod's network namespace; deleted on drop.
pub struct PodNs {
    /// Namespace name.
    pub netns: String,
    /// Host-side veth name (in the OVS namespace).
    pub host_veth: String,
    /// The pod as the pipeline sees it.
    pub pod: LocalPod,
}

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = netns::delete(&self.netns);
    }
}

impl Node {
    /// Starts OVS with br-int and the gateway, wires `n_pods` pods and installs the flows (the
    /// base flows in one bundle, then each pod's flows in one bundle).
    pub async fn start(n_pods: u8) -> Result<Node> {
        let ovs = OvsInstance::start()?;
        ovs.add_bridge(BRIDGE)?;
        let cfg = node_config();
        add_gateway(&ovs)?;
        let mut pods = Vec::new();
        for i in 1..=n_pods {
            pods.push(add_pod(&ovs, pod(i))?);
        }
        let client = Client::connect(
            Endpoint::Unix(ovs.mgmt_socket(BRIDGE)),
            ClientConfig {
                request_timeout: Duration::from_secs(20),
                ..ClientConfig::default()
            },
        )
        .await?;
        client.bundle(&add_all(base_flows(&cfg))).await?;
        for p in &pods {
            client.bundle(&add_all(pod_flows(&cfg, &p.pod))).await?;
        }
        let node = Node {
            pods,
            cfg,
            client,
            ovs,
        };
        for p in &node.pods {
            node.wait_dad(&p.netns)?;
        }
        Ok(node)
    }

    /// Namespace of pod `i` (1-based).
    pub fn ns(&self, i: u8) -> &str {
        &self.pods[usize::from(i) - 1].netns
    }

    /// Every flow the node should have, as `ovs-ofctl` prints them, sorted.
    pub fn expected_flows(&self) -> Vec<String> {
        let mut flows: Vec<Flow> = base_flows(&self.cfg);
        for p in &self.pods {
            flows.extend(pod_flows(&self.cfg, &p.pod));
        }
        let mut text: Vec<String> = flows.iter().map(ToString::to_string).collect();
        text.sort();
        text
    }

    /// Waits until no IPv6 address in `ns` is tentative (duplicate address detection passed
    /// through the pipeline) and fails if one failed DAD.
    pub fn wait_dad(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = cmd::run("ip", &["-n", ns, "-6", "addr", "show", "dev", "eth0"])?;
            if out.contains("dadfailed") {
                bail!("duplicate address detection failed in {ns}: {out}");
            }
            if !out.contains("tentative") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("addresses in {ns} still tentative: {out}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn add_gateway(ovs: &OvsInstance) -> Result<()> {
    ovs.vsctl(&[
        "add-port",
        BRIDGE,
        GATEWAY,
        "--",
        "set",
        "Interface",
        GATEWAY,
        "type=internal",
        &format!("ofport_request={}", ports::GATEWAY),
    ])?;
    let ns = ovs.netns();
    let mac = GW_MAC.to_string();
    ip(&["-n", ns, "link", "set", GATEWAY, "address", &mac])?;
    ip(&["-n", ns, "link", "set", GATEWAY, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{GW4}/24"),
        "dev",
        GATEWAY,
    ])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{GW6}/64"),
        "dev",
        GATEWAY,
        "nodad",
    ])?;
    assert_ofport(ovs, GATEWAY, ports::GATEWAY)
}

/// Creates the pod's namespace, a veth pair (`eth0` inside, `wvN` in the OVS namespace), the
/// pod's MAC, addresses and default routes, turns TX checksum offload off (netdev datapath) and
/// makes the host end inert for the host stack (no ARP, no IPv6) and attaches it to br-int
/// with the pod's ofport.
pub fn add_pod(ovs: &OvsInstance, pod: LocalPod) -> Result<PodNs> {
    let netns_name = format!("{}-p{}", ovs.name(), pod.ofport);
    netns::create(&netns_name)?;
    let guard = PodNs {
        netns: netns_name.clone(),
        host_veth: format!("wv{}", pod.ofport),
        pod,
    };
    let (pns, ons, veth) = (&guard.netns, ovs.netns(), &guard.host_veth);
    ip(&[
        "-n", ons, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pns,
    ])?;
    ip(&[
        "-n",
        ons,
        "link",
        "set",
        veth,
        "address",
        &host_veth_mac(guard.pod.ofport, 0),
    ])?;
    // With the netdev datapath the host stack still sees every frame on the host-side veth: it
    // must never answer ARP or speak IPv6 there, or pods learn the host veth's MAC.
    ip(&["-n", ons, "link", "set", veth, "arp", "off"])?;
    netns::exec(
        ons,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{veth}.disable_ipv6=1"),
        ],
    )?;
    ip(&["-n", ons, "link", "set", veth, "up"])?;
    ip(&[
        "-n",
        pns,
        "link",
        "set",
        "eth0",
        "address",
        &guard.pod.mac.to_string(),
    ])?;
    ip(&["-n", pns, "link", "set", "eth0", "up"])?;
    for addr in &guard.pod.ips {
        let prefix = if addr.is_ipv4() { 24 } else { 64 };
        ip(&[
            "-n",
            pns,
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            "eth0",
        ])?;
    }
    ip(&["-n", pns, "route", "add", "default", "via", GW4])?;
    ip(&["-n", pns, "-6", "route", "add", "default", "via", GW6])?;
    netns::exec(pns, &["ethtool", "-K", "eth0", "tx", "off"])?;
    ovs.vsctl(&[
        "add-port",
        BRIDGE,
        veth,
        "--",
        "set",
        "Interface",
        veth,
        &format!("ofport_request={}", guard.pod.ofport),
    ])?;
    assert_ofport(ovs, veth, guard.pod.ofport)?;
    Ok(guard)
}

/// A MAC for pod `ofport`'s host-side veth (generation `gen`), never used by the pipeline.
pub fn host_veth_mac(ofport: u32, gen: u8) -> String {
    format!("0a:58:ee:{gen:02x}:00:{:02x}", ofport as u8)
}

fn assert_ofport(ovs: &OvsInstance, iface: &str, want: u32) -> Result<()> {
    let got = ovs.vsctl(&["get", "Interface", iface, "ofport"])?;
    if got.trim() != want.to_string() {
        bail!(
            "interface {iface} got ofport {} instead of {want}",
            got.trim()
        );
    }
    Ok(())
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    cmd::run("ip", args)
}

/// Result of a ping run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
}

impl PingStats {
    /// Lost packets.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }
}

/// `ping -c count -i interval -W 1 [-I src] dst` inside `ns`; never fails on loss, only when
/// ping cannot run or its summary is missing.
pub fn ping(
    ns: &str,
    dst: &str,
    src: Option<&str>,
    count: u32,
    interval: &str,
) -> Result<PingStats> {
    let out = ping_command(ns, dst, src, count, interval)
        .output()
        .context("cannot run ping")?;
    parse_ping(&String::from_utf8_lossy(&out.stdout))
}

/// The ping command line (for background runs).
pub fn ping_command(ns: &str, dst: &str, src: Option<&str>, count: u32, interval: &str) -> Command {
    let mut c = Command::new("ip");
    let count = count.to_string();
    c.args([
        "netns", "exec", ns, "ping", "-n", "-q", "-c", &count, "-i", interval, "-W", "1",
    ]);
    if let Some(src) = src {
        c.args(["-I", src]);
    }
    c.arg(dst);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for a background ping and parses its summary.
pub fn finish_ping(child: Child) -> Result<PingStats> {
    let out = child.wait_with_output()?;
    parse_ping(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ping(out: &str) -> Result<PingStats> {
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in: {out}"))?;
    let num = |word: &str| -> Result<u32> {
        let part = line
            .split(',')
            .find(|p| p.contains(word))
            .with_context(|| format!("no `{word}` in: {line}"))?;
        Ok(part.trim().split(' ').next().unwrap_or("").parse()?)
    };
    Ok(PingStats {
        sent: num("transmitted")?,
        received: num("received")?,
    })
}

/// The link-layer address `ns` has for `addr` (`ip neigh`), if any.
pub fn neighbor_mac(ns: &str, addr: &IpAddr) -> Result<Option<String>> {
    let out = ip(&["-n", ns, "neigh", "show", &addr.to_string()])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string))
}

/// Packets counted by the table-miss (priority 0) flow of `table`.
pub fn miss_packets(ovs: &OvsInstance, table: u8) -> Result<u64> {
    let out = ovs.ofctl(&["dump-flows", BRIDGE, &format!("table={table}")])?;
    let line = out
        .lines()
        .find(|l| l.contains(" priority=0 ") || l.contains(" priority=0,"))
        .with_context(|| format!("no miss flow in table {table}: {out}"))?;
    let n = line
        .split([',', ' '])
        .find_map(|w| w.trim().strip_prefix("n_packets="))
        .with_context(|| format!("no n_packets in: {line}"))?;
    Ok(n.parse()?)
}

/// Every flow of `table` as (`ovs-ofctl --no-stats` text, n_packets), from one dump.
pub fn table_packets(ovs: &OvsInstance, table: u8) -> Result<Vec<(String, u64)>> {
    let out = ovs.ofctl(&["dump-flows", BRIDGE, &format!("table={table}")])?;
    let mut flows = Vec::new();
    for line in out.lines().filter(|l| l.contains("actions=")) {
        let mut n_packets = None;
        let mut text = Vec::new();
        for part in line.trim().split(", ") {
            if let Some(n) = part.strip_prefix("n_packets=") {
                n_packets = Some(n.parse::<u64>()?);
            } else if !["duration=", "n_bytes=", "idle_age=", "hard_age="]
                .iter()
                .any(|p| part.starts_with(p))
            {
                text.push(part);
            }
        }
        let n = n_packets.with_context(|| format!("no n_packets in: {line}"))?;
        flows.push((text.join(", "), n));
    }
    Ok(flows)
}

/// A per-interface IPv6 counter of `dev` in `ns` (`/proc/net/dev_snmp6/DEV`, e.g.
/// `Icmp6InNeighborSolicits`).
pub fn snmp6(ns: &str, dev: &str, counter: &str) -> Result<u64> {
    let out = netns::exec(ns, &["cat", &format!("/proc/net/dev_snmp6/{dev}")])?;
    let value = out
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(counter)).then(|| words.next())?
        })
        .with_context(|| format!("no {counter} for {dev} in {ns}"))?;
    Ok(value.parse()?)
}
