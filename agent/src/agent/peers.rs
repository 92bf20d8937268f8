//! Peer nodes from Kubernetes (encap mode): every other Node's podCIDRs and transport address
//! become tunnel flows (one bundle per peer change). Their host routes and neighbours belong to
//! the host-state reconciler ([`crate::hoststate`]), fed from the same [`desired_peers`].
//!
//! Each agent publishes its transport address on its own Node as the annotation
//! [`TRANSPORT_ADDRESS_ANNOTATION`]; a peer without it (an older agent, or not started yet) is
//! reached at its first InternalIP of the underlay's family. [`desired_peers`] is a pure
//! function of the peer view; [`PeerReconciler::reconcile`] diffs it with the flow set's peers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::flows::{FlowSet, PeerRoute};
use crate::k8s::{NodeInfo, PeerNodes};
use crate::mtu::Family;

/// The Node annotation carrying the agent's transport (tunnel endpoint) address.
pub const TRANSPORT_ADDRESS_ANNOTATION: &str = "weft.dev/transport-address";

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
/// transport address of the underlay's family are skipped, with the reason.
pub fn desired_peers(
    peers: &PeerNodes,
    family: Family,
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
        routes.insert(
            name.clone(),
            PeerRoute {
                name: name.clone(),
                pod_cidrs: node.pod_cidrs.clone(),
                transport_ip,
            },
        );
    }
    (routes, skipped)
}

/// What one reconciliation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Peers added or updated (flows replaced).
    pub upserted: Vec<String>,
    /// Peers removed.
    pub removed: Vec<String>,
}

/// Converges the flow set's peers to the peer view.
pub struct PeerReconciler {
    flows: FlowSet,
    family: Family,
    skipped: BTreeSet<(String, String)>,
}

impl PeerReconciler {
    /// A reconciler for peers reached over an underlay of `family`.
    pub fn new(flows: FlowSet, family: Family) -> Self {
        PeerReconciler {
            flows,
            family,
            skipped: BTreeSet::new(),
        }
    }

    /// The underlay family peers are reached over.
    pub fn family(&self) -> Family {
        self.family
    }

    /// One pass: each added/changed peer is one bundle, each removed peer one delete. Errors
    /// are logged per peer and retried on the next pass.
    pub async fn reconcile(&mut self, view: &PeerNodes) -> PeerChanges {
        let (desired, skipped) = desired_peers(view, self.family);
        let now: BTreeSet<(String, String)> =
            skipped.into_iter().map(|s| (s.name, s.reason)).collect();
        for (name, reason) in now.difference(&self.skipped) {
            tracing::info!(peer = %name, %reason, "peer node not routed");
        }
        self.skipped = now;
        let mut changes = PeerChanges::default();
        for peer in self.flows.peers() {
            if !desired.contains_key(&peer.name) {
                match self.flows.remove_peer(&peer.name).await {
                    Ok(_) => changes.removed.push(peer.name),
                    Err(error) => {
                        tracing::warn!(peer = %peer.name, %error, "cannot remove peer flows")
                    }
                }
            }
        }
        for (name, peer) in desired {
            match self.flows.upsert_peer(peer).await {
                Ok(true) => changes.upserted.push(name),
                Ok(false) => {}
                Err(error) => tracing::warn!(peer = %name, %error, "cannot install peer flows"),
            }
        }
        if !changes.upserted.is_empty() || !changes.removed.is_empty() {
            tracing::info!(
                upserted = ?changes.upserted, removed = ?changes.removed,
                "peer flows converged"
            );
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let (peers, skipped) = desired_peers(&view, Family::Ipv4);
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            peers["b"].transport_ip,
            "192.168.60.12".parse::<IpAddr>().unwrap()
        );
        let names: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
        assert!(skipped[1].reason.contains("Ipv4"), "{skipped:?}");
    }
}
