//! The agent's main loop: connect to OVS, converge the bridge Weft owns, and keep it converged.
//!
//! Today this covers the bridge itself (the foundation); pod networking adds the gateway port,
//! the pipeline and the CNI server on top of the same loop.
//!
//! Plan, then reconcile: [`desired_bridge`] is a pure function of the config; the loop compares it
//! with the OVSDB cache on every cache event (the monitor is the trigger, and every reconnect is a
//! full resync) and on a periodic backstop, and converges with the idempotent `ensure_bridge`.

use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::config::AgentConfig;
use crate::ovsdb::{
    BridgeSpec, CacheEvent, Client, ClientConfig, Endpoint, Ovs, OvsBridgeClient, OvsdbError, Row,
};

/// external_ids key marking objects Weft owns.
pub const OWNER_KEY: &str = "weft-owner";
/// external_ids value of [`OWNER_KEY`].
pub const OWNER_VALUE: &str = "weft-agent";

/// How often the bridge is re-checked when no OVSDB event arrives.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Errors of the agent loop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// OVSDB failed in a way the loop cannot ride out.
    #[error("ovsdb at {endpoint}: {source}")]
    Ovsdb {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: OvsdbError,
    },
}

/// The bridge Weft wants, from config alone (never from what exists).
pub fn desired_bridge(config: &AgentConfig) -> BridgeSpec {
    BridgeSpec::new(&config.ovs_bridge, config.ovs_datapath_type)
        .with_external_id(OWNER_KEY, OWNER_VALUE)
}

/// Whether a Bridge row already matches the desired spec (so no transaction is needed).
pub fn bridge_matches(config: &AgentConfig, row: &Row) -> bool {
    row.get_str("datapath_type") == Some(config.ovs_datapath_type.as_str())
        && row.get_strings("protocols") == ["OpenFlow15"]
        && row.get_str("fail_mode") == Some("secure")
        && row
            .get_map("external_ids")
            .get(OWNER_KEY)
            .map(String::as_str)
            == Some(OWNER_VALUE)
        && row
            .get_map("other_config")
            .get("disable-in-band")
            .map(String::as_str)
            == Some("true")
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let endpoint = Endpoint::Unix(config.ovsdb_socket());
    let ovsdb_error = |source| AgentError::Ovsdb {
        endpoint: endpoint.to_string(),
        source,
    };
    tracing::info!(node = %config.node_name, bridge = %config.ovs_bridge, %endpoint, "weft-agent starting");
    let client = Client::connect(ClientConfig::new(endpoint.clone()))
        .await
        .map_err(ovsdb_error)?;
    let ovs = Ovs::new(client.clone());
    let mut events = client.subscribe();

    converge_bridge(&config, &ovs).await.map_err(ovsdb_error)?;
    // Nothing else to install yet: vswitchd may now use the (empty) flow table.
    ovs.set_flow_restore_wait(false)
        .await
        .map_err(ovsdb_error)?;
    tracing::info!(bridge = %config.ovs_bridge, "bridge converged, flow-restore-wait cleared");

    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.tick().await;
    tokio::pin!(shutdown);
    loop {
        let check = tokio::select! {
            () = &mut shutdown => break,
            _ = resync.tick() => true,
            event = events.recv() => match event {
                Ok(CacheEvent::Resynced { .. }) | Ok(CacheEvent::Changed { .. }) => true,
                Ok(CacheEvent::Disconnected { error }) => {
                    tracing::warn!(%error, "ovsdb connection lost, reconnecting");
                    false
                }
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => break,
            },
        };
        if check && !bridge_in_cache(&config, &client) {
            if let Err(error) = converge_bridge(&config, &ovs).await {
                // Outages are normal (ovsdb-server restart): the next resync retries.
                tracing::warn!(%error, bridge = %config.ovs_bridge, "cannot converge bridge, will retry");
            }
        }
    }
    tracing::info!("weft-agent stopping");
    Ok(())
}

fn bridge_in_cache(config: &AgentConfig, client: &Client) -> bool {
    client.read_cache(|cache| {
        cache
            .by_name("Bridge", &config.ovs_bridge)
            .is_some_and(|(_, row)| bridge_matches(config, row))
    })
}

async fn converge_bridge(config: &AgentConfig, ovs: &Ovs) -> Result<(), OvsdbError> {
    let uuid = ovs.ensure_bridge(&desired_bridge(config)).await?;
    tracing::info!(bridge = %config.ovs_bridge, %uuid, datapath = config.ovs_datapath_type.as_str(), "bridge ensured");
    Ok(())
}
