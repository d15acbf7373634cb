//! The metrics plugins record from inside (`sluice_sdk::metrics`), as the `sluice.metric`
//! import hands them over at the end of each call: per plugin, version, stage and name, one
//! table for the process, which `/metrics` reads. At most [`MAX_SERIES`] series: a plugin that
//! makes up names without end cannot grow the host's memory.
//!
//! **Owns:** the table, the name rule and the bound. **Never touches:** the exposition format.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Series kept at most; later ones are dropped (and said once in the log).
pub(crate) const MAX_SERIES: usize = 10_000;

/// The longest metric name taken.
const MAX_NAME: usize = 64;

/// What a plugin metric is (the SDK's `metrics::Kind`, by its number on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series' labels: plugin, version (short hash), stage (None: outside a stage's call),
/// metric name.
pub(crate) type Series = (String, String, Option<String>, String);

/// One series' figures: a counter's total, a gauge's last value, a histogram's sum and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Figures {
    pub(crate) kind: Kind,
    pub(crate) value: f64,
    pub(crate) count: u64,
}

static TABLE: Mutex<BTreeMap<Series, Figures>> = Mutex::new(BTreeMap::new());
static WARNED: std::sync::Once = std::sync::Once::new();

/// Why `name` is not taken as a metric name, if it is not.
fn name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    if name.len() > MAX_NAME {
        return Some("longer than 64 bytes");
    }
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some("not [a-zA-Z_][a-zA-Z0-9_]*");
    }
    None
}

/// Records what one call handed over.
pub(crate) fn record(series: Series, kind: u32, value: f64, count: u64) {
    let kind = match kind {
        0 => Kind::Counter,
        1 => Kind::Gauge,
        2 => Kind::Histogram,
        _ => return warn_once(&series, "an unknown kind"),
    };
    if let Some(problem) = name_problem(&series.3) {
        return warn_once(&series, problem);
    }
    if !value.is_finite() {
        return warn_once(&series, "a value that is not a finite number");
    }
    let mut table = TABLE.lock().expect("plugin metrics lock");
    let full = table.len() >= MAX_SERIES;
    let slot = match table.get_mut(&series) {
        Some(slot) => slot,
        None if full => {
            drop(table);
            return warn_once(&series, "one series too many (10000 are kept)");
        }
        None => table.entry(series).or_insert(Figures { kind, value: 0.0, count: 0 }),
    };
    if slot.kind != kind {
        return; // the same name as another kind: the first one stays
    }
    match kind {
        Kind::Gauge => slot.value = value,
        Kind::Counter | Kind::Histogram => {
            slot.value += value;
            slot.count += count;
        }
    }
}

fn warn_once(series: &Series, problem: &str) {
    WARNED.call_once(|| {
        tracing::warn!(plugin = %series.0, metric = %series.3, "a plugin metric is ignored: {problem} (said once)");
    });
}

/// Drops the series of versions `live` says no longer serve, are not kept for a rollback and
/// are no shadow: their figures would only use up [`MAX_SERIES`].
pub(crate) fn retain(live: impl Fn(&str, &str) -> bool) {
    TABLE.lock().expect("plugin metrics lock").retain(|(plugin, version, ..), _| live(plugin, version));
}

/// Every series so far.
pub(crate) fn snapshot() -> Vec<(Series, Figures)> {
    TABLE.lock().expect("plugin metrics lock").iter().map(|(s, f)| (s.clone(), *f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str) -> Series {
        ("p".into(), "abc".into(), Some("s".into()), name.into())
    }

    #[test]
    fn counters_add_gauges_set_histograms_sum_and_bad_names_are_ignored() {
        record(series("unit_test_lines"), 0, 2.0, 1);
        record(series("unit_test_lines"), 0, 3.0, 1);
        record(series("unit_test_depth"), 1, 7.0, 0);
        record(series("unit_test_depth"), 1, 4.0, 0);
        record(series("unit_test_size"), 2, 10.0, 2);
        record(series("unit test bad"), 0, 1.0, 1);
        record(series("unit_test_nan"), 1, f64::NAN, 0);
        let found: BTreeMap<String, Figures> =
            snapshot().into_iter().filter(|(s, _)| s.3.starts_with("unit")).map(|(s, f)| (s.3, f)).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found["unit_test_lines"], Figures { kind: Kind::Counter, value: 5.0, count: 2 });
        assert_eq!(found["unit_test_depth"].value, 4.0);
        assert_eq!(found["unit_test_size"], Figures { kind: Kind::Histogram, value: 10.0, count: 2 });
        record(("retired".into(), "old".into(), None, "unit_test_gone".into()), 0, 1.0, 1);
        retain(|plugin, version| !(plugin == "retired" && version == "old"));
        assert!(snapshot().iter().all(|(s, _)| s.3 != "unit_test_gone"));
        assert!(snapshot().iter().any(|(s, _)| s.3 == "unit_test_lines"), "a live version's series stay");
    }
}
