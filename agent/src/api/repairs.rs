//! The repairs log: a bounded ring of the host state the agent found wrong and restored (routes,
//! rules, neighbours, links, MTUs), shown by the API and counted in the metrics. Reconcilers
//! call [`RepairLog::record`]; the oldest entries fall out once [`RepairLog::CAPACITY`] is
//! reached.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::types::RepairEntry;
use crate::metrics::Metrics;

/// The log. Cheap to share (`Arc<RepairLog>`).
#[derive(Debug)]
pub struct RepairLog {
    entries: Mutex<VecDeque<RepairEntry>>,
    capacity: usize,
    metrics: Option<Arc<Metrics>>,
}

impl RepairLog {
    /// Entries kept by default.
    pub const CAPACITY: usize = 256;

    /// An empty log that also counts each repair in `metrics` (`weft_host_repairs_total`).
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self::with_capacity(Self::CAPACITY, metrics)
    }

    /// An empty log keeping at most `capacity` entries (at least 1).
    pub fn with_capacity(capacity: usize, metrics: Option<Arc<Metrics>>) -> Self {
        RepairLog {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            metrics,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<RepairEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one repair now.
    pub fn record(&self, kind: &str, object: &str, detail: &str) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.push(RepairEntry {
            time_ms,
            kind: kind.to_string(),
            object: object.to_string(),
            detail: detail.to_string(),
        });
    }

    /// Appends an entry (dropping the oldest when full).
    pub fn push(&self, entry: RepairEntry) {
        if let Some(metrics) = &self.metrics {
            metrics.count_repair(&entry.kind);
        }
        tracing::info!(kind = %entry.kind, object = %entry.object, detail = %entry.detail, "host state repaired");
        let mut entries = self.entries();
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries, oldest first.
    pub fn snapshot(&self) -> Vec<RepairEntry> {
        self.entries().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_every_repair() {
        let metrics = Metrics::new();
        let log = RepairLog::with_capacity(2, Some(Arc::clone(&metrics)));
        assert!(log.snapshot().is_empty());
        log.record("route", "10.244.2.0/24", "deleted by someone; re-added");
        log.record("rule", "from 10.244.1.0/24 lookup 100", "re-added");
        log.record("route", "10.244.3.0/24", "re-added");
        let objects: Vec<String> = log.snapshot().into_iter().map(|e| e.object).collect();
        assert_eq!(objects, ["from 10.244.1.0/24 lookup 100", "10.244.3.0/24"]);
        assert_eq!(metrics.repair_count(), 3);
        assert!(log.snapshot()[0].time_ms > 0);
    }
}
