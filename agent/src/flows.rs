//! The node's flow set on the bridge: the desired flows (base pipeline + every local pod, all
//! in the current restart round) and their installation over OpenFlow.
//!
//! Guarantees:
//! - A pod's flows are added or removed in one bundle (all-or-nothing).
//! - The desired set is kept here, so on every OpenFlow reconnection (ovs-vswitchd restarted
//!   and lost its flows) the reconnect hook replays all of it in one bundle before any other
//!   request is sent, then clears `flow-restore-wait` again.
//! - Stale restart rounds are found by reading the flows back and deleted by cookie only after
//!   the current round is installed, so there is no datapath gap across agent restarts.
//! - NetworkPolicy: the installed [`CompiledPolicy`] is part of the desired set (replayed, and
//!   part of every full install). A new pod's flows go in with a policy hold in the SAME bundle:
//!   the pod is isolated both ways (fail closed) until [`FlowSet::apply_policy`] installs a
//!   compiled policy that knows it. Policy changes are serialized (one at a time, each one
//!   bundle: the diff against what is installed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ovs_flows::flow::{Flow, MacAddr};
use ovs_flows::ofp::{
    Client, ClientConfig, ClientError, ClientStats, Endpoint, FlowEntry, FlowMod, FlowStatsRequest,
};
use ovs_flows::pipeline::noencap::{noencap_peer_flows, uplink_reply_flows, NoEncapPeer};
use ovs_flows::pipeline::policy as policy_flows;
use ovs_flows::pipeline::{
    add_all, base_flows, delete_peer, delete_pod, delete_round, peer_flows, peer_gateway_answers,
    pod_flows, tunnel_flows, Cookie, CookieFilter, LocalPod, NodeConfig, PeerNode, PipelineError,
};

use crate::ovsdb::{Ovs, OvsBridgeClient};
use weft_plan::policy::CompiledPolicy;

/// Errors of the flow set.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The OpenFlow connection to the bridge could not be made.
    #[error("cannot connect openflow to bridge management socket {socket}: {source}")]
    Connect {
        /// The management socket.
        socket: PathBuf,
        /// Why.
        source: ClientError,
    },
    /// The switch refused or did not answer a request.
    #[error("{what}: {source}")]
    OpenFlow {
        /// What was being done, e.g. `installing flows of pod default/web`.
        what: String,
        /// Why.
        source: ClientError,
    },
    /// The node or a pod cannot be turned into flows.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

#[derive(Debug)]
struct Desired {
    node: NodeConfig,
    /// Local pods by OpenFlow port.
    pods: BTreeMap<u32, LocalPod>,
    /// Flows of infrastructure ports installed outside the base pipeline (the uplink's).
    statics: Vec<Flow>,
    /// Infrastructure ports the pipeline must serve.
    infra: Infrastructure,
    /// Peer nodes by name.
    peers: BTreeMap<String, DesiredPeer>,
    /// The next peer cookie object id (never reused within one agent run).
    next_peer_id: u64,
    /// The NetworkPolicy installed (what the policy flows are computed from).
    policy: CompiledPolicy,
}

impl Desired {
    fn all_flows(&self) -> Vec<Flow> {
        let mut flows = base_flows(&self.node);
        if self.infra.tunnel {
            flows.extend(tunnel_flows(&self.node));
        }
        for pod in self.pods.values() {
            flows.extend(pod_flows(&self.node, pod));
        }
        flows.extend(self.statics.iter().cloned());
        if let Some(local) = self.infra.uplink_mac {
            // noEncap: replies of uplink-origin connections go back to the MAC they came from.
            flows.extend(uplink_reply_flows(&self.node, local));
        }
        for peer in self.peers.values() {
            flows.extend(self.peer_flows(peer));
        }
        flows.extend(policy_flows::flows(&self.node, &self.policy));
        flows
    }

    /// One peer's flows: through the tunnel (encap), or on the underlay to its uplink MAC
    /// (noEncap) plus the answers for its gateway IPs the host routes point at.
    fn peer_flows(&self, peer: &DesiredPeer) -> Vec<Flow> {
        match self.infra.uplink_mac {
            None => peer_flows(&self.node, &peer.node),
            Some(local) => {
                let mut flows = noencap_peer_flows(
                    &self.node,
                    local,
                    &NoEncapPeer {
                        id: peer.node.id,
                        pod_cidrs: peer.node.pod_cidrs.clone(),
                        uplink_mac: peer.uplink_mac,
                    },
                );
                flows.extend(peer_gateway_answers(&self.node, &peer.node));
                flows
            }
        }
    }
}

/// A peer in the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DesiredPeer {
    node: PeerNode,
    /// Its uplink MAC (noEncap).
    uplink_mac: Option<MacAddr>,
}

/// Which infrastructure ports exist on the bridge (their flows are part of the base set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Infrastructure {
    /// The flow-based tunnel port (encap). The uplink's flows are static flows
    /// ([`FlowSet::install_static`]), installed by `uplink::converge`.
    pub tunnel: bool,
    /// noEncap with the uplink attached: this node's uplink MAC. Peers are then reached on the
    /// underlay segment at their uplink MAC (`noencap_peer_flows`) instead of the tunnel.
    pub uplink_mac: Option<MacAddr>,
}

pub use weft_plan::peers::PeerRoute;

/// Observes every flow operation (one bundle each), e.g. for metrics.
pub trait FlowObserver: Send + Sync + std::fmt::Debug {
    /// `op` (`install_all`, `install_static`, `add_pod`, `remove_pod`, `upsert_peer`,
    /// `remove_peer`, `delete_stale_rounds`) took `elapsed` and
    /// succeeded or not.
    fn observe(&self, op: &'static str, elapsed: Duration, ok: bool);
}

/// The bridge's flows: desired state plus the OpenFlow client that installs it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FlowSet {
    client: Client,
    desired: Arc<Mutex<Desired>>,
    observer: Arc<OnceLock<Arc<dyn FlowObserver>>>,
    replays: tokio::sync::watch::Sender<u64>,
    /// Serializes policy changes (a pod's hold, a realization): each is a diff against the
    /// installed policy and must see the previous one installed.
    policy_gate: Arc<tokio::sync::Mutex<()>>,
    /// Changes after every policy installation (CNI ADD waits on it for its pod).
    policy_installed: tokio::sync::watch::Sender<u64>,
    /// Changes when local pods come and go (the policy realizer recompiles then).
    pods_changed: tokio::sync::watch::Sender<u64>,
}

/// A pod's policy hold: `pod` isolated both ways with no rule applying to it, as the compiler
/// treats a local pod it has no Pod object for ([`CompiledPolicy::unknown`]). Rules that
/// applied to an earlier pod on the same OpenFlow port no longer do.
pub fn with_hold(policy: &CompiledPolicy, ofport: u32, ips: &[std::net::IpAddr]) -> CompiledPolicy {
    let mut held = policy.clone();
    held.pod_ips.insert(ofport, ips.to_vec());
    held.unknown.insert(ofport);
    held.isolated_ingress.insert(ofport);
    held.isolated_egress.insert(ofport);
    for rule in held.rules.values_mut() {
        rule.applied_to.remove(&ofport);
    }
    held.rules.retain(|_, rule| !rule.applied_to.is_empty());
    for pods in held.applied.values_mut() {
        pods.remove(&ofport);
    }
    held.applied.retain(|_, pods| !pods.is_empty());
    held
}

/// The direction (`egress`/`ingress`) of a policy flow that drops an isolated pod's unmatched
/// traffic, from its cookie; `None` for every other flow.
pub fn policy_drop_direction(cookie: u64) -> Option<&'static str> {
    match policy_flows::PolicyFlow::from_cookie(cookie)? {
        policy_flows::PolicyFlow::EgressIsolation(_) => Some("egress"),
        policy_flows::PolicyFlow::IngressIsolation(_) => Some("ingress"),
        _ => None,
    }
}

/// What one policy installation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyInstall {
    /// Flows added.
    pub added: usize,
    /// Flows modified in place.
    pub modified: usize,
    /// Flows deleted.
    pub deleted: usize,
}

impl FlowSet {
    /// Connects to the bridge management socket `socket` and registers the replay hook. Installs
    /// nothing yet ([`FlowSet::install_all`] does).
    pub async fn connect(socket: PathBuf, node: NodeConfig, ovs: Ovs) -> Result<Self, FlowError> {
        node.validate()?;
        let config = ClientConfig {
            request_timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        };
        let client = Client::connect(Endpoint::Unix(socket.clone()), config)
            .await
            .map_err(|source| FlowError::Connect { socket, source })?;
        let desired = Arc::new(Mutex::new(Desired {
            node,
            pods: BTreeMap::new(),
            statics: Vec::new(),
            infra: Infrastructure::default(),
            peers: BTreeMap::new(),
            next_peer_id: 1,
            policy: CompiledPolicy::default(),
        }));
        let replay = Arc::clone(&desired);
        let (replays, _) = tokio::sync::watch::channel(0u64);
        let replayed = replays.clone();
        client.on_reconnect(move |client| {
            let flows = lock(&replay).all_flows();
            let ovs = ovs.clone();
            let replayed = replayed.clone();
            async move {
                let count = flows.len();
                client.bundle(&add_all(flows)).await?;
                tracing::info!(
                    flows = count,
                    "openflow reconnected: replayed every flow in one bundle"
                );
                if let Err(error) = ovs.set_flow_restore_wait(false).await {
                    tracing::warn!(%error, "cannot clear flow-restore-wait after replay");
                }
                replayed.send_modify(|n| *n += 1);
                Ok(())
            }
        });
        Ok(FlowSet {
            client,
            desired,
            observer: Arc::default(),
            replays,
            policy_gate: Arc::default(),
            policy_installed: tokio::sync::watch::channel(0).0,
            pods_changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Changes after every replay on reconnect (ovs-vswitchd restarted): state ovs-vswitchd
    /// lost besides the flows (tunnel neighbours) is set again then.
    pub fn replays(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replays.subscribe()
    }

    /// Reports every later flow operation to `observer` (set once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn FlowObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Reads the installed flows selected by `request`, with their counters.
    pub async fn dump(&self, request: &FlowStatsRequest) -> Result<Vec<FlowEntry>, FlowError> {
        self.client
            .dump_flows(request)
            .await
            .map_err(|source| FlowError::OpenFlow {
                what: "reading flows".into(),
                source,
            })
    }

    /// The OpenFlow connection's counters (connects = 1 + reconnections).
    pub fn openflow_stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// The node configuration the flows are computed from.
    pub fn node(&self) -> NodeConfig {
        lock(&self.desired).node.clone()
    }

    /// Adds `pods` to the desired set and installs the base pipeline and every pod's flows in
    /// one bundle. Pods that cannot be wired are skipped and returned with the reason.
    pub async fn install_all(
        &self,
        pods: Vec<LocalPod>,
    ) -> Result<Vec<(LocalPod, PipelineError)>, FlowError> {
        let mut rejected = Vec::new();
        let flows = {
            let mut desired = lock(&self.desired);
            for pod in pods {
                match pod.validate(&desired.node) {
                    Ok(()) => {
                        desired.pods.insert(pod.ofport, pod);
                    }
                    Err(error) => rejected.push((pod, error)),
                }
            }
            desired.all_flows()
        };
        let count = flows.len();
        self.send("install_all", &add_all(flows), || {
            format!("installing {count} flows")
        })
        .await?;
        self.pods_changed.send_modify(|n| *n += 1);
        Ok(rejected)
    }

    /// Installs `flows` in one bundle and keeps them in the desired set (replayed on
    /// reconnect, part of every later full install), replacing earlier static flows.
    pub async fn install_static(&self, flows: Vec<Flow>) -> Result<(), FlowError> {
        let count = flows.len();
        self.send("install_static", &add_all(flows.clone()), || {
            format!("installing {count} infrastructure flows")
        })
        .await?;
        lock(&self.desired).statics = flows;
        Ok(())
    }

    /// Deletes every Weft flow of a round other than the current one; returns those rounds.
    pub async fn delete_stale_rounds(&self) -> Result<Vec<u16>, FlowError> {
        let round = lock(&self.desired).node.round;
        let entries = self
            .client
            .dump_flows(&FlowStatsRequest::default())
            .await
            .map_err(|source| FlowError::OpenFlow {
                what: "reading flows back".into(),
                source,
            })?;
        let stale: BTreeSet<u16> = entries
            .iter()
            .filter_map(|e| Cookie::from_u64(e.flow.cookie))
            .map(|c| c.round)
            .filter(|r| *r != round)
            .collect();
        let deletes: Vec<FlowMod> = stale.iter().map(|r| delete_round(*r)).collect();
        self.send("delete_stale_rounds", &deletes, || {
            format!("deleting flows of stale rounds {stale:?}")
        })
        .await?;
        Ok(stale.into_iter().collect())
    }

    /// Adds one pod and installs its flows in one bundle. On error the pod is not in the
    /// desired set and none of its flows are installed.
    ///
    /// The pod's policy hold ([`with_hold`]) goes in the same bundle: it sends and receives
    /// nothing beyond its network setup (ARP/ND answered by the pipeline) until
    /// [`FlowSet::apply_policy`] installs a policy that knows it.
    pub async fn add_pod(&self, pod: LocalPod) -> Result<(), FlowError> {
        let _gate = self.policy_gate.lock().await;
        let (mods, held) = {
            let mut desired = lock(&self.desired);
            pod.validate(&desired.node)?;
            let mut mods = add_all(pod_flows(&desired.node, &pod));
            let held = with_hold(&desired.policy, pod.ofport, &pod.ips);
            mods.extend(policy_flows::diff(&desired.node, &desired.policy, &held).flow_mods());
            desired.pods.insert(pod.ofport, pod.clone());
            (mods, held)
        };
        let result = self
            .send("add_pod", &mods, || {
                format!("installing flows of pod {}", pod.key())
            })
            .await;
        if result.is_err() {
            lock(&self.desired).pods.remove(&pod.ofport);
        } else {
            lock(&self.desired).policy = held;
            self.policy_installed.send_modify(|n| *n += 1);
        }
        self.pods_changed.send_modify(|n| *n += 1);
        result
    }

    /// Installs `policy` in ONE bundle: the difference between the installed policy's flows
    /// and its flows. On error the installed policy is unchanged (and so are the flows: the
    /// bundle is atomic).
    ///
    /// A local pod `policy` was compiled without (added since: not in its `pod_ips`) keeps its
    /// hold: a policy compiled a moment before a pod's ADD never opens that pod.
    pub async fn apply_policy(&self, policy: CompiledPolicy) -> Result<PolicyInstall, FlowError> {
        let _gate = self.policy_gate.lock().await;
        let (diff, policy) = {
            let desired = lock(&self.desired);
            let mut policy = policy;
            for pod in desired.pods.values() {
                if !policy.pod_ips.contains_key(&pod.ofport) {
                    policy = with_hold(&policy, pod.ofport, &pod.ips);
                }
            }
            if desired.policy == policy {
                return Ok(PolicyInstall::default());
            }
            (
                policy_flows::diff(&desired.node, &desired.policy, &policy),
                policy,
            )
        };
        let install = PolicyInstall {
            added: diff.add.len(),
            modified: diff.modify.len(),
            deleted: diff.delete.len(),
        };
        if !diff.is_empty() {
            self.send("apply_policy", &diff.flow_mods(), || {
                format!(
                    "installing networkpolicy flows (+{} ~{} -{})",
                    install.added, install.modified, install.deleted
                )
            })
            .await?;
        }
        lock(&self.desired).policy = policy;
        self.policy_installed.send_modify(|n| *n += 1);
        Ok(install)
    }

    /// Puts `policy` into the desired set without installing anything (before
    /// [`FlowSet::install_all`]: the policy realized before an agent restart goes into the new
    /// round's first bundle, so no isolated pod is ever open across the restart).
    pub fn preset_policy(&self, policy: CompiledPolicy) {
        lock(&self.desired).policy = policy;
    }

    /// The installed policy.
    pub fn installed_policy(&self) -> CompiledPolicy {
        lock(&self.desired).policy.clone()
    }

    /// Whether the pod on `ofport` is still held by policy (its Pod object or its policy not
    /// realized yet).
    pub fn policy_pending(&self, ofport: u32) -> bool {
        lock(&self.desired).policy.unknown.contains(&ofport)
    }

    /// Waits up to `timeout` until the pod on `ofport` is no longer held; whether it was
    /// released in time (it stays held, fail closed, when not).
    pub async fn wait_policy_realized(&self, ofport: u32, timeout: Duration) -> bool {
        let mut rx = self.policy_installed.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if !self.policy_pending(ofport) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Changes when local pods are added or removed.
    pub fn pods_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pods_changed.subscribe()
    }

    /// The local pods as the policy compiler sees them.
    pub fn policy_pods(&self) -> Vec<weft_plan::policy::LocalPod> {
        lock(&self.desired)
            .pods
            .values()
            .map(|p| weft_plan::policy::LocalPod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ofport: p.ofport,
                ips: p.ips.clone(),
            })
            .collect()
    }

    /// Removes the pod on `ofport` from the desired set and deletes its flows (every round).
    pub async fn remove_pod(&self, ofport: u32) -> Result<(), FlowError> {
        lock(&self.desired).pods.remove(&ofport);
        let result = self
            .send("remove_pod", &[delete_pod(ofport)], || {
                format!("deleting flows of the pod on ofport {ofport}")
            })
            .await;
        self.pods_changed.send_modify(|n| *n += 1);
        result
    }

    /// Compares the pod's installed flows with the desired ones; each difference is one line.
    pub async fn check_pod(&self, pod: &LocalPod) -> Result<Vec<String>, FlowError> {
        let node = self.node();
        let want: BTreeSet<String> = pod_flows(&node, pod).iter().map(Flow::to_string).collect();
        let filter = CookieFilter::pod(pod.ofport);
        let request = FlowStatsRequest {
            cookie: filter.cookie,
            cookie_mask: filter.mask,
            ..FlowStatsRequest::default()
        };
        let have: BTreeSet<String> = self
            .client
            .dump_flows(&request)
            .await
            .map_err(|source| FlowError::OpenFlow {
                what: format!("reading flows of pod {}", pod.key()),
                source,
            })?
            .iter()
            .map(|e| e.flow.to_string())
            .collect();
        let mut found: Vec<String> = want
            .difference(&have)
            .map(|f| format!("flow missing: {f}"))
            .collect();
        found.extend(
            have.difference(&want)
                .map(|f| format!("unexpected flow: {f}")),
        );
        Ok(found)
    }

    /// Sets which infrastructure ports the pipeline serves (before [`FlowSet::install_all`]).
    pub fn set_infrastructure(&self, infra: Infrastructure) {
        lock(&self.desired).infra = infra;
    }

    /// Puts `peers` into the desired set without installing anything (before
    /// [`FlowSet::install_all`], so the first bundle has them). Peers that cannot be routed are
    /// returned with the reason.
    pub fn preset_peers(&self, peers: Vec<PeerRoute>) -> Vec<(String, PipelineError)> {
        let mut desired = lock(&self.desired);
        let mut rejected = Vec::new();
        for peer in peers {
            let id = desired.next_peer_id;
            let node = PeerNode {
                name: peer.name.clone(),
                id,
                pod_cidrs: peer.pod_cidrs,
                transport_ip: peer.transport_ip,
            };
            match node.validate(&desired.node) {
                Ok(()) => {
                    desired.next_peer_id += 1;
                    let uplink_mac = peer.uplink_mac;
                    desired
                        .peers
                        .insert(peer.name, DesiredPeer { node, uplink_mac });
                }
                Err(error) => rejected.push((peer.name, error)),
            }
        }
        rejected
    }

    /// The peers in the desired set.
    pub fn peers(&self) -> Vec<PeerNode> {
        lock(&self.desired)
            .peers
            .values()
            .map(|p| p.node.clone())
            .collect()
    }

    /// Adds or updates one peer: its old flows (if any) are deleted and the new ones added in
    /// ONE bundle. Returns `false` when the peer was already installed as given. On error the
    /// desired set keeps the previous state of the peer.
    pub async fn upsert_peer(&self, peer: PeerRoute) -> Result<bool, FlowError> {
        let (mods, previous) = {
            let mut desired = lock(&self.desired);
            let previous = desired.peers.get(&peer.name).cloned();
            if previous.as_ref().is_some_and(|p| {
                p.node.pod_cidrs == peer.pod_cidrs
                    && p.node.transport_ip == peer.transport_ip
                    && p.uplink_mac == peer.uplink_mac
            }) {
                return Ok(false);
            }
            let id = match &previous {
                Some(p) => p.node.id,
                None => {
                    desired.next_peer_id += 1;
                    desired.next_peer_id - 1
                }
            };
            let node = PeerNode {
                name: peer.name.clone(),
                id,
                pod_cidrs: peer.pod_cidrs.clone(),
                transport_ip: peer.transport_ip,
            };
            node.validate(&desired.node)?;
            let entry = DesiredPeer {
                node,
                uplink_mac: peer.uplink_mac,
            };
            let mut mods = vec![delete_peer(id)];
            mods.extend(add_all(desired.peer_flows(&entry)));
            desired.peers.insert(peer.name.clone(), entry);
            (mods, previous)
        };
        let result = self
            .send("upsert_peer", &mods, || {
                format!("installing flows of peer node {}", peer.name)
            })
            .await;
        if result.is_err() {
            let mut desired = lock(&self.desired);
            match previous {
                Some(p) => desired.peers.insert(peer.name.clone(), p),
                None => desired.peers.remove(&peer.name),
            };
        }
        result.map(|()| true)
    }

    /// Removes one peer and deletes its flows (one flow-mod); `false` if it was not there.
    pub async fn remove_peer(&self, name: &str) -> Result<bool, FlowError> {
        let Some(peer) = lock(&self.desired).peers.remove(name) else {
            return Ok(false);
        };
        self.send("remove_peer", &[delete_peer(peer.node.id)], || {
            format!("deleting flows of peer node {name}")
        })
        .await
        .map(|()| true)
    }

    /// How many pods are in the desired set.
    pub fn pod_count(&self) -> usize {
        lock(&self.desired).pods.len()
    }

    async fn send(
        &self,
        op: &'static str,
        flow_mods: &[FlowMod],
        what: impl FnOnce() -> String,
    ) -> Result<(), FlowError> {
        let started = Instant::now();
        let result = self.client.bundle(flow_mods).await;
        if let Some(observer) = self.observer.get() {
            observer.observe(op, started.elapsed(), result.is_ok());
        }
        result.map_err(|source| FlowError::OpenFlow {
            what: what(),
            source,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
