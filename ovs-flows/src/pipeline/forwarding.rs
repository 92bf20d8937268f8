//! L3Forwarding, L3DecTTL, L2ForwardingCalc and Output.
//!
//! Output is a single flow, `output:NXM_NX_REG1[]` (the target port L2ForwardingCalc loaded
//! into [`TARGET_OFPORT`]), above a drop of packets with no target (port 0).
//!
//! L3 forwarding routes on the destination IP whatever the destination MAC: a local pod's
//! address gets the pod's MAC (source: the virtual MAC) and a TTL decrement; a gateway IP or
//! anything else goes to the gateway with the gateway's MAC. Issue 4 adds peer pod CIDRs at
//! [`priority::NORMAL`] (set the tunnel destination or the peer's uplink MAC, then L3DecTTL).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::regs::{SourceKind, TARGET_OFPORT};
use super::spoofguard::LINK_LOCAL;
use super::tables::{L2_FORWARDING_CALC, L3_DEC_TTL, L3_FORWARDING, OUTPUT};
use super::{ports, priority, set_mac, Category, Ctx, LocalPod, VIRTUAL_MAC};
use crate::flow::{Action, Field, Flow, MacAddr, Match};

const MULTICAST_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4);
const BROADCAST_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::BROADCAST, 32);
const MULTICAST_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8);

/// A match on the destination address `net`.
fn to(net: IpNet) -> Match {
    match net {
        IpNet::V4(n) => Match::new().ip().nw_dst(n),
        IpNet::V6(n) => Match::new().ipv6().ipv6_dst(n),
    }
}

/// Routes to the gateway, drops of unroutable destinations, TTL decrement, and the gateway's
/// L2 and output flows.
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let gw = ctx.cfg.cookie(Category::Gateway);
    let pipeline = ctx.cfg.cookie(Category::Pipeline);
    let to_gateway = || {
        vec![
            set_mac(Field::EthSrc, VIRTUAL_MAC),
            set_mac(Field::EthDst, ctx.cfg.gateway_mac),
            ctx.goto(&L2_FORWARDING_CALC),
        ]
    };
    let mut flows = Vec::new();
    for ip in &ctx.cfg.gateway_ips {
        flows.push(ctx.flow(
            &L3_FORWARDING,
            priority::NORMAL,
            gw,
            to(IpNet::from(*ip)),
            to_gateway(),
        ));
    }
    // Local pod addresses no pod holds: never route them back and forth with the host.
    for cidr in &ctx.cfg.pod_cidrs {
        flows.push(ctx.flow(
            &L3_FORWARDING,
            priority::DISCARD,
            pipeline,
            to(*cidr),
            vec![],
        ));
    }
    let mut discard: Vec<IpNet> = Vec::new();
    if ctx.cfg.has_ipv4() {
        discard.extend([IpNet::V4(MULTICAST_V4), IpNet::V4(BROADCAST_V4)]);
    }
    if ctx.cfg.has_ipv6() {
        discard.extend([IpNet::V6(LINK_LOCAL), IpNet::V6(MULTICAST_V6)]);
    }
    for net in discard {
        flows.push(ctx.flow(&L3_FORWARDING, priority::DISCARD, pipeline, to(net), vec![]));
    }
    let families = [
        (ctx.cfg.has_ipv4(), Match::new().ip()),
        (ctx.cfg.has_ipv6(), Match::new().ipv6()),
    ];
    for (_, m) in families.iter().filter(|(on, _)| *on) {
        flows.push(ctx.flow(
            &L3_FORWARDING,
            priority::DEFAULT,
            gw,
            m.clone(),
            to_gateway(),
        ));
    }
    // The host already routed what it sends: no second decrement.
    flows.push(ctx.flow(
        &L3_DEC_TTL,
        priority::EXCEPTION,
        pipeline,
        SourceKind::Gateway.matching(Match::new()),
        vec![ctx.goto_next(&L3_DEC_TTL)],
    ));
    for (_, m) in families.iter().filter(|(on, _)| *on) {
        flows.push(ctx.flow(
            &L3_DEC_TTL,
            priority::NORMAL,
            pipeline,
            m.clone(),
            vec![Action::DecTtl, ctx.goto_next(&L3_DEC_TTL)],
        ));
    }
    flows.push(l2_flow(ctx, gw, ctx.cfg.gateway_mac, ports::GATEWAY));
    // Output: one flow for every port. OpenFlow port 0 is nobody's: no target, drop.
    flows.push(ctx.flow(
        &OUTPUT,
        priority::DISCARD,
        pipeline,
        TARGET_OFPORT.matching(Match::new(), 0),
        Vec::new(),
    ));
    flows.push(ctx.flow(
        &OUTPUT,
        priority::DEFAULT,
        pipeline,
        Match::new(),
        vec![Action::OutputReg(TARGET_OFPORT.subfield())],
    ));
    flows
}

/// Routes to the pod's addresses, and its L2 flow.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    let mut flows: Vec<Flow> = pod
        .ips
        .iter()
        .map(|ip: &IpAddr| {
            ctx.flow(
                &L3_FORWARDING,
                priority::NORMAL,
                cookie,
                to(IpNet::from(*ip)),
                vec![
                    set_mac(Field::EthSrc, VIRTUAL_MAC),
                    set_mac(Field::EthDst, pod.mac),
                    ctx.goto(&L3_DEC_TTL),
                ],
            )
        })
        .collect();
    flows.push(l2_flow(ctx, cookie, pod.mac, pod.ofport));
    flows
}

/// L2ForwardingCalc: `dl_dst=mac` targets `port` (Output sends it there).
fn l2_flow(ctx: &Ctx<'_>, cookie: u64, mac: MacAddr, port: u32) -> Flow {
    ctx.flow(
        &L2_FORWARDING_CALC,
        priority::NORMAL,
        cookie,
        Match::new().eth_dst(mac),
        vec![TARGET_OFPORT.load(port), ctx.goto_next(&L2_FORWARDING_CALC)],
    )
}
