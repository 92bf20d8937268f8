//! The host gateway as desired state: an OVS internal port with a stable MAC, the plan's gateway
//! MTU and the first address of every pod CIDR. The agent converges OVSDB and the kernel to it.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::mac::MacAddr;
use crate::pod::stable_mac;

/// What the gateway should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Interface (and port) name: config `hostGateway`.
    pub name: String,
    /// Its MAC: stable per node and name.
    pub mac: MacAddr,
    /// Its MTU: the plan's gateway MTU.
    pub mtu: u32,
    /// The first address of every pod CIDR, with the CIDR's prefix length.
    pub addresses: Vec<IpNet>,
}

impl GatewaySpec {
    /// The gateway of node `node_name` for `pod_cidrs`.
    pub fn new(node_name: &str, name: &str, mtu: u32, pod_cidrs: &[IpNet]) -> Self {
        GatewaySpec {
            name: name.to_string(),
            mac: stable_mac(&format!("{node_name}/{name}")),
            mtu,
            addresses: pod_cidrs.iter().filter_map(gateway_address).collect(),
        }
    }

    /// The gateway IPs without prefix lengths.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(IpNet::addr).collect()
    }
}

/// The first host address of `cidr` with its prefix length (`None` for a /32 or /128).
pub fn gateway_address(cidr: &IpNet) -> Option<IpNet> {
    let cidr = cidr.trunc();
    let first = cidr.hosts().find(|ip| *ip != cidr.network())?;
    IpNet::new(first, cidr.prefix_len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_the_first_host_of_each_cidr() {
        let cidrs: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ];
        let spec = GatewaySpec::new("node-a", "weft-gw0", 1450, &cidrs);
        assert_eq!(
            spec.addresses,
            vec![
                "10.244.1.1/24".parse::<IpNet>().unwrap(),
                "fd00:10:244:1::1/64".parse().unwrap()
            ]
        );
        assert_eq!(spec.ips()[0].to_string(), "10.244.1.1");
        assert!(spec.mac.is_local_unicast());
        assert_eq!(spec.mac, GatewaySpec::new("node-a", "weft-gw0", 1, &[]).mac);
        assert_ne!(spec.mac, GatewaySpec::new("node-b", "weft-gw0", 1, &[]).mac);
        assert_eq!(gateway_address(&"10.0.0.0/32".parse().unwrap()), None);
    }
}
