//! `network_policies`: the NetworkPolicy realized on this node (`weftctl get networkpolicy`):
//! every policy selecting a local pod, its compiled rules with their peers, ports, applied-to
//! pods, flow counts and counters read back from the flow stats, the pods held (no Pod object
//! yet) and the drops per direction.
//!
//! A rule's flows are its own (`conj_id`, counters) and the clause flows carrying its
//! conjunction; its sessions, packets and bytes come from the flow stats
//! (`ovs_flows::pipeline::policy::rule_counters`: sessions are the first packets through its
//! `conj_id` flow, packets and bytes those of its connections both ways, by `ct_label`).

use std::collections::BTreeMap;

use ovs_flows::ofp::FlowStatsRequest;
use ovs_flows::pipeline::policy::{self as policy_flows, PolicyFlow};
use ovs_flows::pipeline::{Category, CookieFilter};
use serde::{Deserialize, Serialize};
use weft_plan::policy::{CompiledPolicy, CompiledRule};

use super::types::TraceResult;
use super::{ApiError, ApiState};
use crate::flows::FlowSet;

/// The report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// Policies selecting at least one local pod.
    pub policies: Vec<PolicyEntry>,
    /// Local pods held (isolated both ways) until their Pod object is seen.
    pub held: Vec<String>,
    /// Local pods isolated for ingress.
    pub isolated_ingress: Vec<String>,
    /// Local pods isolated for egress.
    pub isolated_egress: Vec<String>,
    /// Policy flows installed (all rules, isolation and holds).
    pub flows: usize,
    /// Packets and bytes dropped by policy, per direction.
    pub drops: Vec<DropCounter>,
}

/// One policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Local pods it selects (`namespace/name`).
    pub applied_to: Vec<String>,
    /// Its compiled rules.
    pub rules: Vec<RuleEntry>,
}

/// One compiled rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleEntry {
    /// Rule id (conjunction id, cookie object).
    pub id: u32,
    /// `ingress` / `egress`.
    pub direction: String,
    /// Index in the policy's `spec.ingress` / `spec.egress`.
    pub index: usize,
    /// Peer prefixes.
    pub peers: Vec<String>,
    /// Ports (`TCP/80`, `UDP/1000-2000`; empty: all).
    pub ports: Vec<String>,
    /// Local pods it applies to.
    pub applied_to: Vec<String>,
    /// Flows installed for it.
    pub flows: usize,
    /// Connections it allowed.
    pub sessions: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Drops of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropCounter {
    /// `ingress` / `egress`.
    pub direction: String,
    /// Packets dropped.
    pub packets: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// A rule's counters and flow count.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    flows: usize,
    sessions: u64,
    packets: u64,
    bytes: u64,
}

impl ApiState {
    /// `network_policies`.
    pub async fn network_policies(&self) -> Result<PolicyReport, ApiError> {
        let node = self.node("networkpolicy")?;
        let policy = node.flows.installed_policy();
        let names: BTreeMap<u32, String> = node
            .flows
            .policy_pods()
            .into_iter()
            .map(|p| (p.ofport, format!("{}/{}", p.namespace, p.name)))
            .collect();
        let filter = CookieFilter::category(Category::Policy);
        let entries = node
            .flows
            .dump(&FlowStatsRequest {
                cookie: filter.cookie,
                cookie_mask: filter.mask,
                ..FlowStatsRequest::default()
            })
            .await
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        let stats = entries.iter().map(|e| {
            (
                e.flow.cookie,
                e.flow.table,
                e.stats.packet_count.unwrap_or(0),
                e.stats.byte_count.unwrap_or(0),
            )
        });
        let mut counters: BTreeMap<u32, Counters> = policy_flows::rule_counters(stats)
            .into_iter()
            .map(|(id, c)| {
                (
                    id,
                    Counters {
                        flows: 0,
                        sessions: c.sessions,
                        packets: c.packets,
                        bytes: c.bytes,
                    },
                )
            })
            .collect();
        // A rule's flows: its own (conj_id, counters) and the clause flows carrying its
        // conjunction, as the pipeline builds them from the installed policy.
        for flow in policy_flows::flows(&node.flows.node(), &policy) {
            let text = flow.to_string();
            for id in policy.rules.keys() {
                if PolicyFlow::from_cookie(flow.cookie) == Some(PolicyFlow::Rule(*id))
                    || text.contains(&format!("conjunction({id},"))
                {
                    counters.entry(*id).or_default().flows += 1;
                }
            }
        }
        let mut drops: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        for entry in &entries {
            if let Some(direction) = crate::flows::policy_drop_direction(entry.flow.cookie) {
                let slot = drops.entry(direction).or_default();
                slot.0 += entry.stats.packet_count.unwrap_or(0);
                slot.1 += entry.stats.byte_count.unwrap_or(0);
            }
        }
        Ok(report(&policy, &names, &counters, drops, entries.len()))
    }
}

fn report(
    policy: &CompiledPolicy,
    names: &BTreeMap<u32, String>,
    counters: &BTreeMap<u32, Counters>,
    drops: BTreeMap<&'static str, (u64, u64)>,
    flows: usize,
) -> PolicyReport {
    let pods = |ports: &mut dyn Iterator<Item = &u32>| -> Vec<String> {
        ports
            .map(|p| {
                names
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| format!("ofport {p}"))
            })
            .collect()
    };
    let rule_entry = |rule: &CompiledRule| {
        let c = counters.get(&rule.id);
        RuleEntry {
            id: rule.id,
            direction: rule.direction().name().to_string(),
            index: rule.key.index,
            peers: rule.peers.iter().map(ToString::to_string).collect(),
            ports: rule
                .ports
                .iter()
                .map(|p| {
                    if p.start == p.end {
                        format!("{}/{}", p.protocol, p.start)
                    } else {
                        format!("{}/{}-{}", p.protocol, p.start, p.end)
                    }
                })
                .collect(),
            applied_to: pods(&mut rule.applied_to.iter()),
            flows: c.map_or(0, |c| c.flows),
            sessions: c.map_or(0, |c| c.sessions),
            packets: c.map_or(0, |c| c.packets),
            bytes: c.map_or(0, |c| c.bytes),
        }
    };
    let policies = policy
        .applied
        .iter()
        .map(|(key, applied)| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            PolicyEntry {
                namespace: namespace.to_string(),
                name: name.to_string(),
                applied_to: pods(&mut applied.iter()),
                rules: policy
                    .rules
                    .values()
                    .filter(|r| r.key.namespace == namespace && r.key.name == name)
                    .map(rule_entry)
                    .collect(),
            }
        })
        .collect();
    PolicyReport {
        policies,
        held: pods(&mut policy.unknown.iter()),
        isolated_ingress: pods(&mut policy.isolated_ingress.iter()),
        isolated_egress: pods(&mut policy.isolated_egress.iter()),
        flows,
        drops: drops
            .into_iter()
            .map(|(direction, (packets, bytes))| DropCounter {
                direction: direction.to_string(),
                packets,
                bytes,
            })
            .collect(),
    }
}

/// The NetworkPolicy decisions of a trace, in order, from the cookies of the policy flows it
/// went through: `allowed by networkpolicy NS/NAME ingress rule N (id 0x..)`, or
/// `dropped: pod NS/NAME is isolated for egress and no rule allows it (selected by ...)`.
pub fn trace_decisions(trace: &TraceResult, flows: &FlowSet) -> Vec<String> {
    let policy = flows.installed_policy();
    let names: BTreeMap<u32, String> = flows
        .policy_pods()
        .into_iter()
        .map(|p| (p.ofport, format!("{}/{}", p.namespace, p.name)))
        .collect();
    decisions(trace, &policy, &names)
}

fn decisions(
    trace: &TraceResult,
    policy: &CompiledPolicy,
    names: &BTreeMap<u32, String>,
) -> Vec<String> {
    let pod = |ofport: u32| {
        names
            .get(&ofport)
            .cloned()
            .unwrap_or_else(|| format!("on ofport {ofport}"))
    };
    let selected_by = |ofport: u32| -> String {
        let list: Vec<&str> = policy
            .applied
            .iter()
            .filter(|(_, pods)| pods.contains(&ofport))
            .map(|(key, _)| key.as_str())
            .collect();
        if list.is_empty() {
            if policy.unknown.contains(&ofport) {
                "held: no Pod object yet".to_string()
            } else {
                "no policy".to_string()
            }
        } else {
            format!("selected by {}", list.join(", "))
        }
    };
    let mut out = Vec::new();
    for step in &trace.steps {
        let Some(cookie) = step
            .cookie
            .as_deref()
            .and_then(|c| u64::from_str_radix(c.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        let line = match PolicyFlow::from_cookie(cookie) {
            Some(PolicyFlow::Rule(id)) => match policy.rules.get(&id) {
                Some(rule) => format!(
                    "allowed by networkpolicy {}/{} {} rule {} (id {id:#x})",
                    rule.key.namespace,
                    rule.key.name,
                    rule.direction(),
                    rule.key.index
                ),
                None => format!("allowed by rule id {id:#x} (not in the installed policy)"),
            },
            Some(PolicyFlow::EgressIsolation(ofport)) => format!(
                "dropped: pod {} is isolated for egress and no rule allows it ({})",
                pod(ofport),
                selected_by(ofport)
            ),
            Some(PolicyFlow::IngressIsolation(ofport)) => format!(
                "dropped: pod {} is isolated for ingress and no rule allows it ({})",
                pod(ofport),
                selected_by(ofport)
            ),
            Some(PolicyFlow::NodeTraffic) => {
                "allowed: traffic with this node's own addresses".to_string()
            }
            Some(PolicyFlow::ServiceFirstPass) => {
                "passed to the host: a Service address, judged after the host's DNAT".to_string()
            }
            _ => continue,
        };
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// `weftctl get networkpolicy` as a table.
pub fn table(report: &PolicyReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if report.policies.is_empty() {
        out.push_str("No NetworkPolicy selects a pod of this node.\n");
    }
    for p in &report.policies {
        let _ = writeln!(
            out,
            "{}/{}  applied to: {}",
            p.namespace,
            p.name,
            p.applied_to.join(", ")
        );
        for r in &p.rules {
            let _ = writeln!(
                out,
                "  {} rule {} (id {:#x}): peers [{}] ports [{}] pods [{}] flows {} sessions {} packets {} bytes {}",
                r.direction,
                r.index,
                r.id,
                r.peers.join(", "),
                if r.ports.is_empty() { "all".to_string() } else { r.ports.join(", ") },
                r.applied_to.join(", "),
                r.flows,
                r.sessions,
                r.packets,
                r.bytes
            );
        }
        if p.rules.is_empty() {
            out.push_str("  (no rule: everything it isolates is denied)\n");
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "isolated ingress: {}", list(&report.isolated_ingress));
    let _ = writeln!(out, "isolated egress: {}", list(&report.isolated_egress));
    let _ = writeln!(out, "held (no Pod object yet): {}", list(&report.held));
    let _ = write!(out, "policy flows: {}", report.flows);
    for d in &report.drops {
        let _ = write!(
            out,
            "  dropped {}: {} packets {} bytes",
            d.direction, d.packets, d.bytes
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use weft_plan::policy::{Direction, PortRange, Protocol, RuleKey};

    #[test]
    fn report_names_pods_and_sums_rule_counters() {
        let mut policy = CompiledPolicy::default();
        policy.rules.insert(
            9,
            CompiledRule {
                id: 9,
                key: RuleKey {
                    namespace: "x".into(),
                    name: "allow".into(),
                    direction: Direction::Ingress,
                    index: 0,
                },
                peers: BTreeSet::from(["10.0.0.0/24".parse().unwrap()]),
                ports: vec![PortRange {
                    protocol: Protocol::Tcp,
                    start: 80,
                    end: 81,
                }],
                applied_to: BTreeSet::from([3]),
            },
        );
        policy.applied.insert("x/allow".into(), BTreeSet::from([3]));
        policy.isolated_ingress.insert(3);
        policy.unknown.insert(4);
        let names = BTreeMap::from([(3, "x/a".to_string())]);
        let counters = BTreeMap::from([(
            9,
            Counters {
                flows: 4,
                sessions: 2,
                packets: 7,
                bytes: 700,
            },
        )]);
        let drops = BTreeMap::from([("ingress", (5, 300))]);
        let r = report(&policy, &names, &counters, drops, 11);
        assert_eq!(r.policies.len(), 1);
        assert_eq!(r.policies[0].applied_to, ["x/a"]);
        let rule = &r.policies[0].rules[0];
        assert_eq!(rule.ports, ["TCP/80-81"]);
        assert_eq!(rule.peers, ["10.0.0.0/24"]);
        assert_eq!((rule.flows, rule.sessions, rule.packets), (4, 2, 7));
        assert_eq!(r.held, ["ofport 4"]);
        let step = |cookie: u64| crate::api::types::TraceStep {
            depth: 0,
            table: 90,
            table_name: None,
            matched: String::new(),
            priority: None,
            cookie: Some(format!("{cookie:#x}")),
            actions: Vec::new(),
        };
        let trace = TraceResult {
            bridge: "br-int".into(),
            flow: String::new(),
            steps: vec![
                step(PolicyFlow::Rule(9).cookie(1)),
                step(PolicyFlow::IngressIsolation(4).cookie(1)),
            ],
            datapath_actions: String::new(),
            verdict: String::new(),
            raw: String::new(),
            policy: Vec::new(),
        };
        assert_eq!(
            decisions(&trace, &policy, &names),
            [
                "allowed by networkpolicy x/allow ingress rule 0 (id 0x9)",
                "dropped: pod on ofport 4 is isolated for ingress and no rule allows it (held: no Pod object yet)"
            ]
        );
        let text = table(&r);
        assert!(text.contains("x/allow  applied to: x/a"), "{text}");
        assert!(
            text.contains("dropped ingress: 5 packets 300 bytes"),
            "{text}"
        );
    }
}
