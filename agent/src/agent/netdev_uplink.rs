//! MINIMAL uplink attach for encap on the netdev datapath (stop-gap, to be replaced by the
//! crash-safe, journaled attach of `agent/src/uplink/`).
//!
//! Why: OVS's userspace tunnels route the outer packet through OVS's own route table, which
//! only leads somewhere when the tunnel endpoint IP is on an interface OVS owns; with the node
//! IP on a plain NIC, `ofproto/trace` ends in "native tunnel routing failed" and nothing is
//! sent. So, with `ovsDatapathType: netdev` and encap, the transport NIC `T` is attached:
//! 1. `T` is renamed `T~` (the name is kept for the host, as the brief asks), set down, its
//!    addresses removed (and with them its routes), ARP off, IPv6 off, strict reverse path
//!    filter (the kernel still sees every frame the netdev datapath reads from it and must not
//!    answer or accept them itself), then up;
//! 2. `T~` becomes bridge port [`ports::UPLINK`] (32770) and an internal port named `T`
//!    becomes [`ports::HOST_INTERNAL`] (32771), both with `mtu_request` = the plan's uplink MTU;
//!    the internal port gets `T`'s MAC (Interface `mac` column) and, in its external_ids, the
//!    addresses and routes it must carry (so they are re-applied after ovs-vswitchd recreates
//!    the tap device);
//! 3. the internal port gets `T`'s addresses and routes back.
//!
//! The pipeline passes everything between the two ports through in table 0
//! (`ovs_flows::pipeline::uplink_bridge_flows`); OVS terminates tunnel packets on the way to
//! the internal port and sends encapsulated ones as if they came from it.
//!
//! Not crash-safe: a kill between steps 1 and 3 leaves the node without its IP until the
//! operator (or the journaled version) repairs it. Every step is idempotent, and a start with
//! the internal port already present only re-converges it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use ovs_flows::pipeline::ports;
use rtnetlink::LinkUnspec;

use super::gateway::{self, GatewayError, GatewaySpec};
use super::{OWNER_KEY, OWNER_VALUE};
use crate::iface::MacAddr;
use crate::netns::Netns;
use crate::ovsdb::{
    Condition, Operation, Ovs, OvsBridgeClient, OvsdbError, PortKind, PortSpec, Row,
};
use crate::peer_routes::{self, RouteError, RouteSpec};

/// Interface external id on the host internal port: the renamed NIC behind it.
pub const NIC_KEY: &str = "weft-uplink-nic";
/// Interface external id on the host internal port: its addresses (comma-separated CIDRs).
pub const ADDRS_KEY: &str = "weft-uplink-addrs";
/// Interface external id on the host internal port: its routes (`;`-separated
/// `DST[,via=GW][,onlink]`).
pub const ROUTES_KEY: &str = "weft-uplink-routes";

const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the minimal uplink attach.
#[derive(Debug, thiserror::Error)]
pub enum NetdevUplinkError {
    /// The transport interface does not exist.
    #[error("transport interface {0} does not exist in the node's netns")]
    NoInterface(String),
    /// The transport interface has no MAC.
    #[error("transport interface {0} has no ethernet address")]
    NoMac(String),
    /// A netlink request failed.
    #[error("cannot {action} interface {ifname}: {source}")]
    Netlink {
        /// What was attempted.
        action: String,
        /// The interface.
        ifname: String,
        /// Why.
        source: std::io::Error,
    },
    /// OVSDB failed.
    #[error("uplink port {port}: {source}")]
    Ovsdb {
        /// The port.
        port: String,
        /// Why.
        source: OvsdbError,
    },
    /// OVS gave a port another OpenFlow port than the fixed one.
    #[error("uplink port {port} got ofport {got}, expected {want}")]
    WrongOfport {
        /// The port.
        port: String,
        /// Assigned.
        got: u32,
        /// Fixed.
        want: u32,
    },
    /// Converging the internal port's link failed.
    #[error(transparent)]
    Link(#[from] GatewayError),
    /// Moving a route failed.
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// The attached uplink as converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedUplink {
    /// The host internal port (the transport interface's original name).
    pub host_port: String,
    /// The renamed NIC.
    pub nic: String,
    /// The MAC both carry.
    pub mac: MacAddr,
    /// The plan's uplink MTU.
    pub mtu: u32,
    /// The node addresses on the internal port.
    pub addresses: Vec<IpNet>,
    /// The routes on the internal port (other than connected ones).
    pub routes: Vec<RouteSpec>,
}

/// The NIC's name once attached: `T~` (T cut to 14 bytes).
pub fn nic_name(transport: &str) -> String {
    let mut base = transport.to_string();
    while base.len() > 14 {
        base.pop();
    }
    format!("{base}~")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut octets = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut octets {
        *octet = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(octets))
}

/// Renders routes for [`ROUTES_KEY`].
pub fn encode_routes(routes: &[RouteSpec]) -> String {
    routes
        .iter()
        .map(|r| {
            let mut s = r.dst.to_string();
            if let Some(gw) = r.gateway {
                s.push_str(&format!(",via={gw}"));
            }
            if r.onlink {
                s.push_str(",onlink");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses [`ROUTES_KEY`]; malformed entries are left out.
pub fn decode_routes(text: &str) -> Vec<RouteSpec> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .filter_map(|entry| {
            let mut parts = entry.split(',');
            let dst: IpNet = parts.next()?.parse().ok()?;
            let mut route = RouteSpec {
                dst,
                gateway: None,
                onlink: false,
            };
            for part in parts {
                if let Some(gw) = part.strip_prefix("via=") {
                    route.gateway = Some(gw.parse::<IpAddr>().ok()?);
                } else if part == "onlink" {
                    route.onlink = true;
                }
            }
            Some(route)
        })
        .collect()
}

/// Attaches (or re-converges) the transport interface `transport` on `bridge`.
pub async fn attach(
    ovs: &Ovs,
    bridge: &str,
    host: &Netns,
    nl: &rtnetlink::Handle,
    transport: &str,
    mtu: u32,
) -> Result<AttachedUplink, NetdevUplinkError> {
    let recorded = ovs.client().read_cache(|cache| {
        cache.by_name("Interface", transport).and_then(|(_, row)| {
            let ids = row.get_map("external_ids");
            (row.get_str("type") == Some("internal") && ids.contains_key(NIC_KEY))
                .then(|| ids.clone())
        })
    });
    let uplink = match recorded {
        Some(ids) => from_ids(transport, mtu, &ids)?,
        None => detach_nic(host, nl, transport, mtu).await?,
    };
    ensure_ports(ovs, bridge, &uplink).await?;
    converge_host_port(nl, host.path(), &uplink).await?;
    Ok(uplink)
}

fn from_ids(
    transport: &str,
    mtu: u32,
    ids: &BTreeMap<String, String>,
) -> Result<AttachedUplink, NetdevUplinkError> {
    let get = |k: &str| ids.get(k).cloned().unwrap_or_default();
    let mac = ids
        .get("weft-uplink-mac")
        .and_then(|m| parse_mac(m))
        .ok_or_else(|| NetdevUplinkError::NoMac(transport.to_string()))?;
    Ok(AttachedUplink {
        host_port: transport.to_string(),
        nic: get(NIC_KEY),
        mac,
        mtu,
        addresses: get(ADDRS_KEY)
            .split(',')
            .filter_map(|a| a.parse().ok())
            .collect(),
        routes: decode_routes(&get(ROUTES_KEY)),
    })
}

/// Step 1: reads the NIC's MAC, addresses and routes, renames it and strips it.
async fn detach_nic(
    host: &Netns,
    nl: &rtnetlink::Handle,
    transport: &str,
    mtu: u32,
) -> Result<AttachedUplink, NetdevUplinkError> {
    let nl_err = |action: &str, ifname: &str, source: std::io::Error| NetdevUplinkError::Netlink {
        action: action.to_string(),
        ifname: ifname.to_string(),
        source,
    };
    let link = crate::iface::link::get_by_name(nl, host.path(), transport)
        .await
        .map_err(|e| nl_err("look up", transport, std::io::Error::other(e.to_string())))?
        .ok_or_else(|| NetdevUplinkError::NoInterface(transport.to_string()))?;
    let mac = link
        .mac
        .ok_or_else(|| NetdevUplinkError::NoMac(transport.to_string()))?;
    let addresses = global_addresses(nl, link.index)
        .await
        .map_err(|e| nl_err("list addresses of", transport, e))?;
    let routes: Vec<RouteSpec> = peer_routes::routes_on(nl, link.index)
        .await?
        .into_iter()
        .filter(|r| r.gateway.is_some())
        .collect();
    let nic = nic_name(transport);
    nl.link()
        .set(LinkUnspec::new_with_index(link.index).down().build())
        .execute()
        .await
        .map_err(|e| nl_err("set down", transport, crate::iface::netlink_io(e)))?;
    nl.link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .name(nic.clone())
                .arp(false)
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| nl_err("rename", transport, crate::iface::netlink_io(e)))?;
    // The NIC keeps no address: converge it to an empty address set.
    let stripped = GatewaySpec {
        name: nic.clone(),
        mac,
        mtu,
        addresses: Vec::new(),
    };
    let nic_for_sysctl = nic.clone();
    let _ = host
        .run(move || {
            for (key, value) in [
                (format!("net/ipv6/conf/{nic_for_sysctl}/disable_ipv6"), "1"),
                (format!("net/ipv4/conf/{nic_for_sysctl}/rp_filter"), "1"),
            ] {
                if let Err(error) = std::fs::write(format!("/proc/sys/{key}"), value) {
                    tracing::warn!(%key, %error, "cannot set sysctl on the uplink nic");
                }
            }
        })
        .await;
    gateway::ensure_link(nl, host.path(), &stripped).await?;
    tracing::warn!(
        nic = %nic, host_port = %transport, ?addresses, routes = %encode_routes(&routes),
        "netdev datapath: attaching the transport interface to the bridge (minimal attach)"
    );
    Ok(AttachedUplink {
        host_port: transport.to_string(),
        nic,
        mac,
        mtu,
        addresses,
        routes,
    })
}

/// Step 2: the NIC port and the host internal port, with fixed ofports and `mtu_request`.
async fn ensure_ports(
    ovs: &Ovs,
    bridge: &str,
    uplink: &AttachedUplink,
) -> Result<(), NetdevUplinkError> {
    let err = |port: &str| {
        let port = port.to_string();
        move |source| NetdevUplinkError::Ovsdb { port, source }
    };
    let nic = PortSpec::new(&uplink.nic, PortKind::System)
        .with_ofport_request(ports::UPLINK)
        .with_mtu_request(uplink.mtu)
        .with_external_id(OWNER_KEY, OWNER_VALUE);
    let host_port = PortSpec::new(&uplink.host_port, PortKind::Internal)
        .with_ofport_request(ports::HOST_INTERNAL)
        .with_mtu_request(uplink.mtu)
        .with_external_id(OWNER_KEY, OWNER_VALUE)
        .with_external_id(NIC_KEY, &uplink.nic)
        .with_external_id("weft-uplink-mac", &uplink.mac.to_string())
        .with_external_id(
            ADDRS_KEY,
            &uplink
                .addresses
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .with_external_id(ROUTES_KEY, &encode_routes(&uplink.routes));
    ovs.ensure_port(bridge, &nic)
        .await
        .map_err(err(&uplink.nic))?;
    ovs.ensure_port(bridge, &host_port)
        .await
        .map_err(err(&uplink.host_port))?;
    ovs.client()
        .transact(vec![Operation::update(
            "Interface",
            vec![Condition::eq("name", uplink.host_port.as_str())],
            Row::new().with("mac", uplink.mac.to_string().as_str()),
        )])
        .await
        .map_err(err(&uplink.host_port))?;
    for (name, want) in [
        (&uplink.nic, ports::UPLINK),
        (&uplink.host_port, ports::HOST_INTERNAL),
    ] {
        let got = ovs
            .wait_for_ofport(name, APPEAR_TIMEOUT)
            .await
            .map_err(err(name))?;
        if got != want {
            return Err(NetdevUplinkError::WrongOfport {
                port: name.clone(),
                got,
                want,
            });
        }
    }
    Ok(())
}

/// Step 3 (and the re-convergence after ovs-vswitchd recreated the tap): MAC, MTU, up, the
/// node addresses and the routes on the host internal port.
pub async fn converge_host_port(
    nl: &rtnetlink::Handle,
    netns: &Path,
    uplink: &AttachedUplink,
) -> Result<Vec<String>, NetdevUplinkError> {
    let spec = GatewaySpec {
        name: uplink.host_port.clone(),
        mac: uplink.mac,
        mtu: uplink.mtu,
        addresses: uplink.addresses.clone(),
    };
    let mut changes = gateway::ensure_link(nl, netns, &spec).await?;
    let link = crate::iface::link::get_by_name(nl, netns, &uplink.host_port)
        .await
        .map_err(|e| NetdevUplinkError::Netlink {
            action: "look up".into(),
            ifname: uplink.host_port.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .ok_or_else(|| NetdevUplinkError::NoInterface(uplink.host_port.clone()))?;
    let have = peer_routes::routes_on(nl, link.index).await?;
    for route in uplink.routes.iter().filter(|r| !have.contains(r)) {
        peer_routes::add(nl, link.index, route).await?;
        changes.push(format!("route {route}"));
    }
    Ok(changes)
}

async fn global_addresses(
    nl: &rtnetlink::Handle,
    index: u32,
) -> Result<Vec<IpNet>, std::io::Error> {
    let messages: Vec<_> = nl
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(crate::iface::netlink_io)?;
    Ok(messages
        .iter()
        .filter(|m| m.header.scope == AddressScope::Universe)
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })?;
            IpNet::new(ip, m.header.prefix_len).ok()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_names_fit_and_keep_a_marker() {
        assert_eq!(nic_name("uplink0"), "uplink0~");
        assert_eq!(nic_name("a-very-long-nic"), "a-very-long-ni~");
        assert!(nic_name("a-very-long-nic").len() <= 15);
    }

    #[test]
    fn routes_round_trip_through_external_ids() {
        let routes = vec![
            RouteSpec {
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("192.168.60.1".parse().unwrap()),
                onlink: false,
            },
            RouteSpec {
                dst: "fd00:99::/64".parse().unwrap(),
                gateway: Some("fd00:60::1".parse().unwrap()),
                onlink: true,
            },
        ];
        let text = encode_routes(&routes);
        assert_eq!(
            text,
            "0.0.0.0/0,via=192.168.60.1;fd00:99::/64,via=fd00:60::1,onlink"
        );
        assert_eq!(decode_routes(&text), routes);
        assert_eq!(decode_routes("junk;;10.0.0.0/8,via=x"), vec![]);
        let mac = MacAddr([0x0a, 0x58, 0, 1, 0xfe, 0xff]);
        assert_eq!(parse_mac(&mac.to_string()), Some(mac));
        assert_eq!(parse_mac("0a:58:00:01:fe"), None);
        assert_eq!(parse_mac("0a:58:00:01:fe:ff:00"), None);
    }
}
