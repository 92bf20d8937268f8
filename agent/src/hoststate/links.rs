//! Interface watch: the links Weft manages (gateway, pod host veths, later the uplink internal
//! port and the tunnel), what each should look like, and the pure drift check.
//!
//! Who knows the managed links is behind [`ManagedLinks`]: the agent passes
//! the composition root's `PodNetworkLinks` (the gateway spec + the CNI server's pod store);
//! tests pass a fixed list.

use std::fmt;

use crate::iface::{InterfaceInfo, MacAddr};

/// What a managed link is, for reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkRole {
    /// The host gateway.
    Gateway,
    /// The host end of a pod's veth; the pod is `namespace/name`.
    PodVeth {
        /// `namespace/name`.
        pod: String,
    },
    /// The OVS internal port that carries the node's IPs and keeps the NIC's name and MAC
    /// (uplink attached to the bridge).
    UplinkPort,
    /// The renamed NIC itself (`T~`), a port of the bridge.
    UplinkNic,
    /// The transport interface, not attached (watched for its MTU only).
    Transport,
    /// Another Weft link.
    Other,
}

impl fmt::Display for LinkRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRole::Gateway => f.write_str("gateway"),
            LinkRole::PodVeth { pod } => write!(f, "host veth of pod {pod}"),
            LinkRole::UplinkPort => f.write_str("uplink internal port"),
            LinkRole::UplinkNic => f.write_str("uplink nic"),
            LinkRole::Transport => f.write_str("transport interface"),
            LinkRole::Other => f.write_str("weft link"),
        }
    }
}

/// What a managed link should look like. `None` fields are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Interface name in the node's namespace.
    pub name: String,
    /// Its role.
    pub role: LinkRole,
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Whether it must be administratively up.
    pub up: bool,
    /// The link faces the underlay and the plan was made for this MTU (`transportMTU` not
    /// configured): an MTU below it is the underlay lowered, which the agent follows by
    /// re-planning ([`UnderlayLowered`]); it is never repaired back up.
    pub underlay_mtu: Option<u32>,
}

/// A link facing the underlay went below the MTU the plan was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayLowered {
    /// The link.
    pub link: String,
    /// Its MTU now.
    pub mtu: u32,
    /// The MTU the plan was made for.
    pub planned: u32,
}

impl LinkSpec {
    /// `observed` is below the underlay MTU this link's plan was made for.
    pub fn lowered(&self, observed: &InterfaceInfo) -> Option<UnderlayLowered> {
        match (self.underlay_mtu, observed.mtu) {
            (Some(planned), Some(mtu)) if mtu < planned => Some(UnderlayLowered {
                link: self.name.clone(),
                mtu,
                planned,
            }),
            _ => None,
        }
    }
}

/// Source of the links to watch. Implementations must be cheap (called on every pass) and
/// return the current set; a link absent from the set is never touched.
pub trait ManagedLinks: Send + Sync {
    /// The links Weft manages right now.
    fn managed_links(&self) -> Vec<LinkSpec>;
}

/// A fixed list (tests, benches).
impl ManagedLinks for Vec<LinkSpec> {
    fn managed_links(&self) -> Vec<LinkSpec> {
        self.clone()
    }
}

/// The links of an attached uplink (NIC `nic`, renamed by the attach): the internal port that
/// took the NIC's name, with the plan's uplink `mtu`, the NIC's `mac` when known, up; and the
/// renamed NIC with the same MTU, up. With `follow_underlay` both follow a lowered MTU instead
/// of repairing it ([`LinkSpec::underlay_mtu`]). Tunnels have no kernel link with the netdev
/// datapath (userspace tunnel ports), so there is none to watch; their `mtu_request` lives in
/// OVSDB.
pub fn uplink_links(
    nic: &str,
    mtu: u32,
    mac: Option<MacAddr>,
    follow_underlay: bool,
) -> Vec<LinkSpec> {
    let underlay_mtu = follow_underlay.then_some(mtu);
    vec![
        LinkSpec {
            name: nic.to_string(),
            role: LinkRole::UplinkPort,
            mac,
            mtu: Some(mtu),
            up: true,
            underlay_mtu,
        },
        LinkSpec {
            name: weft_plan::uplink::steps::renamed_nic(nic),
            role: LinkRole::UplinkNic,
            mac: None,
            mtu: Some(mtu),
            up: true,
            underlay_mtu,
        },
    ]
}

/// The transport interface while it is not attached to the bridge: Weft does not own it, so
/// nothing on it is checked or repaired; with `follow_underlay` a lowered MTU is followed.
pub fn transport_link(name: &str, mtu: u32, follow_underlay: bool) -> Option<LinkSpec> {
    follow_underlay.then(|| LinkSpec {
        name: name.to_string(),
        role: LinkRole::Transport,
        mac: None,
        mtu: None,
        up: false,
        underlay_mtu: Some(mtu),
    })
}

/// One way a link differs from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The link does not exist.
    Missing,
    /// Wrong MTU.
    Mtu {
        /// What the kernel has.
        have: Option<u32>,
        /// What Weft wants.
        want: u32,
    },
    /// Wrong MAC.
    Mac {
        /// What the kernel has.
        have: Option<MacAddr>,
        /// What Weft wants.
        want: MacAddr,
    },
    /// Administratively down.
    Down,
}

impl Drift {
    /// The repair kind counted for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Drift::Missing => "link_missing",
            Drift::Mtu { .. } => "link_mtu",
            Drift::Mac { .. } => "link_mac",
            Drift::Down => "link_state",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing => f.write_str("missing"),
            Drift::Mtu { have, want } => match have {
                Some(have) => write!(f, "mtu {have}, want {want}"),
                None => write!(f, "no mtu, want {want}"),
            },
            Drift::Mac { have, want } => match have {
                Some(have) => write!(f, "mac {have}, want {want}"),
                None => write!(f, "no mac, want {want}"),
            },
            Drift::Down => f.write_str("down, want up"),
        }
    }
}

/// How `observed` differs from `spec` (empty when in place).
pub fn link_drift(spec: &LinkSpec, observed: Option<&InterfaceInfo>) -> Vec<Drift> {
    let Some(link) = observed else {
        return vec![Drift::Missing];
    };
    let mut drift = Vec::new();
    if let Some(want) = spec.mac {
        if link.mac != Some(want) {
            drift.push(Drift::Mac {
                have: link.mac,
                want,
            });
        }
    }
    if let Some(want) = spec.mtu {
        // Below the planned underlay MTU is the underlay lowered: re-planned, not repaired.
        if link.mtu != Some(want) && spec.lowered(link).is_none() {
            drift.push(Drift::Mtu {
                have: link.mtu,
                want,
            });
        }
    }
    if spec.up && !link.admin_up {
        drift.push(Drift::Down);
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::OperState;

    fn info(mac: [u8; 6], mtu: u32, up: bool) -> InterfaceInfo {
        InterfaceInfo {
            index: 3,
            name: "wfweb-abc".into(),
            kind: Some("veth".into()),
            mtu: Some(mtu),
            mac: Some(MacAddr(mac)),
            admin_up: up,
            oper_state: OperState::Up,
            alias: None,
            peer_index: None,
            master: None,
        }
    }

    fn spec() -> LinkSpec {
        LinkSpec {
            name: "wfweb-abc".into(),
            role: LinkRole::PodVeth {
                pod: "default/web".into(),
            },
            mac: Some(MacAddr([2, 1, 2, 3, 4, 5])),
            mtu: Some(1450),
            up: true,
            underlay_mtu: None,
        }
    }

    #[test]
    fn drift_lists_every_difference() {
        let s = spec();
        assert!(link_drift(&s, Some(&info([2, 1, 2, 3, 4, 5], 1450, true))).is_empty());
        assert_eq!(link_drift(&s, None), vec![Drift::Missing]);
        let drift = link_drift(&s, Some(&info([2, 9, 9, 9, 9, 9], 1500, false)));
        assert_eq!(
            drift.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "mac 02:09:09:09:09:09, want 02:01:02:03:04:05",
                "mtu 1500, want 1450",
                "down, want up"
            ]
        );
        assert_eq!(
            drift.iter().map(Drift::kind).collect::<Vec<_>>(),
            ["link_mac", "link_mtu", "link_state"]
        );
        // Unchecked fields are not drift.
        let loose = LinkSpec {
            mac: None,
            mtu: None,
            up: false,
            ..spec()
        };
        assert!(link_drift(&loose, Some(&info([0; 6], 9000, false))).is_empty());
        assert_eq!(s.role.to_string(), "host veth of pod default/web");
    }

    #[test]
    fn a_lowered_underlay_is_followed_not_repaired_and_a_raised_one_is_repaired() {
        let uplink = LinkSpec {
            role: LinkRole::UplinkPort,
            mac: None,
            mtu: Some(1500),
            underlay_mtu: Some(1500),
            ..spec()
        };
        let lowered = info([0; 6], 1400, true);
        assert!(link_drift(&uplink, Some(&lowered)).is_empty());
        assert_eq!(
            uplink.lowered(&lowered),
            Some(UnderlayLowered {
                link: "wfweb-abc".into(),
                mtu: 1400,
                planned: 1500
            })
        );
        let raised = info([0; 6], 9000, true);
        assert_eq!(uplink.lowered(&raised), None);
        assert_eq!(
            link_drift(&uplink, Some(&raised)),
            [Drift::Mtu {
                have: Some(9000),
                want: 1500
            }]
        );
        // Without `follow_underlay` (transportMTU configured) a lower MTU is drift.
        let fixed = LinkSpec {
            underlay_mtu: None,
            ..uplink
        };
        assert_eq!(fixed.lowered(&lowered), None);
        assert_eq!(link_drift(&fixed, Some(&lowered)).len(), 1);
        // A transport interface Weft does not own is watched, never repaired.
        let transport = transport_link("eth0", 1500, true).unwrap();
        assert!(link_drift(&transport, Some(&raised)).is_empty());
        assert!(link_drift(&transport, Some(&info([0; 6], 1400, false))).is_empty());
        assert_eq!(transport.lowered(&lowered).map(|l| l.mtu), Some(1400));
        assert_eq!(transport_link("eth0", 1500, false), None);
        let followed = uplink_links("eth0", 1500, None, true);
        assert!(followed.iter().all(|l| l.underlay_mtu == Some(1500)));
    }

    #[test]
    fn an_attached_uplink_watches_the_internal_port_and_the_renamed_nic() {
        let mac = MacAddr([2, 0, 0, 0, 0, 7]);
        let links = uplink_links("eth0", 9000, Some(mac), false);
        let got: Vec<_> = links
            .into_iter()
            .map(|l| (l.name, l.role.to_string(), l.mac, l.mtu, l.up))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "eth0".to_string(),
                    "uplink internal port".to_string(),
                    Some(mac),
                    Some(9000),
                    true
                ),
                (
                    "eth0~".to_string(),
                    "uplink nic".to_string(),
                    None,
                    Some(9000),
                    true
                ),
            ]
        );
    }
}
