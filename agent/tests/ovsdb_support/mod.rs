//! Shared helpers of the OVSDB integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weft_agent::ovsdb::{Client, ClientConfig, Endpoint, MonitorSpec, Operation, Row, Uuid};

/// Runs blocking harness code (process spawning) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Client config for a unix socket, with short timeouts suited to tests.
pub fn unix_config(socket: PathBuf) -> ClientConfig {
    let mut config = ClientConfig::new(Endpoint::Unix(socket));
    config.call_timeout = Duration::from_secs(20);
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config
}

/// A unix endpoint that refuses to connect while `open` is false (simulates a longer outage
/// without touching the server).
pub fn gated_unix(socket: PathBuf, open: Arc<AtomicBool>) -> Endpoint {
    Endpoint::custom("gated-unix", move || {
        let socket = socket.clone();
        let open = open.clone();
        async move {
            if !open.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "gate closed by the test",
                ));
            }
            tokio::net::UnixStream::connect(socket).await
        }
    })
}

/// A TCP endpoint reached from inside the instance's network namespace.
pub fn tcp_in_netns(netns: &str, addr: SocketAddr) -> Endpoint {
    let netns = netns.to_owned();
    Endpoint::custom(&format!("tcp:{addr}@{netns}"), move || {
        let netns = netns.clone();
        async move {
            let stream =
                tokio::task::spawn_blocking(move || weft_e2e::netns::tcp_connect_in(&netns, addr))
                    .await
                    .map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            tokio::net::TcpStream::from_std(stream)
        }
    })
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_until`] for async checks returning a result.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh `select` of every monitored table and column, shaped like `Cache::as_map`.
pub async fn select_monitored(client: &Client) -> Result<BTreeMap<String, BTreeMap<Uuid, Row>>> {
    let schema = client.schema().context("client has no schema")?;
    let spec = MonitorSpec::weft();
    let mut tables = Vec::new();
    let mut ops = Vec::new();
    for (table, columns) in spec.tables() {
        let known = &schema.tables[table];
        let mut cols: Vec<&str> = columns
            .iter()
            .filter(|c| known.contains_key(*c))
            .map(String::as_str)
            .collect();
        cols.push("_uuid");
        ops.push(Operation::select(table, Vec::new(), Some(&cols)));
        tables.push(table.clone());
    }
    let out = client.transact(ops).await?;
    let mut map = BTreeMap::new();
    for (table, result) in tables.into_iter().zip(out.results) {
        let mut rows = BTreeMap::new();
        for mut row in result.rows.unwrap_or_default() {
            let uuid = row
                .remove("_uuid")
                .and_then(|d| d.as_uuid().cloned())
                .context("select row without _uuid")?;
            rows.insert(uuid, row);
        }
        map.insert(table, rows);
    }
    Ok(map)
}

/// Waits until the client's cache equals a fresh select (vswitchd may still be updating rows,
/// so this retries until `timeout`).
pub async fn assert_cache_matches_db(client: &Client, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let db = select_monitored(client).await?;
        // Give update2 for anything committed before the select a moment to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cache = client.read_cache(|c| c.as_map().clone());
        if cache == db {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("cache differs from the database:\ncache: {cache:#?}\ndb: {db:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Names of the rows of `table` in the cache.
pub fn cached_names(client: &Client, table: &str) -> Vec<String> {
    let mut names: Vec<String> = client.read_cache(|c| {
        c.table(table)
            .filter_map(|(_, row)| row.get_str("name").map(str::to_owned))
            .collect()
    });
    names.sort();
    names
}

/// Parses `ovs-vsctl --bare --columns=name list TABLE` output into sorted names.
pub fn vsctl_names(output: &str) -> Vec<String> {
    let mut names: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}
