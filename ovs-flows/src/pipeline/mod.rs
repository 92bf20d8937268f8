//! Weft's base OpenFlow pipeline as a pure function of plain data.
//!
//! [`base_flows`] computes every flow a node needs before any pod exists; [`pod_flows`] computes
//! one local pod's flows (install them in one bundle, delete them with
//! [`CookieFilter::pod`]). Tables are declared once in [`tables`] and numbered by the
//! [`Registry`]; registers in [`regs`]; cookies in [`Cookie`]. docs/ovs-pipeline.md describes
//! every table and flow.
//!
//! Pods resolve the gateway (and every other on-link address) to [`VIRTUAL_MAC`], answered by
//! the pipeline's ARP and ND responders, and L3 forwarding routes on the destination IP
//! whatever the destination MAC: no pod or host connectivity depends on a host veth MAC.

mod arp;
mod classify;
mod conntrack;
mod cookie;
mod forwarding;
mod nd;
pub mod noencap;
mod peer;
pub mod policy;
pub mod regs;
mod spoofguard;
mod table;
pub mod uplink;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::flow::{Action, Flow, MacAddr, Match};
use crate::ofp::FlowMod;

pub use cookie::{
    Category, Cookie, CookieFilter, CATEGORY_MASK, CATEGORY_SHIFT, OBJECT_MASK, ROUND_MASK,
    ROUND_SHIFT,
};
pub use peer::{delete_peer, peer_flows, peer_gateway_answers, tunnel_flows, PeerNode};
pub use table::{tables, Miss, Registry, Stage, Table, TableDecl};

/// The gateway MAC every pod resolves: a locally administered unicast address
/// (`02:77:65:66:74:01`, "weft" in ASCII), the same on every node, never on any real interface.
pub const VIRTUAL_MAC: MacAddr = MacAddr::new(0x02, 0x77, 0x65, 0x66, 0x74, 0x01);

/// Fixed OpenFlow port numbers of the infrastructure ports (requested with `ofport_request`,
/// in the controller range so a pod can never take them).
pub mod ports {
    /// The flow-based tunnel port.
    pub const TUNNEL: u32 = 32768;
    /// The host gateway internal port.
    pub const GATEWAY: u32 = 32769;
    /// The uplink NIC (noEncap, or netdev encap).
    pub const UPLINK: u32 = 32770;
    /// The host internal port that takes over the uplink's IPs.
    pub const HOST_INTERNAL: u32 = 32771;

    /// Whether `port` is one of the infrastructure ports.
    pub fn is_infrastructure(port: u32) -> bool {
        (TUNNEL..=HOST_INTERNAL).contains(&port)
    }
}

/// Flow priorities, one meaning each.
pub mod priority {
    /// Table-miss flows.
    pub const MISS: u16 = 0;
    /// Catch-alls: route to the gateway, output to the target port, drop unanswered neighbor
    /// discovery.
    pub const DEFAULT: u16 = 100;
    /// Destinations never routed: unallocated local pod IPs, link-local, multicast, no
    /// target port.
    pub const DISCARD: u16 = 190;
    /// Per-object flows: a pod, a gateway IP (peers in issue 4 use this too).
    pub const NORMAL: u16 = 200;
    /// Exceptions to [`NORMAL`] flows (a request for one's own address, a DAD probe,
    /// from-gateway skips).
    pub const EXCEPTION: u16 = 210;
}

/// Errors of pipeline declarations and inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Two tables share a name.
    #[error("table {table} is declared twice")]
    DuplicateTable {
        /// The name.
        table: &'static str,
    },
    /// A stage has more tables than numbers.
    #[error("stage {stage} has no table number left for table {table}")]
    StageFull {
        /// The stage.
        stage: &'static str,
        /// The table that did not fit.
        table: &'static str,
    },
    /// No table is in the root stage.
    #[error("no table is declared in the root stage")]
    NoRootTable,
    /// The node has no pod CIDR.
    #[error("node has no pod cidr")]
    NoPodCidr,
    /// A gateway IP is missing for a pod CIDR, or lies outside every pod CIDR.
    #[error("gateway ip {ip} is not in any pod cidr")]
    GatewayIpOutsideCidrs {
        /// The address.
        ip: IpAddr,
    },
    /// A pod CIDR has no gateway IP.
    #[error("pod cidr {cidr} has no gateway ip")]
    CidrWithoutGateway {
        /// The CIDR.
        cidr: IpNet,
    },
    /// A MAC that cannot be an interface's (zero, multicast, or the virtual MAC).
    #[error("{owner} has unusable mac {mac}")]
    BadMac {
        /// Which interface (`gateway` or `pod NS/NAME`).
        owner: String,
        /// The MAC.
        mac: MacAddr,
    },
    /// A pod's OpenFlow port is 0, reserved, or an infrastructure port.
    #[error("pod {pod} has unusable ofport {ofport}")]
    PodOfport {
        /// `namespace/name`.
        pod: String,
        /// The port.
        ofport: u32,
    },
    /// A pod has no IP address.
    #[error("pod {pod} has no ip address")]
    PodWithoutIp {
        /// `namespace/name`.
        pod: String,
    },
    /// A peer node has no pod CIDR to route to.
    #[error("peer node {peer} has no pod cidr")]
    PeerWithoutPodCidr {
        /// The peer's name.
        peer: String,
    },
    /// A peer's pod CIDR overlaps this node's.
    #[error("peer node {peer} pod cidr {cidr} overlaps this node's pod cidrs")]
    PeerCidrOverlap {
        /// The peer's name.
        peer: String,
        /// The CIDR.
        cidr: IpNet,
    },
    /// A peer's transport address cannot be a tunnel endpoint.
    #[error("peer node {peer} has unusable transport address {ip}")]
    PeerTransportIp {
        /// The peer's name.
        peer: String,
        /// The address.
        ip: IpAddr,
    },
    /// A peer's cookie object id is 0 or wider than 40 bits.
    #[error("peer node {peer} has unusable cookie object id {id}")]
    PeerId {
        /// The peer's name.
        peer: String,
        /// The id.
        id: u64,
    },
    /// A pod IP lies outside the node's pod CIDRs, or is a gateway IP.
    #[error("pod {pod} ip {ip} is not a pod address of this node")]
    PodIp {
        /// `namespace/name`.
        pod: String,
        /// The address.
        ip: IpAddr,
    },
}

/// What the base pipeline depends on: the node's configuration and cluster view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Agent restart round, put in every cookie.
    pub round: u16,
    /// MAC of the gateway internal port (port [`ports::GATEWAY`]), set explicitly by the agent.
    pub gateway_mac: MacAddr,
    /// The gateway's IPs: the first address of each pod CIDR.
    pub gateway_ips: Vec<IpAddr>,
    /// The node's pod CIDRs (one per family).
    pub pod_cidrs: Vec<IpNet>,
    /// The node's own IPs (not used by wave-1 flows; node-bound traffic goes to the gateway).
    pub node_ips: Vec<IpAddr>,
}

impl NodeConfig {
    /// Checks that the configuration can produce a working pipeline.
    pub fn validate(&self) -> Result<(), PipelineError> {
        if self.pod_cidrs.is_empty() {
            return Err(PipelineError::NoPodCidr);
        }
        check_mac("gateway", self.gateway_mac)?;
        if let Some(ip) = self
            .gateway_ips
            .iter()
            .find(|ip| !self.pod_cidrs.iter().any(|c| c.contains(*ip)))
        {
            return Err(PipelineError::GatewayIpOutsideCidrs { ip: *ip });
        }
        if let Some(cidr) = self
            .pod_cidrs
            .iter()
            .find(|c| !self.gateway_ips.iter().any(|ip| c.contains(ip)))
        {
            return Err(PipelineError::CidrWithoutGateway { cidr: *cidr });
        }
        Ok(())
    }

    fn has_ipv4(&self) -> bool {
        self.pod_cidrs.iter().any(|c| matches!(c, IpNet::V4(_)))
    }

    fn has_ipv6(&self) -> bool {
        self.pod_cidrs.iter().any(|c| matches!(c, IpNet::V6(_)))
    }

    fn cookie(&self, category: Category) -> u64 {
        Cookie::new(self.round, category).to_u64()
    }
}

/// A pod on this node, attached to the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes name.
    pub name: String,
    /// OpenFlow port of the pod's host-side veth; also the pod's cookie object id.
    pub ofport: u32,
    /// MAC of the pod's interface (inside the pod).
    pub mac: MacAddr,
    /// The pod's IPs (one per family of the node's pod CIDRs).
    pub ips: Vec<IpAddr>,
}

impl LocalPod {
    /// `namespace/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The cookie of this pod's flows.
    pub fn cookie(&self, round: u16) -> u64 {
        Cookie::new(round, Category::Pod)
            .with_object(u64::from(self.ofport))
            .to_u64()
    }

    /// Checks that the pod can be wired on the node `cfg` describes.
    pub fn validate(&self, cfg: &NodeConfig) -> Result<(), PipelineError> {
        if self.ofport == 0 || self.ofport >= crate::flow::port::MAX {
            return Err(PipelineError::PodOfport {
                pod: self.key(),
                ofport: self.ofport,
            });
        }
        if ports::is_infrastructure(self.ofport) {
            return Err(PipelineError::PodOfport {
                pod: self.key(),
                ofport: self.ofport,
            });
        }
        check_mac(&format!("pod {}", self.key()), self.mac)?;
        if self.ips.is_empty() {
            return Err(PipelineError::PodWithoutIp { pod: self.key() });
        }
        let foreign = |ip: &IpAddr| {
            cfg.gateway_ips.contains(ip) || !cfg.pod_cidrs.iter().any(|c| c.contains(ip))
        };
        if let Some(ip) = self.ips.iter().find(|ip| foreign(ip)) {
            return Err(PipelineError::PodIp {
                pod: self.key(),
                ip: *ip,
            });
        }
        Ok(())
    }
}

fn check_mac(owner: &str, mac: MacAddr) -> Result<(), PipelineError> {
    if mac == MacAddr::default() || mac.0[0] & 1 == 1 || mac == VIRTUAL_MAC {
        return Err(PipelineError::BadMac {
            owner: owner.to_string(),
            mac,
        });
    }
    Ok(())
}

/// Every flow the node needs with no pod: table-miss flows, root classification, the gateway's
/// ARP/ND responders, classification, L3/L2 forwarding and output, all with cookie round
/// `cfg.round`.
pub fn base_flows(cfg: &NodeConfig) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let mut flows = ctx.miss_flows();
    flows.extend(classify::base(&ctx));
    flows.extend(arp::base(&ctx));
    flows.extend(nd::base(&ctx));
    flows.extend(forwarding::base(&ctx));
    flows.extend(conntrack::base(&ctx));
    flows.extend(policy::base(&ctx));
    flows
}

/// One local pod's flows (cookie category [`Category::Pod`], object id = its OpenFlow port):
/// classification, ARP and IP SpoofGuard, ARP/ND responders for its addresses, L3/L2
/// forwarding.
pub fn pod_flows(cfg: &NodeConfig, pod: &LocalPod) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = pod.cookie(cfg.round);
    let mut flows = Vec::new();
    flows.extend(classify::pod(&ctx, pod, cookie));
    flows.extend(arp::pod(&ctx, pod, cookie));
    flows.extend(spoofguard::pod(&ctx, pod, cookie));
    flows.extend(nd::pod(&ctx, pod, cookie));
    flows.extend(forwarding::pod(&ctx, pod, cookie));
    flows
}

/// Flow-mods adding `flows` (for one bundle).
pub fn add_all(flows: Vec<Flow>) -> Vec<FlowMod> {
    flows.into_iter().map(FlowMod::add).collect()
}

/// The flow-mod deleting every flow of the pod on `ofport`, in every round.
pub fn delete_pod(ofport: u32) -> FlowMod {
    CookieFilter::pod(ofport).delete()
}

/// The flow-mod deleting every flow of restart round `round` (a stale round after a restart).
pub fn delete_round(round: u16) -> FlowMod {
    CookieFilter::round(round).delete()
}

/// Shared state of the flow builders.
struct Ctx<'a> {
    cfg: &'a NodeConfig,
    reg: &'static Registry,
}

impl<'a> Ctx<'a> {
    fn new(cfg: &'a NodeConfig) -> Self {
        Ctx {
            cfg,
            reg: Registry::wave1(),
        }
    }

    /// A flow in the table declared as `table`.
    fn flow(
        &self,
        table: &TableDecl,
        priority: u16,
        cookie: u64,
        matches: Match,
        actions: Vec<Action>,
    ) -> Flow {
        Flow {
            table: self.reg.number(table),
            priority,
            cookie,
            matches,
            actions,
            ..Flow::default()
        }
    }

    /// `goto_table` to the table declared as `table`.
    fn goto(&self, table: &TableDecl) -> Action {
        Action::GotoTable(self.reg.number(table))
    }

    /// `goto_table` to the table after `table` (never called for the last table).
    fn goto_next(&self, table: &TableDecl) -> Action {
        let output = self.reg.number(&tables::OUTPUT);
        Action::GotoTable(self.reg.next(table).unwrap_or(output))
    }

    /// One priority-0 flow per table carrying its miss action.
    fn miss_flows(&self) -> Vec<Flow> {
        let cookie = self.cfg.cookie(Category::Pipeline);
        let tables = self.reg.tables();
        tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let actions = match (t.miss, tables.get(i + 1)) {
                    (Miss::Next, Some(next)) => vec![Action::GotoTable(next.number)],
                    _ => Vec::new(),
                };
                Flow {
                    table: t.number,
                    priority: priority::MISS,
                    cookie,
                    actions,
                    ..Flow::default()
                }
            })
            .collect()
    }

    fn gateway_ipv4(&self) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
        self.cfg.gateway_ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    fn gateway_ipv6(&self) -> impl Iterator<Item = std::net::Ipv6Addr> + '_ {
        self.cfg.gateway_ips.iter().filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }
}

/// A pod's IPv4 addresses.
fn pod_ipv4(pod: &LocalPod) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
    pod.ips.iter().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

/// A pod's IPv6 addresses.
fn pod_ipv6(pod: &LocalPod) -> impl Iterator<Item = std::net::Ipv6Addr> + '_ {
    pod.ips.iter().filter_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    })
}

/// `set_field:MAC->FIELD`.
fn set_mac(field: crate::flow::Field, mac: MacAddr) -> Action {
    Action::set_field(field, mac_bits(mac))
}

fn mac_bits(mac: MacAddr) -> u128 {
    mac.0
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}
