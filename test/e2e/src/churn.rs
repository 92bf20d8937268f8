//! Pod churn on a live cluster (issue 7 part 3): ADD/DEL cycles through the real `weft` plugin
//! at a given concurrency, spread over the nodes, with cross-node pings between live pods every
//! `ping_every` cycles; afterwards each node's [`Footprint`] is compared with the one before
//! and the agents' RSS and open file descriptors at start and end are reported ([`run_sampled`]
//! also samples them every N cycles, to tell warm-up from a slow leak). Shared by the `churn`
//! bench (1,000 cycles) and the short `faults_churn` test.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::cluster::{Cluster, ClusterNode, Footprint};
use crate::netns;
use crate::node::{ping, Pod};

/// An agent's resident set size (kB) and open file descriptors.
pub type AgentUsage = (u64, usize);

/// Every node's agent usage after a number of completed cycles.
#[derive(Debug, Clone)]
pub struct UsageSample {
    /// Cycles completed when sampled.
    pub cycles: usize,
    /// Time since the first cycle started.
    pub elapsed: Duration,
    /// Per node, in index order.
    pub agents: Vec<AgentSample>,
}

/// One agent's usage at a sample.
#[derive(Debug, Clone, Copy)]
pub struct AgentSample {
    /// Resident set size (kB, `VmRSS`).
    pub rss: u64,
    /// Its anonymous part (kB, `RssAnon`: heap, thread stacks).
    pub anon: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads.
    pub threads: u64,
}

/// What a churn run measured.
#[derive(Debug)]
pub struct ChurnReport {
    /// Cycles run.
    pub cycles: usize,
    /// Failed cycles, each with its error.
    pub failures: Vec<String>,
    /// Cross-node ping checks made.
    pub pings: usize,
    /// Sorted ADD latencies.
    pub add: Vec<Duration>,
    /// Sorted DEL latencies.
    pub del: Vec<Duration>,
    /// Per node: (name, footprint before, footprint after).
    pub footprints: Vec<(String, Footprint, Footprint)>,
    /// Per node: (name, (RSS kB, fds) at start, at end).
    pub agent: Vec<(String, AgentUsage, AgentUsage)>,
    /// Wall time of the cycles.
    pub elapsed: Duration,
    /// Usage samples (at 0 cycles, every `sample_every` cycles, at the end); empty from [`run`].
    pub samples: Vec<UsageSample>,
}

impl ChurnReport {
    /// Nodes whose footprint after the run differs from before, with both.
    pub fn leaks(&self) -> Vec<String> {
        self.footprints
            .iter()
            .filter(|(_, before, after)| before != after)
            .map(|(name, before, after)| format!("{name}: before {before:#?}\nafter {after:#?}"))
            .collect()
    }

    /// The `p`th percentile of sorted `times`.
    pub fn percentile(times: &[Duration], p: usize) -> Duration {
        times
            .get((times.len() * p / 100).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    /// The usage samples as a table: one line per sample, one column group per node.
    pub fn series(&self) -> String {
        let mut out = String::from("cycles  elapsed");
        for (name, _, _) in &self.agent {
            out.push_str(&format!("  | {name}: RSS kB  anon kB  fds  threads"));
        }
        for sample in &self.samples {
            out.push_str(&format!(
                "\n{:>6}  {:>6.1}s",
                sample.cycles,
                sample.elapsed.as_secs_f64()
            ));
            for a in &sample.agents {
                out.push_str(&format!(
                    "  | {:>14}  {:>7}  {:>3}  {:>7}",
                    a.rss, a.anon, a.fds, a.threads
                ));
            }
        }
        out
    }

    /// A one-paragraph summary.
    pub fn summary(&self) -> String {
        let agents: Vec<String> = self
            .agent
            .iter()
            .map(|(n, s, e)| format!("{n}: RSS {} -> {} kB, fds {} -> {}", s.0, e.0, s.1, e.1))
            .collect();
        format!(
            "{} ADD/DEL cycles in {:?}: {} failed, {} cross-node pings, {} nodes leaking; \
             ADD p50 {:?} p99 {:?}, DEL p50 {:?} p99 {:?}; {}",
            self.cycles,
            self.elapsed,
            self.failures.len(),
            self.pings,
            self.leaks().len(),
            Self::percentile(&self.add, 50),
            Self::percentile(&self.add, 99),
            Self::percentile(&self.del, 50),
            Self::percentile(&self.del, 99),
            agents.join("; ")
        )
    }
}

/// Runs `cycles` ADD/DEL cycles on `cluster` with `concurrency` workers; cycle i runs on node
/// `i % nodes`; every `ping_every`th cycle pings the other node's `anchors` pod both ways
/// while its pod lives. `anchors` holds one live pod per node (index order) and its IPv4.
pub fn run(
    cluster: &Cluster,
    anchors: &[(Pod, IpAddr)],
    cycles: usize,
    concurrency: usize,
    ping_every: usize,
) -> Result<ChurnReport> {
    run_sampled(cluster, anchors, cycles, concurrency, ping_every, 0)
}

/// [`run`], also sampling every agent's RSS, anonymous RSS and open fds before the first
/// cycle, each time another `sample_every` cycles have completed (0: never) and at the end.
pub fn run_sampled(
    cluster: &Cluster,
    anchors: &[(Pod, IpAddr)],
    cycles: usize,
    concurrency: usize,
    ping_every: usize,
    sample_every: usize,
) -> Result<ChurnReport> {
    let nodes = &cluster.nodes;
    if anchors.len() != nodes.len() || nodes.len() < 2 {
        return Err(anyhow!("one anchor pod per node and at least two nodes"));
    }
    let mut footprints = Vec::new();
    let mut agent = Vec::new();
    for node in nodes {
        footprints.push(settled_footprint(node)?);
        agent.push(node.agent_rss_and_fds()?);
    }
    let runtimes: Vec<_> = nodes.iter().map(|n| n.runtime()).collect();
    let prefixes: Vec<String> = nodes.iter().map(|n| n.netns().to_string()).collect();
    let count = nodes.len();
    let next = AtomicUsize::new(0);
    let pings = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let add = Mutex::new(Vec::new());
    let del = Mutex::new(Vec::new());
    let done = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::new());
    let started = Instant::now();
    let sample = |cycles: usize| -> Result<()> {
        let agents = nodes
            .iter()
            .map(|node| {
                let (rss, fds) = node.agent_rss_and_fds()?;
                Ok(AgentSample {
                    rss,
                    anon: node.agent_status("RssAnon")?,
                    fds,
                    threads: node.agent_status("Threads")?,
                })
            })
            .collect::<Result<_>>()?;
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(UsageSample {
                cycles,
                elapsed: started.elapsed(),
                agents,
            });
        Ok(())
    };
    if sample_every > 0 {
        sample(0)?;
    }
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles {
                    break;
                }
                let n = i % count;
                let other = &anchors[(n + 1) % count];
                let cycle = || -> Result<()> {
                    let name = format!("{}-c{i}", prefixes[n]);
                    netns::create(&name)?;
                    let pod = Pod {
                        netns: name,
                        name: format!("churn-{i}"),
                        namespace: "default".into(),
                        container_id: format!("c{:015x}{i:08x}", std::process::id()),
                        ifname: "eth0".into(),
                    };
                    let t = Instant::now();
                    let out = runtimes[n].call("ADD", &pod.call())?;
                    add.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.elapsed());
                    if !out.success {
                        return Err(anyhow!("ADD {}: {}", pod.name, out.stdout));
                    }
                    if ping_every > 0 && i.is_multiple_of(ping_every) {
                        let ip = ipv4(&out.json()?)?;
                        ping(&pod.netns, other.1)?;
                        ping(&other.0.netns, ip)?;
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    let t = Instant::now();
                    let out = runtimes[n].call("DEL", &pod.call())?;
                    del.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.elapsed());
                    if !out.success {
                        return Err(anyhow!("DEL {}: {}", pod.name, out.stdout));
                    }
                    Ok(())
                };
                let mut errors = Vec::new();
                if let Err(e) = cycle() {
                    errors.push(format!("cycle {i}: {e:#}"));
                }
                let completed = done.fetch_add(1, Ordering::Relaxed) + 1;
                if sample_every > 0 && completed.is_multiple_of(sample_every) {
                    if let Err(e) = sample(completed) {
                        errors.push(format!("usage sample after {completed} cycles: {e:#}"));
                    }
                }
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(errors);
            });
        }
    });
    let elapsed = started.elapsed();
    if sample_every > 0 && !cycles.is_multiple_of(sample_every) {
        sample(cycles)?;
    }
    let mut report_footprints = Vec::new();
    let mut report_agent = Vec::new();
    for ((node, before), start) in nodes.iter().zip(footprints).zip(agent) {
        report_footprints.push((node.name.clone(), before, settled_footprint(node)?));
        report_agent.push((node.name.clone(), start, node.agent_rss_and_fds()?));
    }
    let sorted = |m: Mutex<Vec<Duration>>| {
        let mut v = m.into_inner().unwrap_or_else(|e| e.into_inner());
        v.sort();
        v
    };
    Ok(ChurnReport {
        cycles,
        failures: failures.into_inner().unwrap_or_else(|e| e.into_inner()),
        pings: pings.into_inner(),
        add: sorted(add),
        del: sorted(del),
        footprints: report_footprints,
        agent: report_agent,
        elapsed,
        samples: samples.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// `node`'s footprint once two reads 200 ms apart agree (at most 5 s, then the last read): an
/// agent that just started may still be re-converging (e.g. rewriting its uplink journal
/// through a temporary file), which must not count as a leak or a cure.
fn settled_footprint(node: &ClusterNode) -> Result<Footprint> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = node.footprint()?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = node.footprint()?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The IPv4 address of an ADD result.
pub fn ipv4(result: &Value) -> Result<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| anyhow!("no IPv4 address in {result}"))
}
