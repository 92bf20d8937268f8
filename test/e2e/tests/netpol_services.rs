//! NetworkPolicy egress to Services through the host's kube-proxy (iptables rules), with
//! `serviceCIDRs` set: an egress-isolated pod's connection to a ClusterIP is judged on the
//! DNATed packet, i.e. against the backend it lands on, as Kubernetes intends.

mod netpol_support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;
use weft_e2e::cluster::{Cluster, ClusterOptions};
use weft_e2e::kubeproxy::{Endpoint, EndpointSlice, Protocol, Service, ServicePort, TrafficPolicy};
use weft_e2e::services::{program_kube_proxy, ProxyMode};

use netpol_support::{create_policy, pod, probe, world, Proto};

fn service(name: &str, ip: &str, backend: IpAddr, node: &str) -> (Service, EndpointSlice) {
    (
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: vec![ip.parse().unwrap()],
            ports: vec![ServicePort {
                name: "p".into(),
                protocol: Protocol::Tcp,
                port: 8080,
                node_port: None,
            }],
            external_traffic_policy: TrafficPolicy::Cluster,
            load_balancer_ips: Vec::new(),
        },
        EndpointSlice {
            namespace: "default".into(),
            service: name.into(),
            ports: vec![("p".into(), Protocol::Tcp, 80)],
            endpoints: vec![Endpoint {
                address: backend,
                ready: true,
                node_name: node.into(),
            }],
        },
    )
}

/// Probes until `want` (at most 15 s).
fn until(from: &str, addr: SocketAddr, want: bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe(from, addr, Proto::Tcp) != want {
        ensure!(Instant::now() < deadline, "{what}: not {want} after 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn egress_to_a_service_is_judged_on_its_backend() -> Result<()> {
    let mut options = ClusterOptions::encap(2, "geneve");
    options.extra_config = "serviceCIDRs: [10.96.0.0/12]\n".into();
    let cluster = Cluster::start(options)?;
    let pods = world(&cluster)?;
    let node2 = cluster.node(2)?.name.clone();
    let (allowed_svc, allowed_slice) =
        service("to-x-b", "10.96.0.10", pod(&pods, "x/b").ip, &node2);
    let (denied_svc, denied_slice) = service("to-y-b", "10.96.0.11", pod(&pods, "y/b").ip, &node2);
    program_kube_proxy(
        &cluster,
        &[allowed_svc, denied_svc],
        &[allowed_slice, denied_slice],
        false,
        ProxyMode::Iptables,
    )?;
    let client = &pod(&pods, "x/a").pod.netns;
    let to_allowed: SocketAddr = "10.96.0.10:8080".parse()?;
    let to_denied: SocketAddr = "10.96.0.11:8080".parse()?;
    until(client, to_allowed, true, "service to x/b without policy")?;
    until(client, to_denied, true, "service to y/b without policy")?;
    // x/a may only talk to pods of its own namespace on TCP 80.
    create_policy(
        &cluster,
        "x",
        "egress-own-namespace",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 80}]}]}),
    )?;
    until(client, to_denied, false, "service to y/b with the policy")?;
    ensure!(
        probe(client, to_allowed, Proto::Tcp),
        "the service whose backend the policy allows is denied"
    );
    ensure!(
        !probe(
            client,
            SocketAddr::new(pod(&pods, "y/b").ip, 80),
            Proto::Tcp
        ),
        "y/b reached directly"
    );
    Ok(())
}
