//! The OpenFlow 1.5 messages that carry flows and packets: flow-mod, flow statistics
//! (`OFPMP_FLOW_DESC`), packet-out, packet-in and port-status. Matches and actions are encoded
//! by [`crate::codec`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::wire::{
    self, begin, finish, msg_type, pad_to_8, round_up_8, Frame, Reader, WireError, GROUP_ANY,
    NO_BUFFER, TABLE_ALL,
};
use crate::codec;
use crate::flow::{Action, Flow, Match};

/// `OFPMT_OXM`: the only match type in OpenFlow 1.2+.
const MATCH_TYPE_OXM: u16 = 1;
/// `OXM_OF_IN_PORT` header (class 0x8000, field 0, no mask, 4 bytes).
const OXM_OF_IN_PORT: u32 = 0x8000_0004;

/// A flow-mod command (`OFPFC_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// Add a flow (replacing one with the same match and priority).
    Add,
    /// Change the actions of every flow the match covers.
    Modify,
    /// Change the actions of the flow with exactly this match and priority.
    ModifyStrict,
    /// Delete every flow the match covers.
    Delete,
    /// Delete the flow with exactly this match and priority.
    DeleteStrict,
}

impl FlowModCommand {
    fn wire(self) -> u8 {
        match self {
            FlowModCommand::Add => 0,
            FlowModCommand::Modify => 1,
            FlowModCommand::ModifyStrict => 2,
            FlowModCommand::Delete => 3,
            FlowModCommand::DeleteStrict => 4,
        }
    }

    /// The `ovs-ofctl` verb for the command.
    pub fn name(self) -> &'static str {
        match self {
            FlowModCommand::Add => "add",
            FlowModCommand::Modify => "modify",
            FlowModCommand::ModifyStrict => "modify_strict",
            FlowModCommand::Delete => "delete",
            FlowModCommand::DeleteStrict => "delete_strict",
        }
    }

    fn is_delete(self) -> bool {
        matches!(self, FlowModCommand::Delete | FlowModCommand::DeleteStrict)
    }
}

/// One OpenFlow 1.5 flow-mod: a command applied to a [`Flow`] (for deletions only its table,
/// priority, cookie and match count).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMod {
    /// What to do.
    pub command: FlowModCommand,
    /// The flow (table, priority, cookie, timeouts, match, actions).
    pub flow: Flow,
    /// For modify/delete: only flows whose cookie equals `flow.cookie` under this mask are
    /// affected (0 = no cookie filter).
    pub cookie_mask: u64,
    /// For delete: only flows that output to this port (`port::ANY` = no filter).
    pub out_port: u32,
    /// For delete: only flows that output to this group ([`GROUP_ANY`] = no filter).
    pub out_group: u32,
    /// `OFPFF_*` flags.
    pub flags: u16,
    /// Eviction importance.
    pub importance: u16,
}

impl FlowMod {
    fn new(command: FlowModCommand, flow: Flow) -> Self {
        FlowMod {
            command,
            flow,
            cookie_mask: 0,
            out_port: wire::port::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            importance: 0,
        }
    }

    /// Adds `flow`.
    pub fn add(flow: Flow) -> Self {
        Self::new(FlowModCommand::Add, flow)
    }

    /// Replaces the actions of every flow in `flow.table` that `flow.matches` covers.
    pub fn modify(flow: Flow) -> Self {
        Self::new(FlowModCommand::Modify, flow)
    }

    /// Replaces the actions of the flow with exactly `flow`'s table, match and priority.
    pub fn modify_strict(flow: Flow) -> Self {
        Self::new(FlowModCommand::ModifyStrict, flow)
    }

    /// Deletes every flow in `flow.table` ([`TABLE_ALL`] for all tables) that `flow.matches`
    /// covers.
    pub fn delete(flow: Flow) -> Self {
        Self::new(FlowModCommand::Delete, flow)
    }

    /// Deletes the flow with exactly `flow`'s table, match and priority.
    pub fn delete_strict(flow: Flow) -> Self {
        Self::new(FlowModCommand::DeleteStrict, flow)
    }

    /// Deletes every flow in every table.
    pub fn delete_all() -> Self {
        Self::delete(selector(TABLE_ALL, 0))
    }

    /// Deletes every flow, in every table, whose cookie equals `cookie` under `mask`.
    pub fn delete_by_cookie(cookie: u64, mask: u64) -> Self {
        Self::delete(selector(TABLE_ALL, cookie)).with_cookie_mask(mask)
    }

    /// Deletes every flow of one table.
    pub fn delete_table(table: u8) -> Self {
        Self::delete(selector(table, 0))
    }

    /// Restricts a modify/delete to one table ([`TABLE_ALL`] for all; deletions only).
    pub fn in_table(mut self, table: u8) -> Self {
        self.flow.table = table;
        self
    }

    /// Sets the cookie mask (modify/delete filter).
    pub fn with_cookie_mask(mut self, mask: u64) -> Self {
        self.cookie_mask = mask;
        self
    }

    /// Sets `OFPFF_*` flags.
    pub fn with_flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    /// Appends the `OFPT_FLOW_MOD` message with transaction id `xid`.
    pub fn encode(&self, out: &mut Vec<u8>, xid: u32) -> Result<(), WireError> {
        let f = &self.flow;
        let start = begin(out, msg_type::FLOW_MOD, xid);
        out.extend_from_slice(&f.cookie.to_be_bytes());
        out.extend_from_slice(&self.cookie_mask.to_be_bytes());
        out.push(f.table);
        out.push(self.command.wire());
        out.extend_from_slice(&f.idle_timeout.to_be_bytes());
        out.extend_from_slice(&f.hard_timeout.to_be_bytes());
        out.extend_from_slice(&f.priority.to_be_bytes());
        out.extend_from_slice(&NO_BUFFER.to_be_bytes());
        out.extend_from_slice(&self.out_port.to_be_bytes());
        out.extend_from_slice(&self.out_group.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.importance.to_be_bytes());
        codec::encode_match(&f.matches, out);
        if !self.command.is_delete() {
            codec::encode_instructions(&f.actions, out);
        }
        finish(out, start, "flow mod")
    }
}

/// A flow that selects by table and cookie only (for deletions).
fn selector(table: u8, cookie: u64) -> Flow {
    Flow {
        table,
        priority: 0,
        cookie,
        ..Flow::default()
    }
}

impl fmt::Display for FlowMod {
    /// `add <flow in ovs-ofctl syntax>`; deletions print their selection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.command.is_delete() {
            write!(f, "{} ", self.command.name())?;
            if self.flow.table == TABLE_ALL {
                write!(f, "table=all")?;
            } else {
                write!(f, "table={}", self.flow.table)?;
            }
            if self.cookie_mask != 0 {
                write!(f, ",cookie={:#x}/{:#x}", self.flow.cookie, self.cookie_mask)?;
            }
            if self.command == FlowModCommand::DeleteStrict {
                write!(f, ",priority={}", self.flow.priority)?;
            }
            let m = self.flow.matches.to_string();
            if !m.is_empty() {
                write!(f, ",{m}")?;
            }
            Ok(())
        } else {
            write!(f, "{} {}", self.command.name(), self.flow)
        }
    }
}

/// Filters of a flow statistics request (`OFPMP_FLOW_DESC`); the default selects every flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowStatsRequest {
    /// Table to read ([`TABLE_ALL`] for all).
    pub table: u8,
    /// Only flows that output to this port (`port::ANY` = no filter).
    pub out_port: u32,
    /// Only flows that output to this group ([`GROUP_ANY`] = no filter).
    pub out_group: u32,
    /// Only flows whose cookie equals this under `cookie_mask`.
    pub cookie: u64,
    /// Cookie mask (0 = no cookie filter).
    pub cookie_mask: u64,
    /// Only flows this match covers.
    pub matches: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> Self {
        FlowStatsRequest {
            table: TABLE_ALL,
            out_port: wire::port::ANY,
            out_group: GROUP_ANY,
            cookie: 0,
            cookie_mask: 0,
            matches: Match::default(),
        }
    }
}

impl FlowStatsRequest {
    /// Appends the `OFPT_MULTIPART_REQUEST` message.
    pub fn encode(&self, out: &mut Vec<u8>, xid: u32) -> Result<(), WireError> {
        wire::encode_multipart_request(out, xid, wire::multipart::FLOW_DESC, |out| {
            out.push(self.table);
            out.extend_from_slice(&[0; 3]);
            out.extend_from_slice(&self.out_port.to_be_bytes());
            out.extend_from_slice(&self.out_group.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&self.cookie.to_be_bytes());
            out.extend_from_slice(&self.cookie_mask.to_be_bytes());
            codec::encode_match(&self.matches, out);
        })
    }
}

/// A flow's statistics (OpenFlow 1.5 OXS fields; `None` when the switch did not send one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Time since the flow was installed.
    pub duration: Option<Duration>,
    /// Time since the flow last matched a packet.
    pub idle_time: Option<Duration>,
    /// Packets matched.
    pub packet_count: Option<u64>,
    /// Bytes matched.
    pub byte_count: Option<u64>,
    /// Number of flows aggregated (aggregate statistics only).
    pub flow_count: Option<u32>,
}

/// One flow of a flow statistics reply.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEntry {
    /// The flow as installed.
    pub flow: Flow,
    /// Its counters.
    pub stats: FlowStats,
    /// `OFPFF_*` flags.
    pub flags: u16,
    /// Eviction importance.
    pub importance: u16,
}

/// Length of an `ofp_match` at the start of `buf` including its padding.
fn match_len(buf: &[u8], what: &'static str) -> Result<usize, WireError> {
    let mut r = Reader::new(buf, what);
    let match_type = r.u16()?;
    if match_type != MATCH_TYPE_OXM {
        return Err(WireError::Unexpected {
            what: "match type",
            value: u64::from(match_type),
        });
    }
    let len = usize::from(r.u16()?);
    if len < 4 {
        return Err(WireError::BadLength { what, len });
    }
    let padded = round_up_8(len);
    if padded > buf.len() {
        return Err(WireError::Truncated {
            what,
            need: padded,
            have: buf.len(),
        });
    }
    Ok(padded)
}

fn decode_match(buf: &[u8], what: &'static str) -> Result<Match, WireError> {
    codec::decode_match(buf)
        .map(|(m, _)| m)
        .map_err(|e| WireError::Codec {
            what,
            reason: e.to_string(),
        })
}

/// Decodes the body of one `OFPMP_FLOW_DESC` reply (a sequence of `ofp_flow_desc`).
pub fn decode_flow_descs(body: &[u8]) -> Result<Vec<FlowEntry>, WireError> {
    let mut entries = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let mut r = Reader::new(rest, "flow desc");
        let len = usize::from(r.u16()?);
        if len < 32 || len % 8 != 0 {
            return Err(WireError::BadLength {
                what: "flow desc",
                len,
            });
        }
        let entry = rest.get(..len).ok_or(WireError::Truncated {
            what: "flow desc",
            need: len,
            have: rest.len(),
        })?;
        entries.push(decode_flow_desc(entry)?);
        rest = &rest[len..];
    }
    Ok(entries)
}

fn decode_flow_desc(entry: &[u8]) -> Result<FlowEntry, WireError> {
    let mut r = Reader::new(entry, "flow desc");
    r.skip(4)?; // length, pad
    let table = r.u8()?;
    r.skip(1)?;
    let priority = r.u16()?;
    let idle_timeout = r.u16()?;
    let hard_timeout = r.u16()?;
    let flags = r.u16()?;
    let importance = r.u16()?;
    let cookie = r.u64()?;
    let at = r.position();
    let mlen = match_len(&entry[at..], "flow desc match")?;
    let matches = decode_match(&entry[at..at + mlen], "flow desc match")?;
    let at = at + mlen;
    let (stats, slen) = decode_oxs_stats(&entry[at..])?;
    let actions =
        codec::decode_instructions(&entry[at + slen..]).map_err(|e| WireError::Codec {
            what: "flow desc instructions",
            reason: e.to_string(),
        })?;
    Ok(FlowEntry {
        flow: Flow {
            table,
            priority,
            cookie,
            idle_timeout,
            hard_timeout,
            matches,
            actions,
        },
        stats,
        flags,
        importance,
    })
}

/// Decodes an `ofp_stats` (OXS) block; returns the stats and its padded length.
fn decode_oxs_stats(buf: &[u8]) -> Result<(FlowStats, usize), WireError> {
    const WHAT: &str = "flow stats (oxs)";
    let mut r = Reader::new(buf, WHAT);
    r.skip(2)?;
    let len = usize::from(r.u16()?);
    if len < 4 {
        return Err(WireError::BadLength { what: WHAT, len });
    }
    let padded = round_up_8(len);
    if padded > buf.len() {
        return Err(WireError::Truncated {
            what: WHAT,
            need: padded,
            have: buf.len(),
        });
    }
    let mut stats = FlowStats::default();
    let mut r = Reader::new(&buf[4..len], WHAT);
    while r.remaining() > 0 {
        let header = r.u32()?;
        let class = (header >> 16) as u16;
        let field = ((header >> 9) & 0x7f) as u8;
        let value = r.bytes((header & 0xff) as usize)?;
        if class != 0x8002 {
            continue; // experimenter statistics: not used
        }
        let be64 = |v: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(v.try_into().ok()?)) };
        match field {
            0 => {
                stats.duration = be64(value)
                    .map(|d| Duration::new(d >> 32, (d & 0xffff_ffff) as u32 % 1_000_000_000))
            }
            1 => {
                stats.idle_time = be64(value)
                    .map(|d| Duration::new(d >> 32, (d & 0xffff_ffff) as u32 % 1_000_000_000))
            }
            3 => stats.flow_count = value.try_into().ok().map(u32::from_be_bytes),
            4 => stats.packet_count = be64(value),
            5 => stats.byte_count = be64(value),
            _ => {}
        }
    }
    Ok((stats, padded))
}

/// Appends an `ofp_match` holding only `in_port` (for packet-out).
fn encode_in_port_match(out: &mut Vec<u8>, in_port: u32) {
    let start = out.len();
    out.extend_from_slice(&MATCH_TYPE_OXM.to_be_bytes());
    out.extend_from_slice(&12u16.to_be_bytes());
    out.extend_from_slice(&OXM_OF_IN_PORT.to_be_bytes());
    out.extend_from_slice(&in_port.to_be_bytes());
    pad_to_8(out, start);
}

/// A packet to send out of the switch (`OFPT_PACKET_OUT`, never buffered).
#[derive(Debug, Clone, PartialEq)]
pub struct PacketOut {
    /// The packet's ingress port as the pipeline sees it (`port::CONTROLLER` for none).
    pub in_port: u32,
    /// Actions applied to the packet (e.g. output to a port, or to `port::TABLE`).
    pub actions: Vec<Action>,
    /// The Ethernet frame.
    pub data: Bytes,
}

impl PacketOut {
    /// Appends the `OFPT_PACKET_OUT` message.
    pub fn encode(&self, out: &mut Vec<u8>, xid: u32) -> Result<(), WireError> {
        let start = begin(out, msg_type::PACKET_OUT, xid);
        out.extend_from_slice(&NO_BUFFER.to_be_bytes());
        let actions_len_at = out.len();
        out.extend_from_slice(&[0; 4]); // actions_len, pad
        encode_in_port_match(out, self.in_port);
        let actions_start = out.len();
        codec::encode_actions(&self.actions, out);
        let actions_len = out.len() - actions_start;
        let actions_len = u16::try_from(actions_len).map_err(|_| WireError::TooLong {
            what: "packet out actions",
            len: actions_len,
        })?;
        out[actions_len_at..actions_len_at + 2].copy_from_slice(&actions_len.to_be_bytes());
        out.extend_from_slice(&self.data);
        finish(out, start, "packet out")
    }
}

/// Why a packet was sent to the controller (`OFPR_*`, OpenFlow 1.5 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketInReason {
    /// No flow matched (table-miss flow).
    TableMiss,
    /// An output-to-controller action in an apply-actions instruction.
    ApplyAction,
    /// Invalid TTL.
    InvalidTtl,
    /// An output action in the action set.
    ActionSet,
    /// An output action in a group bucket.
    Group,
    /// An output action in a packet-out.
    PacketOut,
    /// A reason this client does not know.
    Other(u8),
}

impl From<u8> for PacketInReason {
    fn from(v: u8) -> Self {
        match v {
            0 => PacketInReason::TableMiss,
            1 => PacketInReason::ApplyAction,
            2 => PacketInReason::InvalidTtl,
            3 => PacketInReason::ActionSet,
            4 => PacketInReason::Group,
            5 => PacketInReason::PacketOut,
            other => PacketInReason::Other(other),
        }
    }
}

/// A packet sent to the controller (`OFPT_PACKET_IN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIn {
    /// Buffer id (always [`NO_BUFFER`] with OVS).
    pub buffer_id: u32,
    /// Length of the whole frame (`data` may be shorter if truncated).
    pub total_len: u16,
    /// Why the packet was sent.
    pub reason: PacketInReason,
    /// The table of the flow that sent it.
    pub table_id: u8,
    /// The cookie of the flow that sent it.
    pub cookie: u64,
    /// The ingress port from the match, if present.
    pub in_port: Option<u32>,
    /// The raw pipeline-field match (decode with [`PacketIn::matches`]).
    pub match_bytes: Bytes,
    /// The frame.
    pub data: Bytes,
}

impl PacketIn {
    /// Decodes an `OFPT_PACKET_IN`.
    pub fn decode(frame: &Frame) -> Result<PacketIn, WireError> {
        let body = &frame.body;
        let mut r = frame.reader("packet in");
        let buffer_id = r.u32()?;
        let total_len = r.u16()?;
        let reason = PacketInReason::from(r.u8()?);
        let table_id = r.u8()?;
        let cookie = r.u64()?;
        let at = r.position();
        let mlen = match_len(&body[at..], "packet in match")?;
        let match_bytes = body.slice(at..at + mlen);
        let data_at = at + mlen + 2;
        if data_at > body.len() {
            return Err(WireError::Truncated {
                what: "packet in",
                need: data_at,
                have: body.len(),
            });
        }
        Ok(PacketIn {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            in_port: find_in_port(&match_bytes),
            match_bytes,
            data: body.slice(data_at..),
        })
    }

    /// The pipeline fields (in_port, metadata, registers, tunnel) decoded into a [`Match`].
    pub fn matches(&self) -> Result<Match, WireError> {
        decode_match(&self.match_bytes, "packet in match")
    }
}

/// Scans an `ofp_match` for `OXM_OF_IN_PORT`.
fn find_in_port(m: &[u8]) -> Option<u32> {
    let len = usize::from(u16::from_be_bytes([*m.get(2)?, *m.get(3)?]));
    let mut r = Reader::new(m.get(4..len)?, "match");
    while r.remaining() >= 4 {
        let header = r.u32().ok()?;
        let value = r.bytes((header & 0xff) as usize).ok()?;
        if header == OXM_OF_IN_PORT {
            return Some(u32::from_be_bytes(value.try_into().ok()?));
        }
    }
    None
}

/// Why a port-status message was sent (`OFPPR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortReason {
    /// The port was added.
    Add,
    /// The port was removed.
    Delete,
    /// An attribute of the port changed.
    Modify,
    /// A reason this client does not know.
    Other(u8),
}

/// A port's description (`ofp_port`, OpenFlow 1.4+; properties are not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDesc {
    /// OpenFlow port number.
    pub port_no: u32,
    /// MAC address.
    pub hw_addr: [u8; 6],
    /// Interface name.
    pub name: String,
    /// `OFPPC_*` config bits (e.g. port down).
    pub config: u32,
    /// `OFPPS_*` state bits (e.g. link down).
    pub state: u32,
}

/// A port change (`OFPT_PORT_STATUS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatus {
    /// What happened.
    pub reason: PortReason,
    /// The port.
    pub port: PortDesc,
}

impl PortStatus {
    /// Decodes an `OFPT_PORT_STATUS`.
    pub fn decode(frame: &Frame) -> Result<PortStatus, WireError> {
        let mut r = frame.reader("port status");
        let reason = match r.u8()? {
            0 => PortReason::Add,
            1 => PortReason::Delete,
            2 => PortReason::Modify,
            other => PortReason::Other(other),
        };
        r.skip(7)?;
        let port_no = r.u32()?;
        let len = usize::from(r.u16()?);
        if len < 40 {
            return Err(WireError::BadLength {
                what: "port description",
                len,
            });
        }
        r.skip(2)?;
        let hw_addr = r.array::<6>()?;
        r.skip(2)?;
        let name = r.array::<16>()?;
        let name_len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let config = r.u32()?;
        let state = r.u32()?;
        r.skip(len - 40)?;
        Ok(PortStatus {
            reason,
            port: PortDesc {
                port_no,
                hw_addr,
                name: String::from_utf8_lossy(&name[..name_len]).into_owned(),
                config,
                state,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::wire::Header;

    fn frame(msg_type: u8, body: Vec<u8>) -> Frame {
        Frame {
            header: Header {
                version: 6,
                msg_type,
                length: (8 + body.len()) as u16,
                xid: 1,
            },
            body: Bytes::from(body),
        }
    }

    #[test]
    fn flow_mod_layout_is_of15() {
        let fm = FlowMod::delete_by_cookie(0x1234, 0xffff).in_table(3);
        let mut out = Vec::new();
        fm.encode(&mut out, 9).unwrap();
        assert_eq!(out[1], msg_type::FLOW_MOD);
        assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
        assert_eq!(&out[8..16], &0x1234u64.to_be_bytes());
        assert_eq!(&out[16..24], &0xffffu64.to_be_bytes());
        assert_eq!(out[24], 3, "table id");
        assert_eq!(out[25], 3, "OFPFC_DELETE");
        assert_eq!(&out[32..36], &NO_BUFFER.to_be_bytes());
        assert_eq!(&out[36..40], &wire::port::ANY.to_be_bytes());
        assert_eq!(&out[40..44], &GROUP_ANY.to_be_bytes());
        // The match starts at 48 with type OXM.
        assert_eq!(&out[48..50], &1u16.to_be_bytes());
        assert_eq!(out.len() % 8, 0);
        assert_eq!(fm.to_string(), "delete table=3,cookie=0x1234/0xffff");
    }

    #[test]
    fn packet_out_carries_in_port_match_actions_and_data() {
        let po = PacketOut {
            in_port: wire::port::CONTROLLER,
            actions: Vec::new(),
            data: Bytes::from_static(&[0xaa; 14]),
        };
        let mut out = Vec::new();
        po.encode(&mut out, 2).unwrap();
        assert_eq!(&out[8..12], &NO_BUFFER.to_be_bytes());
        assert_eq!(&out[12..14], &0u16.to_be_bytes(), "no actions");
        assert_eq!(&out[16..20], &[0, 1, 0, 12]);
        assert_eq!(&out[20..24], &OXM_OF_IN_PORT.to_be_bytes());
        assert_eq!(&out[24..28], &wire::port::CONTROLLER.to_be_bytes());
        assert_eq!(&out[32..], &[0xaa; 14]);
    }

    #[test]
    fn packet_in_decodes_and_rejects_truncation() {
        let mut body = Vec::new();
        body.extend_from_slice(&NO_BUFFER.to_be_bytes());
        body.extend_from_slice(&60u16.to_be_bytes());
        body.push(1);
        body.push(4);
        body.extend_from_slice(&0xabcdu64.to_be_bytes());
        encode_in_port_match(&mut body, 7);
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&[1, 2, 3]);
        let pi = PacketIn::decode(&frame(msg_type::PACKET_IN, body.clone())).unwrap();
        assert_eq!(pi.reason, PacketInReason::ApplyAction);
        assert_eq!(pi.table_id, 4);
        assert_eq!(pi.cookie, 0xabcd);
        assert_eq!(pi.in_port, Some(7));
        assert_eq!(&pi.data[..], &[1, 2, 3]);
        for cut in [3, 17, 20, 32] {
            let mut short = body.clone();
            short.truncate(cut);
            assert!(PacketIn::decode(&frame(msg_type::PACKET_IN, short)).is_err());
        }
    }

    #[test]
    fn port_status_decodes_name_and_rejects_bad_length() {
        let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&5u32.to_be_bytes());
        body.extend_from_slice(&40u16.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        body.extend_from_slice(&[0, 0]);
        let mut name = [0u8; 16];
        name[..4].copy_from_slice(b"veth");
        body.extend_from_slice(&name);
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&4u32.to_be_bytes());
        let ps = PortStatus::decode(&frame(msg_type::PORT_STATUS, body.clone())).unwrap();
        assert_eq!(ps.reason, PortReason::Add);
        assert_eq!(ps.port.port_no, 5);
        assert_eq!(ps.port.name, "veth");
        assert_eq!(ps.port.hw_addr, [2, 0, 0, 0, 0, 1]);
        assert_eq!((ps.port.config, ps.port.state), (1, 4));
        body[13] = 30;
        assert!(PortStatus::decode(&frame(msg_type::PORT_STATUS, body)).is_err());
    }

    #[test]
    fn oxs_stats_decode() {
        let mut buf = vec![0, 0, 0, 0];
        buf.extend_from_slice(&0x8002_0008u32.to_be_bytes());
        buf.extend_from_slice(&((5u64 << 32) | 500).to_be_bytes());
        buf.extend_from_slice(&0x8002_0808u32.to_be_bytes());
        buf.extend_from_slice(&11u64.to_be_bytes());
        buf.extend_from_slice(&0x8002_0a08u32.to_be_bytes());
        buf.extend_from_slice(&1100u64.to_be_bytes());
        let len = buf.len() as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        pad_to_8(&mut buf, 0);
        let (stats, used) = decode_oxs_stats(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(stats.duration, Some(Duration::new(5, 500)));
        assert_eq!(stats.packet_count, Some(11));
        assert_eq!(stats.byte_count, Some(1100));
        assert_eq!(stats.idle_time, None);
        assert!(decode_oxs_stats(&buf[..10]).is_err());
    }

    #[test]
    fn flow_desc_with_bad_length_is_an_error() {
        assert!(decode_flow_descs(&[0, 8, 0, 0]).is_err());
        assert!(decode_flow_descs(&[0, 64, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
