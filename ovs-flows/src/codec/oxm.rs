//! OXM/NXM TLVs: the OpenFlow 1.5 `ofp_match` and the field headers used by actions.

use super::wire::{pad8, put_u16, put_u32, put_uint, Reader};
use super::CodecError;
use crate::flow::{Field, Match, OXM_CLASS_OPENFLOW_BASIC};

/// `ofp_match.type` for OXM matches.
const OFPMT_OXM: u16 = 1;
/// The experimenter OXM class (not used by Weft's fields).
const OXM_CLASS_EXPERIMENTER: u16 = 0xffff;
/// `OXM_OF_VLAN_VID` and `OXM_OF_VLAN_PCP`, which OVS sends in place of `NXM_OF_VLAN_TCI`.
const OXM_VLAN_VID: (u16, u8) = (OXM_CLASS_OPENFLOW_BASIC, 6);
const OXM_VLAN_PCP: (u16, u8) = (OXM_CLASS_OPENFLOW_BASIC, 7);

/// The 32-bit OXM header for `field` (class, field, hasmask, payload length).
pub(crate) fn header_of(field: Field, masked: bool) -> u32 {
    let (class, num, len) = field.header();
    let len = if masked { len * 2 } else { len };
    (u32::from(class) << 16) | (u32::from(num) << 9) | (u32::from(masked) << 8) | u32::from(len)
}

/// The header `ovs` uses for `field` in `learn` specs (the NXM one where there is one).
pub(crate) fn nxm_header_of(field: Field) -> u32 {
    let (class, num, len) = field.header();
    let (class, num) = field.alias().unwrap_or((class, num));
    (u32::from(class) << 16) | (u32::from(num) << 9) | u32::from(len)
}

/// The field whose primary or alias header is (class, field number).
pub(crate) fn field_by_id(class: u16, num: u8) -> Option<Field> {
    Field::all().find(|f| {
        let (c, n, _) = f.header();
        (c, n) == (class, num) || f.alias() == Some((class, num))
    })
}

fn unsupported_field(class: u16, num: u8) -> CodecError {
    CodecError::Unsupported {
        what: "oxm field",
        detail: format!("class {class:#06x} field {num}"),
    }
}

/// Decodes a 4-byte field header (no mask) naming a field in an action; returns the field.
pub(crate) fn decode_field_header(header: u32) -> Result<Field, CodecError> {
    let class = (header >> 16) as u16;
    let num = ((header >> 9) & 0x7f) as u8;
    if class == OXM_CLASS_EXPERIMENTER {
        return Err(CodecError::Unsupported {
            what: "oxm field",
            detail: "experimenter class 0xffff".into(),
        });
    }
    field_by_id(class, num).ok_or_else(|| unsupported_field(class, num))
}

/// Appends one OXM TLV; `mask` is omitted when it covers the whole field.
pub(crate) fn put_entry(out: &mut Vec<u8>, field: Field, value: u128, mask: Option<u128>) {
    let mask = mask.filter(|m| *m != field.all_ones());
    put_u32(out, header_of(field, mask.is_some()));
    let n = field.n_bytes();
    put_uint(out, value, n);
    if let Some(m) = mask {
        put_uint(out, m, n);
    }
}

/// One decoded OXM TLV.
pub(crate) enum Entry {
    /// A known field with its value and mask (full mask when the TLV had none).
    Field(Field, u128, u128),
    /// `OXM_OF_VLAN_VID` (value, mask), 13 bits including the present bit.
    VlanVid(u16, u16),
    /// `OXM_OF_VLAN_PCP` (3 bits).
    VlanPcp(u8),
}

/// Reads one OXM TLV.
pub(crate) fn read_entry(r: &mut Reader<'_>) -> Result<Entry, CodecError> {
    let header = r.u32()?;
    let class = (header >> 16) as u16;
    let num = ((header >> 9) & 0x7f) as u8;
    let masked = header & 0x100 != 0;
    let len = (header & 0xff) as usize;
    let payload = r.bytes(len)?;
    if class == OXM_CLASS_EXPERIMENTER {
        let exp = payload
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        return Err(CodecError::Unsupported {
            what: "oxm field",
            detail: format!("experimenter {exp:#010x} field {num}"),
        });
    }
    let mut p = Reader::new(payload, "oxm value");
    let (width, kind) = if (class, num) == OXM_VLAN_VID {
        (2, None)
    } else if (class, num) == OXM_VLAN_PCP {
        (1, None)
    } else {
        let f = field_by_id(class, num).ok_or_else(|| unsupported_field(class, num))?;
        // The 16-bit NXM in_port is the only field whose alias width differs.
        let width = if (class, num) == (0, 0) {
            2
        } else {
            f.n_bytes()
        };
        (width, Some(f))
    };
    if len != if masked { 2 * width } else { width } {
        return Err(CodecError::BadLength {
            what: "oxm field",
            len,
        });
    }
    let value = p.uint(width)?;
    let mask = if masked {
        p.uint(width)?
    } else {
        ones_bytes(width)
    };
    Ok(match kind {
        Some(f) => Entry::Field(f, value & mask, mask),
        None if width == 2 => Entry::VlanVid(value as u16, mask as u16),
        None => Entry::VlanPcp(value as u8),
    })
}

fn ones_bytes(n: usize) -> u128 {
    if n >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * n)) - 1
    }
}

/// Appends `m` as an `ofp_match`: type, length, TLVs in field order (which puts every
/// prerequisite before its dependents), zero padding to a multiple of 8.
pub(crate) fn encode_match(m: &Match, out: &mut Vec<u8>) {
    let start = out.len();
    put_u16(out, OFPMT_OXM);
    put_u16(out, 0);
    for (field, value, mask) in m.iter() {
        put_entry(out, field, value, Some(mask));
    }
    super::wire::patch_len(out, start);
    pad8(out, start);
}

/// Decodes an `ofp_match`; returns it and the bytes consumed including padding.
pub(crate) fn decode_match(buf: &[u8]) -> Result<(Match, usize), CodecError> {
    let mut r = Reader::new(buf, "ofp_match");
    let ty = r.u16()?;
    let len = usize::from(r.u16()?);
    if ty != OFPMT_OXM {
        return Err(CodecError::Unsupported {
            what: "match type",
            detail: ty.to_string(),
        });
    }
    if len < 4 {
        return Err(CodecError::BadLength {
            what: "ofp_match",
            len,
        });
    }
    let padded = len.div_ceil(8) * 8;
    if buf.len() < padded {
        return Err(CodecError::Truncated {
            what: "ofp_match",
            need: padded,
            have: buf.len(),
        });
    }
    let mut r = Reader::new(&buf[4..len], "oxm field");
    let mut m = Match::new();
    while !r.is_empty() {
        match read_entry(&mut r)? {
            Entry::Field(f, v, mask) => m.set(f, v, mask),
            Entry::VlanVid(vid, mask) => {
                let (tci, tmask) = vlan_of(&m);
                let (vid, mask) = (vid & 0x1fff, mask & 0x1fff);
                m.set(
                    Field::VlanTci,
                    u128::from((tci & !0x1fff) | (vid & mask)),
                    u128::from((tmask & !0x1fff) | mask),
                );
            }
            Entry::VlanPcp(pcp) => {
                let (tci, tmask) = vlan_of(&m);
                m.set(
                    Field::VlanTci,
                    u128::from((tci & 0x1fff) | (u16::from(pcp & 7) << 13)),
                    u128::from(tmask | 0xe000),
                );
            }
        }
    }
    Ok((m, padded))
}

fn vlan_of(m: &Match) -> (u16, u16) {
    m.get(Field::VlanTci)
        .map(|(v, mask)| (v as u16, mask as u16))
        .unwrap_or((0, 0))
}
