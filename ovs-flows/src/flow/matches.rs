//! [`Match`]: a flow's match as a set of (field, value, mask), built with chained methods and
//! printed in OVS's canonical `match_format` order and shorthands.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::field::{Field, MacAddr, MacBits};
use super::text::{c_hex, ct_state_masked, ipv4_masked, ipv6_masked, mac_masked, port_name};

/// Connection tracking state bits, for [`Match::ct_state`].
pub mod ct_state {
    /// Beginning of a new connection.
    pub const NEW: u32 = 0x01;
    /// Part of an existing connection.
    pub const EST: u32 = 0x02;
    /// Related to an existing connection.
    pub const REL: u32 = 0x04;
    /// Flow is in the reply direction.
    pub const RPL: u32 = 0x08;
    /// Could not track the connection.
    pub const INV: u32 = 0x10;
    /// Conntrack has occurred.
    pub const TRK: u32 = 0x20;
    /// Packet's source address/port was mangled by NAT.
    pub const SNAT: u32 = 0x40;
    /// Packet's destination address/port was mangled by NAT.
    pub const DNAT: u32 = 0x80;
}

/// Ethernet types OVS abbreviates.
const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_RARP: u16 = 0x8035;
/// IP protocols OVS abbreviates.
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;
const PROTO_ICMPV6: u8 = 58;

/// A flow match. `Match::default()` matches every packet.
///
/// Values are stored per [`Field`] with a mask (`value & !mask == 0`, mask never zero). OXM
/// prerequisites are the caller's business, as in ovs-ofctl: `Match::new().tcp().tcp_dst(80)`
/// (`tcp_dst` alone is rejected by OVS with a bad-prerequisite error).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    fields: BTreeMap<Field, (u128, u128)>,
}

impl Match {
    /// A match-all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Matches `field` exactly.
    pub fn field(self, field: Field, value: u128) -> Self {
        self.field_masked(field, value, field.all_ones())
    }

    /// Matches the bits of `field` set in `mask`; a zero mask removes the field.
    /// `xregN` is stored as its two 32-bit halves `reg(2N)` and `reg(2N+1)`, as OVS does.
    pub fn field_masked(mut self, field: Field, value: u128, mask: u128) -> Self {
        self.set(field, value, mask);
        self
    }

    /// In-place form of [`Match::field_masked`]. Out-of-range register indexes are ignored.
    pub fn set(&mut self, field: Field, value: u128, mask: u128) {
        if !field.is_valid() {
            return;
        }
        if let Field::Xreg(i) = field {
            let (v, m) = (value as u64, mask as u64);
            self.set(Field::Reg(2 * i), u128::from(v >> 32), u128::from(m >> 32));
            self.set(
                Field::Reg(2 * i + 1),
                u128::from(v & 0xffff_ffff),
                u128::from(m & 0xffff_ffff),
            );
            return;
        }
        if field == Field::InPort {
            // The 16-bit OpenFlow 1.0 port is kept in its 32-bit form.
            let port = u128::from(super::field::port::from_u16(value as u16));
            let mask = if mask as u16 == u16::MAX {
                u128::from(u32::MAX)
            } else {
                mask & 0xffff
            };
            return self.set(Field::InPortOxm, port, mask);
        }
        let mask = mask & field.all_ones();
        if mask == 0 {
            self.fields.remove(&field);
        } else {
            self.fields.insert(field, (value & mask, mask));
        }
    }

    /// The (value, mask) for `field`, if matched.
    pub fn get(&self, field: Field) -> Option<(u128, u128)> {
        self.fields.get(&field).copied()
    }

    /// Every matched (field, value, mask), in field order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, u128, u128)> + '_ {
        self.fields.iter().map(|(f, (v, m))| (*f, *v, *m))
    }

    /// Whether this matches every packet.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Ingress OpenFlow port (32-bit port number, see [`crate::flow::port`]).
    pub fn in_port(self, port: u32) -> Self {
        self.field(Field::InPortOxm, u128::from(port))
    }

    /// Ethernet source address.
    pub fn eth_src(self, mac: MacAddr) -> Self {
        self.field(Field::EthSrc, mac.to_u128())
    }

    /// Ethernet source address under a mask.
    pub fn eth_src_masked(self, mac: MacAddr, mask: MacAddr) -> Self {
        self.field_masked(Field::EthSrc, mac.to_u128(), mask.to_u128())
    }

    /// Ethernet destination address.
    pub fn eth_dst(self, mac: MacAddr) -> Self {
        self.field(Field::EthDst, mac.to_u128())
    }

    /// Ethernet destination address under a mask.
    pub fn eth_dst_masked(self, mac: MacAddr, mask: MacAddr) -> Self {
        self.field_masked(Field::EthDst, mac.to_u128(), mask.to_u128())
    }

    /// Ethernet type.
    pub fn eth_type(self, eth_type: u16) -> Self {
        self.field(Field::EthType, u128::from(eth_type))
    }

    /// IPv4 packets (`ip`).
    pub fn ip(self) -> Self {
        self.eth_type(ETH_IP)
    }

    /// IPv4 packets (`ip`); same as [`Match::ip`].
    pub fn ipv4(self) -> Self {
        self.ip()
    }

    /// IPv6 packets (`ipv6`).
    pub fn ipv6(self) -> Self {
        self.eth_type(ETH_IPV6)
    }

    /// ARP packets (`arp`).
    pub fn arp(self) -> Self {
        self.eth_type(ETH_ARP)
    }

    /// IP protocol (needs `ip()` or `ipv6()`).
    pub fn ip_proto(self, proto: u8) -> Self {
        self.field(Field::IpProto, u128::from(proto))
    }

    /// IPv4 TCP (`tcp`).
    pub fn tcp(self) -> Self {
        self.ip().ip_proto(PROTO_TCP)
    }

    /// IPv4 UDP (`udp`).
    pub fn udp(self) -> Self {
        self.ip().ip_proto(PROTO_UDP)
    }

    /// IPv4 SCTP (`sctp`).
    pub fn sctp(self) -> Self {
        self.ip().ip_proto(PROTO_SCTP)
    }

    /// ICMPv4 (`icmp`).
    pub fn icmp(self) -> Self {
        self.ip().ip_proto(PROTO_ICMP)
    }

    /// IPv6 TCP (`tcp6`).
    pub fn tcp6(self) -> Self {
        self.ipv6().ip_proto(PROTO_TCP)
    }

    /// IPv6 UDP (`udp6`).
    pub fn udp6(self) -> Self {
        self.ipv6().ip_proto(PROTO_UDP)
    }

    /// ICMPv6 (`icmp6`).
    pub fn icmp6(self) -> Self {
        self.ipv6().ip_proto(PROTO_ICMPV6)
    }

    /// Packets tagged with VLAN id `vid` (`dl_vlan`).
    pub fn dl_vlan(self, vid: u16) -> Self {
        self.vlan_tci(0x1000 | (vid & 0x0fff), 0x1fff)
    }

    /// The 802.1Q TCI under a mask (`vlan_tci`; 0x1000 is the tag-present bit).
    pub fn vlan_tci(self, tci: u16, mask: u16) -> Self {
        self.field_masked(Field::VlanTci, u128::from(tci), u128::from(mask))
    }

    /// IPv4 source prefix (needs `ip()`).
    pub fn nw_src(self, net: Ipv4Net) -> Self {
        self.field_masked(Field::Ipv4Src, ip4(net.network()), ip4(net.netmask()))
    }

    /// IPv4 destination prefix (needs `ip()`).
    pub fn nw_dst(self, net: Ipv4Net) -> Self {
        self.field_masked(Field::Ipv4Dst, ip4(net.network()), ip4(net.netmask()))
    }

    /// IPv4 source under an arbitrary mask.
    pub fn nw_src_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Self {
        self.field_masked(Field::Ipv4Src, ip4(addr), ip4(mask))
    }

    /// IPv4 destination under an arbitrary mask.
    pub fn nw_dst_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Self {
        self.field_masked(Field::Ipv4Dst, ip4(addr), ip4(mask))
    }

    /// IPv6 source prefix (needs `ipv6()`).
    pub fn ipv6_src(self, net: Ipv6Net) -> Self {
        self.field_masked(Field::Ipv6Src, ip6(net.network()), ip6(net.netmask()))
    }

    /// IPv6 destination prefix (needs `ipv6()`).
    pub fn ipv6_dst(self, net: Ipv6Net) -> Self {
        self.field_masked(Field::Ipv6Dst, ip6(net.network()), ip6(net.netmask()))
    }

    /// `sctp_dst` (`tp_dst` with `sctp`/`sctp6`).
    pub fn sctp_dst(self, p: u16) -> Self {
        self.field(Field::SctpDst, u128::from(p))
    }

    /// `sctp_dst` with a mask.
    pub fn sctp_dst_masked(self, p: u16, mask: u16) -> Self {
        self.field_masked(Field::SctpDst, u128::from(p), u128::from(mask))
    }

    /// `sctp6`.
    pub fn sctp6(self) -> Self {
        self.ipv6().ip_proto(132)
    }

    /// `conj_id=ID`: the packet completed conjunctive match `ID`.
    pub fn conj_id(self, id: u32) -> Self {
        self.field(Field::ConjId, u128::from(id))
    }

    /// TCP source port (needs `tcp()`/`tcp6()`).
    pub fn tcp_src(self, p: u16) -> Self {
        self.field(Field::TcpSrc, u128::from(p))
    }

    /// TCP destination port (needs `tcp()`/`tcp6()`).
    pub fn tcp_dst(self, p: u16) -> Self {
        self.field(Field::TcpDst, u128::from(p))
    }

    /// TCP source port under a mask.
    pub fn tcp_src_masked(self, p: u16, mask: u16) -> Self {
        self.field_masked(Field::TcpSrc, u128::from(p), u128::from(mask))
    }

    /// TCP destination port under a mask.
    pub fn tcp_dst_masked(self, p: u16, mask: u16) -> Self {
        self.field_masked(Field::TcpDst, u128::from(p), u128::from(mask))
    }

    /// UDP source port (needs `udp()`/`udp6()`).
    pub fn udp_src(self, p: u16) -> Self {
        self.field(Field::UdpSrc, u128::from(p))
    }

    /// UDP destination port (needs `udp()`/`udp6()`).
    pub fn udp_dst(self, p: u16) -> Self {
        self.field(Field::UdpDst, u128::from(p))
    }

    /// UDP source port under a mask.
    pub fn udp_src_masked(self, p: u16, mask: u16) -> Self {
        self.field_masked(Field::UdpSrc, u128::from(p), u128::from(mask))
    }

    /// UDP destination port under a mask.
    pub fn udp_dst_masked(self, p: u16, mask: u16) -> Self {
        self.field_masked(Field::UdpDst, u128::from(p), u128::from(mask))
    }

    /// ICMPv4 type (needs `icmp()`).
    pub fn icmp_type(self, t: u8) -> Self {
        self.field(Field::Icmpv4Type, u128::from(t))
    }

    /// ICMPv4 code (needs `icmp()`).
    pub fn icmp_code(self, c: u8) -> Self {
        self.field(Field::Icmpv4Code, u128::from(c))
    }

    /// ICMPv6 type (needs `icmp6()`).
    pub fn icmpv6_type(self, t: u8) -> Self {
        self.field(Field::Icmpv6Type, u128::from(t))
    }

    /// ICMPv6 code (needs `icmp6()`).
    pub fn icmpv6_code(self, c: u8) -> Self {
        self.field(Field::Icmpv6Code, u128::from(c))
    }

    /// Neighbor discovery target (needs `icmp6()` and type 135 or 136).
    pub fn nd_target(self, addr: Ipv6Addr) -> Self {
        self.field(Field::NdTarget, ip6(addr))
    }

    /// ND source link-layer address (needs `icmp6()` and type 135).
    pub fn nd_sll(self, mac: MacAddr) -> Self {
        self.field(Field::NdSll, mac.to_u128())
    }

    /// ND target link-layer address (needs `icmp6()` and type 136).
    pub fn nd_tll(self, mac: MacAddr) -> Self {
        self.field(Field::NdTll, mac.to_u128())
    }

    /// ND reserved field, exactly (needs `icmp6()` and type 135 or 136); in an advertisement
    /// the top three bits are the R, S and O flags.
    pub fn nd_reserved(self, value: u32) -> Self {
        self.field(Field::NdReserved, u128::from(value))
    }

    /// Type of the first ND option, exactly (needs `icmp6()` and type 135 or 136).
    pub fn nd_options_type(self, option: u8) -> Self {
        self.field(Field::NdOptionsType, u128::from(option))
    }

    /// ARP opcode (needs `arp()`).
    pub fn arp_op(self, op: u16) -> Self {
        self.field(Field::ArpOp, u128::from(op))
    }

    /// ARP sender protocol address prefix (needs `arp()`).
    pub fn arp_spa(self, net: Ipv4Net) -> Self {
        self.field_masked(Field::ArpSpa, ip4(net.network()), ip4(net.netmask()))
    }

    /// ARP target protocol address prefix (needs `arp()`).
    pub fn arp_tpa(self, net: Ipv4Net) -> Self {
        self.field_masked(Field::ArpTpa, ip4(net.network()), ip4(net.netmask()))
    }

    /// ARP sender hardware address (needs `arp()`).
    pub fn arp_sha(self, mac: MacAddr) -> Self {
        self.field(Field::ArpSha, mac.to_u128())
    }

    /// ARP target hardware address (needs `arp()`).
    pub fn arp_tha(self, mac: MacAddr) -> Self {
        self.field(Field::ArpTha, mac.to_u128())
    }

    /// Conntrack state: the [`ct_state`] bits in `set` must be set, those in `clear` clear
    /// (`ct_state=+trk-new` is `ct_state(TRK, NEW)`).
    pub fn ct_state(self, set: u32, clear: u32) -> Self {
        self.field_masked(Field::CtState, u128::from(set), u128::from(set | clear))
    }

    /// Conntrack zone.
    pub fn ct_zone(self, zone: u16) -> Self {
        self.field(Field::CtZone, u128::from(zone))
    }

    /// Conntrack mark.
    pub fn ct_mark(self, mark: u32) -> Self {
        self.field(Field::CtMark, u128::from(mark))
    }

    /// Conntrack mark under a mask.
    pub fn ct_mark_masked(self, mark: u32, mask: u32) -> Self {
        self.field_masked(Field::CtMark, u128::from(mark), u128::from(mask))
    }

    /// Conntrack label.
    pub fn ct_label(self, label: u128) -> Self {
        self.field(Field::CtLabel, label)
    }

    /// Conntrack label under a mask.
    pub fn ct_label_masked(self, label: u128, mask: u128) -> Self {
        self.field_masked(Field::CtLabel, label, mask)
    }

    /// 32-bit register `reg{i}` (0..=15).
    pub fn reg(self, i: u8, value: u32) -> Self {
        self.field(Field::Reg(i), u128::from(value))
    }

    /// 32-bit register `reg{i}` under a mask.
    pub fn reg_masked(self, i: u8, value: u32, mask: u32) -> Self {
        self.field_masked(Field::Reg(i), u128::from(value), u128::from(mask))
    }

    /// 64-bit register `xreg{i}` (0..=7); printed by OVS as `reg(2i)`/`reg(2i+1)`.
    pub fn xreg(self, i: u8, value: u64) -> Self {
        self.field(Field::Xreg(i), u128::from(value))
    }

    /// 64-bit register `xreg{i}` under a mask.
    pub fn xreg_masked(self, i: u8, value: u64, mask: u64) -> Self {
        self.field_masked(Field::Xreg(i), u128::from(value), u128::from(mask))
    }

    /// Tunnel id (VNI).
    pub fn tun_id(self, id: u64) -> Self {
        self.field(Field::TunId, u128::from(id))
    }

    /// Tunnel id under a mask.
    pub fn tun_id_masked(self, id: u64, mask: u64) -> Self {
        self.field_masked(Field::TunId, u128::from(id), u128::from(mask))
    }

    /// Tunnel IPv4 source.
    pub fn tun_src(self, addr: Ipv4Addr) -> Self {
        self.field(Field::TunSrc, ip4(addr))
    }

    /// Tunnel IPv4 destination.
    pub fn tun_dst(self, addr: Ipv4Addr) -> Self {
        self.field(Field::TunDst, ip4(addr))
    }

    /// Tunnel IPv6 source.
    pub fn tun_ipv6_src(self, addr: Ipv6Addr) -> Self {
        self.field(Field::TunIpv6Src, ip6(addr))
    }

    /// Tunnel IPv6 destination.
    pub fn tun_ipv6_dst(self, addr: Ipv6Addr) -> Self {
        self.field(Field::TunIpv6Dst, ip6(addr))
    }

    /// OpenFlow metadata.
    pub fn metadata(self, value: u64) -> Self {
        self.field(Field::Metadata, u128::from(value))
    }

    /// OpenFlow metadata under a mask.
    pub fn metadata_masked(self, value: u64, mask: u64) -> Self {
        self.field_masked(Field::Metadata, u128::from(value), u128::from(mask))
    }

    /// Packet mark.
    pub fn pkt_mark(self, mark: u32) -> Self {
        self.field(Field::PktMark, u128::from(mark))
    }

    /// Packet mark under a mask.
    pub fn pkt_mark_masked(self, mark: u32, mask: u32) -> Self {
        self.field_masked(Field::PktMark, u128::from(mark), u128::from(mask))
    }

    /// The exact value of a field, if matched with a full mask.
    fn exact(&self, field: Field) -> Option<u128> {
        self.get(field)
            .filter(|(_, m)| *m == field.all_ones())
            .map(|(v, _)| v)
    }
}

fn ip4(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a))
}

fn ip6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

/// C's `format_uint32_masked` / `format_be64_masked`: `%#x[/%#x]`.
fn hex_masked(out: &mut String, name: &str, v: u128, m: u128, full: u128) {
    let _ = write!(out, "{name}={}", c_hex(v));
    if m != full {
        let _ = write!(out, "/{}", c_hex(m));
    }
    out.push(',');
}

/// C's `format_be16_masked` / `format_uint16_masked`: decimal if exact, else `0x%x/0x%x`.
fn dec_masked(out: &mut String, name: &str, v: u128, m: u128, full: u128) {
    if m == full {
        let _ = write!(out, "{name}={v},");
    } else {
        let _ = write!(out, "{name}={v:#x}/{m:#x},");
    }
}

impl fmt::Display for Match {
    /// The match as `ovs-ofctl` prints it (without priority), e.g. `ct_state=-new+trk,tcp,reg0=0x1/0xf,tp_dst=80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Field::*;
        let mut s = String::new();
        let g = |field| self.get(field);
        if let Some((v, m)) = g(PktMark) {
            hex_masked(&mut s, "pkt_mark", v, m, PktMark.all_ones());
        }
        if let Some((v, _)) = g(ConjId) {
            let _ = write!(s, "conj_id={v},");
        }
        if let Some((v, m)) = g(CtState) {
            let _ = write!(
                s,
                "ct_state={},",
                ct_state_masked(v as u32, m as u32 & 0xff)
            );
        }
        if let Some((v, m)) = g(CtZone) {
            dec_masked(&mut s, "ct_zone", v, m, 0xffff);
        }
        if let Some((v, m)) = g(CtMark) {
            hex_masked(&mut s, "ct_mark", v, m, CtMark.all_ones());
        }
        if let Some((v, m)) = g(CtLabel) {
            hex_masked(&mut s, "ct_label", v, m, u128::MAX);
        }

        // Shorthands: `ip`, `tcp`, `icmp6`, `arp`, ...
        let dl_type = g(EthType).map(|(v, _)| v as u16);
        let proto = g(IpProto).map(|(v, _)| v as u8);
        let mut skip_type = false;
        let mut skip_proto = false;
        if let Some(t) = dl_type {
            let short = match (t, proto) {
                (ETH_IP, Some(PROTO_ICMP)) => Some(("icmp", true)),
                (ETH_IP, Some(PROTO_TCP)) => Some(("tcp", true)),
                (ETH_IP, Some(PROTO_UDP)) => Some(("udp", true)),
                (ETH_IP, Some(PROTO_SCTP)) => Some(("sctp", true)),
                (ETH_IP, _) => Some(("ip", false)),
                (ETH_IPV6, Some(PROTO_ICMPV6)) => Some(("icmp6", true)),
                (ETH_IPV6, Some(PROTO_TCP)) => Some(("tcp6", true)),
                (ETH_IPV6, Some(PROTO_UDP)) => Some(("udp6", true)),
                (ETH_IPV6, Some(PROTO_SCTP)) => Some(("sctp6", true)),
                (ETH_IPV6, _) => Some(("ipv6", false)),
                (ETH_ARP, _) => Some(("arp", false)),
                (ETH_RARP, _) => Some(("rarp", false)),
                _ => None,
            };
            if let Some((name, proto_done)) = short {
                skip_type = true;
                skip_proto = proto_done;
                let _ = write!(s, "{name},");
            }
        }

        for i in 0..16 {
            if let Some((v, m)) = g(Reg(i)) {
                hex_masked(&mut s, &format!("reg{i}"), v, m, u128::from(u32::MAX));
            }
        }
        if let Some((v, m)) = g(TunId) {
            hex_masked(&mut s, "tun_id", v, m, TunId.all_ones());
        }
        for (field, name) in [(TunSrc, "tun_src"), (TunDst, "tun_dst")] {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", ipv4_masked(v, m));
            }
        }
        for (field, name) in [(TunIpv6Src, "tun_ipv6_src"), (TunIpv6Dst, "tun_ipv6_dst")] {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", ipv6_masked(v, m));
            }
        }
        if let Some((v, m)) = g(Metadata) {
            hex_masked(&mut s, "metadata", v, m, Metadata.all_ones());
        }
        if let Some(v) = self.exact(InPortOxm) {
            let _ = write!(s, "in_port={},", port_name(v as u32));
        } else if let Some((v, m)) = g(InPortOxm) {
            let _ = write!(s, "in_port={v:#x}/{m:#x},");
        }
        if let Some((tci, mask)) = g(VlanTci) {
            let (tci, mask) = (tci as u16, mask as u16);
            let vid_mask = mask & 0x0fff;
            let pcp_mask = mask & 0xe000;
            if mask & 0x1000 != 0
                && tci & 0x1000 != 0
                && (vid_mask == 0 || vid_mask == 0x0fff)
                && (pcp_mask == 0 || pcp_mask == 0xe000)
                && (vid_mask != 0 || pcp_mask != 0)
            {
                if vid_mask != 0 {
                    let _ = write!(s, "dl_vlan={},", tci & 0x0fff);
                }
                if pcp_mask != 0 {
                    let _ = write!(s, "dl_vlan_pcp={},", tci >> 13);
                }
            } else if mask == 0xffff {
                let _ = write!(s, "vlan_tci=0x{tci:04x},");
            } else {
                let _ = write!(s, "vlan_tci=0x{tci:04x}/0x{mask:04x},");
            }
        }
        if let Some((v, m)) = g(EthSrc) {
            let _ = write!(s, "dl_src={},", mac_masked(v, m));
        }
        if let Some((v, m)) = g(EthDst) {
            let _ = write!(s, "dl_dst={},", mac_masked(v, m));
        }
        if let (Some(t), false) = (dl_type, skip_type) {
            let _ = write!(s, "dl_type=0x{t:04x},");
        }
        let ipv4_addrs = [(Ipv4Src, "nw_src"), (Ipv4Dst, "nw_dst")];
        let arp_addrs = [(ArpSpa, "arp_spa"), (ArpTpa, "arp_tpa")];
        for (field, name) in ipv4_addrs.into_iter().chain(arp_addrs) {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", ipv4_masked(v, m));
            }
        }
        for (field, name) in [(Ipv6Src, "ipv6_src"), (Ipv6Dst, "ipv6_dst")] {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", ipv6_masked(v, m));
            }
        }
        if let (Some(p), false) = (proto, skip_proto) {
            let _ = write!(s, "nw_proto={p},");
        }
        if let Some((v, _)) = g(ArpOp) {
            let _ = write!(s, "arp_op={v},");
        }
        for (field, name) in [(ArpSha, "arp_sha"), (ArpTha, "arp_tha")] {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", mac_masked(v, m));
            }
        }
        let ports = [
            (Icmpv4Type, "icmp_type"),
            (Icmpv4Code, "icmp_code"),
            (Icmpv6Type, "icmp_type"),
            (Icmpv6Code, "icmp_code"),
        ];
        for (field, name) in ports {
            if let Some((v, m)) = g(field) {
                dec_masked(&mut s, name, v, m, field.all_ones());
            }
        }
        if let Some((v, m)) = g(NdTarget) {
            let _ = write!(s, "nd_target={},", ipv6_masked(v, m));
        }
        for (field, name) in [(NdSll, "nd_sll"), (NdTll, "nd_tll")] {
            if let Some((v, m)) = g(field) {
                let _ = write!(s, "{name}={},", mac_masked(v, m));
            }
        }
        if let Some((v, m)) = g(NdReserved) {
            // C's `format_be32_masked`: decimal if exact, else `0x%08x/0x%08x`.
            if m == NdReserved.all_ones() {
                let _ = write!(s, "nd_reserved={v},");
            } else {
                let _ = write!(s, "nd_reserved=0x{v:08x}/0x{m:08x},");
            }
        }
        if let Some((v, m)) = g(NdOptionsType) {
            dec_masked(&mut s, "nd_options_type", v, m, NdOptionsType.all_ones());
        }
        let l4 = [
            (TcpSrc, "tp_src"),
            (UdpSrc, "tp_src"),
            (TcpDst, "tp_dst"),
            (UdpDst, "tp_dst"),
            (SctpSrc, "tp_src"),
            (SctpDst, "tp_dst"),
        ];
        for (field, name) in l4 {
            if let Some((v, m)) = g(field) {
                dec_masked(&mut s, name, v, m, 0xffff);
            }
        }
        if s.ends_with(',') {
            s.pop();
        }
        f.write_str(&s)
    }
}
