//! The kernel side of the uplink attach, over rtnetlink in the node's namespace: the NIC's
//! snapshot, renames, link settings, addresses, routes and the few sysctls without a netlink
//! request. Every operation is idempotent (EEXIST on add and ENOENT/ESRCH/EADDRNOTAVAIL on
//! delete count as done).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use nix::errno::Errno;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::UplinkError;
use crate::iface::{netlink_io, InterfaceInfo};
use crate::netns::Netns;
use weft_plan::uplink::steps::{NicSnapshot, SavedRoute};

/// The local routing table, never recorded (the kernel maintains it).
const TABLE_LOCAL: u32 = 255;
/// `RTPROT_KERNEL`: routes the kernel made from addresses.
const PROTO_KERNEL: u8 = 2;

/// The kernel side in one namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The namespace.
    pub ns: Netns,
    /// An rtnetlink handle whose socket lives there.
    pub nl: rtnetlink::Handle,
}

fn errno_is(error: &std::io::Error, codes: &[Errno]) -> bool {
    error
        .raw_os_error()
        .is_some_and(|e| codes.iter().any(|c| *c as i32 == e))
}

impl Kernel {
    /// Opens an rtnetlink connection inside `ns`.
    pub async fn open(ns: Netns) -> Result<Self, UplinkError> {
        let nl = ns.rtnetlink().await.map_err(UplinkError::Netns)?;
        Ok(Kernel { ns, nl })
    }

    fn err(&self, action: impl Into<String>, ifname: &str, source: std::io::Error) -> UplinkError {
        UplinkError::Kernel {
            action: action.into(),
            ifname: ifname.to_string(),
            netns: self.ns.path().to_path_buf(),
            source,
        }
    }

    /// The link named `name`, raw.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, UplinkError> {
        let result = self
            .nl
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(msg) => Ok(msg),
            Err(e) => {
                let source = netlink_io(e);
                if errno_is(&source, &[Errno::ENODEV]) {
                    Ok(None)
                } else {
                    Err(self.err("look up", name, source))
                }
            }
        }
    }

    /// The link with index `index`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<InterfaceInfo>, UplinkError> {
        let result = self
            .nl
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(msg) => Ok(msg.as_ref().map(InterfaceInfo::from_message)),
            Err(e) => {
                let source = netlink_io(e);
                if errno_is(&source, &[Errno::ENODEV]) {
                    Ok(None)
                } else {
                    Err(self.err("look up", &format!("index {index}"), source))
                }
            }
        }
    }

    /// Records everything about the NIC `name` that the attach will change.
    pub async fn snapshot(&self, name: &str) -> Result<NicSnapshot, UplinkError> {
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| UplinkError::NoNic {
                name: name.to_string(),
                netns: self.ns.path().to_path_buf(),
            })?;
        let info = InterfaceInfo::from_message(&link);
        let mac = info.mac.ok_or_else(|| UplinkError::NoNic {
            name: format!("{name} (no ethernet address)"),
            netns: self.ns.path().to_path_buf(),
        })?;
        let addresses = self.addresses(info.index, name).await?;
        let routes = self.routes_via(info.index, name).await?;
        let (disable_ipv6, rp_filter) = {
            let name = name.to_string();
            self.ns
                .run(move || {
                    (
                        read_sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6")),
                        read_sysctl(&format!("net/ipv4/conf/{name}/rp_filter")),
                    )
                })
                .await
                .map_err(UplinkError::Netns)?
        };
        Ok(NicSnapshot {
            name: name.to_string(),
            index: info.index,
            mac: mac.to_string(),
            mtu: info.mtu.unwrap_or(1500),
            arp: !link.header.flags.contains(LinkFlags::Noarp),
            addresses: addresses.into_iter().map(|(net, _)| net).collect(),
            routes,
            disable_ipv6,
            rp_filter,
        })
    }

    /// Global addresses of link `index`, with their messages (for deletion).
    pub async fn addresses(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<(IpNet, AddressMessage)>, UplinkError> {
        let messages: Vec<AddressMessage> = self
            .nl
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("list addresses of", ifname, netlink_io(e)))?;
        Ok(messages
            .into_iter()
            .filter(|m| m.header.index == index && m.header.scope == AddressScope::Universe)
            .filter_map(|m| {
                let ip = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                let net = IpNet::new(ip, m.header.prefix_len).ok()?;
                Some((net, m))
            })
            .collect())
    }

    /// Every route whose output interface is `index`, except the local table and the
    /// kernel's own prefix routes; multipath routes are not recorded.
    pub async fn routes_via(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<SavedRoute>, UplinkError> {
        let mut all: Vec<RouteMessage> = self
            .nl
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("list ipv4 routes of", ifname, netlink_io(e)))?;
        let v6: Vec<RouteMessage> = self
            .nl
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("list ipv6 routes of", ifname, netlink_io(e)))?;
        all.extend(v6);
        Ok(all
            .iter()
            .filter(|m| oif(m) == Some(index))
            .filter_map(saved_route)
            .filter(|r| r.table != TABLE_LOCAL && r.protocol != PROTO_KERNEL)
            .collect())
    }

    /// Sets link `index` down, renames it to `name` (when it has another name), and brings it
    /// back up after `configure` changes.
    pub async fn rename(&self, index: u32, from: &str, name: &str) -> Result<(), UplinkError> {
        self.set(
            LinkUnspec::new_with_index(index).down().build(),
            &format!("set down for renaming to {name}"),
            from,
        )
        .await?;
        self.set(
            LinkUnspec::new_with_index(index).name(name).build(),
            &format!("rename to {name}"),
            from,
        )
        .await
    }

    /// Sets ARP, MTU and up on link `index`.
    pub async fn configure(
        &self,
        index: u32,
        ifname: &str,
        arp: bool,
        mtu: u32,
    ) -> Result<(), UplinkError> {
        self.set(
            LinkUnspec::new_with_index(index)
                .arp(arp)
                .mtu(mtu)
                .up()
                .build(),
            &format!("set arp {arp}, mtu {mtu} and up on"),
            ifname,
        )
        .await
    }

    /// Sets the link's MAC.
    pub async fn set_mac(
        &self,
        index: u32,
        ifname: &str,
        mac: weft_plan::MacAddr,
    ) -> Result<(), UplinkError> {
        self.set(
            LinkUnspec::new_with_index(index)
                .address(mac.octets().to_vec())
                .build(),
            &format!("set mac {mac} on"),
            ifname,
        )
        .await
    }

    async fn set(&self, msg: LinkMessage, action: &str, ifname: &str) -> Result<(), UplinkError> {
        self.nl
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(action, ifname, netlink_io(e)))
    }

    /// Writes sysctl `key` (below /proc/sys) inside the namespace; a key the kernel does not
    /// have (no IPv6) is skipped.
    pub async fn write_sysctl(&self, key: String, value: String) -> Result<(), UplinkError> {
        let path = self.ns.path().to_path_buf();
        let outcome = self
            .ns
            .run(
                move || match std::fs::write(format!("/proc/sys/{key}"), &value) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(UplinkError::Sysctl {
                        key,
                        value,
                        netns: path,
                        source,
                    }),
                    Ok(()) => Ok(()),
                },
            )
            .await
            .map_err(UplinkError::Netns)?;
        outcome
    }

    /// Adds `net` to link `index` (IPv6 without DAD: usable at once).
    pub async fn add_address(
        &self,
        index: u32,
        ifname: &str,
        net: IpNet,
    ) -> Result<(), UplinkError> {
        let mut request = self.nl.address().add(index, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let source = netlink_io(e);
                if errno_is(&source, &[Errno::EEXIST]) {
                    Ok(())
                } else {
                    Err(self.err(format!("add address {net} to"), ifname, source))
                }
            }
        }
    }

    /// Removes every address in `nets` from link `index` (absent ones are skipped).
    pub async fn remove_addresses(
        &self,
        index: u32,
        ifname: &str,
        nets: &[IpNet],
    ) -> Result<(), UplinkError> {
        for (net, message) in self.addresses(index, ifname).await? {
            if !nets.contains(&net) {
                continue;
            }
            if let Err(e) = self.nl.address().del(message).execute().await {
                let source = netlink_io(e);
                if !errno_is(
                    &source,
                    &[Errno::EADDRNOTAVAIL, Errno::ENOENT, Errno::ENODEV],
                ) {
                    return Err(self.err(format!("remove address {net} from"), ifname, source));
                }
            }
        }
        Ok(())
    }

    /// Adds `route` with output interface `index`; an existing one counts as done.
    pub async fn add_route(
        &self,
        index: u32,
        ifname: &str,
        route: &SavedRoute,
    ) -> Result<(), UplinkError> {
        let message = route_message(route, index).map_err(|reason| {
            self.err(
                format!("build route {}", route.destination),
                ifname,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
            )
        })?;
        match self.nl.route().add(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let source = netlink_io(e);
                if errno_is(&source, &[Errno::EEXIST]) {
                    Ok(())
                } else {
                    Err(self.err(format!("add route {} via", describe(route)), ifname, source))
                }
            }
        }
    }
}

/// `destination [via gateway] table T`.
pub fn describe(route: &SavedRoute) -> String {
    match route.gateway {
        Some(gw) => format!("{} via {gw} table {}", route.destination, route.table),
        None => format!("{} table {}", route.destination, route.table),
    }
}

fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn oif(message: &RouteMessage) -> Option<u32> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The recordable form of a unicast route message (`None` for other kinds).
fn saved_route(message: &RouteMessage) -> Option<SavedRoute> {
    if message.header.kind != RouteType::Unicast {
        return None;
    }
    let v6 = message.header.address_family == netlink_packet_route::AddressFamily::Inet6;
    let mut destination = None;
    let mut gateway = None;
    let mut table = u32::from(message.header.table);
    let mut metric = None;
    let mut pref_source = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Destination(a) => destination = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::PrefSource(a) => pref_source = route_ip(a),
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    let unspecified = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let destination = IpNet::new(
        destination.unwrap_or(unspecified),
        message.header.destination_prefix_length,
    )
    .ok()?;
    Some(SavedRoute {
        destination,
        gateway,
        table,
        metric,
        protocol: u8::from(message.header.protocol),
        scope: u8::from(message.header.scope),
        pref_source,
        onlink: message.header.flags.contains(RouteFlags::Onlink),
    })
}

/// The route message adding `route` through link `index`.
fn route_message(route: &SavedRoute, index: u32) -> Result<RouteMessage, String> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .map_err(|e| e.to_string())?;
    if let Some(gw) = route.gateway {
        builder = builder.gateway(gw).map_err(|e| e.to_string())?;
    }
    if let Some(src) = route.pref_source {
        builder = builder.pref_source(src).map_err(|e| e.to_string())?;
    }
    let mut builder = builder
        .output_interface(index)
        .table_id(route.table)
        .protocol(route.protocol.into())
        .scope(route.scope.into());
    if let Some(metric) = route.metric {
        builder = builder.priority(metric);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    Ok(builder.build())
}
