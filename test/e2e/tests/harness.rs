//! The harness itself, against real OVS: start, use, restart, and leave nothing behind.

use std::path::Path;

use weft_e2e::{netns, OvsInstance};

#[test]
fn instance_runs_real_ovs_and_cleans_up_after_itself() -> anyhow::Result<()> {
    let mut ovs = OvsInstance::start()?;
    let name = ovs.netns().to_string();
    let dir = ovs.rundir().to_path_buf();
    assert!(
        netns::list().contains(&name),
        "netns {name} exists while running"
    );

    // A bridge name no other process on this machine uses.
    let bridge = format!("brh{}", std::process::id() % 100_000);
    let bridge = bridge.as_str();
    ovs.add_bridge(bridge)?;
    ovs.ofctl(&["add-flow", bridge, "table=3,priority=7,ip,actions=drop"])?;
    assert_eq!(
        ovs.dump_flows(bridge)?,
        ["table=3, priority=7,ip actions=drop"]
    );

    // The bridge's internal port is a real device inside the instance's namespace only.
    let links = netns::exec(&name, &["ip", "-o", "link", "show", bridge])?;
    assert!(links.contains(bridge), "{links}");
    assert!(weft_e2e::cmd::run("ip", &["link", "show", bridge]).is_err());

    // Restarts keep the configuration; flows do not survive a vswitchd restart.
    let old_pid = ovs.vswitchd_pid();
    ovs.restart_vswitchd()?;
    assert_ne!(old_pid, ovs.vswitchd_pid());
    assert!(ovs.dump_flows(bridge)?.is_empty());
    ovs.restart_ovsdb()?;
    assert_eq!(ovs.vsctl(&["list-br"])?.trim(), bridge);

    // TCP listeners live inside the namespace.
    let db_addr = ovs.ovsdb_tcp_remote(1000)?;
    netns::tcp_connect_in(&name, db_addr)?;
    let of_addr = ovs.openflow_tcp_remote(bridge)?;
    netns::tcp_connect_in(&name, of_addr)?;

    let pids = [ovs.vswitchd_pid().unwrap(), ovs.ovsdb_pid().unwrap()];
    drop(ovs);
    assert!(!netns::list().contains(&name), "netns {name} removed");
    assert!(!dir.exists(), "{} removed", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} stopped"
        );
    }
    Ok(())
}

#[test]
fn instances_in_parallel_do_not_collide() -> anyhow::Result<()> {
    let a = OvsInstance::start()?;
    let b = OvsInstance::start()?;
    assert_ne!(a.netns(), b.netns());
    a.add_bridge("br-int")?;
    b.add_bridge("br-int")?;
    a.ofctl(&["add-flow", "br-int", "priority=1,actions=drop"])?;
    assert_eq!(a.dump_flows("br-int")?.len(), 1);
    assert!(b.dump_flows("br-int")?.is_empty());
    Ok(())
}
