//! The agent's Prometheus metrics: a small registry of counters and histograms that components
//! update as they work, gauges filled at scrape time, families other components own and
//! register ([`MetricFamilies`], built from [`CounterVec`], [`Counter`], [`Gauge`]), the text
//! exposition format (version 0.0.4), and a tiny HTTP/1.1 responder serving `GET /metrics` on
//! `metricsBindAddress`.
//!
//! Names (all prefixed `weft_`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weft_cni_request_duration_seconds` | histogram | `verb` (ADD, DEL, CHECK) |
//! | `weft_cni_errors_total` | counter | `verb`, `code` |
//! | `weft_pods` | gauge | |
//! | `weft_flow_op_duration_seconds` | histogram | `op` (add_pod, remove_pod, ...) |
//! | `weft_flow_ops_total` | counter | `op`, `result` (ok, error) |
//! | `weft_ovsdb_reconnects_total` | counter | |
//! | `weft_openflow_reconnects_total` | counter | |
//! | `weft_host_repairs_total` | counter | `kind` (the repairs log, [`crate::repairs`]) |
//! | `weft_host_stale_removed_total`, `weft_host_conflicts_total`, `weft_host_errors_total` | counter | `kind` |
//! | `weft_host_reconcile_passes_total`, `weft_host_resyncs_total`, `weft_host_netlink_overruns_total` | counter | |
//! | `weft_host_missing_pod_veths`, `weft_host_unrouted_peer_cidrs` | gauge | |
//! | `weft_mtu_mismatches` | gauge | |
//! | `weft_mtu_replans_total` | counter | `result` (applied, refused, failed): the underlay's MTU followed down live |
//! | `weft_kube_connected`, `weft_kube_last_contact_timestamp_seconds` | gauge | ([`crate::k8s::health`]) |
//! | `weft_kube_request_failures_total` | counter | |
//! | `weft_node_annotations_in_sync`, `weft_node_annotations_last_publish_timestamp_seconds` | gauge | |
//! | `weft_node_annotation_publishes_total` | counter | `result` (ok, error) |
//! | `weft_policy_realization_duration_seconds` | histogram | (NetworkPolicy, `node::policy`) |
//! | `weft_policy_realizations_total` | counter | `result` |
//! | `weft_policy_drops_total`, `weft_policy_drop_bytes_total` | counter | `direction` |
//! | `weft_policy_pod_object_late_total` | counter | |
//! | `weft_policy_pods_held`, `weft_policy_rules` | gauge | |
//! | `weft_mode` | gauge (1) | `mode` |
//! | `weft_ready` | gauge | |
//! | `weft_agent_info` | gauge (1) | `version`, `node`, `datapath` |
//!
//! The HTTP side reads at most 8 KiB of request head, answers one request per connection and
//! closes it; anything but `GET /metrics` gets 404 (or 405 for another method).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Histogram bucket upper bounds in seconds (1 ms to 30 s).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Largest request head the responder reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address does not parse.
    #[error("metricsBindAddress {0:?} is not HOST:PORT")]
    Address(String),
    /// The listener could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A histogram with the fixed [`BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), plus one overflow slot.
    counts: [u64; BUCKETS.len() + 1],
    /// Sum of the observed values in seconds.
    sum: f64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += secs;
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The outcome of one CNI verb as the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success.
    Ok,
    /// Failure with this CNI error code.
    Error(u32),
}

#[derive(Debug, Default)]
struct Registry {
    cni_duration: BTreeMap<String, Histogram>,
    cni_errors: BTreeMap<(String, u32), u64>,
    flow_duration: BTreeMap<String, Histogram>,
    flow_ops: BTreeMap<(String, &'static str), u64>,
    replans: BTreeMap<&'static str, u64>,
}

/// Metric families a component owns and renders itself (e.g. the host reconciler's counters,
/// the repairs log's `weft_host_repairs_total`), registered with [`Metrics::register`].
pub trait MetricFamilies: Send + Sync {
    /// Appends the families (HELP, TYPE and samples) in Prometheus text format.
    fn render(&self, out: &mut String);
}

/// The registry components update. Cheap to share (`Arc<Metrics>`); every update takes one
/// short lock.
#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    families: Mutex<Vec<Arc<dyn MetricFamilies>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("registry", &*self.registry())
            .finish_non_exhaustive()
    }
}

/// Values read at scrape time from the running agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Agent version.
    pub version: String,
    /// Node name.
    pub node: String,
    /// Datapath type.
    pub datapath: String,
    /// Whether the agent serves CNI requests.
    pub ready: bool,
    /// The applied traffic mode, once planned.
    pub mode: Option<String>,
    /// Pod attachments.
    pub pods: u64,
    /// OVSDB reconnections (connections after the first).
    pub ovsdb_reconnects: u64,
    /// OpenFlow reconnections (handshakes after the first).
    pub openflow_reconnects: u64,
    /// Managed interfaces whose MTU differs from the plan (last MTU check).
    pub mtu_mismatches: u64,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one CNI verb (`ADD`, `DEL`, `CHECK`, ...) and how it ended.
    pub fn observe_cni(&self, verb: &str, elapsed: Duration, outcome: Outcome) {
        let mut registry = self.registry();
        registry
            .cni_duration
            .entry(verb.to_string())
            .or_default()
            .observe(elapsed);
        if let Outcome::Error(code) = outcome {
            *registry
                .cni_errors
                .entry((verb.to_string(), code))
                .or_default() += 1;
        }
    }

    /// Records one flow operation (`add_pod`, `remove_pod`, ...) and whether it succeeded.
    pub fn observe_flow_op(&self, op: &str, elapsed: Duration, ok: bool) {
        let mut registry = self.registry();
        registry
            .flow_duration
            .entry(op.to_string())
            .or_default()
            .observe(elapsed);
        let result = if ok { "ok" } else { "error" };
        *registry
            .flow_ops
            .entry((op.to_string(), result))
            .or_default() += 1;
    }

    /// Records one live re-plan for a lowered underlay MTU and how it ended (`applied`,
    /// `refused`, `failed`).
    pub fn observe_replan(&self, result: &'static str) {
        *self.registry().replans.entry(result).or_default() += 1;
    }

    /// Adds `families` to every later scrape (after the registry's own).
    pub fn register(&self, families: Arc<dyn MetricFamilies>) {
        self.families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(families);
    }

    /// How many requests of `verb` were observed (for status counters and tests).
    pub fn cni_count(&self, verb: &str) -> u64 {
        self.registry()
            .cni_duration
            .get(verb)
            .map_or(0, Histogram::count)
    }

    /// CNI errors of every verb and code.
    pub fn cni_error_count(&self) -> u64 {
        self.registry().cni_errors.values().sum()
    }

    /// Flow operations of every kind.
    pub fn flow_op_count(&self) -> u64 {
        self.registry().flow_ops.values().sum()
    }

    /// The exposition text: the registry plus `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let registry = self.registry();
        let mut out = String::new();
        header(
            &mut out,
            "weft_agent_info",
            "gauge",
            "Agent version, node and datapath (always 1).",
        );
        let _ = writeln!(
            out,
            "weft_agent_info{{version=\"{}\",node=\"{}\",datapath=\"{}\"}} 1",
            escape(&gauges.version),
            escape(&gauges.node),
            escape(&gauges.datapath)
        );
        header(
            &mut out,
            "weft_ready",
            "gauge",
            "1 when the agent serves CNI requests.",
        );
        let _ = writeln!(out, "weft_ready {}", u8::from(gauges.ready));
        header(
            &mut out,
            "weft_mode",
            "gauge",
            "The applied traffic mode (always 1).",
        );
        if let Some(mode) = &gauges.mode {
            let _ = writeln!(out, "weft_mode{{mode=\"{}\"}} 1", escape(mode));
        }
        header(
            &mut out,
            "weft_pods",
            "gauge",
            "Pod attachments on this node.",
        );
        let _ = writeln!(out, "weft_pods {}", gauges.pods);

        header(
            &mut out,
            "weft_cni_request_duration_seconds",
            "histogram",
            "CNI requests served by the agent, by verb.",
        );
        for (verb, histogram) in &registry.cni_duration {
            write_histogram(
                &mut out,
                "weft_cni_request_duration_seconds",
                &format!("verb=\"{}\"", escape(verb)),
                histogram,
            );
        }
        header(
            &mut out,
            "weft_cni_errors_total",
            "counter",
            "CNI requests that failed, by verb and CNI error code.",
        );
        for ((verb, code), count) in &registry.cni_errors {
            let _ = writeln!(
                out,
                "weft_cni_errors_total{{verb=\"{}\",code=\"{code}\"}} {count}",
                escape(verb)
            );
        }
        header(
            &mut out,
            "weft_flow_op_duration_seconds",
            "histogram",
            "OpenFlow operations (one bundle each), by operation.",
        );
        for (op, histogram) in &registry.flow_duration {
            write_histogram(
                &mut out,
                "weft_flow_op_duration_seconds",
                &format!("op=\"{}\"", escape(op)),
                histogram,
            );
        }
        header(
            &mut out,
            "weft_flow_ops_total",
            "counter",
            "OpenFlow operations by operation and result.",
        );
        for ((op, result), count) in &registry.flow_ops {
            let _ = writeln!(
                out,
                "weft_flow_ops_total{{op=\"{}\",result=\"{result}\"}} {count}",
                escape(op)
            );
        }
        header(
            &mut out,
            "weft_mtu_replans_total",
            "counter",
            "Live re-plans for a lowered underlay MTU, by result.",
        );
        for (result, count) in &registry.replans {
            let _ = writeln!(out, "weft_mtu_replans_total{{result=\"{result}\"}} {count}");
        }
        header(
            &mut out,
            "weft_ovsdb_reconnects_total",
            "counter",
            "OVSDB connections after the first.",
        );
        let _ = writeln!(
            out,
            "weft_ovsdb_reconnects_total {}",
            gauges.ovsdb_reconnects
        );
        header(
            &mut out,
            "weft_openflow_reconnects_total",
            "counter",
            "OpenFlow handshakes after the first.",
        );
        let _ = writeln!(
            out,
            "weft_openflow_reconnects_total {}",
            gauges.openflow_reconnects
        );
        header(
            &mut out,
            "weft_mtu_mismatches",
            "gauge",
            "Managed interfaces whose MTU differs from the plan (last check).",
        );
        let _ = writeln!(out, "weft_mtu_mismatches {}", gauges.mtu_mismatches);
        drop(registry);
        let families: Vec<Arc<dyn MetricFamilies>> = self
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for family in families {
            family.render(&mut out);
        }
        out
    }
}

impl crate::cniserver::CniObserver for Metrics {
    fn observe(&self, verb: &'static str, elapsed: Duration, error_code: Option<u32>) {
        let outcome = error_code.map_or(Outcome::Ok, Outcome::Error);
        self.observe_cni(verb, elapsed, outcome);
    }
}

impl crate::flows::FlowObserver for Metrics {
    fn observe(&self, op: &'static str, elapsed: Duration, ok: bool) {
        self.observe_flow_op(op, elapsed, ok);
    }
}

/// Appends a family's HELP and TYPE lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends a histogram's buckets, sum and count with `labels` (`k="v"`, or empty).
pub fn write_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let (bucket, plain) = if labels.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{labels},"), format!("{{{labels}}}"))
    };
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{bucket}le=\"{bound}\"}} {cumulative}");
    }
    let total = histogram.count();
    let _ = writeln!(out, "{name}_bucket{{{bucket}le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{plain} {}", histogram.sum);
    let _ = writeln!(out, "{name}_count{plain} {total}");
}

/// A counter family with one label (e.g. `kind`), owned by a component.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Mutex<BTreeMap<String, u64>>,
}

impl CounterVec {
    /// A family named `name` with label `label`.
    pub const fn new(name: &'static str, help: &'static str, label: &'static str) -> Self {
        CounterVec {
            name,
            help,
            label,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the counter of `value`.
    pub fn inc(&self, value: &str) {
        self.add(value, 1);
    }

    /// Adds `n` to the counter of `value`.
    pub fn add(&self, value: &str, n: u64) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *values.entry(value.to_string()).or_default() += n;
    }

    /// The counter of `value` (0 if never incremented).
    pub fn get(&self, value: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.get(value).copied().unwrap_or(0)
    }

    /// Every (label value, count).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends the family in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, "counter", self.help);
        for (value, count) in self.snapshot() {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {count}",
                self.name,
                self.label,
                escape(&value)
            );
        }
    }
}

/// A counter without labels, owned by a component.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    /// A counter named `name`.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Appends the counter in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, "counter", self.help);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// A gauge without labels, owned by a component.
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Gauge {
    /// A gauge named `name`.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Gauge {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    /// Sets the value.
    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Appends the gauge in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, "gauge", self.help);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Parses `metricsBindAddress` (`HOST:PORT`, `[V6]:PORT`).
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, MetricsError> {
    text.parse()
        .map_err(|_| MetricsError::Address(text.to_string()))
}

/// Binds `addr`; the returned listener is served by [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` on `listener` forever; `render` produces the body of each scrape.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let render = Arc::clone(&render);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        answer(stream, render.as_ref()),
                    )
                    .await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the responder answers to a request head. Pure.
pub fn respond(head: &str, render: &dyn Fn() -> String) -> (u16, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => (200, "OK", render()),
        (_, "/metrics") => (405, "Method Not Allowed", "use GET\n".into()),
        _ => (404, "Not Found", "try /metrics\n".into()),
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            let reply = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            return stream.write_all(reply.as_bytes()).await;
        }
    }
    let (status, reason, body) = respond(&String::from_utf8_lossy(&head), render);
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels} value` lines of the exposition text as a map.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap();
                (name.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::default();
        metrics.observe_cni("ADD", Duration::from_millis(3), Outcome::Ok);
        metrics.observe_cni("ADD", Duration::from_millis(40), Outcome::Ok);
        metrics.observe_cni("ADD", Duration::from_secs(60), Outcome::Error(113));
        metrics.observe_cni("DEL", Duration::from_millis(1), Outcome::Ok);
        let text = metrics.render(&Gauges::default());
        let s = samples(&text);
        let b = |le: &str| {
            s[&format!("weft_cni_request_duration_seconds_bucket{{verb=\"ADD\",le=\"{le}\"}}")]
        };
        assert_eq!(b("0.001"), 0.0);
        assert_eq!(b("0.005"), 1.0);
        assert_eq!(b("0.05"), 2.0);
        assert_eq!(b("30"), 2.0);
        assert_eq!(b("+Inf"), 3.0);
        assert_eq!(
            s["weft_cni_request_duration_seconds_count{verb=\"ADD\"}"],
            3.0
        );
        let sum = s["weft_cni_request_duration_seconds_sum{verb=\"ADD\"}"];
        assert!((sum - 60.043).abs() < 1e-9, "{sum}");
        assert_eq!(s["weft_cni_errors_total{verb=\"ADD\",code=\"113\"}"], 1.0);
        assert_eq!(
            s["weft_cni_request_duration_seconds_count{verb=\"DEL\"}"],
            1.0
        );
        assert_eq!(metrics.cni_count("ADD"), 3);
        assert_eq!(metrics.cni_error_count(), 1);
    }

    #[test]
    fn gauges_flow_ops_and_repairs_render() {
        let metrics = Metrics::default();
        metrics.observe_flow_op("add_pod", Duration::from_millis(2), true);
        metrics.observe_flow_op("add_pod", Duration::from_millis(2), false);
        metrics.observe_replan("applied");
        let repairs = Arc::new(crate::repairs::RepairLog::new());
        repairs.record("rule", "from 10.244.1.0/24 lookup 22342", "re-added", None);
        metrics.register(repairs);
        let gauges = Gauges {
            version: "0.1.0".into(),
            node: "n\"1".into(),
            datapath: "netdev".into(),
            ready: true,
            mode: Some("encap/geneve".into()),
            pods: 7,
            ovsdb_reconnects: 2,
            openflow_reconnects: 1,
            mtu_mismatches: 3,
        };
        let text = metrics.render(&gauges);
        let s = samples(&text);
        assert_eq!(s["weft_ready"], 1.0);
        assert_eq!(s["weft_pods"], 7.0);
        assert_eq!(s["weft_mode{mode=\"encap/geneve\"}"], 1.0);
        assert_eq!(
            s["weft_agent_info{version=\"0.1.0\",node=\"n\\\"1\",datapath=\"netdev\"}"],
            1.0
        );
        assert_eq!(s["weft_flow_ops_total{op=\"add_pod\",result=\"ok\"}"], 1.0);
        assert_eq!(
            s["weft_flow_ops_total{op=\"add_pod\",result=\"error\"}"],
            1.0
        );
        assert_eq!(s["weft_host_repairs_total{kind=\"rule\"}"], 1.0);
        assert_eq!(s["weft_mtu_replans_total{result=\"applied\"}"], 1.0);
        assert_eq!(s["weft_host_repairs_total{kind=\"route\"}"], 0.0);
        assert_eq!(s["weft_ovsdb_reconnects_total"], 2.0);
        assert_eq!(s["weft_openflow_reconnects_total"], 1.0);
        assert_eq!(s["weft_mtu_mismatches"], 3.0);
        // Every sample's family has HELP and TYPE lines.
        for name in s.keys() {
            let family = name.split('{').next().unwrap();
            let base = family
                .strip_suffix("_bucket")
                .or_else(|| family.strip_suffix("_sum"))
                .or_else(|| family.strip_suffix("_count"))
                .unwrap_or(family);
            assert!(text.contains(&format!("# TYPE {base} ")), "{base}");
        }
    }

    #[test]
    fn component_families_render_prometheus_text() {
        let c = CounterVec::new("weft_x_total", "Things.", "kind");
        c.inc("route");
        c.add("rule", 2);
        c.inc("route");
        c.inc("we\"ird");
        let g = Gauge::new("weft_g", "A gauge.");
        g.set(7);
        let n = Counter::new("weft_n_total", "N.");
        n.inc();
        let mut out = String::new();
        c.render(&mut out);
        g.render(&mut out);
        n.render(&mut out);
        assert_eq!(
            out,
            "# HELP weft_x_total Things.\n# TYPE weft_x_total counter\n\
             weft_x_total{kind=\"route\"} 2\nweft_x_total{kind=\"rule\"} 2\n\
             weft_x_total{kind=\"we\\\"ird\"} 1\n\
             # HELP weft_g A gauge.\n# TYPE weft_g gauge\nweft_g 7\n\
             # HELP weft_n_total N.\n# TYPE weft_n_total counter\nweft_n_total 1\n"
        );
        assert_eq!(c.get("route"), 2);
        assert_eq!(c.get("none"), 0);
    }

    #[test]
    fn responder_routes_requests() {
        let render = || "body\n".to_string();
        assert_eq!(
            respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &render),
            (200, "OK", "body\n".into())
        );
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.1\r\n", &render).0, 200);
        assert_eq!(respond("POST /metrics HTTP/1.1\r\n", &render).0, 405);
        assert_eq!(respond("GET / HTTP/1.1\r\n", &render).0, 404);
        assert_eq!(respond("", &render).0, 404);
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, Arc::new(|| "weft_ready 1\n".to_string())));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        task.abort();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Length: 13\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nweft_ready 1\n"), "{reply}");
        assert!(parse_bind_address("localhost").is_err());
        assert!(parse_bind_address("[::1]:9100").is_ok());
    }
}
