//! The agent owns its conflist (issue 13 part 4), with the real agent and weftctl: with
//! `cniConfWatch` on, Weft's `10-weft.conflist` removed or truncated while the agent runs is
//! restored within seconds; a foreign conflist sorting before it, or an invalid file containerd
//! would stop at, is reported (agent log, a Node Event, the status section
//! `cniConfig`, `weftctl probe ready` failing, `weftctl check cni` naming the consumer) until it
//! goes away; foreign files are never touched. (The metrics are checked by the unit tests of
//! `weft_agent::cniwatch`.) Before, all of this went unnoticed and readiness
//! stayed ready.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

mod ops_support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ops_support::Ctl;
use weft_e2e::node::{CniDirs, Node, NodeOptions};

const POD_CIDR: &str = "10.244.0.0/24";

fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_agent_restores_its_conflist_and_reports_files_loaded_instead() -> Result<()> {
    let dirs = CniDirs::new()?;
    let mut options = NodeOptions::new(&[POD_CIDR]);
    options.extra_config = format!(
        "cniConfDir: {}\ncniBinDir: {}\ncniConfWatch: true\n",
        dirs.conf.display(),
        dirs.bin.display()
    );
    let node = Node::start(options)?;
    let ctl = Ctl::new(&node.config)?;
    let weft = dirs.conf.join("10-weft.conflist");

    // Written at start (no install-cni ran), then kept.
    eventually("conflist written", Duration::from_secs(10), || {
        Ok(weft.exists())
    })?;
    let good = read(&weft);
    ensure!(good.contains("\"type\": \"weft\""), "{good}");
    ctl.expect(0, &["probe", "ready"])?;

    // Removed: restored.
    let removed = Instant::now();
    std::fs::remove_file(&weft)?;
    eventually("removed conflist restored", Duration::from_secs(6), || {
        Ok(read(&weft) == good)
    })?;
    let restore_removed = removed.elapsed();

    // Truncated (e.g. a full disk during someone's rewrite): restored.
    std::fs::write(&weft, &good[..good.len() / 2])?;
    eventually(
        "truncated conflist restored",
        Duration::from_secs(6),
        || Ok(read(&weft) == good),
    )?;

    // A foreign conflist sorting before Weft's: reported, never touched.
    let foreign = dirs.conf.join("05-other.conflist");
    let foreign_text = r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"other"}]}"#;
    std::fs::write(&foreign, foreign_text)?;
    let added = Instant::now();
    eventually("probe ready fails", Duration::from_secs(6), || {
        Ok(ctl.run(&["probe", "ready"])?.code != 0)
    })?;
    let reported = added.elapsed();
    let probe = ctl.run(&["probe", "ready"])?;
    ensure!(
        probe
            .stderr
            .contains("containerd (go-cni): loads 05-other.conflist"),
        "{probe:?}"
    );
    let info = ctl.expect(0, &["get", "agentinfo", "-o", "json"])?.json()?;
    let section = &info["sections"]["cniConfig"];
    ensure!(section["weftLoaded"] == false, "{info}");
    ensure!(section["restores"].as_u64() >= Some(2), "{section}");
    let check = ctl.run(&["check", "cni"])?;
    ensure!(
        check
            .stdout
            .contains("cri-o (ocicni):          loads 05-other.conflist"),
        "{check:?}"
    );
    ensure!(
        node.agent_log()
            .contains("another cni config would be loaded instead of weft's"),
        "no warning logged"
    );
    ensure!(read(&foreign) == foreign_text, "foreign file touched");
    eventually(
        "Node Event CNIConfigShadowed",
        Duration::from_secs(5),
        || {
            Ok(node.api.events().iter().any(|e| {
                let about = |key: &str| e[key]["name"].as_str() == Some(node.name.as_str());
                e["reason"] == "CNIConfigShadowed"
                    && (about("regarding") || about("involvedObject"))
            }))
        },
    )?;

    // An invalid file first instead: containerd would stop there.
    std::fs::remove_file(&foreign)?;
    std::fs::write(dirs.conf.join("01-broken.conf"), "{")?;
    eventually("invalid file reported", Duration::from_secs(6), || {
        let run = ctl.run(&["probe", "ready"])?;
        Ok(run.code != 0 && run.stderr.contains("01-broken.conf is invalid"))
    })?;
    std::fs::remove_file(dirs.conf.join("01-broken.conf"))?;
    eventually("ready again", Duration::from_secs(6), || {
        Ok(ctl.run(&["probe", "ready"])?.code == 0)
    })?;
    println!(
        "conflist removed: restored after {restore_removed:?}; foreign conflist: reported after {reported:?}"
    );
    Ok(())
}
