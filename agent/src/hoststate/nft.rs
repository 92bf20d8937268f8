//! Weft's SNAT table over nf_tables netlink (`NETLINK_NETFILTER`), without `nft`, libnftnl or
//! any C library: a small encoder for the messages Weft sends, a decoder for the dumps and
//! events it reads back, and blocking request helpers to call from inside the node's namespace
//! ([`crate::netns::Netns::run`]).
//!
//! Wire format (kernel uapi `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`):
//! every message is a `nlmsghdr` whose type is `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_*`,
//! followed by a 4-byte `nfgenmsg` (family, version 0, resource id big-endian) and netlink
//! attributes. Integer attributes of nf_tables are big-endian. Changes go in one batch between
//! `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`: the kernel applies all of it or nothing.
//!
//! The table Weft owns per family ([`SnatSpec`]) is rebuilt atomically: `add table` (so the
//! delete cannot fail on a missing table), `delete table`, `add table` with a fingerprint in
//! `NFTA_TABLE_USERDATA`, one nat chain `postrouting` (hook postrouting, priority srcnat 100,
//! policy accept) and its rules, each carrying `NFTA_RULE_USERDATA` `weft:FINGERPRINT:INDEX`
//! (both written as nft comments).
//! [`ObservedTable::matches`] compares a dump against that.

use std::fmt;
use std::io;

use ipnet::IpNet;
use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, Socket, TokioSocket};

use super::desired::{IpFamily, SnatSpec};

pub use weft_plan::names::{NFT_CHAIN as CHAIN, NFT_TABLE as TABLE};
/// `NFNLGRP_NFTABLES`: the multicast group of nf_tables changes.
pub const NFNLGRP_NFTABLES: u32 = 7;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `NFT_MSG_*` message types used here.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

// Attribute numbers (enum nft_*_attributes).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_META_OIFNAME: u32 = 7;
const NFT_RETURN: i32 = -5;
const NF_ACCEPT: u32 = 1;
const NF_INET_POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_SRC` (nft's `srcnat`).
pub const PRIORITY_SRCNAT: i32 = 100;
const IFNAMSIZ: usize = 16;

/// Errors of the nf_tables client.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The socket failed.
    #[error("nf_tables socket: cannot {action}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("nf_tables refused to {action} table {family} {TABLE}: {source}")]
    Kernel {
        /// What was attempted.
        action: &'static str,
        /// The table's family (`ip`, `ip6`).
        family: &'static str,
        /// The kernel's errno.
        source: io::Error,
    },
    /// The kernel's answer did not parse.
    #[error("malformed nf_tables message: {0}")]
    Malformed(String),
}

/// nft's name of a family (`ip`, `ip6`).
pub fn family_name(family: IpFamily) -> &'static str {
    family.nft_family()
}

fn nfproto(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    }
}

// ---------------------------------------------------------------- encoding

/// A netlink message under construction (attributes appended, nests closed by offset).
struct MsgBuf {
    bytes: Vec<u8>,
}

impl MsgBuf {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        bytes.push(family);
        bytes.push(0); // NFNETLINK_V0
        bytes.extend_from_slice(&res_id.to_be_bytes());
        MsgBuf { bytes }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.pad();
    }

    fn str(&mut self, kind: u16, value: &str) {
        let mut z = value.as_bytes().to_vec();
        z.push(0);
        self.attr(kind, &z);
    }

    fn be32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    /// Opens a nested attribute; returns its offset for [`MsgBuf::end`].
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.bytes.len() - at) as u16;
        self.bytes[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&self.bytes);
    }
}

/// One nf_tables expression of a Weft rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes of the network header at `offset` into register 1.
    Payload {
        /// Offset in the network header.
        offset: u32,
        /// Bytes.
        len: u32,
    },
    /// Register 1 &= `mask` (xor 0).
    Mask(Vec<u8>),
    /// Register 1 == `value`, or the rule stops.
    Eq(Vec<u8>),
    /// Load the output interface name (`IFNAMSIZ` bytes) into register 1.
    OifName,
    /// Verdict `return`: no NAT for this packet.
    Return,
    /// `masquerade`: SNAT to the output interface's address.
    Masquerade,
}

impl Expr {
    fn encode(&self, m: &mut MsgBuf) {
        let elem = m.begin(NFTA_LIST_ELEM);
        let name = match self {
            Expr::Payload { .. } => "payload",
            Expr::Mask(_) => "bitwise",
            Expr::Eq(_) => "cmp",
            Expr::OifName => "meta",
            Expr::Return => "immediate",
            Expr::Masquerade => "masq",
        };
        m.str(NFTA_EXPR_NAME, name);
        if *self != Expr::Masquerade {
            let data = m.begin(NFTA_EXPR_DATA);
            match self {
                Expr::Payload { offset, len } => {
                    m.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
                    m.be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
                    m.be32(NFTA_PAYLOAD_OFFSET, *offset);
                    m.be32(NFTA_PAYLOAD_LEN, *len);
                }
                Expr::Mask(mask) => {
                    m.be32(NFTA_BITWISE_SREG, NFT_REG_1);
                    m.be32(NFTA_BITWISE_DREG, NFT_REG_1);
                    m.be32(NFTA_BITWISE_LEN, mask.len() as u32);
                    let at = m.begin(NFTA_BITWISE_MASK);
                    m.attr(NFTA_DATA_VALUE, mask);
                    m.end(at);
                    let at = m.begin(NFTA_BITWISE_XOR);
                    m.attr(NFTA_DATA_VALUE, &vec![0; mask.len()]);
                    m.end(at);
                }
                Expr::Eq(value) => {
                    m.be32(NFTA_CMP_SREG, NFT_REG_1);
                    m.be32(NFTA_CMP_OP, NFT_CMP_EQ);
                    let at = m.begin(NFTA_CMP_DATA);
                    m.attr(NFTA_DATA_VALUE, value);
                    m.end(at);
                }
                Expr::OifName => {
                    m.be32(NFTA_META_KEY, NFT_META_OIFNAME);
                    m.be32(NFTA_META_DREG, NFT_REG_1);
                }
                Expr::Return => {
                    m.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                    let at = m.begin(NFTA_IMMEDIATE_DATA);
                    let verdict = m.begin(NFTA_DATA_VERDICT);
                    m.be32(NFTA_VERDICT_CODE, NFT_RETURN as u32);
                    m.end(verdict);
                    m.end(at);
                }
                Expr::Masquerade => {}
            }
            m.end(data);
        }
        m.end(elem);
    }
}

/// Which address of the network header a prefix match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Saddr,
    Daddr,
}

/// `ip saddr|daddr PREFIX`: payload load, mask unless the prefix is a full address, compare.
/// A /0 prefix matches everything: no expressions.
fn prefix_match(field: Field, net: &IpNet) -> Vec<Expr> {
    let (offset, len) = match (net, field) {
        (IpNet::V4(_), Field::Saddr) => (12, 4),
        (IpNet::V4(_), Field::Daddr) => (16, 4),
        (IpNet::V6(_), Field::Saddr) => (8, 16),
        (IpNet::V6(_), Field::Daddr) => (24, 16),
    };
    if net.prefix_len() == 0 {
        return Vec::new();
    }
    let (network, mask) = match net.trunc() {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let mut exprs = vec![Expr::Payload { offset, len }];
    if net.prefix_len() < net.max_prefix_len() {
        exprs.push(Expr::Mask(mask));
    }
    exprs.push(Expr::Eq(network));
    exprs
}

/// The rules of `spec`'s chain, in order, each as its expressions:
/// `oifname GATEWAY return`, `ip daddr CLUSTER_CIDR return` per cluster CIDR, then
/// `ip saddr POD_CIDR masquerade` per local pod CIDR.
pub fn rules(spec: &SnatSpec) -> Vec<Vec<Expr>> {
    let mut rules = Vec::new();
    if !spec.gateway.is_empty() && spec.gateway.len() < IFNAMSIZ {
        let mut name = spec.gateway.as_bytes().to_vec();
        name.resize(IFNAMSIZ, 0);
        rules.push(vec![Expr::OifName, Expr::Eq(name), Expr::Return]);
    }
    for cidr in &spec.cluster {
        let mut r = prefix_match(Field::Daddr, cidr);
        r.push(Expr::Return);
        rules.push(r);
    }
    for cidr in &spec.sources {
        let mut r = prefix_match(Field::Saddr, cidr);
        r.push(Expr::Masquerade);
        rules.push(r);
    }
    rules
}

/// A stable fingerprint of `spec`'s table (FNV-1a over the encoded rules and chain), stored in
/// the table's and each rule's user data.
pub fn fingerprint(spec: &SnatSpec) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&[nfproto(spec.family)]);
    feed(CHAIN.as_bytes());
    feed(&PRIORITY_SRCNAT.to_be_bytes());
    for rule in rules(spec) {
        let mut m = MsgBuf::new(0, 0, 0, 0, 0);
        for expr in &rule {
            expr.encode(&mut m);
        }
        feed(&m.bytes[20..]);
        feed(b"|");
    }
    format!("{hash:016x}")
}

/// User data as nft writes a comment (libnftnl's TLV: type 0 = comment, length, text with its
/// NUL), so `nft list` shows the fingerprint as `comment "weft:..."`.
fn comment(text: &str) -> Vec<u8> {
    let mut out = vec![0, (text.len() + 1) as u8];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

fn table_userdata(fp: &str) -> Vec<u8> {
    comment(&format!("weft:{fp}"))
}

fn rule_userdata(fp: &str, index: usize) -> Vec<u8> {
    comment(&format!("weft:{fp}:{index}"))
}

fn msg_type(kind: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind
}

fn batch_marker(kind: u16, seq: u32, out: &mut Vec<u8>) {
    MsgBuf::new(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES).finish(out);
}

/// A batch ready to send: the bytes and the sequence numbers that expect an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The encoded messages (batch begin .. batch end).
    pub bytes: Vec<u8>,
    /// Sequence numbers of the acked messages.
    pub acked: Vec<u32>,
}

struct BatchBuilder {
    bytes: Vec<u8>,
    acked: Vec<u32>,
    seq: u32,
    family: u8,
}

impl BatchBuilder {
    fn new(seq: u32, family: IpFamily) -> Self {
        let mut bytes = Vec::new();
        batch_marker(NFNL_MSG_BATCH_BEGIN, seq, &mut bytes);
        BatchBuilder {
            bytes,
            acked: Vec::new(),
            seq,
            family: nfproto(family),
        }
    }

    fn msg(&mut self, kind: u16, flags: u16) -> MsgBuf {
        self.seq = self.seq.wrapping_add(1);
        self.acked.push(self.seq);
        MsgBuf::new(
            msg_type(kind),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            self.family,
            0,
        )
    }

    fn push(&mut self, m: MsgBuf) {
        m.finish(&mut self.bytes);
    }

    /// `add table` (no-op if present) then `delete table`: the table is gone whether or not it
    /// existed, without an error.
    fn drop_table(&mut self) {
        let mut m = self.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE);
        m.str(NFTA_TABLE_NAME, TABLE);
        self.push(m);
        let mut m = self.msg(NFT_MSG_DELTABLE, 0);
        m.str(NFTA_TABLE_NAME, TABLE);
        self.push(m);
    }

    fn finish(mut self) -> Batch {
        batch_marker(
            NFNL_MSG_BATCH_END,
            self.seq.wrapping_add(1),
            &mut self.bytes,
        );
        Batch {
            bytes: self.bytes,
            acked: self.acked,
        }
    }
}

/// The batch that replaces `spec`'s table atomically (whatever was there before is deleted).
pub fn apply_batch(spec: &SnatSpec, seq: u32) -> Batch {
    let fp = fingerprint(spec);
    let mut b = BatchBuilder::new(seq, spec.family);
    b.drop_table();
    let mut m = b.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    m.str(NFTA_TABLE_NAME, TABLE);
    m.attr(NFTA_TABLE_USERDATA, &table_userdata(&fp));
    b.push(m);
    let mut m = b.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
    m.str(NFTA_CHAIN_TABLE, TABLE);
    m.str(NFTA_CHAIN_NAME, CHAIN);
    let hook = m.begin(NFTA_CHAIN_HOOK);
    m.be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING);
    m.be32(NFTA_HOOK_PRIORITY, PRIORITY_SRCNAT as u32);
    m.end(hook);
    m.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
    m.str(NFTA_CHAIN_TYPE, "nat");
    b.push(m);
    for (index, rule) in rules(spec).iter().enumerate() {
        let mut m = b.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        m.str(NFTA_RULE_TABLE, TABLE);
        m.str(NFTA_RULE_CHAIN, CHAIN);
        let list = m.begin(NFTA_RULE_EXPRESSIONS);
        for expr in rule {
            expr.encode(&mut m);
        }
        m.end(list);
        m.attr(NFTA_RULE_USERDATA, &rule_userdata(&fp, index));
        b.push(m);
    }
    b.finish()
}

/// The batch that removes Weft's table of `family` if it exists.
pub fn delete_batch(family: IpFamily, seq: u32) -> Batch {
    let mut b = BatchBuilder::new(seq, family);
    b.drop_table();
    b.finish()
}

fn dump_request(kind: u16, family: IpFamily, seq: u32, table_filter: bool) -> Vec<u8> {
    let mut m = MsgBuf::new(
        msg_type(kind),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        nfproto(family),
        0,
    );
    if table_filter {
        m.str(NFTA_RULE_TABLE, TABLE);
    }
    let mut out = Vec::new();
    m.finish(&mut out);
    out
}

// ---------------------------------------------------------------- decoding

/// One netlink message read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: Vec<u8>,
}

/// Splits a datagram into netlink messages.
pub fn parse_messages(mut buf: &[u8]) -> Result<Vec<RawMessage>, NftError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(NftError::Malformed(format!(
                "message length {len} with {} bytes left",
                buf.len()
            )));
        }
        out.push(RawMessage {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: buf[16..len].to_vec(),
        });
        let next = len.next_multiple_of(4).min(buf.len());
        buf = &buf[next..];
    }
    Ok(out)
}

/// Netlink attributes as (type without flags, payload).
pub type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// Splits attribute bytes into (type without flags, payload).
pub fn parse_attrs(mut buf: &[u8]) -> Result<Attrs<'_>, NftError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(NftError::Malformed(format!(
                "attribute {kind} length {len} with {} bytes left",
                buf.len()
            )));
        }
        out.push((kind, &buf[4..len]));
        let next = len.next_multiple_of(4).min(buf.len());
        buf = &buf[next..];
    }
    Ok(out)
}

fn attr<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn attr_str(attrs: &[(u16, &[u8])], kind: u16) -> Option<String> {
    attr(attrs, kind).map(|v| {
        let v = v.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(v).into_owned()
    })
}

fn attr_be32(attrs: &[(u16, &[u8])], kind: u16) -> Option<u32> {
    attr(attrs, kind)
        .and_then(|v| v.get(..4))
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// The nf_tables attributes of a message (after its `nfgenmsg`), and its family.
fn nf_attrs(message: &RawMessage) -> Result<(u8, Attrs<'_>), NftError> {
    let Some(family) = message.payload.first() else {
        return Err(NftError::Malformed("message without nfgenmsg".into()));
    };
    Ok((
        *family,
        parse_attrs(message.payload.get(4..).unwrap_or(&[]))?,
    ))
}

/// A chain of Weft's table as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChain {
    /// Name.
    pub name: String,
    /// Chain type (`nat`).
    pub kind: Option<String>,
    /// Hook number and priority.
    pub hook: Option<(u32, i32)>,
    /// Policy verdict.
    pub policy: Option<u32>,
}

/// Weft's table of one family as dumped from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    /// The table's user data.
    pub userdata: Vec<u8>,
    /// Its chains.
    pub chains: Vec<ObservedChain>,
    /// The user data of its rules, in order (empty for a rule without).
    pub rules: Vec<Vec<u8>>,
}

impl ObservedTable {
    /// Whether the table is exactly what [`apply_batch`] makes for `spec`: the fingerprint in
    /// the table, one chain with the right hook, type and policy, and every rule in order.
    pub fn matches(&self, spec: &SnatSpec) -> bool {
        let fp = fingerprint(spec);
        let want_rules: Vec<Vec<u8>> = (0..rules(spec).len())
            .map(|i| rule_userdata(&fp, i))
            .collect();
        self.userdata == table_userdata(&fp)
            && self.chains
                == [ObservedChain {
                    name: CHAIN.into(),
                    kind: Some("nat".into()),
                    hook: Some((NF_INET_POST_ROUTING, PRIORITY_SRCNAT)),
                    policy: Some(NF_ACCEPT),
                }]
            && self.rules == want_rules
    }
}

/// Errors from an `NLMSG_ERROR` payload: `Ok(())` for an ack.
fn nlmsg_error(message: &RawMessage) -> Result<(), io::Error> {
    let code = message
        .payload
        .get(..4)
        .map(|v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        .unwrap_or(-libc_eproto());
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

fn libc_eproto() -> i32 {
    nix::errno::Errno::EPROTO as i32
}

// ---------------------------------------------------------------- requests

/// A blocking nf_tables request socket of the calling thread's network namespace: create and
/// use it inside [`crate::netns::Netns::run`]. The kernel answers nf_tables requests while
/// processing the send (and each dump part on the read before), so reads never wait: a missing
/// answer is an error, not a hang.
pub struct NftSocket {
    socket: Socket,
    seq: u32,
}

impl NftSocket {
    /// Opens and binds the socket.
    pub fn open() -> Result<Self, NftError> {
        let io = |action| move |source| NftError::Io { action, source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io("open"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket.set_non_blocking(true).map_err(io("configure"))?;
        Ok(NftSocket { socket, seq: 1 })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        self.socket
            .send(bytes, 0)
            .map_err(|source| NftError::Io {
                action: "send",
                source,
            })
            .map(drop)
    }

    fn recv(&self) -> Result<Vec<RawMessage>, NftError> {
        let (buf, _) = self
            .socket
            .recv_from_full()
            .map_err(|source| NftError::Io {
                action: "receive",
                source,
            })?;
        parse_messages(&buf)
    }

    /// Sends `batch` and waits for every ack; the first error fails it (the kernel then has
    /// applied nothing).
    fn run_batch(
        &mut self,
        batch: &Batch,
        action: &'static str,
        family: IpFamily,
    ) -> Result<(), NftError> {
        self.send(&batch.bytes)?;
        let mut pending: Vec<u32> = batch.acked.clone();
        while !pending.is_empty() {
            for message in self.recv()? {
                if message.kind != NLMSG_ERROR {
                    continue;
                }
                nlmsg_error(&message).map_err(|source| NftError::Kernel {
                    action,
                    family: family_name(family),
                    source,
                })?;
                pending.retain(|s| *s != message.seq);
            }
        }
        Ok(())
    }

    /// Replaces Weft's table of `spec.family` with `spec`'s, atomically.
    pub fn apply(&mut self, spec: &SnatSpec) -> Result<(), NftError> {
        let n = 4 + rules(spec).len() as u32 + 2;
        let batch = apply_batch(spec, self.next_seq(n + 1));
        self.run_batch(&batch, "replace", spec.family)
    }

    /// Removes Weft's table of `family` if present.
    pub fn delete(&mut self, family: IpFamily) -> Result<(), NftError> {
        let batch = delete_batch(family, self.next_seq(4));
        self.run_batch(&batch, "delete", family)
    }

    fn dump(
        &mut self,
        kind: u16,
        family: IpFamily,
        table_filter: bool,
    ) -> Result<Vec<RawMessage>, NftError> {
        let seq = self.next_seq(1);
        self.send(&dump_request(kind, family, seq, table_filter))?;
        let mut out = Vec::new();
        loop {
            for message in self.recv()? {
                match message.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        nlmsg_error(&message).map_err(|source| NftError::Kernel {
                            action: "list",
                            family: family_name(family),
                            source,
                        })?;
                    }
                    _ if message.seq == seq => out.push(message),
                    _ => {}
                }
            }
        }
    }

    /// Weft's table of `family` as the kernel has it; `None` if there is none.
    pub fn observe(&mut self, family: IpFamily) -> Result<Option<ObservedTable>, NftError> {
        let mut table = None;
        for message in self.dump(NFT_MSG_GETTABLE, family, false)? {
            let (_, attrs) = nf_attrs(&message)?;
            if attr_str(&attrs, NFTA_TABLE_NAME).as_deref() == Some(TABLE) {
                table = Some(ObservedTable {
                    userdata: attr(&attrs, NFTA_TABLE_USERDATA)
                        .unwrap_or_default()
                        .to_vec(),
                    ..ObservedTable::default()
                });
            }
        }
        let Some(mut table) = table else {
            return Ok(None);
        };
        for message in self.dump(NFT_MSG_GETCHAIN, family, false)? {
            let (_, attrs) = nf_attrs(&message)?;
            if attr_str(&attrs, NFTA_CHAIN_TABLE).as_deref() != Some(TABLE) {
                continue;
            }
            let hook = match attr(&attrs, NFTA_CHAIN_HOOK) {
                Some(nested) => {
                    let hook = parse_attrs(nested)?;
                    attr_be32(&hook, NFTA_HOOK_HOOKNUM)
                        .zip(attr_be32(&hook, NFTA_HOOK_PRIORITY).map(|p| p as i32))
                }
                None => None,
            };
            table.chains.push(ObservedChain {
                name: attr_str(&attrs, NFTA_CHAIN_NAME).unwrap_or_default(),
                kind: attr_str(&attrs, NFTA_CHAIN_TYPE),
                hook,
                policy: attr_be32(&attrs, NFTA_CHAIN_POLICY),
            });
        }
        for message in self.dump(NFT_MSG_GETRULE, family, true)? {
            let (_, attrs) = nf_attrs(&message)?;
            if attr_str(&attrs, NFTA_RULE_TABLE).as_deref() != Some(TABLE) {
                continue;
            }
            table.rules.push(
                attr(&attrs, NFTA_RULE_USERDATA)
                    .unwrap_or_default()
                    .to_vec(),
            );
        }
        Ok(Some(table))
    }
}

// ---------------------------------------------------------------- events

/// What an nf_tables event means for Weft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftEvent {
    /// Something in Weft's table (ip or ip6) was added, changed or deleted.
    Ours,
    /// Another table, another family, or a generation marker.
    Foreign,
    /// The event socket overran: state unknown.
    Overrun,
}

impl fmt::Display for NftEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NftEvent::Ours => "weft table changed",
            NftEvent::Foreign => "foreign change",
            NftEvent::Overrun => "overrun",
        })
    }
}

/// Classifies one message of the `NFNLGRP_NFTABLES` group. The table of a table, chain, rule,
/// set or object message is its attribute 1 (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`,
/// `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`, ...).
pub fn classify_event(message: &RawMessage) -> NftEvent {
    if message.kind == NLMSG_OVERRUN {
        return NftEvent::Overrun;
    }
    if message.kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return NftEvent::Foreign;
    }
    let kind = message.kind & 0xff;
    let table_message = matches!(
        kind,
        NFT_MSG_NEWTABLE
            | NFT_MSG_DELTABLE
            | NFT_MSG_NEWCHAIN
            | NFT_MSG_DELCHAIN
            | NFT_MSG_NEWRULE
            | NFT_MSG_DELRULE
            | 9
            ..=14 // sets and set elements
            | 18 | 20 // objects
            | 22 | 24 // flowtables
    );
    if !table_message {
        return NftEvent::Foreign;
    }
    match nf_attrs(message) {
        Ok((family, attrs))
            if (family == NFPROTO_IPV4 || family == NFPROTO_IPV6)
                && attr_str(&attrs, 1).as_deref() == Some(TABLE) =>
        {
            NftEvent::Ours
        }
        Ok(_) => NftEvent::Foreign,
        // Unparsable: look at the table to be safe.
        Err(_) => NftEvent::Ours,
    }
}

/// A netlink socket bound to multicast groups of one namespace, read on the tokio runtime
/// (also used for the rtnetlink netconf groups, [`super::netconf`]).
pub struct EventSocket {
    socket: TokioSocket,
}

impl EventSocket {
    /// Opens a `protocol` socket subscribed to `groups` in the calling thread's namespace (call
    /// inside [`crate::netns::Netns::run`] with the runtime entered: the socket registers with
    /// its reactor).
    pub fn open(protocol: isize, groups: &[u32], receive_buffer: usize) -> io::Result<Self> {
        let mut socket = TokioSocket::new(protocol)?;
        socket.socket_mut().bind_auto()?;
        for group in groups {
            socket.socket_mut().add_membership(*group)?;
        }
        socket.socket_mut().set_rx_buf_sz(receive_buffer)?;
        Ok(EventSocket { socket })
    }

    /// The messages of the next datagram; `None` when events were lost (ENOBUFS) or the
    /// datagram did not parse: the caller must relist.
    pub async fn next(&mut self) -> io::Result<Option<Vec<RawMessage>>> {
        match self.socket.recv_from_full().await {
            Ok((buf, _)) => Ok(parse_messages(&buf).ok()),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A socket on the `NFNLGRP_NFTABLES` group of one namespace.
pub struct NftEvents {
    socket: EventSocket,
}

impl NftEvents {
    /// Subscribes in the calling thread's namespace (see [`EventSocket::open`]).
    pub fn open(receive_buffer: usize) -> io::Result<Self> {
        EventSocket::open(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES], receive_buffer)
            .map(|socket| NftEvents { socket })
    }

    /// The next datagram's meaning: [`NftEvent::Ours`] if any message in it touches Weft's
    /// table, [`NftEvent::Overrun`] after ENOBUFS or an unparsable datagram.
    pub async fn next(&mut self) -> io::Result<NftEvent> {
        let Some(messages) = self.socket.next().await? else {
            return Ok(NftEvent::Overrun);
        };
        let events: Vec<NftEvent> = messages.iter().map(classify_event).collect();
        Ok(if events.contains(&NftEvent::Overrun) {
            NftEvent::Overrun
        } else if events.contains(&NftEvent::Ours) {
            NftEvent::Ours
        } else {
            NftEvent::Foreign
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SnatSpec {
        SnatSpec {
            family: IpFamily::V4,
            sources: vec!["10.244.1.0/24".parse().unwrap()],
            cluster: vec![
                "10.244.1.0/24".parse().unwrap(),
                "10.244.2.0/24".parse().unwrap(),
            ],
            gateway: "weft-gw0".into(),
        }
    }

    /// `ip daddr 10.244.2.0/24 return`, derived by hand from nf_tables.h: each element is
    /// NFTA_LIST_ELEM (1|NESTED) { NFTA_EXPR_NAME (1) "name\0" padded, NFTA_EXPR_DATA (2|NESTED)
    /// { big-endian u32 attributes } }.
    #[test]
    fn a_destination_prefix_return_encodes_byte_exact() {
        let mut m = MsgBuf::new(0, 0, 0, 0, 0);
        for e in &rules(&spec())[2] {
            e.encode(&mut m);
        }
        let got = &m.bytes[20..];
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // payload: load 4 bytes at network header offset 16 into reg 1
            &[52, 0, 0x01, 0x80][..],
            &[12, 0, 1, 0], b"payload\0",
            &[36, 0, 0x02, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 1], &[8, 0, 2, 0, 0, 0, 0, 1],
            &[8, 0, 3, 0, 0, 0, 0, 16], &[8, 0, 4, 0, 0, 0, 0, 4],
            // bitwise: reg 1 = reg 1 & 255.255.255.0 ^ 0.0.0.0, len 4
            &[68, 0, 0x01, 0x80],
            &[12, 0, 1, 0], b"bitwise\0",
            &[52, 0, 0x02, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 1], &[8, 0, 2, 0, 0, 0, 0, 1], &[8, 0, 3, 0, 0, 0, 0, 4],
            &[12, 0, 0x04, 0x80], &[8, 0, 1, 0, 255, 255, 255, 0],
            &[12, 0, 0x05, 0x80], &[8, 0, 1, 0, 0, 0, 0, 0],
            // cmp: reg 1 == 10.244.2.0
            &[44, 0, 0x01, 0x80],
            &[8, 0, 1, 0], b"cmp\0",
            &[32, 0, 0x02, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 1], &[8, 0, 2, 0, 0, 0, 0, 0],
            &[12, 0, 0x03, 0x80], &[8, 0, 1, 0, 10, 244, 2, 0],
            // immediate: verdict register = return (-5)
            &[48, 0, 0x01, 0x80],
            &[14, 0, 1, 0], b"immediate\0", &[0, 0],
            &[28, 0, 0x02, 0x80],
            &[8, 0, 1, 0, 0, 0, 0, 0],
            &[16, 0, 0x02, 0x80], &[12, 0, 0x02, 0x80], &[8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfb],
        ]
        .concat();
        assert_eq!(got, &want[..]);
    }

    #[test]
    fn a_table_message_and_the_batch_frame_encode_byte_exact() {
        let batch = delete_batch(IpFamily::V6, 7);
        let seq = |s: u32| s.to_ne_bytes();
        let ty = |t: u16| t.to_ne_bytes();
        let fl = |f: u16| f.to_ne_bytes();
        let len = |l: u32| l.to_ne_bytes();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // batch begin: AF_UNSPEC, version 0, res_id NFNL_SUBSYS_NFTABLES big-endian
            &len(20)[..], &ty(0x10), &fl(1), &seq(7), &[0, 0, 0, 0], &[0, 0, 0, 10],
            // add table ip6 weft (NEWTABLE = 10 << 8 | 0), REQUEST|ACK|CREATE
            &len(32), &ty(0x0a00), &fl(0x405), &seq(8), &[0, 0, 0, 0], &[10, 0, 0, 0],
            &[9, 0, 1, 0], b"weft\0", &[0, 0, 0],
            // delete table ip6 weft (DELTABLE = 10 << 8 | 2), REQUEST|ACK
            &len(32), &ty(0x0a02), &fl(0x5), &seq(9), &[0, 0, 0, 0], &[10, 0, 0, 0],
            &[9, 0, 1, 0], b"weft\0", &[0, 0, 0],
            // batch end
            &len(20), &ty(0x11), &fl(1), &seq(10), &[0, 0, 0, 0], &[0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(batch.bytes, want);
        assert_eq!(batch.acked, vec![8, 9]);
    }

    #[test]
    fn the_apply_batch_decodes_to_the_table_chain_and_rules() {
        let s = spec();
        let batch = apply_batch(&s, 100);
        let messages = parse_messages(&batch.bytes).unwrap();
        let kinds: Vec<u16> = messages.iter().map(|m| m.kind).collect();
        // begin, add, delete, add (with fingerprint), chain, 4 rules, end
        assert_eq!(
            kinds,
            [0x10, 0x0a00, 0x0a02, 0x0a00, 0x0a03, 0x0a06, 0x0a06, 0x0a06, 0x0a06, 0x11]
        );
        assert_eq!(batch.acked, (101..=108).collect::<Vec<_>>());
        let (family, table) = nf_attrs(&messages[3]).unwrap();
        assert_eq!(family, NFPROTO_IPV4);
        let fp = fingerprint(&s);
        assert_eq!(
            attr(&table, NFTA_TABLE_USERDATA),
            Some(&table_userdata(&fp)[..])
        );
        let (_, chain) = nf_attrs(&messages[4]).unwrap();
        assert_eq!(attr_str(&chain, NFTA_CHAIN_TYPE).as_deref(), Some("nat"));
        let hook = parse_attrs(attr(&chain, NFTA_CHAIN_HOOK).unwrap()).unwrap();
        assert_eq!(attr_be32(&hook, NFTA_HOOK_HOOKNUM), Some(4));
        assert_eq!(attr_be32(&hook, NFTA_HOOK_PRIORITY), Some(100));
        // Rule expression names, in order.
        let names: Vec<Vec<String>> = messages[5..9]
            .iter()
            .map(|m| {
                let (_, rule) = nf_attrs(m).unwrap();
                parse_attrs(attr(&rule, NFTA_RULE_EXPRESSIONS).unwrap())
                    .unwrap()
                    .iter()
                    .map(|(_, e)| attr_str(&parse_attrs(e).unwrap(), NFTA_EXPR_NAME).unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                vec!["meta", "cmp", "immediate"],
                vec!["payload", "bitwise", "cmp", "immediate"],
                vec!["payload", "bitwise", "cmp", "immediate"],
                vec!["payload", "bitwise", "cmp", "masq"],
            ]
        );
    }

    #[test]
    fn prefixes_mask_only_when_needed_and_ipv6_reads_the_right_offsets() {
        let host: IpNet = "10.1.2.3/32".parse().unwrap();
        assert_eq!(
            prefix_match(Field::Saddr, &host),
            vec![
                Expr::Payload { offset: 12, len: 4 },
                Expr::Eq(vec![10, 1, 2, 3])
            ]
        );
        assert!(prefix_match(Field::Daddr, &"0.0.0.0/0".parse().unwrap()).is_empty());
        let v6 = prefix_match(Field::Daddr, &"fd00:10:244:2::1/64".parse().unwrap());
        assert_eq!(
            v6[0],
            Expr::Payload {
                offset: 24,
                len: 16
            }
        );
        let mut mask = vec![0xff; 8];
        mask.extend([0; 8]);
        assert_eq!(v6[1], Expr::Mask(mask));
        let Expr::Eq(net) = &v6[2] else {
            panic!("no cmp")
        };
        assert_eq!(net[..8], [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 2]);
        assert_eq!(net[8..], [0; 8]);
    }

    #[test]
    fn fingerprints_follow_the_rules_and_matches_checks_everything() {
        let s = spec();
        let mut other = s.clone();
        other.cluster.push("10.244.3.0/24".parse().unwrap());
        assert_ne!(fingerprint(&s), fingerprint(&other));
        assert_eq!(fingerprint(&s), fingerprint(&s.clone()));
        let fp = fingerprint(&s);
        let good = ObservedTable {
            userdata: table_userdata(&fp),
            chains: vec![ObservedChain {
                name: CHAIN.into(),
                kind: Some("nat".into()),
                hook: Some((4, 100)),
                policy: Some(1),
            }],
            rules: (0..4).map(|i| rule_userdata(&fp, i)).collect(),
        };
        assert!(good.matches(&s));
        assert!(!good.matches(&other));
        let mut missing_rule = good.clone();
        missing_rule.rules.remove(1);
        assert!(!missing_rule.matches(&s));
        let mut drop_policy = good.clone();
        drop_policy.chains[0].policy = Some(0);
        assert!(!drop_policy.matches(&s));
        let mut extra_chain = good.clone();
        extra_chain.chains.push(good.chains[0].clone());
        assert!(!extra_chain.matches(&s));
    }

    #[test]
    fn events_of_our_table_are_ours_others_are_foreign() {
        let mut batch = apply_batch(&spec(), 1).bytes;
        // A foreign table and a generation marker.
        let mut m = MsgBuf::new(msg_type(NFT_MSG_DELTABLE), 0, 0, NFPROTO_IPV4, 0);
        m.str(NFTA_TABLE_NAME, "filter");
        m.finish(&mut batch);
        MsgBuf::new(msg_type(15), 0, 0, 0, 0).finish(&mut batch);
        let mut m = MsgBuf::new(msg_type(NFT_MSG_NEWTABLE), 0, 0, 1, 0);
        m.str(NFTA_TABLE_NAME, TABLE); // inet weft: not ours
        m.finish(&mut batch);
        let seen: Vec<NftEvent> = parse_messages(&batch)
            .unwrap()
            .iter()
            .map(classify_event)
            .collect();
        use NftEvent::*;
        assert_eq!(
            seen,
            [
                Foreign, Ours, Ours, Ours, Ours, Ours, Ours, Ours, Ours, Foreign, Foreign, Foreign,
                Foreign
            ]
        );
        let overrun = RawMessage {
            kind: NLMSG_OVERRUN,
            flags: 0,
            seq: 0,
            payload: vec![],
        };
        assert_eq!(classify_event(&overrun), Overrun);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse_messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_attrs(&[3, 0, 1, 0]).is_err());
        assert!(parse_attrs(&[50, 0, 1, 0, 1]).is_err());
        let empty = RawMessage {
            kind: msg_type(NFT_MSG_NEWRULE),
            flags: 0,
            seq: 0,
            payload: vec![],
        };
        assert_eq!(classify_event(&empty), NftEvent::Ours);
    }
}
