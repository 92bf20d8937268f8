//! Pod attachments as the CNI server remembers them, and their durable form: the `external_ids`
//! of the pod's OVS port; and [`Owner`], who holds an IPAM address.
//!
//! The agent keeps no pod database of its own. Every attachment is written onto its OVS port when
//! the port is created, so after an agent restart the store is rebuilt from OVSDB
//! ([`PodRecord::from_external_ids`]) and IPAM is reconciled against it. Encoding and decoding are
//! pure and unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
pub use crate::names::{
    KEY_CONTAINER_ID, KEY_IFNAME, KEY_IPS, KEY_MAC, KEY_NAME, KEY_NAMESPACE, KEY_NETNS,
};
use crate::names::{OWNER_KEY, OWNER_VALUE};

/// Who holds an IPAM address: one attachment (container id + interface).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Container id from the runtime.
    pub container_id: String,
    /// Interface name inside the pod.
    pub ifname: String,
    /// "namespace/name" of the pod, for humans; not part of identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
}

impl Owner {
    /// Whether both name the same attachment (the pod name is not part of identity).
    pub fn same_attachment(&self, other: &Owner) -> bool {
        self.container_id == other.container_id && self.ifname == other.ifname
    }
}

/// One pod attachment (container id + interface) wired by this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// Kubernetes namespace (empty when the runtime gave none).
    pub namespace: String,
    /// Kubernetes name (the container id when the runtime gave none).
    pub name: String,
    /// The runtime's container id.
    pub container_id: String,
    /// Interface name inside the pod.
    pub ifname: String,
    /// Host end of the veth, also the OVS port name.
    pub host_ifname: String,
    /// The pod's network namespace path.
    pub netns: String,
    /// The pod's addresses with the prefix length of their pod CIDR.
    pub ips: Vec<IpNet>,
    /// MAC of the pod's interface.
    pub mac: MacAddr,
    /// OpenFlow port of the host end; `None` while OVS has none (interface gone).
    pub ofport: Option<u32>,
}

/// Why an OVS port's external_ids do not describe a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A key is missing.
    #[error("port {port}: external_ids lack {key}")]
    Missing {
        /// The port.
        port: String,
        /// The key.
        key: &'static str,
    },
    /// A value does not parse.
    #[error("port {port}: external_ids {key}={value:?} is invalid")]
    Invalid {
        /// The port.
        port: String,
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
    },
}

impl PodRecord {
    /// `namespace/name`, for logs and messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The IPAM owner of this attachment.
    pub fn owner(&self) -> Owner {
        Owner {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            pod: self.key(),
        }
    }

    /// Whether this record is the attachment `(container_id, ifname)`.
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    /// The addresses without prefix lengths.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.ips.iter().map(IpNet::addr).collect()
    }

    /// The external_ids written on the pod's OVS port (and interface).
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        let ips: Vec<String> = self.ips.iter().map(IpNet::to_string).collect();
        [
            (OWNER_KEY, OWNER_VALUE.to_string()),
            (KEY_NAMESPACE, self.namespace.clone()),
            (KEY_NAME, self.name.clone()),
            (KEY_CONTAINER_ID, self.container_id.clone()),
            (KEY_IFNAME, self.ifname.clone()),
            (KEY_IPS, ips.join(",")),
            (KEY_MAC, self.mac.to_string()),
            (KEY_NETNS, self.netns.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Whether a port's external_ids mark it as a Weft pod port (so it is worth decoding).
    pub fn is_pod_port(ids: &BTreeMap<String, String>) -> bool {
        ids.get(OWNER_KEY).map(String::as_str) == Some(OWNER_VALUE)
            && ids.contains_key(KEY_CONTAINER_ID)
    }

    /// Rebuilds a record from the external_ids of port `port` and its OpenFlow port.
    pub fn from_external_ids(
        port: &str,
        ids: &BTreeMap<String, String>,
        ofport: Option<i64>,
    ) -> Result<Self, RecordError> {
        let get = |key: &'static str| {
            ids.get(key).cloned().ok_or_else(|| RecordError::Missing {
                port: port.to_string(),
                key,
            })
        };
        let invalid = |key: &'static str, value: &str| RecordError::Invalid {
            port: port.to_string(),
            key,
            value: value.to_string(),
        };
        let ips_text = get(KEY_IPS)?;
        let ips = ips_text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>().map_err(|_| invalid(KEY_IPS, &ips_text)))
            .collect::<Result<Vec<_>, _>>()?;
        if ips.is_empty() {
            return Err(invalid(KEY_IPS, &ips_text));
        }
        let mac_text = get(KEY_MAC)?;
        let mac = MacAddr::parse(&mac_text).ok_or_else(|| invalid(KEY_MAC, &mac_text))?;
        let container_id = get(KEY_CONTAINER_ID)?;
        if container_id.is_empty() {
            return Err(invalid(KEY_CONTAINER_ID, ""));
        }
        Ok(PodRecord {
            namespace: get(KEY_NAMESPACE)?,
            name: get(KEY_NAME)?,
            container_id,
            ifname: get(KEY_IFNAME)?,
            host_ifname: port.to_string(),
            netns: ids.get(KEY_NETNS).cloned().unwrap_or_default(),
            ips,
            mac,
            ofport: ofport
                .filter(|p| *p > 0)
                .and_then(|p| u32::try_from(p).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PodRecord {
        PodRecord {
            namespace: "default".into(),
            name: "web-0".into(),
            container_id: "c0ffee".into(),
            ifname: "eth0".into(),
            host_ifname: "wfweb0-abcdef".into(),
            netns: "/var/run/netns/cni-1".into(),
            ips: vec![
                "10.244.1.5/24".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
            mac: MacAddr([0x0a, 0x58, 0, 0, 0, 5]),
            ofport: Some(7),
        }
    }

    #[test]
    fn external_ids_round_trip() {
        let r = record();
        let ids = r.external_ids();
        assert!(PodRecord::is_pod_port(&ids));
        assert_eq!(ids[KEY_IPS], "10.244.1.5/24,fd00::5/64");
        assert_eq!(ids[KEY_MAC], "0a:58:00:00:00:05");
        let back = PodRecord::from_external_ids("wfweb0-abcdef", &ids, Some(7)).unwrap();
        assert_eq!(back, r);
        let gone = PodRecord::from_external_ids("wfweb0-abcdef", &ids, Some(-1)).unwrap();
        assert_eq!(gone.ofport, None);
    }

    #[test]
    fn bad_external_ids_name_the_key_and_value() {
        let mut ids = record().external_ids();
        ids.insert(KEY_MAC.into(), "zz:00".into());
        assert_eq!(
            PodRecord::from_external_ids("p", &ids, None)
                .unwrap_err()
                .to_string(),
            "port p: external_ids weft-mac=\"zz:00\" is invalid"
        );
        ids.remove(KEY_IFNAME);
        ids.insert(KEY_MAC.into(), "02:00:00:00:00:01".into());
        assert_eq!(
            PodRecord::from_external_ids("p", &ids, None)
                .unwrap_err()
                .to_string(),
            "port p: external_ids lack weft-ifname"
        );
        ids.insert(KEY_IFNAME.into(), "eth0".into());
        ids.insert(KEY_IPS.into(), "".into());
        assert!(PodRecord::from_external_ids("p", &ids, None).is_err());
        let foreign = BTreeMap::from([("iface-id".to_string(), "x".to_string())]);
        assert!(!PodRecord::is_pod_port(&foreign));
    }
}
