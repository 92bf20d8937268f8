//! Issue 5 proof on the single-node harness (the real `weft-agent` on real OVS): under a 100 pps
//! ping from a pod to the gateway, Weft's host state is destroyed the ways a host does it (a
//! networkd restart deleting every foreign route and rule, `ip route flush proto 87`, neighbour
//! flush, the gateway address removed, MAC/MTU changes) and must come back within a second,
//! with pings lost bounded by that window; a hand-added foreign route is untouched throughout;
//! repeated drift raises a Kubernetes Event on the Node.
//!
//! A second Node object (no agent) gives the agent a peer, so peer routes and neighbours exist.
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use weft_e2e::cluster::LivePing;
use weft_e2e::cmd;
use weft_e2e::node::{ping, Node, NodeOptions, Pod, GATEWAY, UPLINK};

const TRIALS: usize = 20;
const GW_IP: &str = "10.244.1.1";

fn ip(node: &Node, args: &[&str]) -> String {
    let mut full = vec!["-n", node.netns()];
    full.extend_from_slice(args);
    cmd::run("ip", &full).unwrap_or_default()
}

/// Breaks host state with `ip -n NS -s ARGS` (a flush) and checks that it removed something:
/// a flush of nothing exits 0, and a break that did nothing would "converge" at once.
fn flush(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["-n", ns, "-s"];
    full.extend_from_slice(args);
    let out = cmd::run("ip", &full)?;
    ensure!(
        out.contains("deleting"),
        "ip {}: removed nothing ({})",
        args.join(" "),
        out.trim()
    );
    Ok(())
}

/// Weft's IPv4 routes (all tables), rules and permanent neighbours, as text.
fn weft_state(node: &Node) -> (usize, usize, usize, bool) {
    let routes = ip(
        node,
        &["-4", "route", "show", "table", "all", "proto", "87"],
    )
    .lines()
    .count();
    let rules = ip(node, &["-4", "rule", "show"])
        .lines()
        .filter(|l| l.starts_with("30700:") && l.contains("proto 87"))
        .count();
    let neighbours = ip(
        node,
        &["-4", "neigh", "show", "dev", GATEWAY, "nud", "permanent"],
    )
    .lines()
    .count();
    let address = ip(node, &["-4", "addr", "show", "dev", GATEWAY]).contains(GW_IP);
    (routes, rules, neighbours, address)
}

/// Local pod CIDR + peer pod CIDR, each in main and Weft's table; one rule; one neighbour.
const CONVERGED: (usize, usize, usize, bool) = (4, 1, 1, true);

fn wait_converged(node: &Node, timeout: Duration) -> Result<Duration> {
    wait_converged_since(node, Instant::now(), timeout)
}

/// Polls every 2 ms until converged; returns the time since `start`.
fn wait_converged_since(node: &Node, start: Instant, timeout: Duration) -> Result<Duration> {
    loop {
        if weft_state(node) == CONVERGED {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(anyhow!(
                "host state not restored within {timeout:?}: {:?}; log:\n{}",
                weft_state(node),
                node.agent_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops the ping; returns (transmitted, received), not counting as transmitted the one echo
/// that may still be in flight when ping is stopped (at 100 pps at most one is outstanding).
fn answered(ping: LivePing) -> Result<(u64, u64)> {
    let loss = ping.stop()?;
    let in_flight = u64::from(loss.sent > loss.received);
    Ok((loss.sent - in_flight, loss.received))
}

#[derive(Debug)]
struct Trials {
    name: &'static str,
    times: Vec<Duration>,
    sent: u64,
    lost: u64,
}

impl Trials {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.times.clone();
        v.sort();
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }

    fn print(&self) {
        println!(
            "hoststate e2e {:<28} n={} p50={:>4} ms p99={:>4} ms max={:>4} ms pings lost {}/{}",
            self.name,
            self.times.len(),
            self.pct(0.5).as_millis(),
            self.pct(0.99).as_millis(),
            self.pct(1.0).as_millis(),
            self.lost,
            self.sent
        );
    }
}

/// Runs `TRIALS` times: break (ip commands), measure time to restore; under the ping.
fn trials(
    node: &Node,
    pod: &Pod,
    name: &'static str,
    break_it: &dyn Fn() -> Result<()>,
) -> Result<Trials> {
    let pinger = LivePing::start(&pod.netns, GW_IP.parse()?)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut times = Vec::new();
    for _ in 0..TRIALS {
        let start = Instant::now();
        break_it().with_context(|| format!("{name}: breaking the host state"))?;
        times.push(wait_converged_since(node, start, Duration::from_secs(2))?);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = answered(pinger)?;
    let t = Trials {
        name,
        times,
        sent,
        lost: sent.saturating_sub(received),
    };
    t.print();
    ensure!(sent > 100, "{name}: ping did not run ({sent} sent)");
    ensure!(
        t.pct(0.99) < Duration::from_secs(1),
        "{name}: p99 {:?} not below 1 s",
        t.pct(0.99)
    );
    // Lost pings are bounded by the outage windows (100 pps), plus one in flight per trial.
    let bound: u64 = t.times.iter().map(|d| d.as_millis() as u64 / 10 + 2).sum();
    ensure!(
        t.lost <= bound,
        "{name}: {} pings lost, bound {bound}",
        t.lost
    );
    Ok(t)
}

/// The agent log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn mac_of(text: &str) -> String {
    text.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string()
}

/// Five link drifts under the ping: `change(i)`, then wait until `restored()`.
fn link_drift(
    node: &Node,
    pod: &Pod,
    name: &'static str,
    change: &dyn Fn(u8) -> Result<()>,
    restored: &dyn Fn() -> bool,
) -> Result<Trials> {
    let pinger = LivePing::start(&pod.netns, GW_IP.parse()?)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut times = Vec::new();
    for i in 0..5u8 {
        let start = Instant::now();
        change(i).with_context(|| format!("{name}: changing the link"))?;
        while !restored() {
            ensure!(
                start.elapsed() < Duration::from_secs(2),
                "{name}: not restored; log:\n{}",
                node.agent_log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = answered(pinger)?;
    let t = Trials {
        name,
        times,
        sent,
        lost: sent.saturating_sub(received),
    };
    t.print();
    ensure!(t.pct(1.0) < Duration::from_secs(1), "{name}: {:?}", t.times);
    Ok(t)
}

#[test]
fn host_state_is_repaired_within_a_second_under_traffic() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.244.1.0/24"]))?;
    node.api
        .create_node(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("{}-peer", node.name)},
            "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.11"}]}
        }))
        .map_err(|e| anyhow!("creating peer node: {e:?}"))?;
    let pod = Pod::create(&node, "pinger")?;
    node.add(&pod)?;
    wait_converged(&node, Duration::from_secs(10))?;
    let gw: IpAddr = GW_IP.parse()?;
    ping(&pod.netns, gw)?;

    // A foreign route, added by hand: must be untouched by everything below.
    let n = node.netns();
    cmd::run(
        "ip",
        &[
            "-n",
            n,
            "route",
            "add",
            "198.51.100.0/24",
            "dev",
            UPLINK,
            "proto",
            "static",
        ],
    )?;
    let foreign = ip(&node, &["route", "show", "198.51.100.0/24"]);
    ensure!(foreign.contains("proto static"), "{foreign}");

    let mut results = Vec::new();
    // 1. What `systemctl restart systemd-networkd` does: every foreign route and rule gone.
    results.push(trials(&node, &pod, "networkd-style delete all", &|| {
        flush(n, &["-4", "route", "flush", "table", "all", "proto", "87"])?;
        cmd::run("ip", &["-n", n, "-4", "rule", "del", "pref", "30700"])?;
        Ok(())
    })?);
    // 2. `ip route flush table main proto 87`.
    results.push(trials(&node, &pod, "route flush main proto 87", &|| {
        flush(n, &["-4", "route", "flush", "table", "main", "proto", "87"])?;
        Ok(())
    })?);
    // 3. Neighbours deleted.
    results.push(trials(&node, &pod, "neighbour flush", &|| {
        flush(
            n,
            &["-4", "neigh", "flush", "dev", GATEWAY, "nud", "permanent"],
        )?;
        Ok(())
    })?);
    // 4. The gateway's address removed.
    results.push(trials(&node, &pod, "gateway address removed", &|| {
        cmd::run(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "del",
                &format!("{GW_IP}/24"),
                "dev",
                GATEWAY,
            ],
        )?;
        Ok(())
    })?);

    // 5. MAC and MTU drift of the gateway and of the pod's host veth: restored and reported.
    let gw_link = ip(&node, &["link", "show", GATEWAY]);
    let veth = node
        .links_with_prefix("wf")?
        .pop()
        .context("pod host veth")?;
    let veth_link = ip(&node, &["link", "show", &veth]);
    let (gw_mac, veth_mac) = (mac_of(&gw_link), mac_of(&veth_link));
    ensure!(
        !gw_mac.is_empty() && !veth_mac.is_empty(),
        "{gw_link} {veth_link}"
    );
    // 5a. The pod's host veth MAC rewritten (what udev's MACAddressPolicy=persistent does):
    // pods resolve the gateway to the pipeline's virtual MAC, so not one ping is lost.
    let veth_drift = link_drift(
        &node,
        &pod,
        "host veth mac drift",
        &|i| {
            let mac = format!("02:00:00:00:01:{i:02x}");
            cmd::run("ip", &["-n", n, "link", "set", &veth, "address", &mac])?;
            Ok(())
        },
        &|| mac_of(&ip(&node, &["link", "show", &veth])) == veth_mac,
    )?;
    ensure!(
        veth_drift.lost == 0,
        "pings lost under host veth MAC drift: {}",
        veth_drift.lost
    );
    // 5b. The gateway's MAC and MTU changed: frames to the gateway carry its configured MAC, so
    // the kernel drops them until the MAC is back; loss is bounded by the repair window.
    let gw_drift = link_drift(
        &node,
        &pod,
        "gateway mac+mtu drift",
        &|i| {
            let mac = format!("02:00:00:00:02:{i:02x}");
            cmd::run("ip", &["-n", n, "link", "set", GATEWAY, "address", &mac])?;
            cmd::run("ip", &["-n", n, "link", "set", GATEWAY, "mtu", "1400"])?;
            Ok(())
        },
        &|| {
            let g = ip(&node, &["link", "show", GATEWAY]);
            mac_of(&g) == gw_mac && g.contains("mtu 1450")
        },
    )?;
    let bound: u64 = gw_drift
        .times
        .iter()
        .map(|d| d.as_millis() as u64 / 10 + 2)
        .sum();
    ensure!(
        gw_drift.lost <= bound,
        "gateway drift: {} lost, bound {bound}",
        gw_drift.lost
    );
    ping(&pod.netns, gw)?;

    // Reported: log lines naming what, where and how long; an Event for repeated drift.
    let log = strip_ansi(&node.agent_log());
    for needle in [
        "host state repaired",
        "kind=\"route\"",
        "kind=\"rule\"",
        "kind=\"neighbour\"",
        "kind=\"address\"",
        "missing_for_ms=",
        &format!("{veth} (mac"),
    ] {
        ensure!(log.contains(needle), "agent log lacks {needle:?}");
    }
    let events = node.api.events();
    let drift_events: Vec<_> = events
        .iter()
        .filter(|e| e["reason"] == "HostStateDrift")
        .collect();
    ensure!(
        !drift_events.is_empty(),
        "no HostStateDrift event: {events:#?}"
    );
    let regarding = &drift_events[0]["regarding"];
    ensure!(
        regarding["kind"] == "Node" && regarding["name"] == node.name.as_str(),
        "{regarding}"
    );

    // The foreign route never moved.
    ensure!(ip(&node, &["route", "show", "198.51.100.0/24"]) == foreign);
    ensure!(results.iter().all(|t| t.times.len() == TRIALS));
    Ok(())
}
