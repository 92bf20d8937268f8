//! NetworkPolicy on real OVS (netdev) with real TCP and UDP traffic: three pods, one policy on
//! the server pod with a pod-selector rule on a named port, an ipBlock-with-except rule and an
//! egress rule; checked both ways over IPv4 and IPv6, an established connection surviving a
//! policy that denies new ones, an incremental label change, per-rule counters read back from
//! flow stats, and the policy's removal.

mod pipeline_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ovs_flows::ofp::FlowStatsRequest;
use ovs_flows::pipeline::policy::{self, PolicyFlow};
use ovs_flows::pipeline::{base_flows, pod_flows, Category, CookieFilter};
use pipeline_support::*;
use weft_e2e::netns;
use weft_e2e::services::{Backend, TcpSession};
use weft_plan::policy::{
    compile, ClusterView, CompiledPolicy, Direction, LabelSelector, Labels, LocalPod, NamedPort,
    NetworkPolicy, Peer, PodInfo, PolicyTypes, Port, PortSpec, Protocol, Rule,
};

/// How long a probe waits for a denied connection: a dropped SYN or datagram never answers.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

/// One connection attempt from a pod namespace (or the host) to an address.
#[derive(Clone, Debug)]
struct Probe {
    what: String,
    ns: String,
    proto: Proto,
    to: SocketAddr,
    want: bool,
}

/// A new TCP connection with one request/answer, or one UDP request/answer (2 tries).
fn attempt(ns: &str, proto: Proto, to: SocketAddr) -> bool {
    let result = netns::run_in(ns, move || -> std::io::Result<()> {
        match proto {
            Proto::Tcp => {
                let s = TcpStream::connect_timeout(&to, PROBE_TIMEOUT)?;
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                (&s).write_all(b"who\n")?;
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line)?;
                if line.starts_with("from ") {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!("answer {line:?}")))
                }
            }
            Proto::Udp => {
                let any: SocketAddr = if to.is_ipv6() {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(any)?;
                s.connect(to)?;
                s.set_read_timeout(Some(PROBE_TIMEOUT / 2))?;
                let mut buf = [0u8; 256];
                for _ in 0..2 {
                    s.send(b"who\n")?;
                    if s.recv(&mut buf).is_ok() {
                        return Ok(());
                    }
                }
                Err(std::io::Error::other("no udp answer"))
            }
        }
    });
    matches!(result, Ok(Ok(())))
}

/// Runs every probe at once (each on its own thread) and fails listing every wrong one.
fn check(step: &str, probes: &[Probe]) -> Result<()> {
    let handles: Vec<_> = probes
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || (attempt(&p.ns, p.proto, p.to), p)))
        .collect();
    let mut wrong = Vec::new();
    for h in handles {
        let (got, p) = h.join().map_err(|_| anyhow::anyhow!("probe panicked"))?;
        if got != p.want {
            wrong.push(format!(
                "{}: {:?} to {} expected {}, got {}",
                p.what,
                p.proto,
                p.to,
                if p.want { "allowed" } else { "denied" },
                if got { "allowed" } else { "denied" }
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{step}: {} of {} probes wrong:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n")
    );
    Ok(())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod_info(i: u8, l: &[(&str, &str)]) -> PodInfo {
    let p = pod(i);
    PodInfo {
        namespace: p.namespace,
        name: p.name,
        labels: labels(l),
        ips: p.ips,
        node: "node1".into(),
        named_ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    }
}

/// pod1 `role=client`, pod2 `role=other`, pod3 `app=server`; the policy `server` isolates pod3
/// both ways: ingress from `role=client` pods on the named port `http` (8080 on pod3), and
/// from the pod CIDRs except pod2's addresses on UDP 53; egress to `role=client` pods only.
fn view(with_policy: bool, pod2_role: &str) -> ClusterView {
    let server = NetworkPolicy {
        namespace: "default".into(),
        name: "server".into(),
        pod_selector: LabelSelector::labels([("app", "server")]),
        policy_types: PolicyTypes {
            ingress: true,
            egress: true,
        },
        ingress: vec![
            Rule {
                peers: vec![Peer::Pods {
                    pod_selector: Some(LabelSelector::labels([("role", "client")])),
                    namespace_selector: None,
                }],
                ports: vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: Some(Port::Named("http".into())),
                    end_port: None,
                }],
            },
            Rule {
                peers: vec![
                    Peer::IpBlock {
                        cidr: "10.244.1.0/24".parse().unwrap(),
                        except: vec![format!("{}/32", pod_ip4(2)).parse().unwrap()],
                    },
                    Peer::IpBlock {
                        cidr: "fd00:10:244:1::/64".parse().unwrap(),
                        except: vec![format!("{}/128", pod_ip6(2)).parse().unwrap()],
                    },
                ],
                ports: vec![PortSpec {
                    protocol: Protocol::Udp,
                    port: Some(Port::Number(53)),
                    end_port: None,
                }],
            },
        ],
        egress: vec![Rule {
            peers: vec![Peer::Pods {
                pod_selector: Some(LabelSelector::labels([("role", "client")])),
                namespace_selector: None,
            }],
            ports: vec![],
        }],
    };
    ClusterView {
        namespaces: [("default".to_string(), labels(&[]))].into(),
        pods: vec![
            pod_info(1, &[("role", "client")]),
            pod_info(2, &[("role", pod2_role)]),
            pod_info(3, &[("app", "server")]),
        ],
        policies: if with_policy { vec![server] } else { vec![] },
    }
}

fn locals(node: &Node) -> Vec<LocalPod> {
    node.pods
        .iter()
        .map(|p| LocalPod {
            namespace: p.pod.namespace.clone(),
            name: p.pod.name.clone(),
            ofport: p.pod.ofport,
            ips: p.pod.ips.clone(),
        })
        .collect()
}

fn node_ips(node: &Node) -> Vec<IpAddr> {
    let mut ips = node.cfg.node_ips.clone();
    ips.extend(node.cfg.gateway_ips.iter().copied());
    ips
}

/// Installs the change from `old` to `new` in one bundle and checks that the bridge then holds
/// exactly the base, pod and new policy flows.
async fn apply(node: &Node, old: &CompiledPolicy, new: &CompiledPolicy) -> Result<usize> {
    let d = policy::diff(&node.cfg, old, new);
    node.client.bundle(&d.flow_mods()).await?;
    let mut want: Vec<String> = base_flows(&node.cfg)
        .iter()
        .chain(
            node.pods
                .iter()
                .flat_map(|p| pod_flows(&node.cfg, &p.pod))
                .collect::<Vec<_>>()
                .iter(),
        )
        .chain(policy::flows(&node.cfg, new).iter())
        .map(ToString::to_string)
        .collect();
    want.sort();
    let got = node.ovs.dump_flows(BRIDGE)?;
    ensure!(
        got == want,
        "bridge flows differ from the plan:\n got {got:#?}\n want {want:#?}"
    );
    Ok(d.len())
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Every probe of the scenario, with the expectation under the policy (`policy`) or without.
fn probes(node: &Node, policy: bool, pod2_is_client: bool) -> Vec<Probe> {
    let mut out = Vec::new();
    let host = node.ovs.netns().to_string();
    for (fam, ipf) in [("v4", pod_ip4 as fn(u8) -> String), ("v6", pod_ip6)] {
        let gw = if fam == "v4" { GW4 } else { GW6 };
        let mut add = |what: &str, ns: &str, proto, to: SocketAddr, allowed_by_policy: bool| {
            out.push(Probe {
                what: format!("{what} {fam}"),
                ns: ns.to_string(),
                proto,
                to,
                want: !policy || allowed_by_policy,
            });
        };
        let (p1, p2, p3) = (node.ns(1), node.ns(2), node.ns(3));
        add(
            "pod1 -> pod3 named port http",
            p1,
            Proto::Tcp,
            sock(&ipf(3), 8080),
            true,
        );
        add(
            "pod1 -> pod3 tcp 80 (no rule)",
            p1,
            Proto::Tcp,
            sock(&ipf(3), 80),
            false,
        );
        add(
            "pod2 -> pod3 named port http",
            p2,
            Proto::Tcp,
            sock(&ipf(3), 8080),
            pod2_is_client,
        );
        add(
            "pod1 -> pod3 udp 53 (ipBlock)",
            p1,
            Proto::Udp,
            sock(&ipf(3), 53),
            true,
        );
        add(
            "pod2 -> pod3 udp 53 (except)",
            p2,
            Proto::Udp,
            sock(&ipf(3), 53),
            false,
        );
        add(
            "pod1 -> pod3 udp 80 (no rule)",
            p1,
            Proto::Udp,
            sock(&ipf(3), 80),
            false,
        );
        add(
            "pod3 -> pod1 tcp 80 (egress rule)",
            p3,
            Proto::Tcp,
            sock(&ipf(1), 80),
            true,
        );
        add(
            "pod3 -> pod2 tcp 80 (egress)",
            p3,
            Proto::Tcp,
            sock(&ipf(2), 80),
            pod2_is_client,
        );
        add(
            "pod3 -> pod1 udp 53 (egress rule)",
            p3,
            Proto::Udp,
            sock(&ipf(1), 53),
            true,
        );
        add(
            "pod1 -> pod2 tcp 80 (not isolated)",
            p1,
            Proto::Tcp,
            sock(&ipf(2), 80),
            true,
        );
        add(
            "pod2 -> pod1 udp 53 (not isolated)",
            p2,
            Proto::Udp,
            sock(&ipf(1), 53),
            true,
        );
        add(
            "node -> pod3 tcp 80 (own node)",
            &host,
            Proto::Tcp,
            sock(&ipf(3), 80),
            true,
        );
        add(
            "pod3 -> node tcp 80 (own node)",
            p3,
            Proto::Tcp,
            sock(gw, 80),
            true,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_allows_exactly_its_rules_on_real_traffic() -> Result<()> {
    let node = Node::start(3).await?;
    let mut servers = Vec::new();
    for i in 1..=3 {
        for port in [80, 8080, 53] {
            servers.push(Backend::start(node.ns(i), port)?);
        }
    }
    servers.push(Backend::start(node.ovs.netns(), 80)?);
    let (locals, node_ips) = (locals(&node), node_ips(&node));
    let open = compile(&view(false, "other"), &locals, &node_ips);
    let closed = compile(&view(true, "other"), &locals, &node_ips);
    ensure!(closed.isolated_ingress.contains(&3) && closed.isolated_egress.contains(&3));

    // No policy: the policy flows are only the node-traffic ones; everything connects.
    apply(&node, &CompiledPolicy::default(), &open).await?;
    check("no policy", &probes(&node, false, false))?;

    // An established connection pod2 -> pod3:80 and pod3 -> pod2:80 (both about to be denied).
    let mut inbound = TcpSession::connect(node.ns(2), sock(&pod_ip4(3), 80))?;
    let mut outbound = TcpSession::connect(node.ns(3), sock(&pod_ip6(2), 80))?;
    ensure!(inbound.ask()?.to_string() == pod_ip4(2));
    ensure!(outbound.ask()?.to_string() == pod_ip6(3));

    // The policy, in one bundle.
    let n = apply(&node, &open, &closed).await?;
    ensure!(n > 10, "policy bundle of {n} flow mods");
    check("policy", &probes(&node, true, false))?;
    // Established connections ride through (both directions, many times), new ones do not.
    for _ in 0..5 {
        ensure!(
            inbound.ask()?.to_string() == pod_ip4(2),
            "inbound established"
        );
        ensure!(
            outbound.ask()?.to_string() == pod_ip6(3),
            "outbound established"
        );
    }
    ensure!(!attempt(node.ns(2), Proto::Tcp, sock(&pod_ip4(3), 80)));

    // Per-rule counters from flow stats: the named-port rule allowed pod1's two connections
    // (v4 and v6) and then counted their established packets; the default drops counted the
    // denied attempts.
    let entries = node
        .client
        .dump_flows(&FlowStatsRequest {
            cookie: CookieFilter::category(Category::Policy).cookie,
            cookie_mask: CookieFilter::category(Category::Policy).mask,
            ..FlowStatsRequest::default()
        })
        .await?;
    let counters = policy::rule_counters(entries.iter().map(|e| {
        (
            e.flow.cookie,
            e.flow.table,
            e.stats.packet_count.unwrap_or(0),
            e.stats.byte_count.unwrap_or(0),
        )
    }));
    let rule = |name: &str, direction: Direction, index: usize| -> Result<u32> {
        closed
            .rules
            .values()
            .find(|r| r.key.name == name && r.key.direction == direction && r.key.index == index)
            .map(|r| r.id)
            .context("rule not compiled")
    };
    let http = counters
        .get(&rule("server", Direction::Ingress, 0)?)
        .copied()
        .unwrap_or_default();
    // (A late ACK or FIN after conntrack closed an entry is a new packet for the userspace
    // conntrack, and counts as one more.)
    ensure!(
        (2..=4).contains(&http.sessions),
        "named-port rule sessions: {http:?}"
    );
    ensure!(http.packets > http.sessions && http.bytes > 0, "{http:?}");
    let egress = counters
        .get(&rule("server", Direction::Egress, 0)?)
        .copied()
        .unwrap_or_default();
    ensure!(egress.sessions >= 4, "egress rule sessions: {egress:?}");
    let drops: BTreeMap<Direction, u64> = policy::default_drops(
        entries
            .iter()
            .map(|e| (e.flow.cookie, e.stats.packet_count.unwrap_or(0))),
    );
    ensure!(
        drops.get(&Direction::Ingress).copied().unwrap_or(0) >= 5,
        "{drops:?}"
    );
    ensure!(
        drops.get(&Direction::Egress).copied().unwrap_or(0) >= 2,
        "{drops:?}"
    );
    let drop_flows = entries
        .iter()
        .filter(|e| PolicyFlow::from_cookie(e.flow.cookie) == Some(PolicyFlow::IngressIsolation(3)))
        .count();
    ensure!(drop_flows == 1);

    // Services through the host (kube-proxy's DNAT, here two nft rules in the host): pod3's
    // egress allows only client pods, so a Service whose backend is pod1 is allowed and one
    // whose backend is pod2 is not, once the policy knows the Service range and judges the
    // DNATed packet; without it, the ClusterIP itself is judged (and is no client pod).
    let host = node.ovs.netns().to_string();
    for sysctl in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        &format!("net.ipv4.conf.{GATEWAY}.send_redirects=0"),
    ] {
        netns::exec(&host, &["sysctl", "-qw", sysctl])?;
    }
    let to_pod1 = format!("ip daddr 10.96.0.10 udp dport 53 dnat to {}:53", pod_ip4(1));
    let to_pod2 = format!("ip daddr 10.96.0.20 tcp dport 80 dnat to {}:80", pod_ip4(2));
    netns::exec(&host, &["nft", "add", "table", "ip", "npc"])?;
    netns::exec(
        &host,
        &[
            "nft",
            "add chain ip npc pre { type nat hook prerouting priority -100; }",
        ],
    )?;
    for rule in [&to_pod1, &to_pod2] {
        netns::exec(&host, &["nft", &format!("add rule ip npc pre {rule}")])?;
    }
    let (p1, p3) = (node.ns(1).to_string(), node.ns(3).to_string());
    let service = |what: &str, ns: &str, proto, to: &str, want| Probe {
        what: what.into(),
        ns: ns.into(),
        proto,
        to: to.parse().unwrap(),
        want,
    };
    check(
        "services, no service range",
        &[
            service(
                "pod3 -> svc(pod1) udp",
                &p3,
                Proto::Udp,
                "10.96.0.10:53",
                false,
            ),
            service(
                "pod1 -> svc(pod2) tcp",
                &p1,
                Proto::Tcp,
                "10.96.0.20:80",
                true,
            ),
        ],
    )?;
    let mut with_services = closed.clone();
    with_services
        .service_cidrs
        .insert("10.96.0.0/12".parse().unwrap());
    apply(&node, &closed, &with_services).await?;
    check(
        "services, with the service range",
        &[
            service(
                "pod3 -> svc(pod1) udp",
                &p3,
                Proto::Udp,
                "10.96.0.10:53",
                true,
            ),
            service(
                "pod3 -> svc(pod2) tcp",
                &p3,
                Proto::Tcp,
                "10.96.0.20:80",
                false,
            ),
            service(
                "pod1 -> svc(pod2) tcp",
                &p1,
                Proto::Tcp,
                "10.96.0.20:80",
                true,
            ),
        ],
    )?;
    check("policy with the service range", &probes(&node, true, false))?;
    apply(&node, &with_services, &closed).await?;

    // pod2 becomes a client: an incremental update (a peer clause flow per address and
    // direction, nothing else) lets it in on the named port and out from pod3.
    let client2 = compile(&view(true, "client"), &locals, &node_ips);
    let d = policy::diff(&node.cfg, &closed, &client2);
    ensure!(d.modify.is_empty() && d.delete.is_empty(), "{d:#?}");
    ensure!(d.add.len() == 4, "label change: {d:#?}");
    apply(&node, &closed, &client2).await?;
    check("pod2 is a client", &probes(&node, true, true))?;

    // The policy deleted: everything connects again; the established sessions still answer.
    apply(&node, &client2, &open).await?;
    check("policy deleted", &probes(&node, false, false))?;
    ensure!(inbound.ask()?.to_string() == pod_ip4(2));
    drop(servers);
    Ok(())
}
