//! The host gateway: an OVS internal port on the fixed OpenFlow port [`ports::GATEWAY`], with
//! a stable MAC, an explicit MTU from the plan, and the first address of every pod CIDR.
//!
//! Desired state ([`GatewaySpec`], in [`weft_plan::gateway`]) is a pure function of config and node; [`ensure_port`]
//! converges OVSDB and [`ensure_link`] converges the kernel interface's MAC, MTU and state
//! (both idempotent). Its addresses (`noprefixroute`, IPv6 `nodad`) and the pod CIDR routes
//! through it belong to the host-state reconciler ([`crate::hoststate`]), their one owner. The
//! MAC is set through the Interface `mac` column, so ovs-vswitchd itself re-applies it when it
//! recreates the device (the netdev datapath's tap devices die with ovs-vswitchd), and through
//! netlink when the kernel still shows another one.

use std::path::PathBuf;
use std::time::Duration;

use ovs_flows::pipeline::ports;
use rtnetlink::LinkUnspec;

use crate::ovsdb::{
    Condition, Operation, Ovs, OvsBridgeClient, OvsdbError, PortKind, PortSpec, Row,
};
pub use weft_plan::gateway::{gateway_address, GatewaySpec};
use weft_plan::names::{OWNER_KEY, OWNER_VALUE};

/// How long OVS may take to give the gateway its OpenFlow port and kernel device.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors converging the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// OVSDB refused or failed.
    #[error("gateway port {port}: {source}")]
    Ovsdb {
        /// The gateway's name.
        port: String,
        /// Why.
        source: OvsdbError,
    },
    /// OVS gave the gateway another OpenFlow port than the fixed one.
    #[error("gateway port {port} got ofport {got}, expected {want} (another port holds it?)")]
    WrongOfport {
        /// The gateway's name.
        port: String,
        /// What OVS assigned.
        got: u32,
        /// The fixed port.
        want: u32,
    },
    /// The kernel device did not appear.
    #[error("gateway interface {port} did not appear in the node's netns within {timeout:?}")]
    NoDevice {
        /// The gateway's name.
        port: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A netlink request failed.
    #[error("cannot {action} gateway interface {port} in netns {netns}: {source}")]
    Netlink {
        /// What was attempted.
        action: String,
        /// The gateway's name.
        port: String,
        /// The node's namespace.
        netns: PathBuf,
        /// The kernel's answer.
        source: std::io::Error,
    },
}

/// Creates or updates the gateway port: internal, ofport 32769, `mtu_request`, MAC; waits for
/// OVS to assign the fixed OpenFlow port.
pub async fn ensure_port(ovs: &Ovs, bridge: &str, spec: &GatewaySpec) -> Result<(), GatewayError> {
    let err = |source| GatewayError::Ovsdb {
        port: spec.name.clone(),
        source,
    };
    let port = PortSpec::new(&spec.name, PortKind::Internal)
        .with_ofport_request(ports::GATEWAY)
        .with_mtu_request(spec.mtu)
        .with_external_id(OWNER_KEY, OWNER_VALUE);
    ovs.ensure_port(bridge, &port).await.map_err(err)?;
    ovs.client()
        .transact(vec![Operation::update(
            "Interface",
            vec![Condition::eq("name", spec.name.as_str())],
            Row::new().with("mac", spec.mac.to_string().as_str()),
        )])
        .await
        .map_err(err)?;
    let got = ovs
        .wait_for_ofport(&spec.name, APPEAR_TIMEOUT)
        .await
        .map_err(err)?;
    if got != ports::GATEWAY {
        return Err(GatewayError::WrongOfport {
            port: spec.name.clone(),
            got,
            want: ports::GATEWAY,
        });
    }
    Ok(())
}

/// Converges the kernel side of the gateway in the namespace `handle` talks to: MAC, MTU, up
/// (the addresses are the host-state reconciler's). Waits for OVS to create the device. Returns
/// what it changed (empty when all was in place).
pub async fn ensure_link(
    handle: &rtnetlink::Handle,
    netns: &std::path::Path,
    spec: &GatewaySpec,
) -> Result<Vec<String>, GatewayError> {
    let nl_err = |action: &str, source: std::io::Error| GatewayError::Netlink {
        action: action.to_string(),
        port: spec.name.clone(),
        netns: netns.to_path_buf(),
        source,
    };
    let deadline = tokio::time::Instant::now() + APPEAR_TIMEOUT;
    let link = loop {
        let found = crate::iface::link::get_by_name(handle, netns, &spec.name)
            .await
            .map_err(|e| nl_err("look up", std::io::Error::other(e.to_string())))?;
        if let Some(link) = found {
            break link;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(GatewayError::NoDevice {
                port: spec.name.clone(),
                timeout: APPEAR_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut changes = Vec::new();
    let mut set = LinkUnspec::new_with_index(link.index);
    if link.mac != Some(spec.mac) {
        set = set.address(spec.mac.octets().to_vec());
        changes.push(format!("mac {}", spec.mac));
    }
    if link.mtu != Some(spec.mtu) {
        set = set.mtu(spec.mtu);
        changes.push(format!("mtu {}", spec.mtu));
    }
    if !link.admin_up {
        set = set.up();
        changes.push("up".to_string());
    }
    if !changes.is_empty() {
        handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(|e| nl_err("configure", crate::iface::netlink_io(e)))?;
    }

    Ok(changes)
}
