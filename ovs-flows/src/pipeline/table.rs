//! The pipeline's tables, declared by name and stage in one place ([`tables::WAVE1`]); numbers
//! are assigned when the [`Registry`] is built: a stage owns a fixed block of
//! [`Stage::CAPACITY`] numbers starting at [`Stage::base`], and a table gets its stage's base plus
//! its position within the stage. Filling a reserved stage later therefore never renumbers
//! any existing table; only the `goto_table` of the table before it changes.

use std::collections::HashMap;
use std::fmt;

use super::PipelineError;

/// A stage of the pipeline, in packet order. Stages without wave-1 tables are reserved for
/// later waves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Table 0: splits ARP from IP.
    Root,
    /// ARP spoof guard and responder.
    Arp,
    /// Marks where the packet came from (pod, gateway, tunnel, uplink).
    Classifier,
    /// SpoofGuard and IPv6 neighbor discovery.
    Validation,
    /// Conntrack zone and state: every IP packet is tracked, invalid ones dropped.
    Conntrack,
    /// Reserved: Service load balancing (kube-proxy replacement).
    ServiceLb,
    /// Reserved: NetworkPolicy egress rules.
    EgressSecurity,
    /// L3 forwarding and TTL decrement.
    Routing,
    /// L2 forwarding: target port into a register.
    Switching,
    /// Reserved: NetworkPolicy ingress rules.
    IngressSecurity,
    /// Conntrack commit: new connections are committed with their origin.
    ConntrackCommit,
    /// Reserved: packet-too-big (`check_pkt_larger`, ICMP frag-needed / PTB).
    PacketTooBig,
    /// Output to the target port.
    Output,
}

impl Stage {
    /// Table numbers per stage.
    pub const CAPACITY: u8 = 10;

    /// Every stage, in packet order.
    pub const ALL: [Stage; 13] = [
        Stage::Root,
        Stage::Arp,
        Stage::Classifier,
        Stage::Validation,
        Stage::Conntrack,
        Stage::ServiceLb,
        Stage::EgressSecurity,
        Stage::Routing,
        Stage::Switching,
        Stage::IngressSecurity,
        Stage::ConntrackCommit,
        Stage::PacketTooBig,
        Stage::Output,
    ];

    /// The first table number of the stage's block.
    pub fn base(self) -> u8 {
        let index = Stage::ALL.iter().position(|s| *s == self).unwrap_or(0);
        (index as u8) * Stage::CAPACITY
    }

    /// The stage's name as documented in docs/ovs-pipeline.md.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Root => "Root",
            Stage::Arp => "Arp",
            Stage::Classifier => "Classifier",
            Stage::Validation => "Validation",
            Stage::Conntrack => "Conntrack",
            Stage::ServiceLb => "ServiceLb",
            Stage::EgressSecurity => "EgressSecurity",
            Stage::Routing => "Routing",
            Stage::Switching => "Switching",
            Stage::IngressSecurity => "IngressSecurity",
            Stage::ConntrackCommit => "ConntrackCommit",
            Stage::PacketTooBig => "PacketTooBig",
            Stage::Output => "Output",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a table does with a packet no flow matches (installed as a priority-0 flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Miss {
    /// Drop the packet.
    Drop,
    /// Continue in the next declared table.
    Next,
}

/// A table declaration: its name, its stage and its miss action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableDecl {
    /// Unique name (CamelCase, as in the docs).
    pub name: &'static str,
    /// The stage it belongs to.
    pub stage: Stage,
    /// Miss action.
    pub miss: Miss,
}

/// A declared table with its assigned number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    /// Unique name.
    pub name: &'static str,
    /// The stage it belongs to.
    pub stage: Stage,
    /// OpenFlow table number.
    pub number: u8,
    /// Miss action.
    pub miss: Miss,
}

/// The wave-1 table declarations, in packet order within each stage.
pub mod tables {
    use super::{Miss, Stage, TableDecl};

    const fn decl(name: &'static str, stage: Stage, miss: Miss) -> TableDecl {
        TableDecl { name, stage, miss }
    }

    /// Table 0: ARP to [`ARP_SPOOF_GUARD`], IPv4/IPv6 to [`CLASSIFIER`], the rest dropped.
    pub const ROOT: TableDecl = decl("PipelineRootClassifier", Stage::Root, Miss::Drop);
    /// ARP from a pod must carry the pod's own MAC and IPv4 address.
    pub const ARP_SPOOF_GUARD: TableDecl = decl("ARPSpoofGuard", Stage::Arp, Miss::Drop);
    /// Answers ARP requests for the gateway and pod IPs with the virtual MAC.
    pub const ARP_RESPONDER: TableDecl = decl("ARPResponder", Stage::Arp, Miss::Drop);
    /// Marks the source kind by ingress port.
    pub const CLASSIFIER: TableDecl = decl("Classifier", Stage::Classifier, Miss::Drop);
    /// IP from a pod must carry the pod's own MAC and IP addresses.
    pub const SPOOF_GUARD: TableDecl = decl("SpoofGuard", Stage::Validation, Miss::Drop);
    /// IPv6 neighbor discovery: solicitations for gateway and pod IPs answered with the
    /// virtual MAC, every other ND message dropped.
    pub const NEIGHBOR_DISCOVERY: TableDecl =
        decl("NeighborDiscovery", Stage::Validation, Miss::Next);
    /// Sends every IP packet through conntrack (`ct(table=ConntrackState,zone=CT_ZONE)`).
    pub const CONNTRACK_ZONE: TableDecl = decl("ConntrackZone", Stage::Conntrack, Miss::Next);
    /// Drops `+inv`; established and related packets skip the later pre-routing stages.
    pub const CONNTRACK_STATE: TableDecl = decl("ConntrackState", Stage::Conntrack, Miss::Next);
    /// NetworkPolicy egress rules (conjunctive matches) for a connection's first packet: an
    /// allowed packet skips [`EGRESS_DEFAULT`].
    pub const EGRESS_RULE: TableDecl = decl("EgressRule", Stage::EgressSecurity, Miss::Next);
    /// Drops what no egress rule allowed, for the local pods isolated for egress.
    pub const EGRESS_DEFAULT: TableDecl =
        decl("EgressDefaultRule", Stage::EgressSecurity, Miss::Next);
    /// Routing by destination IP: local pods, the gateway, peers (issue 4).
    pub const L3_FORWARDING: TableDecl = decl("L3Forwarding", Stage::Routing, Miss::Drop);
    /// Decrements the TTL / hop limit of routed packets.
    pub const L3_DEC_TTL: TableDecl = decl("L3DecTTL", Stage::Routing, Miss::Next);
    /// Target OpenFlow port by destination MAC into `reg1`.
    pub const L2_FORWARDING_CALC: TableDecl =
        decl("L2ForwardingCalc", Stage::Switching, Miss::Next);
    /// NetworkPolicy ingress rules for a connection's first packet (established and related
    /// packets pass): an allowed packet skips [`INGRESS_DEFAULT`].
    pub const INGRESS_RULE: TableDecl = decl("IngressRule", Stage::IngressSecurity, Miss::Next);
    /// Drops what no ingress rule allowed, for the local pods isolated for ingress.
    pub const INGRESS_DEFAULT: TableDecl =
        decl("IngressDefaultRule", Stage::IngressSecurity, Miss::Next);
    /// Commits new connections with their origin in `ct_mark` (and an uplink peer's MAC in
    /// `ct_label`).
    pub const CONNTRACK_COMMIT: TableDecl =
        decl("ConntrackCommit", Stage::ConntrackCommit, Miss::Next);
    /// Per-rule counters of established traffic: the egress rule id in `ct_label[0..31]`.
    pub const EGRESS_METRIC: TableDecl = decl("EgressMetric", Stage::ConntrackCommit, Miss::Next);
    /// Per-rule counters of established traffic: the ingress rule id in `ct_label[32..63]`.
    pub const INGRESS_METRIC: TableDecl = decl("IngressMetric", Stage::ConntrackCommit, Miss::Next);
    /// Outputs to the port in `reg1`.
    pub const OUTPUT: TableDecl = decl("Output", Stage::Output, Miss::Drop);

    /// Every table declared today (wave 1, the conntrack stages of issue 14, the
    /// NetworkPolicy tables of issue 15).
    pub const WAVE1: [TableDecl; 19] = [
        ROOT,
        ARP_SPOOF_GUARD,
        ARP_RESPONDER,
        CLASSIFIER,
        SPOOF_GUARD,
        NEIGHBOR_DISCOVERY,
        CONNTRACK_ZONE,
        CONNTRACK_STATE,
        EGRESS_RULE,
        EGRESS_DEFAULT,
        L3_FORWARDING,
        L3_DEC_TTL,
        L2_FORWARDING_CALC,
        INGRESS_RULE,
        INGRESS_DEFAULT,
        CONNTRACK_COMMIT,
        EGRESS_METRIC,
        INGRESS_METRIC,
        OUTPUT,
    ];
}

/// Declared tables with their numbers, in table-number order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    tables: Vec<Table>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    /// Assigns numbers to `decls`: stage base + position within the stage (declaration order).
    pub fn build(decls: &[TableDecl]) -> Result<Registry, PipelineError> {
        let mut tables: Vec<Table> = Vec::with_capacity(decls.len());
        let mut by_name = HashMap::new();
        for stage in Stage::ALL {
            let in_stage = decls.iter().filter(|d| d.stage == stage);
            for (position, decl) in in_stage.enumerate() {
                if position >= usize::from(Stage::CAPACITY) {
                    return Err(PipelineError::StageFull {
                        stage: stage.name(),
                        table: decl.name,
                    });
                }
                if by_name.insert(decl.name, tables.len()).is_some() {
                    return Err(PipelineError::DuplicateTable { table: decl.name });
                }
                tables.push(Table {
                    name: decl.name,
                    stage,
                    number: stage.base() + position as u8,
                    miss: decl.miss,
                });
            }
        }
        if tables.first().is_none_or(|t| t.stage != Stage::Root) {
            return Err(PipelineError::NoRootTable);
        }
        Ok(Registry { tables, by_name })
    }

    /// The wave-1 registry.
    pub fn wave1() -> &'static Registry {
        static WAVE1: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        WAVE1.get_or_init(|| {
            // The declarations are constants checked by a unit test; this cannot fail.
            Registry::build(&tables::WAVE1).expect("wave-1 table declarations are valid")
        })
    }

    /// Every table, in number order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The table declared as `decl`, if present.
    pub fn get(&self, decl: &TableDecl) -> Option<&Table> {
        self.by_name.get(decl.name).map(|i| &self.tables[*i])
    }

    /// The table declared as `decl`'s number (0, the root, if it is not declared).
    pub fn number(&self, decl: &TableDecl) -> u8 {
        self.get(decl).map_or(0, |t| t.number)
    }

    /// The number of the table after `decl` in packet order, if any.
    pub fn next(&self, decl: &TableDecl) -> Option<u8> {
        let i = *self.by_name.get(decl.name)?;
        self.tables.get(i + 1).map(|t| t.number)
    }
}

#[cfg(test)]
mod tests {
    use super::tables::*;
    use super::*;

    fn numbers(reg: &Registry) -> Vec<(&'static str, u8)> {
        reg.tables().iter().map(|t| (t.name, t.number)).collect()
    }

    #[test]
    fn wave1_numbers() {
        let reg = Registry::build(&WAVE1).unwrap();
        assert_eq!(
            numbers(&reg),
            vec![
                ("PipelineRootClassifier", 0),
                ("ARPSpoofGuard", 10),
                ("ARPResponder", 11),
                ("Classifier", 20),
                ("SpoofGuard", 30),
                ("NeighborDiscovery", 31),
                ("ConntrackZone", 40),
                ("ConntrackState", 41),
                ("EgressRule", 60),
                ("EgressDefaultRule", 61),
                ("L3Forwarding", 70),
                ("L3DecTTL", 71),
                ("L2ForwardingCalc", 80),
                ("IngressRule", 90),
                ("IngressDefaultRule", 91),
                ("ConntrackCommit", 100),
                ("EgressMetric", 101),
                ("IngressMetric", 102),
                ("Output", 120),
            ]
        );
        assert_eq!(reg.next(&NEIGHBOR_DISCOVERY), Some(40));
        assert_eq!(reg.next(&CONNTRACK_STATE), Some(60));
        assert_eq!(reg.next(&EGRESS_DEFAULT), Some(70));
        assert_eq!(reg.next(&L2_FORWARDING_CALC), Some(90));
        assert_eq!(reg.next(&INGRESS_DEFAULT), Some(100));
        assert_eq!(reg.next(&INGRESS_METRIC), Some(120));
        assert_eq!(reg.next(&OUTPUT), None);
        assert_eq!(&reg, Registry::wave1());
    }

    #[test]
    fn filling_reserved_stages_renumbers_nothing() {
        let later = [
            TableDecl {
                name: "ServiceLB",
                stage: Stage::ServiceLb,
                miss: Miss::Next,
            },
            TableDecl {
                name: "PacketTooBig",
                stage: Stage::PacketTooBig,
                miss: Miss::Next,
            },
        ];
        let wave1 = Registry::build(&WAVE1).unwrap();
        // Later declarations may come anywhere in the list: the stage decides.
        let mut all = later.to_vec();
        all.extend_from_slice(&WAVE1);
        let full = Registry::build(&all).unwrap();
        for t in wave1.tables() {
            assert_eq!(
                full.get(&TableDecl {
                    name: t.name,
                    stage: t.stage,
                    miss: t.miss
                })
                .map(|f| f.number),
                Some(t.number),
                "{} was renumbered",
                t.name
            );
        }
        assert_eq!(full.number(&later[0]), 50);
        assert_eq!(full.number(&later[1]), 110);
        // Only the goto of the table before a filled stage changes.
        assert_eq!(full.next(&CONNTRACK_STATE), Some(50));
        assert_eq!(full.next(&INGRESS_METRIC), Some(110));
        let numbers: Vec<u8> = full.tables().iter().map(|t| t.number).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "packet order is number order"
        );
    }

    #[test]
    fn bad_declarations_are_rejected() {
        assert_eq!(
            Registry::build(&[ROOT, ROOT]),
            Err(PipelineError::DuplicateTable {
                table: "PipelineRootClassifier"
            })
        );
        assert_eq!(Registry::build(&[OUTPUT]), Err(PipelineError::NoRootTable));
        let many: Vec<TableDecl> = std::iter::once(ROOT)
            .chain((0..11).map(|i| TableDecl {
                name: ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"][i],
                stage: Stage::Routing,
                miss: Miss::Next,
            }))
            .collect();
        assert_eq!(
            Registry::build(&many),
            Err(PipelineError::StageFull {
                stage: "Routing",
                table: "k"
            })
        );
    }
}
