//! Uplink: the node's NIC attached to the bridge (OpenFlow port [`ports::UPLINK`]) and the host
//! internal port that took over its name, MAC and addresses ([`ports::HOST_INTERNAL`]).
//!
//! Host traffic must still flow through the bridge as if the NIC were the host's own:
//! - `in_port=UPLINK` to a local pod CIDR enters the pipeline (Classifier marks it
//!   [`SourceKind::Uplink`], it skips SpoofGuard like the gateway's, L3 forwarding delivers it);
//! - `in_port=UPLINK` anything else (ARP, ND, the host's own traffic) goes straight to the host
//!   internal port;
//! - `in_port=HOST_INTERNAL` anything goes straight out of the uplink.
//!
//! These flows live in PipelineRootClassifier above its ARP/IP split, so nothing of the host's
//! traffic meets the pod pipeline, with one exception: a packet the host forwards from a local
//! pod out of the uplink (a Service backend on a peer in noEncap: the host DNATed the pod's
//! packet and routes it via the peer's node IP) is committed to conntrack as a gateway-origin
//! connection on its way out, so the peer's answer, which comes back by the uplink to the pod,
//! is sent to the host to be un-NATed (see `conntrack.rs`). The uplink's Classifier flow also
//! saves the packet's source MAC ([`ORIGIN_MAC`]): an uplink-origin connection's replies go back
//! to that MAC ([`super::noencap::uplink_reply_flows`]). Cookie category [`Category::Uplink`].

use ipnet::IpNet;

use super::regs::{SourceKind, ORIGIN_MAC};
use super::tables::{CLASSIFIER, ROOT, SPOOF_GUARD};
use super::{ports, priority, Category, Ctx, NodeConfig};
use crate::flow::{ct_state, Action, Field, Flow, Match, SubField};

/// Host pass-through between the uplink and the host internal port: above the root's ARP/IP
/// split ([`priority::NORMAL`]).
pub const PASS_THROUGH: u16 = priority::EXCEPTION;
/// Traffic from the uplink to a local pod CIDR: above [`PASS_THROUGH`].
pub const TO_PODS: u16 = priority::EXCEPTION + 10;
/// A local pod's packet from the host internal port, not yet tracked: conntrack lookup.
pub const HOST_FORWARD_TRACK: u16 = TO_PODS;
/// ... tracked, any connection but a pod-origin one: commit as gateway-origin, then uplink.
pub const HOST_FORWARD_COMMIT: u16 = TO_PODS + 1;
/// ... tracked, a pod-origin connection: straight to the uplink.
pub const HOST_FORWARD_POD_ORIGIN: u16 = TO_PODS + 2;

/// The uplink's flows for the node `cfg` describes (round and pod CIDRs).
pub fn uplink_flows(cfg: &NodeConfig) -> Vec<Flow> {
    let ctx = Ctx::new(cfg);
    let cookie = cfg.cookie(Category::Uplink);
    let mut flows = Vec::new();
    for cidr in &cfg.pod_cidrs {
        let m = match cidr {
            IpNet::V4(n) => Match::new().ip().in_port(ports::UPLINK).nw_dst(*n),
            IpNet::V6(n) => Match::new().ipv6().in_port(ports::UPLINK).ipv6_dst(*n),
        };
        flows.push(ctx.flow(&ROOT, TO_PODS, cookie, m, vec![ctx.goto(&CLASSIFIER)]));
    }
    // A local pod's packet the host forwards out of the uplink: looked up (recirculated to
    // this table); if it is a pod-origin connection (the host forwarded the pod's own packet
    // without NAT: the same connection already went through the pipeline) it just leaves,
    // otherwise (the host NATed it: a new connection) it is committed as gateway-origin.
    for cidr in &cfg.pod_cidrs {
        let m = || match cidr {
            IpNet::V4(n) => Match::new().ip().in_port(ports::HOST_INTERNAL).nw_src(*n),
            IpNet::V6(n) => Match::new()
                .ipv6()
                .in_port(ports::HOST_INTERNAL)
                .ipv6_src(*n),
        };
        flows.push(ctx.flow(
            &ROOT,
            HOST_FORWARD_TRACK,
            cookie,
            m().ct_state(0, ct_state::TRK),
            vec![super::conntrack::track_to(ctx.reg.number(&ROOT))],
        ));
        flows.push(ctx.flow(
            &ROOT,
            HOST_FORWARD_POD_ORIGIN,
            cookie,
            SourceKind::Pod.matching_origin(m().ct_state(ct_state::TRK, 0)),
            vec![Action::Output(ports::UPLINK)],
        ));
        flows.push(ctx.flow(
            &ROOT,
            HOST_FORWARD_COMMIT,
            cookie,
            m().ct_state(ct_state::TRK, 0),
            vec![
                super::conntrack::commit(vec![SourceKind::Gateway.load_origin()]),
                Action::Output(ports::UPLINK),
            ],
        ));
    }
    flows.push(ctx.flow(
        &ROOT,
        PASS_THROUGH,
        cookie,
        Match::new().in_port(ports::UPLINK),
        vec![Action::Output(ports::HOST_INTERNAL)],
    ));
    flows.push(ctx.flow(
        &ROOT,
        PASS_THROUGH,
        cookie,
        Match::new().in_port(ports::HOST_INTERNAL),
        vec![Action::Output(ports::UPLINK)],
    ));
    flows.push(ctx.flow(
        &CLASSIFIER,
        priority::NORMAL,
        cookie,
        Match::new().in_port(ports::UPLINK),
        vec![
            SourceKind::Uplink.load(),
            Action::move_bits(SubField::full(Field::EthSrc), ORIGIN_MAC),
            ctx.goto_next(&SPOOF_GUARD),
        ],
    ));
    flows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::MacAddr;

    fn node(cidrs: &[&str]) -> NodeConfig {
        let pod_cidrs: Vec<IpNet> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        NodeConfig {
            round: 2,
            gateway_mac: MacAddr::new(0x0a, 0x58, 0, 0, 0, 1),
            gateway_ips: pod_cidrs
                .iter()
                .map(|c| c.hosts().nth(1).unwrap_or(c.addr()))
                .collect(),
            pod_cidrs,
            node_ips: Vec::new(),
        }
    }

    #[test]
    fn golden_dual_stack() {
        let text: Vec<String> = uplink_flows(&node(&["10.244.1.0/24", "fd00:10:244:1::/64"]))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "cookie=0x2060000000000, priority=220,ip,in_port=32770,nw_dst=10.244.1.0/24 actions=goto_table:20",
                "cookie=0x2060000000000, priority=220,ipv6,in_port=32770,ipv6_dst=fd00:10:244:1::/64 actions=goto_table:20",
                "cookie=0x2060000000000, priority=220,ct_state=-trk,ip,in_port=32771,nw_src=10.244.1.0/24 actions=ct(table=0,zone=65520)",
                "cookie=0x2060000000000, priority=222,ct_state=+trk,ct_mark=0x1/0xf,ip,in_port=32771,nw_src=10.244.1.0/24 actions=output:32770",
                "cookie=0x2060000000000, priority=221,ct_state=+trk,ip,in_port=32771,nw_src=10.244.1.0/24 actions=ct(commit,zone=65520,exec(set_field:0x2/0xf->ct_mark)),output:32770",
                "cookie=0x2060000000000, priority=220,ct_state=-trk,ipv6,in_port=32771,ipv6_src=fd00:10:244:1::/64 actions=ct(table=0,zone=65520)",
                "cookie=0x2060000000000, priority=222,ct_state=+trk,ct_mark=0x1/0xf,ipv6,in_port=32771,ipv6_src=fd00:10:244:1::/64 actions=output:32770",
                "cookie=0x2060000000000, priority=221,ct_state=+trk,ipv6,in_port=32771,ipv6_src=fd00:10:244:1::/64 actions=ct(commit,zone=65520,exec(set_field:0x2/0xf->ct_mark)),output:32770",
                "cookie=0x2060000000000, priority=210,in_port=32770 actions=output:32771",
                "cookie=0x2060000000000, priority=210,in_port=32771 actions=output:32770",
                "cookie=0x2060000000000, table=20, priority=200,in_port=32770 actions=set_field:0x4/0xf->reg0,move:NXM_OF_ETH_SRC[]->OXM_OF_PKT_REG3[0..47],goto_table:31",
            ]
        );
    }

    #[test]
    fn one_pod_flow_per_cidr_and_always_the_pass_through() {
        assert_eq!(uplink_flows(&node(&["10.244.1.0/24"])).len(), 7);
        assert_eq!(uplink_flows(&node(&[])).len(), 3);
        const { assert!(TO_PODS > PASS_THROUGH && PASS_THROUGH > priority::NORMAL) };
        const { assert!(HOST_FORWARD_POD_ORIGIN > HOST_FORWARD_COMMIT) };
        const { assert!(HOST_FORWARD_COMMIT > HOST_FORWARD_TRACK) };
    }
}
