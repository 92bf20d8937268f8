//! `weftctl check host` (field reports 3 and 5): host settings that would fight Weft, read from
//! the files under `--root` (default `/`), so it works without the agent and in tests.
//!
//! - systemd-networkd: `ManageForeignRoutes` and `ManageForeignRoutingPolicyRules` (default
//!   yes) make a networkd restart flush Weft's routes and rules; the effective value is the last
//!   assignment in `networkd.conf` and its drop-ins (`*.conf.d/*.conf`, ordered by file name,
//!   `/etc` shadowing `/run` shadowing `/usr/lib`). A `.network` file matching a Weft interface
//!   without `Unmanaged=yes` lets networkd configure it.
//! - udev / systemd `.link` files: the first file (by name) whose `[Match]` applies to a Weft
//!   host veth decides its `MACAddressPolicy`; Debian/Ubuntu's `99-default.link` says
//!   `persistent`, which rewrites veth MACs after creation.
//! - NetworkManager: Weft interfaces must be in `[keyfile] unmanaged-devices`.
//!
//! Each finding names the file that decided it; Weft's own drop-ins (file names containing
//! `weft`) are listed as present or absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::render::Table;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Would fight Weft.
    Problem,
}

/// One setting checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `networkd`, `udev`, `NetworkManager`.
    pub component: String,
    /// The setting (e.g. `ManageForeignRoutes`).
    pub setting: String,
    /// Its effective value.
    pub value: String,
    /// The file that set it (`default` when none did).
    pub source: String,
    /// Verdict.
    pub status: Status,
    /// What it means and what to do.
    pub message: String,
}

/// A Weft drop-in and whether it is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropIn {
    /// `networkd`, `udev`, `NetworkManager`.
    pub component: String,
    /// The Weft files found (empty: none).
    pub files: Vec<String>,
    /// Whether any is present.
    pub present: bool,
}

/// The check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostCheck {
    /// The root the files were read under.
    pub root: String,
    /// Interfaces checked against match rules.
    pub interfaces: Vec<String>,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Weft's drop-ins.
    pub drop_ins: Vec<DropIn>,
}

impl HostCheck {
    /// Whether any finding is a problem.
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(|f| f.status == Status::Problem)
    }
}

/// The Weft interfaces to check: name and kind (`veth`, `internal`).
#[derive(Debug, Clone)]
pub struct WeftInterface {
    /// Interface name.
    pub name: String,
    /// `veth` for pod host ends, `openvswitch` for OVS internal ports.
    pub driver: &'static str,
}

/// Parsed INI-style file: section -> key -> values in order of assignment.
type Ini = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Parses a systemd / NetworkManager style file. `key+=value` appends. Pure.
pub fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, append) = match key.trim().strip_suffix('+') {
            Some(k) => (k.trim(), true),
            None => (key.trim(), false),
        };
        let values = ini
            .entry(section.clone())
            .or_default()
            .entry(key.to_string())
            .or_default();
        let value = value.trim().to_string();
        if append {
            if let Some(last) = values.last_mut() {
                if !last.is_empty() {
                    last.push(',');
                }
                last.push_str(&value);
                continue;
            }
        }
        values.push(value);
    }
    ini
}

fn last<'a>(ini: &'a Ini, section: &str, key: &str) -> Option<&'a str> {
    ini.get(section)?.get(key)?.last().map(String::as_str)
}

/// Shell-style glob with `*`, `?` and `[...]` (as systemd and NetworkManager match names). Pure.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some(('[', rest)) => {
                let Some(end) = rest.iter().position(|c| *c == ']') else {
                    return n.first() == Some(&'[') && go(rest, &n[1..]);
                };
                let Some(c) = n.first() else { return false };
                let class = &rest[..end];
                let (negate, class) = match class.split_first() {
                    Some(('!' | '^', tail)) => (true, tail),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= (class[i]..=class[i + 2]).contains(c);
                        i += 3;
                    } else {
                        hit |= class[i] == *c;
                        i += 1;
                    }
                }
                hit != negate && go(&rest[end + 1..], &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// systemd's space-separated glob list with `!` negation. Pure.
fn matches_list(list: &str, name: &str) -> bool {
    let mut patterns = list.split_whitespace().peekable();
    let negated = patterns.peek().is_some_and(|p| p.starts_with('!'));
    let hit = list
        .split_whitespace()
        .any(|p| glob(p.trim_start_matches('!'), name));
    if negated {
        !hit
    } else {
        hit
    }
}

/// Files of `dirs` (relative to `root`) ending in `ext`, by file name; a name in an earlier
/// directory shadows the same name in later ones.
fn config_files(root: &Path, dirs: &[&str], ext: &str) -> Vec<(String, PathBuf)> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(ext) && entry.path().is_file() {
                files.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    files.into_iter().collect()
}

fn shown(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

const NETWORK_DIRS: [&str; 4] = [
    "etc/systemd/network",
    "run/systemd/network",
    "usr/lib/systemd/network",
    "lib/systemd/network",
];

/// Runs every check under `root` for `interfaces`.
pub fn check(root: &Path, interfaces: &[WeftInterface]) -> HostCheck {
    let mut findings = Vec::new();
    let mut drop_ins = Vec::new();
    networkd(root, interfaces, &mut findings, &mut drop_ins);
    udev(root, interfaces, &mut findings, &mut drop_ins);
    network_manager(root, interfaces, &mut findings, &mut drop_ins);
    HostCheck {
        root: root.display().to_string(),
        interfaces: interfaces.iter().map(|i| i.name.clone()).collect(),
        findings,
        drop_ins,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn weft_files(root: &Path, files: &[(String, PathBuf)]) -> Vec<String> {
    files
        .iter()
        .filter(|(name, _)| name.contains("weft"))
        .map(|(_, path)| shown(root, path))
        .collect()
}

fn networkd(
    root: &Path,
    interfaces: &[WeftInterface],
    findings: &mut Vec<Finding>,
    drop_ins: &mut Vec<DropIn>,
) {
    let main = root.join("etc/systemd/networkd.conf");
    let conf_d = config_files(
        root,
        &[
            "etc/systemd/networkd.conf.d",
            "run/systemd/networkd.conf.d",
            "usr/lib/systemd/networkd.conf.d",
            "lib/systemd/networkd.conf.d",
        ],
        ".conf",
    );
    let networks = config_files(root, &NETWORK_DIRS, ".network");
    let installed = main.exists()
        || !conf_d.is_empty()
        || root.join("usr/lib/systemd/systemd-networkd").exists()
        || root.join("lib/systemd/systemd-networkd").exists();
    let mut weft = weft_files(root, &conf_d);
    weft.extend(weft_files(root, &networks));
    drop_ins.push(DropIn {
        component: "networkd".into(),
        present: !weft.is_empty(),
        files: weft,
    });
    if !installed {
        findings.push(Finding {
            component: "networkd".into(),
            setting: "installed".into(),
            value: "no".into(),
            source: "-".into(),
            status: Status::Ok,
            message: "systemd-networkd not found: nothing to configure".into(),
        });
        return;
    }
    let mut sources: Vec<PathBuf> = Vec::new();
    if main.exists() {
        sources.push(main);
    }
    sources.extend(conf_d.iter().map(|(_, p)| p.clone()));
    for (setting, what) in [
        ("ManageForeignRoutes", "routes"),
        ("ManageForeignRoutingPolicyRules", "policy routing rules"),
    ] {
        let mut value = "yes".to_string();
        let mut source = "default".to_string();
        for path in &sources {
            if let Some(v) = last(&parse_ini(&read(path)), "Network", setting) {
                value = v.to_string();
                source = shown(root, path);
            }
        }
        let off = matches!(
            value.to_ascii_lowercase().as_str(),
            "no" | "false" | "0" | "off"
        );
        findings.push(Finding {
            component: "networkd".into(),
            setting: setting.into(),
            value: value.clone(),
            source,
            status: if off { Status::Ok } else { Status::Problem },
            message: if off {
                format!("networkd leaves foreign {what} alone")
            } else {
                format!(
                    "a networkd restart flushes Weft's {what}: run `weft-agent install-host-config` (drop-in /etc/systemd/networkd.conf.d/50-weft.conf with [Network] {setting}=no)"
                )
            },
        });
    }
    for iface in interfaces {
        let matching = networks.iter().find(|(_, path)| {
            let ini = parse_ini(&read(path));
            let Some(names) = last(&ini, "Match", "Name") else {
                return false;
            };
            matches_list(names, &iface.name)
                && last(&ini, "Match", "Driver").is_none_or(|d| matches_list(d, iface.driver))
        });
        if let Some((_, path)) = matching {
            let ini = parse_ini(&read(path));
            let unmanaged = last(&ini, "Link", "Unmanaged").unwrap_or("no");
            let ok = matches!(
                unmanaged.to_ascii_lowercase().as_str(),
                "yes" | "true" | "1" | "on"
            );
            findings.push(Finding {
                component: "networkd".into(),
                setting: format!("Unmanaged ({})", iface.name),
                value: unmanaged.to_string(),
                source: shown(root, path),
                status: if ok { Status::Ok } else { Status::Problem },
                message: if ok {
                    format!("networkd does not manage {}", iface.name)
                } else {
                    format!(
                        "networkd would configure {} (addresses, routes): run `weft-agent install-host-config` (/etc/systemd/network/00-weft.network, sorting before it, with [Match] Name=weft-* wf* and [Link] Unmanaged=yes)",
                        iface.name
                    )
                },
            });
        }
    }
}

fn udev(
    root: &Path,
    interfaces: &[WeftInterface],
    findings: &mut Vec<Finding>,
    drop_ins: &mut Vec<DropIn>,
) {
    let links = config_files(root, &NETWORK_DIRS, ".link");
    let weft = weft_files(root, &links);
    drop_ins.push(DropIn {
        component: "udev".into(),
        present: !weft.is_empty(),
        files: weft,
    });
    for iface in interfaces.iter().filter(|i| i.driver == "veth") {
        let matching = links.iter().find(|(_, path)| {
            let ini = parse_ini(&read(path));
            let Some(section) = ini.get("Match") else {
                return false;
            };
            section.iter().all(|(key, values)| {
                let v = values.last().map(String::as_str).unwrap_or("");
                match key.as_str() {
                    "OriginalName" => matches_list(v, &iface.name),
                    "Driver" | "Kind" => matches_list(v, iface.driver),
                    _ => false,
                }
            }) && !section.is_empty()
        });
        let (policy, source) = match matching {
            Some((_, path)) => (
                last(&parse_ini(&read(path)), "Link", "MACAddressPolicy")
                    .unwrap_or("none")
                    .to_string(),
                shown(root, path),
            ),
            None => ("none".to_string(), "default".to_string()),
        };
        let ok = policy == "none";
        findings.push(Finding {
            component: "udev".into(),
            setting: format!("MACAddressPolicy ({})", iface.name),
            value: policy.clone(),
            source,
            status: if ok { Status::Ok } else { Status::Problem },
            message: if ok {
                "udev keeps the MAC Weft sets on host veths".into()
            } else {
                format!(
                    "udev rewrites host veth MACs ({policy}); Weft's pods do not depend on them (virtual gateway MAC) but run `weft-agent install-host-config` (/etc/systemd/network/00-weft.link with [Match] OriginalName=weft-* wf* and [Link] MACAddressPolicy=none)"
                )
            },
        });
    }
}

fn network_manager(
    root: &Path,
    interfaces: &[WeftInterface],
    findings: &mut Vec<Finding>,
    drop_ins: &mut Vec<DropIn>,
) {
    let main = root.join("etc/NetworkManager/NetworkManager.conf");
    let conf_d = config_files(
        root,
        &[
            "etc/NetworkManager/conf.d",
            "run/NetworkManager/conf.d",
            "usr/lib/NetworkManager/conf.d",
        ],
        ".conf",
    );
    let installed =
        main.exists() || !conf_d.is_empty() || root.join("usr/sbin/NetworkManager").exists();
    let weft = weft_files(root, &conf_d);
    drop_ins.push(DropIn {
        component: "NetworkManager".into(),
        present: !weft.is_empty(),
        files: weft,
    });
    if !installed {
        findings.push(Finding {
            component: "NetworkManager".into(),
            setting: "installed".into(),
            value: "no".into(),
            source: "-".into(),
            status: Status::Ok,
            message: "NetworkManager not found: nothing to configure".into(),
        });
        return;
    }
    // The main file first, then conf.d files by name: a plain assignment replaces the value,
    // `unmanaged-devices+=` appends to what earlier files set.
    let mut sources: Vec<PathBuf> = Vec::new();
    if main.exists() {
        sources.push(main);
    }
    sources.extend(conf_d.iter().map(|(_, p)| p.clone()));
    let mut value = String::new();
    let mut source = "default".to_string();
    for path in &sources {
        let text = read(path);
        let ini = parse_ini(&text);
        if let Some(v) = last(&ini, "keyfile", "unmanaged-devices") {
            let replaces = text.lines().any(|l| {
                l.trim()
                    .strip_prefix("unmanaged-devices")
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            if replaces || value.is_empty() {
                value = v.to_string();
            } else {
                value = format!("{value};{v}");
            }
            source = shown(root, path);
        }
    }
    for iface in interfaces {
        let covered = value.split([';', ',']).map(str::trim).any(|spec| {
            if let Some(pattern) = spec.strip_prefix("interface-name:") {
                glob(pattern.trim_start_matches('='), &iface.name)
            } else if let Some(driver) = spec.strip_prefix("driver:") {
                glob(driver, iface.driver)
            } else {
                false
            }
        });
        findings.push(Finding {
            component: "NetworkManager".into(),
            setting: format!("unmanaged-devices ({})", iface.name),
            value: if value.is_empty() { "-".into() } else { value.clone() },
            source: source.clone(),
            status: if covered { Status::Ok } else { Status::Problem },
            message: if covered {
                format!("NetworkManager leaves {} alone", iface.name)
            } else {
                format!(
                    "NetworkManager may take over {}: add /etc/NetworkManager/conf.d/weft.conf with [keyfile] unmanaged-devices=interface-name:weft-*;interface-name:wf*;interface-name:br-int",
                    iface.name
                )
            },
        });
    }
}

/// The table view.
pub fn table(check: &HostCheck) -> String {
    let mut t = Table::new(&[
        "component",
        "setting",
        "value",
        "source",
        "status",
        "message",
    ]);
    for f in &check.findings {
        t.row(vec![
            f.component.clone(),
            f.setting.clone(),
            f.value.clone(),
            f.source.clone(),
            match f.status {
                Status::Ok => "ok".into(),
                Status::Problem => "PROBLEM".into(),
            },
            f.message.clone(),
        ]);
    }
    let mut out = t.render();
    out.push_str("\nWeft drop-ins:\n");
    for d in &check.drop_ins {
        let files = if d.present {
            d.files.join(", ")
        } else {
            "none installed".into()
        };
        out.push_str(&format!("  {:<15} {}\n", d.component, files));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces() -> Vec<WeftInterface> {
        vec![
            WeftInterface {
                name: "weft-gw0".into(),
                driver: "openvswitch",
            },
            WeftInterface {
                name: "wfweb-abcdef".into(),
                driver: "veth",
            },
        ]
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn problems(check: &HostCheck) -> Vec<String> {
        check
            .findings
            .iter()
            .filter(|f| f.status == Status::Problem)
            .map(|f| format!("{} {}={} ({})", f.component, f.setting, f.value, f.source))
            .collect()
    }

    #[test]
    fn globs() {
        assert!(glob("wf*", "wfweb-abc"));
        assert!(glob("*", ""));
        assert!(glob("weft-gw[0-9]", "weft-gw0"));
        assert!(!glob("weft-gw[!0-9]", "weft-gw0"));
        assert!(glob("e?h0", "eth0"));
        assert!(!glob("en*", "wfweb"));
        assert!(matches_list("en* wf*", "wfx"));
        assert!(!matches_list("!wf*", "wfx"));
        assert!(matches_list("!wf*", "eth0"));
    }

    #[test]
    fn empty_root_has_nothing_to_fight() {
        let root = tempfile::tempdir().unwrap();
        let check = check(root.path(), &ifaces());
        assert!(!check.has_problems(), "{:?}", problems(&check));
        assert!(check.drop_ins.iter().all(|d| !d.present));
    }

    #[test]
    fn networkd_without_drop_in_and_persistent_link_are_flagged() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "etc/systemd/networkd.conf",
            "[Network]\n#ManageForeignRoutes=yes\n",
        );
        write(
            r,
            "usr/lib/systemd/network/99-default.link",
            "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\nMACAddressPolicy=persistent\n",
        );
        let found = check(r, &ifaces());
        assert_eq!(
            problems(&found),
            [
                "networkd ManageForeignRoutes=yes (default)",
                "networkd ManageForeignRoutingPolicyRules=yes (default)",
                "udev MACAddressPolicy (wfweb-abcdef)=persistent (/usr/lib/systemd/network/99-default.link)",
            ]
        );
        let text = table(&found);
        assert!(text.contains("networkd        none installed"), "{text}");

        // Weft's drop-ins fix all three.
        write(
            r,
            "etc/systemd/networkd.conf.d/50-weft.conf",
            "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
        );
        write(
            r,
            "etc/systemd/network/00-weft.link",
            "[Match]\nOriginalName=wf* weft-*\n\n[Link]\nMACAddressPolicy=none\n",
        );
        let fixed = check(r, &ifaces());
        assert!(!fixed.has_problems(), "{:?}", problems(&fixed));
        assert_eq!(
            fixed.findings[0].source,
            "/etc/systemd/networkd.conf.d/50-weft.conf"
        );
        assert!(fixed
            .drop_ins
            .iter()
            .filter(|d| d.component != "NetworkManager")
            .all(|d| d.present));
    }

    #[test]
    fn networkd_network_files_and_network_manager() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "etc/systemd/networkd.conf.d/50-weft.conf",
            "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
        );
        write(
            r,
            "etc/systemd/network/50-all.network",
            "[Match]\nName=*\n[Network]\nDHCP=yes\n",
        );
        write(
            r,
            "etc/NetworkManager/NetworkManager.conf",
            "[keyfile]\nunmanaged-devices=interface-name:weft-*\n",
        );
        let found = check(r, &ifaces());
        assert_eq!(
            problems(&found),
            [
                "networkd Unmanaged (weft-gw0)=no (/etc/systemd/network/50-all.network)",
                "networkd Unmanaged (wfweb-abcdef)=no (/etc/systemd/network/50-all.network)",
                "NetworkManager unmanaged-devices (wfweb-abcdef)=interface-name:weft-* (/etc/NetworkManager/NetworkManager.conf)",
            ]
        );
        write(
            r,
            "etc/systemd/network/00-weft.network",
            "[Match]\nName=weft-* wf*\n[Link]\nUnmanaged=yes\n",
        );
        write(
            r,
            "etc/NetworkManager/conf.d/weft.conf",
            "[keyfile]\nunmanaged-devices+=interface-name:wf*\n",
        );
        // `+=` in a later file appends to the main file's value.
        let fixed = check(r, &ifaces());
        assert!(!fixed.has_problems(), "{:?}", problems(&fixed));
        let nm = fixed.findings.last().unwrap();
        assert_eq!(nm.value, "interface-name:weft-*;interface-name:wf*");
    }

    #[test]
    fn ini_parsing() {
        let ini = parse_ini("# c\n[A]\nk=1\nk = 2\n; c\n[B]\nx+=y\nx+=z\n");
        assert_eq!(last(&ini, "A", "k"), Some("2"));
        assert_eq!(last(&ini, "B", "x"), Some("y,z"));
    }
}
