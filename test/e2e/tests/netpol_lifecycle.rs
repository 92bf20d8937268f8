//! NetworkPolicy across changes, on the multi-node topology with real pods:
//! - a policy update under live traffic: an established TCP connection keeps flowing, new
//!   connections follow the new policy;
//! - a new pod is held (isolated both ways) until the agent has its Pod object and has realized
//!   its policy; CNI ADD waits `networkPolicyPodWait` for that, then answers and the pod stays
//!   held (log, metric, `weftctl get networkpolicy`); with its Pod object the pod's very first
//!   probes already follow the policy;
//! - an API server outage keeps the realized policy, an ovs-vswitchd restart during it gets
//!   the policy flows back with the replay, and an agent restart never opens an isolated pod.

mod netpol_support;
mod ops_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use weft_e2e::cluster::{Cluster, ClusterOptions};
use weft_e2e::services::TcpSession;

use netpol_support::{add_pod, converge, create_policy, pod, probe, world, Proto};

const WITHIN: Duration = Duration::from_secs(15);
const METRICS_ADDR: &str = "127.0.0.1:9479";

fn options() -> ClusterOptions {
    let mut options = ClusterOptions::encap(2, "geneve");
    options.extra_config =
        format!("networkPolicyPodWait: 2s\nmetricsBindAddress: {METRICS_ADDR}\n");
    options
}

#[test]
fn policy_update_under_live_traffic_keeps_established_connections() -> Result<()> {
    let cluster = Cluster::start(options())?;
    let pods = world(&cluster)?;
    let probes = [(Proto::Tcp, 80)];
    converge(
        "no policy",
        &cluster,
        &pods,
        &probes,
        false,
        &|_, _, _| true,
        WITHIN,
    )?;
    let (client, server) = (pod(&pods, "y/b"), pod(&pods, "x/a"));
    let mut session = TcpSession::connect(&client.pod.netns, SocketAddr::new(server.ip, 80))?;
    ensure!(session.ask()? == client.ip, "the server saw another source");
    create_policy(
        &cluster,
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )?;
    converge(
        "deny-all ingress in x under live traffic",
        &cluster,
        &pods,
        &probes,
        false,
        &|_, to, _| to.ns != "x",
        WITHIN,
    )?;
    for i in 0..20 {
        let seen = session
            .ask()
            .with_context(|| format!("the established connection stopped at exchange {i}"))?;
        ensure!(seen == client.ip);
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        !probe(
            &client.pod.netns,
            SocketAddr::new(server.ip, 80),
            Proto::Tcp
        ),
        "a new connection passed the deny-all policy"
    );
    Ok(())
}

#[test]
fn new_pods_are_held_until_their_policy_is_realized() -> Result<()> {
    let cluster = Cluster::start(options())?;
    let pods = world(&cluster)?;
    // Pods d and e of x accept ingress only from namespace y.
    create_policy(
        &cluster,
        "x",
        "d-e-from-y",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["d", "e"]}]},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )?;
    let (ya, za) = (pod(&pods, "y/a"), pod(&pods, "z/a"));
    // x/d without its Pod object (late): ADD waits the bounded 2 s, then the pod stays held.
    let started = Instant::now();
    let d = add_pod(&cluster, "x", "d", 1, false)?;
    let add_took = started.elapsed();
    ensure!(
        add_took >= Duration::from_secs(2),
        "ADD of a pod without Pod object answered after {add_took:?}, before networkPolicyPodWait"
    );
    let to_d = SocketAddr::new(d.ip, 80);
    let from_d_to_ya = SocketAddr::new(ya.ip, 80);
    for _ in 0..3 {
        ensure!(
            !probe(&ya.pod.netns, to_d, Proto::Tcp),
            "a held pod received"
        );
        ensure!(
            !probe(&d.pod.netns, from_d_to_ya, Proto::Tcp),
            "a held pod sent"
        );
        ensure!(
            !probe(&d.pod.netns, from_d_to_ya, Proto::Udp),
            "a held pod sent UDP"
        );
    }
    let node1 = cluster.node(1)?;
    let ctl = ops_support::Ctl::new(&node1.config)?;
    let report = ctl
        .expect(0, &["get", "networkpolicy", "-o", "json"])?
        .json()?;
    let held: Vec<&str> = report["held"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    ensure!(held == ["x/d"], "held pods {held:?} in {report}");
    let metrics = ops_support::scrape(node1.netns(), METRICS_ADDR)?;
    ensure!(
        metrics.get("weft_policy_pod_object_late_total") >= 1.0,
        "late pod object not counted"
    );
    ensure!(metrics.get("weft_policy_pods_held") == 1.0);
    let count = metrics.get("weft_policy_realization_duration_seconds_count");
    let sum = metrics.get("weft_policy_realization_duration_seconds_sum");
    ensure!(count >= 1.0, "no realization observed");
    println!(
        "node 1: {count} realizations, mean {:.1} ms from event to commit",
        sum / count * 1000.0
    );
    ensure!(
        node1.agent_log().contains("pod object late"),
        "no log line about the late pod object"
    );
    // Its Pod object arrives: the policy applies (y allowed, z denied, egress open).
    cluster
        .api
        .create_pod(netpol_support::pod_object("x", "d", &node1.name))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    netpol_support::set_pod_ips(&cluster, "x", "d", &[d.ip])?;
    let deadline = Instant::now() + WITHIN;
    while !probe(&ya.pod.netns, to_d, Proto::Tcp) {
        ensure!(Instant::now() < deadline, "x/d never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        !probe(&za.pod.netns, to_d, Proto::Tcp),
        "z reached x/d against the policy"
    );
    ensure!(
        probe(&d.pod.netns, from_d_to_ya, Proto::Tcp),
        "x/d is not isolated for egress"
    );
    // trace-packet names the rule that allows and the isolation that drops.
    let trace = |source: &str| -> Result<Vec<String>> {
        let run = ctl.expect(
            0,
            &[
                "trace-packet",
                "--source",
                source,
                "--destination",
                "x/d",
                "--proto",
                "tcp",
                "--dport",
                "80",
                "-o",
                "json",
            ],
        )?;
        let value = run.json()?;
        Ok(value["policy"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    };
    let allowed = trace("y/a")?;
    ensure!(
        allowed
            .iter()
            .any(|l| l.starts_with("allowed by networkpolicy x/d-e-from-y ingress rule 0")),
        "trace from y/a: {allowed:?}"
    );
    let dropped = trace("z/a")?;
    ensure!(
        dropped.iter().any(|l| l
            == "dropped: pod x/d is isolated for ingress and no rule allows it (selected by x/d-e-from-y)"),
        "trace from z/a: {dropped:?}"
    );
    // x/e with its Pod object first (the kubelet's order): ADD answers quickly and the very
    // first probes already follow the policy.
    let started = Instant::now();
    let e = add_pod(&cluster, "x", "e", 2, true)?;
    let add_took = started.elapsed();
    ensure!(
        add_took < Duration::from_secs(2),
        "ADD took {add_took:?} with the Pod object present"
    );
    let to_e = SocketAddr::new(e.ip, 80);
    ensure!(
        !probe(&za.pod.netns, to_e, Proto::Tcp),
        "z reached the new pod x/e"
    );
    ensure!(
        probe(&ya.pod.netns, to_e, Proto::Tcp),
        "y did not reach the new pod x/e right after ADD"
    );
    println!("ADD with policy: {add_took:?}");
    Ok(())
}

#[test]
fn restarts_and_api_outage_never_open_an_isolated_pod() -> Result<()> {
    let mut cluster = Cluster::start(options())?;
    let pods = world(&cluster)?;
    create_policy(
        &cluster,
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )?;
    let probes = [(Proto::Tcp, 80)];
    converge(
        "deny-all in x",
        &cluster,
        &pods,
        &probes,
        false,
        &|_, to, _| to.ns != "x",
        WITHIN,
    )?;
    // x/a and x/c live on node 1; probe them from node 2 (z/b) and node 1 (y/c) throughout.
    let targets = [pod(&pods, "x/a"), pod(&pods, "x/c")];
    let sources = [pod(&pods, "z/b"), pod(&pods, "y/c")];
    // Every source to every target, in parallel (a denied probe waits for its timeout).
    let check_closed = |phase: &str| -> Result<()> {
        let mut jobs = Vec::new();
        for s in &sources {
            for t in &targets {
                let (netns, addr) = (s.pod.netns.clone(), SocketAddr::new(t.ip, 80));
                let what = format!("{phase}: {} reached isolated {}", s.key(), t.key());
                jobs.push((
                    what,
                    std::thread::spawn(move || probe(&netns, addr, Proto::Tcp)),
                ));
            }
        }
        for (what, job) in jobs {
            ensure!(!job.join().unwrap_or(true), "{what}");
        }
        Ok(())
    };
    // API server outage: the last realized policy stays, and an ovs-vswitchd restart during it
    // gets every policy flow back with the replay.
    cluster.api.stop();
    check_closed("api server down")?;
    cluster.nodes[0].ovs.restart_vswitchd()?;
    check_closed("ovs-vswitchd restarted")?;
    converge(
        "deny-all in x after an ovs-vswitchd restart during an API server outage",
        &cluster,
        &pods,
        &probes,
        false,
        &|_, to, _| to.ns != "x",
        WITHIN,
    )?;
    cluster.api.restart()?;
    cluster.nodes[0].stop_agent();
    check_closed("agent stopped")?;
    cluster.nodes[0].start_agent()?;
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(4) {
        check_closed("agent restarting")?;
        rounds += 1;
    }
    cluster.nodes[0].wait_ready(Duration::from_secs(60))?;
    check_closed("agent restarted")?;
    ensure!(
        cluster.nodes[0]
            .agent_log()
            .contains("networkpolicy of the previous run preset"),
        "the restarted agent did not preset the saved policy"
    );
    converge(
        "deny-all in x after the restart",
        &cluster,
        &pods,
        &probes,
        false,
        &|_, to, _| to.ns != "x",
        WITHIN,
    )?;
    println!("{rounds} probe rounds during the restart, all denied");
    Ok(())
}
