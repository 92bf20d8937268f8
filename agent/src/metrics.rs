//! A minimal metrics registry: counters and gauges with at most one label, rendered in the
//! Prometheus text exposition format. Each component owns its metrics and renders them; the
//! agent API concatenates the renders.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A counter family with one label (e.g. `kind`).
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
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
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

/// A counter without labels.
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
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// A gauge without labels.
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
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
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
}
