//! The node's host state as desired state (routes, rules, neighbours, sysctls, addresses, SNAT
//! tables: [`desired`]) and the pure diff against what the kernel reports ([`diff`]). The agent's
//! `hoststate` reconciler reads the kernel, calls these, and applies the result.

pub mod desired;
pub mod diff;
