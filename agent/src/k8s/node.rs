//! What the agent needs from a Node, and the view of the agent's own Node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::follow::follow_nodes;
use super::K8sError;

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

/// Why a Node could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeInfoError {
    /// The Node has no name.
    #[error("node without metadata.name")]
    NoName,
    /// A podCIDR is not a CIDR in canonical form (network address, no host bits).
    #[error("node {node}: podCIDR {value:?} is not a network CIDR")]
    BadPodCidr {
        /// Node name.
        node: String,
        /// The podCIDR as found.
        value: String,
    },
    /// An InternalIP address is not an IP address.
    #[error("node {node}: InternalIP {value:?} is not an IP address")]
    BadInternalIp {
        /// Node name.
        node: String,
        /// The address as found.
        value: String,
    },
}

/// Converts a Node into the plain data the agent plans from.
pub fn node_info(node: &Node) -> Result<NodeInfo, NodeInfoError> {
    let name = node
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(NodeInfoError::NoName)?;
    let spec = node.spec.as_ref();
    let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
    };
    let pod_cidrs = cidrs
        .into_iter()
        .map(|value| {
            value
                .parse::<IpNet>()
                .ok()
                .filter(|net| net.trunc() == *net)
                .ok_or_else(|| NodeInfoError::BadPodCidr {
                    node: name.clone(),
                    value: value.clone(),
                })
        })
        .collect::<Result<_, _>>()?;
    let internal_ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| {
            a.address
                .parse::<IpAddr>()
                .map_err(|_| NodeInfoError::BadInternalIp {
                    node: name.clone(),
                    value: a.address.clone(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(NodeInfo {
        name,
        pod_cidrs,
        internal_ips,
        annotations: node.metadata.annotations.clone().unwrap_or_default(),
    })
}

/// A live view of the agent's own Node, kept by a background watch.
///
/// The channel holds `None` while the Node does not exist (or does not convert), and the latest
/// [`LocalNode`] otherwise; it changes only when the converted value changes. While the Node has
/// no podCIDRs the view logs `waiting for node NAME to get podCIDRs` once, and logs the CIDRs
/// when they appear or change. Dropping the view stops the watch.
pub struct NodeView {
    name: String,
    rx: watch::Receiver<Option<LocalNode>>,
    task: JoinHandle<()>,
}

impl NodeView {
    /// Starts watching Node `name` (a watch on `metadata.name=NAME`) on the current runtime.
    pub fn start(client: Client, name: &str) -> Self {
        let (tx, rx) = watch::channel(None);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let node_name = name.to_string();
        let mut logged: Option<Vec<IpNet>> = None;
        let task = tokio::spawn(async move {
            follow_nodes(client, config, "own node", move |nodes| {
                let node = nodes.get(&node_name).cloned();
                let cidrs = node.as_ref().map(|n| n.pod_cidrs.clone()).unwrap_or_default();
                if logged.as_ref() != Some(&cidrs) {
                    if cidrs.is_empty() {
                        tracing::info!(node = %node_name, "waiting for node {node_name} to get podCIDRs");
                    } else {
                        tracing::info!(node = %node_name, pod_cidrs = ?cidrs, "node {node_name} has podCIDRs");
                    }
                    logged = Some(cidrs);
                }
                tx.send_if_modified(|current| {
                    let changed = *current != node;
                    *current = node;
                    changed
                });
            })
            .await;
        });
        Self {
            name: name.to_string(),
            rx,
            task,
        }
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of the view, to await changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<LocalNode>> {
        self.rx.clone()
    }

    /// The latest value.
    pub fn current(&self) -> Option<LocalNode> {
        self.rx.borrow().clone()
    }

    /// Waits until the Node exists and has at least one podCIDR, and returns it.
    pub async fn wait_for_pod_cidrs(&self) -> Result<LocalNode, K8sError> {
        let mut rx = self.rx.clone();
        let closed = || K8sError::ViewClosed {
            node: self.name.clone(),
        };
        let node = rx
            .wait_for(|n| n.as_ref().is_some_and(|n| !n.pod_cidrs.is_empty()))
            .await
            .map_err(|_| closed())?;
        node.clone().ok_or_else(closed)
    }
}

impl Drop for NodeView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_dual_stack_node() {
        let n = node(json!({
            "metadata": {"name": "n1", "annotations": {"weft.io/x": "y"}},
            "spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24", "fd00:1::/64"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "192.0.2.1"},
                {"type": "ExternalIP", "address": "198.51.100.1"},
                {"type": "InternalIP", "address": "2001:db8::1"}
            ]}
        }));
        assert_eq!(
            node_info(&n).unwrap(),
            NodeInfo {
                name: "n1".into(),
                pod_cidrs: vec![
                    "10.0.1.0/24".parse().unwrap(),
                    "fd00:1::/64".parse().unwrap()
                ],
                internal_ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                annotations: [("weft.io/x".to_string(), "y".to_string())].into(),
            }
        );
    }

    #[test]
    fn falls_back_to_legacy_pod_cidr_and_tolerates_missing_parts() {
        let n = node(json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.1.0/24"}}));
        let info = node_info(&n).unwrap();
        assert_eq!(
            info.pod_cidrs,
            vec!["10.0.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(info.internal_ips.is_empty() && info.annotations.is_empty());
        let bare = node_info(&node(json!({"metadata": {"name": "n2"}}))).unwrap();
        assert_eq!(
            bare,
            NodeInfo {
                name: "n2".into(),
                ..NodeInfo::default()
            }
        );
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        let bad = |spec: serde_json::Value, status: serde_json::Value| {
            node_info(&node(
                json!({"metadata": {"name": "n1"}, "spec": spec, "status": status}),
            ))
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            bad(json!({"podCIDRs": ["10.0.1.1/24"]}), json!({})),
            "node n1: podCIDR \"10.0.1.1/24\" is not a network CIDR"
        );
        assert_eq!(
            bad(json!({"podCIDRs": ["nope"]}), json!({})),
            "node n1: podCIDR \"nope\" is not a network CIDR"
        );
        assert_eq!(
            bad(
                json!({}),
                json!({"addresses": [{"type": "InternalIP", "address": "x"}]})
            ),
            "node n1: InternalIP \"x\" is not an IP address"
        );
        assert_eq!(
            node_info(&node(json!({"metadata": {}}))),
            Err(NodeInfoError::NoName)
        );
    }
}
