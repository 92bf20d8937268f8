//! Handshake, features and echo against real OVS (unix and TCP), and version refusal against a
//! fake switch.

mod ofp_support;

use std::time::Duration;

use anyhow::Result;
use ofp_support::*;
use ovs_flows::ofp::{
    Client, ClientConfig, ClientError, ConnError, ConnectFuture, Endpoint, Keepalive,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

fn datapath_id(ovs: &weft_e2e::ovs::OvsInstance) -> Result<u64> {
    let text = ovs.vsctl(&["get", "Bridge", BRIDGE, "datapath_id"])?;
    Ok(u64::from_str_radix(text.trim().trim_matches('"'), 16)?)
}

#[tokio::test]
async fn features_over_the_management_socket() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let features = client.features().expect("features after connect");
    assert_eq!(features.datapath_id, datapath_id(&ovs)?);
    assert_eq!(features.n_tables, 254, "OVS has 254 usable tables");
    assert!(client.is_connected());
    assert_eq!(client.stats().connects, 1);
    // Our echo: the switch echoes our payload back.
    assert_eq!(client.echo(b"ping-unix").await?, b"ping-unix");
    client.barrier().await?;
    Ok(())
}

#[tokio::test]
async fn features_and_echo_both_ways_over_tcp() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let addr = ovs.openflow_tcp_remote(BRIDGE)?;
    // OVS probes an idle controller connection after inactivity_probe (minimum 5 s).
    ovs.vsctl(&["set", "Controller", BRIDGE, "inactivity_probe=5000"])?;
    let netns = ovs.netns().to_string();
    let connector = move || -> ConnectFuture {
        let netns = netns.clone();
        Box::pin(async move {
            let stream =
                tokio::task::spawn_blocking(move || weft_e2e::netns::tcp_connect_in(&netns, addr))
                    .await
                    .map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            let stream = tokio::net::TcpStream::from_std(stream)?;
            Ok(Box::new(stream) as ovs_flows::ofp::BoxStream)
        })
    };
    let config = ClientConfig {
        // Stay silent ourselves so that the switch is the one probing.
        keepalive: None,
        ..test_config()
    };
    let client = Client::connect(Endpoint::custom(connector), config).await?;
    let features = client.features().expect("features after connect");
    let expected = datapath_id(&ovs)?;
    assert_eq!(features.datapath_id, expected);
    assert_eq!(client.echo(b"ping-tcp").await?, b"ping-tcp");

    // The switch's echo: wait until we answered at least one, and the connection survived.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.stats().echo_requests_answered == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ovs never sent an echo request"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.barrier().await?;
    assert_eq!(client.stats().connects, 1, "no reconnection happened");
    Ok(())
}

#[tokio::test]
async fn refuses_a_switch_without_openflow_15() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = fake_socket(dir.path());
    let listener = UnixListener::bind(&path)?;
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let (_, t, _, body) = read_msg(&mut stream).await?;
        assert_eq!(t, 0);
        // Our hello offers only 1.5 (bitmap bit 6).
        assert_eq!(&body[..8], &[0, 1, 0, 8, 0, 0, 0, 0x40]);
        stream.write_all(&hello(&[1, 4])).await?;
        // We are told why (OFPET_HELLO_FAILED) before the close.
        let (_, t, _, body) = read_msg(&mut stream).await?;
        anyhow::Ok((t, body))
    });
    let started = std::time::Instant::now();
    let err = Client::connect(Endpoint::Unix(path), test_config())
        .await
        .unwrap_err();
    match &err {
        ClientError::Connect {
            source: ConnError::VersionRefused { offered },
            ..
        } => assert_eq!(offered, &vec![1, 4]),
        other => panic!("expected a version refusal, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("it offers openflow 1.0, openflow 1.3"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal is not retried"
    );
    let (t, body) = peer.await??;
    assert_eq!(t, 1, "an error message");
    assert_eq!(
        &body[..4],
        &[0, 0, 0, 0],
        "OFPET_HELLO_FAILED/OFPHFC_INCOMPATIBLE"
    );
    Ok(())
}

#[tokio::test]
async fn our_keepalive_drops_a_silent_peer_and_reconnects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = fake_socket(dir.path());
    let listener = UnixListener::bind(&path)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        // First connection: handshake, then never answer anything (a hung switch).
        let (mut first, _) = listener.accept().await?;
        fake_handshake(&mut first).await?;
        let (_, t, _, _) = read_msg(&mut first).await?;
        assert_eq!(t, 2, "the client probes with an echo request");
        // Second connection: a healthy switch.
        let (mut second, _) = listener.accept().await?;
        fake_handshake(&mut second).await?;
        let _ = done_rx.await;
        drop(first);
        anyhow::Ok(())
    });
    let config = ClientConfig {
        keepalive: Some(Keepalive {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(300),
        }),
        ..test_config()
    };
    let client = Client::connect(Endpoint::Unix(path), config).await?;
    let mut events = client.subscribe();
    let reason = wait_event(&mut events, Duration::from_secs(5), |e| match e {
        ovs_flows::ofp::Event::Disconnected(reason) => Some(reason.clone()),
        _ => None,
    })
    .await?;
    assert!(matches!(reason, ConnError::DeadPeer(_)), "{reason:?}");
    wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, ovs_flows::ofp::Event::Connected(_)).then_some(())
    })
    .await?;
    assert_eq!(client.stats().connects, 2);
    assert!(client.stats().echo_requests_sent >= 1);
    let _ = done_tx.send(());
    peer.await??;
    Ok(())
}
