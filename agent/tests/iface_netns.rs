//! `Netns`: validation of paths, running code inside, netlink handles bound to a namespace.
//! Runs as root against the real kernel.

mod iface_support;

use std::os::unix::fs::MetadataExt;

use futures::TryStreamExt;
use iface_support::{process_netns_ino, thread_netns_ino, TestNetns};
use weft_agent::netns::{Netns, NetnsError};

#[test]
fn open_rejects_missing_and_non_netns_paths() {
    let missing = Netns::open("/run/netns/wfi-does-not-exist").unwrap_err();
    assert!(matches!(missing, NetnsError::NotFound { .. }), "{missing}");
    assert!(
        missing.to_string().contains("wfi-does-not-exist"),
        "{missing}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let plain = Netns::open(file.path()).unwrap_err();
    assert!(matches!(plain, NetnsError::NotNetns { .. }), "{plain}");

    // A namespace file of another type.
    let mnt = Netns::open("/proc/self/ns/mnt").unwrap_err();
    match &mnt {
        NetnsError::NotNetns { found, .. } => assert!(found.starts_with("mnt:["), "{found}"),
        other => panic!("expected NotNetns, got {other}"),
    }
}

#[test]
fn open_identifies_the_namespace() {
    let ns = TestNetns::new("id");
    let opened = Netns::open(ns.path()).unwrap();
    let meta = std::fs::metadata(ns.path()).unwrap();
    assert_eq!(opened.id().ino, meta.ino());
    assert_eq!(opened.id().dev, meta.dev());
    assert_ne!(opened.id(), Netns::current().unwrap().id());
    assert_eq!(Netns::current().unwrap().id().ino, process_netns_ino());
}

#[test]
fn run_blocking_enters_the_namespace_only_on_its_thread() {
    let ns = TestNetns::new("run");
    let opened = Netns::open(ns.path()).unwrap();
    let before = thread_netns_ino();
    let inside = opened.run_blocking(thread_netns_ino).unwrap();
    assert_eq!(inside, opened.id().ino);
    assert_eq!(thread_netns_ino(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtnetlink_handle_acts_in_the_namespace() {
    let ns = TestNetns::new("nl");
    ns.ip(&[
        "link", "add", "wfi-a", "type", "veth", "peer", "name", "wfi-b",
    ])
    .unwrap();
    let opened = Netns::open(ns.path()).unwrap();
    let before = thread_netns_ino();

    let handle = opened.rtnetlink().await.unwrap();
    let links: Vec<_> = handle.link().get().execute().try_collect().await.unwrap();
    let mut names: Vec<String> = links
        .iter()
        .map(|l| weft_agent::iface::InterfaceInfo::from_message(l).name)
        .collect();
    names.sort();
    assert_eq!(names, ["lo", "wfi-a", "wfi-b"]);

    let inside = opened.run(thread_netns_ino).await.unwrap();
    assert_eq!(inside, opened.id().ino);
    assert_eq!(
        thread_netns_ino(),
        before,
        "a runtime worker changed namespace"
    );
    assert_eq!(process_netns_ino(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_info_reads_mtu_mac_and_state() {
    let ns = TestNetns::new("info");
    ns.ip(&[
        "link",
        "add",
        "wfi-d1",
        "mtu",
        "1234",
        "address",
        "02:11:22:33:44:55",
        "type",
        "veth",
        "peer",
        "name",
        "wfi-d2",
    ])
    .unwrap();
    ns.ip(&["link", "set", "wfi-d1", "up"]).unwrap();
    let opened = Netns::open(ns.path()).unwrap();
    let info = weft_agent::iface::link::interface_info(&opened, "wfi-d1")
        .await
        .unwrap()
        .expect("interface exists");
    assert_eq!(info.mtu, Some(1234));
    assert_eq!(info.mac.unwrap().to_string(), "02:11:22:33:44:55");
    assert!(info.admin_up);
    assert!(info.is_veth());
    // Up, but its peer is down.
    assert_eq!(
        info.oper_state,
        weft_agent::iface::OperState::LowerLayerDown
    );
    let peer = weft_agent::iface::link::interface_info(&opened, "wfi-d2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.peer_index, Some(peer.index));
    ns.ip(&["link", "set", "wfi-d2", "up"]).unwrap();
    let info = weft_agent::iface::link::interface_info(&opened, "wfi-d1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.oper_state, weft_agent::iface::OperState::Up);
    let missing = weft_agent::iface::link::interface_info(&opened, "wfi-none")
        .await
        .unwrap();
    assert!(missing.is_none());
}

#[test]
fn ethtool_tx_checksum_in_the_namespace() {
    use weft_agent::netns::{disable_tx_checksum, tx_checksum_enabled};
    let ns = TestNetns::new("eth");
    ns.ip(&[
        "link", "add", "wfi-e1", "type", "veth", "peer", "name", "wfi-e2",
    ])
    .unwrap();
    let opened = Netns::open(ns.path()).unwrap();

    assert!(opened
        .run_blocking(|| tx_checksum_enabled("wfi-e1"))
        .unwrap()
        .unwrap());
    opened
        .run_blocking(|| disable_tx_checksum("wfi-e1"))
        .unwrap()
        .unwrap();
    assert!(!opened
        .run_blocking(|| tx_checksum_enabled("wfi-e1"))
        .unwrap()
        .unwrap());
    assert_eq!(ns.tx_checksumming("wfi-e1"), "off");
    assert_eq!(
        ns.tx_checksumming("wfi-e2"),
        "on",
        "only the named interface changes"
    );

    // The interface exists only inside the namespace: not found from the caller's.
    let err = opened
        .run_blocking(|| disable_tx_checksum("wfi-none"))
        .unwrap()
        .unwrap_err();
    match &err {
        NetnsError::Ethtool { ifname, source, .. } => {
            assert_eq!(ifname, "wfi-none");
            assert_eq!(source.raw_os_error(), Some(nix::libc::ENODEV), "{err}");
        }
        other => panic!("expected an ethtool error, got {other}"),
    }
    for bad in ["", "sixteen-chars-xx", "a\0b"] {
        let err = disable_tx_checksum(bad).unwrap_err();
        assert!(
            matches!(err, NetnsError::BadIfname { .. }),
            "{bad:?}: {err}"
        );
    }
}
