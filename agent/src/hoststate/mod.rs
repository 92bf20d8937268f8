//! Host state that heals itself (issue 5; field reports 3 and 5): the routes, policy rules,
//! permanent neighbours, sysctls, gateway addresses and SNAT tables Weft needs in the node's
//! namespace, and the links it manages (gateway, uplink internal port and NIC, pod host veths).
//!
//! - [`desired`]: the desired [`HostState`], a pure function of (config, node, peers).
//! - [`diff`]: observed state as plain data and the pure diff (ownership rules live there).
//! - [`kernel`]: rtnetlink dumps and single-object adds/deletes (never execs `ip`).
//! - [`nft`]: the SNAT table (`ip weft`, `ip6 weft`) over nf_tables netlink (never execs `nft`).
//! - [`netconf`]: forwarding/rp_filter change events (sysctl drift without waiting for a resync).
//! - [`links`]: the managed links ([`ManagedLinks`]) and the pure drift check.
//! - [`reconciler`]: the event-driven loop (netlink multicast groups, debounce, resync, relist
//!   after overrun).
//! - [`report`]: counters by kind, the status snapshot, Kubernetes Events for repeated drift.
//! - [`install`]: the systemd-networkd and udev drop-ins and `install-host-config`.
//!
//! Ownership tags (see [`desired`]): route protocol 87 (0x57), table 22342 (0x5746), rule
//! priorities 30700-30799 with rule protocol 87, neighbour protocol 87.

pub mod desired;
pub mod diff;
pub mod install;
pub mod kernel;
pub mod links;
pub mod netconf;
pub mod nft;
pub mod reconciler;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub use desired::{
    desired, AddressSpec, HostInput, HostState, IpFamily, NeighbourSpec, PeerSpec, RouteSpec,
    RuleSpec, SnatSpec, SysctlSpec, MAIN_TABLE, RULE_PRIORITY_MAX, RULE_PRIORITY_MIN,
    WEFT_PROTOCOL, WEFT_TABLE,
};
pub use links::{LinkRole, LinkSpec, ManagedLinks, PodNetworkLinks, UnderlayLowered};
pub use reconciler::{HostReconciler, ReconcilerConfig};
pub use report::{DriftSink, HostMetrics, HostReport, HostStatus, KubeDriftSink};

use crate::agent::bootstrap::Bootstrapped;
use crate::api::types::HostRoute;
use crate::api::{ApiState, HostPlan, StatusSection};
use crate::config::AgentConfig;
use crate::k8s::{LocalNode, PeerNodes};
use crate::metrics::MetricFamilies;
use crate::mtu::Family;
use crate::netns::{Netns, NetnsError};

/// Errors of the host-state module.
#[derive(Debug, thiserror::Error)]
pub enum HostStateError {
    /// A netlink request failed.
    #[error("cannot {action} {object}: {source}")]
    Netlink {
        /// What was attempted.
        action: String,
        /// The object, e.g. `route 10.244.2.0/24 via ...`.
        object: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// An object names an interface that does not exist.
    #[error("cannot install {object}: interface {dev} does not exist")]
    NoLink {
        /// The object.
        object: String,
        /// The interface.
        dev: String,
    },
    /// Subscribing to netlink events failed.
    #[error("cannot subscribe to netlink events in netns {netns}: {source}")]
    Subscribe {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A sysctl could not be set.
    #[error("cannot set sysctl {key}={value}: {source}")]
    Sysctl {
        /// The key under /proc/sys.
        key: String,
        /// The value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// An nf_tables request (the SNAT table) failed.
    #[error(transparent)]
    Nft(#[from] nft::NftError),
}

/// The peers as plain data, from the peer view: the same peers the flows route
/// ([`crate::agent::peers::desired_peers`]: podCIDRs and a transport address of the underlay's
/// `family`, the published annotation first); each peer's other InternalIPs follow its
/// transport address (noEncap routes of the other family).
pub fn peer_specs(view: &PeerNodes, family: Family) -> Vec<PeerSpec> {
    // Host routes do not depend on the peer path: noEncap routes go via the peer's node IP,
    // whether or not the bridge has underlay flows for it.
    let (routed, _skipped) =
        crate::agent::peers::desired_peers(view, family, &crate::agent::peers::PeerPath::Tunnel);
    routed
        .into_values()
        .map(|peer| {
            let others = view
                .get(&peer.name)
                .map(|node| node.internal_ips.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|ip| ip.is_ipv4() != peer.transport_ip.is_ipv4());
            PeerSpec {
                transport_ips: std::iter::once(peer.transport_ip).chain(others).collect(),
                name: peer.name,
                pod_cidrs: peer.pod_cidrs,
            }
        })
        .collect()
}

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
