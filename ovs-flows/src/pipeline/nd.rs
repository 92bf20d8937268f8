//! NeighborDiscovery: every IPv6 neighbor solicitation for a gateway or local pod address is
//! answered in the pipeline with [`VIRTUAL_MAC`], as ARP is; no neighbor discovery message is
//! ever forwarded.
//!
//! The solicitation becomes the advertisement in place, in two passes through the table:
//! 1. the responder for the address swaps the Ethernet and IPv6 addresses (the source
//!    becoming the solicited address), retypes the message (`icmpv6_type=136`, S and O flags
//!    in `nd_reserved`) and its source link-layer address option as a target link-layer
//!    address option (`nd_options_type=2`), marks it [`ND_REPLY`] and resubmits it;
//!    the flags and the option type are `move`d from [`ND_SCRATCH`], never `set_field`:
//!    OVS refuses a `set_field` on them where the datapath cannot match them (the kernel
//!    datapath has no "IPv6 ND Extension"), while ovs-vswitchd executes the rewrite itself on
//!    every datapath (all ND rewrites are slow-path actions on the kernel datapath anyway);
//! 2. the marked advertisement gets the virtual MAC as target link-layer address and goes
//!    back out the ingress port, hop limit still 255.
//!
//! Two passes, because OVS refuses `nd_tll` in a flow matching a solicitation, and writes the
//! option type before the link-layer address: set in the first pass, `nd_sll` would be lost.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::regs::{ND_REPLY, ND_SCRATCH};
use super::spoofguard::ND_NS;
use super::tables::NEIGHBOR_DISCOVERY;
use super::{pod_ipv6, priority, set_mac, Category, Ctx, LocalPod, VIRTUAL_MAC};
use crate::flow::{port, Action, Field, Flow, Match, SubField};

/// ICMPv6 type of a neighbor advertisement.
const ND_NA: u8 = 136;
/// ICMPv6 types of neighbor discovery (RS, RA, NS, NA, redirect).
const ND_TYPES: [u8; 5] = [133, 134, ND_NS, ND_NA, 137];
/// `nd_reserved` of a solicited advertisement: Solicited and Override flags, not Router.
const NA_FLAGS_SOLICITED_OVERRIDE: u32 = 0x6000_0000;
/// ND option type "target link-layer address".
const OPTION_TARGET_LLA: u8 = 2;

/// Responders for the gateway's IPv6 addresses, the second pass of every responder, and drops
/// of duplicate address detection probes and every other neighbor discovery message.
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let mut flows = Vec::new();
    if !ctx.cfg.has_ipv6() {
        return flows;
    }
    let cookie = ctx.cfg.cookie(Category::Gateway);
    for ip in ctx.gateway_ipv6() {
        flows.push(responder(ctx, cookie, ip));
    }
    let pipeline = ctx.cfg.cookie(Category::Pipeline);
    flows.push(
        ctx.flow(
            &NEIGHBOR_DISCOVERY,
            priority::NORMAL,
            pipeline,
            ND_REPLY
                .matching(Match::new().icmp6(), 1)
                .icmpv6_type(ND_NA),
            vec![
                set_mac(Field::NdTll, VIRTUAL_MAC),
                Action::Output(port::IN_PORT),
            ],
        ),
    );
    // A DAD probe (source ::) is never answered: the owner's own probe must pass, and nobody
    // else may take an address of this node anyway (SpoofGuard, IPAM).
    flows.push(
        ctx.flow(
            &NEIGHBOR_DISCOVERY,
            priority::EXCEPTION,
            pipeline,
            Match::new()
                .icmp6()
                .ipv6_src(Ipv6Net::from(Ipv6Addr::UNSPECIFIED))
                .icmpv6_type(ND_NS),
            Vec::new(),
        ),
    );
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

/// Responders for the pod's IPv6 addresses.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    pod_ipv6(pod).map(|ip| responder(ctx, cookie, ip)).collect()
}

/// First pass of the answer to solicitations for `ip` (local addresses and peer gateway IPs).
pub(super) fn responder(ctx: &Ctx<'_>, cookie: u64, ip: Ipv6Addr) -> Flow {
    let actions = vec![
        Action::move_bits(SubField::full(Field::EthSrc), SubField::full(Field::EthDst)),
        set_mac(Field::EthSrc, VIRTUAL_MAC),
        Action::move_bits(
            SubField::full(Field::Ipv6Src),
            SubField::full(Field::Ipv6Dst),
        ),
        Action::set_field(Field::Ipv6Src, u128::from(ip)),
        Action::set_field(Field::Icmpv6Type, u128::from(ND_NA)),
        ND_SCRATCH.load(NA_FLAGS_SOLICITED_OVERRIDE),
        Action::move_bits(ND_SCRATCH.subfield(), SubField::full(Field::NdReserved)),
        ND_SCRATCH.load(u32::from(OPTION_TARGET_LLA)),
        Action::move_bits(
            SubField::bits(Field::Reg(ND_SCRATCH.reg), 0, 7),
            SubField::full(Field::NdOptionsType),
        ),
        ND_REPLY.load(1),
        Action::resubmit_table(ctx.reg.number(&NEIGHBOR_DISCOVERY)),
    ];
    ctx.flow(
        &NEIGHBOR_DISCOVERY,
        priority::NORMAL,
        cookie,
        Match::new().icmp6().icmpv6_type(ND_NS).nd_target(ip),
        actions,
    )
}
