//! The match/set-field fields Weft uses, with their OXM/NXM wire identity and OVS names.

use std::fmt;

/// OXM class `NXM_0` (Nicira's original OpenFlow 1.0 fields).
pub const OXM_CLASS_NXM0: u16 = 0x0000;
/// OXM class `NXM_1` (Nicira extension fields: registers, tunnel, conntrack, ...).
pub const OXM_CLASS_NXM1: u16 = 0x0001;
/// OXM class `OPENFLOW_BASIC` (standard OpenFlow fields).
pub const OXM_CLASS_OPENFLOW_BASIC: u16 = 0x8000;
/// OXM class `PACKET_REGS` (OpenFlow 1.5 64-bit packet registers, OVS `xreg0`..`xreg7`).
pub const OXM_CLASS_PACKET_REGS: u16 = 0x8001;
/// OXM class `ERICOXM_OF` (Ericsson's extension fields: IPv6 ND reserved bits and option type).
pub const OXM_CLASS_ERICOXM_OF: u16 = 0x1000;

/// A header field known to Weft: usable in a [`crate::flow::Match`], as a `set_field`
/// target, and (as a [`SubField`]) in `move`, `learn`, `ct(zone=...)` and `check_pkt_larger`.
///
/// Each field has one wire identity (the header Weft encodes) and OVS's names for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Ingress port, 16-bit OpenFlow 1.0 port number (`NXM_OF_IN_PORT`); for subfields.
    InPort,
    /// Ingress port, 32-bit OpenFlow 1.1+ port number (`OXM_OF_IN_PORT`); used by matches.
    InPortOxm,
    /// Ethernet source address.
    EthSrc,
    /// Ethernet destination address.
    EthDst,
    /// Ethernet type.
    EthType,
    /// 802.1Q TCI (`NXM_OF_VLAN_TCI`, CFI bit 0x1000 means "tag present").
    VlanTci,
    /// IP protocol number.
    IpProto,
    /// IPv4 source address.
    Ipv4Src,
    /// IPv4 destination address.
    Ipv4Dst,
    /// IPv6 source address.
    Ipv6Src,
    /// IPv6 destination address.
    Ipv6Dst,
    /// TCP source port.
    TcpSrc,
    /// TCP destination port.
    TcpDst,
    /// UDP source port.
    UdpSrc,
    /// UDP destination port.
    UdpDst,
    /// SCTP source port.
    SctpSrc,
    /// SCTP destination port.
    SctpDst,
    /// The conjunction id of a completed conjunctive match (`conj_id`, match only).
    ConjId,
    /// ICMPv4 type.
    Icmpv4Type,
    /// ICMPv4 code.
    Icmpv4Code,
    /// ICMPv6 type.
    Icmpv6Type,
    /// ICMPv6 code.
    Icmpv6Code,
    /// ARP opcode.
    ArpOp,
    /// ARP sender protocol address.
    ArpSpa,
    /// ARP target protocol address.
    ArpTpa,
    /// ARP sender hardware address.
    ArpSha,
    /// ARP target hardware address.
    ArpTha,
    /// IPv6 neighbor discovery target address.
    NdTarget,
    /// IPv6 ND source link-layer address option.
    NdSll,
    /// IPv6 ND target link-layer address option.
    NdTll,
    /// IPv6 ND 32-bit reserved field; in an advertisement its top bits are the R, S and O
    /// flags (`0x60000000` = solicited + override). Exact match only.
    NdReserved,
    /// IPv6 ND type of the first option (1 source, 2 target link-layer address). Exact match
    /// only.
    NdOptionsType,
    /// Connection tracking state flags (see [`crate::flow::ct_state`]).
    CtState,
    /// Connection tracking zone.
    CtZone,
    /// Connection tracking mark.
    CtMark,
    /// Connection tracking label (128 bits).
    CtLabel,
    /// 32-bit register `reg0`..`reg15`.
    Reg(u8),
    /// 64-bit register `xreg0`..`xreg7` (`xregN` = `reg(2N)` high, `reg(2N+1)` low).
    Xreg(u8),
    /// Tunnel id (VNI).
    TunId,
    /// Tunnel IPv4 source.
    TunSrc,
    /// Tunnel IPv4 destination.
    TunDst,
    /// Tunnel IPv6 source.
    TunIpv6Src,
    /// Tunnel IPv6 destination.
    TunIpv6Dst,
    /// OpenFlow metadata (64 bits).
    Metadata,
    /// Packet mark (skb mark).
    PktMark,
}

/// How OVS prints a field's value in `set_field` and full-field `learn` immediates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueFormat {
    Decimal,
    Hex,
    Mac,
    Ipv4,
    Ipv6,
    Port16,
    Port32,
    CtState,
}

impl Field {
    /// Every field with a fixed identity, for table-driven lookups (registers expanded).
    pub(crate) fn all() -> impl Iterator<Item = Field> {
        use Field::*;
        // Kept compact by hand: rustfmt would put one name per line.
        #[rustfmt::skip]
        const FIXED: [Field; 43] = [
            InPort, InPortOxm, EthSrc, EthDst, EthType, VlanTci, IpProto, Ipv4Src, Ipv4Dst,
            Ipv6Src, Ipv6Dst, TcpSrc, TcpDst, UdpSrc, UdpDst, Icmpv4Type, Icmpv4Code, Icmpv6Type,
            Icmpv6Code, ArpOp, ArpSpa, ArpTpa, ArpSha, ArpTha, NdTarget, NdSll, NdTll, NdReserved,
            NdOptionsType, CtState, CtZone, CtMark, CtLabel, TunId, TunSrc, TunDst, TunIpv6Src,
            TunIpv6Dst, Metadata, PktMark, SctpSrc, SctpDst, ConjId,
        ];
        FIXED
            .into_iter()
            .chain((0..16).map(Reg))
            .chain((0..8).map(Xreg))
    }

    /// The wire header Weft encodes: (OXM class, field number, value length in bytes).
    pub fn header(self) -> (u16, u8, u8) {
        use Field::*;
        const B: u16 = OXM_CLASS_OPENFLOW_BASIC;
        const N0: u16 = OXM_CLASS_NXM0;
        const N1: u16 = OXM_CLASS_NXM1;
        match self {
            InPort => (N0, 0, 2),
            InPortOxm => (B, 0, 4),
            EthDst => (B, 3, 6),
            EthSrc => (B, 4, 6),
            EthType => (B, 5, 2),
            VlanTci => (N0, 4, 2),
            IpProto => (B, 10, 1),
            Ipv4Src => (B, 11, 4),
            Ipv4Dst => (B, 12, 4),
            TcpSrc => (B, 13, 2),
            TcpDst => (B, 14, 2),
            UdpSrc => (B, 15, 2),
            UdpDst => (B, 16, 2),
            SctpSrc => (B, 17, 2),
            SctpDst => (B, 18, 2),
            ConjId => (N1, 37, 4),
            Icmpv4Type => (B, 19, 1),
            Icmpv4Code => (B, 20, 1),
            ArpOp => (B, 21, 2),
            ArpSpa => (B, 22, 4),
            ArpTpa => (B, 23, 4),
            ArpSha => (B, 24, 6),
            ArpTha => (B, 25, 6),
            Ipv6Src => (B, 26, 16),
            Ipv6Dst => (B, 27, 16),
            Icmpv6Type => (B, 29, 1),
            Icmpv6Code => (B, 30, 1),
            NdTarget => (B, 31, 16),
            NdSll => (B, 32, 6),
            NdTll => (B, 33, 6),
            NdReserved => (OXM_CLASS_ERICOXM_OF, 1, 4),
            NdOptionsType => (OXM_CLASS_ERICOXM_OF, 2, 1),
            TunId => (B, 38, 8),
            Metadata => (B, 2, 8),
            Reg(i) => (N1, i, 4),
            Xreg(i) => (OXM_CLASS_PACKET_REGS, i, 8),
            TunSrc => (N1, 31, 4),
            TunDst => (N1, 32, 4),
            PktMark => (N1, 33, 4),
            CtState => (N1, 105, 4),
            CtZone => (N1, 106, 2),
            CtMark => (N1, 107, 4),
            CtLabel => (N1, 108, 16),
            TunIpv6Src => (N1, 109, 16),
            TunIpv6Dst => (N1, 110, 16),
        }
    }

    /// Alternative (NXM) headers that decode to this field, besides [`Field::header`].
    pub(crate) fn alias(self) -> Option<(u16, u8)> {
        use Field::*;
        const N0: u16 = OXM_CLASS_NXM0;
        const N1: u16 = OXM_CLASS_NXM1;
        Some(match self {
            EthDst => (N0, 1),
            EthSrc => (N0, 2),
            EthType => (N0, 3),
            IpProto => (N0, 6),
            Ipv4Src => (N0, 7),
            Ipv4Dst => (N0, 8),
            TcpSrc => (N0, 9),
            TcpDst => (N0, 10),
            UdpSrc => (N0, 11),
            UdpDst => (N0, 12),
            Icmpv4Type => (N0, 13),
            Icmpv4Code => (N0, 14),
            ArpOp => (N0, 15),
            ArpSpa => (N0, 16),
            ArpTpa => (N0, 17),
            TunId => (N1, 16),
            ArpSha => (N1, 17),
            ArpTha => (N1, 18),
            Ipv6Src => (N1, 19),
            Ipv6Dst => (N1, 20),
            Icmpv6Type => (N1, 21),
            Icmpv6Code => (N1, 22),
            NdTarget => (N1, 23),
            NdSll => (N1, 24),
            NdTll => (N1, 25),
            _ => return None,
        })
    }

    /// Value length in bytes.
    pub fn n_bytes(self) -> usize {
        usize::from(self.header().2)
    }

    /// Value width in bits (as OVS counts it for subfields).
    pub fn n_bits(self) -> u16 {
        u16::from(self.header().2) * 8
    }

    /// A value with every bit of this field set.
    pub fn all_ones(self) -> u128 {
        ones(self.n_bits())
    }

    /// OVS's field name, as printed in `set_field:...->NAME` (e.g. `reg1`, `tun_dst`, `eth_src`).
    pub fn name(self) -> String {
        use Field::*;
        let s = match self {
            InPort => "in_port",
            InPortOxm => "in_port_oxm",
            EthSrc => "eth_src",
            EthDst => "eth_dst",
            EthType => "eth_type",
            VlanTci => "vlan_tci",
            IpProto => "nw_proto",
            Ipv4Src => "ip_src",
            Ipv4Dst => "ip_dst",
            Ipv6Src => "ipv6_src",
            Ipv6Dst => "ipv6_dst",
            TcpSrc => "tcp_src",
            TcpDst => "tcp_dst",
            UdpSrc => "udp_src",
            UdpDst => "udp_dst",
            SctpSrc => "sctp_src",
            SctpDst => "sctp_dst",
            ConjId => "conj_id",
            Icmpv4Type => "icmp_type",
            Icmpv4Code => "icmp_code",
            Icmpv6Type => "icmpv6_type",
            Icmpv6Code => "icmpv6_code",
            ArpOp => "arp_op",
            ArpSpa => "arp_spa",
            ArpTpa => "arp_tpa",
            ArpSha => "arp_sha",
            ArpTha => "arp_tha",
            NdTarget => "nd_target",
            NdSll => "nd_sll",
            NdTll => "nd_tll",
            NdReserved => "nd_reserved",
            NdOptionsType => "nd_options_type",
            CtState => "ct_state",
            CtZone => "ct_zone",
            CtMark => "ct_mark",
            CtLabel => "ct_label",
            Reg(i) => return format!("reg{i}"),
            Xreg(i) => return format!("xreg{i}"),
            TunId => "tun_id",
            TunSrc => "tun_src",
            TunDst => "tun_dst",
            TunIpv6Src => "tun_ipv6_src",
            TunIpv6Dst => "tun_ipv6_dst",
            Metadata => "metadata",
            PktMark => "pkt_mark",
        };
        s.to_string()
    }

    /// OVS's NXM/OXM name, as printed in subfields (e.g. `NXM_NX_REG0[0..15]`).
    pub fn nxm_name(self) -> String {
        use Field::*;
        let s = match self {
            InPort => "NXM_OF_IN_PORT",
            InPortOxm => "OXM_OF_IN_PORT",
            EthSrc => "NXM_OF_ETH_SRC",
            EthDst => "NXM_OF_ETH_DST",
            EthType => "NXM_OF_ETH_TYPE",
            VlanTci => "NXM_OF_VLAN_TCI",
            IpProto => "NXM_OF_IP_PROTO",
            Ipv4Src => "NXM_OF_IP_SRC",
            Ipv4Dst => "NXM_OF_IP_DST",
            Ipv6Src => "NXM_NX_IPV6_SRC",
            Ipv6Dst => "NXM_NX_IPV6_DST",
            TcpSrc => "NXM_OF_TCP_SRC",
            TcpDst => "NXM_OF_TCP_DST",
            UdpSrc => "NXM_OF_UDP_SRC",
            UdpDst => "NXM_OF_UDP_DST",
            SctpSrc => "OXM_OF_SCTP_SRC",
            SctpDst => "OXM_OF_SCTP_DST",
            ConjId => "NXM_NX_CONJ_ID",
            Icmpv4Type => "NXM_OF_ICMP_TYPE",
            Icmpv4Code => "NXM_OF_ICMP_CODE",
            Icmpv6Type => "NXM_NX_ICMPV6_TYPE",
            Icmpv6Code => "NXM_NX_ICMPV6_CODE",
            ArpOp => "NXM_OF_ARP_OP",
            ArpSpa => "NXM_OF_ARP_SPA",
            ArpTpa => "NXM_OF_ARP_TPA",
            ArpSha => "NXM_NX_ARP_SHA",
            ArpTha => "NXM_NX_ARP_THA",
            NdTarget => "NXM_NX_ND_TARGET",
            NdSll => "NXM_NX_ND_SLL",
            NdTll => "NXM_NX_ND_TLL",
            NdReserved => "ERICOXM_OF_ICMPV6_ND_RESERVED",
            NdOptionsType => "ERICOXM_OF_ICMPV6_ND_OPTIONS_TYPE",
            CtState => "NXM_NX_CT_STATE",
            CtZone => "NXM_NX_CT_ZONE",
            CtMark => "NXM_NX_CT_MARK",
            CtLabel => "NXM_NX_CT_LABEL",
            Reg(i) => return format!("NXM_NX_REG{i}"),
            Xreg(i) => return format!("OXM_OF_PKT_REG{i}"),
            TunId => "NXM_NX_TUN_ID",
            TunSrc => "NXM_NX_TUN_IPV4_SRC",
            TunDst => "NXM_NX_TUN_IPV4_DST",
            TunIpv6Src => "NXM_NX_TUN_IPV6_SRC",
            TunIpv6Dst => "NXM_NX_TUN_IPV6_DST",
            Metadata => "OXM_OF_METADATA",
            PktMark => "NXM_NX_PKT_MARK",
        };
        s.to_string()
    }

    /// How OVS prints this field's value (`mf_format`).
    pub(crate) fn value_format(self) -> ValueFormat {
        use Field::*;
        match self {
            InPort => ValueFormat::Port16,
            InPortOxm => ValueFormat::Port32,
            EthSrc | EthDst | ArpSha | ArpTha | NdSll | NdTll => ValueFormat::Mac,
            Ipv4Src | Ipv4Dst | ArpSpa | ArpTpa | TunSrc | TunDst => ValueFormat::Ipv4,
            Ipv6Src | Ipv6Dst | NdTarget | TunIpv6Src | TunIpv6Dst => ValueFormat::Ipv6,
            IpProto | TcpSrc | TcpDst | UdpSrc | UdpDst | SctpSrc | SctpDst | ConjId
            | Icmpv4Type | Icmpv4Code | Icmpv6Type | Icmpv6Code | ArpOp | CtZone | NdReserved
            | NdOptionsType => ValueFormat::Decimal,
            CtState => ValueFormat::CtState,
            EthType | VlanTci | CtMark | CtLabel | Reg(_) | Xreg(_) | TunId | Metadata
            | PktMark => ValueFormat::Hex,
        }
    }

    /// Whether the identity is valid (register indexes in range).
    pub fn is_valid(self) -> bool {
        match self {
            Field::Reg(i) => i < 16,
            Field::Xreg(i) => i < 8,
            _ => true,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A bit range of a field: `NXM_NX_REG0[0..15]` is `SubField { field: Reg(0), ofs: 0, n_bits: 16 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubField {
    /// The field.
    pub field: Field,
    /// Offset of the least significant bit.
    pub ofs: u16,
    /// Number of bits.
    pub n_bits: u16,
}

impl SubField {
    /// The whole field (`NXM_..[]`).
    pub fn full(field: Field) -> Self {
        SubField {
            field,
            ofs: 0,
            n_bits: field.n_bits(),
        }
    }

    /// Bits `start..=end` (inclusive, as OVS writes `[start..end]`).
    pub fn bits(field: Field, start: u16, end: u16) -> Self {
        SubField {
            field,
            ofs: start,
            n_bits: end.saturating_sub(start) + 1,
        }
    }

    /// A single bit.
    pub fn bit(field: Field, bit: u16) -> Self {
        SubField {
            field,
            ofs: bit,
            n_bits: 1,
        }
    }

    /// Whether the range covers the whole field.
    pub fn is_full(&self) -> bool {
        self.ofs == 0 && self.n_bits == self.field.n_bits()
    }

    /// Whether the range lies inside the field.
    pub fn is_valid(&self) -> bool {
        self.field.is_valid()
            && self.n_bits > 0
            && u32::from(self.ofs) + u32::from(self.n_bits) <= u32::from(self.field.n_bits())
    }

    /// The mask covering this range, in field coordinates.
    pub fn mask(&self) -> u128 {
        ones(self.n_bits)
            .checked_shl(u32::from(self.ofs))
            .unwrap_or(0)
    }
}

impl fmt::Display for SubField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field.nxm_name())?;
        if self.is_full() {
            f.write_str("[]")
        } else if self.n_bits == 1 {
            write!(f, "[{}]", self.ofs)
        } else {
            write!(
                f,
                "[{}..{}]",
                self.ofs,
                (u32::from(self.ofs) + u32::from(self.n_bits)).saturating_sub(1)
            )
        }
    }
}

/// `n` low bits set (saturating at 128).
pub(crate) fn ones(n: u16) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// An Ethernet MAC address: the workspace's one MAC type, from the pure planners' crate, so the
/// agent's planned MACs go into matches and actions without conversion.
pub use weft_plan::MacAddr;

/// A MAC address as the 48-bit field value the codec carries.
pub(crate) trait MacBits {
    /// The address as the low 48 bits.
    fn to_u128(self) -> u128;
    /// The address from the low 48 bits.
    fn from_u128(v: u128) -> Self;
}

impl MacBits for MacAddr {
    fn to_u128(self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    }

    fn from_u128(v: u128) -> Self {
        let b = v.to_be_bytes();
        let mut out = [0u8; 6];
        out.copy_from_slice(&b[10..16]);
        MacAddr(out)
    }
}

/// Reserved OpenFlow 1.1+ port numbers.
pub mod port {
    /// Maximum number of a physical/logical port.
    pub const MAX: u32 = 0xffff_ff00;
    /// Send the packet out the input port.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// Submit the packet to the first flow table.
    pub const TABLE: u32 = 0xffff_fff9;
    /// Process with normal L2/L3 switching.
    pub const NORMAL: u32 = 0xffff_fffa;
    /// All ports except input port and those blocked.
    pub const FLOOD: u32 = 0xffff_fffb;
    /// All ports except input port.
    pub const ALL: u32 = 0xffff_fffc;
    /// Send to controller.
    pub const CONTROLLER: u32 = 0xffff_fffd;
    /// The bridge's local port.
    pub const LOCAL: u32 = 0xffff_fffe;
    /// Wildcard / no port.
    pub const ANY: u32 = 0xffff_ffff;

    /// OVS's name for a reserved port, if `p` is one.
    pub fn name(p: u32) -> Option<&'static str> {
        Some(match p {
            IN_PORT => "IN_PORT",
            TABLE => "TABLE",
            NORMAL => "NORMAL",
            FLOOD => "FLOOD",
            ALL => "ALL",
            CONTROLLER => "CONTROLLER",
            LOCAL => "LOCAL",
            ANY => "ANY",
            _ => return None,
        })
    }

    /// Converts an OpenFlow 1.0 16-bit port number to the 32-bit form.
    pub fn from_u16(p: u16) -> u32 {
        if p >= 0xff00 {
            u32::from(p) + 0xffff_0000
        } else {
            u32::from(p)
        }
    }

    /// Converts a 32-bit port number to the OpenFlow 1.0 16-bit form (reserved ports mapped).
    pub fn to_u16(p: u32) -> u16 {
        if p >= 0xffff_ff00 {
            (p - 0xffff_0000) as u16
        } else {
            p as u16
        }
    }
}
