//! `OFPT_ERROR` messages: decoding and the names of the common error types and codes, in the
//! `OFPBAC_BAD_OUT_GROUP` style that OVS logs and `ovs-ofctl` print.

use std::fmt;

use bytes::Bytes;

use super::wire::{Frame, Header, WireError, HEADER_LEN};

/// `OFPET_EXPERIMENTER`.
pub const EXPERIMENTER_ERROR: u16 = 0xffff;
/// `OFPET_BUNDLE_FAILED`.
pub const BUNDLE_FAILED: u16 = 17;
/// `OFPBFC_MSG_FAILED`: a message in a committed bundle failed.
pub const BUNDLE_MSG_FAILED: u16 = 13;

/// The type and code of an OpenFlow error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A standard error (`OFPET_*` type and its code).
    Standard {
        /// `OFPET_*`.
        err_type: u16,
        /// The type's code.
        code: u16,
    },
    /// An experimenter error (Nicira/ONF extension errors).
    Experimenter {
        /// The experimenter-defined type.
        exp_type: u16,
        /// The experimenter id (0x00002320 for Nicira, 0x4f4e4600 for ONF).
        experimenter: u32,
    },
}

/// A decoded `OFPT_ERROR` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfpError {
    /// The error's xid (the xid of the request that caused it).
    pub xid: u32,
    /// Type and code.
    pub kind: ErrorKind,
    /// The error data: for request errors, the start of (with OVS: all of) the offending
    /// message.
    pub data: Bytes,
}

impl OfpError {
    /// Decodes an `OFPT_ERROR` body.
    pub fn decode(frame: &Frame) -> Result<OfpError, WireError> {
        let mut r = frame.reader("error message");
        let err_type = r.u16()?;
        let code = r.u16()?;
        let kind = if err_type == EXPERIMENTER_ERROR {
            ErrorKind::Experimenter {
                exp_type: code,
                experimenter: r.u32()?,
            }
        } else {
            ErrorKind::Standard { err_type, code }
        };
        Ok(OfpError {
            xid: frame.header.xid,
            kind,
            data: frame.body.slice(r.position()..),
        })
    }

    /// Whether this is `OFPBFC_MSG_FAILED` (the commit of a bundle failed because of one of
    /// its messages, reported separately).
    pub fn is_bundle_msg_failed(&self) -> bool {
        self.kind
            == ErrorKind::Standard {
                err_type: BUNDLE_FAILED,
                code: BUNDLE_MSG_FAILED,
            }
    }

    /// The header of the offending message carried in the error data, if present.
    pub fn offending_header(&self) -> Option<Header> {
        Header::parse(&self.data)
    }

    /// The message inside an offending `OFPT_BUNDLE_ADD_MESSAGE` carried in the data, if the
    /// data holds one (OVS sends the whole add message back when a bundled message fails).
    pub fn offending_bundle_inner(&self) -> Option<Header> {
        let outer = self.offending_header()?;
        if outer.msg_type != super::wire::msg_type::BUNDLE_ADD_MESSAGE {
            return None;
        }
        Header::parse(self.data.get(HEADER_LEN + 8..)?)
    }

    /// The `OFPxxx_NAME` of this error, if it is a known standard one.
    pub fn name(&self) -> Option<String> {
        match self.kind {
            ErrorKind::Standard { err_type, code } => error_name(err_type, code),
            ErrorKind::Experimenter { .. } => None,
        }
    }
}

impl fmt::Display for OfpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Standard { err_type, code } => match error_name(err_type, code) {
                Some(name) => write!(f, "{name} (type {err_type}, code {code})"),
                None => match type_name(err_type) {
                    Some(t) => write!(f, "{t} code {code} (type {err_type})"),
                    None => write!(f, "error type {err_type} code {code}"),
                },
            },
            ErrorKind::Experimenter {
                exp_type,
                experimenter,
            } => {
                let vendor = match experimenter {
                    0x0000_2320 => "nicira ",
                    0x4f4e_4600 => "onf ",
                    _ => "",
                };
                write!(
                    f,
                    "{vendor}experimenter error type {exp_type} (experimenter 0x{experimenter:08x})"
                )
            }
        }
    }
}

impl std::error::Error for OfpError {}

/// `OFPET_*` names, indexed by type.
const TYPE_NAMES: &[(&str, &str)] = &[
    ("OFPET_HELLO_FAILED", "OFPHFC"),
    ("OFPET_BAD_REQUEST", "OFPBRC"),
    ("OFPET_BAD_ACTION", "OFPBAC"),
    ("OFPET_BAD_INSTRUCTION", "OFPBIC"),
    ("OFPET_BAD_MATCH", "OFPBMC"),
    ("OFPET_FLOW_MOD_FAILED", "OFPFMFC"),
    ("OFPET_GROUP_MOD_FAILED", "OFPGMFC"),
    ("OFPET_PORT_MOD_FAILED", "OFPPMFC"),
    ("OFPET_TABLE_MOD_FAILED", "OFPTMFC"),
    ("OFPET_QUEUE_OP_FAILED", "OFPQOFC"),
    ("OFPET_SWITCH_CONFIG_FAILED", "OFPSCFC"),
    ("OFPET_ROLE_REQUEST_FAILED", "OFPRRFC"),
    ("OFPET_METER_MOD_FAILED", "OFPMMFC"),
    ("OFPET_TABLE_FEATURES_FAILED", "OFPTFFC"),
    ("OFPET_BAD_PROPERTY", "OFPBPC"),
    ("OFPET_ASYNC_CONFIG_FAILED", "OFPACFC"),
    ("OFPET_FLOW_MONITOR_FAILED", "OFPMOFC"),
    ("OFPET_BUNDLE_FAILED", "OFPBFC"),
];

/// Code suffixes per type (OpenFlow 1.5.1 section 7.5.4), for the types a client meets.
fn code_names(err_type: u16) -> &'static [&'static str] {
    match err_type {
        0 => &["INCOMPATIBLE", "EPERM"],
        1 => &[
            "BAD_VERSION",
            "BAD_TYPE",
            "BAD_MULTIPART",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "EPERM",
            "BAD_LEN",
            "BUFFER_EMPTY",
            "BUFFER_UNKNOWN",
            "BAD_TABLE_ID",
            "IS_SLAVE",
            "BAD_PORT",
            "BAD_PACKET",
            "MULTIPART_BUFFER_OVERFLOW",
            "MULTIPART_REQUEST_TIMEOUT",
            "MULTIPART_REPLY_TIMEOUT",
        ],
        2 => &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_OUT_PORT",
            "BAD_ARGUMENT",
            "EPERM",
            "TOO_MANY",
            "BAD_QUEUE",
            "BAD_OUT_GROUP",
            "MATCH_INCONSISTENT",
            "UNSUPPORTED_ORDER",
            "BAD_TAG",
            "BAD_SET_TYPE",
            "BAD_SET_LEN",
            "BAD_SET_ARGUMENT",
            "BAD_SET_MASK",
            "BAD_METER",
        ],
        3 => &[
            "UNKNOWN_INST",
            "UNSUP_INST",
            "BAD_TABLE_ID",
            "UNSUP_METADATA",
            "UNSUP_METADATA_MASK",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_LEN",
            "EPERM",
            "DUP_INST",
        ],
        4 => &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_TAG",
            "BAD_DL_ADDR_MASK",
            "BAD_NW_ADDR_MASK",
            "BAD_WILDCARDS",
            "BAD_FIELD",
            "BAD_VALUE",
            "BAD_MASK",
            "BAD_PREREQ",
            "DUP_FIELD",
            "EPERM",
        ],
        5 => &[
            "UNKNOWN",
            "TABLE_FULL",
            "BAD_TABLE_ID",
            "OVERLAP",
            "EPERM",
            "BAD_TIMEOUT",
            "BAD_COMMAND",
            "BAD_FLAGS",
            "CANT_SYNC",
            "BAD_PRIORITY",
            "IS_SYNC",
        ],
        6 => &[
            "GROUP_EXISTS",
            "INVALID_GROUP",
            "WEIGHT_UNSUPPORTED",
            "OUT_OF_GROUPS",
            "OUT_OF_BUCKETS",
            "CHAINING_UNSUPPORTED",
            "WATCH_UNSUPPORTED",
            "LOOP",
            "UNKNOWN_GROUP",
            "CHAINED_GROUP",
            "BAD_TYPE",
            "BAD_COMMAND",
            "BAD_BUCKET",
            "BAD_WATCH",
            "EPERM",
            "UNKNOWN_BUCKET",
            "BUCKET_EXISTS",
        ],
        7 => &[
            "BAD_PORT",
            "BAD_HW_ADDR",
            "BAD_CONFIG",
            "BAD_ADVERTISE",
            "EPERM",
        ],
        8 => &["BAD_TABLE", "BAD_CONFIG", "EPERM"],
        10 => &["BAD_FLAGS", "BAD_LEN", "EPERM"],
        11 => &["STALE", "UNSUP", "BAD_ROLE", "ID_UNSUP", "ID_IN_USE"],
        17 => &[
            "UNKNOWN",
            "EPERM",
            "BAD_ID",
            "BUNDLE_EXIST",
            "BUNDLE_CLOSED",
            "OUT_OF_BUNDLES",
            "BAD_TYPE",
            "BAD_FLAGS",
            "MSG_BAD_LEN",
            "MSG_BAD_XID",
            "MSG_UNSUP",
            "MSG_CONFLICT",
            "MSG_TOO_MANY",
            "MSG_FAILED",
            "TIMEOUT",
            "BUNDLE_IN_PROGRESS",
            "SCHED_NOT_SUPPORTED",
            "SCHED_FUTURE",
            "SCHED_PAST",
        ],
        _ => &[],
    }
}

/// The `OFPET_*` name of an error type.
pub fn type_name(err_type: u16) -> Option<&'static str> {
    TYPE_NAMES.get(usize::from(err_type)).map(|(name, _)| *name)
}

/// The `OFPxxx_CODE` name of a standard error, e.g. `OFPBAC_BAD_OUT_GROUP`.
pub fn error_name(err_type: u16, code: u16) -> Option<String> {
    let (_, prefix) = TYPE_NAMES.get(usize::from(err_type))?;
    let suffix = code_names(err_type).get(usize::from(code))?;
    Some(format!("{prefix}_{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_frame(xid: u32, body: &[u8]) -> Frame {
        Frame {
            header: Header {
                version: 6,
                msg_type: 1,
                length: (8 + body.len()) as u16,
                xid,
            },
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn names_common_errors() {
        assert_eq!(error_name(2, 9).as_deref(), Some("OFPBAC_BAD_OUT_GROUP"));
        assert_eq!(error_name(3, 2).as_deref(), Some("OFPBIC_BAD_TABLE_ID"));
        assert_eq!(error_name(4, 9).as_deref(), Some("OFPBMC_BAD_PREREQ"));
        assert_eq!(error_name(17, 13).as_deref(), Some("OFPBFC_MSG_FAILED"));
        assert_eq!(error_name(5, 99), None);
    }

    #[test]
    fn decodes_standard_and_experimenter_errors() {
        let e = OfpError::decode(&error_frame(5, &[0, 2, 0, 9, 1, 2])).unwrap();
        assert_eq!(e.xid, 5);
        assert_eq!(
            e.kind,
            ErrorKind::Standard {
                err_type: 2,
                code: 9
            }
        );
        assert_eq!(&e.data[..], &[1, 2]);
        assert_eq!(e.to_string(), "OFPBAC_BAD_OUT_GROUP (type 2, code 9)");

        let e = OfpError::decode(&error_frame(6, &[0xff, 0xff, 0, 3, 0, 0, 0x23, 0x20])).unwrap();
        assert_eq!(
            e.kind,
            ErrorKind::Experimenter {
                exp_type: 3,
                experimenter: 0x2320
            }
        );
        assert!(e
            .to_string()
            .starts_with("nicira experimenter error type 3"));
    }

    #[test]
    fn short_error_is_a_typed_error() {
        assert!(OfpError::decode(&error_frame(1, &[0, 2])).is_err());
        assert!(OfpError::decode(&error_frame(1, &[0xff, 0xff, 0, 1, 0])).is_err());
    }
}
