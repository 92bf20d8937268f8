//! Pod attachments: ADD, DEL, CHECK and GC against the real node (IPAM, kernel, OVSDB,
//! OpenFlow), and the rebuild of the attachment store from OVSDB after a restart.
//!
//! Guarantees:
//! - Calls for one attachment, (container ID, ifname), are serialised ([`KeyedLocks`]);
//!   different attachments run concurrently.
//! - An ADD runs within its [`Budget`] ([`super::inflight`]): it stops before the plugin's
//!   deadline, when the plugin closes its connection, when a DEL of the same attachment arrives
//!   or when the agent stops, and then rolls back like a failed ADD. Every OVSDB call it makes
//!   is bounded by the same deadline, so a request still waiting for OVSDB then is never sent;
//!   the rollback itself is bounded by [`ROLLBACK_TIMEOUT`].
//! - ADD is all-or-nothing: every step pushes its undo, and a failure runs the undos in reverse
//!   (flows, port, veth, IPs). An ADD of an attachment that already exists returns its result.
//! - DEL is idempotent: an unknown attachment, a vanished netns or veth is success. Steps run
//!   flows and port (together), then veth and IPs (together: the IPs are released only once no
//!   flow or port leads to the old pod); a failing step fails the DEL and keeps the record, so
//!   the runtime's retry finishes the job.
//! - ADD hands out IPs only once durable, and returns success only once OVS gave the port the
//!   OpenFlow port number the agent requested (its flows are installed meanwhile).
//! - The store is only ever what OVSDB says plus what this process wired, so IPs are never
//!   handed out twice across restarts: IPAM is durable, and [`PodNetwork::rebuild`] releases
//!   only allocations no OVS port accounts for, before any ADD is served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use ovs_flows::pipeline::LocalPod;
use weft_cni::error::code as spec;
use weft_cni::result::{CniResult, Dns, Interface, IpConfig, Route};
use weft_cni::rpc::CniRequest;
use weft_cni::CniError;

use super::code;
use super::inflight::{Abandon, Budget};
use super::locks::KeyedLocks;
use super::ofports::OfportAllocator;
use crate::flows::{FlowError, FlowSet};
use crate::iface::{
    host_mac, host_veth_name, legacy_host_veth_name, validate_ifname, DeleteOutcome, IfaceError,
    PodRoute, PodVethSpec, VethManager,
};
use crate::ipam::{IpamError, Owner, SharedIpam};
use crate::mtu::MtuPlan;
use crate::netns::{Netns, NetnsError};
use crate::ovsdb::{
    DatapathType, Ovs, OvsBridgeClient, OvsdbError, PortBatcher, PortKind, PortSpec,
};
use weft_plan::gateway::GatewaySpec;
use weft_plan::record::{PodRecord, KEY_CONTAINER_ID, KEY_IFNAME};

/// How long OVS may take to give a pod port its OpenFlow port.
const OFPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on the OVSDB calls of an ADD's rollback (the kernel steps are not bounded: they do not
/// wait for another process).
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pod network is configured with.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// The bridge pods attach to.
    pub bridge: String,
    /// Its datapath type (netdev: pod TX checksum offload off).
    pub datapath: DatapathType,
    /// The MTU plan: pods and host veth ends get `plan.pod`.
    pub plan: MtuPlan,
    /// The gateway (its IPs are the pods' default gateways).
    pub gateway: GatewaySpec,
    /// DNS settings put in every ADD result.
    pub dns: Dns,
    /// How long ADD waits for the new pod's NetworkPolicy to be realized
    /// (`networkPolicyPodWait`); the pod stays held (fail closed) past it.
    pub policy_wait: Duration,
}

/// The node's pod network: everything ADD/DEL/CHECK/GC act on.
pub struct PodNetwork {
    config: PodNetworkConfig,
    /// The MTU plan in force (`config.plan` at start; a live re-plan replaces it).
    plan: std::sync::RwLock<MtuPlan>,
    /// Held shared by every ADD and exclusively by a re-plan, so no ADD straddles two plans.
    plan_gate: tokio::sync::RwLock<()>,
    ovs: Ovs,
    /// Pod port changes, group-committed across concurrent calls.
    ports: PortBatcher,
    flows: FlowSet,
    veths: VethManager,
    ipam: SharedIpam,
    pods: Mutex<BTreeMap<(String, String), PodRecord>>,
    locks: KeyedLocks,
    ofports: Arc<OfportAllocator>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("bridge", &self.config.bridge)
            .field("pods", &lock(&self.pods).len())
            .finish()
    }
}

/// What [`PodNetwork::rebuild`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Attachments rebuilt from OVS ports.
    pub pods: usize,
    /// Pod ports whose external_ids could not be decoded (left alone), with the reason.
    pub unreadable: Vec<String>,
    /// Addresses released because no OVS port accounts for them.
    pub released: Vec<IpAddr>,
    /// What the start sweep removed: half-made attachments a killed agent left (a host veth no
    /// OVS port accounts for, an OVS port whose host veth is gone), one line each.
    pub swept: Vec<String>,
}

/// Why an attachment operation failed; each maps to one CNI code ([`AttachError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A CNI variable the verb needs is missing or invalid.
    #[error("invalid {variable}: {reason}")]
    InvalidEnv {
        /// The variable, e.g. `CNI_NETNS`.
        variable: &'static str,
        /// Why.
        reason: String,
    },
    /// IPAM failed.
    #[error("pod {pod}: {source}")]
    Ipam {
        /// `namespace/name`.
        pod: String,
        /// Why.
        source: IpamError,
    },
    /// The kernel side failed.
    #[error("pod {pod}: {source}")]
    Iface {
        /// `namespace/name`.
        pod: String,
        /// Why.
        source: IfaceError,
    },
    /// OVSDB failed.
    #[error("pod {pod}: port {port}: {source}")]
    Ovsdb {
        /// `namespace/name`.
        pod: String,
        /// The OVS port.
        port: String,
        /// Why.
        source: OvsdbError,
    },
    /// OVS gave the pod port another OpenFlow port number than the one requested, or none is
    /// free.
    #[error("pod {pod}: port {port}: {reason}")]
    Ofport {
        /// `namespace/name`.
        pod: String,
        /// The OVS port.
        port: String,
        /// What happened, e.g. `requested ofport 7, ovs assigned 9`.
        reason: String,
    },
    /// OpenFlow failed.
    #[error("pod {pod}: {source}")]
    Flows {
        /// `namespace/name`.
        pod: String,
        /// Why.
        source: Box<FlowError>,
    },
    /// CHECK of an attachment the agent does not know.
    #[error("no attachment of container {container_id} interface {ifname}")]
    Unknown {
        /// The container id.
        container_id: String,
        /// The interface.
        ifname: String,
    },
    /// CHECK found differences.
    #[error("pod {pod} interface {ifname}: {} mismatches", .mismatches.len())]
    Mismatches {
        /// `namespace/name`.
        pod: String,
        /// The pod interface.
        ifname: String,
        /// Every difference.
        mismatches: Vec<String>,
    },
    /// The ADD was abandoned (plugin deadline, plugin gone, a DEL, agent stopping).
    #[error("pod {pod}: add abandoned: {reason}")]
    Abandoned {
        /// `namespace/name`.
        pod: String,
        /// Why.
        reason: Abandon,
    },
    /// A failed ADD whose rollback failed too.
    #[error("{cause}; rollback failed: {}", .failures.join("; "))]
    Rollback {
        /// The original failure.
        cause: Box<AttachError>,
        /// What could not be undone.
        failures: Vec<String>,
    },
}

impl AttachError {
    /// Whether the host-side veth name was already taken in the node's namespace.
    fn is_host_name_taken(&self) -> bool {
        matches!(
            self,
            AttachError::Iface {
                source: IfaceError::HostNameTaken { .. },
                ..
            }
        )
    }

    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            AttachError::InvalidEnv { .. } => spec::INVALID_ENVIRONMENT,
            AttachError::Ipam {
                source: IpamError::Exhausted { .. },
                ..
            } => code::IPAM_EXHAUSTED,
            AttachError::Ipam { .. } => code::IPAM_FAILURE,
            AttachError::Iface { source, .. } => match source {
                IfaceError::PodNameTaken { .. } => code::INTERFACE_EXISTS,
                IfaceError::HostNameTaken { .. } => code::HOST_NAME_TAKEN,
                IfaceError::InvalidName { .. } => spec::INVALID_ENVIRONMENT,
                IfaceError::Netns(NetnsError::NotFound { .. } | NetnsError::NotNetns { .. }) => {
                    spec::INVALID_ENVIRONMENT
                }
                _ => code::INTERFACE_FAILURE,
            },
            AttachError::Ovsdb { .. } | AttachError::Ofport { .. } => code::OVSDB_FAILURE,
            AttachError::Flows { .. } => code::FLOW_FAILURE,
            AttachError::Unknown { .. } => spec::UNKNOWN_CONTAINER,
            AttachError::Mismatches { .. } => code::CHECK_FAILED,
            AttachError::Abandoned { .. } => spec::TRY_AGAIN_LATER,
            AttachError::Rollback { cause, .. } => cause.code(),
        }
    }

    /// The CNI error object: a short message and the full chain in `details`.
    pub fn to_cni(&self, verb: &str) -> CniError {
        let msg = match self {
            AttachError::InvalidEnv { variable, .. } => format!("{verb}: invalid {variable}"),
            AttachError::Ipam {
                source: IpamError::Exhausted { cidr, .. },
                ..
            } => format!("{verb}: pod cidr {cidr} is exhausted"),
            AttachError::Ipam { .. } => format!("{verb}: ipam failed"),
            AttachError::Iface {
                source: IfaceError::PodNameTaken { name, .. },
                ..
            } => format!("{verb}: interface {name} already exists in the pod netns"),
            AttachError::Iface { .. } => {
                format!("{verb}: pod interface setup failed")
            }
            AttachError::Ovsdb { port, .. } | AttachError::Ofport { port, .. } => {
                format!("{verb}: ovs port {port} failed")
            }
            AttachError::Flows { .. } => format!("{verb}: pod flows failed"),
            AttachError::Unknown { .. } => format!("{verb}: unknown attachment"),
            AttachError::Mismatches { .. } => format!("{verb}: pod network differs from its spec"),
            AttachError::Abandoned { reason, .. } => format!("{verb} abandoned: {reason}"),
            AttachError::Rollback { cause, .. } => return rollback_cni(cause, self, verb),
        };
        let details = match self {
            AttachError::Mismatches { mismatches, .. } => {
                format!("{self}: {}", mismatches.join("; "))
            }
            _ => self.to_string(),
        };
        CniError::new(self.code(), msg, details)
    }
}

fn rollback_cni(cause: &AttachError, whole: &AttachError, verb: &str) -> CniError {
    let inner = cause.to_cni(verb);
    CniError::new(inner.code, inner.msg, whole.to_string())
}

/// The attachment a request names.
#[derive(Debug, Clone)]
struct Target {
    container_id: String,
    ifname: String,
    netns: Option<String>,
    namespace: String,
    name: String,
}

impl Target {
    fn from_request(req: &CniRequest, needs_netns: bool) -> Result<Self, AttachError> {
        let missing = |variable| AttachError::InvalidEnv {
            variable,
            reason: "not set".into(),
        };
        let container_id = req
            .container_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let ifname = req.ifname.clone().ok_or_else(|| missing("CNI_IFNAME"))?;
        validate_ifname(&ifname).map_err(|e| AttachError::InvalidEnv {
            variable: "CNI_IFNAME",
            reason: e.to_string(),
        })?;
        let netns = req.netns.clone().filter(|n| !n.is_empty());
        if needs_netns && netns.is_none() {
            return Err(missing("CNI_NETNS"));
        }
        super::validate::check_attachment_fields(&container_id, netns.as_deref()).map_err(|e| {
            AttachError::InvalidEnv {
                variable: e.variable,
                reason: e.reason,
            }
        })?;
        let namespace = req.pod_namespace().unwrap_or_default().to_string();
        let name = req
            .pod_name()
            .filter(|n| !n.is_empty())
            .unwrap_or(&container_id)
            .to_string();
        Ok(Target {
            container_id,
            ifname,
            netns,
            namespace,
            name,
        })
    }

    fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn key(&self) -> (String, String) {
        (self.container_id.clone(), self.ifname.clone())
    }

    /// The lock of this attachment.
    fn lock_key(&self) -> String {
        lock_key(&self.container_id, &self.ifname)
    }

    fn abandoned(&self, reason: Abandon) -> AttachError {
        AttachError::Abandoned {
            pod: self.pod(),
            reason,
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            pod: self.pod(),
        }
    }
}

/// The interface name of a pod's primary attachment, the only one with default routes.
pub const PRIMARY_IFNAME: &str = "eth0";

/// When the parts of an ADD or DEL were done, in microseconds since its start (logged with the
/// outcome).
#[derive(Debug, Default, Clone, Copy)]
struct StepTimes {
    /// ADD: veth made; DEL: veth and IPs gone.
    veth_us: u64,
    /// ADD: OVS port row created; DEL: flows and OVS port gone.
    port_us: u64,
    /// ADD: flows installed and OVS gave the port its number.
    wired_us: u64,
}

/// Microseconds since `since`.
fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One step of an ADD to undo on failure.
#[derive(Debug)]
enum Undo {
    ReleaseIps(Owner),
    DeleteVeth { host: String, container_id: String },
    DeletePort(String),
    RemoveFlows(u32),
}

impl PodNetwork {
    /// Assembles the pod network.
    pub fn new(
        config: PodNetworkConfig,
        ovs: Ovs,
        flows: FlowSet,
        veths: VethManager,
        ipam: SharedIpam,
    ) -> Self {
        PodNetwork {
            plan: std::sync::RwLock::new(config.plan),
            plan_gate: tokio::sync::RwLock::new(()),
            config,
            ports: PortBatcher::new(ovs.clone()),
            ovs,
            flows,
            veths,
            ipam,
            pods: Mutex::new(BTreeMap::new()),
            locks: KeyedLocks::default(),
            ofports: Arc::default(),
        }
    }

    /// The MTU plan in force.
    pub fn plan(&self) -> MtuPlan {
        *self.plan.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `plan` in force for every later ADD and CHECK, once the ADDs under way have
    /// finished (later ones wait for the switch). Pods already attached keep their MTU; the
    /// caller surveys (and fixes) them.
    pub async fn replan(&self, plan: MtuPlan) {
        let _exclusive = self.plan_gate.write().await;
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// Every attachment with its port's `mtu_request` from the OVSDB cache (the MTU the pod
    /// was attached or last fixed with; `None` while the port is not in the cache).
    pub fn records_with_port_mtu(&self) -> Vec<(PodRecord, Option<u32>)> {
        let records = self.records();
        self.ovs.client().read_cache(|cache| {
            records
                .into_iter()
                .map(|record| {
                    let mtu = cache
                        .by_name("Interface", &record.host_ifname)
                        .and_then(|(_, iface)| iface.get_i64("mtu_request"))
                        .and_then(|m| u32::try_from(m).ok());
                    (record, mtu)
                })
                .collect()
        })
    }

    /// The flow set pods are added to.
    pub fn flows(&self) -> &FlowSet {
        &self.flows
    }

    /// Every attachment, ordered by (container id, ifname).
    pub fn records(&self) -> Vec<PodRecord> {
        lock(&self.pods).values().cloned().collect()
    }

    /// The local pods to install flows for (attachments with an OpenFlow port).
    pub fn local_pods(&self) -> Vec<LocalPod> {
        lock(&self.pods).values().filter_map(local_pod).collect()
    }

    /// Rebuilds the attachment store from the pod ports on the bridge (OVSDB cache) and releases
    /// every IP allocation no port accounts for. Call before serving.
    pub async fn rebuild(&self) -> Result<RebuildReport, AttachError> {
        let mut report = RebuildReport::default();
        let mut records = Vec::new();
        for entry in self.pod_ports() {
            match entry {
                Ok(record) => records.push(record),
                Err(e) => report.unreadable.push(e),
            }
        }
        let records = self.sweep(records, &mut report).await?;
        {
            let mut pods = lock(&self.pods);
            pods.clear();
            for record in records {
                pods.insert((record.container_id.clone(), record.ifname.clone()), record);
            }
            report.pods = pods.len();
        }
        self.ofports.resume(&self.ofports_in_use());
        let keep: Vec<Owner> = self.records().iter().map(PodRecord::owner).collect();
        report.released = ipam_result("agent", self.ipam.retain(&keep).await)?;
        Ok(report)
    }

    /// The start sweep (before any ADD is served, so nothing is in progress): an attachment
    /// is complete only with both its host veth and its OVS port. A pod port whose host veth is
    /// gone (an ADD killed after the port, or a pod whose netns vanished while the agent was
    /// down) loses its port; a host veth no pod port accounts for (an ADD killed between the
    /// veth and the port: a pod eth0 without addresses) is deleted, the pod end with it. The
    /// IPs of both are then released by [`PodNetwork::rebuild`]'s retain. A runtime's later DEL
    /// of either is idempotent. Returns the records kept.
    async fn sweep(
        &self,
        records: Vec<PodRecord>,
        report: &mut RebuildReport,
    ) -> Result<Vec<PodRecord>, AttachError> {
        let iface_err = |source| AttachError::Iface {
            pod: "agent".into(),
            source,
        };
        let veths = self.veths.host_veths().await.map_err(iface_err)?;
        let present: BTreeSet<&str> = veths.iter().map(|l| l.name.as_str()).collect();
        let mut kept = Vec::new();
        for record in records {
            if present.contains(record.host_ifname.as_str()) {
                kept.push(record);
                continue;
            }
            let deadline = tokio::time::Instant::now() + ROLLBACK_TIMEOUT;
            let deleted = crate::ovsdb::client::with_deadline(
                deadline,
                self.ports.delete_port(&record.host_ifname),
            )
            .await;
            match deleted {
                Ok(_) => {
                    let what = format!(
                        "ovs port {} of container {} interface {} (pod {}): its host veth is gone",
                        record.host_ifname,
                        record.container_id,
                        record.ifname,
                        record.key()
                    );
                    tracing::warn!(swept = %what, "start sweep");
                    report.swept.push(what);
                }
                Err(error) => {
                    // Kept (with its IPs) until a DEL or the next start removes it.
                    tracing::warn!(port = %record.host_ifname, %error, "start sweep cannot remove the port of a vanished veth");
                    kept.push(record);
                }
            }
        }
        let accounted: BTreeSet<&str> = kept.iter().map(|r| r.host_ifname.as_str()).collect();
        for link in veths
            .iter()
            .filter(|l| !accounted.contains(l.name.as_str()))
        {
            let owner = link.alias.clone().unwrap_or_default();
            match self.veths.delete(&link.name, "").await {
                Ok(_) => {
                    let what = format!(
                        "host veth {} of container {}: no ovs port accounts for it",
                        link.name,
                        if owner.is_empty() { "?" } else { &owner }
                    );
                    tracing::warn!(swept = %what, "start sweep");
                    report.swept.push(what);
                }
                Err(error) => {
                    tracing::warn!(interface = %link.name, %error, "start sweep cannot delete a half-made host veth")
                }
            }
        }
        Ok(kept)
    }

    /// Every OpenFlow port number OVS holds: each interface's `ofport` and `ofport_request`.
    fn ofports_in_use(&self) -> BTreeSet<u32> {
        self.ovs.client().read_cache(|cache| {
            cache
                .table("Interface")
                .flat_map(|(_, iface)| [iface.get_i64("ofport"), iface.get_i64("ofport_request")])
                .flatten()
                .filter_map(|p| u32::try_from(p).ok())
                .collect()
        })
    }

    /// Decodes every Weft pod port on the bridge from the OVSDB cache.
    fn pod_ports(&self) -> Vec<Result<PodRecord, String>> {
        let bridge = self.config.bridge.clone();
        self.ovs.client().read_cache(|cache| {
            let Some((_, bridge_row)) = cache.by_name("Bridge", &bridge) else {
                return Vec::new();
            };
            bridge_row
                .get_uuids("ports")
                .iter()
                .filter_map(|uuid| cache.row("Port", uuid))
                .filter_map(|port| {
                    let name = port.get_str("name")?.to_string();
                    let ids = port.get_map("external_ids");
                    if !PodRecord::is_pod_port(&ids) {
                        return None;
                    }
                    let ofport = cache
                        .by_name("Interface", &name)
                        .and_then(|(_, iface)| iface.get_i64("ofport"));
                    Some(
                        PodRecord::from_external_ids(&name, &ids, ofport)
                            .map_err(|e| e.to_string()),
                    )
                })
                .collect()
        })
    }

    /// CNI ADD, within `budget`.
    pub async fn add(&self, req: &CniRequest, budget: &Budget) -> Result<CniResult, CniError> {
        let target = Target::from_request(req, true).map_err(|e| e.to_cni("add"))?;
        let abandoned = |reason| {
            tracing::warn!(pod = %target.pod(), container = %target.container_id, ifname = %target.ifname, %reason, "add abandoned before it started");
            target.abandoned(reason).to_cni("add")
        };
        let lock_key = target.lock_key();
        let _guard = tokio::select! {
            guard = self.locks.lock(&lock_key) => guard,
            reason = budget.abandoned() => return Err(abandoned(reason)),
        };
        let _plan = tokio::select! {
            plan = self.plan_gate.read() => plan,
            reason = budget.abandoned() => return Err(abandoned(reason)),
        };
        budget.check().map_err(abandoned)?;
        let known = lock(&self.pods).get(&target.key()).cloned();
        if let Some(existing) = known {
            if target.netns.as_deref() == Some(existing.netns.as_str()) {
                tracing::info!(pod = %existing.key(), container = %existing.container_id, "add of an existing attachment: returning its result");
                return Ok(self.result(&existing));
            }
            // The same (container ID, ifname) in another netns: the runtime made a new
            // sandbox under the old ID without a DEL in between. The old attachment's result
            // would describe an interface the new netns does not have: replace it.
            tracing::warn!(
                pod = %existing.key(), container = %existing.container_id, ifname = %existing.ifname,
                old_netns = %existing.netns, new_netns = ?target.netns,
                "add of a known attachment in another netns: replacing the old one"
            );
            let mut steps = StepTimes::default();
            self.teardown(&existing, &mut steps)
                .await
                .map_err(|e| e.to_cni("add"))?;
            lock(&self.pods).remove(&target.key());
        }
        let started = Instant::now();
        let mut undo = Vec::new();
        let mut steps = StepTimes::default();
        let mut outcome = self
            .bounded(
                budget,
                self.add_steps(&target, &mut undo, &mut steps, budget),
            )
            .await;
        let mut rollback_failures = Vec::new();
        if matches!(&outcome, Err(e) if e.is_host_name_taken()) {
            // An ADD of this sandbox interrupted by an agent crash can leave its host veth (and
            // its port) behind: the runtime's retry of that ADD clears what carries this
            // container id, exactly as a DEL would, and tries once more. A veth of another
            // sandbox is left alone by that cleanup, so the retry then fails as before.
            rollback_failures = self.run_undo(std::mem::take(&mut undo)).await;
            if rollback_failures.is_empty() && self.teardown_unknown(&target).await.is_ok() {
                tracing::info!(pod = %target.pod(), container = %target.container_id, "host veth name taken: removed what this sandbox left (an interrupted add), retrying once");
                outcome = self
                    .bounded(
                        budget,
                        self.add_steps(&target, &mut undo, &mut steps, budget),
                    )
                    .await;
            }
        }
        // Done, but nobody waits for it any more (or a DEL came): undone, never kept. A failure
        // once abandoned (e.g. OVSDB unreachable until the deadline) is reported as abandoned:
        // code 11, try again.
        if let Err(reason) = budget.check() {
            if let Err(error) = &outcome {
                tracing::info!(pod = %target.pod(), container = %target.container_id, %error, %reason, "add failed once abandoned");
            }
            outcome = Err(target.abandoned(reason));
        }
        match outcome {
            Ok(record) => {
                tracing::info!(
                    pod = %record.key(), container = %record.container_id, netns = %record.netns,
                    interface = %record.host_ifname, ofport = ?record.ofport, ips = ?record.ips,
                    elapsed_ms = started.elapsed().as_millis() as u64, veth_us = steps.veth_us,
                    port_us = steps.port_us, wired_us = steps.wired_us, "pod attached"
                );
                let result = self.result(&record);
                let ofport = record.ofport;
                let key = record.key();
                lock(&self.pods).insert(target.key(), record);
                // The pod is held by policy (fail closed) until its Pod object is seen and its
                // policy installed: answer once it is, or after the bounded wait.
                if let Some(ofport) = ofport {
                    let wait = self.config.policy_wait;
                    if !self.flows.wait_policy_realized(ofport, wait).await {
                        tracing::warn!(
                            pod = %key, ofport, ?wait,
                            "pod object late: networkpolicy not realized yet, the pod stays isolated until it is"
                        );
                    }
                }
                Ok(result)
            }
            Err(cause) => {
                let mut failures = rollback_failures;
                failures.extend(self.run_undo(undo).await);
                let error = if failures.is_empty() {
                    cause
                } else {
                    AttachError::Rollback {
                        cause: Box::new(cause),
                        failures,
                    }
                };
                tracing::warn!(pod = %target.pod(), container = %target.container_id, ifname = %target.ifname, error = %error, "add failed, rolled back");
                Err(error.to_cni("add"))
            }
        }
    }

    /// Runs `fut` with its OVSDB calls bounded by the budget's deadline.
    async fn bounded<F: std::future::Future>(&self, budget: &Budget, fut: F) -> F::Output {
        match budget.deadline() {
            Some(deadline) => crate::ovsdb::client::with_deadline(deadline, fut).await,
            None => fut.await,
        }
    }

    async fn add_steps(
        &self,
        target: &Target,
        undo: &mut Vec<Undo>,
        steps: &mut StepTimes,
        budget: &Budget,
    ) -> Result<PodRecord, AttachError> {
        let started = Instant::now();
        let check = || budget.check().map_err(|reason| target.abandoned(reason));
        let pod = target.pod();
        let netns_path = target.netns.clone().unwrap_or_default();
        let pod_ns = Netns::open(&netns_path).map_err(|e| AttachError::InvalidEnv {
            variable: "CNI_NETNS",
            reason: e.to_string(),
        })?;

        // The addresses are decided now and saved by the IPAM's group commit while the veth is
        // created; they are handed out (written onto the OVS port, returned) only once durable.
        let owner = target.owner();
        let reservation = self
            .ipam
            .reserve(&owner)
            .map_err(|source| AttachError::Ipam {
                pod: pod.clone(),
                source,
            })?;
        undo.push(Undo::ReleaseIps(owner));
        let ips = reservation.ips().to_vec();

        let mut veth = PodVethSpec::new(
            &target.container_id,
            &target.name,
            &target.ifname,
            self.plan().pod,
        );
        veth.addresses = ips.clone();
        veth.routes = self.routes_for(&target.ifname, &ips);
        veth.disable_tx_checksum = self.config.datapath == DatapathType::Netdev;
        let iface_err = |source| AttachError::Iface {
            pod: pod.clone(),
            source,
        };
        let (durable, created) =
            tokio::join!(reservation.durable(), self.veths.create(&pod_ns, &veth));
        if created.is_ok() {
            undo.push(Undo::DeleteVeth {
                host: veth.host_ifname.clone(),
                container_id: target.container_id.clone(),
            });
        }
        let ips = ipam_result(&pod, durable)?;
        created.map_err(iface_err)?;
        steps.veth_us = micros(started);
        check()?;

        let mut record = PodRecord {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            container_id: target.container_id.clone(),
            ifname: target.ifname.clone(),
            host_ifname: veth.host_ifname.clone(),
            netns: netns_path,
            ips,
            mac: veth.pod_mac,
            ofport: None,
        };
        let ovs_err = |source| AttachError::Ovsdb {
            pod: pod.clone(),
            port: record.host_ifname.clone(),
            source,
        };
        // The agent picks the OpenFlow port number, so the pod's flows go in while
        // ovs-vswitchd adds the port; OVS must then confirm it gave exactly that number.
        let lease =
            self.ofports
                .lease(&self.ofports_in_use())
                .ok_or_else(|| AttachError::Ofport {
                    pod: pod.clone(),
                    port: record.host_ifname.clone(),
                    reason: "no free pod openflow port number".into(),
                })?;
        let ofport = lease.ofport();
        let mut port = PortSpec::new(&record.host_ifname, PortKind::System)
            .with_mtu_request(self.plan().pod)
            .with_ofport_request(ofport);
        // A port left behind under this name (its veth vanished with a deleted netns) still
        // shows its old number until ovs-vswitchd applies the request.
        let renumbered = self
            .ovs
            .client()
            .read_cache(|cache| cache.by_name("Interface", &record.host_ifname).is_some());
        port.external_ids = record.external_ids();
        // Abandoned while OVSDB has not answered: the creation stops here. One still queued is
        // never sent (the batcher drops a job whose caller left, the client a call still
        // waiting for a connection), and a port created after its caller left is deleted
        // again by the batcher ([`crate::ovsdb::PortBatcher`]), so it is not this rollback's.
        // A creation that completed, or failed after it may have been sent, is undone here;
        // one never sent (NotConnected at the deadline) needs nothing.
        let ensured = tokio::select! {
            ensured = self.ports.ensure_port(&self.config.bridge, &port) => Some(ensured),
            reason = budget.abandoned() => {
                tracing::info!(pod = %pod, %reason, "add abandoned while its port was being created");
                None
            }
        };
        let ensured = match ensured {
            Some(ensured) => {
                if !matches!(ensured, Err(OvsdbError::NotConnected { .. })) {
                    undo.push(Undo::DeletePort(record.host_ifname.clone()));
                }
                ensured.map_err(ovs_err)
            }
            None => Err(target.abandoned(budget.check().err().unwrap_or(Abandon::Deadline))),
        };
        ensured?;
        steps.port_us = micros(started);
        check()?;
        record.ofport = Some(ofport);
        let local = local_pod(&record).ok_or_else(|| AttachError::Ovsdb {
            pod: pod.clone(),
            port: record.host_ifname.clone(),
            source: OvsdbError::invalid("ofport", ofport.to_string()),
        })?;
        let wait_timeout = budget.deadline().map_or(OFPORT_TIMEOUT, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .min(OFPORT_TIMEOUT)
        });
        let (installed, assigned) = tokio::join!(self.flows.add_pod(local), async {
            tokio::select! {
                assigned = self.wait_for_ofport(&record.host_ifname, ofport, renumbered, wait_timeout) => {
                    assigned.map_err(ovs_err)
                }
                reason = budget.abandoned() => Err(target.abandoned(reason)),
            }
        });
        if installed.is_ok() {
            undo.push(Undo::RemoveFlows(ofport));
        }
        steps.wired_us = micros(started);
        let assigned = assigned?;
        if assigned != ofport {
            return Err(AttachError::Ofport {
                pod: pod.clone(),
                port: record.host_ifname.clone(),
                reason: format!("requested ofport {ofport}, ovs assigned {assigned}"),
            });
        }
        installed.map_err(|source| AttachError::Flows {
            pod: pod.clone(),
            source: Box::new(source),
        })?;
        drop(lease);
        Ok(record)
    }

    /// Waits until OVS gives `interface` an OpenFlow port and returns it. A new interface gets
    /// its number once, so the first one is the answer; an existing one (`renumbered`) keeps
    /// its old number until OVS applies the request, so then this waits for `requested` (or the
    /// timeout, returning whatever number it has).
    async fn wait_for_ofport(
        &self,
        interface: &str,
        requested: u32,
        renumbered: bool,
        timeout: Duration,
    ) -> Result<u32, OvsdbError> {
        let assigned = self.ovs.wait_for_ofport(interface, timeout).await?;
        if !renumbered || assigned == requested {
            return Ok(assigned);
        }
        let client = self.ovs.client();
        let mut generation = client.watch_generation();
        let current = || {
            client.read_cache(|cache| {
                cache
                    .by_name("Interface", interface)
                    .and_then(|(_, i)| i.get_i64("ofport"))
                    .and_then(|p| u32::try_from(p).ok())
            })
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            generation.borrow_and_update();
            match current() {
                Some(port) if port == requested => return Ok(port),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(OvsdbError::Closed),
                Err(_) => return Ok(current().unwrap_or(assigned)),
            }
        }
    }

    /// Runs undo steps in reverse order, OVSDB calls bounded by [`ROLLBACK_TIMEOUT`]; returns
    /// what failed.
    async fn run_undo(&self, undo: Vec<Undo>) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + ROLLBACK_TIMEOUT;
        crate::ovsdb::client::with_deadline(deadline, self.run_undo_steps(undo)).await
    }

    async fn run_undo_steps(&self, undo: Vec<Undo>) -> Vec<String> {
        let mut failures = Vec::new();
        for step in undo.into_iter().rev() {
            let outcome = match &step {
                Undo::RemoveFlows(ofport) => self
                    .flows
                    .remove_pod(*ofport)
                    .await
                    .map_err(|e| e.to_string()),
                Undo::DeletePort(name) => self
                    .ports
                    .delete_port(name)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Undo::DeleteVeth { host, container_id } => self
                    .veths
                    .delete(host, container_id)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Undo::ReleaseIps(owner) => self
                    .ipam
                    .release(owner)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = outcome {
                failures.push(format!("{step:?}: {e}"));
            }
        }
        failures
    }

    /// CNI DEL.
    pub async fn del(&self, req: &CniRequest) -> Result<(), CniError> {
        let target = Target::from_request(req, false).map_err(|e| e.to_cni("del"))?;
        let _guard = self.locks.lock(&target.lock_key()).await;
        let started = Instant::now();
        let record = lock(&self.pods).get(&target.key()).cloned();
        let mut steps = StepTimes::default();
        let outcome = match &record {
            Some(record) => self.teardown(record, &mut steps).await,
            None => self.teardown_unknown(&target).await,
        };
        match outcome {
            Ok(()) => {
                lock(&self.pods).remove(&target.key());
                tracing::info!(
                    pod = %target.pod(), container = %target.container_id, known = record.is_some(),
                    elapsed_ms = started.elapsed().as_millis() as u64, port_us = steps.port_us,
                    veth_us = steps.veth_us, "pod detached"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(pod = %target.pod(), container = %target.container_id, error = %e, "del failed");
                Err(e.to_cni("del"))
            }
        }
    }

    /// Removes an attachment: its flows and its OVS port together, then its veth and its IPs
    /// together. The IPs go only after the flows and the port, so no packet reaches the old
    /// pod once its address can be handed out again; the veth is by then cut off from the
    /// bridge, so it may still be going while the address is released.
    async fn teardown(&self, record: &PodRecord, steps: &mut StepTimes) -> Result<(), AttachError> {
        let started = Instant::now();
        let pod = record.key();
        let remove_flows = async {
            match record.ofport {
                Some(ofport) => self.flows.remove_pod(ofport).await,
                None => Ok(()),
            }
        };
        let (flows, port) = tokio::join!(remove_flows, self.ports.delete_port(&record.host_ifname));
        flows.map_err(|source| AttachError::Flows {
            pod: pod.clone(),
            source: Box::new(source),
        })?;
        port.map_err(|source| AttachError::Ovsdb {
            pod: pod.clone(),
            port: record.host_ifname.clone(),
            source,
        })?;
        steps.port_us = micros(started);
        let owner = record.owner();
        let (veth, ips) = tokio::join!(
            self.delete_veth(&pod, &record.host_ifname, &record.container_id),
            self.ipam.release(&owner)
        );
        steps.veth_us = micros(started);
        veth?;
        ipam_result(&pod, ips)?;
        Ok(())
    }

    /// DEL of an attachment not in the store (never added, added by a crashed agent, or DEL
    /// repeated): removes whatever still carries its container id.
    async fn teardown_unknown(&self, target: &Target) -> Result<(), AttachError> {
        let pod = target.pod();
        let ports: Vec<(String, Option<i64>)> = self.ovs.client().read_cache(|cache| {
            cache
                .table("Port")
                .filter(|(_, port)| {
                    let ids = port.get_map("external_ids");
                    ids.get(KEY_CONTAINER_ID) == Some(&target.container_id)
                        && ids.get(KEY_IFNAME) == Some(&target.ifname)
                })
                .filter_map(|(_, port)| port.get_str("name").map(str::to_string))
                .map(|name| {
                    let ofport = cache
                        .by_name("Interface", &name)
                        .and_then(|(_, i)| i.get_i64("ofport"));
                    (name, ofport)
                })
                .collect()
        });
        for (name, ofport) in ports {
            if let Some(ofport) = ofport
                .filter(|p| *p > 0)
                .and_then(|p| u32::try_from(p).ok())
            {
                self.flows
                    .remove_pod(ofport)
                    .await
                    .map_err(|source| AttachError::Flows {
                        pod: pod.clone(),
                        source: Box::new(source),
                    })?;
            }
            self.ports
                .delete_port(&name)
                .await
                .map_err(|source| AttachError::Ovsdb {
                    pod: pod.clone(),
                    port: name.clone(),
                    source,
                })?;
        }
        // Its veth by name; after an upgrade also by the pod-keyed name of earlier releases
        // (removed only if its alias names this container ID, so never another sandbox's).
        let host = host_veth_name(&target.name, &target.container_id, &target.ifname);
        let legacy = legacy_host_veth_name(&target.namespace, &target.name);
        let owner = target.owner();
        let (veth, legacy_veth, ips) = tokio::join!(
            self.delete_veth(&pod, &host, &target.container_id),
            async {
                if legacy == host {
                    return Ok(());
                }
                self.delete_veth(&pod, &legacy, &target.container_id).await
            },
            self.ipam.release(&owner)
        );
        veth?;
        legacy_veth?;
        ipam_result(&pod, ips)?;
        Ok(())
    }

    async fn delete_veth(
        &self,
        pod: &str,
        host: &str,
        container_id: &str,
    ) -> Result<(), AttachError> {
        match self.veths.delete(host, container_id).await {
            Ok(DeleteOutcome::OwnedByOtherContainer { owner }) => {
                tracing::info!(%pod, interface = %host, %owner, "host veth belongs to a newer sandbox; left alone");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(source) => Err(AttachError::Iface {
                pod: pod.to_string(),
                source,
            }),
        }
    }

    /// CNI CHECK: interface, MAC, addresses, routes, MTU, OVS port and flows; every mismatch is
    /// reported.
    pub async fn check(&self, req: &CniRequest) -> Result<(), CniError> {
        let target = Target::from_request(req, true).map_err(|e| e.to_cni("check"))?;
        let _guard = self.locks.lock(&target.lock_key()).await;
        let result = self.check_steps(&target, req).await;
        result.map_err(|e| e.to_cni("check"))
    }

    async fn check_steps(&self, target: &Target, req: &CniRequest) -> Result<(), AttachError> {
        let record = lock(&self.pods)
            .get(&target.key())
            .cloned()
            .ok_or_else(|| AttachError::Unknown {
                container_id: target.container_id.clone(),
                ifname: target.ifname.clone(),
            })?;
        let pod = record.key();
        let mut found = Vec::new();
        let netns = target.netns.clone().unwrap_or_default();
        if netns != record.netns {
            found.push(format!(
                "netns is {netns}, the attachment was made in {}",
                record.netns
            ));
        }
        let pod_ns = Netns::open(&netns).map_err(|e| AttachError::InvalidEnv {
            variable: "CNI_NETNS",
            reason: e.to_string(),
        })?;
        let spec = self.veth_spec(&record);
        let mismatches =
            self.veths
                .check(&pod_ns, &spec)
                .await
                .map_err(|source| AttachError::Iface {
                    pod: pod.clone(),
                    source,
                })?;
        found.extend(mismatches.iter().map(ToString::to_string));

        if let Some(prev) = &req.prev_result {
            for ip in &prev.ips {
                if !record.ips.contains(&ip.address) {
                    found.push(format!(
                        "prevResult address {} is not the pod's",
                        ip.address
                    ));
                }
            }
        }

        let want_ids = record.external_ids();
        let port_state = self.ovs.client().read_cache(|cache| {
            let port = cache
                .by_name("Port", &record.host_ifname)
                .map(|(_, p)| p.get_map("external_ids"));
            let iface = cache
                .by_name("Interface", &record.host_ifname)
                .map(|(_, i)| (i.get_i64("ofport"), i.get_i64("mtu_request")));
            (port, iface)
        });
        match port_state {
            (None, _) => found.push(format!(
                "ovs port {} is not on bridge {}",
                record.host_ifname, self.config.bridge
            )),
            (Some(ids), iface) => {
                for (key, value) in &want_ids {
                    if ids.get(key) != Some(value) {
                        found.push(format!(
                            "ovs port {} has external_ids {key}={:?}, expected {value:?}",
                            record.host_ifname,
                            ids.get(key).map(String::as_str).unwrap_or("")
                        ));
                    }
                }
                let (ofport, mtu_request) = iface.unwrap_or((None, None));
                let want_ofport = record.ofport.map(i64::from);
                if ofport != want_ofport || want_ofport.is_none() {
                    found.push(format!(
                        "ovs interface {} has ofport {ofport:?}, expected {want_ofport:?}",
                        record.host_ifname
                    ));
                }
                let want_mtu = i64::from(self.plan().pod);
                if mtu_request != Some(want_mtu) {
                    found.push(format!(
                        "ovs interface {} has mtu_request {mtu_request:?}, expected {want_mtu}",
                        record.host_ifname
                    ));
                }
            }
        }

        if let Some(local) = local_pod(&record) {
            let flows =
                self.flows
                    .check_pod(&local)
                    .await
                    .map_err(|source| AttachError::Flows {
                        pod: pod.clone(),
                        source: Box::new(source),
                    })?;
            found.extend(flows);
        }

        if found.is_empty() {
            Ok(())
        } else {
            Err(AttachError::Mismatches {
                pod,
                ifname: record.ifname,
                mismatches: found,
            })
        }
    }

    /// CNI GC: removes every attachment and IP allocation not in `cni.dev/valid-attachments`.
    /// Without that list nothing is removed.
    pub async fn gc(&self, req: &CniRequest) -> Result<(), CniError> {
        let Some(valid) = &req.valid_attachments else {
            tracing::info!("gc without cni.dev/valid-attachments: nothing removed");
            return Ok(());
        };
        let valid: BTreeSet<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let stale: Vec<PodRecord> = self
            .records()
            .into_iter()
            .filter(|r| !valid.contains(&(r.container_id.clone(), r.ifname.clone())))
            .collect();
        let mut failures = Vec::new();
        for record in &stale {
            let _guard = self
                .locks
                .lock(&lock_key(&record.container_id, &record.ifname))
                .await;
            let key = (record.container_id.clone(), record.ifname.clone());
            // Re-read under the lock: a DEL may have finished meanwhile.
            let Some(current) = lock(&self.pods).get(&key).cloned() else {
                continue;
            };
            match self.teardown(&current, &mut StepTimes::default()).await {
                Ok(()) => {
                    lock(&self.pods).remove(&key);
                    tracing::info!(pod = %current.key(), container = %current.container_id, "gc removed attachment");
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        // Allocations of neither a valid nor a known attachment (a crashed ADD). Each is
        // released under its container's lock, so an ADD in flight keeps its addresses.
        let owners: Vec<Owner> = self.ipam.owners().into_iter().collect();
        for owner in owners {
            let key = (owner.container_id.clone(), owner.ifname.clone());
            if valid.contains(&key) {
                continue;
            }
            let _guard = self
                .locks
                .lock(&lock_key(&owner.container_id, &owner.ifname))
                .await;
            if lock(&self.pods).contains_key(&key) {
                continue;
            }
            match ipam_result("gc", self.ipam.release(&owner).await) {
                Ok(released) if !released.is_empty() => {
                    tracing::info!(container = %owner.container_id, ?released, "gc released addresses");
                }
                Ok(_) => {}
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::INTERFACE_FAILURE,
                "gc: some attachments could not be removed",
                failures.join("; "),
            ))
        }
    }

    /// The veth a record should have (for CHECK).
    fn veth_spec(&self, record: &PodRecord) -> PodVethSpec {
        let mut spec = PodVethSpec::new(
            &record.container_id,
            &record.name,
            &record.ifname,
            self.plan().pod,
        );
        spec.host_ifname = record.host_ifname.clone();
        spec.pod_mac = record.mac;
        spec.addresses = record.ips.clone();
        spec.routes = self.routes(record);
        spec.disable_tx_checksum = self.config.datapath == DatapathType::Netdev;
        spec
    }

    fn routes(&self, record: &PodRecord) -> Vec<PodRoute> {
        self.routes_for(&record.ifname, &record.ips)
    }

    /// The routes of an attachment: a default route per family of its addresses via the
    /// gateway, on the pod's primary interface ([`PRIMARY_IFNAME`], what kubelet's runtimes
    /// name the cluster network's interface) only. A further interface of the same network
    /// (Multus `net1`, podman's `eth1`) gets its address and on-link subnet but no default route,
    /// which the primary keeps: two default routes of one family collide (EEXIST) or, with
    /// other metrics, would still send every reply out of the primary.
    fn routes_for(&self, ifname: &str, ips: &[IpNet]) -> Vec<PodRoute> {
        if ifname != PRIMARY_IFNAME {
            return Vec::new();
        }
        self.config
            .gateway
            .ips()
            .into_iter()
            .filter(|gw| ips.iter().any(|ip| ip.addr().is_ipv4() == gw.is_ipv4()))
            .map(PodRoute::default_via)
            .collect()
    }

    /// The ADD result of a record: host end (index 0), pod end (index 1), its IPs with their
    /// gateways, default routes, DNS.
    fn result(&self, record: &PodRecord) -> CniResult {
        let mtu = Some(self.plan().pod);
        let gateway_of = |ip: &IpNet| {
            self.config
                .gateway
                .addresses
                .iter()
                .find(|gw| gw.contains(&ip.addr()))
                .map(IpNet::addr)
        };
        CniResult {
            interfaces: vec![
                Interface {
                    name: record.host_ifname.clone(),
                    mac: Some(host_mac(&record.container_id, &record.ifname).to_string()),
                    mtu,
                    ..Interface::default()
                },
                Interface {
                    name: record.ifname.clone(),
                    mac: Some(record.mac.to_string()),
                    mtu,
                    sandbox: Some(record.netns.clone()),
                    ..Interface::default()
                },
            ],
            ips: record
                .ips
                .iter()
                .map(|ip| IpConfig {
                    address: *ip,
                    gateway: gateway_of(ip),
                    interface: Some(1),
                })
                .collect(),
            routes: self
                .routes(record)
                .into_iter()
                .map(|r| Route {
                    dst: r.dst,
                    gw: Some(r.gateway),
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                })
                .collect(),
            dns: self.config.dns.clone(),
        }
    }
}

fn ipam_result<T>(pod: &str, result: Result<T, IpamError>) -> Result<T, AttachError> {
    result.map_err(|source| AttachError::Ipam {
        pod: pod.to_string(),
        source,
    })
}

/// The pipeline's view of an attachment; `None` without an OpenFlow port.
fn local_pod(record: &PodRecord) -> Option<LocalPod> {
    Some(LocalPod {
        namespace: record.namespace.clone(),
        name: record.name.clone(),
        ofport: record.ofport?,
        mac: record.mac,
        ips: record.addrs(),
    })
}

/// The lock key of the attachment (container ID, ifname); an ifname never holds `/`.
fn lock_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
