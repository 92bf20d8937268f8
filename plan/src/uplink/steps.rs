//! Pure decisions of the uplink attach: the renamed NIC's name, the step lists, the snapshot of
//! the NIC taken before anything is touched, and which steps a start has to run given the
//! journal it finds ([`plan_steps`]).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Suffix of the renamed NIC: `eth0` becomes `eth0~` (the internal port takes `eth0`).
pub const RENAMED_SUFFIX: char = '~';

/// The name the NIC gets once attached: its name cut to 14 bytes (on a character boundary)
/// plus [`RENAMED_SUFFIX`], so it stays a valid Linux name (at most 15 bytes) and is derived
/// from the original name alone (a restart finds it again).
pub fn renamed_nic(original: &str) -> String {
    let mut cut = original.len().min(14);
    while !original.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{RENAMED_SUFFIX}", &original[..cut])
}

/// A route that used the NIC, as recorded before the attach moved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavedRoute {
    /// Destination prefix (`0.0.0.0/0` for a default route).
    pub destination: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Routing table id.
    pub table: u32,
    /// Metric (`RTA_PRIORITY`), if set.
    pub metric: Option<u32>,
    /// Route protocol number (`RTPROT_*`).
    pub protocol: u8,
    /// Route scope number (`RT_SCOPE_*`).
    pub scope: u8,
    /// Preferred source address, if set.
    pub pref_source: Option<IpAddr>,
    /// `onlink` flag.
    pub onlink: bool,
}

/// Everything about the NIC the attach changes, recorded before the first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NicSnapshot {
    /// Its name (the internal port takes it over).
    pub name: String,
    /// Its interface index: how the NIC is found again whatever its current name.
    pub index: u32,
    /// Its MAC (the internal port takes it over), `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its MTU before the attach.
    pub mtu: u32,
    /// Whether ARP was on.
    pub arp: bool,
    /// Its global addresses with prefix lengths.
    pub addresses: Vec<IpNet>,
    /// Its routes, kernel-made prefix routes excluded (adding the addresses recreates them).
    pub routes: Vec<SavedRoute>,
    /// `net.ipv6.conf.<nic>.disable_ipv6` before the attach (`None`: no IPv6 in the kernel).
    pub disable_ipv6: Option<String>,
    /// `net.ipv4.conf.<nic>.rp_filter` before the attach.
    pub rp_filter: Option<String>,
}

/// The steps of an attach, in order. Every step is idempotent, so running it again after a
/// crash (before or after its journal entry was written) converges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachStep {
    /// The journal holds the NIC snapshot; nothing was changed yet.
    Recorded,
    /// The uplink <-> host internal port flows are installed (before any port exists, so the
    /// host's traffic passes as soon as both ports are there).
    FlowsInstalled,
    /// The NIC is renamed to [`renamed_nic`], inert for the host stack (ARP off, IPv6 off,
    /// strict rp_filter), MTU from the plan, up.
    NicRenamed,
    /// The renamed NIC is an OVS port: ofport 32770, `mtu_request` from the plan.
    UplinkPortAdded,
    /// The internal port with the NIC's name and MAC: ofport 32771, `mtu_request`, up.
    InternalPortAdded,
    /// The NIC's addresses are on the internal port (and no longer on the NIC).
    AddressesMoved,
    /// The NIC's routes are on the internal port.
    RoutesMoved,
}

impl AttachStep {
    /// Every step, in order.
    pub const ALL: [AttachStep; 7] = [
        AttachStep::Recorded,
        AttachStep::FlowsInstalled,
        AttachStep::NicRenamed,
        AttachStep::UplinkPortAdded,
        AttachStep::InternalPortAdded,
        AttachStep::AddressesMoved,
        AttachStep::RoutesMoved,
    ];
}

/// The steps of a detach (`--restore-uplink`, or a start that no longer wants the uplink), in
/// order; idempotent like the attach steps. The journal is deleted after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetachStep {
    /// The journal says a detach is under way.
    Started,
    /// The internal port is gone from OVS and its device from the kernel.
    InternalPortRemoved,
    /// The NIC is no longer an OVS port.
    UplinkPortRemoved,
    /// The NIC has its name, MTU, ARP and sysctls back, and is up.
    NicRestored,
    /// The NIC has its addresses back.
    AddressesRestored,
    /// The NIC has its routes back.
    RoutesRestored,
}

impl DetachStep {
    /// Every step, in order.
    pub const ALL: [DetachStep; 6] = [
        DetachStep::Started,
        DetachStep::InternalPortRemoved,
        DetachStep::UplinkPortRemoved,
        DetachStep::NicRestored,
        DetachStep::AddressesRestored,
        DetachStep::RoutesRestored,
    ];
}

/// Where the node should end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The NIC in the bridge, the node's IPs and routes on the internal port.
    Attached,
    /// The NIC as it was before the attach.
    Detached,
}

/// What the journal found at start says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No journal: nothing was ever changed (the snapshot is the first thing written).
    Nothing,
    /// An attach journal, from this boot or an earlier one.
    Attach {
        /// Whether the journal was written in this boot (kernel state is as it left it).
        same_boot: bool,
    },
    /// A detach journal.
    Detach {
        /// Whether the journal was written in this boot.
        same_boot: bool,
    },
}

/// What a start does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepPlan {
    /// Nothing to do.
    Nothing,
    /// Take a fresh snapshot of the NIC (by its original name), write the journal, and run
    /// every attach step.
    FreshAttach,
    /// Run every attach step after `Recorded` again with the journal's snapshot (each is
    /// idempotent): finishes a half-done attach, undoes a half-done detach, and re-applies the
    /// plan's MTU on an attached node.
    ResumeAttach,
    /// Switch the journal to a detach with its snapshot and run every detach step.
    Detach,
    /// After a reboot the kernel forgot the attach but OVSDB still has the ports: remove the
    /// ports (detach steps that touch OVS only) and delete the journal.
    ForgetAfterReboot,
}

/// Decides what a start does from the journal found and the target. Pure.
pub fn plan_steps(found: Found, target: Target) -> StepPlan {
    match (found, target) {
        (Found::Nothing, Target::Attached) => StepPlan::FreshAttach,
        (Found::Nothing, Target::Detached) => StepPlan::Nothing,
        (Found::Attach { same_boot: true }, Target::Attached)
        | (Found::Detach { same_boot: true }, Target::Attached) => StepPlan::ResumeAttach,
        (Found::Attach { same_boot: true }, Target::Detached)
        | (Found::Detach { same_boot: true }, Target::Detached) => StepPlan::Detach,
        // A reboot reset the kernel: the NIC has its name and the host its own addresses
        // again; only OVSDB remembers. Clean OVSDB; attach afresh if wanted.
        (Found::Attach { same_boot: false }, Target::Attached)
        | (Found::Detach { same_boot: false }, Target::Attached) => StepPlan::FreshAttach,
        (Found::Attach { same_boot: false }, Target::Detached)
        | (Found::Detach { same_boot: false }, Target::Detached) => StepPlan::ForgetAfterReboot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_nic_is_deterministic_and_fits() {
        assert_eq!(renamed_nic("eth0"), "eth0~");
        assert_eq!(renamed_nic("uplink0"), "uplink0~");
        assert_eq!(renamed_nic("enp0s31f6abcdef"), "enp0s31f6abcde~");
        assert!(renamed_nic("123456789012345").len() <= 15);
        // Multi-byte characters are never split.
        let odd = "ééééééééé";
        assert!(renamed_nic(odd).len() <= 15);
        assert!(renamed_nic(odd).ends_with('~'));
        assert!(crate::pod::validate_ifname(&renamed_nic("a-fifteen-bytes")).is_ok());
    }

    #[test]
    fn steps_are_in_order() {
        let mut sorted = AttachStep::ALL;
        sorted.sort();
        assert_eq!(sorted, AttachStep::ALL);
        let mut sorted = DetachStep::ALL;
        sorted.sort();
        assert_eq!(sorted, DetachStep::ALL);
    }

    #[test]
    fn every_found_and_target() {
        use Found::*;
        use StepPlan as P;
        use Target::*;
        let cases = [
            (Nothing, Attached, P::FreshAttach),
            (Nothing, Detached, P::Nothing),
            (Attach { same_boot: true }, Attached, P::ResumeAttach),
            (Attach { same_boot: true }, Detached, P::Detach),
            (Detach { same_boot: true }, Attached, P::ResumeAttach),
            (Detach { same_boot: true }, Detached, P::Detach),
            (Attach { same_boot: false }, Attached, P::FreshAttach),
            (Attach { same_boot: false }, Detached, P::ForgetAfterReboot),
            (Detach { same_boot: false }, Attached, P::FreshAttach),
            (Detach { same_boot: false }, Detached, P::ForgetAfterReboot),
        ];
        for (found, target, want) in cases {
            assert_eq!(plan_steps(found, target), want, "{found:?} {target:?}");
        }
    }

    #[test]
    fn steps_serialize_kebab_case() {
        assert_eq!(
            serde_json::to_string(&AttachStep::UplinkPortAdded).unwrap(),
            "\"uplink-port-added\""
        );
        assert_eq!(
            serde_json::to_string(&DetachStep::NicRestored).unwrap(),
            "\"nic-restored\""
        );
    }
}
