//! Pod lifecycle on one node through the real plugin and agent: 100 pods added and deleted at
//! concurrency 16 leave nothing behind; an agent restart (crash) between ADD and DEL keeps
//! every pod wired, bumps the flow round with no stale flows, never duplicates an IP, and DEL
//! still cleans up; an ovs-vswitchd restart gets every flow replayed.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use serde_json::{json, Value};
use weft_e2e::node::{ping, Node, NodeOptions, Pod};

fn ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

/// Runs `f` over `items` on `workers` threads; returns each call's wall time.
fn concurrently<T: Sync>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<Vec<Duration>> {
    let next = AtomicUsize::new(0);
    let times = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let started = Instant::now();
                match f(item) {
                    Ok(()) => times.lock().unwrap().push(started.elapsed()),
                    Err(e) => errors.lock().unwrap().push(format!("{e:#}")),
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    ensure!(
        errors.is_empty(),
        "{} calls failed: {errors:#?}",
        errors.len()
    );
    let mut times = times.into_inner().unwrap();
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Asserts the node carries no trace of any pod.
fn assert_clean(node: &Node) -> Result<()> {
    let links = node.links_with_prefix("wf")?;
    ensure!(links.is_empty(), "{} veths left: {links:?}", links.len());
    let ports = node.pod_ports()?;
    ensure!(ports.is_empty(), "ports left: {ports:?}");
    let ipam = node.ipam_allocations()?;
    ensure!(ipam.is_empty(), "ips left: {ipam:?}");
    let flows = node.pod_flows()?;
    ensure!(flows.is_empty(), "pod flows left: {flows:#?}");
    Ok(())
}

#[test]
fn hundred_pods_added_and_deleted_at_concurrency_16_leave_nothing() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.244.1.0/24", "fd00:10:244:1::/64"]))?;
    let pods: Vec<Pod> = (0..100)
        .map(|i| Pod::create(&node, &format!("scale-{i}")))
        .collect::<Result<_>>()?;
    let runtime = node.runtime();
    let results = Mutex::new(Vec::new());
    let add = concurrently(&pods, 16, |pod| {
        let out = runtime.call("ADD", &pod.call())?;
        ensure!(out.success, "ADD {}: {}", pod.name, out.stdout);
        results.lock().unwrap().push(ips(&out.json()?));
        Ok(())
    })?;
    let all: Vec<IpAddr> = results.into_inner().unwrap().concat();
    let distinct: BTreeSet<_> = all.iter().collect();
    ensure!(
        all.len() == 200 && distinct.len() == 200,
        "200 distinct IPs: {all:?}"
    );
    ensure!(node.pod_ports()?.len() == 100, "100 pod ports");
    ensure!(node.links_with_prefix("wf")?.len() == 100);
    ensure!(node.ipam_allocations()?.len() == 200);
    // A sample of pods is really wired.
    ping(&pods[0].netns, ips(&node.add(&pods[99])?)[0])?;
    ping(&pods[50].netns, ips(&node.add(&pods[7])?)[1])?;

    let del_one = |pod: &Pod| {
        let out = runtime.call("DEL", &pod.call())?;
        ensure!(out.success, "DEL {}: {}", pod.name, out.stdout);
        Ok(())
    };
    let del = concurrently(&pods, 16, del_one)?;
    assert_clean(&node)?;
    eprintln!(
        "100 pods at concurrency 16 through the weft binary: ADD p50 {:?} p99 {:?}, DEL p50 {:?} p99 {:?}",
        percentile(&add, 50),
        percentile(&add, 99),
        percentile(&del, 50),
        percentile(&del, 99)
    );
    // DEL again: idempotent.
    concurrently(&pods[..10], 4, del_one)?;
    Ok(())
}

#[test]
fn agent_restart_between_add_and_del_keeps_pods_and_del_cleans_up() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&["10.244.1.0/24", "fd00:10:244:1::/64"]))?;
    let first: Vec<Pod> = (0..4)
        .map(|i| Pod::create(&node, &format!("before-{i}")))
        .collect::<Result<_>>()?;
    let mut seen = BTreeSet::new();
    for pod in &first {
        seen.extend(ips(&node.add(pod)?));
    }
    let rounds = node.flow_rounds()?;
    ensure!(rounds.len() == 1, "one round: {rounds:?}");
    let round = *rounds.iter().next().ok_or_else(|| anyhow!("no flows"))?;
    let pod_flows = node.pod_flows()?.len();

    // A leaked allocation (an ADD that crashed before its port existed) is released at start.
    node.kill_agent();
    let store = node.data_dir.join("ipam.json");
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(&store)?)?;
    data["allocations"]["10.244.1.250"] =
        json!({"containerId": "ghost", "ifname": "eth0", "pod": "default/ghost"});
    std::fs::write(&store, data.to_string())?;

    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    let rounds = node.flow_rounds()?;
    ensure!(
        rounds == BTreeSet::from([round.wrapping_add(1)]),
        "after restart only round {} remains: {rounds:?}",
        round.wrapping_add(1)
    );
    ensure!(
        node.pod_flows()?.len() == pod_flows,
        "every pod's flows reinstalled"
    );
    ensure!(
        !node.ipam_allocations()?.contains_key("10.244.1.250"),
        "leaked allocation released"
    );
    // Old pods still talk, and CHECK knows them (store rebuilt from OVS).
    let a_ips = ips(&node.add(&first[0])?);
    ping(&first[1].netns, a_ips[0])?;
    ping(&first[1].netns, a_ips[1])?;
    let out = node.plugin("CHECK", &{
        let mut call = first[2].call();
        let mut conf = node.netconf("1.1.0");
        conf["prevResult"] = node.add(&first[2])?;
        call.config = Some(conf);
        call
    })?;
    ensure!(out.success, "CHECK after restart: {}", out.stdout);

    // New pods never get an address an old pod holds.
    let second: Vec<Pod> = (0..4)
        .map(|i| Pod::create(&node, &format!("after-{i}")))
        .collect::<Result<_>>()?;
    for pod in &second {
        for ip in ips(&node.add(pod)?) {
            ensure!(seen.insert(ip), "{ip} handed out twice");
        }
    }

    // ovs-vswitchd restart: the flows are replayed, the gateway repaired.
    node.ovs.restart_vswitchd()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let gw: IpAddr = "10.244.1.1".parse()?;
    loop {
        let ok = ping(&first[3].netns, a_ips[0]).is_ok() && ping(&second[0].netns, gw).is_ok();
        if ok {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no connectivity after ovs-vswitchd restart; flows: {:#?}\nagent log:\n{}",
            node.ovs.dump_flows("br-int")?,
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Crash again, then DEL everything: the rebuilt store still knows every pod.
    node.kill_agent();
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    for pod in first.iter().chain(&second) {
        node.del(pod)?;
    }
    // The agent ran as the DaemonSet's ServiceAccount under weft.yml's RBAC: nothing refused.
    let refused = node.api.forbidden_requests();
    ensure!(refused.is_empty(), "requests refused by RBAC: {refused:?}");
    assert_clean(&node)
}
