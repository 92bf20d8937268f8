//! The agent's main loop: serve the CNI socket at once (not ready), connect to OVS, converge
//! the bridge, wait for the own Node's podCIDRs, bootstrap the node ([`bootstrap`]), hand the
//! pod network to the CNI server, then keep the bridge and the gateway converged.
//!
//! Plan, then reconcile: [`desired_bridge`] and [`gateway::GatewaySpec`] are pure functions of
//! config and node; the loop compares them with what OVSDB and the kernel report on every
//! OVSDB cache event (the monitor is the trigger, and every reconnect is a full resync) and on
//! a periodic backstop, and converges with idempotent operations. OpenFlow reconnects
//! (ovs-vswitchd restarts) are handled by the flow set's replay hook ([`flows`]).

pub mod bootstrap;
pub mod flows;
pub mod gateway;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::cniserver::{CniService, ServeError};
use crate::config::AgentConfig;
use crate::k8s::{self, K8sError, NodeView};
use crate::netns::Netns;
use crate::ovsdb::{
    BridgeSpec, CacheEvent, Client, ClientConfig, Endpoint, Ovs, OvsBridgeClient, OvsdbError, Row,
};
use bootstrap::BootstrapError;
use gateway::GatewaySpec;

/// external_ids key marking objects Weft owns.
pub const OWNER_KEY: &str = "weft-owner";
/// external_ids value of [`OWNER_KEY`].
pub const OWNER_VALUE: &str = "weft-agent";

/// How often the bridge and gateway are re-checked when no OVSDB event arrives.
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
    /// The CNI socket could not be served.
    #[error(transparent)]
    Cni(#[from] ServeError),
    /// The Kubernetes client could not be built.
    #[error(transparent)]
    Kube(#[from] K8sError),
    /// Bootstrap failed.
    #[error("bootstrap of node {node} failed: {source}")]
    Bootstrap {
        /// The node.
        node: String,
        /// Why.
        source: BootstrapError,
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
    tokio::pin!(shutdown);
    tracing::info!(node = %config.node_name, bridge = %config.ovs_bridge, "weft-agent starting");
    // Served at once: STATUS answers "not ready" (50) and ADD "try again later" (11) until
    // bootstrap completes.
    let service = CniService::new();
    let server = service.serve(&config.cni_socket)?;
    tracing::info!(socket = %config.cni_socket.display(), "cni socket served (not ready yet)");
    let _server = AbortOnDrop(server);

    let endpoint = Endpoint::Unix(config.ovsdb_socket());
    let ovsdb_error = |source| AgentError::Ovsdb {
        endpoint: endpoint.to_string(),
        source,
    };
    let client = Client::connect(ClientConfig::new(endpoint.clone()))
        .await
        .map_err(ovsdb_error)?;
    let ovs = Ovs::new(client.clone());
    let mut events = client.subscribe();
    converge_bridge(&config, &ovs).await.map_err(ovsdb_error)?;

    let kube = k8s::client(&config.kubeconfig).await?;
    let view = NodeView::start(kube.clone(), &config.node_name);
    let boot_error = |source| AgentError::Bootstrap {
        node: config.node_name.clone(),
        source,
    };
    let node = tokio::select! {
        () = &mut shutdown => return Ok(()),
        node = view.wait_for_pod_cidrs() => node.map_err(|e| boot_error(e.into()))?,
    };
    let booted = tokio::select! {
        () = &mut shutdown => return Ok(()),
        booted = bootstrap::bootstrap(&config, &ovs, &node) => booted.map_err(boot_error)?,
    };
    let gateway = booted.gateway.clone();
    service.set_ready(Arc::clone(&booted.network));
    tracing::info!(
        node = %config.node_name, round = booted.round, pods = booted.rebuild.pods,
        pod_mtu = booted.transport.plan.pod, "node ready: serving cni requests"
    );

    // Routes, rules, neighbours, sysctls and managed links, repaired on netlink events
    // (issue 5); stops when dropped at the end of `run`.
    let _host_state =
        crate::hoststate::AgentHostState::start(&config, &node, &booted, kube.clone());

    let host = Netns::current().ok();
    let host_nl = match &host {
        Some(ns) => ns.rtnetlink().await.ok(),
        None => None,
    };
    let mut node_changes = view.subscribe();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.tick().await;
    loop {
        let (check_bridge, check_gateway) = tokio::select! {
            () = &mut shutdown => break,
            _ = resync.tick() => (true, true),
            changed = node_changes.changed() => {
                if changed.is_ok() {
                    let cidrs = node_changes.borrow().as_ref().map(|n| n.pod_cidrs.clone());
                    if cidrs.as_ref() != Some(&node.pod_cidrs) {
                        tracing::warn!(old = ?node.pod_cidrs, new = ?cidrs, "node podCIDRs changed; restart the agent to apply");
                    }
                }
                (false, false)
            }
            event = events.recv() => match event {
                Ok(CacheEvent::Resynced { .. }) => (true, true),
                Ok(CacheEvent::Changed { changes, .. }) => {
                    let gw = gateway_uuid(&client, &gateway);
                    let touches_gateway = changes.iter().any(|c| {
                        c.table == "Interface" && gw.as_ref().is_none_or(|u| *u == c.uuid)
                    });
                    (true, touches_gateway)
                }
                Ok(CacheEvent::Disconnected { error }) => {
                    tracing::warn!(%error, "ovsdb connection lost, reconnecting");
                    (false, false)
                }
                Err(RecvError::Lagged(_)) => (true, true),
                Err(RecvError::Closed) => break,
            },
        };
        if check_bridge && !bridge_in_cache(&config, &client) {
            if let Err(error) = converge_bridge(&config, &ovs).await {
                // Outages are normal (ovsdb-server restart): the next resync retries.
                tracing::warn!(%error, bridge = %config.ovs_bridge, "cannot converge bridge, will retry");
            }
        }
        if check_gateway {
            if let (Some(ns), Some(nl)) = (&host, &host_nl) {
                converge_gateway(&config, &ovs, nl, ns, &gateway).await;
            }
        }
    }
    tracing::info!("weft-agent stopping");
    let _ = std::fs::remove_file(&config.cni_socket);
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn gateway_uuid(client: &Client, gateway: &GatewaySpec) -> Option<crate::ovsdb::Uuid> {
    client.read_cache(|cache| {
        cache
            .by_name("Interface", &gateway.name)
            .map(|(uuid, _)| uuid.clone())
    })
}

/// Re-converges the gateway (OVSDB row and kernel device, which the netdev datapath recreates
/// without addresses when ovs-vswitchd restarts).
async fn converge_gateway(
    config: &AgentConfig,
    ovs: &Ovs,
    nl: &rtnetlink::Handle,
    host: &Netns,
    gateway: &GatewaySpec,
) {
    let present = ovs.client().read_cache(|cache| {
        cache
            .by_name("Interface", &gateway.name)
            .is_some_and(|(_, row)| {
                row.get_i64("ofport") == Some(i64::from(ovs_flows::pipeline::ports::GATEWAY))
            })
    });
    if !present {
        if let Err(error) = gateway::ensure_port(ovs, &config.ovs_bridge, gateway).await {
            tracing::warn!(%error, "cannot converge gateway port, will retry");
            return;
        }
    }
    match gateway::ensure_link(nl, host.path(), gateway).await {
        Ok(changes) if !changes.is_empty() => {
            tracing::info!(gateway = %gateway.name, ?changes, "gateway interface repaired")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot converge gateway interface, will retry"),
    }
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
