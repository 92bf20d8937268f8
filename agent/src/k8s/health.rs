//! The agent's honest view of its API server connection: whether the last request or watch
//! event succeeded, since when it has been failing, and when the Node annotations were last
//! published. Shown by `weftctl get agentinfo` (section `kubernetes`) and the metrics, and used
//! to log repeated failures with backoff instead of on every attempt ([`FailureLog`]).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::{escape, MetricFamilies};

/// After the first failure is logged at WARN, how long repeated failures stay quiet (DEBUG)
/// before the next WARN summary.
const REPEAT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Rate-limits the log of one repeated failure: the first failure and every change of its
/// message at WARN, then at most one WARN summary per [`REPEAT_WARN_EVERY`] with the number of
/// attempts, DEBUG in between; the recovery at INFO.
#[derive(Debug, Default)]
pub struct FailureLog {
    failures: u64,
    last_message: String,
    last_warn: Option<Instant>,
}

/// What [`FailureLog::failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Log at WARN.
    Warn,
    /// Log at DEBUG.
    Debug,
}

impl FailureLog {
    /// Records a failure with `message` at `now`; returns how to log it.
    pub fn failed(&mut self, message: &str, now: Instant) -> LogLevel {
        self.failures += 1;
        let changed = self.last_message != message;
        self.last_message = message.to_string();
        let due = self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= REPEAT_WARN_EVERY);
        if changed || due {
            self.last_warn = Some(now);
            LogLevel::Warn
        } else {
            LogLevel::Debug
        }
    }

    /// Records a success; returns the number of failures it ends (0: none, nothing to log).
    pub fn succeeded(&mut self) -> u64 {
        let ended = self.failures;
        *self = Self::default();
        ended
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// The `kubernetes` section of `agent_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeStatus {
    /// `connected` (the last request or watch event succeeded), `disconnected`, or `unknown`
    /// (nothing tried yet).
    pub api_server: String,
    /// Unix time of the last successful contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_contact_unix: Option<u64>,
    /// Consecutive failed requests / watch attempts.
    pub consecutive_failures: u64,
    /// The last failure's message, while disconnected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the own Node carries the annotations the agent wants.
    pub annotations_in_sync: bool,
    /// Unix time of the last successful Node annotation publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations_published_unix: Option<u64>,
    /// Successful annotation patches since start.
    pub annotation_publishes: u64,
    /// Failed annotation patches since start.
    pub annotation_failures: u64,
}

#[derive(Debug, Default)]
struct State {
    connected: Option<bool>,
    last_contact: Option<SystemTime>,
    last_error: Option<String>,
    failures: u64,
    in_sync: bool,
    published: Option<SystemTime>,
    publishes: u64,
    publish_failures: u64,
    request_failures: u64,
}

/// Shared by the Node watchers and the annotation publisher; cheap to clone (`Arc`).
#[derive(Debug, Default)]
pub struct KubeHealth {
    state: Mutex<State>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl KubeHealth {
    /// A fresh health record (API server state unknown).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A request or watch event succeeded.
    pub fn contact_ok(&self) {
        self.with(|s| {
            s.connected = Some(true);
            s.last_contact = Some(SystemTime::now());
            s.last_error = None;
            s.failures = 0;
        });
    }

    /// A request or watch attempt failed with `error`.
    pub fn contact_failed(&self, error: &str) {
        self.with(|s| {
            s.connected = Some(false);
            s.last_error = Some(error.to_string());
            s.failures += 1;
            s.request_failures += 1;
        });
    }

    /// The own Node's annotations were compared (and patched if needed): `in_sync` after it;
    /// `patched` when a patch went through.
    pub fn annotations_checked(&self, in_sync: bool, patched: bool) {
        self.with(|s| {
            s.in_sync = in_sync;
            if patched {
                s.published = Some(SystemTime::now());
                s.publishes += 1;
            }
        });
    }

    /// An annotation patch failed.
    pub fn annotations_failed(&self, error: &str) {
        self.with(|s| s.publish_failures += 1);
        self.contact_failed(error);
        self.with(|s| s.in_sync = false);
    }

    /// The current status.
    pub fn status(&self) -> KubeStatus {
        self.with(|s| KubeStatus {
            api_server: match s.connected {
                None => "unknown",
                Some(true) => "connected",
                Some(false) => "disconnected",
            }
            .to_string(),
            last_contact_unix: s.last_contact.map(unix),
            consecutive_failures: s.failures,
            last_error: s.last_error.clone(),
            annotations_in_sync: s.in_sync,
            annotations_published_unix: s.published.map(unix),
            annotation_publishes: s.publishes,
            annotation_failures: s.publish_failures,
        })
    }
}

impl MetricFamilies for KubeHealth {
    fn render(&self, out: &mut String) {
        let st = self.status();
        let request_failures = self.with(|s| s.request_failures);
        let mut family = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        family(
            "weft_kube_connected",
            "gauge",
            "1 while the last API server request or watch event succeeded.",
            u64::from(st.api_server == "connected").to_string(),
        );
        family(
            "weft_kube_last_contact_timestamp_seconds",
            "gauge",
            "Unix time of the last successful API server contact (0: never).",
            st.last_contact_unix.unwrap_or(0).to_string(),
        );
        family(
            "weft_kube_request_failures_total",
            "counter",
            "Failed API server requests and watch attempts.",
            request_failures.to_string(),
        );
        family(
            "weft_node_annotations_in_sync",
            "gauge",
            "1 while the own Node carries the annotations the agent wants.",
            u64::from(st.annotations_in_sync).to_string(),
        );
        family(
            "weft_node_annotations_last_publish_timestamp_seconds",
            "gauge",
            "Unix time of the last successful Node annotation patch (0: never).",
            st.annotations_published_unix.unwrap_or(0).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP weft_node_annotation_publishes_total Node annotation patches by result.\n\
             # TYPE weft_node_annotation_publishes_total counter\n\
             weft_node_annotation_publishes_total{{result=\"{}\"}} {}\n\
             weft_node_annotation_publishes_total{{result=\"{}\"}} {}",
            escape("ok"),
            st.annotation_publishes,
            escape("error"),
            st.annotation_failures
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_log_warns_first_on_change_and_once_a_minute() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.failed("connect refused", t0), LogLevel::Warn);
        assert_eq!(
            log.failed("connect refused", t0 + Duration::from_secs(1)),
            LogLevel::Debug
        );
        assert_eq!(
            log.failed("connect refused", t0 + Duration::from_secs(30)),
            LogLevel::Debug
        );
        assert_eq!(
            log.failed("403", t0 + Duration::from_secs(31)),
            LogLevel::Warn
        );
        assert_eq!(
            log.failed("403", t0 + Duration::from_secs(40)),
            LogLevel::Debug
        );
        assert_eq!(
            log.failed("403", t0 + Duration::from_secs(92)),
            LogLevel::Warn
        );
        assert_eq!(log.failures(), 6);
        assert_eq!(log.succeeded(), 6);
        assert_eq!(log.succeeded(), 0);
        assert_eq!(
            log.failed("403", t0 + Duration::from_secs(93)),
            LogLevel::Warn
        );
    }

    #[test]
    fn status_and_metrics_follow_contacts_and_publishes() {
        let h = KubeHealth::new();
        assert_eq!(h.status().api_server, "unknown");
        h.contact_failed("connect refused");
        h.annotations_failed("connect refused");
        let st = h.status();
        assert_eq!(st.api_server, "disconnected");
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.annotation_failures, 1);
        assert!(!st.annotations_in_sync);
        h.contact_ok();
        h.annotations_checked(true, true);
        let st = h.status();
        assert_eq!(
            (st.api_server.as_str(), st.consecutive_failures),
            ("connected", 0)
        );
        assert!(st.annotations_in_sync && st.annotations_published_unix.is_some());
        let mut out = String::new();
        MetricFamilies::render(&*h, &mut out);
        for line in [
            "weft_kube_connected 1",
            "weft_kube_request_failures_total 2",
            "weft_node_annotations_in_sync 1",
            "weft_node_annotation_publishes_total{result=\"ok\"} 1",
            "weft_node_annotation_publishes_total{result=\"error\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
