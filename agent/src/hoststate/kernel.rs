//! The kernel side of the host state over rtnetlink: dump links, addresses, routes, rules and
//! neighbours into the plain data of [`super::diff`], and install or delete single objects
//! built from specs. Every object Weft installs carries [`WEFT_PROTOCOL`]. Never execs `ip`.
//!
//! Idempotency: adds of routes and neighbours use `NLM_F_REPLACE` (same key, new content);
//! rule adds treat EEXIST as done; deletes treat ENOENT/ESRCH as done.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::IpVersion;

use super::desired::{IpFamily, NeighbourSpec, RouteSpec, RuleSpec, WEFT_PROTOCOL};
use super::diff::{ObservedNeighbour, ObservedRoute, ObservedRule};
use super::HostStateError;
use crate::iface::InterfaceInfo;

/// Index -> name of every link, and the links themselves.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The links by name.
    pub by_name: HashMap<String, InterfaceInfo>,
    /// Name by index.
    pub names: HashMap<u32, String>,
}

impl Links {
    /// The index of a named link.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).map(|l| l.index)
    }
}

fn nl_err(action: &str, object: String, err: rtnetlink::Error) -> HostStateError {
    HostStateError::Netlink {
        action: action.to_string(),
        object,
        source: crate::iface::netlink_io(err),
    }
}

fn errno_is(err: &HostStateError, errnos: &[Errno]) -> bool {
    match err {
        HostStateError::Netlink { source, .. } => source
            .raw_os_error()
            .is_some_and(|e| errnos.iter().any(|n| *n as i32 == e)),
        _ => false,
    }
}

/// Dumps every link.
pub async fn links(handle: &rtnetlink::Handle) -> Result<Links, HostStateError> {
    let messages: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("list", "links".into(), e))?;
    let mut links = Links::default();
    for message in &messages {
        let info = InterfaceInfo::from_message(message);
        links.names.insert(info.index, info.name.clone());
        links.by_name.insert(info.name.clone(), info);
    }
    Ok(links)
}

/// Dumps the global addresses of every link as (interface name, address).
pub async fn addresses(
    handle: &rtnetlink::Handle,
    links: &Links,
) -> Result<Vec<(String, IpNet)>, HostStateError> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("list", "addresses".into(), e))?;
    let mut out = Vec::new();
    for message in messages {
        if message.header.scope != AddressScope::Universe {
            continue;
        }
        let Some(dev) = links.names.get(&message.header.index) else {
            continue;
        };
        if let Some(net) = address_of(&message) {
            out.push((dev.clone(), net));
        }
    }
    Ok(out)
}

/// The address (with prefix length) an address message is about.
pub fn address_of(message: &AddressMessage) -> Option<IpNet> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    IpNet::new(ip, message.header.prefix_len).ok()
}

/// Adds an address with `noprefixroute` (Weft owns the prefix route) and, for IPv6, `nodad`.
/// EEXIST counts as done.
pub async fn add_address(
    handle: &rtnetlink::Handle,
    index: u32,
    dev: &str,
    addr: IpNet,
) -> Result<(), HostStateError> {
    let mut request = handle.address().add(index, addr.addr(), addr.prefix_len());
    let mut flags = AddressFlags::Noprefixroute;
    if addr.addr().is_ipv6() {
        flags |= AddressFlags::Nodad;
    }
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::Flags(flags));
    match request
        .execute()
        .await
        .map_err(|e| nl_err("add address", format!("{addr} dev {dev}"), e))
    {
        Err(e) if errno_is(&e, &[Errno::EEXIST]) => Ok(()),
        other => other,
    }
}

/// Dumps the unicast routes of both families in every table.
pub async fn routes(
    handle: &rtnetlink::Handle,
    links: &Links,
) -> Result<Vec<ObservedRoute>, HostStateError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let messages: Vec<_> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list", "routes".into(), e))?;
        out.extend(messages.iter().filter_map(|m| observe_route(m, links)));
    }
    Ok(out)
}

/// Converts a route message; `None` for anything that is not a single-path unicast route.
pub fn observe_route(message: &RouteMessage, links: &Links) -> Option<ObservedRoute> {
    let header = &message.header;
    if header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    let mut table = u32::from(header.table);
    let mut metric = 0;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => via = route_ip(a),
            RouteAttribute::Via(RouteVia::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
            RouteAttribute::Via(RouteVia::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    let dst = match (dst, header.address_family) {
        (Some(ip), _) => IpNet::new(ip, header.destination_prefix_length).ok()?,
        (None, AddressFamily::Inet) => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        (None, AddressFamily::Inet6) => IpNet::new(IpAddr::from([0u8; 16]), 0).ok()?,
        (None, _) => return None,
    };
    Some(ObservedRoute {
        spec: RouteSpec {
            table,
            dst,
            metric,
            via,
            dev: oif.and_then(|i| links.names.get(&i).cloned()),
            onlink: header.flags.contains(RouteFlags::Onlink),
        },
        protocol: u8::from(header.protocol),
    })
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn family_of(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

/// The netlink message for a Weft route (`oif` resolved by the caller).
pub fn route_message(route: &RouteSpec, oif: Option<u32>) -> RouteMessage {
    let mut message = RouteMessage::default();
    let header = &mut message.header;
    header.address_family = family_of(route.family());
    header.destination_prefix_length = route.dst.prefix_len();
    header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    header.protocol = RouteProtocol::from(WEFT_PROTOCOL);
    header.scope = if route.via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    header.kind = RouteType::Unicast;
    if route.onlink {
        header.flags |= RouteFlags::Onlink;
    }
    let attrs = &mut message.attributes;
    attrs.push(RouteAttribute::Table(route.table));
    attrs.push(RouteAttribute::Destination(route.dst.network().into()));
    if let Some(via) = route.via {
        attrs.push(RouteAttribute::Gateway(via.into()));
    }
    if let Some(oif) = oif {
        attrs.push(RouteAttribute::Oif(oif));
    }
    attrs.push(RouteAttribute::Priority(route.metric));
    message
}

/// Installs (or replaces, same key) a route.
pub async fn add_route(
    handle: &rtnetlink::Handle,
    route: &RouteSpec,
    links: &Links,
) -> Result<(), HostStateError> {
    let oif = match &route.dev {
        Some(dev) => Some(links.index(dev).ok_or_else(|| HostStateError::NoLink {
            object: format!("route {route}"),
            dev: dev.clone(),
        })?),
        None => None,
    };
    handle
        .route()
        .add(route_message(route, oif))
        .replace()
        .execute()
        .await
        .map_err(|e| nl_err("add", format!("route {route}"), e))
}

/// Deletes a Weft route (matched on family, table, destination, metric and protocol); ESRCH
/// (already gone) counts as done.
pub async fn delete_route(
    handle: &rtnetlink::Handle,
    route: &RouteSpec,
) -> Result<(), HostStateError> {
    let mut message = route_message(route, None);
    message.attributes.retain(|a| {
        !matches!(
            a,
            RouteAttribute::Gateway(_) | RouteAttribute::Oif(_) | RouteAttribute::Via(_)
        )
    });
    match handle
        .route()
        .del(message)
        .execute()
        .await
        .map_err(|e| nl_err("delete", format!("route {route}"), e))
    {
        Err(e) if errno_is(&e, &[Errno::ESRCH, Errno::ENOENT]) => Ok(()),
        other => other,
    }
}

/// Dumps the `lookup TABLE` rules of both families.
pub async fn rules(handle: &rtnetlink::Handle) -> Result<Vec<ObservedRule>, HostStateError> {
    let mut out = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let messages: Vec<_> = handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list", "rules".into(), e))?;
        out.extend(messages.iter().filter_map(observe_rule));
    }
    Ok(out)
}

/// Converts a rule message; `None` unless it is a `lookup TABLE` rule of IPv4 or IPv6.
pub fn observe_rule(message: &RuleMessage) -> Option<ObservedRule> {
    let header = &message.header;
    let family = match header.family {
        AddressFamily::Inet => IpFamily::V4,
        AddressFamily::Inet6 => IpFamily::V6,
        _ => return None,
    };
    if header.action != RuleAction::ToTable {
        return None;
    }
    let mut spec = RuleSpec {
        family,
        priority: 0,
        src: None,
        dst: None,
        table: u32::from(header.table),
    };
    let mut protocol = 0;
    for attr in &message.attributes {
        match attr {
            RuleAttribute::Priority(p) => spec.priority = *p,
            RuleAttribute::Table(t) => spec.table = *t,
            RuleAttribute::Source(ip) => spec.src = IpNet::new(*ip, header.src_len).ok(),
            RuleAttribute::Destination(ip) => spec.dst = IpNet::new(*ip, header.dst_len).ok(),
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            // Selectors Weft never uses: such a rule is not one of ours.
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => protocol = 0,
            _ => {}
        }
    }
    Some(ObservedRule { spec, protocol })
}

/// The netlink message for a Weft rule.
pub fn rule_message(rule: &RuleSpec) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = family_of(rule.family);
    message.header.action = RuleAction::ToTable;
    message.header.table = u8::try_from(rule.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    let attrs = &mut message.attributes;
    attrs.push(RuleAttribute::Priority(rule.priority));
    attrs.push(RuleAttribute::Table(rule.table));
    attrs.push(RuleAttribute::Protocol(RouteProtocol::from(WEFT_PROTOCOL)));
    if let Some(src) = rule.src {
        message.header.src_len = src.prefix_len();
        attrs.push(RuleAttribute::Source(src.network()));
    }
    if let Some(dst) = rule.dst {
        message.header.dst_len = dst.prefix_len();
        attrs.push(RuleAttribute::Destination(dst.network()));
    }
    message
}

/// Adds a rule; EEXIST counts as done.
pub async fn add_rule(handle: &rtnetlink::Handle, rule: &RuleSpec) -> Result<(), HostStateError> {
    let mut request = handle.rule().add();
    *request.message_mut() = rule_message(rule);
    match request
        .execute()
        .await
        .map_err(|e| nl_err("add", format!("rule {rule}"), e))
    {
        Err(e) if errno_is(&e, &[Errno::EEXIST]) => Ok(()),
        other => other,
    }
}

/// Deletes a Weft rule; ENOENT counts as done.
pub async fn delete_rule(
    handle: &rtnetlink::Handle,
    rule: &RuleSpec,
) -> Result<(), HostStateError> {
    match handle
        .rule()
        .del(rule_message(rule))
        .execute()
        .await
        .map_err(|e| nl_err("delete", format!("rule {rule}"), e))
    {
        Err(e) if errno_is(&e, &[Errno::ENOENT, Errno::ESRCH]) => Ok(()),
        other => other,
    }
}

/// Dumps the neighbour entries of both families.
pub async fn neighbours(
    handle: &rtnetlink::Handle,
    links: &Links,
) -> Result<Vec<ObservedNeighbour>, HostStateError> {
    let messages: Vec<_> = handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("list", "neighbours".into(), e))?;
    Ok(messages
        .iter()
        .filter_map(|m| observe_neighbour(m, links))
        .collect())
}

/// Converts a neighbour message; `None` without an IP destination.
pub fn observe_neighbour(message: &NeighbourMessage, links: &Links) -> Option<ObservedNeighbour> {
    let mut ip = None;
    let mut mac = None;
    let mut protocol = 0;
    for attr in &message.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
            }
            NeighbourAttribute::Protocol(p) => protocol = u8::from(*p),
            _ => {}
        }
    }
    Some(ObservedNeighbour {
        dev: links
            .names
            .get(&message.header.ifindex)
            .cloned()
            .unwrap_or_default(),
        ip: ip?,
        mac,
        permanent: message.header.state == NeighbourState::Permanent,
        protocol,
    })
}

/// Installs (or replaces) a permanent neighbour entry tagged with [`WEFT_PROTOCOL`].
pub async fn add_neighbour(
    handle: &rtnetlink::Handle,
    neighbour: &NeighbourSpec,
    links: &Links,
) -> Result<(), HostStateError> {
    let index = links
        .index(&neighbour.dev)
        .ok_or_else(|| HostStateError::NoLink {
            object: format!("neighbour {neighbour}"),
            dev: neighbour.dev.clone(),
        })?;
    let mut request = handle
        .neighbours()
        .add(index, neighbour.ip)
        .link_layer_address(&neighbour.mac)
        .state(NeighbourState::Permanent)
        .replace();
    request
        .message_mut()
        .attributes
        .push(NeighbourAttribute::Protocol(RouteProtocol::from(
            WEFT_PROTOCOL,
        )));
    request
        .execute()
        .await
        .map_err(|e| nl_err("add", format!("neighbour {neighbour}"), e))
}

/// Deletes a neighbour entry; ENOENT counts as done.
pub async fn delete_neighbour(
    handle: &rtnetlink::Handle,
    dev: &str,
    ip: IpAddr,
    links: &Links,
) -> Result<(), HostStateError> {
    let Some(index) = links.index(dev) else {
        return Ok(()); // the interface is gone, and its neighbours with it
    };
    let mut message = NeighbourMessage::default();
    message.header.family = family_of(IpFamily::of(&ip));
    message.header.ifindex = index;
    message
        .attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    match handle
        .neighbours()
        .del(message)
        .execute()
        .await
        .map_err(|e| nl_err("delete", format!("neighbour {ip} dev {dev}"), e))
    {
        Err(e) if errno_is(&e, &[Errno::ENOENT, Errno::ESRCH]) => Ok(()),
        other => other,
    }
}

/// Reads a sysctl of the calling thread's network namespace (`/proc/sys/KEY`), trimmed.
pub fn read_sysctl(key: &str) -> io::Result<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key)).map(|v| v.trim().to_string())
}

/// Writes a sysctl of the calling thread's network namespace.
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        let mut l = Links::default();
        l.names.insert(7, "gw".into());
        l
    }

    #[test]
    fn route_messages_round_trip_through_observe() {
        for route in [
            RouteSpec {
                table: 254,
                dst: "10.244.2.0/24".parse().unwrap(),
                metric: 0,
                via: Some("10.244.2.1".parse().unwrap()),
                dev: Some("gw".into()),
                onlink: true,
            },
            RouteSpec {
                table: super::super::desired::WEFT_TABLE,
                dst: "fd00:10::/64".parse().unwrap(),
                metric: 256,
                via: None,
                dev: Some("gw".into()),
                onlink: false,
            },
        ] {
            let message = route_message(&route, Some(7));
            let seen = observe_route(&message, &links()).unwrap();
            assert_eq!(seen.spec, route);
            assert!(seen.owned());
        }
    }

    #[test]
    fn rule_messages_round_trip_and_foreign_selectors_disown() {
        let rule = RuleSpec {
            family: IpFamily::V6,
            priority: 30700,
            src: Some("fd00:10::/64".parse().unwrap()),
            dst: None,
            table: super::super::desired::WEFT_TABLE,
        };
        let mut message = rule_message(&rule);
        let seen = observe_rule(&message).unwrap();
        assert_eq!(seen.spec, rule);
        assert!(seen.owned());
        message.attributes.push(RuleAttribute::FwMark(1));
        assert!(!observe_rule(&message).unwrap().owned());
        message.header.action = RuleAction::Blackhole;
        assert!(observe_rule(&message).is_none());
    }

    #[test]
    fn non_unicast_and_multipath_routes_are_skipped() {
        let route = RouteSpec {
            table: 254,
            dst: "10.0.0.0/8".parse().unwrap(),
            metric: 0,
            via: None,
            dev: None,
            onlink: false,
        };
        let mut message = route_message(&route, None);
        message.header.kind = RouteType::Local;
        assert!(observe_route(&message, &links()).is_none());
        let mut message = route_message(&route, None);
        message.attributes.push(RouteAttribute::MultiPath(vec![]));
        assert!(observe_route(&message, &links()).is_none());
    }
}
