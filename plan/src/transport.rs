//! The transport interface: which host interface carries the node's pod traffic (by name, else
//! by CIDR, else the one holding the node IP). Pure: the caller reads the interfaces.

use std::net::IpAddr;

use ipnet::IpNet;

/// A host interface as the transport-interface choice sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses with prefix lengths.
    pub addrs: Vec<IpNet>,
}

/// How the transport interface is chosen (config keys `transportInterface`,
/// `transportInterfaceCIDRs`, else the interface holding the node IP).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportSelector {
    /// Explicit interface name.
    pub name: Option<String>,
    /// CIDRs: the first interface with an address inside one of them.
    pub cidrs: Vec<IpNet>,
    /// The node's IP (from the Node object).
    pub node_ip: Option<IpAddr>,
}

/// Why no transport interface was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// `transportInterface` names a missing interface.
    #[error("transportInterface {0:?} does not exist")]
    NoSuchInterface(String),
    /// No interface has an address in `transportInterfaceCIDRs`.
    #[error("no interface has an address in transportInterfaceCIDRs {0}")]
    NoneInCidrs(String),
    /// No interface holds the node IP.
    #[error("no interface holds the node IP {0}")]
    NoneWithNodeIp(IpAddr),
    /// Nothing to choose by.
    #[error("cannot choose a transport interface: no transportInterface, transportInterfaceCIDRs or node IP")]
    NothingToChooseBy,
}

/// Chooses the transport interface: by name, else by CIDR, else the one holding the node IP.
pub fn select_transport<'a>(
    selector: &TransportSelector,
    interfaces: &'a [HostInterface],
) -> Result<&'a HostInterface, TransportError> {
    if let Some(name) = &selector.name {
        return interfaces
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| TransportError::NoSuchInterface(name.clone()));
    }
    if !selector.cidrs.is_empty() {
        return interfaces
            .iter()
            .find(|i| {
                i.addrs
                    .iter()
                    .any(|a| selector.cidrs.iter().any(|c| c.contains(&a.addr())))
            })
            .ok_or_else(|| {
                let cidrs: Vec<String> = selector.cidrs.iter().map(IpNet::to_string).collect();
                TransportError::NoneInCidrs(cidrs.join(","))
            });
    }
    if let Some(ip) = selector.node_ip {
        return interfaces
            .iter()
            .find(|i| i.addrs.iter().any(|a| a.addr() == ip))
            .ok_or(TransportError::NoneWithNodeIp(ip));
    }
    Err(TransportError::NothingToChooseBy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mtu: u32, addrs: &[&str]) -> HostInterface {
        HostInterface {
            name: name.into(),
            mtu,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn transport_interface_choice_order() {
        let ifs = [
            iface("eth0", 1500, &["192.168.1.10/24"]),
            iface("eth1", 9000, &["10.0.0.5/16", "fd00::5/64"]),
        ];
        let by_name = TransportSelector {
            name: Some("eth1".into()),
            cidrs: vec!["192.168.1.0/24".parse().unwrap()],
            node_ip: Some("192.168.1.10".parse().unwrap()),
        };
        assert_eq!(select_transport(&by_name, &ifs).unwrap().name, "eth1");
        let by_cidr = TransportSelector {
            name: None,
            cidrs: vec!["fd00::/64".parse().unwrap()],
            node_ip: Some("192.168.1.10".parse().unwrap()),
        };
        assert_eq!(select_transport(&by_cidr, &ifs).unwrap().name, "eth1");
        let by_ip = TransportSelector {
            node_ip: Some("192.168.1.10".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(select_transport(&by_ip, &ifs).unwrap().name, "eth0");
        assert_eq!(
            select_transport(
                &TransportSelector {
                    name: Some("eth9".into()),
                    ..Default::default()
                },
                &ifs
            ),
            Err(TransportError::NoSuchInterface("eth9".into()))
        );
        assert!(matches!(
            select_transport(&TransportSelector::default(), &ifs),
            Err(TransportError::NothingToChooseBy)
        ));
    }
}
