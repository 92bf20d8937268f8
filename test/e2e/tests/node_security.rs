//! Issue 3 proof through the real agent and plugin: SpoofGuard drops a pod that sends with
//! another pod's IP or MAC (and a control with SpoofGuard bypassed shows the same sends get
//! through), and a host veth's MAC change under a 100 pps ping loses nothing
//! (field report 3: pods resolve the gateway to the pipeline's virtual MAC, never to a host veth
//! MAC).
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_e2e::node::{ping, Node, NodeOptions, Pod};
use weft_e2e::spoof::Bypass;
use weft_e2e::{cmd, netns};

const VIRTUAL_MAC: &str = "02:77:65:66:74:01";

fn ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

fn gateway(result: &Value, v4: bool) -> Result<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["gateway"].as_str()?.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() == v4)
        .context("gateway of that family in the result")
}

/// Pings once with a short timeout and reports whether the reply came.
fn answered(ns: &str, args: &[&str], dst: IpAddr) -> bool {
    let dst = dst.to_string();
    let mut full = vec!["ping", "-c", "2", "-i", "0.2", "-W", "1"];
    full.extend_from_slice(args);
    full.push(&dst);
    netns::exec(ns, &full).is_ok()
}

/// Echo requests the pod's own stack has received (InEchos / Icmp6InEchos).
fn in_echos(pod: &Pod, v4: bool) -> Result<u64> {
    if v4 {
        let snmp = pod.exec(&["cat", "/proc/net/snmp"])?;
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (icmp.next(), icmp.next());
        let names: Vec<&str> = names.context("Icmp header")?.split_whitespace().collect();
        let values: Vec<&str> = values.context("Icmp values")?.split_whitespace().collect();
        let at = names
            .iter()
            .position(|n| *n == "InEchos")
            .context("InEchos")?;
        Ok(values[at].parse()?)
    } else {
        let snmp6 = pod.exec(&["cat", "/proc/net/snmp6"])?;
        let line = snmp6
            .lines()
            .find(|l| l.starts_with("Icmp6InEchos "))
            .context("Icmp6InEchos")?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    }
}

/// Three pods on one dual-stack node: the honest one, the victim and the spoofer.
struct Scene {
    node: Node,
    honest: Pod,
    victim: Pod,
    spoofer: Pod,
    ips_a: Vec<IpAddr>,
    ips_b: Vec<IpAddr>,
    /// The victim's and the spoofer's MACs (eth0).
    macs: (String, String),
    /// The spoofer's host veth.
    spoofer_if: String,
}

/// Echo requests that reached the honest pod from one spoofed send.
#[derive(Debug)]
struct Reached {
    /// What the spoofer forged.
    what: String,
    /// Echo requests the honest pod's stack received meanwhile.
    echos: u64,
    /// Whether the spoofer got replies.
    answered: bool,
}

impl Scene {
    fn start(cidrs: &[&str]) -> Result<Scene> {
        let node = Node::start(NodeOptions::new(cidrs))?;
        let honest = Pod::create(&node, "honest")?;
        let victim = Pod::create(&node, "victim")?;
        let spoofer = Pod::create(&node, "spoofer")?;
        let (ra, rb, rc) = (node.add(&honest)?, node.add(&victim)?, node.add(&spoofer)?);
        let mac = |r: &Value, what: &str| -> Result<String> {
            Ok(r["interfaces"][1]["mac"]
                .as_str()
                .with_context(|| format!("{what} MAC in the result"))?
                .to_string())
        };
        Ok(Scene {
            ips_a: ips(&ra),
            ips_b: ips(&rb),
            macs: (mac(&rb, "victim")?, mac(&rc, "spoofer")?),
            spoofer_if: rc["interfaces"][0]["name"]
                .as_str()
                .context("spoofer host veth")?
                .to_string(),
            node,
            honest,
            victim,
            spoofer,
        })
    }

    /// The spoofer sends echo requests to every address of the honest pod, first from the
    /// victim's address of that family (added as a second address), then with the victim's
    /// MAC; returns what reached the honest pod. The spoofer is restored afterwards and
    /// legitimate traffic of every pod is checked to flow. The real test and its control both
    /// run this.
    fn spoof(&self) -> Result<Vec<Reached>> {
        let (a, b, c) = (&self.honest, &self.victim, &self.spoofer);
        let mut reached = Vec::new();
        for (ip_a, ip_b) in self.ips_a.iter().zip(&self.ips_b) {
            let family = if ip_b.is_ipv4() { "32" } else { "128" };
            let spoofed = format!("{ip_b}/{family}");
            c.exec(&["ip", "addr", "add", &spoofed, "dev", "eth0", "nodad"])?;
            let src = ip_b.to_string();
            let before = in_echos(a, ip_a.is_ipv4())?;
            let answered = answered(&c.netns, &["-I", &src], *ip_a);
            let after = in_echos(a, ip_a.is_ipv4())?;
            reached.push(Reached {
                what: format!("echo requests from spoofed source {ip_b} to {ip_a}"),
                echos: after.saturating_sub(before),
                answered,
            });
            c.exec(&["ip", "addr", "del", &spoofed, "dev", "eth0"])?;
            // Legitimate traffic of every pod still flows, and is counted where the spoof was
            // not.
            ping(&c.netns, *ip_a)?;
            ensure!(
                in_echos(a, ip_a.is_ipv4())? >= after + 3,
                "control pings not counted"
            );
            ping(&b.netns, *ip_a)?;
        }

        // The spoofer takes the victim's MAC.
        let (victim_mac, own_mac) = &self.macs;
        c.exec(&["ip", "link", "set", "eth0", "address", victim_mac])?;
        c.exec(&["ip", "neigh", "flush", "dev", "eth0"])?;
        for ip_a in &self.ips_a {
            let before = in_echos(a, ip_a.is_ipv4())?;
            let answered = answered(&c.netns, &[], *ip_a);
            let after = in_echos(a, ip_a.is_ipv4())?;
            reached.push(Reached {
                what: format!("echo requests with the victim's MAC to {ip_a}"),
                echos: after.saturating_sub(before),
                answered,
            });
        }
        c.exec(&["ip", "link", "set", "eth0", "address", own_mac])?;
        c.exec(&["ip", "neigh", "flush", "dev", "eth0"])?;
        for ip_a in &self.ips_a {
            ping(&c.netns, *ip_a)?;
            ping(&b.netns, *ip_a)?;
        }
        Ok(reached)
    }
}

#[test]
fn spoofguard_drops_foreign_ip_and_mac_through_the_agent() -> Result<()> {
    let scene = Scene::start(&["10.81.0.0/24", "fd00:81::/64"])?;
    let reached = scene.spoof()?;
    eprintln!("with SpoofGuard: {reached:?}");
    ensure!(reached.len() == 4, "expected 4 spoofed sends: {reached:?}");
    for r in &reached {
        ensure!(
            r.echos == 0 && !r.answered,
            "{} reached the honest pod ({} received, answered: {})",
            r.what,
            r.echos,
            r.answered
        );
    }

    // Control: the same spoofed sends through the pipeline without SpoofGuard for the spoofer
    // reach the honest pod, so the checks above can fail.
    let bypass = Bypass::install(&scene.node, &scene.spoofer_if, None)?;
    let control = scene.spoof()?;
    bypass.check_installed()?;
    eprintln!("control without SpoofGuard: {control:?}");
    for r in &control {
        ensure!(
            r.echos >= 1,
            "control: {} did not reach the honest pod without SpoofGuard",
            r.what
        );
    }
    for pod in [&scene.honest, &scene.victim, &scene.spoofer] {
        scene.node.del(pod)?;
    }
    Ok(())
}

#[test]
fn host_veth_mac_change_under_traffic_loses_nothing() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.82.0.0/24", "fd00:82::/64"]))?;
    let a = Pod::create(&node, "pinger")?;
    let b = Pod::create(&node, "target")?;
    let ra = node.add(&a)?;
    let rb = node.add(&b)?;
    let hosts: Vec<String> = [&ra, &rb]
        .iter()
        .map(|r| {
            r["interfaces"][0]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ensure!(hosts.iter().all(|h| h.starts_with("wf")), "{hosts:?}");

    // 100 pps for 3 s to the gateway (v4 and v6) and to the other pod, while both host veth
    // MACs change three times each.
    let targets = [gateway(&ra, true)?, gateway(&ra, false)?, ips(&rb)[0]];
    let pings: Vec<_> = targets
        .iter()
        .map(|dst| {
            let (ns, dst) = (a.netns.clone(), dst.to_string());
            std::thread::spawn(move || {
                Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "ping", "-q", "-c", "300", "-i", "0.01",
                    ])
                    .args(["-W", "1", &dst])
                    .output()
            })
        })
        .collect();
    // The pings run in threads (Command::output blocks): change MACs meanwhile.
    for round in 0..3u8 {
        std::thread::sleep(Duration::from_millis(700));
        for (i, host) in hosts.iter().enumerate() {
            let mac = format!("02:aa:bb:cc:{:02x}:{:02x}", i, round);
            cmd::run(
                "ip",
                &["-n", node.netns(), "link", "set", host, "address", &mac],
            )?;
        }
    }
    for (dst, handle) in targets.iter().zip(pings) {
        let output = handle
            .join()
            .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
        let text = String::from_utf8_lossy(&output.stdout);
        ensure!(
            text.contains("300 packets transmitted, 300 received"),
            "loss pinging {dst} while host veth MACs changed:\n{text}"
        );
    }
    // The pod still resolves its gateway to the virtual MAC.
    let neigh = a.exec(&["ip", "neigh", "show", &gateway(&ra, true)?.to_string()])?;
    ensure!(neigh.contains(VIRTUAL_MAC), "gateway neighbour: {neigh}");
    node.del(&a)?;
    node.del(&b)?;
    Ok(())
}
