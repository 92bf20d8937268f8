//! Shared by the `netpol_*` e2e tests: the upstream NetworkPolicy e2e world (namespaces x, y, z
//! labelled `ns=NAME`, pods a, b, c in each, labelled `pod=NAME`, a and c on node 1, b on node
//! 2, each serving TCP and UDP on ports 80 and 81 with named container ports
//! `serve-PORT-PROTO`), created as the kubelet would (Pod object, then CNI ADD through the real
//! plugin, then `status.podIPs`), and a probe matrix checked against an expected one.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use weft_e2e::cluster::{Cluster, ClusterNode};
use weft_e2e::netns;
use weft_e2e::node::Pod;
use weft_e2e::services::Backend;

/// `networking.k8s.io/v1` NetworkPolicies.
pub const NETPOL: (&str, &str, &str) = ("networking.k8s.io", "v1", "networkpolicies");
/// Core Namespaces.
pub const NAMESPACES: (&str, &str, &str) = ("", "v1", "namespaces");

/// The test namespaces.
pub const NAMESPACE_NAMES: [&str; 3] = ["x", "y", "z"];
/// The pods of each namespace with their node (1-based).
pub const POD_NODES: [(&str, usize); 3] = [("a", 1), ("b", 2), ("c", 1)];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A transport protocol probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP: connect, ask, answer.
    Tcp,
    /// UDP: a datagram and its answer.
    Udp,
}

/// One probe kind: protocol and port.
pub type Probe = (Proto, u16);

/// One test pod.
pub struct TestPod {
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// Node index (1-based).
    pub node: usize,
    /// IPv4 address.
    pub ip: IpAddr,
    /// IPv6 address (dual-stack).
    pub ip6: Option<IpAddr>,
    /// Its servers (dropped before the pod).
    pub servers: Vec<Backend>,
    /// The pod (its netns).
    pub pod: Pod,
}

impl TestPod {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// The Pod object the kubelet would have: labels, node, named ports.
pub fn pod_object(ns: &str, name: &str, node: &str) -> Value {
    let ports: Vec<Value> = [80, 81]
        .iter()
        .flat_map(|p| {
            [
                json!({"name": format!("serve-{p}-tcp"), "containerPort": p, "protocol": "TCP"}),
                json!({"name": format!("serve-{p}-udp"), "containerPort": p, "protocol": "UDP"}),
            ]
        })
        .collect();
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"pod": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]},
        "status": {"phase": "Pending"}
    })
}

/// Creates a pod as the kubelet does: Pod object (unless `object` is false), CNI ADD through
/// the plugin, `status.podIPs`, and its servers.
pub fn add_pod(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    node: usize,
    object: bool,
) -> Result<TestPod> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let cnode: &ClusterNode = cluster.node(node)?;
    if object {
        cluster
            .api
            .create_pod(pod_object(ns, name, &cnode.name))
            .map_err(|e| anyhow!("creating pod {ns}/{name}: {e}"))?;
    }
    let netns_name = format!("{}-np{n}", cnode.netns());
    netns::create(&netns_name)?;
    let pod = Pod {
        netns: netns_name,
        name: name.to_string(),
        namespace: ns.to_string(),
        container_id: format!(
            "{:016x}{n:08x}",
            std::process::id() as u64 | 0x4e50_0000_0000
        ),
        ifname: "eth0".to_string(),
    };
    let out = cnode.plugin("ADD", &pod.call())?;
    if !out.success {
        bail!("ADD of {ns}/{name} on {}: {}", cnode.name, out.stdout);
    }
    let result: Value = out.json()?;
    let ips: Vec<IpAddr> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    let ip = ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| anyhow!("no IPv4 for {ns}/{name}"))?;
    let ip6 = ips.iter().copied().find(IpAddr::is_ipv6);
    if object {
        set_pod_ips(cluster, ns, name, &ips)?;
    }
    let servers = vec![
        Backend::start(&pod.netns, 80)?,
        Backend::start(&pod.netns, 81)?,
    ];
    Ok(TestPod {
        ns: ns.to_string(),
        name: name.to_string(),
        node,
        ip,
        ip6,
        servers,
        pod,
    })
}

/// Sets `status.podIPs` (and `podIP`, phase Running) as the kubelet does after ADD.
pub fn set_pod_ips(cluster: &Cluster, ns: &str, name: &str, ips: &[IpAddr]) -> Result<()> {
    let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    cluster
        .api
        .patch_pod(
            ns,
            name,
            json!({"status": {"phase": "Running", "podIP": ips.first().map(ToString::to_string), "podIPs": pod_ips}}),
        )
        .map_err(|e| anyhow!("patching pod {ns}/{name}: {e}"))?;
    Ok(())
}

/// The world: namespaces x, y, z and their pods a, b, c.
pub fn world(cluster: &Cluster) -> Result<Vec<TestPod>> {
    for ns in NAMESPACE_NAMES {
        cluster
            .api
            .create_object(
                NAMESPACES,
                "",
                json!({"metadata": {"name": ns, "labels": {"ns": ns}}}),
            )
            .map_err(|e| anyhow!("creating namespace {ns}: {e}"))?;
    }
    let mut pods = Vec::new();
    for ns in NAMESPACE_NAMES {
        for (name, node) in POD_NODES {
            pods.push(add_pod(cluster, ns, name, node, true)?);
        }
    }
    Ok(pods)
}

/// Creates a NetworkPolicy `spec` named `name` in `ns`.
pub fn create_policy(cluster: &Cluster, ns: &str, name: &str, spec: Value) -> Result<()> {
    cluster
        .api
        .create_object(
            NETPOL,
            ns,
            json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}),
        )
        .map_err(|e| anyhow!("creating networkpolicy {ns}/{name}: {e}"))?;
    Ok(())
}

/// Deletes a NetworkPolicy.
pub fn delete_policy(cluster: &Cluster, ns: &str, name: &str) -> Result<()> {
    cluster
        .api
        .delete_object(NETPOL, ns, name)
        .map_err(|e| anyhow!("deleting networkpolicy {ns}/{name}: {e}"))?;
    Ok(())
}

/// Whether one probe from `from` to `to` (`addr`) gets its answer.
pub fn probe(from: &str, addr: SocketAddr, proto: Proto) -> bool {
    let from = from.to_string();
    netns::run_in(&from, move || match proto {
        Proto::Tcp => probe_tcp(addr),
        Proto::Udp => probe_udp(addr),
    })
    .unwrap_or(false)
}

fn probe_tcp(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(800)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(800)));
    let Ok(mut writer) = stream.try_clone() else {
        return false;
    };
    if writer.write_all(b"who\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .is_ok_and(|n| n > 0 && line.starts_with("from "))
}

fn probe_udp(addr: SocketAddr) -> bool {
    let any: SocketAddr = if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = UdpSocket::bind(any) else {
        return false;
    };
    if socket.connect(addr).is_err() {
        return false;
    }
    let _ = socket.set_read_timeout(Some(Duration::from_millis(400)));
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        if socket.send(b"who\n").is_err() {
            return false;
        }
        if let Ok(n) = socket.recv(&mut buf) {
            return buf[..n].starts_with(b"from ");
        }
    }
    false
}

/// A probe matrix: (from, to, probe) -> reached.
pub type Matrix = BTreeMap<(String, String, Probe), bool>;

/// Probes every pod to every other pod (not itself) for each of `probes`, in parallel; IPv6
/// addresses when `v6`.
pub fn matrix(pods: &[TestPod], probes: &[Probe], v6: bool) -> Matrix {
    let mut jobs = Vec::new();
    for from in pods {
        for to in pods {
            if from.key() == to.key() {
                continue;
            }
            let ip = if v6 { to.ip6.unwrap_or(to.ip) } else { to.ip };
            for &(proto, port) in probes {
                let key = (from.key(), to.key(), (proto, port));
                let netns = from.pod.netns.clone();
                let addr = SocketAddr::new(ip, port);
                jobs.push((key, std::thread::spawn(move || probe(&netns, addr, proto))));
            }
        }
    }
    jobs.into_iter()
        .map(|(key, job)| (key, job.join().unwrap_or(false)))
        .collect()
}

/// The expected matrix from `allowed(from, to, probe)`.
pub fn expected(
    pods: &[TestPod],
    probes: &[Probe],
    allowed: &dyn Fn(&TestPod, &TestPod, Probe) -> bool,
) -> Matrix {
    let mut m = Matrix::new();
    for from in pods {
        for to in pods {
            if from.key() == to.key() {
                continue;
            }
            for &p in probes {
                m.insert((from.key(), to.key(), p), allowed(from, to, p));
            }
        }
    }
    m
}

/// The differences between two matrices, one line each.
pub fn differences(want: &Matrix, got: &Matrix) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|((from, to, (proto, port)), v)| {
            format!(
                "{from} -> {to} {proto:?}/{port}: expected {}, got {}",
                if *v { "allowed" } else { "denied" },
                match got.get(&(from.clone(), to.clone(), (*proto, *port))) {
                    Some(true) => "allowed",
                    Some(false) => "denied",
                    None => "nothing",
                }
            )
        })
        .collect()
}

/// Probes until the matrix is the expected one (policies are realized asynchronously), at
/// most `within`; fails with the differences of the last round. Returns how long it took.
pub fn converge(
    case: &str,
    cluster: &Cluster,
    pods: &[TestPod],
    probes: &[Probe],
    v6: bool,
    allowed: &dyn Fn(&TestPod, &TestPod, Probe) -> bool,
    within: Duration,
) -> Result<Duration> {
    let want = expected(pods, probes, allowed);
    let started = Instant::now();
    loop {
        let got = matrix(pods, probes, v6);
        let diff = differences(&want, &got);
        if diff.is_empty() {
            let took = started.elapsed();
            println!(
                "case {case}: {} probes as expected after {took:?}",
                want.len()
            );
            return Ok(took);
        }
        if started.elapsed() > within {
            bail!(
                "case {case}: {} of {} probes differ after {within:?}:\n{}\n--- agent logs ---\n{}",
                diff.len(),
                want.len(),
                diff.join("\n"),
                tail(&cluster.agent_logs(), 200)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Finds a pod by `ns/name`.
pub fn pod<'a>(pods: &'a [TestPod], key: &str) -> &'a TestPod {
    pods.iter()
        .find(|p| p.key() == key)
        .unwrap_or_else(|| panic!("no pod {key}"))
}
