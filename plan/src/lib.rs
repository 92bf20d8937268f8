//! Weft's pure planners: every piece of node state the agent sets up is first computed here as
//! desired state, by functions of plain data (configuration, cluster view, local pods) that do no
//! IO. The agent (`weft-agent`) reads the system, calls these, and reconciles; ovs-flows turns the
//! plan into flows.
//!
//! This crate depends on data crates only (ipnet, serde, serde_json, thiserror): no runtime,
//! netlink, Kubernetes or OS crate, so a planner cannot do IO and its tests need no root. The
//! e2e crate's `layering` test enforces that from Cargo.lock.

#![forbid(unsafe_code)]

pub mod gateway;
pub mod host;
pub mod mac;
pub mod mode;
pub mod mtu;
pub mod names;
pub mod peers;
pub mod pod;
pub mod policy;
pub mod record;
pub mod transport;
pub mod tunnel;
pub mod uplink;
pub mod view;

pub use mac::MacAddr;
