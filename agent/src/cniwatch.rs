//! The agent owns its conflist (issue 13 part 4): with `cniConfWatch` on, it checks `cniConfDir`
//! every [`CHECK_INTERVAL`], rewrites `10-weft.conflist` (atomically) when it is missing or
//! differs from what the config renders, and reports when a consumer of the directory would not
//! load Weft's file ([`crate::cniconf::LoadOrder::problems`]: a foreign file sorting before it,
//! an invalid file containerd stops at, another file declaring network `weft`): a log line on
//! every change, the metrics `weft_cni_conflist_restores_total` and
//! `weft_cni_conflist_shadowed`, a Warning Event `CNIConfigShadowed` on the Node, the status
//! section `cniConfig` (which `weftctl probe ready` fails on) and `weftctl check cni`.
//!
//! A periodic check rather than inotify: no new dependency, it sees the directory however it
//! was changed (an inotify watch is lost when the directory itself is replaced or bind-mounted
//! anew, and sees nothing through some overlay and network filesystems), and reading a handful
//! of small files every two seconds costs nothing measurable. Foreign files are never touched.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cniconf::{self, ConflistInput, CONFLIST_NAME};
use crate::metrics::{Counter, Gauge, MetricFamilies};

/// How often the directory is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What one check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflistStatus {
    /// Weft's file.
    pub file: String,
    /// Times the agent rewrote it since start.
    pub restores: u64,
    /// Whether every consumer loads Weft's file.
    pub weft_loaded: bool,
    /// One line per consumer that does not (empty when all do).
    pub problems: Vec<String>,
    /// The last failure to read or write the directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Receives the reports a Node Event is made of (the agent's `KubeDriftSink`).
pub trait EventSink: Send + Sync {
    /// Publishes a Warning Event `reason` with `note` on the Node.
    fn warn(&self, reason: &str, note: String);
}

/// The watcher: its state, metrics and the one check.
pub struct ConflistWatch {
    conf_dir: PathBuf,
    input: ConflistInput,
    status: Mutex<ConflistStatus>,
    restores: Counter,
    shadowed: Gauge,
    events: Option<Box<dyn EventSink>>,
}

impl std::fmt::Debug for ConflistWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConflistWatch")
            .field("conf_dir", &self.conf_dir)
            .finish()
    }
}

impl ConflistWatch {
    /// A watcher of `conf_dir` keeping the conflist `input` renders.
    pub fn new(conf_dir: PathBuf, input: ConflistInput) -> Self {
        ConflistWatch {
            status: Mutex::new(ConflistStatus {
                file: conf_dir.join(CONFLIST_NAME).display().to_string(),
                ..ConflistStatus::default()
            }),
            conf_dir,
            input,
            restores: Counter::new(
                "weft_cni_conflist_restores_total",
                "Times the agent rewrote its conflist because it was missing or altered.",
            ),
            shadowed: Gauge::new(
                "weft_cni_conflist_shadowed",
                "1 while a consumer of the CNI config directory would not load Weft's conflist.",
            ),
            events: None,
        }
    }

    /// Publishes a Node Event on every new problem through `events`.
    pub fn with_events(mut self, events: Box<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// The last check's result.
    pub fn status(&self) -> ConflistStatus {
        lock(&self.status).clone()
    }

    /// One check: restore Weft's file if missing or altered, then analyse the directory.
    pub fn check(&self) -> ConflistStatus {
        let mut error = None;
        match cniconf::render_conflist(&self.input) {
            Ok(want) => {
                let path = self.conf_dir.join(CONFLIST_NAME);
                let have = std::fs::read_to_string(&path).ok();
                if have.as_deref() != Some(want.as_str()) {
                    let what = if have.is_none() { "missing" } else { "altered" };
                    match cniconf::write_atomic(&path, want.as_bytes(), 0o644) {
                        Ok(()) => {
                            self.restores.inc();
                            tracing::warn!(file = %path.display(), what, "weft's conflist restored");
                        }
                        Err(e) => error = Some(e.to_string()),
                    }
                }
            }
            Err(e) => error = Some(e.to_string()),
        }
        let order = cniconf::read_dir(&self.conf_dir).map(cniconf::load_order);
        let problems = match &order {
            Ok(order) => order.problems(),
            Err(e) => {
                error = Some(e.to_string());
                Vec::new()
            }
        };
        let weft_loaded = order.as_ref().is_ok_and(cniconf::LoadOrder::weft_wins);
        self.shadowed.set(u64::from(!weft_loaded));
        let mut status = lock(&self.status);
        if problems != status.problems {
            if problems.is_empty() {
                tracing::info!(dir = %self.conf_dir.display(), "weft's conflist is loaded by every consumer again");
            } else {
                let note = problems.join("; ");
                tracing::warn!(dir = %self.conf_dir.display(), problems = %note, "another cni config would be loaded instead of weft's; {}", cniconf::multus_pin_hint(&self.conf_dir));
                if let Some(events) = &self.events {
                    events.warn("CNIConfigShadowed", note);
                }
            }
        }
        if error.is_some() && error != status.error {
            tracing::warn!(dir = %self.conf_dir.display(), error = ?error, "cannot check the cni config directory");
        }
        *status = ConflistStatus {
            file: status.file.clone(),
            restores: self.restores.get(),
            weft_loaded,
            problems,
            error,
        };
        status.clone()
    }

    /// Checks every [`CHECK_INTERVAL`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let watch = Arc::clone(&self);
            // File IO off the async workers.
            let _ = tokio::task::spawn_blocking(move || watch.check()).await;
        }
    }
}

impl MetricFamilies for ConflistWatch {
    fn render(&self, out: &mut String) {
        self.restores.render(out);
        self.shadowed.render(out);
    }
}

impl crate::api::StatusSection for ConflistWatch {
    fn name(&self) -> &'static str {
        "cniConfig"
    }

    fn value(&self) -> serde_json::Value {
        serde_json::to_value(self.status()).unwrap_or_default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_cni::version::CniVersion;

    #[derive(Default)]
    struct Events(Arc<Mutex<Vec<String>>>);

    impl EventSink for Events {
        fn warn(&self, reason: &str, note: String) {
            lock(&self.0).push(format!("{reason}: {note}"));
        }
    }

    fn watch(dir: &std::path::Path) -> (ConflistWatch, Arc<Mutex<Vec<String>>>) {
        let events = Events::default();
        let seen = Arc::clone(&events.0);
        let input = ConflistInput {
            agent_socket: "/var/run/weft/cni.sock".into(),
            chained: vec!["portmap".into()],
            cni_version: CniVersion::V1_0_0,
        };
        (
            ConflistWatch::new(dir.to_path_buf(), input).with_events(Box::new(events)),
            seen,
        )
    }

    #[test]
    fn restores_a_missing_or_altered_file_and_reports_shadowing_once() {
        let dir = tempfile::tempdir().unwrap();
        let (watch, events) = watch(dir.path());
        let path = dir.path().join(CONFLIST_NAME);

        let first = watch.check();
        assert_eq!(first.restores, 1, "missing: written");
        assert!(first.weft_loaded && first.problems.is_empty(), "{first:?}");
        let good = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, &good[..good.len() / 3]).unwrap();
        let truncated = watch.check();
        assert_eq!(truncated.restores, 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert_eq!(watch.check().restores, 2, "unchanged: not rewritten");

        std::fs::write(
            dir.path().join("05-other.conflist"),
            r#"{"name":"other","plugins":[{"type":"other"}]}"#,
        )
        .unwrap();
        let shadowed = watch.check();
        assert!(!shadowed.weft_loaded);
        assert!(
            shadowed.problems[0].contains("loads 05-other.conflist"),
            "{shadowed:?}"
        );
        watch.check();
        assert_eq!(
            lock(&events).len(),
            1,
            "one event per new problem: {:?}",
            lock(&events)
        );
        let mut metrics = String::new();
        watch.render(&mut metrics);
        assert!(
            metrics.contains("weft_cni_conflist_shadowed 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("weft_cni_conflist_restores_total 2"),
            "{metrics}"
        );

        std::fs::remove_file(dir.path().join("05-other.conflist")).unwrap();
        let back = watch.check();
        assert!(back.weft_loaded && back.problems.is_empty(), "{back:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CONFLIST_NAME)).unwrap(),
            good
        );
    }
}
