//! The policy flows decide exactly what the compiler decided: generated clusters (random labels,
//! selectors, ipBlocks with excepts, named ports, port ranges, both directions), installed one
//! after the other on real OVS by incremental diffs (6 rounds, ~2,000 traces, ~20 s), and every
//! (source, destination, protocol, port, family) traced through the bridge (`ofproto/trace`,
//! conntrack state `trk,new` after the recirculation) and compared with
//! `CompiledPolicy::verdict`.

mod pipeline_support;

use std::net::IpAddr;

use anyhow::{ensure, Result};
use ovs_flows::pipeline::policy;
use ovs_flows::pipeline::{ports, VIRTUAL_MAC};
use pipeline_support::*;
use weft_plan::policy::{
    compile, ClusterView, CompiledPolicy, Direction, LabelSelector, Labels, LocalPod, NamedPort,
    NetworkPolicy, Operator, Peer, PodInfo, PolicyTypes, Port, PortSpec, Protocol, Requirement,
    Rule,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const VALUES: [&str; 2] = ["a", "b"];

fn labels(rng: &mut Rng) -> Labels {
    let mut l = Labels::new();
    for key in ["app", "tier"] {
        if rng.chance(70) {
            l.insert(key.into(), VALUES[rng.below(2)].into());
        }
    }
    l
}

fn selector(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::default();
    match rng.below(4) {
        0 => {}
        1 => {
            s.match_labels
                .insert("app".into(), VALUES[rng.below(2)].into());
        }
        2 => s.match_expressions.push(Requirement {
            key: "tier".into(),
            op: if rng.chance(50) {
                Operator::NotIn
            } else {
                Operator::In
            },
            values: vec![VALUES[rng.below(2)].into()],
        }),
        _ => s.match_expressions.push(Requirement {
            key: "app".into(),
            op: if rng.chance(50) {
                Operator::Exists
            } else {
                Operator::DoesNotExist
            },
            values: vec![],
        }),
    }
    s
}

fn peer(rng: &mut Rng) -> Peer {
    match rng.below(5) {
        0 => Peer::IpBlock {
            cidr: "10.244.0.0/16".parse().unwrap(),
            except: vec![
                format!("10.244.{}.{}/31", 1 + rng.below(2), 10 + rng.below(6))
                    .parse()
                    .unwrap(),
            ],
        },
        1 => Peer::IpBlock {
            cidr: format!("fd00:10:244:{}::/64", 1 + rng.below(2))
                .parse()
                .unwrap(),
            except: vec![],
        },
        _ => Peer::Pods {
            pod_selector: rng.chance(80).then(|| selector(rng)),
            namespace_selector: rng.chance(40).then(|| selector(rng)),
        },
    }
}

fn port(rng: &mut Rng) -> PortSpec {
    let protocol = if rng.chance(60) {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    match rng.below(4) {
        0 => PortSpec {
            protocol,
            port: None,
            end_port: None,
        },
        1 => PortSpec {
            protocol,
            port: Some(Port::Named("web".into())),
            end_port: None,
        },
        2 => PortSpec {
            protocol,
            port: Some(Port::Number(80)),
            end_port: Some(81),
        },
        _ => PortSpec {
            protocol,
            port: Some(Port::Number(80 + rng.below(2) as u16)),
            end_port: None,
        },
    }
}

fn rule(rng: &mut Rng) -> Rule {
    Rule {
        peers: (0..rng.below(3)).map(|_| peer(rng)).collect(),
        ports: (0..rng.below(3)).map(|_| port(rng)).collect(),
    }
}

/// Pods 1-3 are local (ofports 1-3), 4-6 remote (10.244.2.x); namespaces x and y.
fn view(rng: &mut Rng) -> ClusterView {
    let mut view = ClusterView::default();
    for ns in ["x", "y"] {
        let mut l = labels(rng);
        l.insert("kubernetes.io/metadata.name".into(), ns.into());
        view.namespaces.insert(ns.into(), l);
    }
    for i in 1..=6u8 {
        let ips: Vec<IpAddr> = if i <= 3 {
            pod(i).ips
        } else {
            vec![
                format!("10.244.2.{}", 10 + i).parse().unwrap(),
                format!("fd00:10:244:2::{}", 10 + i).parse().unwrap(),
            ]
        };
        view.pods.push(PodInfo {
            namespace: if i % 2 == 1 { "x" } else { "y" }.into(),
            name: format!("pod{i}"),
            labels: labels(rng),
            ips,
            node: if i <= 3 { "local" } else { "remote" }.into(),
            named_ports: vec![NamedPort {
                name: "web".into(),
                protocol: Protocol::Tcp,
                port: 80 + u16::from(i % 2),
            }],
        });
    }
    for k in 0..1 + rng.below(3) {
        let ingress: Vec<Rule> = (0..rng.below(3)).map(|_| rule(rng)).collect();
        let egress: Vec<Rule> = (0..rng.below(3)).map(|_| rule(rng)).collect();
        view.policies.push(NetworkPolicy {
            namespace: if rng.chance(50) { "x" } else { "y" }.into(),
            name: format!("np{k}"),
            pod_selector: selector(rng),
            policy_types: PolicyTypes {
                ingress: rng.chance(70),
                egress: rng.chance(60),
            },
            ingress,
            egress,
        });
    }
    view
}

fn locals(view: &ClusterView) -> Vec<LocalPod> {
    (1..=3u8)
        .map(|i| {
            let p = &view.pods[usize::from(i) - 1];
            LocalPod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ofport: u32::from(i),
                ips: p.ips.clone(),
            }
        })
        .collect()
}

/// The `ofproto/trace` flow of a new connection's first packet.
fn trace_flow(
    in_port: u32,
    src_mac: &str,
    src: IpAddr,
    dst: IpAddr,
    protocol: Option<Protocol>,
    port: u16,
) -> String {
    let v4 = src.is_ipv4();
    let (proto, l4) = match protocol {
        Some(Protocol::Tcp) => (
            if v4 { "tcp" } else { "tcp6" },
            format!(",tp_src=40000,tp_dst={port}"),
        ),
        Some(Protocol::Udp) => (
            if v4 { "udp" } else { "udp6" },
            format!(",udp_src=40000,udp_dst={port}"),
        ),
        Some(Protocol::Sctp) => (
            if v4 { "sctp" } else { "sctp6" },
            format!(",sctp_src=40000,sctp_dst={port}"),
        ),
        None if v4 => ("icmp", ",icmp_type=8".to_string()),
        None => ("icmp6", ",icmpv6_type=128".to_string()),
    };
    let (s, d) = if v4 {
        ("nw_src", "nw_dst")
    } else {
        ("ipv6_src", "ipv6_dst")
    };
    let ttl = if v4 {
        "nw_ttl=64"
    } else {
        "ipv6_label=0,nw_ttl=64"
    };
    format!(
        "in_port={in_port},{proto},dl_src={src_mac},dl_dst={VIRTUAL_MAC},{s}={src},{d}={dst},{ttl}{l4}"
    )
}

/// Whether the traced packet leaves the bridge (the last datapath actions are not `drop`).
fn passes(node: &Node, flow: &str) -> Result<bool> {
    let out = node
        .ovs
        .appctl_vswitchd(&["ofproto/trace", BRIDGE, flow, "--ct-next", "trk,new"])?;
    let last = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Datapath actions: "))
        .ok_or_else(|| anyhow::anyhow!("no datapath actions for {flow}:\n{out}"))?;
    Ok(last.trim() != "drop")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flows_decide_what_the_compiler_decided() -> Result<()> {
    let node = Node::start(3).await?;
    let node_ips: Vec<IpAddr> = node
        .cfg
        .node_ips
        .iter()
        .chain(&node.cfg.gateway_ips)
        .copied()
        .collect();
    let mut rng = Rng(0x0bad_5eed_0042_0001);
    let mut installed = CompiledPolicy::default();
    let (mut traces, mut allowed, mut mods) = (0u32, 0u32, 0usize);
    let protocols = [Some(Protocol::Tcp), Some(Protocol::Udp), None];
    let gw_mac = GW_MAC.to_string();
    for round in 0..6 {
        let view = view(&mut rng);
        let c = compile(&view, &locals(&view), &node_ips);
        let d = policy::diff(&node.cfg, &installed, &c);
        mods += d.len();
        node.client.bundle(&d.flow_mods()).await?;
        installed = c;
        let mut wrong = Vec::new();
        for (si, src) in view.pods.iter().enumerate() {
            for (di, dst) in view.pods.iter().enumerate() {
                let (s_local, d_local) = (si < 3, di < 3);
                if si == di || (!s_local && !d_local) {
                    continue;
                }
                for family in 0..2 {
                    let (sip, dip) = (src.ips[family], dst.ips[family]);
                    for protocol in protocols {
                        for port in [80u16, 81, 82] {
                            if protocol.is_none() && port != 80 {
                                continue;
                            }
                            let egress = !s_local
                                || installed
                                    .verdict(Direction::Egress, si as u32 + 1, dip, protocol, port)
                                    .allows();
                            let ingress = !d_local
                                || installed
                                    .verdict(Direction::Ingress, di as u32 + 1, sip, protocol, port)
                                    .allows();
                            let want = egress && ingress;
                            let flow = if s_local {
                                let mac = pod(si as u8 + 1).mac.to_string();
                                trace_flow(si as u32 + 1, &mac, sip, dip, protocol, port)
                            } else {
                                // A remote pod's packet, entering by the gateway here.
                                trace_flow(ports::GATEWAY, &gw_mac, sip, dip, protocol, port)
                            };
                            let got = passes(&node, &flow)?;
                            traces += 1;
                            allowed += u32::from(got);
                            if got != want {
                                wrong.push(format!("{flow}: flows {got}, compiled {want}"));
                            }
                        }
                    }
                }
            }
        }
        ensure!(
            wrong.is_empty(),
            "round {round}: {} traces wrong:\n{}\npolicies: {:?}",
            wrong.len(),
            wrong.join("\n"),
            view.policies
        );
    }
    ensure!(
        allowed > traces / 10 && allowed < traces * 9 / 10,
        "{allowed} of {traces} traces passed"
    );
    eprintln!("{traces} traces ({allowed} passed), {mods} flow-mods in 6 incremental bundles");
    Ok(())
}
