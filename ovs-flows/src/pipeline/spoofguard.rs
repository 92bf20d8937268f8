//! SpoofGuard: IP from a pod must carry the pod's MAC and one of its addresses. For IPv6 the
//! pod may also use its link-local addresses (neighbor discovery) and the unspecified address
//! for duplicate address detection probes. (Neighbor advertisements need no guard: the
//! NeighborDiscovery table drops every one of them.)

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::tables::SPOOF_GUARD;
use super::{pod_ipv4, pod_ipv6, priority, Ctx, LocalPod};
use crate::flow::{Flow, Match};

/// `fe80::/10`.
pub(super) const LINK_LOCAL: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);
/// ICMPv6 neighbor solicitation.
pub(super) const ND_NS: u8 = 135;

/// The pod's SpoofGuard flows.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    let next = || vec![ctx.goto_next(&SPOOF_GUARD)];
    let from_pod = || Match::new().in_port(pod.ofport).eth_src(pod.mac);
    let mut flows = Vec::new();
    for ip in pod_ipv4(pod) {
        flows.push(ctx.flow(
            &SPOOF_GUARD,
            priority::NORMAL,
            cookie,
            from_pod().ip().nw_src(ip.into()),
            next(),
        ));
    }
    let v6: Vec<Ipv6Addr> = pod_ipv6(pod).collect();
    if v6.is_empty() {
        return flows;
    }
    for ip in &v6 {
        flows.push(ctx.flow(
            &SPOOF_GUARD,
            priority::NORMAL,
            cookie,
            from_pod().ipv6().ipv6_src((*ip).into()),
            next(),
        ));
    }
    flows.push(ctx.flow(
        &SPOOF_GUARD,
        priority::NORMAL,
        cookie,
        from_pod().ipv6().ipv6_src(LINK_LOCAL),
        next(),
    ));
    flows.push(
        ctx.flow(
            &SPOOF_GUARD,
            priority::NORMAL,
            cookie,
            from_pod()
                .icmp6()
                .ipv6_src(Ipv6Addr::UNSPECIFIED.into())
                .icmpv6_type(ND_NS),
            next(),
        ),
    );
    flows
}
