//! Pods, Namespaces and NetworkPolicies converted into the policy compiler's model
//! ([`weft_plan::policy`]), keeping only what policy needs (labels, IPs, node, named ports), and
//! applying the API server's defaults (`policyTypes`, `protocol: TCP`) the way Kubernetes does.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy as K8sPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_plan::policy::{
    LabelSelector, Labels, NamedPort, NetworkPolicy, Operator, Peer, PodInfo, PolicyTypes, Port,
    PortSpec, Protocol, Requirement, Rule,
};

/// The label Kubernetes puts on every Namespace (kept, and added when a server did not).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why an object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The object has no name (or namespace).
    #[error("{kind} without metadata.name or metadata.namespace")]
    NoName {
        /// `Pod`, `Namespace`, `NetworkPolicy`.
        kind: &'static str,
    },
    /// A label selector operator is not one Kubernetes defines.
    #[error("networkpolicy {policy}: selector operator {value:?} is not In, NotIn, Exists or DoesNotExist")]
    BadOperator {
        /// `namespace/name`.
        policy: String,
        /// The operator as found.
        value: String,
    },
    /// A protocol is not TCP, UDP or SCTP.
    #[error("{object}: protocol {value:?} is not TCP, UDP or SCTP")]
    BadProtocol {
        /// The object (`networkpolicy ns/name`, `pod ns/name`).
        object: String,
        /// The protocol as found.
        value: String,
    },
    /// A port number is outside 1..=65535.
    #[error("{object}: port {value} is not in 1..65535")]
    BadPort {
        /// The object.
        object: String,
        /// The port as found.
        value: i64,
    },
    /// An ipBlock CIDR does not parse.
    #[error("networkpolicy {policy}: ipBlock {value:?} is not a CIDR")]
    BadCidr {
        /// `namespace/name`.
        policy: String,
        /// The CIDR as found.
        value: String,
    },
    /// A peer has neither selectors nor an ipBlock, or an ipBlock with selectors.
    #[error("networkpolicy {policy}: a peer must have an ipBlock or selectors, not both or none")]
    BadPeer {
        /// `namespace/name`.
        policy: String,
    },
}

/// A Pod as the compiler sees it; `Ok(None)` for pods that take no part in NetworkPolicy
/// (hostNetwork pods, and pods that have terminated: Succeeded or Failed, whose IPs may already
/// belong to another pod).
pub fn pod_info(pod: &Pod) -> Result<Option<PodInfo>, ConvertError> {
    let (namespace, name) = names(&pod.metadata, "Pod")?;
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(None);
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(None);
    }
    let object = format!("pod {namespace}/{name}");
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let mut named_ports = Vec::new();
    for container in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for port in container.ports.iter().flatten() {
            let Some(port_name) = port.name.as_ref().filter(|n| !n.is_empty()) else {
                continue;
            };
            named_ports.push(NamedPort {
                name: port_name.clone(),
                protocol: protocol(port.protocol.as_deref(), &object)?,
                port: port_number(i64::from(port.container_port), &object)?,
            });
        }
    }
    Ok(Some(PodInfo {
        namespace,
        name,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        named_ports,
    }))
}

/// A Namespace's name and labels (with `kubernetes.io/metadata.name`, as the API server sets it).
pub fn namespace_labels(ns: &Namespace) -> Result<(String, Labels), ConvertError> {
    let name = ns
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ConvertError::NoName { kind: "Namespace" })?;
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| name.clone());
    Ok((name, labels))
}

/// A NetworkPolicy in the compiler's model, with `policyTypes` defaulted the Kubernetes way
/// (Ingress, plus Egress when the policy has egress rules) and protocols defaulted to TCP.
pub fn network_policy(policy: &K8sPolicy) -> Result<NetworkPolicy, ConvertError> {
    let (namespace, name) = names(&policy.metadata, "NetworkPolicy")?;
    let key = format!("{namespace}/{name}");
    let spec = policy.spec.clone().unwrap_or_default();
    let ingress = spec.ingress.unwrap_or_default();
    let egress = spec.egress.unwrap_or_default();
    let policy_types = match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => PolicyTypes {
            ingress: types.iter().any(|t| t == "Ingress"),
            egress: types.iter().any(|t| t == "Egress"),
        },
        _ => PolicyTypes::kubernetes_default(!egress.is_empty()),
    };
    let ingress = ingress
        .iter()
        .map(|r| rule(r.from.as_deref(), r.ports.as_deref(), &key))
        .collect::<Result<_, _>>()?;
    let egress = egress
        .iter()
        .map(|r| rule(r.to.as_deref(), r.ports.as_deref(), &key))
        .collect::<Result<_, _>>()?;
    Ok(NetworkPolicy {
        pod_selector: selector(spec.pod_selector.as_ref(), &key)?.unwrap_or_default(),
        namespace,
        name,
        policy_types,
        ingress,
        egress,
    })
}

fn names(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &'static str,
) -> Result<(String, String), ConvertError> {
    match (meta.namespace.as_deref(), meta.name.as_deref()) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(ConvertError::NoName { kind }),
    }
}

fn rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    key: &str,
) -> Result<Rule, ConvertError> {
    let object = format!("networkpolicy {key}");
    Ok(Rule {
        peers: peers
            .unwrap_or_default()
            .iter()
            .map(|p| peer(p, key))
            .collect::<Result<_, _>>()?,
        ports: ports
            .unwrap_or_default()
            .iter()
            .map(|p| port_spec(p, &object))
            .collect::<Result<_, _>>()?,
    })
}

fn peer(p: &NetworkPolicyPeer, key: &str) -> Result<Peer, ConvertError> {
    let bad_peer = || ConvertError::BadPeer {
        policy: key.to_string(),
    };
    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
        (Some(block), None, None) => {
            let cidr = |value: &str| {
                value
                    .parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| ConvertError::BadCidr {
                        policy: key.to_string(),
                        value: value.to_string(),
                    })
            };
            Ok(Peer::IpBlock {
                cidr: cidr(&block.cidr)?,
                except: block
                    .except
                    .iter()
                    .flatten()
                    .map(|e| cidr(e))
                    .collect::<Result<_, _>>()?,
            })
        }
        (None, None, None) | (Some(_), _, _) => Err(bad_peer()),
        (None, pods, namespaces) => Ok(Peer::Pods {
            pod_selector: selector(pods.as_ref(), key)?,
            namespace_selector: selector(namespaces.as_ref(), key)?,
        }),
    }
}

fn selector(s: Option<&K8sSelector>, key: &str) -> Result<Option<LabelSelector>, ConvertError> {
    let Some(s) = s else {
        return Ok(None);
    };
    let match_expressions = s
        .match_expressions
        .iter()
        .flatten()
        .map(|r| {
            let op = match r.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(ConvertError::BadOperator {
                        policy: key.to_string(),
                        value: other.to_string(),
                    })
                }
            };
            Ok(Requirement {
                key: r.key.clone(),
                op,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    }))
}

fn port_spec(p: &NetworkPolicyPort, object: &str) -> Result<PortSpec, ConvertError> {
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(Port::Number(port_number(i64::from(*n), object)?)),
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(Port::Number(port_number(n, object)?)),
            Err(_) => Some(Port::Named(s.clone())),
        },
    };
    Ok(PortSpec {
        protocol: protocol(p.protocol.as_deref(), object)?,
        port,
        end_port: p
            .end_port
            .map(|e| port_number(i64::from(e), object))
            .transpose()?,
    })
}

fn protocol(value: Option<&str>, object: &str) -> Result<Protocol, ConvertError> {
    match value.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(ConvertError::BadProtocol {
            object: object.to_string(),
            value: other.to_string(),
        }),
    }
}

fn port_number(value: i64, object: &str) -> Result<u16, ConvertError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ConvertError::BadPort {
            object: object.to_string(),
            value,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<NetworkPolicy, ConvertError> {
        network_policy(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn policy_types_default_the_kubernetes_way() {
        let types = |spec: serde_json::Value| {
            policy(json!({"metadata": {"namespace": "x", "name": "p"}, "spec": spec}))
                .unwrap()
                .policy_types
        };
        let both = PolicyTypes {
            ingress: true,
            egress: true,
        };
        let ingress = PolicyTypes {
            ingress: true,
            egress: false,
        };
        assert_eq!(types(json!({"podSelector": {}})), ingress);
        assert_eq!(types(json!({"podSelector": {}, "egress": [{}]})), both);
        assert_eq!(types(json!({"podSelector": {}, "egress": []})), ingress);
        assert_eq!(
            types(json!({"podSelector": {}, "policyTypes": ["Egress"]})),
            PolicyTypes {
                ingress: false,
                egress: true
            }
        );
        assert_eq!(
            types(json!({"podSelector": {}, "policyTypes": []})),
            ingress
        );
    }

    #[test]
    fn converts_rules_peers_and_ports() {
        let p = policy(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"},
                                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                "ingress": [
                    {"from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}},
                        {"podSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.1/8", "except": ["10.1.0.0/16"]}}
                     ],
                     "ports": [{"port": 80}, {"protocol": "UDP", "port": "dns"},
                               {"protocol": "SCTP", "port": 1000, "endPort": 2000}, {"port": "81"}]},
                    {}
                ]
            }
        }))
        .unwrap();
        assert_eq!(
            p.pod_selector.match_expressions,
            vec![Requirement {
                key: "tier".into(),
                op: Operator::NotIn,
                values: vec!["db".into()]
            }]
        );
        assert_eq!(p.ingress.len(), 2);
        assert_eq!(p.ingress[1], Rule::default());
        let rule = &p.ingress[0];
        assert_eq!(
            rule.peers,
            vec![
                Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("pod", "b")])),
                    namespace_selector: Some(LabelSelector::labels([("ns", "y")])),
                },
                Peer::Pods {
                    pod_selector: Some(LabelSelector::everything()),
                    namespace_selector: None,
                },
                Peer::IpBlock {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec!["10.1.0.0/16".parse().unwrap()],
                },
            ]
        );
        assert_eq!(
            rule.ports,
            vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: Some(Port::Number(80)),
                    end_port: None
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: Some(Port::Named("dns".into())),
                    end_port: None
                },
                PortSpec {
                    protocol: Protocol::Sctp,
                    port: Some(Port::Number(1000)),
                    end_port: Some(2000)
                },
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: Some(Port::Number(81)),
                    end_port: None
                },
            ]
        );
    }

    #[test]
    fn rejects_bad_policies_naming_the_value() {
        let bad = |spec: serde_json::Value| {
            policy(json!({"metadata": {"namespace": "x", "name": "p"}, "spec": spec}))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(json!({"ingress": [{"ports": [{"protocol": "ICMP"}]}]})),
            "networkpolicy x/p: protocol \"ICMP\" is not TCP, UDP or SCTP"
        );
        assert_eq!(
            bad(json!({"egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}]})),
            "networkpolicy x/p: ipBlock \"nope\" is not a CIDR"
        );
        assert_eq!(
            bad(json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}})),
            "networkpolicy x/p: selector operator \"Gt\" is not In, NotIn, Exists or DoesNotExist"
        );
        assert_eq!(
            bad(json!({"ingress": [{"from": [{}]}]})),
            "networkpolicy x/p: a peer must have an ipBlock or selectors, not both or none"
        );
        assert_eq!(
            bad(json!({"ingress": [{"ports": [{"port": 70000}]}]})),
            "networkpolicy x/p: port 70000 is not in 1..65535"
        );
    }

    #[test]
    fn pods_keep_labels_ips_node_and_named_ports() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}, "annotations": {"big": "x"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "ports": [{"name": "serve-80-tcp", "containerPort": 80},
                                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                        {"containerPort": 9000}]}]},
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}], "phase": "Running"}
        }))
        .unwrap();
        let info = pod_info(&pod).unwrap().unwrap();
        assert_eq!(info.key(), "x/a");
        assert_eq!(info.node, "n1");
        assert_eq!(
            info.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(info.named_port("serve-80-tcp", Protocol::Tcp), Some(80));
        assert_eq!(info.named_port("dns", Protocol::Udp), Some(53));
        assert_eq!(info.named_ports.len(), 2);
        let host: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "h"},
            "spec": {"hostNetwork": true, "containers": []}
        }))
        .unwrap();
        assert_eq!(pod_info(&host), Ok(None));
        let done: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "d"},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.6"}
        }))
        .unwrap();
        assert_eq!(pod_info(&done), Ok(None));
        let legacy: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "l"}, "status": {"podIP": "10.0.0.7"}
        }))
        .unwrap();
        assert_eq!(
            pod_info(&legacy).unwrap().unwrap().ips,
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn namespaces_get_the_metadata_name_label() {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"team": "a"}}}))
                .unwrap();
        let (name, labels) = namespace_labels(&ns).unwrap();
        assert_eq!(name, "x");
        assert_eq!(
            labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("x")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    }
}
