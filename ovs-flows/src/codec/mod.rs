//! OpenFlow 1.5 wire encoding of [`Match`] (`ofp_match` with OXM TLVs), instructions and
//! actions, including the Nicira extensions Weft uses. Decoding never panics: every length is
//! checked and unknown fields or actions are reported as [`CodecError::Unsupported`].

mod actions;
mod oxm;
mod wire;

use crate::flow::{Action, Match};

pub use actions::nicira::NX_VENDOR_ID;

/// Errors decoding OpenFlow matches, instructions and actions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The buffer ended before the structure did.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field is inconsistent with the structure.
    #[error("bad length {len} for {what}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// The offending length.
        len: usize,
    },
    /// A value is not valid for its field.
    #[error("bad value for {what}: {detail}")]
    BadValue {
        /// What was being decoded.
        what: &'static str,
        /// Details.
        detail: String,
    },
    /// A well-formed element Weft does not support.
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// Kind of element (match field, action, instruction, ...).
        what: &'static str,
        /// Which one (class/field, type, experimenter/subtype).
        detail: String,
    },
}

/// Appends `m` as a full OpenFlow 1.5 `ofp_match` (type OXM, length, TLVs, zero padding to 8).
pub fn encode_match(m: &Match, out: &mut Vec<u8>) {
    oxm::encode_match(m, out)
}

/// Decodes an `ofp_match` at the start of `buf`; returns the match and the bytes consumed
/// (including padding).
pub fn decode_match(buf: &[u8]) -> Result<(Match, usize), CodecError> {
    oxm::decode_match(buf)
}

/// Appends the instructions for `actions`: apply-actions (if any), write-metadata, goto-table.
pub fn encode_instructions(actions: &[Action], out: &mut Vec<u8>) {
    actions::encode_instructions(actions, out)
}

/// Decodes a list of instructions (filling the whole buffer) into actions.
pub fn decode_instructions(buf: &[u8]) -> Result<Vec<Action>, CodecError> {
    actions::decode_instructions(buf)
}

/// Appends a bare action list (as in packet-out); instruction-like actions are skipped.
pub fn encode_actions(actions: &[Action], out: &mut Vec<u8>) {
    actions::encode_actions(actions, out)
}

/// Decodes a bare action list (filling the whole buffer).
pub fn decode_actions(buf: &[u8]) -> Result<Vec<Action>, CodecError> {
    actions::decode_actions(buf)
}
