//! Shared by the NetworkPolicy tests: a direct reference evaluator of the NetworkPolicy v1
//! semantics (written from the API documentation, independent of the compiler), and the
//! evaluation of the compiler's output for a two-node cluster.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_plan::policy::{
    compile, ClusterView, CompiledPolicy, Direction, LocalPod, NetworkPolicy, Peer, PodInfo, Port,
    Protocol,
};

/// One end of a probe: a pod of the view, or an address outside the cluster.
#[derive(Clone, Copy, Debug)]
pub enum End<'a> {
    /// A pod, with the address used.
    Pod(&'a PodInfo, IpAddr),
    /// Not a pod.
    External(IpAddr),
}

impl End<'_> {
    fn ip(&self) -> IpAddr {
        match self {
            End::Pod(_, ip) | End::External(ip) => *ip,
        }
    }
    fn pod(&self) -> Option<&PodInfo> {
        match self {
            End::Pod(p, _) => Some(p),
            End::External(_) => None,
        }
    }
}

fn selects(policy: &NetworkPolicy, pod: &PodInfo) -> bool {
    policy.namespace == pod.namespace && policy.pod_selector.matches(&pod.labels)
}

/// Whether a peer entry matches the other end, and whether it matched it as a pod.
fn peer_matches(view: &ClusterView, policy: &NetworkPolicy, peer: &Peer, other: End<'_>) -> bool {
    match peer {
        Peer::Pods {
            pod_selector,
            namespace_selector,
        } => other.pod().is_some_and(|pod| {
            let ns_ok = match namespace_selector {
                None => pod.namespace == policy.namespace,
                Some(sel) => view
                    .namespaces
                    .get(&pod.namespace)
                    .is_some_and(|l| sel.matches(l)),
            };
            ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
        }),
        Peer::IpBlock { cidr, except } => {
            let ip = other.ip();
            cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
    }
}

/// Whether a rule's port list admits `(protocol, port)` on `destination`. A named port only
/// means something on a destination pod reached through a pod peer (or an empty peer list).
fn port_matches(
    rule_ports: &[weft_plan::policy::PortSpec],
    protocol: Option<Protocol>,
    port: u16,
    destination: Option<&PodInfo>,
) -> bool {
    if rule_ports.is_empty() {
        return true;
    }
    let Some(protocol) = protocol else {
        return false;
    };
    rule_ports.iter().any(|spec| {
        spec.protocol == protocol
            && match &spec.port {
                None => true,
                Some(Port::Number(n)) => {
                    let end = spec.end_port.filter(|e| e >= n).unwrap_or(*n);
                    (*n..=end).contains(&port)
                }
                Some(Port::Named(name)) => {
                    destination.and_then(|d| d.named_port(name, protocol)) == Some(port)
                }
            }
    })
}

/// Whether the policies of `pod` (the selected end) let the traffic through in `direction`.
fn direction_allows(
    view: &ClusterView,
    pod: &PodInfo,
    other: End<'_>,
    direction: Direction,
    protocol: Option<Protocol>,
    port: u16,
    destination: Option<&PodInfo>,
) -> bool {
    let policies: Vec<&NetworkPolicy> = view
        .policies
        .iter()
        .filter(|p| p.isolates(direction) && selects(p, pod))
        .collect();
    if policies.is_empty() {
        return true;
    }
    policies.iter().any(|policy| {
        policy.rules(direction).iter().any(|rule| {
            if rule.peers.is_empty() {
                return port_matches(&rule.ports, protocol, port, destination);
            }
            rule.peers.iter().any(|peer| {
                peer_matches(view, policy, peer, other) && {
                    // Through an ipBlock, a destination is an address, not a pod.
                    let dest = match (direction, peer) {
                        (Direction::Egress, Peer::IpBlock { .. }) => None,
                        _ => destination,
                    };
                    port_matches(&rule.ports, protocol, port, dest)
                }
            })
        })
    })
}

/// The reference verdict for a connection `src -> dst` (ignoring node-IP exceptions).
pub fn reference_allows(
    view: &ClusterView,
    src: End<'_>,
    dst: End<'_>,
    protocol: Option<Protocol>,
    port: u16,
) -> bool {
    let egress = match src.pod() {
        Some(pod) => direction_allows(view, pod, dst, Direction::Egress, protocol, port, dst.pod()),
        None => true,
    };
    let ingress = match dst.pod() {
        Some(pod) => direction_allows(
            view,
            pod,
            src,
            Direction::Ingress,
            protocol,
            port,
            dst.pod(),
        ),
        None => true,
    };
    egress && ingress
}

/// A cluster of nodes, each with its compiled policy.
pub struct Compiled {
    /// node name -> compiled policy.
    pub nodes: BTreeMap<String, CompiledPolicy>,
    /// pod key -> (node, ofport).
    pub placement: BTreeMap<String, (String, u32)>,
}

/// This test cluster's node IPs (IPv4 and IPv6) for node `name`.
pub fn node_ips(name: &str) -> Vec<IpAddr> {
    let n: u8 = name.trim_start_matches("node").parse().unwrap_or(9);
    vec![
        format!("192.168.0.{n}").parse().unwrap(),
        format!("fd00:192::{n}").parse().unwrap(),
    ]
}

/// Compiles `view` for every node its pods are on (ofports numbered per node from 1).
pub fn compile_cluster(view: &ClusterView) -> Compiled {
    let mut locals: BTreeMap<String, Vec<LocalPod>> = BTreeMap::new();
    let mut placement = BTreeMap::new();
    for pod in &view.pods {
        let list = locals.entry(pod.node.clone()).or_default();
        let ofport = list.len() as u32 + 1;
        list.push(LocalPod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ofport,
            ips: pod.ips.clone(),
        });
        placement.insert(pod.key(), (pod.node.clone(), ofport));
    }
    let nodes = locals
        .iter()
        .map(|(node, pods)| (node.clone(), compile(view, pods, &node_ips(node))))
        .collect();
    Compiled { nodes, placement }
}

impl Compiled {
    /// The compiled verdict for `src -> dst`: egress on the source's node, ingress on the
    /// destination's.
    pub fn allows(
        &self,
        src: End<'_>,
        dst: End<'_>,
        protocol: Option<Protocol>,
        port: u16,
    ) -> bool {
        let egress = match src.pod() {
            Some(pod) => {
                let (node, ofport) = &self.placement[&pod.key()];
                self.nodes[node]
                    .verdict(Direction::Egress, *ofport, dst.ip(), protocol, port)
                    .allows()
            }
            None => true,
        };
        let ingress = match dst.pod() {
            Some(pod) => {
                let (node, ofport) = &self.placement[&pod.key()];
                self.nodes[node]
                    .verdict(Direction::Ingress, *ofport, src.ip(), protocol, port)
                    .allows()
            }
            None => true,
        };
        egress && ingress
    }
}
