//! Shadow runs (`sluice deploy --shadow`, `runtime/shadow.rs`): while a plugin has a shadow,
//! each batch runs a second time with the shadow versions in place of the serving ones, on a
//! state of its own (a copy of the serving state when the shadow started). Its output is
//! discarded; what it would have written to each sink is compared with what the serving run
//! writes, record for record, and recorded per batch with both versions' errors and time per
//! call. Shadows of several plugins run together in one shadow run. Not in a cluster (the
//! admin API refuses it there).
//!
//! **Owns:** the shadow runs' state and the comparison. **Never touches:** sinks, checkpoints:
//! nothing a shadow does is written or kept across a restart.

use std::collections::HashMap;
use std::sync::Arc;

use crate::block::{Block, records};
use crate::graph::{BatchOutcome, Graph, GraphState, run_batch};
use crate::runtime::PluginVersion;
use crate::runtime::registry::{PluginRegistry, Snapshot};
use crate::runtime::shadow::ShadowBatch;

/// The shadows running, with their state.
#[derive(Debug, Default)]
pub(super) struct Shadows {
    /// The shadow versions of the last batch, per plugin.
    versions: Vec<Option<Arc<PluginVersion>>>,
    state: GraphState,
}

impl Shadows {
    /// The versions a shadow run of this batch uses (the serving ones with each shadow in
    /// place), or None without a shadow. A new or changed shadow starts from `serving_state`.
    pub(super) fn prepare(
        &mut self,
        registry: &PluginRegistry,
        serving: &Snapshot,
        serving_state: &GraphState,
    ) -> Option<Snapshot> {
        let versions = registry.shadow_versions();
        if versions.iter().all(Option::is_none) {
            self.versions.clear();
            return None;
        }
        let ids = |v: &[Option<Arc<PluginVersion>>]| v.iter().map(|v| v.as_ref().map(|v| v.id)).collect::<Vec<_>>();
        if ids(&versions) != ids(&self.versions) {
            self.state = serving_state.clone();
        }
        // The other plugins serve in the shadow run too, quietly: their metrics and log lines
        // are the serving run's already.
        let quiet = |serving: &Arc<PluginVersion>| {
            let mut version = serving.with_limits(None, None);
            version.quiet = true;
            Arc::new(version)
        };
        let snapshot = serving
            .iter()
            .zip(&versions)
            .map(|(serving, shadow)| shadow.clone().unwrap_or_else(|| quiet(serving)))
            .collect();
        self.versions = versions;
        Some(snapshot)
    }

    /// Runs the shadow over `blocks` and records, for each shadowed plugin, how it compares
    /// with `serving` (the serving run's outcome; None: that batch failed). Promotes a shadow
    /// whose rule says so (it serves from the next batch).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &mut self,
        graph: &Graph,
        registry: &PluginRegistry,
        pool: &rayon::ThreadPool,
        snapshot: &Snapshot,
        time: u64,
        last: bool,
        blocks: Vec<Block>,
        serving: Option<&BatchOutcome>,
        serving_state: &GraphState,
    ) {
        let before = self.state.clone();
        let shadow = run_batch(graph, &mut self.state, snapshot, time, last, blocks, pool);
        match (&shadow, serving) {
            // The serving run failed: its state went back to the last good one; the shadow's
            // starts over from that, or it would compare against records the batch never wrote.
            (_, None) => self.state = serving_state.clone(),
            (Err(error), Some(_)) => {
                tracing::info!(batch = time, "the shadow's run of this batch failed: {error}");
                self.state = before;
            }
            (Ok(_), Some(_)) => {}
        }
        let (compared, differing, extra) = match (serving, &shadow) {
            (Some(serving), Ok(shadow)) => compare(graph, serving, shadow),
            (Some(serving), Err(_)) => (written(graph, serving), 0, 0),
            (None, _) => (0, 0, 0),
        };
        for (index, version) in self.versions.iter().enumerate() {
            let Some(version) = version else { continue };
            let errors = |outcome: Option<&BatchOutcome>, failed: bool| {
                u64::from(failed)
                    + outcome.map_or(0, |o| {
                        o.handled.iter().filter(|h| h.error.plugin == version.plugin).map(|h| h.records).sum()
                    })
            };
            let batch = ShadowBatch {
                batch: time,
                compared,
                differing,
                extra,
                serving_errors: errors(serving, serving.is_none()),
                shadow_errors: errors(shadow.as_ref().ok(), shadow.is_err()),
                serving_us_per_call: per_call(graph, index, serving),
                shadow_us_per_call: per_call(graph, index, shadow.as_ref().ok()),
            };
            if registry.record_shadow(index, version.id, batch) {
                registry.promote(index, true);
            }
        }
    }
}

/// Records the sinks of `outcome` get.
fn written(graph: &Graph, outcome: &BatchOutcome) -> u64 {
    graph.sinks.iter().filter_map(|sink| outcome.streams[sink.input].as_ref()).flatten().map(|p| p.records).sum()
}

/// (records the serving run gives its sinks, of those the shadow's does not, records the
/// shadow's gives that the serving run's does not), sink by sink, as multisets.
fn compare(graph: &Graph, serving: &BatchOutcome, shadow: &BatchOutcome) -> (u64, u64, u64) {
    let (mut compared, mut differing, mut extra) = (0, 0, 0);
    for sink in &graph.sinks {
        let mut counts: HashMap<&[u8], i64> = HashMap::new();
        for record in serving.streams[sink.input].as_deref().map(records).into_iter().flatten() {
            *counts.entry(record).or_default() += 1;
            compared += 1;
        }
        for record in shadow.streams[sink.input].as_deref().map(records).into_iter().flatten() {
            *counts.entry(record).or_default() -= 1;
        }
        for n in counts.into_values() {
            if n > 0 {
                differing += n as u64;
            } else {
                extra += (-n) as u64;
            }
        }
    }
    (compared, differing, extra)
}

/// Time per call of the stages that call plugin `index`, µs.
fn per_call(graph: &Graph, index: usize, outcome: Option<&BatchOutcome>) -> f64 {
    let Some(outcome) = outcome else { return 0.0 };
    let (mut micros, mut calls) = (0, 0);
    for figures in &outcome.stages {
        if graph.stages.iter().any(|stage| stage.name == figures.name && stage.calls(index)) {
            micros += figures.micros;
            calls += figures.calls;
        }
    }
    if calls == 0 { 0.0 } else { micros as f64 / calls as f64 }
}
