//! `build/lab switch-mode` through the lab's own path: the `weft-lab` binary started as
//! `build/lab up` starts it (a two-node encap lab), then the real `build/lab switch-mode`,
//! `status` and `down` scripts with `WEFT_LAB_DIR` pointing at a private directory. The switch
//! restarts the agents in noEncap keeping the pods: the bridge records the new mode, the tunnel
//! port is gone, the pods' namespaces and addresses are the same and they still reach each
//! other across nodes; a bad mode is refused without touching the lab.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use weft_e2e::node::{ping, Binaries};

/// The lab process, reaped by a waiter thread as soon as it exits (so `build/lab down`, which
/// polls `kill -0`, sees it gone); on drop SIGTERM (the lab's own teardown) and wait.
struct Lab {
    pid: i32,
    waiter: Option<std::thread::JoinHandle<()>>,
}

impl Lab {
    fn spawn(mut command: Command) -> Result<Lab> {
        let mut child = command.spawn().context("cannot start weft-lab")?;
        let pid = i32::try_from(child.id())?;
        let waiter = std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(Lab {
            pid,
            waiter: Some(waiter),
        })
    }

    fn exited(&self) -> bool {
        self.waiter.as_ref().is_none_or(|w| w.is_finished())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.pid);
        if !self.exited() {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.exited() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
    }
}

fn lab_script(dir: &Path, args: &[&str]) -> Result<Output> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/lab");
    Ok(Command::new(script)
        .args(args)
        .env("WEFT_LAB_DIR", dir)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn vsctl(rundir: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ovs-vsctl")
        .env("OVS_RUNDIR", rundir)
        .arg(format!("--db=unix:{rundir}/db.sock"))
        .args(args)
        .output()?;
    ensure!(out.status.success(), "ovs-vsctl {args:?}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_matches('"')
        .to_string())
}

#[test]
fn lab_switch_mode_restarts_agents_keeping_pods() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    let bins = Binaries::locate()?;
    let lab_bin = bins
        .agent
        .parent()
        .context("binaries directory")?
        .join("weft-lab");
    let log = std::fs::File::create(dir.path().join("weft-lab.log"))?;
    let mut command = Command::new(&lab_bin);
    command
        .args(["up", "--state"])
        .arg(&state)
        .args(["--nodes", "2", "--mode", "encap", "--pods-per-node", "1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let lab = Lab::spawn(command)?;
    std::fs::write(dir.path().join("weft-lab.pid"), lab.pid.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !state.exists() {
        if Instant::now() > deadline || lab.exited() {
            bail!(
                "the lab did not come up:\n{}",
                std::fs::read_to_string(dir.path().join("weft-lab.log"))?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    let rundir = before["rundir"].as_str().context("rundir")?.to_string();
    let mode = || {
        vsctl(
            &rundir,
            &["get", "Bridge", "br-int", "external_ids:weft-mode"],
        )
    };
    ensure!(mode()? == "encap/geneve", "lab not in encap: {}", mode()?);

    // A bad mode is refused by the script; the lab keeps running in encap.
    let bad = lab_script(dir.path(), &["switch-mode", "vxlan"])?;
    ensure!(!bad.status.success(), "switch-mode vxlan accepted");
    ensure!(
        mode()? == "encap/geneve",
        "mode changed by a refused switch"
    );

    let out = lab_script(dir.path(), &["switch-mode", "noEncap"])?;
    let printed = text(&out);
    ensure!(
        out.status.success(),
        "switch-mode failed:\n{printed}\nlab log:\n{}",
        std::fs::read_to_string(dir.path().join("weft-lab.log"))?
    );
    // Every cell of the ping matrix (the rows after its "from\\to" header) is "ok".
    let rows: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("from\\to"))
        .skip(1)
        .collect();
    ensure!(
        printed.contains("switched to mode noEncap")
            && rows.len() == 2
            && rows
                .iter()
                .all(|r| r.split_whitespace().skip(1).all(|cell| cell == "ok")),
        "switch-mode output:\n{printed}"
    );
    ensure!(
        mode()? == "noEncap",
        "bridge mode after the switch: {}",
        mode()?
    );
    let ports = vsctl(&rundir, &["list-ports", "br-int"])?;
    ensure!(
        !ports.lines().any(|p| p == "weft-tun0"),
        "tunnel port left in noEncap: {ports}"
    );
    // The pods are the same and still reach each other across the nodes.
    let after: Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    ensure!(before["pods"] == after["pods"], "pods changed: {after}");
    let pods = after["pods"].as_array().context("pods")?;
    ensure!(pods.len() == 2, "{pods:?}");
    for (from, to) in [(&pods[0], &pods[1]), (&pods[1], &pods[0])] {
        let ns = from["netns"].as_str().context("netns")?;
        let ip = to["ips"][0].as_str().context("ip")?.parse()?;
        ping(ns, ip).with_context(|| format!("{} -> {}", from["name"], to["name"]))?;
    }
    let status = lab_script(dir.path(), &["status"])?;
    ensure!(
        status.status.success() && text(&status).contains("lab is up"),
        "{}",
        text(&status)
    );

    let down = lab_script(dir.path(), &["down"])?;
    ensure!(down.status.success(), "down: {}", text(&down));
    ensure!(!state.exists(), "state file left after down");
    ensure!(lab.exited(), "weft-lab still runs after down");
    drop(lab);
    for pod in pods {
        let ns = pod["netns"].as_str().unwrap_or_default();
        ensure!(
            !Path::new("/run/netns").join(ns).exists(),
            "pod netns {ns} left after down"
        );
    }
    Ok(())
}

/// `build/lab up --runtime containerd`: the lab's pods are real containers made by a containerd
/// through CRI; `build/lab exec` runs commands in them through the runtime (`ctr tasks exec`),
/// and `build/lab down` removes everything.
#[test]
fn lab_with_containerd_pods_execs_through_the_runtime() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    let bins = Binaries::locate()?;
    let lab_bin = bins
        .agent
        .parent()
        .context("binaries directory")?
        .join("weft-lab");
    let log = std::fs::File::create(dir.path().join("weft-lab.log"))?;
    let mut command = Command::new(&lab_bin);
    command
        .args(["up", "--state"])
        .arg(&state)
        .args(["--runtime", "containerd", "--pods-per-node", "2"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let lab = Lab::spawn(command)?;
    std::fs::write(dir.path().join("weft-lab.pid"), lab.pid.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !state.exists() {
        if Instant::now() > deadline || lab.exited() {
            bail!(
                "the lab did not come up:\n{}",
                std::fs::read_to_string(dir.path().join("weft-lab.log"))?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let up: Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    ensure!(up["runtime"] == "containerd", "{up}");
    let printed = std::fs::read_to_string(dir.path().join("weft-lab.log"))?;
    let rows: Vec<&str> = printed.lines().filter(|l| l.starts_with("pod-")).collect();
    ensure!(
        rows.len() == 4
            && rows[2..]
                .iter()
                .all(|r| !r.contains("FAIL") && !r.contains("/3")),
        "ping matrix:\n{printed}"
    );

    let out = lab_script(dir.path(), &["exec", "pod-2", "--", "hostname"])?;
    ensure!(text(&out).trim() == "pod-2", "exec: {}", text(&out));
    let out = lab_script(
        dir.path(),
        &["exec", "pod-1", "--", "cat", "/proc/1/cmdline"],
    )?;
    ensure!(
        text(&out).starts_with("sleep"),
        "exec ran outside the container: {}",
        text(&out)
    );
    let netns = up["pods"][0]["netns"]
        .as_str()
        .context("pod netns")?
        .to_string();

    let out = lab_script(dir.path(), &["down"])?;
    ensure!(out.status.success(), "down: {}", text(&out));
    ensure!(lab.exited(), "weft-lab still runs after down");
    ensure!(
        !weft_e2e::netns::list().contains(&netns),
        "pod namespace {netns} left"
    );
    Ok(())
}
