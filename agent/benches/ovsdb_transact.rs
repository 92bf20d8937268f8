//! 200 concurrent OVSDB transacts against a private real OVS, with same-run baselines: the same
//! transacts issued one after another on the same client, and `ovs-vsctl --no-wait` (one process
//! and one connection per transaction, what a shell-out design would pay).
//!
//! Run: `cargo bench -p weft-agent --bench ovsdb_transact`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use weft_agent::ovsdb::{Client, ClientConfig, Condition, Endpoint, Mutation, Operation};
use weft_e2e::ovs::OvsInstance;

const N: usize = 200;
const ROUNDS: usize = 3;
const VSCTL_RUNS: usize = 30;

fn ops(round: usize, i: usize) -> Vec<Operation> {
    let ids = BTreeMap::from([(format!("r{round}-k{i:03}"), i.to_string())]);
    vec![
        Operation::mutate(
            "Bridge",
            vec![Condition::eq("name", "br-bench")],
            Mutation::merge_map("external_ids", &ids).into(),
        ),
        Operation::select(
            "Bridge",
            vec![Condition::eq("name", "br-bench")],
            Some(&["name"]),
        ),
    ]
}

struct Summary {
    total: Duration,
    p50: Duration,
    p99: Duration,
}

impl Summary {
    fn new(total: Duration, mut latencies: Vec<Duration>) -> Summary {
        latencies.sort();
        let pick = |q: f64| {
            let idx = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(idx).copied().unwrap_or_default()
        };
        Summary {
            total,
            p50: pick(0.50),
            p99: pick(0.99),
        }
    }

    fn per_sec(&self, n: usize) -> f64 {
        n as f64 / self.total.as_secs_f64()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn concurrent(client: &Client, round: usize) -> Result<Summary> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let client = client.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            client.transact(ops(round, i)).await.map(|_| t0.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(N);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done??);
    }
    Ok(Summary::new(started.elapsed(), latencies))
}

async fn sequential(client: &Client, round: usize) -> Result<Summary> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(N);
    for i in 0..N {
        let t0 = Instant::now();
        client.transact(ops(round, i)).await?;
        latencies.push(t0.elapsed());
    }
    Ok(Summary::new(started.elapsed(), latencies))
}

fn vsctl(ovs: &OvsInstance) -> Result<Summary> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(VSCTL_RUNS);
    for i in 0..VSCTL_RUNS {
        let t0 = Instant::now();
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "Bridge",
            "br-bench",
            &format!("external_ids:vsctl-{i}={i}"),
        ])?;
        latencies.push(t0.elapsed());
    }
    Ok(Summary::new(started.elapsed(), latencies))
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ovs = OvsInstance::start()?;
    ovs.add_bridge("br-bench")?;
    let result = runtime.block_on(async {
        let mut config = ClientConfig::new(Endpoint::Unix(ovs.db_socket()));
        config.call_timeout = Duration::from_secs(30);
        let client = Client::connect(config).await?;
        // Warm up.
        for i in 0..20 {
            client.transact(ops(99, i)).await?;
        }
        println!("ovsdb_transact: {N} transacts (mutate external_ids + select), {ROUNDS} rounds each");
        let mut best_conc: Option<Summary> = None;
        let mut best_seq: Option<Summary> = None;
        for round in 0..ROUNDS {
            let c = concurrent(&client, round * 2).await?;
            let s = sequential(&client, round * 2 + 1).await?;
            println!(
                "  round {round}: concurrent total {:7.1} ms ({:6.0} tx/s) p50 {:6.2} ms p99 {:6.2} ms | sequential total {:7.1} ms ({:6.0} tx/s) p50 {:5.2} ms p99 {:5.2} ms",
                ms(c.total), c.per_sec(N), ms(c.p50), ms(c.p99),
                ms(s.total), s.per_sec(N), ms(s.p50), ms(s.p99),
            );
            if best_conc.as_ref().is_none_or(|b| c.total < b.total) {
                best_conc = Some(c);
            }
            if best_seq.as_ref().is_none_or(|b| s.total < b.total) {
                best_seq = Some(s);
            }
        }
        let stats = client.stats();
        anyhow::ensure!(stats.disconnects == 0, "client reconnected during the bench: {stats:?}");
        Ok::<_, anyhow::Error>((best_conc, best_seq))
    });
    let (Some(conc), Some(seq)) = result? else {
        anyhow::bail!("no rounds ran");
    };
    let v = vsctl(&ovs)?;
    println!(
        "  ovs-vsctl --no-wait set ({VSCTL_RUNS} runs, one process each): p50 {:.2} ms p99 {:.2} ms ({:.0} tx/s)",
        ms(v.p50),
        ms(v.p99),
        v.per_sec(VSCTL_RUNS)
    );
    println!(
        "best: concurrent {:.0} tx/s (p50 {:.2} ms, p99 {:.2} ms); sequential {:.0} tx/s; ratio concurrent/sequential {:.2}x, concurrent/ovs-vsctl {:.1}x",
        conc.per_sec(N),
        ms(conc.p50),
        ms(conc.p99),
        seq.per_sec(N),
        conc.per_sec(N) / seq.per_sec(N),
        conc.per_sec(N) / v.per_sec(VSCTL_RUNS),
    );
    Ok(())
}
