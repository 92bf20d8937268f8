//! NetworkPolicy on the multi-node topology, upstream-style (the x/y/z namespaces, pods a/b/c
//! across two nodes, real pods through the plugin, a full probe matrix on TCP and UDP checked
//! against the expected one for each case): deny-all ingress, allow from a namespace selector,
//! a named port, ipBlock with except, egress deny with a DNS-like UDP allow, pod and namespace
//! selectors combined. Encap IPv4 runs every case; noEncap and dual-stack (IPv6 probes) a
//! subset.

mod netpol_support;

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use weft_e2e::cluster::{Cluster, ClusterOptions};

use netpol_support::{converge, create_policy, delete_policy, world, Probe, Proto, TestPod};

/// Who may reach whom: (from, to, probe) -> allowed.
type Allowed = Box<dyn Fn(&TestPod, &TestPod, Probe) -> bool>;

/// One upstream-style case: the policies and who may reach whom.
struct Case {
    name: &'static str,
    policies: Vec<(&'static str, &'static str, Value)>,
    allowed: Allowed,
}

const PROBES: [Probe; 3] = [(Proto::Tcp, 80), (Proto::Tcp, 81), (Proto::Udp, 80)];
const WITHIN: Duration = Duration::from_secs(15);

fn is(p: &TestPod, key: &str) -> bool {
    p.key() == key
}

fn cases(except_ip: &str) -> Vec<Case> {
    let except = format!("{except_ip}/32");
    vec![
        Case {
            name: "deny-all ingress in x",
            policies: vec![(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            allowed: Box::new(|_, to, _| to.ns != "x"),
        },
        Case {
            name: "x/a allows ingress from namespace y only",
            policies: vec![(
                "x",
                "allow-from-y",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            allowed: Box::new(|from, to, _| !is(to, "x/a") || from.ns == "y"),
        },
        Case {
            name: "x/a allows ingress on named port serve-81-tcp only",
            policies: vec![(
                "x",
                "allow-81",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            )],
            allowed: Box::new(|_, to, p| !is(to, "x/a") || p == (Proto::Tcp, 81)),
        },
        Case {
            name: "x/a allows ingress from an ipBlock except y/b",
            policies: vec![(
                "x",
                "allow-cidr-except",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [except]}}]}]}),
            )],
            allowed: Box::new(|from, to, _| !is(to, "x/a") || !is(from, "y/b")),
        },
        Case {
            name: "x/a egress denied except UDP 80 (DNS-like)",
            policies: vec![(
                "x",
                "egress-udp-only",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
            )],
            allowed: Box::new(|from, _, p| !is(from, "x/a") || p == (Proto::Udp, 80)),
        },
        Case {
            name: "y isolated, allows x/b only (namespace AND pod selector)",
            policies: vec![(
                "y",
                "allow-x-b",
                json!({"podSelector": {},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                              "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            allowed: Box::new(|from, to, _| to.ns != "y" || is(from, "x/b")),
        },
    ]
}

/// Runs `cases` one after the other (each one's policies replace the previous one's), checking
/// the full matrix first without any policy.
fn run_cases(
    cluster: &Cluster,
    pods: &[TestPod],
    cases: &[Case],
    probes: &[Probe],
    v6: bool,
) -> Result<()> {
    converge(
        "no policy",
        cluster,
        pods,
        probes,
        v6,
        &|_, _, _| true,
        WITHIN,
    )?;
    for case in cases {
        for (ns, name, spec) in &case.policies {
            create_policy(cluster, ns, name, spec.clone())?;
        }
        converge(case.name, cluster, pods, probes, v6, &*case.allowed, WITHIN)?;
        for (ns, name, _) in &case.policies {
            delete_policy(cluster, ns, name)?;
        }
    }
    converge(
        "all policies deleted",
        cluster,
        pods,
        probes,
        v6,
        &|_, _, _| true,
        WITHIN,
    )?;
    Ok(())
}

#[test]
fn upstream_cases_encap_ipv4() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let pods = world(&cluster)?;
    let except = netpol_support::pod(&pods, "y/b").ip.to_string();
    run_cases(&cluster, &pods, &cases(&except), &PROBES, false)
}

#[test]
fn upstream_cases_noencap_ipv4() -> Result<()> {
    let options = ClusterOptions {
        mode: "noEncap".into(),
        ..ClusterOptions::encap(2, "geneve")
    };
    let cluster = Cluster::start(options)?;
    let pods = world(&cluster)?;
    let except = netpol_support::pod(&pods, "y/b").ip.to_string();
    let all = cases(&except);
    let subset: Vec<Case> = all
        .into_iter()
        .filter(|c| {
            c.name.starts_with("x/a allows ingress from namespace")
                || c.name.starts_with("x/a egress")
        })
        .collect();
    run_cases(
        &cluster,
        &pods,
        &subset,
        &[(Proto::Tcp, 80), (Proto::Udp, 80)],
        false,
    )
}

#[test]
fn upstream_cases_dual_stack_ipv6_probes() -> Result<()> {
    let options = ClusterOptions {
        dual_stack_pods: true,
        ..ClusterOptions::encap(2, "geneve")
    };
    let cluster = Cluster::start(options)?;
    let pods = world(&cluster)?;
    anyhow::ensure!(
        pods.iter().all(|p| p.ip6.is_some()),
        "pods are not dual-stack"
    );
    let except = netpol_support::pod(&pods, "y/b").ip.to_string();
    let subset: Vec<Case> = cases(&except)
        .into_iter()
        .filter(|c| c.name.starts_with("deny-all") || c.name.starts_with("y isolated"))
        .collect();
    run_cases(
        &cluster,
        &pods,
        &subset,
        &[(Proto::Tcp, 80), (Proto::Udp, 80)],
        true,
    )
}
