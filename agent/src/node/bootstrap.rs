//! Node bootstrap: from config and the own Node to a bridge whose pipeline is installed and
//! whose pods are served.
//!
//! Steps, each idempotent so a crash at any point converges on the next start:
//! 1. wait for the own Node's podCIDRs (kube watch, one log line while waiting);
//! 2. MTU plan ([`plan_transport_with`], pure): the mode from `trafficEncapMode` and
//!    `tunnelType`; the transport interface from `transportInterface`, else
//!    `transportInterfaceCIDRs`, else the one holding the node's InternalIP (its MTU as recorded
//!    in the uplink journal while the NIC is attached); the configured `mtu` overrides the pod
//!    MTU, and is required when no transport interface is found;
//! 3. the restart round: the bridge's `weft-round` external id + 1, persisted before any flow
//!    of the new round is installed; the applied mode, plan and transport are recorded next to
//!    it;
//! 4. the gateway port (fixed ofport, `mtu_request`, stable MAC) and its kernel side (MAC, MTU,
//!    up; its addresses, the first IP of every podCIDR, are the host-state reconciler's); in
//!    encap the tunnel port ([`crate::ports::tunnel`]); the mode
//!    switch and the journaled uplink attach or detach ([`crate::uplink::at_start`]);
//! 5. the pod store rebuilt from OVS port external_ids, IPAM reconciled against it;
//! 6. the base pipeline and every existing pod's flows in one bundle (round N), then every
//!    other round deleted by cookie; only then `flow-restore-wait` is cleared.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use netlink_packet_route::link::LinkAttribute;
use ovs_flows::pipeline::NodeConfig;
use weft_plan::MacAddr;

use super::peers::PeerPath;
use crate::cniserver::{PodNetwork, RebuildReport};
use crate::config::AgentConfig;
use crate::flows::{FlowError, FlowSet, Infrastructure};
use crate::iface::{IfaceError, VethManager};
use crate::ipam::{FileStore, Ipam, IpamError, SharedIpam};
use crate::k8s::{K8sError, LocalNode, PeerNodes};
use crate::mtu::{
    self, Family, HostInterface, MtuError, MtuInput, MtuPlan, TrafficMode, TransportError,
    TransportSelector, TunnelType,
};
use crate::netns::{Netns, NetnsError};
use crate::ovsdb::{Ovs, OvsBridgeClient, OvsdbError, Record};
use crate::ports::gateway::{self, GatewayError, GatewaySpec};
use crate::ports::tunnel::{self, TunnelError, TunnelSpec};
pub use weft_plan::names::{MODE_KEY, MTU_PLAN_KEY, ROUND_KEY, TRANSPORT_KEY};

/// The traffic mode when the config keys are at their defaults.
pub const DEFAULT_MODE: TrafficMode = TrafficMode::Encap(TunnelType::Geneve);

/// Errors of the bootstrap; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Kubernetes failed.
    #[error(transparent)]
    Kube(#[from] K8sError),
    /// The node has two podCIDRs of one family.
    #[error("node {node} has more than one {family} podCIDR: {cidrs:?}")]
    PodCidrs {
        /// The node.
        node: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// All of them.
        cidrs: Vec<IpNet>,
    },
    /// Reading the host's interfaces failed.
    #[error("cannot read the node's interfaces: {0}")]
    HostInterfaces(String),
    /// No transport interface and no `mtu` to fall back on.
    #[error("no transport interface for node {node}: {source}; set `mtu` in the agent config to run without one")]
    Transport {
        /// The node.
        node: String,
        /// Why.
        source: TransportError,
    },
    /// The MTU plan is impossible.
    #[error(transparent)]
    Mtu(#[from] MtuError),
    /// OVSDB failed.
    #[error("bridge {bridge}: {source}")]
    Ovsdb {
        /// The bridge.
        bridge: String,
        /// Why.
        source: OvsdbError,
    },
    /// The gateway could not be converged.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The tunnel port could not be converged.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The flows could not be installed.
    #[error(transparent)]
    Flows(#[from] FlowError),
    /// IPAM could not be opened or reconciled.
    #[error("ipam: {0}")]
    Ipam(#[from] IpamError),
    /// The node's namespace could not be opened.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The interface manager could not start.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// The uplink could not be attached or detached.
    #[error(transparent)]
    Uplink(#[from] crate::uplink::UplinkError),
    /// Rebuilding the pod store failed.
    #[error("rebuilding pods from ovs: {0}")]
    Rebuild(String),
    /// The datapath lacks a feature the pipeline needs.
    #[error(transparent)]
    Datapath(#[from] super::dpfeatures::MissingFeature),
}

/// The transport side of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportPlan {
    /// The traffic mode.
    pub mode: TrafficMode,
    /// The transport interface, if one was found.
    pub transport: Option<String>,
    /// The transport (tunnel endpoint) address: the address on the transport interface that
    /// chose it (node IP, `transportInterfaceCIDRs`), else its first of the node IP's family.
    pub address: Option<IpAddr>,
    /// The transport interface's subnets (its addresses' networks): the noEncap segment.
    pub subnets: Vec<IpNet>,
    /// The MTU of every interface kind.
    pub plan: MtuPlan,
}

impl TransportPlan {
    /// The underlay's family: the transport address's (IPv4 when there is none).
    pub fn underlay(&self) -> Family {
        self.address.as_ref().map_or(Family::Ipv4, family)
    }
}

/// The config keys the transport plan depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// `trafficEncapMode` + `tunnelType`.
    pub mode: TrafficMode,
    /// `transportInterface` (empty: not set).
    pub interface: String,
    /// `transportInterfaceCIDRs`.
    pub cidrs: Vec<IpNet>,
    /// `transportMTU` (0: read from the interface).
    pub transport_mtu: u32,
    /// `mtu` (0: planned).
    pub configured_mtu: u32,
}

impl TransportConfig {
    /// The keys of `config`.
    pub fn from_config(config: &AgentConfig) -> Self {
        TransportConfig {
            mode: config.traffic_mode(),
            interface: config.transport_interface.clone(),
            cidrs: config.transport_cidrs(),
            transport_mtu: config.transport_mtu,
            configured_mtu: config.mtu,
        }
    }
}

/// Plans the MTU from the config keys: the transport interface is chosen by
/// `transportInterface`, else `transportInterfaceCIDRs`, else as the one holding one of the
/// node's InternalIPs; the underlay family is the transport address's; the transport MTU is
/// `transportMTU`, else the interface's. GRE over an IPv6 underlay and an `mtu` above what the
/// mode allows are refused here, at start.
pub fn plan_transport_with(
    tc: &TransportConfig,
    node: &LocalNode,
    interfaces: &[HostInterface],
) -> Result<TransportPlan, BootstrapError> {
    let explicit = !tc.interface.is_empty() || !tc.cidrs.is_empty();
    let chosen = if explicit {
        let selector = TransportSelector {
            name: (!tc.interface.is_empty()).then(|| tc.interface.clone()),
            cidrs: tc.cidrs.clone(),
            node_ip: None,
        };
        let iface = mtu::select_transport(&selector, interfaces).map_err(|source| {
            BootstrapError::Transport {
                node: node.name.clone(),
                source,
            }
        })?;
        Some((
            iface,
            transport_address(iface, &tc.cidrs, &node.internal_ips),
        ))
    } else {
        node.internal_ips.iter().find_map(|ip| {
            let selector = TransportSelector {
                node_ip: Some(*ip),
                ..TransportSelector::default()
            };
            mtu::select_transport(&selector, interfaces)
                .ok()
                .map(|iface| (iface, Some(*ip)))
        })
    };
    if let Some((iface, address)) = chosen {
        let plan = mtu::plan(&MtuInput {
            mode: tc.mode,
            underlay: address.as_ref().map_or(Family::Ipv4, family),
            transport_mtu: if tc.transport_mtu != 0 {
                tc.transport_mtu
            } else {
                iface.mtu
            },
            configured_mtu: tc.configured_mtu,
        })?;
        return Ok(TransportPlan {
            mode: tc.mode,
            transport: Some(iface.name.clone()),
            address,
            subnets: iface.addrs.iter().map(IpNet::trunc).collect(),
            plan,
        });
    }
    let mut fallback = plan_without_transport(node, tc.configured_mtu, tc.mode)?;
    if tc.transport_mtu != 0 && tc.configured_mtu == 0 {
        // No interface to read, but the operator told us the transport MTU.
        fallback.plan = mtu::plan(&MtuInput {
            mode: tc.mode,
            underlay: node.internal_ips.first().map_or(Family::Ipv4, family),
            transport_mtu: tc.transport_mtu,
            configured_mtu: 0,
        })?;
    }
    Ok(fallback)
}

/// The address of `iface` to use as transport address: one inside `cidrs`, else a node IP it
/// holds, else its first address of the first node IP's family, else its first address.
pub fn transport_address(
    iface: &HostInterface,
    cidrs: &[IpNet],
    node_ips: &[IpAddr],
) -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = iface.addrs.iter().map(IpNet::addr).collect();
    addrs
        .iter()
        .find(|a| cidrs.iter().any(|c| c.contains(*a)))
        .or_else(|| addrs.iter().find(|a| node_ips.contains(a)))
        .or_else(|| {
            let v4 = node_ips.first().is_none_or(IpAddr::is_ipv4);
            addrs.iter().find(|a| a.is_ipv4() == v4)
        })
        .or_else(|| addrs.first())
        .copied()
}

/// Plans the MTU with every transport key at its default (encap/geneve, the interface holding
/// a node InternalIP, its MTU) and `configured_mtu` as `mtu`.
pub fn plan_transport(
    node: &LocalNode,
    configured_mtu: u32,
    interfaces: &[HostInterface],
) -> Result<TransportPlan, BootstrapError> {
    plan_transport_with(
        &TransportConfig {
            mode: DEFAULT_MODE,
            interface: String::new(),
            cidrs: Vec::new(),
            transport_mtu: 0,
            configured_mtu,
        },
        node,
        interfaces,
    )
}

/// Without a transport interface, `configured_mtu` (if not 0) is taken as the pod MTU and the
/// transport is assumed to carry it plus the mode's IPv4 overhead.
fn plan_without_transport(
    node: &LocalNode,
    configured_mtu: u32,
    mode: TrafficMode,
) -> Result<TransportPlan, BootstrapError> {
    let last_error = match node.internal_ips.last() {
        Some(ip) => TransportError::NoneWithNodeIp(*ip),
        None => TransportError::NothingToChooseBy,
    };
    if configured_mtu == 0 {
        return Err(BootstrapError::Transport {
            node: node.name.clone(),
            source: last_error,
        });
    }
    let overhead = match mode {
        TrafficMode::Encap(tunnel) => tunnel.ipv4_overhead(),
        TrafficMode::NoEncap => 0,
    };
    let plan = mtu::plan(&MtuInput {
        mode,
        underlay: Family::Ipv4,
        transport_mtu: configured_mtu + overhead,
        configured_mtu,
    })?;
    Ok(TransportPlan {
        mode,
        transport: None,
        address: None,
        subnets: Vec::new(),
        plan,
    })
}

fn family(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// The round after the one recorded in the bridge's external_ids (0 if none or unreadable).
pub fn next_round(bridge_ids: &BTreeMap<String, String>) -> u16 {
    bridge_ids
        .get(ROUND_KEY)
        .and_then(|r| r.parse::<u16>().ok())
        .map_or(0, |r| r.wrapping_add(1))
}

/// Checks that the node has at most one podCIDR per family.
pub fn check_pod_cidrs(node: &LocalNode) -> Result<(), BootstrapError> {
    for (v4, family) in [(true, "IPv4"), (false, "IPv6")] {
        let of_family: Vec<IpNet> = node
            .pod_cidrs
            .iter()
            .filter(|c| matches!(c, IpNet::V4(_)) == v4)
            .copied()
            .collect();
        if of_family.len() > 1 {
            return Err(BootstrapError::PodCidrs {
                node: node.name.clone(),
                family,
                cidrs: node.pod_cidrs.clone(),
            });
        }
    }
    Ok(())
}

/// Every interface of the namespace `handle` talks to, with its MTU and addresses.
pub async fn host_interfaces(
    handle: &rtnetlink::Handle,
) -> Result<Vec<HostInterface>, BootstrapError> {
    let err = |e: rtnetlink::Error| BootstrapError::HostInterfaces(e.to_string());
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err)?;
    let addresses: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err)?;
    let mut interfaces = Vec::new();
    for link in links {
        let mut name = None;
        let mut mtu = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                _ => {}
            }
        }
        let (Some(name), Some(mtu)) = (name, mtu) else {
            continue;
        };
        let addrs = addresses
            .iter()
            .filter(|a| a.header.index == link.header.index)
            .filter(|a| a.header.scope == AddressScope::Universe)
            .filter_map(|a| {
                let ip = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                IpNet::new(ip, a.header.prefix_len).ok()
            })
            .collect();
        interfaces.push(HostInterface { name, mtu, addrs });
    }
    Ok(interfaces)
}

/// What bootstrap produced.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The pod network to hand to the CNI server.
    pub network: std::sync::Arc<PodNetwork>,
    /// The applied transport plan.
    pub transport: TransportPlan,
    /// The restart round of the installed flows.
    pub round: u16,
    /// The gateway as converged.
    pub gateway: GatewaySpec,
    /// What the pod store rebuild found.
    pub rebuild: RebuildReport,
    /// Rounds whose flows were deleted.
    pub stale_rounds: Vec<u16>,
    /// The mode switch, the uplink and the pods' MTUs against the plan.
    pub uplink: crate::uplink::StartReport,
    /// noEncap with the uplink attached: this node's uplink MAC (published for the peers).
    pub uplink_mac: Option<MacAddr>,
    /// How peers are reached (`None`: not at all, noEncap without an attached uplink).
    pub peer_path: Option<PeerPath>,
}

/// Runs steps 2-6 for `node` (whose podCIDRs are known) on a converged bridge.
pub async fn bootstrap(
    config: &AgentConfig,
    ovs: &Ovs,
    node: &LocalNode,
    peers: Option<PeerNodes>,
) -> Result<Bootstrapped, BootstrapError> {
    check_pod_cidrs(node)?;
    let bridge = config.ovs_bridge.clone();
    let ovs_err = |source| BootstrapError::Ovsdb {
        bridge: bridge.clone(),
        source,
    };
    let host = Netns::current()?;
    let host_nl = host.rtnetlink().await?;

    let mut interfaces = host_interfaces(&host_nl).await?;
    // While the NIC is attached its MTU is the one recorded before the attach, never what the
    // bridge's ports left on the internal port (field report 2).
    if let Some(nic) =
        crate::uplink::recorded_nic(&crate::uplink::journal::path_in(&config.data_dir))
    {
        for iface in interfaces.iter_mut().filter(|i| i.name == nic.name) {
            iface.mtu = nic.mtu;
        }
    }
    let transport = plan_transport_with(&TransportConfig::from_config(config), node, &interfaces)?;
    let plan = transport.plan;
    tracing::info!(
        mode = %transport.mode, transport = ?transport.transport, pod_mtu = plan.pod,
        gateway_mtu = plan.gateway, uplink_mtu = plan.uplink, "mtu plan"
    );

    let record = Record::Bridge(bridge.clone());
    let ids = ovs.external_ids(&record).await.map_err(ovs_err)?;
    let round = next_round(&ids);
    let applied = BTreeMap::from([
        (ROUND_KEY.to_string(), round.to_string()),
        (MODE_KEY.to_string(), transport.mode.to_string()),
        (
            MTU_PLAN_KEY.to_string(),
            serde_json::to_string(&plan).unwrap_or_default(),
        ),
        (
            TRANSPORT_KEY.to_string(),
            transport.transport.clone().unwrap_or_default(),
        ),
    ]);
    ovs.set_external_ids(&record, &applied)
        .await
        .map_err(ovs_err)?;
    tracing::info!(round, previous = ?ids.get(ROUND_KEY), "restart round persisted");

    let gateway = GatewaySpec::new(
        &config.node_name,
        &config.host_gateway,
        plan.gateway,
        &node.pod_cidrs,
    );
    gateway::ensure_port(ovs, &bridge, &gateway).await?;

    // encap: the tunnel port (noEncap: the mode switch in `uplink::at_start` removes it).
    if let Some(spec) = TunnelSpec::desired(config.tunnel_port, transport.mode, &plan) {
        tunnel::ensure(ovs, &bridge, &spec).await?;
        tracing::info!(port = tunnel::TUNNEL_PORT, kind = spec.tunnel.as_str(), dst_port = ?config.effective_tunnel_port(), mtu = spec.mtu, "tunnel port converged");
    }
    let changes = gateway::ensure_link(&host_nl, host.path(), &gateway).await?;
    tracing::info!(gateway = %gateway.name, mac = %gateway.mac, ?changes, "gateway converged");

    let node_config = NodeConfig {
        round,
        gateway_mac: gateway.mac,
        gateway_ips: gateway.ips(),
        pod_cidrs: node.pod_cidrs.clone(),
        node_ips: node.internal_ips.clone(),
    };
    // Pod flows are built by the same constructions as the base pipeline's (the gateway's
    // responders are the pods' too): the base flows carry every feature the pipeline needs.
    super::dpfeatures::check(config, &ovs_flows::pipeline::base_flows(&node_config)).await?;
    let flows = FlowSet::connect(
        config.bridge_mgmt_socket(),
        node_config.clone(),
        ovs.clone(),
    )
    .await?;
    // The mode switch (tunnel port removed in noEncap) and the uplink: attached in noEncap and
    // for encap on netdev, detached otherwise; the journal finishes whatever a killed run left.
    let mut uplink = crate::uplink::at_start(
        &crate::uplink::StartInput {
            config,
            mode: transport.mode,
            plan,
            transport: transport.transport.clone(),
            applied: &ids,
            node: &node_config,
        },
        ovs,
        &flows,
        &host,
    )
    .await?;
    // noEncap reaches peers at their uplink MAC, from this node's (the NIC's, recorded).
    let uplink_mac = match (transport.mode, &uplink.uplink) {
        (TrafficMode::NoEncap, Some(spec)) => {
            crate::uplink::recorded_nic(&spec.journal).and_then(|nic| MacAddr::parse(&nic.mac))
        }
        _ => None,
    };
    flows.set_infrastructure(Infrastructure {
        tunnel: matches!(transport.mode, TrafficMode::Encap(_)),
        uplink_mac,
    });
    let peer_path = match (transport.mode, uplink_mac) {
        (TrafficMode::Encap(_), _) => Some(PeerPath::Tunnel),
        (TrafficMode::NoEncap, Some(_)) => Some(PeerPath::Underlay {
            segment: transport.subnets.clone(),
        }),
        (TrafficMode::NoEncap, None) => None,
    };
    if let (Some(path), Some(view)) = (&peer_path, &peers) {
        let underlay = transport.address.as_ref().map_or(Family::Ipv4, family);
        let (desired, _) = super::peers::desired_peers(view, underlay, path);
        for (peer, reason) in flows.preset_peers(desired.into_values().collect()) {
            tracing::warn!(%peer, %reason, "peer node left without flows");
        }
    }

    let ipam = SharedIpam::start(Ipam::open(
        &node.pod_cidrs,
        FileStore::in_dir(&config.data_dir),
    )?)?;
    let network = PodNetwork::new(
        crate::cniserver::attach_config(config, plan, gateway.clone()),
        ovs.clone(),
        flows.clone(),
        VethManager::new(host.clone()).await?,
        ipam,
    );
    let rebuild = network
        .rebuild()
        .await
        .map_err(|e| BootstrapError::Rebuild(e.to_string()))?;
    if !rebuild.swept.is_empty() {
        tracing::warn!(
            swept = rebuild.swept.len(),
            "start sweep removed half-made attachments"
        );
    }
    for reason in &rebuild.unreadable {
        tracing::warn!(%reason, "ignoring unreadable pod port");
    }
    let (pods, fixed) = crate::uplink::check_pods(
        ovs,
        &host,
        &network.records(),
        plan.pod,
        config.reconcile_pod_mtu,
    )
    .await;
    uplink.pods = pods;
    uplink.fixed = fixed;
    // The NetworkPolicy realized by the previous run goes into this round's first bundle: no
    // isolated pod is open while the old round is deleted and the view is listed again.
    let local_pods = network.local_pods();
    if let Some(saved) = super::policy::load_saved(&config.data_dir) {
        // A pod the saved policy does not know was added after the last realization (the
        // previous run stopped in between): it was held then, it stays held now.
        let (policy, unrealized) = super::policy::preset_with_holds(saved, &local_pods);
        tracing::info!(
            rules = policy.rules.len(),
            held = policy.unknown.len(),
            ?unrealized,
            "networkpolicy of the previous run preset"
        );
        flows.preset_policy(policy);
    }
    let rejected = flows.install_all(local_pods).await?;
    for (pod, reason) in rejected {
        tracing::warn!(pod = %pod.key(), ofport = pod.ofport, %reason, "pod left without flows");
    }
    let stale_rounds = flows.delete_stale_rounds().await?;
    ovs.set_flow_restore_wait(false).await.map_err(ovs_err)?;
    tracing::info!(
        round, pods = rebuild.pods, released = ?rebuild.released, swept = rebuild.swept.len(), ?stale_rounds,
        "pipeline installed, flow-restore-wait cleared"
    );
    Ok(Bootstrapped {
        network: std::sync::Arc::new(network),
        transport,
        round,
        gateway,
        rebuild,
        stale_rounds,
        uplink,
        uplink_mac,
        peer_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ips: &[&str]) -> LocalNode {
        LocalNode {
            name: "n1".into(),
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            annotations: BTreeMap::new(),
        }
    }

    fn iface(name: &str, mtu: u32, addrs: &[&str]) -> HostInterface {
        HostInterface {
            name: name.into(),
            mtu,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn transport_is_the_interface_holding_the_node_ip() {
        let ifaces = [
            iface("lo", 65536, &["127.0.0.1/8"]),
            iface("eth0", 9000, &["192.168.1.10/24"]),
        ];
        let plan = plan_transport(&node(&["192.168.1.10"]), 0, &ifaces).unwrap();
        assert_eq!(plan.transport.as_deref(), Some("eth0"));
        assert_eq!(plan.mode.to_string(), "encap/geneve");
        assert_eq!((plan.plan.pod, plan.plan.uplink), (8950, 9000));
        // IPv6 underlay costs 20 more.
        let ifaces6 = [iface("eth0", 1500, &["2001:db8::10/64"])];
        let plan6 = plan_transport(&node(&["2001:db8::10"]), 0, &ifaces6).unwrap();
        assert_eq!(plan6.plan.pod, 1430);
        // The configured MTU wins, within what the mode allows.
        assert_eq!(
            plan_transport(&node(&["192.168.1.10"]), 1400, &ifaces)
                .unwrap()
                .plan
                .pod,
            1400
        );
    }

    #[test]
    fn no_transport_needs_a_configured_mtu() {
        let ifaces = [iface("eth0", 1500, &["10.0.0.1/24"])];
        let err = plan_transport(&node(&["192.168.1.10"]), 0, &ifaces).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no transport interface for node n1: no interface holds the node IP 192.168.1.10; set `mtu` in the agent config to run without one"
        );
        let err = plan_transport(&node(&[]), 0, &ifaces).unwrap_err();
        assert!(err.to_string().contains("no transportInterface"), "{err}");
        let plan = plan_transport(&node(&[]), 1400, &ifaces).unwrap();
        assert_eq!((plan.transport, plan.plan.pod), (None, 1400));
    }

    #[test]
    fn rounds_increase_and_wrap() {
        let ids = |r: &str| BTreeMap::from([(ROUND_KEY.to_string(), r.to_string())]);
        assert_eq!(next_round(&BTreeMap::new()), 0);
        assert_eq!(next_round(&ids("4")), 5);
        assert_eq!(next_round(&ids("65535")), 0);
        assert_eq!(next_round(&ids("junk")), 0);
    }

    #[test]
    fn one_pod_cidr_per_family() {
        let mut n = node(&[]);
        n.pod_cidrs.push("fd00::/64".parse().unwrap());
        assert!(check_pod_cidrs(&n).is_ok());
        n.pod_cidrs.push("10.244.2.0/24".parse().unwrap());
        assert!(check_pod_cidrs(&n)
            .unwrap_err()
            .to_string()
            .contains("more than one IPv4 podCIDR"));
    }
}
