//! The Weft node agent library. Binaries (`weft-agent`, `weftctl`) stay thin and call into here.
//!
//! Modules follow the design brief: every piece of node state is planned by a pure function and
//! then reconciled against what the system reports.

#![deny(unsafe_code)] // `forbid` in every other crate root; the one exception lives in netns.rs

pub mod api;
pub mod cniconf;
pub mod cniserver;
pub mod cniwatch;
pub mod config;
pub mod ctl;
pub mod flows;
pub mod hoststate;
pub mod iface;
pub mod ipam;
pub mod k8s;
pub mod metrics;
pub mod mtu;
pub mod netns;
pub mod node;
pub mod ovsdb;
pub mod ports;
pub mod repairs;
pub mod socket;
pub mod uplink;
