//! The host state Weft wants in the node's namespace, as a pure function of (config, node,
//! peers, local pods): routes, policy rules, permanent neighbours, sysctls, gateway addresses.
//!
//! Nothing here reads the system. [`desired`] is unit-tested exhaustively below; the reconciler
//! (the agent's `hoststate::reconciler`) diffs its output against what the kernel reports.
//!
//! Wave 1 (encap) wants, per pod CIDR family:
//! - the gateway address (first host of the pod CIDR) on the gateway, added without a kernel
//!   prefix route, and the pod CIDR route on the gateway owned by Weft (main table and
//!   [`WEFT_TABLE`]);
//! - for every peer pod CIDR: `PEER_CIDR via PEER_GW dev GATEWAY onlink` (main table and
//!   [`WEFT_TABLE`]), and a permanent neighbour `PEER_GW -> VIRTUAL_MAC` on the gateway, so the
//!   host never has to resolve a peer gateway (nobody would answer) and the pipeline forwards by
//!   IP;
//! - a rule `from POD_CIDR lookup WEFT_TABLE` at [`RULE_PRIORITY_POD_EGRESS`]; in wave 1 the table
//!   holds the same routes as main for pod destinations, so a missing rule costs nothing, and
//!   noEncap/egress fill it later (a lookup without a match falls through to the next rule);
//! - sysctls: forwarding for each family, `rp_filter=2` (loose) and `arp_announce=2` on the
//!   gateway (and loose `rp_filter` on the transport interface in noEncap mode).
//!
//! noEncap peer routes are wanted as `PEER_CIDR via PEER_NODE_IP dev TRANSPORT`; the reconciler
//! resolves their next hop against the host's routes ([`super::diff::resolve_next_hops`]): a
//! peer behind a router is reached via the host's gateway toward its node IP.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::gateway::gateway_address;
use crate::mac::MacAddr;
use crate::mode::TrafficMode;
pub use crate::names::{
    MAIN_TABLE, RULE_PRIORITY_MAX, RULE_PRIORITY_MIN, RULE_PRIORITY_POD_EGRESS, WEFT_PROTOCOL,
    WEFT_TABLE,
};

/// Metric of the pod CIDR route on the gateway: the kernel's metric for prefix routes of that
/// family (IPv4 0, IPv6 256), so Weft's route takes over the key of a kernel prefix route left
/// by an address added without `noprefixroute`.
pub fn prefix_route_metric(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 256,
    }
}

/// Metric of every other Weft route: the kernel's default for user routes (IPv4 0, IPv6 1024).
pub fn default_metric(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1024,
    }
}

/// Whether a rule priority is in Weft's range.
pub fn is_weft_rule_priority(priority: u32) -> bool {
    (RULE_PRIORITY_MIN..=RULE_PRIORITY_MAX).contains(&priority)
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The nf_tables family name (`ip`, `ip6`).
    pub fn nft_family(self) -> &'static str {
        match self {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    /// The family of a prefix.
    pub fn of_net(net: &IpNet) -> Self {
        IpFamily::of(&net.addr())
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "inet",
            IpFamily::V6 => "inet6",
        })
    }
}

/// One route Weft owns (installed with [`WEFT_PROTOCOL`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    /// Routing table.
    pub table: u32,
    /// Destination prefix (canonical: no host bits).
    pub dst: IpNet,
    /// Metric (`RTA_PRIORITY`); part of the route's key.
    pub metric: u32,
    /// Next hop; `None` for a directly connected route.
    pub via: Option<IpAddr>,
    /// Output interface by name; `None` lets the kernel resolve it from `via`.
    pub dev: Option<String>,
    /// `onlink`: the next hop is on the link even though no prefix says so.
    pub onlink: bool,
}

impl RouteSpec {
    /// The route's identity in the kernel: (family, table, destination, metric).
    pub fn key(&self) -> RouteKey {
        RouteKey {
            family: IpFamily::of_net(&self.dst),
            table: self.table,
            dst: self.dst,
            metric: self.metric,
        }
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_net(&self.dst)
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        write!(f, " table {} metric {}", self.table, self.metric)
    }
}

/// The kernel's key of a route: two routes with one key cannot coexist (Weft replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// Family.
    pub family: IpFamily,
    /// Table.
    pub table: u32,
    /// Destination.
    pub dst: IpNet,
    /// Metric.
    pub metric: u32,
}

/// One policy rule Weft owns (priority in Weft's range, `FRA_PROTOCOL` [`WEFT_PROTOCOL`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSpec {
    /// Family.
    pub family: IpFamily,
    /// Priority (in `RULE_PRIORITY_MIN..=RULE_PRIORITY_MAX`).
    pub priority: u32,
    /// `from` selector.
    pub src: Option<IpNet>,
    /// `to` selector.
    pub dst: Option<IpNet>,
    /// Table to look up.
    pub table: u32,
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:", self.family, self.priority)?;
        match self.src {
            Some(src) => write!(f, " from {src}")?,
            None => f.write_str(" from all")?,
        }
        if let Some(dst) = self.dst {
            write!(f, " to {dst}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// One permanent neighbour entry Weft owns (`NDA_PROTOCOL` [`WEFT_PROTOCOL`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighbourSpec {
    /// Interface.
    pub dev: String,
    /// The neighbour's IP.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub mac: [u8; 6],
}

impl fmt::Display for NeighbourSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {} permanent",
            self.ip,
            MacAddr(self.mac),
            self.dev
        )
    }
}

/// One sysctl under `/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlSpec {
    /// Path under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub key: String,
    /// Value to hold.
    pub value: String,
    /// The interface the key belongs to (`net/*/conf/DEV/...`), so it is skipped while the
    /// interface does not exist and re-applied when it is recreated.
    pub dev: Option<String>,
}

impl fmt::Display for SysctlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key.replace('/', "."), self.value)
    }
}

/// One address Weft keeps on one of its interfaces (added with `noprefixroute`, and `nodad`
/// for IPv6: the prefix route is a [`RouteSpec`] Weft owns).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressSpec {
    /// Interface.
    pub dev: String,
    /// Address with prefix length.
    pub addr: IpNet,
}

impl fmt::Display for AddressSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.addr, self.dev)
    }
}

/// Weft's SNAT table of one family (`ip weft` / `ip6 weft`, the agent's `hoststate::nft`): pod traffic
/// from `sources` leaving the cluster is masqueraded; traffic to any `cluster` CIDR or out of
/// the gateway is not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatSpec {
    /// Family of the table.
    pub family: IpFamily,
    /// This node's pod CIDRs of the family (masqueraded when leaving the cluster).
    pub sources: Vec<IpNet>,
    /// Every pod CIDR of the cluster of the family, local first (never masqueraded to).
    pub cluster: Vec<IpNet>,
    /// The gateway interface (traffic out of it goes to pods: never masqueraded).
    pub gateway: String,
}

impl fmt::Display for SnatSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nets: &[IpNet]| {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "table {} {}: masquerade from {} except to {} or out of {}",
            self.family.nft_family(),
            crate::names::NFT_TABLE,
            list(&self.sources),
            list(&self.cluster),
            self.gateway
        )
    }
}

/// Everything Weft wants in the node's namespace. Sets, so comparison ignores order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Routes (all [`WEFT_PROTOCOL`]).
    pub routes: BTreeSet<RouteSpec>,
    /// Policy rules (all in Weft's priority range).
    pub rules: BTreeSet<RuleSpec>,
    /// Permanent neighbours.
    pub neighbours: BTreeSet<NeighbourSpec>,
    /// Sysctls.
    pub sysctls: BTreeSet<SysctlSpec>,
    /// Addresses on Weft's interfaces.
    pub addresses: BTreeSet<AddressSpec>,
    /// SNAT tables, at most one per family (none with `noSNAT`).
    pub snat: BTreeSet<SnatSpec>,
}

/// A peer node as plain data (from the agent's peer view, its `hoststate::peer_specs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Node name (for logs).
    pub name: String,
    /// The peer's pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The peer's transport (underlay) IPs, one per family at most used.
    pub transport_ips: Vec<IpAddr>,
}

/// Inputs of [`desired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInput {
    /// Traffic mode.
    pub mode: TrafficMode,
    /// The gateway interface name (`hostGateway`).
    pub gateway: String,
    /// This node's pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The transport interface (noEncap: peer routes leave through it and it needs loose
    /// `rp_filter`); `None` when unknown.
    pub transport: Option<String>,
    /// The peers; peers whose pod CIDRs overlap ours, or with invalid CIDRs, are skipped.
    pub peers: Vec<PeerSpec>,
    /// The MAC peer gateways resolve to on the gateway (the pipeline's virtual MAC).
    pub peer_gateway_mac: [u8; 6],
    /// Config `noSNAT`: pod traffic leaves the cluster with the pod's address (no SNAT table).
    pub no_snat: bool,
}

/// Computes the host state for `input`. Pure: same input, same output.
pub fn desired(input: &HostInput) -> HostState {
    let mut state = HostState::default();
    let gw = input.gateway.as_str();
    let mut families = BTreeSet::new();
    for cidr in &input.pod_cidrs {
        let cidr = cidr.trunc();
        let family = IpFamily::of_net(&cidr);
        families.insert(family);
        if let Some(address) = gateway_address(&cidr) {
            state.addresses.insert(AddressSpec {
                dev: gw.to_string(),
                addr: address,
            });
        }
        for table in [MAIN_TABLE, WEFT_TABLE] {
            state.routes.insert(RouteSpec {
                table,
                dst: cidr,
                metric: prefix_route_metric(family),
                via: None,
                dev: Some(gw.to_string()),
                onlink: false,
            });
        }
        state.rules.insert(RuleSpec {
            family,
            priority: RULE_PRIORITY_POD_EGRESS,
            src: Some(cidr),
            dst: None,
            table: WEFT_TABLE,
        });
    }

    for peer in &input.peers {
        for cidr in &peer.pod_cidrs {
            let cidr = cidr.trunc();
            let family = IpFamily::of_net(&cidr);
            // Only families this node runs, and never a CIDR that overlaps our own.
            if !families.contains(&family) || overlaps_any(&cidr, &input.pod_cidrs) {
                continue;
            }
            match input.mode {
                TrafficMode::Encap(_) => route_through_gateway(&mut state, input, gw, &cidr),
                TrafficMode::NoEncap => {
                    // A pod family the underlay does not carry (IPv6 pods over an IPv4-only
                    // underlay) has no peer node IP to route via: the host's traffic to those
                    // pods enters the bridge by the gateway, like in encap, and the pipeline's
                    // peer flows rewrite it to the peer's uplink MAC as they do for pods.
                    let Some(node_ip) = peer
                        .transport_ips
                        .iter()
                        .find(|ip| IpFamily::of(ip) == family)
                    else {
                        route_through_gateway(&mut state, input, gw, &cidr);
                        continue;
                    };
                    for table in [MAIN_TABLE, WEFT_TABLE] {
                        state.routes.insert(RouteSpec {
                            table,
                            dst: cidr,
                            metric: default_metric(family),
                            via: Some(*node_ip),
                            dev: input.transport.clone(),
                            onlink: false,
                        });
                    }
                }
            }
        }
    }

    if !input.no_snat {
        state.snat = snat(input, &families);
    }

    if families.contains(&IpFamily::V4) {
        state
            .sysctls
            .insert(sysctl("net/ipv4/ip_forward", "1", None));
        state.sysctls.insert(sysctl(
            &format!("net/ipv4/conf/{gw}/rp_filter"),
            "2",
            Some(gw),
        ));
        state.sysctls.insert(sysctl(
            &format!("net/ipv4/conf/{gw}/arp_announce"),
            "2",
            Some(gw),
        ));
        if let (TrafficMode::NoEncap, Some(transport)) = (input.mode, &input.transport) {
            state.sysctls.insert(sysctl(
                &format!("net/ipv4/conf/{transport}/rp_filter"),
                "2",
                Some(transport),
            ));
        }
    }
    if families.contains(&IpFamily::V6) {
        state
            .sysctls
            .insert(sysctl("net/ipv6/conf/all/forwarding", "1", None));
    }
    state
}

/// One SNAT table per family this node has pod CIDRs of: sources are the local pod CIDRs,
/// the cluster is the local and every peer's pod CIDR of the family (the same peers and the
/// same overlap rule as the routes; deduplicated, local first).
fn snat(input: &HostInput, families: &BTreeSet<IpFamily>) -> BTreeSet<SnatSpec> {
    let mut out = BTreeSet::new();
    for family in families {
        let sources: Vec<IpNet> = input
            .pod_cidrs
            .iter()
            .map(IpNet::trunc)
            .filter(|c| IpFamily::of_net(c) == *family)
            .collect();
        let mut cluster = sources.clone();
        for cidr in input.peers.iter().flat_map(|p| &p.pod_cidrs) {
            let cidr = cidr.trunc();
            if IpFamily::of_net(&cidr) == *family
                && !overlaps_any(&cidr, &input.pod_cidrs)
                && !cluster.contains(&cidr)
            {
                cluster.push(cidr);
            }
        }
        cluster[sources.len()..].sort();
        out.insert(SnatSpec {
            family: *family,
            sources,
            cluster,
            gateway: input.gateway.clone(),
        });
    }
    out
}

fn sysctl(key: &str, value: &str, dev: Option<&str>) -> SysctlSpec {
    SysctlSpec {
        key: key.to_string(),
        value: value.to_string(),
        dev: dev.map(str::to_string),
    }
}

fn overlaps_any(cidr: &IpNet, ours: &[IpNet]) -> bool {
    ours.iter()
        .any(|own| own.contains(&cidr.network()) || cidr.contains(&own.network()))
}

/// `PEER_CIDR via PEER_GW dev GATEWAY onlink` (main and Weft tables) and the permanent
/// neighbour of the peer's gateway address: the host's traffic to a peer's pods enters the
/// bridge by the gateway port and the pipeline's peer flows carry it on.
fn route_through_gateway(state: &mut HostState, input: &HostInput, gw: &str, cidr: &IpNet) {
    let Some(peer_gw) = gateway_address(cidr).map(|a| a.addr()) else {
        return;
    };
    for table in [MAIN_TABLE, WEFT_TABLE] {
        state.routes.insert(RouteSpec {
            table,
            dst: *cidr,
            metric: default_metric(IpFamily::of_net(cidr)),
            via: Some(peer_gw),
            dev: Some(gw.to_string()),
            onlink: true,
        });
    }
    state.neighbours.insert(NeighbourSpec {
        dev: gw.to_string(),
        ip: peer_gw,
        mac: input.peer_gateway_mac,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::TunnelType;

    const VMAC: [u8; 6] = [0x02, 0x77, 0x65, 0x66, 0x74, 0x01];

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn input(cidrs: &[&str], peers: Vec<PeerSpec>) -> HostInput {
        HostInput {
            mode: TrafficMode::Encap(TunnelType::Geneve),
            gateway: "weft-gw0".into(),
            pod_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            transport: Some("eth0".into()),
            peers,
            peer_gateway_mac: VMAC,
            no_snat: false,
        }
    }

    fn peer(name: &str, cidrs: &[&str], ips: &[&str]) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            transport_ips: ips.iter().map(|i| ip(i)).collect(),
        }
    }

    fn text<T: fmt::Display>(set: &BTreeSet<T>) -> Vec<String> {
        set.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn single_stack_node_without_peers() {
        let state = desired(&input(&["10.244.1.0/24"], vec![]));
        assert_eq!(
            text(&state.routes),
            [
                "10.244.1.0/24 dev weft-gw0 table 254 metric 0",
                "10.244.1.0/24 dev weft-gw0 table 22342 metric 0",
            ]
        );
        assert_eq!(
            text(&state.rules),
            ["inet 30700: from 10.244.1.0/24 lookup 22342"]
        );
        assert!(state.neighbours.is_empty());
        assert_eq!(text(&state.addresses), ["10.244.1.1/24 dev weft-gw0"]);
        assert_eq!(
            text(&state.sysctls),
            [
                "net.ipv4.conf.weft-gw0.arp_announce=2",
                "net.ipv4.conf.weft-gw0.rp_filter=2",
                "net.ipv4.ip_forward=1",
            ]
        );
        // Per-interface sysctls name their interface.
        for s in &state.sysctls {
            assert_eq!(s.dev.is_some(), s.key.contains("weft-gw0"), "{s}");
        }
    }

    #[test]
    fn encap_peers_get_onlink_routes_and_permanent_neighbours() {
        let state = desired(&input(
            &["10.244.1.0/24", "fd00:10:244:1::/64"],
            vec![
                peer(
                    "b",
                    &["10.244.2.0/24", "fd00:10:244:2::/64"],
                    &["192.168.1.2"],
                ),
                peer("c", &["10.244.3.0/24"], &["192.168.1.3"]),
            ],
        ));
        assert_eq!(
            text(&state.routes),
            [
                "10.244.1.0/24 dev weft-gw0 table 254 metric 0",
                "10.244.2.0/24 via 10.244.2.1 dev weft-gw0 onlink table 254 metric 0",
                "10.244.3.0/24 via 10.244.3.1 dev weft-gw0 onlink table 254 metric 0",
                "fd00:10:244:1::/64 dev weft-gw0 table 254 metric 256",
                "fd00:10:244:2::/64 via fd00:10:244:2::1 dev weft-gw0 onlink table 254 metric 1024",
                "10.244.1.0/24 dev weft-gw0 table 22342 metric 0",
                "10.244.2.0/24 via 10.244.2.1 dev weft-gw0 onlink table 22342 metric 0",
                "10.244.3.0/24 via 10.244.3.1 dev weft-gw0 onlink table 22342 metric 0",
                "fd00:10:244:1::/64 dev weft-gw0 table 22342 metric 256",
                "fd00:10:244:2::/64 via fd00:10:244:2::1 dev weft-gw0 onlink table 22342 metric 1024",
            ]
        );
        assert_eq!(
            text(&state.neighbours),
            [
                "10.244.2.1 lladdr 02:77:65:66:74:01 dev weft-gw0 permanent",
                "10.244.3.1 lladdr 02:77:65:66:74:01 dev weft-gw0 permanent",
                "fd00:10:244:2::1 lladdr 02:77:65:66:74:01 dev weft-gw0 permanent",
            ]
        );
        assert_eq!(
            text(&state.rules),
            [
                "inet 30700: from 10.244.1.0/24 lookup 22342",
                "inet6 30700: from fd00:10:244:1::/64 lookup 22342",
            ]
        );
        assert_eq!(
            text(&state.addresses),
            [
                "10.244.1.1/24 dev weft-gw0",
                "fd00:10:244:1::1/64 dev weft-gw0"
            ]
        );
        assert!(state
            .sysctls
            .iter()
            .any(|s| s.to_string() == "net.ipv6.conf.all.forwarding=1"));
        // Every rule is in Weft's range.
        assert!(state
            .rules
            .iter()
            .all(|r| is_weft_rule_priority(r.priority)));
    }

    #[test]
    fn peers_of_other_families_and_overlapping_cidrs_are_skipped() {
        let state = desired(&input(
            &["10.244.1.0/24"],
            vec![
                peer("v6only", &["fd00:10:244:2::/64"], &["fd00::2"]),
                peer("same", &["10.244.1.0/24"], &["192.168.1.9"]),
                peer("inside", &["10.244.1.128/25"], &["192.168.1.9"]),
                peer("around", &["10.244.0.0/16"], &["192.168.1.9"]),
                peer("host-bits", &["10.244.5.7/24"], &["192.168.1.5"]),
                peer("tiny", &["10.244.6.0/32"], &["192.168.1.6"]),
            ],
        ));
        let dsts: BTreeSet<_> = state.routes.iter().map(|r| r.dst.to_string()).collect();
        // host bits are cleared; a /32 has no gateway address so no encap route.
        assert_eq!(
            dsts.into_iter().collect::<Vec<_>>(),
            ["10.244.1.0/24", "10.244.5.0/24"]
        );
        assert_eq!(state.neighbours.len(), 1);
    }

    #[test]
    fn no_encap_routes_via_peer_node_ips_and_loosens_rp_filter_on_the_transport() {
        let mut inp = input(
            &["10.244.1.0/24", "fd00:10:244:1::/64"],
            vec![
                peer(
                    "b",
                    &["10.244.2.0/24", "fd00:10:244:2::/64"],
                    &["fd00::2", "192.168.1.2"],
                ),
                peer("no-v6-ip", &["fd00:10:244:3::/64"], &["192.168.1.3"]),
            ],
        );
        inp.mode = TrafficMode::NoEncap;
        let state = desired(&inp);
        let main: Vec<_> = state
            .routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            main,
            [
                "10.244.1.0/24 dev weft-gw0 table 254 metric 0",
                "10.244.2.0/24 via 192.168.1.2 dev eth0 table 254 metric 0",
                "fd00:10:244:1::/64 dev weft-gw0 table 254 metric 256",
                "fd00:10:244:2::/64 via fd00::2 dev eth0 table 254 metric 1024",
                "fd00:10:244:3::/64 via fd00:10:244:3::1 dev weft-gw0 onlink table 254 metric 1024",
            ]
        );
        // The peer without an IPv6 node IP is reached through the gateway, as in encap.
        let neighbours: Vec<_> = state.neighbours.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(neighbours, ["fd00:10:244:3::1"]);
        assert!(state
            .sysctls
            .iter()
            .any(|s| s.to_string() == "net.ipv4.conf.eth0.rp_filter=2"));
        // Without a known transport the kernel picks the device.
        inp.transport = None;
        let state = desired(&inp);
        assert!(state
            .routes
            .iter()
            .filter(|r| r.via.is_some() && !r.onlink)
            .all(|r| r.dev.is_none()));
        assert!(!state.sysctls.iter().any(|s| s.key.contains("eth0")));
    }

    #[test]
    fn no_encap_peers_off_the_segment_go_via_the_hosts_next_hop() {
        use super::super::diff::{resolve_next_hops, ObservedRoute};
        let mut inp = input(
            &["10.244.1.0/24"],
            vec![
                peer("on-segment", &["10.244.2.0/24"], &["192.168.60.12"]),
                peer("behind-router", &["10.244.3.0/24"], &["192.168.61.13"]),
                peer("nowhere", &["10.244.4.0/24"], &["172.16.0.4"]),
            ],
        );
        inp.mode = TrafficMode::NoEncap;
        let host = |dst: &str, via: Option<&str>, metric: u32, protocol: u8| ObservedRoute {
            spec: RouteSpec {
                table: MAIN_TABLE,
                dst: net(dst),
                metric,
                via: via.map(ip),
                dev: Some("eth0".into()),
                onlink: false,
            },
            protocol,
        };
        let observed = [
            // The segment (kernel prefix route), the router toward 192.168.61.0/24 (two
            // metrics: the lower wins), and a Weft route that must never serve as next hop.
            host("192.168.60.0/24", None, 0, 2),
            host("192.168.61.0/24", Some("192.168.60.254"), 100, 3),
            host("192.168.61.0/24", Some("192.168.60.253"), 200, 3),
            host("172.16.0.0/16", Some("192.168.60.99"), 0, WEFT_PROTOCOL),
        ];
        let state = desired(&inp);
        let resolved = resolve_next_hops(&state.routes, &observed);
        let main: Vec<_> = resolved
            .routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            main,
            [
                "10.244.1.0/24 dev weft-gw0 table 254 metric 0",
                "10.244.2.0/24 via 192.168.60.12 dev eth0 table 254 metric 0",
                "10.244.3.0/24 via 192.168.60.254 dev eth0 table 254 metric 0",
            ]
        );
        // No host route toward the third peer: left out (both tables), never installed.
        assert_eq!(resolved.unreachable.len(), 2);
        assert!(resolved
            .unreachable
            .iter()
            .all(|r| r.dst == net("10.244.4.0/24") && r.via == Some(ip("172.16.0.4"))));
        // A default route makes it reachable through the default gateway.
        let mut with_default = observed.to_vec();
        with_default.push(host("0.0.0.0/0", Some("192.168.60.1"), 0, 3));
        let resolved = resolve_next_hops(&state.routes, &with_default);
        assert!(resolved.unreachable.is_empty());
        assert!(resolved
            .routes
            .iter()
            .any(|r| r.dst == net("10.244.4.0/24") && r.via == Some(ip("192.168.60.1"))));
        // Encap routes (onlink) and local routes pass through untouched.
        inp.mode = TrafficMode::Encap(TunnelType::Geneve);
        let state = desired(&inp);
        assert_eq!(resolve_next_hops(&state.routes, &[]).routes, state.routes);
    }

    #[test]
    fn empty_node_wants_nothing_and_output_is_deterministic() {
        assert_eq!(desired(&input(&[], vec![])), HostState::default());
        let a = input(
            &["10.244.1.0/24"],
            vec![
                peer("b", &["10.244.2.0/24"], &[]),
                peer("c", &["10.244.3.0/24"], &[]),
            ],
        );
        let mut b = a.clone();
        b.peers.reverse();
        assert_eq!(desired(&a), desired(&b));
    }

    #[test]
    fn keys_and_ranges() {
        let r = RouteSpec {
            table: MAIN_TABLE,
            dst: net("fd00::/64"),
            metric: 256,
            via: None,
            dev: Some("gw".into()),
            onlink: false,
        };
        assert_eq!(r.key().family, IpFamily::V6);
        assert_eq!(r.family(), IpFamily::V6);
        assert!(is_weft_rule_priority(RULE_PRIORITY_MIN));
        assert!(is_weft_rule_priority(RULE_PRIORITY_MAX));
        assert!(!is_weft_rule_priority(32766));
        assert!(!is_weft_rule_priority(0));
        assert_eq!(WEFT_PROTOCOL, 87);
        assert_eq!(prefix_route_metric(IpFamily::V6), 256);
        assert_eq!(default_metric(IpFamily::V6), 1024);
    }

    #[test]
    fn snat_per_family_excludes_every_cluster_cidr_and_no_snat_removes_it() {
        let peers = vec![
            peer("c", &["10.244.3.0/24", "fd00:10:244:3::/64"], &[]),
            peer("b", &["10.244.2.0/24"], &[]),
            // Overlaps ours: neither routed nor excluded twice.
            peer("x", &["10.244.1.128/25"], &[]),
        ];
        let mut i = input(&["10.244.1.0/24", "fd00:10:244:1::/64"], peers);
        assert_eq!(
            text(&desired(&i).snat),
            [
                "table ip weft: masquerade from 10.244.1.0/24 except to \
                 10.244.1.0/24,10.244.2.0/24,10.244.3.0/24 or out of weft-gw0",
                "table ip6 weft: masquerade from fd00:10:244:1::/64 except to \
                 fd00:10:244:1::/64,fd00:10:244:3::/64 or out of weft-gw0",
            ]
        );
        // Peer order does not matter.
        let mut reversed = i.clone();
        reversed.peers.reverse();
        assert_eq!(desired(&i).snat, desired(&reversed).snat);
        // noEncap masquerades the same way.
        i.mode = TrafficMode::NoEncap;
        assert_eq!(desired(&i).snat.len(), 2);
        i.no_snat = true;
        assert!(desired(&i).snat.is_empty());
        // No pod CIDR: nothing to masquerade.
        assert!(desired(&input(&[], vec![])).snat.is_empty());
    }
}
