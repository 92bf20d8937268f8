//! Sysctl drift from netconf events: the kernel announces changes of `forwarding` and
//! `rp_filter` (IPv4 and IPv6, per device and for `all`) on `RTNLGRP_IPV4_NETCONF` /
//! `RTNLGRP_IPV6_NETCONF` as `RTM_NEWNETCONF` messages. netlink-packet-route does not parse
//! them, so a separate socket reads them with the plain decoder of [`super::nft`].
//!
//! `arp_announce` has no netconf attribute (the kernel sends none when it changes): it stays on
//! the periodic resync.

use std::collections::HashSet;
use std::io;

use super::nft::{parse_attrs, EventSocket, RawMessage};

/// `RTNLGRP_IPV4_NETCONF`.
pub const RTNLGRP_IPV4_NETCONF: u32 = 24;
/// `RTNLGRP_IPV6_NETCONF`.
pub const RTNLGRP_IPV6_NETCONF: u32 = 25;
/// `NETCONFA_IFINDEX_ALL`: the `all` settings (`ip_forward`, `conf/all/*`).
pub const IFINDEX_ALL: i32 = -1;

const NETLINK_ROUTE: isize = 0;
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;
const NLMSG_OVERRUN: u16 = 4;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
const NETCONFA_RP_FILTER: u16 = 3;

/// One netconf announcement, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netconf {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u8,
    /// The device's index, or [`IFINDEX_ALL`] / -2 (`default`).
    pub ifindex: i32,
    /// The new `forwarding` value, when announced.
    pub forwarding: Option<i32>,
    /// The new `rp_filter` value, when announced.
    pub rp_filter: Option<i32>,
}

fn i32_of(value: &[u8]) -> Option<i32> {
    value
        .get(..4)
        .map(|v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

/// Decodes an `RTM_NEWNETCONF`; `None` for other messages or without an interface index.
pub fn parse_netconf(message: &RawMessage) -> Option<Netconf> {
    if message.kind != RTM_NEWNETCONF && message.kind != RTM_DELNETCONF {
        return None;
    }
    let family = *message.payload.first()?;
    // struct netconfmsg is one byte, aligned to 4.
    let attrs = parse_attrs(message.payload.get(4..)?).ok()?;
    let get = |kind| {
        attrs
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, v)| i32_of(v))
    };
    Some(Netconf {
        family,
        ifindex: get(NETCONFA_IFINDEX)?,
        forwarding: get(NETCONFA_FORWARDING),
        rp_filter: get(NETCONFA_RP_FILTER),
    })
}

/// Whether `messages` may have changed a sysctl Weft holds: a forwarding or rp_filter change of
/// `all` or of one of `devices` (the indexes of the interfaces Weft keeps sysctls on), or an
/// overrun.
pub fn touches_sysctls(messages: &[RawMessage], devices: &HashSet<i32>) -> bool {
    messages.iter().any(|m| {
        m.kind == NLMSG_OVERRUN
            || parse_netconf(m).is_some_and(|n| {
                (n.forwarding.is_some() || n.rp_filter.is_some())
                    && (n.ifindex == IFINDEX_ALL || devices.contains(&n.ifindex))
            })
    })
}

/// A socket on both netconf groups of one namespace.
pub struct NetconfEvents {
    socket: EventSocket,
}

impl NetconfEvents {
    /// Subscribes in the calling thread's namespace (see [`EventSocket::open`]).
    pub fn open(receive_buffer: usize) -> io::Result<Self> {
        EventSocket::open(
            NETLINK_ROUTE,
            &[RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF],
            receive_buffer,
        )
        .map(|socket| NetconfEvents { socket })
    }

    /// The next datagram's messages; `None` when events were lost (look at every sysctl).
    pub async fn next(&mut self) -> io::Result<Option<Vec<RawMessage>>> {
        self.socket.next().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: i32) -> Vec<u8> {
        let mut out = 8u16.to_ne_bytes().to_vec();
        out.extend(kind.to_ne_bytes());
        out.extend(value.to_ne_bytes());
        out
    }

    fn netconf(family: u8, attrs: &[(u16, i32)]) -> RawMessage {
        let mut payload = vec![family, 0, 0, 0];
        for (k, v) in attrs {
            payload.extend(attr(*k, *v));
        }
        RawMessage {
            kind: RTM_NEWNETCONF,
            flags: 0,
            seq: 0,
            payload,
        }
    }

    #[test]
    fn forwarding_and_rp_filter_changes_of_all_or_our_devices_matter() {
        let ours = HashSet::from([7]);
        let all_forwarding = netconf(2, &[(NETCONFA_IFINDEX, -1), (NETCONFA_FORWARDING, 0)]);
        assert_eq!(
            parse_netconf(&all_forwarding),
            Some(Netconf {
                family: 2,
                ifindex: -1,
                forwarding: Some(0),
                rp_filter: None
            })
        );
        assert!(touches_sysctls(&[all_forwarding], &ours));
        let gw_rp = netconf(2, &[(NETCONFA_IFINDEX, 7), (NETCONFA_RP_FILTER, 1)]);
        assert!(touches_sysctls(&[gw_rp], &ours));
        let v6 = netconf(10, &[(NETCONFA_IFINDEX, -1), (NETCONFA_FORWARDING, 0)]);
        assert!(touches_sysctls(&[v6], &ours));
        // Another device, the default template, or an attribute Weft does not hold: nothing.
        let other = netconf(2, &[(NETCONFA_IFINDEX, 9), (NETCONFA_RP_FILTER, 1)]);
        let default = netconf(2, &[(NETCONFA_IFINDEX, -2), (NETCONFA_FORWARDING, 0)]);
        let proxy = netconf(2, &[(NETCONFA_IFINDEX, 7), (5, 1)]);
        assert!(!touches_sysctls(&[other, default, proxy], &ours));
    }

    #[test]
    fn other_and_malformed_messages_are_ignored_overruns_are_not() {
        let mut route = netconf(2, &[(NETCONFA_IFINDEX, -1)]);
        route.kind = 24; // RTM_NEWROUTE
        assert_eq!(parse_netconf(&route), None);
        let mut short = netconf(2, &[]);
        short.payload = vec![2];
        assert_eq!(parse_netconf(&short), None);
        let mut broken = netconf(2, &[(NETCONFA_IFINDEX, -1)]);
        broken.payload[4] = 200; // attribute longer than the message
        assert_eq!(parse_netconf(&broken), None);
        let no_index = netconf(2, &[(NETCONFA_FORWARDING, 1)]);
        assert_eq!(parse_netconf(&no_index), None);
        let overrun = RawMessage {
            kind: NLMSG_OVERRUN,
            flags: 0,
            seq: 0,
            payload: vec![],
        };
        assert!(touches_sysctls(&[overrun], &HashSet::new()));
    }
}
