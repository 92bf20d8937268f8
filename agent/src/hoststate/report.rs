//! Reporting of the host-state reconciler: counters by kind (Prometheus text, rendered on the
//! agent's `/metrics` through [`crate::metrics::MetricFamilies`]), every repair recorded in the
//! agent API's repairs log ([`RepairLog`], which owns `weft_host_repairs_total`), a status
//! snapshot for the agent API, and a Kubernetes Event on the Node when drift repeats.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::Serialize;

use super::desired::RouteSpec;
use super::diff::ResolvedRoutes;
use crate::metrics::{Counter, CounterVec, Gauge, MetricFamilies};
use crate::repairs::{RepairEntry, RepairLog};

/// How many recent repairs the status keeps.
const RECENT: usize = 32;
/// Repairs of one kind within this window count as repeated drift.
const DRIFT_WINDOW: Duration = Duration::from_secs(300);
/// This many repairs of one kind within [`DRIFT_WINDOW`] raise an Event.
const DRIFT_THRESHOLD: usize = 3;
/// At most one Event per kind within this time.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// The reconciler's counters (repairs by kind are counted by the [`RepairLog`]).
#[derive(Debug)]
pub struct HostMetrics {
    /// Stale owned objects removed, by kind.
    pub stale_removed: CounterVec,
    /// Desired objects blocked by a foreign object on their key, by kind.
    pub conflicts: CounterVec,
    /// Failed operations, by kind.
    pub errors: CounterVec,
    /// Reconcile passes.
    pub passes: Counter,
    /// Periodic full resyncs.
    pub resyncs: Counter,
    /// Netlink receive buffer overruns (each followed by a full relist).
    pub overruns: Counter,
    /// Pods whose host veth has disappeared.
    pub missing_pod_veths: Gauge,
    /// Peer pod CIDRs left unrouted (no host route toward the peer's node IP).
    pub unrouted_peer_cidrs: Gauge,
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            stale_removed: CounterVec::new(
                "weft_host_stale_removed_total",
                "Stale host objects Weft owned and removed, by kind.",
                "kind",
            ),
            conflicts: CounterVec::new(
                "weft_host_conflicts_total",
                "Desired host objects blocked by a foreign object Weft leaves alone, by kind.",
                "kind",
            ),
            errors: CounterVec::new(
                "weft_host_errors_total",
                "Failed host-state operations, by kind.",
                "kind",
            ),
            passes: Counter::new(
                "weft_host_reconcile_passes_total",
                "Host-state reconcile passes.",
            ),
            resyncs: Counter::new(
                "weft_host_resyncs_total",
                "Periodic full host-state resyncs.",
            ),
            overruns: Counter::new(
                "weft_host_netlink_overruns_total",
                "Netlink event buffer overruns, each followed by a full relist.",
            ),
            missing_pod_veths: Gauge::new(
                "weft_host_missing_pod_veths",
                "Attached pods whose host veth is gone.",
            ),
            unrouted_peer_cidrs: Gauge::new(
                "weft_host_unrouted_peer_cidrs",
                "Peer pod CIDRs left unrouted: the host has no route toward the peer's node IP (noEncap).",
            ),
        }
    }
}

impl HostMetrics {
    /// Every metric in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        MetricFamilies::render(self, &mut out);
        out
    }
}

impl MetricFamilies for HostMetrics {
    fn render(&self, out: &mut String) {
        self.stale_removed.render(out);
        self.conflicts.render(out);
        self.errors.render(out);
        self.passes.render(out);
        self.resyncs.render(out);
        self.overruns.render(out);
        self.missing_pod_veths.render(out);
        self.unrouted_peer_cidrs.render(out);
    }
}

/// What the reconciler reports in agent status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// Repairs by kind since start.
    pub repairs: BTreeMap<String, u64>,
    /// The latest repairs, newest last (from the repairs log).
    pub recent: Vec<RepairEntry>,
    /// Pods whose host veth is gone (`namespace/name (veth)`).
    pub missing_pod_veths: Vec<String>,
    /// Peer pod CIDRs left unrouted (`CIDR (no host route to NODE_IP)`): noEncap peers behind a
    /// router the host has no route toward.
    pub unrouted_peers: Vec<String>,
    /// Desired objects blocked by foreign objects (left alone).
    pub conflicts: Vec<String>,
    /// Desired object counts by kind.
    pub desired: BTreeMap<String, usize>,
    /// The last failure, if the last pass failed.
    pub last_error: Option<String>,
    /// Completed passes.
    pub passes: u64,
}

/// A repeated drift, published as a Kubernetes Event on the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEvent {
    /// Kind.
    pub kind: String,
    /// Repairs of this kind within the window.
    pub count: usize,
    /// The last object repaired.
    pub object: String,
}

/// Where repeated drift goes. Must not block (called from the reconciler).
pub trait DriftSink: Send + Sync {
    /// Reports one repeated drift.
    fn repeated_drift(&self, event: DriftEvent);
}

/// Publishes repeated drift as a Warning Event `HostStateDrift` regarding the Node, through
/// kube's event recorder (which aggregates repeats into a series); other node events go out
/// through [`KubeDriftSink::publish`].
#[derive(Clone)]
pub struct KubeDriftSink {
    recorder: Recorder,
    node: ObjectReference,
}

impl KubeDriftSink {
    /// A sink for Node `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        KubeDriftSink {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "weft-agent".into(),
                    instance: Some(node.to_string()),
                },
            ),
            node: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                uid: Some(node.to_string()),
                ..ObjectReference::default()
            },
        }
    }
}

impl KubeDriftSink {
    /// Publishes a Warning Event `reason` (action `action`, message `note`) regarding the Node,
    /// in the background; a failure is logged.
    pub fn publish(&self, reason: &str, action: &str, note: String) {
        let recorder = self.recorder.clone();
        let node = self.node.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (reason, action) = (reason.to_string(), action.to_string());
        runtime.spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.clone(),
                note: Some(note),
                action,
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &node).await {
                tracing::warn!(%error, %reason, "cannot publish node event");
            }
        });
    }
}

impl DriftSink for KubeDriftSink {
    fn repeated_drift(&self, drift: DriftEvent) {
        self.publish(
            "HostStateDrift",
            "Repair",
            format!(
                "{} {} repairs in {} s, last: {}; something on the host keeps changing Weft's state (networkd? udev?)",
                drift.count,
                drift.kind,
                DRIFT_WINDOW.as_secs(),
                drift.object
            ),
        );
    }
}

impl MetricFamilies for HostReport {
    fn render(&self, out: &mut String) {
        MetricFamilies::render(&self.metrics, out);
    }
}

/// The reconciler's reporting state: metrics, repairs, status, drift tracking.
pub struct HostReport {
    /// The counters.
    pub metrics: HostMetrics,
    repairs: Arc<RepairLog>,
    /// The last link facing the underlay seen below its planned MTU (for the agent's re-plan).
    underlay: tokio::sync::watch::Sender<Option<super::links::UnderlayLowered>>,
    status: Mutex<HostStatus>,
    drift: Mutex<DriftTracker>,
    sink: Option<Box<dyn DriftSink>>,
    /// The desired routes of the last route pass and what they resolved to
    /// ([`super::diff::resolve_next_hops`]): the reconciler's events and "established" compare
    /// against the resolved routes while the desired ones are unchanged, and the API shows them.
    resolved: Mutex<(BTreeSet<RouteSpec>, ResolvedRoutes)>,
}

#[derive(Default)]
struct DriftTracker {
    repairs: HashMap<String, VecDeque<Instant>>,
    last_event: HashMap<String, Instant>,
}

impl HostReport {
    /// A report sending repeated drift to `sink`, with a repairs log of its own.
    pub fn new(sink: Option<Box<dyn DriftSink>>) -> Self {
        Self::with_repairs(sink, Arc::new(RepairLog::new()))
    }

    /// A report recording every repair in `repairs` (the agent API's log).
    pub fn with_repairs(sink: Option<Box<dyn DriftSink>>, repairs: Arc<RepairLog>) -> Self {
        HostReport {
            metrics: HostMetrics::default(),
            repairs,
            underlay: tokio::sync::watch::Sender::new(None),
            status: Mutex::new(HostStatus::default()),
            drift: Mutex::new(DriftTracker::default()),
            sink,
            resolved: Mutex::default(),
        }
    }

    /// Records that a link facing the underlay is below its planned MTU; watchers are woken
    /// only when this differs from the last one recorded (repeats of one lowering are quiet).
    pub fn underlay_lowered(&self, lowered: super::links::UnderlayLowered) {
        self.underlay.send_if_modified(|last| {
            let new = last.as_ref() != Some(&lowered);
            *last = Some(lowered);
            new
        });
    }

    /// Watches [`HostReport::underlay_lowered`].
    pub fn watch_underlay(
        &self,
    ) -> tokio::sync::watch::Receiver<Option<super::links::UnderlayLowered>> {
        self.underlay.subscribe()
    }

    /// The repairs log every repair goes to.
    pub fn repairs(&self) -> &Arc<RepairLog> {
        &self.repairs
    }

    /// A snapshot of the status.
    pub fn status(&self) -> HostStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        status.repairs = self.repairs.totals();
        status.recent = self.repairs.latest(RECENT);
        status.passes = self.metrics.passes.get();
        status
    }

    /// Records a repair: counter, status, drift tracking (and an Event when it repeats).
    pub fn repaired(&self, kind: &str, object: &str, missing_for: Option<Duration>) {
        let detail = match missing_for {
            Some(d) => format!("missing for {} ms; found by netlink event", d.as_millis()),
            None => "found by resync".to_string(),
        };
        self.repairs.record(kind, object, &detail, missing_for);
        let now = Instant::now();
        let event = {
            let mut drift = self.drift.lock().unwrap_or_else(|e| e.into_inner());
            let times = drift.repairs.entry(kind.to_string()).or_default();
            times.push_back(now);
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > DRIFT_WINDOW)
            {
                times.pop_front();
            }
            let count = times.len();
            let recent_event = drift
                .last_event
                .get(kind)
                .is_some_and(|t| now.duration_since(*t) < EVENT_INTERVAL);
            if count >= DRIFT_THRESHOLD && !recent_event {
                drift.last_event.insert(kind.to_string(), now);
                Some(DriftEvent {
                    kind: kind.to_string(),
                    count,
                    object: object.to_string(),
                })
            } else {
                None
            }
        };
        if let (Some(event), Some(sink)) = (event, &self.sink) {
            sink.repeated_drift(event);
        }
    }

    /// Replaces the status fields a pass computes.
    /// The last route pass converged `desired` on `resolved`: the routes with their next hops
    /// resolved, plus the ones left out as `unreachable` (listed in status and counted).
    pub fn routes_resolved(&self, desired: &BTreeSet<RouteSpec>, resolved: &ResolvedRoutes) {
        // One entry per CIDR (its routes in the main and Weft's table share the next hop).
        let unrouted: Vec<String> = resolved
            .unreachable
            .iter()
            .map(|r| match r.via {
                Some(via) => format!("{} (no host route to {via})", r.dst),
                None => r.dst.to_string(),
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.metrics.unrouted_peer_cidrs.set(unrouted.len() as u64);
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unrouted_peers = unrouted;
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) =
            (desired.clone(), resolved.clone());
    }

    /// The routes the last route pass converged `desired` on (next hops resolved, unreachable
    /// ones left out), if that pass resolved this very set.
    pub fn converged_routes(&self, desired: &BTreeSet<RouteSpec>) -> Option<BTreeSet<RouteSpec>> {
        let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        (resolved.0 == *desired).then(|| resolved.1.routes.clone())
    }

    /// `desired` as the last route pass resolved it (next hops toward routed peers; the
    /// unreachable ones as they are), or as it is when no pass has resolved this set yet.
    pub fn resolved_routes(&self, desired: &BTreeSet<RouteSpec>) -> BTreeSet<RouteSpec> {
        let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if resolved.0 != *desired {
            return desired.clone();
        }
        let mut shown = resolved.1.routes.clone();
        shown.extend(resolved.1.unreachable.iter().cloned());
        shown
    }

    pub fn pass_done(
        &self,
        missing_pod_veths: Vec<String>,
        conflicts: Vec<String>,
        desired: BTreeMap<String, usize>,
        error: Option<String>,
    ) {
        self.metrics.passes.inc();
        self.metrics
            .missing_pod_veths
            .set(missing_pod_veths.len() as u64);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.missing_pod_veths = missing_pod_veths;
        status.conflicts = conflicts;
        status.desired = desired;
        status.last_error = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Recording(Mutex<Vec<DriftEvent>>);

    impl DriftSink for Arc<Recording> {
        fn repeated_drift(&self, event: DriftEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[test]
    fn repairs_are_counted_listed_and_repeated_drift_raises_one_event() {
        let sink = Arc::new(Recording::default());
        let report = HostReport::new(Some(Box::new(sink.clone())));
        for i in 0..5 {
            report.repaired(
                "rule",
                &format!("rule {i}"),
                Some(Duration::from_millis(30)),
            );
        }
        report.repaired("route", "r", None);
        let status = report.status();
        assert_eq!(status.repairs["rule"], 5);
        assert_eq!(status.repairs["route"], 1);
        assert_eq!(status.recent.len(), 6);
        assert_eq!(status.recent[0].missing_for_ms, Some(30));
        let events = sink.0.lock().unwrap().clone();
        assert_eq!(
            events,
            vec![DriftEvent {
                kind: "rule".into(),
                count: 3,
                object: "rule 2".into()
            }]
        );
        let mut text = String::new();
        report.repairs().render(&mut text);
        assert!(
            text.contains("weft_host_repairs_total{kind=\"rule\"} 5"),
            "{text}"
        );
        for _ in 0..40 {
            report.repaired("sysctl", "x", None);
        }
        assert_eq!(report.status().recent.len(), RECENT);
    }

    #[test]
    fn pass_status_replaces_the_previous_one() {
        let report = HostReport::new(None);
        report.pass_done(
            vec!["default/a (wfa)".into()],
            vec![],
            BTreeMap::new(),
            None,
        );
        assert_eq!(report.metrics.missing_pod_veths.get(), 1);
        report.pass_done(vec![], vec![], BTreeMap::new(), Some("boom".into()));
        let status = report.status();
        assert!(status.missing_pod_veths.is_empty());
        assert_eq!(status.last_error.as_deref(), Some("boom"));
        assert_eq!(status.passes, 2);
    }

    #[test]
    fn resolved_routes_are_shown_and_unrouted_peers_listed_once_per_cidr() {
        let report = HostReport::new(None);
        let route = |table: u32, via: &str, dev: &str| RouteSpec {
            table,
            dst: "10.244.3.0/24".parse().unwrap(),
            metric: 0,
            via: Some(via.parse().unwrap()),
            dev: Some(dev.into()),
            onlink: false,
        };
        let desired: BTreeSet<RouteSpec> = [
            route(254, "192.168.61.12", "up"),
            route(22342, "192.168.61.12", "up"),
        ]
        .into();
        // Nothing resolved yet: shown as desired.
        assert_eq!(report.resolved_routes(&desired), desired);
        let unreachable = ResolvedRoutes {
            routes: BTreeSet::new(),
            unreachable: desired.iter().cloned().collect(),
        };
        report.routes_resolved(&desired, &unreachable);
        assert_eq!(
            report.status().unrouted_peers,
            ["10.244.3.0/24 (no host route to 192.168.61.12)"]
        );
        assert_eq!(report.metrics.unrouted_peer_cidrs.get(), 1);
        assert_eq!(report.resolved_routes(&desired), desired);
        let via_router: BTreeSet<RouteSpec> = [
            route(254, "192.168.60.1", "up"),
            route(22342, "192.168.60.1", "up"),
        ]
        .into();
        report.routes_resolved(
            &desired,
            &ResolvedRoutes {
                routes: via_router.clone(),
                unreachable: vec![],
            },
        );
        assert_eq!(report.resolved_routes(&desired), via_router);
        assert_eq!(report.converged_routes(&desired), Some(via_router.clone()));
        assert!(report.status().unrouted_peers.is_empty());
        assert_eq!(report.metrics.unrouted_peer_cidrs.get(), 0);
        // Another desired set (peers changed): shown as it is until a pass resolves it.
        let other: BTreeSet<RouteSpec> = [route(254, "192.168.61.13", "up")].into();
        assert_eq!(report.resolved_routes(&other), other);
        assert_eq!(report.converged_routes(&other), None);
    }
}
