//! The plugin <-> agent protocol: JSON-RPC 2.0 (jsonrpsee) over a unix stream socket.
//!
//! # Wire format
//! Each message is one JSON-RPC 2.0 object serialised without raw newlines and followed by a
//! single `\n` ([`framing`]). Blank lines are ignored; a frame longer than
//! [`framing::MAX_FRAME_LEN`] closes the connection. The plugin opens one connection per
//! invocation, sends one request and waits for its answer.
//!
//! # Methods
//! [`method::ADD`], [`method::DEL`], [`method::CHECK`], [`method::STATUS`], [`method::GC`]. Each
//! takes one positional parameter, a [`CniRequest`], and answers a [`CniResponse`]: ADD must set
//! `result` (1.1.0 shape; the plugin converts it to the runtime's version), the others leave it
//! `None`.
//!
//! # Errors
//! The agent reports a CNI failure as a JSON-RPC error whose `code` is the CNI error code (always
//! positive, so it never collides with JSON-RPC's reserved negative codes), whose `message` is the
//! CNI `msg`, and whose `data` is [`RpcErrorData`] carrying `details`. Build it with
//! `ErrorObjectOwned::from(cni_error)`. The plugin passes such errors through unchanged. A
//! negative code (unknown method, invalid params) is a protocol error: plugin code 100.
//!
//! # Serving
//! The agent registers the methods on a `jsonrpsee::RpcModule` and hands each accepted connection
//! to [`server::serve_connection`] (or the whole listener to [`server::serve`]).

pub mod client;
pub mod framing;
pub mod server;

use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

use crate::config::Attachment;
use crate::env::{CniArgs, Command};
use crate::error::{code, CniError};
use crate::result::CniResult;
use crate::version::CniVersion;

pub use crate::config::DEFAULT_AGENT_SOCKET;

/// JSON-RPC method names.
pub mod method {
    /// CNI ADD.
    pub const ADD: &str = "cni_add";
    /// CNI DEL.
    pub const DEL: &str = "cni_del";
    /// CNI CHECK.
    pub const CHECK: &str = "cni_check";
    /// CNI STATUS.
    pub const STATUS: &str = "cni_status";
    /// CNI GC.
    pub const GC: &str = "cni_gc";
}

/// The method serving `command`; VERSION is answered by the plugin alone.
pub fn method_for(command: Command) -> Option<&'static str> {
    match command {
        Command::Add => Some(method::ADD),
        Command::Del => Some(method::DEL),
        Command::Check => Some(method::CHECK),
        Command::Status => Some(method::STATUS),
        Command::Gc => Some(method::GC),
        Command::Version => None,
    }
}

/// One CNI invocation as forwarded to the agent; the same struct for every method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniRequest {
    /// The verb.
    pub command: Command,
    /// The `cniVersion` the runtime asked for (answers are converted to it by the plugin).
    pub cni_version: CniVersion,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK), validated by the plugin.
    pub container_id: Option<String>,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL), an absolute path without `..`.
    pub netns: Option<String>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK), a valid Linux interface name.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, parsed (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: CniArgs,
    /// The network name (`name`).
    pub network_name: String,
    /// The network configuration exactly as received on stdin, unknown keys included.
    pub network_config: serde_json::Value,
    /// `prevResult` converted to the 1.1.0 shape (required for CHECK, optional for ADD/DEL).
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC only).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// When the plugin started this call, in milliseconds since the Unix epoch. A DEL wins over
    /// every ADD of the same attachment the runtime started before it, whatever order the agent
    /// sees them in. `None` from older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<u64>,
    /// When the plugin gives up waiting for the answer (its `agentTimeoutSeconds` after it
    /// started), in milliseconds since the Unix epoch. The agent stops an ADD still running
    /// shortly before and rolls it back, so nothing the runtime was told failed is finished
    /// later. `None` from older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

/// Milliseconds since the Unix epoch now (the clock [`CniRequest::started_unix_ms`] and
/// [`CniRequest::deadline_unix_ms`] are on).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl CniRequest {
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    pub fn pod_namespace(&self) -> Option<&str> {
        self.args.get(CniArgs::K8S_POD_NAMESPACE)
    }

    /// `K8S_POD_NAME` from `CNI_ARGS`.
    pub fn pod_name(&self) -> Option<&str> {
        self.args.get(CniArgs::K8S_POD_NAME)
    }

    /// `K8S_POD_UID` from `CNI_ARGS`.
    pub fn pod_uid(&self) -> Option<&str> {
        self.args.get(CniArgs::K8S_POD_UID)
    }
}

/// The agent's answer to any method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResponse {
    /// The ADD result in the 1.1.0 shape; `None` for DEL, CHECK, STATUS and GC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CniResult>,
}

/// The `data` member of an agent error: the CNI `details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcErrorData {
    /// The CNI error's `details`.
    #[serde(default)]
    pub details: String,
}

impl From<CniError> for ErrorObjectOwned {
    fn from(err: CniError) -> Self {
        let code = i32::try_from(err.code).unwrap_or(i32::MAX);
        let data = (!err.details.is_empty()).then_some(RpcErrorData {
            details: err.details,
        });
        ErrorObjectOwned::owned(code, err.msg, data)
    }
}

/// Turns a JSON-RPC error from the agent into the CNI error the plugin prints.
///
/// Positive codes are CNI errors and pass through; anything else is a protocol error (code 100).
pub fn cni_error_from_rpc(err: &ErrorObjectOwned, method: &str) -> CniError {
    let details = err.data().map(|raw| {
        serde_json::from_str::<RpcErrorData>(raw.get())
            .map(|d| d.details)
            .unwrap_or_else(|_| raw.get().to_owned())
    });
    match u32::try_from(err.code()) {
        Ok(cni_code) if cni_code > 0 => {
            CniError::new(cni_code, err.message(), details.unwrap_or_default())
        }
        _ => CniError::new(
            code::AGENT_PROTOCOL,
            format!("agent rejected {method}: {}", err.message()),
            format!("json-rpc error code {}", err.code()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_errors_round_trip_through_json_rpc() {
        let err = CniError::new(
            code::TRY_AGAIN_LATER,
            "agent not ready",
            "bootstrap running",
        );
        let obj = ErrorObjectOwned::from(err.clone());
        assert_eq!(obj.code(), 11);
        let wire = serde_json::to_string(&obj).unwrap();
        let back: ErrorObjectOwned = serde_json::from_str(&wire).unwrap();
        assert_eq!(cni_error_from_rpc(&back, method::ADD), err);

        let no_details = CniError::new(120, "pod cidr exhausted", "");
        let obj = ErrorObjectOwned::from(no_details.clone());
        assert!(obj.data().is_none());
        assert_eq!(cni_error_from_rpc(&obj, method::ADD), no_details);
    }

    #[test]
    fn json_rpc_protocol_errors_become_plugin_code_100() {
        let obj = ErrorObjectOwned::owned::<()>(-32601, "Method not found", None);
        let err = cni_error_from_rpc(&obj, method::GC);
        assert_eq!(err.code, code::AGENT_PROTOCOL);
        assert_eq!(err.msg, "agent rejected cni_gc: Method not found");
    }

    #[test]
    fn foreign_error_data_is_kept_as_text() {
        let obj = ErrorObjectOwned::owned(7, "bad", Some("plain text"));
        assert_eq!(
            cni_error_from_rpc(&obj, method::ADD).details,
            "\"plain text\""
        );
    }

    #[test]
    fn every_verb_but_version_has_a_method() {
        assert_eq!(method_for(Command::Add), Some("cni_add"));
        assert_eq!(method_for(Command::Del), Some("cni_del"));
        assert_eq!(method_for(Command::Check), Some("cni_check"));
        assert_eq!(method_for(Command::Status), Some("cni_status"));
        assert_eq!(method_for(Command::Gc), Some("cni_gc"));
        assert_eq!(method_for(Command::Version), None);
    }
}
