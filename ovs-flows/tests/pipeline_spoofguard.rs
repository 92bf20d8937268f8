//! SpoofGuard on real traffic: a pod sending with another pod's IP (v4, v6, ARP) or MAC is
//! dropped by the SpoofGuard tables while its legitimate traffic keeps working.

mod pipeline_support;

use anyhow::Result;
use ovs_flows::pipeline::{tables, Registry};
use pipeline_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_ips_and_macs_are_dropped_and_legit_traffic_flows() -> Result<()> {
    let node = Node::start(2).await?;
    let reg = Registry::wave1();
    let spoof_guard = reg.number(&tables::SPOOF_GUARD);
    let arp_guard = reg.number(&tables::ARP_SPOOF_GUARD);
    let (p1, ovs) = (node.ns(1), &node.ovs);
    let legit = |what: &str| -> Result<()> {
        for (dst, src) in [(GW4.to_string(), pod_ip4(1)), (GW6.to_string(), pod_ip6(1))] {
            let stats = ping(p1, &dst, Some(&src), 3, "0.2")?;
            assert_eq!(stats.lost(), 0, "{what}: legit {src} -> {dst}: {stats:?}");
        }
        Ok(())
    };
    legit("before spoofing")?;

    // Pod 1 takes pod 2's IPv4 and IPv6 addresses as extra addresses and sends from them.
    ip(&[
        "-n",
        p1,
        "addr",
        "add",
        &format!("{}/32", pod_ip4(2)),
        "dev",
        "eth0",
    ])?;
    ip(&[
        "-n",
        p1,
        "addr",
        "add",
        &format!("{}/128", pod_ip6(2)),
        "dev",
        "eth0",
        "nodad",
    ])?;
    for dst in [GW4.to_string(), GW6.to_string()] {
        let src = if dst.contains(':') {
            pod_ip6(2)
        } else {
            pod_ip4(2)
        };
        let before = miss_packets(ovs, spoof_guard)?;
        let stats = ping(p1, &dst, Some(&src), 3, "0.2")?;
        let dropped = miss_packets(ovs, spoof_guard)? - before;
        assert_eq!(
            stats.received, 0,
            "spoofed {src} -> {dst} got through: {stats:?}"
        );
        assert!(
            dropped >= 3,
            "SpoofGuard dropped {dropped} packets from spoofed {src}"
        );
    }
    // ARP claiming pod 2's address (a request for an unresolved on-link address) is dropped.
    let before = miss_packets(ovs, arp_guard)?;
    let stats = ping(p1, "10.244.1.77", Some(&pod_ip4(2)), 2, "0.2")?;
    assert_eq!(stats.received, 0);
    let dropped = miss_packets(ovs, arp_guard)? - before;
    assert!(
        dropped >= 1,
        "ARPSpoofGuard dropped {dropped} spoofed ARP requests"
    );
    legit("while pod 1 holds spoofed addresses")?;
    let stats = ping(node.ns(2), GW4, None, 3, "0.2")?;
    assert_eq!(stats.lost(), 0, "the real owner is unaffected: {stats:?}");
    ip(&[
        "-n",
        p1,
        "addr",
        "del",
        &format!("{}/32", pod_ip4(2)),
        "dev",
        "eth0",
    ])?;
    ip(&[
        "-n",
        p1,
        "addr",
        "del",
        &format!("{}/128", pod_ip6(2)),
        "dev",
        "eth0",
    ])?;

    // Pod 1 takes pod 2's MAC: everything it sends is dropped, even from its own IPs. (The
    // kernel flushes its neighbor cache on a MAC change, so the drops are ARP/ND first.)
    let own_mac = node.pods[0].pod.mac.to_string();
    let pod2_mac = node.pods[1].pod.mac.to_string();
    ip(&["-n", p1, "link", "set", "eth0", "address", &pod2_mac])?;
    let guards =
        || -> Result<u64> { Ok(miss_packets(ovs, spoof_guard)? + miss_packets(ovs, arp_guard)?) };
    for dst in [GW4.to_string(), GW6.to_string()] {
        let before = guards()?;
        let stats = ping(p1, &dst, None, 3, "0.2")?;
        let dropped = guards()? - before;
        assert_eq!(
            stats.received, 0,
            "pod 1 with pod 2's MAC reached {dst}: {stats:?}"
        );
        assert!(
            dropped >= 2,
            "the guards dropped {dropped} packets with a spoofed MAC"
        );
    }
    ip(&["-n", p1, "link", "set", "eth0", "address", &own_mac])?;
    legit("after restoring the MAC")?;
    Ok(())
}
