//! Connection tracking state bits, for [`super::Match::ct_state`].

/// Beginning of a new connection.
pub const NEW: u32 = 0x01;
/// Part of an existing connection.
pub const EST: u32 = 0x02;
/// Related to an existing connection.
pub const REL: u32 = 0x04;
/// Flow is in the reply direction.
pub const RPL: u32 = 0x08;
/// Could not track the connection.
pub const INV: u32 = 0x10;
/// Conntrack has occurred.
pub const TRK: u32 = 0x20;
/// Packet's source address/port was mangled by NAT.
pub const SNAT: u32 = 0x40;
/// Packet's destination address/port was mangled by NAT.
pub const DNAT: u32 = 0x80;
