//! [`Action`]: what a flow does, printed the way `ovs-ofctl -O OpenFlow15 dump-flows` does.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::field::{port, Field, SubField};
use super::text::{c_hex, field_value, port_name};

/// One action or instruction of a flow. A flow with no actions drops packets (`actions=drop`).
///
/// Instruction-like variants ([`Action::WriteMetadata`], [`Action::GotoTable`]) are encoded as
/// OpenFlow instructions after the apply-actions list, and printed last, whatever their
/// position in the list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Output to a port (`output:N`, `IN_PORT`, `LOCAL`, `NORMAL`, ...). For the controller
    /// use [`Action::Controller`].
    Output(u32),
    /// Nicira output to the port number held in a subfield (`output:NXM_NX_REG1[]`), e.g.
    /// the target port an earlier table computed. Like `output:N`, nothing leaves when the
    /// number is the ingress port or no port's (0, above 65535). The `max_len` sent on the
    /// wire (bytes for the controller, if the subfield names it) is always 65535, as
    /// ovs-ofctl sets it.
    OutputReg(SubField),
    /// Send to the controller (`CONTROLLER:65535` or `controller(...)`).
    Controller(Controller),
    /// Nicira resubmit to a port and/or table (`resubmit:3`, `resubmit(,5)`, `resubmit(4,6)`).
    Resubmit {
        /// In-port to pretend, or `None` for the packet's own (`IN_PORT`).
        port: Option<u32>,
        /// Table to search, or `None` for the current one.
        table: Option<u8>,
    },
    /// Set a field, optionally only the bits in `mask` (`set_field:0x3/0xff->reg1`).
    /// OVS prints `load:` actions in this form too; see [`Action::load`].
    SetField {
        /// The field to write.
        field: Field,
        /// The value (in field coordinates).
        value: u128,
        /// Bits to write, `None` for all.
        mask: Option<u128>,
    },
    /// Copy bits between fields (`move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]`).
    Move {
        /// Source bits.
        src: SubField,
        /// Destination bits (same width).
        dst: SubField,
    },
    /// Send through conntrack (`ct(...)`).
    Ct(Ct),
    /// Decrement the IP TTL / hop limit (`dec_ttl`).
    DecTtl,
    /// Apply a group (`group:N`).
    Group(u32),
    /// An opaque note (`note:01.02...`). On the wire it is padded with zero bytes to fill the
    /// action; OVS prints and returns the padding, and so do `Display` and the decoder
    /// ([`Action::note`] pads up front so that a decoded note compares equal).
    Note(Vec<u8>),
    /// Add a flow at packet time (`learn(...)`).
    Learn(Learn),
    /// Set a bit if the packet is longer than `pkt_len` (`check_pkt_larger(1500)->NXM_NX_REG0[5]`).
    CheckPktLarger {
        /// Length threshold in bytes.
        pkt_len: u16,
        /// The one-bit destination.
        dst: SubField,
    },
    /// One clause of a conjunctive match (`conjunction(ID,K/N)`, `clause` 1-based as printed):
    /// the packet matched clause `clause` of the `n_clauses` of conjunction `id`; when every
    /// clause matched, the flow matching `conj_id=ID` applies. A flow with this action has no
    /// other actions (several conjunction actions are fine).
    Conjunction {
        /// The conjunction id (the `conj_id` the completing flow matches).
        id: u32,
        /// This clause, 1..=n_clauses.
        clause: u8,
        /// The number of clauses (2..=64).
        n_clauses: u8,
    },
    /// Instruction: write the metadata bits in `mask` (`write_metadata:0x5/0xff`).
    WriteMetadata {
        /// Value.
        value: u64,
        /// Bits to write.
        mask: u64,
    },
    /// Instruction: continue in a later table (`goto_table:N`).
    GotoTable(u8),
}

impl Action {
    /// `set_field` of a whole field.
    pub fn set_field(field: Field, value: u128) -> Self {
        Action::SetField {
            field,
            value,
            mask: None,
        }
    }

    /// `set_field` of the bits in `mask`.
    pub fn set_field_masked(field: Field, value: u128, mask: u128) -> Self {
        let mask = Some(mask).filter(|m| *m != field.all_ones());
        Action::SetField { field, value, mask }
    }

    /// `load:value->dst`: writes `value` into the bits of `dst` (printed by OVS as `set_field`).
    pub fn load(dst: SubField, value: u128) -> Self {
        let shifted = value.checked_shl(u32::from(dst.ofs)).unwrap_or(0) & dst.mask();
        Self::set_field_masked(dst.field, shifted, dst.mask())
    }

    /// `note:...` with `bytes` padded with zeros the way the wire format pads them.
    pub fn note(bytes: &[u8]) -> Self {
        Action::Note(padded_note(bytes))
    }

    /// `move:src->dst`.
    pub fn move_bits(src: SubField, dst: SubField) -> Self {
        Action::Move { src, dst }
    }

    /// `resubmit(,table)`.
    pub fn resubmit_table(table: u8) -> Self {
        Action::Resubmit {
            port: None,
            table: Some(table),
        }
    }

    /// Whether this is an instruction rather than an apply-actions action.
    pub fn is_instruction(&self) -> bool {
        matches!(self, Action::WriteMetadata { .. } | Action::GotoTable(_))
    }
}

/// Packet-in reasons for [`Controller`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PacketInReason {
    /// No matching flow (table miss).
    NoMatch,
    /// Explicit output to controller.
    #[default]
    Action,
    /// Invalid TTL.
    InvalidTtl,
    /// Output to controller in an action set.
    ActionSet,
    /// Output to controller in a group bucket.
    Group,
    /// Output to controller in a packet-out.
    PacketOut,
}

impl PacketInReason {
    /// The OpenFlow 1.5 wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            PacketInReason::NoMatch => 0,
            PacketInReason::Action => 1,
            PacketInReason::InvalidTtl => 2,
            PacketInReason::ActionSet => 3,
            PacketInReason::Group => 4,
            PacketInReason::PacketOut => 5,
        }
    }

    /// From the OpenFlow 1.5 wire value.
    pub fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            0 => PacketInReason::NoMatch,
            1 => PacketInReason::Action,
            2 => PacketInReason::InvalidTtl,
            3 => PacketInReason::ActionSet,
            4 => PacketInReason::Group,
            5 => PacketInReason::PacketOut,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            PacketInReason::NoMatch => "no_match",
            PacketInReason::Action => "action",
            PacketInReason::InvalidTtl => "invalid_ttl",
            PacketInReason::ActionSet => "action_set",
            PacketInReason::Group => "group",
            PacketInReason::PacketOut => "packet_out",
        }
    }
}

/// Send-to-controller parameters (Nicira `controller(...)`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Controller {
    /// Bytes of the packet to send (65535 = whole packet, unbuffered).
    pub max_len: u16,
    /// Reason reported in the packet-in.
    pub reason: PacketInReason,
    /// Controller connection id (0 = all).
    pub controller_id: u16,
    /// Opaque bytes echoed in the packet-in.
    pub userdata: Vec<u8>,
    /// Pause the pipeline for a continuation (`pause`).
    pub pause: bool,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            max_len: u16::MAX,
            reason: PacketInReason::Action,
            controller_id: 0,
            userdata: Vec::new(),
            pause: false,
        }
    }
}

impl Controller {
    /// Whether this is plain output to the controller (OVS prints `CONTROLLER:max_len`).
    pub fn is_simple(&self) -> bool {
        self.reason == PacketInReason::Action
            && self.controller_id == 0
            && self.userdata.is_empty()
            && !self.pause
    }
}

/// The conntrack zone of a [`Ct`] action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// A fixed zone (0 = default, not printed).
    Imm(u16),
    /// Zone taken from a 16-bit subfield (`zone=NXM_NX_REG0[0..15]`).
    Field(SubField),
}

/// The conntrack action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ct {
    /// Commit the connection (`commit`).
    pub commit: bool,
    /// Force a new connection if the existing one goes the other way (`force`).
    pub force: bool,
    /// Zone.
    pub zone: CtZone,
    /// Recirculate to this table after conntrack (`table=N`).
    pub table: Option<u8>,
    /// Application layer gateway port (`alg=ftp` is 21, `alg=tftp` is 69); 0 = none.
    pub alg: u16,
    /// NAT (printed before `exec`).
    pub nat: Option<Nat>,
    /// Actions applied to the connection (`exec(set_field:...->ct_mark)`).
    pub exec: Vec<Action>,
}

impl Default for Ct {
    fn default() -> Self {
        Ct {
            commit: false,
            force: false,
            zone: CtZone::Imm(0),
            table: None,
            alg: 0,
            nat: None,
            exec: Vec::new(),
        }
    }
}

/// The direction of a [`Nat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT.
    Src,
    /// Destination NAT.
    Dst,
}

/// NAT inside `ct(...)`. `Nat::default()` is a bare `nat` (reverse-translate committed connections).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    /// `src` or `dst`; `None` for a bare `nat`.
    pub kind: Option<NatKind>,
    /// Address range `min[-max]` (both of one family).
    pub addrs: Option<(IpAddr, IpAddr)>,
    /// Port range `min[-max]`.
    pub ports: Option<(u16, u16)>,
    /// `persistent`.
    pub persistent: bool,
    /// `hash` port selection.
    pub hash: bool,
    /// `random` port selection.
    pub random: bool,
}

/// Flags of [`Learn`].
pub mod learn_flags {
    /// Learned flows send flow-removed messages.
    pub const SEND_FLOW_REM: u16 = 1;
    /// Learned flows are deleted when the learning flow is.
    pub const DELETE_LEARNED: u16 = 2;
}

/// One specification of a [`Learn`] action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LearnSpec {
    /// The learned flow matches `dst` against the packet's `src` (`dst=src`; `dst` alone when equal).
    MatchField {
        /// Field of the learned flow's match.
        dst: SubField,
        /// Field of the packet providing the value.
        src: SubField,
    },
    /// The learned flow matches `dst` against a constant (`NXM_NX_REG0[0..3]=0x5`).
    MatchValue {
        /// Field of the learned flow's match.
        dst: SubField,
        /// The value (right-aligned to `dst`'s width).
        value: u128,
    },
    /// The learned flow loads the packet's `src` into `dst` (`load:src->dst`).
    LoadField {
        /// Field of the packet providing the value.
        src: SubField,
        /// Field written by the learned flow.
        dst: SubField,
    },
    /// The learned flow loads a constant into `dst` (`load:0x3->dst`).
    LoadValue {
        /// The value (right-aligned to `dst`'s width).
        value: u128,
        /// Field written by the learned flow.
        dst: SubField,
    },
    /// The learned flow outputs to the port in `src` (`output:NXM_OF_IN_PORT[]`).
    Output {
        /// Field of the packet holding the port.
        src: SubField,
    },
}

/// The Nicira `learn` action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learn {
    /// Table of the learned flow.
    pub table: u8,
    /// Priority of the learned flow.
    pub priority: u16,
    /// Idle timeout of the learned flow (0 = none).
    pub idle_timeout: u16,
    /// Hard timeout of the learned flow (0 = none).
    pub hard_timeout: u16,
    /// Idle timeout after FIN/RST (0 = none).
    pub fin_idle_timeout: u16,
    /// Hard timeout after FIN/RST (0 = none).
    pub fin_hard_timeout: u16,
    /// Cookie of the learned flow.
    pub cookie: u64,
    /// [`learn_flags`].
    pub flags: u16,
    /// What the learned flow matches and does.
    pub specs: Vec<LearnSpec>,
}

impl Default for Learn {
    fn default() -> Self {
        Learn {
            table: 1,
            priority: super::DEFAULT_PRIORITY,
            idle_timeout: 0,
            hard_timeout: 0,
            fin_idle_timeout: 0,
            fin_hard_timeout: 0,
            cookie: 0,
            flags: 0,
            specs: Vec::new(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output(p) => {
                if *p == port::CONTROLLER {
                    f.write_str("CONTROLLER:65535")
                } else if *p < port::MAX {
                    write!(f, "output:{p}")
                } else {
                    f.write_str(&port_name(*p))
                }
            }
            Action::OutputReg(src) => write!(f, "output:{src}"),
            Action::Controller(c) => fmt_controller(c, f),
            Action::Resubmit { port, table } => match (port, table) {
                (Some(p), None) => write!(f, "resubmit:{}", port_name(*p)),
                _ => {
                    f.write_str("resubmit(")?;
                    if let Some(p) = port.filter(|p| *p != port::IN_PORT) {
                        f.write_str(&port_name(p))?;
                    }
                    f.write_str(",")?;
                    if let Some(t) = table.filter(|t| *t != 255) {
                        write!(f, "{t}")?;
                    }
                    f.write_str(")")
                }
            },
            Action::SetField { field, value, mask } => write!(
                f,
                "set_field:{}->{}",
                field_value(*field, *value, *mask),
                field.name()
            ),
            Action::Move { src, dst } => write!(f, "move:{src}->{dst}"),
            Action::Ct(ct) => fmt_ct(ct, f),
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::Group(g) => write!(f, "group:{g}"),
            Action::Note(bytes) => {
                let hex: Vec<String> = padded_note(bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                write!(f, "note:{}", hex.join("."))
            }
            Action::Learn(l) => fmt_learn(l, f),
            Action::CheckPktLarger { pkt_len, dst } => {
                write!(f, "check_pkt_larger({pkt_len})->{dst}")
            }
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => write!(f, "conjunction({id},{clause}/{n_clauses})"),
            Action::WriteMetadata { value, mask } => {
                write!(f, "write_metadata:{}", c_hex(u128::from(*value)))?;
                if *mask != u64::MAX {
                    write!(f, "/{}", c_hex(u128::from(*mask)))?;
                }
                Ok(())
            }
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
        }
    }
}

/// A note's bytes padded so that the 10-byte Nicira header plus the note fill a multiple of
/// 8 bytes, at least 6 bytes of note.
fn padded_note(bytes: &[u8]) -> Vec<u8> {
    let len = (10 + bytes.len().max(6)).div_ceil(8) * 8 - 10;
    let mut v = bytes.to_vec();
    v.resize(len, 0);
    v
}

fn fmt_controller(c: &Controller, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if c.is_simple() {
        return write!(f, "CONTROLLER:{}", c.max_len);
    }
    let mut s = String::from("controller(");
    if c.max_len != u16::MAX {
        let _ = write!(s, "max_len={},", c.max_len);
    }
    if c.reason != PacketInReason::Action {
        let _ = write!(s, "reason={},", c.reason.name());
    }
    if c.controller_id != 0 {
        let _ = write!(s, "id={},", c.controller_id);
    }
    if !c.userdata.is_empty() {
        let hex: Vec<String> = c.userdata.iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(s, "userdata={},", hex.join("."));
    }
    if c.pause {
        s.push_str("pause,");
    }
    if s.ends_with(',') {
        s.pop();
    }
    s.push(')');
    f.write_str(&s)
}

fn fmt_nat(n: &Nat, s: &mut String) {
    s.push_str("nat");
    let Some(kind) = n.kind else { return };
    s.push('(');
    s.push_str(match kind {
        NatKind::Src => "src",
        NatKind::Dst => "dst",
    });
    if let Some((min, max)) = n.addrs {
        s.push('=');
        let bracket = n.ports.is_some_and(|(p, _)| p != 0);
        let addr = |a: IpAddr| match a {
            IpAddr::V6(v6) if bracket => format!("[{v6}]"),
            a => a.to_string(),
        };
        s.push_str(&addr(min));
        if max != min && !max.is_unspecified() {
            let _ = write!(s, "-{}", addr(max));
        }
        if let Some((pmin, pmax)) = n.ports.filter(|(p, _)| *p != 0) {
            let _ = write!(s, ":{pmin}");
            if pmax != 0 && pmax != pmin {
                let _ = write!(s, "-{pmax}");
            }
        }
        s.push(',');
        if n.persistent {
            s.push_str("persistent,");
        }
        if n.hash {
            s.push_str("hash,");
        }
        if n.random {
            s.push_str("random,");
        }
    }
    if s.ends_with(',') {
        s.pop();
    }
    s.push(')');
}

fn fmt_ct(ct: &Ct, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut s = String::from("ct(");
    if ct.commit {
        s.push_str("commit,");
    }
    if ct.force {
        s.push_str("force,");
    }
    if let Some(t) = ct.table {
        let _ = write!(s, "table={t},");
    }
    match ct.zone {
        CtZone::Field(sf) => {
            let _ = write!(s, "zone={sf},");
        }
        CtZone::Imm(0) => {}
        CtZone::Imm(z) => {
            let _ = write!(s, "zone={z},");
        }
    }
    if let Some(nat) = &ct.nat {
        fmt_nat(nat, &mut s);
        s.push(',');
    }
    if !ct.exec.is_empty() {
        let _ = write!(s, "exec({}),", ActionList(&ct.exec));
    }
    match ct.alg {
        0 => {}
        21 => s.push_str("alg=ftp,"),
        69 => s.push_str("alg=tftp,"),
        a => {
            let _ = write!(s, "alg={a},");
        }
    }
    if s.ends_with(',') {
        s.pop();
    }
    s.push(')');
    f.write_str(&s)
}

fn fmt_learn(l: &Learn, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut s = format!("learn(table={}", l.table);
    if l.idle_timeout != 0 {
        let _ = write!(s, ",idle_timeout={}", l.idle_timeout);
    }
    if l.hard_timeout != 0 {
        let _ = write!(s, ",hard_timeout={}", l.hard_timeout);
    }
    if l.fin_idle_timeout != 0 {
        let _ = write!(s, ",fin_idle_timeout={}", l.fin_idle_timeout);
    }
    if l.fin_hard_timeout != 0 {
        let _ = write!(s, ",fin_hard_timeout={}", l.fin_hard_timeout);
    }
    if l.priority != super::DEFAULT_PRIORITY {
        let _ = write!(s, ",priority={}", l.priority);
    }
    if l.flags & learn_flags::SEND_FLOW_REM != 0 {
        s.push_str(",send_flow_rem");
    }
    if l.flags & learn_flags::DELETE_LEARNED != 0 {
        s.push_str(",delete_learned");
    }
    if l.cookie != 0 {
        let _ = write!(s, ",cookie={}", c_hex(u128::from(l.cookie)));
    }
    for spec in &l.specs {
        s.push(',');
        match spec {
            LearnSpec::MatchValue { dst, value } => {
                if dst.is_full() {
                    let _ = write!(
                        s,
                        "{}={}",
                        dst.field.name(),
                        field_value(dst.field, *value, None)
                    );
                } else {
                    let _ = write!(s, "{dst}={}", c_hex(*value));
                }
            }
            LearnSpec::MatchField { dst, src } => {
                let _ = write!(s, "{dst}");
                if src.field != dst.field || src.ofs != dst.ofs {
                    let _ = write!(s, "={src}");
                }
            }
            LearnSpec::LoadValue { value, dst } => {
                let _ = write!(s, "load:{}->{dst}", c_hex(*value));
            }
            LearnSpec::LoadField { src, dst } => {
                let _ = write!(s, "load:{src}->{dst}");
            }
            LearnSpec::Output { src } => {
                let _ = write!(s, "output:{src}");
            }
        }
    }
    s.push(')');
    f.write_str(&s)
}

/// A list of actions in OVS order (apply-actions, then `write_metadata`, then `goto_table`),
/// comma-separated, `drop` when empty.
pub struct ActionList<'a>(pub &'a [Action]);

impl fmt::Display for ActionList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("drop");
        }
        let ordered = canonical_order(self.0);
        for (i, a) in ordered.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The actions in the order OVS keeps them: apply-actions first, then `write_metadata`,
/// then `goto_table`.
pub fn canonical_order(actions: &[Action]) -> Vec<&Action> {
    let rank = |a: &Action| match a {
        Action::WriteMetadata { .. } => 1,
        Action::GotoTable(_) => 2,
        _ => 0,
    };
    let mut v: Vec<&Action> = actions.iter().collect();
    v.sort_by_key(|a| rank(a));
    v
}
