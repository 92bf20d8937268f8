//! Proof of issue 6 (trace-packet between pods on different nodes) on the cluster harness, encap
//! Geneve: on the sending node the trace routes the packet in L3Forwarding to the peer (sets
//! `tun_dst` to the peer's transport address) and outputs it to the tunnel port, which pushes
//! a Geneve header towards the peer and sends it out the uplink NIC; on the
//! receiving node, `trace-packet --from-tunnel SENDER` enters by the tunnel port (no
//! SpoofGuard) and is delivered to the destination pod's port. The same pods ping each other,
//! so the traced path is the one traffic takes.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_e2e::cluster::{Cluster, ClusterOptions, TUNNEL};

mod ops_support;
use ops_support::Ctl;

/// `(table, matched, actions)` of every step.
fn steps(trace: &Value) -> Vec<(u64, String, Vec<String>)> {
    trace["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["table"].as_u64().unwrap_or(999),
                s["matched"].as_str().unwrap_or("").to_string(),
                s["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn trace_packet_follows_a_pod_to_pod_packet_across_the_tunnel() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::encap(2, "geneve"))?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    let (a, ip_a) = n1.add_pod("trace-a")?;
    let (_b, ip_b) = n2.add_pod("trace-b")?;
    weft_e2e::node::ping(&a.netns, ip_b).context("trace-a -> trace-b")?;
    let (ctl1, ctl2) = (Ctl::new(&n1.config)?, Ctl::new(&n2.config)?);
    let (ip_a, ip_b) = (ip_a.to_string(), ip_b.to_string());

    // Sending node: routed to node-2, out the tunnel with tun_dst = node-2's address.
    let (table, sent) = ctl1.formats(
        0,
        &[
            "trace-packet",
            "--source",
            "trace-a",
            "--destination",
            &ip_b,
            "--proto",
            "tcp",
            "--dport",
            "5201",
        ],
    )?;
    let verdict = sent["verdict"].as_str().unwrap_or_default();
    ensure!(
        verdict == format!("output to port 32768 ({TUNNEL})"),
        "sender verdict: {sent}"
    );
    let set_tun_dst = format!("set_field:{}->tun_dst", n2.ip);
    let routed = steps(&sent)
        .into_iter()
        .find(|(table, _, actions)| *table == 70 && actions.contains(&set_tun_dst))
        .with_context(|| format!("no L3Forwarding step setting {set_tun_dst}: {sent}"))?;
    ensure!(
        routed.1.contains(&n2.pod_cidr),
        "routed by a flow for node-2's pod cidr: {routed:?}"
    );
    // The pod's packet through the pipeline (conntrack, then after the recirculation its
    // state; a new connection passes the NetworkPolicy stages 60/61 and 90/91 and the per-rule
    // counter tables 101/102), then (native tunnelling on netdev) the encapsulated packet
    // entering from the host port and passed to the uplink NIC.
    let tables: Vec<u64> = steps(&sent).iter().map(|s| s.0).collect();
    ensure!(
        tables == [0, 20, 30, 31, 40, 41, 60, 61, 70, 71, 80, 90, 91, 100, 101, 102, 120, 0],
        "sender tables: {tables:?}"
    );
    ensure!(
        table.contains("table 40 ConntrackZone")
            && table.contains("table 41 ConntrackState")
            && table.contains("table 100 ConntrackCommit"),
        "conntrack steps named: {table}"
    );
    let output = &steps(&sent)[16];
    let tunnelled = format!(
        "-> tunneling to {} via {}",
        n2.ip,
        weft_e2e::cluster::UPLINK
    );
    ensure!(
        output.2.iter().any(|a| a == "-> output port is 32768")
            && output.2.iter().any(|a| a == &tunnelled),
        "Output table: {output:?}"
    );
    let encapsulated = &steps(&sent)[17];
    ensure!(
        encapsulated.1.contains("in_port=32771") && encapsulated.2 == ["output:32770"],
        "encapsulated packet leaves by the uplink NIC: {encapsulated:?}"
    );
    let datapath = sent["datapathActions"].as_str().unwrap_or_default();
    ensure!(
        datapath.contains("tnl_push(")
            && datapath.contains(&format!("ipv4(src={},dst={},", n1.ip, n2.ip))
            && datapath.contains("geneve("),
        "datapath actions: {datapath}"
    );
    ensure!(
        table.contains("table 70 L3Forwarding") && table.contains(&set_tun_dst),
        "{table}"
    );

    // Receiving node: in by the tunnel from node-1, delivered to trace-b's port.
    let pods = ctl2
        .expect(0, &["get", "podinterface", "trace-b", "-o", "json"])?
        .json()?;
    let ofport_b = pods[0]["ofport"].as_u64().context("ofport of trace-b")?;
    let from = n1.ip.to_string();
    let (table, received) = ctl2.formats(
        0,
        &[
            "trace-packet",
            "--from-tunnel",
            &from,
            "--source",
            &ip_a,
            "--destination",
            "trace-b",
            "--proto",
            "tcp",
            "--dport",
            "5201",
        ],
    )?;
    ensure!(
        received["flow"]
            .as_str()
            .is_some_and(|f| f.starts_with(&format!("in_port=32768,tun_src={from},"))),
        "{received}"
    );
    let verdict = received["verdict"].as_str().unwrap_or_default();
    ensure!(
        verdict.starts_with(&format!("output to port {ofport_b} (")),
        "receiver verdict: {received}"
    );
    let got = steps(&received);
    ensure!(
        got.iter()
            .any(|(t, m, _)| *t == 20 && m.contains("in_port=32768")),
        "classified as tunnel traffic: {received}"
    );
    let tables: Vec<u64> = got.iter().map(|s| s.0).collect();
    ensure!(
        !tables.contains(&30) && tables.contains(&70) && tables.ends_with(&[120]),
        "receiver tables (no SpoofGuard for the tunnel): {tables:?}"
    );
    ensure!(
        table.contains("Verdict: output to port") && table.contains("in_port=32768"),
        "{table}"
    );

    // A source that is not an IP with --from-tunnel: one line, exit 1.
    let bad = ctl2.expect(
        1,
        &[
            "trace-packet",
            "--from-tunnel",
            &from,
            "--source",
            "trace-a",
            "--destination",
            "trace-b",
        ],
    )?;
    ensure!(
        bad.stderr.lines().count() == 1 && bad.stderr.contains("must be an IP address"),
        "{bad:?}"
    );
    Ok(())
}
