//! Host drop-ins that keep systemd-networkd and udev away from Weft's state, and the opt-in,
//! idempotent installer behind `weft-agent install-host-config [--root DIR]`.
//!
//! - `/etc/systemd/networkd.conf.d/50-weft.conf`: `ManageForeignRoutes=no`,
//!   `ManageForeignRoutingPolicyRules=no`, so a networkd restart no longer flushes Weft's routes
//!   and rules (field report 5). Note: this is host-wide, networkd then leaves every foreign
//!   route and rule alone, which is what a node running a CNI wants.
//! - `/etc/systemd/network/00-weft.network`: Weft's links (`weft-*`, host veths `wf*`, the
//!   configured gateway) are `Unmanaged=yes`; `00-` sorts first, and the first matching
//!   `.network` file wins.
//! - `/etc/systemd/network/00-weft.link`: `MACAddressPolicy=none` for the same links, ahead of
//!   Debian/Ubuntu's `99-default.link` (`persistent`), so udev never rewrites their MACs (field
//!   report 3).
//!
//! The installer writes only these three names. Each file Weft writes starts with
//! [`MARKER`]; a file with one of those names but without the marker and with other content is
//! someone else's, and the installer refuses to touch it. Writes are atomic (temp file +
//! rename). The shipped copies in `build/host/` are what [`host_files`] renders for the default
//! configuration (a test keeps them equal).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::AgentConfig;
use weft_plan::pod::HOST_VETH_PREFIX;

/// First line of every file Weft writes.
pub const MARKER: &str =
    "# weft-managed: written by `weft-agent install-host-config`; edits are overwritten";

/// Name globs of the interfaces Weft creates in the node's namespace: `weft-*` (gateway
/// `weft-gw0`, tunnel and uplink internal ports) and the pod host veths (`wf*`).
pub const LINK_GLOBS: [&str; 2] = ["weft-*", "wf*"];

/// Errors of the installer.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file with Weft's name exists, was not written by Weft and differs.
    #[error("refusing to overwrite {path}: it exists, differs from Weft's version and lacks the weft-managed marker (move it away or merge it by hand)")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// One file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Path below the root, e.g. `etc/systemd/network/00-weft.link`.
    pub path: &'static str,
    /// Content.
    pub content: String,
}

/// What the installer did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// It did not exist.
    Created,
    /// It was Weft's, with other content.
    Updated,
    /// It was already right.
    Unchanged,
}

/// What the installer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Each file (full path) and its outcome.
    pub files: Vec<(PathBuf, FileOutcome)>,
}

impl InstallReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.files.iter().any(|(_, o)| *o != FileOutcome::Unchanged)
    }
}

/// The name patterns for `config`: the globs, plus the gateway's name when no glob covers it.
pub fn link_patterns(config: &AgentConfig) -> Vec<String> {
    let mut patterns: Vec<String> = LINK_GLOBS.iter().map(|s| s.to_string()).collect();
    debug_assert!(LINK_GLOBS.contains(&"wf*") && HOST_VETH_PREFIX == "wf");
    let covered = LINK_GLOBS
        .iter()
        .any(|g| config.host_gateway.starts_with(g.trim_end_matches('*')));
    if !covered {
        patterns.push(config.host_gateway.clone());
    }
    patterns
}

/// The three files for `config` (pure).
pub fn host_files(config: &AgentConfig) -> Vec<HostFile> {
    let names = link_patterns(config).join(" ");
    let mut networkd = String::new();
    let _ = writeln!(networkd, "{MARKER}");
    networkd.push_str(
        "# systemd-networkd: leave routes and policy rules it did not configure alone, so a\n\
         # networkd restart does not flush Weft's (route protocol 87, table 22342, rule\n\
         # priorities 30700-30799).\n\
         [Network]\n\
         ManageForeignRoutes=no\n\
         ManageForeignRoutingPolicyRules=no\n",
    );
    let mut network = String::new();
    let _ = writeln!(network, "{MARKER}");
    let _ = write!(
        network,
        "# systemd-networkd: Weft's gateway, tunnel, uplink port and pod host veths are not\n\
         # networkd's to configure.\n\
         [Match]\n\
         Name={names}\n\
         \n\
         [Link]\n\
         Unmanaged=yes\n"
    );
    let mut link = String::new();
    let _ = writeln!(link, "{MARKER}");
    let _ = write!(
        link,
        "# udev: never rewrite the MAC of Weft's interfaces (99-default.link says\n\
         # MACAddressPolicy=persistent); Weft sets their MACs itself.\n\
         [Match]\n\
         OriginalName={names}\n\
         \n\
         [Link]\n\
         MACAddressPolicy=none\n"
    );
    vec![
        HostFile {
            path: "etc/systemd/networkd.conf.d/50-weft.conf",
            content: networkd,
        },
        HostFile {
            path: "etc/systemd/network/00-weft.network",
            content: network,
        },
        HostFile {
            path: "etc/systemd/network/00-weft.link",
            content: link,
        },
    ]
}

/// Installs the files below `root` (`/` on a host). Idempotent; never touches a foreign file
/// (checked for all files before writing any).
pub fn install(root: &Path, config: &AgentConfig) -> Result<InstallReport, InstallError> {
    let files = host_files(config);
    let mut plan = Vec::new();
    for file in &files {
        let path = root.join(file.path);
        let outcome = match std::fs::read_to_string(&path) {
            Ok(existing) if existing == file.content => FileOutcome::Unchanged,
            Ok(existing) if existing.starts_with(MARKER) => FileOutcome::Updated,
            Ok(_) => return Err(InstallError::Foreign { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileOutcome::Created,
            Err(source) => {
                return Err(InstallError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        plan.push((path, outcome, file));
    }
    let mut report = InstallReport { files: Vec::new() };
    for (path, outcome, file) in plan {
        if outcome != FileOutcome::Unchanged {
            write_atomic(&path, &file.content)?;
        }
        report.files.push((path, outcome));
    }
    Ok(report)
}

fn write_atomic(path: &Path, content: &str) -> Result<(), InstallError> {
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.weft-tmp"));
    std::fs::write(&tmp, content).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into", path))
}

/// A parsed INI-style systemd file: (section, key, value) in order. Lines that are neither
/// comments, section headers nor `key=value` are errors, as are keys before any section.
pub fn parse_unit_file(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut section: Option<String> = None;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not key=value: {line:?}", n + 1));
        };
        let Some(section) = &section else {
            return Err(format!("line {}: key outside a section", n + 1));
        };
        entries.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_files_cover_weft_links_and_parse() {
        let files = host_files(&AgentConfig::default());
        assert_eq!(files.len(), 3);
        let link = parse_unit_file(&files[2].content).unwrap();
        assert_eq!(
            link,
            [
                ("Match".into(), "OriginalName".into(), "weft-* wf*".into()),
                ("Link".into(), "MACAddressPolicy".into(), "none".into()),
            ]
        );
        let network = parse_unit_file(&files[1].content).unwrap();
        assert_eq!(network[0].2, "weft-* wf*");
        assert_eq!(
            network[1],
            ("Link".into(), "Unmanaged".into(), "yes".into())
        );
        assert!(files.iter().all(|f| f.content.starts_with(MARKER)));
    }

    #[test]
    fn a_gateway_outside_the_globs_is_listed() {
        let config = AgentConfig {
            host_gateway: "gw0".into(),
            ..AgentConfig::default()
        };
        assert_eq!(link_patterns(&config), ["weft-*", "wf*", "gw0"]);
        assert_eq!(link_patterns(&AgentConfig::default()), ["weft-*", "wf*"]);
    }

    #[test]
    fn parser_rejects_garbage() {
        assert!(parse_unit_file("Key=1\n").is_err());
        assert!(parse_unit_file("[A]\njunk\n").is_err());
        assert_eq!(parse_unit_file("# c\n[A]\nK = v\n").unwrap().len(), 1);
    }
}
