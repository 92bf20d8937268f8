//! The encap tunnel port as desired state: its protocol, UDP port and MTU. The agent converges
//! the OVS port (`weft-tun0`, fixed OpenFlow port 32768) to it.

use crate::mode::{TrafficMode, TunnelType};
use crate::mtu::MtuPlan;

/// What the tunnel port should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The protocol.
    pub tunnel: TunnelType,
    /// UDP destination port when not the protocol's default (`tunnelPort`).
    pub dst_port: Option<u16>,
    /// The plan's tunnel MTU.
    pub mtu: u32,
}

impl TunnelSpec {
    /// The tunnel the config (`tunnelPort`, 0 = the protocol's default) and plan ask for;
    /// `None` in noEncap.
    pub fn desired(tunnel_port: u16, mode: TrafficMode, plan: &MtuPlan) -> Option<Self> {
        let TrafficMode::Encap(tunnel) = mode else {
            return None;
        };
        Some(TunnelSpec {
            tunnel,
            dst_port: (tunnel_port != 0).then_some(tunnel_port),
            mtu: plan.tunnel.unwrap_or(plan.pod),
        })
    }
}
