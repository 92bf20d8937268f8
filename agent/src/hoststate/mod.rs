//! Host state that heals itself (issue 5; field reports 3 and 5): the routes, policy rules,
//! permanent neighbours, sysctls and gateway addresses Weft needs in the node's namespace, and
//! the links it manages (gateway, pod host veths).
//!
//! - [`desired`]: the desired [`HostState`], a pure function of (config, node, peers).
//! - [`diff`]: observed state as plain data and the pure diff (ownership rules live there).
//! - [`kernel`]: rtnetlink dumps and single-object adds/deletes (never execs `ip`).
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
pub mod reconciler;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub use desired::{
    desired, AddressSpec, HostInput, HostState, IpFamily, NeighbourSpec, PeerSpec, RouteSpec,
    RuleSpec, SysctlSpec, MAIN_TABLE, RULE_PRIORITY_MAX, RULE_PRIORITY_MIN, WEFT_PROTOCOL,
    WEFT_TABLE,
};
pub use links::{LinkRole, LinkSpec, ManagedLinks, PodNetworkLinks};
pub use reconciler::{HostReconciler, ReconcilerConfig};
pub use report::{DriftSink, HostMetrics, HostReport, HostStatus, KubeDriftSink};

use crate::agent::bootstrap::Bootstrapped;
use crate::config::AgentConfig;
use crate::k8s::{LocalNode, NodeInfo, PeersView};
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
}

/// The peers as plain data.
pub fn peer_specs<'a>(peers: impl IntoIterator<Item = &'a NodeInfo>) -> Vec<PeerSpec> {
    peers
        .into_iter()
        .map(|node| PeerSpec {
            name: node.name.clone(),
            pod_cidrs: node.pod_cidrs.clone(),
            transport_ips: node.internal_ips.clone(),
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
        extra_routes: Vec::new(),
        peer_gateway_mac: ovs_flows::pipeline::VIRTUAL_MAC.0,
    }
}

/// The host-state reconciler as the agent runs it: reports from the start, reconciles once the
/// peers are listed (so "not listed yet" never removes peer routes), recomputes the desired
/// state when peers change. Stops when dropped.
pub struct AgentHostState {
    report: Arc<HostReport>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AgentHostState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentHostState {
    /// Starts it in the agent's namespace.
    pub fn start(
        config: &AgentConfig,
        node: &LocalNode,
        booted: &Bootstrapped,
        kube: kube::Client,
    ) -> Self {
        let sink = KubeDriftSink::new(kube.clone(), &config.node_name);
        let report = Arc::new(HostReport::new(Some(Box::new(sink))));
        let links: Arc<dyn ManagedLinks> = Arc::new(PodNetworkLinks {
            gateway: booted.gateway.clone(),
            pod_mtu: booted.transport.plan.pod,
            network: Arc::clone(&booted.network),
        });
        let mut reconciler_config = ReconcilerConfig::new(&config.host_gateway);
        reconciler_config.resync_interval = config.host_resync_interval();
        let (config, node, booted_input) = (
            config.clone(),
            node.clone(),
            agent_input(config, node, booted, Vec::new()),
        );
        let task_report = Arc::clone(&report);
        let task = tokio::spawn(async move {
            let peers_view = PeersView::start(kube, &config.node_name);
            let mut peers = peers_view.subscribe();
            let listed = loop {
                if let Some(listed) = peers.borrow_and_update().clone() {
                    break listed;
                }
                if peers.changed().await.is_err() {
                    return;
                }
            };
            let input = |listed: &crate::k8s::PeerNodes| HostInput {
                peers: peer_specs(listed.values()),
                ..booted_input.clone()
            };
            let (tx, rx) = watch::channel(desired(&input(&listed)));
            let netns = match Netns::current() {
                Ok(ns) => ns,
                Err(error) => {
                    tracing::error!(%error, "host state reconciler cannot open the node's netns");
                    return;
                }
            };
            let _reconciler =
                match HostReconciler::start(netns, rx, links, task_report, reconciler_config).await
                {
                    Ok(r) => r,
                    Err(error) => {
                        tracing::error!(%error, "host state reconciler cannot start");
                        return;
                    }
                };
            tracing::info!(node = %node.name, peers = listed.len(), "host state reconciler running");
            while peers.changed().await.is_ok() {
                if let Some(listed) = peers.borrow_and_update().clone() {
                    tx.send_if_modified(|state| {
                        let next = desired(&input(&listed));
                        let changed = *state != next;
                        *state = next;
                        changed
                    });
                }
            }
        });
        AgentHostState { report, task }
    }

    /// The reporting state (metrics, status) for the agent API.
    pub fn report(&self) -> &Arc<HostReport> {
        &self.report
    }
}
