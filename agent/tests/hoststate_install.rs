//! `weft-agent install-host-config`: the shipped drop-ins, idempotency, refusal to touch foreign
//! files, and syntax checks with the Debian tools available here: every `Section.Key` of the
//! networkd files must be in systemd-networkd's own key table (its gperf strings), and
//! `systemd-analyze cat-config --root` must pick the networkd.conf drop-in up. udev is not
//! installed on Debian 12 containers (and `udevadm verify` needs systemd 253), so the `.link`
//! file is checked against systemd.link(5)'s keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use weft_agent::config::AgentConfig;
use weft_agent::hoststate::install::{self, parse_unit_file, FileOutcome, MARKER};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn shipped_files_are_what_the_installer_writes_for_the_default_config() -> Result<()> {
    for file in install::host_files(&AgentConfig::default()) {
        let name = Path::new(file.path).file_name().context("file name")?;
        let shipped = std::fs::read_to_string(repo().join("build/host").join(name))?;
        assert_eq!(
            shipped,
            file.content,
            "build/host/{}",
            name.to_string_lossy()
        );
    }
    Ok(())
}

fn run_cli(root: &Path, config: &Path) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-agent"))
        .arg("--config")
        .arg(config)
        .arg("install-host-config")
        .arg("--root")
        .arg(root)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "install-host-config failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[test]
fn second_run_changes_nothing_and_foreign_files_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let config = dir.path().join("weft-agent.conf");
    std::fs::write(&config, "nodeName: node-a\n")?;
    let first = run_cli(&root, &config)?;
    assert_eq!(first.matches("created ").count(), 3, "{first}");
    let mtimes = |root: &Path| -> Vec<std::time::SystemTime> {
        install::host_files(&AgentConfig::default())
            .iter()
            .map(|f| {
                std::fs::metadata(root.join(f.path))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let before = mtimes(&root);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = run_cli(&root, &config)?;
    assert_eq!(second.matches("unchanged ").count(), 3, "{second}");
    assert!(second.contains("nothing changed"), "{second}");
    assert_eq!(mtimes(&root), before, "second run rewrote files");

    // A file of ours with old content is updated; nothing else is touched.
    let link = root.join("etc/systemd/network/00-weft.link");
    std::fs::write(
        &link,
        format!("{MARKER}\n[Link]\nMACAddressPolicy=persistent\n"),
    )?;
    let neighbour = root.join("etc/systemd/network/10-admin.network");
    std::fs::write(&neighbour, "[Match]\nName=eth0\n")?;
    let report = install::install(&root, &AgentConfig::default())?;
    assert_eq!(
        report.files.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        [
            FileOutcome::Unchanged,
            FileOutcome::Unchanged,
            FileOutcome::Updated
        ]
    );
    assert_eq!(std::fs::read_to_string(&neighbour)?, "[Match]\nName=eth0\n");

    // A foreign file with our name: refused, and nothing at all is written.
    let network = root.join("etc/systemd/network/00-weft.network");
    std::fs::write(&network, "[Match]\nName=*\n")?;
    std::fs::write(&link, "stale but ours? no marker\n")?;
    let err = install::install(&root, &AgentConfig::default()).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert!(err.to_string().contains("00-weft.network"), "{err}");
    assert_eq!(std::fs::read_to_string(&network)?, "[Match]\nName=*\n");
    let out = Command::new(env!("CARGO_BIN_EXE_weft-agent"))
        .arg("--config")
        .arg(&config)
        .args(["install-host-config", "--root"])
        .arg(&root)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    Ok(())
}

/// `Section.Key` pairs of a file.
fn keys(text: &str) -> Result<Vec<String>> {
    Ok(parse_unit_file(text)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(s, k, _)| format!("{s}.{k}"))
        .collect())
}

#[test]
fn networkd_files_use_keys_systemd_networkd_knows() -> Result<()> {
    // systemd-networkd's config parsers are gperf tables of "Section.Key" strings.
    let binary = std::fs::read("/lib/systemd/systemd-networkd")
        .context("systemd-networkd is part of Debian's systemd package")?;
    let known = |key: &str| binary.windows(key.len()).any(|w| w == key.as_bytes());
    let files = install::host_files(&AgentConfig::default());
    for file in &files[..2] {
        for key in keys(&file.content)? {
            assert!(
                known(&key),
                "{}: {key} unknown to systemd-networkd",
                file.path
            );
        }
    }
    assert!(!known("Network.ManageForeignRoutez"), "the check can fail");
    // The .link file (udev): systemd.link(5) [Match] and [Link] keys.
    for key in keys(&files[2].content)? {
        assert!(
            ["Match.OriginalName", "Link.MACAddressPolicy"].contains(&key.as_str()),
            "{key}"
        );
    }
    Ok(())
}

#[test]
fn systemd_analyze_picks_up_the_networkd_drop_in() -> Result<()> {
    let dir = tempfile::tempdir()?;
    install::install(dir.path(), &AgentConfig::default())?;
    let out = Command::new("systemd-analyze")
        .args(["cat-config", "--no-pager"])
        .arg(format!("--root={}", dir.path().display()))
        .arg("systemd/networkd.conf")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("networkd.conf.d/50-weft.conf"), "{text}");
    assert!(
        text.contains("ManageForeignRoutingPolicyRules=no"),
        "{text}"
    );
    Ok(())
}
