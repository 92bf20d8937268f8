//! The OVSDB client against a real ovsdb-server and ovs-vswitchd (OVS 3.1), one private instance
//! per test in its own network namespace.

mod ovsdb_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ovsdb_support::*;
use weft_agent::ovsdb::{
    BridgeSpec, CacheEvent, Client, ClientConfig, Condition, ConnectionState, DatapathType, Datum,
    Mutation, Operation, Ovs, OvsBridgeClient, OvsdbError, PortBatcher, PortKind, PortSpec, Record,
    Row, WaitUntil,
};
use weft_e2e::ovs::OvsInstance;

const LONG: Duration = Duration::from_secs(20);

fn vsctl(ovs: &OvsInstance, args: &[&str]) -> Result<String> {
    blocking(|| ovs.vsctl(args)).map(|s| s.trim().to_owned())
}

fn cached_interface_i64(client: &Client, name: &str, column: &str) -> Option<i64> {
    client.read_cache(|c| {
        c.by_name("Interface", name)
            .and_then(|(_, r)| r.get_i64(column))
    })
}

/// A `wait` the server holds for `timeout_ms` (the bridge never gets that name).
fn held_wait(timeout_ms: u64) -> Operation {
    Operation::Wait {
        table: "Bridge".into(),
        conditions: vec![Condition::eq("name", "never-exists")],
        columns: vec!["name".into()],
        until: WaitUntil::NotEqual,
        rows: Vec::new(),
        timeout_ms: Some(timeout_ms),
    }
}

/// Raw ops adding an internal port `name` to `bridge`.
fn add_port_ops(bridge: &str, name: &str) -> Vec<Operation> {
    vec![
        Operation::insert_named(
            "Interface",
            Row::new().with("name", name).with("type", "internal"),
            "i",
        ),
        Operation::insert_named(
            "Port",
            Row::new()
                .with("name", name)
                .with("interfaces", Datum::named_uuid("i")),
            "p",
        ),
        Operation::mutate(
            "Bridge",
            vec![Condition::eq("name", bridge)],
            vec![Mutation::insert("ports", Datum::named_uuid("p"))],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_with_mtu_request_and_options_gets_ofport() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let api = Ovs::new(client.clone());
    api.ensure_bridge(&BridgeSpec::new("br-w", DatapathType::Netdev))
        .await?;

    let gw = PortSpec::new("weft-gw0", PortKind::Internal)
        .with_ofport_request(32769)
        .with_mtu_request(1450)
        .with_external_id("weft-kind", "gateway");
    let tun = PortSpec::new("weft-tun0", PortKind::Geneve)
        .with_option("remote_ip", "flow")
        .with_option("key", "flow")
        .with_option("dst_port", "6081")
        .with_ofport_request(32768)
        .with_external_id("weft-kind", "tunnel");
    let gw_uuid = api.ensure_port("br-w", &gw).await?;
    api.ensure_port("br-w", &tun).await?;

    assert_eq!(api.wait_for_ofport("weft-gw0", LONG).await?, 32769);
    assert_eq!(api.wait_for_ofport("weft-tun0", LONG).await?, 32768);
    wait_until("weft-gw0 mtu 1450 in the cache", LONG, || {
        cached_interface_i64(&client, "weft-gw0", "mtu") == Some(1450)
    })
    .await?;

    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-gw0", "mtu_request"])?,
        "1450"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-gw0", "ofport"])?,
        "32769"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-gw0", "type"])?,
        "internal"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-tun0", "options"])?,
        r#"{dst_port="6081", key=flow, remote_ip=flow}"#
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-tun0", "type"])?,
        "geneve"
    );
    assert_eq!(
        vsctl(
            &ovs,
            &["get", "Interface", "weft-gw0", "external_ids:weft-kind"]
        )?,
        "gateway"
    );
    assert_eq!(
        vsctl(
            &ovs,
            &["get", "Port", "weft-tun0", "external_ids:weft-kind"]
        )?,
        "tunnel"
    );
    // The MTU reached the device OVS created in the namespace.
    let link =
        blocking(|| weft_e2e::netns::exec(ovs.netns(), &["ip", "link", "show", "weft-gw0"]))?;
    ensure!(link.contains("mtu 1450"), "weft-gw0 link: {link}");

    // Ensure again with a new MTU and fewer options: same row, updated exactly.
    let gw2 = gw.clone().with_mtu_request(1400);
    let mut tun2 = tun.clone();
    tun2.options.remove("dst_port");
    assert_eq!(api.ensure_port("br-w", &gw2).await?, gw_uuid);
    api.ensure_port("br-w", &tun2).await?;
    assert_eq!(
        vsctl_names(&vsctl(&ovs, &["list-ports", "br-w"])?),
        ["weft-gw0", "weft-tun0"]
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-gw0", "mtu_request"])?,
        "1400"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "weft-tun0", "options"])?,
        "{key=flow, remote_ip=flow}"
    );
    wait_until("weft-gw0 mtu 1400 in the cache", LONG, || {
        cached_interface_i64(&client, "weft-gw0", "mtu") == Some(1400)
    })
    .await?;

    assert!(api.delete_port("weft-tun0").await?);
    assert!(
        !api.delete_port("weft-tun0").await?,
        "second delete is a no-op"
    );
    wait_until("weft-tun0 gone from the cache", LONG, || {
        !cached_names(&client, "Interface").contains(&"weft-tun0".to_owned())
    })
    .await?;
    assert_eq!(
        vsctl_names(&vsctl(&ovs, &["list-ports", "br-w"])?),
        ["weft-gw0"]
    );
    assert_cache_matches_db(&client, LONG).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_are_idempotent_under_concurrency() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let api = Ovs::new(client.clone());

    let spec = BridgeSpec::new("br-x", DatapathType::Netdev)
        .with_datapath_id(0x1234)
        .with_external_id("weft-round", "1");
    // Concurrent ensures of one bridge and then one port create exactly one row each.
    let bridges = futures::future::join_all((0..6).map(|_| api.ensure_bridge(&spec))).await;
    let uuids: Vec<_> = bridges.into_iter().collect::<Result<_, _>>()?;
    ensure!(
        uuids.windows(2).all(|w| w[0] == w[1]),
        "bridge uuids differ: {uuids:?}"
    );
    assert_eq!(vsctl_names(&vsctl(&ovs, &["list-br"])?), ["br-x"]);
    let port = PortSpec::new("p-race", PortKind::Internal).with_mtu_request(1300);
    let ports = futures::future::join_all((0..6).map(|_| api.ensure_port("br-x", &port))).await;
    let uuids: Vec<_> = ports.into_iter().collect::<Result<_, _>>()?;
    ensure!(
        uuids.windows(2).all(|w| w[0] == w[1]),
        "port uuids differ: {uuids:?}"
    );
    assert_eq!(
        vsctl_names(&vsctl(&ovs, &["list-ports", "br-x"])?),
        ["p-race"]
    );

    assert_eq!(
        vsctl(&ovs, &["get", "Bridge", "br-x", "protocols"])?,
        "[OpenFlow15]"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Bridge", "br-x", "fail_mode"])?,
        "secure"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Bridge", "br-x", "datapath_type"])?,
        "netdev"
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Bridge", "br-x", "other_config:datapath-id"])?,
        "\"0000000000001234\""
    );
    assert_eq!(
        vsctl(
            &ovs,
            &["get", "Bridge", "br-x", "other_config:disable-in-band"]
        )?,
        "\"true\""
    );
    // ovs-vswitchd took the datapath id.
    wait_until("br-x dpid", LONG, || {
        blocking(|| ovs.ofctl(&["show", "br-x"]))
            .is_ok_and(|out| out.contains("dpid:0000000000001234"))
    })
    .await?;

    // external_ids on every record kind: set merges, remove drops only the named keys.
    let records = [
        Record::OpenVSwitch,
        Record::Bridge("br-x".into()),
        Record::Port("p-race".into()),
        Record::Interface("p-race".into()),
    ];
    for record in &records {
        let ids = BTreeMap::from([
            ("weft-a".to_owned(), "1".to_owned()),
            ("weft-b".to_owned(), "two words".to_owned()),
        ]);
        api.set_external_ids(record, &ids).await?;
        api.set_external_ids(
            record,
            &BTreeMap::from([("weft-a".to_owned(), "3".to_owned())]),
        )
        .await?;
        api.remove_external_ids(record, &["weft-b", "absent"])
            .await?;
        let got = api.external_ids(record).await?;
        assert_eq!(
            got.get("weft-a").map(String::as_str),
            Some("3"),
            "{record:?}"
        );
        assert!(!got.contains_key("weft-b"), "{record:?}: {got:?}");
    }
    assert_eq!(
        vsctl(&ovs, &["get", "Interface", "p-race", "external_ids:weft-a"])?,
        "\"3\""
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Open_vSwitch", ".", "external_ids:weft-a"])?,
        "\"3\""
    );
    assert_eq!(
        vsctl(&ovs, &["get", "Bridge", "br-x", "external_ids:weft-round"])?,
        "\"1\"",
        "ensure_bridge keys survive external_ids edits"
    );
    let missing = api
        .external_ids(&Record::Port("nope".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, OvsdbError::RowNotFound { ref table, ref name } if table == "Port" && name == "nope")
    );

    api.set_flow_restore_wait(true).await?;
    assert!(api.flow_restore_wait().await?);
    assert_eq!(
        vsctl(
            &ovs,
            &["get", "Open_vSwitch", ".", "other_config:flow-restore-wait"]
        )?,
        "\"true\""
    );
    api.set_flow_restore_wait(false).await?;
    api.set_flow_restore_wait(false).await?;
    assert!(!api.flow_restore_wait().await?);
    ensure!(
        !vsctl(&ovs, &["get", "Open_vSwitch", ".", "other_config"])?.contains("flow-restore-wait"),
        "flow-restore-wait still set"
    );

    assert!(api.delete_bridge("br-x").await?);
    assert!(!api.delete_bridge("br-x").await?);
    assert_eq!(vsctl(&ovs, &["list-br"])?, "");
    assert_cache_matches_db(&client, LONG).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_echo_is_answered_while_idle_over_tcp() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    let addr = blocking(|| ovs.ovsdb_tcp_remote(1000))?;
    let mut config = ClientConfig::new(tcp_in_netns(ovs.netns(), addr));
    config.inactivity_probe = None; // only the server probes this connection
    let client = Client::connect(config).await?;
    // A second client over unix runs our own probe against the server's echo handler.
    let mut probing = unix_config(ovs.db_socket());
    probing.inactivity_probe = Some(Duration::from_millis(300));
    let prober = Client::connect(probing).await?;

    tokio::time::sleep(Duration::from_secs(22)).await;
    let idle = client.stats();
    ensure!(
        idle.echoes_answered >= 5,
        "server echoes answered while idle: {idle:?}"
    );

    // Still answered while a request is pending on the server for 8 s.
    let started = Instant::now();
    let held = client.transact(vec![held_wait(8000)]).await.unwrap_err();
    let tx = held.tx_error().context("expected the wait to time out")?;
    assert_eq!((tx.op_index, tx.error.as_str()), (0, "timed out"));
    ensure!(started.elapsed() >= Duration::from_secs(7));
    let after = client.stats();
    ensure!(
        after.echoes_answered >= idle.echoes_answered + 2,
        "echoes during the pending transact: {idle:?} -> {after:?}"
    );

    client.echo().await?;
    client
        .transact(vec![Operation::select(
            "Open_vSwitch",
            vec![],
            Some(&["_uuid"]),
        )])
        .await?;
    let stats = client.stats();
    assert_eq!((stats.connects, stats.disconnects), (1, 0), "{stats:?}");
    assert_eq!(client.state(), ConnectionState::Synced);
    let prober_stats = prober.stats();
    ensure!(prober_stats.probes_sent >= 10, "{prober_stats:?}");
    assert_eq!(prober_stats.disconnects, 0, "{prober_stats:?}");
    let log = std::fs::read_to_string(ovs.rundir().join("ovsdb-server.log"))?;
    ensure!(
        !log.contains("inactivity probe"),
        "ovsdb-server dropped a connection for inactivity:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resyncs_after_ovsdb_restart() -> Result<()> {
    let mut ovs = blocking(OvsInstance::start)?;
    blocking(|| ovs.add_bridge("br-r"))?;
    let gate = Arc::new(AtomicBool::new(true));
    let mut config = unix_config(ovs.db_socket());
    config.endpoint = gated_unix(ovs.db_socket(), gate.clone());
    let client = Client::connect(config).await?;
    let api = Ovs::new(client.clone());
    let mut events = client.subscribe();
    api.ensure_port("br-r", &PortSpec::new("p-before", PortKind::Internal))
        .await?;

    // A request the server is still holding when it goes away fails cleanly.
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.transact(vec![held_wait(60_000)]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.store(false, Ordering::SeqCst);
    blocking(|| ovs.stop_ovsdb())?;
    let lost = tokio::time::timeout(Duration::from_secs(5), in_flight).await??;
    assert!(
        matches!(lost, Err(OvsdbError::Disconnected { ref method }) if method == "transact"),
        "{lost:?}"
    );
    wait_until("client notices the outage", LONG, || {
        client.state() == ConnectionState::Connecting
    })
    .await?;

    // With a short timeout a call made during the outage fails in time, never sent.
    let started = Instant::now();
    let refused = client
        .transact_with_timeout(add_port_ops("br-r", "p-never"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, OvsdbError::NotConnected { .. }),
        "{refused:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // With a long one it waits for the reconnect and then runs.
    let queued = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .transact_with_timeout(add_port_ops("br-r", "p-outage"), Duration::from_secs(30))
                .await
        }
    });

    // Change the database while the client cannot reach it.
    blocking(|| ovs.start_ovsdb())?;
    vsctl(
        &ovs,
        &[
            "--no-wait",
            "add-port",
            "br-r",
            "p-down",
            "--",
            "set",
            "Interface",
            "p-down",
            "type=internal",
            "--",
            "set",
            "Bridge",
            "br-r",
            "external_ids:changed=while-down",
        ],
    )?;
    gate.store(true, Ordering::SeqCst);
    client.wait_synced(LONG).await?;
    tokio::time::timeout(Duration::from_secs(30), queued)
        .await??
        .context("transact queued during the outage")?;

    wait_until(
        "ports made during and after the outage in the cache",
        LONG,
        || cached_names(&client, "Port") == ["br-r", "p-before", "p-down", "p-outage"],
    )
    .await?;
    let changed = client.read_cache(|c| {
        c.by_name("Bridge", "br-r")
            .map(|(_, r)| r.get_map("external_ids"))
            .unwrap_or_default()
    });
    assert_eq!(
        changed.get("changed").map(String::as_str),
        Some("while-down")
    );
    assert_eq!(
        cached_names(&client, "Port"),
        vsctl_names(&vsctl(&ovs, &["--bare", "--columns=name", "list", "Port"])?)
    );
    assert_eq!(
        cached_names(&client, "Interface"),
        vsctl_names(&vsctl(
            &ovs,
            &["--bare", "--columns=name", "list", "Interface"]
        )?)
    );
    assert_cache_matches_db(&client, LONG).await?;

    let stats = client.stats();
    assert_eq!((stats.connects, stats.disconnects), (2, 1), "{stats:?}");
    let mut saw_disconnect = false;
    let mut saw_resync = false;
    while let Ok(event) = events.try_recv() {
        match event {
            CacheEvent::Disconnected { .. } => saw_disconnect = true,
            CacheEvent::Resynced { .. } => saw_resync |= saw_disconnect,
            CacheEvent::Changed { .. } => {}
        }
    }
    ensure!(
        saw_disconnect && saw_resync,
        "events: disconnect {saw_disconnect}, resync {saw_resync}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_transacts_succeed() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    blocking(|| ovs.add_bridge("br-c"))?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.spawn(async move {
            let ids = BTreeMap::from([(format!("k{i:03}"), i.to_string())]);
            client
                .transact(vec![
                    Operation::mutate(
                        "Bridge",
                        vec![Condition::eq("name", "br-c")],
                        Mutation::merge_map("external_ids", &ids).into(),
                    ),
                    Operation::select(
                        "Bridge",
                        vec![Condition::eq("name", "br-c")],
                        Some(&["name"]),
                    ),
                ])
                .await
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined??;
        assert_eq!(outcome.results[0].count(), 1);
        assert_eq!(outcome.results[1].rows()[0].get_str("name"), Some("br-c"));
        done += 1;
    }
    assert_eq!(done, 200);
    eprintln!("200 concurrent transacts took {:?}", started.elapsed());
    wait_until("200 external_ids in the cache", LONG, || {
        client.read_cache(|c| {
            c.by_name("Bridge", "br-c")
                .map_or(0, |(_, r)| r.get_map("external_ids").len())
        }) == 200
    })
    .await?;
    let ids = vsctl(&ovs, &["get", "Bridge", "br-c", "external_ids"])?;
    for i in [0, 57, 199] {
        ensure!(
            ids.contains(&format!("k{i:03}=\"{i}\"")),
            "k{i:03} missing: {ids}"
        );
    }
    assert_eq!(client.stats().disconnects, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_errors_are_typed() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    blocking(|| ovs.add_bridge("br-e"))?;
    vsctl(
        &ovs,
        &[
            "add-port",
            "br-e",
            "p-dup",
            "--",
            "set",
            "Interface",
            "p-dup",
            "type=internal",
        ],
    )?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let api = Ovs::new(client.clone());

    // Duplicate port name: the index check fails at commit, after every op succeeded.
    let dup = client
        .transact(add_port_ops("br-e", "p-dup"))
        .await
        .unwrap_err();
    match &dup {
        OvsdbError::CommitFailed { error, details } => {
            assert_eq!(error, "constraint violation");
            let details = details.as_deref().unwrap_or_default();
            ensure!(
                details.contains("(p-dup)") && details.contains("index"),
                "{details}"
            );
        }
        other => anyhow::bail!("expected a commit failure, got {other:?}"),
    }

    // Out-of-range mtu_request and ofport_request name the op, table and column.
    let bad_mtu = api
        .ensure_port(
            "br-e",
            &PortSpec::new("p-bad", PortKind::Internal).with_mtu_request(0),
        )
        .await
        .unwrap_err();
    let tx = bad_mtu
        .tx_error()
        .context("mtu_request 0 must be a transaction error")?;
    assert_eq!(tx.op, "insert");
    assert_eq!(tx.table.as_deref(), Some("Interface"));
    assert_eq!(tx.column.as_deref(), Some("mtu_request"));
    assert_eq!(tx.error, "constraint violation");
    ensure!(bad_mtu.to_string().contains("mtu_request"), "{bad_mtu}");
    let bad_ofport = api
        .ensure_port(
            "br-e",
            &PortSpec::new("p-bad", PortKind::Internal).with_ofport_request(70000),
        )
        .await
        .unwrap_err();
    let tx = bad_ofport.tx_error().context("ofport_request 70000")?;
    assert_eq!(tx.column.as_deref(), Some("ofport_request"));
    ensure!(
        tx.details.as_deref().unwrap_or_default().contains("70000"),
        "{tx:?}"
    );

    // Unknown column, at op index 1.
    let unknown = client
        .transact(vec![
            Operation::comment("first"),
            Operation::update(
                "Bridge",
                vec![Condition::eq("name", "br-e")],
                Row::new().with("no_such_column", 1i64),
            ),
        ])
        .await
        .unwrap_err();
    let tx = unknown.tx_error().context("unknown column")?;
    assert_eq!(
        (
            tx.op_index,
            tx.op,
            tx.table.as_deref(),
            tx.column.as_deref(),
            tx.error.as_str()
        ),
        (
            1,
            "update",
            Some("Bridge"),
            Some("no_such_column"),
            "unknown column"
        )
    );

    // Missing bridge.
    let missing = api
        .ensure_port("br-missing", &PortSpec::new("p-x", PortKind::Internal))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, OvsdbError::RowNotFound { ref table, ref name } if table == "Bridge" && name == "br-missing"),
        "{missing:?}"
    );

    // Nothing was half-applied and the connection is fine.
    assert_eq!(
        vsctl_names(&vsctl(&ovs, &["--bare", "--columns=name", "list", "Port"])?),
        ["br-e", "p-dup"]
    );
    client.echo().await?;
    assert_eq!(client.stats().disconnects, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_error_column_is_surfaced() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    blocking(|| ovs.add_bridge("br-f"))?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let api = Ovs::new(client.clone());
    api.ensure_port("br-f", &PortSpec::new("no-such-dev", PortKind::System))
        .await?;
    let err = api.wait_for_ofport("no-such-dev", LONG).await.unwrap_err();
    match &err {
        OvsdbError::InterfaceFailed { interface, error } => {
            assert_eq!(interface, "no-such-dev");
            ensure!(error.contains("no-such-dev"), "{error}");
        }
        other => anyhow::bail!("expected InterfaceFailed, got {other:?}"),
    }
    let timeout = api
        .wait_for_ofport("not-a-port", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(timeout, OvsdbError::OfportTimeout { .. }),
        "{timeout:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_batcher_groups_concurrent_changes_and_isolates_failures() -> Result<()> {
    let ovs = blocking(OvsInstance::start)?;
    let client = Client::connect(unix_config(ovs.db_socket())).await?;
    let api = Ovs::new(client.clone());
    api.ensure_bridge(&BridgeSpec::new("br-b", DatapathType::Netdev))
        .await?;
    let batcher = PortBatcher::new(api.clone());
    let names: Vec<String> = (0..16).map(|i| format!("pb{i}")).collect();

    // 16 concurrent creations, plus one on a bridge that does not exist: that one fails on
    // its own, every other port is created, in fewer transactions than ports.
    let specs: Vec<PortSpec> = names
        .iter()
        .map(|n| PortSpec::new(n, PortKind::Internal).with_external_id("weft-test", n))
        .collect();
    let missing = PortSpec::new("pb-lost", PortKind::Internal);
    let (created, lost) = tokio::join!(
        futures::future::join_all(specs.iter().map(|s| batcher.ensure_port("br-b", s))),
        batcher.ensure_port("br-missing", &missing)
    );
    let created: Vec<_> = created.into_iter().collect::<Result<_, _>>()?;
    assert!(
        matches!(&lost, Err(OvsdbError::RowNotFound { table, name }) if table == "Bridge" && name == "br-missing"),
        "{lost:?}"
    );
    let batches = batcher.batches();
    ensure!(
        batches < 16,
        "17 concurrent port creations took {batches} batches"
    );
    let mut listed = vsctl_names(&vsctl(&ovs, &["list-ports", "br-b"])?);
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want);
    for (name, uuid) in names.iter().zip(&created) {
        assert_eq!(api.uuid_by_name("Port", name).await?.as_ref(), Some(uuid));
        assert_eq!(
            vsctl(&ovs, &["get", "Port", name, "external_ids:weft-test"])?.trim_matches('"'),
            name
        );
    }
    ensure!(
        api.uuid_by_name("Port", "pb-lost").await?.is_none(),
        "the failed port was not created"
    );

    // Creating an existing port converges it (same row), as ensure_port does.
    wait_until("ports in the cache", LONG, || {
        cached_names(&client, "Port").len() == 16
    })
    .await?;
    assert_eq!(batcher.ensure_port("br-b", &specs[0]).await?, created[0]);

    // Concurrent deletions (each port twice): every port goes, each reported deleted once.
    let before = batcher.batches();
    let deleted = futures::future::join_all(
        names
            .iter()
            .chain(names.iter())
            .map(|n| batcher.delete_port(n)),
    )
    .await;
    let deleted: Vec<bool> = deleted.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(deleted.iter().filter(|d| **d).count(), 16, "{deleted:?}");
    ensure!(
        batcher.batches() - before < 16,
        "32 concurrent deletions took {} batches",
        batcher.batches() - before
    );
    assert_eq!(vsctl(&ovs, &["list-ports", "br-b"])?, "");
    assert!(
        !batcher.delete_port("pb0").await?,
        "deleting again is a no-op"
    );
    Ok(())
}
