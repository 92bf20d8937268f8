//! The encap tunnel: one flow-based port `weft-tun0` of the configured type on the fixed
//! OpenFlow port [`ports::TUNNEL`], whose remote endpoint and key come from the flows
//! (`remote_ip=flow`, `key=flow`), with `dst_port` when `tunnelPort` is set and an explicit
//! `mtu_request` from the plan.
//!
//! [`TunnelSpec::desired`] (in [`weft_plan::tunnel`]) is a pure function of config and plan; [`ensure`] converges OVSDB
//! (idempotent) and [`remove`] deletes the port when the mode has no tunnel.

use std::time::Duration;

use ovs_flows::pipeline::ports;

use crate::mtu::TunnelType;
use crate::ovsdb::{Ovs, OvsBridgeClient, OvsdbError, PortKind, PortSpec};
pub use weft_plan::names::TUNNEL_PORT;
use weft_plan::names::{OWNER_KEY, OWNER_VALUE};

/// How long OVS may take to give the tunnel its OpenFlow port.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors converging the tunnel port.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// OVSDB refused or failed.
    #[error("tunnel port {port}: {source}")]
    Ovsdb {
        /// The port's name.
        port: String,
        /// Why.
        source: OvsdbError,
    },
    /// OVS gave the tunnel another OpenFlow port than the fixed one.
    #[error("tunnel port {port} got ofport {got}, expected {want} (another port holds it?)")]
    WrongOfport {
        /// The port's name.
        port: String,
        /// What OVS assigned.
        got: u32,
        /// The fixed port.
        want: u32,
    },
}

pub use weft_plan::tunnel::TunnelSpec;

/// The OVSDB port of `spec`.
pub fn port_spec(spec: &TunnelSpec) -> PortSpec {
    let kind = match spec.tunnel {
        TunnelType::Geneve => PortKind::Geneve,
        TunnelType::Vxlan => PortKind::Vxlan,
        TunnelType::Gre => PortKind::Gre,
    };
    let mut port = PortSpec::new(TUNNEL_PORT, kind)
        .with_option("remote_ip", "flow")
        .with_option("key", "flow")
        .with_ofport_request(ports::TUNNEL)
        .with_mtu_request(spec.mtu)
        .with_external_id(OWNER_KEY, OWNER_VALUE);
    if let Some(dst_port) = spec.dst_port {
        port = port.with_option("dst_port", &dst_port.to_string());
    }
    port
}

/// Creates or updates the tunnel port and waits for its fixed OpenFlow port. A port of another
/// type under the same name is replaced (a `tunnelType` change).
pub async fn ensure(ovs: &Ovs, bridge: &str, spec: &TunnelSpec) -> Result<(), TunnelError> {
    let err = |source| TunnelError::Ovsdb {
        port: TUNNEL_PORT.to_string(),
        source,
    };
    let port = port_spec(spec);
    let current_type = ovs.client().read_cache(|cache| {
        cache
            .by_name("Interface", TUNNEL_PORT)
            .and_then(|(_, row)| row.get_str("type").map(str::to_string))
    });
    if current_type.is_some_and(|t| t != port.kind.ovs_type()) {
        // OVS cannot change a tunnel's type in place reliably: recreate the port.
        ovs.delete_port(TUNNEL_PORT).await.map_err(err)?;
    }
    ovs.ensure_port(bridge, &port).await.map_err(err)?;
    let got = ovs
        .wait_for_ofport(TUNNEL_PORT, APPEAR_TIMEOUT)
        .await
        .map_err(err)?;
    if got != ports::TUNNEL {
        return Err(TunnelError::WrongOfport {
            port: TUNNEL_PORT.to_string(),
            got,
            want: ports::TUNNEL,
        });
    }
    Ok(())
}

/// Deletes the tunnel port if it exists (noEncap); returns whether it did.
pub async fn remove(ovs: &Ovs) -> Result<bool, TunnelError> {
    ovs.delete_port(TUNNEL_PORT)
        .await
        .map_err(|source| TunnelError::Ovsdb {
            port: TUNNEL_PORT.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtu::{MtuPlan, TrafficMode};

    fn plan(pod: u32, tunnel: Option<u32>) -> MtuPlan {
        MtuPlan {
            pod,
            gateway: pod,
            tunnel,
            uplink: 1500,
            max_pod: pod,
        }
    }

    #[test]
    fn desired_tunnel_follows_mode_port_and_plan() {
        let spec = TunnelSpec::desired(
            0,
            TrafficMode::Encap(TunnelType::Vxlan),
            &plan(1450, Some(1450)),
        )
        .unwrap();
        let port = port_spec(&spec);
        assert_eq!(port.kind, PortKind::Vxlan);
        assert_eq!(port.ofport_request, Some(32768));
        assert_eq!(port.mtu_request, Some(1450));
        assert_eq!(
            port.options.get("remote_ip").map(String::as_str),
            Some("flow")
        );
        assert_eq!(port.options.get("key").map(String::as_str), Some("flow"));
        assert!(!port.options.contains_key("dst_port"));
        let spec = TunnelSpec::desired(
            7000,
            TrafficMode::Encap(TunnelType::Geneve),
            &plan(1400, Some(1400)),
        )
        .unwrap();
        assert_eq!(
            port_spec(&spec).options.get("dst_port").map(String::as_str),
            Some("7000")
        );
        assert_eq!(
            TunnelSpec::desired(7000, TrafficMode::NoEncap, &plan(1500, None)),
            None
        );
    }
}
