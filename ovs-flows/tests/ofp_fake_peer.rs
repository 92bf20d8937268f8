//! Protocol failures from a scripted fake switch: bad frame lengths, truncated frames,
//! malformed bodies and wrong versions become typed errors, the connection is dropped and
//! re-established, and nothing panics.

mod ofp_support;

use std::time::Duration;

use anyhow::Result;
use ofp_support::*;
use ovs_flows::ofp::{Client, ClientConfig, ClientError, ConnError, Endpoint, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

/// A fake switch: the first connection is handshaken and then gets `poison` in answer to the
/// first request; later connections are healthy and answer echo requests.
async fn fake_switch(listener: UnixListener, poison: Vec<u8>, close_after: bool) -> Result<()> {
    let (mut first, _) = listener.accept().await?;
    fake_handshake(&mut first).await?;
    let _request = read_msg(&mut first).await?;
    first.write_all(&poison).await?;
    if close_after {
        drop(first);
    } else {
        // Keep the socket open: the client must drop it by itself.
        tokio::spawn(async move {
            let mut sink = first;
            let _ = tokio::io::copy(&mut sink, &mut tokio::io::sink()).await;
        });
    }
    loop {
        let (mut healthy, _) = listener.accept().await?;
        tokio::spawn(async move {
            fake_handshake(&mut healthy).await?;
            serve_echo(&mut healthy).await
        });
    }
}

async fn serve_echo(stream: &mut UnixStream) -> Result<()> {
    loop {
        let (_, t, xid, body) = read_msg(stream).await?;
        if t == 2 {
            stream.write_all(&msg(6, 3, xid, &body)).await?;
        }
    }
}

/// Sends an echo through a fresh client whose switch answers with `poison`; returns the
/// echo's error, and checks that the client reconnects and works afterwards.
async fn poisoned_echo(poison: Vec<u8>, close_after: bool) -> Result<ConnError> {
    let dir = tempfile::tempdir()?;
    let path = fake_socket(dir.path());
    let listener = UnixListener::bind(&path)?;
    let peer = tokio::spawn(fake_switch(listener, poison, close_after));
    let client = Client::connect(Endpoint::Unix(path), test_config()).await?;
    let mut events = client.subscribe();
    let err = client.echo(b"x").await.unwrap_err();
    let ClientError::Disconnected { source, .. } = err else {
        panic!("expected a dropped connection, got {err:?}");
    };
    let reported = wait_event(&mut events, Duration::from_secs(5), |e| match e {
        Event::Disconnected(reason) => Some(reason.to_string()),
        _ => None,
    })
    .await?;
    assert_eq!(reported, source.to_string());
    wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Ready).then_some(())
    })
    .await?;
    assert_eq!(client.echo(b"again").await?, b"again");
    assert_eq!(client.stats().connects, 2);
    peer.abort();
    Ok(source)
}

#[tokio::test]
async fn frame_shorter_than_its_header_drops_the_connection() -> Result<()> {
    let err = poisoned_echo(vec![6, 3, 0, 4, 0, 0, 0, 1], false).await?;
    assert!(
        matches!(
            err,
            ConnError::BadFrameLength {
                len: 4,
                msg_type: 3,
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn truncated_frame_is_a_typed_error() -> Result<()> {
    // The header announces 64 bytes; 18 arrive, then the switch closes.
    let mut poison = vec![6, 10, 0, 64, 0, 0, 0, 9];
    poison.extend_from_slice(&[0; 10]);
    let err = poisoned_echo(poison, true).await?;
    assert!(
        matches!(
            err,
            ConnError::Truncated {
                expected: 64,
                got: 18
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_packet_in_body_is_a_typed_error() -> Result<()> {
    // A packet-in whose match length runs past the message.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0, 60, 0, 0];
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&[0, 1, 0, 200, 0x80, 0, 0, 4]);
    let err = poisoned_echo(msg(6, 10, 77, &body), false).await?;
    assert!(
        matches!(
            err,
            ConnError::Malformed {
                what: "packet in",
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn frame_with_another_version_is_a_typed_error() -> Result<()> {
    let err = poisoned_echo(msg(4, 3, 1, &[]), false).await?;
    assert!(
        matches!(err, ConnError::UnexpectedVersion { version: 4 }),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_features_reply_fails_the_handshake() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = fake_socket(dir.path());
    let listener = UnixListener::bind(&path)?;
    let peer = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await?;
            read_msg(&mut stream).await?;
            stream.write_all(&hello(&[6])).await?;
            loop {
                let (_, t, xid, _) = read_msg(&mut stream).await?;
                if t == 5 {
                    // 4 bytes instead of 24.
                    stream.write_all(&msg(6, 6, xid, &[0, 0, 0, 1])).await?;
                    break;
                }
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(600),
        ..test_config()
    };
    let err = Client::connect(Endpoint::Unix(path), config)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Connect {
                source: ConnError::Malformed {
                    what: "features reply",
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("truncated features reply"),
        "{err}"
    );
    peer.abort();
    Ok(())
}
