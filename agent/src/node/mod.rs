//! The composition root: the only module that imports the parts (`cniserver`, `hoststate`,
//! `uplink`, `api`, `k8s`) and wires them, passing each only what it needs (the e2e crate's
//! `layering` test keeps it so). The agent's main loop: serve the CNI socket at once (not ready), connect to OVS, converge
//! the bridge, wait for the own Node's podCIDRs, bootstrap the node ([`bootstrap`]), hand the
//! pod network to the CNI server, then keep the bridge, the gateway port, the uplink and the
//! peers' flows converged. Host routes, rules, neighbours, sysctls, gateway addresses and the
//! managed links' MAC/MTU/state are the host-state reconciler's ([`crate::hoststate`]), which
//! the loop feeds with the peers.
//!
//! Plan, then reconcile: [`desired_bridge`] and [`gateway::GatewaySpec`] are pure functions of
//! config and node; the loop compares them with what OVSDB and the kernel report on every
//! OVSDB cache event (the monitor is the trigger, and every reconnect is a full resync) and on
//! a periodic backstop, and converges with idempotent operations. OpenFlow reconnects
//! (ovs-vswitchd restarts) are handled by the flow set's replay hook ([`crate::flows`]).

pub mod annotations;
pub mod bootstrap;
pub mod dpfeatures;
pub mod hoststate;
pub mod peers;
pub mod policy;
pub mod replan;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::cniserver::{CniService, ServeError};
use crate::config::AgentConfig;
use crate::flows;
use crate::k8s::{self, K8sError, NodeView, PeersView};
use crate::netns::Netns;
use crate::ovsdb::{
    BridgeSpec, CacheEvent, Client, ClientConfig, Endpoint, Ovs, OvsBridgeClient, OvsdbError, Row,
};
use crate::ports::gateway::{self, GatewaySpec};
use bootstrap::BootstrapError;
pub use weft_plan::names::{OWNER_KEY, OWNER_VALUE};

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
    /// The local API or the metrics endpoint could not be served.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
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

/// Options of a run that are flags, not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// On shutdown, detach the uplink: its addresses and routes go back to the NIC
    /// (`weft-agent --restore-uplink`).
    pub restore_uplink: bool,
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    run_with(config, shutdown, RunOptions::default()).await
}

/// [`run`] with flag options.
pub async fn run_with(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: RunOptions,
) -> Result<(), AgentError> {
    tracing::info!(node = %config.node_name, bridge = %config.ovs_bridge, "weft-agent starting");
    // Served at once: STATUS answers "not ready" (50) and ADD "try again later" (11) until
    // bootstrap completes.
    let service = CniService::new();
    // The stop signal reaches the CNI server at once, even while the loop below is busy (an
    // OVSDB call can take long when ovsdb-server stalls): the ADDs in flight roll back now.
    let (stopping, mut stop_rx) = tokio::sync::watch::channel(false);
    let _signal = {
        let service = Arc::clone(&service);
        AbortOnDrop(tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stop signal: cni requests in flight are rolled back");
            service.begin_stop();
            stopping.send_replace(true);
        }))
    };
    let stop_rx_outer = stop_rx.clone();
    let shutdown = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    tokio::pin!(shutdown);
    let server = service.serve(&config.cni_socket)?;
    tracing::info!(socket = %config.cni_socket.display(), "cni socket served (not ready yet)");
    let _server = AbortOnDrop(server);
    // The local API (weftctl) and metrics; dropping `ops` stops them and removes the socket.
    let ops = crate::api::start(&config).await?;
    service.set_observer(Arc::clone(ops.state.metrics()) as _);

    let endpoint = Endpoint::Unix(config.ovsdb_socket());
    let ovsdb_error = |source| AgentError::Ovsdb {
        endpoint: endpoint.to_string(),
        source,
    };
    let client = Client::connect(ClientConfig::new(endpoint.clone()))
        .await
        .map_err(ovsdb_error)?;
    let ovs = Ovs::new(client.clone());
    ops.state.set_ovs(ovs.clone());
    let mut events = client.subscribe();
    converge_bridge(&config, &ovs).await.map_err(ovsdb_error)?;
    // A half-done uplink attach, or a finished one whose internal port lost the node IP (OVS
    // restarted while the agent was down), leaves the node IP unusable: undo it before the API
    // server is needed (the bootstrap attaches again).
    if let Ok(host) = Netns::current() {
        if let Err(error) = crate::uplink::recover_unfinished(
            &ovs,
            &host,
            &config.data_dir,
            &config.ovs_bridge,
            config.ovs_datapath_type == crate::ovsdb::DatapathType::Netdev,
        )
        .await
        {
            tracing::warn!(%error, "cannot undo the unfinished uplink operation; the bootstrap retries");
        }
    }
    ops.state
        .set_phase(crate::api::types::Phase::WaitingForNode);

    let kube = k8s::client(&config.kubeconfig).await?;
    let _conflist_watch = start_conflist_watch(&config, &ops.state, &kube);
    // The API server connection as the watches and the annotation publisher see it: agentinfo
    // section `kubernetes` and the weft_kube_* / weft_node_annotation* metrics.
    let kube_health = k8s::KubeHealth::new();
    ops.state
        .metrics()
        .register(Arc::clone(&kube_health) as Arc<dyn crate::metrics::MetricFamilies>);
    ops.state
        .add_section(Arc::new(KubeSection(Arc::clone(&kube_health))));
    let view = NodeView::start_with(kube.clone(), &config.node_name, Arc::clone(&kube_health));
    let peers_view =
        PeersView::start_with(kube.clone(), &config.node_name, Arc::clone(&kube_health));
    // Listed while the node bootstraps, so the first realization follows it closely.
    let policy_view = Arc::new(k8s::PolicyView::start(kube.clone()));
    let boot_error = |source| AgentError::Bootstrap {
        node: config.node_name.clone(),
        source,
    };
    let node = tokio::select! {
        () = &mut shutdown => return Ok(()),
        node = view.wait_for_pod_cidrs() => node.map_err(|e| boot_error(e.into()))?,
    };
    // The first complete peer list goes into the first bundle (no gap for cross-node traffic
    // across restarts); a slow API server only delays peers, never the node.
    let initial_peers = {
        let mut rx = peers_view.subscribe();
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = rx.wait_for(Option::is_some) => {}
            () = tokio::time::sleep(PEERS_WAIT) => {
                tracing::warn!("peer nodes not listed after {PEERS_WAIT:?}; starting without them");
            }
        }
        peers_view.current()
    };
    ops.state.set_phase(crate::api::types::Phase::Bootstrapping);
    let mut booted = tokio::select! {
        () = &mut shutdown => return Ok(()),
        booted = bootstrap::bootstrap(&config, &ovs, &node, initial_peers) => booted.map_err(boot_error)?,
    };
    let family = booted.transport.underlay();
    // Routes, rules, neighbours, sysctls, gateway addresses and managed links, repaired on
    // netlink events (issue 5): the one owner of Weft's host state, peer routes included. Its
    // first pass (gateway addresses and pod CIDR routes) runs before the first CNI ADD.
    let mut host_state = hoststate::AgentHostState::start(
        &config,
        &node,
        &booted,
        kube.clone(),
        &ops.state,
        peers_view
            .current()
            .map(|view| crate::hoststate::peer_specs(&view, family))
            .unwrap_or_default(),
    );
    // A link facing the underlay seen below the planned MTU: re-plan live ([`replan`]).
    let mut underlay = host_state.report().watch_underlay();
    let node_events = crate::hoststate::KubeDriftSink::new(kube.clone(), &config.node_name);
    let mut replan_pending: Option<crate::hoststate::UnderlayLowered> = None;
    if !host_state.first_pass(HOST_FIRST_PASS_WAIT).await {
        tracing::warn!("host state not converged after {HOST_FIRST_PASS_WAIT:?}; serving anyway");
    }
    // NetworkPolicy: compiled from the view and this node's pods, installed one bundle per change.
    let policy_metrics = Arc::new(policy::PolicyMetrics::default());
    ops.state
        .metrics()
        .register(Arc::clone(&policy_metrics) as Arc<dyn crate::metrics::MetricFamilies>);
    let _policy = {
        let flow_node = booted.network.flows().node();
        let realizer = policy::Realizer {
            flows: booted.network.flows().clone(),
            view: Arc::clone(&policy_view),
            node: config.node_name.clone(),
            node_ips: flow_node
                .node_ips
                .iter()
                .chain(flow_node.gateway_ips.iter())
                .copied()
                .collect(),
            data_dir: config.data_dir.clone(),
            pod_wait: config.network_policy_pod_wait(),
            service_cidrs: config.service_cidrs(),
            metrics: policy_metrics,
        };
        AbortOnDrop(tokio::spawn(realizer.run()))
    };
    service.set_ready(Arc::clone(&booted.network));
    ops.state.set_node(node_state(&booted, &node.pod_cidrs));
    tracing::info!(
        node = %config.node_name, round = booted.round, pods = booted.rebuild.pods,
        pod_mtu = booted.transport.plan.pod, "node ready: serving cni requests"
    );

    let host = Netns::current().ok();
    let mut node_changes = view.subscribe();
    let mut peer_changes = peers_view.subscribe();
    let annotations: BTreeMap<String, String> = [
        booted
            .transport
            .address
            .map(|a| (peers::TRANSPORT_ADDRESS_ANNOTATION, a.to_string())),
        booted
            .uplink_mac
            .or_else(|| crate::uplink::attached_nic_mac(&booted.uplink))
            .map(|m| (peers::UPLINK_MAC_ANNOTATION, m.to_string())),
    ]
    .into_iter()
    .flatten()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    // Kept equal to `annotations` on every own-Node event and resync, not published once.
    let _annotations = (!annotations.is_empty()).then(|| {
        AbortOnDrop(tokio::spawn(annotations::reconcile(
            kube.clone(),
            config.node_name.clone(),
            annotations,
            view.subscribe(),
            Arc::clone(&kube_health),
            RESYNC_INTERVAL,
        )))
    });
    // Peer flows in both modes: through the tunnel (encap) or on the underlay to the peers'
    // uplink MACs (noEncap with the uplink attached). Their host routes are the host-state
    // reconciler's.
    let mut peer_reconciler = match &booted.peer_path {
        Some(path) => {
            let mut reconciler =
                peers::PeerReconciler::new(booted.network.flows().clone(), family, path.clone());
            // netdev over an IPv6 underlay: OVS does not learn tunnel next hops by itself.
            if *path == peers::PeerPath::Tunnel
                && family == crate::mtu::Family::Ipv6
                && config.ovs_datapath_type == crate::ovsdb::DatapathType::Netdev
            {
                reconciler = reconciler.with_tunnel_neighbours(peers::TunnelNeighbours::new(
                    config.ovs_run_dir.clone(),
                    config.ovs_bridge.clone(),
                ));
            }
            if let Some(view) = peers_view.current() {
                reconciler.reconcile(&view).await;
            }
            Some(reconciler)
        }
        None => None,
    };
    let mut replays = booted.network.flows().replays();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.tick().await;
    // The loop is raced with the stop signal as a whole: a convergence step waiting for a
    // stalled ovsdb-server must not hold the exit up (what it was doing is idempotent and
    // converges on the next start, as after a crash).
    let mut stop_outer = stop_rx_outer;
    let main_loop = async {
        loop {
            let (check_bridge, check_gateway) = tokio::select! {
                () = &mut shutdown => break,
                // ovs-vswitchd restarted: its tunnel neighbours are gone with it; set them now.
                Ok(()) = replays.changed() => {
                    if let Some(reconciler) = peer_reconciler.as_mut() {
                        if let Some(view) = peers_view.current() {
                            reconciler.after_replay(&view).await;
                        }
                    }
                    (false, false)
                }
                changed = underlay.changed() => {
                    if changed.is_ok() {
                        replan_pending = underlay.borrow_and_update().clone().or(replan_pending);
                    }
                    (false, false)
                }
                _ = resync.tick() => {
                    if let Some(reconciler) = peer_reconciler.as_mut() {
                        if let Some(view) = peers_view.current() {
                            reconciler.reconcile(&view).await;
                        }
                    }
                    (true, true)
                }
                changed = peer_changes.changed() => {
                    if changed.is_ok() {
                        let view = peer_changes.borrow_and_update().clone();
                        if let Some(view) = view {
                            if let Some(reconciler) = peer_reconciler.as_mut() {
                                reconciler.reconcile(&view).await;
                            }
                            host_state.set_peers(crate::hoststate::peer_specs(&view, family));
                        }
                    }
                    (false, false)
                }
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
                        let gw = gateway_uuid(&client, &booted.gateway);
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
            if let Some(lowered) = replan_pending.take() {
                let settled = replan::follow(
                    &config,
                    &ovs,
                    &mut booted,
                    &lowered,
                    &node_events,
                    ops.state.metrics(),
                )
                .await;
                ops.state.update_node(node_state(&booted, &node.pod_cidrs));
                if !settled {
                    // Retried on the next resync tick.
                    replan_pending = Some(lowered);
                }
            }
            if check_bridge && !bridge_in_cache(&config, &client) {
                if let Err(error) = converge_bridge(&config, &ovs).await {
                    // Outages are normal (ovsdb-server restart): the next resync retries.
                    tracing::warn!(%error, bridge = %config.ovs_bridge, "cannot converge bridge, will retry");
                }
            }
            if check_gateway {
                converge_gateway(&config, &ovs, &booted.gateway).await;
                if let Some(ns) = &host {
                    // ovs-vswitchd recreates the internal port's tap without addresses: re-converge.
                    if let Some(spec) = &booted.uplink.uplink {
                        converge_uplink(
                            &ovs,
                            booted.network.flows(),
                            ns,
                            spec,
                            crate::uplink::Target::Attached,
                        )
                        .await;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = main_loop => {}
        _ = stop_outer.wait_for(|s| *s) => {}
    }
    tracing::info!("weft-agent stopping");
    // Every CNI request in flight answers (an ADD is rolled back) before anything else stops:
    // no half-made pod is left behind (issue 13).
    let left = service.stop(CNI_DRAIN).await;
    if left > 0 {
        tracing::warn!(
            left,
            "cni requests still running at exit; the next start sweeps what they leave"
        );
    }
    if options.restore_uplink {
        if let (Some(ns), Some(spec)) = (&host, &booted.uplink.uplink) {
            converge_uplink(
                &ovs,
                booted.network.flows(),
                ns,
                spec,
                crate::uplink::Target::Detached,
            )
            .await;
        }
    }
    let _ = std::fs::remove_file(&config.cni_socket);
    Ok(())
}

/// How long a stopping agent waits for the CNI requests in flight (an ADD's rollback is
/// bounded by [`crate::cniserver::ROLLBACK_TIMEOUT`]-long OVSDB calls).
const CNI_DRAIN: Duration = Duration::from_secs(10);

/// Starts the conflist watch when `cniConfWatch` is on ([`crate::cniwatch`]); the task stops
/// when the returned guard is dropped.
fn start_conflist_watch(
    config: &AgentConfig,
    api: &crate::api::ApiState,
    kube: &kube::Client,
) -> Option<AbortOnDrop> {
    if !config.cni_conf_watch {
        return None;
    }
    let Some(cni_version) = config.conflist_cni_version() else {
        tracing::warn!(cni_version = %config.cni_version, "conflist watch off: invalid cniVersion");
        return None;
    };
    let input = crate::cniconf::ConflistInput {
        agent_socket: config.cni_socket.clone(),
        chained: config.cni_chained_plugins.clone(),
        cni_version,
    };
    let watch = Arc::new(
        crate::cniwatch::ConflistWatch::new(config.cni_conf_dir.clone(), input).with_events(
            Box::new(NodeEvents(crate::hoststate::KubeDriftSink::new(
                kube.clone(),
                &config.node_name,
            ))),
        ),
    );
    api.metrics()
        .register(Arc::clone(&watch) as Arc<dyn crate::metrics::MetricFamilies>);
    api.add_section(Arc::clone(&watch) as Arc<dyn crate::api::StatusSection>);
    tracing::info!(dir = %config.cni_conf_dir.display(), "conflist watch started");
    Some(AbortOnDrop(tokio::spawn(watch.run())))
}

/// Node Events of the conflist watch, through the host-state reconciler's event recorder.
struct NodeEvents(crate::hoststate::KubeDriftSink);

impl crate::cniwatch::EventSink for NodeEvents {
    fn warn(&self, reason: &str, note: String) {
        self.0.publish(reason, "Check", note);
    }
}

/// How long the start waits for the first complete list of peer Nodes.
const PEERS_WAIT: Duration = Duration::from_secs(10);

/// How long the start waits for the host-state reconciler's first pass before serving CNI.
const HOST_FIRST_PASS_WAIT: Duration = Duration::from_secs(5);

/// The `kubernetes` section of `agent_info`: the API server connection and the Node
/// annotations ([`k8s::health::KubeStatus`]).
struct KubeSection(Arc<k8s::KubeHealth>);

impl crate::api::StatusSection for KubeSection {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn value(&self) -> serde_json::Value {
        serde_json::to_value(self.0.status()).unwrap_or_default()
    }
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

/// Re-converges the gateway's OVSDB row. The kernel device (which the netdev datapath recreates
/// without addresses when ovs-vswitchd restarts) is the host-state reconciler's: it restores
/// MAC, MTU, state, addresses and routes on the link event.
async fn converge_gateway(config: &AgentConfig, ovs: &Ovs, gateway: &GatewaySpec) {
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
        }
    }
}

/// Converges the uplink on `target`, logging instead of failing (the next event retries).
async fn converge_uplink(
    ovs: &Ovs,
    flows: &flows::FlowSet,
    host: &Netns,
    spec: &crate::uplink::UplinkSpec,
    target: crate::uplink::Target,
) {
    let kernel = match crate::uplink::Kernel::open(host.clone()).await {
        Ok(kernel) => kernel,
        Err(error) => {
            tracing::warn!(%error, "cannot open the node's netlink for the uplink");
            return;
        }
    };
    match crate::uplink::converge(ovs, flows, &kernel, spec, target).await {
        Ok(outcome) if target == crate::uplink::Target::Detached => {
            tracing::info!(steps = ?outcome.ran, nic = %spec.nic, "uplink restored to the nic")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, ?target, "cannot converge the uplink, will retry"),
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

/// The bootstrapped node as the API sees it.
fn node_state(
    booted: &bootstrap::Bootstrapped,
    pod_cidrs: &[ipnet::IpNet],
) -> crate::api::NodeState {
    crate::api::NodeState {
        pods: Arc::clone(&booted.network) as Arc<dyn crate::api::PodRecords>,
        flows: booted.network.flows().clone(),
        mode: booted.transport.mode.to_string(),
        plan: booted.transport.plan.into(),
        transport: booted.transport.transport.clone(),
        round: booted.round,
        gateway: booted.gateway.name.clone(),
        pod_cidrs: pod_cidrs.to_vec(),
    }
}

impl crate::api::PodRecords for crate::cniserver::PodNetwork {
    fn records(&self) -> Vec<weft_plan::record::PodRecord> {
        crate::cniserver::PodNetwork::records(self)
    }
}
