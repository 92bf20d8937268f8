//! NetworkPolicy flows (issue 15): the EgressSecurity and IngressSecurity stages and the
//! per-rule counters, built from the compiler's output ([`CompiledPolicy`]).
//! docs/networkpolicy.md describes the semantics, docs/ovs-pipeline.md the tables.
//!
//! Only a connection's first packet is judged. ConntrackState sends established and related
//! packets straight to routing (past EgressRule), and IngressRule passes them at priority 210;
//! a new connection is committed (ConntrackCommit) only after both stages let it through, so a
//! dropped first packet leaves no conntrack entry and the next one is judged again.
//!
//! A rule is one conjunctive match: clause 1 the peers' addresses (ingress: `nw_src`, egress:
//! `nw_dst`), clause 2 the local pods it applies to (ingress: the target port in `reg1`,
//! egress: `in_port`), clause 3 the ports (`tp_dst` ranges as masks; absent when the rule has
//! no ports). A rule costs |peers| + |pods| + |ports| flows (ports once per family) plus its
//! `conj_id` flow; flows with the same match in several rules carry one `conjunction` action
//! per rule. The `conj_id` flow loads the rule id into [`EGRESS_RULE_ID`] /
//! [`INGRESS_RULE_ID`] (committed into `ct_label`) and skips the default table, where the
//! isolated pods' unmatched packets are dropped.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_plan::policy::{CompiledPolicy, CompiledRule, Direction, Protocol, RuleId};

use super::regs::{
    CT_EGRESS_RULE, CT_INGRESS_RULE, EGRESS_RULE_ID, INGRESS_RULE_ID, TARGET_OFPORT,
};
use super::tables::{
    EGRESS_DEFAULT, EGRESS_METRIC, EGRESS_RULE, INGRESS_DEFAULT, INGRESS_METRIC, INGRESS_RULE,
};
use super::{priority, Category, Cookie, CookieFilter, Ctx, NodeConfig, TableDecl};
use crate::flow::{ct_state, Action, Flow, Match};
use crate::ofp::FlowMod;

/// What a policy flow is for, encoded in the top 8 bits of its 40-bit cookie object id (the
/// low 32 bits are the rule id or the OpenFlow port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyFlow {
    /// A rule's `conj_id` flow (its n_packets are the connections it allowed) or its
    /// established-traffic counter flow.
    Rule(RuleId),
    /// A conjunction clause flow (possibly shared by several rules).
    Clause,
    /// The default drop of a pod isolated for egress (by OpenFlow port).
    EgressIsolation(u32),
    /// The default drop of a pod isolated for ingress.
    IngressIsolation(u32),
    /// Traffic between the pods and this node's own addresses, allowed.
    NodeTraffic,
    /// A pod's first packet to a Service range, passed to the host (judged after its DNAT).
    ServiceFirstPass,
}

const KIND_SHIFT: u32 = 32;

impl PolicyFlow {
    /// The cookie object id.
    pub fn object(self) -> u64 {
        let (kind, low) = match self {
            PolicyFlow::Rule(id) => (0u64, u64::from(id)),
            PolicyFlow::Clause => (1, 0),
            PolicyFlow::EgressIsolation(p) => (2, u64::from(p)),
            PolicyFlow::IngressIsolation(p) => (3, u64::from(p)),
            PolicyFlow::NodeTraffic => (4, 0),
            PolicyFlow::ServiceFirstPass => (5, 0),
        };
        (kind << KIND_SHIFT) | low
    }

    /// Decodes a cookie object id.
    pub fn from_object(object: u64) -> Option<PolicyFlow> {
        let low = (object & 0xffff_ffff) as u32;
        Some(match object >> KIND_SHIFT {
            0 if low != 0 => PolicyFlow::Rule(low),
            1 => PolicyFlow::Clause,
            2 => PolicyFlow::EgressIsolation(low),
            3 => PolicyFlow::IngressIsolation(low),
            4 => PolicyFlow::NodeTraffic,
            5 => PolicyFlow::ServiceFirstPass,
            _ => return None,
        })
    }

    /// Decodes a flow's cookie, if it is a policy flow.
    pub fn from_cookie(cookie: u64) -> Option<PolicyFlow> {
        let c = Cookie::from_u64(cookie)?;
        (c.category == Category::Policy)
            .then(|| PolicyFlow::from_object(c.object))
            .flatten()
    }

    /// The cookie of this flow in round `round`.
    pub fn cookie(self, round: u16) -> u64 {
        Cookie::new(round, Category::Policy)
            .with_object(self.object())
            .to_u64()
    }

    /// The filter selecting this flow in every round (e.g. for flow stats of one rule).
    pub fn filter(self) -> CookieFilter {
        CookieFilter::object(Category::Policy, self.object())
    }
}

/// Flows of the policy stages every node has, whatever the policies (cookie category
/// Pipeline): IngressRule passes established and related packets.
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let pipeline = ctx.cfg.cookie(Category::Pipeline);
    families(ctx.cfg)
        .into_iter()
        .map(|fam| {
            ctx.flow(
                &INGRESS_RULE,
                priority::EXCEPTION,
                pipeline,
                fam.ct_state(ct_state::TRK, ct_state::NEW),
                vec![ctx.goto_next(&INGRESS_DEFAULT)],
            )
        })
        .collect()
}

/// The bare family matches of the node's families.
fn families(cfg: &NodeConfig) -> Vec<Match> {
    let mut m = Vec::new();
    if cfg.has_ipv4() {
        m.push(Match::new().ip());
    }
    if cfg.has_ipv6() {
        m.push(Match::new().ipv6());
    }
    m
}

fn has_family(cfg: &NodeConfig, v4: bool) -> bool {
    if v4 {
        cfg.has_ipv4()
    } else {
        cfg.has_ipv6()
    }
}

/// A match on `net` as a source (`src`) or destination address; `/0` is the bare family.
fn address(net: IpNet, src: bool) -> Match {
    match (net, src) {
        (IpNet::V4(n), _) if n.prefix_len() == 0 => Match::new().ip(),
        (IpNet::V6(n), _) if n.prefix_len() == 0 => Match::new().ipv6(),
        (IpNet::V4(n), true) => Match::new().ip().nw_src(n),
        (IpNet::V4(n), false) => Match::new().ip().nw_dst(n),
        (IpNet::V6(n), true) => Match::new().ipv6().ipv6_src(n),
        (IpNet::V6(n), false) => Match::new().ipv6().ipv6_dst(n),
    }
}

/// `start..=end` as (value, mask) blocks, the fewest that cover it exactly.
pub fn port_masks(start: u16, end: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(start), u32::from(end));
    while lo <= hi {
        let mut size = 1u32;
        while lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi && size * 2 <= 0x1_0000 {
            size *= 2;
        }
        out.push((lo as u16, (!(size - 1) & 0xffff) as u16));
        lo += size;
    }
    out
}

/// The match of one destination port block, in one family (mask 0: every port).
fn port_match(protocol: Protocol, v4: bool, value: u16, mask: u16) -> Match {
    let base = match (protocol, v4) {
        (Protocol::Tcp, true) => Match::new().tcp(),
        (Protocol::Tcp, false) => Match::new().tcp6(),
        (Protocol::Udp, true) => Match::new().udp(),
        (Protocol::Udp, false) => Match::new().udp6(),
        (Protocol::Sctp, true) => Match::new().sctp(),
        (Protocol::Sctp, false) => Match::new().sctp6(),
    };
    match (protocol, mask) {
        (_, 0) => base,
        (Protocol::Tcp, _) => base.tcp_dst_masked(value, mask),
        (Protocol::Udp, _) => base.udp_dst_masked(value, mask),
        (Protocol::Sctp, _) => base.sctp_dst_masked(value, mask),
    }
}

/// The tables of a direction: (rule table, default table, metric table, rule id register,
/// ct_label bits).
fn tables_of(direction: Direction) -> (&'static TableDecl, &'static TableDecl, &'static TableDecl) {
    match direction {
        Direction::Ingress => (&INGRESS_RULE, &INGRESS_DEFAULT, &INGRESS_METRIC),
        Direction::Egress => (&EGRESS_RULE, &EGRESS_DEFAULT, &EGRESS_METRIC),
    }
}

/// A flow's identity in its table: OpenFlow has at most one flow per (table, priority, match).
type FlowKey = (u8, u16, Match);

fn flow_key(f: &Flow) -> FlowKey {
    (f.table, f.priority, f.matches.clone())
}

/// Flows in insertion order, one per [`FlowKey`]: flows with one match merge their
/// conjunction actions.
#[derive(Default)]
struct FlowSet {
    index: HashMap<FlowKey, usize>,
    flows: Vec<Flow>,
}

impl FlowSet {
    fn put(&mut self, flow: Flow) {
        match self.index.get(&flow_key(&flow)) {
            Some(i) => {
                let existing = &mut self.flows[*i];
                existing.actions.extend(flow.actions);
                existing.actions.sort_by_key(conjunction_key);
                existing.actions.dedup();
            }
            None => {
                self.index.insert(flow_key(&flow), self.flows.len());
                self.flows.push(flow);
            }
        }
    }
}

fn conjunction_key(a: &Action) -> (u32, u8) {
    match a {
        Action::Conjunction { id, clause, .. } => (*id, *clause),
        _ => (0, 0),
    }
}

/// A conjunction clause flow's identity, cheap to hash: the clauses of every rule are gathered
/// first, then one flow is built per clause with all its rules' actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Clause {
    /// A peer prefix (ingress: source, egress: destination).
    Peer(Direction, IpNet),
    /// A local pod the rule applies to.
    Pod(Direction, u32),
    /// A local pod's address on packets back from the host (egress, Service ranges set).
    FromHost(IpAddr),
    /// A destination port block: (protocol, IPv4?, value, mask).
    Port(Direction, Protocol, bool, u16, u16),
}

/// Conjunction actions per clause, in first-seen order.
#[derive(Default)]
struct Clauses {
    index: HashMap<Clause, usize>,
    list: Vec<(Clause, Vec<Action>)>,
}

impl Clauses {
    fn add(&mut self, clause: Clause, action: Action) {
        match self.index.get(&clause) {
            Some(i) => self.list[*i].1.push(action),
            None => {
                self.index.insert(clause, self.list.len());
                self.list.push((clause, vec![action]));
            }
        }
    }

    /// One flow per clause.
    fn into_flows(self, ctx: &Ctx<'_>) -> Vec<Flow> {
        let cookie = PolicyFlow::Clause.cookie(ctx.cfg.round);
        self.list
            .into_iter()
            .map(|(clause, mut actions)| {
                actions.sort_by_key(conjunction_key);
                actions.dedup();
                let (direction, m) = match clause {
                    Clause::Peer(d, net) => (d, address(net, d == Direction::Ingress)),
                    Clause::Pod(Direction::Ingress, p) => {
                        (Direction::Ingress, TARGET_OFPORT.matching(Match::new(), p))
                    }
                    Clause::Pod(Direction::Egress, p) => {
                        (Direction::Egress, Match::new().in_port(p))
                    }
                    Clause::FromHost(ip) => (Direction::Egress, from_host_match(ip)),
                    Clause::Port(d, protocol, v4, value, mask) => {
                        (d, port_match(protocol, v4, value, mask))
                    }
                };
                let (table, _, _) = tables_of(direction);
                ctx.flow(table, priority::NORMAL, cookie, m, actions)
            })
            .collect()
    }
}

/// One rule's flows: its clauses into `clauses`, its `conj_id` and counter flows into `set`.
/// A rule with no peer address of the node's families allows nothing and gets no flow.
fn rule_flows(
    ctx: &Ctx<'_>,
    policy: &CompiledPolicy,
    rule: &CompiledRule,
    clauses: &mut Clauses,
    set: &mut FlowSet,
) {
    let cfg = ctx.cfg;
    let direction = rule.direction();
    let (rule_table, default_table, metric_table) = tables_of(direction);
    let peers: Vec<&IpNet> = rule
        .peers
        .iter()
        .filter(|n| has_family(cfg, matches!(n, IpNet::V4(_))))
        .collect();
    if peers.is_empty() || rule.applied_to.is_empty() {
        return;
    }
    let n_clauses = if rule.ports.is_empty() { 2 } else { 3 };
    let conj = |clause| Action::Conjunction {
        id: rule.id,
        clause,
        n_clauses,
    };
    for net in peers {
        clauses.add(Clause::Peer(direction, *net), conj(1));
    }
    for ofport in &rule.applied_to {
        clauses.add(Clause::Pod(direction, *ofport), conj(2));
        if direction == Direction::Egress {
            for ip in back_from_host(cfg, policy, *ofport) {
                clauses.add(Clause::FromHost(ip), conj(2));
            }
        }
    }
    for range in &rule.ports {
        for v4 in [true, false] {
            if has_family(cfg, v4) {
                for (value, mask) in port_masks(range.start, range.end) {
                    clauses.add(
                        Clause::Port(direction, range.protocol, v4, value, mask),
                        conj(3),
                    );
                }
            }
        }
    }
    let (reg, label) = match direction {
        Direction::Ingress => (INGRESS_RULE_ID, CT_INGRESS_RULE),
        Direction::Egress => (EGRESS_RULE_ID, CT_EGRESS_RULE),
    };
    let rule_cookie = PolicyFlow::Rule(rule.id).cookie(cfg.round);
    set.put(ctx.flow(
        rule_table,
        priority::NORMAL,
        rule_cookie,
        Match::new().conj_id(rule.id),
        vec![reg.load(rule.id), ctx.goto_next(default_table)],
    ));
    // Established and related packets of the connections the rule allowed (committed with
    // its id in ct_label), both directions: the rule's packet and byte counters.
    let shift = u32::from(label.ofs);
    set.put(
        ctx.flow(
            metric_table,
            priority::NORMAL,
            rule_cookie,
            Match::new()
                .ct_state(ct_state::TRK, ct_state::NEW)
                .ct_label_masked(u128::from(rule.id) << shift, u128::from(u32::MAX) << shift),
            vec![ctx.goto_next(metric_table)],
        ),
    );
}

/// Every policy flow of `policy` (cookie category Policy, round `cfg.round`): the rules'
/// conjunctions and counters, the default drops of isolated pods, and the node's own
/// addresses allowed both ways.
pub fn flows(cfg: &NodeConfig, policy: &CompiledPolicy) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let mut set = FlowSet::default();
    let mut clauses = Clauses::default();
    for rule in policy.rules.values() {
        rule_flows(&ctx, policy, rule, &mut clauses, &mut set);
    }
    for flow in clauses.into_flows(&ctx) {
        set.put(flow);
    }
    for ofport in &policy.isolated_egress {
        let cookie = PolicyFlow::EgressIsolation(*ofport).cookie(cfg.round);
        let pod = Match::new().in_port(*ofport);
        let from_host = back_from_host(cfg, policy, *ofport)
            .into_iter()
            .map(from_host_match);
        for m in std::iter::once(pod).chain(from_host) {
            set.put(ctx.flow(&EGRESS_DEFAULT, priority::NORMAL, cookie, m, vec![]));
        }
    }
    let service = PolicyFlow::ServiceFirstPass.cookie(cfg.round);
    for cidr in &policy.service_cidrs {
        if has_family(cfg, matches!(cidr, IpNet::V4(_))) {
            set.put(ctx.flow(
                &EGRESS_RULE,
                priority::EXCEPTION,
                service,
                address(cidr.trunc(), false),
                vec![ctx.goto_next(&EGRESS_DEFAULT)],
            ));
        }
    }
    for ofport in &policy.isolated_ingress {
        set.put(ctx.flow(
            &INGRESS_DEFAULT,
            priority::NORMAL,
            PolicyFlow::IngressIsolation(*ofport).cookie(cfg.round),
            TARGET_OFPORT.matching(Match::new(), *ofport),
            vec![],
        ));
    }
    let node = PolicyFlow::NodeTraffic.cookie(cfg.round);
    for ip in &policy.node_ips {
        if !has_family(cfg, ip.is_ipv4()) {
            continue;
        }
        let net = IpNet::from(*ip);
        set.put(ctx.flow(
            &INGRESS_RULE,
            priority::EXCEPTION,
            node,
            address(net, true),
            vec![ctx.goto_next(&INGRESS_DEFAULT)],
        ));
        set.put(ctx.flow(
            &EGRESS_RULE,
            priority::EXCEPTION,
            node,
            address(net, false),
            vec![ctx.goto_next(&EGRESS_DEFAULT)],
        ));
    }
    set.flows
}

/// With Service ranges configured: the pod's packets the host DNATed and sent back into the
/// bridge by the gateway (source: one of the pod's addresses), judged for the pod's egress
/// like its own packets.
fn back_from_host(cfg: &NodeConfig, policy: &CompiledPolicy, ofport: u32) -> Vec<IpAddr> {
    if policy.service_cidrs.is_empty() {
        return Vec::new();
    }
    let ips = policy
        .pod_ips
        .get(&ofport)
        .map(Vec::as_slice)
        .unwrap_or_default();
    ips.iter()
        .filter(|ip| has_family(cfg, ip.is_ipv4()))
        .copied()
        .collect()
}

/// A pod's address on a packet back from the host by the gateway.
fn from_host_match(ip: IpAddr) -> Match {
    address(IpNet::from(ip), true).in_port(super::ports::GATEWAY)
}

/// The flow-mod deleting every policy flow, in every round.
pub fn delete_all() -> FlowMod {
    CookieFilter::category(Category::Policy).delete()
}

/// What changes between two compiled policies, as flows: install it in one bundle
/// ([`PolicyDiff::flow_mods`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Flows that are new.
    pub add: Vec<Flow>,
    /// Flows whose match exists with other actions (modified in place, counters kept).
    pub modify: Vec<Flow>,
    /// Flows that are gone.
    pub delete: Vec<Flow>,
}

impl PolicyDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.modify.is_empty() && self.delete.is_empty()
    }

    /// The number of flow-mods.
    pub fn len(&self) -> usize {
        self.add.len() + self.modify.len() + self.delete.len()
    }

    /// The flow-mods, deletes first (strict deletes, strict modifies, adds). In one bundle,
    /// the change is atomic.
    pub fn flow_mods(&self) -> Vec<FlowMod> {
        let mut mods: Vec<FlowMod> = self
            .delete
            .iter()
            .cloned()
            .map(FlowMod::delete_strict)
            .collect();
        mods.extend(self.modify.iter().cloned().map(FlowMod::modify_strict));
        mods.extend(self.add.iter().cloned().map(FlowMod::add));
        mods
    }
}

/// The flow changes from `old` to `new`, touching only flows whose match or actions differ:
/// a pod entering or leaving a rule's peers changes the clause flow of its addresses, a pod
/// becoming selected adds its applied-to clause and default drop, and no other flow.
pub fn diff(cfg: &NodeConfig, old: &CompiledPolicy, new: &CompiledPolicy) -> PolicyDiff {
    diff_flows(flows(cfg, old), flows(cfg, new))
}

/// [`diff`] of two flow sets as [`flows`] returns them (a caller that keeps the installed
/// policy flows computes only the new ones).
pub fn diff_flows(old: Vec<Flow>, new: Vec<Flow>) -> PolicyDiff {
    let old_index: HashMap<FlowKey, usize> = old
        .iter()
        .enumerate()
        .map(|(i, f)| (flow_key(f), i))
        .collect();
    let mut kept = vec![false; old.len()];
    let mut out = PolicyDiff::default();
    for f in new {
        match old_index.get(&flow_key(&f)) {
            None => out.add.push(f),
            Some(i) => {
                kept[*i] = true;
                let o = &old[*i];
                if o.actions != f.actions || o.cookie != f.cookie {
                    out.modify.push(f);
                }
            }
        }
    }
    out.delete = old
        .into_iter()
        .zip(kept)
        .filter(|(_, kept)| !kept)
        .map(|(f, _)| f)
        .collect();
    out
}

/// Per-rule counters, from flow stats of the policy flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Connections the rule allowed (first packets through its `conj_id` flow).
    pub sessions: u64,
    /// Packets of those connections (first packets, then established/related ones in both
    /// directions).
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
}

/// Adds up per-rule counters from `(cookie, table, packets, bytes)` of flow stats (any flows;
/// those that are not a rule's are ignored). `sessions` counts the rule table's flow only.
pub fn rule_counters(
    stats: impl IntoIterator<Item = (u64, u8, u64, u64)>,
) -> BTreeMap<RuleId, RuleCounters> {
    let reg = super::Registry::wave1();
    let rule_tables = [reg.number(&INGRESS_RULE), reg.number(&EGRESS_RULE)];
    let mut out: BTreeMap<RuleId, RuleCounters> = BTreeMap::new();
    for (cookie, table, packets, bytes) in stats {
        if let Some(PolicyFlow::Rule(id)) = PolicyFlow::from_cookie(cookie) {
            let c = out.entry(id).or_default();
            if rule_tables.contains(&table) {
                c.sessions += packets;
            }
            c.packets += packets;
            c.bytes += bytes;
        }
    }
    out
}

/// Packets dropped by default per direction (isolated pods, nothing allowed them), from
/// `(cookie, packets)` of flow stats.
pub fn default_drops(stats: impl IntoIterator<Item = (u64, u64)>) -> BTreeMap<Direction, u64> {
    let mut out = BTreeMap::new();
    for (cookie, packets) in stats {
        let direction = match PolicyFlow::from_cookie(cookie) {
            Some(PolicyFlow::IngressIsolation(_)) => Direction::Ingress,
            Some(PolicyFlow::EgressIsolation(_)) => Direction::Egress,
            _ => continue,
        };
        *out.entry(direction).or_insert(0) += packets;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_become_the_fewest_masks() {
        assert_eq!(port_masks(80, 80), vec![(80, 0xffff)]);
        assert_eq!(port_masks(0, 65535), vec![(0, 0)]);
        assert_eq!(port_masks(80, 81), vec![(80, 0xfffe)]);
        assert_eq!(port_masks(79, 83), vec![(79, 0xffff), (80, 0xfffc)]);
        assert_eq!(
            port_masks(79, 84),
            vec![(79, 0xffff), (80, 0xfffc), (84, 0xffff)]
        );
        assert_eq!(port_masks(65535, 65535), vec![(65535, 0xffff)]);
        assert_eq!(port_masks(1024, 65535).len(), 6);
        // Every port of a range is covered exactly once.
        for (s, e) in [(1u16, 1000u16), (32000, 33000), (3, 7)] {
            let masks = port_masks(s, e);
            for p in 0..=u16::MAX {
                let hits = masks.iter().filter(|(v, m)| p & m == *v).count();
                assert_eq!(hits, usize::from((s..=e).contains(&p)), "{p} in {s}..={e}");
            }
        }
    }

    #[test]
    fn cookies_name_the_rule() {
        for kind in [
            PolicyFlow::Rule(0xdead_beef),
            PolicyFlow::Clause,
            PolicyFlow::EgressIsolation(7),
            PolicyFlow::IngressIsolation(65000),
            PolicyFlow::NodeTraffic,
            PolicyFlow::ServiceFirstPass,
        ] {
            assert_eq!(PolicyFlow::from_cookie(kind.cookie(3)), Some(kind));
            assert!(kind.filter().selects(kind.cookie(9)));
        }
        assert_eq!(PolicyFlow::Rule(5).cookie(1), 0x0001_0800_0000_0005);
        assert_eq!(PolicyFlow::from_cookie(0x0001_0300_0000_0005), None);
    }
}
