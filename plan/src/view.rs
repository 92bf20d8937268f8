//! The cluster as the planners see it: plain data converted from Kubernetes objects by the agent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// The parts of a Node the agent plans from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// `spec.podCIDRs` (or the legacy single `spec.podCIDR`), in the Node's order.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type InternalIP, in the Node's order.
    pub internal_ips: Vec<IpAddr>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// The agent's own Node.
pub type LocalNode = NodeInfo;

/// The peers by Node name.
pub type PeerNodes = Arc<BTreeMap<String, NodeInfo>>;
