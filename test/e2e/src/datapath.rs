//! The OVS datapath the harness's bridges and agents use, chosen once per test process by
//! `WEFT_TEST_DATAPATH`: `netdev` (userspace, the default: these machines have no OVS kernel
//! module) or `system` (OVS's kernel datapath: run the tests inside the User-mode Linux guest of
//! `build/uml`, or on a host with `openvswitch.ko`). This is the only place that reads it.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that selects the datapath.
pub const ENV: &str = "WEFT_TEST_DATAPATH";

/// An OVS datapath type, as `Bridge:datapath_type` and the agent's `ovsDatapathType` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// The userspace datapath (`datapath_type=netdev`).
    Netdev,
    /// The kernel datapath (`datapath_type=system`, openvswitch.ko).
    System,
}

impl Datapath {
    /// The datapath of this test process: `WEFT_TEST_DATAPATH`, `netdev` when unset.
    ///
    /// # Panics
    /// When the variable holds anything but `netdev` or `system`: a misconfigured run must not
    /// silently test the other datapath.
    pub fn current() -> Datapath {
        static CURRENT: OnceLock<Datapath> = OnceLock::new();
        *CURRENT.get_or_init(|| match std::env::var(ENV) {
            Err(std::env::VarError::NotPresent) => Datapath::Netdev,
            Ok(value) => Datapath::parse(&value)
                .unwrap_or_else(|| panic!("{ENV}={value:?}: expected \"netdev\" or \"system\"")),
            Err(err) => panic!("{ENV}: {err}"),
        })
    }

    /// Parses `netdev` or `system` (an empty value means the default, `netdev`).
    pub fn parse(value: &str) -> Option<Datapath> {
        match value {
            "" | "netdev" => Some(Datapath::Netdev),
            "system" => Some(Datapath::System),
            _ => None,
        }
    }

    /// The name OVSDB and the agent's config use.
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Netdev => "netdev",
            Datapath::System => "system",
        }
    }

    /// Whether the agent attaches the uplink to the bridge in encap mode: on netdev, yes
    /// (userspace tunnels need the tunnel endpoint IP on an OVS internal port); on system, no
    /// (kernel tunnel vports use the host's routing). In noEncap it is attached on both.
    pub fn attaches_uplink_in_encap(self) -> bool {
        self == Datapath::Netdev
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_datapaths_and_rejects_others() {
        assert_eq!(Datapath::parse("netdev"), Some(Datapath::Netdev));
        assert_eq!(Datapath::parse(""), Some(Datapath::Netdev));
        assert_eq!(Datapath::parse("system"), Some(Datapath::System));
        assert_eq!(Datapath::parse("kernel"), None);
        assert_eq!(Datapath::parse("System"), None);
        assert_eq!(Datapath::System.to_string(), "system");
        assert!(Datapath::Netdev.attaches_uplink_in_encap());
        assert!(!Datapath::System.attaches_uplink_in_encap());
    }
}
