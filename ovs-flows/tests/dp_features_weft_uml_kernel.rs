//! The User-mode Linux kernel that build/uml-kernel builds (build/uml-kernel.config) offers what
//! Debian's stock UML kernel lacks for Weft's conntrack stages: zones. The fixture is
//! `ovs-appctl dpif/show-dp-features` of a `system` bridge of OVS 3.1 in a guest running that
//! kernel, written by `build/uml -- build/uml-kernel-check --dp-features FILE`
//! (docs/uml-kernel.md).

use ovs_flows::datapath::{requirements, DatapathFeatures, Feature};
use ovs_flows::flow::{Action, Ct, CtZone, Field, Flow, Match};

const WEFT: &str = include_str!("data/dp-features-system-uml-6.1-weft.txt");
const DEBIAN: &str = include_str!("data/dp-features-system-uml-6.1.txt");

/// Conntrack flows as the pipeline's conntrack stages write them: a lookup in a non-zero zone
/// with recirculation, a commit setting the connection's mark and label, and matches on them.
fn zone_flows() -> Vec<Flow> {
    let lookup = Ct {
        zone: CtZone::Imm(65520),
        table: Some(21),
        ..Ct::default()
    };
    let commit = Ct {
        commit: true,
        zone: CtZone::Imm(65520),
        exec: vec![
            Action::set_field(Field::CtMark, 0x1),
            Action::set_field(Field::CtLabel, 0x2),
        ],
        ..Ct::default()
    };
    let flow = |table, matches, actions| Flow {
        table,
        priority: 100,
        matches,
        actions,
        ..Flow::default()
    };
    vec![
        flow(20, Match::new().ip(), vec![Action::Ct(lookup.clone())]),
        flow(20, Match::new().ipv6(), vec![Action::Ct(lookup)]),
        flow(
            21,
            Match::new().ip().field(Field::CtState, 0x21),
            vec![Action::Ct(commit)],
        ),
        flow(
            21,
            Match::new()
                .ip()
                .field(Field::CtZone, 65520)
                .field(Field::CtMark, 0x1)
                .field(Field::CtLabel, 0x2),
            vec![Action::Output(1)],
        ),
    ]
}

#[test]
fn the_weft_uml_kernel_accepts_conntrack_zones_debians_does_not() {
    let weft = DatapathFeatures::parse(WEFT);
    let debian = DatapathFeatures::parse(DEBIAN);
    let needs = requirements(&zone_flows());
    assert!(needs.contains_key(&Feature::CtZone), "needs: {needs:#?}");
    assert_eq!(weft.missing(&needs), [], "needs: {needs:#?}");
    let debian_missing: Vec<Feature> = debian.missing(&needs).into_iter().map(|(f, _)| f).collect();
    assert_eq!(debian_missing, [Feature::CtZone]);
}

#[test]
fn the_weft_uml_kernel_loses_nothing_debians_has() {
    let weft = DatapathFeatures::parse(WEFT);
    let debian = DatapathFeatures::parse(DEBIAN);
    for feature in [
        Feature::Recirc,
        Feature::CtState,
        Feature::CtZone,
        Feature::CtMark,
        Feature::CtLabel,
        Feature::CtStateNat,
        Feature::CheckPktLength,
    ] {
        assert_eq!(weft.has(feature), Some(true), "{feature}");
    }
    // Same OVS, same kernel version: only the zones line differs, and the ND extension fields
    // stay a userspace-only feature.
    assert_eq!(weft.has(Feature::Ipv6NdExtension), Some(false));
    assert_eq!(debian.has(Feature::Ipv6NdExtension), Some(false));
    let differ: Vec<(&str, &str)> = WEFT
        .lines()
        .zip(DEBIAN.lines())
        .filter(|(w, d)| w != d)
        .collect();
    assert_eq!(differ, [("CT zone: Yes", "CT zone: No")]);
    assert_eq!(WEFT.lines().count(), DEBIAN.lines().count());
}
