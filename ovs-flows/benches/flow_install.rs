//! Installs 10,000 distinct flows in one atomic bundle through the native client and through
//! `ovs-ofctl -O OpenFlow15 --bundle add-flows` on the same private OVS, interleaved, and prints
//! the median rates and their ratio.
//!
//! Run with `cargo bench -p ovs-flows --bench flow_install` (needs root and OVS, like the
//! integration tests).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ovs_flows::flow::{Action, Field, Flow, Match};
use ovs_flows::ofp::{Client, ClientConfig, Endpoint, FlowMod};
use weft_e2e::ovs::OvsInstance;

const BRIDGE: &str = "br0";
const FLOWS: u32 = 10_000;
const REPETITIONS: usize = 5;

/// Per-pod L3 forwarding: `ip,nw_dst=10.x.y.z actions=set_field:MAC->eth_dst,dec_ttl,goto_table`.
fn pod_flow(n: u32) -> Flow {
    let ip = Ipv4Addr::from(0x0a00_0000 + n);
    let o = ip.octets();
    Flow {
        table: 70,
        priority: 200,
        cookie: 0x0001_0000_0000_0003,
        matches: Match::new()
            .ip()
            .nw_dst(ipnet::Ipv4Net::new(ip, 32).expect("/32 is a valid prefix")),
        actions: vec![
            Action::set_field(
                Field::EthDst,
                u128::from(u64::from_be_bytes([
                    0, 0, 0x0a, 0x58, o[0], o[1], o[2], o[3],
                ])),
            ),
            Action::DecTtl,
            Action::GotoTable(80),
        ],
        ..Flow::default()
    }
}

fn installed(ovs: &OvsInstance) -> Result<usize> {
    Ok(ovs
        .ofctl(&["--no-stats", "dump-flows", BRIDGE])?
        .lines()
        .filter(|l| l.contains("nw_dst="))
        .count())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn rate(d: Duration) -> f64 {
    f64::from(FLOWS) / d.as_secs_f64()
}

async fn run() -> Result<()> {
    let ovs = OvsInstance::start()?;
    ovs.add_bridge(BRIDGE)?;
    let flows: Vec<Flow> = (1..=FLOWS).map(pod_flow).collect();
    let mods: Vec<FlowMod> = flows.iter().cloned().map(FlowMod::add).collect();
    let file = ovs.rundir().join("flows.txt");
    let text: String = flows.iter().map(|f| format!("{f}\n")).collect();
    std::fs::write(&file, text)?;
    let file = file.to_string_lossy().into_owned();
    let endpoint = Endpoint::Unix(ovs.mgmt_socket(BRIDGE));
    let client = Client::connect(endpoint.clone(), ClientConfig::default()).await?;

    let clear = |client: &Client| {
        let client = client.clone();
        async move {
            client.flow_mod(&FlowMod::delete_all()).await?;
            anyhow::Ok(())
        }
    };
    let mut ours = Vec::new();
    let mut ours_fresh = Vec::new();
    let mut ofctl = Vec::new();
    for rep in 0..REPETITIONS {
        for step in 0..3 {
            // Rotate the order every repetition.
            match (step + rep) % 3 {
                0 => {
                    clear(&client).await?;
                    let started = Instant::now();
                    client.bundle(&mods).await?;
                    ours.push(started.elapsed());
                }
                1 => {
                    clear(&client).await?;
                    let started = Instant::now();
                    let fresh = Client::connect(endpoint.clone(), ClientConfig::default()).await?;
                    fresh.bundle(&mods).await?;
                    ours_fresh.push(started.elapsed());
                }
                _ => {
                    clear(&client).await?;
                    let started = Instant::now();
                    ovs.ofctl(&["--bundle", "add-flows", BRIDGE, &file])?;
                    ofctl.push(started.elapsed());
                }
            }
            let n = installed(&ovs)?;
            ensure!(
                n == FLOWS as usize,
                "expected {FLOWS} flows installed, found {n}"
            );
        }
    }
    let (ours, ours_fresh, ofctl) = (
        median(&mut ours),
        median(&mut ours_fresh),
        median(&mut ofctl),
    );
    println!("flow_install: {FLOWS} flows, one atomic bundle, {REPETITIONS} repetitions, medians");
    println!(
        "  weft client (connected)          {:>9.1?}  {:>9.0} flows/s",
        ours,
        rate(ours)
    );
    println!(
        "  weft client (connect + bundle)   {:>9.1?}  {:>9.0} flows/s",
        ours_fresh,
        rate(ours_fresh)
    );
    println!(
        "  ovs-ofctl --bundle add-flows     {:>9.1?}  {:>9.0} flows/s",
        ofctl,
        rate(ofctl)
    );
    println!(
        "  ratio ours/ofctl: {:.2} (connected), {:.2} (incl. connect)",
        rate(ours) / rate(ofctl),
        rate(ours_fresh) / rate(ofctl)
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the same code once.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
