//! A node with a real NIC-like uplink for the uplink tests: a private OVS (netdev) in its own
//! network namespace N, a veth `eth0` in N whose peer `ul0` lives in a second test-made
//! namespace U (the "underlay"), the node's addresses and routes on `eth0`, and addresses
//! behind those routes in U. A port with `mtu_request` 1450 (an "old pod") sits on the bridge
//! so an uplink MTU derived from the ports would show (field report 2). Dropped: U deleted,
//! OVS stopped by pid, N deleted.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ipnet::IpNet;
use ovs_flows::pipeline::{uplink::uplink_flows, NodeConfig};
use weft_agent::netns::Netns;
use weft_agent::ovsdb::{Client, ClientConfig, Endpoint, Ovs};
use weft_agent::uplink::{self, Kernel, Target, UplinkSpec};
use weft_e2e::cmd;
use weft_e2e::ovs::OvsInstance;

/// The bridge.
pub const BRIDGE: &str = "br-up";
/// The NIC.
pub const NIC: &str = "eth0";
/// Its name once attached.
pub const RENAMED: &str = "eth0~";
/// Its MAC.
pub const MAC: &str = "52:54:00:aa:00:10";
/// The node's addresses.
pub const NODE4: &str = "192.168.77.10/24";
/// The node's IPv6 address.
pub const NODE6: &str = "fd00:77::10/64";
/// The underlay side of the veth.
pub const PEER4: &str = "192.168.77.1";
/// The underlay side, IPv6.
pub const PEER6: &str = "fd00:77::1";
/// Reached through a route via PEER4.
pub const ROUTED4: &str = "10.99.0.1";
/// Reached through a route via PEER6.
pub const ROUTED6: &str = "2001:db8:99::1";
/// The plan's uplink MTU.
pub const MTU: u32 = 1500;

/// Deletes a namespace on drop.
pub struct NsGuard(pub String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = weft_e2e::netns::delete(&self.0);
    }
}

/// The test node. Field order is drop order: the underlay, then OVS (and the node namespace).
pub struct Env {
    _underlay: NsGuard,
    /// The node's OVS.
    pub ovs: OvsInstance,
    /// The underlay namespace.
    pub underlay: String,
    /// OVSDB helpers.
    pub db: Ovs,
    /// OpenFlow client (installs the uplink flows).
    pub of: ovs_flows::ofp::Client,
    /// The node's kernel.
    pub kernel: Kernel,
    /// The attach spec.
    pub spec: UplinkSpec,
    _dir: tempfile::TempDir,
}

fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    cmd::run("ip", &full)
}

impl Env {
    /// Builds the node and its underlay.
    pub async fn start() -> Result<Env> {
        let ovs = OvsInstance::start()?;
        ovs.add_bridge(BRIDGE)?;
        let n = ovs.netns().to_string();
        let u = format!("{n}-u");
        weft_e2e::netns::create(&u)?;
        let guard = NsGuard(u.clone());
        ip(
            &n,
            &[
                "link", "add", NIC, "address", MAC, "type", "veth", "peer", "name", "ul0", "netns",
                &u,
            ],
        )?;
        ip(&n, &["addr", "add", NODE4, "dev", NIC])?;
        ip(&n, &["addr", "add", NODE6, "dev", NIC, "nodad"])?;
        ip(&n, &["link", "set", NIC, "up"])?;
        ip(&u, &["addr", "add", &format!("{PEER4}/24"), "dev", "ul0"])?;
        ip(
            &u,
            &["addr", "add", &format!("{PEER6}/64"), "dev", "ul0", "nodad"],
        )?;
        ip(&u, &["addr", "add", &format!("{ROUTED4}/32"), "dev", "lo"])?;
        ip(&u, &["addr", "add", &format!("{ROUTED6}/128"), "dev", "lo"])?;
        ip(&u, &["link", "set", "ul0", "up"])?;
        ip(
            &n,
            &[
                "route",
                "add",
                "10.99.0.0/16",
                "via",
                PEER4,
                "proto",
                "static",
            ],
        )?;
        ip(
            &n,
            &[
                "route",
                "add",
                "2001:db8:99::/48",
                "via",
                PEER6,
                "metric",
                "300",
            ],
        )?;
        // An "old pod" port with the encap MTU: the uplink must never inherit it.
        ovs.vsctl(&[
            "add-port",
            BRIDGE,
            "oldpod",
            "--",
            "set",
            "Interface",
            "oldpod",
            "type=internal",
            "mtu_request=1450",
        ])?;

        let client = Client::connect(ClientConfig::new(Endpoint::Unix(ovs.db_socket())))
            .await
            .context("ovsdb connect")?;
        let of = ovs_flows::ofp::Client::connect(
            ovs_flows::ofp::Endpoint::Unix(ovs.mgmt_socket(BRIDGE)),
            ovs_flows::ofp::ClientConfig::default(),
        )
        .await
        .context("openflow connect")?;
        let kernel = Kernel::open(Netns::open(weft_e2e::netns::path(&n))?).await?;
        let dir = tempfile::tempdir()?;
        let node = NodeConfig {
            round: 1,
            gateway_mac: ovs_flows::flow::MacAddr::new(0x0a, 0x58, 0, 0, 0, 1),
            gateway_ips: vec!["10.244.1.1".parse()?],
            pod_cidrs: vec!["10.244.1.0/24".parse()?],
            node_ips: vec!["192.168.77.10".parse()?],
        };
        let spec = UplinkSpec {
            nic: NIC.into(),
            bridge: BRIDGE.into(),
            mtu: MTU,
            journal: dir.path().join("data").join(uplink::journal::FILE_NAME),
            flows: uplink_flows(&node),
        };
        Ok(Env {
            _underlay: guard,
            ovs,
            underlay: u,
            db: Ovs::new(client),
            of,
            kernel,
            spec,
            _dir: dir,
        })
    }

    /// The node's namespace.
    pub fn node(&self) -> &str {
        self.ovs.netns()
    }

    /// Converges on `target`, optionally stopping at a crash point.
    pub async fn converge(
        &self,
        target: Target,
        crash: Option<uplink::CrashPoint>,
    ) -> Result<uplink::Outcome> {
        uplink::converge_until(&self.db, &self.of, &self.kernel, &self.spec, target, crash)
            .await
            .with_context(|| format!("converge {target:?} (crash {crash:?})"))
    }

    /// `ip -o addr show dev IF` lines of global addresses.
    pub fn addresses(&self, ifname: &str) -> Result<Vec<String>> {
        let out = ip(
            self.node(),
            &["-o", "addr", "show", "dev", ifname, "scope", "global"],
        )?;
        let mut nets: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                words.next().map(str::to_string)
            })
            .collect();
        nets.sort();
        Ok(nets)
    }

    /// Every global address of the node namespace with its device.
    pub fn all_addresses(&self) -> Result<Vec<String>> {
        let out = ip(self.node(), &["-o", "addr", "show", "scope", "global"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                Some(format!("{} {}", words.get(1)?, words.get(3)?))
            })
            .collect())
    }

    /// `ip -d link show IF`.
    pub fn link(&self, ifname: &str) -> Result<String> {
        ip(self.node(), &["-d", "link", "show", "dev", ifname])
    }

    /// Whether the interface exists.
    pub fn has_link(&self, ifname: &str) -> bool {
        ip(self.node(), &["link", "show", "dev", ifname]).is_ok()
    }

    /// The route to `dst` as `ip route show` prints it.
    pub fn route(&self, six: bool, dst: &str) -> Result<String> {
        let fam = if six { "-6" } else { "-4" };
        ip(self.node(), &[fam, "route", "show", dst]).map(|s| s.trim().to_string())
    }

    /// Pings `dst` from the node (retries: the first packets may wait on ARP/ND).
    pub fn ping(&self, dst: &str) -> Result<()> {
        let mut last = None;
        for _ in 0..4 {
            match weft_e2e::netns::exec(self.node(), &["ping", "-c", "1", "-W", "2", dst]) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let state = self.diagnostics();
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no ping")))
            .with_context(|| format!("ping {dst} from node; state:\n{state}"))
    }

    /// Links, neighbours and the datapath's ports of both sides, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (ns, args) in [
            (self.node(), &["-d", "link", "show"][..]),
            (self.node(), &["neigh", "show"][..]),
            (self.underlay.as_str(), &["-d", "link", "show"][..]),
            (self.underlay.as_str(), &["neigh", "show"][..]),
        ] {
            let text = ip(ns, args).unwrap_or_else(|e| format!("{e:#}"));
            out.push_str(&format!("$ ip -n {ns} {}\n{text}\n", args.join(" ")));
        }
        let dp = self
            .ovs
            .appctl_vswitchd(&["dpctl/show"])
            .unwrap_or_else(|e| format!("{e:#}"));
        out.push_str(&format!("$ ovs-appctl dpctl/show\n{dp}\n"));
        out
    }

    /// A column of an Interface row via ovs-vsctl.
    pub fn iface_col(&self, name: &str, column: &str) -> Result<String> {
        self.ovs
            .vsctl(&["get", "Interface", name, column])
            .map(|s| s.trim().to_string())
    }

    /// The bridge's ports, sorted.
    pub fn ports(&self) -> Result<Vec<String>> {
        let mut ports: Vec<String> = self
            .ovs
            .vsctl(&["list-ports", BRIDGE])?
            .lines()
            .map(str::to_string)
            .collect();
        ports.sort();
        Ok(ports)
    }

    /// The journal path.
    pub fn journal(&self) -> PathBuf {
        self.spec.journal.clone()
    }

    /// Asserts the attached end state exactly.
    pub fn assert_attached(&self) -> Result<()> {
        ensure!(
            self.ports()? == ["eth0", "eth0~", "oldpod"],
            "ports {:?}",
            self.ports()?
        );
        ensure!(self.iface_col(NIC, "ofport")? == "32771", "internal ofport");
        ensure!(
            self.iface_col(RENAMED, "ofport")? == "32770",
            "uplink ofport"
        );
        for port in [NIC, RENAMED] {
            ensure!(
                self.iface_col(port, "mtu_request")? == MTU.to_string(),
                "{port} mtu_request"
            );
            let mtu = self.iface_col(port, "mtu")?;
            ensure!(
                mtu == MTU.to_string(),
                "{port} mtu is {mtu}, not {MTU} (never the 1450 of the old pod)"
            );
        }
        let internal = self.link(NIC)?;
        ensure!(
            internal.contains(&format!("link/ether {MAC}")),
            "internal port MAC: {internal}"
        );
        ensure!(
            internal.contains(" tun ") || internal.contains("openvswitch"),
            "internal port kind: {internal}"
        );
        ensure!(internal.contains(&format!("mtu {MTU}")), "{internal}");
        let nic = self.link(RENAMED)?;
        ensure!(
            nic.contains("veth") && nic.contains("NOARP"),
            "renamed nic: {nic}"
        );
        ensure!(
            nic.contains(",UP") || nic.contains("<UP"),
            "renamed nic up: {nic}"
        );
        let mut want = vec![NODE4.to_string(), NODE6.to_string()];
        want.sort();
        ensure!(
            self.addresses(NIC)? == want,
            "internal addresses {:?}",
            self.addresses(NIC)?
        );
        ensure!(
            self.addresses(RENAMED)?.is_empty(),
            "nic addresses {:?}",
            self.addresses(RENAMED)?
        );
        let all = self.all_addresses()?;
        ensure!(all.len() == 2, "every global address exactly once: {all:?}");
        let r4 = self.route(false, "10.99.0.0/16")?;
        ensure!(
            r4.contains("via 192.168.77.1 dev eth0 proto static"),
            "route {r4:?}"
        );
        let r6 = self.route(true, "2001:db8:99::/48")?;
        ensure!(
            r6.contains("via fd00:77::1 dev eth0") && r6.contains("metric 300"),
            "route {r6:?}"
        );
        for dst in [PEER4, ROUTED4, PEER6, ROUTED6] {
            self.ping(dst)?;
        }
        let journal = uplink::journal::load(&self.journal())?.context("journal missing")?;
        ensure!(journal.attached(), "journal not attached: {journal:?}");
        Ok(())
    }

    /// Asserts the original state exactly (as before any attach).
    pub fn assert_detached(&self) -> Result<()> {
        ensure!(self.ports()? == ["oldpod"], "ports {:?}", self.ports()?);
        ensure!(!self.has_link(RENAMED), "renamed nic still there");
        let nic = self.link(NIC)?;
        ensure!(nic.contains("veth") && !nic.contains("NOARP"), "nic: {nic}");
        ensure!(nic.contains(&format!("link/ether {MAC}")), "{nic}");
        let mut want = vec![NODE4.to_string(), NODE6.to_string()];
        want.sort();
        ensure!(
            self.addresses(NIC)? == want,
            "addresses {:?}",
            self.addresses(NIC)?
        );
        ensure!(
            self.all_addresses()?.len() == 2,
            "{:?}",
            self.all_addresses()?
        );
        let r4 = self.route(false, "10.99.0.0/16")?;
        ensure!(
            r4.contains("via 192.168.77.1 dev eth0 proto static"),
            "route {r4:?}"
        );
        let r6 = self.route(true, "2001:db8:99::/48")?;
        ensure!(
            r6.contains("via fd00:77::1 dev eth0") && r6.contains("metric 300"),
            "route {r6:?}"
        );
        let v6 = weft_e2e::netns::exec(
            self.node(),
            &["sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"],
        )?;
        ensure!(v6.trim() == "0", "disable_ipv6 {v6}");
        for dst in [PEER4, ROUTED4, PEER6, ROUTED6] {
            self.ping(dst)?;
        }
        if uplink::journal::load(&self.journal())?.is_some() {
            bail!("journal still there after detach");
        }
        Ok(())
    }
}

/// Parses for the compiler's benefit (keeps ipnet in use).
pub fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}
