//! Shared helpers for the OpenFlow client integration tests: real OVS set-up, a client over the
//! bridge management socket, and a scripted fake switch for protocol failure cases.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ovs_flows::flow::{Action, Field, Flow, MacAddr, Match};
use ovs_flows::ofp::{Client, ClientConfig, Endpoint, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use weft_e2e::ovs::OvsInstance;

/// Bridge every test creates.
pub const BRIDGE: &str = "br0";

/// A private OVS with bridge `br0`.
pub fn ovs_with_bridge() -> Result<OvsInstance> {
    let ovs = OvsInstance::start()?;
    ovs.add_bridge(BRIDGE)?;
    Ok(ovs)
}

/// Client settings for tests: fast reconnection, short timeouts.
pub fn test_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

/// Connects a client to the bridge's management socket.
pub async fn connect(ovs: &OvsInstance) -> Result<Client> {
    let endpoint = Endpoint::Unix(ovs.mgmt_socket(BRIDGE));
    Ok(Client::connect(endpoint, test_config()).await?)
}

/// `ip,nw_dst=10.0.0.N actions=set_field:..->eth_dst,dec_ttl,goto_table:next` in `table`.
pub fn l3_flow(table: u8, n: u32, cookie: u64) -> Flow {
    let ip = Ipv4Addr::from(0x0a00_0000 + n);
    let b = n.to_be_bytes();
    Flow {
        table,
        priority: 200,
        cookie,
        matches: Match::new().ip().nw_dst(ipnet_host(ip)),
        actions: vec![
            Action::set_field(
                Field::EthDst,
                u128::from(u64::from_be_bytes([
                    0, 0, 0x0a, 0x58, b[0], b[1], b[2], b[3],
                ])),
            ),
            Action::DecTtl,
            Action::GotoTable(table + 1),
        ],
        ..Flow::default()
    }
}

fn ipnet_host(ip: Ipv4Addr) -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(ip, 32).expect("/32 is a valid prefix")
}

/// A MAC for tests.
pub fn mac(last: u8) -> MacAddr {
    MacAddr::new(0x0a, 0x58, 0, 0, 0, last)
}

/// The flows as `ovs-ofctl --no-stats dump-flows` prints them (sorted).
pub fn dumped(ovs: &OvsInstance) -> Result<Vec<String>> {
    ovs.dump_flows(BRIDGE)
}

/// Our `Display` of flows, sorted like [`dumped`].
pub fn displayed(flows: &[Flow]) -> Vec<String> {
    let mut v: Vec<String> = flows.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// Waits for the first event `pick` accepts.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("timed out waiting for an event")?;
        match event {
            Ok(event) => {
                if let Some(t) = pick(&event) {
                    return Ok(t);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => bail!("event channel closed: {e}"),
        }
    }
}

/// Reads one OpenFlow message (header + body) from a fake-switch stream.
pub async fn read_msg(stream: &mut UnixStream) -> Result<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut body = vec![0u8; len.saturating_sub(8)];
    stream.read_exact(&mut body).await?;
    let xid = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    Ok((header[0], header[1], xid, body))
}

/// Builds a message with the given header fields and body (length computed).
pub fn msg(version: u8, msg_type: u8, xid: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![version, msg_type];
    out.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    out.extend_from_slice(&xid.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A hello offering exactly `versions` in a version bitmap.
pub fn hello(versions: &[u8]) -> Vec<u8> {
    let bitmap = versions.iter().fold(0u32, |acc, v| acc | (1 << v));
    let top = versions.iter().copied().max().unwrap_or(1);
    let mut body = vec![0, 1, 0, 8];
    body.extend_from_slice(&bitmap.to_be_bytes());
    msg(top, 0, 1, &body)
}

/// Plays the switch side of a successful OpenFlow 1.5 handshake on an accepted stream.
pub async fn fake_handshake(stream: &mut UnixStream) -> Result<()> {
    let (_, t, _, _) = read_msg(stream).await?;
    assert_eq!(t, 0, "client must start with a hello");
    stream.write_all(&hello(&[6])).await?;
    loop {
        let (_, t, xid, _) = read_msg(stream).await?;
        if t == 5 {
            let mut body = Vec::new();
            body.extend_from_slice(&0xfeed_u64.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 254, 0, 0, 0, 0, 0, 0, 0x4f, 0, 0, 0, 0]);
            stream.write_all(&msg(6, 6, xid, &body)).await?;
            return Ok(());
        }
    }
}

/// The path of a fake switch socket in `dir`.
pub fn fake_socket(dir: &Path) -> std::path::PathBuf {
    dir.join("fake.mgmt")
}
