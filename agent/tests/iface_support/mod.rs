//! Shared helpers of the `iface_*` tests: uniquely named network namespaces removed on drop
//! (also when a test panics), and readers of `ip -j` output. Tests may run `ip`; the library may
//! not.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use serde_json::Value;
use weft_e2e::{cmd, netns};

const PREFIX: &str = "wfi-";

/// A network namespace made with `ip netns add`, deleted when dropped.
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates `wfi-<tag>-<pid>-<n>` (loopback up).
    pub fn new(tag: &str) -> Self {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        netns::create(&name).unwrap_or_else(|e| panic!("cannot create netns {name}: {e:#}"));
        TestNetns { name }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        netns::path(&self.name)
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        netns::exec(&self.name, args)
    }

    /// `ip -j link show`, one JSON object per interface.
    pub fn links(&self) -> Vec<Value> {
        json_list(&self.ip(&["-j", "link", "show"]).unwrap())
    }

    /// Names of all interfaces but `lo`.
    pub fn link_names(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .filter(|n| n != "lo")
            .collect()
    }

    /// `ip -j addr show dev IFNAME` (the single object), or `None` if it does not exist.
    pub fn addr_show(&self, ifname: &str) -> Option<Value> {
        let out = self.ip(&["-j", "addr", "show", "dev", ifname]).ok()?;
        json_list(&out).into_iter().next()
    }

    /// Global addresses of an interface as `ADDR/PREFIX` strings, sorted.
    pub fn global_addresses(&self, ifname: &str) -> Vec<String> {
        let link = self.addr_show(ifname).expect("interface exists");
        let mut out: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        out.sort();
        out
    }

    /// `ip -j [-6] route show default`.
    pub fn default_routes(&self, ipv6: bool) -> Vec<Value> {
        let args: &[&str] = if ipv6 {
            &["-j", "-6", "route", "show", "default"]
        } else {
            &["-j", "route", "show", "default"]
        };
        json_list(&self.ip(args).unwrap())
    }

    /// The `tx-checksumming` line of `ethtool -k IFNAME`: `on` or `off`.
    pub fn tx_checksumming(&self, ifname: &str) -> String {
        let out = self.exec(&["ethtool", "-k", ifname]).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("tx-checksumming: "))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .expect("ethtool -k prints tx-checksumming")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.name) {
            eprintln!("cannot delete netns {}: {e:#}", self.name);
        }
    }
}

/// Parses `ip -j` output (a JSON array; empty output means none).
pub fn json_list(out: &str) -> Vec<Value> {
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Value>(out)
        .with_context(|| format!("bad ip -j output: {out}"))
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Removes namespaces left behind by killed test processes (their pid no longer runs).
fn sweep_stale() {
    for name in netns::list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest
            .split('-')
            .rev()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = netns::delete(&name);
            }
        }
    }
}

/// The inode of a thread's current network namespace.
pub fn thread_netns_ino() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// The inode of the process's (main thread's) network namespace.
pub fn process_netns_ino() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}
