//! A multi-node Weft cluster for tests and the lab, on the shared topology of the design brief:
//!
//! - an "underlay" network namespace with a Linux bridge (`br0`, `192.168.60.1/24`) acting as
//!   the switch, and the ONE test API server of the cluster listening on `192.168.60.1` inside it;
//! - per node, an [`OvsInstance`] (its namespace is the node's: private ovsdb-server and
//!   ovs-vswitchd, the test datapath) with a veth `uplink0` into the underlay bridge, node IP
//!   `192.168.60.(10+i)/24`, segmentation and checksum offloads off on both ends (so MTU
//!   violations are real drops, not silently segmented), a Node object with podCIDR
//!   `10.244.i.0/24` and the InternalIP, and the real `weft-agent`;
//! - pods are namespaces wired by the real `weft` plugin, as a container runtime does.
//!
//! Everything is torn down on drop (agents by pid, then OVS, the API server, the underlay),
//! also when a test panics. Names embed the test process id and a counter.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, ApiServerOptions};
use crate::node::AgentProcess;
use crate::node::{run_plugin, Binaries, PluginCall, PluginOutput, Pod, Runtime};
use crate::ovs::{OvsInstance, OvsOptions};
use crate::{cmd, netns, Datapath};

/// Bridge, gateway, uplink (the node's interface into the underlay) and tunnel names: the same
/// on every node of a cluster as on a single harness node.
pub use crate::node::{BRIDGE, GATEWAY, TUNNEL, UPLINK};
/// The underlay bridge's address (and the API server's).
pub const UNDERLAY_GW: &str = "192.168.60.1";
/// The underlay bridge's IPv6 address ([`ClusterOptions::underlay_ipv6`]).
pub const UNDERLAY_GW6: &str = "fd00:60::1";
/// The router's address on the underlay ([`Cluster::add_routed_node`]).
pub const ROUTER_IP: &str = "192.168.60.254";
/// The second underlay subnet, behind the router ([`Cluster::add_routed_node`]); the router is
/// its `.1`.
pub const ROUTED_SUBNET: &str = "192.168.61.0/24";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static POD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// `encap` or `noEncap`.
    pub mode: String,
    /// `geneve`, `vxlan` or `gre`.
    pub tunnel: String,
    /// Extra agent config lines (YAML) for every node.
    pub extra_config: String,
    /// IPv6 underlay: every node also gets `fd00:60::(10+i)/64` on its uplink and that address
    /// is its only InternalIP, so the transport (tunnel endpoints) is IPv6. The IPv4 node
    /// address stays (the agents reach the API server on [`UNDERLAY_GW`]); pods stay IPv4.
    pub underlay_ipv6: bool,
    /// Dual-stack pods: every node's Node object also gets the IPv6 podCIDR
    /// `fd00:10:244:i::/64` (after the IPv4 one), so pods get an address of each family
    /// ([`ClusterNode::add_pod_dual`]).
    pub dual_stack_pods: bool,
}

impl ClusterOptions {
    /// `nodes` nodes in encap mode with `tunnel`.
    pub fn encap(nodes: usize, tunnel: &str) -> Self {
        ClusterOptions {
            nodes,
            mode: "encap".into(),
            tunnel: tunnel.into(),
            extra_config: String::new(),
            underlay_ipv6: false,
            dual_stack_pods: false,
        }
    }
}

/// The underlay namespace (deleted on drop).
struct Underlay {
    netns: String,
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = netns::delete(&self.netns);
    }
}

/// One node of the cluster. Fields drop in order: agent, then OVS.
pub struct ClusterNode {
    agent: Option<AgentProcess>,
    /// The node's OVS; its namespace is the node's.
    pub ovs: OvsInstance,
    /// Index (1-based).
    pub index: usize,
    /// Node name.
    pub name: String,
    /// Node IP on the underlay (its InternalIP: the IPv6 one with an IPv6 underlay).
    pub ip: IpAddr,
    /// The node's pod CIDR.
    pub pod_cidr: String,
    /// The node's IPv6 pod CIDR ([`ClusterOptions::dual_stack_pods`]).
    pub pod_cidr6: Option<String>,
    /// Agent config file.
    pub config: PathBuf,
    /// The agent's CNI socket.
    pub cni_socket: PathBuf,
    /// The agent's log.
    pub log: PathBuf,
    bins: Binaries,
}

/// A cluster. Fields drop in order: nodes (agents, OVS), API server, underlay.
pub struct Cluster {
    /// The nodes, in index order (index i at position i-1 while none is removed).
    pub nodes: Vec<ClusterNode>,
    /// The router namespace of [`Cluster::add_routed_node`] (holds the second segment's bridge).
    router: Option<Underlay>,
    /// The cluster's one API server (inside the underlay namespace).
    pub api: ApiServer,
    underlay: Underlay,
    options: ClusterOptions,
    bins: Binaries,
    kubeconfig_dir: tempfile::TempDir,
    /// Indexes are never reused, so a removed node's CIDR and IP stay unused.
    next_index: usize,
}

/// Every uplink attach step, in order, as the agent journals it and as `WEFT_TEST_CRASH_AT`
/// names it.
pub const UPLINK_ATTACH_STEPS: [&str; 7] = [
    "recorded",
    "flows-installed",
    "nic-renamed",
    "uplink-port-added",
    "internal-port-added",
    "addresses-moved",
    "routes-moved",
];

impl Cluster {
    /// Every node's agent log, separated by `---` lines (context for a failed check).
    pub fn agent_logs(&self) -> String {
        self.nodes
            .iter()
            .map(ClusterNode::agent_log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Starts the underlay, the API server and `options.nodes` nodes, and waits until every
    /// agent is ready.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        let bins = Binaries::locate()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let underlay = Underlay {
            netns: format!("wu-{}-{n}", std::process::id()),
        };
        netns::create(&underlay.netns)?;
        let u = underlay.netns.as_str();
        cmd::run("ip", &["-n", u, "link", "add", "br0", "type", "bridge"])?;
        cmd::run(
            "ip",
            &[
                "-n",
                u,
                "addr",
                "add",
                &format!("{UNDERLAY_GW}/24"),
                "dev",
                "br0",
            ],
        )?;
        cmd::run("ip", &["-n", u, "link", "set", "br0", "up"])?;
        if options.underlay_ipv6 {
            cmd::run(
                "ip",
                &[
                    "-n",
                    u,
                    "addr",
                    "add",
                    &format!("{UNDERLAY_GW6}/64"),
                    "dev",
                    "br0",
                    "nodad",
                ],
            )?;
        }
        let listen: SocketAddr = format!("{UNDERLAY_GW}:0").parse()?;
        let api = ApiServer::start_with(ApiServerOptions {
            netns: Some(u.to_string()),
            listen,
            ..ApiServerOptions::default()
        })?;
        let kubeconfig_dir = tempfile::tempdir()?;
        // The agents' identity: the DaemonSet's ServiceAccount, authorized by weft.yml's RBAC.
        let (sa_ns, sa) = crate::apiserver::rbac::weft_agent_service_account();
        api.write_service_account_kubeconfig(
            &kubeconfig_dir.path().join("kubeconfig"),
            &sa_ns,
            &sa,
        )?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            router: None,
            api,
            underlay,
            options: options.clone(),
            bins,
            kubeconfig_dir,
            next_index: 1,
        };
        for _ in 0..options.nodes {
            cluster.add_node_no_wait()?;
        }
        for node in &mut cluster.nodes {
            node.wait_ready(Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// The underlay namespace.
    pub fn underlay(&self) -> &str {
        &self.underlay.netns
    }

    /// Adds one more node (Node object, OVS, agent) and waits until its agent is ready.
    pub fn add_node(&mut self) -> Result<&mut ClusterNode> {
        self.add_node_no_wait()?;
        let node = self
            .nodes
            .last_mut()
            .ok_or_else(|| anyhow!("no node added"))?;
        node.wait_ready(Duration::from_secs(60))?;
        Ok(node)
    }

    /// Adds a node on a second underlay subnet ([`ROUTED_SUBNET`]) behind a router namespace
    /// (IPv4 forwarding, created with the first such node): the router sits on the underlay
    /// at [`ROUTER_IP`] and holds the second segment's bridge `br1` at `192.168.61.1`. The new
    /// node's only route off its segment is its default route via the router; the underlay and
    /// the nodes already added route the second subnet via the router, and the router routes
    /// every node's pod CIDR via that node's IP (the underlay routing of a noEncap cluster
    /// across subnets). IPv4 underlay only; add the on-segment nodes first.
    pub fn add_routed_node(&mut self) -> Result<&mut ClusterNode> {
        if self.options.underlay_ipv6 {
            bail!("routed nodes need an IPv4 underlay");
        }
        if self.router.is_none() {
            self.start_router()?;
        }
        self.add_node_on(true)?;
        let router = self.router_netns()?;
        for node in &self.nodes {
            let via = node.ip.to_string();
            cmd::run(
                "ip",
                &[
                    "-n",
                    &router,
                    "route",
                    "replace",
                    &node.pod_cidr,
                    "via",
                    &via,
                ],
            )?;
        }
        let node = self
            .nodes
            .last_mut()
            .ok_or_else(|| anyhow!("no node added"))?;
        node.wait_ready(Duration::from_secs(60))?;
        Ok(node)
    }

    /// The router namespace ([`Cluster::add_routed_node`]).
    pub fn router_netns(&self) -> Result<String> {
        self.router
            .as_ref()
            .map(|r| r.netns.clone())
            .ok_or_else(|| anyhow!("no router: no routed node was added"))
    }

    fn start_router(&mut self) -> Result<()> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let router = Underlay {
            netns: format!("wr-{}-{n}", std::process::id()),
        };
        netns::create(&router.netns)?;
        let (r, u) = (router.netns.clone(), self.underlay.netns.clone());
        self.router = Some(router);
        let port = format!("r{n}");
        cmd::run(
            "ip",
            &[
                "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", "up0", "netns", &r,
            ],
        )?;
        cmd::run(
            "ip",
            &["-n", &u, "link", "set", &port, "master", "br0", "up"],
        )?;
        let up = format!("{ROUTER_IP}/24");
        cmd::run("ip", &["-n", &r, "addr", "add", &up, "dev", "up0"])?;
        cmd::run("ip", &["-n", &r, "link", "set", "up0", "up"])?;
        cmd::run("ip", &["-n", &r, "link", "add", "br1", "type", "bridge"])?;
        cmd::run(
            "ip",
            &["-n", &r, "addr", "add", "192.168.61.1/24", "dev", "br1"],
        )?;
        cmd::run("ip", &["-n", &r, "link", "set", "br1", "up"])?;
        netns::exec(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for (netns_name, dev) in [(u.as_str(), port.as_str()), (r.as_str(), "up0")] {
            netns::exec(
                netns_name,
                &[
                    "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                ],
            )?;
        }
        cmd::run(
            "ip",
            &["-n", &u, "route", "add", ROUTED_SUBNET, "via", ROUTER_IP],
        )?;
        for node in &self.nodes {
            cmd::run(
                "ip",
                &[
                    "-n",
                    node.netns(),
                    "route",
                    "add",
                    ROUTED_SUBNET,
                    "via",
                    ROUTER_IP,
                    "dev",
                    UPLINK,
                ],
            )?;
        }
        Ok(())
    }

    fn add_node_no_wait(&mut self) -> Result<()> {
        self.add_node_on(false)
    }

    /// Adds a node on the underlay, or on the routed segment behind the router.
    fn add_node_on(&mut self, routed: bool) -> Result<()> {
        let index = self.next_index;
        self.next_index += 1;
        if index > 200 {
            bail!("too many nodes");
        }
        let ovs = OvsInstance::start_with(OvsOptions {
            flow_restore_wait: true,
            ..OvsOptions::default()
        })?;
        let ns = ovs.netns().to_string();
        let (u, bridge) = match (&self.router, routed) {
            (Some(router), true) => (router.netns.clone(), "br1"),
            _ => (self.underlay.netns.clone(), "br0"),
        };
        let port = format!("n{index}");
        cmd::run(
            "ip",
            &[
                "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", UPLINK, "netns",
                &ns,
            ],
        )?;
        cmd::run(
            "ip",
            &["-n", &u, "link", "set", &port, "master", bridge, "up"],
        )?;
        for (netns_name, dev) in [(u.as_str(), port.as_str()), (ns.as_str(), UPLINK)] {
            netns::exec(
                netns_name,
                &[
                    "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                ],
            )?;
        }
        let subnet = if routed { 61 } else { 60 };
        let ip: IpAddr = format!("192.168.{subnet}.{}", 10 + index).parse()?;
        cmd::run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", UPLINK],
        )?;
        cmd::run("ip", &["-n", &ns, "link", "set", UPLINK, "up"])?;
        if routed {
            cmd::run(
                "ip",
                &["-n", &ns, "route", "add", "default", "via", "192.168.61.1"],
            )?;
        }
        let ip = if self.options.underlay_ipv6 {
            let ip6: IpAddr = format!("fd00:60::{}", 10 + index).parse()?;
            cmd::run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{ip6}/64"),
                    "dev",
                    UPLINK,
                    "nodad",
                ],
            )?;
            ip6
        } else {
            ip
        };

        let name = format!("node-{index}");
        let pod_cidr = format!("10.244.{index}.0/24");
        let pod_cidr6 = self
            .options
            .dual_stack_pods
            .then(|| format!("fd00:10:244:{index:x}::/64"));
        let pod_cidrs: Vec<&String> = std::iter::once(&pod_cidr).chain(&pod_cidr6).collect();
        self.api
            .create_node(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"podCIDR": pod_cidr, "podCIDRs": pod_cidrs},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": ip.to_string()},
                    {"type": "Hostname", "address": name}
                ]}
            }))
            .map_err(|e| anyhow!("creating node {name}: {e:?}"))?;

        let dir = ovs.rundir().join("agent");
        std::fs::create_dir_all(&dir)?;
        let cni_socket = dir.join("run").join("cni.sock");
        let config = dir.join("weft-agent.conf");
        std::fs::write(
            &config,
            format!(
                "nodeName: {name}\nkubeconfig: {}\novsBridge: {BRIDGE}\novsDatapathType: {}\n\
                 ovsRunDir: {}\nhostGateway: {GATEWAY}\ncniSocket: {}\napiSocket: {}\n\
                 dataDir: {}\ntrafficEncapMode: {}\ntunnelType: {}\n{}",
                self.kubeconfig_dir.path().join("kubeconfig").display(),
                Datapath::current(),
                ovs.rundir().display(),
                cni_socket.display(),
                dir.join("run").join("agent.sock").display(),
                dir.join("data").display(),
                self.options.mode,
                self.options.tunnel,
                self.options.extra_config
            ),
        )?;
        let mut node = ClusterNode {
            agent: None,
            ovs,
            index,
            name,
            ip,
            pod_cidr,
            pod_cidr6,
            config,
            cni_socket,
            log: dir.join("weft-agent.log"),
            bins: self.bins.clone(),
        };
        node.start_agent()?;
        self.nodes.push(node);
        Ok(())
    }

    /// The node with `index`.
    pub fn node(&self, index: usize) -> Result<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .ok_or_else(|| anyhow!("no node {index}"))
    }

    /// Deletes node `index`'s Node object from the API server and tears the node down.
    pub fn remove_node(&mut self, index: usize) -> Result<()> {
        let pos = self
            .nodes
            .iter()
            .position(|n| n.index == index)
            .ok_or_else(|| anyhow!("no node {index}"))?;
        let node = self.nodes.remove(pos);
        self.api
            .delete_node(&node.name)
            .map_err(|e| anyhow!("deleting node {}: {e:?}", node.name))?;
        drop(node);
        Ok(())
    }
}

impl ClusterNode {
    /// The node's network namespace.
    pub fn netns(&self) -> &str {
        self.ovs.netns()
    }

    /// Starts the agent process inside the node's namespace (log appended to [`Self::log`]).
    pub fn start_agent(&mut self) -> Result<()> {
        self.start_agent_with(&[], &[])
    }

    /// Stops the agent (SIGTERM, SIGKILL after 5 s).
    pub fn stop_agent(&mut self) {
        self.agent = None;
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until CNI STATUS succeeds; fails early if the agent exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.plugin("STATUS", &PluginCall::default())?;
            if out.success {
                return Ok(());
            }
            let exited = self.agent.as_mut().is_none_or(|a| !a.running());
            if exited || Instant::now() > deadline {
                bail!(
                    "weft-agent of {} not ready (exited: {exited}); log:\n{}",
                    self.name,
                    self.agent_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the plugin for `command`.
    pub fn plugin(&self, command: &str, call: &PluginCall) -> Result<PluginOutput> {
        let config = call.config.clone().unwrap_or_else(|| self.netconf());
        run_plugin(&self.bins.plugin, command, call, &config.to_string())
    }

    /// The network config the runtime passes to the plugin on stdin.
    pub fn netconf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "weft",
            "type": "weft",
            "agentSocket": self.cni_socket,
            "agentTimeoutSeconds": 30,
        })
    }

    /// A handle that runs the plugin against this node from any thread, also while the node
    /// itself is borrowed mutably (agent restarts).
    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.bins.plugin.clone(), self.netconf())
    }

    /// Creates pod `name` on this node through the plugin; returns it and its IPv4 address.
    pub fn add_pod(&self, name: &str) -> Result<(Pod, IpAddr)> {
        let (pod, ips) = self.add_pod_ips(name)?;
        let ip = ips
            .into_iter()
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| anyhow!("ADD result of {name} has no IPv4 address"))?;
        Ok((pod, ip))
    }

    /// Creates pod `name` on a dual-stack node ([`ClusterOptions::dual_stack_pods`]); returns
    /// it, its IPv4 and its IPv6 address (from the CNI result).
    pub fn add_pod_dual(&self, name: &str) -> Result<(Pod, IpAddr, IpAddr)> {
        let (pod, ips) = self.add_pod_ips(name)?;
        match (
            ips.iter().copied().find(IpAddr::is_ipv4),
            ips.iter().copied().find(IpAddr::is_ipv6),
        ) {
            (Some(v4), Some(v6)) => Ok((pod, v4, v6)),
            _ => bail!("ADD result of {name} is not dual-stack: {ips:?}"),
        }
    }

    /// Creates pod `name` through the plugin; returns it and every address of its CNI result.
    fn add_pod_ips(&self, name: &str) -> Result<(Pod, Vec<IpAddr>)> {
        let n = POD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns_name = format!("{}-p{n}", self.netns());
        netns::create(&netns_name)?;
        let pod = Pod {
            netns: netns_name,
            name: name.to_string(),
            namespace: "default".to_string(),
            container_id: format!("{:016x}{n:08x}", std::process::id()),
            ifname: "eth0".to_string(),
        };
        let out = self.plugin("ADD", &pod.call())?;
        if !out.success {
            bail!("ADD of {name} on {} failed: {}", self.name, out.stdout);
        }
        let result: Value = out.json()?;
        let ips = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
            .collect();
        Ok((pod, ips))
    }

    /// Flows whose cookie category is `category` (Weft cookies: bits 40..48).
    pub fn flows_of_category(&self, category: u64) -> Result<Vec<String>> {
        Ok(self
            .ovs
            .dump_flows(BRIDGE)?
            .into_iter()
            .filter(|f| {
                f.strip_prefix("cookie=0x")
                    .and_then(|r| r.split(',').next())
                    .and_then(|c| u64::from_str_radix(c, 16).ok())
                    .is_some_and(|c| (c >> 40) & 0xff == category)
            })
            .collect())
    }

    /// The node's routes via its gateway (`ip route show dev weft-gw0`, lines with `via`).
    pub fn gateway_routes(&self) -> Result<Vec<String>> {
        let out = cmd::run("ip", &["-n", self.netns(), "route", "show", "dev", GATEWAY])?;
        Ok(out
            .lines()
            .filter(|l| l.contains(" via "))
            .map(|l| l.trim().to_string())
            .collect())
    }

    /// The kernel MTU of interface `ifname` in namespace `ns`.
    pub fn link_mtu(ns: &str, ifname: &str) -> Result<u32> {
        let out = cmd::run("ip", &["-n", ns, "-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "mtu" {
                return Ok(words.next().unwrap_or_default().parse()?);
            }
        }
        bail!("no mtu for {ifname} in {ns}: {out}")
    }

    /// An Interface column of OVSDB, as `ovs-vsctl get` prints it.
    pub fn interface_column(&self, iface: &str, column: &str) -> Result<String> {
        Ok(self
            .ovs
            .vsctl(&["get", "Interface", iface, column])?
            .trim()
            .to_string())
    }
}

/// The largest ICMP echo payload that fits a `pod_mtu` packet to `dst`: the MTU minus the IP
/// header (20 bytes IPv4, 40 IPv6) and the 8-byte ICMP header.
pub fn df_max_payload(pod_mtu: u32, dst: IpAddr) -> usize {
    let headers = if dst.is_ipv4() { 28 } else { 48 };
    pod_mtu.saturating_sub(headers) as usize
}

/// Checks the DF boundary from `ns` to `dst` for `pod_mtu`: a ping at [`df_max_payload`]
/// crosses, one byte more fails locally with "message too long" (never a silent loss).
pub fn check_df_boundary(ns: &str, dst: IpAddr, pod_mtu: u32) -> Result<()> {
    let max = df_max_payload(pod_mtu, dst);
    ping_df(ns, dst, max).map_err(|e| anyhow!("DF ping {ns} -> {dst} at {max}: {e}"))?;
    match ping_df(ns, dst, max + 1) {
        Ok(out) => bail!("DF ping {ns} -> {dst} at {} passed: {out}", max + 1),
        Err(e) if e.to_string().to_lowercase().contains("message too long") => Ok(()),
        Err(e) => bail!(
            "DF ping {ns} -> {dst} at {} must fail locally with 'message too long', got: {e}",
            max + 1
        ),
    }
}

/// `ping -M do -s SIZE -c 3` from namespace `ns`: Ok(output) if every echo was answered,
/// Err with ping's output otherwise.
pub fn ping_df(ns: &str, dst: IpAddr, size: usize) -> Result<String> {
    let size = size.to_string();
    let dst = dst.to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-M", "do", "-s", &size])
        .args(["-c", "3", "-i", "0.2", "-W", "2", &dst])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        bail!("{text}")
    }
}

impl ClusterNode {
    /// Starts the agent with extra flags and environment variables (e.g. `--restore-uplink`,
    /// the test-only crash hook `WEFT_TEST_CRASH_AT`).
    pub fn start_agent_with(&mut self, args: &[String], env: &[(&str, &str)]) -> Result<()> {
        if self.agent.is_some() {
            bail!("agent of {} already runs", self.name);
        }
        self.agent = Some(AgentProcess::spawn_with_env(
            self.ovs.netns(),
            &self.bins.agent,
            &self.config,
            args,
            env,
            &self.log,
        )?);
        Ok(())
    }

    /// Waits up to `timeout` for the agent to exit by itself and forgets it; its exit status
    /// (None if it still ran: then it is stopped).
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = self.agent.as_mut()?.wait_exit(timeout);
        self.agent = None;
        status
    }

    /// The agent's data directory (IPAM store, uplink journal).
    pub fn data_dir(&self) -> PathBuf {
        self.ovs.rundir().join("agent").join("data")
    }

    /// Points the node's `cniConfDir`/`cniBinDir` at `dirs` (with `chained` plugins) and runs
    /// the real `weft-agent install-cni` there with `args` (the running agent is not restarted:
    /// only `install-cni` reads these keys).
    pub fn install_cni(
        &self,
        dirs: &crate::node::CniDirs,
        chained: &[&str],
        args: &[&str],
    ) -> Result<String> {
        self.set_config("cniConfDir", &dirs.conf.display().to_string())?;
        self.set_config("cniBinDir", &dirs.bin.display().to_string())?;
        self.set_config("cniChainedPlugins", &format!("[{}]", chained.join(", ")))?;
        crate::node::install_cni(self.netns(), &self.bins, &self.config, args)
    }

    /// Replaces the config line `key: ...` (or appends it) in the agent config; takes effect
    /// on the next agent start.
    pub fn set_config(&self, key: &str, value: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        let prefix = format!("{key}:");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        lines.push(format!("{key}: {value}"));
        std::fs::write(&self.config, lines.join("\n") + "\n")?;
        Ok(())
    }
}

impl Cluster {
    /// Restarts every agent with `settings` (config `key: value` lines) applied: all agents are
    /// stopped first, so no two configurations run at once, then started, then awaited. Returns
    /// each node's log length before the restart (to read what the new run logged).
    pub fn restart_agents_with(&mut self, settings: &[(&str, &str)]) -> Result<Vec<usize>> {
        let mut offsets = Vec::new();
        for node in &mut self.nodes {
            node.stop_agent();
            offsets.push(node.agent_log().len());
        }
        for node in &mut self.nodes {
            for (key, value) in settings {
                node.set_config(key, value)?;
            }
            node.start_agent()?;
        }
        for node in &mut self.nodes {
            node.wait_ready(Duration::from_secs(60))?;
        }
        Ok(offsets)
    }
}

impl ClusterNode {
    /// Names of every interface in the node's namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = cmd::run("ip", &["-n", self.netns(), "-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }

    /// The uplink journal (`dataDir/uplink-journal.json`) as JSON, if there is one.
    pub fn uplink_journal(&self) -> Result<Option<Value>> {
        match std::fs::read_to_string(self.data_dir().join("uplink-journal.json")) {
            Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Polls `check` every 50 ms until it returns true; fails after `timeout`.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ping -q -c COUNT -i INTERVAL -W 1 DST` from namespace `ns`, run to completion (so no echo
/// is in flight when it ends); returns (transmitted, received).
pub fn ping_count(ns: &str, dst: IpAddr, count: u32, interval: &str) -> Result<(u64, u64)> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-q", "-c", &count.to_string()])
        .args(["-i", interval, "-W", "1", &dst.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_summary(&text).ok_or_else(|| anyhow!("no ping summary from {ns} to {dst}: {text}"))
}

/// Accepts one TCP connection on `server_ip` inside `server_ns`, made from `client_ns`, and
/// returns the source address the server saw (the connection's peer): the pod's address, or
/// the node's after SNAT.
pub fn tcp_source_seen(server_ns: &str, server_ip: IpAddr, client_ns: &str) -> Result<IpAddr> {
    let listener = netns::run_in(server_ns, move || {
        std::net::TcpListener::bind((server_ip, 0))
    })??;
    let addr = listener.local_addr()?;
    let client = netns::tcp_connect_in(client_ns, addr)
        .map_err(|e| anyhow!("tcp connect from netns {client_ns} to {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let peer = loop {
        match listener.accept() {
            Ok((_, peer)) => break peer,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("no connection on {addr}: {e}"),
        }
    };
    drop(client);
    Ok(peer.ip())
}

/// What pods leave on a node: compared before and after a fault or a churn run to prove that
/// nothing leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Host veths (`wf*`).
    pub veths: Vec<String>,
    /// Bridge ports other than the infrastructure ports.
    pub pod_ports: Vec<String>,
    /// IPAM allocations (addresses).
    pub ipam: Vec<String>,
    /// Number of flows with the pod cookie category (3).
    pub pod_flows: usize,
    /// Routes of the node's main table.
    pub routes: Vec<String>,
    /// Files under the agent's directory (relative paths), the logs excluded.
    pub files: Vec<String>,
}

impl ClusterNode {
    /// The pid of the running agent (`ip netns exec` execs it in place), if started.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(AgentProcess::pid)
    }

    /// Kills the agent with SIGKILL (a crash) and reaps it.
    pub fn kill_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.kill();
        }
    }

    /// The node's current [`Footprint`].
    pub fn footprint(&self) -> Result<Footprint> {
        let infra = [GATEWAY, TUNNEL, UPLINK, &format!("{UPLINK}~")].map(str::to_string);
        let pod_ports = self
            .ovs
            .vsctl(&["list-ports", BRIDGE])?
            .lines()
            .filter(|p| !infra.iter().any(|i| i == p))
            .map(str::to_string)
            .collect();
        let ipam = match std::fs::read_to_string(self.data_dir().join("ipam.json")) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)?;
                v["allocations"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let routes = cmd::run("ip", &["-n", self.netns(), "route", "show"])?
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        let mut files = Vec::new();
        let root = self.ovs.rundir().join("agent");
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_none_or(|e| e != "log") {
                    let rel = path.strip_prefix(&root).unwrap_or(&path);
                    files.push(rel.display().to_string());
                }
            }
        }
        files.sort();
        Ok(Footprint {
            veths: self
                .links()?
                .into_iter()
                .filter(|l| l.starts_with("wf"))
                .collect(),
            pod_ports,
            ipam,
            pod_flows: self.flows_of_category(3)?.len(),
            routes,
            files,
        })
    }

    /// The agent's resident set size (kB, `VmRSS` of `/proc/PID/status`) and open file
    /// descriptors (entries of `/proc/PID/fd`).
    pub fn agent_rss_and_fds(&self) -> Result<(u64, usize)> {
        let rss = self.agent_status("VmRSS")?;
        let pid = self
            .agent_pid()
            .ok_or_else(|| anyhow!("agent of {} not running", self.name))?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        Ok((rss, fds))
    }

    /// A numeric field of the agent's `/proc/PID/status`: `VmRSS`, `RssAnon`, ... (kB),
    /// `Threads`, ...
    pub fn agent_status(&self, field: &str) -> Result<u64> {
        let pid = self
            .agent_pid()
            .ok_or_else(|| anyhow!("agent of {} not running", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no {field} for pid {pid}"))
    }
}

/// A `ping -i 0.01` (100 pps) running in the background from a namespace until stopped, whose
/// per-echo replies give the loss window: the longest run of consecutive unanswered echoes.
pub struct LivePing {
    child: std::process::Child,
    /// Drains ping's output as it comes: a pipe read only at the end fills after about 8 s at
    /// 100 pps (64 KiB), and ping then blocks and stops sending.
    output: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    started_wall: std::time::SystemTime,
}

/// The outcome of a [`LivePing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingLoss {
    /// Echo requests sent.
    pub sent: u64,
    /// Echo replies received.
    pub received: u64,
    /// The longest run of consecutive lost echoes, as time (10 ms per echo).
    pub window: Duration,
    /// The longest time without an echo reply (the reply timestamps of `ping -D`, the start
    /// and the stop of the ping included). At a true 100 pps it is about `window` + 10 ms; on a
    /// loaded machine ping sends slower (its interval timer wakes late), so `window`
    /// understates the outage while this stays the time traffic was gone.
    pub silence: Duration,
}

impl LivePing {
    /// Starts pinging `dst` from namespace `ns` at 100 pps (`-O` reports every unanswered echo).
    pub fn start(ns: &str, dst: IpAddr) -> Result<LivePing> {
        let started_wall = std::time::SystemTime::now();
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-D", "-n", "-O", "-i", "0.01", "-W", "1",
            ])
            .arg(dst.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let output = child.stdout.take().map(|mut stdout| {
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
                out
            })
        });
        Ok(LivePing {
            child,
            output,
            started: Instant::now(),
            started_wall,
        })
    }

    /// Stops the ping (SIGINT, so it prints its summary) after the last echo had 1 s to come
    /// back, and measures the loss.
    pub fn stop(mut self) -> Result<PingLoss> {
        std::thread::sleep(Duration::from_millis(1100));
        let stopped_wall = std::time::SystemTime::now();
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.child.wait();
        let out = self
            .output
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let (sent, received) = parse_summary(&out)
            .ok_or_else(|| anyhow!("no ping summary after {:?}: {out}", self.started.elapsed()))?;
        // Sequence numbers answered; the window is the longest gap between answered ones (and
        // at the ends).
        let mut answered: Vec<u64> = out
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        answered.sort_unstable();
        answered.dedup();
        let mut longest = 0;
        let mut last = 0;
        for seq in answered.iter().copied().chain([sent + 1]) {
            longest = longest.max(seq.saturating_sub(last + 1));
            last = seq;
        }
        // Reply times (`[SECONDS.MICROS] 64 bytes from ...`), between the start and the stop.
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let mut times: Vec<f64> = out
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        times.push(unix(self.started_wall));
        times.push(unix(stopped_wall));
        times.sort_by(f64::total_cmp);
        let silence = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        Ok(PingLoss {
            sent,
            received,
            window: Duration::from_millis(10 * longest),
            silence: Duration::from_secs_f64(silence),
        })
    }
}

impl Drop for LivePing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (transmitted, received) of a ping summary.
fn parse_summary(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let before = |word: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some((before("packets")?, before("received")?))
}
