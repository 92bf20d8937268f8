//! Peer nodes in encap mode: the flow-based tunnel port's classification and L2 flows, one
//! peer's routes (pod CIDRs -> `tun_dst`, out the tunnel) and the answers for its gateway IPs.
//!
//! - [`tunnel_flows`]: packets entering by [`ports::TUNNEL`] are marked
//!   [`SourceKind::Tunnel`] and go straight to routing (no SpoofGuard: peers are trusted, and
//!   their pods were guarded on their own node); frames whose destination MAC is
//!   [`VIRTUAL_MAC`] after routing leave by the tunnel.
//! - [`peer_flows`]: per peer pod CIDR, L3Forwarding at [`priority::NORMAL`] sets both MACs to
//!   the virtual MAC and the tunnel destination to the peer's transport address, then L3DecTTL;
//!   the ARP and ND responders answer the peer's gateway IPs (the host routes peer pod CIDRs
//!   `via PEER_GATEWAY dev GATEWAY onlink`).
//!
//! The netdev datapath's native tunnels also need the uplink on the bridge (the tunnel endpoint
//! IP on the host internal port): [`super::uplink`] passes everything between the NIC and that
//! port through; OVS terminates tunnel packets output to the host internal port and sends
//! encapsulated packets as if they entered by it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::regs::{SourceKind, TARGET_OFPORT};
use super::tables::{CLASSIFIER, L2_FORWARDING_CALC, L3_DEC_TTL, L3_FORWARDING};
use super::{
    arp, nd, ports, priority, set_mac, Category, Cookie, CookieFilter, Ctx, NodeConfig,
    PipelineError, VIRTUAL_MAC,
};
use crate::flow::{Action, Field, Flow, Match};
use crate::ofp::FlowMod;

/// Another node of the cluster, as the pipeline routes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNode {
    /// Node name (for messages).
    pub name: String,
    /// Cookie object id of the peer's flows, unique among the peers of one agent run.
    pub id: u64,
    /// The peer's pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The peer's tunnel endpoint (its transport address).
    pub transport_ip: IpAddr,
}

impl PeerNode {
    /// The cookie of this peer's flows in `round`.
    pub fn cookie(&self, round: u16) -> u64 {
        Cookie::new(round, Category::Peer)
            .with_object(self.id)
            .to_u64()
    }

    /// The peer's gateway IPs: the first address of each pod CIDR (as on the peer itself).
    pub fn gateway_ips(&self) -> Vec<IpAddr> {
        self.pod_cidrs.iter().filter_map(first_host).collect()
    }

    /// Checks that the peer can be routed from the node `cfg` describes.
    pub fn validate(&self, cfg: &NodeConfig) -> Result<(), PipelineError> {
        if self.pod_cidrs.is_empty() {
            return Err(PipelineError::PeerWithoutPodCidr {
                peer: self.name.clone(),
            });
        }
        if let Some(cidr) = self.pod_cidrs.iter().find(|c| {
            cfg.pod_cidrs
                .iter()
                .any(|own| own.contains(&c.network()) || c.contains(&own.network()))
        }) {
            return Err(PipelineError::PeerCidrOverlap {
                peer: self.name.clone(),
                cidr: *cidr,
            });
        }
        let ip = self.transport_ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(PipelineError::PeerTransportIp {
                peer: self.name.clone(),
                ip,
            });
        }
        if self.id == 0 || self.id > super::OBJECT_MASK {
            return Err(PipelineError::PeerId {
                peer: self.name.clone(),
                id: self.id,
            });
        }
        Ok(())
    }
}

/// The first host address of `cidr` (`None` for a /32 or /128).
fn first_host(cidr: &IpNet) -> Option<IpAddr> {
    let cidr = cidr.trunc();
    cidr.hosts().find(|ip| *ip != cidr.network())
}

/// The tunnel port's classification and its L2 flow (cookie category Tunnel).
pub fn tunnel_flows(cfg: &NodeConfig) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = cfg.cookie(Category::Tunnel);
    vec![
        ctx.flow(
            &CLASSIFIER,
            priority::NORMAL,
            cookie,
            Match::new().in_port(ports::TUNNEL),
            vec![
                SourceKind::Tunnel.load(),
                ctx.goto_next(&super::tables::NEIGHBOR_DISCOVERY),
            ],
        ),
        ctx.flow(
            &L2_FORWARDING_CALC,
            priority::NORMAL,
            cookie,
            Match::new().eth_dst(VIRTUAL_MAC),
            vec![
                TARGET_OFPORT.load(ports::TUNNEL),
                ctx.goto_next(&L2_FORWARDING_CALC),
            ],
        ),
    ]
}

/// One peer's flows (cookie category Peer, object id = [`PeerNode::id`]): routes to its pod
/// CIDRs through the tunnel and answers for its gateway IPs. Validate the peer first.
pub fn peer_flows(cfg: &NodeConfig, peer: &PeerNode) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = peer.cookie(cfg.round);
    let tun_dst = match peer.transport_ip {
        IpAddr::V4(v4) => Action::set_field(Field::TunDst, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => Action::set_field(Field::TunIpv6Dst, u128::from(v6)),
    };
    let mut flows = Vec::new();
    for cidr in &peer.pod_cidrs {
        let families_match = match cidr {
            IpNet::V4(_) => cfg.has_ipv4(),
            IpNet::V6(_) => cfg.has_ipv6(),
        };
        if !families_match {
            continue;
        }
        let to = match cidr {
            IpNet::V4(n) => Match::new().ip().nw_dst(*n),
            IpNet::V6(n) => Match::new().ipv6().ipv6_dst(*n),
        };
        flows.push(ctx.flow(
            &L3_FORWARDING,
            priority::NORMAL,
            cookie,
            to,
            vec![
                set_mac(Field::EthSrc, VIRTUAL_MAC),
                set_mac(Field::EthDst, VIRTUAL_MAC),
                tun_dst.clone(),
                ctx.goto(&L3_DEC_TTL),
            ],
        ));
    }
    flows.extend(peer_gateway_answers(cfg, peer));
    flows
}

/// The ARP and ND answers for `peer`'s gateway IPs (cookie category Peer, object id =
/// [`PeerNode::id`]): the host routes a peer's pod CIDRs `via PEER_GATEWAY dev GATEWAY onlink`
/// and resolves that next hop to [`VIRTUAL_MAC`]. Part of [`peer_flows`]; noEncap peers
/// (`noencap::noencap_peer_flows`) need them too.
pub fn peer_gateway_answers(cfg: &NodeConfig, peer: &PeerNode) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = peer.cookie(cfg.round);
    peer.gateway_ips()
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if cfg.has_ipv4() => Some(arp::answer(&ctx, cookie, v4)),
            IpAddr::V6(v6) if cfg.has_ipv6() => Some(nd::responder(&ctx, cookie, v6)),
            _ => None,
        })
        .collect()
}

/// The flow-mod deleting every flow of the peer with object id `id`, in every round.
pub fn delete_peer(id: u64) -> FlowMod {
    CookieFilter::object(Category::Peer, id).delete()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::MacAddr;

    fn node() -> NodeConfig {
        NodeConfig {
            round: 2,
            gateway_mac: MacAddr::new(0x0a, 0, 0, 0, 0, 1),
            gateway_ips: vec!["10.244.1.1".parse().unwrap(), "fd00:1::1".parse().unwrap()],
            pod_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
            node_ips: vec![],
        }
    }

    fn peer() -> PeerNode {
        PeerNode {
            name: "n2".into(),
            id: 7,
            pod_cidrs: vec![
                "10.244.2.0/24".parse().unwrap(),
                "fd00:2::/64".parse().unwrap(),
            ],
            transport_ip: "192.168.60.12".parse().unwrap(),
        }
    }

    fn text(flows: &[Flow]) -> Vec<String> {
        flows.iter().map(Flow::to_string).collect()
    }

    #[test]
    fn peer_routes_set_the_tunnel_destination() {
        let flows = text(&peer_flows(&node(), &peer()));
        assert_eq!(
            flows[0],
            "cookie=0x2040000000007, table=70, priority=200,ip,nw_dst=10.244.2.0/24 \
             actions=set_field:02:77:65:66:74:01->eth_src,set_field:02:77:65:66:74:01->eth_dst,\
             set_field:192.168.60.12->tun_dst,goto_table:71"
        );
        assert!(flows[1].contains("ipv6,ipv6_dst=fd00:2::/64"), "{flows:?}");
        assert!(flows[1].contains("set_field:192.168.60.12->tun_dst"));
        assert!(flows[2].contains("arp_tpa=10.244.2.1"), "{flows:?}");
        assert!(flows[3].contains("nd_target=fd00:2::1"), "{flows:?}");
        assert_eq!(flows.len(), 4);
        let mut v6 = peer();
        v6.transport_ip = "fd00:60::12".parse().unwrap();
        assert!(text(&peer_flows(&node(), &v6))[0].contains("set_field:fd00:60::12->tun_ipv6_dst"));
    }

    #[test]
    fn families_the_node_lacks_are_left_out() {
        let mut cfg = node();
        cfg.pod_cidrs.truncate(1);
        cfg.gateway_ips.truncate(1);
        let flows = text(&peer_flows(&cfg, &peer()));
        assert_eq!(flows.len(), 2, "{flows:?}");
        assert!(flows.iter().all(|f| !f.contains("ipv6")));
    }

    #[test]
    fn tunnel_flows_mark_and_leave_by_the_tunnel() {
        let flows = text(&tunnel_flows(&node()));
        assert_eq!(
            flows,
            [
                "cookie=0x2050000000000, table=20, priority=200,in_port=32768 \
                 actions=set_field:0x3/0xf->reg0,goto_table:40",
                "cookie=0x2050000000000, table=80, priority=200,dl_dst=02:77:65:66:74:01 \
                 actions=set_field:0x8000->reg1,goto_table:90",
            ]
        );
    }

    #[test]
    fn validation_names_the_peer_and_value() {
        let cfg = node();
        assert_eq!(peer().validate(&cfg), Ok(()));
        let mut p = peer();
        p.pod_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
        assert_eq!(
            p.validate(&cfg).unwrap_err().to_string(),
            "peer node n2 pod cidr 10.244.0.0/16 overlaps this node's pod cidrs"
        );
        let mut p = peer();
        p.pod_cidrs.clear();
        assert_eq!(
            p.validate(&cfg).unwrap_err().to_string(),
            "peer node n2 has no pod cidr"
        );
        let mut p = peer();
        p.transport_ip = "0.0.0.0".parse().unwrap();
        assert_eq!(
            p.validate(&cfg).unwrap_err().to_string(),
            "peer node n2 has unusable transport address 0.0.0.0"
        );
        let mut p = peer();
        p.id = 0;
        assert!(p.validate(&cfg).is_err());
    }

    #[test]
    fn delete_selects_one_peer_in_every_round() {
        let filter = CookieFilter::object(Category::Peer, 7);
        assert!(filter.selects(peer().cookie(2)));
        assert!(filter.selects(peer().cookie(9)));
        let mut other = peer();
        other.id = 8;
        assert!(!filter.selects(other.cookie(2)));
        let _ = delete_peer(7);
    }
}
