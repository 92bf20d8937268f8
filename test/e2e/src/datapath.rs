//! The OVS datapath the harness's bridges and agents use, chosen once per test process by
//! `WEFT_TEST_DATAPATH`: `netdev` (userspace, the default: these machines have no OVS kernel
//! module) or `system` (OVS's kernel datapath: run the tests inside the User-mode Linux guest of
//! `build/uml`, or on a host with `openvswitch.ko`). This is the only place that reads it.

use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

/// The environment variable that selects the datapath.
pub const ENV: &str = "WEFT_TEST_DATAPATH";

/// An OVS datapath type, as `Bridge:datapath_type` and the agent's `ovsDatapathType` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// The userspace datapath (`datapath_type=netdev`).
    Netdev,
    /// The kernel datapath (`datapath_type=system`, openvswitch.ko).
    System,
}

impl Datapath {
    /// The datapath of this test process: `WEFT_TEST_DATAPATH`, `netdev` when unset.
    ///
    /// # Panics
    /// When the variable holds anything but `netdev` or `system`: a misconfigured run must not
    /// silently test the other datapath.
    pub fn current() -> Datapath {
        static CURRENT: OnceLock<Datapath> = OnceLock::new();
        *CURRENT.get_or_init(|| match std::env::var(ENV) {
            Err(std::env::VarError::NotPresent) => Datapath::Netdev,
            Ok(value) => Datapath::parse(&value)
                .unwrap_or_else(|| panic!("{ENV}={value:?}: expected \"netdev\" or \"system\"")),
            Err(err) => panic!("{ENV}: {err}"),
        })
    }

    /// Parses `netdev` or `system` (an empty value means the default, `netdev`).
    pub fn parse(value: &str) -> Option<Datapath> {
        match value {
            "" | "netdev" => Some(Datapath::Netdev),
            "system" => Some(Datapath::System),
            _ => None,
        }
    }

    /// The name OVSDB and the agent's config use.
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Netdev => "netdev",
            Datapath::System => "system",
        }
    }

    /// Whether the agent attaches the uplink to the bridge in encap mode: on netdev, yes
    /// (userspace tunnels need the tunnel endpoint IP on an OVS internal port); on system, no
    /// (kernel tunnel vports use the host's routing). In noEncap it is attached on both.
    pub fn attaches_uplink_in_encap(self) -> bool {
        self == Datapath::Netdev
    }
}

/// The UDP port of a tunnel type (`None` for GRE, which has no ports).
fn tunnel_udp_port(tunnel: &str) -> Option<u16> {
    match tunnel {
        "geneve" => Some(6081),
        "vxlan" => Some(4789),
        _ => None,
    }
}

impl Datapath {
    /// Checks that datapath actions (`ovs-appctl dpctl/dump-flows`, or a trace's datapath
    /// actions) encapsulate packets with `tunnel` (`geneve`, `vxlan`, `gre`) towards `remote`.
    /// On netdev that is native tunnelling, `tnl_push(...)` with the outer headers; on system an
    /// action `set(tunnel(...dst=REMOTE...))` before the output to the kernel tunnel vport, whose
    /// `tp_dst` names the UDP tunnel (none for GRE).
    pub fn check_encap(self, actions: &str, tunnel: &str, remote: IpAddr) -> Result<(), String> {
        let dst = format!("dst={remote}");
        let ok = match self {
            Datapath::Netdev => {
                let header = match tunnel {
                    "geneve" => "geneve(",
                    "vxlan" => "vxlan(",
                    _ => "gre((",
                };
                actions.split("tnl_push(").skip(1).any(|push| {
                    let push = push.split("),out_port(").next().unwrap_or(push);
                    push.contains(header) && push.contains(&format!("{dst},"))
                })
            }
            Datapath::System => actions.split("set(tunnel(").skip(1).any(|set| {
                let set = set.split("))").next().unwrap_or(set);
                let port = set
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("tp_dst="))
                    .and_then(|p| p.parse::<u16>().ok());
                set.split(',').any(|kv| kv.ends_with(&dst)) && port == tunnel_udp_port(tunnel)
            }),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "no {tunnel} encapsulation towards {remote} in the {self} datapath actions:\n{actions}"
            ))
        }
    }

    /// Checks that the datapath flows (`ovs-appctl dpctl/dump-flows`) decapsulated packets from
    /// `remote`: `tnl_pop(...)` on netdev; on system a flow matching `tunnel(...src=REMOTE...)`.
    pub fn check_decap(self, dump: &str, remote: IpAddr) -> Result<(), String> {
        let src = format!("src={remote}");
        let ok = match self {
            Datapath::Netdev => dump.contains("tnl_pop("),
            Datapath::System => dump.split("tunnel(tun_id=").skip(1).any(|m| {
                let m = m.split(')').next().unwrap_or(m);
                m.split(',').any(|kv| kv.ends_with(&src))
            }),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "no decapsulation of packets from {remote} in the {self} datapath flows:\n{dump}"
            ))
        }
    }

    /// Whether the datapath flows show any tunnel encapsulation or decapsulation.
    pub fn shows_tunnels(self, dump: &str) -> bool {
        match self {
            Datapath::Netdev => dump.contains("tnl_push(") || dump.contains("tnl_pop("),
            Datapath::System => dump.contains("set(tunnel(") || dump.contains("tunnel(tun_id="),
        }
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_datapaths_and_rejects_others() {
        assert_eq!(Datapath::parse("netdev"), Some(Datapath::Netdev));
        assert_eq!(Datapath::parse(""), Some(Datapath::Netdev));
        assert_eq!(Datapath::parse("system"), Some(Datapath::System));
        assert_eq!(Datapath::parse("kernel"), None);
        assert_eq!(Datapath::parse("System"), None);
        assert_eq!(Datapath::System.to_string(), "system");
        assert!(Datapath::Netdev.attaches_uplink_in_encap());
        assert!(!Datapath::System.attaches_uplink_in_encap());
    }

    // Lines as OVS 3.1 prints them (netdev here; system in the UML guest, build/test-system).
    const SYSTEM_GENEVE: &str = "recirc_id(0x1),in_port(3),ct_state(-new-rpl+trk),eth_type(0x0800),ipv4(dst=10.244.2.0/255.255.255.0,frag=no), packets:36, bytes:264520, used:0.801s, actions:set(tunnel(tun_id=0x0,dst=192.168.60.12,ttl=64,tp_dst=6081,flags(df|key))),set(eth(src=02:77:65:66:74:01)),2\nrecirc_id(0),tunnel(tun_id=0x0,src=192.168.60.12,dst=192.168.60.11,flags(-df-csum+key)),in_port(2),eth(),eth_type(0x0800),ipv4(frag=no), packets:124, bytes:532792, used:0.097s, actions:ct(zone=65520),recirc(0x2)";
    const SYSTEM_GRE6: &str = "recirc_id(0x1),in_port(3),eth_type(0x0800),ipv4(frag=no), packets:2, bytes:196, used:1.770s, actions:set(tunnel(tun_id=0x0,ipv6_dst=fd00:60::12,ttl=64,flags(df|key))),2";
    const NETDEV_VXLAN: &str = "recirc_id(0),in_port(4),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(frag=no), packets:3, bytes:294, used:0.5s, actions:tnl_push(tnl_port(3),header(size=50,type=4,eth(dst=6e:0a:b8:2d:10:6f,src=02:77:65:66:74:02,dl_type=0x0800),ipv4(src=192.168.60.11,dst=192.168.60.12,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x0)),out_port(5)),output:2\nrecirc_id(0),in_port(2),eth_type(0x0800),ipv4(dst=192.168.60.11,proto=17,frag=no),udp(dst=4789), packets:3, bytes:444, used:0.5s, actions:tnl_pop(3)";

    #[test]
    fn encapsulation_is_read_from_either_datapath() {
        let (n1, n2): (IpAddr, IpAddr) = (
            "192.168.60.11".parse().unwrap(),
            "192.168.60.12".parse().unwrap(),
        );
        let sys = Datapath::System;
        assert!(sys.check_encap(SYSTEM_GENEVE, "geneve", n2).is_ok());
        assert!(sys.check_encap(SYSTEM_GENEVE, "vxlan", n2).is_err());
        assert!(sys.check_encap(SYSTEM_GENEVE, "gre", n2).is_err());
        assert!(sys.check_encap(SYSTEM_GENEVE, "geneve", n1).is_err());
        assert!(sys.check_decap(SYSTEM_GENEVE, n2).is_ok());
        assert!(sys.check_decap(SYSTEM_GENEVE, n1).is_err());
        assert!(sys.check_decap(SYSTEM_GRE6, n2).is_err());
        let n2v6: IpAddr = "fd00:60::12".parse().unwrap();
        assert!(sys.check_encap(SYSTEM_GRE6, "gre", n2v6).is_ok());
        assert!(sys.check_encap(SYSTEM_GRE6, "geneve", n2v6).is_err());
        assert!(sys.shows_tunnels(SYSTEM_GRE6));
        let net = Datapath::Netdev;
        assert!(net.check_encap(NETDEV_VXLAN, "vxlan", n2).is_ok());
        assert!(net.check_encap(NETDEV_VXLAN, "geneve", n2).is_err());
        assert!(net.check_encap(NETDEV_VXLAN, "vxlan", n1).is_err());
        assert!(net.check_decap(NETDEV_VXLAN, n2).is_ok());
        assert!(net.shows_tunnels(NETDEV_VXLAN));
        assert!(!net.shows_tunnels(SYSTEM_GENEVE));
        assert!(!sys.shows_tunnels("recirc_id(0),in_port(3),eth_type(0x0800), actions:2"));
    }
}
