//! Reading interfaces back from the kernel: one link by name, with the fields the agent checks
//! (MTU, MAC, state, kind, alias, veth peer).

use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use nix::errno::Errno;

use super::{netlink_io, IfaceError, MacAddr};
use crate::netns::Netns;

/// Operational state of an interface (`IFLA_OPERSTATE`, RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// Up and able to pass packets.
    Up,
    /// Down.
    Down,
    /// Down because a lower layer is (for a veth: the peer is down).
    LowerLayerDown,
    /// Waiting for an external event.
    Dormant,
    /// The driver does not report a state.
    Unknown,
    /// Any other state (not present, testing).
    Other,
}

impl From<&State> for OperState {
    fn from(state: &State) -> Self {
        match state {
            State::Up => OperState::Up,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Dormant => OperState::Dormant,
            State::Unknown => OperState::Unknown,
            _ => OperState::Other,
        }
    }
}

/// What the kernel reports about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind (`veth`, `bridge`, `openvswitch`, ...); `None` for physical devices.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address; `None` for interfaces without an Ethernet address.
    pub mac: Option<MacAddr>,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Operational state.
    pub oper_state: OperState,
    /// Interface alias (`ip link set ... alias`); Weft stores the container id there.
    pub alias: Option<String>,
    /// For a veth: the peer's index, in the peer's namespace (`IFLA_LINK`).
    pub peer_index: Option<u32>,
    /// The device this one is enslaved to (`IFLA_MASTER`): a port of OVS's kernel datapath has
    /// the datapath's `ovs-system` device here, a bridge port its bridge.
    pub master: Option<u32>,
}

impl InterfaceInfo {
    /// Extracts the fields from a link message.
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut info = InterfaceInfo {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: None,
            mac: None,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            oper_state: OperState::Unknown,
            alias: None,
            peer_index: None,
            master: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name = name.clone(),
                LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
                LinkAttribute::Address(bytes) => info.mac = MacAddr::from_slice(bytes),
                LinkAttribute::OperState(state) => info.oper_state = state.into(),
                LinkAttribute::IfAlias(alias) => info.alias = Some(alias.clone()),
                LinkAttribute::Link(peer) => info.peer_index = Some(*peer),
                LinkAttribute::Controller(master) => info.master = Some(*master),
                LinkAttribute::LinkInfo(infos) => {
                    info.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(kind) => Some(kind_name(kind)),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        info
    }

    /// Whether this is a veth.
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

fn kind_name(kind: &InfoKind) -> String {
    kind.to_string()
}

/// Every interface of the namespace `handle` is in.
pub async fn list(
    handle: &rtnetlink::Handle,
    netns: &Path,
) -> Result<Vec<InterfaceInfo>, IfaceError> {
    let mut links = handle.link().get().execute();
    let mut found = Vec::new();
    loop {
        match links.try_next().await {
            Ok(Some(msg)) => found.push(InterfaceInfo::from_message(&msg)),
            Ok(None) => return Ok(found),
            Err(err) => {
                return Err(IfaceError::Link {
                    action: "list",
                    ifname: String::new(),
                    netns: netns.to_path_buf(),
                    source: netlink_io(err),
                })
            }
        }
    }
}

/// Looks an interface up by name through `handle`; `Ok(None)` when it does not exist.
pub async fn get_by_name(
    handle: &rtnetlink::Handle,
    netns: &Path,
    name: &str,
) -> Result<Option<InterfaceInfo>, IfaceError> {
    let result = handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await;
    match result {
        Ok(msg) => Ok(msg.as_ref().map(InterfaceInfo::from_message)),
        Err(err) => {
            let source = netlink_io(err);
            if source.raw_os_error() == Some(Errno::ENODEV as i32) {
                Ok(None)
            } else {
                Err(IfaceError::Link {
                    action: "look up",
                    ifname: name.to_string(),
                    netns: netns.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Reads one interface of the given namespace (for the node's namespace: the MTU check of the
/// transport interface and of OVS ports). `Ok(None)` when it does not exist.
pub async fn interface_info(ns: &Netns, name: &str) -> Result<Option<InterfaceInfo>, IfaceError> {
    let handle = ns.rtnetlink().await?;
    get_by_name(&handle, ns.path(), name).await
}
