//! The host-state part ([`crate::hoststate`]) wired into the agent: its input from the
//! bootstrap's results, its reports to the API (desired routes, status section, repairs log) and
//! to `/metrics`, and its drift Events to Kubernetes.

use std::sync::Arc;

use tokio::sync::watch;

use super::bootstrap::Bootstrapped;
use crate::api::types::HostRoute;
use crate::api::{ApiState, HostPlan, StatusSection};
use crate::cniserver::PodNetwork;
use crate::config::AgentConfig;
use crate::hoststate::links::{transport_link, uplink_links};
use crate::hoststate::{
    desired, HostInput, HostReconciler, HostReport, HostState, KubeDriftSink, ManagedLinks,
    PeerSpec, ReconcilerConfig,
};
use crate::hoststate::{LinkRole, LinkSpec};
use crate::iface::{host_mac, MacAddr};
use crate::k8s::LocalNode;
use crate::metrics::MetricFamilies;
use crate::netns::Netns;
use weft_plan::gateway::GatewaySpec;

/// The agent's input for [`desired`].
pub fn agent_input(
    config: &AgentConfig,
    node: &LocalNode,
    booted: &Bootstrapped,
    peers: Vec<PeerSpec>,
) -> HostInput {
    HostInput {
        mode: booted.transport.mode,
        gateway: config.host_gateway.clone(),
        pod_cidrs: node.pod_cidrs.clone(),
        transport: booted.transport.transport.clone(),
        peers,
        peer_gateway_mac: ovs_flows::pipeline::VIRTUAL_MAC.0,
        no_snat: config.no_snat,
    }
}

/// The desired state as the agent API reads it (desired routes for `weftctl get routes`, the
/// status as the `hostState` section of agent info).
struct ApiView {
    desired: watch::Receiver<HostState>,
    report: Arc<HostReport>,
}

impl HostPlan for ApiView {
    fn desired_routes(&self) -> Vec<HostRoute> {
        // As converged: noEncap peers behind a router go via the host's next hop toward them.
        let routes = self.report.resolved_routes(&self.desired.borrow().routes);
        let mut routes: Vec<HostRoute> = routes
            .iter()
            .map(|r| HostRoute {
                destination: r.dst.to_string(),
                device: r.dev.clone(),
                gateway: r.via.map(|ip| ip.to_string()),
                table: r.table,
            })
            .collect();
        routes.sort();
        routes.dedup();
        routes
    }
}

impl StatusSection for ApiView {
    fn name(&self) -> &'static str {
        "hostState"
    }

    fn value(&self) -> serde_json::Value {
        serde_json::to_value(self.report.status()).unwrap_or_default()
    }
}

/// The host-state reconciler as the agent runs it: the single owner of Weft's routes (local
/// and peer), rules, neighbours, sysctls, gateway addresses and SNAT tables. Started once the
/// peers are listed (so "not listed yet" never removes peer routes); [`AgentHostState::set_peers`]
/// recomputes the desired state on every peer change. Every repair goes to the agent API's
/// repairs log, its counters to `/metrics`, its status and desired routes to the API. Stops
/// when dropped.
pub struct AgentHostState {
    report: Arc<HostReport>,
    input: HostInput,
    desired: watch::Sender<HostState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AgentHostState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentHostState {
    /// Starts it in the agent's namespace with the listed `peers`, reporting through `api`.
    pub fn start(
        config: &AgentConfig,
        node: &LocalNode,
        booted: &Bootstrapped,
        kube: kube::Client,
        api: &ApiState,
        peers: Vec<PeerSpec>,
    ) -> Self {
        let sink = KubeDriftSink::new(kube, &config.node_name);
        let report = Arc::new(HostReport::with_repairs(
            Some(Box::new(sink)),
            Arc::clone(api.repairs()),
        ));
        api.metrics()
            .register(Arc::clone(&report) as Arc<dyn MetricFamilies>);
        // The attached uplink's internal port keeps the NIC's MAC (recorded by the attach).
        let uplink = booted.uplink.uplink.as_ref().map(|spec| {
            let mac = crate::uplink::recorded_nic(&spec.journal)
                .and_then(|nic| weft_plan::MacAddr::parse(&nic.mac));
            (spec.nic.clone(), mac)
        });
        let links: Arc<dyn ManagedLinks> = Arc::new(PodNetworkLinks {
            gateway: booted.gateway.clone(),
            transport: booted.transport.transport.clone(),
            uplink,
            follow_underlay: config.transport_mtu == 0,
            network: Arc::clone(&booted.network),
        });
        let mut reconciler_config = ReconcilerConfig::new(&config.host_gateway);
        reconciler_config.resync_interval = config.host_resync_interval();
        let input = agent_input(config, node, booted, peers);
        let (desired_tx, desired_rx) = watch::channel(desired(&input));
        let view = Arc::new(ApiView {
            desired: desired_rx.clone(),
            report: Arc::clone(&report),
        });
        api.set_host_plan(Arc::clone(&view) as Arc<dyn HostPlan>);
        api.add_section(view);
        let task_report = Arc::clone(&report);
        let node_name = node.name.clone();
        let task = tokio::spawn(async move {
            let netns = match Netns::current() {
                Ok(ns) => ns,
                Err(error) => {
                    tracing::error!(%error, "host state reconciler cannot open the node's netns");
                    return;
                }
            };
            let reconciler = match HostReconciler::start(
                netns,
                desired_rx,
                links,
                task_report,
                reconciler_config,
            )
            .await
            {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "host state reconciler cannot start");
                    return;
                }
            };
            tracing::info!(node = %node_name, "host state reconciler running");
            // Runs until this task is aborted (the agent stops).
            std::future::pending::<()>().await;
            drop(reconciler);
        });
        AgentHostState {
            report,
            input,
            desired: desired_tx,
            task,
        }
    }

    /// Recomputes the desired state for `peers` (a pass follows only if it changed).
    pub fn set_peers(&mut self, peers: Vec<PeerSpec>) {
        self.input.peers = peers;
        let next = desired(&self.input);
        self.desired.send_if_modified(|state| {
            let changed = *state != next;
            *state = next;
            changed
        });
    }

    /// Waits until the reconciler has finished a pass (at most `timeout`); `false` on timeout.
    pub async fn first_pass(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.report.metrics.passes.get() == 0 {
            if tokio::time::Instant::now() >= deadline || self.task.is_finished() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// The desired state now.
    pub fn desired(&self) -> HostState {
        self.desired.borrow().clone()
    }

    /// The reporting state (metrics, status).
    pub fn report(&self) -> &Arc<HostReport> {
        &self.report
    }
}

/// The agent's managed links: the gateway, the uplink's links when it is attached (else the
/// transport interface, watched only), and the host end of every attached pod (MAC from
/// [`host_mac`], MTU its port's `mtu_request`). The other MTUs come from the plan in force
/// ([`PodNetwork::plan`], which a live re-plan changes), read with the pod store on each call.
pub struct PodNetworkLinks {
    /// The gateway (its MTU is the plan's).
    pub gateway: GatewaySpec,
    /// The attached uplink: the NIC's name and its recorded MAC.
    pub uplink: Option<(String, Option<MacAddr>)>,
    /// The transport interface when it is not attached.
    pub transport: Option<String>,
    /// `transportMTU` is not configured: the plan follows the underlay's MTU down.
    pub follow_underlay: bool,
    /// The CNI server's pod network.
    pub network: Arc<PodNetwork>,
}

impl ManagedLinks for PodNetworkLinks {
    fn managed_links(&self) -> Vec<LinkSpec> {
        let plan = self.network.plan();
        let mut links = vec![LinkSpec {
            name: self.gateway.name.clone(),
            role: LinkRole::Gateway,
            mac: Some(self.gateway.mac),
            mtu: Some(plan.gateway),
            up: true,
            underlay_mtu: None,
        }];
        match (&self.uplink, &self.transport) {
            (Some((nic, mac)), _) => {
                links.extend(uplink_links(nic, plan.uplink, *mac, self.follow_underlay))
            }
            (None, Some(transport)) => {
                links.extend(transport_link(transport, plan.uplink, self.follow_underlay))
            }
            (None, None) => {}
        }
        // A pod keeps the MTU it was attached (or last fixed) with, its port's `mtu_request`:
        // a pod off the plan is reported and fixed as a whole (`reconcilePodMTU`), never by
        // one end.
        links.extend(
            self.network
                .records_with_port_mtu()
                .into_iter()
                .map(|(record, mtu)| LinkSpec {
                    mac: Some(host_mac(&record.container_id, &record.ifname)),
                    role: LinkRole::PodVeth { pod: record.key() },
                    mtu: Some(mtu.unwrap_or(plan.pod)),
                    name: record.host_ifname,
                    up: true,
                    underlay_mtu: None,
                }),
        );
        links
    }
}
