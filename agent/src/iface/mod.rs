//! The interface manager: the kernel side of CNI ADD, DEL and CHECK for a pod.
//!
//! A pod is wired with a veth pair created in one netlink request: the host end in the node's
//! namespace under a deterministic name ([`weft_plan::pod::host_veth_name`]) and the pod end directly in
//! the pod's namespace under the name the runtime asked for (`IFLA_NET_NS_FD` on the peer), so
//! the pod-side name never meets the host's interfaces. Both ends get explicit MACs and the MTU
//! the caller passes (the MTU plan's pod MTU); the pod end gets its addresses, default routes and,
//! for the OVS netdev datapath, TX checksum offload turned off.
//!
//! Split: [`weft_plan::pod`] holds the pure decisions (names, MACs, validation), [`link`] reads interfaces
//! back, [`veth`] creates, deletes and checks pod veths. All netlink work goes through
//! [`crate::netns::Netns::rtnetlink`] handles; nothing here calls `setns` or runs `ip`.

use std::io;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::netns::NetnsError;

pub mod link;
pub mod reaper;
pub mod veth;

pub use link::{InterfaceInfo, OperState};
pub use veth::{
    DeleteOutcome, Mismatch, PodInterfaces, PodRoute, PodVeth, PodVethSpec, VethManager,
};
pub use weft_plan::pod::{
    host_mac, host_veth_name, is_host_veth_name, legacy_host_veth_name, pod_mac, stable_mac,
    validate_ifname, InvalidIfname, HOST_VETH_PREFIX, MAX_IFNAME_LEN,
};
pub use weft_plan::MacAddr;

impl From<InvalidIfname> for IfaceError {
    fn from(e: InvalidIfname) -> Self {
        IfaceError::InvalidName {
            name: e.name,
            reason: e.reason,
        }
    }
}

/// Errors of the interface manager. Each names the interface, the namespace and the value
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// An interface name the kernel would reject.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An MTU outside what the interface and its addresses allow.
    #[error("invalid mtu {mtu} for interface {ifname}: {reason}")]
    InvalidMtu {
        /// The interface.
        ifname: String,
        /// The MTU asked for.
        mtu: u32,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An address that cannot be put on a pod interface.
    #[error("invalid address {address} for interface {ifname}: {reason}")]
    InvalidAddress {
        /// The interface.
        ifname: String,
        /// The address asked for.
        address: IpNet,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A route that cannot be installed in the pod.
    #[error("invalid route {route} for interface {ifname}: {reason}")]
    InvalidRoute {
        /// The interface.
        ifname: String,
        /// The route asked for.
        route: PodRoute,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A container id that does not fit an interface alias.
    #[error("invalid container id {container_id:?}: {reason}")]
    InvalidContainerId {
        /// The id given.
        container_id: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Opening or entering a namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The host-side name is already used in the node's namespace.
    #[error("host interface {name} already exists in netns {netns}")]
    HostNameTaken {
        /// The host-side name.
        name: String,
        /// The node's namespace.
        netns: PathBuf,
    },
    /// The pod-side name is already used in the pod's namespace.
    #[error("interface {name} already exists in pod netns {netns}")]
    PodNameTaken {
        /// The pod-side name.
        name: String,
        /// The pod's namespace.
        netns: PathBuf,
    },
    /// A link request (create, set, delete, get) failed.
    #[error("cannot {action} interface {ifname} in netns {netns}: {source}")]
    Link {
        /// What was attempted, e.g. `create veth`, `bring up`, `list addresses of`.
        action: &'static str,
        /// The interface.
        ifname: String,
        /// The namespace the request went to.
        netns: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Adding an address failed.
    #[error("cannot add address {address} to interface {ifname} in netns {netns}: {source}")]
    Address {
        /// The address.
        address: IpNet,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Adding a route failed.
    #[error("cannot add route {route} via interface {ifname} in netns {netns}: {source}")]
    Route {
        /// The route.
        route: PodRoute,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Writing a sysctl inside a namespace failed.
    #[error("cannot set sysctl {key}={value} in netns {netns}: {source}")]
    Sysctl {
        /// The sysctl, e.g. `net/ipv6/conf/eth0/accept_dad`.
        key: String,
        /// The value written.
        value: &'static str,
        /// The namespace.
        netns: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A step failed and undoing what was created failed too; both are reported.
    #[error("{cause}; rollback also failed: {rollback}")]
    Rollback {
        /// The original failure.
        cause: Box<IfaceError>,
        /// The failure while deleting what had been created.
        rollback: Box<IfaceError>,
    },
}

impl IfaceError {
    /// The errno behind a kernel failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IfaceError::Link { source, .. }
            | IfaceError::Address { source, .. }
            | IfaceError::Route { source, .. }
            | IfaceError::Sysctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Converts an rtnetlink error into an `io::Error`, keeping the kernel's errno when there is one.
pub(crate) fn netlink_io(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
