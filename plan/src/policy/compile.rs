//! The NetworkPolicy compiler: (cluster view, this node's pods, this node's IPs) ->
//! [`CompiledPolicy`]. Pure, no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::model::{
    ClusterView, Direction, LocalPod, NetworkPolicy, Peer, PodInfo, Port, PortSpec, Protocol, Rule,
};

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
    /// Local pods without a Pod object in the view: isolated both ways (fail closed), no rule
    /// applies to them yet.
    pub unknown: BTreeSet<u32>,
    /// The local pods' addresses by OpenFlow port (egress is also judged on a pod's packets
    /// that the host DNATed and sent back into the bridge by the gateway).
    pub pod_ips: BTreeMap<u32, Vec<IpAddr>>,
    /// Service (ClusterIP) ranges the host DNATs (kube-proxy). Not set by [`compile`]: the
    /// agent sets it from its configuration. A pod's first packet to one of them is not judged
    /// for egress when it leaves by the gateway (the destination is not known yet); the
    /// DNATed packet is, when the host sends it back into the bridge with the pod's address
    /// as source. Empty: Service addresses are judged like any address on the first pass.
    pub service_cidrs: BTreeSet<IpNet>,
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

/// How the compiled policy decides on a connection's first packet (the flows implement exactly
/// this order: node traffic, then isolation, then the rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The peer is one of this node's own addresses: always allowed.
    NodeTraffic,
    /// The local pod is not isolated in this direction: allowed.
    NotIsolated,
    /// Egress to a Service address (one of [`CompiledPolicy::service_cidrs`]): passes on its
    /// way to the host; the DNATed packet is judged when it comes back.
    ServiceFirstPass,
    /// Allowed by this rule (the lowest id if several allow it).
    Allowed(RuleId),
    /// The local pod is isolated and no rule allows it: dropped.
    Denied,
}

impl Verdict {
    /// Whether the packet passes.
    pub fn allows(self) -> bool {
        self != Verdict::Denied
    }
}

impl CompiledPolicy {
    /// The verdict for a connection of the local pod on `ofport` in `direction` with `peer`
    /// (ingress: the source; egress: the destination) to destination port `port` of
    /// `protocol` (`None`: another IP protocol, e.g. ICMP).
    pub fn verdict(
        &self,
        direction: Direction,
        ofport: u32,
        peer: IpAddr,
        protocol: Option<Protocol>,
        port: u16,
    ) -> Verdict {
        if self.node_ips.contains(&peer) {
            return Verdict::NodeTraffic;
        }
        if direction == Direction::Egress && self.service_cidrs.iter().any(|c| c.contains(&peer)) {
            return Verdict::ServiceFirstPass;
        }
        if !self.isolated(direction).contains(&ofport) {
            return Verdict::NotIsolated;
        }
        self.rules_of(direction)
            .find(|r| {
                r.applied_to.contains(&ofport) && r.has_peer(peer) && r.allows_port(protocol, port)
            })
            .map_or(Verdict::Denied, |r| Verdict::Allowed(r.id))
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
/// this node's bridge, `node_ips` this node's own addresses (its node IPs and gateway IPs).
///
/// A local pod the view has no Pod object for (it is not in `view.pods`) cannot be matched by
/// any selector yet: it is put in [`CompiledPolicy::unknown`] and isolated in both directions
/// (fail closed) until its Pod object arrives.
pub fn compile(view: &ClusterView, local_pods: &[LocalPod], node_ips: &[IpAddr]) -> CompiledPolicy {
    let mut out = CompiledPolicy {
        node_ips: node_ips.iter().copied().collect(),
        pod_ips: local_pods
            .iter()
            .map(|p| (p.ofport, p.ips.clone()))
            .collect(),
        ..CompiledPolicy::default()
    };
    let pods: BTreeMap<(&str, &str), &PodInfo> = view
        .pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    // Local pods with their Pod objects.
    let mut local: Vec<(&LocalPod, &PodInfo)> = Vec::new();
    for lp in local_pods {
        match pods.get(&(lp.namespace.as_str(), lp.name.as_str())) {
            Some(info) => local.push((lp, info)),
            None => {
                out.unknown.insert(lp.ofport);
                out.isolated_ingress.insert(lp.ofport);
                out.isolated_egress.insert(lp.ofport);
            }
        }
    }
    let mut by_namespace: ByNamespace<'_> = BTreeMap::new();
    for pod in &view.pods {
        by_namespace
            .entry(pod.namespace.as_str())
            .or_default()
            .push(pod);
    }
    let mut policies: Vec<&NetworkPolicy> = view.policies.iter().collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut ids: BTreeMap<RuleId, (RuleKey, Vec<PortRange>)> = BTreeMap::new();
    for policy in policies {
        let selected: Vec<(&LocalPod, &PodInfo)> = local
            .iter()
            .filter(|(lp, info)| {
                lp.namespace == policy.namespace && policy.pod_selector.matches(&info.labels)
            })
            .copied()
            .collect();
        if selected.is_empty() {
            continue;
        }
        out.applied.insert(
            policy.key(),
            selected.iter().map(|(lp, _)| lp.ofport).collect(),
        );
        for direction in [Direction::Ingress, Direction::Egress] {
            if !policy.isolates(direction) {
                continue;
            }
            let isolated = match direction {
                Direction::Ingress => &mut out.isolated_ingress,
                Direction::Egress => &mut out.isolated_egress,
            };
            isolated.extend(selected.iter().map(|(lp, _)| lp.ofport));
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                let key = RuleKey {
                    namespace: policy.namespace.clone(),
                    name: policy.name.clone(),
                    direction,
                    index,
                };
                for (ports, peers, applied_to) in
                    compile_rule(view, &by_namespace, policy, rule, direction, &selected)
                {
                    let id = allocate_id(&mut ids, &key, &ports);
                    out.rules.insert(
                        id,
                        CompiledRule {
                            id,
                            key: key.clone(),
                            peers,
                            ports,
                            applied_to,
                        },
                    );
                }
            }
        }
    }
    out
}

/// Allocates the id of `(key, ports)`: [`rule_id`], or on a collision with another rule the
/// next free value (policies are visited in name order, so this stays deterministic).
fn allocate_id(
    ids: &mut BTreeMap<RuleId, (RuleKey, Vec<PortRange>)>,
    key: &RuleKey,
    ports: &[PortRange],
) -> RuleId {
    let mut id = rule_id(key, ports);
    loop {
        match ids.get(&id) {
            None => {
                ids.insert(id, (key.clone(), ports.to_vec()));
                return id;
            }
            Some((k, p)) if k == key && p == ports => return id,
            Some(_) => id = id.checked_add(1).unwrap_or(1),
        }
    }
}

/// The view's pods by namespace.
type ByNamespace<'v> = BTreeMap<&'v str, Vec<&'v PodInfo>>;

/// One compiled rule before its id: (ports, peers, applied-to ofports).
type Part = (Vec<PortRange>, BTreeSet<IpNet>, BTreeSet<u32>);

/// Compiles one policy rule into one part per distinct resolved port set.
fn compile_rule(
    view: &ClusterView,
    by_namespace: &ByNamespace<'_>,
    policy: &NetworkPolicy,
    rule: &Rule,
    direction: Direction,
    selected: &[(&LocalPod, &PodInfo)],
) -> Vec<Part> {
    let (peer_pods, mut blocks) = resolve_peers(view, by_namespace, policy, &rule.peers);
    match direction {
        Direction::Ingress => {
            // Named ports resolve on the destination: each selected local pod.
            let mut peers: BTreeSet<IpNet> = blocks;
            for pod in &peer_pods {
                peers.extend(pod.ips.iter().map(|ip| IpNet::from(*ip)));
            }
            let mut groups: BTreeMap<Vec<PortRange>, BTreeSet<u32>> = BTreeMap::new();
            for (lp, info) in selected {
                if let Some(ports) = resolve_ports(&rule.ports, Some(info)) {
                    groups.entry(ports).or_default().insert(lp.ofport);
                }
            }
            groups
                .into_iter()
                .map(|(ports, applied)| (ports, peers.clone(), applied))
                .collect()
        }
        Direction::Egress => {
            // Named ports resolve on the destination: each peer pod. Address blocks (and "any")
            // only get the numbered ports; with "any", every pod of the cluster is a potential
            // destination for the named ones.
            let applied: BTreeSet<u32> = selected.iter().map(|(lp, _)| lp.ofport).collect();
            let mut groups: BTreeMap<Vec<PortRange>, BTreeSet<IpNet>> = BTreeMap::new();
            let named = rule
                .ports
                .iter()
                .any(|p| matches!(p.port, Some(Port::Named(_))));
            let any = rule.peers.is_empty();
            if let Some(ports) = resolve_ports(&rule.ports, None) {
                groups.entry(ports).or_default().append(&mut blocks);
            }
            let destinations: Vec<&PodInfo> = if any && named {
                view.pods.iter().collect()
            } else {
                peer_pods
            };
            for pod in destinations {
                if pod.ips.is_empty() {
                    continue;
                }
                if let Some(ports) = resolve_ports(&rule.ports, Some(pod)) {
                    groups
                        .entry(ports)
                        .or_default()
                        .extend(pod.ips.iter().map(|ip| IpNet::from(*ip)));
                }
            }
            groups
                .into_iter()
                .filter(|(_, peers)| !peers.is_empty() || !named)
                .map(|(ports, peers)| (ports, peers, applied.clone()))
                .collect()
        }
    }
}

/// Resolves a rule's peers: the pods its selectors match, and its address blocks (with the
/// excepts carved out; an empty peer list is every address of both families).
fn resolve_peers<'v>(
    view: &'v ClusterView,
    by_namespace: &ByNamespace<'v>,
    policy: &NetworkPolicy,
    peers: &[Peer],
) -> (Vec<&'v PodInfo>, BTreeSet<IpNet>) {
    let mut pods: BTreeMap<(&str, &str), &PodInfo> = BTreeMap::new();
    let mut blocks = BTreeSet::new();
    if peers.is_empty() {
        blocks.insert(any_v4());
        blocks.insert(any_v6());
    }
    for peer in peers {
        match peer {
            Peer::Pods {
                pod_selector,
                namespace_selector,
            } => {
                let namespaces: Vec<&str> = match namespace_selector {
                    None => vec![policy.namespace.as_str()],
                    Some(sel) => view
                        .namespaces
                        .iter()
                        .filter(|(_, labels)| sel.matches(labels))
                        .map(|(name, _)| name.as_str())
                        .collect(),
                };
                for ns in namespaces {
                    for pod in by_namespace.get(ns).map(Vec::as_slice).unwrap_or_default() {
                        if pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels)) {
                            pods.insert((pod.namespace.as_str(), pod.name.as_str()), *pod);
                        }
                    }
                }
            }
            Peer::IpBlock { cidr, except } => blocks.extend(subtract(cidr.trunc(), except)),
        }
    }
    (pods.into_values().collect(), blocks)
}

/// `0.0.0.0/0`.
pub fn any_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// `::/0`.
pub fn any_v6() -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::default())
}

/// `net` minus every prefix of `except` (of its family), as a set of prefixes.
pub fn subtract(net: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    let relevant: Vec<IpNet> = except
        .iter()
        .map(|e| e.trunc())
        .filter(|e| net.contains(e) || e.contains(&net))
        .collect();
    let mut out = Vec::new();
    carve(net, &relevant, &mut out);
    out
}

fn carve(net: IpNet, except: &[IpNet], out: &mut Vec<IpNet>) {
    if except.iter().any(|e| e.contains(&net)) {
        return;
    }
    let inside: Vec<IpNet> = except.iter().copied().filter(|e| net.contains(e)).collect();
    if inside.is_empty() {
        out.push(net);
        return;
    }
    match net.subnets(net.prefix_len() + 1) {
        Ok(halves) => {
            for half in halves {
                carve(half, &inside, out);
            }
        }
        // A host prefix an except does not contain: cannot happen (it would contain it).
        Err(_) => out.push(net),
    }
}

/// Resolves `specs` for a destination pod (`None`: an address that is no pod, where named
/// ports mean nothing). `Some(vec![])`: every port of every protocol; `None`: nothing (every
/// entry is a named port the destination does not declare).
pub fn resolve_ports(specs: &[PortSpec], destination: Option<&PodInfo>) -> Option<Vec<PortRange>> {
    if specs.is_empty() {
        return Some(Vec::new());
    }
    let mut ranges: Vec<PortRange> = Vec::new();
    for spec in specs {
        let range = match &spec.port {
            None => Some((0, u16::MAX)),
            Some(Port::Number(n)) => Some((*n, spec.end_port.filter(|e| e >= n).unwrap_or(*n))),
            Some(Port::Named(name)) => destination
                .and_then(|pod| pod.named_port(name, spec.protocol))
                .map(|n| (n, n)),
        };
        if let Some((start, end)) = range {
            ranges.push(PortRange {
                protocol: spec.protocol,
                start,
                end,
            });
        }
    }
    if ranges.is_empty() {
        return None;
    }
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last)
                if last.protocol == r.protocol && u32::from(r.start) <= u32::from(last.end) + 1 =>
            {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::NamedPort;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn except_is_carved_out() {
        let got = subtract(net("10.0.0.0/24"), &[net("10.0.0.5/32")]);
        assert_eq!(got.len(), 8);
        let total: u64 = got.iter().map(|n| 1u64 << (32 - n.prefix_len())).sum();
        assert_eq!(total, 255);
        assert!(!got.iter().any(|n| n.contains(&net("10.0.0.5/32"))));
        assert!(got.iter().any(|n| n.contains(&net("10.0.0.4/32"))));
        assert_eq!(subtract(net("10.0.0.0/24"), &[net("10.0.0.0/16")]), vec![]);
        assert_eq!(
            subtract(net("10.0.0.0/24"), &[net("fd00::/8"), net("10.1.0.0/24")]),
            vec![net("10.0.0.0/24")]
        );
        let v6 = subtract(net("fd00::/64"), &[net("fd00::1/128")]);
        assert_eq!(v6.len(), 64);
    }

    #[test]
    fn ports_resolve_and_merge() {
        let pod = PodInfo {
            namespace: "x".into(),
            name: "a".into(),
            labels: Default::default(),
            ips: vec![],
            node: String::new(),
            named_ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        };
        let spec = |protocol, port, end_port| PortSpec {
            protocol,
            port,
            end_port,
        };
        let specs = vec![
            spec(Protocol::Tcp, Some(Port::Number(80)), Some(90)),
            spec(Protocol::Tcp, Some(Port::Number(91)), None),
            spec(Protocol::Tcp, Some(Port::Named("http".into())), None),
            spec(Protocol::Udp, Some(Port::Named("http".into())), None),
            spec(Protocol::Sctp, None, None),
        ];
        let r = |protocol, start, end| PortRange {
            protocol,
            start,
            end,
        };
        assert_eq!(
            resolve_ports(&specs, Some(&pod)),
            Some(vec![
                r(Protocol::Tcp, 80, 91),
                r(Protocol::Tcp, 8080, 8080),
                r(Protocol::Sctp, 0, 65535)
            ])
        );
        assert_eq!(
            resolve_ports(&specs[2..4], None),
            None,
            "named ports only, no pod: nothing"
        );
        assert_eq!(resolve_ports(&[], None), Some(vec![]));
    }

    #[test]
    fn rule_ids_are_stable_and_distinct() {
        let key = |index| RuleKey {
            namespace: "x".into(),
            name: "p".into(),
            direction: Direction::Ingress,
            index,
        };
        assert_eq!(rule_id(&key(0), &[]), rule_id(&key(0), &[]));
        assert_ne!(rule_id(&key(0), &[]), rule_id(&key(1), &[]));
        let mut ids = BTreeMap::new();
        let a = allocate_id(&mut ids, &key(0), &[]);
        // A forced collision takes the next value, deterministically.
        ids.insert(a + 1, (key(9), vec![]));
        let mut other = BTreeMap::new();
        other.insert(a, (key(7), vec![]));
        assert_eq!(allocate_id(&mut other, &key(0), &[]), a + 1);
        assert_eq!(allocate_id(&mut ids, &key(0), &[]), a);
    }
}
