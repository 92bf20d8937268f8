//! `weftctl check cni` (field report 4, issue 13 part 4): the CNI config directory in sorted
//! order, what each consumer loads by its own rule ([`crate::cniconf::Consumer`]: containerd
//! stops at the first file even when it is invalid, CRI-O skips invalid files, Multus "auto"
//! takes the first `.conf`/`.conflist` valid or not, podman goes by network name), every file
//! that keeps Weft's from being loaded, and the exact Multus settings that pin Weft. Works
//! without the agent: it only reads `cniConfDir`.

use std::path::Path;

use serde::Serialize;

use super::render::Table;
use crate::cniconf::{self, LoadOrder, CONFLIST_NAME, NETWORK_NAME};

/// One file in load order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniFileEntry {
    /// Position (1 = read first).
    pub order: usize,
    /// File name.
    pub file: String,
    /// Network name inside.
    pub network: Option<String>,
    /// Whether libcni accepts it.
    pub valid: bool,
    /// Which consumers load it, why it is invalid, whether it keeps Weft's from loading.
    pub note: String,
}

/// The Multus settings that pin Weft, whatever the file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MultusPin {
    /// Thick plugin daemon config (`daemon-config.json`) key and value.
    pub thick_daemon_config: String,
    /// Thin plugin entrypoint flag.
    pub thin_entrypoint_flag: String,
    /// A hand-written Multus CNI config.
    pub multus_conf: String,
}

/// The check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniCheck {
    /// The directory read.
    pub dir: String,
    /// Files in load order.
    pub files: Vec<CniFileEntry>,
    /// What containerd would load (the strictest rule).
    pub runtime_choice: Option<String>,
    /// What each consumer loads.
    pub consumers: Vec<cniconf::ConsumerChoice>,
    /// One line per consumer that does not load Weft's file.
    pub problems: Vec<String>,
    /// Whether Weft's file is there.
    pub weft_present: bool,
    /// Whether Weft's file is the one chosen.
    pub weft_wins: bool,
    /// Valid files that sort before Weft's: each would win over it.
    pub ahead_of_weft: Vec<String>,
    /// How to pin Weft in Multus.
    pub multus_pin: MultusPin,
}

impl CniCheck {
    /// Whether something is wrong (Weft missing or beaten).
    pub fn has_problems(&self) -> bool {
        !self.weft_present || !self.weft_wins
    }
}

/// The Multus pin settings. Pure.
pub fn multus_pin() -> MultusPin {
    MultusPin {
        thick_daemon_config: format!("\"multusMasterCNI\": \"{CONFLIST_NAME}\""),
        thin_entrypoint_flag: format!("--multus-master-cni-file-name={CONFLIST_NAME}"),
        multus_conf: format!("\"clusterNetwork\": \"{NETWORK_NAME}\""),
    }
}

/// Builds the check from a load order. Pure.
pub fn analyse(dir: &Path, order: &LoadOrder) -> CniCheck {
    let files = order
        .order
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let loaded_by: Vec<&str> = order
                .consumers
                .iter()
                .filter(|c| c.loads.as_deref() == Some(f.name.as_str()))
                .map(|c| c.consumer.label())
                .collect();
            let mut parts = Vec::new();
            if let Some(problem) = &f.problem {
                parts.push(format!("invalid: {problem}"));
            }
            if !loaded_by.is_empty() {
                parts.push(format!("loaded by {}", loaded_by.join(", ")));
            }
            if order.ahead_of_weft.contains(&f.name) {
                parts.push("keeps weft from loading".to_string());
            } else if f.name == CONFLIST_NAME && loaded_by.is_empty() {
                parts.push("weft (not loaded)".to_string());
            }
            let note = parts.join("; ");
            CniFileEntry {
                order: i + 1,
                file: f.name.clone(),
                network: f.network.clone(),
                valid: f.valid,
                note,
            }
        })
        .collect();
    CniCheck {
        dir: dir.display().to_string(),
        files,
        runtime_choice: order.chosen.clone(),
        consumers: order.consumers.clone(),
        problems: order.problems(),
        weft_present: order.order.iter().any(|f| f.name == CONFLIST_NAME),
        weft_wins: order.weft_wins(),
        ahead_of_weft: order.ahead_of_weft.clone(),
        multus_pin: multus_pin(),
    }
}

/// Reads `dir` and analyses it.
pub fn check(dir: &Path) -> Result<CniCheck, cniconf::CniConfError> {
    Ok(analyse(dir, &cniconf::load_order(cniconf::read_dir(dir)?)))
}

/// The table view.
pub fn table(check: &CniCheck) -> String {
    let mut t = Table::new(&["order", "file", "network", "valid", "note"]);
    for f in &check.files {
        t.row(vec![
            f.order.to_string(),
            f.file.clone(),
            f.network.clone().unwrap_or_else(|| "-".into()),
            f.valid.to_string(),
            f.note.clone(),
        ]);
    }
    let mut out = format!("CNI config directory {}\n", check.dir);
    out.push_str(&t.render());
    out.push('\n');
    for c in &check.consumers {
        let what = match (&c.failure, &c.loads) {
            (Some(failure), _) => format!("FAILS: {failure}"),
            (None, Some(file)) => format!("loads {file}"),
            (None, None) => "loads nothing (no valid file)".to_string(),
        };
        out.push_str(&format!(
            "{:<24} {what}\n",
            format!("{}:", c.consumer.label())
        ));
    }
    if !check.weft_present {
        out.push_str(&format!(
            "PROBLEM: {CONFLIST_NAME} is missing: run `weft-agent install-cni` (the DaemonSet's init container)\n"
        ));
    } else if check.weft_wins {
        out.push_str("OK: Weft's config is the one loaded\n");
    }
    for name in &check.ahead_of_weft {
        let valid = check.files.iter().any(|f| &f.file == name && f.valid);
        let effect = if valid {
            "a valid config ahead of Weft's (the first such file is what containerd and cri-o load)"
        } else {
            "it is invalid, and containerd stops at it: no network at all"
        };
        out.push_str(&format!(
            "PROBLEM: {name} sorts before {CONFLIST_NAME}: {effect}\n"
        ));
    }
    if check.weft_present {
        for problem in &check.problems {
            out.push_str(&format!("PROBLEM: {problem}\n"));
        }
    }
    let pin = &check.multus_pin;
    out.push_str(&format!(
        "\nTo pin Weft in Multus whatever the file order:\n  thick plugin, daemon-config.json:  {}\n  thin plugin, entrypoint flag:      {}\n  hand-written Multus config:        {}\n",
        pin.thick_daemon_config, pin.thin_entrypoint_flag, pin.multus_conf
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cniconf::ConfFile;

    #[test]
    fn foreign_file_first_is_flagged_with_the_pin() {
        let order = cniconf::load_order(vec![
            ConfFile::parse(
                "10-weft.conflist",
                r#"{"name":"weft","plugins":[{"type":"weft"}]}"#,
            ),
            ConfFile::parse(
                "05-other.conflist",
                r#"{"name":"other","plugins":[{"type":"other"}]}"#,
            ),
            ConfFile::parse("01-broken.conf", "{"),
        ]);
        let check = analyse(Path::new("/etc/cni/net.d"), &order);
        assert!(check.has_problems());
        // containerd stops at the broken first file: it loads nothing at all.
        assert_eq!(check.runtime_choice, None);
        let notes: Vec<&str> = check.files.iter().map(|f| f.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "invalid: not a json object; loaded by containerd (go-cni), multus \"auto\"; keeps weft from loading",
                "loaded by cri-o (ocicni); keeps weft from loading",
                "loaded by podman (network weft)"
            ]
        );
        let text = table(&check);
        assert!(
            text.contains("PROBLEM: 05-other.conflist sorts before 10-weft.conflist"),
            "{text}"
        );
        assert!(
            text.contains("containerd (go-cni):     FAILS: 01-broken.conf is invalid"),
            "{text}"
        );
        assert!(
            text.contains("cri-o (ocicni):          loads 05-other.conflist"),
            "{text}"
        );
        assert!(
            text.contains("\"multusMasterCNI\": \"10-weft.conflist\""),
            "{text}"
        );
        assert!(
            text.contains("--multus-master-cni-file-name=10-weft.conflist"),
            "{text}"
        );
    }

    #[test]
    fn weft_alone_is_ok_and_missing_weft_is_a_problem() {
        let weft = ConfFile::parse(
            "10-weft.conflist",
            r#"{"name":"weft","plugins":[{"type":"weft"}]}"#,
        );
        let ok = analyse(Path::new("/d"), &cniconf::load_order(vec![weft]));
        assert!(!ok.has_problems());
        assert!(table(&ok).contains("OK: Weft's config is the one loaded"));
        let none = analyse(Path::new("/d"), &cniconf::load_order(vec![]));
        assert!(none.has_problems());
        assert!(table(&none).contains("PROBLEM: 10-weft.conflist is missing"));
    }
}
