//! Every register and mark the pipeline uses, allocated in this one file.
//!
//! | bits            | name             | set by             | meaning                              |
//! |-----------------|------------------|--------------------|--------------------------------------|
//! | `reg0[0..3]`    | [`SOURCE_KIND`]  | Classifier         | where the packet entered, [`SourceKind`] |
//! | `reg0[4..7]`    | reserved         | (NetworkPolicy)    | destination kind                     |
//! | `reg0[8]`       | [`ND_REPLY`]     | NeighborDiscovery  | the packet is an advertisement the pipeline built |
//! | `reg0[9..15]`   | reserved         | (later waves)      | single-bit marks (e.g. packet too big) |
//! | `reg1`          | [`TARGET_OFPORT`]| L2ForwardingCalc   | the OpenFlow port the packet leaves by |
//! | `reg1`          | [`ND_SCRATCH`]   | NeighborDiscovery  | an advertisement's flags and option type, copied into the packet (it leaves by `IN_PORT`, never reaching L2ForwardingCalc) |
//! | `reg2`..`reg3`  | reserved         | (later waves)      | service/endpoint                     |
//! | `reg4`          | [`EGRESS_RULE_ID`] | EgressRule       | the egress rule that allowed a new connection (0: none) |
//! | `reg5`          | [`INGRESS_RULE_ID`] | IngressRule     | the ingress rule that allowed a new connection (0: none) |
//! | `xreg3[0..47]`  | [`ORIGIN_MAC`]   | Classifier (uplink)| the source MAC a packet entered by the uplink with |
//!
//! Conntrack (one zone, [`CT_ZONE`], for all pod traffic):
//!
//! | bits               | name                  | set by          | meaning                          |
//! |--------------------|-----------------------|-----------------|----------------------------------|
//! | `ct_mark[0..3]`    | [`CONNECTION_ORIGIN`] | ConntrackCommit | where the connection's first packet entered, a [`SourceKind`] value |
//! | `ct_mark[4]`       | reserved              | (Service LB)    | the connection is load-balanced by the pipeline (kube-proxy replacement) |
//! | `ct_mark[5]`       | reserved              | (NetworkPolicy) | the connection is allowed by policy |
//! | `ct_label[0..31]`  | [`CT_EGRESS_RULE`]    | ConntrackCommit | the egress rule that allowed the connection (from [`EGRESS_RULE_ID`]) |
//! | `ct_label[32..63]` | [`CT_INGRESS_RULE`]   | ConntrackCommit | the ingress rule that allowed the connection (from [`INGRESS_RULE_ID`]) |
//! | `ct_label[64..111]`| [`CT_ORIGIN_MAC`]     | ConntrackCommit | the uplink-origin connection's peer MAC (replies go back to it) |
//!
//! Later waves add their fields here, never elsewhere, so two features can never reuse the
//! same bits by accident.

use super::super::flow::{Action, Field, Match, SubField};

/// A named bit range of a 32-bit register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegField {
    /// Register index (`reg{N}`).
    pub reg: u8,
    /// Lowest bit of the range.
    pub start: u16,
    /// Highest bit of the range (inclusive, as OVS writes `[start..end]`).
    pub end: u16,
}

impl RegField {
    /// The range as a subfield (`NXM_NX_REG0[0..3]`), for `move`, `load` and `learn`.
    pub fn subfield(self) -> SubField {
        SubField::bits(Field::Reg(self.reg), self.start, self.end)
    }

    /// The mask of the range within its register.
    pub fn mask(self) -> u32 {
        self.subfield().mask() as u32
    }

    /// `load:value->reg[start..end]` (printed by OVS as `set_field:...->regN`).
    pub fn load(self, value: u32) -> Action {
        Action::load(self.subfield(), u128::from(value))
    }

    /// Adds "the range holds `value`" to a match.
    pub fn matching(self, m: Match, value: u32) -> Match {
        let shifted = value.checked_shl(u32::from(self.start)).unwrap_or(0) & self.mask();
        m.reg_masked(self.reg, shifted, self.mask())
    }
}

/// `reg0[0..3]`: the kind of port the packet entered by, set by the Classifier.
pub const SOURCE_KIND: RegField = RegField {
    reg: 0,
    start: 0,
    end: 3,
};

/// `reg0[8]`: the packet is a neighbor advertisement NeighborDiscovery built from a
/// solicitation and resubmitted to itself (to set the target link-layer address, which OVS
/// cannot set while the flow matches a solicitation).
pub const ND_REPLY: RegField = RegField {
    reg: 0,
    start: 8,
    end: 8,
};

/// `reg1`: the OpenFlow port the packet leaves by, set by L2ForwardingCalc and read by Output.
pub const TARGET_OFPORT: RegField = RegField {
    reg: 1,
    start: 0,
    end: 31,
};

/// `reg4`: the id of the egress NetworkPolicy rule that allowed a connection's first packet
/// (loaded by its EgressRule `conj_id` flow; 0 when none had to), committed into
/// [`CT_EGRESS_RULE`].
pub const EGRESS_RULE_ID: RegField = RegField {
    reg: 4,
    start: 0,
    end: 31,
};

/// `reg5`: the id of the ingress NetworkPolicy rule that allowed a connection's first packet,
/// committed into [`CT_INGRESS_RULE`].
pub const INGRESS_RULE_ID: RegField = RegField {
    reg: 5,
    start: 0,
    end: 31,
};

/// `ct_label[0..31]`: the egress rule that allowed the connection (per-rule counters of
/// established traffic match it).
pub const CT_EGRESS_RULE: SubField = SubField {
    field: Field::CtLabel,
    ofs: 0,
    n_bits: 32,
};

/// `ct_label[32..63]`: the ingress rule that allowed the connection.
pub const CT_INGRESS_RULE: SubField = SubField {
    field: Field::CtLabel,
    ofs: 32,
    n_bits: 32,
};

/// `xreg3[0..47]` (`OXM_OF_PKT_REG3`): the source MAC of a packet that entered by the uplink,
/// saved by the uplink's Classifier flow before L3 forwarding rewrites the Ethernet source, and
/// committed into [`CT_ORIGIN_MAC`].
pub const ORIGIN_MAC: SubField = SubField {
    field: Field::Xreg(3),
    ofs: 0,
    n_bits: 48,
};

/// The conntrack zone of all pod traffic (65520, `0xfff0`: far from the zones a host or other
/// software numbers from 0, and from OVS's default zone 0).
pub const CT_ZONE: u16 = 0xfff0;

/// `ct_mark[0..3]`: where the connection's first packet entered the bridge (a [`SourceKind`]
/// value), committed by ConntrackCommit. Replies to a gateway-origin connection go back to the
/// gateway (so the host's NAT, e.g. kube-proxy's, sees both directions); replies to an
/// uplink-origin connection go back out of the uplink to [`CT_ORIGIN_MAC`].
pub const CONNECTION_ORIGIN: SubField = SubField {
    field: Field::CtMark,
    ofs: 0,
    n_bits: 4,
};

/// `ct_label[64..111]`: the MAC an uplink-origin connection's first packet came from.
pub const CT_ORIGIN_MAC: SubField = SubField {
    field: Field::CtLabel,
    ofs: 64,
    n_bits: 48,
};

/// `reg1`, in NeighborDiscovery only: the value `move`d into `nd_reserved` and
/// `nd_options_type` of an advertisement built from a solicitation. A `set_field` on those two
/// fields is refused where the datapath cannot match them (OVS's kernel module: "IPv6 ND
/// Extension: No"), while a `move` is executed by ovs-vswitchd itself, as every ND rewrite on
/// that datapath is. Free there: the advertisement leaves by `IN_PORT` from NeighborDiscovery
/// and never reaches L2ForwardingCalc, the owner of [`TARGET_OFPORT`].
pub const ND_SCRATCH: RegField = RegField {
    reg: 1,
    start: 0,
    end: 31,
};

/// Values of [`SOURCE_KIND`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A local pod's veth.
    Pod = 1,
    /// The host gateway internal port.
    Gateway = 2,
    /// The flow-based tunnel port (encap mode).
    Tunnel = 3,
    /// The node's uplink NIC attached to the bridge (noEncap mode).
    Uplink = 4,
}

impl SourceKind {
    /// The value stored in [`SOURCE_KIND`].
    pub fn value(self) -> u32 {
        self as u32
    }

    /// Adds "the packet entered by a port of this kind" to a match.
    pub fn matching(self, m: Match) -> Match {
        SOURCE_KIND.matching(m, self.value())
    }

    /// Marks the packet as having entered by a port of this kind.
    pub fn load(self) -> Action {
        SOURCE_KIND.load(self.value())
    }

    /// Adds "the packet's connection started at a port of this kind" to a match (after a
    /// `ct(table=...)` lookup).
    pub fn matching_origin(self, m: Match) -> Match {
        m.ct_mark_masked(self.value(), CONNECTION_ORIGIN.mask() as u32)
    }

    /// Sets the connection's origin to this kind (inside `ct(commit,exec(...))`).
    pub fn load_origin(self) -> Action {
        Action::load(CONNECTION_ORIGIN, u128::from(self.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_print_as_ovs_does() {
        assert_eq!(SOURCE_KIND.subfield().to_string(), "NXM_NX_REG0[0..3]");
        assert_eq!(TARGET_OFPORT.subfield().to_string(), "NXM_NX_REG1[]");
        assert_eq!(
            SourceKind::Gateway.load().to_string(),
            "set_field:0x2/0xf->reg0"
        );
        assert_eq!(
            TARGET_OFPORT.load(32769).to_string(),
            "set_field:0x8001->reg1"
        );
        assert_eq!(
            SourceKind::Pod.matching(Match::new()).to_string(),
            "reg0=0x1/0xf"
        );
        assert_eq!(ND_REPLY.load(1).to_string(), "set_field:0x100/0x100->reg0");
        assert_eq!(
            ND_REPLY.matching(Match::new(), 1).to_string(),
            "reg0=0x100/0x100"
        );
    }

    #[test]
    fn conntrack_fields_print_as_ovs_does() {
        assert_eq!(
            SourceKind::Gateway.load_origin().to_string(),
            "set_field:0x2/0xf->ct_mark"
        );
        assert_eq!(
            SourceKind::Uplink.matching_origin(Match::new()).to_string(),
            "ct_mark=0x4/0xf"
        );
        assert_eq!(CT_ORIGIN_MAC.to_string(), "NXM_NX_CT_LABEL[64..111]");
        assert_eq!(ORIGIN_MAC.to_string(), "OXM_OF_PKT_REG3[0..47]");
        assert_eq!(CONNECTION_ORIGIN.mask(), 0xf);
    }

    #[test]
    fn allocations_do_not_overlap() {
        let all = [
            SOURCE_KIND,
            ND_REPLY,
            TARGET_OFPORT,
            EGRESS_RULE_ID,
            INGRESS_RULE_ID,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    a.reg != b.reg || a.mask() & b.mask() == 0,
                    "{a:?} overlaps {b:?}"
                );
            }
        }
    }
}
