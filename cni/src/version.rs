//! CNI specification versions: which ones Weft speaks and which verbs each one allows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::env::Command;

/// A CNI specification version the plugin supports.
///
/// Ordered oldest first, so `v >= CniVersion::V0_4_0` reads as "0.4.0 or later".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0: rich result type, plugin chaining.
    V0_3_0,
    /// 0.3.1: typo fixes only.
    V0_3_1,
    /// 0.4.0: CHECK, prevResult on DEL.
    V0_4_0,
    /// 1.0.0: `version` removed from `ips`.
    V1_0_0,
    /// 1.1.0: STATUS, GC, interface `mtu`/`socketPath`/`pciID`, route attributes.
    V1_1_0,
}

/// The shape of results and prevResults for a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// 0.3.0, 0.3.1 and 0.4.0: `ips[].version` required, interfaces and routes without 1.1 extras.
    V0_4,
    /// 1.0.0: no `ips[].version`; interfaces and routes without the 1.1 extras.
    V1_0,
    /// 1.1.0: interface `mtu`/`socketPath`/`pciID`, route `mtu`/`advmss`/`priority`/`table`/`scope`.
    V1_1,
}

/// Errors about versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The version string is not one the plugin supports.
    #[error("incompatible CNI version {0:?}")]
    Unsupported(String),
    /// The verb does not exist in the requested version.
    #[error("{command} is not available in CNI version {version}")]
    VerbNotAvailable {
        /// The verb the runtime asked for.
        command: Command,
        /// The version the runtime asked for.
        version: CniVersion,
    },
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest supported version.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as written in JSON, e.g. `"0.4.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// The oldest version in which `command` exists.
    pub fn minimum_for(command: Command) -> CniVersion {
        match command {
            Command::Add | Command::Del | Command::Version => CniVersion::V0_3_0,
            Command::Check => CniVersion::V0_4_0,
            Command::Status | Command::Gc => CniVersion::V1_1_0,
        }
    }

    /// Fails when `command` does not exist in this version (CHECK before 0.4.0, STATUS and GC
    /// before 1.1.0), which the spec reports as an incompatible version (code 1).
    pub fn check_verb(self, command: Command) -> Result<(), VersionError> {
        if self >= Self::minimum_for(command) {
            Ok(())
        } else {
            Err(VersionError::VerbNotAvailable {
                command,
                version: self,
            })
        }
    }

    /// The result shape this version uses.
    pub fn result_format(self) -> ResultFormat {
        match self {
            CniVersion::V0_3_0 | CniVersion::V0_3_1 | CniVersion::V0_4_0 => ResultFormat::V0_4,
            CniVersion::V1_0_0 => ResultFormat::V1_0,
            CniVersion::V1_1_0 => ResultFormat::V1_1,
        }
    }

    /// `"0.3.0, 0.3.1, ..."`, for messages.
    pub fn supported_list() -> String {
        Self::ALL.map(CniVersion::as_str).join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| VersionError::Unsupported(s.to_owned()))
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The VERSION answer: `{"cniVersion": <input version>, "supportedVersions": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The value of `cniVersion` given on input (the latest version when none was given).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Every version the plugin supports.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// The answer to VERSION for the given stdin.
    ///
    /// VERSION never fails: the spec asks to echo the input `cniVersion`, so a plausible version
    /// string (digits and dots) is echoed even when unsupported, letting the runtime see the
    /// supported list; empty, malformed or implausible input is answered with the latest version.
    pub fn for_input(stdin: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Input {
            #[serde(rename = "cniVersion")]
            cni_version: Option<serde_json::Value>,
        }
        let requested = serde_json::from_slice::<Input>(stdin)
            .ok()
            .and_then(|input| match input.cni_version {
                Some(serde_json::Value::String(s)) if is_plausible_version(&s) => Some(s),
                _ => None,
            });
        Self {
            cni_version: requested.unwrap_or_else(|| CniVersion::LATEST.as_str().to_owned()),
            supported_versions: CniVersion::ALL.map(|v| v.as_str().to_owned()).to_vec(),
        }
    }
}

fn is_plausible_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.split('.').count() == 3
        && s.split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{code, CniError};

    #[test]
    fn parses_every_supported_version_and_rejects_others() {
        for v in CniVersion::ALL {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "", "1.1", "v1.1.0"] {
            assert_eq!(
                bad.parse::<CniVersion>(),
                Err(VersionError::Unsupported(bad.to_owned()))
            );
        }
    }

    #[test]
    fn verbs_per_version() {
        use Command::*;
        let v = CniVersion::V0_3_1;
        assert!(v.check_verb(Add).is_ok() && v.check_verb(Del).is_ok());
        assert!(v.check_verb(Check).is_err());
        assert!(CniVersion::V0_4_0.check_verb(Check).is_ok());
        for v in [CniVersion::V0_4_0, CniVersion::V1_0_0] {
            assert!(v.check_verb(Status).is_err());
            assert!(v.check_verb(Gc).is_err());
        }
        assert!(CniVersion::V1_1_0.check_verb(Status).is_ok());
        assert!(CniVersion::V1_1_0.check_verb(Gc).is_ok());
        let err: CniError = CniVersion::V1_0_0.check_verb(Gc).unwrap_err().into();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(err.msg, "GC is not available in CNI version 1.0.0");
        assert_eq!(err.details, "GC requires cniVersion 1.1.0 or later");
    }

    #[test]
    fn result_formats() {
        assert_eq!(CniVersion::V0_3_0.result_format(), ResultFormat::V0_4);
        assert_eq!(CniVersion::V0_4_0.result_format(), ResultFormat::V0_4);
        assert_eq!(CniVersion::V1_0_0.result_format(), ResultFormat::V1_0);
        assert_eq!(CniVersion::V1_1_0.result_format(), ResultFormat::V1_1);
    }

    #[test]
    fn version_info_echoes_input() {
        let info = VersionInfo::for_input(br#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(info.cni_version, "0.4.0");
        assert_eq!(
            info.supported_versions,
            ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        );
        assert_eq!(
            VersionInfo::for_input(br#"{"cniVersion":"0.2.0"}"#).cni_version,
            "0.2.0"
        );
        for junk in [
            &b""[..],
            b"{",
            br#"{"cniVersion":7}"#,
            br#"{"cniVersion":"x"}"#,
        ] {
            assert_eq!(VersionInfo::for_input(junk).cni_version, "1.1.0");
        }
    }
}
