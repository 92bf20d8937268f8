//! What the kernel reports, reduced to plain data, and the pure diff of desired against observed
//! state: what to add, what stale owned objects to remove, and what foreign objects stand in
//! the way (reported, never touched).
//!
//! Ownership: a route is Weft's when its protocol is [`WEFT_PROTOCOL`]; a rule when its
//! priority is in Weft's range and its protocol is [`WEFT_PROTOCOL`]; a neighbour when its
//! `NDA_PROTOCOL` is [`WEFT_PROTOCOL`]. Addresses and sysctls are only ever added/set, never
//! removed here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::desired::{
    is_weft_rule_priority, AddressSpec, NeighbourSpec, RouteKey, RouteSpec, RuleSpec, MAIN_TABLE,
    WEFT_PROTOCOL,
};

/// A unicast route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    /// The route in spec form (its output interface resolved to a name when known).
    pub spec: RouteSpec,
    /// `rtm_protocol`.
    pub protocol: u8,
}

impl ObservedRoute {
    /// Whether Weft owns it.
    pub fn owned(&self) -> bool {
        self.protocol == WEFT_PROTOCOL
    }
}

/// A policy rule as the kernel reports it (only `lookup TABLE` rules have a spec; others are
/// never Weft's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    /// The rule in spec form.
    pub spec: RuleSpec,
    /// `FRA_PROTOCOL` (0 when absent).
    pub protocol: u8,
}

impl ObservedRule {
    /// Whether Weft owns it.
    pub fn owned(&self) -> bool {
        self.protocol == WEFT_PROTOCOL && is_weft_rule_priority(self.spec.priority)
    }
}

/// A neighbour entry as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNeighbour {
    /// Interface name (empty when the index is unknown).
    pub dev: String,
    /// Its IP.
    pub ip: IpAddr,
    /// Its link-layer address, if it has one.
    pub mac: Option<[u8; 6]>,
    /// Whether the entry is `permanent`.
    pub permanent: bool,
    /// `NDA_PROTOCOL` (0 when absent).
    pub protocol: u8,
}

impl ObservedNeighbour {
    /// Whether Weft owns it.
    pub fn owned(&self) -> bool {
        self.protocol == WEFT_PROTOCOL
    }
}

/// Routes to install and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Desired routes missing or different (installed with replace: same key).
    pub add: Vec<RouteSpec>,
    /// Owned routes whose key is no longer desired.
    pub remove: Vec<RouteSpec>,
    /// Desired routes whose key a foreign route holds with other content: left alone.
    pub conflicts: Vec<(RouteSpec, ObservedRoute)>,
}

/// Diffs routes. `gateway` names Weft's gateway: a kernel prefix route on it (an address added
/// without `noprefixroute`) whose content equals the desired route is adopted (replaced by
/// Weft's); any other foreign route on a desired key is a conflict.
pub fn diff_routes(
    desired: &BTreeSet<RouteSpec>,
    observed: &[ObservedRoute],
    gateway: &str,
) -> RouteDiff {
    let mut by_key: BTreeMap<RouteKey, Vec<&ObservedRoute>> = BTreeMap::new();
    for route in observed {
        by_key.entry(route.spec.key()).or_default().push(route);
    }
    let mut diff = RouteDiff::default();
    let desired_keys: BTreeSet<RouteKey> = desired.iter().map(RouteSpec::key).collect();
    for want in desired {
        let present = by_key.get(&want.key()).map(Vec::as_slice).unwrap_or(&[]);
        if present.iter().any(|r| r.owned() && r.spec == *want) {
            continue;
        }
        let foreign = present.iter().find(|r| !r.owned());
        match foreign {
            Some(f) if !adoptable(f, want, gateway) && !present.iter().any(|r| r.owned()) => {
                diff.conflicts.push((want.clone(), (*f).clone()));
            }
            _ => diff.add.push(want.clone()),
        }
    }
    for route in observed {
        if route.owned() && !desired_keys.contains(&route.spec.key()) {
            diff.remove.push(route.spec.clone());
        }
    }
    diff
}

/// Desired routes after next-hop resolution ([`resolve_next_hops`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedRoutes {
    /// The routes to converge: unchanged, or with the host's next hop toward their `via`.
    pub routes: BTreeSet<RouteSpec>,
    /// Routes left out: the host has no route toward their `via` (the peer node IP).
    pub unreachable: Vec<RouteSpec>,
}

/// Resolves the next hop of every desired route that goes `via` an address without `onlink`
/// (noEncap peer routes: `PEER_CIDR via PEER_NODE_IP`) against the host's own routes in the
/// main table (`observed`, Weft's own routes ignored), longest prefix first, lowest metric on a
/// tie. A directly connected covering route (no gateway: the peer is on this node's segment)
/// keeps the route as it is; a covering route with a gateway (the peer is behind a router)
/// replaces `via` by that gateway and `dev` by its device; without a covering route the route
/// is left out and returned as unreachable (the kernel would refuse it). Other routes pass
/// through unchanged. Pure.
pub fn resolve_next_hops(
    desired: &BTreeSet<RouteSpec>,
    observed: &[ObservedRoute],
) -> ResolvedRoutes {
    let mut out = ResolvedRoutes::default();
    for want in desired {
        let Some(via) = want.via.filter(|_| !want.onlink) else {
            out.routes.insert(want.clone());
            continue;
        };
        let covering = observed
            .iter()
            .filter(|r| !r.owned() && r.spec.table == MAIN_TABLE && r.spec.dst.contains(&via))
            .min_by_key(|r| (std::cmp::Reverse(r.spec.dst.prefix_len()), r.spec.metric));
        match covering {
            None => out.unreachable.push(want.clone()),
            Some(route) => match route.spec.via {
                None => {
                    out.routes.insert(want.clone());
                }
                Some(gateway) => {
                    out.routes.insert(RouteSpec {
                        via: Some(gateway),
                        dev: route.spec.dev.clone().or_else(|| want.dev.clone()),
                        ..want.clone()
                    });
                }
            },
        }
    }
    out
}

/// A kernel prefix route (protocol 2) on the gateway with the desired content.
fn adoptable(route: &ObservedRoute, want: &RouteSpec, gateway: &str) -> bool {
    const RTPROT_KERNEL: u8 = 2;
    route.protocol == RTPROT_KERNEL
        && route.spec.dev.as_deref() == Some(gateway)
        && route.spec.via.is_none()
        && route.spec == *want
}

/// Rules to add and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// Desired rules missing.
    pub add: Vec<RuleSpec>,
    /// Owned rules not desired.
    pub remove: Vec<RuleSpec>,
}

/// Diffs rules.
pub fn diff_rules(desired: &BTreeSet<RuleSpec>, observed: &[ObservedRule]) -> RuleDiff {
    let owned: Vec<&RuleSpec> = observed
        .iter()
        .filter(|r| r.owned())
        .map(|r| &r.spec)
        .collect();
    RuleDiff {
        add: desired
            .iter()
            .filter(|want| !owned.contains(want))
            .cloned()
            .collect(),
        remove: owned
            .into_iter()
            .filter(|have| !desired.contains(*have))
            .cloned()
            .collect(),
    }
}

/// Neighbours to install and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighbourDiff {
    /// Desired entries missing or different (installed with replace).
    pub add: Vec<NeighbourSpec>,
    /// Owned entries not desired: (dev, ip).
    pub remove: Vec<(String, IpAddr)>,
}

/// Diffs neighbours. A desired entry is in place when an owned permanent entry with its MAC
/// exists on its interface.
pub fn diff_neighbours(
    desired: &BTreeSet<NeighbourSpec>,
    observed: &[ObservedNeighbour],
) -> NeighbourDiff {
    let mut diff = NeighbourDiff::default();
    for want in desired {
        let ok = observed.iter().any(|n| {
            n.owned()
                && n.permanent
                && n.dev == want.dev
                && n.ip == want.ip
                && n.mac == Some(want.mac)
        });
        if !ok {
            diff.add.push(want.clone());
        }
    }
    for have in observed.iter().filter(|n| n.owned()) {
        if !desired.iter().any(|d| d.dev == have.dev && d.ip == have.ip) {
            diff.remove.push((have.dev.clone(), have.ip));
        }
    }
    diff
}

/// Desired addresses not present: `present` lists (interface, address) pairs found.
pub fn missing_addresses(
    desired: &BTreeSet<AddressSpec>,
    present: &[(String, IpNet)],
) -> Vec<AddressSpec> {
    desired
        .iter()
        .filter(|a| {
            !present
                .iter()
                .any(|(dev, net)| *dev == a.dev && *net == a.addr)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::desired::{IpFamily, MAIN_TABLE, WEFT_TABLE};
    use super::*;

    fn route(dst: &str, via: Option<&str>, table: u32) -> RouteSpec {
        RouteSpec {
            table,
            dst: dst.parse().unwrap(),
            metric: 0,
            via: via.map(|v| v.parse().unwrap()),
            dev: Some("gw".into()),
            onlink: via.is_some(),
        }
    }

    fn seen(spec: &RouteSpec, protocol: u8) -> ObservedRoute {
        ObservedRoute {
            spec: spec.clone(),
            protocol,
        }
    }

    #[test]
    fn routes_in_place_missing_changed_and_stale() {
        let a = route("10.244.1.0/24", None, MAIN_TABLE);
        let b = route("10.244.2.0/24", Some("10.244.2.1"), MAIN_TABLE);
        let c = route("10.244.3.0/24", Some("10.244.3.1"), WEFT_TABLE);
        let stale = route("10.244.9.0/24", Some("10.244.9.1"), MAIN_TABLE);
        let desired: BTreeSet<_> = [a.clone(), b.clone(), c.clone()].into();
        let mut b_changed = b.clone();
        b_changed.via = Some("10.244.2.7".parse().unwrap());
        let observed = vec![
            seen(&a, WEFT_PROTOCOL),
            seen(&b_changed, WEFT_PROTOCOL),
            seen(&stale, WEFT_PROTOCOL),
            // a foreign route elsewhere is ignored
            seen(&route("192.168.7.0/24", None, MAIN_TABLE), 4),
        ];
        let diff = diff_routes(&desired, &observed, "gw");
        assert_eq!(diff.add, vec![b, c]);
        assert_eq!(diff.remove, vec![stale]);
        assert!(diff.conflicts.is_empty());
    }

    #[test]
    fn foreign_routes_on_our_keys_are_conflicts_except_the_gateway_prefix_route() {
        let a = route("10.244.1.0/24", None, MAIN_TABLE);
        let b = route("10.244.2.0/24", Some("10.244.2.1"), MAIN_TABLE);
        let desired: BTreeSet<_> = [a.clone(), b.clone()].into();
        let mut foreign_b = b.clone();
        foreign_b.via = Some("192.168.1.1".parse().unwrap());
        let observed = vec![seen(&a, 2), seen(&foreign_b, 4)];
        let diff = diff_routes(&desired, &observed, "gw");
        assert_eq!(
            diff.add,
            vec![a.clone()],
            "the kernel prefix route is adopted"
        );
        assert_eq!(diff.conflicts.len(), 1);
        assert_eq!(diff.conflicts[0].0, b);
        assert!(diff.remove.is_empty(), "foreign routes are never removed");
        // A kernel route with other content, or on another device, is not adopted.
        let mut elsewhere = a.clone();
        elsewhere.dev = Some("eth0".into());
        let diff = diff_routes(&desired, &[seen(&elsewhere, 2)], "gw");
        assert_eq!(diff.conflicts.len(), 1);
        // Once ours is there too, a foreign duplicate is no reason not to repair ours.
        let mut ours_changed = b.clone();
        ours_changed.onlink = false;
        let diff = diff_routes(
            &desired,
            &[
                seen(&a, WEFT_PROTOCOL),
                seen(&foreign_b, 4),
                seen(&ours_changed, WEFT_PROTOCOL),
            ],
            "gw",
        );
        assert_eq!(diff.add, vec![b]);
        assert!(diff.conflicts.is_empty());
    }

    #[test]
    fn route_keys_include_family_table_and_metric() {
        let mut a = route("10.244.1.0/24", None, MAIN_TABLE);
        let desired: BTreeSet<_> = [a.clone()].into();
        a.metric = 5;
        let diff = diff_routes(&desired, &[seen(&a, WEFT_PROTOCOL)], "gw");
        assert_eq!(diff.add.len(), 1);
        assert_eq!(
            diff.remove,
            vec![a.clone()],
            "other metric: other key, stale"
        );
        assert_eq!(a.key().family, IpFamily::V4);
    }

    fn rule(priority: u32, src: &str) -> RuleSpec {
        RuleSpec {
            family: IpFamily::V4,
            priority,
            src: Some(src.parse().unwrap()),
            dst: None,
            table: WEFT_TABLE,
        }
    }

    #[test]
    fn rules_owned_only_in_range_with_our_protocol() {
        let want = rule(30700, "10.244.1.0/24");
        let stale = rule(30701, "10.244.1.0/24");
        let foreign_in_range = rule(30702, "10.9.0.0/16");
        let foreign = rule(100, "10.244.1.0/24");
        let desired: BTreeSet<_> = [want.clone()].into();
        let observed = vec![
            ObservedRule {
                spec: stale.clone(),
                protocol: WEFT_PROTOCOL,
            },
            ObservedRule {
                spec: foreign_in_range,
                protocol: 0,
            },
            ObservedRule {
                spec: foreign,
                protocol: WEFT_PROTOCOL,
            },
        ];
        let diff = diff_rules(&desired, &observed);
        assert_eq!(diff.add, vec![want.clone()]);
        assert_eq!(diff.remove, vec![stale]);
        let diff = diff_rules(
            &desired,
            &[ObservedRule {
                spec: want,
                protocol: WEFT_PROTOCOL,
            }],
        );
        assert_eq!(diff, RuleDiff::default());
    }

    #[test]
    fn neighbours_need_our_permanent_entry_with_the_mac() {
        let want = NeighbourSpec {
            dev: "gw".into(),
            ip: "10.244.2.1".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 1],
        };
        let desired: BTreeSet<_> = [want.clone()].into();
        let entry = |mac: [u8; 6], permanent, protocol, ip: &str| ObservedNeighbour {
            dev: "gw".into(),
            ip: ip.parse().unwrap(),
            mac: Some(mac),
            permanent,
            protocol,
        };
        for observed in [
            vec![],
            vec![entry(want.mac, false, WEFT_PROTOCOL, "10.244.2.1")],
            vec![entry([2, 0, 0, 0, 0, 9], true, WEFT_PROTOCOL, "10.244.2.1")],
            vec![entry(want.mac, true, 0, "10.244.2.1")],
        ] {
            assert_eq!(
                diff_neighbours(&desired, &observed).add,
                vec![want.clone()],
                "{observed:?}"
            );
        }
        let ok = entry(want.mac, true, WEFT_PROTOCOL, "10.244.2.1");
        let stale = entry(want.mac, true, WEFT_PROTOCOL, "10.244.3.1");
        let foreign = entry(want.mac, true, 0, "10.244.4.1");
        let diff = diff_neighbours(&desired, &[ok, stale, foreign]);
        assert!(diff.add.is_empty());
        assert_eq!(
            diff.remove,
            vec![("gw".to_string(), "10.244.3.1".parse().unwrap())]
        );
    }

    #[test]
    fn addresses_missing_by_interface_and_prefix() {
        let a = AddressSpec {
            dev: "gw".into(),
            addr: "10.244.1.1/24".parse().unwrap(),
        };
        let desired: BTreeSet<_> = [a.clone()].into();
        assert_eq!(missing_addresses(&desired, &[]), vec![a.clone()]);
        assert_eq!(
            missing_addresses(&desired, &[("gw".into(), "10.244.1.1/16".parse().unwrap())]),
            vec![a.clone()]
        );
        assert_eq!(
            missing_addresses(
                &desired,
                &[("eth0".into(), "10.244.1.1/24".parse().unwrap())]
            ),
            vec![a]
        );
        assert!(
            missing_addresses(&desired, &[("gw".into(), "10.244.1.1/24".parse().unwrap())])
                .is_empty()
        );
    }
}
