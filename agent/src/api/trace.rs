//! Packet traces: the flow a pod would send ([`trace_flow`], pure) and the parse of
//! `ofproto/trace` output into the tables visited and the verdict ([`parse_trace`], pure). The
//! text comes from ovs-vswitchd over its unixctl socket ([`super::unixctl`]).

use std::net::IpAddr;

use ovs_flows::pipeline::{ports, tables, Registry, VIRTUAL_MAC};

use super::types::{TraceResult, TraceStep};

/// Why a trace request cannot be turned into a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The protocol is not one Weft traces.
    #[error("protocol {0:?} is not icmp, tcp or udp")]
    Proto(String),
    /// A port was given for ICMP.
    #[error("--dport {0} needs --proto tcp or udp")]
    PortWithoutTransport(u16),
    /// Source and destination are of different families.
    #[error("source {source_ip} and destination {destination} are of different address families")]
    Family {
        /// The source address.
        source_ip: IpAddr,
        /// The destination address.
        destination: IpAddr,
    },
}

/// The packet to trace, as the source pod would send it, or as it arrives from a peer's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePacket {
    /// The source pod's OpenFlow port (ignored for a packet from the tunnel).
    pub in_port: u32,
    /// The source pod's MAC (ignored for a packet from the tunnel).
    pub src_mac: String,
    /// The packet arrives by the tunnel port from this peer transport address (`tun_src`),
    /// as the peer's pipeline sends it: both MACs virtual, TTL already decremented.
    pub from_tunnel: Option<IpAddr>,
    /// Source address.
    pub src_ip: IpAddr,
    /// Destination address.
    pub dst_ip: IpAddr,
    /// `icmp`, `tcp` or `udp` (`None`: icmp).
    pub proto: Option<String>,
    /// Destination port (tcp/udp).
    pub dport: Option<u16>,
}

/// The `ofproto/trace` flow for `packet`: from the pod's port and MAC to the virtual gateway MAC
/// (pods resolve every neighbour to it), TTL 64, an echo request or a SYN to `dport`; or, with
/// [`TracePacket::from_tunnel`], in by the tunnel port with `tun_src` set, virtual MACs, TTL 63.
pub fn trace_flow(packet: &TracePacket) -> Result<String, TraceError> {
    let v6 = match (packet.src_ip, packet.dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        (source_ip, destination) => {
            return Err(TraceError::Family {
                source_ip,
                destination,
            })
        }
    };
    let proto = packet
        .proto
        .as_deref()
        .unwrap_or("icmp")
        .to_ascii_lowercase();
    let mut flow = match packet.from_tunnel {
        Some(peer) => {
            let field = if peer.is_ipv4() {
                "tun_src"
            } else {
                "tun_ipv6_src"
            };
            format!(
                "in_port={},{field}={peer},dl_src={VIRTUAL_MAC},dl_dst={VIRTUAL_MAC}",
                ports::TUNNEL
            )
        }
        None => format!(
            "in_port={},dl_src={},dl_dst={}",
            packet.in_port, packet.src_mac, VIRTUAL_MAC
        ),
    };
    let hops = if packet.from_tunnel.is_some() { 63 } else { 64 };
    let (src, dst, ttl) = if v6 {
        ("ipv6_src", "ipv6_dst", "nw_ttl")
    } else {
        ("nw_src", "nw_dst", "nw_ttl")
    };
    match (proto.as_str(), packet.dport) {
        ("icmp", Some(port)) => return Err(TraceError::PortWithoutTransport(port)),
        ("icmp", None) if v6 => flow.push_str(",icmp6,icmp_type=128,icmp_code=0"),
        ("icmp", None) => flow.push_str(",icmp,icmp_type=8,icmp_code=0"),
        ("tcp", _) | ("udp", _) => {
            flow.push(',');
            flow.push_str(&proto);
            if v6 {
                flow.push('6');
            }
        }
        (other, _) => return Err(TraceError::Proto(other.to_string())),
    }
    flow.push_str(&format!(
        ",{src}={},{dst}={},{ttl}={hops}",
        packet.src_ip, packet.dst_ip
    ));
    if proto == "tcp" {
        flow.push_str(&format!(
            ",tp_src=40000,tp_dst={},tcp_flags=0x002",
            packet.dport.unwrap_or(80)
        ));
    } else if proto == "udp" {
        flow.push_str(&format!(
            ",tp_src=40000,tp_dst={}",
            packet.dport.unwrap_or(53)
        ));
    }
    Ok(flow)
}

/// The name the pipeline declares for table `number`.
pub fn table_name(number: u8) -> Option<String> {
    let registry = Registry::wave1();
    tables::WAVE1
        .iter()
        .find(|decl| registry.number(decl) == number)
        .map(|decl| decl.name.to_string())
}

/// Parses `ofproto/trace` output. `port_name` names an OpenFlow port for the verdict. Pure.
pub fn parse_trace(
    bridge: &str,
    flow: &str,
    raw: &str,
    port_name: &dyn Fn(u32) -> Option<String>,
) -> TraceResult {
    let mut steps: Vec<TraceStep> = Vec::new();
    let mut datapath_actions = String::new();
    let mut in_bridge = false;
    for line in raw.lines() {
        if let Some(rest) = line.strip_prefix("Datapath actions:") {
            datapath_actions = rest.trim().to_string();
            continue;
        }
        if line.starts_with("bridge(") {
            in_bridge = true;
            continue;
        }
        if line.starts_with("Final flow:") || line.starts_with("Megaflow:") {
            in_bridge = false;
            continue;
        }
        if !in_bridge || line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        if let Some(step) = parse_step_header(line) {
            steps.push(step);
        } else if let Some(step) = steps.last_mut() {
            step.actions.push(line.trim().to_string());
        }
    }
    let verdict = verdict(&steps, &datapath_actions, port_name);
    TraceResult {
        bridge: bridge.to_string(),
        flow: flow.to_string(),
        steps,
        datapath_actions,
        verdict,
        raw: raw.to_string(),
        policy: Vec::new(),
    }
}

/// ` 0. ip, priority 100, cookie 0x1010000000000` / `20. No match.`
fn parse_step_header(line: &str) -> Option<TraceStep> {
    let indent = line.len() - line.trim_start().len();
    let trimmed = line.trim_start();
    let (number, rest) = trimmed.split_once(". ")?;
    let table: u8 = number.parse().ok()?;
    let mut matched = rest.trim().to_string();
    let mut cookie = None;
    let mut priority = None;
    if let Some((before, value)) = matched.rsplit_once("cookie ") {
        if value.starts_with("0x") && !value.contains(' ') {
            cookie = Some(value.to_string());
            matched = before.trim_end().trim_end_matches(',').to_string();
        }
    }
    if let Some((before, value)) = matched.rsplit_once("priority ") {
        if let Ok(p) = value.trim().parse::<u16>() {
            priority = Some(p);
            matched = before.trim_end().trim_end_matches(',').to_string();
        }
    }
    if matched.is_empty() {
        matched = "*".to_string();
    }
    Some(TraceStep {
        depth: u32::try_from(indent / 4).unwrap_or(u32::MAX),
        table,
        table_name: table_name(table),
        matched,
        priority,
        cookie,
        actions: Vec::new(),
    })
}

/// Appended to a verdict whose packet leaves by the gateway: the host takes over (its routes,
/// and its Service NAT: kube-proxy's DNAT/SNAT for a ClusterIP, NodePort or LoadBalancer IP;
/// its replies come back through the gateway, see docs/services.md).
pub const HOST_HANDLES: &str =
    "; leaves for the host: its routes and its Service handling (kube-proxy DNAT/SNAT) take over";

fn verdict(
    steps: &[TraceStep],
    datapath_actions: &str,
    port_name: &dyn Fn(u32) -> Option<String>,
) -> String {
    let outputs: Vec<u32> = steps
        .iter()
        .flat_map(|s| s.actions.iter())
        .filter_map(|a| a.strip_prefix("-> output port is "))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let describe = |port: u32| match port_name(port) {
        Some(name) => format!("{port} ({name})"),
        None => port.to_string(),
    };
    if !outputs.is_empty() && datapath_actions != "drop" {
        let to_host = outputs.contains(&ports::GATEWAY);
        let names: Vec<String> = outputs.into_iter().map(describe).collect();
        let mut verdict = format!("output to port {}", names.join(", "));
        if to_host {
            // Issue 14: a ClusterIP / NodePort is not the pipeline's business (yet).
            verdict.push_str(HOST_HANDLES);
        }
        return verdict;
    }
    if let Some(last) = steps.last() {
        let name = last
            .table_name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let how = if last.matched == "No match." {
            "no flow matched".to_string()
        } else {
            format!(
                "flow {} priority {}",
                last.matched,
                last.priority.unwrap_or(0)
            )
        };
        return format!("dropped in table {}{name} ({how})", last.table);
    }
    format!("datapath actions: {datapath_actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str =
        "Flow: tcp,in_port=1,vlan_tci=0x0000,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80

bridge(\"br0\")
-------------
 0. ip, priority 100, cookie 0x1010000000000
    goto_table:20
20. in_port=1, priority 200, cookie 0x1030000000001
    set_field:0x1/0xf->reg0
    goto_table:31
31. ip,reg0=0x1/0xf, priority 200, cookie 0x1030000000001
    set_field:0x100/0x100->reg0
    resubmit(,31)
    31. ip,reg0=0x100/0x100, priority 210, cookie 0x1030000000001
            set_field:0x2->reg1
            goto_table:120
        120. priority 100, cookie 0x1010000000000
            output:NXM_NX_REG1[]
             -> output port is 2

Final flow: tcp,reg0=0x101,reg1=0x2,in_port=1
Megaflow: recirc_id=0,eth,ip,in_port=1,nw_frag=no
Datapath actions: 3
";

    const DROPPED: &str = "Flow: udp,in_port=2

bridge(\"br0\")
-------------
 0. ip, priority 100, cookie 0x1010000000000
    goto_table:20
20. No match.
    drop

Final flow: unchanged
Megaflow: recirc_id=0,eth,ip,in_port=2,nw_frag=no
Datapath actions: drop
";

    #[test]
    fn parses_tables_actions_and_output() {
        let names = |p: u32| (p == 2).then(|| "wfweb-abc".to_string());
        let trace = parse_trace("br0", "in_port=1", OUTPUT, &names);
        let tables: Vec<(u32, u8)> = trace.steps.iter().map(|s| (s.depth, s.table)).collect();
        assert_eq!(tables, [(0, 0), (0, 20), (0, 31), (1, 31), (2, 120)]);
        assert_eq!(trace.steps[0].matched, "ip");
        assert_eq!(trace.steps[0].priority, Some(100));
        assert_eq!(trace.steps[0].cookie.as_deref(), Some("0x1010000000000"));
        assert_eq!(
            trace.steps[0].table_name.as_deref(),
            Some("PipelineRootClassifier")
        );
        assert_eq!(trace.steps[4].matched, "*");
        assert_eq!(trace.steps[4].table_name.as_deref(), Some("Output"));
        assert_eq!(
            trace.steps[4].actions,
            ["output:NXM_NX_REG1[]", "-> output port is 2"]
        );
        assert_eq!(trace.datapath_actions, "3");
        assert_eq!(trace.verdict, "output to port 2 (wfweb-abc)");
    }

    #[test]
    fn output_to_the_gateway_says_the_host_takes_over() {
        let raw = OUTPUT.replace("output port is 2", "output port is 32769");
        let trace = parse_trace("br0", "in_port=1", &raw, &|_| Some("weft-gw0".into()));
        assert_eq!(
            trace.verdict,
            format!("output to port 32769 (weft-gw0){HOST_HANDLES}")
        );
    }

    #[test]
    fn parses_a_drop() {
        let trace = parse_trace("br0", "in_port=2", DROPPED, &|_| None);
        assert_eq!(trace.steps.len(), 2);
        assert_eq!(trace.steps[1].matched, "No match.");
        assert_eq!(trace.steps[1].priority, None);
        assert_eq!(trace.steps[1].actions, ["drop"]);
        assert_eq!(trace.datapath_actions, "drop");
        assert_eq!(
            trace.verdict,
            "dropped in table 20 Classifier (no flow matched)"
        );
        assert_eq!(
            parse_trace("br0", "x", "garbage", &|_| None).verdict,
            "datapath actions: "
        );
    }

    #[test]
    fn flows_for_each_protocol_and_family() {
        let packet = |src: &str, dst: &str, proto: Option<&str>, dport| TracePacket {
            in_port: 3,
            src_mac: "0a:58:0a:f4:01:05".into(),
            from_tunnel: None,
            src_ip: src.parse().unwrap(),
            dst_ip: dst.parse().unwrap(),
            proto: proto.map(str::to_string),
            dport,
        };
        assert_eq!(
            trace_flow(&packet("10.0.0.5", "10.0.0.6", None, None)).unwrap(),
            "in_port=3,dl_src=0a:58:0a:f4:01:05,dl_dst=02:77:65:66:74:01,icmp,icmp_type=8,icmp_code=0,nw_src=10.0.0.5,nw_dst=10.0.0.6,nw_ttl=64"
        );
        assert_eq!(
            trace_flow(&packet("10.0.0.5", "10.0.0.6", Some("TCP"), Some(8080))).unwrap(),
            "in_port=3,dl_src=0a:58:0a:f4:01:05,dl_dst=02:77:65:66:74:01,tcp,nw_src=10.0.0.5,nw_dst=10.0.0.6,nw_ttl=64,tp_src=40000,tp_dst=8080,tcp_flags=0x002"
        );
        assert_eq!(
            trace_flow(&packet("fd00::5", "fd00::6", Some("udp"), None)).unwrap(),
            "in_port=3,dl_src=0a:58:0a:f4:01:05,dl_dst=02:77:65:66:74:01,udp6,ipv6_src=fd00::5,ipv6_dst=fd00::6,nw_ttl=64,tp_src=40000,tp_dst=53"
        );
        assert!(trace_flow(&packet("fd00::5", "fd00::6", None, None))
            .unwrap()
            .contains(",icmp6,icmp_type=128,"));
        assert_eq!(
            trace_flow(&packet("10.0.0.5", "fd00::6", None, None))
                .unwrap_err()
                .to_string(),
            "source 10.0.0.5 and destination fd00::6 are of different address families"
        );
        assert!(trace_flow(&packet("10.0.0.5", "10.0.0.6", Some("sctp"), None)).is_err());
        assert!(trace_flow(&packet("10.0.0.5", "10.0.0.6", None, Some(80))).is_err());
        let mut tunneled = packet("10.244.2.5", "10.244.1.6", Some("tcp"), Some(80));
        tunneled.from_tunnel = Some("192.168.60.12".parse().unwrap());
        assert_eq!(
            trace_flow(&tunneled).unwrap(),
            "in_port=32768,tun_src=192.168.60.12,dl_src=02:77:65:66:74:01,dl_dst=02:77:65:66:74:01,tcp,nw_src=10.244.2.5,nw_dst=10.244.1.6,nw_ttl=63,tp_src=40000,tp_dst=80,tcp_flags=0x002"
        );
        tunneled.from_tunnel = Some("fd00:60::12".parse().unwrap());
        assert!(trace_flow(&tunneled)
            .unwrap()
            .starts_with("in_port=32768,tun_ipv6_src=fd00:60::12,"));
    }
}
