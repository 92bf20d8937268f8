//! The CNI error object (spec section 5, "Error") and the error codes Weft uses.
//!
//! Every failure the plugin reports, whether found by the plugin itself or passed through from
//! the agent, ends up as one [`CniError`] printed on stdout with a non-zero exit status.

use serde::{Deserialize, Serialize};

use crate::env::EnvError;
use crate::version::{CniVersion, VersionError};

/// Well-known CNI error codes (0-99 are reserved by the spec) and Weft's own codes (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing environment variables; the message names them.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure, for example reading stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (malformed JSON, wrong JSON types).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network configuration (missing or invalid values).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: a transient condition such as the agent not being reachable.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin is not available and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Weft: the agent answered something the plugin cannot use (protocol mismatch, bad result).
    pub const AGENT_PROTOCOL: u32 = 100;
    /// Weft: an internal failure of the plugin itself (for example the async runtime).
    pub const INTERNAL: u32 = 101;
}

/// The spec's JSON error object: `{"cniVersion", "code", "msg", "details"}`.
///
/// `details` is left out of the JSON when empty, as the reference implementation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg} (code {code})")]
pub struct CniError {
    /// The protocol version in use: the requested version when it is supported, else the latest.
    #[serde(rename = "cniVersion")]
    pub cni_version: CniVersion,
    /// A numeric error code, see [`code`].
    pub code: u32,
    /// A short message characterising the error.
    pub msg: String,
    /// A longer message describing the error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// Builds an error with the latest CNI version; [`CniError::with_version`] fixes it later.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: CniVersion::LATEST,
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Returns the same error reported in `version`.
    pub fn with_version(mut self, version: CniVersion) -> Self {
        self.cni_version = version;
        self
    }

    /// The error object as the single line of JSON the plugin prints.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{}","code":{},"msg":"error object not serialisable"}}"#,
                self.cni_version, self.code
            )
        })
    }
}

impl From<EnvError> for CniError {
    fn from(err: EnvError) -> Self {
        let details = err.details();
        CniError::new(code::INVALID_ENVIRONMENT, err.to_string(), details)
    }
}

impl From<VersionError> for CniError {
    fn from(err: VersionError) -> Self {
        let details = match &err {
            VersionError::Unsupported(_) => {
                format!("plugin supports {}", CniVersion::supported_list())
            }
            VersionError::VerbNotAvailable { command, .. } => format!(
                "{command} requires cniVersion {} or later",
                CniVersion::minimum_for(*command).as_str()
            ),
        };
        CniError::new(code::INCOMPATIBLE_VERSION, err.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_in_spec_shape() {
        let err = CniError::new(code::INVALID_NETWORK_CONFIG, "missing name", "the key")
            .with_version(CniVersion::V0_4_0);
        let v: serde_json::Value = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "0.4.0", "code": 7, "msg": "missing name", "details": "the key"})
        );
    }

    #[test]
    fn empty_details_are_omitted() {
        let err = CniError::new(code::TRY_AGAIN_LATER, "later", "");
        let v: serde_json::Value = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.1.0", "code": 11, "msg": "later"})
        );
        let back: CniError = serde_json::from_value(v).unwrap();
        assert_eq!(back, err);
    }
}
