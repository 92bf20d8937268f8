//! Host routes to peer pod CIDRs (encap mode), as a pure function of the peers, and the few
//! netlink operations that converge them.
//!
//! Each peer pod CIDR of a family this node has is routed `CIDR via PEER_GATEWAY dev GATEWAY
//! onlink` (as Antrea does): the host hands the packet to the bridge through its gateway port,
//! the pipeline answers the peer gateway's ARP/ND with the virtual MAC and sends the packet
//! through the tunnel. The source address the host picks is its own gateway IP, which peers
//! route back through their tunnel.
//!
//! [`peer_routes`] is the desired set; [`converge`] reads the routes on the gateway interface,
//! adds what is missing and deletes every routed (`via`) route there that is not desired (so a
//! peer deleted while the agent was down is cleaned up at start). The connected route of the
//! node's own pod CIDR has no gateway and is never touched. A later change makes all host
//! routes event-driven (netlink subscriptions); this module keeps the desired set separate from
//! the operations for that.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use ovs_flows::pipeline::PeerNode;
use rtnetlink::RouteMessageBuilder;

/// Errors of the route operations.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A netlink request failed.
    #[error("cannot {action} route {route} on interface index {ifindex}: {source}")]
    Netlink {
        /// `add`, `delete`, `list`.
        action: &'static str,
        /// The route, rendered (`*` for a listing).
        route: String,
        /// The interface.
        ifindex: u32,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// One host route on a given interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop; `None` for a directly connected route.
    pub gateway: Option<IpAddr>,
    /// The next hop is reachable on the link without a covering connected route.
    pub onlink: bool,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// The routes to every peer's pod CIDRs through the gateway, for the families the node has
/// (`local_cidrs` are the node's own pod CIDRs). Pure.
pub fn peer_routes(local_cidrs: &[IpNet], peers: &[PeerNode]) -> Vec<RouteSpec> {
    let has_v4 = local_cidrs.iter().any(|c| matches!(c, IpNet::V4(_)));
    let has_v6 = local_cidrs.iter().any(|c| matches!(c, IpNet::V6(_)));
    let mut routes: Vec<RouteSpec> = peers
        .iter()
        .flat_map(|peer| {
            let gateways = peer.gateway_ips();
            peer.pod_cidrs
                .iter()
                .filter(move |c| match c {
                    IpNet::V4(_) => has_v4,
                    IpNet::V6(_) => has_v6,
                })
                .filter_map(move |cidr| {
                    let gw = gateways.iter().find(|g| cidr.contains(*g)).copied()?;
                    Some(RouteSpec {
                        dst: cidr.trunc(),
                        gateway: Some(gw),
                        onlink: true,
                    })
                })
        })
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

/// What [`converge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Routes added.
    pub added: Vec<RouteSpec>,
    /// Routes deleted.
    pub removed: Vec<RouteSpec>,
}

impl RouteChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Makes the routed (`via`) routes of the main table on interface `ifindex` exactly `desired`.
pub async fn converge(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    desired: &[RouteSpec],
) -> Result<RouteChanges, RouteError> {
    let actual: BTreeSet<RouteSpec> = routes_on(handle, ifindex)
        .await?
        .into_iter()
        .filter(|r| r.gateway.is_some())
        .collect();
    let want: BTreeSet<RouteSpec> = desired.iter().cloned().collect();
    let mut changes = RouteChanges::default();
    for route in actual.difference(&want) {
        delete(handle, ifindex, route).await?;
        changes.removed.push(route.clone());
    }
    for route in want.difference(&actual) {
        add(handle, ifindex, route).await?;
        changes.added.push(route.clone());
    }
    Ok(changes)
}

/// The unicast routes of the main table whose output interface is `ifindex`.
pub async fn routes_on(
    handle: &rtnetlink::Handle,
    ifindex: u32,
) -> Result<Vec<RouteSpec>, RouteError> {
    let mut found = Vec::new();
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let messages: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|source| RouteError::Netlink {
                action: "list",
                route: "*".into(),
                ifindex,
                source,
            })?;
        found.extend(messages.iter().filter_map(|m| parse(m, ifindex)));
    }
    Ok(found)
}

fn parse(message: &RouteMessage, ifindex: u32) -> Option<RouteSpec> {
    let header = &message.header;
    if header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut oif = None;
    let mut dst = None;
    let mut gateway = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(a) => dst = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || oif != Some(ifindex) {
        return None;
    }
    let dst = match dst {
        Some(ip) => IpNet::new(ip, header.destination_prefix_length).ok()?,
        None => match header.address_family {
            netlink_packet_route::AddressFamily::Inet => IpNet::V4(Default::default()),
            netlink_packet_route::AddressFamily::Inet6 => IpNet::V6(Default::default()),
            _ => return None,
        },
    };
    Some(RouteSpec {
        dst,
        gateway,
        onlink: header.flags.contains(RouteFlags::Onlink),
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn message(route: &RouteSpec, ifindex: u32) -> RouteMessage {
    match route.dst {
        IpNet::V4(dst) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(ifindex);
            if let Some(IpAddr::V4(gw)) = route.gateway {
                b = b.gateway(gw);
            }
            if route.onlink {
                b = b.onlink();
            }
            b.build()
        }
        IpNet::V6(dst) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(ifindex);
            if let Some(IpAddr::V6(gw)) = route.gateway {
                b = b.gateway(gw);
            }
            if route.onlink {
                b = b.onlink();
            }
            b.build()
        }
    }
}

/// Adds (or replaces) `route` on `ifindex`.
pub async fn add(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    route: &RouteSpec,
) -> Result<(), RouteError> {
    handle
        .route()
        .add(message(route, ifindex))
        .replace()
        .execute()
        .await
        .map_err(|source| RouteError::Netlink {
            action: "add",
            route: route.to_string(),
            ifindex,
            source,
        })
}

/// Deletes `route` from `ifindex`; a route already gone is not an error.
pub async fn delete(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    route: &RouteSpec,
) -> Result<(), RouteError> {
    match handle.route().del(message(route, ifindex)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.to_io().raw_os_error() == Some(nix::errno::Errno::ESRCH as i32) =>
        {
            Ok(())
        }
        Err(source) => Err(RouteError::Netlink {
            action: "delete",
            route: route.to_string(),
            ifindex,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, id: u64, cidrs: &[&str]) -> PeerNode {
        PeerNode {
            name: name.into(),
            id,
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            transport_ip: "192.168.60.12".parse().unwrap(),
        }
    }

    #[test]
    fn one_onlink_route_per_peer_cidr_of_a_local_family() {
        let local: Vec<IpNet> = vec!["10.244.1.0/24".parse().unwrap()];
        let peers = [
            peer("b", 2, &["10.244.3.0/24", "fd00:3::/64"]),
            peer("a", 1, &["10.244.2.0/24"]),
        ];
        let routes = peer_routes(&local, &peers);
        let text: Vec<String> = routes.iter().map(RouteSpec::to_string).collect();
        assert_eq!(
            text,
            [
                "10.244.2.0/24 via 10.244.2.1 onlink",
                "10.244.3.0/24 via 10.244.3.1 onlink"
            ]
        );
        let dual: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        let routes = peer_routes(&dual, &peers);
        assert_eq!(routes.len(), 3);
        assert!(routes
            .iter()
            .any(|r| r.to_string() == "fd00:3::/64 via fd00:3::1 onlink"));
        assert!(peer_routes(&local, &[]).is_empty());
        // A /32 podCIDR has no gateway address: no route.
        assert!(peer_routes(&local, &[peer("c", 3, &["10.9.9.9/32"])]).is_empty());
    }
}
