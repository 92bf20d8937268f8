//! The upstream Kubernetes NetworkPolicy e2e cases (tests/data/netpol-cases.json) and generated
//! cases, checked against the compiler's output.
//!
//! Every case runs on a two-node cluster (pods spread over both, dual-stack): the compiled
//! output of each node is evaluated for every (from pod, to pod, protocol/port, family), the
//! egress verdict on the source's node and the ingress verdict on the destination's, exactly as
//! the flows decide (`CompiledPolicy::verdict`).

mod netpol_support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use weft_plan::policy::{
    ClusterView, Direction, LabelSelector, Labels, NamedPort, NetworkPolicy, Operator, Peer,
    PodInfo, PolicyTypes, Port, PortSpec, Protocol, Requirement, Rule, Verdict,
};

use netpol_support::{compile_cluster, node_ips, reference_allows, End};

#[derive(Deserialize)]
struct Doc {
    topology: Topology,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Topology {
    namespaces: Vec<String>,
    named_ports: Vec<NamedPort>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    upstream: Option<String>,
    pods: Vec<String>,
    policies: Vec<Value>,
    probes: Vec<Probe>,
    #[serde(default)]
    labels: Extra,
}

#[derive(Deserialize, Default)]
struct Extra {
    #[serde(default)]
    namespaces: BTreeMap<String, Labels>,
    #[serde(default)]
    pods: BTreeMap<String, Labels>,
}

#[derive(Deserialize)]
struct Probe {
    protocol: Protocol,
    port: u16,
    expect: Vec<(String, String, bool)>,
}

fn family_ips(ns_index: usize, pod_index: usize) -> Vec<IpAddr> {
    vec![
        format!("10.244.{ns_index}.{}", 10 + pod_index)
            .parse()
            .unwrap(),
        format!("fd00:244:{ns_index}::{}", 10 + pod_index)
            .parse()
            .unwrap(),
    ]
}

/// The view of one case: its pods (label `pod=NAME`, the named ports of the topology, spread
/// over node1/node2), the namespaces (label `kubernetes.io/metadata.name`), its policies.
fn view_of(doc: &Doc, case: &Case) -> ClusterView {
    let mut view = ClusterView::default();
    for ns in &doc.topology.namespaces {
        let mut labels = Labels::new();
        labels.insert("kubernetes.io/metadata.name".into(), ns.clone());
        labels.extend(case.labels.namespaces.get(ns).cloned().unwrap_or_default());
        view.namespaces.insert(ns.clone(), labels);
    }
    for (i, key) in case.pods.iter().enumerate() {
        let (ns, name) = key.split_once('/').unwrap();
        let ns_index = doc
            .topology
            .namespaces
            .iter()
            .position(|n| n == ns)
            .unwrap();
        let pod_index = usize::from(name.as_bytes()[0] - b'a');
        let mut labels = Labels::new();
        labels.insert("pod".into(), name.into());
        labels.extend(case.labels.pods.get(key).cloned().unwrap_or_default());
        view.pods.push(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels,
            ips: family_ips(ns_index, pod_index),
            node: format!("node{}", 1 + i % 2),
            named_ports: doc.topology.named_ports.clone(),
        });
    }
    for p in &case.policies {
        let text = substitute(&view, &p.to_string());
        view.policies
            .push(serde_json::from_str::<NetworkPolicy>(&text).unwrap());
    }
    view
}

/// Replaces `@ns/pod/32` (`/128`) with the pod's IPv4 (IPv6) host prefix.
fn substitute(view: &ClusterView, text: &str) -> String {
    let mut out = text.to_string();
    for pod in &view.pods {
        for ip in &pod.ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            out = out.replace(&format!("@{}/{len}", pod.key()), &format!("{ip}/{len}"));
        }
    }
    out
}

fn matches_end(pattern: &str, key: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(ns) => key.split_once('/').unwrap().0 == ns,
        None => pattern == key,
    }
}

fn expected(probe: &Probe, from: &str, to: &str) -> bool {
    let mut allowed = true;
    for (f, t, v) in &probe.expect {
        if matches_end(f, from) && matches_end(t, to) {
            allowed = *v;
        }
    }
    allowed
}

#[test]
fn upstream_cases() {
    let doc: Doc =
        serde_json::from_str(include_str!("data/netpol-cases.json")).expect("cases parse");
    let upstream = doc.cases.iter().filter(|c| c.upstream.is_some()).count();
    assert!(upstream >= 25, "only {upstream} upstream cases");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &doc.cases {
        let view = view_of(&doc, case);
        let compiled = compile_cluster(&view);
        for probe in &case.probes {
            for src in &view.pods {
                for dst in &view.pods {
                    if src.key() == dst.key() {
                        continue; // loopback is ignored, as upstream does
                    }
                    let want = expected(probe, &src.key(), &dst.key());
                    for family in 0..2 {
                        let s = End::Pod(src, src.ips[family]);
                        let d = End::Pod(dst, dst.ips[family]);
                        let got = compiled.allows(s, d, Some(probe.protocol), probe.port);
                        let reference =
                            reference_allows(&view, s, d, Some(probe.protocol), probe.port);
                        checked += 1;
                        if got != want || reference != want {
                            failures.push(format!(
                                "{}: {} -> {} {}/{} ({}): expected {want}, compiled {got}, reference {reference}",
                                case.name,
                                src.key(),
                                dst.key(),
                                probe.protocol,
                                probe.port,
                                if family == 0 { "IPv4" } else { "IPv6" }
                            ));
                        }
                    }
                }
            }
        }
        // Traffic between a pod and its own node is always allowed, isolated or not.
        for pod in &view.pods {
            let (node, ofport) = &compiled.placement[&pod.key()];
            for ip in node_ips(node) {
                for direction in [Direction::Ingress, Direction::Egress] {
                    assert_eq!(
                        compiled.nodes[node].verdict(
                            direction,
                            *ofport,
                            ip,
                            Some(Protocol::Tcp),
                            10250
                        ),
                        Verdict::NodeTraffic,
                        "{}: {} {direction} with its node {ip}",
                        case.name,
                        pod.key()
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} probes wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 1000, "only {checked} probes");
    eprintln!(
        "{} cases ({upstream} upstream), {checked} probes",
        doc.cases.len()
    );
}

/// A small deterministic PRNG (xorshift64*), so generated cases are reproducible.
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
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: [&str; 3] = ["app", "tier", "team"];
const VALUES: [&str; 3] = ["one", "two", "three"];
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn random_labels(rng: &mut Rng) -> Labels {
    let mut l = Labels::new();
    for k in KEYS {
        if rng.chance(60) {
            l.insert(k.into(), rng.pick(&VALUES).to_string());
        }
    }
    l
}

fn random_selector(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::default();
    for _ in 0..rng.below(3) {
        if rng.chance(50) {
            s.match_labels
                .insert(rng.pick(&KEYS).to_string(), rng.pick(&VALUES).to_string());
        } else {
            let op = *rng.pick(&[
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
            ]);
            let values = match op {
                Operator::In | Operator::NotIn => (0..1 + rng.below(2))
                    .map(|_| rng.pick(&VALUES).to_string())
                    .collect(),
                _ => Vec::new(),
            };
            s.match_expressions.push(Requirement {
                key: rng.pick(&KEYS).to_string(),
                op,
                values,
            });
        }
    }
    s
}

fn random_peer(rng: &mut Rng) -> Peer {
    if rng.chance(25) {
        let v4 = rng.chance(60);
        let (cidr, except): (ipnet::IpNet, Vec<ipnet::IpNet>) = if v4 {
            let len = *rng.pick(&[8u8, 16, 24, 26, 28]);
            let base: ipnet::IpNet = format!("10.244.{}.{}/{len}", rng.below(3), rng.below(40))
                .parse()
                .unwrap();
            let except = (0..rng.below(3))
                .map(|_| {
                    format!(
                        "10.244.{}.{}/{}",
                        rng.below(3),
                        rng.below(40),
                        *rng.pick(&[27u8, 30, 32])
                    )
                    .parse()
                    .unwrap()
                })
                .filter(|e: &ipnet::IpNet| base.trunc().contains(&e.trunc()))
                .collect();
            (base.trunc(), except)
        } else {
            let len = *rng.pick(&[16u8, 48, 64, 124]);
            let base: ipnet::IpNet = format!("fd00:244:{}::{}/{len}", rng.below(3), rng.below(40))
                .parse()
                .unwrap();
            let except = (0..rng.below(3))
                .map(|_| {
                    format!(
                        "fd00:244:{}::{}/{}",
                        rng.below(3),
                        rng.below(40),
                        *rng.pick(&[126u8, 128])
                    )
                    .parse()
                    .unwrap()
                })
                .filter(|e: &ipnet::IpNet| base.trunc().contains(&e.trunc()))
                .collect();
            (base.trunc(), except)
        };
        Peer::IpBlock { cidr, except }
    } else {
        Peer::Pods {
            pod_selector: rng.chance(70).then(|| random_selector(rng)),
            namespace_selector: rng.chance(50).then(|| random_selector(rng)),
        }
    }
}

fn random_port(rng: &mut Rng) -> PortSpec {
    let protocol = *rng.pick(&PROTOCOLS);
    match rng.below(4) {
        0 => PortSpec {
            protocol,
            port: None,
            end_port: None,
        },
        1 => PortSpec {
            protocol,
            port: Some(Port::Named(
                rng.pick(&["http", "dns", "metrics"]).to_string(),
            )),
            end_port: None,
        },
        _ => {
            let start = 79 + rng.below(4) as u16;
            PortSpec {
                protocol,
                port: Some(Port::Number(start)),
                end_port: rng.chance(30).then(|| start + rng.below(3) as u16),
            }
        }
    }
}

fn random_rule(rng: &mut Rng) -> Rule {
    Rule {
        peers: (0..rng.below(3)).map(|_| random_peer(rng)).collect(),
        ports: (0..rng.below(3)).map(|_| random_port(rng)).collect(),
    }
}

fn random_view(rng: &mut Rng) -> ClusterView {
    let mut view = ClusterView::default();
    for ns in NAMESPACES {
        let mut labels = random_labels(rng);
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        view.namespaces.insert(ns.into(), labels);
    }
    for (i, ns) in NAMESPACES.iter().enumerate() {
        for j in 0..3 {
            // Named ports differ per pod: the same name maps to different numbers.
            let mut named_ports = Vec::new();
            for name in ["http", "dns", "metrics"] {
                if rng.chance(70) {
                    named_ports.push(NamedPort {
                        name: name.to_string(),
                        protocol: *rng.pick(&PROTOCOLS),
                        port: 79 + rng.below(4) as u16,
                    });
                }
            }
            view.pods.push(PodInfo {
                namespace: ns.to_string(),
                name: format!("p{j}"),
                labels: random_labels(rng),
                ips: family_ips(i, j),
                node: format!("node{}", 1 + rng.below(2)),
                named_ports,
            });
        }
    }
    for k in 0..1 + rng.below(4) {
        let ingress: Vec<Rule> = (0..rng.below(3)).map(|_| random_rule(rng)).collect();
        let egress: Vec<Rule> = (0..rng.below(3)).map(|_| random_rule(rng)).collect();
        let policy_types = if rng.chance(50) {
            PolicyTypes::kubernetes_default(!egress.is_empty())
        } else {
            PolicyTypes {
                ingress: rng.chance(60),
                egress: rng.chance(60),
            }
        };
        view.policies.push(NetworkPolicy {
            namespace: rng.pick(&NAMESPACES).to_string(),
            name: format!("np{k}"),
            pod_selector: random_selector(rng),
            policy_types,
            ingress,
            egress,
        });
    }
    view
}

#[test]
fn generated_cases_match_the_reference() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let externals: Vec<IpAddr> = ["10.244.1.33", "172.16.0.9", "fd00:244:2::21", "2001:db8::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut probes = 0u64;
    let mut allowed = 0u64;
    for round in 0..300 {
        let view = random_view(&mut rng);
        let compiled = compile_cluster(&view);
        let ports = [79u16, 80, 81, 82, 83];
        let protocols = [
            Some(Protocol::Tcp),
            Some(Protocol::Udp),
            Some(Protocol::Sctp),
            None,
        ];
        let mut ends: Vec<End<'_>> = Vec::new();
        for pod in &view.pods {
            for ip in &pod.ips {
                ends.push(End::Pod(pod, *ip));
            }
        }
        ends.extend(externals.iter().map(|ip| End::External(*ip)));
        for src in &ends {
            for dst in &ends {
                let (s, d) = (*src, *dst);
                let same_family = match (s, d) {
                    (End::Pod(_, a) | End::External(a), End::Pod(_, b) | End::External(b)) => {
                        a.is_ipv4() == b.is_ipv4()
                    }
                };
                if !matches!((s, d), (End::Pod(..), _) | (_, End::Pod(..))) {
                    continue;
                }
                if !same_family {
                    continue;
                }
                for protocol in protocols {
                    for port in ports {
                        let want = reference_allows(&view, s, d, protocol, port);
                        let got = compiled.allows(s, d, protocol, port);
                        probes += 1;
                        allowed += u64::from(want);
                        assert_eq!(
                            got,
                            want,
                            "round {round}: {s:?} -> {d:?} {protocol:?}/{port}\nview: {}",
                            serde_json::to_string(&view.policies).unwrap()
                        );
                    }
                }
            }
        }
    }
    // The generator must produce both outcomes in bulk, or the comparison proves little.
    assert!(
        allowed > probes / 10 && allowed < probes * 9 / 10,
        "{allowed} of {probes} allowed"
    );
    eprintln!("{probes} generated probes, {allowed} allowed");
}
