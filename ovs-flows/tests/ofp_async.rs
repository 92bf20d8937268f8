//! Asynchronous messages on the management socket: packet-out through the pipeline to a
//! controller flow comes back as a packet-in; adding a port produces a port-status.

mod ofp_support;

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use ofp_support::*;
use ovs_flows::flow::{Action, Controller, Flow, Match};
use ovs_flows::ofp::{port, Event, FlowMod, PacketInReason, PacketOut, PortReason};

/// A broadcast ARP request from 0a:58:00:00:00:01 for 10.0.0.2.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x0a, 0x58, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x0a, 0x58, 0, 0, 0, 1, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f.resize(60, 0);
    f
}

#[tokio::test]
async fn packet_out_through_a_controller_flow_returns_a_packet_in() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let mut events = client.subscribe();
    client
        .flow_mod(&FlowMod::add(Flow {
            table: 0,
            priority: 10,
            cookie: 0xc0ffee,
            matches: Match::new().arp(),
            actions: vec![Action::GotoTable(3)],
            ..Flow::default()
        }))
        .await?;
    client
        .flow_mod(&FlowMod::add(Flow {
            table: 3,
            priority: 20,
            cookie: 0xbeef,
            matches: Match::new().arp(),
            actions: vec![Action::Controller(Controller::default())],
            ..Flow::default()
        }))
        .await?;
    let frame = arp_request();
    client
        .packet_out(&PacketOut {
            in_port: port::LOCAL,
            actions: vec![Action::Output(port::TABLE)],
            data: Bytes::from(frame.clone()),
        })
        .await?;
    let pi = wait_event(&mut events, Duration::from_secs(5), |e| match e {
        Event::PacketIn(pi) => Some(pi.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(&pi.data[..], &frame[..]);
    assert_eq!(usize::from(pi.total_len), frame.len());
    assert_eq!(pi.table_id, 3);
    assert_eq!(pi.cookie, 0xbeef);
    // OVS reports packets that entered the pipeline from a packet-out with OFPR_PACKET_OUT,
    // even when a flow's controller action sent them (measured with OVS 3.1).
    assert_eq!(pi.reason, PacketInReason::PacketOut);
    assert_eq!(pi.in_port, Some(port::LOCAL));
    let matches = pi.matches()?;
    assert!(matches.to_string().contains("in_port=LOCAL"), "{matches}");

    // Without a nonzero miss-send length, OVS sends no asynchronous messages to a management
    // socket connection: a second client that does not ask gets nothing.
    let quiet = ovs_flows::ofp::Client::connect(
        ovs_flows::ofp::Endpoint::Unix(ovs.mgmt_socket(BRIDGE)),
        ovs_flows::ofp::ClientConfig {
            async_messages: false,
            ..test_config()
        },
    )
    .await?;
    let mut quiet_events = quiet.subscribe();
    client
        .packet_out(&PacketOut {
            in_port: port::LOCAL,
            actions: vec![Action::Output(port::TABLE)],
            data: Bytes::from(frame.clone()),
        })
        .await?;
    wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::PacketIn(_)).then_some(())
    })
    .await?;
    quiet.barrier().await?;
    let heard = wait_event(&mut quiet_events, Duration::from_millis(500), |e| {
        matches!(e, Event::PacketIn(_)).then_some(())
    })
    .await;
    assert!(
        heard.is_err(),
        "a client without async config got a packet-in"
    );
    Ok(())
}

#[tokio::test]
async fn rejected_packet_out_is_an_error() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let err = client
        .packet_out(&PacketOut {
            in_port: port::LOCAL,
            actions: vec![Action::Output(4242)],
            data: Bytes::from(arp_request()),
        })
        .await;
    // OVS accepts output to a nonexistent port (the packet is dropped), so this succeeds;
    // a group that does not exist is refused.
    assert!(err.is_ok(), "{err:?}");
    let err = client
        .packet_out(&PacketOut {
            in_port: port::LOCAL,
            actions: vec![Action::Group(5)],
            data: Bytes::from(arp_request()),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("OFPBAC_BAD_OUT_GROUP"), "{err}");
    Ok(())
}

#[tokio::test]
async fn adding_and_removing_a_port_produces_port_status() -> Result<()> {
    let ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let mut events = client.subscribe();
    ovs.vsctl(&[
        "add-port",
        BRIDGE,
        "p-status",
        "--",
        "set",
        "Interface",
        "p-status",
        "type=internal",
        "ofport_request=32769",
    ])?;
    let added = wait_event(&mut events, Duration::from_secs(10), |e| match e {
        Event::PortStatus(ps) if ps.reason == PortReason::Add => Some(ps.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(added.port.name, "p-status");
    assert_eq!(added.port.port_no, 32769);
    let mac = ovs.vsctl(&["get", "Interface", "p-status", "mac_in_use"])?;
    let mac_text = added
        .port
        .hw_addr
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(mac.trim().trim_matches('"'), mac_text);

    ovs.vsctl(&["del-port", BRIDGE, "p-status"])?;
    let deleted = wait_event(&mut events, Duration::from_secs(10), |e| match e {
        Event::PortStatus(ps) if ps.reason == PortReason::Delete => Some(ps.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(deleted.port.port_no, 32769);
    Ok(())
}
