//! Issue 13 (part 4): `weft-agent install-cni` replaces the plugin while container runtimes exec
//! it. Every exec must find a complete, executable file: the installer closes the new file before
//! renaming it into place (an exec of a file still open for writing fails with ETXTBSY, "Text
//! file busy": 10 of 1833 execs did before). Real binaries: the installer runs as its own
//! process, as in an init container, while this test execs the installed plugin in a loop.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use weft_e2e::node::Binaries;

const INSTALLS: usize = 20;

#[test]
fn install_cni_replaces_the_plugin_while_it_is_executed_without_text_file_busy() -> Result<()> {
    let bins = Binaries::locate()?;
    let dir = tempfile::tempdir()?;
    let bin_dir = dir.path().join("bin");
    let config = dir.path().join("weft-agent.conf");
    std::fs::write(
        &config,
        format!(
            "nodeName: install-test\ncniConfDir: {}\ncniBinDir: {}\n",
            dir.path().join("net.d").display(),
            bin_dir.display()
        ),
    )?;
    let install = || -> Result<()> {
        let out = Command::new(&bins.agent)
            .arg("--config")
            .arg(&config)
            .arg("install-cni")
            .arg("--plugin")
            .arg(&bins.plugin)
            .output()?;
        ensure!(
            out.status.success(),
            "install-cni: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    install()?;
    let plugin = bin_dir.join("weft");

    let stop = Arc::new(AtomicBool::new(false));
    let execs = {
        let stop = stop.clone();
        let plugin = plugin.clone();
        std::thread::spawn(move || -> Result<(u32, Vec<String>)> {
            let (mut ok, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                // VERSION needs no agent: the plugin answers it itself.
                match Command::new(&plugin)
                    .env_clear()
                    .env("CNI_COMMAND", "VERSION")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .output()
                {
                    Ok(out) if out.status.success() && out.stdout.starts_with(b"{") => ok += 1,
                    Ok(out) => failures.push(format!("exit {}", out.status)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            Ok((ok, failures))
        })
    };
    let installs: Result<()> = (0..INSTALLS).try_for_each(|_| install());
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = execs
        .join()
        .map_err(|_| anyhow::anyhow!("exec loop panicked"))??;
    installs.context("install-cni while the plugin is executed")?;
    eprintln!("{INSTALLS} installs, {ok} execs, {} failed", failures.len());
    ensure!(ok > 0, "the plugin was never executed");
    ensure!(
        failures.is_empty(),
        "{} of {} execs failed while install-cni replaced the plugin: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(5)]
    );
    Ok(())
}
