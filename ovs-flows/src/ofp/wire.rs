//! OpenFlow 1.5 wire format: the header, framing, constants and the small fixed-layout messages
//! (hello, echo, features, switch config, barrier, bundle control, multipart envelopes).
//!
//! Everything here is pure: encoders append to a `Vec<u8>`, decoders read a [`Frame`] and never
//! panic on peer data (every read is length-checked).

use bytes::Bytes;
use thiserror::Error;

/// The only OpenFlow version spoken: 1.5 (wire version 0x06).
pub const OFP_VERSION: u8 = 0x06;
/// Length of the OpenFlow header.
pub const HEADER_LEN: usize = 8;
/// Largest OpenFlow message (the header's 16-bit length field).
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;
/// `OFP_NO_BUFFER`: the packet is not buffered on the switch.
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// `OFPTT_ALL`: every table (flow deletion and flow statistics).
pub const TABLE_ALL: u8 = 0xff;
/// `OFPG_ANY`: no output-group filter.
pub const GROUP_ANY: u32 = 0xffff_ffff;
/// `OFPCML_NO_BUFFER`: send whole packets to the controller.
pub const CONTROLLER_MAX_LEN_NO_BUFFER: u16 = 0xffff;

/// OpenFlow message types (`OFPT_*`) used by this client.
pub mod msg_type {
    /// `OFPT_HELLO`.
    pub const HELLO: u8 = 0;
    /// `OFPT_ERROR`.
    pub const ERROR: u8 = 1;
    /// `OFPT_ECHO_REQUEST`.
    pub const ECHO_REQUEST: u8 = 2;
    /// `OFPT_ECHO_REPLY`.
    pub const ECHO_REPLY: u8 = 3;
    /// `OFPT_EXPERIMENTER`.
    pub const EXPERIMENTER: u8 = 4;
    /// `OFPT_FEATURES_REQUEST`.
    pub const FEATURES_REQUEST: u8 = 5;
    /// `OFPT_FEATURES_REPLY`.
    pub const FEATURES_REPLY: u8 = 6;
    /// `OFPT_SET_CONFIG`.
    pub const SET_CONFIG: u8 = 9;
    /// `OFPT_PACKET_IN`.
    pub const PACKET_IN: u8 = 10;
    /// `OFPT_FLOW_REMOVED`.
    pub const FLOW_REMOVED: u8 = 11;
    /// `OFPT_PORT_STATUS`.
    pub const PORT_STATUS: u8 = 12;
    /// `OFPT_PACKET_OUT`.
    pub const PACKET_OUT: u8 = 13;
    /// `OFPT_FLOW_MOD`.
    pub const FLOW_MOD: u8 = 14;
    /// `OFPT_MULTIPART_REQUEST`.
    pub const MULTIPART_REQUEST: u8 = 18;
    /// `OFPT_MULTIPART_REPLY`.
    pub const MULTIPART_REPLY: u8 = 19;
    /// `OFPT_BARRIER_REQUEST`.
    pub const BARRIER_REQUEST: u8 = 20;
    /// `OFPT_BARRIER_REPLY`.
    pub const BARRIER_REPLY: u8 = 21;
    /// `OFPT_BUNDLE_CONTROL`.
    pub const BUNDLE_CONTROL: u8 = 33;
    /// `OFPT_BUNDLE_ADD_MESSAGE`.
    pub const BUNDLE_ADD_MESSAGE: u8 = 34;
}

/// Reserved port numbers (`OFPP_*`), shared with the flow model.
pub use crate::flow::port;

/// Bundle control types (`OFPBCT_*`).
pub mod bundle_ctrl {
    /// `OFPBCT_OPEN_REQUEST`.
    pub const OPEN_REQUEST: u16 = 0;
    /// `OFPBCT_OPEN_REPLY`.
    pub const OPEN_REPLY: u16 = 1;
    /// `OFPBCT_CLOSE_REQUEST`.
    pub const CLOSE_REQUEST: u16 = 2;
    /// `OFPBCT_CLOSE_REPLY`.
    pub const CLOSE_REPLY: u16 = 3;
    /// `OFPBCT_COMMIT_REQUEST`.
    pub const COMMIT_REQUEST: u16 = 4;
    /// `OFPBCT_COMMIT_REPLY`.
    pub const COMMIT_REPLY: u16 = 5;
    /// `OFPBCT_DISCARD_REQUEST`.
    pub const DISCARD_REQUEST: u16 = 6;
    /// `OFPBCT_DISCARD_REPLY`.
    pub const DISCARD_REPLY: u16 = 7;
    /// `OFPBF_ATOMIC`.
    pub const FLAG_ATOMIC: u16 = 1;
    /// `OFPBF_ORDERED`.
    pub const FLAG_ORDERED: u16 = 2;
}

/// Multipart types (`OFPMP_*`) and flags.
pub mod multipart {
    /// `OFPMP_FLOW_DESC` (called `OFPMP_FLOW` before OpenFlow 1.5).
    pub const FLOW_DESC: u16 = 1;
    /// `OFPMPF_REQ_MORE` / `OFPMPF_REPLY_MORE`.
    pub const FLAG_MORE: u16 = 1;
}

/// Errors decoding or encoding OpenFlow messages.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WireError {
    /// A message or structure is shorter than its fixed part or its own length field.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field holds an impossible value.
    #[error("bad {what} length {len}")]
    BadLength {
        /// The structure whose length is wrong.
        what: &'static str,
        /// The length found.
        len: usize,
    },
    /// An encoded message would not fit in one OpenFlow message.
    #[error("{what} of {len} bytes exceeds the {MAX_MESSAGE_LEN}-byte message limit")]
    TooLong {
        /// The message being encoded.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A field holds a value this client does not understand.
    #[error("unexpected {what} {value}")]
    Unexpected {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The match or action codec rejected part of a message.
    #[error("cannot decode {what}: {reason}")]
    Codec {
        /// The structure being decoded.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
}

/// An OpenFlow header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Wire version (0x06 for OpenFlow 1.5).
    pub version: u8,
    /// Message type (`OFPT_*`).
    pub msg_type: u8,
    /// Length of the whole message, header included.
    pub length: u16,
    /// Transaction id.
    pub xid: u32,
}

impl Header {
    /// Reads a header from the first 8 bytes of `buf`, or `None` if fewer are available.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            version: b[0],
            msg_type: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// One complete message as received: its header and the bytes after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body (everything after the 8-byte header).
    pub body: Bytes,
}

impl Frame {
    /// A reader over the body, naming `what` in errors.
    pub fn reader(&self, what: &'static str) -> Reader<'_> {
        Reader::new(&self.body, what)
    }
}

/// A bounds-checked big-endian reader; every read names the structure in its error.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The position from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(WireError::Truncated {
                what: self.what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes(n).map(|_| ())
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

/// Appends a header with a zero length placeholder; returns the message's start offset for
/// [`finish`].
pub fn begin(out: &mut Vec<u8>, msg_type: u8, xid: u32) -> usize {
    let start = out.len();
    out.extend_from_slice(&[OFP_VERSION, msg_type, 0, 0]);
    out.extend_from_slice(&xid.to_be_bytes());
    start
}

/// Writes the length of the message that began at `start` (see [`begin`]).
pub fn finish(out: &mut [u8], start: usize, what: &'static str) -> Result<(), WireError> {
    let len = out.len() - start;
    let len16 = u16::try_from(len).map_err(|_| WireError::TooLong { what, len })?;
    out[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}

/// Appends zero bytes until the length since `start` is a multiple of 8.
pub fn pad_to_8(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(out.len() + (8 - len % 8) % 8, 0);
}

/// Rounds `len` up to a multiple of 8.
pub fn round_up_8(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Appends a message that has only a header (barrier, features request).
pub fn encode_empty(out: &mut Vec<u8>, msg_type: u8, xid: u32) {
    begin(out, msg_type, xid);
    // 8 bytes always fit the length field.
    let start = out.len() - HEADER_LEN;
    out[start + 2..start + 4].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
}

/// Appends an `OFPT_HELLO` offering exactly the versions in `versions` (bitmap element).
pub fn encode_hello(out: &mut Vec<u8>, xid: u32, versions: &[u8]) {
    let start = begin(out, msg_type::HELLO, xid);
    let words = versions
        .iter()
        .map(|v| usize::from(*v) / 32 + 1)
        .max()
        .unwrap_or(1);
    let mut bitmap = vec![0u32; words];
    for v in versions {
        bitmap[usize::from(*v) / 32] |= 1 << (v % 32);
    }
    let elem_len = 4 + 4 * words;
    out.extend_from_slice(&1u16.to_be_bytes()); // OFPHET_VERSIONBITMAP
    out.extend_from_slice(&(elem_len as u16).to_be_bytes());
    for word in bitmap {
        out.extend_from_slice(&word.to_be_bytes());
    }
    pad_to_8(out, start + HEADER_LEN);
    // A hello offering versions below 256 is always far below the size limit.
    let _ = finish(out, start, "hello");
}

/// What a peer's `OFPT_HELLO` offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The version in the hello's header (the peer's highest version).
    pub header_version: u8,
    /// The versions in the version bitmap element, if the peer sent one.
    pub bitmap: Option<Vec<u8>>,
}

impl Hello {
    /// Decodes a hello; unknown elements are skipped.
    pub fn decode(frame: &Frame) -> Result<Hello, WireError> {
        let mut r = frame.reader("hello element");
        let mut bitmap = None;
        while r.remaining() >= 4 {
            let elem_type = r.u16()?;
            let len = usize::from(r.u16()?);
            if len < 4 {
                return Err(WireError::BadLength {
                    what: "hello element",
                    len,
                });
            }
            let payload = r.bytes(len - 4)?;
            if elem_type == 1 {
                let mut versions = Vec::new();
                for (i, word) in payload.chunks_exact(4).enumerate() {
                    let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                    for bit in 0..32u32 {
                        if word & (1 << bit) != 0 {
                            if let Ok(v) = u8::try_from(i as u32 * 32 + bit) {
                                versions.push(v);
                            }
                        }
                    }
                }
                bitmap = Some(versions);
            }
            // Elements are padded to 8 bytes.
            let pad = round_up_8(len) - len;
            r.skip(pad.min(r.remaining()))?;
        }
        Ok(Hello {
            header_version: frame.header.version,
            bitmap,
        })
    }

    /// The versions the peer supports: the bitmap, or every version up to the header version.
    pub fn offered(&self) -> Vec<u8> {
        match &self.bitmap {
            Some(versions) => versions.clone(),
            None => (1..=self.header_version).collect(),
        }
    }

    /// Whether both sides can speak OpenFlow 1.5.
    pub fn accepts_of15(&self) -> bool {
        match &self.bitmap {
            Some(versions) => versions.contains(&OFP_VERSION),
            None => self.header_version >= OFP_VERSION,
        }
    }
}

/// Human-readable name of a wire version ("1.5" for 0x06).
pub fn version_name(version: u8) -> String {
    match version {
        1..=6 => format!("1.{}", version - 1),
        other => format!("0x{other:02x}"),
    }
}

/// The switch's answer to a features request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// The datapath id.
    pub datapath_id: u64,
    /// Packets the switch can buffer (0 for OVS).
    pub n_buffers: u32,
    /// Number of flow tables.
    pub n_tables: u8,
    /// Auxiliary connection id (0 for the main connection).
    pub auxiliary_id: u8,
    /// `OFPC_*` capability bits.
    pub capabilities: u32,
}

impl Features {
    /// Decodes an `OFPT_FEATURES_REPLY` body.
    pub fn decode(frame: &Frame) -> Result<Features, WireError> {
        let mut r = frame.reader("features reply");
        let datapath_id = r.u64()?;
        let n_buffers = r.u32()?;
        let n_tables = r.u8()?;
        let auxiliary_id = r.u8()?;
        r.skip(2)?;
        let capabilities = r.u32()?;
        r.skip(4)?;
        Ok(Features {
            datapath_id,
            n_buffers,
            n_tables,
            auxiliary_id,
            capabilities,
        })
    }
}

/// Appends an `OFPT_SET_CONFIG` (no fragment flags) with the given miss-send length.
pub fn encode_set_config(out: &mut Vec<u8>, xid: u32, miss_send_len: u16) {
    let start = begin(out, msg_type::SET_CONFIG, xid);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&miss_send_len.to_be_bytes());
    let _ = finish(out, start, "set config");
}

/// Appends an echo request or reply carrying `data`.
pub fn encode_echo(
    out: &mut Vec<u8>,
    msg_type: u8,
    xid: u32,
    data: &[u8],
) -> Result<(), WireError> {
    let start = begin(out, msg_type, xid);
    out.extend_from_slice(data);
    finish(out, start, "echo")
}

/// Appends an `OFPT_BUNDLE_CONTROL` without properties.
pub fn encode_bundle_ctrl(out: &mut Vec<u8>, xid: u32, bundle_id: u32, ctrl: u16, flags: u16) {
    let start = begin(out, msg_type::BUNDLE_CONTROL, xid);
    out.extend_from_slice(&bundle_id.to_be_bytes());
    out.extend_from_slice(&ctrl.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    let _ = finish(out, start, "bundle control");
}

/// A decoded `OFPT_BUNDLE_CONTROL` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleCtrl {
    /// The bundle id.
    pub bundle_id: u32,
    /// `OFPBCT_*`.
    pub ctrl: u16,
    /// `OFPBF_*`.
    pub flags: u16,
}

impl BundleCtrl {
    /// Decodes a bundle control message.
    pub fn decode(frame: &Frame) -> Result<BundleCtrl, WireError> {
        let mut r = frame.reader("bundle control");
        Ok(BundleCtrl {
            bundle_id: r.u32()?,
            ctrl: r.u16()?,
            flags: r.u16()?,
        })
    }
}

/// Appends an `OFPT_BUNDLE_ADD_MESSAGE` whose inner message is written by `inner` with the
/// same xid (OVS requires the inner and outer xids to match).
pub fn encode_bundle_add(
    out: &mut Vec<u8>,
    xid: u32,
    bundle_id: u32,
    flags: u16,
    inner: impl FnOnce(&mut Vec<u8>, u32) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let start = begin(out, msg_type::BUNDLE_ADD_MESSAGE, xid);
    out.extend_from_slice(&bundle_id.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    inner(out, xid)?;
    finish(out, start, "bundle add message")
}

/// Appends an `OFPT_MULTIPART_REQUEST` of `mp_type` whose body is written by `body`.
pub fn encode_multipart_request(
    out: &mut Vec<u8>,
    xid: u32,
    mp_type: u16,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<(), WireError> {
    let start = begin(out, msg_type::MULTIPART_REQUEST, xid);
    out.extend_from_slice(&mp_type.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    body(out);
    finish(out, start, "multipart request")
}

/// The envelope of one `OFPT_MULTIPART_REPLY` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartReply {
    /// `OFPMP_*`.
    pub mp_type: u16,
    /// `OFPMPF_*` (bit 0: more replies follow).
    pub flags: u16,
    /// The body after the envelope.
    pub body: Bytes,
}

impl MultipartReply {
    /// Decodes the envelope of a multipart reply.
    pub fn decode(frame: &Frame) -> Result<MultipartReply, WireError> {
        let mut r = frame.reader("multipart reply");
        let mp_type = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        Ok(MultipartReply {
            mp_type,
            flags,
            body: frame.body.slice(r.position()..),
        })
    }

    /// Whether more replies to the same request follow.
    pub fn more(&self) -> bool {
        self.flags & multipart::FLAG_MORE != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Frame {
        let header = Header::parse(bytes).unwrap();
        Frame {
            header,
            body: Bytes::copy_from_slice(&bytes[HEADER_LEN..]),
        }
    }

    #[test]
    fn hello_round_trip_offers_only_of15() {
        let mut out = Vec::new();
        encode_hello(&mut out, 7, &[OFP_VERSION]);
        assert_eq!(
            out,
            [6, 0, 0, 16, 0, 0, 0, 7, 0, 1, 0, 8, 0, 0, 0, 0x40, 0, 0, 0, 0][..16]
        );
        let hello = Hello::decode(&frame(&out)).unwrap();
        assert_eq!(hello.offered(), vec![6]);
        assert!(hello.accepts_of15());
    }

    #[test]
    fn hello_without_bitmap_uses_the_header_version() {
        let hello = Hello::decode(&frame(&[4, 0, 0, 8, 0, 0, 0, 1])).unwrap();
        assert!(!hello.accepts_of15());
        assert_eq!(hello.offered(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn hello_with_bad_element_length_is_an_error() {
        let err = Hello::decode(&frame(&[6, 0, 0, 12, 0, 0, 0, 1, 0, 1, 0, 2])).unwrap_err();
        assert_eq!(
            err,
            WireError::BadLength {
                what: "hello element",
                len: 2
            }
        );
    }

    #[test]
    fn truncated_features_reply_is_a_typed_error() {
        let err = Features::decode(&frame(&[6, 6, 0, 12, 0, 0, 0, 1, 1, 2, 3, 4])).unwrap_err();
        assert!(matches!(
            err,
            WireError::Truncated {
                what: "features reply",
                ..
            }
        ));
    }

    #[test]
    fn features_reply_decodes() {
        let mut bytes = vec![6, 6, 0, 32, 0, 0, 0, 9];
        bytes.extend_from_slice(&0x0000_1234_5678_9abcu64.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&[254, 0, 0, 0]);
        bytes.extend_from_slice(&0x4fu32.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let features = Features::decode(&frame(&bytes)).unwrap();
        assert_eq!(features.datapath_id, 0x1234_5678_9abc);
        assert_eq!(features.n_tables, 254);
        assert_eq!(features.capabilities, 0x4f);
    }

    #[test]
    fn finish_rejects_oversized_messages() {
        let mut out = Vec::new();
        let start = begin(&mut out, msg_type::FLOW_MOD, 1);
        out.resize(70_000, 0);
        let err = finish(&mut out, start, "flow mod").unwrap_err();
        assert_eq!(
            err,
            WireError::TooLong {
                what: "flow mod",
                len: 70_000
            }
        );
    }

    #[test]
    fn bundle_add_wraps_the_inner_message_with_the_same_xid() {
        let mut out = Vec::new();
        encode_bundle_add(&mut out, 42, 3, bundle_ctrl::FLAG_ATOMIC, |out, xid| {
            encode_empty(out, msg_type::BARRIER_REQUEST, xid);
            Ok(())
        })
        .unwrap();
        assert_eq!(out.len(), 24);
        assert_eq!(&out[2..4], &24u16.to_be_bytes());
        assert_eq!(&out[16..24], &[6, 20, 0, 8, 0, 0, 0, 42]);
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3], "thing");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert!(r.u16().is_err());
        assert!(r.bytes(usize::MAX).is_err());
        assert_eq!(r.u8().unwrap(), 3);
    }
}
