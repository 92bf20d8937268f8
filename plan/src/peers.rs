//! Peer nodes as desired state: every other Node's podCIDRs and transport address, as the flows
//! route them ([`desired_peers`]) and as the host state routes them ([`peer_specs`]). In encap
//! the flows send through the tunnel; in noEncap ([`PeerPath::Underlay`]) out of the uplink to
//! the peer's uplink MAC, for peers on this node's transport segment that publish one.
//!
//! Each agent publishes its transport address on its own Node as the annotation
//! [`TRANSPORT_ADDRESS_ANNOTATION`] (and, with its uplink attached, its uplink MAC as
//! [`UPLINK_MAC_ANNOTATION`]); a peer without a transport address (an older agent, or not started
//! yet) is reached at its first InternalIP of the underlay's family.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::host::desired::PeerSpec;
use crate::mac::MacAddr;
use crate::mode::Family;
use crate::names::{TRANSPORT_ADDRESS_ANNOTATION, UPLINK_MAC_ANNOTATION};
use crate::view::{NodeInfo, PeerNodes};

/// A peer as the flow set receives it (the id is allocated here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// Node name.
    pub name: String,
    /// Its pod CIDRs.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Its transport address.
    pub transport_ip: std::net::IpAddr,
    /// Its uplink MAC (noEncap, same L2 segment), from `weft.dev/uplink-mac`.
    pub uplink_mac: Option<MacAddr>,
}

/// How pod traffic reaches peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPath {
    /// Through the tunnel (encap).
    Tunnel,
    /// On the underlay (noEncap): peers whose transport address lies inside `segment` (this
    /// node's transport subnets) and that publish their uplink MAC. Others get no peer flows:
    /// their pod traffic goes to the host, whose route for their pod CIDR goes via the host's
    /// next hop toward their node IP ([`crate::host::diff::resolve_next_hops`]).
    Underlay {
        /// The subnets of this node's transport interface.
        segment: Vec<IpNet>,
    },
}

/// The uplink MAC `node` publishes, if it parses as a unicast, non-zero MAC.
pub fn peer_uplink_mac(node: &NodeInfo) -> Option<MacAddr> {
    let mac = node
        .annotations
        .get(UPLINK_MAC_ANNOTATION)
        .and_then(|a| MacAddr::parse(a.trim()))?;
    (mac.0 != [0; 6] && !mac.is_multicast()).then_some(mac)
}

/// The transport address of `node` for an underlay of `family`: the annotation if it holds an
/// address of that family, else the first InternalIP of that family.
pub fn peer_transport_ip(node: &NodeInfo, family: Family) -> Option<IpAddr> {
    let of_family = |ip: &IpAddr| match family {
        Family::Ipv4 => ip.is_ipv4(),
        Family::Ipv6 => ip.is_ipv6(),
    };
    node.annotations
        .get(TRANSPORT_ADDRESS_ANNOTATION)
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
        .filter(of_family)
        .or_else(|| node.internal_ips.iter().copied().find(of_family))
}

/// Why a peer is left out of the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPeer {
    /// Node name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The peers to route, by name, from the peer view (pure). Nodes without podCIDRs or without a
/// transport address of the underlay's family are skipped, with the reason; with
/// [`PeerPath::Underlay`] also those off the segment or without an uplink MAC.
pub fn desired_peers(
    peers: &PeerNodes,
    family: Family,
    path: &PeerPath,
) -> (BTreeMap<String, PeerRoute>, Vec<SkippedPeer>) {
    let mut routes = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, node) in peers.iter() {
        if node.pod_cidrs.is_empty() {
            skipped.push(SkippedPeer {
                name: name.clone(),
                reason: "no podCIDRs yet".into(),
            });
            continue;
        }
        let Some(transport_ip) = peer_transport_ip(node, family) else {
            skipped.push(SkippedPeer {
                name: name.clone(),
                reason: format!("no {family:?} transport address (annotation or InternalIP)"),
            });
            continue;
        };
        let uplink_mac = match path {
            PeerPath::Tunnel => None,
            PeerPath::Underlay { segment } => {
                if !segment.iter().any(|s| s.contains(&transport_ip)) {
                    skipped.push(SkippedPeer {
                        name: name.clone(),
                        reason: format!(
                            "noEncap: transport address {transport_ip} is off this node's segment {segment:?}: no peer flows, its pods are reached through the host's route toward it"
                        ),
                    });
                    continue;
                }
                let Some(mac) = peer_uplink_mac(node) else {
                    skipped.push(SkippedPeer {
                        name: name.clone(),
                        reason: format!("noEncap: no usable {UPLINK_MAC_ANNOTATION} annotation"),
                    });
                    continue;
                };
                Some(mac)
            }
        };
        routes.insert(
            name.clone(),
            PeerRoute {
                name: name.clone(),
                pod_cidrs: node.pod_cidrs.clone(),
                transport_ip,
                uplink_mac,
            },
        );
    }
    (routes, skipped)
}

/// The (transport address, uplink MAC) of every peer in `view` that has both for an underlay
/// of `family` (pure): the entries of OVS's tunnel neighbour table (the agent's `TunnelNeighbours`).
pub fn tunnel_neighbours(view: &PeerNodes, family: Family) -> BTreeMap<String, (IpAddr, MacAddr)> {
    view.iter()
        .filter_map(|(name, node)| {
            let ip = peer_transport_ip(node, family)?;
            Some((name.clone(), (ip, peer_uplink_mac(node)?)))
        })
        .collect()
}

/// The peers as plain data, from the peer view: the same peers the flows route
/// ([`desired_peers`]: podCIDRs and a transport address of the underlay's
/// `family`, the published annotation first); each peer's other InternalIPs follow its
/// transport address (noEncap routes of the other family).
pub fn peer_specs(view: &PeerNodes, family: Family) -> Vec<PeerSpec> {
    // Host routes do not depend on the peer path: noEncap routes go via the peer's node IP,
    // whether or not the bridge has underlay flows for it.
    let (routed, _skipped) = desired_peers(view, family, &PeerPath::Tunnel);
    routed
        .into_values()
        .map(|peer| {
            let others = view
                .get(&peer.name)
                .map(|node| node.internal_ips.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|ip| ip.is_ipv4() != peer.transport_ip.is_ipv4());
            PeerSpec {
                transport_ips: std::iter::once(peer.transport_ip).chain(others).collect(),
                name: peer.name,
                pod_cidrs: peer.pod_cidrs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn node(name: &str, cidrs: &[&str], ips: &[&str], annotation: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            internal_ips: ips.iter().map(|c| c.parse().unwrap()).collect(),
            annotations: annotation
                .map(|a| {
                    [(TRANSPORT_ADDRESS_ANNOTATION.to_string(), a.to_string())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn tunnel_neighbours_need_an_address_of_the_family_and_a_mac() {
        let with_mac = |mut n: NodeInfo, mac: &str| {
            n.annotations
                .insert(UPLINK_MAC_ANNOTATION.to_string(), mac.to_string());
            n
        };
        let view: PeerNodes = Arc::new(
            [
                with_mac(node("a", &[], &["fd00:60::12"], None), "02:00:00:00:00:0a"),
                node("b", &[], &["fd00:60::13"], None),
                with_mac(
                    node("c", &[], &["192.168.60.14"], None),
                    "02:00:00:00:00:0c",
                ),
                with_mac(node("d", &[], &["fd00:60::15"], None), "01:00:00:00:00:0d"),
            ]
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect(),
        );
        let got = tunnel_neighbours(&view, Family::Ipv6);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got["a"].0, "fd00:60::12".parse::<IpAddr>().unwrap());
        assert_eq!(got["a"].1.to_string(), "02:00:00:00:00:0a");
    }

    #[test]
    fn annotation_first_then_internal_ip_of_the_family() {
        let n = node(
            "b",
            &[],
            &["192.168.60.12", "fd00:60::12"],
            Some("10.0.0.12"),
        );
        assert_eq!(
            peer_transport_ip(&n, Family::Ipv4),
            Some("10.0.0.12".parse().unwrap())
        );
        assert_eq!(
            peer_transport_ip(&n, Family::Ipv6),
            Some("fd00:60::12".parse().unwrap())
        );
        let junk = node("b", &[], &["192.168.60.12"], Some("not-an-ip"));
        assert_eq!(
            peer_transport_ip(&junk, Family::Ipv4),
            Some("192.168.60.12".parse().unwrap())
        );
        assert_eq!(peer_transport_ip(&junk, Family::Ipv6), None);
    }

    #[test]
    fn peers_without_cidrs_or_address_are_skipped_with_reason() {
        let view: PeerNodes = Arc::new(
            [
                node("b", &["10.244.2.0/24"], &["192.168.60.12"], None),
                node("c", &[], &["192.168.60.13"], None),
                node("d", &["10.244.4.0/24"], &["fd00::4"], None),
            ]
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect(),
        );
        let (peers, skipped) = desired_peers(&view, Family::Ipv4, &PeerPath::Tunnel);
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            peers["b"].transport_ip,
            "192.168.60.12".parse::<IpAddr>().unwrap()
        );
        let names: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
        assert!(skipped[1].reason.contains("Ipv4"), "{skipped:?}");
    }

    #[test]
    fn noencap_routes_peers_on_the_segment_with_an_uplink_mac() {
        let with_mac = |mut n: NodeInfo, mac: &str| {
            n.annotations
                .insert(UPLINK_MAC_ANNOTATION.to_string(), mac.to_string());
            n
        };
        let view: PeerNodes = Arc::new(
            [
                with_mac(
                    node("b", &["10.244.2.0/24"], &["192.168.60.12"], None),
                    "52:54:00:00:00:12",
                ),
                node("c", &["10.244.3.0/24"], &["192.168.60.13"], None),
                with_mac(
                    node("d", &["10.244.4.0/24"], &["10.9.0.4"], None),
                    "52:54:00:00:00:14",
                ),
                with_mac(
                    node("e", &["10.244.5.0/24"], &["192.168.60.15"], None),
                    "01:00:5e:00:00:01",
                ),
            ]
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect(),
        );
        let path = PeerPath::Underlay {
            segment: vec!["192.168.60.0/24".parse().unwrap()],
        };
        let (peers, skipped) = desired_peers(&view, Family::Ipv4, &path);
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            peers["b"].uplink_mac,
            Some(MacAddr::new(0x52, 0x54, 0, 0, 0, 0x12))
        );
        let names: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "d", "e"]);
        assert!(
            skipped[0].reason.contains(UPLINK_MAC_ANNOTATION),
            "{skipped:?}"
        );
        assert!(skipped[1].reason.contains("10.9.0.4"), "{skipped:?}");
        // In encap the MAC plays no part.
        let (peers, _) = desired_peers(&view, Family::Ipv4, &PeerPath::Tunnel);
        assert_eq!(peers.len(), 4);
        assert!(peers.values().all(|p| p.uplink_mac.is_none()));
    }
}
