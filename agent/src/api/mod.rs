//! The agent's local API for `weftctl`: JSON-RPC (jsonrpsee) over the unix socket `apiSocket`
//! (directory 0700, socket 0600: root only), framed like the CNI socket
//! (`weft_cni::rpc::server`). Methods and their types are in [`types`]; the client is
//! [`client`].
//!
//! [`ApiState`] is what the agent loop tells the API as it goes (phase, OVSDB, the bootstrapped
//! node); each method reads the live system when called: flows over OpenFlow, routes and MTUs
//! over netlink, traces through ovs-vswitchd's unixctl socket. Other components plug in
//! through [`ApiState::add_section`] (agent info), [`ApiState::add_mtu_source`] (MTU report) and
//! [`ApiState::repairs`] (the repairs log).
//!
//! [`start`] serves the socket and, when `metricsBindAddress` is set, the metrics endpoint.

pub mod bundle;
pub mod client;
pub mod host;
pub mod mtu;
pub mod netpol;
pub mod redact;
pub mod trace;
pub mod types;
pub mod unixctl;

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use ovs_flows::ofp::FlowStatsRequest;
use ovs_flows::pipeline::{tables, Category, Cookie, CookieFilter, Registry};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use crate::config::AgentConfig;
use crate::flows::FlowSet;
use crate::metrics::{self, Gauges, Metrics, MetricsError};
use crate::netns::Netns;
use crate::ovsdb::Ovs;
use crate::repairs::RepairLog;
use mtu::MtuSource;
use trace::TracePacket;
use types::*;
use weft_plan::record::PodRecord;

/// How often the MTU of every managed interface is re-read for the mismatch gauge.
const MTU_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How long a trace may take.
const TRACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the API: serving it, and answering a call (each maps to a JSON-RPC code).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be served.
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The agent has not got that far yet.
    #[error("agent not ready ({phase}): {what} is not available yet")]
    NotReady {
        /// The phase.
        phase: Phase,
        /// What was asked for.
        what: &'static str,
    },
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The parameters are invalid.
    #[error("{0}")]
    Invalid(String),
    /// OVS, the kernel or a file failed.
    #[error("{0}")]
    Failed(String),
}

impl ApiError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        match self {
            ApiError::NotReady { .. } => code::NOT_READY,
            ApiError::NotFound(_) => code::NOT_FOUND,
            ApiError::Invalid(_) => code::INVALID,
            _ => code::FAILED,
        }
    }
}

impl From<ApiError> for ErrorObjectOwned {
    fn from(err: ApiError) -> Self {
        ErrorObjectOwned::owned::<()>(err.code(), err.to_string(), None)
    }
}

/// A section another component adds to `agent_info` (e.g. peers, the uplink).
pub trait StatusSection: Send + Sync {
    /// The section's key in `sections`.
    fn name(&self) -> &'static str;
    /// Its current value.
    fn value(&self) -> serde_json::Value;
}

/// The host-state reconciler as the API sees it (the agent's `AgentHostState`).
pub trait HostPlan: Send + Sync {
    /// The routes its planner currently wants (main table and Weft's table), as the API shows
    /// routes.
    fn desired_routes(&self) -> Vec<HostRoute>;
}

/// The CNI server's attachments as the API sees them (the composition root implements it for the
/// pod network).
pub trait PodRecords: Send + Sync + std::fmt::Debug {
    /// Every attachment now, in a stable order.
    fn records(&self) -> Vec<PodRecord>;
}

/// The bootstrapped node as the API sees it (the composition root builds it from bootstrap's
/// result).
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The pod attachments.
    pub pods: Arc<dyn PodRecords>,
    /// The node's flow set.
    pub flows: FlowSet,
    /// The applied mode, rendered.
    pub mode: String,
    /// The MTU plan.
    pub plan: MtuPlanInfo,
    /// The transport interface.
    pub transport: Option<String>,
    /// The restart round.
    pub round: u16,
    /// The gateway interface.
    pub gateway: String,
    /// The node's pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
}

#[derive(Debug)]
struct Live {
    phase: Phase,
    ovs: Option<Ovs>,
    node: Option<NodeState>,
}

/// What the API knows about the agent, updated by the agent loop.
pub struct ApiState {
    config: AgentConfig,
    started: Instant,
    metrics: Arc<Metrics>,
    repairs: Arc<RepairLog>,
    live: RwLock<Live>,
    sections: Mutex<Vec<Arc<dyn StatusSection>>>,
    mtu_sources: Mutex<Vec<Arc<dyn MtuSource>>>,
    /// The mismatch gauge: (sequence number of the report that set it, value). Reports run
    /// concurrently (periodic and on request); the one started last wins, not the one that
    /// finished last.
    mtu_mismatches: Mutex<(u64, u64)>,
    /// Sequence numbers handed to MTU reports as they start.
    mtu_reports: std::sync::atomic::AtomicU64,
    host_nl: OnceCell<rtnetlink::Handle>,
    host_plan: std::sync::OnceLock<Arc<dyn HostPlan>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("socket", &self.config.api_socket)
            .field("phase", &self.phase())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiState {
    /// A fresh state in phase Starting.
    pub fn new(config: &AgentConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let repairs = Arc::new(RepairLog::new());
        metrics.register(Arc::clone(&repairs) as Arc<dyn crate::metrics::MetricFamilies>);
        Arc::new(ApiState {
            config: config.clone(),
            started: Instant::now(),
            repairs,
            metrics,
            live: RwLock::new(Live {
                phase: Phase::Starting,
                ovs: None,
                node: None,
            }),
            sections: Mutex::default(),
            mtu_sources: Mutex::default(),
            mtu_mismatches: Mutex::new((0, 0)),
            mtu_reports: Default::default(),
            host_nl: OnceCell::new(),
            host_plan: std::sync::OnceLock::new(),
            tasks: Mutex::default(),
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The repairs log reconcilers record into.
    pub fn repairs(&self) -> &Arc<RepairLog> {
        &self.repairs
    }

    /// Adds a section to `agent_info`.
    pub fn add_section(&self, section: Arc<dyn StatusSection>) {
        lock(&self.sections).push(section);
    }

    /// Sets where `host_state` takes the desired routes from (once; later calls are ignored).
    pub fn set_host_plan(&self, plan: Arc<dyn HostPlan>) {
        let _ = self.host_plan.set(plan);
    }

    /// Adds interfaces to the MTU report.
    pub fn add_mtu_source(&self, source: Arc<dyn MtuSource>) {
        lock(&self.mtu_sources).push(source);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        read(&self.live).phase
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        write(&self.live).phase = phase;
    }

    /// OVSDB is connected.
    pub fn set_ovs(&self, ovs: Ovs) {
        write(&self.live).ovs = Some(ovs);
    }

    /// Bootstrap is done: the node is served. Starts counting flow operations and the periodic
    /// MTU check.
    pub fn set_node(self: &Arc<Self>, node: NodeState) {
        node.flows.set_observer(Arc::clone(&self.metrics) as _);
        {
            let mut live = write(&self.live);
            live.node = Some(node);
            live.phase = Phase::Ready;
        }
        let state = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(MTU_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(error) = state.mtu_report().await {
                    tracing::debug!(%error, "periodic mtu check failed");
                }
            }
        });
        lock(&self.tasks).push(task.abort_handle());
    }

    /// The served node changed (a live re-plan): status, `check mtu` and metrics show `node`
    /// from now on.
    pub fn update_node(&self, node: NodeState) {
        write(&self.live).node = Some(node);
    }

    fn node(&self, what: &'static str) -> Result<NodeState, ApiError> {
        let live = read(&self.live);
        live.node.clone().ok_or(ApiError::NotReady {
            phase: live.phase,
            what,
        })
    }

    fn ovs(&self) -> Option<Ovs> {
        read(&self.live).ovs.clone()
    }

    async fn host_nl(&self) -> Result<rtnetlink::Handle, ApiError> {
        self.host_nl
            .get_or_try_init(|| async {
                let ns = Netns::current().map_err(|e| ApiError::Failed(e.to_string()))?;
                ns.rtnetlink()
                    .await
                    .map_err(|e| ApiError::Failed(e.to_string()))
            })
            .await
            .cloned()
    }

    /// The values the metrics read at scrape time.
    pub fn gauges(&self) -> Gauges {
        let live = read(&self.live);
        let openflow_reconnects = live
            .node
            .as_ref()
            .map_or(0, |n| n.flows.openflow_stats().connects.saturating_sub(1));
        Gauges {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.config.node_name.clone(),
            datapath: self.config.ovs_datapath_type.as_str().to_string(),
            ready: live.phase == Phase::Ready,
            mode: live.node.as_ref().map(|n| n.mode.clone()),
            pods: live
                .node
                .as_ref()
                .map_or(0, |n| n.pods.records().len() as u64),
            ovsdb_reconnects: live
                .ovs
                .as_ref()
                .map_or(0, |o| o.client().stats().connects.saturating_sub(1)),
            openflow_reconnects,
            mtu_mismatches: lock(&self.mtu_mismatches).1,
        }
    }

    /// `agent_info`.
    pub fn agent_info(&self) -> AgentInfo {
        let gauges = self.gauges();
        let live = read(&self.live);
        let node = live.node.as_ref();
        let sections = lock(&self.sections)
            .iter()
            .map(|s| (s.name().to_string(), s.value()))
            .collect();
        AgentInfo {
            version: gauges.version,
            node: gauges.node,
            phase: live.phase,
            ready: gauges.ready,
            mode: gauges.mode,
            datapath: gauges.datapath,
            bridge: self.config.ovs_bridge.clone(),
            gateway: self.config.host_gateway.clone(),
            round: node.map(|n| n.round),
            mtu_plan: node.map(|n| n.plan),
            transport: node.and_then(|n| n.transport.clone()),
            pod_cidrs: node
                .map(|n| n.pod_cidrs.iter().map(IpNet::to_string).collect())
                .unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
            counters: Counters {
                pods: gauges.pods,
                cni_add: self.metrics.cni_count("ADD"),
                cni_del: self.metrics.cni_count("DEL"),
                cni_check: self.metrics.cni_count("CHECK"),
                cni_errors: self.metrics.cni_error_count(),
                flow_ops: self.metrics.flow_op_count(),
                ovsdb_reconnects: gauges.ovsdb_reconnects,
                openflow_reconnects: gauges.openflow_reconnects,
                host_repairs: self.repairs.total(),
                mtu_mismatches: gauges.mtu_mismatches,
            },
            sections,
        }
    }

    /// `pod_interfaces`.
    pub fn pod_interfaces(
        &self,
        req: &PodInterfacesRequest,
    ) -> Result<Vec<PodInterface>, ApiError> {
        let node = self.node("pod interfaces")?;
        let pods: Vec<PodInterface> = node
            .pods
            .records()
            .into_iter()
            .filter(|r| req.namespace.as_ref().is_none_or(|ns| *ns == r.namespace))
            .filter(|r| req.name.as_ref().is_none_or(|n| *n == r.name))
            .map(|r| pod_interface(&r))
            .collect();
        if pods.is_empty() {
            if let Some(name) = &req.name {
                return Err(ApiError::NotFound(format!(
                    "pod {} has no interface on node {}",
                    qualified(req.namespace.as_deref(), name),
                    self.config.node_name
                )));
            }
        }
        Ok(pods)
    }

    /// Finds one local pod by `name` or `namespace/name` (`namespace` applies to a bare name;
    /// without one, the name must be unique on the node).
    fn find_pod(
        &self,
        node: &NodeState,
        text: &str,
        namespace: Option<&str>,
    ) -> Result<PodRecord, ApiError> {
        let (ns, name) = match text.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (namespace, text),
        };
        let mut found: Vec<PodRecord> = node
            .pods
            .records()
            .into_iter()
            .filter(|r| r.name == name && ns.is_none_or(|n| n == r.namespace))
            .collect();
        match found.len() {
            1 => Ok(found.swap_remove(0)),
            0 => Err(ApiError::NotFound(format!(
                "pod {} not found on node {}",
                qualified(ns, name),
                self.config.node_name
            ))),
            _ => Err(ApiError::Invalid(format!(
                "pod name {name} exists in several namespaces ({}): give namespace/name or -n",
                found
                    .iter()
                    .map(|r| r.namespace.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// `ovs_flows`.
    pub async fn ovs_flows(&self, req: &FlowsRequest) -> Result<Vec<FlowLine>, ApiError> {
        let node = self.node("flows")?;
        let mut request = FlowStatsRequest::default();
        if let Some(table) = &req.table {
            request.table = parse_table(table)?;
        }
        let filter = match (&req.pod, &req.category) {
            (Some(pod), _) => {
                let record = self.find_pod(&node, pod, req.namespace.as_deref())?;
                let ofport = record.ofport.ok_or_else(|| {
                    ApiError::NotFound(format!("pod {} has no OpenFlow port", record.key()))
                })?;
                Some(CookieFilter::pod(ofport))
            }
            (None, Some(category)) => Some(CookieFilter::category(parse_category(category)?)),
            (None, None) => None,
        };
        if let Some(filter) = filter {
            request.cookie = filter.cookie;
            request.cookie_mask = filter.mask;
        }
        let entries = node
            .flows
            .dump(&request)
            .await
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        let mut lines: Vec<FlowLine> = entries
            .into_iter()
            .map(|entry| {
                let cookie = Cookie::from_u64(entry.flow.cookie);
                FlowLine {
                    table: entry.flow.table,
                    table_name: trace::table_name(entry.flow.table),
                    priority: entry.flow.priority,
                    cookie: format!("{:#x}", entry.flow.cookie),
                    round: cookie.map(|c| c.round),
                    category: cookie.map(|c| format!("{:?}", c.category).to_lowercase()),
                    packets: entry.stats.packet_count,
                    flow: entry.flow.to_string(),
                }
            })
            .collect();
        lines.sort_by(|a, b| {
            (a.table, std::cmp::Reverse(a.priority), &a.flow).cmp(&(
                b.table,
                std::cmp::Reverse(b.priority),
                &b.flow,
            ))
        });
        Ok(lines)
    }

    /// `host_state`.
    pub async fn host_state(&self) -> Result<HostStateReport, ApiError> {
        let node = self.node("host state")?;
        let plan = self.host_plan.get().ok_or(ApiError::NotReady {
            phase: self.phase(),
            what: "host state (the host reconciler has not started)",
        })?;
        let handle = self.host_nl().await?;
        let desired = plan.desired_routes();
        let mut cidrs = node.pod_cidrs.clone();
        cidrs.extend(
            desired
                .iter()
                .filter_map(|r| r.destination.parse::<IpNet>().ok()),
        );
        let actual = host::actual_routes(&handle, std::slice::from_ref(&node.gateway), &cidrs)
            .await
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        Ok(host::compare_routes(desired, actual))
    }

    /// `mtu_report` (also refreshes the mismatch gauge).
    pub async fn mtu_report(&self) -> Result<MtuReport, ApiError> {
        let node = self.node("the mtu report")?;
        let sequence = self
            .mtu_reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let handle = self.host_nl().await?;
        let ovs = self.ovs();
        let mut entries = mtu::entries(
            &handle,
            &node.plan,
            &node.gateway,
            &node.pods.records(),
            ovs.as_ref().map(Ovs::client),
        )
        .await;
        let sources: Vec<Arc<dyn MtuSource>> = lock(&self.mtu_sources).clone();
        for source in sources {
            entries.extend(source.entries().await);
        }
        let report = mtu::report(node.plan, entries);
        let mut gauge = lock(&self.mtu_mismatches);
        if sequence > gauge.0 {
            *gauge = (sequence, report.mismatches);
        }
        Ok(report)
    }

    /// `trace_packet`.
    pub async fn trace_packet(&self, req: &TraceRequest) -> Result<TraceResult, ApiError> {
        let node = self.node("packet traces")?;
        let namespace = req.namespace.as_deref();
        let (in_port, src_mac, src_ips, source_name) = match req.from_tunnel {
            Some(peer) => {
                let ip: IpAddr = req.source.parse().map_err(|_| {
                    ApiError::Invalid(format!(
                        "source {} of a packet from the tunnel (peer {peer}) must be an IP address",
                        req.source
                    ))
                })?;
                (
                    ovs_flows::pipeline::ports::TUNNEL,
                    ovs_flows::pipeline::VIRTUAL_MAC.to_string(),
                    vec![ip],
                    req.source.clone(),
                )
            }
            None => {
                let source = self.find_pod(&node, &req.source, namespace)?;
                let in_port = source.ofport.ok_or_else(|| {
                    ApiError::NotFound(format!("pod {} has no OpenFlow port", source.key()))
                })?;
                (
                    in_port,
                    source.mac.to_string(),
                    source.addrs(),
                    format!("pod {}", source.key()),
                )
            }
        };
        let dst_ips: Vec<IpAddr> = match req.destination.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .find_pod(&node, &req.destination, namespace)
                .map_err(|e| match e {
                    ApiError::NotFound(m) => ApiError::NotFound(format!(
                        "destination {} is neither an IP address nor a local pod: {m}",
                        req.destination
                    )),
                    other => other,
                })?
                .addrs(),
        };
        let (src_ip, dst_ip) = src_ips
            .into_iter()
            .find_map(|s| {
                dst_ips
                    .iter()
                    .find(|d| d.is_ipv4() == s.is_ipv4())
                    .map(|d| (s, *d))
            })
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "{source_name} has no address of the family of {}",
                    req.destination
                ))
            })?;
        let flow = trace::trace_flow(&TracePacket {
            in_port,
            src_mac,
            from_tunnel: req.from_tunnel,
            src_ip,
            dst_ip,
            proto: req.proto.clone(),
            dport: req.dport,
        })
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let ctl = unixctl::vswitchd_ctl(&self.config.ovs_run_dir)
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        let bridge = self.config.ovs_bridge.clone();
        let raw = unixctl::call(&ctl, "ofproto/trace", &[&bridge, &flow], TRACE_TIMEOUT)
            .await
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        let names = self.port_names();
        let mut result = trace::parse_trace(&bridge, &flow, &raw, &|port| {
            names
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, n)| n.clone())
        });
        result.policy = netpol::trace_decisions(&result, &node.flows);
        Ok(result)
    }

    /// OpenFlow port -> interface name, from the OVSDB cache.
    fn port_names(&self) -> Vec<(u32, String)> {
        self.ovs().map_or_else(Vec::new, |ovs| {
            ovs.client().read_cache(|cache| {
                cache
                    .table("Interface")
                    .filter_map(|(_, row)| {
                        let port = u32::try_from(row.get_i64("ofport")?).ok()?;
                        Some((port, row.get_str("name")?.to_string()))
                    })
                    .collect()
            })
        })
    }
}

fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn pod_interface(r: &PodRecord) -> PodInterface {
    PodInterface {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        container_id: r.container_id.clone(),
        ifname: r.ifname.clone(),
        host_ifname: r.host_ifname.clone(),
        netns: r.netns.clone(),
        ips: r.ips.iter().map(IpNet::to_string).collect(),
        mac: r.mac.to_string(),
        ofport: r.ofport,
    }
}

/// A table given as a number or a declared name (case-insensitive).
pub fn parse_table(text: &str) -> Result<u8, ApiError> {
    if let Ok(number) = text.parse::<u8>() {
        return Ok(number);
    }
    let registry = Registry::wave1();
    tables::WAVE1
        .iter()
        .find(|decl| decl.name.eq_ignore_ascii_case(text))
        .map(|decl| registry.number(decl))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "table {text:?} is neither a number nor one of {}",
                tables::WAVE1
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// A cookie category by name (case-insensitive).
pub fn parse_category(text: &str) -> Result<Category, ApiError> {
    Category::ALL
        .into_iter()
        .find(|c| format!("{c:?}").eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "cookie category {text:?} is not one of {}",
                Category::ALL
                    .iter()
                    .map(|c| format!("{c:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Registers `f` as method `name`: one optional positional parameter (default when absent).
fn register<P, R, F, Fut>(module: &mut RpcModule<Arc<ApiState>>, name: &'static str, f: F)
where
    P: DeserializeOwned + Default + Send + 'static,
    R: Serialize + Clone + Send + 'static,
    F: Fn(Arc<ApiState>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
{
    // Registration fails only for duplicate names, which these are not.
    let _ = module.register_async_method(name, move |params, ctx, _| {
        let f = f.clone();
        async move {
            let mut seq = params.sequence();
            let param: Option<P> = seq.optional_next()?;
            let state = Arc::clone(&*ctx);
            f(state, param.unwrap_or_default())
                .await
                .map_err(ErrorObjectOwned::from)
        }
    });
}

/// The API's methods.
pub fn rpc_module(state: &Arc<ApiState>) -> RpcModule<Arc<ApiState>> {
    let mut module = RpcModule::new(Arc::clone(state));
    register(
        &mut module,
        method::AGENT_INFO,
        |s, _: IgnoredAny| async move { Ok(s.agent_info()) },
    );
    register(
        &mut module,
        method::POD_INTERFACES,
        |s, req: PodInterfacesRequest| async move { s.pod_interfaces(&req) },
    );
    register(
        &mut module,
        method::OVS_FLOWS,
        |s, req: FlowsRequest| async move { s.ovs_flows(&req).await },
    );
    register(
        &mut module,
        method::HOST_STATE,
        |s, _: IgnoredAny| async move { s.host_state().await },
    );
    register(
        &mut module,
        method::MTU_REPORT,
        |s, _: IgnoredAny| async move { s.mtu_report().await },
    );
    register(
        &mut module,
        method::REPAIRS,
        |s, _: IgnoredAny| async move { Ok(s.repairs.snapshot()) },
    );
    register(
        &mut module,
        method::TRACE_PACKET,
        |s, req: TraceRequest| async move { s.trace_packet(&req).await },
    );
    register(
        &mut module,
        method::NETWORK_POLICIES,
        |s, _: IgnoredAny| async move { s.network_policies().await },
    );
    register(
        &mut module,
        method::SUPPORT_BUNDLE,
        |s, _: IgnoredAny| async move { Ok(bundle::collect(&s).await) },
    );
    module
}

/// Binds the API socket (root only: directory 0700, socket 0600, a stale socket replaced).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    Ok(crate::socket::bind_private("api", path)?)
}

/// The running API and metrics endpoint; dropping it stops both and removes the socket.
#[derive(Debug)]
pub struct Ops {
    /// The state the agent loop updates.
    pub state: Arc<ApiState>,
    socket: PathBuf,
}

impl Drop for Ops {
    fn drop(&mut self) {
        for task in lock(&self.state.tasks).drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Serves the API on `apiSocket` and the metrics on `metricsBindAddress` (if set). The caller
/// connects the CNI server's requests to [`ApiState::metrics`].
pub async fn start(config: &AgentConfig) -> Result<Ops, ApiError> {
    let metrics = Metrics::new();
    let state = ApiState::new(config, metrics);
    let listener = bind(&config.api_socket)?;
    let server = tokio::spawn(weft_cni::rpc::server::serve(listener, rpc_module(&state)));
    lock(&state.tasks).push(server.abort_handle());
    tracing::info!(socket = %config.api_socket.display(), "api socket served");
    if !config.metrics_bind_address.is_empty() {
        let addr = metrics::parse_bind_address(&config.metrics_bind_address)?;
        let listener = metrics::bind(addr).await?;
        let scrape = Arc::clone(&state);
        let render = Arc::new(move || scrape.metrics.render(&scrape.gauges()));
        let task = tokio::spawn(metrics::serve(listener, render));
        lock(&state.tasks).push(task.abort_handle());
        tracing::info!(%addr, "metrics served at /metrics");
    }
    Ok(Ops {
        socket: config.api_socket.clone(),
        state,
    })
}
