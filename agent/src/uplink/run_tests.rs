//! The uplink run against the recording fake ([`super::fake::FakeNode`]): attach, detach, and a
//! kill at every step of either resumed by the next run, all without root. (The same paths run
//! against the real kernel and OVS in `tests/uplink_crash.rs` and the e2e suite.)

use ipnet::IpNet;
use ovs_flows::flow::Flow;
use ovs_flows::pipeline::ports;
use weft_plan::uplink::steps::{AttachStep, DetachStep, SavedRoute, Target};
use weft_plan::MacAddr;

use super::fake::{FakeNode, FakeState};
use super::{converge, converge_until, CrashPoint, Journaled, UplinkSpec};

const NIC: &str = "eth0";
const INDEX: u32 = 2;
const MAC: MacAddr = MacAddr::new(0x52, 0x54, 0, 0x12, 0x34, 0x56);

fn node() -> FakeNode {
    let address: IpNet = "192.168.50.10/24".parse().unwrap();
    let default = SavedRoute {
        destination: "0.0.0.0/0".parse().unwrap(),
        gateway: Some("192.168.50.1".parse().unwrap()),
        table: 254,
        metric: None,
        protocol: 3,
        scope: 0,
        pref_source: None,
        onlink: false,
    };
    FakeNode::with_nic(NIC, INDEX, 1500, MAC, &[address], &[default])
}

fn spec(dir: &tempfile::TempDir) -> UplinkSpec {
    UplinkSpec {
        nic: NIC.into(),
        bridge: "br-weft".into(),
        mtu: 1500,
        journal: dir.path().join("uplink-journal.json"),
        flows: vec![Flow::default(), Flow::default()],
    }
}

async fn attached() -> (FakeNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = node();
    let outcome = converge(&node, &node, &node, &spec(&dir), Target::Attached)
        .await
        .unwrap();
    assert!(!outcome.stopped, "{outcome:?}");
    (node, dir)
}

#[tokio::test]
async fn attach_moves_the_nic_behind_the_bridge_and_detach_gives_it_back() {
    let before = node().state();
    let (node, dir) = attached().await;
    let state = node.state();
    let nic = &state.links[&INDEX];
    assert_eq!(nic.name, "eth0~");
    assert!(nic.up && !nic.arp && nic.addresses.is_empty(), "{nic:?}");
    let (_, internal) = node.link(NIC).expect("internal port device");
    assert_eq!(internal.mac, MAC, "the internal port takes the NIC's MAC");
    assert_eq!(internal.addresses, before.links[&INDEX].addresses);
    assert_eq!(internal.routes, before.links[&INDEX].routes);
    assert_eq!(state.ports["eth0~"].ofport, ports::UPLINK);
    assert_eq!(state.ports["eth0~"].kind, "");
    assert_eq!(state.ports[NIC].ofport, ports::HOST_INTERNAL);
    assert_eq!(state.ports[NIC].kind, "internal");
    assert_eq!(state.flows.len(), 2);
    assert_eq!(state.sysctls["net/ipv6/conf/eth0~/disable_ipv6"], "1");
    // The flows are in before any port exists; the NIC is renamed before its name is reused.
    let calls = node.calls();
    let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix)).unwrap();
    assert!(at("flows install") < at("ovs ensure_port"), "{calls:#?}");
    assert!(
        at("kernel rename") < at("ovs ensure_port eth0"),
        "{calls:#?}"
    );
    assert!(spec(&dir).journal.exists());

    let outcome = converge(&node, &node, &node, &spec(&dir), Target::Detached)
        .await
        .unwrap();
    assert!(!outcome.stopped);
    let state = node.state();
    assert!(state.ports.is_empty(), "{:?}", state.ports);
    assert_eq!(state.links.len(), 1, "{:?}", state.links);
    let nic = &state.links[&INDEX];
    assert_eq!(nic.name, NIC);
    assert!(nic.up && nic.arp);
    assert_eq!(nic.addresses, before.links[&INDEX].addresses);
    assert!(
        !spec(&dir).journal.exists(),
        "the detach deletes the journal"
    );
}

#[tokio::test]
async fn a_second_attach_changes_nothing() {
    let (node, dir) = attached().await;
    let state = node.state();
    let outcome = converge(&node, &node, &node, &spec(&dir), Target::Attached)
        .await
        .unwrap();
    assert_eq!(node.state(), state, "{outcome:?}");
}

/// Kill the attach at every step, before and after its journal entry: the next start converges
/// on exactly the state of an attach that was never interrupted.
#[tokio::test]
async fn a_kill_at_any_attach_step_converges_on_the_next_start() {
    let (reference, _dir) = attached().await;
    let want: FakeState = reference.state();
    for step in AttachStep::ALL {
        for when in [Journaled::Before, Journaled::After] {
            let dir = tempfile::tempdir().unwrap();
            let node = node();
            let crash = Some(CrashPoint::Attach(step, when));
            let first = converge_until(&node, &node, &node, &spec(&dir), Target::Attached, crash)
                .await
                .unwrap();
            assert!(first.stopped, "{step:?} {when:?}: {first:?}");
            let second = converge(&node, &node, &node, &spec(&dir), Target::Attached)
                .await
                .unwrap_or_else(|e| panic!("{step:?} {when:?}: resume failed: {e}"));
            assert!(!second.stopped);
            assert_eq!(node.state(), want, "{step:?} {when:?}: {second:?}");
        }
    }
}

/// The same for the detach, and an attach killed mid-way then detached (the agent restarted
/// with a mode that no longer wants the uplink) leaves the NIC as it was.
#[tokio::test]
async fn a_kill_at_any_detach_step_converges_on_the_next_start() {
    let want = node().state();
    for step in DetachStep::ALL {
        for when in [Journaled::Before, Journaled::After] {
            let (node, dir) = attached().await;
            let crash = Some(CrashPoint::Detach(step, when));
            let first = converge_until(&node, &node, &node, &spec(&dir), Target::Detached, crash)
                .await
                .unwrap();
            assert!(first.stopped, "{step:?} {when:?}: {first:?}");
            converge(&node, &node, &node, &spec(&dir), Target::Detached)
                .await
                .unwrap_or_else(|e| panic!("{step:?} {when:?}: resume failed: {e}"));
            let state = node.state();
            assert_eq!(state.links, want.links, "{step:?} {when:?}");
            assert!(
                state.ports.is_empty(),
                "{step:?} {when:?}: {:?}",
                state.ports
            );
            assert!(!spec(&dir).journal.exists());
        }
    }
    for step in AttachStep::ALL {
        let dir = tempfile::tempdir().unwrap();
        let node = node();
        let crash = Some(CrashPoint::Attach(step, Journaled::After));
        converge_until(&node, &node, &node, &spec(&dir), Target::Attached, crash)
            .await
            .unwrap();
        converge(&node, &node, &node, &spec(&dir), Target::Detached)
            .await
            .unwrap_or_else(|e| panic!("attach killed after {step:?}, then detach: {e}"));
        let state = node.state();
        assert_eq!(state.links, want.links, "attach killed after {step:?}");
        assert!(state.ports.is_empty(), "{step:?}: {:?}", state.ports);
    }
}
