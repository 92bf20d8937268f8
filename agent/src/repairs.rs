//! The repairs log: a bounded ring of the host state the agent found wrong and restored (routes,
//! rules, neighbours, addresses, sysctls, links), shown by the API, with the totals by kind that
//! `weft_host_repairs_total{kind}` renders (this is the one place that counter lives). Shared
//! below the parts: the host reconciler writes it, the API reads it. The host
//! reconciler ([`crate::hoststate::HostReport`]) records every repair here; the oldest entries
//! fall out once [`RepairLog::CAPACITY`] is reached, the totals never do.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::metrics::MetricFamilies;

/// Repair kinds every scrape shows, even at 0, so dashboards have the series.
pub const REPAIR_KINDS: [&str; 8] = [
    "route",
    "rule",
    "neighbour",
    "address",
    "sysctl",
    "link_mac",
    "link_mtu",
    "link_state",
];

/// One host repair the agent made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairEntry {
    /// When (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// What kind of state: `route`, `rule`, `neighbour`, `address`, `sysctl`, `link_mac`,
    /// `link_mtu`, `link_state`.
    pub kind: String,
    /// The object repaired (e.g. `10.244.2.0/24 via 192.168.1.12`).
    pub object: String,
    /// What was found and done.
    pub detail: String,
    /// How long the object was missing or wrong, when a netlink event showed it going (a
    /// repair found by the periodic resync has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_for_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<RepairEntry>,
    totals: BTreeMap<String, u64>,
}

/// The log. Cheap to share (`Arc<RepairLog>`).
#[derive(Debug)]
pub struct RepairLog {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for RepairLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RepairLog {
    /// Entries kept by default.
    pub const CAPACITY: usize = 256;

    /// An empty log.
    pub fn new() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }

    /// An empty log keeping at most `capacity` entries (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        RepairLog {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one repair now; `missing_for` is how long the object was gone, when known.
    pub fn record(&self, kind: &str, object: &str, detail: &str, missing_for: Option<Duration>) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.push(RepairEntry {
            time_ms,
            kind: kind.to_string(),
            object: object.to_string(),
            detail: detail.to_string(),
            missing_for_ms: missing_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
    }

    /// Appends an entry (dropping the oldest when full) and counts it.
    pub fn push(&self, entry: RepairEntry) {
        let mut inner = self.inner();
        *inner.totals.entry(entry.kind.clone()).or_default() += 1;
        while inner.entries.len() >= self.capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry);
    }

    /// The entries, oldest first.
    pub fn snapshot(&self) -> Vec<RepairEntry> {
        self.inner().entries.iter().cloned().collect()
    }

    /// The newest `n` entries, oldest first.
    pub fn latest(&self, n: usize) -> Vec<RepairEntry> {
        let inner = self.inner();
        let skip = inner.entries.len().saturating_sub(n);
        inner.entries.iter().skip(skip).cloned().collect()
    }

    /// Repairs by kind since start.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        self.inner().totals.clone()
    }

    /// Repairs of `kind` since start.
    pub fn count(&self, kind: &str) -> u64 {
        self.inner().totals.get(kind).copied().unwrap_or(0)
    }

    /// Repairs of every kind since start.
    pub fn total(&self) -> u64 {
        self.inner().totals.values().sum()
    }
}

impl MetricFamilies for RepairLog {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP weft_host_repairs_total Host state Weft owns (routes, rules, neighbours, addresses, sysctls, links) found missing or changed and put back, by kind."
        );
        let _ = writeln!(out, "# TYPE weft_host_repairs_total counter");
        let mut totals: BTreeMap<String, u64> =
            REPAIR_KINDS.iter().map(|k| (k.to_string(), 0)).collect();
        totals.extend(self.totals());
        for (kind, count) in totals {
            let _ = writeln!(
                out,
                "weft_host_repairs_total{{kind=\"{}\"}} {count}",
                crate::metrics::escape(&kind)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_every_repair() {
        let log = RepairLog::with_capacity(2);
        assert!(log.snapshot().is_empty());
        log.record(
            "route",
            "10.244.2.0/24",
            "deleted by someone; re-added",
            None,
        );
        log.record(
            "rule",
            "from 10.244.1.0/24 lookup 22342",
            "re-added",
            Some(Duration::from_millis(30)),
        );
        log.record("route", "10.244.3.0/24", "re-added", None);
        let objects: Vec<String> = log.snapshot().into_iter().map(|e| e.object).collect();
        assert_eq!(
            objects,
            ["from 10.244.1.0/24 lookup 22342", "10.244.3.0/24"]
        );
        assert_eq!(log.total(), 3);
        assert_eq!(log.count("route"), 2);
        assert_eq!(log.latest(1)[0].object, "10.244.3.0/24");
        assert_eq!(log.snapshot()[0].missing_for_ms, Some(30));
        assert!(log.snapshot()[0].time_ms > 0);
        let mut text = String::new();
        log.render(&mut text);
        assert!(
            text.contains("weft_host_repairs_total{kind=\"route\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_host_repairs_total{kind=\"link_mac\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weft_host_repairs_total counter\n"),
            "{text}"
        );
    }
}
