//! Bad input through the real `weft` binary against the real agent: each case gets its CNI code
//! and leaves nothing half-created (no veth, OVS port, IP allocation or pod flow). Also the
//! readiness contract (STATUS 50 / ADD 11 until bootstrap completed, and with no agent) and GC.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::json;
use weft_e2e::cmd;
use weft_e2e::node::{Node, NodeOptions, PluginOutput, Pod};

/// Pod veths, ports besides the gateway, IP allocations and pod flows on the node.
fn leftovers(node: &Node) -> Result<(usize, usize, usize, usize)> {
    Ok((
        node.links_with_prefix("wf")?.len(),
        node.pod_ports()?.len(),
        node.ipam_allocations()?.len(),
        node.pod_flows()?.len(),
    ))
}

fn expect_code(out: &PluginOutput, code: u64, what: &str) -> Result<()> {
    ensure!(
        out.code() == Some(code),
        "{what}: expected code {code}, got {:?}: {}",
        out.code(),
        out.stdout
    );
    Ok(())
}

#[test]
fn bad_input_gets_its_code_and_creates_nothing() -> Result<()> {
    // A /30: exactly one pod address (network, gateway and broadcast are reserved).
    let mut node = Node::start(NodeOptions::new(&["10.244.7.0/30"]))?;
    let nothing = (0, 0, 0, 0);

    let pod = Pod::create(&node, "bad")?;
    let mut call = pod.call();
    call.netns = Some("/run/netns/weft-does-not-exist".into());
    expect_code(&node.plugin("ADD", &call)?, 4, "nonexistent netns")?;
    ensure!(
        leftovers(&node)? == nothing,
        "nonexistent netns left {:?}",
        leftovers(&node)?
    );

    let mut call = pod.call();
    call.ifname = Some("eth0-is-too-long".into());
    expect_code(&node.plugin("ADD", &call)?, 4, "ifname too long")?;
    ensure!(leftovers(&node)? == nothing);

    // The runtime asks for an interface name the pod already has.
    cmd::run(
        "ip",
        &[
            "-n", &pod.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    )?;
    let out = node.plugin("ADD", &pod.call())?;
    expect_code(&out, 110, "duplicate ifname")?;
    ensure!(
        out.stdout.contains("eth0"),
        "names the interface: {}",
        out.stdout
    );
    ensure!(
        leftovers(&node)? == nothing,
        "duplicate ifname left {:?}",
        leftovers(&node)?
    );

    // The only address goes to one pod; the next ADD finds the CIDR exhausted.
    let first = Pod::create(&node, "first")?;
    node.add(&first)?;
    let second = Pod::create(&node, "second")?;
    let out = node.plugin("ADD", &second.call())?;
    expect_code(&out, 111, "exhausted pod cidr")?;
    ensure!(
        out.stdout.contains("10.244.7.0/30"),
        "names the cidr: {}",
        out.stdout
    );
    ensure!(
        leftovers(&node)?.0 == 1 && leftovers(&node)?.2 == 1,
        "only the first pod: {:?}",
        leftovers(&node)?
    );

    // GC with an empty valid list removes the first pod.
    let mut gc = first.call();
    let mut conf = node.netconf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    gc.config = Some(conf);
    let out = node.plugin("GC", &gc)?;
    ensure!(out.success, "GC: {}", out.stdout);
    ensure!(
        leftovers(&node)? == nothing,
        "gc left {:?}",
        leftovers(&node)?
    );
    // Now the address is free again.
    node.add(&second)?;
    node.del(&second)?;
    ensure!(leftovers(&node)? == nothing);

    // No agent: try again later (11); STATUS: not available (50).
    node.stop_agent();
    expect_code(&node.plugin("ADD", &first.call())?, 11, "agent not running")?;
    expect_code(
        &node.plugin("DEL", &first.call())?,
        11,
        "agent not running (DEL)",
    )?;
    expect_code(
        &node.plugin("STATUS", &first.call())?,
        50,
        "STATUS without agent",
    )?;
    ensure!(leftovers(&node)? == nothing);
    Ok(())
}

#[test]
fn not_ready_until_the_node_has_pod_cidrs() -> Result<()> {
    let mut options = NodeOptions::new(&[]);
    options.wait_ready = false;
    let mut node = Node::start(options)?;
    let pod = Pod::create(&node, "early")?;
    // The socket is served at once, but bootstrap waits for podCIDRs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.cni_socket.exists() {
        ensure!(std::time::Instant::now() < deadline, "no cni socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&node.cni_socket)?;
    ensure!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777 == 0o600,
        "socket is 0600"
    );
    expect_code(
        &node.plugin("STATUS", &pod.call())?,
        50,
        "STATUS while bootstrapping",
    )?;
    expect_code(
        &node.plugin("ADD", &pod.call())?,
        11,
        "ADD while bootstrapping",
    )?;
    ensure!(node.ipam_allocations()?.is_empty() && node.links_with_prefix("wf")?.is_empty());

    let name = node.name.clone();
    node.api
        .patch_node(
            &name,
            json!({"spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    node.wait_ready(Duration::from_secs(30))?;
    node.add(&pod)?;
    node.del(&pod)?;
    Ok(())
}

#[test]
fn check_reports_every_mismatch() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.244.4.0/24"]))?;
    let pod = Pod::create(&node, "checked")?;
    let result = node.add(&pod)?;
    let check = || -> Result<PluginOutput> {
        let mut call = pod.call();
        let mut conf = node.netconf("1.1.0");
        conf["prevResult"] = result.clone();
        call.config = Some(conf);
        node.plugin("CHECK", &call)
    };
    let out = check()?;
    ensure!(out.success, "CHECK of an intact pod: {}", out.stdout);

    // Break three things: the pod's MTU, its address, and its flows.
    pod.exec(&["ip", "link", "set", "eth0", "mtu", "1400"])?;
    pod.exec(&["ip", "addr", "flush", "dev", "eth0", "scope", "global"])?;
    let ofport = node.ovs.vsctl(&[
        "get",
        "Interface",
        result["interfaces"][0]["name"].as_str().unwrap_or(""),
        "ofport",
    ])?;
    let cookie = (3u64 << 40) | ofport.trim().parse::<u64>()?;
    node.ovs.ofctl(&[
        "del-flows",
        "br-int",
        &format!("cookie={cookie:#x}/0xffffffffffff"),
    ])?;
    let out = check()?;
    expect_code(&out, 116, "CHECK of a broken pod")?;
    let details = out.json()?["details"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for expected in [
        "has mtu 1400, expected 1450",
        "lacks address 10.244.4.",
        "flow missing",
    ] {
        ensure!(
            details.contains(expected),
            "details name {expected:?}: {details}"
        );
    }
    // CHECK of an attachment the agent does not know: code 3.
    let other = Pod::create(&node, "unknown")?;
    let mut call = other.call();
    let mut conf = node.netconf("1.1.0");
    conf["prevResult"] = result.clone();
    call.config = Some(conf);
    expect_code(
        &node.plugin("CHECK", &call)?,
        3,
        "CHECK of an unknown attachment",
    )?;
    node.del(&pod)?;
    ensure!(leftovers(&node)? == (0, 0, 0, 0));
    Ok(())
}
