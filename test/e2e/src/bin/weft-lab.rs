//! `weft-lab`: the process behind `build/lab up`. It starts a node exactly as the e2e tests do
//! (own OVS in a network namespace, the test API server, the real `weft-agent`), creates pods by
//! calling the real `weft` plugin as a runtime does, prints nodes, pods, IPs, the MTU plan and a
//! ping matrix, writes a state file for `build/lab status|exec`, and keeps everything up until it
//! receives SIGTERM or SIGINT; then it deletes the pods through the plugin and tears the node down.
//! SIGUSR1 (`build/lab switch-mode`) restarts every agent of the multi-node lab in the mode named
//! in `switch-mode.request` next to the state file, keeping the pods, and answers in
//! `switch-mode.result` (first line `ok` or `error`).

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use weft_e2e::cluster::{Cluster, ClusterNode, ClusterOptions};
use weft_e2e::node::{Node, NodeOptions, Pod, BRIDGE, NODE_IP4, NODE_IP6};

const USAGE: &str = "usage: weft-lab up --state FILE [--pods-per-node N] \
     [--ip-family ipv4|ipv6|dual] [--nodes N] [--mode encap|noEncap] [--tunnel geneve|vxlan|gre] \
     [--runtime plugin|containerd|image]";

struct Args {
    state: PathBuf,
    pods: usize,
    family: String,
    nodes: usize,
    mode: String,
    tunnel: String,
    /// `plugin`: pods are namespaces wired by calling the plugin; `containerd`: real
    /// containers made by a containerd driven through CRI (single-node lab).
    runtime: String,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("up") {
        bail!("{USAGE}");
    }
    let mut parsed = Args {
        state: PathBuf::new(),
        pods: 3,
        family: "dual".into(),
        nodes: 1,
        mode: "encap".into(),
        tunnel: "geneve".into(),
        runtime: "plugin".into(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--state" => parsed.state = value()?.into(),
            "--pods-per-node" => {
                let v = value()?;
                parsed.pods = v
                    .parse()
                    .with_context(|| format!("--pods-per-node {v:?}: not a number"))?;
            }
            "--ip-family" => parsed.family = value()?,
            "--nodes" => {
                let v = value()?;
                parsed.nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .with_context(|| format!("--nodes {v:?}: expected 1 to 8"))?;
            }
            "--mode" => parsed.mode = value()?,
            "--tunnel" => parsed.tunnel = value()?,
            "--runtime" => parsed.runtime = value()?,
            other => bail!("unknown option {other:?}; {USAGE}"),
        }
    }
    if parsed.state.as_os_str().is_empty() {
        bail!("--state is required; {USAGE}");
    }
    if !["ipv4", "ipv6", "dual"].contains(&parsed.family.as_str()) {
        bail!(
            "--ip-family {:?}: expected ipv4, ipv6 or dual",
            parsed.family
        );
    }
    if !["encap", "noEncap"].contains(&parsed.mode.as_str()) {
        bail!("--mode {:?}: expected encap or noEncap", parsed.mode);
    }
    if !["geneve", "vxlan", "gre"].contains(&parsed.tunnel.as_str()) {
        bail!(
            "--tunnel {:?}: expected geneve, vxlan or gre",
            parsed.tunnel
        );
    }
    if !["plugin", "containerd", "image"].contains(&parsed.runtime.as_str()) {
        bail!(
            "--runtime {:?}: expected plugin, containerd or image",
            parsed.runtime
        );
    }
    Ok(parsed)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let multi = args.nodes > 1 || args.mode != "encap" || args.tunnel != "geneve";
    if args.runtime == "image" {
        return image_lab(&args);
    }
    if args.runtime == "containerd" {
        if multi {
            bail!("--runtime containerd: the multi-node lab runs plugin pods only (for now)");
        }
        return containerd_node(&args);
    }
    if multi {
        return multi_node(&args);
    }
    let cidrs: &[&str] = match args.family.as_str() {
        "ipv4" => &["10.244.1.0/24"],
        "ipv6" => &["fd00:244:1::/64"],
        _ => &["10.244.1.0/24", "fd00:244:1::/64"],
    };
    let mut signals = Signals::install()?;
    let node = Node::start(NodeOptions::new(cidrs))?;
    println!("== node {} (netns {})", node.name, node.netns());
    println!("MTU plan: {}", mtu_plan(&node.ovs));
    println!(
        "node IPs: {NODE_IP4}, {NODE_IP6}; pod CIDRs: {}",
        cidrs.join(", ")
    );

    let mut pods = Vec::new();
    let mut pod_ips = Vec::new();
    for i in 1..=args.pods {
        let pod = Pod::create(&node, &format!("pod-{i}"))?;
        let result = node.add(&pod).with_context(|| format!("ADD pod-{i}"))?;
        pod_ips.push(addresses(&result));
        pods.push(pod);
    }
    println!("== pods");
    for (pod, ips) in pods.iter().zip(&pod_ips) {
        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        println!("{:<8} netns {:<24} {}", pod.name, pod.netns, ips.join(", "));
    }
    print_ping_matrix(&pods, &pod_ips, cidrs);

    let state = json!({
        "pid": std::process::id(),
        "node": node.name,
        "netns": node.netns(),
        "rundir": node.ovs.rundir(),
        "agentLog": node.log,
        "pods": pods.iter().zip(&pod_ips).map(|(p, ips)| json!({
            "name": p.name, "netns": p.netns, "ips": ips,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.state, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", args.state.display()))?;
    println!("lab is up (state: {})", args.state.display());

    let (_, result) = switch_files(&args.state);
    while let Event::SwitchMode = signals.next() {
        write_result(
            &result,
            "error\nswitch-mode needs the multi-node lab: build/lab up --nodes N or --mode MODE\n",
        )?;
    }
    println!("== taking the lab down");
    for pod in &pods {
        if let Err(err) = node.del(pod) {
            eprintln!("DEL {}: {err:#}", pod.name);
        }
    }
    drop(pods);
    drop(node);
    let _ = std::fs::remove_file(&args.state);
    println!("lab is down");
    Ok(())
}

/// The multi-node lab: an underlay namespace with a Linux bridge, `--nodes` nodes with their own
/// OVS and agent, one shared test API server (IPv4 pods; the dual-stack lab is single-node).
fn multi_node(args: &Args) -> Result<()> {
    if args.family != "dual" && args.family != "ipv4" {
        bail!("the multi-node lab runs IPv4 pods only (--ip-family ipv4)");
    }
    let mut signals = Signals::install()?;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: args.nodes,
        mode: args.mode.clone(),
        tunnel: args.tunnel.clone(),
        extra_config: String::new(),
        underlay_ipv6: false,
        dual_stack_pods: false,
    })?;
    println!(
        "== cluster: {} nodes, mode {}, tunnel {}, underlay netns {}",
        args.nodes,
        args.mode,
        args.tunnel,
        cluster.underlay()
    );
    let mut pods = Vec::new();
    for node in &cluster.nodes {
        println!(
            "node {} ip {} podCIDR {} MTU plan {}",
            node.name,
            node.ip,
            node.pod_cidr,
            mtu_plan(&node.ovs)
        );
        for i in 1..=args.pods {
            let name = format!("n{}-pod-{i}", node.index);
            let (pod, ip) = node.add_pod(&name).with_context(|| format!("ADD {name}"))?;
            pods.push((node.index, pod, ip));
        }
    }
    println!("== pods");
    for (node, pod, ip) in &pods {
        println!("{:<10} node {node} netns {:<24} {ip}", pod.name, pod.netns);
    }
    print!("{}", pod_matrix(&pods));
    let state = json!({
        "pid": std::process::id(),
        "node": cluster.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(","),
        "netns": cluster.underlay(),
        "rundir": cluster.nodes.first().map(|n| n.ovs.rundir().to_path_buf()),
        "pods": pods.iter().map(|(_, p, ip)| json!({
            "name": p.name, "netns": p.netns, "ips": [ip],
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.state, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", args.state.display()))?;
    println!("lab is up (state: {})", args.state.display());
    let (request, result) = switch_files(&args.state);
    while let Event::SwitchMode = signals.next() {
        let answer = std::fs::read_to_string(&request)
            .with_context(|| format!("cannot read {}", request.display()))
            .and_then(|text| parse_switch_request(&text))
            .and_then(|(mode, reconcile)| switch_mode(&mut cluster, &pods, &mode, reconcile));
        let text = match answer {
            Ok(report) => format!("ok\n{report}"),
            Err(err) => format!("error\n{err:#}\n"),
        };
        print!("{text}");
        write_result(&result, &text)?;
    }
    println!("== taking the lab down");
    for (index, pod, _) in &pods {
        if let Ok(node) = cluster.node(*index) {
            if let Err(err) = node.plugin("DEL", &pod.call()) {
                eprintln!("DEL {}: {err:#}", pod.name);
            }
        }
    }
    drop(pods);
    drop(cluster);
    let _ = std::fs::remove_file(&args.state);
    println!("lab is down");
    Ok(())
}

/// The lab from the image and the manifest (`build/lab up --image`): the Weft image built by
/// `build/image` from the binaries next to this one, and the DaemonSet of build/yamls/weft.yml
/// run on each node through podman as the kubelet would ([`weft_e2e::daemonset`]); pods wired by
/// the plugin install-cni put on the node. IPv4, encap (the manifest's ConfigMap, netdev).
fn image_lab(args: &Args) -> Result<()> {
    use weft_e2e::daemonset::{DaemonSetCluster, Scratch};
    if args.mode != "encap" || args.tunnel != "geneve" {
        bail!("--image runs the manifest's ConfigMap as is (encap, geneve)");
    }
    let mut signals = Signals::install()?;
    let bins = weft_e2e::node::Binaries::locate()?;
    let dir = bins
        .agent
        .parent()
        .context("no directory for the agent binary")?
        .to_path_buf();
    let scratch = Scratch::new()?;
    println!(
        "== building the image (build/image --bins {})",
        dir.display()
    );
    let (image, _) = scratch.engine.build_weft_image(&dir, "lab")?;
    let cluster = DaemonSetCluster::start(scratch, args.nodes, &image)?;
    println!(
        "== cluster: {} nodes running the DaemonSet of build/yamls/weft.yml from {image}",
        args.nodes
    );
    let mut pods = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        println!(
            "node {} ip {} podCIDR {} (netns {}, hostPaths under {})",
            node.node.name,
            node.node.ip,
            node.pod_cidr,
            node.node.netns,
            node.node.root.display()
        );
        for p in 1..=args.pods {
            let name = format!("n{}-pod-{p}", i + 1);
            let (pod, ip) = node.add_pod(&name).with_context(|| format!("ADD {name}"))?;
            pods.push((i + 1, pod, ip));
        }
    }
    println!("== pods");
    for (node, pod, ip) in &pods {
        println!("{:<10} node {node} netns {:<24} {ip}", pod.name, pod.netns);
    }
    print!("{}", pod_matrix(&pods));
    let first = cluster.node(1)?;
    let state = json!({
        "pid": std::process::id(),
        "node": cluster.nodes.iter().map(|n| n.node.name.clone()).collect::<Vec<_>>().join(","),
        "netns": first.node.netns,
        "rundir": first.node.host_path("/var/run/openvswitch"),
        "pods": pods.iter().map(|(_, p, ip)| json!({
            "name": p.name, "netns": p.netns, "ips": [ip],
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.state, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", args.state.display()))?;
    println!("lab is up (state: {})", args.state.display());
    let (_, result) = switch_files(&args.state);
    while let Event::SwitchMode = signals.next() {
        write_result(
            &result,
            "error\nswitch-mode is not supported by the --image lab\n",
        )?;
    }
    println!("== taking the lab down");
    for (index, pod, _) in &pods {
        if let Ok(node) = cluster.node(*index) {
            if let Err(err) = node.del_pod(pod) {
                eprintln!("DEL {}: {err:#}", pod.name);
            }
        }
    }
    drop(pods);
    drop(cluster);
    let _ = std::fs::remove_file(&args.state);
    println!("lab is down");
    Ok(())
}

/// The single-node lab with real containers: the node's `install-cni` fills a CNI dir, a
/// containerd in the node's namespace reads it, and every pod is a sandbox plus a `sleep`
/// container made through CRI (`build/lab exec` runs commands with `ctr tasks exec`).
fn containerd_node(args: &Args) -> Result<()> {
    use weft_e2e::containerd::{Containerd, K8S_NAMESPACE};
    use weft_e2e::cri::PodSpec;
    use weft_e2e::node::CniDirs;
    let cidrs: &[&str] = match args.family.as_str() {
        "ipv4" => &["10.244.1.0/24"],
        "ipv6" => &["fd00:244:1::/64"],
        _ => &["10.244.1.0/24", "fd00:244:1::/64"],
    };
    let mut signals = Signals::install()?;
    let cni = CniDirs::new()?;
    let mut options = NodeOptions::new(cidrs);
    options.extra_config = cni.agent_config(&["portmap"]);
    let node = Node::start(options)?;
    node.install_cni(&["--chained-plugins-from", "/usr/lib/cni"])?;
    let containerd = Containerd::start(node.netns(), &cni.conf, &cni.bin)?;
    let mut cri = containerd.cri()?;
    println!(
        "== node {} (netns {}), {}",
        node.name,
        node.netns(),
        cri.version()?
    );
    println!("MTU plan: {}", mtu_plan(&node.ovs));
    let mut pods = Vec::new();
    let mut pod_ips = Vec::new();
    let mut containers = Vec::new();
    for i in 1..=args.pods {
        let spec = PodSpec::new("default", &format!("pod-{i}"));
        let sandbox = cri
            .run_pod_sandbox(&spec)
            .with_context(|| format!("RunPodSandbox {}", spec.name))?;
        let container = cri.run_container(
            &sandbox,
            &spec,
            "app",
            &containerd.image.name,
            &["sleep", "1000000"],
        )?;
        let netns = cri.sandbox_netns(&sandbox)?;
        let netns = netns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        pod_ips.push(cri.sandbox_ips(&sandbox)?);
        pods.push((spec.name.clone(), netns));
        containers.push(container);
    }
    println!("== pods (containerd)");
    for ((name, netns), ips) in pods.iter().zip(&pod_ips) {
        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        println!("{name:<8} netns {netns:<24} {}", ips.join(", "));
    }
    print_ping_matrix_of(&pods, &pod_ips, cidrs);
    let state = json!({
        "pid": std::process::id(),
        "node": node.name,
        "netns": node.netns(),
        "rundir": node.ovs.rundir(),
        "agentLog": node.log,
        "runtime": "containerd",
        "containerdSocket": containerd.socket,
        "containerdNamespace": K8S_NAMESPACE,
        "containerdLog": containerd.log,
        "pods": pods.iter().zip(&pod_ips).zip(&containers).map(|(((name, netns), ips), c)| json!({
            "name": name, "netns": netns, "ips": ips, "container": c,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.state, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", args.state.display()))?;
    println!("lab is up (state: {})", args.state.display());
    let (_, result) = switch_files(&args.state);
    while let Event::SwitchMode = signals.next() {
        write_result(
            &result,
            "error\nswitch-mode needs the multi-node lab: build/lab up --nodes N or --mode MODE\n",
        )?;
    }
    println!("== taking the lab down");
    if let Err(err) = containerd.remove_all_sandboxes() {
        eprintln!("removing the sandboxes: {err:#}");
    }
    drop(cri);
    drop(containerd);
    drop(node);
    drop(cni);
    let _ = std::fs::remove_file(&args.state);
    println!("lab is down");
    Ok(())
}

/// The addresses of a CNI result.
fn addresses(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// Pings every pod, the gateway and the node from every pod; prints a matrix of ok / FAIL.
fn print_ping_matrix(pods: &[Pod], pod_ips: &[Vec<IpAddr>], cidrs: &[&str]) {
    let pods: Vec<(String, String)> = pods
        .iter()
        .map(|p| (p.name.clone(), p.netns.clone()))
        .collect();
    print_ping_matrix_of(&pods, pod_ips, cidrs);
}

/// [`print_ping_matrix`] for pods given as (name, network namespace name).
fn print_ping_matrix_of(pods: &[(String, String)], pod_ips: &[Vec<IpAddr>], cidrs: &[&str]) {
    let mut targets: Vec<(String, IpAddr)> = Vec::new();
    for ((name, _), ips) in pods.iter().zip(pod_ips) {
        for ip in ips {
            targets.push((name.clone(), *ip));
        }
    }
    for cidr in cidrs {
        if let Some(gw) = first_host(cidr) {
            targets.push(("gateway".into(), gw));
        }
    }
    for node_ip in [NODE_IP4, NODE_IP6] {
        if let Ok(ip) = node_ip.parse::<IpAddr>() {
            if targets.iter().any(|(_, t)| t.is_ipv4() == ip.is_ipv4()) {
                targets.push(("node".into(), ip));
            }
        }
    }
    println!("== ping matrix (3 echo requests each: ok, FAIL, or replies/3)");
    print!("{:<8}", "from\\to");
    for (name, ip) in &targets {
        print!(" {:>22}", format!("{name} {ip}"));
    }
    println!();
    for (name, netns) in pods {
        print!("{name:<8}");
        for (_, ip) in &targets {
            print!(" {:>22}", probe(netns, *ip));
        }
        println!();
    }
}

/// Three pings; "ok" when all are answered, "FAIL" when none is, else "n/3". The first packet
/// to a new tunnel endpoint can be lost while OVS resolves the underlay neighbour, so a single
/// probe would under-report.
fn probe(netns: &str, ip: IpAddr) -> String {
    let out = weft_e2e::netns::exec(
        netns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &ip.to_string()],
    )
    .unwrap_or_else(|err| format!("{err:#}"));
    let received = out
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    match received {
        3 => "ok".into(),
        0 => "FAIL".into(),
        n => format!("{n}/3"),
    }
}

fn first_host(cidr: &str) -> Option<IpAddr> {
    let (addr, _) = cidr.split_once('/')?;
    match addr.parse().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4) + 1).into())),
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) + 1).into())),
    }
}

/// What the lab process was asked to do.
enum Event {
    /// SIGTERM or SIGINT: take the lab down.
    Shutdown,
    /// SIGUSR1: `build/lab switch-mode` wrote a request next to the state file.
    SwitchMode,
}

/// Waits for SIGTERM/SIGINT (shutdown) or SIGUSR1 (switch-mode request). The handlers are
/// installed once, before the state file tells `build/lab` the lab is up.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int, usr1) = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::user_defined1())?,
            ))
        })?;
        Ok(Signals {
            runtime,
            term,
            int,
            usr1,
        })
    }

    fn next(&mut self) -> Event {
        let Signals {
            runtime,
            term,
            int,
            usr1,
        } = self;
        runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => Event::Shutdown,
                _ = int.recv() => Event::Shutdown,
                _ = usr1.recv() => Event::SwitchMode,
            }
        })
    }
}

/// The request file `build/lab switch-mode` writes next to the state file (the mode and
/// options on one line) and the result file the lab answers with (first line `ok` or `error`).
fn switch_files(state: &Path) -> (PathBuf, PathBuf) {
    let dir = state.parent().unwrap_or_else(|| Path::new("."));
    (
        dir.join("switch-mode.request"),
        dir.join("switch-mode.result"),
    )
}

/// Writes the result atomically (temp file + rename), so `build/lab` never reads half of it.
fn write_result(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A parsed switch-mode request: `MODE [--reconcile-pod-mtu]`.
fn parse_switch_request(text: &str) -> Result<(String, bool)> {
    let mut words = text.split_whitespace();
    let mode = words.next().unwrap_or_default().to_string();
    if !["encap", "noEncap"].contains(&mode.as_str()) {
        bail!("switch-mode {mode:?}: expected encap or noEncap");
    }
    let mut reconcile = false;
    for word in words {
        match word {
            "--reconcile-pod-mtu" => reconcile = true,
            other => bail!("switch-mode: unknown option {other:?}"),
        }
    }
    Ok((mode, reconcile))
}

/// Restarts every agent of `cluster` in `mode` (all stopped first, so no two modes run at
/// once), keeping the pods; prints the new plan, each pod's MTU and the ping matrix.
fn switch_mode(
    cluster: &mut Cluster,
    pods: &[(usize, Pod, IpAddr)],
    mode: &str,
    reconcile: bool,
) -> Result<String> {
    for node in &mut cluster.nodes {
        node.stop_agent();
    }
    for node in &mut cluster.nodes {
        node.set_config("trafficEncapMode", mode)?;
        node.set_config("reconcilePodMTU", if reconcile { "true" } else { "false" })?;
        node.start_agent()?;
    }
    for node in &mut cluster.nodes {
        node.wait_ready(std::time::Duration::from_secs(60))?;
    }
    let mut out = format!("== switched to mode {mode} (reconcilePodMTU: {reconcile}); pods kept\n");
    for node in &cluster.nodes {
        out += &format!("node {} MTU plan {}\n", node.name, mtu_plan(&node.ovs));
    }
    out += "== pods (eth0 MTU)\n";
    for (_, pod, ip) in pods {
        let mtu = ClusterNode::link_mtu(&pod.netns, "eth0")
            .map(|m| m.to_string())
            .unwrap_or_else(|e| format!("{e:#}"));
        out += &format!("{:<10} {ip:<15} mtu {mtu}\n", pod.name);
    }
    out += &pod_matrix(pods);
    Ok(out)
}

/// The bridge's recorded MTU plan, as JSON text.
fn mtu_plan(ovs: &weft_e2e::ovs::OvsInstance) -> String {
    let plan = ovs
        .vsctl(&["get", "Bridge", BRIDGE, "external_ids:weft-mtu-plan"])
        .unwrap_or_default();
    plan.trim().trim_matches('"').replace("\\\"", "\"")
}

/// The cross-pod ping matrix of the multi-node lab.
fn pod_matrix(pods: &[(usize, Pod, IpAddr)]) -> String {
    let mut out = String::from("== ping matrix (3 echo requests each: ok, FAIL, or replies/3)\n");
    out += &format!("{:<10}", "from\\to");
    for (_, pod, _) in pods {
        out += &format!(" {:>10}", pod.name);
    }
    out += "\n";
    for (_, from, _) in pods {
        out += &format!("{:<10}", from.name);
        for (_, _, ip) in pods {
            out += &format!(" {:>10}", probe(&from.netns, *ip));
        }
        out += "\n";
    }
    out
}
