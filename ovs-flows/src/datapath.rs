//! What a flow set needs from the OVS datapath, and what a datapath offers.
//!
//! ovs-vswitchd probes its datapath at start and refuses flows that need a feature the datapath
//! lacks (`ovs-appctl dpif/show-dp-features BRIDGE` lists them: the kernel module of a distribution
//! kernel may lack conntrack zones or the IPv6 ND extension fields that the userspace datapath has).
//! [`requirements`] derives the features a flow set needs from its matches and actions, so the
//! agent can compare them with [`DatapathFeatures::parse`] of the datapath's own list at start
//! and refuse with the feature's name, instead of a rejected bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::flow::{Action, CtZone, Field, Flow};

/// A datapath feature a flow can need, named as `dpif/show-dp-features` titles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Recirculation (`ct(table=N)`).
    Recirc,
    /// Conntrack (`ct`, `ct_state`).
    CtState,
    /// Conntrack zones other than 0 (`ct(zone=N)`, `ct_zone`).
    CtZone,
    /// Connection marks (`ct_mark`).
    CtMark,
    /// Connection labels (`ct_label`).
    CtLabel,
    /// Conntrack NAT (`ct(nat)`).
    CtStateNat,
    /// `set_field` on `nd_reserved` / `nd_options_type`.
    Ipv6NdExtension,
    /// `check_pkt_larger`.
    CheckPktLength,
}

impl Feature {
    /// The title ovs-vswitchd prints for the feature.
    pub fn title(self) -> &'static str {
        match self {
            Feature::Recirc => "Recirc",
            Feature::CtState => "CT state",
            Feature::CtZone => "CT zone",
            Feature::CtMark => "CT mark",
            Feature::CtLabel => "CT label",
            Feature::CtStateNat => "CT state NAT",
            Feature::Ipv6NdExtension => "IPv6 ND Extension",
            Feature::CheckPktLength => "Check pkt length action",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// The features `flows` need, each with the first flow (in `ovs-ofctl` text) that needs it.
pub fn requirements(flows: &[Flow]) -> BTreeMap<Feature, String> {
    let mut needs = BTreeMap::new();
    for flow in flows {
        let mut features = BTreeSet::new();
        for (field, _, _) in flow.matches.iter() {
            match_feature(field, &mut features);
        }
        for action in &flow.actions {
            action_features(action, &mut features);
        }
        for feature in features {
            needs.entry(feature).or_insert_with(|| flow.to_string());
        }
    }
    needs
}

fn match_feature(field: Field, out: &mut BTreeSet<Feature>) {
    match field {
        Field::CtState => {
            out.insert(Feature::CtState);
        }
        Field::CtZone => {
            out.insert(Feature::CtZone);
        }
        Field::CtMark => {
            out.insert(Feature::CtMark);
        }
        Field::CtLabel => {
            out.insert(Feature::CtLabel);
        }
        _ => {}
    }
}

fn action_features(action: &Action, out: &mut BTreeSet<Feature>) {
    match action {
        Action::SetField { field, .. } => {
            if matches!(field, Field::NdReserved | Field::NdOptionsType) {
                out.insert(Feature::Ipv6NdExtension);
            }
            match_feature(*field, out);
        }
        Action::Ct(ct) => {
            out.insert(Feature::CtState);
            if ct.table.is_some() {
                out.insert(Feature::Recirc);
            }
            if ct.zone != CtZone::Imm(0) {
                out.insert(Feature::CtZone);
            }
            if ct.nat.is_some() {
                out.insert(Feature::CtStateNat);
            }
            for inner in &ct.exec {
                action_features(inner, out);
            }
        }
        Action::CheckPktLarger { .. } => {
            out.insert(Feature::CheckPktLength);
        }
        _ => {}
    }
}

/// A datapath's features as `dpif/show-dp-features` lists them (`Title: Yes|No|<number>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathFeatures {
    values: BTreeMap<String, String>,
}

impl DatapathFeatures {
    /// Parses the text of `ovs-appctl dpif/show-dp-features BRIDGE`.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(title, value)| (title.trim().to_string(), value.trim().to_string()))
            .filter(|(title, _)| !title.is_empty())
            .collect();
        DatapathFeatures { values }
    }

    /// Whether the datapath has `feature`; `None` when the list does not mention it.
    pub fn has(&self, feature: Feature) -> Option<bool> {
        self.values.get(feature.title()).map(|v| v == "Yes")
    }

    /// The features of `needs` the datapath lacks or does not list, with the flow needing each.
    pub fn missing<'a>(&self, needs: &'a BTreeMap<Feature, String>) -> Vec<(Feature, &'a str)> {
        needs
            .iter()
            .filter(|(feature, _)| self.has(**feature) != Some(true))
            .map(|(feature, flow)| (*feature, flow.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Ct, Match, SubField};

    /// `ovs-appctl dpif/show-dp-features` of a netdev bridge, OVS 3.1 (this machine).
    const NETDEV: &str = "Masked set action: Yes\nTunnel push pop: Yes\nUfid: Yes\n\
        Truncate action: Yes\nClone action: Yes\nSample nesting: 10\nConntrack eventmask: Yes\n\
        Conntrack clear: Yes\nMax dp_hash algorithm: 1\nCheck pkt length action: Yes\n\
        Conntrack timeout policy: Yes\nExplicit Drop action: Yes\nOptimized Balance TCP mode: Yes\n\
        Conntrack all-zero IP SNAT: Yes\nMPLS Label add: Yes\nMax VLAN headers: 1\n\
        Max MPLS depth: 3\nRecirc: Yes\nCT state: Yes\nCT zone: Yes\nCT mark: Yes\n\
        CT label: Yes\nCT state NAT: Yes\nCT orig tuple: Yes\nCT orig tuple for IPv6: Yes\n\
        IPv6 ND Extension: Yes\n";

    fn flow(matches: Match, actions: Vec<Action>) -> Flow {
        Flow {
            table: 3,
            priority: 100,
            matches,
            actions,
            ..Flow::default()
        }
    }

    #[test]
    fn plain_forwarding_needs_nothing() {
        let flows = [flow(
            Match::new().ip(),
            vec![Action::DecTtl, Action::Output(1)],
        )];
        assert!(requirements(&flows).is_empty());
    }

    #[test]
    fn nd_extension_only_for_set_field_not_move() {
        let set = flow(
            Match::new().icmp6(),
            vec![Action::set_field(Field::NdReserved, 0x6000_0000)],
        );
        let needs = requirements(std::slice::from_ref(&set));
        assert_eq!(
            needs.keys().copied().collect::<Vec<_>>(),
            [Feature::Ipv6NdExtension]
        );
        assert!(needs[&Feature::Ipv6NdExtension].contains("nd_reserved"));
        let moved = flow(
            Match::new().icmp6(),
            vec![Action::move_bits(
                SubField::full(Field::Reg(1)),
                SubField::full(Field::NdReserved),
            )],
        );
        assert!(requirements(&[moved]).is_empty());
    }

    #[test]
    fn conntrack_features_follow_the_ct_action_and_matches() {
        let ct = Ct {
            zone: CtZone::Imm(7),
            table: Some(4),
            exec: vec![Action::set_field(Field::CtMark, 1)],
            commit: true,
            ..Ct::default()
        };
        let flows = [
            flow(Match::new().ip(), vec![Action::Ct(ct)]),
            flow(Match::new().ip().field(Field::CtState, 0x20), vec![]),
        ];
        let needs: Vec<_> = requirements(&flows).into_keys().collect();
        assert_eq!(
            needs,
            [
                Feature::Recirc,
                Feature::CtState,
                Feature::CtZone,
                Feature::CtMark
            ]
        );
    }

    #[test]
    fn missing_names_each_absent_or_unlisted_feature() {
        let kernel = NETDEV
            .replace("CT zone: Yes", "CT zone: No")
            .replace("IPv6 ND Extension: Yes", "IPv6 ND Extension: No");
        let features = DatapathFeatures::parse(&kernel);
        assert_eq!(features.has(Feature::CtZone), Some(false));
        assert_eq!(features.has(Feature::CtState), Some(true));
        let mut needs = BTreeMap::new();
        needs.insert(Feature::CtState, "a".to_string());
        needs.insert(Feature::CtZone, "b".to_string());
        needs.insert(Feature::Ipv6NdExtension, "c".to_string());
        assert_eq!(
            features.missing(&needs),
            [(Feature::CtZone, "b"), (Feature::Ipv6NdExtension, "c")]
        );
        assert!(DatapathFeatures::parse(NETDEV).missing(&needs).is_empty());
        assert_eq!(DatapathFeatures::parse("").missing(&needs).len(), 3);
    }
}
