//! ovs-vswitchd restarts under a live client: reconnection, the replay hook, and what requests
//! issued during the outage see.

mod ofp_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ofp_support::*;
use ovs_flows::flow::Flow;
use ovs_flows::ofp::{Client, ClientConfig, ClientError, Endpoint, Event, FlowMod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconnects_and_the_hook_replays_the_flows() -> Result<()> {
    let mut ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let flows: Vec<Flow> = (1..=200).map(|n| l3_flow(10, n, 0x5)).collect();
    let mods: Arc<Vec<FlowMod>> = Arc::new(flows.iter().cloned().map(FlowMod::add).collect());
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let mods = mods.clone();
        let runs = runs.clone();
        client.on_reconnect(move |hook_client| {
            let mods = mods.clone();
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                hook_client.bundle(&mods).await
            }
        });
    }
    client.bundle(&mods).await?;
    assert_eq!(dumped(&ovs)?, displayed(&flows));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the hook runs on reconnections only"
    );

    let mut events = client.subscribe();
    tokio::task::block_in_place(|| ovs.restart_vswitchd())?;
    wait_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Disconnected(_)).then_some(())
    })
    .await?;
    wait_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Ready).then_some(())
    })
    .await?;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().connects, 2);
    // The replayed flows are on the new ovs-vswitchd.
    assert_eq!(dumped(&ovs)?, displayed(&flows));
    client.barrier().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_an_outage_wait_for_the_reconnection_or_time_out() -> Result<()> {
    let mut ovs = ovs_with_bridge()?;
    let client = connect(&ovs).await?;
    let impatient = Client::connect(
        Endpoint::Unix(ovs.mgmt_socket(BRIDGE)),
        ClientConfig {
            request_timeout: Duration::from_millis(700),
            ..test_config()
        },
    )
    .await?;
    let mut events = client.subscribe();
    tokio::task::block_in_place(|| ovs.stop_vswitchd())?;
    wait_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Disconnected(_)).then_some(())
    })
    .await?;
    assert!(!client.is_connected());

    // A request with a short timeout fails cleanly with a timeout.
    let err = impatient.barrier().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");

    // A request issued during the outage waits and is sent after the reconnection.
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.flow_mod(&FlowMod::add(l3_flow(1, 1, 0x77))).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());
    tokio::task::block_in_place(|| ovs.start_vswitchd())?;
    pending.await??;
    assert_eq!(dumped(&ovs)?, displayed(&[l3_flow(1, 1, 0x77)]));
    Ok(())
}
