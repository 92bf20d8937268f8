//! Peer nodes from Kubernetes: every other Node's podCIDRs and transport address become peer
//! flows (one bundle per peer change). In encap the flows send through the tunnel; in noEncap
//! ([`PeerPath::Underlay`]) they send out of the uplink to the peer's uplink MAC, for peers on
//! this node's transport segment that publish one. Their host routes and neighbours belong to
//! the host-state reconciler ([`crate::hoststate`]), fed from the same [`desired_peers`].
//!
//! Each agent publishes its transport address on its own Node as the annotation
//! [`TRANSPORT_ADDRESS_ANNOTATION`] (and, with its uplink attached, its uplink MAC as
//! [`UPLINK_MAC_ANNOTATION`]: noEncap peers send to it, IPv6 tunnel peers need it as their
//! tunnel neighbour on netdev, [`TunnelNeighbours`]); a peer without a transport address (an older agent, or not
//! started yet) is reached at its first InternalIP of the underlay's family. [`desired_peers`]
//! is a pure function of the peer view; [`PeerReconciler::reconcile`] diffs it with the flow
//! set's peers. The pure parts live in [`weft_plan::peers`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_plan::MacAddr;

use crate::flows::FlowSet;
use crate::k8s::PeerNodes;
use crate::mtu::Family;
pub use weft_plan::names::{TRANSPORT_ADDRESS_ANNOTATION, UPLINK_MAC_ANNOTATION};
pub use weft_plan::peers::{
    desired_peers, peer_transport_ip, peer_uplink_mac, tunnel_neighbours, PeerPath, PeerRoute,
    SkippedPeer,
};

/// Sets OVS's userspace tunnel neighbour entries for the peers (unixctl `tnl/neigh/set`): with
/// the netdev datapath over an IPv6 underlay, OVS 3.1 never learns a peer from its Neighbor
/// Advertisement (ARP replies are learned), so the tunnel push has no next-hop MAC and drops.
/// Each peer publishes its uplink MAC ([`UPLINK_MAC_ANNOTATION`]); entries expire after 15 min
/// and vanish with an ovs-vswitchd restart, so every peer pass (view change, 30 s resync) sets
/// them again, and so does the flow replay after an ovs-vswitchd restart
/// ([`PeerReconciler::after_replay`]).
#[derive(Debug, Clone)]
pub struct TunnelNeighbours {
    /// The OVS run directory (ovs-vswitchd's control socket).
    pub rundir: std::path::PathBuf,
    /// The bridge the tunnel port is on.
    pub bridge: String,
    set: BTreeMap<String, (IpAddr, MacAddr)>,
}

impl TunnelNeighbours {
    /// Entries for `bridge` through the ovs-vswitchd of `rundir`.
    pub fn new(rundir: std::path::PathBuf, bridge: String) -> Self {
        TunnelNeighbours {
            rundir,
            bridge,
            set: BTreeMap::new(),
        }
    }

    /// Sets every entry of [`tunnel_neighbours`]; logs new or changed entries once, failures
    /// each time (retried on the next pass).
    async fn converge(&mut self, view: &PeerNodes, family: Family) {
        let wanted = tunnel_neighbours(view, family);
        let ctl = match crate::api::unixctl::vswitchd_ctl(&self.rundir) {
            Ok(ctl) => ctl,
            Err(error) => {
                tracing::warn!(%error, "cannot set tunnel neighbours");
                return;
            }
        };
        for (name, (ip, mac)) in &wanted {
            let (ip_text, mac_text) = (ip.to_string(), mac.to_string());
            let args = [self.bridge.as_str(), ip_text.as_str(), mac_text.as_str()];
            let timeout = std::time::Duration::from_secs(2);
            match crate::api::unixctl::call(&ctl, "tnl/neigh/set", &args, timeout).await {
                Ok(_) if self.set.get(name) != Some(&(*ip, *mac)) => {
                    tracing::info!(peer = %name, %ip, %mac, "tunnel neighbour set");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(peer = %name, %ip, %error, "cannot set tunnel neighbour")
                }
            }
        }
        self.set = wanted;
    }
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
    path: PeerPath,
    skipped: BTreeSet<(String, String)>,
    neighbours: Option<TunnelNeighbours>,
}

impl PeerReconciler {
    /// A reconciler for peers reached over an underlay of `family`, by `path`.
    pub fn new(flows: FlowSet, family: Family, path: PeerPath) -> Self {
        PeerReconciler {
            flows,
            family,
            path,
            skipped: BTreeSet::new(),
            neighbours: None,
        }
    }

    /// Also keeps OVS's tunnel neighbour entries for the peers ([`TunnelNeighbours`]).
    pub fn with_tunnel_neighbours(mut self, neighbours: TunnelNeighbours) -> Self {
        self.neighbours = Some(neighbours);
        self
    }

    /// After the flow set replayed every flow to a restarted ovs-vswitchd: sets the tunnel
    /// neighbours again at once (they died with the old process), instead of on the next resync.
    pub async fn after_replay(&mut self, view: &PeerNodes) {
        if let Some(neighbours) = self.neighbours.as_mut() {
            tracing::info!("ovs-vswitchd restarted: setting tunnel neighbours again");
            neighbours.converge(view, self.family).await;
        }
    }

    /// The underlay family peers are reached over.
    pub fn family(&self) -> Family {
        self.family
    }

    /// One pass: each added/changed peer is one bundle, each removed peer one delete. Errors
    /// are logged per peer and retried on the next pass.
    pub async fn reconcile(&mut self, view: &PeerNodes) -> PeerChanges {
        let (desired, skipped) = desired_peers(view, self.family, &self.path);
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
        if let Some(neighbours) = self.neighbours.as_mut() {
            neighbours.converge(view, self.family).await;
        }
        changes
    }
}
