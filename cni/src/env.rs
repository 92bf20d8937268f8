//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`,
//! `CNI_PATH`, with the per-verb requirements of spec 1.1.0 and Weft's validation.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Component, Path};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Longest container id Weft accepts: the agent keeps it as the host veth's alias, which Linux
/// bounds at IFALIASZ - 1 bytes; with the terminating NUL the agent's netlink request carries,
/// 254 bytes is the most the kernel takes (255 fails with ERANGE). Runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID_LEN: usize = 254;

/// A CNI verb (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Add a container to the network.
    Add,
    /// Remove a container from the network (idempotent).
    Del,
    /// Check a container's networking is as expected.
    Check,
    /// Report whether the plugin can service ADD.
    Status,
    /// Remove resources of attachments not in the runtime's valid list.
    Gc,
    /// Report the supported spec versions.
    Version,
}

impl Command {
    /// The verb as the runtime spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the verb acts on one attachment (container id + ifname).
    pub fn is_attachment_verb(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => return Err(EnvError::UnknownCommand(other.to_owned())),
        })
    }
}

/// Errors in the CNI environment; all map to code 4 (invalid environment variables).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Variables the verb requires are unset or empty.
    #[error("required environment variables missing: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// `CNI_COMMAND` is not a known verb.
    #[error("unknown CNI_COMMAND {0:?}")]
    UnknownCommand(String),
    /// A variable's value is not valid UTF-8.
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// `CNI_CONTAINERID` has characters outside the spec's charset.
    #[error("invalid CNI_CONTAINERID {0:?}")]
    InvalidContainerId(String),
    /// `CNI_IFNAME` is not a usable Linux interface name.
    #[error("invalid CNI_IFNAME {value:?}: {reason}")]
    InvalidIfname {
        /// The value given.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `CNI_NETNS` is not an absolute path without `..` components.
    #[error("invalid CNI_NETNS {value:?}: {reason}")]
    InvalidNetns {
        /// The value given.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A `CNI_ARGS` pair is not `KEY=VALUE`.
    #[error("invalid CNI_ARGS pair {0:?}: expected KEY=VALUE")]
    InvalidArgs(String),
}

impl EnvError {
    /// The spec's details text for this error.
    pub(crate) fn details(&self) -> String {
        match self {
            EnvError::Missing(_) => String::new(),
            EnvError::UnknownCommand(_) => "expected one of ADD, DEL, CHECK, STATUS, GC, VERSION".into(),
            EnvError::NotUtf8(_) => String::new(),
            EnvError::InvalidContainerId(_) => format!("a container id starts with an alphanumeric character, followed by alphanumerics, '_', '.' or '-', at most {MAX_CONTAINER_ID_LEN} bytes"),
            EnvError::InvalidIfname { .. } => format!("an interface name has 1 to {MAX_IFNAME_LEN} bytes, is not '.' or '..', and has no '/', ':' or whitespace"),
            EnvError::InvalidNetns { .. } => "the network namespace is an absolute path without '..' components".into(),
            EnvError::InvalidArgs(_) => "CNI_ARGS is KEY=VALUE pairs separated by ';'".into(),
        }
    }
}

/// The `CNI_*` variables as found in the process environment, before any validation.
///
/// Empty values count as unset, as in the reference implementation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnv {
    command: Option<OsString>,
    container_id: Option<OsString>,
    netns: Option<OsString>,
    ifname: Option<OsString>,
    args: Option<OsString>,
    path: Option<OsString>,
}

impl RawEnv {
    /// Collects the `CNI_*` variables from the current process.
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars_os())
    }

    /// Collects the `CNI_*` variables from `vars`, ignoring everything else.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: Into<OsString>,
    {
        let mut env = Self::default();
        for (key, value) in vars {
            let slot = match key.as_ref().to_str() {
                Some("CNI_COMMAND") => &mut env.command,
                Some("CNI_CONTAINERID") => &mut env.container_id,
                Some("CNI_NETNS") => &mut env.netns,
                Some("CNI_IFNAME") => &mut env.ifname,
                Some("CNI_ARGS") => &mut env.args,
                Some("CNI_PATH") => &mut env.path,
                _ => continue,
            };
            let value = value.into();
            *slot = (!value.is_empty()).then_some(value);
        }
        env
    }

    /// The verb, which every invocation needs.
    pub fn command(&self) -> Result<Command, EnvError> {
        get("CNI_COMMAND", &self.command)?
            .ok_or(EnvError::Missing(vec!["CNI_COMMAND"]))?
            .parse()
    }

    /// Checks the variables `command` requires (spec 1.1.0 section 2) and validates those the verb
    /// uses. Missing variables are all reported at once.
    pub fn validate(&self, command: Command) -> Result<CniEnv, EnvError> {
        let container_id = get("CNI_CONTAINERID", &self.container_id)?;
        let netns = get("CNI_NETNS", &self.netns)?;
        let ifname = get("CNI_IFNAME", &self.ifname)?;
        let args = get("CNI_ARGS", &self.args)?;
        let path = get("CNI_PATH", &self.path)?;

        let mut missing = Vec::new();
        let mut require = |name: &'static str, value: &Option<String>| {
            if value.is_none() {
                missing.push(name);
            }
        };
        match command {
            Command::Add | Command::Check => {
                require("CNI_CONTAINERID", &container_id);
                require("CNI_NETNS", &netns);
                require("CNI_IFNAME", &ifname);
            }
            Command::Del => {
                require("CNI_CONTAINERID", &container_id);
                require("CNI_IFNAME", &ifname);
            }
            Command::Gc => require("CNI_PATH", &path),
            Command::Status | Command::Version => {}
        }
        if !missing.is_empty() {
            return Err(EnvError::Missing(missing));
        }

        if !command.is_attachment_verb() {
            return Ok(CniEnv {
                command,
                container_id: None,
                netns: None,
                ifname: None,
                args: CniArgs::default(),
                path: split_path(path.as_deref()),
            });
        }
        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        if let Some(name) = &ifname {
            validate_ifname(name)?;
        }
        if let Some(ns) = &netns {
            validate_netns(ns)?;
        }
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args: args
                .as_deref()
                .map(CniArgs::parse)
                .transpose()?
                .unwrap_or_default(),
            path: split_path(path.as_deref()),
        })
    }
}

fn get(name: &'static str, value: &Option<OsString>) -> Result<Option<String>, EnvError> {
    value
        .as_ref()
        .map(|v| v.to_str().map(str::to_owned).ok_or(EnvError::NotUtf8(name)))
        .transpose()
}

fn split_path(path: Option<&str>) -> Vec<String> {
    path.map(|p| {
        p.split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// The validated environment of one invocation.
///
/// For STATUS, GC and VERSION the attachment fields are `None` and `args` is empty: those verbs
/// do not act on one attachment, so the plugin neither reads nor validates those variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID`, validated against the spec's charset.
    pub container_id: Option<String>,
    /// `CNI_NETNS`, an absolute path without `..` components (optional for DEL).
    pub netns: Option<String>,
    /// `CNI_IFNAME`, a valid Linux interface name.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<String>,
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by ';' (e.g. `K8S_POD_NAMESPACE=default;K8S_POD_NAME=web`).
///
/// A repeated key keeps its last value; empty segments are skipped; the value may contain '='.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    /// Kubernetes pod namespace key set by the kubelet's runtime.
    pub const K8S_POD_NAMESPACE: &'static str = "K8S_POD_NAMESPACE";
    /// Kubernetes pod name key.
    pub const K8S_POD_NAME: &'static str = "K8S_POD_NAME";
    /// Kubernetes pod UID key.
    pub const K8S_POD_UID: &'static str = "K8S_POD_UID";
    /// Kubernetes sandbox (infra) container id key.
    pub const K8S_POD_INFRA_CONTAINER_ID: &'static str = "K8S_POD_INFRA_CONTAINER_ID";

    /// Parses the `CNI_ARGS` value.
    pub fn parse(s: &str) -> Result<Self, EnvError> {
        let mut map = BTreeMap::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    map.insert(key.to_owned(), value.to_owned());
                }
                _ => return Err(EnvError::InvalidArgs(pair.to_owned())),
            }
        }
        Ok(Self(map))
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Checks a container id against the spec, `[A-Za-z0-9][A-Za-z0-9_.-]*`, and Weft's length
/// bound [`MAX_CONTAINER_ID_LEN`].
pub fn validate_container_id(id: &str) -> Result<(), EnvError> {
    let mut bytes = id.bytes();
    let valid = id.len() <= MAX_CONTAINER_ID_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(EnvError::InvalidContainerId(id.to_owned()))
    }
}

/// Checks an interface name: 1 to 15 bytes, not `.` or `..`, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), EnvError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if name.contains(['/', ':']) {
        Some("contains '/' or ':'")
    } else if name.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EnvError::InvalidIfname {
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a network namespace path: absolute and without `..` components.
pub fn validate_netns(netns: &str) -> Result<(), EnvError> {
    let path = Path::new(netns);
    let reason = if !path.is_absolute() {
        Some("not an absolute path")
    } else if path.components().any(|c| c == Component::ParentDir) {
        Some("contains a '..' component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EnvError::InvalidNetns {
            value: netns.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{code, CniError};

    fn raw(vars: &[(&str, &str)]) -> RawEnv {
        RawEnv::from_vars(vars.iter().map(|(k, v)| (k, v.to_string())))
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/pod1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("HOME", "/root"),
    ];

    #[test]
    fn parses_a_full_add_environment() {
        let env = raw(ADD);
        assert_eq!(env.command().unwrap(), Command::Add);
        let env = env.validate(Command::Add).unwrap();
        assert_eq!(env.container_id.as_deref(), Some("abc123"));
        assert_eq!(env.netns.as_deref(), Some("/var/run/netns/pod1"));
        assert_eq!(env.ifname.as_deref(), Some("eth0"));
        assert_eq!(env.args.get(CniArgs::K8S_POD_NAMESPACE), Some("default"));
        assert_eq!(env.args.get(CniArgs::K8S_POD_NAME), Some("web-0"));
        assert_eq!(env.path, ["/opt/cni/bin", "/usr/lib/cni"]);
    }

    #[test]
    fn missing_command_and_unknown_command() {
        assert_eq!(
            raw(&[]).command(),
            Err(EnvError::Missing(vec!["CNI_COMMAND"]))
        );
        assert_eq!(
            raw(&[("CNI_COMMAND", "")]).command(),
            Err(EnvError::Missing(vec!["CNI_COMMAND"]))
        );
        let err = raw(&[("CNI_COMMAND", "add")]).command().unwrap_err();
        assert_eq!(err, EnvError::UnknownCommand("add".into()));
        assert_eq!(CniError::from(err).code, code::INVALID_ENVIRONMENT);
    }

    #[test]
    fn required_variables_per_verb_are_reported_together() {
        let empty = raw(&[]);
        assert_eq!(
            empty.validate(Command::Add),
            Err(EnvError::Missing(vec![
                "CNI_CONTAINERID",
                "CNI_NETNS",
                "CNI_IFNAME"
            ]))
        );
        assert_eq!(
            empty.validate(Command::Check),
            Err(EnvError::Missing(vec![
                "CNI_CONTAINERID",
                "CNI_NETNS",
                "CNI_IFNAME"
            ]))
        );
        assert_eq!(
            empty.validate(Command::Del),
            Err(EnvError::Missing(vec!["CNI_CONTAINERID", "CNI_IFNAME"]))
        );
        assert_eq!(
            empty.validate(Command::Gc),
            Err(EnvError::Missing(vec!["CNI_PATH"]))
        );
        assert!(empty.validate(Command::Status).is_ok());
        assert!(empty.validate(Command::Version).is_ok());
        let del = raw(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])
            .validate(Command::Del)
            .unwrap();
        assert_eq!(del.netns, None);
    }

    #[test]
    fn status_and_gc_ignore_attachment_variables() {
        let env = raw(&[
            ("CNI_CONTAINERID", "/bad"),
            ("CNI_IFNAME", "bad/name"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let gc = env.validate(Command::Gc).unwrap();
        assert_eq!(gc.container_id, None);
        assert_eq!(gc.ifname, None);
    }

    #[test]
    fn non_utf8_values_are_rejected() {
        use std::os::unix::ffi::OsStringExt;
        let env = RawEnv::from_vars([
            (OsString::from("CNI_COMMAND"), OsString::from("DEL")),
            (OsString::from("CNI_CONTAINERID"), OsString::from("c1")),
            (OsString::from("CNI_IFNAME"), OsString::from_vec(vec![0xff])),
        ]);
        assert_eq!(
            env.validate(Command::Del),
            Err(EnvError::NotUtf8("CNI_IFNAME"))
        );
    }

    #[test]
    fn container_id_charset() {
        for ok in ["a", "0", "abc-DEF_1.2", "f00dbabe"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        assert!(validate_container_id(&"a".repeat(MAX_CONTAINER_ID_LEN)).is_ok());
        let too_long = "a".repeat(MAX_CONTAINER_ID_LEN + 1);
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "a/b",
            "a b",
            "a:b",
            "ä",
            "a\n",
            too_long.as_str(),
        ] {
            assert_eq!(
                validate_container_id(bad),
                Err(EnvError::InvalidContainerId(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "net1.100", "abcdefghijklmno", "veth-x_y"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("", "empty"),
            ("abcdefghijklmnop", "longer than 15 bytes"),
            ("ééééééééé", "longer than 15 bytes"),
            (".", "'.' and '..' are reserved"),
            ("..", "'.' and '..' are reserved"),
            ("eth/0", "contains '/' or ':'"),
            ("eth:0", "contains '/' or ':'"),
            ("eth 0", "contains whitespace"),
            ("eth\t0", "contains whitespace"),
        ];
        for (bad, reason) in cases {
            assert_eq!(
                validate_ifname(bad),
                Err(EnvError::InvalidIfname {
                    value: bad.into(),
                    reason
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn netns_rules() {
        for ok in ["/var/run/netns/x", "/proc/123/ns/net", "/run/netns/a..b"] {
            assert!(validate_netns(ok).is_ok(), "{ok}");
        }
        for (bad, reason) in [
            ("netns/x", "not an absolute path"),
            ("./x", "not an absolute path"),
            ("/var/run/netns/../../etc", "contains a '..' component"),
            ("/..", "contains a '..' component"),
        ] {
            assert_eq!(
                validate_netns(bad),
                Err(EnvError::InvalidNetns {
                    value: bad.into(),
                    reason
                })
            );
        }
    }

    #[test]
    fn validation_errors_name_the_variable() {
        let mut vars = ADD.to_vec();
        vars[3] = ("CNI_IFNAME", "averyveryverylongname");
        let err: CniError = raw(&vars).validate(Command::Add).unwrap_err().into();
        assert_eq!(err.code, code::INVALID_ENVIRONMENT);
        assert_eq!(
            err.msg,
            "invalid CNI_IFNAME \"averyveryverylongname\": longer than 15 bytes"
        );
    }

    #[test]
    fn cni_args_parsing() {
        let args = CniArgs::parse("A=1;;B=x=y;A=2;").unwrap();
        assert_eq!(args.get("A"), Some("2"));
        assert_eq!(args.get("B"), Some("x=y"));
        assert_eq!(
            CniArgs::parse("A=1;BROKEN"),
            Err(EnvError::InvalidArgs("BROKEN".into()))
        );
        assert_eq!(
            CniArgs::parse("=1"),
            Err(EnvError::InvalidArgs("=1".into()))
        );
    }
}
