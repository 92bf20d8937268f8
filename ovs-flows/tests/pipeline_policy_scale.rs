//! NetworkPolicy at scale, compile + flows + diff timings (not in CI: `--ignored`; run with
//! `cargo test --release -p ovs-flows --test pipeline_policy_scale -- --ignored --nocapture`).
//! 1,000 pods in 10 namespaces (110 on this node), 500 policies; (a) a new policy selecting 100
//! pods with 500 peers, (b) a pod label change entering 50 policies, (c) a new local pod
//! selected by 50 policies.

use std::net::IpAddr;
use std::time::Instant;

use ovs_flows::flow::MacAddr;
use ovs_flows::pipeline::policy;
use ovs_flows::pipeline::NodeConfig;
use weft_plan::policy::{
    compile, ClusterView, LabelSelector, Labels, LocalPod, NamedPort, NetworkPolicy, Peer, PodInfo,
    PolicyTypes, Port, PortSpec, Protocol, Rule,
};

fn cfg() -> NodeConfig {
    NodeConfig {
        round: 1,
        gateway_mac: MacAddr::new(0x0a, 0x58, 0x0a, 0xf4, 0, 1),
        gateway_ips: vec!["10.244.0.1".parse().unwrap()],
        pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        node_ips: vec!["192.168.1.10".parse().unwrap()],
    }
}

fn pod_ip(i: usize) -> IpAddr {
    format!("10.244.{}.{}", i / 250, 2 + i % 250)
        .parse()
        .unwrap()
}

fn view() -> (ClusterView, Vec<LocalPod>) {
    let mut view = ClusterView::default();
    for n in 0..10 {
        let mut l = Labels::new();
        l.insert("kubernetes.io/metadata.name".into(), format!("ns{n}"));
        l.insert("team".into(), format!("t{}", n % 3));
        view.namespaces.insert(format!("ns{n}"), l);
    }
    let mut locals = Vec::new();
    for i in 0..1000 {
        let mut l = Labels::new();
        l.insert("app".into(), format!("app{}", i % 20));
        l.insert("role".into(), format!("r{}", i % 7));
        let pod = PodInfo {
            namespace: format!("ns{}", i % 10),
            name: format!("pod{i}"),
            labels: l,
            ips: vec![pod_ip(i)],
            node: if i % 9 == 0 || i < 1 {
                "local".into()
            } else {
                format!("n{}", i % 9)
            },
            named_ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8000 + (i % 3) as u16,
            }],
        };
        if pod.node == "local" {
            locals.push(LocalPod {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                ofport: locals.len() as u32 + 1,
                ips: pod.ips.clone(),
            });
        }
        view.pods.push(pod);
    }
    for k in 0..500 {
        view.policies.push(NetworkPolicy {
            namespace: format!("ns{}", k % 10),
            name: format!("np{k}"),
            pod_selector: LabelSelector::labels([("app", format!("app{}", k % 20).as_str())]),
            policy_types: PolicyTypes::kubernetes_default(true),
            ingress: vec![Rule {
                peers: vec![Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([(
                        "role",
                        format!("r{}", k % 7).as_str(),
                    )])),
                    namespace_selector: Some(LabelSelector::labels([(
                        "team",
                        format!("t{}", k % 3).as_str(),
                    )])),
                }],
                ports: vec![
                    PortSpec {
                        protocol: Protocol::Tcp,
                        port: Some(Port::Number(80)),
                        end_port: None,
                    },
                    PortSpec {
                        protocol: Protocol::Tcp,
                        port: Some(Port::Named("http".into())),
                        end_port: None,
                    },
                ],
            }],
            egress: vec![Rule {
                peers: vec![Peer::IpBlock {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec!["10.244.3.0/24".parse().unwrap()],
                }],
                ports: vec![PortSpec {
                    protocol: Protocol::Udp,
                    port: Some(Port::Number(53)),
                    end_port: None,
                }],
            }],
        });
    }
    (view, locals)
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    eprintln!("{what}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    out
}

#[test]
#[ignore]
fn policy_scale_timings() {
    let cfg = cfg();
    let (mut view, mut locals) = view();
    let node_ips: Vec<IpAddr> = vec![
        "192.168.1.10".parse().unwrap(),
        "10.244.0.1".parse().unwrap(),
    ];
    let base = timed("compile 1000 pods / 500 policies / 112 local", || {
        compile(&view, &locals, &node_ips)
    });
    let flows = timed("flows", || policy::flows(&cfg, &base));
    eprintln!(
        "{} rules, {} flows ({:.1} per rule)",
        base.rules.len(),
        flows.len(),
        flows.len() as f64 / base.rules.len() as f64
    );

    // (a) a new policy selecting ~100 local+remote pods with 500 peers.
    view.policies.push(NetworkPolicy {
        namespace: "ns0".into(),
        name: "big".into(),
        pod_selector: LabelSelector::everything(),
        policy_types: PolicyTypes::kubernetes_default(false),
        ingress: vec![Rule {
            peers: vec![
                Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("role", "r1")])),
                    namespace_selector: Some(LabelSelector::everything()),
                },
                Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("role", "r2")])),
                    namespace_selector: Some(LabelSelector::everything()),
                },
                Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("role", "r3")])),
                    namespace_selector: Some(LabelSelector::everything()),
                },
                Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("role", "r4")])),
                    namespace_selector: Some(LabelSelector::everything()),
                },
            ],
            ports: vec![],
        }],
        egress: vec![],
    });
    let a = timed("(a) compile", || compile(&view, &locals, &node_ips));
    let d = timed("(a) diff", || policy::diff(&cfg, &base, &a));
    let cached = timed("(a) flows + diff_flows (old flows kept)", || {
        policy::diff_flows(flows.clone(), policy::flows(&cfg, &a))
    });
    assert_eq!(cached, d);
    eprintln!("(a) {} flow-mods", d.len());

    // (b) a pod label change entering 50 policies' peers.
    view.policies.pop();
    let i = 1;
    view.pods[i].labels.insert("role".into(), "r0".into());
    let b = timed("(b) compile", || compile(&view, &locals, &node_ips));
    let d = timed("(b) diff", || policy::diff(&cfg, &base, &b));
    let cached = timed("(b) flows + diff_flows (old flows kept)", || {
        policy::diff_flows(flows.clone(), policy::flows(&cfg, &b))
    });
    assert_eq!(cached, d);
    eprintln!("(b) {} flow-mods", d.len());

    // (c) a new local pod selected by 50 policies.
    view.pods[i].labels.insert("role".into(), "r1".into());
    view.pods.push(PodInfo {
        namespace: "ns0".into(),
        name: "new".into(),
        labels: [("app".to_string(), "app0".to_string())].into(),
        ips: vec!["10.244.9.9".parse().unwrap()],
        node: "local".into(),
        named_ports: vec![],
    });
    locals.push(LocalPod {
        namespace: "ns0".into(),
        name: "new".into(),
        ofport: 999,
        ips: vec!["10.244.9.9".parse().unwrap()],
    });
    let c = timed("(c) compile", || compile(&view, &locals, &node_ips));
    let d = timed("(c) diff", || policy::diff(&cfg, &base, &c));
    let cached = timed("(c) flows + diff_flows (old flows kept)", || {
        policy::diff_flows(flows.clone(), policy::flows(&cfg, &c))
    });
    assert_eq!(cached, d);
    eprintln!("(c) {} flow-mods", d.len());
}
