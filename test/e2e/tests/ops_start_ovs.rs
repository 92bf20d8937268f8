//! The image's OVS entrypoint (build/images/start-ovs, the DaemonSet's weft-ovs container) run
//! for real: in a private mount and network namespace with tmpfs over the OVS directories, it
//! starts ovsdb-server, sets flow-restore-wait=true before ovs-vswitchd starts, leaves the pid
//! file and `ovs-vswitchd.PID.ctl` where the agent's packet trace looks, and stops both daemons
//! and exits 0 on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `unshare` process; on drop its child (the script) and the script's daemons are stopped.
struct Contained(Child);

impl Contained {
    /// The script: the child of `unshare --fork`.
    fn script_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            self.0.id(),
            self.0.id()
        ))
        .ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    fn in_ns(&self, script: &str) -> Result<String> {
        let pid = self.script_pid().context("script not running")?;
        let out = Command::new("nsenter")
            .args([
                "--target",
                &pid.to_string(),
                "--mount",
                "--net",
                "sh",
                "-c",
                script,
            ])
            .output()?;
        ensure!(out.status.success(), "{script}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        if let Some(pid) = self.script_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn start_ovs_sets_flow_restore_wait_before_vswitchd_and_stops_cleanly() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/images/start-ovs");
    let created_run_dir = !Path::new("/var/run/openvswitch").exists();
    let setup = format!(
        "mount --make-rprivate / && for d in /var/run/openvswitch /var/lib/openvswitch /var/log/openvswitch; do \
         mkdir -p $d && mount -t tmpfs weft-test $d || exit 1; done; ip link set lo up; exec {}",
        script.display()
    );
    let child = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "sh", "-c", &setup])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut ovs = Contained(child);
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listing = loop {
            let listing = ovs.in_ns("ls /var/run/openvswitch").unwrap_or_default();
            if listing.contains("ovs-vswitchd.pid") && listing.contains(".ctl") {
                break listing;
            }
            if Instant::now() > deadline {
                bail!("ovs-vswitchd did not start: {listing}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let pid = ovs.in_ns("cat /var/run/openvswitch/ovs-vswitchd.pid")?;
        ensure!(
            listing.contains(&format!("ovs-vswitchd.{}.ctl", pid.trim())),
            "{listing}"
        );
        let other = ovs.in_ns("ovs-vsctl get Open_vSwitch . other_config")?;
        ensure!(other.contains("flow-restore-wait=\"true\""), "{other}");
        let version = ovs.in_ns("ovs-appctl -t ovs-vswitchd version")?;
        ensure!(version.contains("Open vSwitch"), "{version}");
        // SIGTERM: both daemons stop, the script exits 0.
        let script_pid = ovs.script_pid().context("script pid")?;
        kill(Pid::from_raw(script_pid), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = ovs.0.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("start-ovs did not exit on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(status.success(), "start-ovs exited {status}");
        Ok(())
    })();
    drop(ovs);
    if created_run_dir {
        let _ = std::fs::remove_dir("/var/run/openvswitch");
    }
    result
}
