//! Conntrack in the pipeline (issue 14): ConntrackZone, ConntrackState, ConntrackCommit, and
//! the L3Forwarding exceptions that send a connection's replies back where it came from.
//!
//! Every IP packet goes through conntrack in one zone ([`CT_ZONE`]); `+inv` is dropped. A new
//! connection is committed after L2 forwarding (so later NetworkPolicy stages can refuse it
//! first) with its origin ([`CONNECTION_ORIGIN`], the [`SourceKind`] it entered by), and for an
//! uplink-origin connection the MAC it came from ([`CT_ORIGIN_MAC`]).
//!
//! Why: the host's Service handling (kube-proxy's DNAT/SNAT) only works when the host sees both
//! directions of a connection. A pod's SYN to a ClusterIP goes pod -> gateway -> host (DNAT) ->
//! gateway -> backend; without conntrack, the backend's SYN-ACK was routed straight to the
//! client pod (from the backend's address, not the ClusterIP), and the host's conntrack never saw
//! it. Now the connection backend <- gateway is gateway-origin, so its replies go to the gateway
//! ([`reply_to_gateway`]), the host undoes its NAT and sends them on to the client through the
//! gateway, where they match the client's own (pod-origin) connection as replies.

use super::regs::{
    SourceKind, CONNECTION_ORIGIN, CT_EGRESS_RULE, CT_INGRESS_RULE, CT_ORIGIN_MAC, CT_ZONE,
    EGRESS_RULE_ID, INGRESS_RULE_ID, ORIGIN_MAC,
};
use super::tables::{
    CONNTRACK_COMMIT, CONNTRACK_STATE, CONNTRACK_ZONE, L2_FORWARDING_CALC, L3_FORWARDING,
};
use super::{priority, set_mac, Category, Ctx, VIRTUAL_MAC};
use crate::flow::{ct_state, Action, Ct, CtZone, Field, Flow, Match};

/// `ct(table=ConntrackState,zone=CT_ZONE)`.
fn track(ctx: &Ctx<'_>) -> Action {
    track_to(ctx.reg.number(&CONNTRACK_STATE))
}

/// `ct(table=TABLE,zone=CT_ZONE)`: look the packet up and continue in `table`.
pub(super) fn track_to(table: u8) -> Action {
    Action::Ct(Ct {
        zone: CtZone::Imm(CT_ZONE),
        table: Some(table),
        ..Ct::default()
    })
}

/// `ct(commit,zone=CT_ZONE,exec(...))` committing the origin `exec` sets.
pub(super) fn commit(exec: Vec<Action>) -> Action {
    Action::Ct(Ct {
        commit: true,
        zone: CtZone::Imm(CT_ZONE),
        exec,
        ..Ct::default()
    })
}

/// The families the node runs, as bare `ip` / `ipv6` matches.
fn families(ctx: &Ctx<'_>) -> Vec<Match> {
    let mut m = Vec::new();
    if ctx.cfg.has_ipv4() {
        m.push(Match::new().ip());
    }
    if ctx.cfg.has_ipv6() {
        m.push(Match::new().ipv6());
    }
    m
}

/// The base conntrack flows (cookie category Pipeline; the reply-to-gateway flows Gateway).
pub(super) fn base(ctx: &Ctx<'_>) -> Vec<Flow> {
    let pipeline = ctx.cfg.cookie(Category::Pipeline);
    let mut flows = Vec::new();
    for fam in families(ctx) {
        flows.push(ctx.flow(
            &CONNTRACK_ZONE,
            priority::NORMAL,
            pipeline,
            fam.clone(),
            vec![track(ctx)],
        ));
        flows.push(ctx.flow(
            &CONNTRACK_STATE,
            priority::DISCARD,
            pipeline,
            fam.clone().ct_state(ct_state::INV | ct_state::TRK, 0),
            vec![],
        ));
        // Established / related: straight to routing, past the (future) Service and egress
        // policy stages, which only ever decide on a connection's first packet.
        flows.push(ctx.flow(
            &CONNTRACK_STATE,
            priority::NORMAL,
            pipeline,
            fam.clone().ct_state(ct_state::TRK, ct_state::NEW),
            vec![ctx.goto(&L3_FORWARDING)],
        ));
        // Commit: the origin is the source kind the Classifier loaded; the uplink's Classifier
        // flow also saved the peer's MAC (zero for other origins).
        flows.push(ctx.flow(
            &CONNTRACK_COMMIT,
            priority::NORMAL,
            pipeline,
            fam.clone().ct_state(ct_state::NEW | ct_state::TRK, 0),
            vec![
                commit(vec![
                    Action::move_bits(super::regs::SOURCE_KIND.subfield(), CONNECTION_ORIGIN),
                    Action::move_bits(ORIGIN_MAC, CT_ORIGIN_MAC),
                    Action::move_bits(EGRESS_RULE_ID.subfield(), CT_EGRESS_RULE),
                    Action::move_bits(INGRESS_RULE_ID.subfield(), CT_INGRESS_RULE),
                ]),
                ctx.goto_next(&CONNTRACK_COMMIT),
            ],
        ));
        flows.push(reply_to_gateway(ctx, fam));
    }
    flows
}

/// L3Forwarding exception: a reply of a connection that entered from the gateway goes back to
/// the gateway, whatever its destination, so the host's NAT sees it (and undoes it).
fn reply_to_gateway(ctx: &Ctx<'_>, fam: Match) -> Flow {
    ctx.flow(
        &L3_FORWARDING,
        priority::EXCEPTION,
        ctx.cfg.cookie(Category::Gateway),
        SourceKind::Gateway.matching_origin(fam.ct_state(ct_state::RPL | ct_state::TRK, 0)),
        vec![
            set_mac(Field::EthSrc, VIRTUAL_MAC),
            set_mac(Field::EthDst, ctx.cfg.gateway_mac),
            ctx.goto(&L2_FORWARDING_CALC),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_prints_as_ovs_does() {
        assert_eq!(
            commit(vec![SourceKind::Gateway.load_origin()]).to_string(),
            "ct(commit,zone=65520,exec(set_field:0x2/0xf->ct_mark))"
        );
    }
}
