//! Host state as the API shows it: the routes read back from the kernel over netlink, their
//! comparison with the host planner's desired routes ([`compare_routes`], pure; the desired set
//! comes from [`weft_plan::host::desired`] through [`super::HostPlan`]), and a text dump of
//! every route, rule and neighbour for support bundles.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::rule::RuleAttribute;
use rtnetlink::{IpVersion, RouteMessageBuilder};

use super::types::{HostRoute, HostStateReport, RouteState, RouteStatus};

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// Errors reading host state.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {what} of the node: {message}")]
pub struct HostError {
    /// What was listed (`routes`, `rules`, `neighbours`, `links`).
    pub what: &'static str,
    /// The netlink error.
    pub message: String,
}

fn err(what: &'static str) -> impl Fn(rtnetlink::Error) -> HostError {
    move |e| HostError {
        what,
        message: e.to_string(),
    }
}

/// Desired vs actual. `actual` should already be restricted to routes that concern Weft (its
/// devices, the pod CIDRs). Pure.
pub fn compare_routes(desired: Vec<HostRoute>, actual: Vec<HostRoute>) -> HostStateReport {
    let want: BTreeSet<&HostRoute> = desired.iter().collect();
    let have: BTreeSet<&HostRoute> = actual.iter().collect();
    let mut routes: Vec<RouteStatus> = desired
        .iter()
        .map(|r| RouteStatus {
            route: r.clone(),
            state: if have.contains(r) {
                RouteState::Ok
            } else {
                RouteState::Missing
            },
        })
        .collect();
    routes.extend(
        actual
            .iter()
            .filter(|r| !want.contains(r))
            .map(|r| RouteStatus {
                route: r.clone(),
                state: RouteState::Unexpected,
            }),
    );
    HostStateReport {
        desired,
        actual,
        routes,
    }
}

/// Interface index -> name.
pub async fn link_names(handle: &rtnetlink::Handle) -> Result<BTreeMap<u32, String>, HostError> {
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err("links"))?;
    Ok(links
        .into_iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((l.header.index, n.clone())),
                _ => None,
            })
        })
        .collect())
}

/// One parsed route message.
#[derive(Debug, Clone)]
struct Parsed {
    route: HostRoute,
    kind: RouteType,
    protocol: String,
    scope: String,
    dst: Option<IpNet>,
}

async fn all_routes(handle: &rtnetlink::Handle) -> Result<Vec<RouteMessage>, HostError> {
    let mut messages = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let found: Vec<RouteMessage> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(err("routes"))?;
        messages.extend(found);
    }
    Ok(messages)
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn parse_route(message: &RouteMessage, names: &BTreeMap<u32, String>) -> Parsed {
    let mut table = u32::from(message.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut device = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(index) => {
                device = Some(
                    names
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("if{index}")),
                )
            }
            _ => {}
        }
    }
    let prefix = message.header.destination_prefix_length;
    let dst = dst.and_then(|ip| IpNet::new(ip, prefix).ok());
    let destination = match (dst, message.header.address_family) {
        (Some(net), _) => net.to_string(),
        (None, _) => "default".to_string(),
    };
    Parsed {
        route: HostRoute {
            destination,
            device,
            gateway: gateway.map(|g| g.to_string()),
            table,
        },
        kind: message.header.kind,
        protocol: format!("{:?}", message.header.protocol).to_lowercase(),
        scope: format!("{:?}", message.header.scope).to_lowercase(),
        dst,
    }
}

/// The kernel's routes that concern Weft: unicast routes of the main table and Weft's table
/// ([`weft_plan::names::WEFT_TABLE`]) on one of `devices` or toward one of `cidrs` (the pod
/// CIDRs and the destinations Weft wants; link-local and multicast left out).
pub async fn actual_routes(
    handle: &rtnetlink::Handle,
    devices: &[String],
    pod_cidrs: &[IpNet],
) -> Result<Vec<HostRoute>, HostError> {
    let names = link_names(handle).await?;
    let mut routes: Vec<HostRoute> = all_routes(handle)
        .await?
        .iter()
        .map(|m| parse_route(m, &names))
        .filter(|p| {
            (p.route.table == MAIN_TABLE || p.route.table == weft_plan::names::WEFT_TABLE)
                && p.kind == RouteType::Unicast
        })
        .filter(|p| !p.dst.is_some_and(is_link_local_or_multicast))
        .filter(|p| {
            p.route.device.as_ref().is_some_and(|d| devices.contains(d))
                || p.dst.is_some_and(|d| {
                    pod_cidrs
                        .iter()
                        .any(|c| c.contains(&d.network()) || d.contains(&c.network()))
                })
        })
        .map(|p| p.route)
        .collect();
    routes.sort();
    routes.dedup();
    Ok(routes)
}

fn is_link_local_or_multicast(net: IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(ip) => ip.is_multicast() || ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_multicast() || (ip.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Every route, rule and neighbour of the namespace as text (one object per line), for
/// support bundles: `(routes, rules, neighbours)`.
pub async fn dump(handle: &rtnetlink::Handle) -> Result<(String, String, String), HostError> {
    let names = link_names(handle).await?;
    let mut routes = String::new();
    for message in all_routes(handle).await? {
        let p = parse_route(&message, &names);
        let _ = write!(routes, "{:?} {}", p.kind, p.route.destination);
        if let Some(gw) = &p.route.gateway {
            let _ = write!(routes, " via {gw}");
        }
        if let Some(dev) = &p.route.device {
            let _ = write!(routes, " dev {dev}");
        }
        let _ = writeln!(
            routes,
            " table {} proto {} scope {}",
            p.route.table, p.protocol, p.scope
        );
    }
    let mut rules = String::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let found: Vec<_> = handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(err("rules"))?;
        for rule in found {
            let mut line = String::new();
            let mut table = u32::from(rule.header.table);
            for attr in &rule.attributes {
                match attr {
                    RuleAttribute::Priority(p) => line.insert_str(0, &format!("{p}: ")),
                    RuleAttribute::Source(ip) => {
                        let _ = write!(line, "from {ip}/{} ", rule.header.src_len);
                    }
                    RuleAttribute::Destination(ip) => {
                        let _ = write!(line, "to {ip}/{} ", rule.header.dst_len);
                    }
                    RuleAttribute::FwMark(m) => {
                        let _ = write!(line, "fwmark {m:#x} ");
                    }
                    RuleAttribute::Iifname(n) => {
                        let _ = write!(line, "iif {n} ");
                    }
                    RuleAttribute::Oifname(n) => {
                        let _ = write!(line, "oif {n} ");
                    }
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if !line.contains("from ") {
                line.push_str("from all ");
            }
            let _ = writeln!(
                rules,
                "{}lookup {table} {:?} {:?}",
                line, rule.header.family, rule.header.action
            );
        }
    }
    let mut neighbours = String::new();
    let found: Vec<_> = handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err("neighbours"))?;
    for n in found {
        let mut dst = String::from("?");
        let mut lladdr = None;
        for attr in &n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = ip.to_string(),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                    dst = ip.to_string()
                }
                NeighbourAttribute::LinkLayerAddress(bytes) => {
                    lladdr = Some(
                        bytes
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(":"),
                    )
                }
                _ => {}
            }
        }
        let dev = names
            .get(&n.header.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", n.header.ifindex));
        let _ = writeln!(
            neighbours,
            "{dst} dev {dev} lladdr {} {:?}",
            lladdr.as_deref().unwrap_or("-"),
            n.header.state
        );
    }
    Ok((routes, rules, neighbours))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, dev: &str) -> HostRoute {
        HostRoute {
            destination: dst.into(),
            device: Some(dev.into()),
            gateway: None,
            table: MAIN_TABLE,
        }
    }

    #[test]
    fn comparison_marks_missing_and_unexpected() {
        let desired = vec![route("10.244.1.0/24", "gw"), route("fd00::/64", "gw")];
        let actual = vec![route("10.244.1.0/24", "gw"), route("10.9.0.0/16", "gw")];
        let report = compare_routes(desired, actual);
        let states: Vec<(String, RouteState)> = report
            .routes
            .iter()
            .map(|s| (s.route.destination.clone(), s.state))
            .collect();
        assert_eq!(
            states,
            [
                ("10.244.1.0/24".to_string(), RouteState::Ok),
                ("fd00::/64".to_string(), RouteState::Missing),
                ("10.9.0.0/16".to_string(), RouteState::Unexpected),
            ]
        );
    }

    #[test]
    fn link_local_and_multicast_are_ignored() {
        assert!(is_link_local_or_multicast("fe80::/64".parse().unwrap()));
        assert!(is_link_local_or_multicast("ff00::/8".parse().unwrap()));
        assert!(is_link_local_or_multicast(
            "169.254.0.0/16".parse().unwrap()
        ));
        assert!(!is_link_local_or_multicast("fd00::/64".parse().unwrap()));
    }
}
