//! The agent API's wire types, shared by the agent (server) and `weftctl` (client). Every type
//! is plain serde data with camelCase keys; optional sections stay absent until the component
//! that fills them exists, so older clients keep working when sections are added.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// JSON-RPC method names of the agent API. Each takes one positional parameter (an object,
/// possibly `{}`) and answers one object.
pub mod method {
    /// [`super::AgentInfo`].
    pub const AGENT_INFO: &str = "agent_info";
    /// [`super::PodInterfacesRequest`] -> `Vec<`[`super::PodInterface`]`>`.
    pub const POD_INTERFACES: &str = "pod_interfaces";
    /// [`super::FlowsRequest`] -> `Vec<`[`super::FlowLine`]`>`.
    pub const OVS_FLOWS: &str = "ovs_flows";
    /// [`super::HostStateReport`].
    pub const HOST_STATE: &str = "host_state";
    /// [`super::MtuReport`].
    pub const MTU_REPORT: &str = "mtu_report";
    /// `Vec<`[`super::RepairEntry`]`>`.
    pub const REPAIRS: &str = "repairs";
    /// [`super::TraceRequest`] -> [`super::TraceResult`].
    pub const TRACE_PACKET: &str = "trace_packet";
    /// [`super::SupportBundle`].
    pub const SUPPORT_BUNDLE: &str = "support_bundle";
    /// [`crate::api::netpol::PolicyReport`].
    pub const NETWORK_POLICIES: &str = "network_policies";
}

/// JSON-RPC error codes of the agent API (positive, like the CNI server's).
pub mod code {
    /// The agent has not finished bootstrap; the data asked for does not exist yet.
    pub const NOT_READY: i32 = 11;
    /// The named object (pod, table, category) does not exist.
    pub const NOT_FOUND: i32 = 404;
    /// The request's parameters are invalid (e.g. a destination that is neither pod nor IP).
    pub const INVALID: i32 = 400;
    /// OVS, the kernel or the filesystem failed while answering.
    pub const FAILED: i32 = 500;
}

/// Where the agent is in its start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Connecting to OVSDB and converging the bridge.
    Starting,
    /// Waiting for the own Node's podCIDRs.
    WaitingForNode,
    /// MTU plan, round, gateway, pods, flows.
    Bootstrapping,
    /// Serving CNI requests.
    Ready,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Starting => "Starting",
            Phase::WaitingForNode => "WaitingForNode",
            Phase::Bootstrapping => "Bootstrapping",
            Phase::Ready => "Ready",
        })
    }
}

/// The MTU plan as the API shows it (mirror of [`crate::mtu::MtuPlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuPlanInfo {
    /// Pod eth0 and host veth ends.
    pub pod: u32,
    /// The gateway internal port.
    pub gateway: u32,
    /// The tunnel port (encap only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<u32>,
    /// The uplink and the node IP's internal port.
    pub uplink: u32,
    /// The largest pod MTU the mode allows.
    pub max_pod: u32,
}

impl From<crate::mtu::MtuPlan> for MtuPlanInfo {
    fn from(plan: crate::mtu::MtuPlan) -> Self {
        MtuPlanInfo {
            pod: plan.pod,
            gateway: plan.gateway,
            tunnel: plan.tunnel,
            uplink: plan.uplink,
            max_pod: plan.max_pod,
        }
    }
}

/// Counters since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Pod attachments now.
    pub pods: u64,
    /// CNI ADDs served.
    pub cni_add: u64,
    /// CNI DELs served.
    pub cni_del: u64,
    /// CNI CHECKs served.
    pub cni_check: u64,
    /// CNI requests that failed.
    pub cni_errors: u64,
    /// OpenFlow operations (bundles) since ready.
    pub flow_ops: u64,
    /// OVSDB connections after the first.
    pub ovsdb_reconnects: u64,
    /// OpenFlow handshakes after the first.
    pub openflow_reconnects: u64,
    /// Host state repairs.
    pub host_repairs: u64,
    /// Managed interfaces off the MTU plan at the last check.
    pub mtu_mismatches: u64,
}

/// `agent_info`: what the agent is and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Agent version.
    pub version: String,
    /// Node name.
    pub node: String,
    /// Start-up phase.
    pub phase: Phase,
    /// Whether CNI requests are served.
    pub ready: bool,
    /// The applied traffic mode (e.g. `encap/geneve`), once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// OVS datapath type.
    pub datapath: String,
    /// The bridge.
    pub bridge: String,
    /// The gateway interface.
    pub gateway: String,
    /// The restart round of the installed flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u16>,
    /// The MTU plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_plan: Option<MtuPlanInfo>,
    /// The transport interface the plan was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The node's pod CIDRs.
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// Counters.
    pub counters: Counters,
    /// Sections other components add (name -> their own object), e.g. peers or the uplink.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sections: BTreeMap<String, serde_json::Value>,
}

/// `pod_interfaces` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodInterfacesRequest {
    /// Only this pod name.
    pub name: Option<String>,
    /// Only this Kubernetes namespace.
    pub namespace: Option<String>,
}

/// One pod attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInterface {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes name.
    pub name: String,
    /// Container id.
    pub container_id: String,
    /// Interface inside the pod.
    pub ifname: String,
    /// Host end of the veth (the OVS port).
    pub host_ifname: String,
    /// The pod's netns path.
    pub netns: String,
    /// Addresses with prefix length.
    pub ips: Vec<String>,
    /// MAC of the pod's interface.
    pub mac: String,
    /// OpenFlow port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u32>,
}

/// `ovs_flows` parameters: every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlowsRequest {
    /// A table number or name (`70`, `L3Forwarding`, case-insensitive).
    pub table: Option<String>,
    /// A pod (`name` or `namespace/name`): its flows (cookie category pod, object its ofport).
    pub pod: Option<String>,
    /// The pod's namespace when `pod` has none.
    pub namespace: Option<String>,
    /// A cookie category (`pipeline`, `gateway`, `pod`, `peer`, ...).
    pub category: Option<String>,
}

/// One installed flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowLine {
    /// Table number.
    pub table: u8,
    /// Table name, when the pipeline declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// Priority.
    pub priority: u16,
    /// Cookie in hex.
    pub cookie: String,
    /// Restart round from the cookie (Weft flows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u16>,
    /// Category from the cookie (Weft flows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Packets matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// The flow in `ovs-ofctl dump-flows` syntax.
    pub flow: String,
}

/// A host route (desired or actual).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRoute {
    /// Destination prefix.
    pub destination: String,
    /// Output device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Routing table.
    pub table: u32,
}

/// How a route compares with the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteState {
    /// Desired and present.
    Ok,
    /// Desired, absent.
    Missing,
    /// Present on a Weft device but not desired.
    Unexpected,
}

impl std::fmt::Display for RouteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteState::Ok => "ok",
            RouteState::Missing => "missing",
            RouteState::Unexpected => "unexpected",
        })
    }
}

/// One row of the desired-vs-actual comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The route.
    pub route: HostRoute,
    /// Its state.
    pub state: RouteState,
}

/// `host_state`: desired vs actual host routes (rules and neighbours join when the host
/// reconciler lands).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStateReport {
    /// Desired routes (pure function of config and node).
    pub desired: Vec<HostRoute>,
    /// Routes read back from the kernel that concern Weft (its devices or pod CIDRs).
    pub actual: Vec<HostRoute>,
    /// The comparison.
    pub routes: Vec<RouteStatus>,
}

/// Kinds of interfaces the MTU plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MtuKind {
    /// The host gateway internal port.
    Gateway,
    /// The tunnel port.
    Tunnel,
    /// The uplink / node IP internal port.
    Uplink,
    /// A pod veth's host end.
    HostVeth,
    /// A pod's interface (eth0 or an extra one).
    Pod,
}

impl std::fmt::Display for MtuKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MtuKind::Gateway => "gateway",
            MtuKind::Tunnel => "tunnel",
            MtuKind::Uplink => "uplink",
            MtuKind::HostVeth => "hostVeth",
            MtuKind::Pod => "pod",
        })
    }
}

/// One managed interface: planned vs actual MTU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuEntry {
    /// Interface kind.
    pub kind: MtuKind,
    /// Interface name.
    pub interface: String,
    /// The pod it belongs to (`namespace/name`), for pod and host veth entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// MTU the plan says.
    pub planned: u32,
    /// MTU read back (netlink, or OVSDB `mtu` for ports without a kernel device here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<u32>,
    /// Where `actual` came from: `netlink`, `netlink (pod netns)`, `ovsdb`.
    pub source: String,
    /// Why `actual` could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MtuEntry {
    /// Whether the actual MTU is known and equals the plan.
    pub fn ok(&self) -> bool {
        self.actual == Some(self.planned)
    }
}

/// `mtu_report`: every managed interface against the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuReport {
    /// The plan.
    pub plan: MtuPlanInfo,
    /// One entry per managed interface.
    pub entries: Vec<MtuEntry>,
    /// Entries whose MTU differs or could not be read.
    pub mismatches: u64,
    /// Pods (`namespace/name`) with an interface off the plan: the ones to fix or restart.
    pub pods_to_fix: Vec<String>,
}

pub use crate::repairs::RepairEntry;

/// `trace_packet` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TraceRequest {
    /// Source pod (`name` or `namespace/name`).
    pub source: String,
    /// Destination: a pod (`name` or `namespace/name`) or an IP address.
    pub destination: String,
    /// Namespace of pods given without one (default `default`).
    pub namespace: Option<String>,
    /// `icmp` (default), `tcp` or `udp`.
    pub proto: Option<String>,
    /// Destination port (tcp/udp).
    pub dport: Option<u16>,
    /// Trace the packet as it arrives by the tunnel from this peer transport address; the
    /// source is then the remote pod's IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_tunnel: Option<IpAddr>,
}

/// One table visit of a traced packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStep {
    /// Nesting depth (resubmits go one deeper).
    pub depth: u32,
    /// Table number.
    pub table: u8,
    /// Table name, when the pipeline declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// The matching flow's match, or `No match.`.
    pub matched: String,
    /// The matching flow's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Its cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Actions executed and OVS's notes on them (`-> output port is 2`).
    pub actions: Vec<String>,
}

/// `trace_packet` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceResult {
    /// The bridge traced on.
    pub bridge: String,
    /// The flow given to `ofproto/trace`.
    pub flow: String,
    /// Tables visited, in order.
    pub steps: Vec<TraceStep>,
    /// OVS's `Datapath actions:` line (e.g. `2`, `drop`).
    pub datapath_actions: String,
    /// The verdict in words (`output to port 2 (wfweb-abc)`, `dropped in table 30 SpoofGuard`).
    pub verdict: String,
    /// The full `ofproto/trace` text.
    pub raw: String,
    /// The NetworkPolicy decisions on the way, from the policy flows' cookies: the policy and
    /// rule that allowed the packet, or the isolated pod whose default drop dropped it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
}

/// One file of a support bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleFile {
    /// Path inside the archive.
    pub name: String,
    /// Contents (text).
    pub content: String,
}

/// `support_bundle`: the files the agent contributes (secrets already removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportBundle {
    /// Files, in archive order.
    pub files: Vec<BundleFile>,
}
