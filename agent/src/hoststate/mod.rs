//! Host state that heals itself (issue 5; field reports 3 and 5): the routes, policy rules,
//! permanent neighbours, sysctls, gateway addresses and SNAT tables Weft needs in the node's
//! namespace, and the links it manages (gateway, uplink internal port and NIC, pod host veths).
//!
//! - [`desired`]: the desired [`HostState`], a pure function of (config, node, peers)
//!   ([`weft_plan::host::desired`], re-exported).
//! - [`diff`]: observed state as plain data and the pure diff (ownership rules live there)
//!   ([`weft_plan::host::diff`], re-exported).
//! - [`kernel`]: rtnetlink dumps and single-object adds/deletes (never execs `ip`).
//! - [`nft`]: the SNAT table (`ip weft`, `ip6 weft`) over nf_tables netlink (never execs `nft`).
//! - [`netconf`]: forwarding/rp_filter change events (sysctl drift without waiting for a resync).
//! - [`links`]: the managed links ([`ManagedLinks`]) and the pure drift check.
//! - [`reconciler`]: the event-driven loop (netlink multicast groups, debounce, resync, relist
//!   after overrun).
//! - [`report`]: counters by kind, the status snapshot, Kubernetes Events for repeated drift.
//! - [`install`]: the systemd-networkd and udev drop-ins and `install-host-config`.
//!
//! Ownership tags (see [`desired`]): route protocol 87 (0x57), table 22342 (0x5746), rule
//! priorities 30700-30799 with rule protocol 87, neighbour protocol 87.

pub mod install;
pub mod kernel;
pub mod links;
pub mod netconf;
pub mod nft;
pub mod reconciler;
pub mod report;

pub use weft_plan::host::{desired, diff};

use std::path::PathBuf;

pub use desired::{
    desired, AddressSpec, HostInput, HostState, IpFamily, NeighbourSpec, PeerSpec, RouteSpec,
    RuleSpec, SnatSpec, SysctlSpec, MAIN_TABLE, RULE_PRIORITY_MAX, RULE_PRIORITY_MIN,
    WEFT_PROTOCOL, WEFT_TABLE,
};
pub use links::{LinkRole, LinkSpec, ManagedLinks, UnderlayLowered};
pub use reconciler::{HostReconciler, ReconcilerConfig};
pub use report::{DriftSink, HostMetrics, HostReport, HostStatus, KubeDriftSink};

use crate::netns::NetnsError;

/// Errors of the host-state module.
#[derive(Debug, thiserror::Error)]
pub enum HostStateError {
    /// A netlink request failed.
    #[error("cannot {action} {object}: {source}")]
    Netlink {
        /// What was attempted.
        action: String,
        /// The object, e.g. `route 10.244.2.0/24 via ...`.
        object: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// An object names an interface that does not exist.
    #[error("cannot install {object}: interface {dev} does not exist")]
    NoLink {
        /// The object.
        object: String,
        /// The interface.
        dev: String,
    },
    /// Subscribing to netlink events failed.
    #[error("cannot subscribe to netlink events in netns {netns}: {source}")]
    Subscribe {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A sysctl could not be set.
    #[error("cannot set sysctl {key}={value}: {source}")]
    Sysctl {
        /// The key under /proc/sys.
        key: String,
        /// The value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// An nf_tables request (the SNAT table) failed.
    #[error(transparent)]
    Nft(#[from] nft::NftError),
}

pub use weft_plan::peers::peer_specs;
