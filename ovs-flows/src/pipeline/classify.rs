//! PipelineRootClassifier (ARP vs IP) and Classifier (source kind by ingress port).

use super::regs::SourceKind;
use super::tables::{ARP_SPOOF_GUARD, CLASSIFIER, ROOT, SPOOF_GUARD};
use super::{ports, priority, Category, Ctx, LocalPod};
use crate::flow::{Flow, Match};

/// Root: ARP to the ARP stage, IPv4/IPv6 of the configured families to the Classifier.
/// Classifier: the gateway port is marked [`SourceKind::Gateway`] and skips SpoofGuard.
/// (Issue 4 adds the tunnel and uplink ports here the same way, with their own categories.)
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let cookie = ctx.cfg.cookie(Category::Pipeline);
    let mut flows = Vec::new();
    if ctx.cfg.has_ipv4() {
        flows.push(ctx.flow(
            &ROOT,
            priority::NORMAL,
            cookie,
            Match::new().arp(),
            vec![ctx.goto(&ARP_SPOOF_GUARD)],
        ));
        flows.push(ctx.flow(
            &ROOT,
            priority::NORMAL,
            cookie,
            Match::new().ip(),
            vec![ctx.goto(&CLASSIFIER)],
        ));
    }
    if ctx.cfg.has_ipv6() {
        flows.push(ctx.flow(
            &ROOT,
            priority::NORMAL,
            cookie,
            Match::new().ipv6(),
            vec![ctx.goto(&CLASSIFIER)],
        ));
    }
    flows.push(ctx.flow(
        &CLASSIFIER,
        priority::NORMAL,
        ctx.cfg.cookie(Category::Gateway),
        Match::new().in_port(ports::GATEWAY),
        vec![SourceKind::Gateway.load(), ctx.goto_next(&SPOOF_GUARD)],
    ));
    flows
}

/// The pod's port is marked [`SourceKind::Pod`] and goes through SpoofGuard.
pub(super) fn pod(ctx: &Ctx<'_>, pod: &LocalPod, cookie: u64) -> Vec<Flow> {
    vec![ctx.flow(
        &CLASSIFIER,
        priority::NORMAL,
        cookie,
        Match::new().in_port(pod.ofport),
        vec![SourceKind::Pod.load(), ctx.goto(&SPOOF_GUARD)],
    )]
}
