//! Pod veths against the real kernel: each test makes its own "node" and "pod" namespaces, wires
//! a pod with `VethManager`, and reads the result back with `ip -j` and `ethtool`.

mod iface_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use iface_support::TestNetns;
use weft_agent::iface::{DeleteOutcome, IfaceError, Mismatch, PodRoute, PodVethSpec, VethManager};
use weft_agent::netns::Netns;

/// The pod MTU used by these tests: what an MTU plan would give for Geneve over a 1450 underlay.
const POD_MTU: u32 = 1400;

struct Setup {
    node: TestNetns,
    pod: TestNetns,
    manager: VethManager,
    pod_ns: Netns,
}

async fn setup(tag: &str) -> Setup {
    let node = TestNetns::new(&format!("{tag}n"));
    let pod = TestNetns::new(&format!("{tag}p"));
    let manager = VethManager::new(Netns::open(node.path()).unwrap())
        .await
        .unwrap();
    let pod_ns = Netns::open(pod.path()).unwrap();
    Setup {
        node,
        pod,
        manager,
        pod_ns,
    }
}

fn spec(pod_name: &str, addresses: &[&str], gateways: &[&str]) -> PodVethSpec {
    let mut spec = PodVethSpec::new(&format!("container-{pod_name}"), pod_name, "eth0", POD_MTU);
    spec.addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
    spec.routes = gateways
        .iter()
        .map(|g| PodRoute::default_via(g.parse::<IpAddr>().unwrap()))
        .collect();
    spec.disable_tx_checksum = true;
    spec
}

/// Asserts name, MAC, MTU, state, addresses, routes and checksum offload as specified.
fn assert_wired(s: &Setup, spec: &PodVethSpec) {
    // Carrier changes reach operstate through the kernel's linkwatch work, a moment later.
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.pod.addr_show("eth0").expect("pod end exists")["operstate"] != "UP"
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pod = s
        .pod
        .addr_show("eth0")
        .expect("pod end exists in pod netns");
    assert_eq!(pod["address"], spec.pod_mac.to_string());
    assert_eq!(pod["mtu"], spec.mtu);
    assert_eq!(pod["operstate"], "UP", "{pod}");
    let mut want: Vec<String> = spec.addresses.iter().map(|a| a.to_string()).collect();
    want.sort();
    assert_eq!(s.pod.global_addresses("eth0"), want);
    // IPv6 addresses are usable at once: no tentative flag (nodad). The kernel's own
    // link-local address is not checked: its DAD outcome is applied asynchronously.
    for a in pod["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
    {
        assert!(a.get("tentative").is_none(), "tentative address: {a}");
    }
    for route in &spec.routes {
        let routes = s.pod.default_routes(route.gateway.is_ipv6());
        assert!(
            routes
                .iter()
                .any(|r| r["gateway"] == route.gateway.to_string() && r["dev"] == "eth0"),
            "missing {route}: {routes:?}"
        );
    }
    assert_eq!(s.pod.tx_checksumming("eth0"), "off");

    let host = s
        .node
        .addr_show(&spec.host_ifname)
        .expect("host end exists in node netns");
    assert_eq!(host["address"], spec.host_mac.to_string());
    assert_eq!(host["mtu"], spec.mtu);
    assert_eq!(host["operstate"], "UP", "{host}");
    // The host end is a bridge port only: the host kernel must not answer the pod's ARP/ND.
    let flags: Vec<&str> = host["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(flags.contains(&"NOARP"), "host end answers ARP: {flags:?}");
    assert_eq!(host_disable_ipv6(&s.node, &spec.host_ifname), "1");
    // Nothing leaked into the other namespace.
    assert_eq!(s.node.link_names(), vec![spec.host_ifname.clone()]);
    assert_eq!(s.pod.link_names(), ["eth0"]);
}

fn host_disable_ipv6(node: &TestNetns, ifname: &str) -> String {
    let key = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    node.exec(&["cat", &key]).unwrap().trim().to_string()
}

/// Smoke tests ping the host end directly, which production never does (there the pipeline
/// answers): give it back ARP and IPv6 for the test.
fn open_host_end_for_smoke_test(node: &TestNetns, ifname: &str) {
    node.ip(&["link", "set", ifname, "arp", "on"]).unwrap();
    let key = format!("net.ipv6.conf.{ifname}.disable_ipv6=0");
    node.exec(&["sysctl", "-q", "-w", &key]).unwrap();
}

/// DF pings of exactly the MTU pass, one byte more fails locally ("message too long").
fn assert_mtu_path(pod: &TestNetns, target: &str, mtu: u32) {
    let header = if target.contains(':') { 48 } else { 28 };
    let fits = (mtu - header).to_string();
    let too_big = (mtu - header + 1).to_string();
    let ping =
        |size: &str| pod.exec(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", size, target]);
    ping(&fits).unwrap_or_else(|e| panic!("ping of {fits} bytes to {target} failed: {e:#}"));
    assert!(
        ping(&too_big).is_err(),
        "ping of {too_big} bytes to {target} passed MTU {mtu}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_pod_is_wired_as_specified() {
    let s = setup("v4").await;
    let spec = spec("web-v4", &["10.99.0.2/24"], &["10.99.0.1"]);
    let veth = s.manager.create(&s.pod_ns, &spec).await.unwrap();
    assert_eq!(veth.host_ifname, spec.host_ifname);
    assert_eq!(veth.pod_ifname, "eth0");
    assert_wired(&s, &spec);
    // The default route needs no onlink: the gateway is inside the pod's /24.
    let routes = s.pod.default_routes(false);
    let flags = routes[0]["flags"].as_array().unwrap();
    assert!(!flags.contains(&serde_json::json!("onlink")), "{routes:?}");

    // Smoke test across the veth: give the host end the gateway address.
    open_host_end_for_smoke_test(&s.node, &spec.host_ifname);
    s.node
        .ip(&["addr", "add", "10.99.0.1/24", "dev", &spec.host_ifname])
        .unwrap();
    assert_mtu_path(&s.pod, "10.99.0.1", POD_MTU);
    assert!(s.manager.check(&s.pod_ns, &spec).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pod_is_wired_without_dad() {
    let s = setup("v6").await;
    let spec = spec("web-v6", &["fd00:99::2/64"], &["fd00:99::1"]);
    // If the test process's namespace has an eth0 too, its setting must not change.
    let own_eth0 = "/proc/sys/net/ipv6/conf/eth0/accept_dad";
    let own_before = std::fs::read_to_string(own_eth0).ok();
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    assert_wired(&s, &spec);
    let dad = s
        .pod
        .exec(&["sysctl", "-n", "net.ipv6.conf.eth0.accept_dad"])
        .unwrap();
    assert_eq!(dad.trim(), "0", "DAD still on in the pod");
    assert_eq!(std::fs::read_to_string(own_eth0).ok(), own_before);
    open_host_end_for_smoke_test(&s.node, &spec.host_ifname);
    s.node
        .ip(&[
            "addr",
            "add",
            "fd00:99::1/64",
            "dev",
            &spec.host_ifname,
            "nodad",
        ])
        .unwrap();
    assert_mtu_path(&s.pod, "fd00:99::1", POD_MTU);
    assert!(s.manager.check(&s.pod_ns, &spec).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pod_is_wired_as_specified() {
    let s = setup("ds").await;
    let spec = spec(
        "web-ds",
        &["10.99.1.2/24", "fd00:99:1::2/64"],
        &["10.99.1.1", "fd00:99:1::1"],
    );
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    assert_wired(&s, &spec);
    open_host_end_for_smoke_test(&s.node, &spec.host_ifname);
    s.node
        .ip(&["addr", "add", "10.99.1.1/24", "dev", &spec.host_ifname])
        .unwrap();
    s.node
        .ip(&[
            "addr",
            "add",
            "fd00:99:1::1/64",
            "dev",
            &spec.host_ifname,
            "nodad",
        ])
        .unwrap();
    assert_mtu_path(&s.pod, "10.99.1.1", POD_MTU);
    assert_mtu_path(&s.pod, "fd00:99:1::1", POD_MTU);
    assert!(s.manager.check(&s.pod_ns, &spec).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_route_address_gets_an_onlink_default_route() {
    let s = setup("ol").await;
    let spec = spec("web-ol", &["10.99.2.2/32"], &["169.254.1.1"]);
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    let routes = s.pod.default_routes(false);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], "169.254.1.1");
    let flags = routes[0]["flags"].as_array().unwrap();
    assert!(flags.contains(&serde_json::json!("onlink")), "{routes:?}");
    assert!(s.manager.check(&s.pod_ns, &spec).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_checksum_stays_on_unless_asked() {
    let s = setup("csum").await;
    let mut spec = spec("web-csum", &["10.99.3.2/24"], &["10.99.3.1"]);
    spec.disable_tx_checksum = false;
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    assert_eq!(s.pod.tx_checksumming("eth0"), "on");
    // A spec that wants it off reports the difference.
    spec.disable_tx_checksum = true;
    let found = s.manager.check(&s.pod_ns, &spec).await.unwrap();
    assert_eq!(
        found,
        [Mismatch::TxChecksumOn {
            ifname: "eth0".into()
        }]
    );
}

/// Neither namespace holds anything but `lo`.
fn assert_empty(s: &Setup) {
    assert!(
        s.node.link_names().is_empty(),
        "node: {:?}",
        s.node.link_names()
    );
    assert!(
        s.pod.link_names().is_empty(),
        "pod: {:?}",
        s.pod.link_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_host_name_fails_cleanly() {
    let s = setup("hn").await;
    let spec = spec("web-hn", &["10.99.4.2/24"], &["10.99.4.1"]);
    s.node
        .ip(&[
            "link",
            "add",
            &spec.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            "wfi-other",
        ])
        .unwrap();
    let err = s.manager.create(&s.pod_ns, &spec).await.unwrap_err();
    assert!(matches!(err, IfaceError::HostNameTaken { .. }), "{err}");
    assert!(err.to_string().contains(&spec.host_ifname), "{err}");
    // The other interface is untouched, and the pod got nothing.
    let mut names = s.node.link_names();
    names.sort();
    let mut want = vec![spec.host_ifname.clone(), "wfi-other".to_string()];
    want.sort();
    assert_eq!(names, want);
    assert!(s.pod.link_names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_pod_name_fails_cleanly() {
    let s = setup("pn").await;
    let spec = spec("web-pn", &["10.99.5.2/24"], &["10.99.5.1"]);
    s.pod
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "wfi-peer",
        ])
        .unwrap();
    let err = s.manager.create(&s.pod_ns, &spec).await.unwrap_err();
    assert!(matches!(err, IfaceError::PodNameTaken { .. }), "{err}");
    assert!(s.node.link_names().is_empty(), "{:?}", s.node.link_names());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_create_rolls_back_both_ends() {
    let s = setup("rb").await;
    // IPv6 off in the pod: the veth is created, then adding its IPv6 address fails.
    for key in ["all", "default"] {
        s.pod
            .exec(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ])
            .unwrap();
    }
    let spec = spec(
        "web-rb",
        &["10.99.6.2/24", "fd00:99:6::2/64"],
        &["10.99.6.1", "fd00:99:6::1"],
    );
    let err = s.manager.create(&s.pod_ns, &spec).await.unwrap_err();
    match &err {
        IfaceError::Address {
            address, ifname, ..
        } => {
            assert_eq!(address.to_string(), "fd00:99:6::2/64");
            assert_eq!(ifname, "eth0");
        }
        other => panic!("expected an address error, got {other}"),
    }
    assert_empty(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_creates_nothing() {
    let s = setup("inv").await;
    let mut bad = spec("web-inv", &["10.99.7.2/24"], &["10.99.7.1"]);
    bad.pod_ifname = "this-name-is-too-long".into();
    let err = s.manager.create(&s.pod_ns, &bad).await.unwrap_err();
    assert!(matches!(err, IfaceError::InvalidName { .. }), "{err}");
    let mut bad = spec("web-inv", &["10.99.7.2/24"], &["10.99.7.1"]);
    bad.mtu = 40;
    let err = s.manager.create(&s.pod_ns, &bad).await.unwrap_err();
    assert!(
        matches!(err, IfaceError::InvalidMtu { mtu: 40, .. }),
        "{err}"
    );
    assert_empty(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent() {
    let s = setup("del").await;
    let spec = spec("web-del", &["10.99.8.2/24"], &["10.99.8.1"]);
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    let first = s
        .manager
        .delete(&spec.host_ifname, &spec.container_id)
        .await
        .unwrap();
    assert_eq!(first, DeleteOutcome::Deleted);
    assert_empty(&s);
    let second = s
        .manager
        .delete(&spec.host_ifname, &spec.container_id)
        .await
        .unwrap();
    assert_eq!(second, DeleteOutcome::AlreadyGone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_succeeds_when_the_pod_netns_is_gone() {
    let s = setup("gone").await;
    let spec = spec("web-gone", &["10.99.9.2/24"], &["10.99.9.1"]);
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    let Setup {
        node,
        pod,
        manager,
        pod_ns,
    } = s;
    drop(pod_ns);
    drop(pod); // `ip netns delete`
    let outcome = manager
        .delete(&spec.host_ifname, &spec.container_id)
        .await
        .unwrap();
    // Depending on how fast the kernel tears the namespace down, the host end is deleted by us
    // or already gone with its peer; either way nothing remains.
    assert!(
        matches!(outcome, DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone),
        "{outcome:?}"
    );
    assert!(node.link_names().is_empty(), "{:?}", node.link_names());
    assert_eq!(
        manager
            .delete(&spec.host_ifname, &spec.container_id)
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_another_containers_veth_alone() {
    let s = setup("own").await;
    let spec = spec("web-own", &["10.99.10.2/24"], &["10.99.10.1"]);
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    let outcome = s
        .manager
        .delete(&spec.host_ifname, "an-older-sandbox")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        DeleteOutcome::OwnedByOtherContainer {
            owner: spec.container_id.clone()
        }
    );
    assert_eq!(s.node.link_names(), vec![spec.host_ifname.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_mismatch() {
    let s = setup("chk").await;
    let spec = spec("web-chk", &["10.99.11.2/24"], &["10.99.11.1"]);
    s.manager.create(&s.pod_ns, &spec).await.unwrap();
    assert_eq!(s.manager.check(&s.pod_ns, &spec).await.unwrap(), []);

    s.pod.ip(&["link", "set", "eth0", "mtu", "1300"]).unwrap();
    s.pod
        .ip(&["addr", "add", "10.99.11.50/24", "dev", "eth0"])
        .unwrap();
    s.node
        .ip(&[
            "link",
            "set",
            &spec.host_ifname,
            "address",
            "02:00:00:00:00:01",
        ])
        .unwrap();
    let found = s.manager.check(&s.pod_ns, &spec).await.unwrap();
    let want = vec![
        Mismatch::Mac {
            ifname: spec.host_ifname.clone(),
            expected: spec.host_mac,
            actual: Some(weft_agent::iface::MacAddr([2, 0, 0, 0, 0, 1])),
        },
        Mismatch::Mtu {
            ifname: "eth0".into(),
            expected: POD_MTU,
            actual: Some(1300),
        },
        Mismatch::AddressUnexpected {
            ifname: "eth0".into(),
            address: "10.99.11.50/24".parse().unwrap(),
        },
    ];
    assert_eq!(found, want, "{found:#?}");

    // Removing the default route and the pod's address is reported too.
    s.pod
        .ip(&["addr", "del", "10.99.11.2/24", "dev", "eth0"])
        .unwrap();
    let found = s.manager.check(&s.pod_ns, &spec).await.unwrap();
    assert!(found.contains(&Mismatch::AddressMissing {
        ifname: "eth0".into(),
        address: "10.99.11.2/24".parse().unwrap(),
    }));
    // Deleting the address took its subnet route and so the default route via the gateway.
    assert!(found.contains(&Mismatch::RouteMissing {
        ifname: "eth0".into(),
        route: spec.routes[0],
    }));
    for m in &found {
        assert!(m.to_string().contains("eth0") || m.to_string().contains(&spec.host_ifname));
    }

    s.pod.ip(&["link", "del", "eth0"]).unwrap();
    let found = s.manager.check(&s.pod_ns, &spec).await.unwrap();
    assert_eq!(
        found,
        [
            Mismatch::HostInterfaceMissing {
                ifname: spec.host_ifname.clone()
            },
            Mismatch::PodInterfaceMissing {
                ifname: "eth0".into()
            }
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_interface_reads_mtu_mac_and_state() {
    let s = setup("hi").await;
    let spec = spec("web-hi", &["10.99.12.2/24"], &["10.99.12.1"]);
    let veth = s.manager.create(&s.pod_ns, &spec).await.unwrap();
    let info = s
        .manager
        .host_interface(&spec.host_ifname)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.index, veth.host_ifindex);
    assert_eq!(info.mtu, Some(POD_MTU));
    assert_eq!(info.mac, Some(spec.host_mac));
    assert_eq!(info.oper_state, weft_agent::iface::OperState::Up);
    assert_eq!(info.alias.as_deref(), Some(spec.container_id.as_str()));
    assert!(s
        .manager
        .host_interface("wfi-nothing")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_are_batched_and_touch_nothing_else() {
    use weft_agent::iface::reaper::DELETE_GROUP;

    let node = TestNetns::new("batn");
    let manager = VethManager::new(Netns::open(node.path()).unwrap())
        .await
        .unwrap();
    let pods: Vec<TestNetns> = (0..8).map(|i| TestNetns::new(&format!("bat{i}"))).collect();
    let mut specs = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let spec = spec(
            &format!("web-bat{i}"),
            &[&format!("10.99.{}.2/24", 40 + i)],
            &[&format!("10.99.{}.1", 40 + i)],
        );
        manager
            .create(&Netns::open(pod.path()).unwrap(), &spec)
            .await
            .unwrap();
        specs.push(spec);
    }
    // Bystanders: a veth of the node nobody deletes, and a pod veth whose owner differs.
    node.ip(&[
        "link", "add", "keepme", "type", "veth", "peer", "name", "keepme-p",
    ])
    .unwrap();
    // A veth left in the delete group by a reaper that died before deleting it.
    node.ip(&[
        "link",
        "add",
        "stranded",
        "type",
        "veth",
        "peer",
        "name",
        "stranded-p",
    ])
    .unwrap();
    node.ip(&[
        "link",
        "set",
        "stranded",
        "group",
        &DELETE_GROUP.to_string(),
    ])
    .unwrap();

    let deletes: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let manager = manager.clone();
            let name = spec.host_ifname.clone();
            // Pod 0 belongs to a newer sandbox: its DEL names another container.
            let id = if i == 0 {
                "an-older-sandbox".to_string()
            } else {
                spec.container_id.clone()
            };
            tokio::spawn(async move { manager.delete(&name, &id).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delete in deletes {
        outcomes.push(delete.await.unwrap().unwrap());
    }
    assert!(matches!(
        outcomes[0],
        DeleteOutcome::OwnedByOtherContainer { .. }
    ));
    assert!(outcomes[1..].iter().all(|o| *o == DeleteOutcome::Deleted));
    let mut left = node.link_names();
    left.sort();
    let mut want = vec![
        specs[0].host_ifname.clone(),
        "keepme".to_string(),
        "keepme-p".to_string(),
    ];
    want.sort();
    assert_eq!(left, want, "stranded group member or a batch veth left");
    for pod in &pods[1..] {
        assert!(pod.link_names().is_empty(), "{}", pod.name());
    }
    assert_eq!(pods[0].link_names(), vec!["eth0".to_string()]);
    // Deleting again: already gone, and nothing else is touched.
    assert_eq!(
        manager
            .delete(&specs[1].host_ifname, &specs[1].container_id)
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
}
