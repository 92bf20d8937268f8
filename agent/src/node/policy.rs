//! NetworkPolicy realization: on every change of the cluster view or of the local pods
//! (debounced by [`DEBOUNCE`]), compile ([`weft_plan::policy::compile`]) and install the
//! difference against what is installed in ONE bundle ([`FlowSet::apply_policy`]).
//!
//! Guarantees:
//! - Nothing is compiled before the view has listed Pods, Namespaces and NetworkPolicies once
//!   (an empty view is never mistaken for "no policy"); during an API server outage the last
//!   realized policy stays installed.
//! - Every realized policy is saved (`DATA_DIR/networkpolicy.json`) and preset into the next
//!   agent run's first bundle ([`load_saved`]), so a restart never opens an isolated pod; an
//!   ovs-vswitchd restart replays it with every other flow.
//! - A local pod without a Pod object stays isolated both ways (the compiler's `unknown`),
//!   except in a namespace that has no NetworkPolicy at all: no policy can select it there, so
//!   it is given an empty Pod record (no labels, no addresses: it still matches no peer
//!   selector until its real Pod object arrives, fail closed on the peer side).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovs_flows::pipeline::{Category, CookieFilter};
use weft_plan::policy::{compile, ClusterView, CompiledPolicy, LocalPod, PodInfo};

use crate::flows::FlowSet;
use crate::k8s::PolicyView;
use crate::metrics::{self, Histogram, MetricFamilies};

/// How long the realizer waits after a change for more changes before compiling.
pub const DEBOUNCE: Duration = Duration::from_millis(5);

/// How often installed policy counters are read back for the drop metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// How long a failed installation waits before it is retried.
const RETRY: Duration = Duration::from_secs(1);

/// The file the last realized policy is saved in, under `dataDir`.
pub const SAVED_FILE: &str = "networkpolicy.json";

/// The realizer's metrics.
#[derive(Debug, Default)]
pub struct PolicyMetrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latency: Histogram,
    realizations: BTreeMap<&'static str, u64>,
    late: u64,
    held: u64,
    drops: BTreeMap<&'static str, (u64, u64)>,
    rules: u64,
}

impl PolicyMetrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pod objects that were late (a pod held past `networkPolicyPodWait`).
    pub fn late(&self) -> u64 {
        self.inner().late
    }

    /// Realizations that installed flows.
    pub fn realizations(&self) -> u64 {
        self.inner().realizations.values().sum()
    }
}

impl MetricFamilies for PolicyMetrics {
    fn render(&self, out: &mut String) {
        let inner = self.inner();
        metrics::header(
            out,
            "weft_policy_realization_duration_seconds",
            "histogram",
            "From a cluster view or local pod change to its NetworkPolicy flows committed.",
        );
        metrics::write_histogram(
            out,
            "weft_policy_realization_duration_seconds",
            "",
            &inner.latency,
        );
        metrics::header(
            out,
            "weft_policy_realizations_total",
            "counter",
            "NetworkPolicy installations by result (ok, error).",
        );
        for (result, n) in &inner.realizations {
            let _ = writeln!(
                out,
                "weft_policy_realizations_total{{result=\"{result}\"}} {n}"
            );
        }
        metrics::header(
            out,
            "weft_policy_drops_total",
            "counter",
            "Packets dropped by NetworkPolicy (isolated pods' default drops), by direction.",
        );
        for (direction, (packets, _)) in &inner.drops {
            let _ = writeln!(
                out,
                "weft_policy_drops_total{{direction=\"{direction}\"}} {packets}"
            );
        }
        metrics::header(
            out,
            "weft_policy_drop_bytes_total",
            "counter",
            "Bytes dropped by NetworkPolicy, by direction.",
        );
        for (direction, (_, bytes)) in &inner.drops {
            let _ = writeln!(
                out,
                "weft_policy_drop_bytes_total{{direction=\"{direction}\"}} {bytes}"
            );
        }
        metrics::header(
            out,
            "weft_policy_pod_object_late_total",
            "counter",
            "New pods still held (isolated) past networkPolicyPodWait because their Pod object or policy was not there.",
        );
        let _ = writeln!(out, "weft_policy_pod_object_late_total {}", inner.late);
        metrics::header(
            out,
            "weft_policy_pods_held",
            "gauge",
            "Local pods held by policy (no Pod object yet: isolated both ways).",
        );
        let _ = writeln!(out, "weft_policy_pods_held {}", inner.held);
        metrics::header(
            out,
            "weft_policy_rules",
            "gauge",
            "Compiled NetworkPolicy rules applying to local pods.",
        );
        let _ = writeln!(out, "weft_policy_rules {}", inner.rules);
    }
}

/// Loads the policy a previous run saved in `data_dir` (none if absent or unreadable, logged).
pub fn load_saved(data_dir: &Path) -> Option<CompiledPolicy> {
    let path = data_dir.join(SAVED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the saved networkpolicy");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(policy) => Some(policy),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring the saved networkpolicy");
            None
        }
    }
}

/// The saved policy with a hold ([`crate::flows::with_hold`]) for every local pod it does not
/// know (not in its `pod_ips`: added after the last realization); returns those pods'
/// OpenFlow ports too.
pub fn preset_with_holds(
    saved: CompiledPolicy,
    local: &[ovs_flows::pipeline::LocalPod],
) -> (CompiledPolicy, Vec<u32>) {
    let mut policy = saved;
    let mut unrealized = Vec::new();
    for pod in local {
        if !policy.pod_ips.contains_key(&pod.ofport) {
            policy = crate::flows::with_hold(&policy, pod.ofport, &pod.ips);
            unrealized.push(pod.ofport);
        }
    }
    (policy, unrealized)
}

fn save(path: &Path, policy: &CompiledPolicy) {
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec(policy)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "cannot save the realized networkpolicy");
    }
}

/// The view completed for compilation: local pods without a Pod object in a namespace without
/// any NetworkPolicy get an empty Pod record (see the module documentation).
pub fn complete_view(mut view: ClusterView, local: &[LocalPod], node: &str) -> ClusterView {
    let known: BTreeSet<(String, String)> = view
        .pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    let with_policy: BTreeSet<&str> = view.policies.iter().map(|p| p.namespace.as_str()).collect();
    let extra: Vec<PodInfo> = local
        .iter()
        .filter(|p| !known.contains(&(p.namespace.clone(), p.name.clone())))
        .filter(|p| !with_policy.contains(p.namespace.as_str()))
        .map(|p| PodInfo {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels: Default::default(),
            ips: Vec::new(),
            node: node.to_string(),
            named_ports: Vec::new(),
        })
        .collect();
    view.pods.extend(extra);
    view
}

/// The realizer's inputs.
pub struct Realizer {
    /// The node's flow set.
    pub flows: FlowSet,
    /// The cluster view.
    pub view: Arc<PolicyView>,
    /// This node's name.
    pub node: String,
    /// This node's own addresses (node IPs, gateway IPs).
    pub node_ips: Vec<IpAddr>,
    /// The agent's data directory (the saved policy).
    pub data_dir: PathBuf,
    /// `networkPolicyPodWait`.
    pub pod_wait: Duration,
    /// `serviceCIDRs`.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// Metrics.
    pub metrics: Arc<PolicyMetrics>,
}

impl Realizer {
    /// Runs until its task is dropped.
    pub async fn run(self) {
        let mut view_changes = self.view.subscribe();
        let mut pod_changes = self.flows.pods_changed();
        let mut stats = tokio::time::interval(STATS_INTERVAL);
        let saved = self.data_dir.join(SAVED_FILE);
        let mut held_since: BTreeMap<u32, (Instant, bool)> = BTreeMap::new();
        let mut pending: Option<Instant> = Some(Instant::now());
        loop {
            // Bounded: at most DEBOUNCE after the first change of a batch.
            let wake = async {
                match pending {
                    Some(first) => tokio::time::sleep_until((first + DEBOUNCE).into()).await,
                    None => std::future::pending().await,
                }
            };
            // The next held pod to become late.
            let next_late = held_since
                .values()
                .filter(|(_, logged)| !logged)
                .map(|(since, _)| *since + self.pod_wait)
                .min();
            let late = async {
                match next_late {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = view_changes.changed() => {
                    if changed.is_err() { return; }
                    pending.get_or_insert_with(Instant::now);
                    continue;
                }
                changed = pod_changes.changed() => {
                    if changed.is_err() { return; }
                    pending.get_or_insert_with(Instant::now);
                    continue;
                }
                () = late => {
                    self.check_late(&mut held_since);
                    continue;
                }
                _ = stats.tick() => {
                    self.read_drops().await;
                    self.check_late(&mut held_since);
                    continue;
                }
                () = wake => {}
            }
            let Some(since) = pending.take() else {
                continue;
            };
            view_changes.borrow_and_update();
            pod_changes.borrow_and_update();
            let Some(view) = self.view.snapshot() else {
                // Not listed yet: keep what is installed (the saved policy after a restart);
                // pods held meanwhile still become late.
                let held = self.flows.installed_policy().unknown;
                let now = Instant::now();
                held_since.retain(|ofport, _| held.contains(ofport));
                for ofport in held {
                    held_since.entry(ofport).or_insert((now, false));
                }
                continue;
            };
            let local = self.flows.policy_pods();
            let view = complete_view(view, &local, &self.node);
            let mut compiled = compile(&view, &local, &self.node_ips);
            compiled.service_cidrs = self.service_cidrs.iter().copied().collect();
            let started = Instant::now();
            match self.flows.apply_policy(compiled).await {
                Ok(install) => {
                    // What is installed: the compiled policy plus the holds of pods added
                    // since it was compiled.
                    let compiled = self.flows.installed_policy();
                    let mut inner = self.metrics.inner();
                    *inner.realizations.entry("ok").or_default() += 1;
                    inner.latency.observe(since.elapsed());
                    inner.held = compiled.unknown.len() as u64;
                    inner.rules = compiled.rules.len() as u64;
                    drop(inner);
                    if install != Default::default() {
                        tracing::info!(
                            rules = compiled.rules.len(),
                            held = compiled.unknown.len(),
                            added = install.added,
                            modified = install.modified,
                            deleted = install.deleted,
                            commit_us = started.elapsed().as_micros() as u64,
                            since_event_us = since.elapsed().as_micros() as u64,
                            "networkpolicy realized"
                        );
                    }
                    save(&saved, &compiled);
                    let now = Instant::now();
                    held_since.retain(|ofport, _| compiled.unknown.contains(ofport));
                    for ofport in &compiled.unknown {
                        held_since.entry(*ofport).or_insert((now, false));
                    }
                    self.check_late(&mut held_since);
                }
                Err(error) => {
                    *self
                        .metrics
                        .inner()
                        .realizations
                        .entry("error")
                        .or_default() += 1;
                    tracing::warn!(%error, "cannot install networkpolicy flows, will retry");
                    tokio::time::sleep(RETRY).await;
                    pending = Some(since);
                }
            }
        }
    }

    /// Logs and counts pods held past `networkPolicyPodWait` (once per pod).
    fn check_late(&self, held_since: &mut BTreeMap<u32, (Instant, bool)>) {
        let pods: BTreeMap<u32, String> = self
            .flows
            .policy_pods()
            .into_iter()
            .map(|p| (p.ofport, format!("{}/{}", p.namespace, p.name)))
            .collect();
        for (ofport, (since, logged)) in held_since.iter_mut() {
            if !*logged && since.elapsed() >= self.pod_wait {
                *logged = true;
                self.metrics.inner().late += 1;
                let pod = pods.get(ofport).map_or("?", String::as_str);
                tracing::warn!(
                    %pod, ofport, wait = ?self.pod_wait, synced = self.view.synced(),
                    "pod object late: no Pod object seen for this pod yet, it stays isolated (fail closed)"
                );
            }
        }
    }

    /// Reads the drop flows' counters back into the drop metrics.
    async fn read_drops(&self) {
        if let Ok(drops) = drop_counters(&self.flows).await {
            self.metrics.inner().drops = drops;
        }
    }
}

pub use crate::flows::policy_drop_direction as drop_direction;

/// (packets, bytes) dropped by policy per direction: the counters of the isolated pods'
/// default drop flows.
pub async fn drop_counters(
    flows: &FlowSet,
) -> Result<BTreeMap<&'static str, (u64, u64)>, crate::flows::FlowError> {
    let filter = CookieFilter::category(Category::Policy);
    let entries = flows
        .dump(&ovs_flows::ofp::FlowStatsRequest {
            cookie: filter.cookie,
            cookie_mask: filter.mask,
            ..Default::default()
        })
        .await?;
    let mut out: BTreeMap<&'static str, (u64, u64)> =
        [("egress", (0, 0)), ("ingress", (0, 0))].into();
    for entry in entries {
        if let Some(direction) = drop_direction(entry.flow.cookie) {
            let slot = out.entry(direction).or_default();
            slot.0 += entry.stats.packet_count.unwrap_or(0);
            slot.1 += entry.stats.byte_count.unwrap_or(0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovs_flows::pipeline::policy::PolicyFlow;
    use weft_plan::policy::{LabelSelector, NetworkPolicy, PolicyTypes};

    fn local(ns: &str, name: &str, ofport: u32) -> LocalPod {
        LocalPod {
            namespace: ns.into(),
            name: name.into(),
            ofport,
            ips: vec![format!("10.0.0.{ofport}").parse().unwrap()],
        }
    }

    #[test]
    fn pods_without_pod_object_open_only_where_no_policy_exists() {
        let view = ClusterView {
            policies: vec![NetworkPolicy {
                namespace: "x".into(),
                name: "deny".into(),
                pod_selector: LabelSelector::everything(),
                policy_types: PolicyTypes::kubernetes_default(false),
                ingress: vec![],
                egress: vec![],
            }],
            ..ClusterView::default()
        };
        let pods = [local("default", "a", 1), local("x", "b", 2)];
        let view = complete_view(view, &pods, "n1");
        assert_eq!(view.pods.len(), 1);
        assert_eq!(view.pods[0].key(), "default/a");
        assert!(view.pods[0].ips.is_empty() && view.pods[0].labels.is_empty());
        let compiled = compile(&view, &pods, &[]);
        assert_eq!(compiled.unknown, BTreeSet::from([2]));
        assert!(!compiled.isolated_ingress.contains(&1));
        assert!(!compiled.isolated_egress.contains(&1));
    }

    #[test]
    fn pods_the_saved_policy_does_not_know_stay_held() {
        let mut saved = CompiledPolicy::default();
        saved.pod_ips.insert(1, vec!["10.0.0.1".parse().unwrap()]);
        let pod = |ofport: u32| ovs_flows::pipeline::LocalPod {
            namespace: "x".into(),
            name: format!("p{ofport}"),
            ofport,
            mac: ovs_flows::flow::MacAddr::parse("02:00:00:00:00:01").unwrap(),
            ips: vec![format!("10.0.0.{ofport}").parse().unwrap()],
        };
        let (policy, unrealized) = preset_with_holds(saved, &[pod(1), pod(2)]);
        assert_eq!(unrealized, [2]);
        assert_eq!(policy.unknown, BTreeSet::from([2]));
        assert!(policy.isolated_ingress.contains(&2) && policy.isolated_egress.contains(&2));
        assert!(!policy.unknown.contains(&1));
    }

    #[test]
    fn saved_policy_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_saved(dir.path()), None);
        let mut policy = CompiledPolicy::default();
        policy.unknown.insert(7);
        policy.isolated_ingress.insert(7);
        save(&dir.path().join(SAVED_FILE), &policy);
        assert_eq!(load_saved(dir.path()), Some(policy));
        std::fs::write(dir.path().join(SAVED_FILE), "{").unwrap();
        assert_eq!(load_saved(dir.path()), None);
    }

    #[test]
    fn drop_flows_map_to_directions() {
        assert_eq!(
            drop_direction(PolicyFlow::EgressIsolation(3).cookie(1)),
            Some("egress")
        );
        assert_eq!(
            drop_direction(PolicyFlow::IngressIsolation(3).cookie(1)),
            Some("ingress")
        );
        assert_eq!(drop_direction(PolicyFlow::Rule(9).cookie(1)), None);
    }
}
