//! Host-state repair (issue 5): repair latency of routes, rules, neighbours and the SNAT table
//! (`ip weft`) deleted behind the reconciler's back, its CPU while idle, and its CPU and convergence time during a
//! 1,000-route flap storm (every Weft route flushed, ten times in a row).
//!
//! The reconciler runs in-process on its own single-threaded runtime (thread `weft-hostrec`),
//! so its CPU is that thread's `schedstat` run time (ns); deletions and polling happen on other
//! threads through their own netlink sockets in a fresh namespace with a veth as gateway.
//!
//! Run: `cargo bench -p weft-agent --bench hoststate_repair`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::watch;
use weft_agent::hoststate::diff::ObservedRoute;
use weft_agent::hoststate::nft::NftSocket;
use weft_agent::hoststate::{
    desired, kernel, HostInput, HostReconciler, HostReport, HostState, IpFamily, LinkRole,
    LinkSpec, ManagedLinks, PeerSpec, ReconcilerConfig, RouteSpec, WEFT_PROTOCOL,
};
use weft_agent::mtu::{TrafficMode, TunnelType};
use weft_agent::netns::Netns;
use weft_e2e::{cmd, netns};

const GW: &str = "weft-gw0";
const TRIALS: usize = 50;
const STORM_PEERS: usize = 500;
const STORMS: usize = 10;

fn input(peers: usize) -> HostInput {
    HostInput {
        mode: TrafficMode::Encap(TunnelType::Geneve),
        gateway: GW.into(),
        pod_cidrs: vec!["10.0.0.0/24".parse().unwrap()],
        transport: None,
        peers: (1..=peers)
            .map(|i| PeerSpec {
                name: format!("n{i}"),
                pod_cidrs: vec![format!("10.{}.{}.0/24", 1 + i / 250, i % 250)
                    .parse()
                    .unwrap()],
                transport_ips: vec![],
            })
            .collect(),
        peer_gateway_mac: [2, 0x77, 0x65, 0x66, 0x74, 1],
        no_snat: false,
    }
}

/// CPU time (ns) a thread of this process has run, from `/proc/self/task/TID/schedstat`.
fn thread_cpu(tid: i32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("schedstat")
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

fn main() -> Result<()> {
    let ns = Ns(format!("wfbench-host-{}", std::process::id()));
    netns::create(&ns.0)?;
    let ipn = |args: &[&str]| -> Result<String> {
        let mut full = vec!["-n", ns.0.as_str()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    };
    ipn(&["link", "add", GW, "type", "veth", "peer", "name", "gwpeer"])?;
    ipn(&["link", "set", GW, "up"])?;
    ipn(&["link", "set", "gwpeer", "up"])?;
    let path = netns::path(&ns.0);

    // The reconciler on its own thread and runtime.
    let (desired_tx, desired_rx) = watch::channel(desired(&input(1)));
    let report = Arc::new(HostReport::new(None));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rec_report = Arc::clone(&report);
    let rec_path = path.clone();
    let reconciler_thread = std::thread::Builder::new()
        .name("weft-hostrec".into())
        .spawn(move || -> Result<()> {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let links: Arc<dyn ManagedLinks> = Arc::new(vec![LinkSpec {
                    name: GW.into(),
                    role: LinkRole::Gateway,
                    mac: None,
                    mtu: None,
                    up: true,
                    underlay_mtu: None,
                }]);
                let _reconciler = HostReconciler::start(
                    Netns::open(&rec_path)?,
                    desired_rx,
                    links,
                    rec_report,
                    ReconcilerConfig::new(GW),
                )
                .await?;
                let _ = stop_rx.await;
                Ok::<_, anyhow::Error>(())
            })
        })?;
    let tid = tid_rx.recv()?;

    // The bench's own netlink handle in the namespace, on another runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let bench_ns = Netns::open(&path)?;
        let nl = bench_ns.rtnetlink().await?;
        let small = desired(&input(1));
        let converged = |want: HostState| {
            let nl = nl.clone();
            async move {
                let links = kernel::links(&nl).await?;
                let routes: BTreeSet<RouteSpec> = kernel::routes(&nl, &links)
                    .await?
                    .into_iter()
                    .filter(ObservedRoute::owned)
                    .map(|r| r.spec)
                    .collect();
                let rules = kernel::rules(&nl)
                    .await?
                    .into_iter()
                    .filter(|r| r.owned())
                    .count();
                let neighbours = kernel::neighbours(&nl, &links)
                    .await?
                    .into_iter()
                    .filter(|n| n.owned())
                    .count();
                Ok::<_, anyhow::Error>(
                    routes == want.routes
                        && rules == want.rules.len()
                        && neighbours == want.neighbours.len(),
                )
            }
        };
        let wait = |want: HostState, start: Instant| {
            let converged = &converged;
            async move {
                loop {
                    if converged(want.clone()).await? {
                        return Ok::<_, anyhow::Error>(start.elapsed());
                    }
                    anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "no convergence");
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
        };
        wait(small.clone(), Instant::now()).await?;

        // Repair latency, one kind at a time.
        let links = kernel::links(&nl).await?;
        let route = small
            .routes
            .iter()
            .find(|r| r.via.is_some())
            .context("peer route")?
            .clone();
        let rule = small.rules.iter().next().context("rule")?.clone();
        let neighbour = small.neighbours.iter().next().context("neighbour")?.clone();
        let mut rows = Vec::new();
        for kind in ["route", "rule", "neighbour"] {
            let mut times = Vec::new();
            for _ in 0..TRIALS {
                let start = Instant::now();
                match kind {
                    "route" => kernel::delete_route(&nl, &route).await?,
                    "rule" => kernel::delete_rule(&nl, &rule).await?,
                    _ => {
                        kernel::delete_neighbour(&nl, &neighbour.dev, neighbour.ip, &links).await?
                    }
                }
                times.push(wait(small.clone(), start).await?);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            rows.push((kind, times));
        }
        // The SNAT table: deleted through the bench's own nf_tables socket, back when a dump
        // matches the desired table again.
        let snat = small
            .snat
            .iter()
            .find(|s| s.family == IpFamily::V4)
            .context("snat table")?
            .clone();
        let mut times = Vec::new();
        for _ in 0..TRIALS {
            let start = Instant::now();
            bench_ns
                .run(|| NftSocket::open()?.delete(IpFamily::V4))
                .await??;
            loop {
                let spec = snat.clone();
                let back = bench_ns
                    .run(move || {
                        let table = NftSocket::open()?.observe(IpFamily::V4)?;
                        Ok::<_, anyhow::Error>(table.is_some_and(|t| t.matches(&spec)))
                    })
                    .await??;
                if back {
                    break;
                }
                anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "no snat table");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            times.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        rows.push(("snat table (ip weft)", times));

        // Idle CPU over 10 s.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu0 = thread_cpu(tid)?;
        let passes0 = report.metrics.passes.get();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_cpu = thread_cpu(tid)? - cpu0;
        let idle_passes = report.metrics.passes.get() - passes0;

        // Flap storm: 1,000 peer routes (500 peers x main + Weft table) + 2 local ones, all
        // flushed ten times in a row, each time waiting for the full set to be back.
        let big = desired(&input(STORM_PEERS));
        desired_tx.send(big.clone())?;
        wait(big.clone(), Instant::now()).await?;
        let cpu1 = thread_cpu(tid)?;
        let passes1 = report.metrics.passes.get();
        let storm_start = Instant::now();
        let mut storm_times = Vec::new();
        for _ in 0..STORMS {
            let start = Instant::now();
            let links = kernel::links(&nl).await?;
            let owned: Vec<RouteSpec> = kernel::routes(&nl, &links)
                .await?
                .into_iter()
                .filter(|r| r.protocol == WEFT_PROTOCOL)
                .map(|r| r.spec)
                .collect();
            for r in &owned {
                kernel::delete_route(&nl, r).await?;
            }
            storm_times.push(wait(big.clone(), start).await?);
        }
        let storm_wall = storm_start.elapsed();
        let storm_cpu = thread_cpu(tid)? - cpu1;
        let storm_passes = report.metrics.passes.get() - passes1;

        println!("## Host-state repair, measured {}", chrono_free_date());
        println!();
        println!("| object deleted | trials | p50 | p99 | max |");
        println!("|---|---|---|---|---|");
        for (kind, times) in &rows {
            println!(
                "| {kind} | {} | {} | {} | {} |",
                times.len(),
                ms(pct(times, 0.5)),
                ms(pct(times, 0.99)),
                ms(pct(times, 1.0))
            );
        }
        println!();
        println!(
            "idle: {:.2} ms CPU over 10 s ({:.4} % of a core), {idle_passes} passes",
            idle_cpu as f64 / 1e6,
            idle_cpu as f64 / 1e8
        );
        println!(
            "storm: {} routes flushed x{STORMS}: back after p50 {} / max {}; reconciler CPU {:.1} ms over {:.2} s wall ({:.1} % of a core), {storm_passes} passes, {} route repairs",
            big.routes.len(),
            ms(pct(&storm_times, 0.5)),
            ms(pct(&storm_times, 1.0)),
            storm_cpu as f64 / 1e6,
            storm_wall.as_secs_f64(),
            storm_cpu as f64 / 1e9 / storm_wall.as_secs_f64() * 100.0,
            report.repairs().count("route"),
        );
        println!("overruns: {}", report.metrics.overruns.get());
        Ok::<_, anyhow::Error>(())
    });
    let _ = stop_tx.send(());
    let _ = reconciler_thread.join();
    result
}

/// Today's date from `date` (no chrono dependency).
fn chrono_free_date() -> String {
    cmd::run("date", &["+%Y-%m-%d"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
