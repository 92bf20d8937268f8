//! Flows covering every match field and action the codec supports, shared by the
//! `flow_codec_*` tests, plus a tiny synchronous OpenFlow 1.5 speaker for installing them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ovs_flows::codec::{decode_instructions, decode_match, encode_instructions, encode_match};
use ovs_flows::flow::{
    ct_state, learn_flags, port, Action, Controller, Ct, CtZone, Field, Flow, Learn, LearnSpec,
    MacAddr, Match, Nat, NatKind, PacketInReason, SubField,
};

/// The group the `group:5` sample refers to (create it before installing the samples).
pub const SAMPLE_GROUP: u32 = 5;

fn mac(s: &str) -> MacAddr {
    let mut b = [0u8; 6];
    for (i, part) in s.split(':').enumerate() {
        b[i] = u8::from_str_radix(part, 16).unwrap();
    }
    MacAddr(b)
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn flow(table: u8, priority: u16, matches: Match, actions: Vec<Action>) -> Flow {
    Flow {
        table,
        priority,
        matches,
        actions,
        ..Flow::default()
    }
}

/// Sample matches, one flow each (table 1, distinct priorities), all with `drop`.
pub fn sample_matches() -> Vec<Match> {
    vec![
        Match::new(),
        Match::new().in_port(1),
        Match::new().in_port(port::LOCAL),
        Match::new()
            .eth_src(mac("00:11:22:33:44:55"))
            .eth_dst_masked(mac("01:00:00:00:00:00"), mac("01:00:00:00:00:00")),
        Match::new().eth_src_masked(mac("0a:00:00:00:00:00"), mac("ff:ff:ff:00:00:00")),
        Match::new().eth_type(0x88cc),
        Match::new().dl_vlan(5),
        Match::new().vlan_tci(0x0000, 0x1fff),
        Match::new().vlan_tci(0x1005, 0x1fff).ip(),
        Match::new().arp().arp_op(1),
        Match::new()
            .arp()
            .arp_op(2)
            .arp_spa("10.0.0.1/32".parse().unwrap())
            .arp_tpa("10.0.0.0/8".parse().unwrap())
            .arp_sha(mac("00:00:00:00:00:01"))
            .arp_tha(mac("00:00:00:00:00:00")),
        Match::new().ip(),
        Match::new()
            .ip()
            .nw_src("10.0.0.0/24".parse().unwrap())
            .nw_dst("10.1.2.3/32".parse().unwrap()),
        Match::new()
            .ip()
            .nw_src_masked(v4("10.0.0.1"), v4("255.0.255.0")),
        Match::new().ip().ip_proto(47),
        Match::new().ipv6().ip_proto(47),
        Match::new()
            .ipv6()
            .ipv6_src("fe80::/64".parse().unwrap())
            .ipv6_dst("2001:db8::1/128".parse().unwrap()),
        Match::new().tcp().tcp_src(80).tcp_dst_masked(0x100, 0xff00),
        Match::new().tcp6().tcp_dst(443),
        Match::new().udp().udp_src(68).udp_dst(67),
        Match::new().udp6().udp_dst_masked(0x1000, 0xf000),
        Match::new().icmp().icmp_type(8).icmp_code(0),
        Match::new().icmp6().icmpv6_type(128),
        Match::new()
            .icmp6()
            .icmpv6_type(135)
            .icmpv6_code(0)
            .nd_target(v6("fe80::1"))
            .nd_sll(mac("00:00:00:00:00:02")),
        Match::new()
            .icmp6()
            .icmpv6_type(136)
            .nd_target(v6("fe80::1"))
            .nd_tll(mac("00:00:00:00:00:03")),
        Match::new()
            .icmp6()
            .icmpv6_type(136)
            .nd_reserved(0x6000_0000)
            .nd_options_type(2),
        Match::new()
            .icmp6()
            .icmpv6_type(135)
            .nd_target(v6("fd00::1"))
            .nd_sll(mac("00:00:00:00:00:04"))
            .nd_reserved(0)
            .nd_options_type(1),
        Match::new().ct_state(ct_state::TRK, ct_state::NEW).ip(),
        Match::new().ct_state(ct_state::TRK | ct_state::EST, 0),
        Match::new().ct_state(
            ct_state::TRK | ct_state::INV | ct_state::RPL | ct_state::DNAT,
            ct_state::NEW | ct_state::REL | ct_state::SNAT,
        ),
        Match::new().ct_state(0, ct_state::TRK),
        Match::new().ct_state(ct_state::TRK | ct_state::EST | ct_state::RPL, 0xff & !0x2a),
        Match::new().ct_state(0, 0xff),
        Match::new().vlan_tci(0xb005, 0xffff),
        Match::new().in_port(port::CONTROLLER),
        Match::new()
            .ct_zone(5)
            .ct_mark(0x10)
            .ct_label(0x1234_0000_0000_0000_0000_0000_0000_0001),
        Match::new()
            .ct_mark_masked(0x10, 0xff)
            .ct_label_masked(0x1, 0x3),
        Match::new()
            .reg(0, 1)
            .reg_masked(3, 0, 0x1)
            .reg(15, 0xffff_ffff),
        Match::new().reg_masked(7, 0x10, 0xf0),
        Match::new().xreg(2, 0x5),
        Match::new().xreg_masked(0, 0x1_0000_0000, 0xffff_0000_ffff_0000),
        Match::new().tun_id(0x10),
        Match::new().tun_id_masked(0x10, 0xff),
        Match::new()
            .tun_src(v4("1.1.1.1"))
            .tun_dst(v4("2.2.2.2"))
            .ip(),
        Match::new()
            .tun_ipv6_src(v6("fe80::4"))
            .tun_ipv6_dst(v6("fe80::5")),
        Match::new().metadata(0x3),
        Match::new().metadata_masked(0x3, 0xff),
        Match::new().pkt_mark(7),
        Match::new().pkt_mark_masked(0x70, 0xf0),
        // NetworkPolicy: conjunction ids, SCTP ports.
        Match::new()
            .conj_id(0x8000_0001)
            .ct_state(ct_state::NEW | ct_state::TRK, 0)
            .ip(),
        Match::new().sctp().sctp_dst(80),
        Match::new().sctp6().sctp_dst_masked(0x50, 0xfff0),
        // Many fields at once, to check the relative order of everything.
        Match::new()
            .tcp()
            .in_port(3)
            .pkt_mark(1)
            .ct_state(ct_state::TRK | ct_state::EST, ct_state::NEW)
            .ct_zone(9)
            .ct_mark(2)
            .ct_label(3)
            .reg(0, 1)
            .reg(9, 2)
            .tun_id(4)
            .tun_dst(v4("2.2.2.2"))
            .metadata(5)
            .dl_vlan(7)
            .eth_src(mac("00:00:00:00:00:0a"))
            .eth_dst(mac("00:00:00:00:00:0b"))
            .nw_src("10.0.0.1/32".parse().unwrap())
            .nw_dst("10.0.0.2/32".parse().unwrap())
            .tcp_src(1)
            .tcp_dst(2),
    ]
}

/// Sample action lists, one flow each (table 2, distinct priorities, `ip` match so that
/// IP-dependent actions are valid).
pub fn sample_actions() -> Vec<Vec<Action>> {
    let reg = |i| Field::Reg(i);
    vec![
        vec![],
        vec![Action::Output(2)],
        vec![Action::Output(port::IN_PORT)],
        vec![Action::Output(port::LOCAL), Action::Output(port::NORMAL)],
        vec![Action::Output(port::CONTROLLER)],
        vec![
            Action::OutputReg(SubField::full(reg(1))),
            Action::OutputReg(SubField::bits(reg(2), 0, 15)),
            Action::OutputReg(SubField::full(Field::InPort)),
            Action::OutputReg(SubField::bits(Field::Xreg(1), 16, 31)),
        ],
        vec![Action::Controller(Controller {
            max_len: 128,
            ..Controller::default()
        })],
        vec![Action::Controller(Controller {
            reason: PacketInReason::NoMatch,
            userdata: vec![1, 2],
            pause: true,
            ..Controller::default()
        })],
        vec![Action::Controller(Controller {
            max_len: 200,
            controller_id: 3,
            userdata: vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4],
            ..Controller::default()
        })],
        vec![Action::GotoTable(3)],
        vec![Action::Output(1), Action::GotoTable(4)],
        vec![
            Action::GotoTable(5),
            Action::WriteMetadata {
                value: 0x5,
                mask: 0xff,
            },
            Action::DecTtl,
        ],
        vec![Action::WriteMetadata {
            value: 0x5,
            mask: u64::MAX,
        }],
        vec![
            Action::resubmit_table(5),
            Action::Resubmit {
                port: Some(3),
                table: None,
            },
            Action::Resubmit {
                port: Some(4),
                table: Some(6),
            },
            Action::Resubmit {
                port: Some(port::LOCAL),
                table: Some(7),
            },
        ],
        vec![
            Action::set_field_masked(reg(1), 0x3, 0xff),
            Action::set_field(reg(2), 0),
            Action::set_field(Field::TunDst, u128::from(u32::from(v4("1.2.3.4")))),
            Action::set_field(Field::TunId, 0x1234),
            Action::set_field(Field::EthSrc, 0x0011_2233_4455),
            Action::set_field(Field::EthDst, 0xaabb_ccdd_eeff),
            Action::set_field(Field::Ipv4Src, u128::from(u32::from(v4("10.0.0.1")))),
            Action::set_field(Field::Ipv4Dst, u128::from(u32::from(v4("10.0.0.2")))),
            Action::set_field_masked(Field::Xreg(3), 0x1, 0x1),
            Action::set_field(Field::PktMark, 0x42),
            Action::set_field_masked(Field::Metadata, 0x10, 0xf0),
        ],
        vec![
            Action::load(SubField::bits(reg(2), 0, 3), 5),
            Action::load(SubField::bits(reg(0), 16, 31), 0xabcd),
            Action::load(SubField::bit(reg(4), 7), 1),
            Action::load(SubField::full(reg(5)), 0x77),
        ],
        vec![
            Action::move_bits(SubField::full(Field::EthSrc), SubField::full(Field::EthDst)),
            Action::move_bits(
                SubField::bits(reg(0), 0, 15),
                SubField::bits(reg(1), 16, 31),
            ),
            Action::move_bits(
                SubField::full(Field::Ipv4Src),
                SubField::full(Field::Ipv4Dst),
            ),
            Action::move_bits(SubField::full(Field::InPort), SubField::bits(reg(3), 0, 15)),
            Action::move_bits(SubField::full(Field::TunId), SubField::full(Field::Xreg(1))),
        ],
        vec![Action::Ct(Ct {
            commit: true,
            zone: CtZone::Imm(10),
            table: Some(3),
            nat: Some(Nat {
                kind: Some(NatKind::Src),
                addrs: Some((IpAddr::V4(v4("10.0.0.1")), IpAddr::V4(v4("10.0.0.5")))),
                ports: Some((100, 200)),
                random: true,
                ..Nat::default()
            }),
            exec: vec![
                Action::set_field(Field::CtMark, 0x1),
                Action::set_field_masked(Field::CtLabel, 0x5, 0xff),
            ],
            ..Ct::default()
        })],
        vec![
            Action::Ct(Ct {
                zone: CtZone::Field(SubField::bits(reg(0), 0, 15)),
                table: Some(4),
                nat: Some(Nat::default()),
                ..Ct::default()
            }),
            Action::DecTtl,
            Action::Group(SAMPLE_GROUP),
            Action::note(&[1, 2, 3]),
        ],
        vec![Action::Ct(Ct {
            commit: true,
            force: true,
            zone: CtZone::Imm(65520),
            exec: vec![Action::load(SubField::bits(Field::CtMark, 0, 3), 2)],
            ..Ct::default()
        })],
        vec![Action::Ct(Ct {
            commit: true,
            nat: Some(Nat {
                kind: Some(NatKind::Dst),
                addrs: Some((IpAddr::V4(v4("10.96.0.1")), IpAddr::V4(v4("10.96.0.1")))),
                ports: Some((8080, 8080)),
                persistent: true,
                hash: true,
                ..Nat::default()
            }),
            ..Ct::default()
        })],
        vec![Action::Ct(Ct {
            commit: true,
            nat: Some(Nat {
                kind: Some(NatKind::Src),
                addrs: Some((IpAddr::V4(v4("192.168.0.1")), IpAddr::V4(v4("192.168.0.1")))),
                ..Nat::default()
            }),
            ..Ct::default()
        })],
        vec![Action::note(&[0xab; 11])],
        vec![Action::Learn(Learn {
            table: 10,
            priority: 100,
            idle_timeout: 10,
            hard_timeout: 20,
            cookie: 0x5,
            specs: vec![
                LearnSpec::MatchField {
                    dst: SubField::full(Field::EthDst),
                    src: SubField::full(Field::EthSrc),
                },
                LearnSpec::MatchField {
                    dst: SubField::bits(Field::VlanTci, 0, 11),
                    src: SubField::bits(Field::VlanTci, 0, 11),
                },
                LearnSpec::MatchValue {
                    dst: SubField::bits(reg(0), 0, 3),
                    value: 5,
                },
                LearnSpec::MatchValue {
                    dst: SubField::full(Field::EthType),
                    value: 0x800,
                },
                LearnSpec::LoadField {
                    src: SubField::full(Field::InPort),
                    dst: SubField::bits(reg(1), 0, 15),
                },
                LearnSpec::LoadValue {
                    value: 3,
                    dst: SubField::full(reg(2)),
                },
                LearnSpec::Output {
                    src: SubField::full(Field::InPort),
                },
            ],
            ..Learn::default()
        })],
        vec![Action::Learn(Learn {
            table: 20,
            fin_idle_timeout: 2,
            fin_hard_timeout: 4,
            flags: learn_flags::SEND_FLOW_REM | learn_flags::DELETE_LEARNED,
            specs: vec![
                LearnSpec::MatchValue {
                    dst: SubField::full(Field::EthType),
                    value: 0x800,
                },
                LearnSpec::MatchField {
                    dst: SubField::full(Field::Ipv4Dst),
                    src: SubField::full(Field::Ipv4Src),
                },
                LearnSpec::LoadValue {
                    value: 0x1,
                    dst: SubField::bit(reg(0), 3),
                },
            ],
            ..Learn::default()
        })],
        vec![
            Action::Conjunction {
                id: 7,
                clause: 1,
                n_clauses: 2,
            },
            Action::Conjunction {
                id: 0xffff_fffe,
                clause: 3,
                n_clauses: 3,
            },
        ],
        vec![
            Action::CheckPktLarger {
                pkt_len: 1500,
                dst: SubField::bit(reg(0), 5),
            },
            Action::WriteMetadata {
                value: 0x5,
                mask: 0xff,
            },
        ],
    ]
}

/// The match the [`sample_nd_actions`] need: a neighbor solicitation.
pub fn nd_solicitation() -> Match {
    Match::new().icmp6().icmpv6_type(135)
}

/// Sample action lists that need a neighbor solicitation match ([`nd_solicitation`]), one
/// flow each (table 4): the in-pipeline ND responder's rewrites.
pub fn sample_nd_actions() -> Vec<Vec<Action>> {
    let vmac = 0x0277_6566_7401;
    vec![
        vec![
            Action::move_bits(SubField::full(Field::EthSrc), SubField::full(Field::EthDst)),
            Action::set_field(Field::EthSrc, vmac),
            Action::move_bits(
                SubField::full(Field::Ipv6Src),
                SubField::full(Field::Ipv6Dst),
            ),
            Action::set_field(Field::Ipv6Src, u128::from(v6("fd00::1"))),
            Action::set_field(Field::NdSll, vmac),
            Action::set_field(Field::Icmpv6Type, 136),
            Action::set_field(Field::NdReserved, 0x6000_0000),
            Action::set_field(Field::NdOptionsType, 2),
            Action::Output(port::IN_PORT),
        ],
        vec![
            Action::set_field(Field::NdReserved, 0),
            Action::set_field(Field::NdOptionsType, 255),
            Action::move_bits(
                SubField::bits(Field::Reg(0), 0, 7),
                SubField::full(Field::NdOptionsType),
            ),
            Action::move_bits(
                SubField::full(Field::NdReserved),
                SubField::full(Field::Reg(1)),
            ),
            Action::OutputReg(SubField::full(Field::Reg(1))),
        ],
    ]
}

/// Every sample as a flow; matches in table 1, actions in table 2, ND actions in table 4,
/// plus header fields.
pub fn sample_flows() -> Vec<Flow> {
    let mut flows = Vec::new();
    for (i, m) in sample_matches().into_iter().enumerate() {
        flows.push(flow(1, 100 + i as u16, m, vec![]));
    }
    for (i, a) in sample_actions().into_iter().enumerate() {
        flows.push(flow(2, 100 + i as u16, Match::new().ip(), a));
    }
    for (i, a) in sample_nd_actions().into_iter().enumerate() {
        flows.push(flow(4, 100 + i as u16, nd_solicitation(), a));
    }
    flows.push(Flow {
        table: 0,
        priority: 20,
        actions: vec![Action::GotoTable(1)],
        ..Flow::default()
    });
    flows.push(Flow::default());
    flows.push(Flow {
        table: 3,
        priority: 1,
        cookie: 0x55,
        idle_timeout: 300,
        hard_timeout: 900,
        matches: Match::new().ipv6(),
        actions: vec![Action::Output(7)],
    });
    flows.push(Flow {
        table: 253,
        priority: 0,
        cookie: 0xffff_0000_0000_0001,
        ..Flow::default()
    });
    flows
}

const OFP_VERSION: u8 = 6;
const OFPT_HELLO: u8 = 0;
const OFPT_ERROR: u8 = 1;
const OFPT_ECHO_REQUEST: u8 = 2;
const OFPT_FLOW_MOD: u8 = 14;
const OFPT_MULTIPART_REQUEST: u8 = 18;
const OFPT_MULTIPART_REPLY: u8 = 19;
const OFPT_BARRIER_REQUEST: u8 = 20;
const OFPT_BARRIER_REPLY: u8 = 21;

/// A minimal blocking OpenFlow 1.5 speaker for tests (the real client lives in `ofp`).
pub struct RawOf {
    sock: UnixStream,
    xid: u32,
}

fn header(ty: u8, len: usize, xid: u32) -> Vec<u8> {
    let mut v = vec![OFP_VERSION, ty];
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(&xid.to_be_bytes());
    v
}

fn set_len(msg: &mut [u8]) {
    let len = msg.len() as u16;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
}

impl RawOf {
    /// Connects to a bridge management socket and exchanges hellos.
    pub fn connect(path: &Path) -> Result<Self> {
        let sock = UnixStream::connect(path).with_context(|| format!("connect {path:?}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut of = RawOf { sock, xid: 1 };
        let hello = header(OFPT_HELLO, 8, 0);
        of.sock.write_all(&hello)?;
        let (ty, _, _) = of.recv()?;
        if ty != OFPT_HELLO {
            bail!("expected hello, got type {ty}");
        }
        Ok(of)
    }

    fn recv(&mut self) -> Result<(u8, u32, Vec<u8>)> {
        loop {
            let mut h = [0u8; 8];
            self.sock.read_exact(&mut h)?;
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let xid = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let mut body = vec![0u8; len.saturating_sub(8)];
            self.sock.read_exact(&mut body)?;
            if h[1] == OFPT_ECHO_REQUEST {
                let mut reply = h.to_vec();
                reply[1] = 3;
                reply.extend_from_slice(&body);
                self.sock.write_all(&reply)?;
                continue;
            }
            return Ok((h[1], xid, body));
        }
    }

    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    /// Sends an OFPFC_ADD flow-mod for `flow` (encoded by our codec); returns its xid.
    pub fn add_flow(&mut self, flow: &Flow) -> Result<u32> {
        let xid = self.next_xid();
        let mut msg = header(OFPT_FLOW_MOD, 0, xid);
        msg.extend_from_slice(&flow.cookie.to_be_bytes());
        msg.extend_from_slice(&0u64.to_be_bytes()); // cookie_mask
        msg.push(flow.table);
        msg.push(0); // OFPFC_ADD
        msg.extend_from_slice(&flow.idle_timeout.to_be_bytes());
        msg.extend_from_slice(&flow.hard_timeout.to_be_bytes());
        msg.extend_from_slice(&flow.priority.to_be_bytes());
        msg.extend_from_slice(&u32::MAX.to_be_bytes()); // buffer_id
        msg.extend_from_slice(&port::ANY.to_be_bytes()); // out_port
        msg.extend_from_slice(&u32::MAX.to_be_bytes()); // out_group
        msg.extend_from_slice(&0u16.to_be_bytes()); // flags
        msg.extend_from_slice(&0u16.to_be_bytes()); // importance
        encode_match(&flow.matches, &mut msg);
        encode_instructions(&flow.actions, &mut msg);
        set_len(&mut msg);
        self.sock.write_all(&msg)?;
        Ok(xid)
    }

    /// Sends a barrier and waits for its reply; fails listing every error message seen,
    /// naming the flow whose xid caused it.
    pub fn barrier(&mut self, sent: &[(u32, String)]) -> Result<()> {
        let xid = self.next_xid();
        self.sock.write_all(&header(OFPT_BARRIER_REQUEST, 8, xid))?;
        let mut errors = Vec::new();
        loop {
            let (ty, rxid, body) = self.recv()?;
            match ty {
                OFPT_BARRIER_REPLY if rxid == xid => break,
                OFPT_ERROR => {
                    let what = sent
                        .iter()
                        .find(|(x, _)| *x == rxid)
                        .map(|(_, s)| s.as_str())
                        .unwrap_or("?");
                    let ety = u16::from_be_bytes([body[0], body[1]]);
                    let code = u16::from_be_bytes([body[2], body[3]]);
                    errors.push(format!("{what:?}: error type {ety} code {code}"));
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            bail!("OVS rejected flows:\n{}", errors.join("\n"));
        }
        Ok(())
    }

    /// Dumps all flows with an OpenFlow 1.5 flow-desc multipart request; returns the raw
    /// (table, priority, cookie, idle, hard, match bytes, instruction bytes) of each.
    pub fn dump_raw(&mut self) -> Result<Vec<RawFlow>> {
        let xid = self.next_xid();
        let mut msg = header(OFPT_MULTIPART_REQUEST, 0, xid);
        msg.extend_from_slice(&1u16.to_be_bytes()); // OFPMP_FLOW_DESC
        msg.extend_from_slice(&[0; 6]);
        msg.push(0xff); // all tables
        msg.extend_from_slice(&[0; 3]);
        msg.extend_from_slice(&port::ANY.to_be_bytes());
        msg.extend_from_slice(&u32::MAX.to_be_bytes());
        msg.extend_from_slice(&[0; 4]);
        msg.extend_from_slice(&[0; 16]); // cookie, cookie_mask
        encode_match(&Match::new(), &mut msg);
        set_len(&mut msg);
        self.sock.write_all(&msg)?;
        let mut out = Vec::new();
        loop {
            let (ty, rxid, body) = self.recv()?;
            if rxid != xid {
                continue;
            }
            if ty == OFPT_ERROR {
                bail!("flow dump failed: {body:02x?}");
            }
            if ty != OFPT_MULTIPART_REPLY {
                continue;
            }
            let more = u16::from_be_bytes([body[2], body[3]]) & 1 != 0;
            let mut rest = &body[8..];
            while !rest.is_empty() {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let entry = &rest[..len];
                rest = &rest[len..];
                let table = entry[4];
                let priority = u16::from_be_bytes([entry[6], entry[7]]);
                let idle = u16::from_be_bytes([entry[8], entry[9]]);
                let hard = u16::from_be_bytes([entry[10], entry[11]]);
                let cookie = u64::from_be_bytes(entry[16..24].try_into()?);
                let match_len = usize::from(u16::from_be_bytes([entry[26], entry[27]]));
                let match_end = 24 + match_len.div_ceil(8) * 8;
                let stats_len = usize::from(u16::from_be_bytes([
                    entry[match_end + 2],
                    entry[match_end + 3],
                ]));
                let inst = match_end + stats_len.div_ceil(8) * 8;
                out.push(RawFlow {
                    table,
                    priority,
                    cookie,
                    idle,
                    hard,
                    matches: entry[24..match_end].to_vec(),
                    instructions: entry[inst..].to_vec(),
                });
            }
            if !more {
                return Ok(out);
            }
        }
    }
}

/// One flow as OVS encodes it in a flow-desc reply.
#[derive(Debug)]
pub struct RawFlow {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub idle: u16,
    pub hard: u16,
    pub matches: Vec<u8>,
    pub instructions: Vec<u8>,
}

impl RawFlow {
    /// Decodes OVS's bytes with our codec.
    pub fn decode(&self) -> Result<Flow> {
        let (matches, used) = decode_match(&self.matches)
            .with_context(|| format!("decoding match {:02x?}", self.matches))?;
        if used != self.matches.len() {
            bail!("match used {used} of {} bytes", self.matches.len());
        }
        let actions = decode_instructions(&self.instructions)
            .with_context(|| format!("decoding instructions {:02x?}", self.instructions))?;
        Ok(Flow {
            table: self.table,
            priority: self.priority,
            cookie: self.cookie,
            idle_timeout: self.idle,
            hard_timeout: self.hard,
            matches,
            actions,
        })
    }
}
