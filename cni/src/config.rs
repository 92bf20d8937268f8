//! The network configuration the runtime passes on stdin.
//!
//! Unlike the agent's own config, unknown keys are tolerated: the spec lets runtimes and other
//! tools add keys (`args`, `runtimeConfig`, `cni.dev/*`, conventions) that a plugin must accept.
//! The whole object is kept as received and forwarded to the agent.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{code, CniError};
use crate::version::{CniVersion, VersionError};

/// Where the agent listens when the config has no `agentSocket`.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/weft/cni.sock";

/// How long the plugin waits for the agent when the config has no `agentTimeoutSeconds`.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound accepted for `agentTimeoutSeconds`.
pub const MAX_AGENT_TIMEOUT_SECONDS: u64 = 600;

/// Errors in the network configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The input is not JSON, not an object, or a known key has the wrong JSON type (code 6).
    #[error("failed to decode network config: {0}")]
    Decode(#[source] serde_json::Error),
    /// A required key is absent or empty (code 7).
    #[error("network config is missing {0}")]
    Missing(&'static str),
    /// The network name breaks the spec's charset (code 7).
    #[error("invalid network name {0:?}")]
    InvalidName(String),
    /// `agentSocket` is not an absolute path (code 7).
    #[error("invalid agentSocket {0:?}: not an absolute path")]
    InvalidAgentSocket(PathBuf),
    /// `agentTimeoutSeconds` is out of range (code 7).
    #[error("invalid agentTimeoutSeconds {0}: expected 1 to {MAX_AGENT_TIMEOUT_SECONDS}")]
    InvalidTimeout(u64),
    /// `cniVersion` is not supported (code 1).
    #[error(transparent)]
    Version(#[from] VersionError),
}

impl From<ConfigError> for CniError {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::Version(v) => v.into(),
            ConfigError::Decode(e) => CniError::new(
                code::DECODING_FAILURE,
                "failed to decode network config",
                e.to_string(),
            ),
            other => CniError::new(code::INVALID_NETWORK_CONFIG, other.to_string(), ""),
        }
    }
}

/// One entry of `cni.dev/valid-attachments` (GC input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The `CNI_CONTAINERID` of the ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The `CNI_IFNAME` of the ADD.
    pub ifname: String,
}

/// The parsed network configuration of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: the version the runtime speaks and expects answers in.
    pub cni_version: CniVersion,
    /// `name`: the network name.
    pub name: String,
    /// `type`: the plugin type (normally `weft`).
    pub plugin_type: String,
    /// `agentSocket`: the agent's unix socket (default [`DEFAULT_AGENT_SOCKET`]).
    pub agent_socket: PathBuf,
    /// `agentTimeoutSeconds`: the bound on one agent call (default [`DEFAULT_AGENT_TIMEOUT`]).
    pub agent_timeout: Duration,
    /// `prevResult`, still in the shape of `cni_version`.
    pub prev_result: Option<serde_json::Value>,
    /// `cni.dev/valid-attachments` (GC only).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `runtimeConfig`: capability arguments from the runtime.
    pub runtime_config: Option<serde_json::Value>,
    /// The whole object as received, unknown keys included.
    pub raw: serde_json::Value,
}

/// The keys the plugin reads; everything else stays in `raw`.
#[derive(Deserialize)]
struct KnownKeys {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    #[serde(rename = "agentSocket")]
    agent_socket: Option<PathBuf>,
    #[serde(rename = "agentTimeoutSeconds")]
    agent_timeout_seconds: Option<u64>,
    #[serde(rename = "prevResult")]
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<serde_json::Value>,
}

impl NetConf {
    /// Parses and validates the configuration bytes from stdin.
    ///
    /// Order of checks: decoding (code 6), required keys and values (code 7), then the version
    /// (code 1), so a config missing `cniVersion` is reported as invalid rather than incompatible.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(ConfigError::Decode)?;
        if !raw.is_object() {
            return Err(ConfigError::Decode(serde::de::Error::custom(
                "network config is not a JSON object",
            )));
        }
        let keys = KnownKeys::deserialize(&raw).map_err(ConfigError::Decode)?;

        let cni_version = non_empty(keys.cni_version).ok_or(ConfigError::Missing("cniVersion"))?;
        let name = non_empty(keys.name).ok_or(ConfigError::Missing("name"))?;
        let plugin_type = non_empty(keys.plugin_type).ok_or(ConfigError::Missing("type"))?;
        validate_network_name(&name)?;

        let agent_socket = keys
            .agent_socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET));
        if !agent_socket.is_absolute() {
            return Err(ConfigError::InvalidAgentSocket(agent_socket));
        }
        let agent_timeout = match keys.agent_timeout_seconds {
            None => DEFAULT_AGENT_TIMEOUT,
            Some(s @ 1..=MAX_AGENT_TIMEOUT_SECONDS) => Duration::from_secs(s),
            Some(s) => return Err(ConfigError::InvalidTimeout(s)),
        };
        let cni_version = cni_version.parse()?;

        Ok(Self {
            cni_version,
            name,
            plugin_type,
            agent_socket,
            agent_timeout,
            prev_result: keys.prev_result.filter(|v| !v.is_null()),
            valid_attachments: keys.valid_attachments,
            runtime_config: keys.runtime_config,
            raw,
        })
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Checks a network name against the spec: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn validate_network_name(name: &str) -> Result<(), ConfigError> {
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes()).map_err(CniError::from)
    }

    #[test]
    fn parses_a_minimal_config_with_defaults() {
        let conf = parse(r#"{"cniVersion":"1.1.0","name":"weft","type":"weft"}"#).unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_1_0);
        assert_eq!(conf.name, "weft");
        assert_eq!(conf.plugin_type, "weft");
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.agent_timeout, DEFAULT_AGENT_TIMEOUT);
        assert_eq!(conf.prev_result, None);
    }

    #[test]
    fn tolerates_unknown_keys_and_keeps_them() {
        let conf = parse(
            r#"{"cniVersion":"0.3.1","name":"n","type":"weft","ipMasq":true,
                "runtimeConfig":{"portMappings":[]},"args":{"cni":{"x":1}},"cni.dev/other":7,
                "agentSocket":"/run/w.sock","agentTimeoutSeconds":5}"#,
        )
        .unwrap();
        assert_eq!(conf.raw["ipMasq"], true);
        assert_eq!(conf.raw["args"]["cni"]["x"], 1);
        assert_eq!(
            conf.runtime_config,
            Some(serde_json::json!({"portMappings": []}))
        );
        assert_eq!(conf.agent_socket, PathBuf::from("/run/w.sock"));
        assert_eq!(conf.agent_timeout, Duration::from_secs(5));
    }

    #[test]
    fn gc_attachments() {
        let conf = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"weft",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            conf.valid_attachments,
            Some(vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
    }

    #[test]
    fn error_codes() {
        let cases = [
            ("{", code::DECODING_FAILURE),
            ("[]", code::DECODING_FAILURE),
            ("", code::DECODING_FAILURE),
            (
                r#"{"cniVersion":1,"name":"n","type":"weft"}"#,
                code::DECODING_FAILURE,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"weft","agentTimeoutSeconds":-1}"#,
                code::DECODING_FAILURE,
            ),
            (
                r#"{"name":"n","type":"weft"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"","name":"n","type":"weft"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","type":"weft"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"-n","type":"weft"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"a/b","type":"weft"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"weft","agentSocket":"rel.sock"}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"weft","agentTimeoutSeconds":0}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"weft","agentTimeoutSeconds":601}"#,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","type":"weft"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                r#"{"cniVersion":"2.0.0","name":"n","type":"weft"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).unwrap_err().code, expected, "{input}");
        }
    }

    #[test]
    fn messages_name_the_key() {
        let err = parse(r#"{"cniVersion":"1.1.0","type":"weft"}"#).unwrap_err();
        assert_eq!(err.msg, "network config is missing name");
        let err = parse(r#"{"cniVersion":"0.2.0","name":"n","type":"weft"}"#).unwrap_err();
        assert_eq!(err.msg, "incompatible CNI version \"0.2.0\"");
        assert_eq!(
            err.details,
            "plugin supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
        );
    }
}
