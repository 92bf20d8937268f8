//! The traffic mode (encap with a tunnel type, or noEncap) and the underlay's address family.

use std::fmt;

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
impl fmt::Display for TrafficMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrafficMode::Encap(t) => write!(f, "encap/{}", format!("{t:?}").to_lowercase()),
            TrafficMode::NoEncap => f.write_str("noEncap"),
        }
    }
}
