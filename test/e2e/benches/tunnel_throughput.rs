//! Cross-node pod -> pod TCP throughput (issue 4): Weft's pipeline against the same OVS with a
//! minimal hand-made set of tunnel flows, same run, same topology.
//!
//! A 2-node encap (Geneve) cluster on the cluster harness (netdev datapath, the uplink on the
//! bridge, offloads off on the underlay); one pod per node. Weft's flows are saved from each
//! bridge, then both agents are stopped (the datapath stays) so no agent work competes with
//! either side. Each repetition replaces the flows of both bridges (`ovs-ofctl replace-flows`)
//! with Weft's saved set and measures, and with the minimal set and measures (alternating which
//! goes first). The minimal set is
//! four flows per node: uplink NIC <-> host internal port pass-through (the tunnel endpoint),
//! local pod -> peer pod CIDR with `tun_dst` out the tunnel, tunnel -> local pod IP with the
//! pod's MAC. Both pods have a permanent neighbour entry for their gateway (Weft's virtual
//! MAC) so neither side needs ARP.
//!
//! The transfer: a sender in pod 1 writes 64 KiB buffers for `SECONDS` to a receiver in pod 2
//! (sockets created inside the pod namespaces by this process); throughput is bytes received
//! over the receiver's time from first to last byte. Because a shared machine's load swings
//! throughput far more than the flow sets can, each transfer also records the CPU time both
//! ovs-vswitchd processes spent (all threads' `schedstat`) per MB moved: the switching cost,
//! which other processes' load barely changes.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p weft-e2e --bench tunnel_throughput
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use weft_e2e::cluster::{Cluster, ClusterNode, ClusterOptions, BRIDGE};
use weft_e2e::netns;
use weft_e2e::node::Pod;

/// Repetitions (each measures both sides).
const REPS: usize = 15;
/// Seconds per transfer.
const SECONDS: f64 = 1.5;
/// Target: Weft's throughput at least this fraction of the minimal flows'.
const TARGET_RATIO: f64 = 0.95;
/// The pipeline's virtual gateway MAC (pods resolve their gateway to it).
const VIRTUAL_MAC: &str = "02:77:65:66:74:01";
/// Fixed OpenFlow ports: tunnel, uplink NIC, host internal port.
const TUNNEL_PORT: u32 = 32768;
const NIC_PORT: u32 = 32770;
const HOST_PORT: u32 = 32771;

mod bench_support;
use bench_support::median;

fn main() -> ExitCode {
    bench_support::main("tunnel_throughput", run)
}

/// A pod as the minimal flows need it.
struct Endpoint {
    pod: Pod,
    ip: IpAddr,
    mac: String,
    ofport: u32,
}

fn endpoint(node: &ClusterNode, name: &str) -> Result<Endpoint> {
    let (pod, ip) = node.add_pod(name)?;
    let mac = pod
        .exec(&["cat", "/sys/class/net/eth0/address"])?
        .trim()
        .to_string();
    let peer_index: u32 = pod
        .exec(&["cat", "/sys/class/net/eth0/iflink"])?
        .trim()
        .parse()?;
    let links = weft_e2e::cmd::run("ip", &["-n", node.netns(), "-o", "link", "show"])?;
    let host_veth = links
        .lines()
        .find_map(|l| {
            let (index, rest) = l.split_once(": ")?;
            (index.trim().parse::<u32>().ok()? == peer_index)
                .then(|| rest.split(['@', ':']).next().map(str::to_string))?
        })
        .with_context(|| format!("no host veth with ifindex {peer_index}"))?;
    let ofport: u32 = node.interface_column(&host_veth, "ofport")?.parse()?;
    let gateway = pod
        .exec(&["ip", "-4", "route", "show", "default"])?
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .context("pod has no default route")?
        .to_string();
    pod.exec(&[
        "ip",
        "neigh",
        "replace",
        &gateway,
        "lladdr",
        VIRTUAL_MAC,
        "nud",
        "permanent",
        "dev",
        "eth0",
    ])?;
    Ok(Endpoint {
        pod,
        ip,
        mac,
        ofport,
    })
}

/// The minimal hand-written flows of a node hosting `local`, tunnelling to `peer`.
fn minimal_flows(local: &Endpoint, peer_cidr: &str, peer_transport: IpAddr) -> String {
    format!(
        "table=0,priority=200,in_port={NIC_PORT},actions=output:{HOST_PORT}\n\
         table=0,priority=200,in_port={HOST_PORT},actions=output:{NIC_PORT}\n\
         table=0,priority=100,ip,in_port={},nw_dst={peer_cidr},actions=set_field:{peer_transport}->tun_dst,output:{TUNNEL_PORT}\n\
         table=0,priority=100,ip,in_port={TUNNEL_PORT},nw_dst={},actions=set_field:{}->eth_dst,output:{}\n",
        local.ofport, local.ip, local.mac, local.ofport
    )
}

fn replace_flows(node: &ClusterNode, flows: &str, dir: &std::path::Path) -> Result<()> {
    let file = dir.join(format!("{}.flows", node.name));
    std::fs::write(&file, flows)?;
    node.ovs.ofctl(&[
        "--bundle",
        "replace-flows",
        BRIDGE,
        file.to_str().context("path")?,
    ])?;
    Ok(())
}

/// CPU time (ns) of every thread of process `pid` so far (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Sends for `SECONDS` from `client` to `server`; returns bits per second at the receiver and
/// the bytes received.
fn transfer(client: &Endpoint, server: &Endpoint, port: u16) -> Result<(f64, u64)> {
    let addr = SocketAddr::new(server.ip, port);
    let listener: TcpListener = netns::run_in(&server.pod.netns, move || TcpListener::bind(addr))??;
    let receiver = std::thread::spawn(move || -> Result<(u64, Duration)> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut first = None;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    let mut stream = netns::tcp_connect_in(&client.pod.netns, addr)
        .with_context(|| format!("connecting to {addr}"))?;
    let buf = vec![0x5au8; 64 * 1024];
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < SECONDS {
        stream.write_all(&buf)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (bytes, elapsed) = receiver
        .join()
        .map_err(|_| anyhow!("receiver panicked"))??;
    ensure!(bytes > 0 && !elapsed.is_zero(), "nothing received");
    Ok((bytes as f64 * 8.0 / elapsed.as_secs_f64(), bytes))
}

fn run() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let a = endpoint(cluster.node(1)?, "tput-a")?;
    let b = endpoint(cluster.node(2)?, "tput-b")?;
    weft_e2e::node::ping(&a.pod.netns, b.ip).context("pod a -> pod b before measuring")?;
    let weft: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| Ok(n.ovs.dump_flows(BRIDGE)?.join("\n") + "\n"))
        .collect::<Result<_>>()?;
    for node in &mut cluster.nodes {
        node.stop_agent();
    }
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let minimal = [
        minimal_flows(&a, &n2.pod_cidr, n2.ip),
        minimal_flows(&b, &n1.pod_cidr, n1.ip),
    ];
    let scratch = tempfile::tempdir()?;
    let nodes = [n1, n2];
    let install = |set: &[String]| -> Result<()> {
        for (node, flows) in nodes.iter().zip(set) {
            replace_flows(node, flows, scratch.path())?;
        }
        Ok(())
    };
    // Both flow sets carry traffic before anything is timed (and warm the datapath).
    for set in [&minimal[..], &weft[..]] {
        install(set)?;
        weft_e2e::node::ping(&a.pod.netns, b.ip).context("ping before measuring")?;
    }
    let weft_flow_count: usize = weft.iter().map(|w| w.lines().count()).sum();
    println!(
        "flows: weft {weft_flow_count} on 2 bridges, minimal {} ; {REPS} x {SECONDS} s per side",
        minimal.iter().map(|m| m.lines().count()).sum::<usize>()
    );
    let vswitchds: Vec<u32> = nodes
        .iter()
        .map(|n| n.ovs.vswitchd_pid().context("ovs-vswitchd pid"))
        .collect::<Result<_>>()?;
    let switching_cpu = || -> Result<u64> {
        vswitchds
            .iter()
            .map(|pid| cpu_ns(*pid))
            .sum::<Result<u64>>()
    };
    let mut port = 15000u16;
    let (mut w, mut m, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut cost_ratios = Vec::new();
    for rep in 0..REPS {
        // ABBA order: drift in the machine's load hits both sides alike.
        // Returns (bits/s, ns of ovs-vswitchd CPU per MB moved on both nodes).
        let mut measure = |label: &str, set: &[String]| -> Result<(f64, f64)> {
            install(set)?;
            port += 1;
            let cpu_before = switching_cpu()?;
            let (bps, bytes) = transfer(&a, &b, port)?;
            let cpu = switching_cpu()?.saturating_sub(cpu_before);
            if rep == 0 {
                // The datapath flow that carried the transfer out of node 1: what each packet
                // costs under this flow set.
                let dp = nodes[0].ovs.appctl_vswitchd(&["dpctl/dump-flows"])?;
                for line in dp.lines().filter(|l| l.contains("tnl_push")) {
                    println!("  datapath ({label}): {line}");
                }
            }
            Ok((bps, cpu as f64 / (bytes as f64 / 1e6)))
        };
        let ((weft_bps, weft_cost), (min_bps, min_cost)) = if rep % 2 == 0 {
            let w = measure("weft", &weft)?;
            (w, measure("minimal", &minimal)?)
        } else {
            let m = measure("minimal", &minimal)?;
            (measure("weft", &weft)?, m)
        };
        println!(
            "rep {}: weft {:.1} Mbit/s, minimal {:.1} Mbit/s, ratio {:.3}; ovs-vswitchd CPU per MB \
             weft {:.0} us, minimal {:.0} us, cost ratio (minimal/weft) {:.3}",
            rep + 1,
            weft_bps / 1e6,
            min_bps / 1e6,
            weft_bps / min_bps,
            weft_cost / 1e3,
            min_cost / 1e3,
            min_cost / weft_cost
        );
        cost_ratios.push(min_cost / weft_cost);
        w.push(weft_bps);
        m.push(min_bps);
        ratios.push(weft_bps / min_bps);
    }
    install(&weft)?;
    let ratio = median(ratios.clone());
    println!(
        "\nmedian: weft {:.1} Mbit/s, minimal {:.1} Mbit/s; median ratio {ratio:.3} \
         (min {:.3}, max {:.3}); target >= {TARGET_RATIO}: {}",
        median(w) / 1e6,
        median(m) / 1e6,
        ratios.iter().copied().fold(f64::MAX, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "switching cost: median (minimal CPU per MB / weft CPU per MB) {:.3} (min {:.3}, max {:.3}) \
         - the throughput Weft can reach relative to the minimal flows when ovs-vswitchd's CPU \
         is the bottleneck",
        median(cost_ratios.clone()),
        cost_ratios.iter().copied().fold(f64::MAX, f64::min),
        cost_ratios.iter().copied().fold(0.0, f64::max),
    );
    if ratios.is_empty() {
        bail!("no measurement");
    }
    Ok(())
}
