//! A recording fake of the uplink run's side effects ([`UplinkKernel`], [`UplinkOvs`],
//! [`UplinkFlows`]): one in-memory node whose OVS internal ports appear as kernel links, as
//! ovs-vswitchd makes them, so the attach, detach and crash-resume paths run without root.
//! Every call is recorded in [`FakeNode::calls`]. Behind the `test-util` feature (and the
//! crate's own unit tests); the agent never builds it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use ovs_flows::flow::Flow;
use weft_plan::pod::stable_mac;
use weft_plan::uplink::steps::{NicSnapshot, SavedRoute};
use weft_plan::MacAddr;

use super::{UplinkError, UplinkFlows, UplinkKernel, UplinkOvs};
use crate::iface::{InterfaceInfo, OperState};
use crate::ovsdb::{OvsdbError, PortSpec};

/// A kernel link of the fake node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// MAC.
    pub mac: MacAddr,
    /// Administratively up.
    pub up: bool,
    /// ARP on.
    pub arp: bool,
    /// Addresses.
    pub addresses: Vec<IpNet>,
    /// Routes out of it.
    pub routes: Vec<SavedRoute>,
}

/// An OVS port (with its one interface) of the fake node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePort {
    /// Bridge.
    pub bridge: String,
    /// Interface `type`.
    pub kind: String,
    /// OpenFlow port (the requested one).
    pub ofport: u32,
    /// `mtu_request`.
    pub mtu_request: Option<u32>,
    /// Interface `mac` column.
    pub mac: Option<String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// The fake node's whole state: what a test compares between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeState {
    /// Kernel links by index.
    pub links: BTreeMap<u32, FakeLink>,
    /// OVS ports by name.
    pub ports: BTreeMap<String, FakePort>,
    /// Sysctls written (key below /proc/sys -> value).
    pub sysctls: BTreeMap<String, String>,
    /// Flows installed (the last install).
    pub flows: Vec<Flow>,
}

/// The fake node.
#[derive(Debug, Default)]
pub struct FakeNode {
    state: Mutex<FakeState>,
    calls: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeNode {
    /// A node with one NIC.
    pub fn with_nic(
        name: &str,
        index: u32,
        mtu: u32,
        mac: MacAddr,
        addresses: &[IpNet],
        routes: &[SavedRoute],
    ) -> Self {
        let node = FakeNode::default();
        lock(&node.state).links.insert(
            index,
            FakeLink {
                name: name.to_string(),
                mtu,
                mac,
                up: true,
                arp: true,
                addresses: addresses.to_vec(),
                routes: routes.to_vec(),
            },
        );
        node
    }

    /// The state now.
    pub fn state(&self) -> FakeState {
        lock(&self.state).clone()
    }

    /// The calls so far (`kernel rename 2 eth0 -> eth0~`, `ovs ensure_port eth0~`, ...).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The link named `name`, with its index.
    pub fn link(&self, name: &str) -> Option<(u32, FakeLink)> {
        lock(&self.state)
            .links
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(i, l)| (*i, l.clone()))
    }

    fn record(&self, call: String) {
        lock(&self.calls).push(call);
    }

    fn missing(&self, index: u32, ifname: &str) -> UplinkError {
        UplinkError::NicGone {
            name: ifname.to_string(),
            index,
        }
    }

    fn with_link<T>(
        &self,
        index: u32,
        ifname: &str,
        change: impl FnOnce(&mut FakeLink) -> T,
    ) -> Result<T, UplinkError> {
        let mut state = lock(&self.state);
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| self.missing(index, ifname))?;
        Ok(change(link))
    }
}

fn info(index: u32, link: &FakeLink) -> InterfaceInfo {
    InterfaceInfo {
        index,
        name: link.name.clone(),
        kind: None,
        mtu: Some(link.mtu),
        mac: Some(link.mac),
        admin_up: link.up,
        oper_state: if link.up {
            OperState::Up
        } else {
            OperState::Down
        },
        alias: None,
        peer_index: None,
        master: None,
    }
}

impl UplinkKernel for FakeNode {
    fn netns_path(&self) -> PathBuf {
        PathBuf::from("/fake/netns")
    }

    async fn snapshot(&self, name: &str) -> Result<NicSnapshot, UplinkError> {
        self.record(format!("kernel snapshot {name}"));
        let (index, link) = self.link(name).ok_or_else(|| self.missing(0, name))?;
        let sysctls = self.state().sysctls;
        Ok(NicSnapshot {
            name: name.to_string(),
            index,
            mac: link.mac.to_string(),
            mtu: link.mtu,
            arp: link.arp,
            addresses: link.addresses,
            routes: link.routes,
            disable_ipv6: sysctls
                .get(&format!("net/ipv6/conf/{name}/disable_ipv6"))
                .cloned(),
            rp_filter: sysctls
                .get(&format!("net/ipv4/conf/{name}/rp_filter"))
                .cloned(),
        })
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<InterfaceInfo>, UplinkError> {
        Ok(self.link(name).map(|(i, l)| info(i, &l)))
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<InterfaceInfo>, UplinkError> {
        Ok(lock(&self.state).links.get(&index).map(|l| info(index, l)))
    }

    async fn rename(&self, index: u32, from: &str, name: &str) -> Result<(), UplinkError> {
        self.record(format!("kernel rename {index} {from} -> {name}"));
        if self.link(name).is_some_and(|(i, _)| i != index) {
            return Err(UplinkError::NameTaken {
                name: name.to_string(),
                index,
            });
        }
        self.with_link(index, from, |l| {
            l.name = name.to_string();
            l.up = false;
        })
    }

    async fn configure(
        &self,
        index: u32,
        ifname: &str,
        arp: bool,
        mtu: u32,
    ) -> Result<(), UplinkError> {
        self.record(format!("kernel configure {ifname} arp={arp} mtu={mtu} up"));
        self.with_link(index, ifname, |l| {
            l.arp = arp;
            l.mtu = mtu;
            l.up = true;
        })
    }

    async fn set_mac(&self, index: u32, ifname: &str, mac: MacAddr) -> Result<(), UplinkError> {
        self.record(format!("kernel set_mac {ifname} {mac}"));
        self.with_link(index, ifname, |l| l.mac = mac)
    }

    async fn write_sysctl(&self, key: String, value: String) -> Result<(), UplinkError> {
        self.record(format!("kernel sysctl {key}={value}"));
        lock(&self.state).sysctls.insert(key, value);
        Ok(())
    }

    async fn add_address(&self, index: u32, ifname: &str, net: IpNet) -> Result<(), UplinkError> {
        self.record(format!("kernel add_address {ifname} {net}"));
        self.with_link(index, ifname, |l| {
            if !l.addresses.contains(&net) {
                l.addresses.push(net);
            }
        })
    }

    async fn remove_addresses(
        &self,
        index: u32,
        ifname: &str,
        nets: &[IpNet],
    ) -> Result<(), UplinkError> {
        self.record(format!("kernel remove_addresses {ifname} {nets:?}"));
        self.with_link(index, ifname, |l| l.addresses.retain(|a| !nets.contains(a)))
    }

    async fn add_route(
        &self,
        index: u32,
        ifname: &str,
        route: &SavedRoute,
    ) -> Result<(), UplinkError> {
        self.record(format!("kernel add_route {ifname} {}", route.destination));
        self.with_link(index, ifname, |l| {
            if !l.routes.contains(route) {
                l.routes.push(route.clone());
            }
        })
    }
}

impl UplinkOvs for FakeNode {
    async fn ensure_port(&self, bridge: &str, spec: &PortSpec) -> Result<(), OvsdbError> {
        self.record(format!("ovs ensure_port {}", spec.name));
        let mut state = lock(&self.state);
        let kind = spec.kind.ovs_type().to_string();
        let internal = kind == "internal";
        let mac = state.ports.get(&spec.name).and_then(|p| p.mac.clone());
        state.ports.insert(
            spec.name.clone(),
            FakePort {
                bridge: bridge.to_string(),
                kind,
                ofport: spec.ofport_request.unwrap_or(1),
                mtu_request: spec.mtu_request,
                mac,
                external_ids: spec.external_ids.clone(),
            },
        );
        // ovs-vswitchd makes an internal port's device (a new index, a random MAC).
        if internal && !state.links.values().any(|l| l.name == spec.name) {
            let index = state.links.keys().max().copied().unwrap_or(0) + 1;
            state.links.insert(
                index,
                FakeLink {
                    name: spec.name.clone(),
                    mtu: spec.mtu_request.unwrap_or(1500),
                    mac: stable_mac(&spec.name),
                    up: false,
                    arp: true,
                    addresses: Vec::new(),
                    routes: Vec::new(),
                },
            );
        }
        Ok(())
    }

    async fn delete_port(&self, name: &str) -> Result<bool, OvsdbError> {
        self.record(format!("ovs delete_port {name}"));
        let mut state = lock(&self.state);
        let Some(port) = state.ports.remove(name) else {
            return Ok(false);
        };
        if port.kind == "internal" {
            state.links.retain(|_, l| l.name != name);
        }
        Ok(true)
    }

    async fn wait_for_ofport(
        &self,
        interface: &str,
        _timeout: Duration,
    ) -> Result<u32, OvsdbError> {
        lock(&self.state)
            .ports
            .get(interface)
            .map(|p| p.ofport)
            .ok_or_else(|| OvsdbError::RowNotFound {
                table: "Interface".into(),
                name: interface.to_string(),
            })
    }

    async fn set_interface_mac(&self, interface: &str, mac: &str) -> Result<(), OvsdbError> {
        self.record(format!("ovs set_interface_mac {interface} {mac}"));
        let mut state = lock(&self.state);
        let port = state
            .ports
            .get_mut(interface)
            .ok_or_else(|| OvsdbError::RowNotFound {
                table: "Interface".into(),
                name: interface.to_string(),
            })?;
        port.mac = Some(mac.to_string());
        // ovs-vswitchd applies the column to an internal port's device.
        if let Some(parsed) = MacAddr::parse(mac) {
            for link in state.links.values_mut().filter(|l| l.name == interface) {
                link.mac = parsed;
            }
        }
        Ok(())
    }

    fn interface_type(&self, interface: &str) -> Option<String> {
        lock(&self.state)
            .ports
            .get(interface)
            .map(|p| p.kind.clone())
    }
}

impl UplinkFlows for FakeNode {
    async fn install(&self, flows: Vec<Flow>) -> Result<(), String> {
        self.record(format!("flows install {}", flows.len()));
        lock(&self.state).flows = flows;
        Ok(())
    }
}
