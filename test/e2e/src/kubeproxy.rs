//! A stand-in for kube-proxy in its `iptables` mode: from Service and EndpointSlice-like data,
//! the rules kube-proxy **v1.30** writes (`--proxy-mode=iptables`, `--cluster-cidr` set, default
//! `--iptables-masquerade-bit=14`, iptables >= 1.6.2 so `MASQUERADE --random-fully`), loaded into a
//! node's network namespace with `iptables-restore` (iptables-nft on Debian 12: real nf_tables
//! in the kernel, and the real conntrack/NAT).
//!
//! kube-proxy cannot run on these machines (no API server it could use); its rules can. This is
//! the second stand-in the issue allows, next to the test API server. The rule text is taken
//! from kube-proxy v1.30's `pkg/proxy/iptables/proxier.go` (`syncProxyRules`,
//! `writeServiceToEndpointRules`, `servicePortPolicyClusterChain` & co.) and its golden tests
//! (`proxier_test.go`, `TestOverallIPTablesRules`): same chains, names (`KUBE-SVC-`/`KUBE-SVL-`/
//! `KUBE-EXT-`/`KUBE-SEP-` + the first 16 base32 characters of a SHA-256), comments, argument
//! order, and `--probability` format (`%0.10f`). The jumps from the built-in chains are
//! prepended with `iptables -I` as kube-proxy's `EnsureRule(Prepend, ...)` does; the `KUBE-*`
//! chains go in one `iptables-restore --noflush` as its sync does.
//!
//! Not modelled: session affinity (`-m recent`), `loadBalancerSourceRanges` (`KUBE-FW-`),
//! health-check node ports, topology hints, terminating endpoints, `--nodeport-addresses`,
//! the KUBE-PROXY-CANARY / KUBE-IPTABLES-HINT chains (markers, no traffic effect).

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::netns;

/// `--iptables-masquerade-bit=14`: kube-proxy's masquerade mark.
pub const MASQ_MARK: &str = "0x4000";

/// A Service port's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// kube-proxy's lower-case name (`tcp`, `udp`), also the iptables match name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any endpoint of the cluster (masqueraded).
    #[default]
    Cluster,
    /// Only endpoints on the receiving node (client source kept).
    Local,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (may be empty for a single-port Service).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service port (on the cluster IP).
    pub port: u16,
    /// `nodePort` (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// A Service, reduced to what kube-proxy's iptables mode reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.clusterIPs` (one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalTrafficPolicy` (NodePort / LoadBalancer / external IPs).
    pub external_traffic_policy: TrafficPolicy,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `nodeName`.
    pub node_name: String,
}

/// An EndpointSlice of a Service (`kubernetes.io/service-name`), one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// Ports: (name, protocol, target port number).
    pub ports: Vec<(String, Protocol, u16)>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// How kube-proxy was started on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `--hostname-override` / the node name (for `externalTrafficPolicy: Local`).
    pub node_name: String,
    /// `--cluster-cidr` of this family (the local-traffic detector, `LocalModeClusterCIDR`).
    pub cluster_cidr: IpNet,
}

/// The first 16 characters of the base32 (RFC 4648, with padding alphabet) SHA-256 of `s`, as
/// kube-proxy's `portProtoHash` / `servicePortEndpointChainName` compute them.
pub fn hash16(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 && out.len() < 16 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
        if out.len() == 16 {
            break;
        }
    }
    out
}

/// `ns/name:port` (`ns/name` when the port has no name): `ServicePortName.String()`.
fn service_port_name(svc: &Service, port: &ServicePort) -> String {
    if port.name.is_empty() {
        format!("{}/{}", svc.namespace, svc.name)
    } else {
        format!("{}/{}:{}", svc.namespace, svc.name, port.name)
    }
}

/// `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` + `portProtoHash(name, protocol)`.
pub fn chain(prefix: &str, svc: &Service, port: &ServicePort) -> String {
    format!(
        "{prefix}{}",
        hash16(&format!(
            "{}{}",
            service_port_name(svc, port),
            port.protocol.name()
        ))
    )
}

/// `KUBE-SEP-` + hash of name, protocol and `ip:port` (`[ip6]:port` for IPv6).
pub fn sep_chain(svc: &Service, port: &ServicePort, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!(
            "{}{}{endpoint}",
            service_port_name(svc, port),
            port.protocol.name()
        ))
    )
}

fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// An argument as kube-proxy quotes it in restore input (comments with spaces are quoted).
fn quote(s: &str) -> String {
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s.to_string()
    }
}

/// The rules of one address family: the jumps from the built-in chains (`(table, chain,
/// args)`, prepended by [`apply`]) and the `iptables-restore` input of the `KUBE-*` chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `(table, built-in chain, rule args)` in kube-proxy's `iptablesJumpChains` order.
    pub jumps: Vec<(&'static str, &'static str, Vec<String>)>,
    /// `iptables-restore --noflush` input.
    pub restore: String,
}

/// The rules kube-proxy v1.30 writes for `services` and `slices` of `cfg`'s family.
pub fn rules(cfg: &ProxyConfig, services: &[Service], slices: &[EndpointSlice]) -> Rules {
    let v6 = matches!(cfg.cluster_cidr, IpNet::V6(_));
    let same_family = |ip: &IpAddr| ip.is_ipv6() == v6;
    let cidr = cfg.cluster_cidr.trunc().to_string();
    let jumps: Vec<(&'static str, &'static str, Vec<String>)> = [
        (
            "filter",
            "INPUT",
            "KUBE-EXTERNAL-SERVICES",
            "kubernetes externally-visible service portals",
            true,
        ),
        (
            "filter",
            "FORWARD",
            "KUBE-EXTERNAL-SERVICES",
            "kubernetes externally-visible service portals",
            true,
        ),
        (
            "filter",
            "INPUT",
            "KUBE-NODEPORTS",
            "kubernetes health check service ports",
            false,
        ),
        (
            "filter",
            "FORWARD",
            "KUBE-SERVICES",
            "kubernetes service portals",
            true,
        ),
        (
            "filter",
            "OUTPUT",
            "KUBE-SERVICES",
            "kubernetes service portals",
            true,
        ),
        (
            "filter",
            "FORWARD",
            "KUBE-FORWARD",
            "kubernetes forwarding rules",
            false,
        ),
        (
            "filter",
            "INPUT",
            "KUBE-PROXY-FIREWALL",
            "kubernetes load balancer firewall",
            true,
        ),
        (
            "filter",
            "OUTPUT",
            "KUBE-PROXY-FIREWALL",
            "kubernetes load balancer firewall",
            true,
        ),
        (
            "filter",
            "FORWARD",
            "KUBE-PROXY-FIREWALL",
            "kubernetes load balancer firewall",
            true,
        ),
        (
            "nat",
            "OUTPUT",
            "KUBE-SERVICES",
            "kubernetes service portals",
            false,
        ),
        (
            "nat",
            "PREROUTING",
            "KUBE-SERVICES",
            "kubernetes service portals",
            false,
        ),
        (
            "nat",
            "POSTROUTING",
            "KUBE-POSTROUTING",
            "kubernetes postrouting rules",
            false,
        ),
    ]
    .into_iter()
    .map(|(table, src, dst, comment, new_only)| {
        let mut args = Vec::new();
        if new_only {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
        }
        args.extend(["-m", "comment", "--comment", comment, "-j", dst].map(String::from));
        (table, src, args)
    })
    .collect();

    let mut filter_chains = vec![
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    let mut filter = String::new();
    let mut nat_chains: Vec<String> = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut nat = String::new();
    let mut nat_services = String::new();
    let mut nat_nodeports = String::new();
    // KUBE-FORWARD (filter), KUBE-POSTROUTING and KUBE-MARK-MASQ (nat): proxier.go's fixed rules.
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    );
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(nat, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");

    for svc in services {
        let Some(cluster_ip) = svc.cluster_ips.iter().copied().find(same_family) else {
            continue;
        };
        for port in &svc.ports {
            let name = service_port_name(svc, port);
            let proto = port.protocol.name();
            // Ready endpoints of this port and family, in slice order.
            let endpoints: Vec<(String, bool)> = slices
                .iter()
                .filter(|s| s.namespace == svc.namespace && s.service == svc.name)
                .flat_map(|s| {
                    let target = s
                        .ports
                        .iter()
                        .find(|(n, p, _)| *n == port.name && *p == port.protocol)
                        .map(|(_, _, t)| *t);
                    s.endpoints.iter().filter_map(move |e| {
                        let t = target?;
                        (e.ready && same_family(&e.address))
                            .then(|| (join_host_port(e.address, t), e.node_name == cfg.node_name))
                    })
                })
                .collect();
            let externally = port.node_port.is_some() || !svc.load_balancer_ips.is_empty();
            let etp_local = externally && svc.external_traffic_policy == TrafficPolicy::Local;
            let cluster_eps: Vec<&String> = endpoints.iter().map(|(e, _)| e).collect();
            let local_eps: Vec<&String> = endpoints
                .iter()
                .filter(|(_, l)| *l)
                .map(|(e, _)| e)
                .collect();
            let svc_chain = chain("KUBE-SVC-", svc, port);
            let svl_chain = chain("KUBE-SVL-", svc, port);
            let ext_chain = chain("KUBE-EXT-", svc, port);
            let uses_cluster = !cluster_eps.is_empty();
            let uses_local = etp_local && !local_eps.is_empty();
            let has_external_endpoints = if etp_local { uses_local } else { uses_cluster };
            let cluster_ip_s = cluster_ip.to_string();

            if cluster_eps.is_empty() {
                let _ = writeln!(
                    filter,
                    "-A KUBE-SERVICES -m comment --comment {} -m {proto} -p {proto} -d {cluster_ip_s} --dport {} -j REJECT",
                    quote(&format!("{name} has no endpoints")),
                    port.port
                );
            } else {
                let _ = writeln!(
                    nat_services,
                    "-A KUBE-SERVICES -m comment --comment {} -m {proto} -p {proto} -d {cluster_ip_s} --dport {} -j {svc_chain}",
                    quote(&format!("{name} cluster IP")),
                    port.port
                );
            }
            if externally && !has_external_endpoints {
                // "has no endpoints" (Cluster) or "has no local endpoints" (Local): drop/reject
                // external traffic in the filter table.
                let (what, verdict) = if cluster_eps.is_empty() {
                    ("has no endpoints", "REJECT")
                } else {
                    ("has no local endpoints", "DROP")
                };
                for lb in svc.load_balancer_ips.iter().filter(|ip| same_family(ip)) {
                    let _ = writeln!(
                        filter,
                        "-A KUBE-EXTERNAL-SERVICES -m comment --comment {} -m {proto} -p {proto} -d {lb} --dport {} -j {verdict}",
                        quote(&format!("{name} {what}")),
                        port.port
                    );
                }
                if let Some(np) = port.node_port {
                    let _ = writeln!(
                        filter,
                        "-A KUBE-EXTERNAL-SERVICES -m comment --comment {} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {verdict}",
                        quote(&format!("{name} {what}"))
                    );
                }
            }
            if externally && uses_cluster {
                for lb in svc.load_balancer_ips.iter().filter(|ip| same_family(ip)) {
                    let _ = writeln!(
                        nat_services,
                        "-A KUBE-SERVICES -m comment --comment {} -m {proto} -p {proto} -d {lb} --dport {} -j {ext_chain}",
                        quote(&format!("{name} loadbalancer IP")),
                        port.port
                    );
                }
                if let Some(np) = port.node_port {
                    let _ = writeln!(
                        nat_nodeports,
                        "-A KUBE-NODEPORTS -m comment --comment {} -m {proto} -p {proto} --dport {np} -j {ext_chain}",
                        quote(&name)
                    );
                }
                nat_chains.push(ext_chain.clone());
                if !etp_local {
                    let _ = writeln!(
                        nat,
                        "-A {ext_chain} -m comment --comment {} -j KUBE-MARK-MASQ",
                        quote(&format!(
                            "masquerade traffic for {name} external destinations"
                        ))
                    );
                } else {
                    let _ = writeln!(
                        nat,
                        "-A {ext_chain} -m comment --comment {} -s {cidr} -j {svc_chain}",
                        quote(&format!("pod traffic for {name} external destinations"))
                    );
                    let _ = writeln!(
                        nat,
                        "-A {ext_chain} -m comment --comment {} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                        quote(&format!("masquerade LOCAL traffic for {name} external destinations"))
                    );
                    let _ = writeln!(
                        nat,
                        "-A {ext_chain} -m comment --comment {} -m addrtype --src-type LOCAL -j {svc_chain}",
                        quote(&format!("route LOCAL traffic for {name} external destinations"))
                    );
                }
                if has_external_endpoints {
                    let policy = if etp_local { &svl_chain } else { &svc_chain };
                    let _ = writeln!(nat, "-A {ext_chain} -j {policy}");
                }
            }
            if uses_cluster {
                nat_chains.push(svc_chain.clone());
                let _ = writeln!(
                    nat,
                    "-A {svc_chain} -m comment --comment {} -m {proto} -p {proto} -d {cluster_ip_s} --dport {} ! -s {cidr} -j KUBE-MARK-MASQ",
                    quote(&format!("{name} cluster IP")),
                    port.port
                );
                write_endpoint_rules(&mut nat, svc, port, &name, &svc_chain, &cluster_eps);
            }
            if uses_local {
                nat_chains.push(svl_chain.clone());
                write_endpoint_rules(&mut nat, svc, port, &name, &svl_chain, &local_eps);
            }
            // KUBE-SEP chains: one per endpoint of the port.
            for (ep, _) in &endpoints {
                let sep = sep_chain(svc, port, ep);
                if nat_chains.contains(&sep) {
                    continue;
                }
                nat_chains.push(sep.clone());
                let ip = ep
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(ep);
                let _ = writeln!(
                    nat,
                    "-A {sep} -m comment --comment {} -s {ip} -j KUBE-MARK-MASQ",
                    quote(&name)
                );
                let _ = writeln!(
                    nat,
                    "-A {sep} -m comment --comment {} -m {proto} -p {proto} -j DNAT --to-destination {ep}",
                    quote(&name)
                );
            }
        }
    }
    // "NOTE: this must be the last rule in this chain".
    let _ = writeln!(
        nat_services,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );

    filter_chains.dedup();
    let mut restore = String::from("*filter\n");
    for ch in &filter_chains {
        let _ = writeln!(restore, ":{ch} - [0:0]");
    }
    restore.push_str(&filter);
    restore.push_str("COMMIT\n*nat\n");
    for ch in &nat_chains {
        let _ = writeln!(restore, ":{ch} - [0:0]");
    }
    restore.push_str(&nat_services);
    restore.push_str(&nat_nodeports);
    restore.push_str(&nat);
    restore.push_str("COMMIT\n");
    Rules { jumps, restore }
}

/// `writeServiceToEndpointRules`: one rule per endpoint, each but the last with
/// `-m statistic --mode random --probability 1/(n-i)` (`%0.10f`).
fn write_endpoint_rules(
    out: &mut String,
    svc: &Service,
    port: &ServicePort,
    name: &str,
    chain: &str,
    endpoints: &[&String],
) {
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let comment = quote(&format!("{name} -> {ep}"));
        let sep = sep_chain(svc, port, ep);
        if i < n - 1 {
            let _ = writeln!(
                out,
                "-A {chain} -m comment --comment {comment} -m statistic --mode random --probability {:.10} -j {sep}",
                1.0 / (n - i) as f64
            );
        } else {
            let _ = writeln!(out, "-A {chain} -m comment --comment {comment} -j {sep}");
        }
    }
}

/// Loads `rules` into namespace `ns` (`iptables`/`ip6tables` by `v6`): creates the chains the
/// jumps point to, prepends each jump unless present (`-C` then `-I`), then restores the
/// `KUBE-*` chains in one `iptables-restore --noflush` (all or nothing).
pub fn apply(ns: &str, v6: bool, rules: &Rules) -> Result<()> {
    let (ipt, restore) = if v6 {
        ("ip6tables", "ip6tables-restore")
    } else {
        ("iptables", "iptables-restore")
    };
    for (table, src, args) in &rules.jumps {
        let dst = args.last().cloned().unwrap_or_default();
        // -N fails when the chain exists: fine (EnsureChain).
        let _ = netns::exec(ns, &[ipt, "-w", "-t", table, "-N", &dst]);
        let mut check = vec![ipt, "-w", "-t", table, "-C", src];
        check.extend(args.iter().map(String::as_str));
        if netns::exec(ns, &check).is_err() {
            let mut insert = vec![ipt, "-w", "-t", table, "-I", src];
            insert.extend(args.iter().map(String::as_str));
            netns::exec(ns, &insert).with_context(|| format!("{ipt} -I {src} in {ns}"))?;
        }
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, restore, "-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(rules.restore.as_bytes())?;
            }
            child.wait_with_output()
        })
        .with_context(|| format!("running {restore} in {ns}"))?;
    if !out.status.success() {
        bail!(
            "{restore} in {ns} failed: {}\ninput:\n{}",
            String::from_utf8_lossy(&out.stderr),
            rules.restore
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------ nftables mode

/// kube-proxy's nftables chain name part: the first 8 base32 characters of the SHA-256 of
/// `name`, a dash, and `name` (`hashAndTruncate`).
fn nft_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{}-{name}", &hash16(name)[..8])
}

/// `ns/name/proto/port` (`servicePortChainNameBase`).
fn nft_base(svc: &Service, port: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        port.protocol.name(),
        port.name
    )
}

/// `endpoint-HASH-ns/name/proto/port__IP/PORT` (IPv6: colons as dots, no brackets).
fn nft_endpoint_chain(svc: &Service, port: &ServicePort, ip: IpAddr, target: u16) -> String {
    let ip = ip.to_string().replace(':', ".");
    nft_name(
        "endpoint-",
        &format!("{}__{ip}/{target}", nft_base(svc, port)),
    )
}

/// The `nft -f` input kube-proxy **v1.30** writes in its `nftables` mode (table `ip kube-proxy`
/// or `ip6 kube-proxy`) for `services`/`slices` of `cfg`'s family: the base chains (filter at
/// priority -110, nat at dstnat/srcnat), the `service-ips` / `service-nodeports` verdict maps,
/// `no-endpoint-*` maps, masquerading by mark `0x4000` (`masquerade fully-random`), and per
/// Service port the `service-`, `external-`, `local-` and `endpoint-` chains (chain names,
/// comments and rule text from kube-proxy's nftables `proxier.go` and the knftables dumps of
/// its golden tests). Not modelled: `firewall-` chains (loadBalancerSourceRanges), affinity
/// sets, `--nodeport-addresses`.
pub fn nft_rules(cfg: &ProxyConfig, services: &[Service], slices: &[EndpointSlice]) -> String {
    let v6 = matches!(cfg.cluster_cidr, IpNet::V6(_));
    let same_family = |ip: &IpAddr| ip.is_ipv6() == v6;
    let (fam, daddr, saddr, addr_type, loopback) = if v6 {
        ("ip6", "ip6 daddr", "ip6 saddr", "ipv6_addr", "::1")
    } else {
        ("ip", "ip daddr", "ip saddr", "ipv4_addr", "127.0.0.0/8")
    };
    let t = format!("{fam} kube-proxy");
    let cidr = cfg.cluster_cidr.trunc().to_string();
    let mut chains: Vec<String> = Vec::new();
    let mut rules = String::new();
    let mut elements = String::new();
    let dnat_to = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    for svc in services {
        let Some(cluster_ip) = svc.cluster_ips.iter().copied().find(same_family) else {
            continue;
        };
        for port in &svc.ports {
            let name = service_port_name(svc, port);
            let base = nft_base(svc, port);
            let proto = port.protocol.name();
            let endpoints: Vec<(IpAddr, u16, bool)> = slices
                .iter()
                .filter(|s| s.namespace == svc.namespace && s.service == svc.name)
                .flat_map(|s| {
                    let target = s
                        .ports
                        .iter()
                        .find(|(n, p, _)| *n == port.name && *p == port.protocol)
                        .map(|(_, _, t)| *t);
                    s.endpoints.iter().filter_map(move |e| {
                        let t = target?;
                        (e.ready && same_family(&e.address))
                            .then(|| (e.address, t, e.node_name == cfg.node_name))
                    })
                })
                .collect();
            let externally = port.node_port.is_some() || !svc.load_balancer_ips.is_empty();
            let etp_local = externally && svc.external_traffic_policy == TrafficPolicy::Local;
            let local: Vec<&(IpAddr, u16, bool)> = endpoints.iter().filter(|e| e.2).collect();
            let svc_chain = nft_name("service-", &base);
            let local_chain = nft_name("local-", &base);
            let ext_chain = nft_name("external-", &base);
            let has_external = if etp_local {
                !local.is_empty()
            } else {
                !endpoints.is_empty()
            };
            let lbs: Vec<&IpAddr> = svc
                .load_balancer_ips
                .iter()
                .filter(|ip| same_family(ip))
                .collect();
            if endpoints.is_empty() {
                let _ = writeln!(
                    elements,
                    "add element {t} no-endpoint-services {{ {cluster_ip} . {proto} . {} comment \"{name}\" : goto reject-chain }}",
                    port.port
                );
            } else {
                chains.push(svc_chain.clone());
                let _ = writeln!(
                    rules,
                    "add rule {t} {svc_chain} {daddr} {cluster_ip} {proto} dport {} {saddr} != {cidr} jump mark-for-masquerade",
                    port.port
                );
                let vmap = |eps: &[&(IpAddr, u16, bool)]| -> String {
                    eps.iter()
                        .enumerate()
                        .map(|(i, (ip, tp, _))| {
                            format!("{i} : goto {}", nft_endpoint_chain(svc, port, *ip, *tp))
                        })
                        .collect::<Vec<_>>()
                        .join(" , ")
                };
                let all: Vec<&(IpAddr, u16, bool)> = endpoints.iter().collect();
                let _ = writeln!(
                    rules,
                    "add rule {t} {svc_chain} numgen random mod {} vmap {{ {} }}",
                    all.len(),
                    vmap(&all)
                );
                for (ip, tp, _) in &endpoints {
                    let ep = nft_endpoint_chain(svc, port, *ip, *tp);
                    chains.push(ep.clone());
                    let _ = writeln!(
                        rules,
                        "add rule {t} {ep} {saddr} {ip} jump mark-for-masquerade"
                    );
                    let _ = writeln!(
                        rules,
                        "add rule {t} {ep} meta l4proto {proto} dnat to {}",
                        dnat_to(*ip, *tp)
                    );
                }
                let _ = writeln!(
                    elements,
                    "add element {t} service-ips {{ {cluster_ip} . {proto} . {} : goto {svc_chain} }}",
                    port.port
                );
                if externally {
                    chains.push(ext_chain.clone());
                    if !etp_local {
                        let _ =
                            writeln!(rules, "add rule {t} {ext_chain} jump mark-for-masquerade");
                        let _ = writeln!(rules, "add rule {t} {ext_chain} goto {svc_chain}");
                    } else {
                        let _ = writeln!(
                            rules,
                            "add rule {t} {ext_chain} {saddr} {cidr} goto {svc_chain} comment \"short-circuit pod traffic\""
                        );
                        let _ = writeln!(
                            rules,
                            "add rule {t} {ext_chain} fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                        );
                        let _ = writeln!(
                            rules,
                            "add rule {t} {ext_chain} fib saddr type local goto {svc_chain} comment \"short-circuit local traffic\""
                        );
                        if !local.is_empty() {
                            chains.push(local_chain.clone());
                            let _ = writeln!(rules, "add rule {t} {ext_chain} goto {local_chain}");
                            let _ = writeln!(
                                rules,
                                "add rule {t} {local_chain} numgen random mod {} vmap {{ {} }}",
                                local.len(),
                                vmap(&local)
                            );
                        }
                    }
                    for lb in &lbs {
                        let _ = writeln!(
                            elements,
                            "add element {t} service-ips {{ {lb} . {proto} . {} : goto {ext_chain} }}",
                            port.port
                        );
                    }
                    if let Some(np) = port.node_port {
                        let _ = writeln!(
                            elements,
                            "add element {t} service-nodeports {{ {proto} . {np} : goto {ext_chain} }}"
                        );
                    }
                }
            }
            if externally && !has_external {
                let verdict = if endpoints.is_empty() {
                    "goto reject-chain"
                } else {
                    "drop"
                };
                if let Some(np) = port.node_port {
                    let _ = writeln!(
                        elements,
                        "add element {t} no-endpoint-nodeports {{ {proto} . {np} comment \"{name}\" : {verdict} }}"
                    );
                }
                for lb in &lbs {
                    let _ = writeln!(
                        elements,
                        "add element {t} no-endpoint-services {{ {lb} . {proto} . {} comment \"{name}\" : {verdict} }}",
                        port.port
                    );
                }
            }
        }
    }
    chains.dedup();
    let mut out = format!("add table {t} {{ comment \"rules for kube-proxy\" ; }}\n");
    for fixed in [
        "mark-for-masquerade",
        "masquerading",
        "services",
        "firewall-check",
        "endpoints-check",
    ] {
        let _ = writeln!(out, "add chain {t} {fixed}");
    }
    for (chain, kind, hook, prio) in [
        ("filter-prerouting", "filter", "prerouting", -110),
        ("filter-forward", "filter", "forward", -110),
        ("filter-input", "filter", "input", -110),
        ("filter-output", "filter", "output", -110),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
        ("nat-prerouting", "nat", "prerouting", -100),
    ] {
        let _ = writeln!(
            out,
            "add chain {t} {chain} {{ type {kind} hook {hook} priority {prio} ; }}"
        );
    }
    let _ = writeln!(
        out,
        "add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    );
    for chain in &chains {
        let _ = writeln!(out, "add chain {t} {chain}");
    }
    for line in [
        format!("add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}"),
        format!("add rule {t} masquerading mark and {MASQ_MARK} == 0 return"),
        format!("add rule {t} masquerading mark set mark xor {MASQ_MARK}"),
        format!("add rule {t} masquerading masquerade fully-random"),
        format!("add rule {t} filter-prerouting ct state new jump firewall-check"),
        format!("add rule {t} filter-forward ct state new jump endpoints-check"),
        format!("add rule {t} filter-input ct state new jump endpoints-check"),
        format!("add rule {t} filter-output ct state new jump endpoints-check"),
        format!("add rule {t} filter-output ct state new jump firewall-check"),
        format!("add rule {t} nat-output jump services"),
        format!("add rule {t} nat-postrouting jump masquerading"),
        format!("add rule {t} nat-prerouting jump services"),
        format!("add map {t} firewall-ips {{ type {addr_type} . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"),
        format!("add rule {t} firewall-check {daddr} . meta l4proto . th dport vmap @firewall-ips"),
        format!("add rule {t} reject-chain reject"),
        format!("add map {t} no-endpoint-services {{ type {addr_type} . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"),
        format!("add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"),
        format!("add rule {t} endpoints-check {daddr} . meta l4proto . th dport vmap @no-endpoint-services"),
        format!("add rule {t} endpoints-check fib daddr type local {daddr} != {loopback} meta l4proto . th dport vmap @no-endpoint-nodeports"),
        format!("add map {t} service-ips {{ type {addr_type} . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"),
        format!("add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"),
        format!("add rule {t} services {daddr} . meta l4proto . th dport vmap @service-ips"),
        format!("add rule {t} services fib daddr type local {daddr} != {loopback} meta l4proto . th dport vmap @service-nodeports"),
    ] {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&rules);
    out.push_str(&elements);
    out
}

/// Loads `script` (from [`nft_rules`]) into namespace `ns` with one `nft -f -` (one
/// transaction: all or nothing).
pub fn apply_nft(ns: &str, script: &str) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .with_context(|| format!("running nft -f in {ns}"))?;
    if !out.status.success() {
        bail!(
            "nft -f in {ns} failed: {}\ninput:\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, port: u16, node_port: Option<u16>) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ips: vec![ip.parse().unwrap()],
            ports: vec![ServicePort {
                name: "p80".into(),
                protocol: Protocol::Tcp,
                port,
                node_port,
            }],
            external_traffic_policy: TrafficPolicy::Cluster,
            load_balancer_ips: Vec::new(),
        }
    }

    fn slice(ns: &str, name: &str, eps: &[(&str, &str)]) -> EndpointSlice {
        EndpointSlice {
            namespace: ns.into(),
            service: name.into(),
            ports: vec![("p80".into(), Protocol::Tcp, 80)],
            endpoints: eps
                .iter()
                .map(|(ip, node)| Endpoint {
                    address: ip.parse().unwrap(),
                    ready: true,
                    node_name: (*node).into(),
                })
                .collect(),
        }
    }

    /// Chain names from kube-proxy's golden tests (proxier_test.go, TestOverallIPTablesRules).
    #[test]
    fn chain_names_match_kube_proxy() {
        let s1 = svc("ns1", "svc1", "172.30.0.41", 80, None);
        let p = &s1.ports[0];
        assert_eq!(chain("KUBE-SVC-", &s1, p), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            sep_chain(&s1, p, "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        let s2 = svc("ns2", "svc2", "172.30.0.42", 80, Some(3001));
        assert_eq!(
            chain("KUBE-EXT-", &s2, &s2.ports[0]),
            "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            sep_chain(&s2, &s2.ports[0], "10.180.0.2:80"),
            "KUBE-SEP-RS4RBKLTHTF2IUXJ"
        );
        let s4 = svc("ns4", "svc4", "172.30.0.44", 80, None);
        assert_eq!(
            chain("KUBE-SVC-", &s4, &s4.ports[0]),
            "KUBE-SVC-4SW47YFZTEDKD3PK"
        );
    }

    /// The golden rules of kube-proxy's tests for a two-endpoint ClusterIP Service (ns4/svc4)
    /// and an `externalTrafficPolicy: Local` NodePort Service (ns2/svc2) with a local endpoint.
    #[test]
    fn golden_rules() {
        let cfg = ProxyConfig {
            node_name: "test-node".into(),
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
        };
        let mut s2 = svc("ns2", "svc2", "172.30.0.42", 80, Some(3001));
        s2.external_traffic_policy = TrafficPolicy::Local;
        let s4 = svc("ns4", "svc4", "172.30.0.44", 80, None);
        let r = rules(
            &cfg,
            &[s2, s4],
            &[
                slice("ns2", "svc2", &[("10.180.0.2", "test-node")]),
                slice(
                    "ns4",
                    "svc4",
                    &[("10.180.0.4", "host2"), ("10.180.0.5", "host3")],
                ),
            ],
        );
        let want = [
            "-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-SERVICES -m comment --comment \"ns4/svc4:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK",
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
            "-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"pod traffic for ns2/svc2:p80 external destinations\" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"masquerade LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"route LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVL-GNZBNJ2PO5MGZ6GT",
            "-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:80\" -j KUBE-SEP-RS4RBKLTHTF2IUXJ",
            "-A KUBE-SVL-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:80\" -j KUBE-SEP-RS4RBKLTHTF2IUXJ",
            "-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80",
            "-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment \"ns4/svc4:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment \"ns4/svc4:p80 -> 10.180.0.4:80\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC",
            "-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment \"ns4/svc4:p80 -> 10.180.0.5:80\" -j KUBE-SEP-C6EBXVWJJZMIWKLZ",
            "-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80",
            "-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        ];
        let lines: Vec<&str> = r.restore.lines().collect();
        for w in want {
            assert!(lines.contains(&w), "missing {w}\n{}", r.restore);
        }
        // The ETP Local NodePort's EXT chain and the SVL chain are declared.
        assert!(lines.contains(&":KUBE-SVL-GNZBNJ2PO5MGZ6GT - [0:0]"));
        assert_eq!(r.jumps.len(), 12);
    }

    /// Chain names and rules from kube-proxy's nftables golden dumps (knftables format).
    #[test]
    fn nftables_names_and_rules_match_kube_proxy() {
        let cfg = ProxyConfig {
            node_name: "test-node".into(),
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
        };
        let s4 = svc("ns4", "svc4", "172.30.0.44", 80, None);
        let script = nft_rules(
            &cfg,
            &[s4],
            &[slice(
                "ns4",
                "svc4",
                &[("10.180.0.4", "h2"), ("10.180.0.5", "h3")],
            )],
        );
        for want in [
            "add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80",
            "add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }",
            "add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade",
            "add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80",
            "add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }",
            "add rule ip kube-proxy masquerading masquerade fully-random",
            "add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ] {
            assert!(script.lines().any(|l| l == want), "missing {want}\n{script}");
        }
        let mut s1 = svc("ns1", "svc1", "fd00:172:30::41", 80, None);
        s1.cluster_ips = vec!["fd00:172:30::41".parse().unwrap()];
        let p = &s1.ports[0];
        assert_eq!(
            nft_endpoint_chain(&s1, p, "fd00:10:180::1".parse().unwrap(), 80),
            "endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80"
        );
        assert_eq!(
            nft_endpoint_chain(&s1, p, "fd00:10:180::2:1".parse().unwrap(), 80),
            "endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80"
        );
    }

    #[test]
    fn local_policy_without_local_endpoints_drops_external_traffic() {
        let cfg = ProxyConfig {
            node_name: "other".into(),
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
        };
        let mut s2 = svc("ns2", "svc2", "172.30.0.42", 80, Some(3001));
        s2.external_traffic_policy = TrafficPolicy::Local;
        let r = rules(
            &cfg,
            &[s2],
            &[slice("ns2", "svc2", &[("10.180.0.2", "test-node")])],
        );
        assert!(r.restore.contains(
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP"
        ));
        assert!(!r.restore.contains("KUBE-SVL-"));
        assert!(!r.restore.contains("-j KUBE-SVL"));
    }
}
