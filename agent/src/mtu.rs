//! The MTU plan: one pure function decides the MTU of every interface Weft creates or manages.
//!
//! Field reports 1 and 2: an interface whose MTU ignored the configured value, and an uplink whose
//! MTU was derived from old pods after an encap -> noEncap switch. Here nothing is derived from
//! the MTUs of existing interfaces: the inputs are the configuration and the transport
//! interface's own MTU, and every interface kind gets its MTU from [`MtuPlan`].

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How pod traffic crosses nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TrafficMode {
    /// Through a tunnel port of the given type.
    Encap(TunnelType),
    /// Routed on the underlay; the node uplink is attached to the bridge.
    NoEncap,
}

/// Tunnel protocol in encap mode (config key `tunnelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// Geneve (UDP 6081).
    Geneve,
    /// VXLAN (UDP 4789).
    Vxlan,
    /// GRE (IP protocol 47); IPv4 underlay only.
    Gre,
}

impl TunnelType {
    /// Encapsulation overhead on an IPv4 underlay: outer IPv4 header + UDP/GRE + tunnel header +
    /// inner Ethernet header. Geneve's 50 bytes leave no room for options, as in Antrea.
    pub fn ipv4_overhead(self) -> u32 {
        match self {
            // 20 IPv4 + 8 UDP + 8 Geneve + 14 inner Ethernet.
            TunnelType::Geneve => 50,
            // 20 IPv4 + 8 UDP + 8 VXLAN + 14 inner Ethernet.
            TunnelType::Vxlan => 50,
            // 20 IPv4 + 8 GRE with key + 14 inner Ethernet.
            TunnelType::Gre => 42,
        }
    }

    /// The OVS interface type (`geneve`, `vxlan`, `gre`).
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelType::Geneve => "geneve",
            TunnelType::Vxlan => "vxlan",
            TunnelType::Gre => "gre",
        }
    }

    /// The UDP port the protocol uses by default (`None` for GRE, which has no port).
    pub fn default_port(self) -> Option<u16> {
        match self {
            TunnelType::Geneve => Some(6081),
            TunnelType::Vxlan => Some(4789),
            TunnelType::Gre => None,
        }
    }
}

/// Address family of the underlay (the transport interface's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 underlay.
    Ipv4,
    /// IPv6 underlay: 20 more bytes of outer header.
    Ipv6,
}

/// Extra bytes an IPv6 outer header costs over IPv4.
pub const IPV6_EXTRA_OVERHEAD: u32 = 20;

/// Inputs of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuInput {
    /// Traffic mode.
    pub mode: TrafficMode,
    /// Family of the underlay.
    pub underlay: Family,
    /// The transport interface's MTU (configured `transportMTU`, else read from the interface).
    pub transport_mtu: u32,
    /// Explicit pod MTU from config (`mtu`), 0 = planned.
    pub configured_mtu: u32,
}

/// The MTU of every interface kind Weft manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuPlan {
    /// Pod eth0, the host end of every pod veth, and any extra pod interface.
    pub pod: u32,
    /// The host gateway internal port.
    pub gateway: u32,
    /// The tunnel port (encap only; `None` in noEncap).
    pub tunnel: Option<u32>,
    /// The uplink NIC and the internal port that carries the node IP: always the transport MTU.
    pub uplink: u32,
    /// The largest pod MTU the mode allows (what `pod` is when not configured).
    pub max_pod: u32,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    /// The configured pod MTU does not fit in the transport MTU once the mode's overhead is paid.
    #[error("mtu {configured} is above the {max} this mode allows (transport MTU {transport} minus {overhead} bytes of {mode} overhead)")]
    AboveMode {
        /// Configured pod MTU.
        configured: u32,
        /// The largest allowed.
        max: u32,
        /// Transport MTU.
        transport: u32,
        /// Overhead subtracted.
        overhead: u32,
        /// The mode, rendered.
        mode: String,
    },
    /// GRE needs an IPv4 underlay.
    #[error("tunnelType gre needs an IPv4 underlay, but the transport interface is IPv6")]
    GreOverIpv6,
    /// The transport MTU leaves less than the IPv6 minimum for pods.
    #[error("transport MTU {transport} leaves a pod MTU of {pod}, below the minimum {min}")]
    TooSmall {
        /// Transport MTU.
        transport: u32,
        /// The pod MTU it would give.
        pod: u32,
        /// The minimum.
        min: u32,
    },
}

/// The lowest pod MTU a plan may produce (IPv6 minimum link MTU).
pub const MIN_POD_MTU: u32 = 1280;

impl fmt::Display for TrafficMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrafficMode::Encap(t) => write!(f, "encap/{}", format!("{t:?}").to_lowercase()),
            TrafficMode::NoEncap => f.write_str("noEncap"),
        }
    }
}

/// Computes the plan. Pure: the same inputs always give the same plan.
pub fn plan(input: &MtuInput) -> Result<MtuPlan, MtuError> {
    let overhead = match input.mode {
        TrafficMode::NoEncap => 0,
        TrafficMode::Encap(TunnelType::Gre) if input.underlay == Family::Ipv6 => {
            return Err(MtuError::GreOverIpv6)
        }
        TrafficMode::Encap(tunnel) => {
            tunnel.ipv4_overhead()
                + match input.underlay {
                    Family::Ipv4 => 0,
                    Family::Ipv6 => IPV6_EXTRA_OVERHEAD,
                }
        }
    };
    let max_pod = input.transport_mtu.saturating_sub(overhead);
    let pod = match input.configured_mtu {
        0 => max_pod,
        configured if configured > max_pod => {
            return Err(MtuError::AboveMode {
                configured,
                max: max_pod,
                transport: input.transport_mtu,
                overhead,
                mode: input.mode.to_string(),
            })
        }
        configured => configured,
    };
    if pod < MIN_POD_MTU {
        return Err(MtuError::TooSmall {
            transport: input.transport_mtu,
            pod,
            min: MIN_POD_MTU,
        });
    }
    Ok(MtuPlan {
        pod,
        gateway: pod,
        tunnel: matches!(input.mode, TrafficMode::Encap(_)).then_some(pod),
        uplink: input.transport_mtu,
        max_pod,
    })
}

/// A host interface as the transport-interface choice sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses with prefix lengths.
    pub addrs: Vec<IpNet>,
}

/// How the transport interface is chosen (config keys `transportInterface`,
/// `transportInterfaceCIDRs`, else the interface holding the node IP).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportSelector {
    /// Explicit interface name.
    pub name: Option<String>,
    /// CIDRs: the first interface with an address inside one of them.
    pub cidrs: Vec<IpNet>,
    /// The node's IP (from the Node object).
    pub node_ip: Option<IpAddr>,
}

/// Why no transport interface was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// `transportInterface` names a missing interface.
    #[error("transportInterface {0:?} does not exist")]
    NoSuchInterface(String),
    /// No interface has an address in `transportInterfaceCIDRs`.
    #[error("no interface has an address in transportInterfaceCIDRs {0}")]
    NoneInCidrs(String),
    /// No interface holds the node IP.
    #[error("no interface holds the node IP {0}")]
    NoneWithNodeIp(IpAddr),
    /// Nothing to choose by.
    #[error("cannot choose a transport interface: no transportInterface, transportInterfaceCIDRs or node IP")]
    NothingToChooseBy,
}

/// Chooses the transport interface: by name, else by CIDR, else the one holding the node IP.
pub fn select_transport<'a>(
    selector: &TransportSelector,
    interfaces: &'a [HostInterface],
) -> Result<&'a HostInterface, TransportError> {
    if let Some(name) = &selector.name {
        return interfaces
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| TransportError::NoSuchInterface(name.clone()));
    }
    if !selector.cidrs.is_empty() {
        return interfaces
            .iter()
            .find(|i| {
                i.addrs
                    .iter()
                    .any(|a| selector.cidrs.iter().any(|c| c.contains(&a.addr())))
            })
            .ok_or_else(|| {
                let cidrs: Vec<String> = selector.cidrs.iter().map(IpNet::to_string).collect();
                TransportError::NoneInCidrs(cidrs.join(","))
            });
    }
    if let Some(ip) = selector.node_ip {
        return interfaces
            .iter()
            .find(|i| i.addrs.iter().any(|a| a.addr() == ip))
            .ok_or(TransportError::NoneWithNodeIp(ip));
    }
    Err(TransportError::NothingToChooseBy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUNNELS: [TunnelType; 3] = [TunnelType::Geneve, TunnelType::Vxlan, TunnelType::Gre];

    fn input(mode: TrafficMode, underlay: Family, transport: u32, configured: u32) -> MtuInput {
        MtuInput {
            mode,
            underlay,
            transport_mtu: transport,
            configured_mtu: configured,
        }
    }

    #[test]
    fn table_of_the_design_brief() {
        let cases = [
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv4,
                1500,
                1450,
            ),
            (
                TrafficMode::Encap(TunnelType::Vxlan),
                Family::Ipv4,
                1500,
                1450,
            ),
            (
                TrafficMode::Encap(TunnelType::Gre),
                Family::Ipv4,
                1500,
                1458,
            ),
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv6,
                1500,
                1430,
            ),
            (
                TrafficMode::Encap(TunnelType::Vxlan),
                Family::Ipv6,
                1500,
                1430,
            ),
            (TrafficMode::NoEncap, Family::Ipv4, 1500, 1500),
            (TrafficMode::NoEncap, Family::Ipv6, 1500, 1500),
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv4,
                9000,
                8950,
            ),
            (TrafficMode::NoEncap, Family::Ipv4, 9000, 9000),
        ];
        for (mode, family, transport, pod) in cases {
            let plan = plan(&input(mode, family, transport, 0)).unwrap();
            assert_eq!(plan.pod, pod, "{mode} {family:?} {transport}");
            assert_eq!(plan.gateway, pod);
            assert_eq!(plan.uplink, transport, "uplink is always the transport MTU");
            assert_eq!(plan.max_pod, pod);
            assert_eq!(plan.tunnel.is_some(), mode != TrafficMode::NoEncap);
        }
    }

    #[test]
    fn every_combination_is_consistent() {
        let modes = TUNNELS
            .iter()
            .map(|t| TrafficMode::Encap(*t))
            .chain([TrafficMode::NoEncap]);
        for mode in modes {
            for family in [Family::Ipv4, Family::Ipv6] {
                for transport in [1280, 1400, 1500, 1600, 9000, 9216] {
                    for configured in [0, 1280, 1300, 1400, 1450, 1500, 8950, 9000] {
                        let result = plan(&input(mode, family, transport, configured));
                        if mode == TrafficMode::Encap(TunnelType::Gre) && family == Family::Ipv6 {
                            assert_eq!(result, Err(MtuError::GreOverIpv6));
                            continue;
                        }
                        match result {
                            Ok(p) => {
                                assert!(p.pod <= p.max_pod && p.max_pod <= p.uplink);
                                assert!(p.pod >= MIN_POD_MTU);
                                assert_eq!(p.uplink, transport);
                                assert_eq!(p.gateway, p.pod);
                                if configured != 0 {
                                    assert_eq!(p.pod, configured);
                                }
                                if let Some(t) = p.tunnel {
                                    assert_eq!(t, p.pod);
                                }
                            }
                            Err(MtuError::AboveMode {
                                configured: c, max, ..
                            }) => {
                                assert_eq!(c, configured);
                                assert!(configured > max);
                            }
                            Err(MtuError::TooSmall { pod, .. }) => assert!(pod < MIN_POD_MTU),
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn configured_mtu_above_mode_names_both_numbers() {
        let err = plan(&input(
            TrafficMode::Encap(TunnelType::Geneve),
            Family::Ipv4,
            1500,
            1500,
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1500") && text.contains("1450"), "{text}");
    }

    #[test]
    fn gre_over_ipv6_is_refused() {
        let err = plan(&input(
            TrafficMode::Encap(TunnelType::Gre),
            Family::Ipv6,
            1500,
            0,
        ));
        assert_eq!(err, Err(MtuError::GreOverIpv6));
    }

    fn iface(name: &str, mtu: u32, addrs: &[&str]) -> HostInterface {
        HostInterface {
            name: name.into(),
            mtu,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn transport_interface_choice_order() {
        let ifs = [
            iface("eth0", 1500, &["192.168.1.10/24"]),
            iface("eth1", 9000, &["10.0.0.5/16", "fd00::5/64"]),
        ];
        let by_name = TransportSelector {
            name: Some("eth1".into()),
            cidrs: vec!["192.168.1.0/24".parse().unwrap()],
            node_ip: Some("192.168.1.10".parse().unwrap()),
        };
        assert_eq!(select_transport(&by_name, &ifs).unwrap().name, "eth1");
        let by_cidr = TransportSelector {
            name: None,
            cidrs: vec!["fd00::/64".parse().unwrap()],
            node_ip: Some("192.168.1.10".parse().unwrap()),
        };
        assert_eq!(select_transport(&by_cidr, &ifs).unwrap().name, "eth1");
        let by_ip = TransportSelector {
            node_ip: Some("192.168.1.10".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(select_transport(&by_ip, &ifs).unwrap().name, "eth0");
        assert_eq!(
            select_transport(
                &TransportSelector {
                    name: Some("eth9".into()),
                    ..Default::default()
                },
                &ifs
            ),
            Err(TransportError::NoSuchInterface("eth9".into()))
        );
        assert!(matches!(
            select_transport(&TransportSelector::default(), &ifs),
            Err(TransportError::NothingToChooseBy)
        ));
    }
}
