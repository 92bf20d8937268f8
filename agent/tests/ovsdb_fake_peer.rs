//! The OVSDB client against a scripted peer on a unix socket: malformed, truncated and oversized
//! messages, inconsistent updates, echo while calls are pending, out-of-order replies. These are
//! things a real ovsdb-server never sends, so they need a fake peer; everything else is tested
//! against real OVS in `ovsdb_ovs.rs`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use weft_agent::ovsdb::rpc::Framer;
use weft_agent::ovsdb::{CacheEvent, Client, ClientConfig, Endpoint, MonitorSpec, OvsdbError};

const U1: &str = "11111111-0000-4000-8000-000000000001";
const U2: &str = "22222222-0000-4000-8000-000000000002";
const STEP: Duration = Duration::from_secs(10);

/// One accepted connection, driven by the test.
struct Peer {
    stream: UnixStream,
    framer: Framer,
}

impl Peer {
    async fn accept(listener: &UnixListener) -> Result<Peer> {
        let (stream, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .context("client did not connect")??;
        Ok(Peer {
            stream,
            framer: Framer::new(1 << 20),
        })
    }

    /// The next message, or `None` at EOF.
    async fn recv(&mut self) -> Result<Option<Value>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(value) = self.framer.next_value()? {
                return Ok(Some(value));
            }
            let n = tokio::time::timeout(STEP, self.stream.read(&mut buf))
                .await
                .context("client sent nothing")??;
            if n == 0 {
                return Ok(None);
            }
            self.framer.push(&buf[..n]);
        }
    }

    async fn expect(&mut self, method: &str) -> Result<Value> {
        let msg = self.recv().await?.context("client closed")?;
        ensure!(msg["method"] == method, "expected {method}, got {msg}");
        Ok(msg)
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    async fn send(&mut self, value: &Value) -> Result<()> {
        self.send_raw(value.to_string().as_bytes()).await
    }

    /// Answers get_schema and monitor_cond with `initial` Bridge rows (uuid -> name).
    async fn handshake(&mut self, initial: &[(&str, &str)]) -> Result<()> {
        let req = self.expect("get_schema").await?;
        self.send(&json!({"id": req["id"], "error": null, "result": {
            "name": "Open_vSwitch", "version": "8.3.1",
            "tables": {"Bridge": {"columns": {
                "name": {"type": "string"},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}}
        }}))
        .await?;
        let req = self.expect("monitor_cond").await?;
        ensure!(
            req["params"][2]["Bridge"][0]["columns"] == json!(["name", "external_ids"]),
            "{req}"
        );
        let rows: serde_json::Map<String, Value> = initial
            .iter()
            .map(|(uuid, name)| ((*uuid).to_owned(), json!({"initial": {"name": name}})))
            .collect();
        self.send(&json!({"id": req["id"], "error": null, "result": {"Bridge": rows}}))
            .await
    }

    /// Reads until the client closes the connection.
    async fn expect_closed(&mut self) -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(STEP, self.stream.read(&mut buf))
                .await
                .context("client did not close the connection")?
                .unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
        }
    }
}

fn setup() -> Result<(tempfile::TempDir, PathBuf, UnixListener)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db.sock");
    let listener = UnixListener::bind(&path)?;
    Ok((dir, path, listener))
}

fn config(path: PathBuf) -> ClientConfig {
    let mut config = ClientConfig::new(Endpoint::Unix(path));
    config.monitor = MonitorSpec::none().table("Bridge", &["name", "external_ids"]);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.call_timeout = STEP;
    config.inactivity_probe = None;
    config
}

fn bridge_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client.read_cache(|c| {
        c.table("Bridge")
            .filter_map(|(_, r)| r.get_str("name").map(str::to_owned))
            .collect()
    });
    names.sort();
    names
}

/// Waits for the next Disconnected event and returns its error.
async fn next_disconnect(
    events: &mut tokio::sync::broadcast::Receiver<CacheEvent>,
) -> Result<std::sync::Arc<OvsdbError>> {
    loop {
        match tokio::time::timeout(STEP, events.recv()).await?? {
            CacheEvent::Disconnected { error } => return Ok(error),
            _ => continue,
        }
    }
}

/// Syncs with "old", runs `misbehave` on the first connection, then checks the client dropped
/// it, reconnected, and its cache holds exactly the second snapshot ("new").
async fn misbehave_then_resync<F, Fut>(max_message_bytes: usize, misbehave: F) -> Result<OvsdbError>
where
    F: FnOnce(Peer, Client) -> Fut,
    Fut: std::future::Future<Output = Result<Peer>>,
{
    let (_dir, path, listener) = setup()?;
    let mut cfg = config(path);
    cfg.max_message_bytes = max_message_bytes;
    let client = Client::start(cfg);
    let mut events = client.subscribe();
    let mut first = Peer::accept(&listener).await?;
    first.handshake(&[(U1, "old")]).await?;
    client.wait_synced(STEP).await?;
    assert_eq!(bridge_names(&client), ["old"]);

    let mut first = misbehave(first, client.clone()).await?;
    let error = next_disconnect(&mut events).await?;
    first.expect_closed().await?;

    let mut second = Peer::accept(&listener).await?;
    second.handshake(&[(U2, "new")]).await?;
    client.wait_synced(STEP).await?;
    assert_eq!(
        bridge_names(&client),
        ["new"],
        "cache is exactly the new snapshot"
    );
    let stats = client.stats();
    assert_eq!((stats.connects, stats.disconnects), (2, 1), "{stats:?}");
    // The new connection works.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("list_dbs", json!([])).await }
    });
    let req = second.expect("list_dbs").await?;
    second
        .send(&json!({"id": req["id"], "result": ["Open_vSwitch"], "error": null}))
        .await?;
    assert_eq!(call.await??, json!(["Open_vSwitch"]));
    Ok(
        std::sync::Arc::try_unwrap(error).unwrap_or_else(|e| OvsdbError::Protocol {
            reason: e.to_string(),
        }),
    )
}

#[tokio::test]
async fn malformed_message_fails_the_pending_call_and_resyncs() -> Result<()> {
    let error = misbehave_then_resync(1 << 20, |mut peer, client| async move {
        let call = tokio::spawn(async move { client.call("list_dbs", json!([])).await });
        let req = peer.expect("list_dbs").await?;
        peer.send_raw(format!("{{\"id\": {}, \"result\": [}}]", req["id"]).as_bytes())
            .await?;
        let lost = tokio::time::timeout(STEP, call).await??;
        ensure!(
            matches!(lost, Err(OvsdbError::Disconnected { ref method }) if method == "list_dbs"),
            "{lost:?}"
        );
        Ok(peer)
    })
    .await?;
    assert!(
        matches!(error, OvsdbError::MalformedFrame { .. }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_between_messages_resyncs() -> Result<()> {
    let error = misbehave_then_resync(1 << 20, |mut peer, _| async move {
        peer.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n").await?;
        Ok(peer)
    })
    .await?;
    assert!(
        matches!(error, OvsdbError::MalformedFrame { .. }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn truncated_message_resyncs() -> Result<()> {
    let error = misbehave_then_resync(1 << 20, |mut peer, _| async move {
        peer.send_raw(br#"{"method":"update2","params":["weft",{"Bridge":{"#)
            .await?;
        peer.stream.shutdown().await?;
        Ok(peer)
    })
    .await?;
    assert!(
        matches!(error, OvsdbError::TruncatedFrame { pending } if pending > 0),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn oversized_message_resyncs() -> Result<()> {
    let error = misbehave_then_resync(4096, |mut peer, _| async move {
        let big = "x".repeat(10_000);
        peer.send(&json!({"method": "update2", "id": null, "params": ["weft",
            {"Bridge": {U1: {"modify": {"external_ids": ["map", [["big", big]]]}}}}]}))
            .await?;
        Ok(peer)
    })
    .await?;
    assert!(
        matches!(error, OvsdbError::FrameTooLarge { limit: 4096 }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn inconsistent_update_resyncs() -> Result<()> {
    let error = misbehave_then_resync(1 << 20, |mut peer, _| async move {
        peer.send(&json!({"method": "update2", "id": null, "params": ["weft",
            {"Bridge": {U2: {"modify": {"name": "ghost"}}}}]}))
            .await?;
        Ok(peer)
    })
    .await?;
    assert!(
        matches!(error, OvsdbError::InvalidValue { .. }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_during_handshake_is_retried() -> Result<()> {
    let (_dir, path, listener) = setup()?;
    let client = Client::start(config(path));
    let mut first = Peer::accept(&listener).await?;
    first.expect("get_schema").await?;
    first.send_raw(b"]]]").await?;
    first.expect_closed().await?;
    assert_eq!(client.stats().connects, 0);
    let mut second = Peer::accept(&listener).await?;
    second.handshake(&[(U1, "br")]).await?;
    client.wait_synced(STEP).await?;
    assert_eq!(bridge_names(&client), ["br"]);
    Ok(())
}

#[tokio::test]
async fn echo_is_answered_while_calls_wait_and_replies_match_out_of_order() -> Result<()> {
    let (_dir, path, listener) = setup()?;
    let client = Client::start(config(path));
    let mut peer = Peer::accept(&listener).await?;
    peer.handshake(&[]).await?;
    client.wait_synced(STEP).await?;

    let calls: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.call("probe", json!([i])).await })
        })
        .collect();
    let mut requests = Vec::new();
    for _ in 0..3 {
        requests.push(peer.expect("probe").await?);
    }
    // While all three wait, the server's echo is answered with its own params and id.
    peer.send(&json!({"method": "echo", "params": ["ping", 1], "id": "echo"}))
        .await?;
    let reply = peer.recv().await?.context("no echo reply")?;
    assert_eq!(
        reply,
        json!({"id": "echo", "result": ["ping", 1], "error": null})
    );
    // Unknown server requests get an error reply, not a disconnect.
    peer.send(&json!({"method": "frobnicate", "params": [], "id": 99}))
        .await?;
    let reply = peer.recv().await?.context("no reply")?;
    assert_eq!(reply["id"], 99);
    ensure!(!reply["error"].is_null(), "{reply}");

    // Reply in reverse order; the middle one is an RPC error.
    for req in requests.iter().rev() {
        let n = &req["params"][0];
        let reply = if *n == 1 {
            json!({"id": req["id"], "result": null, "error": "not allowed"})
        } else {
            json!({"id": req["id"], "result": {"n": n}, "error": null})
        };
        peer.send(&reply).await?;
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await?);
    }
    assert_eq!(results[0].as_ref().ok(), Some(&json!({"n": 0})));
    assert_eq!(results[2].as_ref().ok(), Some(&json!({"n": 2})));
    match &results[1] {
        Err(OvsdbError::Rpc { method, error }) => {
            assert_eq!(method, "probe");
            assert_eq!(error, "\"not allowed\"");
        }
        other => bail!("expected an rpc error, got {other:?}"),
    }
    let stats = client.stats();
    assert_eq!(
        (stats.echoes_answered, stats.disconnects),
        (1, 0),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn silent_peer_is_probed_then_dropped() -> Result<()> {
    let (_dir, path, listener) = setup()?;
    let mut cfg = config(path);
    cfg.inactivity_probe = Some(Duration::from_millis(200));
    let client = Client::start(cfg);
    let mut events = client.subscribe();
    let mut peer = Peer::accept(&listener).await?;
    peer.handshake(&[]).await?;
    client.wait_synced(STEP).await?;
    // Our probe arrives; the peer ignores it.
    let probe = peer.expect("echo").await?;
    assert_eq!(probe["params"], json!([]));
    let error = next_disconnect(&mut events).await?;
    assert!(
        matches!(*error, OvsdbError::ProbeTimeout { .. }),
        "{error:?}"
    );
    assert!(client.stats().probes_sent >= 1);
    Ok(())
}

#[tokio::test]
async fn calls_without_a_server_fail_in_time() -> Result<()> {
    let (_dir, path, listener) = setup()?;
    drop(listener); // nothing listens: the client keeps retrying
    let client = Client::start(config(path));
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with_timeout("list_dbs", json!([]), Duration::from_millis(300))
                .await
        }
    });
    let err = waiting.await?.unwrap_err();
    assert!(matches!(err, OvsdbError::NotConnected { .. }), "{err:?}");
    let err = Client::connect({
        let mut c = config(PathBuf::from("/nonexistent/db.sock"));
        c.handshake_timeout = Duration::from_millis(300);
        c
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, OvsdbError::HandshakeTimeout { .. }),
        "{err:?}"
    );
    Ok(())
}
