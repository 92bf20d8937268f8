//! The MTU plan: one pure function decides the MTU of every interface Weft creates or manages.
//!
//! Field reports 1 and 2: an interface whose MTU ignored the configured value, and an uplink whose
//! MTU was derived from old pods after an encap -> noEncap switch. Here nothing is derived from
//! the MTUs of existing interfaces: the inputs are the configuration and the transport
//! interface's own MTU, and every interface kind gets its MTU from [`MtuPlan`].

use serde::Serialize;

pub use crate::mode::{Family, TrafficMode, TunnelType, IPV6_EXTRA_OVERHEAD};

/// Inputs of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuInput {
    /// Traffic mode.
    pub mode: TrafficMode,
    /// Family of the underlay.
    pub underlay: Family,
    /// The transport interface's MTU (configured `transportMTU`, else read from the interface).
    pub transport_mtu: u32,
    /// Explicit pod MTU from config (`mtu`), 0 = planned.
    pub configured_mtu: u32,
}

/// The MTU of every interface kind Weft manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MtuPlan {
    /// Pod eth0, the host end of every pod veth, and any extra pod interface.
    pub pod: u32,
    /// The host gateway internal port.
    pub gateway: u32,
    /// The tunnel port (encap only; `None` in noEncap).
    pub tunnel: Option<u32>,
    /// The uplink NIC and the internal port that carries the node IP: always the transport MTU.
    pub uplink: u32,
    /// The largest pod MTU the mode allows (what `pod` is when not configured).
    pub max_pod: u32,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    /// The configured pod MTU does not fit in the transport MTU once the mode's overhead is paid.
    #[error("mtu {configured} is above the {max} this mode allows (transport MTU {transport} minus {overhead} bytes of {mode} overhead)")]
    AboveMode {
        /// Configured pod MTU.
        configured: u32,
        /// The largest allowed.
        max: u32,
        /// Transport MTU.
        transport: u32,
        /// Overhead subtracted.
        overhead: u32,
        /// The mode, rendered.
        mode: String,
    },
    /// GRE needs an IPv4 underlay.
    #[error("tunnelType gre needs an IPv4 underlay, but the transport interface is IPv6")]
    GreOverIpv6,
    /// The transport MTU leaves less than the IPv6 minimum for pods.
    #[error("transport MTU {transport} leaves a pod MTU of {pod}, below the minimum {min}")]
    TooSmall {
        /// Transport MTU.
        transport: u32,
        /// The pod MTU it would give.
        pod: u32,
        /// The minimum.
        min: u32,
    },
}

/// The lowest pod MTU a plan may produce (IPv6 minimum link MTU).
pub const MIN_POD_MTU: u32 = 1280;

/// Computes the plan. Pure: the same inputs always give the same plan.
pub fn plan(input: &MtuInput) -> Result<MtuPlan, MtuError> {
    let overhead = match input.mode {
        TrafficMode::NoEncap => 0,
        TrafficMode::Encap(TunnelType::Gre) if input.underlay == Family::Ipv6 => {
            return Err(MtuError::GreOverIpv6)
        }
        TrafficMode::Encap(tunnel) => {
            tunnel.ipv4_overhead()
                + match input.underlay {
                    Family::Ipv4 => 0,
                    Family::Ipv6 => IPV6_EXTRA_OVERHEAD,
                }
        }
    };
    let max_pod = input.transport_mtu.saturating_sub(overhead);
    let pod = match input.configured_mtu {
        0 => max_pod,
        configured if configured > max_pod => {
            return Err(MtuError::AboveMode {
                configured,
                max: max_pod,
                transport: input.transport_mtu,
                overhead,
                mode: input.mode.to_string(),
            })
        }
        configured => configured,
    };
    if pod < MIN_POD_MTU {
        return Err(MtuError::TooSmall {
            transport: input.transport_mtu,
            pod,
            min: MIN_POD_MTU,
        });
    }
    Ok(MtuPlan {
        pod,
        gateway: pod,
        tunnel: matches!(input.mode, TrafficMode::Encap(_)).then_some(pod),
        uplink: input.transport_mtu,
        max_pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUNNELS: [TunnelType; 3] = [TunnelType::Geneve, TunnelType::Vxlan, TunnelType::Gre];

    fn input(mode: TrafficMode, underlay: Family, transport: u32, configured: u32) -> MtuInput {
        MtuInput {
            mode,
            underlay,
            transport_mtu: transport,
            configured_mtu: configured,
        }
    }

    #[test]
    fn table_of_the_design_brief() {
        let cases = [
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv4,
                1500,
                1450,
            ),
            (
                TrafficMode::Encap(TunnelType::Vxlan),
                Family::Ipv4,
                1500,
                1450,
            ),
            (
                TrafficMode::Encap(TunnelType::Gre),
                Family::Ipv4,
                1500,
                1458,
            ),
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv6,
                1500,
                1430,
            ),
            (
                TrafficMode::Encap(TunnelType::Vxlan),
                Family::Ipv6,
                1500,
                1430,
            ),
            (TrafficMode::NoEncap, Family::Ipv4, 1500, 1500),
            (TrafficMode::NoEncap, Family::Ipv6, 1500, 1500),
            (
                TrafficMode::Encap(TunnelType::Geneve),
                Family::Ipv4,
                9000,
                8950,
            ),
            (TrafficMode::NoEncap, Family::Ipv4, 9000, 9000),
        ];
        for (mode, family, transport, pod) in cases {
            let plan = plan(&input(mode, family, transport, 0)).unwrap();
            assert_eq!(plan.pod, pod, "{mode} {family:?} {transport}");
            assert_eq!(plan.gateway, pod);
            assert_eq!(plan.uplink, transport, "uplink is always the transport MTU");
            assert_eq!(plan.max_pod, pod);
            assert_eq!(plan.tunnel.is_some(), mode != TrafficMode::NoEncap);
        }
    }

    #[test]
    fn every_combination_is_consistent() {
        let modes = TUNNELS
            .iter()
            .map(|t| TrafficMode::Encap(*t))
            .chain([TrafficMode::NoEncap]);
        for mode in modes {
            for family in [Family::Ipv4, Family::Ipv6] {
                for transport in [1280, 1400, 1500, 1600, 9000, 9216] {
                    for configured in [0, 1280, 1300, 1400, 1450, 1500, 8950, 9000] {
                        let result = plan(&input(mode, family, transport, configured));
                        if mode == TrafficMode::Encap(TunnelType::Gre) && family == Family::Ipv6 {
                            assert_eq!(result, Err(MtuError::GreOverIpv6));
                            continue;
                        }
                        match result {
                            Ok(p) => {
                                assert!(p.pod <= p.max_pod && p.max_pod <= p.uplink);
                                assert!(p.pod >= MIN_POD_MTU);
                                assert_eq!(p.uplink, transport);
                                assert_eq!(p.gateway, p.pod);
                                if configured != 0 {
                                    assert_eq!(p.pod, configured);
                                }
                                if let Some(t) = p.tunnel {
                                    assert_eq!(t, p.pod);
                                }
                            }
                            Err(MtuError::AboveMode {
                                configured: c, max, ..
                            }) => {
                                assert_eq!(c, configured);
                                assert!(configured > max);
                            }
                            Err(MtuError::TooSmall { pod, .. }) => assert!(pod < MIN_POD_MTU),
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn configured_mtu_above_mode_names_both_numbers() {
        let err = plan(&input(
            TrafficMode::Encap(TunnelType::Geneve),
            Family::Ipv4,
            1500,
            1500,
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1500") && text.contains("1450"), "{text}");
    }

    #[test]
    fn gre_over_ipv6_is_refused() {
        let err = plan(&input(
            TrafficMode::Encap(TunnelType::Gre),
            Family::Ipv6,
            1500,
            0,
        ));
        assert_eq!(err, Err(MtuError::GreOverIpv6));
    }
}
