//! The one Ethernet MAC address type of the workspace: the agent plans pod, host and gateway MACs
//! with it, and ovs-flows matches and sets them with it (it re-exports this type as
//! `ovs_flows::flow::MacAddr`).

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address that is not six `:`-separated pairs of hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mac address {0:?}: expected six ':'-separated pairs of hex digits")]
pub struct InvalidMac(pub String);

impl MacAddr {
    /// Builds from six octets.
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> Self {
        MacAddr([a, b, c, d, e, f])
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether the locally-administered bit is set and the group (multicast) bit is clear.
    pub fn is_local_unicast(&self) -> bool {
        self.0[0] & 0x03 == 0x02
    }

    /// Whether the group (multicast/broadcast) bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 == 0x01
    }

    /// Parses netlink's `IFLA_ADDRESS` bytes; `None` unless exactly six bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (exactly two hex digits per octet, either case), as OVSDB
    /// external_ids and Node annotations store it; `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *octet = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(octets))
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl FromStr for MacAddr {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacAddr::parse(s).ok_or_else(|| InvalidMac(s.to_string()))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_and_slices() {
        let mac = MacAddr([0x02, 0xab, 0, 1, 0x10, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:00:01:10:ff");
        assert_eq!(MacAddr::parse("02:ab:00:01:10:ff"), Some(mac));
        assert_eq!(MacAddr::parse("02:AB:00:01:10:FF"), Some(mac));
        assert_eq!("02:ab:00:01:10:ff".parse::<MacAddr>(), Ok(mac));
        assert_eq!(MacAddr::from_slice(&mac.octets()), Some(mac));
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
        assert_eq!(
            MacAddr::from([1, 2, 3, 4, 5, 6]),
            MacAddr::new(1, 2, 3, 4, 5, 6)
        );
        assert!(mac.is_local_unicast() && !mac.is_multicast());
        assert!(MacAddr::new(0xff, 0xff, 0xff, 0xff, 0xff, 0xff).is_multicast());
    }

    #[test]
    fn parse_refuses_what_is_not_a_mac() {
        for bad in [
            "",
            "02:ab:00:01:10",
            "02:ab:00:01:10:ff:00",
            "2:ab:00:01:10:ff",
            "02:ab:00:01:10:fff",
            "02-ab-00-01-10-ff",
            "+2:ab:00:01:10:ff",
            "0g:ab:00:01:10:ff",
            " 02:ab:00:01:10:ff",
        ] {
            assert_eq!(MacAddr::parse(bad), None, "{bad:?}");
            assert!(bad
                .parse::<MacAddr>()
                .unwrap_err()
                .to_string()
                .contains("invalid mac"));
        }
    }
}
