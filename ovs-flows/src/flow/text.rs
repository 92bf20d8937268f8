//! Value formatting exactly as OVS prints it (C `%#x`, CIDR masks, port names, ...).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::ct_state;
use super::field::{port, Field, MacAddr, MacBits, ValueFormat};

/// C's `%#x`: `0` for zero, otherwise `0x` and lower-case hex without leading zeros.
pub(crate) fn c_hex(v: u128) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

/// OVS `ip_format_masked`: `a.b.c.d`, `/N` for a CIDR mask, `/a.b.c.d` otherwise.
pub(crate) fn ipv4_masked(value: u128, mask: u128) -> String {
    let v = Ipv4Addr::from(value as u32);
    let m = mask as u32;
    if m == u32::MAX {
        v.to_string()
    } else if m.leading_ones() + m.trailing_zeros() == 32 {
        format!("{v}/{}", m.leading_ones())
    } else {
        format!("{v}/{}", Ipv4Addr::from(m))
    }
}

/// OVS `ipv6_format_masked`.
pub(crate) fn ipv6_masked(value: u128, mask: u128) -> String {
    let v = Ipv6Addr::from(value);
    if mask == u128::MAX {
        v.to_string()
    } else if mask.leading_ones() + mask.trailing_zeros() == 128 {
        format!("{v}/{}", mask.leading_ones())
    } else {
        format!("{v}/{}", Ipv6Addr::from(mask))
    }
}

/// OVS `eth_format_masked`.
pub(crate) fn mac_masked(value: u128, mask: u128) -> String {
    let v = MacAddr::from_u128(value);
    if mask == super::field::ones(48) {
        v.to_string()
    } else {
        format!("{v}/{}", MacAddr::from_u128(mask))
    }
}

/// OVS `ofputil_format_port` for a 32-bit port number.
pub(crate) fn port_name(p: u32) -> String {
    match port::name(p) {
        Some(n) => n.to_string(),
        None => p.to_string(),
    }
}

/// The names of ct_state bits, lowest bit first.
const CT_STATE_NAMES: [(u32, &str); 8] = [
    (ct_state::NEW, "new"),
    (ct_state::EST, "est"),
    (ct_state::REL, "rel"),
    (ct_state::RPL, "rpl"),
    (ct_state::INV, "inv"),
    (ct_state::TRK, "trk"),
    (ct_state::SNAT, "snat"),
    (ct_state::DNAT, "dnat"),
];

/// OVS's ct_state match text: `trk|est` under a full mask, `+trk-new` otherwise.
pub(crate) fn ct_state_masked(value: u32, mask: u32) -> String {
    let mut s = String::new();
    if mask == 0xff {
        let names: Vec<&str> = CT_STATE_NAMES
            .iter()
            .filter(|(bit, _)| value & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            s.push('0');
        } else {
            s.push_str(&names.join("|"));
        }
    } else if mask == 0 {
        s.push_str("0/0");
    } else {
        for bit in (0..32).map(|i| 1u32 << i).filter(|b| mask & b != 0) {
            s.push(if value & bit != 0 { '+' } else { '-' });
            match CT_STATE_NAMES.iter().find(|(b, _)| *b == bit) {
                Some((_, n)) => s.push_str(n),
                None => s.push_str("[Unknown]"),
            }
        }
    }
    s
}

/// OVS `mf_format`: a field value (and mask, unless full) as printed by `set_field` and `learn`.
pub(crate) fn field_value(field: Field, value: u128, mask: Option<u128>) -> String {
    let mask = mask.filter(|m| *m != field.all_ones());
    let mut s = String::new();
    match (field.value_format(), mask) {
        (ValueFormat::Port16, None) => s.push_str(&port_name(port::from_u16(value as u16))),
        (ValueFormat::Port32, None) => s.push_str(&port_name(value as u32)),
        (ValueFormat::Mac, m) => s.push_str(&mac_masked(value, m.unwrap_or(field.all_ones()))),
        (ValueFormat::Ipv4, m) => s.push_str(&ipv4_masked(value, m.unwrap_or(field.all_ones()))),
        (ValueFormat::Ipv6, m) => s.push_str(&ipv6_masked(value, m.unwrap_or(u128::MAX))),
        (ValueFormat::CtState, m) => {
            s.push_str(&ct_state_masked(value as u32, m.unwrap_or(0xff) as u32))
        }
        (ValueFormat::Hex, m) => {
            s.push_str(&c_hex(value));
            if let Some(m) = m {
                let _ = write!(s, "/{}", c_hex(m));
            }
        }
        (ValueFormat::Decimal | ValueFormat::Port16 | ValueFormat::Port32, m) => {
            let _ = write!(s, "{value}");
            if let Some(m) = m {
                let _ = write!(s, "/{}", c_hex(m));
            }
        }
    }
    s
}
