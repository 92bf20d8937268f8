//! The policy compiler's input model: the few fields of Kubernetes Pods, Namespaces and
//! `networking.k8s.io/v1` NetworkPolicies that policy needs, as plain data.
//!
//! weft-plan has no Kubernetes dependency: the agent converts k8s-openapi objects into these
//! types (and applies the API server's defaults while doing so, see
//! [`PolicyTypes::kubernetes_default`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A label map (`metadata.labels`).
pub type Labels = BTreeMap<String, String>;

/// The operator of a [`Requirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (`In`, `NotIn`); empty for `Exists`, `DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A Kubernetes label selector. The empty selector (`{}`) selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelSelector {
    /// `matchLabels`: every pair must be present.
    #[serde(default)]
    pub match_labels: Labels,
    /// `matchExpressions`: every requirement must hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector selecting everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector with `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// `spec.policyTypes`: the directions a policy isolates its pods in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PolicyTypes {
    /// The policy isolates its pods for ingress.
    pub ingress: bool,
    /// The policy isolates its pods for egress.
    pub egress: bool,
}

impl PolicyTypes {
    /// The API server's default when `spec.policyTypes` is absent: Ingress always, Egress when
    /// the policy has egress rules. The converter in the agent calls this; the compiler takes
    /// [`NetworkPolicy::policy_types`] as given.
    pub fn kubernetes_default(has_egress_rules: bool) -> Self {
        PolicyTypes {
            ingress: true,
            egress: has_egress_rules,
        }
    }
}

/// A traffic direction, seen from the pod the policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Traffic to the selected pod (`spec.ingress`).
    Ingress,
    /// Traffic from the selected pod (`spec.egress`).
    Egress,
}

impl Direction {
    /// `ingress` / `egress`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// The policy's namespace (it selects pods of this namespace only).
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// `spec.podSelector` (the empty selector selects every pod of the namespace).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// `spec.policyTypes`, already defaulted (see [`PolicyTypes::kubernetes_default`]).
    pub policy_types: PolicyTypes,
    /// `spec.ingress`: traffic allowed to the selected pods (from any rule).
    #[serde(default)]
    pub ingress: Vec<Rule>,
    /// `spec.egress`: traffic allowed from the selected pods.
    #[serde(default)]
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The rules of one direction.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether the policy isolates its pods in `direction`.
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.policy_types.ingress,
            Direction::Egress => self.policy_types.egress,
        }
    }
}

/// One ingress or egress rule: traffic from/to any of `peers` on any of `ports`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `from` (ingress) / `to` (egress); empty = every address.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// `ports`; empty = every port of every protocol (ICMP included).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

/// One `from`/`to` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Pods by selectors. `namespace_selector: None` means the policy's own namespace;
    /// `pod_selector: None` means every pod of the selected namespaces.
    Pods {
        /// `podSelector`.
        #[serde(default)]
        pod_selector: Option<LabelSelector>,
        /// `namespaceSelector`.
        #[serde(default)]
        namespace_selector: Option<LabelSelector>,
    },
    /// `ipBlock`: `cidr` minus every `except`.
    IpBlock {
        /// The block.
        cidr: IpNet,
        /// Sub-blocks excluded.
        #[serde(default)]
        except: Vec<IpNet>,
    },
}

/// A transport protocol of a [`PortSpec`] (serialized as Kubernetes spells it: `TCP`, ...).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// `TCP` / `UDP` / `SCTP`, as Kubernetes spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A port by number or by container port name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Port {
    /// A port number.
    Number(u16),
    /// A named container port, resolved per destination pod.
    Named(String),
}

/// One `ports` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// The protocol (defaulted to TCP by the API server).
    #[serde(default)]
    pub protocol: Protocol,
    /// The port; `None` = every port of the protocol.
    #[serde(default)]
    pub port: Option<Port>,
    /// `endPort`: with a numbered `port`, the range `port..=end_port`.
    #[serde(default)]
    pub end_port: Option<u16>,
}

/// A named container port of a pod (`spec.containers[].ports[]` with a name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    /// The name.
    pub name: String,
    /// The protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// The container port.
    pub port: u16,
}

/// What the compiler needs of a pod anywhere in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: Labels,
    /// `status.podIPs` (empty while unassigned; hostNetwork pods are left out by the agent).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`.
    #[serde(default)]
    pub node: String,
    /// Named container ports.
    #[serde(default)]
    pub named_ports: Vec<NamedPort>,
}

impl PodInfo {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The port a named port resolves to on this pod, if it declares it for `protocol`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// The cluster as the compiler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Namespace name -> labels (Kubernetes sets `kubernetes.io/metadata.name` itself; the
    /// converter keeps it).
    #[serde(default)]
    pub namespaces: BTreeMap<String, Labels>,
    /// Every pod with its labels and IPs (order irrelevant).
    #[serde(default)]
    pub pods: Vec<PodInfo>,
    /// Every NetworkPolicy (order irrelevant).
    #[serde(default)]
    pub policies: Vec<NetworkPolicy>,
}

/// A pod attached to this node's bridge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// OpenFlow port of its host-side interface.
    pub ofport: u32,
    /// Its IPs.
    pub ips: Vec<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_the_kubernetes_way() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(LabelSelector::everything().matches(&l));
        assert!(LabelSelector::everything().matches(&Labels::new()));
        assert!(LabelSelector::labels([("app", "web")]).matches(&l));
        assert!(!LabelSelector::labels([("app", "db")]).matches(&l));
        let expr = |key: &str, op, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement {
                key: key.to_string(),
                op,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        assert!(expr("app", Operator::In, &["db", "web"]).matches(&l));
        assert!(!expr("app", Operator::NotIn, &["web"]).matches(&l));
        assert!(expr("zone", Operator::NotIn, &["a"]).matches(&l));
        assert!(expr("tier", Operator::Exists, &[]).matches(&l));
        assert!(!expr("tier", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!expr("zone", Operator::In, &["a"]).matches(&l));
    }

    #[test]
    fn policy_types_default() {
        assert_eq!(
            PolicyTypes::kubernetes_default(false),
            PolicyTypes {
                ingress: true,
                egress: false
            }
        );
        assert!(PolicyTypes::kubernetes_default(true).egress);
    }
}
