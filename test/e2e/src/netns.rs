//! Network namespaces for tests: create, delete, run code or commands inside one.
//!
//! Entering a namespace is done on a dedicated std thread (never on an async runtime worker), so
//! the calling thread's namespace never changes.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::cmd;

/// Path of a named namespace as created by `ip netns add`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Creates the named namespace and brings its loopback up.
pub fn create(name: &str) -> Result<()> {
    cmd::run("ip", &["netns", "add", name])?;
    cmd::run("ip", &["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes the named namespace; a namespace that is already gone is not an error.
pub fn delete(name: &str) -> Result<()> {
    if !path(name).exists() {
        return Ok(());
    }
    cmd::run("ip", &["netns", "delete", name]).map(|_| ())
}

/// Lists the names of all namespaces created with `ip netns add`.
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a fresh thread that has entered the named namespace, and returns its result.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path(name)).with_context(|| format!("cannot open netns {name}"))?;
    let name = name.to_string();
    std::thread::spawn(move || -> Result<T> {
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter netns {name}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("thread inside netns panicked"))?
}

/// Opens a TCP connection from inside the named namespace (for listeners that live there).
pub fn tcp_connect_in(name: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    run_in(name, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .map_err(std::io::Error::other)?
}

/// Runs a command inside the namespace (`ip netns exec`), returning stdout.
pub fn exec(name: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", name];
    full.extend_from_slice(args);
    cmd::run("ip", &full)
}
