//! The ADD result in its 1.1.0 shape, and its conversion to and from the older shapes.
//!
//! Conversion rules (1.1.0 is the internal shape; the agent always returns it):
//! - to 1.0.0 / 1.1.0: unchanged (1.0.0 readers ignore the 1.1 additions, as libcni's shared
//!   1.x type does).
//! - to 0.3.0 / 0.3.1 / 0.4.0: every `ips[]` entry gains `"version": "4"|"6"` derived from its
//!   address; interfaces keep only `name`, `mac`, `sandbox`; routes keep only `dst`, `gw`.
//!   `gateway`, `interface` (index) and `dns` are the same in all versions.
//! - from any version (a `prevResult`): `version` is dropped, unknown keys are ignored.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{code, CniError};
use crate::version::{CniVersion, ResultFormat};

/// Errors in results.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// A `prevResult` could not be decoded.
    #[error("failed to decode prevResult: {0}")]
    Decode(#[source] serde_json::Error),
    /// An `ips[].interface` index points past the `interfaces` list.
    #[error("ips[{ip}] refers to interface {index} but the result has {count} interfaces")]
    BadInterfaceIndex {
        /// Position of the IP entry.
        ip: usize,
        /// The index it carries.
        index: usize,
        /// How many interfaces the result has.
        count: usize,
    },
    /// A gateway's address family differs from its address's.
    #[error("ips[{ip}] has gateway {gateway} of another address family than {address}")]
    GatewayFamily {
        /// Position of the IP entry.
        ip: usize,
        /// The address.
        address: IpNet,
        /// The gateway.
        gateway: IpAddr,
    },
}

impl From<ResultError> for CniError {
    fn from(err: ResultError) -> Self {
        match err {
            ResultError::Decode(e) => CniError::new(
                code::DECODING_FAILURE,
                "failed to decode prevResult",
                e.to_string(),
            ),
            other => CniError::new(code::INVALID_NETWORK_CONFIG, other.to_string(), ""),
        }
    }
}

/// An ADD result in the 1.1.0 shape, without `cniVersion` (added on output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces created by the attachment, host side included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned by the attachment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes created by the attachment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, e.g. `"0a:58:0a:f4:00:05"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container interfaces; `None` for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Socket of a vhost-user style interface (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI id of a device interface (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. `10.244.1.5/24`.
    pub address: IpNet,
    /// Default gateway of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop; when absent the matching `ips[].gateway` may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Path MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Route priority, lower wins (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope: 0 global, 253 link, 254 host (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// DNS settings of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether no DNS setting is present.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Decodes a result of any supported version (a `prevResult`) into the 1.1.0 shape.
    pub fn decode(value: &serde_json::Value) -> Result<Self, ResultError> {
        if !value.is_object() {
            return Err(ResultError::Decode(serde::de::Error::custom(
                "prevResult is not a JSON object",
            )));
        }
        // `version` in 0.x ips and `cniVersion` are unknown keys to the 1.1 shape: ignored.
        let result = Self::deserialize(value).map_err(ResultError::Decode)?;
        result.validate()?;
        Ok(result)
    }

    /// Checks internal consistency: interface indexes and gateway families.
    pub fn validate(&self) -> Result<(), ResultError> {
        for (i, ip) in self.ips.iter().enumerate() {
            if let Some(index) = ip.interface {
                if index >= self.interfaces.len() {
                    return Err(ResultError::BadInterfaceIndex {
                        ip: i,
                        index,
                        count: self.interfaces.len(),
                    });
                }
            }
            if let Some(gateway) = ip.gateway {
                if gateway.is_ipv4() != ip.address.addr().is_ipv4() {
                    return Err(ResultError::GatewayFamily {
                        ip: i,
                        address: ip.address,
                        gateway,
                    });
                }
            }
        }
        Ok(())
    }

    /// A copy holding only the fields CNI 1.0.0 defines (no interface `mtu`/`socketPath`/`pciID`,
    /// no route `mtu`/`advmss`/`priority`/`table`/`scope`).
    pub fn without_1_1_fields(&self) -> CniResult {
        let mut result = self.clone();
        for interface in &mut result.interfaces {
            interface.mtu = None;
            interface.socket_path = None;
            interface.pci_id = None;
        }
        for route in &mut result.routes {
            route.mtu = None;
            route.advmss = None;
            route.priority = None;
            route.table = None;
            route.scope = None;
        }
        result
    }

    /// The result as JSON in `version`'s shape, `cniVersion` included.
    pub fn encode(&self, version: CniVersion) -> serde_json::Value {
        let encoded = match version.result_format() {
            ResultFormat::V1_1 => serde_json::to_value(Envelope {
                cni_version: version,
                result: self,
            }),
            // libcni 1.1.x and the reference plugins 1.1.x decode 1.0.0 results strictly
            // enough that 1.1-only keys do not belong there: send only the 1.0.0 fields.
            ResultFormat::V1_0 => serde_json::to_value(Envelope {
                cni_version: version,
                result: &self.without_1_1_fields(),
            }),
            ResultFormat::V0_4 => serde_json::to_value(Envelope {
                cni_version: version,
                result: &Result04::from(self),
            }),
        };
        // Serialising plain structs of strings, numbers and addresses cannot fail.
        encoded.unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Serialize)]
struct Envelope<'a, R: Serialize> {
    #[serde(rename = "cniVersion")]
    cni_version: CniVersion,
    #[serde(flatten)]
    result: &'a R,
}

/// The 0.3.x/0.4.0 result shape.
#[derive(Serialize)]
struct Result04<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface04<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<IpConfig04<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route04<'a>>,
    #[serde(skip_serializing_if = "Dns::is_empty")]
    dns: &'a Dns,
}

#[derive(Serialize)]
struct Interface04<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
}

#[derive(Serialize)]
struct IpConfig04<'a> {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: &'a IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<&'a IpAddr>,
}

#[derive(Serialize)]
struct Route04<'a> {
    dst: &'a IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<&'a IpAddr>,
}

impl<'a> From<&'a CniResult> for Result04<'a> {
    fn from(r: &'a CniResult) -> Self {
        Self {
            interfaces: r
                .interfaces
                .iter()
                .map(|i| Interface04 {
                    name: &i.name,
                    mac: i.mac.as_deref(),
                    sandbox: i.sandbox.as_deref(),
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| IpConfig04 {
                    version: match ip.address {
                        IpNet::V4(_) => "4",
                        IpNet::V6(_) => "6",
                    },
                    interface: ip.interface,
                    address: &ip.address,
                    gateway: ip.gateway.as_ref(),
                })
                .collect(),
            routes: r
                .routes
                .iter()
                .map(|rt| Route04 {
                    dst: &rt.dst,
                    gw: rt.gw.as_ref(),
                })
                .collect(),
            dns: &r.dns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "weft-abc".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1450),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/p".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.5/24".parse().unwrap(),
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:10:244:1::5/64".parse().unwrap(),
                    gateway: Some("fd00:10:244:1::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.244.1.1".parse().unwrap()),
                    mtu: Some(1450),
                    advmss: None,
                    priority: Some(10),
                    table: None,
                    scope: Some(0),
                },
                Route {
                    dst: "::/0".parse().unwrap(),
                    gw: None,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                },
            ],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: None,
                search: vec!["default.svc.cluster.local".into()],
                options: vec![],
            },
        }
    }

    #[test]
    fn encodes_1_1_0_unchanged() {
        let v = sample().encode(CniVersion::V1_1_0);
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "weft-abc", "mac": "02:00:00:00:00:01", "mtu": 1450},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 1450, "sandbox": "/var/run/netns/p"}
                ],
                "ips": [
                    {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
                    {"address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1", "interface": 1}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1450, "priority": 10, "scope": 0},
                    {"dst": "::/0"}
                ],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}
            })
        );
    }

    #[test]
    fn encodes_1_0_0_without_1_1_fields() {
        assert_eq!(
            sample().encode(CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "weft-abc", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/p"}
                ],
                "ips": [
                    {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
                    {"address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1", "interface": 1}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                    {"dst": "::/0"}
                ],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}
            })
        );
    }

    #[test]
    fn encodes_0_x_with_ip_versions_and_without_1_1_fields() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let v = sample().encode(version);
            assert_eq!(
                v,
                json!({
                    "cniVersion": version.as_str(),
                    "interfaces": [
                        {"name": "weft-abc", "mac": "02:00:00:00:00:01"},
                        {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/var/run/netns/p"}
                    ],
                    "ips": [
                        {"version": "4", "address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
                        {"version": "6", "address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1", "interface": 1}
                    ],
                    "routes": [
                        {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                        {"dst": "::/0"}
                    ],
                    "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}
                })
            );
        }
    }

    #[test]
    fn empty_result_has_only_the_version() {
        assert_eq!(
            CniResult::default().encode(CniVersion::V0_3_1),
            json!({"cniVersion": "0.3.1"})
        );
    }

    #[test]
    fn round_trips_through_every_version() {
        for version in CniVersion::ALL {
            let decoded = CniResult::decode(&sample().encode(version)).unwrap();
            if version.result_format() == ResultFormat::V1_1 {
                assert_eq!(decoded, sample());
            } else if version.result_format() == ResultFormat::V1_0 {
                assert_eq!(decoded, sample().without_1_1_fields());
            } else {
                assert_eq!(decoded.ips, sample().ips);
                assert_eq!(
                    decoded.interfaces[1].sandbox.as_deref(),
                    Some("/var/run/netns/p")
                );
                assert_eq!(decoded.interfaces[1].mtu, None);
                assert_eq!(decoded.routes[0].mtu, None);
            }
        }
    }

    #[test]
    fn decode_rejects_bad_prev_results() {
        let bad = [
            (
                json!({"ips": [{"address": "10.0.0.1"}]}),
                code::DECODING_FAILURE,
            ),
            (
                json!({"ips": [{"address": "nonsense/24"}]}),
                code::DECODING_FAILURE,
            ),
            (json!({"interfaces": "eth0"}), code::DECODING_FAILURE),
            (json!([]), code::DECODING_FAILURE),
            (
                json!({"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.1/24", "interface": 1}]}),
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                json!({"ips": [{"address": "10.0.0.1/24", "gateway": "fd00::1"}]}),
                code::INVALID_NETWORK_CONFIG,
            ),
        ];
        for (value, expected) in bad {
            let err: CniError = CniResult::decode(&value).unwrap_err().into();
            assert_eq!(err.code, expected, "{value}");
        }
    }
}
