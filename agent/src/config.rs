//! Agent configuration: the YAML file (default [`DEFAULT_PATH`]), its defaults, and a validation
//! step that reports every problem at once, each naming the key and the value.
//!
//! Every key is documented in docs/configuration.md; keep the two in step.

use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::mtu::TrafficMode;

pub use crate::mtu::TunnelType;
pub use crate::ovsdb::DatapathType;

/// Where the agent reads its configuration unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/weft/weft-agent.conf";

/// Lowest pod MTU Weft accepts: the IPv6 minimum link MTU (RFC 8200).
pub const MIN_MTU: u32 = 1280;
/// Highest MTU Weft accepts (OVS and Linux cap device MTUs well below the IPv4 total length).
pub const MAX_MTU: u32 = 65535;

/// Errors loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML for the schema (unknown key, wrong type, ...).
    #[error("cannot parse config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and position.
        message: String,
    },
    /// One or more keys have invalid values; every problem is listed.
    #[error("invalid configuration:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One invalid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key as written in the file (camelCase).
    pub key: &'static str,
    /// The offending value, rendered.
    pub value: String,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}: {}", self.key, self.value, self.reason)
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The agent's configuration file, as written (camelCase keys, unknown keys rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Name of this node's Kubernetes Node object. Empty: the NODE_NAME environment variable,
    /// else the host name.
    pub node_name: String,
    /// Path of a kubeconfig file. Empty: in-cluster configuration.
    pub kubeconfig: String,
    /// Name of the OVS bridge the agent owns.
    pub ovs_bridge: String,
    /// OVS datapath type: `system` (kernel module) or `netdev` (userspace).
    pub ovs_datapath_type: DatapathType,
    /// OVS run directory: holds `db.sock` and the bridge management sockets (`BRIDGE.mgmt`).
    pub ovs_run_dir: PathBuf,
    /// Name of the host gateway interface (an OVS internal port).
    pub host_gateway: String,
    /// Unix socket the CNI plugin calls.
    pub cni_socket: PathBuf,
    /// Unix socket of the agent's local API (weftctl).
    pub api_socket: PathBuf,
    /// Pod MTU. 0: take it from the MTU plan (recommended).
    pub mtu: u32,
    /// Directory for the agent's persistent state (IPAM allocations, journals).
    pub data_dir: PathBuf,
    /// CNI configuration directory; `install-cni` writes `10-weft.conflist` here.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directory; `install-cni` copies the `weft` binary here.
    pub cni_bin_dir: PathBuf,
    /// Plugins chained after Weft in the conflist, in order: `portmap`, `bandwidth`.
    pub cni_chained_plugins: Vec<String>,
    /// Keep `10-weft.conflist` in `cniConfDir` while the agent runs: restore it when it is
    /// missing or altered, and report (log, metric, Node Event, readiness) when a runtime would
    /// load another file instead (default off, so a development agent never writes the host's
    /// CNI directory; the DaemonSet turns it on).
    pub cni_conf_watch: bool,
    /// The `cniVersion` of the conflist `install-cni` writes: `0.3.1`, `0.4.0`, `1.0.0` or
    /// `1.1.0`. Default `1.0.0`, the newest that every maintained runtime reads (libcni 1.1.x in
    /// containerd 1.6/1.7 and podman 4 cannot parse 1.1.0 results; the reference `portmap` 1.1.1
    /// stops at 1.0.0). The plugin answers whatever version a runtime asks in.
    pub cni_version: String,
    /// DNS settings returned in every CNI ADD result (empty: none; kubelet normally writes
    /// the pod's resolv.conf itself).
    pub cni_dns: CniDns,
    /// `HOST:PORT` serving Prometheus metrics at `/metrics` (plain HTTP). Empty: no metrics
    /// endpoint. Prefer a loopback address: the agent runs with host networking.
    pub metrics_bind_address: String,
    /// A file the agent appends its log to (besides stderr), also put in support bundles. Empty:
    /// stderr only.
    pub log_file: String,
    /// How pod traffic crosses nodes: `encap` (tunnel) or `noEncap` (routed on the underlay).
    pub traffic_encap_mode: TrafficEncapMode,
    /// Tunnel protocol in encap mode: `geneve`, `vxlan` or `gre` (IPv4 underlay only).
    pub tunnel_type: TunnelType,
    /// Tunnel UDP destination port. 0: the protocol's default (Geneve 6081, VXLAN 4789);
    /// must be 0 with GRE.
    pub tunnel_port: u16,
    /// Name of the transport interface (carries tunnel / noEncap traffic). Empty: chosen by
    /// `transportInterfaceCIDRs`, else the interface holding the node's InternalIP.
    pub transport_interface: String,
    /// CIDRs: the transport interface is the first one with an address inside one of them.
    #[serde(rename = "transportInterfaceCIDRs")]
    pub transport_interface_cidrs: Vec<String>,
    /// MTU of the transport interface. 0: read it from the interface.
    #[serde(rename = "transportMTU")]
    pub transport_mtu: u32,
    /// Fix the MTU of existing pods whose MTU differs from the plan (both veth ends), live.
    #[serde(rename = "reconcilePodMTU")]
    pub reconcile_pod_mtu: bool,
    /// Do not masquerade pod traffic leaving the cluster.
    #[serde(rename = "noSNAT")]
    pub no_snat: bool,
    /// Period of the host-state reconciler's full resync (routes, rules, neighbours, sysctls,
    /// links), the backstop behind its netlink events: a duration like `30s`, `500ms`, `2m`.
    pub host_resync_interval: String,
    /// NetworkPolicy: how long CNI ADD waits for a new pod's policy to be realized (its Pod
    /// object seen, its policy flows installed) before answering anyway. The pod stays isolated
    /// (fail closed) until its policy is realized, however long that takes; past this wait the
    /// agent logs it and counts it in `weft_policy_pod_object_late_total`. A duration like `10s`.
    pub network_policy_pod_wait: String,
    /// The cluster's Service (ClusterIP) ranges, which the host DNATs (kube-proxy). With them,
    /// NetworkPolicy judges a pod's egress to a Service on the DNATed packet (the real
    /// destination) instead of on the ClusterIP. Empty: Service addresses are judged as any
    /// other address (an egress-isolated pod then needs a rule allowing the ClusterIP).
    #[serde(rename = "serviceCIDRs")]
    pub service_cidrs: Vec<String>,
}

/// The `trafficEncapMode` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficEncapMode {
    /// Pod traffic between nodes goes through a tunnel of `tunnelType`.
    #[default]
    #[serde(rename = "encap")]
    Encap,
    /// Pod traffic between nodes is routed on the underlay.
    #[serde(rename = "noEncap")]
    NoEncap,
}

/// The `cniDns` key: DNS settings for CNI ADD results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CniDns {
    /// Name server IP addresses, in priority order.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: String,
    /// Search domains, in priority order.
    pub search: Vec<String>,
    /// Resolver options (`ndots:5`, ...).
    pub options: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: String::new(),
            kubeconfig: String::new(),
            ovs_bridge: "br-int".into(),
            ovs_datapath_type: DatapathType::System,
            ovs_run_dir: "/var/run/openvswitch".into(),
            host_gateway: "weft-gw0".into(),
            cni_socket: "/var/run/weft/cni.sock".into(),
            api_socket: "/var/run/weft/agent.sock".into(),
            mtu: 0,
            data_dir: "/var/lib/weft".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_chained_plugins: Vec::new(),
            cni_conf_watch: false,
            cni_version: DEFAULT_CNI_VERSION.into(),
            cni_dns: CniDns::default(),
            metrics_bind_address: String::new(),
            log_file: String::new(),
            traffic_encap_mode: TrafficEncapMode::Encap,
            tunnel_type: TunnelType::Geneve,
            tunnel_port: 0,
            transport_interface: String::new(),
            transport_interface_cidrs: Vec::new(),
            transport_mtu: 0,
            reconcile_pod_mtu: false,
            no_snat: false,
            host_resync_interval: "30s".into(),
            network_policy_pod_wait: "10s".into(),
            service_cidrs: Vec::new(),
        }
    }
}

/// The `cniVersion` values the conflist may carry.
pub const CONFLIST_CNI_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The default `cniVersion`: the newest every maintained runtime reads.
pub const DEFAULT_CNI_VERSION: &str = "1.0.0";

impl AgentConfig {
    /// The `cniVersion` key as a version, `None` when it is not one of
    /// [`CONFLIST_CNI_VERSIONS`].
    pub fn conflist_cni_version(&self) -> Option<weft_cni::version::CniVersion> {
        if !CONFLIST_CNI_VERSIONS.contains(&self.cni_version.as_str()) {
            return None;
        }
        self.cni_version.parse().ok()
    }

    /// Reads, parses, fills defaults and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses YAML text (`origin` names it in errors), fills defaults and validates.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        let mut config: AgentConfig = if text.trim().is_empty() || is_only_comments(text) {
            AgentConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|err| ConfigError::Parse {
                path: origin.to_path_buf(),
                message: err.to_string(),
            })?
        };
        config.fill_defaults(|key| std::env::var(key).ok(), hostname);
        config.validate()?;
        Ok(config)
    }

    /// Fills values that depend on the environment: the node name.
    pub fn fill_defaults(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
        hostname: impl Fn() -> Option<String>,
    ) {
        if self.node_name.is_empty() {
            self.node_name = env("NODE_NAME")
                .filter(|n| !n.is_empty())
                .or_else(hostname)
                .unwrap_or_default();
        }
    }

    /// Checks every key and returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &'static str, value: &dyn fmt::Display, reason: &str| {
            problems.push(Problem {
                key,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if !is_dns1123_subdomain(&self.node_name) {
            problem(
                "nodeName",
                &self.node_name,
                "must be a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', at most 253 characters); set it, NODE_NAME, or the host name",
            );
        }
        for (key, value) in [
            ("ovsBridge", &self.ovs_bridge),
            ("hostGateway", &self.host_gateway),
        ] {
            if let Err(reason) = check_ifname(value) {
                problem(key, value, &reason);
            }
        }
        if self.ovs_bridge == self.host_gateway {
            problem(
                "hostGateway",
                &self.host_gateway,
                "must differ from ovsBridge (the bridge's own internal port has the bridge's name)",
            );
        }
        for (key, value) in [
            ("ovsRunDir", &self.ovs_run_dir),
            ("cniSocket", &self.cni_socket),
            ("apiSocket", &self.api_socket),
            ("dataDir", &self.data_dir),
            ("cniConfDir", &self.cni_conf_dir),
            ("cniBinDir", &self.cni_bin_dir),
        ] {
            if !value.is_absolute() {
                problem(key, &value.display(), "must be an absolute path");
            }
        }
        if self.cni_socket == self.api_socket {
            problem(
                "apiSocket",
                &self.api_socket.display(),
                "must differ from cniSocket",
            );
        }
        for plugin in &self.cni_chained_plugins {
            if !crate::cniconf::KNOWN_CHAINED.contains(&plugin.as_str()) {
                problem(
                    "cniChainedPlugins",
                    plugin,
                    "unknown chained plugin (known: portmap, bandwidth)",
                );
            }
        }
        if self.conflist_cni_version().is_none() {
            problem(
                "cniVersion",
                &self.cni_version,
                &format!(
                    "must be one of {} (default {DEFAULT_CNI_VERSION})",
                    CONFLIST_CNI_VERSIONS.join(", ")
                ),
            );
        }
        for server in &self.cni_dns.nameservers {
            if server.parse::<std::net::IpAddr>().is_err() {
                problem("cniDns.nameservers", server, "must be an IP address");
            }
        }
        if !self.metrics_bind_address.is_empty()
            && self
                .metrics_bind_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            problem(
                "metricsBindAddress",
                &self.metrics_bind_address,
                "must be empty (no metrics) or HOST:PORT with an IP address, e.g. 127.0.0.1:9476",
            );
        }
        if !self.log_file.is_empty() && !Path::new(&self.log_file).is_absolute() {
            problem(
                "logFile",
                &self.log_file,
                "must be empty or an absolute path",
            );
        }
        if self.mtu != 0 && !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            problem(
                "mtu",
                &self.mtu,
                &format!("must be 0 (use the MTU plan) or between {MIN_MTU} and {MAX_MTU}"),
            );
        }
        if !self.transport_interface.is_empty() {
            if let Err(reason) = check_ifname(&self.transport_interface) {
                problem("transportInterface", &self.transport_interface, &reason);
            }
        }
        for cidr in &self.transport_interface_cidrs {
            if cidr.parse::<IpNet>().is_err() {
                problem(
                    "transportInterfaceCIDRs",
                    cidr,
                    "must be a CIDR (address/prefix length)",
                );
            }
        }
        if self.transport_mtu != 0 && !(MIN_MTU..=MAX_MTU).contains(&self.transport_mtu) {
            problem(
                "transportMTU",
                &self.transport_mtu,
                &format!(
                    "must be 0 (read it from the interface) or between {MIN_MTU} and {MAX_MTU}"
                ),
            );
        }
        if self.tunnel_type == TunnelType::Gre && self.tunnel_port != 0 {
            problem(
                "tunnelPort",
                &self.tunnel_port,
                "must be 0 with tunnelType gre (GRE has no port)",
            );
        }
        let cidrs: Vec<IpNet> = self.transport_cidrs();
        if self.traffic_encap_mode == TrafficEncapMode::Encap
            && self.tunnel_type == TunnelType::Gre
            && !cidrs.is_empty()
            && cidrs.iter().all(|c| matches!(c, IpNet::V6(_)))
        {
            problem(
                "tunnelType",
                &"gre",
                "needs an IPv4 underlay, but every transportInterfaceCIDRs entry is IPv6",
            );
        }
        match parse_duration(&self.host_resync_interval) {
            Some(d) if d >= std::time::Duration::from_secs(1) => {}
            _ => problem(
                "hostResyncInterval",
                &self.host_resync_interval,
                "must be a duration of at least 1s, like 30s, 1500ms or 2m",
            ),
        }
        for cidr in &self.service_cidrs {
            if cidr.parse::<IpNet>().is_err() {
                problem(
                    "serviceCIDRs",
                    cidr,
                    "must be a CIDR (address/prefix length)",
                );
            }
        }
        if parse_duration(&self.network_policy_pod_wait).is_none() {
            problem(
                "networkPolicyPodWait",
                &self.network_policy_pod_wait,
                "must be a duration, like 10s, 1500ms or 1m",
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The traffic mode for the MTU plan and the pipeline.
    pub fn traffic_mode(&self) -> TrafficMode {
        match self.traffic_encap_mode {
            TrafficEncapMode::Encap => TrafficMode::Encap(self.tunnel_type),
            TrafficEncapMode::NoEncap => TrafficMode::NoEncap,
        }
    }

    /// `serviceCIDRs` parsed (normalized; entries that do not parse are left out, validation
    /// reports them).
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        self.service_cidrs
            .iter()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .map(|n| n.trunc())
            .collect()
    }

    /// `transportInterfaceCIDRs` parsed (entries that do not parse are left out; validation
    /// reports them).
    pub fn transport_cidrs(&self) -> Vec<IpNet> {
        self.transport_interface_cidrs
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }

    /// The tunnel's UDP destination port: `tunnelPort`, else the protocol's default.
    pub fn effective_tunnel_port(&self) -> Option<u16> {
        match self.tunnel_port {
            0 => self.tunnel_type.default_port(),
            port => Some(port),
        }
    }

    /// The ovsdb-server socket inside the OVS run directory.
    pub fn ovsdb_socket(&self) -> PathBuf {
        self.ovs_run_dir.join("db.sock")
    }

    /// The bridge's OpenFlow management socket inside the OVS run directory.
    pub fn bridge_mgmt_socket(&self) -> PathBuf {
        self.ovs_run_dir.join(format!("{}.mgmt", self.ovs_bridge))
    }

    /// `networkPolicyPodWait` as a duration (10 s if it does not parse; validation rejects that).
    pub fn network_policy_pod_wait(&self) -> std::time::Duration {
        parse_duration(&self.network_policy_pod_wait).unwrap_or(std::time::Duration::from_secs(10))
    }

    /// `hostResyncInterval` as a duration (30 s if it does not parse; validation rejects that).
    pub fn host_resync_interval(&self) -> std::time::Duration {
        parse_duration(&self.host_resync_interval).unwrap_or(std::time::Duration::from_secs(30))
    }
}

/// Parses `250ms`, `30s`, `2m`, `1h` (one unsigned integer and one unit).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

fn is_only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---")
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1 to 15 bytes long (a Linux interface name)".into());
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain '/', ':' or whitespace".into());
    }
    Ok(())
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let mut config: AgentConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: "test.conf".into(),
                message: e.to_string(),
            })?;
        config.fill_defaults(|_| None, || Some("node-a".into()));
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_follow_the_documented_values() {
        let config = parse("{}").unwrap();
        assert_eq!(config.node_name, "node-a");
        assert_eq!(config.ovs_bridge, "br-int");
        assert_eq!(config.ovs_datapath_type, DatapathType::System);
        assert_eq!(config.ovs_run_dir, Path::new("/var/run/openvswitch"));
        assert_eq!(config.host_gateway, "weft-gw0");
        assert_eq!(config.cni_socket, Path::new("/var/run/weft/cni.sock"));
        assert_eq!(config.api_socket, Path::new("/var/run/weft/agent.sock"));
        assert_eq!(config.mtu, 0);
        assert_eq!(config.data_dir, Path::new("/var/lib/weft"));
        assert_eq!(
            config.ovsdb_socket(),
            Path::new("/var/run/openvswitch/db.sock")
        );
        assert_eq!(
            config.bridge_mgmt_socket(),
            Path::new("/var/run/openvswitch/br-int.mgmt")
        );
    }

    #[test]
    fn node_name_comes_from_env_before_hostname() {
        let mut config = AgentConfig::default();
        config.fill_defaults(
            |key| (key == "NODE_NAME").then(|| "from-env".to_string()),
            || Some("from-host".into()),
        );
        assert_eq!(config.node_name, "from-env");
        let mut config = AgentConfig {
            node_name: "explicit".into(),
            ..AgentConfig::default()
        };
        config.fill_defaults(|_| Some("from-env".into()), || None);
        assert_eq!(config.node_name, "explicit");
    }

    #[test]
    fn keys_are_camel_case_and_values_parse() {
        let config = parse(
            "nodeName: n1\novsBridge: br-weft\novsDatapathType: netdev\novsRunDir: /tmp/ovs\n\
             hostGateway: gw0\ncniSocket: /tmp/c.sock\napiSocket: /tmp/a.sock\nmtu: 1400\n\
             dataDir: /tmp/data\nkubeconfig: /tmp/kc\n",
        )
        .unwrap();
        assert_eq!(config.ovs_datapath_type, DatapathType::Netdev);
        assert_eq!(config.mtu, 1400);
        assert_eq!(
            config.bridge_mgmt_socket(),
            Path::new("/tmp/ovs/br-weft.mgmt")
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = parse("ovsBrige: br0\n").unwrap_err().to_string();
        assert!(err.contains("ovsBrige"), "{err}");
    }

    #[test]
    fn bad_enum_value_names_the_value() {
        let err = parse("ovsDatapathType: dpdk\n").unwrap_err().to_string();
        assert!(err.contains("dpdk"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            "nodeName: Bad_Name\novsBridge: a-very-long-bridge-name\nhostGateway: 'gw/0'\n\
             ovsRunDir: relative\nmtu: 100\ncniSocket: /x.sock\napiSocket: /x.sock\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err}");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "nodeName",
                "ovsBridge",
                "hostGateway",
                "ovsRunDir",
                "apiSocket",
                "mtu"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("mtu: \"100\""), "{text}");
        assert!(
            text.contains("ovsBridge: \"a-very-long-bridge-name\""),
            "{text}"
        );
    }

    #[test]
    fn cni_dns_parses_and_validates_nameservers() {
        let config =
            parse("cniDns:\n  nameservers: [10.96.0.10]\n  search: [svc.cluster.local]\n").unwrap();
        assert_eq!(config.cni_dns.nameservers, ["10.96.0.10"]);
        assert_eq!(config.cni_dns.search, ["svc.cluster.local"]);
        let err = parse("cniDns:\n  nameservers: [dns.example]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cniDns.nameservers: \"dns.example\""), "{err}");
        assert!(parse("cniDns:\n  nameserver: [1.1.1.1]\n").is_err());
    }

    #[test]
    fn cni_version_defaults_to_one_every_runtime_reads() {
        use weft_cni::version::CniVersion;
        let config = parse("{}").unwrap();
        assert_eq!(config.cni_version, "1.0.0");
        assert_eq!(config.conflist_cni_version(), Some(CniVersion::V1_0_0));
        for (text, version) in [
            ("0.3.1", CniVersion::V0_3_1),
            ("0.4.0", CniVersion::V0_4_0),
            ("1.1.0", CniVersion::V1_1_0),
        ] {
            let config = parse(&format!("cniVersion: \"{text}\"\n")).unwrap();
            assert_eq!(config.conflist_cni_version(), Some(version));
        }
        // 0.3.0 is answered by the plugin but not written: no maintained runtime needs it.
        for bad in ["0.3.0", "1.2.0", "1", "v1.0.0"] {
            let err = parse(&format!("cniVersion: \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("cniVersion: \"{bad}\"")), "{err}");
            assert!(err.contains("0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{err}");
        }
    }

    #[test]
    fn metrics_address_and_log_file() {
        let config =
            parse("metricsBindAddress: 127.0.0.1:9476\nlogFile: /var/log/weft.log\n").unwrap();
        assert_eq!(config.metrics_bind_address, "127.0.0.1:9476");
        assert!(parse("{}").unwrap().metrics_bind_address.is_empty());
        let err = parse("metricsBindAddress: localhost\nlogFile: weft.log\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metricsBindAddress: \"localhost\""), "{err}");
        assert!(err.contains("logFile: \"weft.log\""), "{err}");
    }

    #[test]
    fn mtu_bounds() {
        assert!(parse("mtu: 1280").is_ok());
        assert!(parse("mtu: 9000").is_ok());
        assert!(parse("mtu: 1279").is_err());
        assert!(parse("mtu: 65536").is_err());
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("weft-gw0").is_ok());
        assert!(check_ifname("123456789012345").is_ok());
        assert!(check_ifname("1234567890123456").is_err());
        for bad in ["", ".", "..", "a b", "a/b", "a:b"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn network_policy_keys_parse_and_validate() {
        let config = parse("{}").unwrap();
        assert_eq!(
            config.network_policy_pod_wait(),
            std::time::Duration::from_secs(10)
        );
        assert!(config.service_cidrs().is_empty());
        let config =
            parse("networkPolicyPodWait: 2s\nserviceCIDRs: [10.96.0.1/12, 'fd00:10:96::/112']")
                .unwrap();
        assert_eq!(
            config.network_policy_pod_wait(),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            config.service_cidrs(),
            vec![
                "10.96.0.0/12".parse::<IpNet>().unwrap(),
                "fd00:10:96::/112".parse().unwrap()
            ]
        );
        let err = parse("networkPolicyPodWait: soon\nserviceCIDRs: [nope]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("networkPolicyPodWait"), "{err}");
        assert!(err.contains("serviceCIDRs"), "{err}");
    }

    #[test]
    fn host_resync_interval_parses_and_validates() {
        assert_eq!(
            parse("{}").unwrap().host_resync_interval(),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            parse("hostResyncInterval: 1500ms")
                .unwrap()
                .host_resync_interval(),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("2m"),
            Some(std::time::Duration::from_secs(120))
        );
        for bad in ["", "30", "s", "10x", "999ms", "-1s"] {
            let text = format!("hostResyncInterval: '{bad}'");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("hostResyncInterval"), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_or_comment_only_file_means_defaults() {
        let config = AgentConfig::from_yaml("# nothing\n---\n", Path::new("x")).unwrap();
        assert_eq!(config.ovs_bridge, "br-int");
    }

    #[test]
    fn traffic_mode_keys_parse_with_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config.traffic_encap_mode, TrafficEncapMode::Encap);
        assert_eq!(config.tunnel_type, TunnelType::Geneve);
        assert_eq!(config.traffic_mode().to_string(), "encap/geneve");
        assert_eq!(config.effective_tunnel_port(), Some(6081));
        assert_eq!(
            (
                config.tunnel_port,
                config.transport_mtu,
                config.reconcile_pod_mtu,
                config.no_snat
            ),
            (0, 0, false, false)
        );
        let config = parse(
            "trafficEncapMode: noEncap\ntunnelType: vxlan\ntunnelPort: 8472\n\
             transportInterface: eth1\ntransportInterfaceCIDRs: [192.168.60.0/24]\n\
             transportMTU: 9000\nreconcilePodMTU: true\nnoSNAT: true\n",
        )
        .unwrap();
        assert_eq!(config.traffic_mode(), TrafficMode::NoEncap);
        assert_eq!(config.tunnel_type, TunnelType::Vxlan);
        assert_eq!(config.effective_tunnel_port(), Some(8472));
        assert_eq!(
            config.transport_cidrs(),
            ["192.168.60.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(config.transport_mtu, 9000);
        assert!(config.reconcile_pod_mtu && config.no_snat);
        let gre = parse("tunnelType: gre\n").unwrap();
        assert_eq!(gre.effective_tunnel_port(), None);
    }

    #[test]
    fn traffic_mode_problems_name_key_and_value() {
        let err = parse("trafficEncapMode: tunnel\n").unwrap_err().to_string();
        assert!(err.contains("tunnel"), "{err}");
        // The mode names are case-sensitive, as documented.
        let err = parse("trafficEncapMode: noencap\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("noencap"), "{err}");
        let err = parse("tunnelType: ipip\n").unwrap_err().to_string();
        assert!(err.contains("ipip"), "{err}");
        let err = parse(
            "tunnelType: gre\ntunnelPort: 99\ntransportInterface: 'a b'\n\
             transportInterfaceCIDRs: [fd00::/64, nope]\ntransportMTU: 100\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err}");
        };
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.key, p.value.as_str())).collect();
        assert_eq!(
            found,
            [
                ("transportInterface", "a b"),
                ("transportInterfaceCIDRs", "nope"),
                ("transportMTU", "100"),
                ("tunnelPort", "99"),
                ("tunnelType", "gre"),
            ]
        );
    }
}
