//! noEncap peers: pod traffic to a peer node's pod CIDRs leaves through the uplink with the
//! peer's uplink MAC as destination, when the peer sits on the same L2 segment (its uplink MAC
//! is known, published as the Node annotation `weft.dev/uplink-mac`). Without a usable MAC
//! nothing is installed here (the agent does not route such a peer at all: see
//! docs/ovs-pipeline.md).
//!
//! Per peer (cookie category [`Category::Peer`], object id = the peer's id):
//! - L3Forwarding, [`priority::NORMAL`]: `ip,nw_dst=PEER_CIDR` (or `ipv6,ipv6_dst=`) ->
//!   source MAC = the local uplink MAC, destination MAC = the peer's uplink MAC, L3DecTTL;
//! - L2ForwardingCalc, [`priority::NORMAL`]: `dl_dst=PEER_UPLINK_MAC` -> target port
//!   [`ports::UPLINK`].

use ipnet::IpNet;

use super::regs::{SourceKind, CT_ORIGIN_MAC, TARGET_OFPORT};
use super::tables::{L2_FORWARDING_CALC, L3_DEC_TTL, L3_FORWARDING};
use super::{ports, priority, set_mac, Category, Cookie, Ctx, NodeConfig};
use crate::flow::{ct_state, Action, Field, Flow, MacAddr, Match, SubField};

/// Replies of connections that entered by the uplink go back out of the uplink to the MAC the
/// connection came from (conntrack label [`CT_ORIGIN_MAC`]), whatever their destination:
/// L3Forwarding at [`priority::EXCEPTION`], `ct_state=+rpl+trk,ct_mark=4/0xf` -> source MAC =
/// this node's uplink MAC, destination MAC = the origin MAC, target port [`ports::UPLINK`],
/// L3DecTTL (L2ForwardingCalc keeps the target when no flow matches the MAC). Symmetric even
/// when the other end is not a peer's pods: a peer's host (host -> remote pod, NodePort with a
/// remote backend), a router. Cookie category [`Category::Uplink`]; noEncap only.
pub fn uplink_reply_flows(cfg: &NodeConfig, local_uplink_mac: MacAddr) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = cfg.cookie(Category::Uplink);
    let mut fams = Vec::new();
    if cfg.has_ipv4() {
        fams.push(Match::new().ip());
    }
    if cfg.has_ipv6() {
        fams.push(Match::new().ipv6());
    }
    fams.into_iter()
        .map(|fam| {
            ctx.flow(
                &L3_FORWARDING,
                priority::EXCEPTION,
                cookie,
                SourceKind::Uplink.matching_origin(fam.ct_state(ct_state::RPL | ct_state::TRK, 0)),
                vec![
                    set_mac(Field::EthSrc, local_uplink_mac),
                    Action::move_bits(CT_ORIGIN_MAC, SubField::full(Field::EthDst)),
                    TARGET_OFPORT.load(ports::UPLINK),
                    ctx.goto(&L3_DEC_TTL),
                ],
            )
        })
        .collect()
}

/// A peer node as noEncap forwarding sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoEncapPeer {
    /// Object id in the peer's cookies (stable per peer; chosen by the peer reconciler).
    pub id: u64,
    /// The peer's pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The peer's uplink MAC when it is on this node's L2 segment; `None`: route via the host.
    pub uplink_mac: Option<MacAddr>,
}

/// The flows reaching `peer`'s pods from this node, whose own uplink MAC is `local_uplink_mac`.
/// Empty when the peer is not on the same L2 segment or its MAC is unusable (zero, multicast).
pub fn noencap_peer_flows(
    cfg: &NodeConfig,
    local_uplink_mac: MacAddr,
    peer: &NoEncapPeer,
) -> Vec<Flow> {
    let Some(peer_mac) = peer.uplink_mac else {
        return Vec::new();
    };
    if peer_mac == MacAddr::default() || peer_mac.0[0] & 1 == 1 {
        return Vec::new();
    }
    let ctx = Ctx::new(cfg);
    let cookie = Cookie::new(cfg.round, Category::Peer)
        .with_object(peer.id)
        .to_u64();
    let mut flows: Vec<Flow> = peer
        .pod_cidrs
        .iter()
        .map(|cidr| {
            let m = match cidr {
                IpNet::V4(n) => Match::new().ip().nw_dst(*n),
                IpNet::V6(n) => Match::new().ipv6().ipv6_dst(*n),
            };
            ctx.flow(
                &L3_FORWARDING,
                priority::NORMAL,
                cookie,
                m,
                vec![
                    set_mac(Field::EthSrc, local_uplink_mac),
                    set_mac(Field::EthDst, peer_mac),
                    ctx.goto(&L3_DEC_TTL),
                ],
            )
        })
        .collect();
    if !flows.is_empty() {
        flows.push(ctx.flow(
            &L2_FORWARDING_CALC,
            priority::NORMAL,
            cookie,
            Match::new().eth_dst(peer_mac),
            vec![
                TARGET_OFPORT.load(ports::UPLINK),
                ctx.goto_next(&L2_FORWARDING_CALC),
            ],
        ));
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            round: 1,
            gateway_mac: MacAddr::new(0x0a, 0x58, 0, 0, 0, 1),
            gateway_ips: vec!["10.244.1.1".parse().unwrap()],
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            node_ips: Vec::new(),
        }
    }

    const LOCAL: MacAddr = MacAddr::new(0x52, 0x54, 0, 0, 0, 0x10);
    const PEER: MacAddr = MacAddr::new(0x52, 0x54, 0, 0, 0, 0x20);

    fn peer(mac: Option<MacAddr>) -> NoEncapPeer {
        NoEncapPeer {
            id: 7,
            pod_cidrs: vec![
                "10.244.2.0/24".parse().unwrap(),
                "fd00:10:244:2::/64".parse().unwrap(),
            ],
            uplink_mac: mac,
        }
    }

    #[test]
    fn golden_same_segment_peer() {
        let text: Vec<String> = noencap_peer_flows(&node(), LOCAL, &peer(Some(PEER)))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "cookie=0x1040000000007, table=70, priority=200,ip,nw_dst=10.244.2.0/24 actions=set_field:52:54:00:00:00:10->eth_src,set_field:52:54:00:00:00:20->eth_dst,goto_table:71",
                "cookie=0x1040000000007, table=70, priority=200,ipv6,ipv6_dst=fd00:10:244:2::/64 actions=set_field:52:54:00:00:00:10->eth_src,set_field:52:54:00:00:00:20->eth_dst,goto_table:71",
                "cookie=0x1040000000007, table=80, priority=200,dl_dst=52:54:00:00:00:20 actions=set_field:0x8002->reg1,goto_table:90",
            ]
        );
    }

    #[test]
    fn other_segment_or_bad_mac_means_host_routes() {
        assert!(noencap_peer_flows(&node(), LOCAL, &peer(None)).is_empty());
        let multicast = MacAddr::new(0x01, 0, 0x5e, 0, 0, 1);
        assert!(noencap_peer_flows(&node(), LOCAL, &peer(Some(multicast))).is_empty());
        assert!(noencap_peer_flows(&node(), LOCAL, &peer(Some(MacAddr::default()))).is_empty());
        let mut none = peer(Some(PEER));
        none.pod_cidrs.clear();
        assert!(noencap_peer_flows(&node(), LOCAL, &none).is_empty());
    }
}
