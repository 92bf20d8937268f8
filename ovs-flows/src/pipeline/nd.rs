//! NeighborDiscovery: IPv6 neighbor solicitations for a gateway or local pod address are
//! relayed to the address's owner, and advertisements to their destination, with the
//! solicitor's / advertiser's link-layer address (and Ethernet source) rewritten to
//! [`VIRTUAL_MAC`]. Every neighbor entry a pod or the host learns is thus the virtual MAC, as
//! with ARP. Relayed packets leave directly from this table: no TTL decrement (hop limit must
//! stay 255) and no L3 forwarding.
//!
//! Answering solicitations inside the pipeline (as ARP is) needs `nd_reserved` and
//! `nd_options_type` set-fields (OVS >= 2.12), which the flow model does not have yet; see
//! docs/ovs-pipeline.md.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::spoofguard::{LINK_LOCAL, ND_NA, ND_NS};
use super::tables::NEIGHBOR_DISCOVERY;
use super::{pod_ipv6, ports, priority, set_mac, Category, Ctx, LocalPod, VIRTUAL_MAC};
use crate::flow::{Action, Field, Flow, MacAddr, Match};

/// ICMPv6 types of neighbor discovery (RS, RA, NS, NA, redirect).
const ND_TYPES: [u8; 5] = [133, 134, ND_NS, ND_NA, 137];

/// Relays for the gateway's IPv6 addresses, advertisements to link-local destinations to the
/// gateway, and drops of every other neighbor discovery message.
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let mut flows = Vec::new();
    if !ctx.cfg.has_ipv6() {
        return flows;
    }
    let cookie = ctx.cfg.cookie(Category::Gateway);
    let gw_mac = ctx.cfg.gateway_mac;
    for ip in ctx.gateway_ipv6() {
        flows.extend(relay(ctx, cookie, ip, gw_mac, ports::GATEWAY));
    }
    flows.push(ctx.flow(
        &NEIGHBOR_DISCOVERY,
        priority::NORMAL,
        cookie,
        Match::new().icmp6().ipv6_dst(LINK_LOCAL).icmpv6_type(ND_NA),
        advertisement_to(gw_mac, ports::GATEWAY),
    ));
    let pipeline = ctx.cfg.cookie(Category::Pipeline);
    for t in ND_TYPES {
        flows.push(ctx.flow(
            &NEIGHBOR_DISCOVERY,
            priority::DEFAULT,
            pipeline,
            Match::new().icmp6().icmpv6_type(t),
            Vec::new(),
        ));
    }
    flows
}

/// Relays for the pod's IPv6 addresses.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    pod_ipv6(pod)
        .flat_map(|ip| relay(ctx, cookie, ip, pod.mac, pod.ofport))
        .collect()
}

/// Solicitations for `ip` and advertisements to `ip` go to `owner` (MAC `mac`).
fn relay(ctx: &Ctx<'_>, cookie: u64, ip: Ipv6Addr, mac: MacAddr, owner: u32) -> Vec<Flow> {
    vec![
        ctx.flow(
            &NEIGHBOR_DISCOVERY,
            priority::NORMAL,
            cookie,
            Match::new().icmp6().icmpv6_type(ND_NS).nd_target(ip),
            vec![
                set_mac(Field::EthSrc, VIRTUAL_MAC),
                set_mac(Field::EthDst, mac),
                set_mac(Field::NdSll, VIRTUAL_MAC),
                Action::Output(owner),
            ],
        ),
        ctx.flow(
            &NEIGHBOR_DISCOVERY,
            priority::NORMAL,
            cookie,
            Match::new()
                .icmp6()
                .ipv6_dst(Ipv6Net::from(ip))
                .icmpv6_type(ND_NA),
            advertisement_to(mac, owner),
        ),
    ]
}

fn advertisement_to(mac: MacAddr, owner: u32) -> Vec<Action> {
    vec![
        set_mac(Field::EthSrc, VIRTUAL_MAC),
        set_mac(Field::EthDst, mac),
        set_mac(Field::NdTll, VIRTUAL_MAC),
        Action::Output(owner),
    ]
}
