//! The job scheduler: runs one job per batch, in batch order, each job's partitions in parallel
//! on the worker pool; writes the sinks; checkpoints; feeds backpressure; rolls back a swapped-in
//! plugin version that keeps failing; reports each batch in one line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver as Queue;
use std::time::Instant;

use crate::checkpoint::{self, Checkpoint, SourcePosition};
use crate::graph::{BatchOutcome, DeadLetter, Graph, GraphState, StageCheckpoint, run_batch};
use crate::metrics::events::BatchInfo;
use crate::metrics::{BatchFigures, Metrics};
use crate::receiver::Receiver;
use crate::receiver::rate::PidEstimator;
use crate::runtime::registry::{PluginRegistry, Snapshot};
use crate::sinks::Sink;
use crate::sources::directory;

use super::{Batch, now_ms};

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Batches run.
    pub batches: u64,
    /// Batches that failed (a plugin error); their output was not written.
    pub failed_batches: u64,
    /// Batches run again from the checkpoint directory after a restart.
    pub replayed_batches: u64,
    /// Records received.
    pub records: u64,
    /// Lines dropped as not UTF-8.
    pub invalid_lines: u64,
    /// Records an `on_error` policy skipped or sent to a dead-letter sink.
    pub diverted_records: u64,
    /// Plugin swaps that took effect.
    pub swaps: u64,
    /// Failing versions rolled back automatically.
    pub auto_rollbacks: u64,
    /// Records that arrived after the watermark closed their event-time windows.
    pub late_records: u64,
    /// Time spent processing batches (stages and sinks), summed.
    pub processing: std::time::Duration,
    /// Why the run stopped before its sources ended, if it had to: with checkpoints, a sink
    /// or the checkpoint that cannot be written stops the pipeline (a restart replays the
    /// batch) rather than let a later checkpoint skip its output.
    pub fatal: Option<String>,
}

/// Checkpointing: where, and what the checkpoint says beside the state.
#[derive(Debug)]
pub struct Checkpointing {
    /// `checkpoint_dir`, resolved.
    pub dir: PathBuf,
    /// Pipeline name and batch interval, written in every checkpoint.
    pub pipeline: String,
    /// Batch interval, ms.
    pub batch_interval_ms: u64,
    /// Each source's position (directory sources: files taken by completed batches).
    pub positions: Vec<SourcePosition>,
    /// The state after the last batch that did not fail: what a failed batch returns to.
    pub last_good: Vec<StageCheckpoint>,
    /// `[pipeline] checkpoint_every`.
    pub every: u32,
    /// Batches since the last checkpoint written.
    pub since: u32,
}

/// Everything a run of the scheduler works with.
#[derive(Debug)]
pub struct Scheduler<'a> {
    /// The graph.
    pub graph: &'a Graph,
    /// Plugins and their serving versions.
    pub registry: &'a PluginRegistry,
    /// Sinks, like `graph.sinks`.
    pub sinks: Vec<Sink>,
    /// Dead-letter sinks, like `graph.dead_letters`.
    pub dead_letters: Vec<Sink>,
    /// Workers.
    pub pool: &'a rayon::ThreadPool,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Every source's receiver.
    pub receivers: Vec<Arc<Receiver>>,
    /// Directory sources: index → directory.
    pub directories: BTreeMap<usize, PathBuf>,
    /// Checkpoints, if on.
    pub checkpointing: Option<Checkpointing>,
    /// Backpressure: one estimator per rate-adapted source, with its `max_rate`.
    pub backpressure: BTreeMap<usize, (PidEstimator, Option<u64>)>,
    /// `[pipeline] rollback_after`.
    pub rollback_after: u32,
}

/// Per plugin: the version swapped in that has not yet served a batch without failing, and its
/// failed batches in a row.
#[derive(Debug, Default, Clone)]
struct Probation {
    version: u64,
    failures: u32,
}

impl Scheduler<'_> {
    /// Runs batches from `queue` until it closes, starting from `state`.
    pub fn run(mut self, mut state: GraphState, queue: Queue<Batch>) -> RunReport {
        let mut report = RunReport::default();
        // Late records counted by earlier runs (in the checkpointed state) are not new.
        let mut late_before = state.late_records();
        let mut serving: Snapshot = self.registry.snapshot();
        let mut probation: Vec<Option<Probation>> = vec![None; serving.len()];
        // Versions an automatic rollback returned to: trusted, not on probation.
        let mut restored: Vec<Option<u64>> = vec![None; serving.len()];
        while let Ok(mut batch) = queue.recv() {
            if !batch.replayed {
                self.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            let started = Instant::now();
            let scheduling_delay = now_ms().saturating_sub(batch.time_ms);
            let snapshot = self.registry.snapshot();
            for (index, (old, new)) in serving.iter().zip(snapshot.iter()).enumerate() {
                if old.id != new.id {
                    report.swaps += 1;
                    self.metrics.swap();
                    probation[index] =
                        (restored[index] != Some(new.id)).then_some(Probation { version: new.id, failures: 0 });
                    self.registry.note(
                        &new.plugin,
                        "swapped",
                        Some(old.short_hash()),
                        Some(new.short_hash()),
                        format!("first batch {}", batch.time_ms),
                    );
                    tracing::info!(
                        plugin = %new.plugin,
                        from = %old.short_hash(),
                        to = %new.short_hash(),
                        first_batch = batch.time_ms,
                        "plugin swapped"
                    );
                }
            }
            serving = snapshot;
            self.read_files(&mut batch);
            let records: u64 = batch.blocks.iter().map(|b| b.records).sum();
            let invalid: u64 = batch.blocks.iter().map(|b| b.invalid).sum();
            let blocks = batch.blocks.len();
            let mut source_records: BTreeMap<usize, u64> = BTreeMap::new();
            for block in &batch.blocks {
                *source_records.entry(block.source).or_default() += block.records;
            }
            self.metrics.events.started(batch.time_ms, records, scheduling_delay);
            let mut info = BatchInfo {
                time_ms: batch.time_ms,
                records,
                sources: source_records.iter().map(|(&s, &n)| (self.receivers[s].name.clone(), n)).collect(),
                scheduling_delay_ms: scheduling_delay,
                replayed: batch.replayed,
                versions: serving.iter().map(|v| format!("{}@{}", v.plugin, v.short_hash())).collect(),
                ..BatchInfo::default()
            };
            report.batches += 1;
            report.replayed_batches += u64::from(batch.replayed);
            report.records += records;
            report.invalid_lines += invalid;
            if invalid > 0 {
                tracing::warn!(batch = batch.time_ms, lines = invalid, "dropped lines that are not UTF-8");
            }
            let mut outputs = 0u64;
            let mut batch_failed = false;
            let mut failing: BTreeSet<String> = BTreeSet::new();
            let time = batch.time_ms;
            let blocks_in = std::mem::take(&mut batch.blocks);
            match run_batch(self.graph, &mut state, &serving, time, batch.close_windows, blocks_in, self.pool) {
                Ok(outcome) => {
                    let late = state.late_records().saturating_sub(late_before);
                    late_before = state.late_records();
                    if late > 0 {
                        tracing::warn!(
                            batch = time,
                            records = late,
                            "late records: their event-time windows had closed"
                        );
                        report.late_records += late;
                        self.metrics.late(late);
                    }
                    for handled in &outcome.handled {
                        let error = &handled.error;
                        let class = error.error.class().name();
                        self.metrics.events.call_failed(&error.stage, &error.plugin, &error.version, class);
                        *info.errors.entry(class.to_string()).or_default() += 1;
                        failing.insert(handled.error.plugin.clone());
                        report.diverted_records += handled.records;
                        self.metrics.plugin_error(&handled.error.plugin, handled.error.error.class().name());
                        self.metrics.diverted(&handled.error.stage, handled.action.name(), handled.records);
                    }
                    match self.write(time, &outcome) {
                        Ok(written) => outputs = written,
                        Err(failure) if self.checkpointing.is_some() => {
                            report.fatal = Some(failure);
                            break;
                        }
                        Err(_) => {}
                    }
                    info.stages = outcome.stages;
                }
                Err(err) => {
                    batch_failed = true;
                    report.failed_batches += 1;
                    failing.insert(err.plugin.clone());
                    self.metrics.plugin_error(&err.plugin, err.error.class().name());
                    self.metrics.events.call_failed(&err.stage, &err.plugin, &err.version, err.error.class().name());
                    *info.errors.entry(err.error.class().name().to_string()).or_default() += 1;
                    info.error = Some(err.to_string());
                    tracing::error!(batch = time, class = %err.error.class(), "batch failed: {err}");
                    if let Some(checkpointing) = &self.checkpointing {
                        // Stages before the failing one took the batch in: put the state back.
                        state = GraphState::import(self.graph, checkpointing.last_good.clone())
                            .expect("the last checkpoint was written from this graph");
                    }
                }
            }
            if let Err(failure) = self.checkpoint(&batch, &state, &serving) {
                report.fatal = Some(failure);
                break;
            }
            let processing = crate::config::millis(started.elapsed());
            self.metrics.batch(BatchFigures {
                time_ms: time,
                records,
                scheduling_delay_ms: scheduling_delay,
                processing_ms: processing,
                failed: batch_failed,
            });
            report.processing += started.elapsed();
            info.processing_ms = processing;
            info.outputs = outputs;
            self.metrics.events.completed(info);
            self.adapt_rates(time, &source_records, processing, scheduling_delay);
            if records > 0 {
                // An empty batch calls no plugin: it proves nothing either way.
                report.auto_rollbacks +=
                    self.probation(&mut probation, &mut restored, &serving, &failing, batch_failed, time);
            }
            tracing::info!(
                target: "sluice::batch",
                "batch {time} ms{}: {records} records in {blocks} block{}, scheduling delay {scheduling_delay} ms, processing {processing} ms, total delay {} ms, {outputs} records out [{}]",
                if batch.replayed { " (replayed)" } else { "" },
                if blocks == 1 { "" } else { "s" },
                scheduling_delay + processing,
                versions(&serving),
            );
        }
        report
    }

    /// Reads the files a batch took from directory sources into its blocks.
    fn read_files(&self, batch: &mut Batch) {
        for (&source, names) in &batch.files {
            let Some(dir) = self.directories.get(&source) else { continue };
            for name in names {
                let path = dir.join(name);
                match directory::read_blocks(source, batch.time_ms, &path) {
                    Ok(blocks) => {
                        let records = blocks.iter().map(|b| b.records).sum();
                        let invalid = blocks.iter().map(|b| b.invalid).sum();
                        self.receivers[source].count(records, invalid);
                        batch.blocks.extend(blocks);
                    }
                    Err(err) => {
                        tracing::error!(batch = batch.time_ms, file = %path.display(), "cannot read a new file, its lines are missing from the batch: {err}");
                        self.receivers[source].set_error(format!("cannot read {}: {err}", path.display()));
                    }
                }
            }
        }
    }

    /// Writes a batch's streams to the sinks and its dead letters to theirs, each retried
    /// [`SINK_RETRIES`] times. Returns the records written, or what could not be written.
    fn write(&mut self, time: u64, outcome: &BatchOutcome) -> Result<u64, String> {
        let mut outputs = 0;
        let mut failed = None;
        for (sink, node) in self.sinks.iter_mut().zip(&self.graph.sinks) {
            let partitions = outcome.streams[node.input].as_deref().unwrap_or_default();
            match with_retries(time, node.config.name(), || {
                sink.write(time, &self.graph.streams[node.input].ty, partitions)
            }) {
                Ok(written) => outputs += written,
                Err(err) => failed = Some(format!("sink `{}` cannot write batch {time}: {err}", node.config.name())),
            }
        }
        let letter = DeadLetter::type_desc();
        for (index, sink) in self.dead_letters.iter_mut().enumerate() {
            let parts: Vec<_> =
                outcome.dead_letters.iter().filter(|(s, _)| *s == index).map(|(_, p)| p.clone()).collect();
            if parts.is_empty() {
                continue;
            }
            let name = self.graph.dead_letters[index].name();
            if let Err(err) = with_retries(time, name, || sink.write(time, &letter, &parts)) {
                failed = Some(format!("dead-letter sink `{name}` cannot write batch {time}: {err}"));
            }
        }
        match failed {
            None => Ok(outputs),
            Some(failure) => Err(failure),
        }
    }

    /// Writes the checkpoint of a finished batch, if checkpoints are on.
    fn checkpoint(&mut self, batch: &Batch, state: &GraphState, serving: &Snapshot) -> Result<(), String> {
        let Some(checkpointing) = &mut self.checkpointing else { return Ok(()) };
        let started = Instant::now();
        for (&source, names) in &batch.files {
            checkpointing.positions[source].files.extend(names.iter().cloned());
        }
        let stages = state.export(self.graph);
        checkpointing.since += 1;
        if checkpointing.since < checkpointing.every && !batch.last {
            // Not this batch: its inputs stay logged until a later checkpoint covers them.
            checkpointing.last_good = stages;
            return Ok(());
        }
        checkpointing.since = 0;
        let checkpoint = Checkpoint {
            pipeline: checkpointing.pipeline.clone(),
            batch_interval_ms: checkpointing.batch_interval_ms,
            batch_time: batch.time_ms,
            written_at_ms: now_ms(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            plugins: serving.iter().map(|v| (v.plugin.clone(), v.hash.clone())).collect(),
            sources: checkpointing.positions.clone(),
            stages,
        };
        let bytes = checkpoint::encode(&checkpoint);
        with_retries(batch.time_ms, "checkpoint", || checkpoint::write(&checkpointing.dir, batch.time_ms, &bytes))
            .map_err(|err| format!("cannot write the checkpoint of batch {}: {err}", batch.time_ms))?;
        checkpointing.last_good = checkpoint.stages;
        self.metrics.checkpoint(started.elapsed());
        Ok(())
    }

    /// Backpressure: a new rate for each adapted receiver from this batch's figures.
    fn adapt_rates(&mut self, time: u64, records: &BTreeMap<usize, u64>, processing_ms: u64, scheduling_delay_ms: u64) {
        for (&source, (estimator, max_rate)) in &mut self.backpressure {
            let records = records.get(&source).copied().unwrap_or(0);
            if let Some(rate) = estimator.compute(time, records, processing_ms, scheduling_delay_ms) {
                let rate = max_rate.map_or(rate, |max| rate.min(max as f64));
                tracing::debug!(source = %self.receivers[source].name, rate, "backpressure");
                self.receivers[source].set_rate(Some(rate));
            }
        }
    }

    /// Rolls back versions swapped in that failed `rollback_after` batches in a row before
    /// serving one batch cleanly. Returns how many were rolled back.
    fn probation(
        &self,
        probation: &mut [Option<Probation>],
        restored: &mut [Option<u64>],
        serving: &Snapshot,
        failing: &BTreeSet<String>,
        batch_failed: bool,
        time: u64,
    ) -> u64 {
        let mut rolled_back = 0;
        for (index, slot) in probation.iter_mut().enumerate() {
            let Some(trial) = slot else { continue };
            let version = &serving[index];
            if trial.version != version.id {
                continue;
            }
            if !failing.contains(&version.plugin) {
                if !batch_failed {
                    *slot = None; // it served a batch cleanly: no longer on probation
                }
                continue;
            }
            trial.failures += 1;
            if self.rollback_after == 0 || trial.failures < self.rollback_after {
                continue;
            }
            if let Some((from, to)) = self.registry.rollback(index) {
                rolled_back += 1;
                self.registry.note(
                    &from.plugin,
                    "auto_rolled_back",
                    Some(from.short_hash()),
                    Some(to.short_hash()),
                    format!("failed {} batches in a row, the last {time}", trial.failures),
                );
                self.metrics.auto_rollback();
                tracing::warn!(
                    plugin = %from.plugin,
                    from = %from.short_hash(),
                    to = %to.short_hash(),
                    failed_batches = trial.failures,
                    last_failed_batch = time,
                    "plugin rolled back automatically: the new version failed {} batches in a row; deploy a fixed version to go forward (a watched file that held the failing version still does)",
                    trial.failures
                );
                *slot = None;
                restored[index] = Some(to.id);
            }
        }
        rolled_back
    }
}

/// Attempts after the first for a sink or checkpoint write, and the pauses before them.
pub const SINK_RETRIES: [u64; 3] = [100, 500, 2_000];

/// Runs `write`, retrying after each pause of [`SINK_RETRIES`] while it fails.
fn with_retries<T, E: std::fmt::Display>(
    time: u64,
    what: &str,
    mut write: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut pauses = SINK_RETRIES.iter();
    loop {
        match write() {
            Ok(done) => return Ok(done),
            Err(err) => match pauses.next() {
                Some(&ms) => {
                    tracing::warn!(batch = time, target = what, retry_in_ms = ms, "write failed: {err}");
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                None => {
                    tracing::error!(batch = time, target = what, "write failed: {err}");
                    return Err(err);
                }
            },
        }
    }
}

fn versions(snapshot: &Snapshot) -> String {
    let list: Vec<String> = snapshot.iter().map(|v| format!("{}@{}", v.plugin, v.short_hash())).collect();
    list.join(" ")
}
