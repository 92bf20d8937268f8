//! Kubernetes NetworkPolicy, the pure part: the input model ([`model`]) and the compiler
//! ([`compile`]) that turns the cluster view and this node's pods into per-rule address sets,
//! port sets and applied-to OpenFlow ports (ovs-flows' `pipeline::policy` turns those into
//! conjunctive flows). docs/networkpolicy.md describes both.

pub mod compile;
pub mod model;

pub use compile::{
    any_v4, any_v6, compile, resolve_ports, rule_id, subtract, CompiledPolicy, CompiledRule,
    PortRange, RuleId, RuleKey, Verdict,
};
pub use model::{
    ClusterView, Direction, LabelSelector, Labels, LocalPod, NamedPort, NetworkPolicy, Operator,
    Peer, PodInfo, PolicyTypes, Port, PortSpec, Protocol, Requirement, Rule,
};
