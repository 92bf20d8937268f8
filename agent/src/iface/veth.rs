//! Pod veths: create (all-or-nothing), delete (idempotent) and check (read-only).
//!
//! Routes: a pod route goes via its gateway out of the pod interface. When the gateway lies
//! inside one of the pod's address prefixes (the normal case: 10.244.1.5/24 via 10.244.1.1) the
//! route is a plain `default via GW dev eth0`. When it does not (e.g. a /32 or /128 pod address)
//! the route is installed `onlink`, telling the kernel the gateway is reachable on the link
//! without a covering connected route.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::AddressScope;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use nix::errno::Errno;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::link::{get_by_name, InterfaceInfo};
use super::reaper::Reaper;
use super::{netlink_io, IfaceError};
use crate::netns::{self, Netns};
use weft_plan::pod::{host_mac, host_veth_name, pod_mac, validate_ifname};
use weft_plan::MacAddr;

/// Smallest MTU of an interface carrying IPv4 (RFC 791).
const MIN_MTU_IPV4: u32 = 68;
/// Smallest MTU of an interface carrying IPv6 (RFC 8200).
const MIN_MTU_IPV6: u32 = 1280;
/// Largest MTU of a veth (`ETH_MAX_MTU`).
const MAX_MTU_VETH: u32 = 65535;
/// Longest interface alias the kernel takes from us: `IFLA_IFALIAS` is limited to `IFALIASZ` - 1
/// = 255 bytes including the NUL our netlink encoding sends, so 254 characters (255 fails with
/// ERANGE). The container id is stored there.
const MAX_ALIAS_LEN: usize = 254;

/// A route in the pod's namespace: `dst` via `gateway` out of the pod interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRoute {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    /// Next hop.
    pub gateway: IpAddr,
}

impl PodRoute {
    /// The default route of the gateway's family via the gateway.
    pub fn default_via(gateway: IpAddr) -> Self {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        PodRoute { dst, gateway }
    }
}

impl fmt::Display for PodRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.prefix_len() == 0 {
            write!(f, "default via {}", self.gateway)
        } else {
            write!(f, "{} via {}", self.dst, self.gateway)
        }
    }
}

/// Everything a pod's veth should be: the desired state, computed before any kernel call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVethSpec {
    /// The runtime's container id; stored as the host end's alias so a late DEL of an old
    /// sandbox never deletes the veth of a newer one.
    pub container_id: String,
    /// Name of the pod end, as the runtime asked (`CNI_IFNAME`).
    pub pod_ifname: String,
    /// Name of the host end ([`host_veth_name`]).
    pub host_ifname: String,
    /// MAC of the pod end.
    pub pod_mac: MacAddr,
    /// MAC of the host end.
    pub host_mac: MacAddr,
    /// MTU of both ends (the MTU plan's pod MTU).
    pub mtu: u32,
    /// Addresses of the pod end, with their prefix lengths.
    pub addresses: Vec<IpNet>,
    /// Routes in the pod via the pod end.
    pub routes: Vec<PodRoute>,
    /// Turn TX checksum offload off on the pod end (needed with the OVS netdev datapath).
    pub disable_tx_checksum: bool,
}

impl PodVethSpec {
    /// A spec with the deterministic host name and MACs for this pod, no addresses, no routes and
    /// checksum offload left on; the caller fills in the rest.
    pub fn new(container_id: &str, pod_name: &str, pod_ifname: &str, mtu: u32) -> Self {
        PodVethSpec {
            container_id: container_id.to_string(),
            pod_ifname: pod_ifname.to_string(),
            host_ifname: host_veth_name(pod_name, container_id, pod_ifname),
            pod_mac: pod_mac(container_id, pod_ifname),
            host_mac: host_mac(container_id, pod_ifname),
            mtu,
            addresses: Vec::new(),
            routes: Vec::new(),
            disable_tx_checksum: false,
        }
    }

    /// Checks the spec without touching the system: names, MTU against the address families,
    /// addresses, routes (gateway family, an address of that family, not the pod's own address).
    pub fn validate(&self) -> Result<(), IfaceError> {
        validate_ifname(&self.pod_ifname)?;
        validate_ifname(&self.host_ifname)?;
        if self.container_id.len() > MAX_ALIAS_LEN || self.container_id.contains('\0') {
            return Err(IfaceError::InvalidContainerId {
                container_id: self.container_id.clone(),
                reason: "longer than 254 bytes or containing NUL",
            });
        }
        let mtu_err = |reason| IfaceError::InvalidMtu {
            ifname: self.pod_ifname.clone(),
            mtu: self.mtu,
            reason,
        };
        if self.mtu < MIN_MTU_IPV4 {
            return Err(mtu_err("below 68"));
        }
        if self.mtu > MAX_MTU_VETH {
            return Err(mtu_err("above 65535"));
        }
        if self.mtu < MIN_MTU_IPV6 && self.addresses.iter().any(|a| matches!(a, IpNet::V6(_))) {
            return Err(mtu_err("below 1280 with an IPv6 address"));
        }
        for (i, address) in self.addresses.iter().enumerate() {
            let addr_err = |reason| IfaceError::InvalidAddress {
                ifname: self.pod_ifname.clone(),
                address: *address,
                reason,
            };
            let ip = address.addr();
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                return Err(addr_err("unspecified, multicast or loopback"));
            }
            if self.addresses[..i].iter().any(|a| a.addr() == ip) {
                return Err(addr_err("listed twice"));
            }
        }
        for route in &self.routes {
            let route_err = |reason| IfaceError::InvalidRoute {
                ifname: self.pod_ifname.clone(),
                route: *route,
                reason,
            };
            if route.dst.addr().is_ipv4() != route.gateway.is_ipv4() {
                return Err(route_err("destination and gateway families differ"));
            }
            if route.gateway.is_unspecified() || route.gateway.is_multicast() {
                return Err(route_err("gateway is unspecified or multicast"));
            }
            if !self
                .addresses
                .iter()
                .any(|a| a.addr().is_ipv4() == route.gateway.is_ipv4())
            {
                return Err(route_err("no pod address of the gateway's family"));
            }
            if self.addresses.iter().any(|a| a.addr() == route.gateway) {
                return Err(route_err("gateway is one of the pod's own addresses"));
            }
        }
        Ok(())
    }

    fn has_ipv6(&self) -> bool {
        self.addresses.iter().any(|a| matches!(a, IpNet::V6(_)))
    }

    /// Whether the route needs `onlink`: its gateway is outside every pod prefix.
    fn needs_onlink(&self, route: &PodRoute) -> bool {
        !self
            .addresses
            .iter()
            .any(|a| a.trunc().contains(&route.gateway))
    }
}

/// A pod veth as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVeth {
    /// Host end name.
    pub host_ifname: String,
    /// Host end index in the node's namespace.
    pub host_ifindex: u32,
    /// Host end MAC.
    pub host_mac: MacAddr,
    /// Pod end name.
    pub pod_ifname: String,
    /// Pod end index in the pod's namespace.
    pub pod_ifindex: u32,
    /// Pod end MAC.
    pub pod_mac: MacAddr,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What [`VethManager::delete`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The veth existed and was deleted (both ends).
    Deleted,
    /// There was nothing to delete.
    AlreadyGone,
    /// A veth with the host name exists but belongs to another container (a newer sandbox of the
    /// same pod); it was left alone.
    OwnedByOtherContainer {
        /// The container id stored on the existing veth.
        owner: String,
    },
}

/// One difference between a pod veth's spec and the kernel's state, for CNI CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The pod end does not exist in the pod's namespace.
    PodInterfaceMissing {
        /// Expected name.
        ifname: String,
    },
    /// The pod end exists but is not a veth.
    PodInterfaceNotVeth {
        /// Its name.
        ifname: String,
        /// Its kind, if any.
        kind: Option<String>,
    },
    /// The pod end is administratively down.
    PodInterfaceDown {
        /// Its name.
        ifname: String,
    },
    /// A MAC differs.
    Mac {
        /// The interface.
        ifname: String,
        /// As specified.
        expected: MacAddr,
        /// As found.
        actual: Option<MacAddr>,
    },
    /// An MTU differs.
    Mtu {
        /// The interface.
        ifname: String,
        /// As specified.
        expected: u32,
        /// As found.
        actual: Option<u32>,
    },
    /// An address of the spec is not on the pod end.
    AddressMissing {
        /// The interface.
        ifname: String,
        /// The address.
        address: IpNet,
    },
    /// The pod end has a global address the spec does not list.
    AddressUnexpected {
        /// The interface.
        ifname: String,
        /// The address.
        address: IpNet,
    },
    /// A route of the spec is not installed.
    RouteMissing {
        /// The interface.
        ifname: String,
        /// The route.
        route: PodRoute,
    },
    /// TX checksum offload is on although the spec turns it off.
    TxChecksumOn {
        /// The interface.
        ifname: String,
    },
    /// The host end does not exist in the node's namespace.
    HostInterfaceMissing {
        /// Expected name.
        ifname: String,
    },
    /// The host end is not the pod end's peer.
    NotPeers {
        /// Host end.
        host_ifname: String,
        /// Pod end.
        pod_ifname: String,
    },
    /// The host end carries another container's id.
    HostOwnedByOtherContainer {
        /// Host end.
        ifname: String,
        /// The container id found.
        owner: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::PodInterfaceMissing { ifname } => {
                write!(f, "pod interface {ifname} does not exist")
            }
            Mismatch::PodInterfaceNotVeth { ifname, kind } => write!(
                f,
                "pod interface {ifname} is not a veth (kind {})",
                kind.as_deref().unwrap_or("none")
            ),
            Mismatch::PodInterfaceDown { ifname } => write!(f, "pod interface {ifname} is down"),
            Mismatch::Mac {
                ifname,
                expected,
                actual,
            } => match actual {
                Some(actual) => write!(
                    f,
                    "interface {ifname} has mac {actual}, expected {expected}"
                ),
                None => write!(f, "interface {ifname} has no mac, expected {expected}"),
            },
            Mismatch::Mtu {
                ifname,
                expected,
                actual,
            } => match actual {
                Some(actual) => write!(
                    f,
                    "interface {ifname} has mtu {actual}, expected {expected}"
                ),
                None => write!(f, "interface {ifname} reports no mtu, expected {expected}"),
            },
            Mismatch::AddressMissing { ifname, address } => {
                write!(f, "interface {ifname} lacks address {address}")
            }
            Mismatch::AddressUnexpected { ifname, address } => {
                write!(f, "interface {ifname} has unexpected address {address}")
            }
            Mismatch::RouteMissing { ifname, route } => {
                write!(f, "route {route} dev {ifname} is missing")
            }
            Mismatch::TxChecksumOn { ifname } => {
                write!(f, "interface {ifname} has tx checksum offload on")
            }
            Mismatch::HostInterfaceMissing { ifname } => {
                write!(f, "host interface {ifname} does not exist")
            }
            Mismatch::NotPeers {
                host_ifname,
                pod_ifname,
            } => write!(
                f,
                "host interface {host_ifname} is not the peer of {pod_ifname}"
            ),
            Mismatch::HostOwnedByOtherContainer { ifname, owner } => {
                write!(f, "host interface {ifname} belongs to container {owner}")
            }
        }
    }
}

/// The side-effect boundary the CNI server uses for pod interfaces.
///
/// Guarantees of every implementation:
/// - `create` is all-or-nothing: on error, nothing it created remains in either namespace.
/// - `delete` is idempotent: a missing veth or a missing pod namespace is success, and a veth
///   that belongs to another container id is left alone.
/// - `check` only reads, and reports every difference rather than stopping at the first.
/// - Calls for different pods may run concurrently; the caller serialises calls for one pod.
pub trait PodInterfaces: Send + Sync {
    /// Creates and configures the pod's veth.
    fn create(
        &self,
        pod: &Netns,
        spec: &PodVethSpec,
    ) -> impl Future<Output = Result<PodVeth, IfaceError>> + Send;

    /// Deletes the pod's veth (both ends).
    fn delete(
        &self,
        host_ifname: &str,
        container_id: &str,
    ) -> impl Future<Output = Result<DeleteOutcome, IfaceError>> + Send;

    /// Compares the pod's veth with its spec.
    fn check(
        &self,
        pod: &Netns,
        spec: &PodVethSpec,
    ) -> impl Future<Output = Result<Vec<Mismatch>, IfaceError>> + Send;
}

/// Pod veths on real kernel interfaces, through netlink. Holds one rtnetlink connection in the
/// node's namespace; per call it opens one in the pod's.
#[derive(Debug, Clone)]
pub struct VethManager {
    host: Netns,
    host_nl: rtnetlink::Handle,
    reaper: Reaper,
}

impl VethManager {
    /// Connects to the node's namespace (`host`; for the agent, [`Netns::current`]). Needs a
    /// tokio runtime, which drives the connection.
    pub async fn new(host: Netns) -> Result<Self, IfaceError> {
        let host_nl = host.rtnetlink().await?;
        let reaper = Reaper::start(host_nl.clone(), host.path().to_path_buf());
        Ok(VethManager {
            host,
            host_nl,
            reaper,
        })
    }

    /// The node's namespace.
    pub fn host(&self) -> &Netns {
        &self.host
    }

    /// Reads an interface of the node's namespace (MTU, MAC, state); `Ok(None)` if absent.
    pub async fn host_interface(&self, name: &str) -> Result<Option<InterfaceInfo>, IfaceError> {
        get_by_name(&self.host_nl, self.host.path(), name).await
    }

    /// Every veth of the node's namespace whose name has the shape of a host veth
    /// ([`super::is_host_veth_name`]).
    pub async fn host_veths(&self) -> Result<Vec<InterfaceInfo>, IfaceError> {
        Ok(super::link::list(&self.host_nl, self.host.path())
            .await?
            .into_iter()
            .filter(|link| link.is_veth() && super::is_host_veth_name(&link.name))
            .collect())
    }

    /// Creates the pod's veth as `spec` says. Steps: one request creates both ends (host end
    /// here, pod end directly in `pod` with `IFLA_NET_NS_FD`, MACs and MTU set at creation);
    /// then in the pod: DAD off for IPv6, TX checksum off if asked; the host end gets the
    /// container id as alias and goes up (so the pod end has carrier at once); the pod end gets
    /// its addresses (IPv6 with `nodad`), goes up and gets its routes. Any failure after the create deletes the veth again (both ends go with either).
    pub async fn create(&self, pod: &Netns, spec: &PodVethSpec) -> Result<PodVeth, IfaceError> {
        spec.validate()?;
        let pod_nl = pod.rtnetlink().await?;
        self.create_pair(pod, &pod_nl, spec).await?;
        match self.configure(pod, &pod_nl, spec).await {
            Ok(veth) => Ok(veth),
            Err(cause) => match self.remove_pair(pod, &pod_nl, spec).await {
                Ok(()) => Err(cause),
                Err(rollback) => Err(IfaceError::Rollback {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                }),
            },
        }
    }

    /// Deletes the veth whose host end is `host_ifname` (the pod end goes with it), unless it
    /// carries another container's id. Needs no access to the pod's namespace, so it works when
    /// the namespace is already gone. An empty `container_id` skips the ownership check.
    /// Concurrent deletions are batched into one kernel request ([`super::reaper`]).
    pub async fn delete(
        &self,
        host_ifname: &str,
        container_id: &str,
    ) -> Result<DeleteOutcome, IfaceError> {
        validate_ifname(host_ifname)?;
        let Some(link) = self.host_interface(host_ifname).await? else {
            return Ok(DeleteOutcome::AlreadyGone);
        };
        if let Some(owner) = link
            .alias
            .filter(|a| !container_id.is_empty() && a != container_id)
        {
            return Ok(DeleteOutcome::OwnedByOtherContainer { owner });
        }
        if self
            .reaper
            .delete(link.index, host_ifname, self.host.path())
            .await?
        {
            Ok(DeleteOutcome::Deleted)
        } else {
            Ok(DeleteOutcome::AlreadyGone)
        }
    }

    /// Compares the pod's veth with `spec` and lists every difference (empty: all as specified).
    /// Only reads. Errors are reserved for failures to read at all.
    pub async fn check(
        &self,
        pod: &Netns,
        spec: &PodVethSpec,
    ) -> Result<Vec<Mismatch>, IfaceError> {
        let mut found = Vec::new();
        let host = self.host_interface(&spec.host_ifname).await?;
        match &host {
            None => found.push(Mismatch::HostInterfaceMissing {
                ifname: spec.host_ifname.clone(),
            }),
            Some(host) => {
                compare_link(host, spec.host_mac, spec.mtu, &mut found);
                if let Some(owner) = host.alias.as_ref().filter(|a| **a != spec.container_id) {
                    found.push(Mismatch::HostOwnedByOtherContainer {
                        ifname: spec.host_ifname.clone(),
                        owner: owner.clone(),
                    });
                }
            }
        }

        let pod_nl = pod.rtnetlink().await?;
        let Some(link) = get_by_name(&pod_nl, pod.path(), &spec.pod_ifname).await? else {
            found.push(Mismatch::PodInterfaceMissing {
                ifname: spec.pod_ifname.clone(),
            });
            return Ok(found);
        };
        if !link.is_veth() {
            found.push(Mismatch::PodInterfaceNotVeth {
                ifname: link.name.clone(),
                kind: link.kind.clone(),
            });
        }
        if !link.admin_up {
            found.push(Mismatch::PodInterfaceDown {
                ifname: link.name.clone(),
            });
        }
        compare_link(&link, spec.pod_mac, spec.mtu, &mut found);
        if let Some(host) = &host {
            if link.peer_index != Some(host.index) {
                found.push(Mismatch::NotPeers {
                    host_ifname: host.name.clone(),
                    pod_ifname: link.name.clone(),
                });
            }
        }

        let addresses = list_addresses(&pod_nl, pod.path(), &link).await?;
        for address in &spec.addresses {
            if !addresses.contains(address) {
                found.push(Mismatch::AddressMissing {
                    ifname: link.name.clone(),
                    address: *address,
                });
            }
        }
        for address in addresses.iter().filter(|a| !spec.addresses.contains(a)) {
            found.push(Mismatch::AddressUnexpected {
                ifname: link.name.clone(),
                address: *address,
            });
        }

        let routes = list_routes(&pod_nl, pod.path(), &link).await?;
        for route in spec.routes.iter().filter(|r| !routes.contains(r)) {
            found.push(Mismatch::RouteMissing {
                ifname: link.name.clone(),
                route: *route,
            });
        }

        if spec.disable_tx_checksum {
            let ifname = link.name.clone();
            if pod
                .run(move || netns::tx_checksum_enabled(&ifname))
                .await??
            {
                found.push(Mismatch::TxChecksumOn {
                    ifname: link.name.clone(),
                });
            }
        }
        Ok(found)
    }

    /// Creates both ends in one request. `EEXIST` is attributed to whichever name is taken.
    async fn create_pair(
        &self,
        pod: &Netns,
        pod_nl: &rtnetlink::Handle,
        spec: &PodVethSpec,
    ) -> Result<(), IfaceError> {
        let peer = LinkUnspec::new_with_name(&spec.pod_ifname)
            .address(spec.pod_mac.octets().to_vec())
            .mtu(spec.mtu)
            .setns_by_fd(pod.as_fd().as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_ifname.clone())
            .address(spec.host_mac.octets().to_vec())
            .mtu(spec.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let Err(err) = self.host_nl.link().add(message).execute().await else {
            return Ok(());
        };
        let source = netlink_io(err);
        if source.raw_os_error() == Some(Errno::EEXIST as i32) {
            if self.host_interface(&spec.host_ifname).await?.is_some() {
                return Err(IfaceError::HostNameTaken {
                    name: spec.host_ifname.clone(),
                    netns: self.host.path().to_path_buf(),
                });
            }
            if get_by_name(pod_nl, pod.path(), &spec.pod_ifname)
                .await?
                .is_some()
            {
                return Err(IfaceError::PodNameTaken {
                    name: spec.pod_ifname.clone(),
                    netns: pod.path().to_path_buf(),
                });
            }
        }
        Err(IfaceError::Link {
            action: "create veth",
            ifname: format!("{} (peer {})", spec.host_ifname, spec.pod_ifname),
            netns: self.host.path().to_path_buf(),
            source,
        })
    }

    /// Everything after the create; the caller rolls back on error.
    async fn configure(
        &self,
        pod: &Netns,
        pod_nl: &rtnetlink::Handle,
        spec: &PodVethSpec,
    ) -> Result<PodVeth, IfaceError> {
        let pod_path = pod.path();
        let host_link = self
            .host_interface(&spec.host_ifname)
            .await?
            .ok_or_else(|| gone("find created", &spec.host_ifname, self.host.path()))?;
        let pod_link = get_by_name(pod_nl, pod_path, &spec.pod_ifname)
            .await?
            .ok_or_else(|| gone("find created", &spec.pod_ifname, pod_path))?;

        // Kernel settings that have no rtnetlink request, made from inside the pod's namespace.
        let ifname = spec.pod_ifname.clone();
        let ipv6 = spec.has_ipv6();
        let tx_off = spec.disable_tx_checksum;
        let path = pod_path.to_path_buf();
        pod.run(move || -> Result<(), IfaceError> {
            if ipv6 {
                // Addresses (the link-local one included) are usable at once, without DAD.
                let key = format!("net/ipv6/conf/{ifname}/accept_dad");
                std::fs::write(format!("/proc/sys/{key}"), "0").map_err(|source| {
                    IfaceError::Sysctl {
                        key,
                        value: "0",
                        netns: path,
                        source,
                    }
                })?;
            }
            if tx_off {
                netns::disable_tx_checksum(&ifname)?;
            }
            Ok(())
        })
        .await??;

        // The host end is only a bridge port: the host kernel must never answer the pod's ARP
        // or ND itself (with the netdev datapath it still sees every frame on the veth, and
        // would teach the pod the host veth's MAC for the gateway; field report 3). No ARP, no
        // IPv6 on it; the pipeline answers with the virtual MAC.
        let host_ifname = spec.host_ifname.clone();
        let host_path = self.host.path().to_path_buf();
        self.host
            .run(move || -> Result<(), IfaceError> {
                let key = format!("net/ipv6/conf/{host_ifname}/disable_ipv6");
                match std::fs::write(format!("/proc/sys/{key}"), "1") {
                    // No IPv6 in the node's kernel: nothing to disable.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(IfaceError::Sysctl {
                        key,
                        value: "1",
                        netns: host_path,
                        source,
                    }),
                    Ok(()) => Ok(()),
                }
            })
            .await??;

        // Host end first, so the pod end has carrier as soon as it comes up.
        set_link(
            &self.host_nl,
            self.host.path(),
            &spec.host_ifname,
            "bring up",
            LinkUnspec::new_with_index(host_link.index)
                .alias(spec.container_id.clone())
                .arp(false)
                .up(),
        )
        .await?;

        for address in &spec.addresses {
            let mut request =
                pod_nl
                    .address()
                    .add(pod_link.index, address.addr(), address.prefix_len());
            if address.addr().is_ipv6() {
                let message = request.message_mut();
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            request.execute().await.map_err(|err| IfaceError::Address {
                address: *address,
                ifname: spec.pod_ifname.clone(),
                netns: pod_path.to_path_buf(),
                source: netlink_io(err),
            })?;
        }

        set_link(
            pod_nl,
            pod_path,
            &spec.pod_ifname,
            "bring up",
            LinkUnspec::new_with_index(pod_link.index).up(),
        )
        .await?;

        for route in &spec.routes {
            let message = route_message(route, pod_link.index, spec.needs_onlink(route));
            pod_nl
                .route()
                .add(message)
                .execute()
                .await
                .map_err(|err| IfaceError::Route {
                    route: *route,
                    ifname: spec.pod_ifname.clone(),
                    netns: pod_path.to_path_buf(),
                    source: netlink_io(err),
                })?;
        }

        Ok(PodVeth {
            host_ifname: spec.host_ifname.clone(),
            host_ifindex: host_link.index,
            host_mac: spec.host_mac,
            pod_ifname: spec.pod_ifname.clone(),
            pod_ifindex: pod_link.index,
            pod_mac: spec.pod_mac,
            mtu: spec.mtu,
        })
    }

    /// Rollback: deletes the just-created veth through its host end, or through its pod end if
    /// the host end is already gone.
    async fn remove_pair(
        &self,
        pod: &Netns,
        pod_nl: &rtnetlink::Handle,
        spec: &PodVethSpec,
    ) -> Result<(), IfaceError> {
        if let Some(link) = self.host_interface(&spec.host_ifname).await? {
            if delete_link(
                &self.host_nl,
                self.host.path(),
                &spec.host_ifname,
                link.index,
            )
            .await?
            {
                return Ok(());
            }
        }
        if let Some(link) = get_by_name(pod_nl, pod.path(), &spec.pod_ifname).await? {
            delete_link(pod_nl, pod.path(), &spec.pod_ifname, link.index).await?;
        }
        Ok(())
    }
}

impl PodInterfaces for VethManager {
    async fn create(&self, pod: &Netns, spec: &PodVethSpec) -> Result<PodVeth, IfaceError> {
        VethManager::create(self, pod, spec).await
    }

    async fn delete(
        &self,
        host_ifname: &str,
        container_id: &str,
    ) -> Result<DeleteOutcome, IfaceError> {
        VethManager::delete(self, host_ifname, container_id).await
    }

    async fn check(&self, pod: &Netns, spec: &PodVethSpec) -> Result<Vec<Mismatch>, IfaceError> {
        VethManager::check(self, pod, spec).await
    }
}

fn gone(action: &'static str, ifname: &str, netns: &Path) -> IfaceError {
    IfaceError::Link {
        action,
        ifname: ifname.to_string(),
        netns: netns.to_path_buf(),
        source: Errno::ENODEV.into(),
    }
}

fn compare_link(link: &InterfaceInfo, mac: MacAddr, mtu: u32, found: &mut Vec<Mismatch>) {
    if link.mac != Some(mac) {
        found.push(Mismatch::Mac {
            ifname: link.name.clone(),
            expected: mac,
            actual: link.mac,
        });
    }
    if link.mtu != Some(mtu) {
        found.push(Mismatch::Mtu {
            ifname: link.name.clone(),
            expected: mtu,
            actual: link.mtu,
        });
    }
}

async fn set_link(
    handle: &rtnetlink::Handle,
    netns: &Path,
    ifname: &str,
    action: &'static str,
    builder: LinkMessageBuilder<LinkUnspec>,
) -> Result<(), IfaceError> {
    handle
        .link()
        .set(builder.build())
        .execute()
        .await
        .map_err(|err| IfaceError::Link {
            action,
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            source: netlink_io(err),
        })
}

/// Deletes a link by index; `Ok(false)` if it was already gone.
async fn delete_link(
    handle: &rtnetlink::Handle,
    netns: &Path,
    ifname: &str,
    index: u32,
) -> Result<bool, IfaceError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(err) => {
            let source = netlink_io(err);
            if source.raw_os_error() == Some(Errno::ENODEV as i32) {
                Ok(false)
            } else {
                Err(IfaceError::Link {
                    action: "delete",
                    ifname: ifname.to_string(),
                    netns: netns.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn route_message(route: &PodRoute, oif: u32, onlink: bool) -> RouteMessage {
    match (route.dst, route.gateway) {
        (IpNet::V4(dst), IpAddr::V4(gw)) => {
            let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .gateway(gw)
                .output_interface(oif);
            if onlink {
                builder.onlink().build()
            } else {
                builder.build()
            }
        }
        (IpNet::V6(dst), IpAddr::V6(gw)) => {
            let builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .gateway(gw)
                .output_interface(oif);
            if onlink {
                builder.onlink().build()
            } else {
                builder.build()
            }
        }
        // Mixed families are rejected by `PodVethSpec::validate`; build nothing routable.
        _ => RouteMessage::default(),
    }
}

/// Global (non-link-local) addresses of a link.
async fn list_addresses(
    handle: &rtnetlink::Handle,
    netns: &Path,
    link: &InterfaceInfo,
) -> Result<Vec<IpNet>, IfaceError> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute()
        .try_collect()
        .await
        .map_err(|err| list_err("list addresses of", link, netns, err))?;
    let mut addresses = Vec::new();
    for message in messages {
        if message.header.scope != AddressScope::Universe {
            continue;
        }
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point).
        let ip = message
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
        if let Some(net) = ip.and_then(|ip| IpNet::new(ip, message.header.prefix_len).ok()) {
            addresses.push(net);
        }
    }
    Ok(addresses)
}

/// Routes of the main table that leave through a link, as (destination, gateway) pairs.
async fn list_routes(
    handle: &rtnetlink::Handle,
    netns: &Path,
    link: &InterfaceInfo,
) -> Result<Vec<PodRoute>, IfaceError> {
    let mut routes = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let messages: Vec<RouteMessage> =
            handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|err| list_err("list routes of", link, netns, err))?;
        routes.extend(messages.iter().filter_map(|m| parse_route(m, link.index)));
    }
    Ok(routes)
}

fn parse_route(message: &RouteMessage, oif: u32) -> Option<PodRoute> {
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut out = None;
    let mut dst = None;
    let mut gateway = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Oif(index) => out = Some(*index),
            RouteAttribute::Destination(address) => dst = route_ip(address),
            RouteAttribute::Gateway(address) => gateway = route_ip(address),
            _ => {}
        }
    }
    if out != Some(oif) {
        return None;
    }
    let gateway = gateway?;
    let prefix = message.header.destination_prefix_length;
    let dst = match dst {
        Some(ip) => IpNet::new(ip, prefix).ok()?,
        None => PodRoute::default_via(gateway).dst,
    };
    Some(PodRoute { dst, gateway })
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn list_err(
    action: &'static str,
    link: &InterfaceInfo,
    netns: &Path,
    err: rtnetlink::Error,
) -> IfaceError {
    IfaceError::Link {
        action,
        ifname: link.name.clone(),
        netns: netns.to_path_buf(),
        source: netlink_io(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PodVethSpec {
        let mut spec = PodVethSpec::new("c0ffee", "web-0", "eth0", 1450);
        spec.addresses = vec![
            "10.244.1.5/24".parse().unwrap(),
            "fd00:1::5/64".parse().unwrap(),
        ];
        spec.routes = vec![
            PodRoute::default_via("10.244.1.1".parse().unwrap()),
            PodRoute::default_via("fd00:1::1".parse().unwrap()),
        ];
        spec
    }

    #[test]
    fn new_spec_uses_the_plan() {
        let spec = PodVethSpec::new("c0ffee", "web-0", "eth0", 1450);
        assert_eq!(spec.host_ifname, host_veth_name("web-0", "c0ffee", "eth0"));
        assert_eq!(spec.pod_mac, pod_mac("c0ffee", "eth0"));
        assert_eq!(spec.host_mac, host_mac("c0ffee", "eth0"));
        assert!(!spec.disable_tx_checksum);
        spec.validate().unwrap();
    }

    #[test]
    fn dual_stack_spec_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn validation_rejects_bad_specs() {
        type Mutation = Box<dyn Fn(&mut PodVethSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("long ifname", Box::new(|s| s.pod_ifname = "x".repeat(16))),
            ("bad host name", Box::new(|s| s.host_ifname = "a/b".into())),
            ("tiny mtu", Box::new(|s| s.mtu = 67)),
            ("huge mtu", Box::new(|s| s.mtu = 65536)),
            ("ipv6 under 1280", Box::new(|s| s.mtu = 1279)),
            (
                "multicast",
                Box::new(|s| s.addresses.push("224.0.0.5/24".parse().unwrap())),
            ),
            (
                "duplicate",
                Box::new(|s| s.addresses.push("10.244.1.5/16".parse().unwrap())),
            ),
            (
                "mixed route",
                Box::new(|s| {
                    s.routes.push(PodRoute {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gateway: "fd00:1::1".parse().unwrap(),
                    })
                }),
            ),
            (
                "gateway is self",
                Box::new(|s| {
                    s.routes
                        .push(PodRoute::default_via("10.244.1.5".parse().unwrap()))
                }),
            ),
            (
                "no address of family",
                Box::new(|s| {
                    s.addresses.retain(|a| a.addr().is_ipv4());
                    s.routes.retain(|r| r.gateway.is_ipv4());
                    s.routes
                        .push(PodRoute::default_via("fd00:9::1".parse().unwrap()));
                }),
            ),
            (
                "container id",
                Box::new(|s| s.container_id = "x".repeat(256)),
            ),
        ];
        for (name, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            assert!(s.validate().is_err(), "{name} accepted");
        }
    }

    #[test]
    fn ipv4_only_spec_allows_small_mtu() {
        let mut s = spec();
        s.addresses.retain(|a| a.addr().is_ipv4());
        s.routes.retain(|r| r.gateway.is_ipv4());
        s.mtu = 576;
        s.validate().unwrap();
    }

    #[test]
    fn onlink_only_outside_pod_prefixes() {
        let mut s = spec();
        assert!(!s.needs_onlink(&s.routes[0]));
        assert!(!s.needs_onlink(&s.routes[1]));
        s.addresses = vec!["10.244.1.5/32".parse().unwrap()];
        assert!(s.needs_onlink(&PodRoute::default_via("10.244.1.1".parse().unwrap())));
    }

    #[test]
    fn route_display() {
        let r = PodRoute::default_via("10.0.0.1".parse().unwrap());
        assert_eq!(r.to_string(), "default via 10.0.0.1");
        let r = PodRoute {
            dst: "10.96.0.0/12".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(r.to_string(), "10.96.0.0/12 via 10.0.0.1");
    }

    #[test]
    fn mismatch_messages_name_interface_and_values() {
        let m = Mismatch::Mtu {
            ifname: "eth0".into(),
            expected: 1450,
            actual: Some(1400),
        };
        assert_eq!(m.to_string(), "interface eth0 has mtu 1400, expected 1450");
    }
}
