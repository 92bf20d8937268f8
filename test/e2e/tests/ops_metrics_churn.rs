//! Proof of issue 6 (metrics scraped during a 100-pod churn show the right counts) on the node
//! harness: 100 pods are added and deleted through the real plugin, 8 at a time, while a
//! scraper reads `metricsBindAddress` in a loop; plus deliberate bad calls (ADD into a missing
//! netns, ADD into a netns whose eth0 is taken). Every scrape must parse strictly (one HELP/TYPE per
//! family, no duplicate families or samples, cumulative histograms with `+Inf` == `_count`) and
//! counters never go down; at the end the CNI histogram counts equal the calls made, errors are
//! counted by the codes the plugin returned, the pods gauge is back to 0 and the flow-op counts
//! grew by one add and one remove per pod.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use weft_e2e::node::{Node, NodeOptions, Pod};

mod ops_support;
use ops_support::{parse_exposition, scrape, Exposition};

const METRICS_ADDR: &str = "127.0.0.1:9478";
const PODS: usize = 100;
const WORKERS: usize = 8;

fn count(verb: &str) -> String {
    format!("weft_cni_request_duration_seconds_count{{verb=\"{verb}\"}}")
}

/// Counters (and histogram series) present in `before` must not be lower in `after`.
fn monotonic(before: &Exposition, after: &Exposition) -> Result<()> {
    for (key, value) in &before.samples {
        let family = key.split('{').next().unwrap_or_default();
        let counter = family.ends_with("_total")
            || family.ends_with("_count")
            || family.ends_with("_bucket")
            || family.ends_with("_sum");
        if counter {
            let now = after.get(key);
            ensure!(now >= *value, "{key} went down: {value} -> {now}");
        }
    }
    Ok(())
}

#[test]
fn metrics_count_a_100_pod_churn_exactly() -> Result<()> {
    let mut options = NodeOptions::new(&["10.244.8.0/24"]);
    options.extra_config = format!("metricsBindAddress: {METRICS_ADDR}\n");
    let node = Node::start(options)?;
    let ns = node.netns().to_string();
    let before = scrape(&ns, METRICS_ADDR)?;
    ensure!(before.get("weft_pods") == 0.0, "{before:?}");
    let flow_ok = |e: &Exposition, op: &str| {
        e.get(&format!("weft_flow_ops_total{{op=\"{op}\",result=\"ok\"}}"))
    };
    let pods: Vec<Pod> = (0..PODS)
        .map(|i| Pod::create(&node, &format!("churn-{i}")))
        .collect::<Result<_>>()?;
    let runtime = node.runtime();
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let scrapes = std::thread::scope(|s| -> Result<usize> {
        let scraper = s.spawn(|| -> Result<usize> {
            let mut last = scrape(&ns, METRICS_ADDR)?;
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let now = scrape(&ns, METRICS_ADDR).context("scrape during the churn")?;
                monotonic(&last, &now)?;
                let pods = now.get("weft_pods");
                ensure!((0.0..=PODS as f64).contains(&pods), "weft_pods {pods}");
                last = now;
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(n)
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(pod) = pods.get(i) else {
                            return Ok(());
                        };
                        for verb in ["ADD", "DEL"] {
                            let out = runtime.call(verb, &pod.call())?;
                            if !out.success {
                                bail!("{verb} of {} failed: {}", pod.name, out.stdout);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut result = Ok(());
        for worker in workers {
            let r = worker
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))?;
            result = result.and(r);
        }
        done.store(true, Ordering::Relaxed);
        let scrapes = scraper
            .join()
            .map_err(|_| anyhow::anyhow!("scraper panicked"))??;
        result.map(|()| scrapes)
    })?;
    ensure!(scrapes > 0, "no scrape landed during the churn");

    // Deliberate bad calls: the codes the plugin returns are the codes counted.
    let mut bad: BTreeMap<(String, u64), f64> = BTreeMap::new();
    let missing = Pod::create(&node, "no-netns")?;
    let mut add = missing.call();
    add.netns = Some("/var/run/netns/weft-e2e-does-not-exist".into());
    // A pod netns that already holds an eth0: the agent refuses (interface exists).
    let taken = Pod::create(&node, "eth0-taken")?;
    taken.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])?;
    let taken_call = taken.call();
    for (verb, call) in [
        ("ADD", &add),
        ("ADD", &add),
        ("ADD", &add),
        ("ADD", &taken_call),
    ] {
        let out = node.plugin(verb, call)?;
        ensure!(!out.success, "{verb} should fail: {}", out.stdout);
        let code = out
            .code()
            .with_context(|| format!("no code: {}", out.stdout))?;
        *bad.entry((verb.to_string(), code)).or_default() += 1.0;
    }

    let after = scrape(&ns, METRICS_ADDR)?;
    monotonic(&before, &after)?;
    let bad_adds: f64 = bad.values().sum();
    ensure!(bad.len() == 2, "two distinct error codes: {bad:?}");
    ensure!(
        after.get(&count("ADD")) == PODS as f64 + bad_adds,
        "ADD count {} != {PODS} + {bad_adds}",
        after.get(&count("ADD"))
    );
    ensure!(
        after.get(&count("DEL")) == PODS as f64,
        "DEL count {}",
        after.get(&count("DEL"))
    );
    for ((verb, code), n) in &bad {
        let key = format!("weft_cni_errors_total{{verb=\"{verb}\",code=\"{code}\"}}");
        ensure!(
            after.get(&key) == *n,
            "{key} = {} (want {n})",
            after.get(&key)
        );
    }
    let errors = after.sum("weft_cni_errors_total", "");
    ensure!(
        errors == bad.values().sum::<f64>(),
        "errors counted beyond the bad calls: {errors} {bad:?}"
    );
    ensure!(
        after.get("weft_pods") == 0.0,
        "pods gauge {}",
        after.get("weft_pods")
    );
    for op in ["add_pod", "remove_pod"] {
        let grown = flow_ok(&after, op) - flow_ok(&before, op);
        ensure!(grown == PODS as f64, "{op} flow ops grew by {grown}");
    }
    ensure!(
        after.sum("weft_flow_ops_total", "result=\"error\"") == 0.0,
        "flow op errors"
    );
    for family in [
        "weft_cni_request_duration_seconds",
        "weft_cni_errors_total",
        "weft_flow_op_duration_seconds",
        "weft_flow_ops_total",
        "weft_pods",
    ] {
        ensure!(after.families.contains_key(family), "{family} missing");
    }
    eprintln!("{scrapes} scrapes during the churn; bad calls {bad:?}");
    Ok(())
}

#[test]
fn the_strict_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{verb=\"ADD\",le=\"0.1\"} 1\n\
                h_bucket{verb=\"ADD\",le=\"+Inf\"} 2\nh_sum{verb=\"ADD\"} 0.3\nh_count{verb=\"ADD\"} 2\n";
    let exp = parse_exposition(good).expect("valid text");
    assert_eq!(exp.get("h_count{verb=\"ADD\"}"), 2.0);
    for bad in [
        // duplicate family
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n",
        // sample before TYPE
        "a 1\n",
        // sample of another family
        "# HELP a A.\n# TYPE a gauge\nb 1\n",
        // bad value, bad label, duplicate sample
        "# HELP a A.\n# TYPE a gauge\na x\n",
        "# HELP a A.\n# TYPE a gauge\na{k=v} 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        // +Inf != count
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        // not cumulative
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}
