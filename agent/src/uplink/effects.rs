//! The side effects of the uplink [`converge`](super::converge) run, as traits, so its crash and
//! resume logic runs against the real kernel and OVSDB in the agent and against small recording
//! fakes in unit tests (`fake`, behind the `test-util` feature).
//!
//! Guarantees every implementation keeps (the run relies on them to be crash-safe):
//! - every mutating call is **idempotent**: run again after a crash (before or after its journal
//!   entry) it converges to the same state and never fails because the effect is already there;
//! - a call is **one kernel request or one OVSDB transaction**: it happens entirely or not at all
//!   (except [`UplinkKernel::remove_addresses`], one request per address, each idempotent);
//! - lookups return `None` for an object that does not exist, never an error;
//! - errors name the object and the value (the [`UplinkError`] variants).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use weft_plan::uplink::steps::{NicSnapshot, SavedRoute};
use weft_plan::MacAddr;

use super::{Kernel, UplinkError};
use crate::iface::InterfaceInfo;
use crate::ovsdb::{Condition, Operation as DbOp, Ovs, OvsBridgeClient, OvsdbError, PortSpec, Row};

/// The kernel side of the uplink attach (links, addresses, routes, sysctls of one namespace).
pub trait UplinkKernel: Send + Sync {
    /// The namespace it acts in (for messages).
    fn netns_path(&self) -> PathBuf;

    /// Everything about the NIC `name` that the attach changes.
    fn snapshot(&self, name: &str)
        -> impl Future<Output = Result<NicSnapshot, UplinkError>> + Send;

    /// The link named `name`.
    fn link_by_name(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<InterfaceInfo>, UplinkError>> + Send;

    /// The link with index `index`.
    fn link_by_index(
        &self,
        index: u32,
    ) -> impl Future<Output = Result<Option<InterfaceInfo>, UplinkError>> + Send;

    /// Renames link `index` (named `from`) to `name` (down for the rename).
    fn rename(
        &self,
        index: u32,
        from: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Sets ARP on or off and the MTU, and brings the link up.
    fn configure(
        &self,
        index: u32,
        ifname: &str,
        arp: bool,
        mtu: u32,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Sets the link's MAC.
    fn set_mac(
        &self,
        index: u32,
        ifname: &str,
        mac: MacAddr,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Writes `/proc/sys/KEY` (a missing key, e.g. IPv6 disabled, counts as done).
    fn write_sysctl(
        &self,
        key: String,
        value: String,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Adds an address (an existing one counts as done).
    fn add_address(
        &self,
        index: u32,
        ifname: &str,
        net: IpNet,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Removes those of `nets` the link has.
    fn remove_addresses(
        &self,
        index: u32,
        ifname: &str,
        nets: &[IpNet],
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;

    /// Adds `route` out of link `index` (an existing one counts as done).
    fn add_route(
        &self,
        index: u32,
        ifname: &str,
        route: &SavedRoute,
    ) -> impl Future<Output = Result<(), UplinkError>> + Send;
}

/// The OVSDB side of the uplink attach: [`OvsBridgeClient`]'s guarantees (one transaction,
/// idempotent) for the few calls the run makes.
pub trait UplinkOvs: Send + Sync {
    /// Creates or updates the port on `bridge`.
    fn ensure_port(
        &self,
        bridge: &str,
        spec: &PortSpec,
    ) -> impl Future<Output = Result<(), OvsdbError>> + Send;

    /// Deletes the port; `false` if it did not exist.
    fn delete_port(&self, name: &str) -> impl Future<Output = Result<bool, OvsdbError>> + Send;

    /// Waits until OVS gives the interface an ofport.
    fn wait_for_ofport(
        &self,
        interface: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<u32, OvsdbError>> + Send;

    /// Sets the Interface `mac` column (OVS applies it to the device, and again whenever it
    /// recreates the device).
    fn set_interface_mac(
        &self,
        interface: &str,
        mac: &str,
    ) -> impl Future<Output = Result<(), OvsdbError>> + Send;

    /// The Interface `type` of `interface` as last seen, `None` if OVS has no such interface.
    fn interface_type(&self, interface: &str) -> Option<String>;
}

impl UplinkOvs for Ovs {
    async fn ensure_port(&self, bridge: &str, spec: &PortSpec) -> Result<(), OvsdbError> {
        OvsBridgeClient::ensure_port(self, bridge, spec)
            .await
            .map(|_| ())
    }

    async fn delete_port(&self, name: &str) -> Result<bool, OvsdbError> {
        OvsBridgeClient::delete_port(self, name).await
    }

    async fn wait_for_ofport(&self, interface: &str, timeout: Duration) -> Result<u32, OvsdbError> {
        OvsBridgeClient::wait_for_ofport(self, interface, timeout).await
    }

    async fn set_interface_mac(&self, interface: &str, mac: &str) -> Result<(), OvsdbError> {
        self.client()
            .transact(vec![DbOp::update(
                "Interface",
                vec![Condition::eq("name", interface)],
                Row::new().with("mac", mac),
            )])
            .await
            .map(|_| ())
    }

    fn interface_type(&self, interface: &str) -> Option<String> {
        self.client().read_cache(|cache| {
            cache
                .by_name("Interface", interface)
                .map(|(_, row)| row.get_str("type").unwrap_or_default().to_string())
        })
    }
}

impl UplinkKernel for Kernel {
    fn netns_path(&self) -> PathBuf {
        self.ns.path().to_path_buf()
    }

    async fn snapshot(&self, name: &str) -> Result<NicSnapshot, UplinkError> {
        Kernel::snapshot(self, name).await
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<InterfaceInfo>, UplinkError> {
        Ok(Kernel::link_by_name(self, name)
            .await?
            .as_ref()
            .map(InterfaceInfo::from_message))
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<InterfaceInfo>, UplinkError> {
        Kernel::link_by_index(self, index).await
    }

    async fn rename(&self, index: u32, from: &str, name: &str) -> Result<(), UplinkError> {
        Kernel::rename(self, index, from, name).await
    }

    async fn configure(
        &self,
        index: u32,
        ifname: &str,
        arp: bool,
        mtu: u32,
    ) -> Result<(), UplinkError> {
        Kernel::configure(self, index, ifname, arp, mtu).await
    }

    async fn set_mac(&self, index: u32, ifname: &str, mac: MacAddr) -> Result<(), UplinkError> {
        Kernel::set_mac(self, index, ifname, mac).await
    }

    async fn write_sysctl(&self, key: String, value: String) -> Result<(), UplinkError> {
        Kernel::write_sysctl(self, key, value).await
    }

    async fn add_address(&self, index: u32, ifname: &str, net: IpNet) -> Result<(), UplinkError> {
        Kernel::add_address(self, index, ifname, net).await
    }

    async fn remove_addresses(
        &self,
        index: u32,
        ifname: &str,
        nets: &[IpNet],
    ) -> Result<(), UplinkError> {
        Kernel::remove_addresses(self, index, ifname, nets).await
    }

    async fn add_route(
        &self,
        index: u32,
        ifname: &str,
        route: &SavedRoute,
    ) -> Result<(), UplinkError> {
        Kernel::add_route(self, index, ifname, route).await
    }
}
