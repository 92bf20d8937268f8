//! Nicira extension actions (experimenter 0x00002320): resubmit, output to a register,
//! controller, ct, nat, note, learn and check_pkt_larger.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::actions::{decode_actions_at, encode_action, subfield, OFPAT_EXPERIMENTER};
use super::oxm::{decode_field_header, header_of, nxm_header_of};
use super::wire::{pad8, patch_len, put_u16, put_u32, put_u64, put_uint, Reader};
use super::CodecError;
use crate::flow::{
    port, Action, Controller, Ct, CtZone, Learn, LearnSpec, Nat, NatKind, PacketInReason, SubField,
};

/// Nicira's experimenter id (`NX_VENDOR_ID`).
pub const NX_VENDOR_ID: u32 = 0x0000_2320;

const NXAST_RESUBMIT: u16 = 1;
const NXAST_NOTE: u16 = 8;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_OUTPUT_REG: u16 = 15;
const NXAST_LEARN: u16 = 16;
const NXAST_CONTROLLER: u16 = 20;
const NXAST_CONJUNCTION: u16 = 34;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;
const NXAST_CONTROLLER2: u16 = 37;
const NXAST_OUTPUT_REG2: u16 = 32;
const NXAST_CHECK_PKT_LARGER: u16 = 49;

/// `max_len` of an output-to-register action (only used if the register names the controller).
const OUTPUT_REG_MAX_LEN: u16 = u16::MAX;

/// `NXAC2PT_*` controller2 properties.
const NXAC2PT_MAX_LEN: u16 = 0;
const NXAC2PT_CONTROLLER_ID: u16 = 1;
const NXAC2PT_REASON: u16 = 2;
const NXAC2PT_USERDATA: u16 = 3;
const NXAC2PT_PAUSE: u16 = 4;
const NXAC2PT_METER_ID: u16 = 5;

const NX_CT_F_COMMIT: u16 = 1;
const NX_CT_F_FORCE: u16 = 2;
const NX_CT_RECIRC_NONE: u8 = 0xff;

const NX_NAT_F_SRC: u16 = 1;
const NX_NAT_F_DST: u16 = 2;
const NX_NAT_F_PERSISTENT: u16 = 4;
const NX_NAT_F_PROTO_HASH: u16 = 8;
const NX_NAT_F_PROTO_RANDOM: u16 = 16;
const NX_NAT_RANGE_IPV4_MIN: u16 = 1;
const NX_NAT_RANGE_IPV4_MAX: u16 = 2;
const NX_NAT_RANGE_IPV6_MIN: u16 = 4;
const NX_NAT_RANGE_IPV6_MAX: u16 = 8;
const NX_NAT_RANGE_PROTO_MIN: u16 = 16;
const NX_NAT_RANGE_PROTO_MAX: u16 = 32;

const NX_LEARN_N_BITS_MASK: u16 = 0x3ff;
const NX_LEARN_SRC_IMMEDIATE: u16 = 1 << 13;
const NX_LEARN_DST_LOAD: u16 = 1 << 11;
const NX_LEARN_DST_OUTPUT: u16 = 2 << 11;
const NX_LEARN_DST_MASK: u16 = 3 << 11;

/// Starts a Nicira action: type, length placeholder, vendor, subtype; returns its start.
fn begin(out: &mut Vec<u8>, subtype: u16) -> usize {
    let start = out.len();
    put_u16(out, OFPAT_EXPERIMENTER);
    put_u16(out, 0);
    put_u32(out, NX_VENDOR_ID);
    put_u16(out, subtype);
    start
}

/// Pads the action to 8 bytes (at least `min` bytes) and writes its length.
fn finish(out: &mut Vec<u8>, start: usize, min: usize) {
    if out.len() - start < min {
        out.resize(start + min, 0);
    }
    pad8(out, start);
    patch_len(out, start);
}

/// `nxm_encode_ofs_nbits`.
fn ofs_nbits(sf: &SubField) -> u16 {
    (sf.ofs << 6) | (sf.n_bits.saturating_sub(1) & 0x3f)
}

/// Appends a Nicira action (the variants [`super::actions::encode_action`] delegates here).
pub(crate) fn encode(a: &Action, out: &mut Vec<u8>) {
    match a {
        Action::Resubmit { port: p, table } => {
            let start = begin(out, NXAST_RESUBMIT_TABLE);
            put_u16(out, port::to_u16(p.unwrap_or(port::IN_PORT)));
            out.push(table.unwrap_or(0xff));
            finish(out, start, 16);
        }
        Action::OutputReg(src) => {
            // NXAST_OUTPUT_REG, the form OVS itself sends for fields with a 32-bit header.
            let start = begin(out, NXAST_OUTPUT_REG);
            put_u16(out, ofs_nbits(src));
            put_u32(out, nxm_header_of(src.field));
            put_u16(out, OUTPUT_REG_MAX_LEN);
            finish(out, start, 24);
        }
        Action::Controller(c) => encode_controller2(c, out),
        Action::Note(bytes) => {
            let start = begin(out, NXAST_NOTE);
            out.extend_from_slice(bytes);
            finish(out, start, 16);
        }
        Action::CheckPktLarger { pkt_len, dst } => {
            let start = begin(out, NXAST_CHECK_PKT_LARGER);
            put_u16(out, *pkt_len);
            put_u16(out, dst.ofs);
            put_u32(out, header_of(dst.field, false));
            finish(out, start, 24);
        }
        Action::Ct(ct) => encode_ct(ct, out),
        Action::Learn(l) => encode_learn(l, out),
        Action::Conjunction {
            id,
            clause,
            n_clauses,
        } => {
            // struct nx_action_conjunction: clause (0-based), n_clauses, id.
            let start = begin(out, NXAST_CONJUNCTION);
            out.push(clause.saturating_sub(1));
            out.push(*n_clauses);
            put_u32(out, *id);
            finish(out, start, 16);
        }
        // Standard actions and instructions are encoded by the caller.
        _ => {}
    }
}

fn encode_controller2(c: &Controller, out: &mut Vec<u8>) {
    let start = begin(out, NXAST_CONTROLLER2);
    out.extend_from_slice(&[0; 6]);
    let prop = |out: &mut Vec<u8>, ty: u16, value: &[u8]| {
        let s = out.len();
        put_u16(out, ty);
        put_u16(out, (4 + value.len()) as u16);
        out.extend_from_slice(value);
        pad8(out, s);
    };
    if c.max_len != u16::MAX {
        prop(out, NXAC2PT_MAX_LEN, &c.max_len.to_be_bytes());
    }
    if c.controller_id != 0 {
        prop(out, NXAC2PT_CONTROLLER_ID, &c.controller_id.to_be_bytes());
    }
    if c.reason != PacketInReason::Action {
        prop(out, NXAC2PT_REASON, &[c.reason.to_wire()]);
    }
    if !c.userdata.is_empty() {
        let len = c.userdata.len().min(usize::from(u16::MAX) - 64);
        prop(out, NXAC2PT_USERDATA, &c.userdata[..len]);
    }
    if c.pause {
        prop(out, NXAC2PT_PAUSE, &[]);
    }
    finish(out, start, 16);
}

fn encode_ct(ct: &Ct, out: &mut Vec<u8>) {
    let start = begin(out, NXAST_CT);
    let mut flags = 0;
    if ct.commit {
        flags |= NX_CT_F_COMMIT;
    }
    if ct.force {
        flags |= NX_CT_F_FORCE;
    }
    put_u16(out, flags);
    match ct.zone {
        CtZone::Imm(z) => {
            put_u32(out, 0);
            put_u16(out, z);
        }
        CtZone::Field(sf) => {
            put_u32(out, header_of(sf.field, false));
            put_u16(out, ofs_nbits(&sf));
        }
    }
    out.push(ct.table.unwrap_or(NX_CT_RECIRC_NONE));
    out.extend_from_slice(&[0; 3]);
    put_u16(out, ct.alg);
    if let Some(nat) = &ct.nat {
        encode_nat(nat, out);
    }
    for a in &ct.exec {
        encode_action(a, out);
    }
    patch_len(out, start);
}

fn encode_nat(n: &Nat, out: &mut Vec<u8>) {
    let start = begin(out, NXAST_NAT);
    out.extend_from_slice(&[0; 2]);
    let mut flags = match n.kind {
        Some(NatKind::Src) => NX_NAT_F_SRC,
        Some(NatKind::Dst) => NX_NAT_F_DST,
        None => 0,
    };
    if n.persistent {
        flags |= NX_NAT_F_PERSISTENT;
    }
    if n.hash {
        flags |= NX_NAT_F_PROTO_HASH;
    }
    if n.random {
        flags |= NX_NAT_F_PROTO_RANDOM;
    }
    put_u16(out, flags);
    let mut present = 0;
    let mut params = Vec::new();
    match n.addrs {
        Some((IpAddr::V4(min), max)) => {
            present |= NX_NAT_RANGE_IPV4_MIN;
            put_u32(&mut params, u32::from(min));
            if let IpAddr::V4(max) = max {
                if max != min {
                    present |= NX_NAT_RANGE_IPV4_MAX;
                    put_u32(&mut params, u32::from(max));
                }
            }
        }
        Some((IpAddr::V6(min), max)) => {
            present |= NX_NAT_RANGE_IPV6_MIN;
            put_uint(&mut params, u128::from(min), 16);
            if let IpAddr::V6(max) = max {
                if max != min {
                    present |= NX_NAT_RANGE_IPV6_MAX;
                    put_uint(&mut params, u128::from(max), 16);
                }
            }
        }
        None => {}
    }
    if let Some((min, max)) = n.ports {
        present |= NX_NAT_RANGE_PROTO_MIN;
        put_u16(&mut params, min);
        if max != min {
            present |= NX_NAT_RANGE_PROTO_MAX;
            put_u16(&mut params, max);
        }
    }
    put_u16(out, present);
    out.extend_from_slice(&params);
    finish(out, start, 16);
}

fn encode_learn(l: &Learn, out: &mut Vec<u8>) {
    let start = begin(out, NXAST_LEARN);
    put_u16(out, l.idle_timeout);
    put_u16(out, l.hard_timeout);
    put_u16(out, l.priority);
    put_u64(out, l.cookie);
    put_u16(out, l.flags);
    out.push(l.table);
    out.push(0);
    put_u16(out, l.fin_idle_timeout);
    put_u16(out, l.fin_hard_timeout);
    let put_sf = |out: &mut Vec<u8>, sf: &SubField| {
        put_u32(out, nxm_header_of(sf.field));
        put_u16(out, sf.ofs);
    };
    let put_imm = |out: &mut Vec<u8>, v: u128, n_bits: u16| {
        put_uint(out, v, 2 * usize::from(n_bits).div_ceil(16));
    };
    for spec in &l.specs {
        match spec {
            LearnSpec::MatchField { dst, src } => {
                put_u16(out, dst.n_bits & NX_LEARN_N_BITS_MASK);
                put_sf(out, src);
                put_sf(out, dst);
            }
            LearnSpec::MatchValue { dst, value } => {
                put_u16(
                    out,
                    (dst.n_bits & NX_LEARN_N_BITS_MASK) | NX_LEARN_SRC_IMMEDIATE,
                );
                put_imm(out, *value, dst.n_bits);
                put_sf(out, dst);
            }
            LearnSpec::LoadField { src, dst } => {
                put_u16(out, (dst.n_bits & NX_LEARN_N_BITS_MASK) | NX_LEARN_DST_LOAD);
                put_sf(out, src);
                put_sf(out, dst);
            }
            LearnSpec::LoadValue { value, dst } => {
                let h = (dst.n_bits & NX_LEARN_N_BITS_MASK)
                    | NX_LEARN_SRC_IMMEDIATE
                    | NX_LEARN_DST_LOAD;
                put_u16(out, h);
                put_imm(out, *value, dst.n_bits);
                put_sf(out, dst);
            }
            LearnSpec::Output { src } => {
                put_u16(
                    out,
                    (src.n_bits & NX_LEARN_N_BITS_MASK) | NX_LEARN_DST_OUTPUT,
                );
                put_sf(out, src);
            }
        }
    }
    finish(out, start, 32);
}

fn unsupported(subtype: u16) -> CodecError {
    CodecError::Unsupported {
        what: "nicira action",
        detail: format!("experimenter {NX_VENDOR_ID:#010x} subtype {subtype}"),
    }
}

/// Decodes an experimenter action; `body` starts at the experimenter id.
pub(crate) fn decode(body: &[u8], depth: usize) -> Result<Action, CodecError> {
    let mut b = Reader::new(body, "nicira action");
    let vendor = b.u32()?;
    if vendor != NX_VENDOR_ID {
        return Err(CodecError::Unsupported {
            what: "experimenter action",
            detail: format!("experimenter {vendor:#010x}"),
        });
    }
    let subtype = b.u16()?;
    Ok(match subtype {
        NXAST_RESUBMIT | NXAST_RESUBMIT_TABLE => {
            let p = port::from_u16(b.u16()?);
            let t = b.u8()?;
            let table = (subtype == NXAST_RESUBMIT_TABLE && t != 0xff).then_some(t);
            Action::Resubmit {
                port: (p != port::IN_PORT).then_some(p),
                table,
            }
        }
        NXAST_OUTPUT_REG => {
            let ofs_nbits = b.u16()?;
            let field = decode_field_header(b.u32()?)?;
            b.skip(2)?; // max_len
            must_be_zero(&mut b, "output_reg")?;
            Action::OutputReg(subfield_of(field, ofs_nbits)?)
        }
        NXAST_OUTPUT_REG2 => {
            let ofs_nbits = b.u16()?;
            b.skip(2)?; // max_len
            let field = decode_field_header(b.u32()?)?;
            must_be_zero(&mut b, "output_reg2")?;
            Action::OutputReg(subfield_of(field, ofs_nbits)?)
        }
        NXAST_NOTE => Action::Note(b.bytes(b.remaining())?.to_vec()),
        NXAST_CONTROLLER => {
            let max_len = b.u16()?;
            let controller_id = b.u16()?;
            let reason = decode_reason(b.u8()?)?;
            Action::Controller(Controller {
                max_len,
                reason,
                controller_id,
                ..Controller::default()
            })
        }
        NXAST_CONTROLLER2 => decode_controller2(&mut b)?,
        NXAST_CHECK_PKT_LARGER => {
            let pkt_len = b.u16()?;
            let ofs = b.u16()?;
            let field = decode_field_header(b.u32()?)?;
            Action::CheckPktLarger {
                pkt_len,
                dst: subfield(field, ofs, 1)?,
            }
        }
        NXAST_CONJUNCTION => {
            let clause = b.u8()?;
            let n_clauses = b.u8()?;
            let id = b.u32()?;
            if !(2..=64).contains(&n_clauses) || clause >= n_clauses {
                return Err(CodecError::BadValue {
                    what: "conjunction",
                    detail: format!("clause {clause} of {n_clauses}"),
                });
            }
            Action::Conjunction {
                id,
                clause: clause + 1,
                n_clauses,
            }
        }
        NXAST_CT => Action::Ct(decode_ct(&mut b, depth)?),
        NXAST_LEARN => Action::Learn(decode_learn(&mut b)?),
        other => return Err(unsupported(other)),
    })
}

/// `nxm_decode_ofs` / `nxm_decode_n_bits` of `field`, validated.
fn subfield_of(field: crate::flow::Field, ofs_nbits: u16) -> Result<SubField, CodecError> {
    subfield(field, ofs_nbits >> 6, (ofs_nbits & 0x3f) + 1)
}

/// Checks that the rest of an action (its padding) is zero, as OVS requires.
fn must_be_zero(b: &mut Reader<'_>, what: &'static str) -> Result<(), CodecError> {
    let rest = b.bytes(b.remaining())?;
    if rest.iter().any(|x| *x != 0) {
        return Err(CodecError::BadValue {
            what,
            detail: format!("non-zero padding {rest:02x?}"),
        });
    }
    Ok(())
}

fn decode_reason(v: u8) -> Result<PacketInReason, CodecError> {
    PacketInReason::from_wire(v).ok_or_else(|| CodecError::BadValue {
        what: "controller reason",
        detail: v.to_string(),
    })
}

fn decode_controller2(b: &mut Reader<'_>) -> Result<Action, CodecError> {
    b.skip(6)?;
    let mut c = Controller::default();
    while b.remaining() >= 4 {
        let ty = b.u16()?;
        let len = usize::from(b.u16()?);
        if len < 4 {
            return Err(CodecError::BadLength {
                what: "controller2 property",
                len,
            });
        }
        let mut v = Reader::new(b.bytes(len - 4)?, "controller2 property");
        b.skip((8 - len % 8) % 8)?;
        match ty {
            NXAC2PT_MAX_LEN => c.max_len = v.u16()?,
            NXAC2PT_CONTROLLER_ID => c.controller_id = v.u16()?,
            NXAC2PT_REASON => c.reason = decode_reason(v.u8()?)?,
            NXAC2PT_USERDATA => c.userdata = v.bytes(v.remaining())?.to_vec(),
            NXAC2PT_PAUSE => c.pause = true,
            NXAC2PT_METER_ID => {
                return Err(CodecError::Unsupported {
                    what: "controller2 property",
                    detail: "meter_id".into(),
                })
            }
            other => {
                return Err(CodecError::Unsupported {
                    what: "controller2 property",
                    detail: format!("type {other}"),
                })
            }
        }
    }
    if !b.is_empty() {
        return Err(CodecError::BadLength {
            what: "controller2 property",
            len: b.remaining(),
        });
    }
    Ok(Action::Controller(c))
}

fn decode_ct(b: &mut Reader<'_>, depth: usize) -> Result<Ct, CodecError> {
    let flags = b.u16()?;
    let zone_src = b.u32()?;
    let zone_val = b.u16()?;
    let table = b.u8()?;
    b.skip(3)?;
    let alg = b.u16()?;
    let zone = if zone_src == 0 {
        CtZone::Imm(zone_val)
    } else {
        CtZone::Field(subfield_of(decode_field_header(zone_src)?, zone_val)?)
    };
    let mut ct = Ct {
        commit: flags & NX_CT_F_COMMIT != 0,
        force: flags & NX_CT_F_FORCE != 0,
        zone,
        table: (table != NX_CT_RECIRC_NONE).then_some(table),
        alg,
        nat: None,
        exec: Vec::new(),
    };
    let mut nested = b.bytes(b.remaining())?;
    // A leading NAT action is part of `ct` itself (OVS prints it outside `exec`).
    if let Some(nat_len) = leading_nat_len(nested) {
        let (nat, rest) = nested.split_at(nat_len);
        ct.nat = Some(decode_nat(nat)?);
        nested = rest;
    }
    ct.exec = decode_actions_at(nested, depth + 1)?;
    Ok(ct)
}

/// The length of the first action in `buf` if it is a well-formed-length NXAST_NAT.
fn leading_nat_len(buf: &[u8]) -> Option<usize> {
    let mut r = Reader::new(buf, "nat");
    let ty = r.u16().ok()?;
    let len = usize::from(r.u16().ok()?);
    let vendor = r.u32().ok()?;
    let subtype = r.u16().ok()?;
    let ok = ty == OFPAT_EXPERIMENTER
        && vendor == NX_VENDOR_ID
        && subtype == NXAST_NAT
        && len >= 16
        && len % 8 == 0
        && len <= buf.len();
    ok.then_some(len)
}

fn decode_nat(buf: &[u8]) -> Result<Nat, CodecError> {
    let mut b = Reader::new(buf, "nat");
    b.skip(10)?;
    b.skip(2)?;
    let flags = b.u16()?;
    let present = b.u16()?;
    let kind = match (flags & NX_NAT_F_SRC != 0, flags & NX_NAT_F_DST != 0) {
        (true, false) => Some(NatKind::Src),
        (false, true) => Some(NatKind::Dst),
        (false, false) => None,
        (true, true) => {
            return Err(CodecError::BadValue {
                what: "nat flags",
                detail: format!("{flags:#x} has both src and dst"),
            })
        }
    };
    let mut nat = Nat {
        kind,
        persistent: flags & NX_NAT_F_PERSISTENT != 0,
        hash: flags & NX_NAT_F_PROTO_HASH != 0,
        random: flags & NX_NAT_F_PROTO_RANDOM != 0,
        ..Nat::default()
    };
    if present & NX_NAT_RANGE_IPV4_MIN != 0 {
        let min = Ipv4Addr::from(b.u32()?);
        let max = if present & NX_NAT_RANGE_IPV4_MAX != 0 {
            Ipv4Addr::from(b.u32()?)
        } else {
            min
        };
        nat.addrs = Some((IpAddr::V4(min), IpAddr::V4(max)));
    }
    if present & NX_NAT_RANGE_IPV6_MIN != 0 {
        let min = Ipv6Addr::from(b.uint(16)?);
        let max = if present & NX_NAT_RANGE_IPV6_MAX != 0 {
            Ipv6Addr::from(b.uint(16)?)
        } else {
            min
        };
        nat.addrs = Some((IpAddr::V6(min), IpAddr::V6(max)));
    }
    if present & NX_NAT_RANGE_PROTO_MIN != 0 {
        let min = b.u16()?;
        let max = if present & NX_NAT_RANGE_PROTO_MAX != 0 {
            b.u16()?
        } else {
            min
        };
        nat.ports = Some((min, max));
    }
    Ok(nat)
}

fn decode_learn(b: &mut Reader<'_>) -> Result<Learn, CodecError> {
    let idle_timeout = b.u16()?;
    let hard_timeout = b.u16()?;
    let priority = b.u16()?;
    let cookie = b.u64()?;
    let flags = b.u16()?;
    let table = b.u8()?;
    b.skip(1)?;
    let fin_idle_timeout = b.u16()?;
    let fin_hard_timeout = b.u16()?;
    let mut l = Learn {
        table,
        priority,
        idle_timeout,
        hard_timeout,
        fin_idle_timeout,
        fin_hard_timeout,
        cookie,
        flags,
        specs: Vec::new(),
    };
    if flags & !3 != 0 {
        return Err(CodecError::Unsupported {
            what: "learn flags",
            detail: format!("{flags:#x}"),
        });
    }
    let read_sf = |b: &mut Reader<'_>, n_bits: u16| -> Result<SubField, CodecError> {
        let field = decode_field_header(b.u32()?)?;
        let ofs = b.u16()?;
        subfield(field, ofs, n_bits)
    };
    while b.remaining() >= 2 {
        let header = b.u16()?;
        if header == 0 {
            break;
        }
        let n_bits = header & NX_LEARN_N_BITS_MASK;
        let imm = header & NX_LEARN_SRC_IMMEDIATE != 0;
        let dst_type = header & NX_LEARN_DST_MASK;
        let imm_bytes = 2 * usize::from(n_bits).div_ceil(16);
        if imm_bytes > 16 && imm {
            return Err(CodecError::Unsupported {
                what: "learn spec",
                detail: format!("{n_bits}-bit immediate"),
            });
        }
        let spec = match (imm, dst_type) {
            (false, 0) => {
                let src = read_sf(b, n_bits)?;
                LearnSpec::MatchField {
                    src,
                    dst: read_sf(b, n_bits)?,
                }
            }
            (true, 0) => {
                let value = b.uint(imm_bytes)?;
                LearnSpec::MatchValue {
                    value,
                    dst: read_sf(b, n_bits)?,
                }
            }
            (false, NX_LEARN_DST_LOAD) => {
                let src = read_sf(b, n_bits)?;
                LearnSpec::LoadField {
                    src,
                    dst: read_sf(b, n_bits)?,
                }
            }
            (true, NX_LEARN_DST_LOAD) => {
                let value = b.uint(imm_bytes)?;
                LearnSpec::LoadValue {
                    value,
                    dst: read_sf(b, n_bits)?,
                }
            }
            (false, NX_LEARN_DST_OUTPUT) => LearnSpec::Output {
                src: read_sf(b, n_bits)?,
            },
            _ => {
                return Err(CodecError::BadValue {
                    what: "learn spec",
                    detail: format!("header {header:#06x}"),
                })
            }
        };
        l.specs.push(spec);
    }
    Ok(l)
}
