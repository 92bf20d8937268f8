//! OpenFlow 1.5 instructions and standard actions; Nicira actions are in [`nicira`].

pub(crate) mod nicira;

use super::oxm::{decode_field_header, header_of, put_entry, read_entry, Entry};
use super::wire::{pad8, patch_len, put_u16, put_u32, put_u64, Reader};
use super::CodecError;
use crate::flow::{canonical_order, port, Action, Controller, SubField};

/// OpenFlow 1.5 action types.
const OFPAT_OUTPUT: u16 = 0;
const OFPAT_GROUP: u16 = 22;
const OFPAT_DEC_NW_TTL: u16 = 24;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_COPY_FIELD: u16 = 28;
pub(crate) const OFPAT_EXPERIMENTER: u16 = 0xffff;

/// OpenFlow 1.5 instruction types.
const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_WRITE_METADATA: u16 = 2;
const OFPIT_WRITE_ACTIONS: u16 = 3;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_CLEAR_ACTIONS: u16 = 5;

/// Deepest nesting of actions inside actions (`ct(exec(...))`) accepted while decoding.
const MAX_DEPTH: usize = 4;

/// Appends the instructions for `actions` in the order OpenFlow requires.
pub(crate) fn encode_instructions(actions: &[Action], out: &mut Vec<u8>) {
    let ordered = canonical_order(actions);
    let apply: Vec<&Action> = ordered
        .iter()
        .copied()
        .filter(|a| !a.is_instruction())
        .collect();
    if !apply.is_empty() {
        let start = out.len();
        put_u16(out, OFPIT_APPLY_ACTIONS);
        put_u16(out, 0);
        put_u32(out, 0);
        for a in apply {
            encode_action(a, out);
        }
        patch_len(out, start);
    }
    for a in ordered {
        match a {
            Action::WriteMetadata { value, mask } => {
                put_u16(out, OFPIT_WRITE_METADATA);
                put_u16(out, 24);
                put_u32(out, 0);
                put_u64(out, *value);
                put_u64(out, *mask);
            }
            Action::GotoTable(t) => {
                put_u16(out, OFPIT_GOTO_TABLE);
                put_u16(out, 8);
                out.extend_from_slice(&[*t, 0, 0, 0]);
            }
            _ => {}
        }
    }
}

/// Decodes an instruction list into actions.
pub(crate) fn decode_instructions(buf: &[u8]) -> Result<Vec<Action>, CodecError> {
    let mut r = Reader::new(buf, "instruction");
    let mut out = Vec::new();
    while !r.is_empty() {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len % 8 != 0 || len - 4 > r.remaining() {
            return Err(CodecError::BadLength {
                what: "instruction",
                len,
            });
        }
        let mut body = Reader::new(r.bytes(len - 4)?, "instruction");
        match ty {
            OFPIT_APPLY_ACTIONS => {
                body.skip(4)?;
                let rest = body.bytes(body.remaining())?;
                out.extend(decode_actions_at(rest, 0)?);
            }
            OFPIT_WRITE_METADATA => {
                body.skip(4)?;
                let value = body.u64()?;
                let mask = body.u64()?;
                out.push(Action::WriteMetadata { value, mask });
            }
            OFPIT_GOTO_TABLE => out.push(Action::GotoTable(body.u8()?)),
            OFPIT_WRITE_ACTIONS | OFPIT_CLEAR_ACTIONS => {
                return Err(CodecError::Unsupported {
                    what: "instruction",
                    detail: format!("type {ty} (write/clear actions)"),
                })
            }
            _ => {
                return Err(CodecError::Unsupported {
                    what: "instruction",
                    detail: format!("type {ty}"),
                })
            }
        }
    }
    Ok(out)
}

/// Appends each apply-actions action of `actions` (instruction-like ones are skipped).
pub(crate) fn encode_actions(actions: &[Action], out: &mut Vec<u8>) {
    for a in actions.iter().filter(|a| !a.is_instruction()) {
        encode_action(a, out);
    }
}

/// Appends one action.
pub(crate) fn encode_action(a: &Action, out: &mut Vec<u8>) {
    match a {
        Action::Output(p) => {
            let max_len = if *p == port::CONTROLLER { u16::MAX } else { 0 };
            put_output(out, *p, max_len);
        }
        Action::Controller(c) if c.is_simple() => put_output(out, port::CONTROLLER, c.max_len),
        Action::Group(g) => {
            put_u16(out, OFPAT_GROUP);
            put_u16(out, 8);
            put_u32(out, *g);
        }
        Action::DecTtl => {
            put_u16(out, OFPAT_DEC_NW_TTL);
            put_u16(out, 8);
            put_u32(out, 0);
        }
        Action::SetField { field, value, mask } => {
            let start = out.len();
            put_u16(out, OFPAT_SET_FIELD);
            put_u16(out, 0);
            put_entry(out, *field, *value, *mask);
            pad8(out, start);
            patch_len(out, start);
        }
        Action::Move { src, dst } => {
            let start = out.len();
            put_u16(out, OFPAT_COPY_FIELD);
            put_u16(out, 0);
            put_u16(out, dst.n_bits);
            put_u16(out, src.ofs);
            put_u16(out, dst.ofs);
            put_u16(out, 0);
            put_u32(out, header_of(src.field, false));
            put_u32(out, header_of(dst.field, false));
            pad8(out, start);
            patch_len(out, start);
        }
        Action::WriteMetadata { .. } | Action::GotoTable(_) => {}
        other => nicira::encode(other, out),
    }
}

fn put_output(out: &mut Vec<u8>, p: u32, max_len: u16) {
    put_u16(out, OFPAT_OUTPUT);
    put_u16(out, 16);
    put_u32(out, p);
    put_u16(out, max_len);
    out.extend_from_slice(&[0; 6]);
}

/// Decodes a bare action list.
pub(crate) fn decode_actions(buf: &[u8]) -> Result<Vec<Action>, CodecError> {
    decode_actions_at(buf, 0)
}

/// Decodes an action list nested `depth` levels deep.
pub(crate) fn decode_actions_at(buf: &[u8], depth: usize) -> Result<Vec<Action>, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::BadValue {
            what: "action",
            detail: format!("nested deeper than {MAX_DEPTH} levels"),
        });
    }
    let mut r = Reader::new(buf, "action");
    let mut out = Vec::new();
    while !r.is_empty() {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len % 8 != 0 || len - 4 > r.remaining() {
            return Err(CodecError::BadLength {
                what: "action",
                len,
            });
        }
        let body = r.bytes(len - 4)?;
        out.push(decode_action(ty, body, depth)?);
    }
    Ok(out)
}

/// Decodes one action of type `ty` whose bytes after type and length are `body`.
fn decode_action(ty: u16, body: &[u8], depth: usize) -> Result<Action, CodecError> {
    let mut b = Reader::new(body, "action");
    Ok(match ty {
        OFPAT_OUTPUT => {
            let p = b.u32()?;
            let max_len = b.u16()?;
            if p == port::CONTROLLER {
                Action::Controller(Controller {
                    max_len,
                    ..Controller::default()
                })
            } else {
                Action::Output(p)
            }
        }
        OFPAT_GROUP => Action::Group(b.u32()?),
        OFPAT_DEC_NW_TTL => Action::DecTtl,
        OFPAT_SET_FIELD => match read_entry(&mut b)? {
            Entry::Field(field, value, mask) => Action::set_field_masked(field, value, mask),
            Entry::VlanVid(..) | Entry::VlanPcp(_) => {
                return Err(CodecError::Unsupported {
                    what: "set_field",
                    detail: "vlan_vid/vlan_pcp".into(),
                })
            }
        },
        OFPAT_COPY_FIELD => {
            let n_bits = b.u16()?;
            let src_ofs = b.u16()?;
            let dst_ofs = b.u16()?;
            b.skip(2)?;
            let src = decode_field_header(b.u32()?)?;
            let dst = decode_field_header(b.u32()?)?;
            let src = subfield(src, src_ofs, n_bits)?;
            let dst = subfield(dst, dst_ofs, n_bits)?;
            Action::Move { src, dst }
        }
        OFPAT_EXPERIMENTER => nicira::decode(body, depth)?,
        _ => {
            return Err(CodecError::Unsupported {
                what: "action",
                detail: format!("type {ty}"),
            })
        }
    })
}

/// A validated subfield.
pub(crate) fn subfield(
    field: crate::flow::Field,
    ofs: u16,
    n_bits: u16,
) -> Result<SubField, CodecError> {
    let sf = SubField { field, ofs, n_bits };
    if sf.is_valid() {
        Ok(sf)
    } else {
        Err(CodecError::BadValue {
            what: "subfield",
            detail: format!("{}[{}+{}] out of range", field.nxm_name(), ofs, n_bits),
        })
    }
}
