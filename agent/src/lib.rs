//! The Weft node agent library. Binaries (`weft-agent`, `weftctl`) stay thin and call into here.
//!
//! Modules follow the design brief: every piece of node state is planned by a pure function and
//! then reconciled against what the system reports.

pub mod ovsdb;
pub mod config;
pub mod mtu;
pub mod ipam;
pub mod k8s;
