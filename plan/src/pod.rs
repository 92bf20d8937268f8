//! Pure decisions about pod interfaces: host-side names, MAC addresses, name validation.
//!
//! Everything here is a deterministic function of its inputs, so an agent restart computes the
//! same names and MACs for the same pod, and it is unit-tested without root.

use crate::mac::MacAddr;

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Prefix of every host-side pod veth name, so they are easy to recognise (and to match in
/// networkd/udev rules that must leave them alone).
pub const HOST_VETH_PREFIX: &str = "wf";

/// Characters of the pod name kept in the host veth name.
const READABLE_LEN: usize = 6;

/// Characters of hash in the host veth name (base32: 5 bits each, 30 bits in all).
const HASH_LEN: usize = 6;

/// An interface name the kernel would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interface name {name:?}: {reason}")]
pub struct InvalidIfname {
    /// The name given.
    pub name: String,
    /// Why it is invalid.
    pub reason: &'static str,
}

/// Checks an interface name the way the kernel does (`dev_valid_name`): 1 to 15 bytes, not `.`
/// or `..`, no `/`, `:`, whitespace or NUL.
pub fn validate_ifname(name: &str) -> Result<(), InvalidIfname> {
    let bad = |reason: &'static str| InvalidIfname {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved name"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(bad("contains '/', ':', whitespace or NUL"));
    }
    Ok(())
}

/// The host-side veth name of an attachment, the CNI identity (container ID, ifname): `wf` + up
/// to 6 letters/digits of the pod name (for people) + `-` + 6 base32 characters of a hash of
/// `container_id/ifname` (at most 15 bytes, like Antrea's `GenerateContainerInterfaceName`).
/// Two sandboxes of one pod, or two interfaces of one sandbox, get different names, so neither
/// can ever take or remove the other's veth. A collision (30 bits among the attachments of one
/// node) makes the create fail (the agent's `IfaceError::HostNameTaken`) instead of touching the
/// other attachment's interface. The result is stable across releases: a running attachment's
/// name is also recorded on its OVS port.
pub fn host_veth_name(pod_name: &str, container_id: &str, ifname: &str) -> String {
    // '/' cannot appear in an interface name, so ("a/b", "c") and ("a", "b/c") cannot meet.
    hashed_name(pod_name, &format!("{container_id}/{ifname}"))
}

/// Whether `name` has the shape of [`host_veth_name`] (or [`legacy_host_veth_name`]): `wf`, at
/// most 6 lower-case letters or digits, `-`, 6 base32 characters. The start sweep removes host
/// veths of that shape no attachment accounts for, and nothing else.
pub fn is_host_veth_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(HOST_VETH_PREFIX) else {
        return false;
    };
    let Some((readable, suffix)) = rest.rsplit_once('-') else {
        return false;
    };
    readable.len() <= READABLE_LEN
        && readable
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && suffix.len() == HASH_LEN
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// The host-side veth name releases before 0.2 gave a pod, from `namespace/name` only (so a
/// pod's second sandbox or second interface collided with its first). Kept so that a DEL after
/// an upgrade still finds the veth of an attachment the agent no longer remembers; the veth is
/// removed only when its alias names the DEL's container ID.
pub fn legacy_host_veth_name(pod_namespace: &str, pod_name: &str) -> String {
    hashed_name(pod_name, &format!("{pod_namespace}/{pod_name}"))
}

fn hashed_name(pod_name: &str, identity: &str) -> String {
    let readable: String = pod_name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(READABLE_LEN)
        .collect();
    let mut hash = stable_hash(identity.as_bytes());
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut suffix = String::with_capacity(HASH_LEN);
    for _ in 0..HASH_LEN {
        suffix.push(char::from(ALPHABET[(hash & 31) as usize]));
        hash >>= 5;
    }
    format!("{HOST_VETH_PREFIX}{readable}-{suffix}")
}

/// A stable, locally administered, unicast MAC derived from `seed`.
pub fn stable_mac(seed: &str) -> MacAddr {
    let b = stable_hash(seed.as_bytes()).to_be_bytes();
    MacAddr([(b[2] & 0xfe) | 0x02, b[3], b[4], b[5], b[6], b[7]])
}

/// MAC of the pod end of a pod's veth.
pub fn pod_mac(container_id: &str, ifname: &str) -> MacAddr {
    stable_mac(&format!("{container_id}/{ifname}"))
}

/// MAC of the host end of a pod's veth (distinct from the pod end's).
pub fn host_mac(container_id: &str, ifname: &str) -> MacAddr {
    stable_mac(&format!("{container_id}/{ifname}/host"))
}

/// FNV-1a 64 followed by the splitmix64 finaliser: stable across Rust versions and platforms
/// (unlike `DefaultHasher`), with every output bit depending on every input byte.
fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn host_veth_names_are_recognised_and_nothing_else() {
        for (pod, cid, ifname) in [
            ("web", "c1", "eth0"),
            ("", "x", "net1"),
            ("Very-Long.Pod", "c", "e"),
        ] {
            let name = host_veth_name(pod, cid, ifname);
            assert!(is_host_veth_name(&name), "{name}");
            assert!(is_host_veth_name(&legacy_host_veth_name("ns", pod)));
        }
        for other in [
            "eth0",
            "wf",
            "wf-",
            "wfweb-12345",
            "wfweb-1234567",
            "wfweb-abcdez",
            "wfWEB-abcdef",
            "wfsevenxx-abcdef",
            "weft-gw0",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn host_name_fits_and_is_readable() {
        let name = host_veth_name("nginx-deployment-7c5ddbdf54-abcde", "0123abcd", "eth0");
        assert!(name.len() <= MAX_IFNAME_LEN, "{name}");
        assert!(name.starts_with("wfnginxd-"), "{name}");
        validate_ifname(&name).unwrap();
    }

    #[test]
    fn names_and_macs_are_stable_across_releases() {
        // Golden values: if these change, an upgraded agent no longer finds running pods' veths.
        assert_eq!(host_veth_name("web-0", "0123abcd", "eth0"), "wfweb0-l3dvi9");
        assert_eq!(
            host_veth_name("coredns-5d78c9869d-x2x4q", "0123abcd", "net1"),
            "wfcoredn-uavb74"
        );
        // Names of running pods before the (container ID, ifname) identity.
        assert_eq!(legacy_host_veth_name("default", "web-0"), "wfweb0-7ogmhj");
        assert_eq!(
            legacy_host_veth_name("kube-system", "coredns-5d78c9869d-x2x4q"),
            "wfcoredn-qcds6i"
        );
        assert_eq!(pod_mac("0123abcd", "eth0").to_string(), "d6:b2:53:2f:b4:75");
        assert_eq!(
            host_mac("0123abcd", "eth0").to_string(),
            "f6:92:a0:22:61:bc"
        );
    }

    #[test]
    fn host_name_is_per_attachment() {
        // Two sandboxes of one pod, two interfaces of one sandbox: never the same name.
        assert_ne!(
            host_veth_name("web", "sandbox1", "eth0"),
            host_veth_name("web", "sandbox2", "eth0")
        );
        assert_ne!(
            host_veth_name("web", "sandbox1", "eth0"),
            host_veth_name("web", "sandbox1", "net2")
        );
        assert_ne!(
            legacy_host_veth_name("a", "bc"),
            legacy_host_veth_name("ab", "c")
        );
        assert_ne!(
            legacy_host_veth_name("ns1", "pod"),
            legacy_host_veth_name("ns2", "pod")
        );
    }

    #[test]
    fn host_name_handles_odd_names() {
        for (ns, pod) in [
            ("", ""),
            ("default", "---"),
            ("default", "a.b.c"),
            ("default", "UPPER"),
            ("x", &"z".repeat(253)),
        ] {
            let name = host_veth_name(pod, ns, "eth0");
            assert!(name.len() <= MAX_IFNAME_LEN, "{name}");
            validate_ifname(&name).unwrap_or_else(|e| panic!("{ns}/{pod}: {e}"));
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }

    #[test]
    fn host_names_of_similar_pods_do_not_collide() {
        // 10 000 replicas of one deployment share the readable part; only the hash differs.
        let mut seen = HashSet::new();
        for i in 0..10_000 {
            let name = host_veth_name("web-5d8f9c7b6", &format!("{i:064x}"), "eth0");
            assert!(seen.insert(name.clone()), "collision at {i}: {name}");
        }
    }

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let pod = pod_mac("0123abcd", "eth0");
        let host = host_mac("0123abcd", "eth0");
        assert_eq!(pod, pod_mac("0123abcd", "eth0"));
        assert_ne!(pod, host);
        assert_ne!(pod, pod_mac("0123abcd", "net1"));
        assert_ne!(pod, pod_mac("0123abce", "eth0"));
        let mut seen = HashSet::new();
        for i in 0..10_000 {
            let mac = stable_mac(&format!("container-{i}"));
            assert!(mac.is_local_unicast(), "{mac}");
            assert!(seen.insert(mac), "duplicate {mac}");
        }
    }

    #[test]
    fn ifname_validation_matches_kernel_rules() {
        for good in [
            "eth0",
            "net1",
            "a",
            "wfweb0-ekl6sp",
            "x".repeat(15).as_str(),
        ] {
            validate_ifname(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0b",
            &"x".repeat(16),
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.name, bad, "{bad:?}: {err}");
        }
    }
}
