//! Kubernetes objects converted into the plain data the agent plans from ([`weft_plan::view`]).

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use weft_plan::view::NodeInfo;

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
