//! Metrics from inside a plugin: counters, gauges and histograms by name, exported by the host
//! on `/metrics` as `sluice_plugin_metric{plugin,version,stage,name,kind}` (histograms as
//! `sluice_plugin_metric_sum` and `_count`).
//!
//! ```
//! use sluice_sdk::metrics;
//!
//! #[sluice_sdk::flat_map]
//! pub fn words(line: &str) -> Vec<String> {
//!     if line.trim().is_empty() {
//!         metrics::counter("empty_lines").add(1);
//!     }
//!     metrics::histogram("line_bytes").observe(line.len() as f64);
//!     line.split_whitespace().map(String::from).collect()
//! }
//! # words("a b");
//! # assert_eq!(metrics::recorded().len(), 1);
//! ```
//!
//! Calls are cheap: they add to a table inside the plugin, which the host reads once at the end
//! of each call (one partition), not once per record. A name is `[a-zA-Z_][a-zA-Z0-9_]*`, at
//! most 64 bytes; the host ignores others (and says so in its log, once per process).

use std::cell::RefCell;
use std::string::String;
use std::vec::Vec;

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up: [`Counter::add`].
    Counter = 0,
    /// A value that is set: [`Gauge::set`] (the last one set wins).
    Gauge = 1,
    /// Observations: [`Histogram::observe`] (their sum and count).
    Histogram = 2,
}

/// A metric as recorded since the host last read them: kind, name, value (a counter's total,
/// a gauge's last value, a histogram's sum) and count (a histogram's observations).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// What it is.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Total, last value or sum.
    pub value: f64,
    /// Observations (histograms; 0 for gauges, the number of adds for counters).
    pub count: u64,
}

thread_local! {
    static RECORDED: RefCell<Vec<Recorded>> = const { RefCell::new(Vec::new()) };
}

fn record(kind: Kind, name: &str, value: f64) {
    RECORDED.with_borrow_mut(|recorded| {
        let slot = match recorded.iter().position(|r| r.kind == kind && r.name == name) {
            Some(at) => &mut recorded[at],
            None => {
                recorded.push(Recorded { kind, name: name.into(), value: 0.0, count: 0 });
                recorded.last_mut().expect("just pushed")
            }
        };
        match kind {
            Kind::Gauge => slot.value = value,
            Kind::Counter | Kind::Histogram => {
                slot.value += value;
                slot.count += 1;
            }
        }
    });
}

/// The counter `name`.
pub fn counter(name: &str) -> Counter<'_> {
    Counter(name)
}

/// The gauge `name`.
pub fn gauge(name: &str) -> Gauge<'_> {
    Gauge(name)
}

/// The histogram `name`.
pub fn histogram(name: &str) -> Histogram<'_> {
    Histogram(name)
}

/// See [`counter`].
#[derive(Clone, Copy, Debug)]
pub struct Counter<'a>(&'a str);

impl Counter<'_> {
    /// Adds `n`.
    pub fn add(self, n: u64) {
        record(Kind::Counter, self.0, n as f64);
    }
}

/// See [`gauge`].
#[derive(Clone, Copy, Debug)]
pub struct Gauge<'a>(&'a str);

impl Gauge<'_> {
    /// Sets it to `value`.
    pub fn set(self, value: f64) {
        record(Kind::Gauge, self.0, value);
    }
}

/// See [`histogram`].
#[derive(Clone, Copy, Debug)]
pub struct Histogram<'a>(&'a str);

impl Histogram<'_> {
    /// Adds one observation.
    pub fn observe(self, value: f64) {
        record(Kind::Histogram, self.0, value);
    }
}

/// What was recorded since the host last read it (natively, in a unit test: since the test
/// began), without taking it.
pub fn recorded() -> Vec<Recorded> {
    RECORDED.with_borrow(Clone::clone)
}

/// Hands what was recorded to the host and starts over: at the end of each call.
pub(crate) fn flush() {
    let taken = RECORDED.with_borrow_mut(std::mem::take);
    for metric in &taken {
        crate::host::metric(metric);
    }
}
