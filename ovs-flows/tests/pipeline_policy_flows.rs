//! NetworkPolicy flows as text: a rule's conjunctive flows (|peers| + |pods| + |ports|), the
//! default drops, node traffic, counters' cookies, incremental updates, and the kernel
//! datapath's acceptance.

use std::net::IpAddr;

use ovs_flows::flow::{Action, Flow, MacAddr};
use ovs_flows::pipeline::policy::{self, PolicyFlow};
use ovs_flows::pipeline::{base_flows, NodeConfig};
use weft_plan::policy::{
    compile, ClusterView, CompiledPolicy, LabelSelector, LocalPod, NamedPort, NetworkPolicy, Peer,
    PodInfo, PolicyTypes, Port, PortSpec, Protocol, Rule,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node() -> NodeConfig {
    NodeConfig {
        round: 3,
        gateway_mac: MacAddr::new(0x0a, 0x58, 0x0a, 0xf4, 0, 1),
        gateway_ips: vec![ip("10.244.1.1"), ip("fd00:10:244:1::1")],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ],
        node_ips: vec![ip("192.168.1.10")],
    }
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ips: &[&str]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        node: "node2".into(),
        named_ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    }
}

fn from_role(role: &str) -> Peer {
    Peer::Pods {
        pod_selector: Some(LabelSelector::labels([("role", role)])),
        namespace_selector: None,
    }
}

fn tcp(port: Port) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port: Some(port),
        end_port: None,
    }
}

/// `default/web` (local, ofport 5) with ingress from role=a on the named port `http` and from
/// role=b on 80..81, and egress to 10.0.0.0/8 except 10.1.0.0/16 on UDP 53.
fn view() -> ClusterView {
    let mut web = pod(
        "default",
        "web",
        &[("app", "web")],
        &["10.244.1.5", "fd00:10:244:1::5"],
    );
    web.node = "node1".into();
    ClusterView {
        namespaces: [("default".to_string(), Default::default())].into(),
        pods: vec![
            web,
            pod(
                "default",
                "p1",
                &[("role", "a")],
                &["10.244.2.11", "fd00:10:244:2::11"],
            ),
            pod(
                "default",
                "p2",
                &[("role", "b")],
                &["10.244.2.12", "fd00:10:244:2::12"],
            ),
            pod(
                "default",
                "p3",
                &[("role", "b")],
                &["10.244.2.13", "fd00:10:244:2::13"],
            ),
        ],
        policies: vec![
            NetworkPolicy {
                namespace: "default".into(),
                name: "web-a".into(),
                pod_selector: LabelSelector::labels([("app", "web")]),
                policy_types: PolicyTypes::kubernetes_default(true),
                ingress: vec![Rule {
                    peers: vec![from_role("a")],
                    ports: vec![tcp(Port::Named("http".into()))],
                }],
                egress: vec![Rule {
                    peers: vec![Peer::IpBlock {
                        cidr: "10.0.0.0/8".parse().unwrap(),
                        except: vec!["10.1.0.0/16".parse().unwrap()],
                    }],
                    ports: vec![PortSpec {
                        protocol: Protocol::Udp,
                        port: Some(Port::Number(53)),
                        end_port: None,
                    }],
                }],
            },
            NetworkPolicy {
                namespace: "default".into(),
                name: "web-b".into(),
                pod_selector: LabelSelector::labels([("app", "web")]),
                policy_types: PolicyTypes::kubernetes_default(false),
                ingress: vec![Rule {
                    peers: vec![from_role("b")],
                    ports: vec![PortSpec {
                        protocol: Protocol::Tcp,
                        port: Some(Port::Number(80)),
                        end_port: Some(81),
                    }],
                }],
                egress: vec![],
            },
        ],
    }
}

fn locals() -> Vec<LocalPod> {
    vec![LocalPod {
        namespace: "default".into(),
        name: "web".into(),
        ofport: 5,
        ips: vec![ip("10.244.1.5"), ip("fd00:10:244:1::5")],
    }]
}

fn node_ips() -> Vec<IpAddr> {
    vec![ip("192.168.1.10"), ip("10.244.1.1"), ip("fd00:10:244:1::1")]
}

fn compiled(view: &ClusterView) -> CompiledPolicy {
    compile(view, &locals(), &node_ips())
}

fn text(flows: &[Flow]) -> Vec<String> {
    flows.iter().map(ToString::to_string).collect()
}

fn rule_id(c: &CompiledPolicy, name: &str, ingress: bool) -> u32 {
    c.rules
        .values()
        .find(|r| {
            r.key.name == name
                && (r.key.direction == weft_plan::policy::Direction::Ingress) == ingress
        })
        .map(|r| r.id)
        .unwrap()
}

#[test]
fn a_rule_costs_peers_plus_pods_plus_ports() {
    let cfg = node();
    let c = compiled(&view());
    let flows = policy::flows(&cfg, &c);
    let lines = text(&flows);
    let a = rule_id(&c, "web-a", true);
    let b = rule_id(&c, "web-b", true);
    let e = rule_id(&c, "web-a", false);
    let has = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    // web-a ingress: 2 peer addresses (p1 v4, v6) + 1 pod + 1 port x 2 families, plus conj_id
    // and counter flows.
    assert_eq!(has(&format!("conjunction({a},")), 5, "{lines:#?}");
    // web-b: p2 and p3 (v4+v6) + 1 pod + 80..81 as one mask x 2 families.
    assert_eq!(has(&format!("conjunction({b},")), 7, "{lines:#?}");
    // The egress block minus its except: 8 prefixes (10.0.0.0/8 \ 10.1.0.0/16), IPv4 only.
    assert_eq!(has(&format!("conjunction({e},")), 8 + 1 + 2, "{lines:#?}");
    for line in [
        format!("cookie=0x3080100000000, table=90, priority=200,reg1=0x5 actions=conjunction({},2/3),conjunction({},2/3)", a.min(b), a.max(b)),
        format!("cookie=0x3080100000000, table=90, priority=200,ip,nw_src=10.244.2.11 actions=conjunction({a},1/3)"),
        format!("cookie=0x3080100000000, table=90, priority=200,ipv6,ipv6_src=fd00:10:244:2::11 actions=conjunction({a},1/3)"),
        format!("cookie=0x3080100000000, table=90, priority=200,tcp,tp_dst=8080 actions=conjunction({a},3/3)"),
        format!("cookie=0x3080100000000, table=90, priority=200,tcp6,tp_dst=8080 actions=conjunction({a},3/3)"),
        format!("cookie=0x3080100000000, table=90, priority=200,tcp,tp_dst=0x50/0xfffe actions=conjunction({b},3/3)"),
        format!("cookie={:#x}, table=90, priority=200,conj_id={a} actions=set_field:{a:#x}->reg5,goto_table:100", PolicyFlow::Rule(a).cookie(3)),
        format!("cookie={:#x}, table=102, priority=200,ct_state=-new+trk,ct_label={:#x}/0xffffffff00000000 actions=goto_table:120", PolicyFlow::Rule(a).cookie(3), u128::from(a) << 32),
        format!("cookie=0x3080100000000, table=60, priority=200,in_port=5 actions=conjunction({e},2/3)"),
        format!("cookie=0x3080100000000, table=60, priority=200,ip,nw_dst=10.0.0.0/16 actions=conjunction({e},1/3)"),
        format!("cookie=0x3080100000000, table=60, priority=200,udp,tp_dst=53 actions=conjunction({e},3/3)"),
        format!("cookie={:#x}, table=60, priority=200,conj_id={e} actions=set_field:{e:#x}->reg4,goto_table:70", PolicyFlow::Rule(e).cookie(3)),
        format!("cookie={:#x}, table=101, priority=200,ct_state=-new+trk,ct_label={e:#x}/0xffffffff actions=goto_table:102", PolicyFlow::Rule(e).cookie(3)),
        "cookie=0x3080200000005, table=61, priority=200,in_port=5 actions=drop".to_string(),
        "cookie=0x3080300000005, table=91, priority=200,reg1=0x5 actions=drop".to_string(),
        "cookie=0x3080400000000, table=90, priority=210,ip,nw_src=192.168.1.10 actions=goto_table:100".to_string(),
        "cookie=0x3080400000000, table=60, priority=210,ipv6,ipv6_dst=fd00:10:244:1::1 actions=goto_table:70".to_string(),
    ] {
        assert!(lines.contains(&line), "missing {line}\n{lines:#?}");
    }
    // The except is carved out: no prefix covers 10.1.0.0/16.
    assert!(!lines
        .iter()
        .any(|l| l.contains("nw_dst=10.0.0.0/8") || l.contains("nw_dst=10.1.")));
    // One flow per (table, priority, match).
    let mut keys: Vec<(u8, u16, String)> = flows
        .iter()
        .map(|f| (f.table, f.priority, f.matches.to_string()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicate matches");
    // Conjunction flows carry only conjunction actions.
    for f in &flows {
        let conj = f
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Conjunction { .. }))
            .count();
        assert!(conj == 0 || conj == f.actions.len(), "{f}");
    }
}

#[test]
fn a_pod_label_change_touches_only_the_rules_it_enters_and_leaves() {
    let cfg = node();
    let mut v = view();
    let before = compiled(&v);
    // p2 leaves role=b (web-b keeps p3) and enters role=a (web-a).
    v.pods[2].labels.insert("role".into(), "a".into());
    let after = compiled(&v);
    let a = rule_id(&after, "web-a", true);
    let b = rule_id(&after, "web-b", true);
    assert_eq!(a, rule_id(&before, "web-a", true), "rule ids are stable");
    let d = policy::diff(&cfg, &before, &after);
    assert!(d.add.is_empty() && d.delete.is_empty(), "{d:#?}");
    assert_eq!(
        text(&d.modify),
        [
            format!("cookie=0x3080100000000, table=90, priority=200,ip,nw_src=10.244.2.12 actions=conjunction({a},1/3)"),
            format!("cookie=0x3080100000000, table=90, priority=200,ipv6,ipv6_src=fd00:10:244:2::12 actions=conjunction({a},1/3)"),
        ]
    );
    assert!(!text(&d.modify)
        .iter()
        .any(|l| l.contains(&format!("conjunction({b},"))));
    assert_eq!(d.flow_mods().len(), 2);
    // Nothing changed: nothing to do.
    assert!(policy::diff(&cfg, &after, &compiled(&v)).is_empty());

    // web loses app=web: no policy selects it any more, every policy flow goes (all deletes)
    // but the node-traffic flows.
    let mut v2 = v.clone();
    v2.pods[0].labels.clear();
    let none = compiled(&v2);
    let d = policy::diff(&cfg, &after, &none);
    assert!(d.add.is_empty() && d.modify.is_empty());
    assert_eq!(
        d.delete.len(),
        policy::flows(&cfg, &after).len() - policy::flows(&cfg, &none).len()
    );
    assert!(policy::flows(&cfg, &none)
        .iter()
        .all(|f| PolicyFlow::from_cookie(f.cookie) == Some(PolicyFlow::NodeTraffic)));
}

#[test]
fn counters_add_up_per_rule() {
    let cfg = node();
    let c = compiled(&view());
    let a = rule_id(&c, "web-a", true);
    let flows = policy::flows(&cfg, &c);
    // Pretend stats: each flow of rule a saw 3 packets of 100 bytes.
    let stats = flows.iter().map(|f| (f.cookie, f.table, 3u64, 300u64));
    let counters = policy::rule_counters(stats);
    let ca = counters[&a];
    assert_eq!((ca.sessions, ca.packets, ca.bytes), (3, 6, 600));
    let drops = policy::default_drops(flows.iter().map(|f| (f.cookie, 2u64)));
    assert_eq!(drops.values().sum::<u64>(), 4);
}

#[test]
fn the_kernel_datapath_accepts_the_policy_flows() {
    use ovs_flows::datapath::{requirements, DatapathFeatures};
    let cfg = node();
    let mut flows = base_flows(&cfg);
    flows.extend(policy::flows(&cfg, &compiled(&view())));
    let needs = requirements(&flows);
    let weft_kernel =
        DatapathFeatures::parse(include_str!("data/dp-features-system-uml-6.1-weft.txt"));
    assert_eq!(weft_kernel.missing(&needs), [], "needs: {needs:#?}");
    let netdev = DatapathFeatures::parse(include_str!("data/dp-features-netdev-ovs-3.1.txt"));
    assert_eq!(netdev.missing(&needs), [], "needs: {needs:#?}");
}

#[test]
fn with_service_ranges_egress_is_judged_after_the_hosts_dnat() {
    let cfg = node();
    let mut c = compiled(&view());
    let e = rule_id(&c, "web-a", false);
    let without = text(&policy::flows(&cfg, &c));
    assert!(!without.iter().any(|l| l.contains("in_port=32769")));
    c.service_cidrs.insert("10.96.0.0/12".parse().unwrap());
    c.service_cidrs.insert("fd00:96::/108".parse().unwrap());
    let lines = text(&policy::flows(&cfg, &c));
    for line in [
        // The pod's first packet to a Service range goes on to the host.
        "cookie=0x3080500000000, table=60, priority=210,ip,nw_dst=10.96.0.0/12 actions=goto_table:70".to_string(),
        "cookie=0x3080500000000, table=60, priority=210,ipv6,ipv6_dst=fd00:96::/108 actions=goto_table:70".to_string(),
        // The DNATed packet back from the host with the pod's address is the pod's egress.
        format!("cookie=0x3080100000000, table=60, priority=200,ip,in_port=32769,nw_src=10.244.1.5 actions=conjunction({e},2/3)"),
        format!("cookie=0x3080100000000, table=60, priority=200,ipv6,in_port=32769,ipv6_src=fd00:10:244:1::5 actions=conjunction({e},2/3)"),
        "cookie=0x3080200000005, table=61, priority=200,ip,in_port=32769,nw_src=10.244.1.5 actions=drop".to_string(),
        "cookie=0x3080200000005, table=61, priority=200,ipv6,in_port=32769,ipv6_src=fd00:10:244:1::5 actions=drop".to_string(),
    ] {
        assert!(lines.contains(&line), "missing {line}\n{lines:#?}");
    }
    assert_eq!(
        c.verdict(
            weft_plan::policy::Direction::Egress,
            5,
            ip("10.96.0.10"),
            Some(Protocol::Udp),
            53
        ),
        weft_plan::policy::Verdict::ServiceFirstPass
    );
}
