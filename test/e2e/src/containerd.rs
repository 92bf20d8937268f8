//! A real containerd (Debian's 1.6, with runc) for one test node, driven through its CRI plugin
//! by [`crate::cri::CriClient`] as kubelet drives it.
//!
//! Set-up, as the design brief's "facts about the test machines" require:
//! - containerd runs in the node's network namespace (`nsenter --net`, so hostPort rules of the
//!   chained `portmap` land in the node), but in the host's mount namespace: the pod network
//!   namespaces it bind-mounts under `/run/netns` (a shared mount, made so by `ip netns`)
//!   propagate into the agent's mount namespace (`ip netns exec` makes it a slave of the
//!   host's), so the agent can open `CNI_NETNS`;
//! - its own root, state, socket and config under a test directory; `restrict_oom_score_adj`
//!   (no CAP_SYS_RESOURCE here); the `native` snapshotter (no overlay-on-overlay surprises);
//!   cgroupfs;
//! - the locally built busybox image ([`crate::images`]) imported into the `k8s.io` namespace and
//!   used as the sandbox image (no registry is reachable);
//! - CNI config and bin dirs are the node's: the conflist the real `weft-agent install-cni`
//!   wrote, the `weft` plugin it installed and the chained plugins (`loopback`, which CRI
//!   runtimes run for every sandbox, and `portmap`).
//!
//! Drop removes every sandbox through CRI, stops containerd by its pid, kills shims left behind
//! (by the pids in containerd's state dir), unmounts what is mounted under the test directory and
//! removes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::cri::CriClient;
use crate::images::{self, TestImage};
use crate::netns;

/// The CRI namespace of containerd (kubelet's).
pub const K8S_NAMESPACE: &str = "k8s.io";

/// A containerd process and its directories.
pub struct Containerd {
    child: Option<Child>,
    /// The test directory holding root, state, config, socket and log.
    pub dir: PathBuf,
    /// The gRPC (CRI) socket.
    pub socket: PathBuf,
    /// containerd's config file.
    pub config: PathBuf,
    /// containerd's log (every run appended).
    pub log: PathBuf,
    /// The node network namespace it runs in.
    pub netns: String,
    /// The test image (also the sandbox image).
    pub image: TestImage,
}

impl Containerd {
    /// Writes the config, starts containerd in network namespace `netns` with the given CNI
    /// dirs, imports the test image and waits until CRI answers and reports NetworkReady.
    pub fn start(netns: &str, cni_conf_dir: &Path, cni_bin_dir: &Path) -> Result<Containerd> {
        let image = images::busybox()?;
        let dir = tempfile::Builder::new()
            .prefix("weft-containerd-")
            .tempdir()?
            .keep();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
                socket = socket.display(),
                image = image.name,
                bin = cni_bin_dir.display(),
                conf = cni_conf_dir.display(),
            ),
        )?;
        runtime_started();
        let mut containerd = Containerd {
            child: None,
            log: dir.join("containerd.log"),
            dir,
            socket,
            config,
            netns: netns.to_string(),
            image,
        };
        containerd.start_process()?;
        cmd::run(
            "ctr",
            &[
                "--address",
                &containerd.socket.display().to_string(),
                "--namespace",
                K8S_NAMESPACE,
                "images",
                "import",
                "--snapshotter",
                "native",
                &containerd.image.tar.display().to_string(),
            ],
        )
        .context("importing the test image into containerd")?;
        containerd.wait_network_ready(Duration::from_secs(20))?;
        Ok(containerd)
    }

    fn start_process(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("containerd of {} already runs", self.netns);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns::path(&self.netns).display()))
            .arg("containerd")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start containerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() {
                if let Ok(mut cri) = self.cri() {
                    if cri.version().is_ok() {
                        return Ok(());
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    bail!("containerd exited ({status}); log:\n{}", self.log_text());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer CRI in 20 s; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until CRI reports NetworkReady (a CNI config is loaded).
    pub fn wait_network_ready(&self, timeout: Duration) -> Result<()> {
        let mut cri = self.cri()?;
        let deadline = Instant::now() + timeout;
        while !cri.network_ready()? {
            if Instant::now() > deadline {
                bail!(
                    "containerd not NetworkReady after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// A CRI client for this containerd.
    pub fn cri(&self) -> Result<CriClient> {
        CriClient::connect(&self.socket, &self.dir.join("pods"))
    }

    /// The pid of the containerd process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops containerd (SIGTERM by pid, SIGKILL after 10 s), leaving its shims and so the
    /// containers running, as a runtime upgrade or restart does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
    }

    /// Stops and starts containerd again with the same config and state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_process()?;
        self.wait_network_ready(Duration::from_secs(20))
    }

    /// containerd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Removes every sandbox (stop, then remove), as kubelet does when pods go away.
    pub fn remove_all_sandboxes(&self) -> Result<()> {
        let mut cri = self.cri()?;
        for id in cri.list_sandboxes()? {
            cri.stop_pod_sandbox(&id)?;
            cri.remove_pod_sandbox(&id)?;
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.remove_all_sandboxes();
        }
        self.stop();
        // Shims and container processes that outlived containerd (a failed test): their pids
        // are in the runtime's state dir.
        kill_pids_in(&self.dir.join("state"), &["init.pid", "shim.pid"]);
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        runtime_stopped();
    }
}

/// The runtime instances (containerd, podman) of this process that are alive, and the network
/// namespaces that existed when the first of them started.
static RUNTIMES: Mutex<(usize, BTreeSet<String>)> = Mutex::new((0, BTreeSet::new()));

/// Prefixes of the pod namespaces the runtimes create under `/run/netns` (containerd: `cni-`,
/// podman: `netns-`).
const RUNTIME_NETNS_PREFIXES: [&str; 2] = ["cni-", "netns-"];

/// Records that a runtime instance starts (before it creates anything).
pub(crate) fn runtime_started() {
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    if runtimes.0 == 0 {
        runtimes.1 = netns::list().into_iter().collect();
    }
    runtimes.0 += 1;
}

/// Records that a runtime instance is gone; when it was the last one of this process, deletes
/// the runtime pod namespaces made since the first one started that no process uses: those a
/// runtime left behind (containerd 1.6 keeps the namespace of a sandbox whose CNI ADD and DEL
/// both failed). Waiting for the last instance keeps a namespace that another test's runtime
/// has just made, and not yet put its sandbox in, from being taken.
pub(crate) fn runtime_stopped() {
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    runtimes.0 = runtimes.0.saturating_sub(1);
    if runtimes.0 > 0 {
        return;
    }
    for name in netns::list() {
        let ours = RUNTIME_NETNS_PREFIXES.iter().any(|p| name.starts_with(p));
        if !ours || runtimes.1.contains(&name) {
            continue;
        }
        let pids = cmd::run("ip", &["netns", "pids", &name]).unwrap_or_default();
        if pids.trim().is_empty() {
            let _ = netns::delete(&name);
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`, then reap.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs every pid written in a file named one of `names` below `dir`, in that order of names.
pub(crate) fn kill_pids_in(dir: &Path, names: &[&str]) {
    for name in names {
        for file in find_files(dir, name) {
            let pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && entry.file_name() == name => found.push(path),
                _ => {}
            }
        }
    }
    found
}

/// Lazily unmounts every mount point at or below `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = cmd::run("umount", &["-l", point]);
    }
}
