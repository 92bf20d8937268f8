//! ARPSpoofGuard and ARPResponder: every ARP request for a gateway IP or a local pod IP is
//! answered in the pipeline with [`VIRTUAL_MAC`]; no ARP is ever forwarded.

use std::net::Ipv4Addr;

use super::tables::{ARP_RESPONDER, ARP_SPOOF_GUARD};
use super::{pod_ipv4, ports, priority, set_mac, Category, Ctx, LocalPod, VIRTUAL_MAC};
use crate::flow::{port, Action, Field, Flow, Match, SubField};

/// ARP opcode of a request.
const ARP_REQUEST: u16 = 1;
/// ARP opcode of a reply.
const ARP_REPLY: u16 = 2;

/// The gateway port may send any ARP (the host is trusted); requests for a gateway IP are
/// answered, except the host's own (gratuitous/probe) requests for it.
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let cookie = ctx.cfg.cookie(Category::Gateway);
    let mut flows = Vec::new();
    if !ctx.cfg.has_ipv4() {
        return flows;
    }
    flows.push(ctx.flow(
        &ARP_SPOOF_GUARD,
        priority::NORMAL,
        cookie,
        Match::new().arp().in_port(ports::GATEWAY),
        vec![ctx.goto(&ARP_RESPONDER)],
    ));
    for ip in ctx.gateway_ipv4() {
        flows.extend(responder(ctx, cookie, ip, ports::GATEWAY));
    }
    flows
}

/// ARP from the pod must carry its MAC and one of its IPv4 addresses; requests for the pod's
/// IPs (from the host or other pods) are answered, except the pod's own requests for them.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    let mut flows = Vec::new();
    for ip in pod_ipv4(pod) {
        flows.push(
            ctx.flow(
                &ARP_SPOOF_GUARD,
                priority::NORMAL,
                cookie,
                Match::new()
                    .arp()
                    .in_port(pod.ofport)
                    .eth_src(pod.mac)
                    .arp_spa(ip.into())
                    .arp_sha(pod.mac),
                vec![ctx.goto(&ARP_RESPONDER)],
            ),
        );
        flows.extend(responder(ctx, cookie, ip, pod.ofport));
    }
    flows
}

/// Answers requests for `ip` with the virtual MAC, except those from `owner` (its own port).
fn responder(ctx: &Ctx<'_>, cookie: u64, ip: Ipv4Addr, owner: u32) -> Vec<Flow> {
    vec![
        ctx.flow(
            &ARP_RESPONDER,
            priority::EXCEPTION,
            cookie,
            Match::new().arp().in_port(owner).arp_tpa(ip.into()),
            Vec::new(),
        ),
        answer(ctx, cookie, ip),
    ]
}

/// Answers every request for `ip` with the virtual MAC (also used for peer gateway IPs, which
/// the host resolves through the gateway port).
pub(super) fn answer(ctx: &Ctx<'_>, cookie: u64, ip: Ipv4Addr) -> Flow {
    ctx.flow(
        &ARP_RESPONDER,
        priority::NORMAL,
        cookie,
        Match::new().arp().arp_tpa(ip.into()).arp_op(ARP_REQUEST),
        reply(ip),
    )
}

/// Turns the request for `ip` into its reply and sends it back out the ingress port.
fn reply(ip: Ipv4Addr) -> Vec<Action> {
    vec![
        Action::move_bits(SubField::full(Field::EthSrc), SubField::full(Field::EthDst)),
        set_mac(Field::EthSrc, VIRTUAL_MAC),
        Action::set_field(Field::ArpOp, u128::from(ARP_REPLY)),
        Action::move_bits(SubField::full(Field::ArpSha), SubField::full(Field::ArpTha)),
        set_mac(Field::ArpSha, VIRTUAL_MAC),
        Action::move_bits(SubField::full(Field::ArpSpa), SubField::full(Field::ArpTpa)),
        Action::set_field(Field::ArpSpa, u128::from(u32::from(ip))),
        Action::Output(port::IN_PORT),
    ]
}
