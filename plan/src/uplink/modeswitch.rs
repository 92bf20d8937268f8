//! What a start changes when the traffic mode or the MTU plan differs from what the bridge
//! records as last applied (external_ids `weft-mode`, `weft-mtu-plan`). Pure: tested over
//! every pair of modes.
//!
//! A switch removes the old mode's ports (the tunnel port when going to noEncap), attaches or
//! detaches the uplink as the new mode wants, re-applies the plan to every managed interface
//! (every start does: gateway, tunnel, uplink and internal port `mtu_request`), and lists the
//! pods whose MTU differs from the plan (the agent's `uplink::podmtu`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::steps::Target;
use crate::mode::TrafficMode;
use crate::mtu::MtuPlan;

/// The plan as recorded in `weft-mtu-plan` (the JSON form of [`MtuPlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedPlan {
    /// Pod MTU.
    pub pod: u32,
    /// Gateway MTU.
    pub gateway: u32,
    /// Tunnel MTU (encap only).
    pub tunnel: Option<u32>,
    /// Uplink MTU.
    pub uplink: u32,
    /// Largest pod MTU of the mode.
    pub max_pod: u32,
}

impl From<MtuPlan> for RecordedPlan {
    fn from(p: MtuPlan) -> Self {
        RecordedPlan {
            pod: p.pod,
            gateway: p.gateway,
            tunnel: p.tunnel,
            uplink: p.uplink,
            max_pod: p.max_pod,
        }
    }
}

/// What the bridge says was applied last (`None`: first start, or unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// `weft-mode`, e.g. `encap/geneve` or `noEncap`.
    pub mode: Option<String>,
    /// `weft-mtu-plan`.
    pub plan: Option<RecordedPlan>,
}

impl Applied {
    /// Reads the bridge's external_ids.
    pub fn from_external_ids(
        ids: &BTreeMap<String, String>,
        mode_key: &str,
        plan_key: &str,
    ) -> Self {
        Applied {
            mode: ids.get(mode_key).cloned(),
            plan: ids
                .get(plan_key)
                .and_then(|text| serde_json::from_str(text).ok()),
        }
    }
}

/// What this start wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The traffic mode.
    pub mode: TrafficMode,
    /// The plan.
    pub plan: MtuPlan,
    /// Whether the uplink belongs on the bridge (the agent's `uplink::wanted`).
    pub uplink: bool,
}

/// One interface kind whose planned MTU changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuChange {
    /// `pod`, `gateway`, `tunnel` or `uplink`.
    pub kind: &'static str,
    /// The MTU applied last (`None`: none recorded, or the kind did not exist).
    pub from: Option<u32>,
    /// The MTU of the new plan (`None`: the kind goes away).
    pub to: Option<u32>,
}

/// What a start changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// Nothing was recorded: the first start on this bridge.
    pub first_start: bool,
    /// The mode differs from the recorded one.
    pub mode_changed: bool,
    /// The tunnel port has no place in the new mode and is removed.
    pub remove_tunnel_port: bool,
    /// Where the uplink ends up.
    pub uplink: Target,
    /// Planned MTUs that change, per kind.
    pub mtu_changes: Vec<MtuChange>,
    /// Existing pods were wired with another pod MTU: list (and maybe fix) them.
    pub pods_need_check: bool,
}

/// Plans the switch from `applied` to `wanted`. Pure.
pub fn plan_switch(applied: &Applied, wanted: &Wanted) -> Switch {
    let first_start = applied.mode.is_none() && applied.plan.is_none();
    let mode = wanted.mode.to_string();
    let mode_changed = !first_start && applied.mode.as_deref() != Some(mode.as_str());
    let new = RecordedPlan::from(wanted.plan);
    let old = applied.plan;
    let kinds: [(&'static str, Option<u32>, Option<u32>); 4] = [
        ("pod", old.map(|p| p.pod), Some(new.pod)),
        ("gateway", old.map(|p| p.gateway), Some(new.gateway)),
        ("tunnel", old.and_then(|p| p.tunnel), new.tunnel),
        ("uplink", old.map(|p| p.uplink), Some(new.uplink)),
    ];
    let mtu_changes = if first_start {
        Vec::new()
    } else {
        kinds
            .into_iter()
            .filter(|(_, from, to)| from != to)
            .map(|(kind, from, to)| MtuChange { kind, from, to })
            .collect()
    };
    Switch {
        first_start,
        mode_changed,
        remove_tunnel_port: matches!(wanted.mode, TrafficMode::NoEncap),
        uplink: if wanted.uplink {
            Target::Attached
        } else {
            Target::Detached
        },
        // Unreadable/missing records: check anyway (cheap, and the safe answer).
        pods_need_check: old.is_none_or(|p| p.pod != new.pod),
        mtu_changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::{Family, TunnelType};
    use crate::mtu::{plan, MtuInput};

    const MODES: [TrafficMode; 4] = [
        TrafficMode::Encap(TunnelType::Geneve),
        TrafficMode::Encap(TunnelType::Vxlan),
        TrafficMode::Encap(TunnelType::Gre),
        TrafficMode::NoEncap,
    ];

    fn wanted(mode: TrafficMode, transport: u32, uplink: bool) -> Wanted {
        Wanted {
            mode,
            plan: plan(&MtuInput {
                mode,
                underlay: Family::Ipv4,
                transport_mtu: transport,
                configured_mtu: 0,
            })
            .unwrap(),
            uplink,
        }
    }

    fn applied(w: &Wanted) -> Applied {
        let ids = BTreeMap::from([
            ("weft-mode".to_string(), w.mode.to_string()),
            (
                "weft-mtu-plan".to_string(),
                serde_json::to_string(&w.plan).unwrap(),
            ),
        ]);
        Applied::from_external_ids(&ids, "weft-mode", "weft-mtu-plan")
    }

    #[test]
    fn recorded_plan_reads_what_bootstrap_writes() {
        let w = wanted(TrafficMode::Encap(TunnelType::Geneve), 1500, true);
        let a = applied(&w);
        assert_eq!(a.mode.as_deref(), Some("encap/geneve"));
        assert_eq!(a.plan, Some(RecordedPlan::from(w.plan)));
    }

    #[test]
    fn every_pair_of_modes() {
        for from in MODES {
            for to in MODES {
                for uplink in [false, true] {
                    let old = wanted(from, 1500, true);
                    let new = wanted(to, 1500, uplink);
                    let s = plan_switch(&applied(&old), &new);
                    let ctx = format!("{from} -> {to} (uplink {uplink})");
                    assert!(!s.first_start, "{ctx}");
                    assert_eq!(s.mode_changed, from != to, "{ctx}");
                    assert_eq!(s.remove_tunnel_port, to == TrafficMode::NoEncap, "{ctx}");
                    assert_eq!(s.uplink == Target::Attached, uplink, "{ctx}");
                    let pod_changed = old.plan.pod != new.plan.pod;
                    assert_eq!(s.pods_need_check, pod_changed, "{ctx}");
                    // The uplink is the transport MTU in every mode: never part of a switch.
                    assert!(s.mtu_changes.iter().all(|c| c.kind != "uplink"), "{ctx}");
                    let kinds: Vec<_> = s.mtu_changes.iter().map(|c| c.kind).collect();
                    if pod_changed {
                        assert!(
                            kinds.contains(&"pod") && kinds.contains(&"gateway"),
                            "{ctx}"
                        );
                    } else {
                        assert!(!kinds.contains(&"pod"), "{ctx}");
                    }
                    let tunnel_change = s.mtu_changes.iter().find(|c| c.kind == "tunnel");
                    match (old.plan.tunnel, new.plan.tunnel) {
                        (a, b) if a == b => assert!(tunnel_change.is_none(), "{ctx}"),
                        (a, b) => assert_eq!(
                            tunnel_change,
                            Some(&MtuChange {
                                kind: "tunnel",
                                from: a,
                                to: b
                            }),
                            "{ctx}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn field_report_2_encap_to_noencap() {
        let old = wanted(TrafficMode::Encap(TunnelType::Geneve), 1500, true);
        let new = wanted(TrafficMode::NoEncap, 1500, true);
        let s = plan_switch(&applied(&old), &new);
        assert!(s.mode_changed && s.remove_tunnel_port && s.pods_need_check);
        assert_eq!(
            s.mtu_changes,
            vec![
                MtuChange {
                    kind: "pod",
                    from: Some(1450),
                    to: Some(1500)
                },
                MtuChange {
                    kind: "gateway",
                    from: Some(1450),
                    to: Some(1500)
                },
                MtuChange {
                    kind: "tunnel",
                    from: Some(1450),
                    to: None
                },
            ]
        );
        // The uplink is 1500 from the plan, not the 1450 of the old pods.
        assert_eq!(new.plan.uplink, 1500);
    }

    #[test]
    fn first_start_and_unreadable_records() {
        let new = wanted(TrafficMode::NoEncap, 9000, true);
        let s = plan_switch(&Applied::default(), &new);
        assert!(s.first_start && !s.mode_changed && s.mtu_changes.is_empty());
        assert!(s.pods_need_check);
        let garbage = Applied::from_external_ids(
            &BTreeMap::from([
                ("weft-mode".to_string(), "encap/geneve".to_string()),
                ("weft-mtu-plan".to_string(), "{not json".to_string()),
            ]),
            "weft-mode",
            "weft-mtu-plan",
        );
        let s = plan_switch(&garbage, &new);
        assert!(!s.first_start && s.mode_changed && s.pods_need_check);
        // Nothing readable recorded: every kind the new plan has counts as changed.
        let kinds: Vec<_> = s.mtu_changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["pod", "gateway", "uplink"]);
    }

    #[test]
    fn transport_mtu_change_without_mode_change() {
        let old = wanted(TrafficMode::NoEncap, 1500, true);
        let new = wanted(TrafficMode::NoEncap, 9000, true);
        let s = plan_switch(&applied(&old), &new);
        assert!(!s.mode_changed);
        let kinds: Vec<_> = s.mtu_changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["pod", "gateway", "uplink"]);
    }
}
