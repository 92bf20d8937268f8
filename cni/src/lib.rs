//! Weft's CNI plugin library: the CNI 1.1.0 protocol (verbs, environment, network config,
//! versions, results, error object) and the plugin <-> agent RPC ([`rpc`]).
//!
//! The `weft` binary is a thin wrapper around [`plugin::run`]. The agent depends on this crate
//! for the RPC types ([`rpc::CniRequest`], [`rpc::CniResponse`], [`result::CniResult`],
//! [`error::CniError`]) and serves them with [`rpc::server`].
//!
//! Supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0; answers are given in the version the
//! runtime asked for.

#![forbid(unsafe_code)]

pub mod config;
pub mod env;
pub mod error;
pub mod plugin;
pub mod result;
pub mod rpc;
pub mod version;

pub use error::CniError;
pub use version::CniVersion;
