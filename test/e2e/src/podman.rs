//! A real podman (Debian's 4.3, rootful, runc) for one test node, with its CNI network backend
//! reading the node's CNI dirs: `podman run --network weft` runs the `weft` conflist the real
//! `weft-agent install-cni` wrote, through podman's libcni.
//!
//! Set-up, as the design brief's "facts about the test machines" require: a private
//! `containers.conf` (`CONTAINERS_CONF`, so no system file is read) with
//! `network_backend = "cni"` (otherwise podman wants netavark and drops its own conflist),
//! capped `default_ulimits` (nofile, nproc), cgroupfs, a file events logger; its own storage
//! (`--root`, `--runroot`, the `vfs` driver) and tmp dir under a test directory. No
//! `default_network = "weft"`: when no valid conflist defines the default network, podman makes
//! up a `bridge` network of that name and would run containers on it. Every command
//! runs in the node's network namespace (`nsenter --net`) and the host's mount namespace, for the
//! same reason as containerd ([`crate::containerd`]). The busybox test image is `podman load`ed.
//!
//! Drop removes every container (`podman rm --all --force`, which runs the CNI DEL), kills
//! conmon and container processes left behind (by the pids in podman's run dir), unmounts what
//! is mounted under the test directory and removes it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

use crate::containerd::{kill_pids_in, runtime_started, runtime_stopped, unmount_under};
use crate::images::{self, TestImage};
use crate::netns;

/// The network name of Weft's conflist (`--network weft`).
pub const NETWORK: &str = "weft";

/// podman's configuration and storage for one node.
pub struct Podman {
    /// The test directory (config, storage, run dir, tmp dir).
    pub dir: PathBuf,
    /// The node network namespace podman runs in.
    pub netns: String,
    /// The `containers.conf`.
    pub config: PathBuf,
    /// The test image.
    pub image: TestImage,
}

impl Podman {
    /// Writes the config and loads the test image.
    pub fn new(netns: &str, cni_conf_dir: &Path, cni_bin_dir: &Path) -> Result<Podman> {
        let image = images::busybox()?;
        let dir = tempfile::Builder::new()
            .prefix("weft-podman-")
            .tempdir()?
            .keep();
        let config = dir.join("containers.conf");
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::write(
            &config,
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{conf}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"
volume_path = "{d}/volumes"
"#,
                bin = cni_bin_dir.display(),
                conf = cni_conf_dir.display(),
                d = dir.display(),
            ),
        )?;
        runtime_started();
        let podman = Podman {
            dir,
            netns: netns.to_string(),
            config,
            image,
        };
        podman
            .run(&["load", "--input", &podman.image.tar.display().to_string()])
            .context("loading the test image into podman")?;
        Ok(podman)
    }

    /// The podman command with this instance's config and storage, in the node's namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns::path(&self.netns).display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--storage-driver")
            .arg("vfs")
            .args(args)
            .env("CONTAINERS_CONF", &self.config);
        command
    }

    /// Runs `podman ARGS`; its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        self.command(args).output().context("cannot run podman")
    }

    /// Runs `podman ARGS`, which must succeed; returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "podman {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman run -d --network weft --name NAME IMAGE COMMAND...` (extra `options` before the
    /// image); returns the container id.
    pub fn run_container(&self, name: &str, options: &[&str], command: &[&str]) -> Result<String> {
        let mut args = vec!["run", "--detach", "--network", NETWORK, "--name", name];
        args.extend_from_slice(options);
        args.push(&self.image.name);
        args.extend_from_slice(command);
        Ok(self.run(&args)?.trim().to_string())
    }

    /// `podman exec NAME CMD...`, which must exit 0; returns stdout.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Result<String> {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    /// The container's IPv4 address on the `weft` network, as podman recorded it from the CNI
    /// result.
    pub fn ip(&self, name: &str) -> Result<std::net::IpAddr> {
        let out = self.run(&[
            "inspect",
            "--format",
            "{{(index .NetworkSettings.Networks \"weft\").IPAddress}}",
            name,
        ])?;
        out.trim()
            .parse()
            .with_context(|| format!("podman container {name}: no weft IP in {out:?}"))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        kill_pids_in(&self.dir.join("run"), &["pidfile", "conmon.pid"]);
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        runtime_stopped();
    }
}
