//! A private Open vSwitch (ovsdb-server + ovs-vswitchd; bridges on the test datapath, see
//! [`crate::datapath`]) in its own network namespace and run directory.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{cmd, netns, Datapath};

/// Prefix of every namespace and directory this harness creates.
pub const PREFIX: &str = "wt-";
/// Parent directory of all instance directories.
pub const BASE_DIR: &str = "/tmp/weft-test";
/// The OVSDB schema shipped by Debian's openvswitch-common.
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Port of the OVSDB TCP listener inside an instance's namespace.
const OVSDB_TCP_PORT: u16 = 6640;
/// Port of the OpenFlow TCP listener inside an instance's namespace.
const OPENFLOW_TCP_PORT: u16 = 6653;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Options for [`OvsInstance::start_with`].
#[derive(Debug, Clone, Default)]
pub struct OvsOptions {
    /// Sets `other_config:userspace-tso-enable=true` before ovs-vswitchd starts.
    pub userspace_tso: bool,
    /// Sets `other_config:flow-restore-wait=true` before ovs-vswitchd starts.
    pub flow_restore_wait: bool,
}

/// A running private OVS. Dropping it stops both daemons (by pid), deletes the namespace and
/// removes the run directory.
#[derive(Debug)]
pub struct OvsInstance {
    name: String,
    dir: PathBuf,
    ovsdb: Option<Child>,
    vswitchd: Option<Child>,
}

impl OvsInstance {
    /// Starts a fresh namespace with its own ovsdb-server and ovs-vswitchd.
    pub fn start() -> Result<Self> {
        Self::start_with(OvsOptions::default())
    }

    /// Starts a fresh instance with the given options.
    pub fn start_with(options: OvsOptions) -> Result<Self> {
        SWEEP.call_once(sweep_stale);
        let name = unique_name();
        let dir = Path::new(BASE_DIR).join(&name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut instance = OvsInstance {
            name,
            dir,
            ovsdb: None,
            vswitchd: None,
        };
        // From here on, Drop cleans up whatever was made if a step fails.
        netns::create(&instance.name)?;
        let db = instance.db_file();
        cmd::run("ovsdb-tool", &["create", path_str(&db)?, SCHEMA])?;
        instance.start_ovsdb()?;
        instance.vsctl(&["--no-wait", "init"])?;
        if options.userspace_tso {
            instance.vsctl(&[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:userspace-tso-enable=true",
            ])?;
        }
        if options.flow_restore_wait {
            instance.vsctl(&[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:flow-restore-wait=true",
            ])?;
        }
        instance.start_vswitchd()?;
        Ok(instance)
    }

    /// The unique name of this instance; also the name of its network namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace ovs-vswitchd runs in (and its ports live in).
    pub fn netns(&self) -> &str {
        &self.name
    }

    /// The run directory (OVS_RUNDIR): sockets, pid files, logs, the database file.
    pub fn rundir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.dir.join("conf.db")
    }

    /// The ovsdb-server unix socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// The OpenFlow management socket of a bridge (`RUNDIR/BRIDGE.mgmt`).
    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("{bridge}.mgmt"))
    }

    /// The unixctl socket of ovs-vswitchd.
    pub fn vswitchd_ctl(&self) -> PathBuf {
        self.dir.join("ovs-vswitchd.ctl")
    }

    /// The unixctl socket of ovsdb-server.
    pub fn ovsdb_ctl(&self) -> PathBuf {
        self.dir.join("ovsdb-server.ctl")
    }

    /// The pid of the running ovs-vswitchd, if any.
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.vswitchd.as_ref().map(Child::id)
    }

    /// The pid of the running ovsdb-server, if any.
    pub fn ovsdb_pid(&self) -> Option<u32> {
        self.ovsdb.as_ref().map(Child::id)
    }

    /// Creates a bridge with the test datapath ([`Datapath::current`]), OpenFlow 1.5 only and
    /// secure fail mode, and waits until its management socket accepts connections.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        let current = Datapath::current();
        // A loaded module shows in /sys/module; a kernel without module support (the UML
        // kernel of build/uml-kernel, everything built in) has no /proc/modules.
        let kernel_module =
            Path::new("/sys/module/openvswitch").exists() || !Path::new("/proc/modules").exists();
        if current == Datapath::System && !kernel_module {
            bail!(
                "bridge {bridge}: {}=system needs OVS's kernel module, and openvswitch is not \
                 loaded: run the tests inside build/uml (build/test-system)",
                crate::datapath::ENV
            );
        }
        let datapath = format!("datapath_type={current}");
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            &datapath,
            "protocols=OpenFlow15",
            "fail_mode=secure",
        ])?;
        let mgmt = self.mgmt_socket(bridge);
        wait_for(&format!("bridge {bridge} management socket"), || {
            UnixStream::connect(&mgmt).is_ok()
        })
    }

    /// Runs `ovs-vsctl` against this instance's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.db_socket().display());
        let mut full = vec![db.as_str(), "--timeout=20"];
        full.extend_from_slice(args);
        cmd::run_env("ovs-vsctl", &full, &self.env())
    }

    /// Runs `ovs-ofctl -O OpenFlow15`; a bridge name resolves to its management socket here.
    pub fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-O", "OpenFlow15"];
        full.extend_from_slice(args);
        cmd::run_env("ovs-ofctl", &full, &self.env())
    }

    /// The bridge's flows as `ovs-ofctl --no-stats dump-flows` prints them: one trimmed line per
    /// flow, header removed, sorted.
    pub fn dump_flows(&self, bridge: &str) -> Result<Vec<String>> {
        let text = self.ofctl(&["--no-stats", "dump-flows", bridge])?;
        let mut flows: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| {
                !line.is_empty() && !line.starts_with("OFPST_") && !line.starts_with("NXST_")
            })
            .map(str::to_string)
            .collect();
        flows.sort();
        Ok(flows)
    }

    /// Runs `ovs-appctl` against ovs-vswitchd.
    pub fn appctl_vswitchd(&self, args: &[&str]) -> Result<String> {
        self.appctl(&self.vswitchd_ctl(), args)
    }

    /// Runs `ovs-appctl` against ovsdb-server.
    pub fn appctl_ovsdb(&self, args: &[&str]) -> Result<String> {
        self.appctl(&self.ovsdb_ctl(), args)
    }

    fn appctl(&self, target: &Path, args: &[&str]) -> Result<String> {
        let target = path_str(target)?;
        let mut full = vec!["-t", target];
        full.extend_from_slice(args);
        cmd::run_env("ovs-appctl", &full, &self.env())
    }

    /// Starts ovsdb-server (inside the namespace, so TCP remotes listen there) and waits for its
    /// socket.
    pub fn start_ovsdb(&mut self) -> Result<()> {
        if self.ovsdb.is_some() {
            bail!("ovsdb-server of {} is already running", self.name);
        }
        let db = self.db_file();
        let args = [
            path_str(&db)?.to_string(),
            format!("--remote=punix:{}", self.db_socket().display()),
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options".to_string(),
            format!("--unixctl={}", self.ovsdb_ctl().display()),
            format!("--log-file={}", self.dir.join("ovsdb-server.log").display()),
            format!("--pidfile={}", self.dir.join("ovsdb-server.pid").display()),
        ];
        self.ovsdb = Some(self.spawn("ovsdb-server", &args)?);
        let socket = self.db_socket();
        wait_for("ovsdb-server socket", || {
            UnixStream::connect(&socket).is_ok()
        })
    }

    /// Stops ovsdb-server (SIGTERM, then SIGKILL after a grace period) by the pid started here.
    pub fn stop_ovsdb(&mut self) -> Result<()> {
        stop_child(self.ovsdb.take())
    }

    /// Stops and starts ovsdb-server on the same database and socket path.
    pub fn restart_ovsdb(&mut self) -> Result<()> {
        self.stop_ovsdb()?;
        self.start_ovsdb()
    }

    /// Starts ovs-vswitchd inside the namespace and waits until it answers on its control socket.
    pub fn start_vswitchd(&mut self) -> Result<()> {
        if self.vswitchd.is_some() {
            bail!("ovs-vswitchd of {} is already running", self.name);
        }
        let args = [
            format!("unix:{}", self.db_socket().display()),
            format!("--unixctl={}", self.vswitchd_ctl().display()),
            format!("--log-file={}", self.dir.join("ovs-vswitchd.log").display()),
            format!("--pidfile={}", self.dir.join("ovs-vswitchd.pid").display()),
        ];
        self.vswitchd = Some(self.spawn("ovs-vswitchd", &args)?);
        wait_for("ovs-vswitchd control socket", || {
            self.appctl_vswitchd(&["version"]).is_ok()
        })?;
        // Bridges configured in the database come back with the daemon: wait for their sockets.
        let bridges = self.vsctl(&["list-br"])?;
        for bridge in bridges.lines().map(str::trim).filter(|b| !b.is_empty()) {
            let mgmt = self.mgmt_socket(bridge);
            wait_for(&format!("bridge {bridge} management socket"), || {
                UnixStream::connect(&mgmt).is_ok()
            })?;
        }
        Ok(())
    }

    /// Stops ovs-vswitchd by the pid started here.
    pub fn stop_vswitchd(&mut self) -> Result<()> {
        stop_child(self.vswitchd.take())
    }

    /// Stops and starts ovs-vswitchd (bridges and ports come back from the database).
    pub fn restart_vswitchd(&mut self) -> Result<()> {
        self.stop_vswitchd()?;
        self.start_vswitchd()
    }

    /// Adds a passive TCP OVSDB remote inside the namespace with the given inactivity probe
    /// (milliseconds; 0 disables probing) and returns its address (reach it with
    /// [`netns::tcp_connect_in`]).
    pub fn ovsdb_tcp_remote(&self, inactivity_probe_ms: u32) -> Result<SocketAddr> {
        let target = format!("ptcp:{OVSDB_TCP_PORT}:127.0.0.1");
        self.vsctl(&[
            "--no-wait",
            "--",
            "--id=@m",
            "create",
            "Manager",
            &format!("target=\"{target}\""),
            &format!("inactivity_probe={inactivity_probe_ms}"),
            "--",
            "add",
            "Open_vSwitch",
            ".",
            "manager_options",
            "@m",
        ])?;
        let addr: SocketAddr = ([127, 0, 0, 1], OVSDB_TCP_PORT).into();
        self.wait_tcp(addr)?;
        Ok(addr)
    }

    /// Makes the bridge listen for OpenFlow on TCP inside the namespace and returns the address.
    pub fn openflow_tcp_remote(&self, bridge: &str) -> Result<SocketAddr> {
        let target = format!("ptcp:{OPENFLOW_TCP_PORT}:127.0.0.1");
        self.vsctl(&["set-controller", bridge, &target])?;
        let addr: SocketAddr = ([127, 0, 0, 1], OPENFLOW_TCP_PORT).into();
        self.wait_tcp(addr)?;
        Ok(addr)
    }

    fn wait_tcp(&self, addr: SocketAddr) -> Result<()> {
        wait_for(&format!("tcp listener {addr} in {}", self.name), || {
            netns::tcp_connect_in(&self.name, addr).is_ok()
        })
    }

    fn env(&self) -> [(&'static str, &str); 3] {
        let dir = self.dir.to_str().unwrap_or("/nonexistent");
        [("OVS_RUNDIR", dir), ("OVS_LOGDIR", dir), ("OVS_DBDIR", dir)]
    }

    fn spawn(&self, program: &str, args: &[String]) -> Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{program}.out")))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, value) in self.env() {
            command.env(key, value);
        }
        // `ip netns exec` execs the program, so the child's pid is the daemon's pid.
        command
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", self.name))
    }
}

impl Drop for OvsInstance {
    fn drop(&mut self) {
        let _ = stop_child(self.vswitchd.take());
        let _ = stop_child(self.ovsdb.take());
        if let Err(err) = netns::delete(&self.name) {
            eprintln!("weft-e2e: cannot delete netns {}: {err:#}", self.name);
        }
        if std::env::var_os("WEFT_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not utf-8", path.display()))
}

/// Polls `ready` every 20 ms until it returns true or the startup timeout passes.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {STARTUP_TIMEOUT:?} waiting for {what}")
}

/// Sends SIGTERM to a child started here, waits for it, and escalates to SIGKILL.
fn stop_child(child: Option<Child>) -> Result<()> {
    let Some(mut child) = child else {
        return Ok(());
    };
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Removes namespaces, daemons and directories left by test processes that no longer exist
/// (a test binary killed with SIGKILL cannot run its destructors).
fn sweep_stale() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(entries) = fs::read_dir(BASE_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !stale(&name) {
                continue;
            }
            let dir = entry.path();
            for daemon in ["ovs-vswitchd", "ovsdb-server"] {
                kill_stale_daemon(&dir, daemon);
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }
    for name in netns::list() {
        if stale(&name) {
            let _ = netns::delete(&name);
        }
    }
}

/// Kills a daemon recorded in a stale instance's pid file, but only if that pid still runs the
/// daemon with this instance's directory on its command line (never a stranger's process).
fn kill_stale_daemon(dir: &Path, daemon: &str) {
    let Ok(text) = fs::read_to_string(dir.join(format!("{daemon}.pid"))) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    if cmdline.contains(daemon) && cmdline.contains(&*dir.to_string_lossy()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_the_pid() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{PREFIX}{}-", std::process::id())));
    }
}
