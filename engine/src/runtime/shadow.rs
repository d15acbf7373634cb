//! Shadow deploys: a validated new version that runs beside the serving one on the same
//! batches, its output discarded, so how it would differ is known before it serves. The
//! registry keeps one [`Shadow`] per plugin at most; the scheduler runs it and records each
//! batch's comparison here; `promote` makes it serve from the next batch (the registry's
//! `promote`), by hand or by its [`PromoteRule`].
//!
//! **Owns:** what a shadow is, its per-batch figures and the promotion rule. **Never touches:**
//! running batches (the scheduler's), serving versions (the registry's).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::PluginVersion;

/// Batches whose figures a shadow keeps for status and the dashboard.
const RECENT: usize = 20;

/// `--promote-after N --max-diff F`: promote after N batches in a row with no error in either
/// version and at most a share F (0 to 1) of the serving output differing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct PromoteRule {
    pub(crate) batches: u32,
    pub(crate) max_diff: f64,
}

/// One batch as both versions ran it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ShadowBatch {
    /// Batch time, ms.
    pub(crate) batch: u64,
    /// Records the serving version's run gave its sinks.
    pub(crate) compared: u64,
    /// Of those, records the shadow's run did not give (or gave differently).
    pub(crate) differing: u64,
    /// Records the shadow gave that the serving run did not.
    pub(crate) extra: u64,
    /// Failures (absorbed or failing the batch) of the serving version's functions.
    pub(crate) serving_errors: u64,
    /// The same for the shadow.
    pub(crate) shadow_errors: u64,
    /// Time per call of the plugin's stages, µs: serving, shadow.
    pub(crate) serving_us_per_call: f64,
    pub(crate) shadow_us_per_call: f64,
}

/// A version running in the shadow of the serving one.
#[derive(Clone, Debug)]
pub(crate) struct Shadow {
    pub(crate) version: Arc<PluginVersion>,
    pub(crate) rule: Option<PromoteRule>,
    /// The serving version's short hash when it started (the comparison is against it).
    pub(crate) against: String,
    pub(crate) batches: u64,
    pub(crate) clean_in_a_row: u32,
    pub(crate) totals: ShadowBatch,
    pub(crate) recent: VecDeque<ShadowBatch>,
}

impl Shadow {
    pub(crate) fn new(version: Arc<PluginVersion>, rule: Option<PromoteRule>, against: String) -> Self {
        Self {
            version,
            rule,
            against,
            batches: 0,
            clean_in_a_row: 0,
            totals: ShadowBatch::default(),
            recent: VecDeque::new(),
        }
    }

    /// Adds one batch; whether its rule says promote now.
    pub(crate) fn record(&mut self, batch: ShadowBatch) -> bool {
        self.batches += 1;
        let t = &mut self.totals;
        t.batch = batch.batch;
        t.compared += batch.compared;
        t.differing += batch.differing;
        t.extra += batch.extra;
        t.serving_errors += batch.serving_errors;
        t.shadow_errors += batch.shadow_errors;
        // A batch where neither version wrote anything (and nothing failed) compares nothing:
        // it does not count towards the rule either way.
        if batch.compared + batch.extra > 0 || batch.serving_errors + batch.shadow_errors > 0 {
            let clean = batch.serving_errors == 0
                && batch.shadow_errors == 0
                && self.rule.is_none_or(|rule| differing_share(&batch) <= rule.max_diff);
            self.clean_in_a_row = if clean { self.clean_in_a_row + 1 } else { 0 };
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(batch);
        self.rule.is_some_and(|rule| self.clean_in_a_row >= rule.batches)
    }

    /// As `/api/status` shows it.
    pub(crate) fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "hash": self.version.short_hash(),
            "against": self.against,
            "batches": self.batches,
            "clean_batches_in_a_row": self.clean_in_a_row,
            "promote_after": self.rule,
            "differing_share": differing_share(&self.totals),
            "totals": self.totals,
            "recent": self.recent,
        })
    }
}

/// What `--max-diff` bounds and status shows: the serving records the shadow did not give, or
/// the records it gave beyond them, whichever are more, over the serving records (at least 1).
/// A record the shadow changed counts once.
fn differing_share(batch: &ShadowBatch) -> f64 {
    batch.differing.max(batch.extra) as f64 / batch.compared.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_promotes_after_n_clean_batches_in_a_row() {
        let version = Arc::new(super::super::PluginRuntime::native("p", &[]));
        let mut shadow = Shadow::new(version, Some(PromoteRule { batches: 2, max_diff: 0.1 }), "aa".into());
        let batch = |differing, shadow_errors| ShadowBatch {
            compared: 100,
            differing,
            shadow_errors,
            ..ShadowBatch::default()
        };
        assert!(!shadow.record(batch(5, 0)));
        assert!(!shadow.record(batch(50, 0)), "too many differ: the run starts over");
        assert!(!shadow.record(batch(0, 0)));
        assert!(!shadow.record(batch(0, 1)), "an error starts over");
        assert!(!shadow.record(batch(0, 0)));
        assert!(!shadow.record(ShadowBatch::default()), "an empty batch proves nothing");
        assert!(shadow.record(batch(10, 0)));
        assert_eq!(shadow.totals.differing, 65);
        assert_eq!(shadow.status()["batches"], 7);
    }
}
