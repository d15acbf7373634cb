//! The job scheduler: runs one job per batch, in batch order, each job's partitions in parallel
//! on the worker pool. Each batch goes through four steps, each its own function:
//!
//! 1. **begin**: take the plugin versions that serve the whole batch (a swap takes effect
//!    here), replay a logged batch's input through its sources, count what it holds;
//! 2. **execute**: run the graph; failures a stage's policy absorbs are counted, a failed
//!    batch puts every stage's state back;
//! 3. **commit**: write every sink, then commit every sink, then the checkpoint, then let the
//!    sources commit (what a sink or the checkpoint cannot take after retries stops the run);
//! 4. **control**: figures and events, backpressure rates, automatic rollback of a swapped-in
//!    version that keeps failing, the batch's summary line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver as Queue;
use std::time::Instant;

use crate::checkpoint::{self, Checkpoint};
use crate::graph::{BatchOutcome, DeadLetter, Graph, GraphState, Part, StageCheckpoint, run_part};
use crate::metrics::events::BatchInfo;
use crate::metrics::{BatchFigures, Metrics};
use crate::receiver::Receiver;
use crate::receiver::rate::PidEstimator;
use crate::runtime::event::PluginEvent;
use crate::runtime::registry::{PluginRegistry, Snapshot};
use crate::sinks::{BatchRef, Sink, SinkError};
use crate::sources::Sources;

use super::Batch;
use crate::block::{Backlog, Task, now_ms};

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

/// What stops a run: a sink or the checkpoint that cannot take a batch after retries.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A sink's write failed.
    #[error("sink `{sink}` cannot write batch {batch}: {source}")]
    Write {
        /// The sink.
        sink: String,
        /// The batch.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// A dead-letter sink's write failed.
    #[error("dead-letter sink `{sink}` cannot write batch {batch}: {source}")]
    WriteDeadLetters {
        /// The sink.
        sink: String,
        /// The batch.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// A sink's commit failed.
    #[error("sink `{sink}` cannot commit batch {batch}: {source}")]
    Commit {
        /// The sink.
        sink: String,
        /// The batch.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// A dead-letter sink's commit failed.
    #[error("dead-letter sink `{sink}` cannot commit batch {batch}: {source}")]
    CommitDeadLetters {
        /// The sink.
        sink: String,
        /// The batch.
        batch: u64,
        /// Why.
        source: SinkError,
    },
    /// A repartition partition's keyed state could not be kept.
    #[error("cannot keep the keyed state of {task} after batch {batch}: {source}")]
    KeyedState {
        /// The batch.
        batch: u64,
        /// The task.
        task: String,
        /// Why.
        source: Box<crate::cluster::store::StoreError>,
    },
    /// The checkpoint could not be written.
    #[error("cannot write the checkpoint of batch {batch}: {source}")]
    Checkpoint {
        /// The batch.
        batch: u64,
        /// Why.
        source: checkpoint::CheckpointError,
    },
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
    pub sinks: Vec<Box<dyn Sink>>,
    /// Dead-letter sinks, like `graph.dead_letters`.
    pub dead_letters: Vec<Box<dyn Sink>>,
    /// Workers.
    pub pool: &'a rayon::ThreadPool,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Every source: positions for checkpoints, commits after them, replays.
    pub sources: Arc<Sources>,
    /// Every source's receiver (names, rates).
    pub receivers: Vec<Arc<Receiver>>,
    /// Batches waiting; the scheduler takes them off.
    pub backlog: Backlog,
    /// Checkpoints, if on.
    pub checkpointing: Option<Checkpointing>,
    /// Backpressure: one estimator per rate-adapted source, with its `max_rate`.
    pub backpressure: BTreeMap<usize, (PidEstimator, Option<u64>)>,
    /// `[pipeline] rollback_after`.
    pub rollback_after: u32,
    /// A cluster's member: the agent that says which versions serve a batch (installed before
    /// it starts), and rolls back cluster-wide.
    pub cluster: Option<Arc<crate::cluster::Agent>>,
    /// A cluster with a keyed stage: where source tasks send the keyed stage's records.
    pub shuffle: Option<crate::sinks::shuffle::ShuffleWriter>,
    /// A cluster with a keyed stage: each repartition partition's state.
    pub keyed: Option<super::keyed::KeyedStates>,
}

/// Per plugin: the version swapped in that has not yet served a batch without failing, and its
/// failed batches in a row.
#[derive(Debug, Default, Clone)]
struct Probation {
    version: u64,
    failures: u32,
}

/// What lives across batches in one run.
#[derive(Debug)]
struct RunState {
    report: RunReport,
    state: GraphState,
    /// Late records counted so far (the checkpointed state's included).
    late_before: u64,
    serving: Snapshot,
    probation: Vec<Option<Probation>>,
    /// Versions an automatic rollback returned to: trusted, not on probation.
    restored: Vec<Option<u64>>,
    /// Plugins' shadows (`sluice deploy --shadow`) and their state.
    shadows: super::shadow::Shadows,
}

/// One task's output: a cluster's source partition (None: the whole batch).
#[derive(Debug)]
struct TaskOutcome {
    task: Option<Arc<Task>>,
    outcome: BatchOutcome,
    /// A repartition partition's task: its state after it, encoded, to keep once it committed.
    state: Option<Vec<u8>>,
}

/// A batch's blocks by task, in the order tasks first appear; one task (None) with every block
/// outside a cluster, and for a batch with no blocks.
fn tasks(blocks: Vec<crate::block::Block>) -> Vec<(Option<Arc<Task>>, Vec<crate::block::Block>)> {
    let mut groups: Vec<(Option<Arc<Task>>, Vec<crate::block::Block>)> = Vec::new();
    for block in blocks {
        match groups.iter_mut().find(|(task, _)| *task == block.task) {
            Some((_, group)) => group.push(block),
            None => groups.push((block.task.clone(), vec![block])),
        }
    }
    if groups.is_empty() {
        groups.push((None, Vec::new()));
    }
    groups
}

/// Adds one task's stage figures to the batch's.
fn add_figures(total: &mut Vec<crate::metrics::events::StageFigures>, more: Vec<crate::metrics::events::StageFigures>) {
    // By name: the two sides of a cluster's shuffle run different stages.
    for part in more {
        match total.iter_mut().find(|sum| sum.name == part.name) {
            Some(sum) => {
                sum.records_in += part.records_in;
                sum.records_out += part.records_out;
                sum.calls += part.calls;
                sum.micros += part.micros;
            }
            None => total.push(part),
        }
    }
}

/// One batch on its way through the scheduler.
#[derive(Debug)]
struct Job {
    batch: BatchRef<'static>,
    last: bool,
    close_windows: bool,
    blocks: Vec<crate::block::Block>,
    block_count: usize,
    started: Instant,
    scheduling_delay: u64,
    records: u64,
    /// Records per source index.
    source_records: BTreeMap<usize, u64>,
    info: BatchInfo,
    failed: bool,
    /// Plugins whose calls failed in this batch.
    failing: BTreeSet<String>,
    outputs: u64,
}

impl Scheduler<'_> {
    /// Runs batches from `queue` until it closes, starting from `state`.
    pub fn run(mut self, state: GraphState, queue: Queue<Batch>) -> RunReport {
        let serving = self.registry.snapshot();
        let mut run = RunState {
            report: RunReport::default(),
            late_before: state.late_records(),
            state,
            probation: vec![None; serving.len()],
            restored: vec![None; serving.len()],
            serving,
            shadows: super::shadow::Shadows::default(),
        };
        while let Ok(batch) = queue.recv() {
            let mut job = self.begin(&mut run, batch);
            let outcome = self.execute(&mut run, &mut job);
            if let Err(failure) = self.commit(&mut run, &mut job, outcome) {
                run.report.fatal = Some(failure.to_string());
                break;
            }
            self.control(&mut run, job);
        }
        run.report
    }

    /// Starts a batch: takes the plugin versions that serve it (noting swaps), replays a
    /// logged batch's input, counts what it holds.
    fn begin(&mut self, run: &mut RunState, mut batch: Batch) -> Job {
        let replayed = batch.replayed();
        if !replayed {
            self.backlog.started();
        }
        let started = Instant::now();
        let scheduling_delay = now_ms().saturating_sub(batch.time_ms);
        if let Some(cluster) = &self.cluster {
            cluster.before_batch(batch.time_ms); // the swaps the cluster decided for this batch
        }
        let snapshot = self.registry.snapshot();
        for (index, (old, new)) in run.serving.iter().zip(snapshot.iter()).enumerate() {
            if old.id != new.id {
                run.report.swaps += 1;
                let trusted = run.restored[index] == Some(new.id)
                    || self.cluster.as_ref().is_some_and(|cluster| cluster.rolled_back_to(index, new.id));
                run.probation[index] = (!trusted).then_some(Probation { version: new.id, failures: 0 });
                self.registry.emit(PluginEvent::Swapped {
                    plugin: new.plugin.clone(),
                    from: old.short_hash().to_string(),
                    to: new.short_hash().to_string(),
                    first_batch: batch.time_ms,
                });
            }
        }
        run.serving = snapshot;
        if let Some(logged) = batch.logged.take() {
            batch.blocks = self.sources.replay(batch.time_ms, logged);
        }
        let records: u64 = batch.blocks.iter().map(|b| b.records).sum();
        let invalid: u64 = batch.blocks.iter().map(|b| b.invalid).sum();
        let mut source_records: BTreeMap<usize, u64> = BTreeMap::new();
        for block in &batch.blocks {
            *source_records.entry(block.source).or_default() += block.records;
        }
        self.metrics.events.started(batch.time_ms, records, scheduling_delay);
        let info = BatchInfo {
            time_ms: batch.time_ms,
            records,
            sources: source_records.iter().map(|(&s, &n)| (self.receivers[s].name.clone(), n)).collect(),
            scheduling_delay_ms: scheduling_delay,
            replayed,
            versions: version_names(&run.serving),
            ..BatchInfo::default()
        };
        let report = &mut run.report;
        report.batches += 1;
        report.replayed_batches += u64::from(replayed);
        report.records += records;
        report.invalid_lines += invalid;
        if invalid > 0 {
            tracing::warn!(batch = batch.time_ms, lines = invalid, "dropped lines that are not UTF-8");
        }
        Job {
            batch: BatchRef { time_ms: batch.time_ms, replayed, task: None, versions: &[] },
            last: batch.last,
            close_windows: batch.close_windows,
            block_count: batch.blocks.len(),
            blocks: batch.blocks,
            started,
            scheduling_delay,
            records,
            source_records,
            info,
            failed: false,
            failing: BTreeSet::new(),
            outputs: 0,
        }
    }

    /// Runs the graph over the batch, once per task (a cluster's source partition; one run with
    /// every block otherwise), accounting for the failures its policies absorbed. A failed
    /// batch (None) puts every stage's state back to the last good one.
    fn execute(&mut self, run: &mut RunState, job: &mut Job) -> Option<Vec<TaskOutcome>> {
        let mut outcomes = Vec::new();
        for (task, blocks) in tasks(std::mem::take(&mut job.blocks)) {
            let time = task.as_ref().map_or(job.batch.time_ms, |t| t.batch_ms);
            let keyed = task.as_ref().and_then(|t| t.keyed.as_ref());
            let part = match (&self.graph.shuffle, keyed) {
                (Some(shuffle), Some(_)) => Part::Keyed(shuffle),
                (Some(shuffle), None) => Part::Sources(shuffle),
                (None, _) => Part::Whole,
            };
            // A repartition partition's task runs on that partition's state; any other on the
            // run's (a cluster's source tasks keep none).
            let (through, mut state) = match (keyed, self.keyed.as_mut()) {
                (Some(keyed), Some(states)) => match states.take(self.graph, keyed) {
                    Some(held) => held,
                    None => continue, // its entry is in the kept state already
                },
                _ => (None, std::mem::take(&mut run.state)),
            };
            let before = keyed.map(|_| state.clone());
            // A whole batch (not a cluster's task) also runs in each plugin's shadow, if any.
            let shadow = match task {
                None => run.shadows.prepare(self.registry, &run.serving, &state).map(|s| (s, blocks.clone())),
                Some(_) => None,
            };
            let outcome = self.execute_task(run, job, time, part, &mut state, blocks);
            if let Some((snapshot, blocks)) = shadow {
                let (graph, registry, pool) = (self.graph, self.registry, self.pool);
                let serving = outcome.as_ref();
                run.shadows.run(graph, registry, pool, &snapshot, time, job.close_windows, blocks, serving, &state);
            }
            let mut encoded = None;
            match (keyed, self.keyed.as_mut()) {
                (Some(keyed), Some(states)) => {
                    // A failed task's records are dropped: so is what it did to the state.
                    let (through, state) = match outcome.is_some() {
                        true => {
                            encoded = Some(states.encode(self.graph, &state, time, &run.serving));
                            (Some(keyed.seq), state)
                        }
                        false => (through, before.expect("taken for a keyed task")),
                    };
                    states.put_back(keyed, through, state);
                }
                _ => run.state = state,
            }
            match outcome {
                Some(outcome) => outcomes.push(TaskOutcome { task, outcome, state: encoded }),
                // A cluster's task fails alone: its output is dropped as a failed batch's is,
                // the other tasks' is written.
                None if task.is_some() => {}
                None => return None,
            }
        }
        Some(outcomes)
    }

    /// Runs `part` of the graph over one task's blocks, as of batch time `time`, on `state`.
    fn execute_task(
        &mut self,
        run: &mut RunState,
        job: &mut Job,
        time: u64,
        part: Part<'_>,
        state: &mut GraphState,
        blocks: Vec<crate::block::Block>,
    ) -> Option<BatchOutcome> {
        // A cluster's replayed entry runs with the versions that served its own batch time
        // across the cluster, not with this batch's (its output must not change on a replay).
        let serving = self.cluster.as_ref().and_then(|c| c.serving_at(time)).unwrap_or_else(|| run.serving.clone());
        match run_part(self.graph, part, state, &serving, time, job.close_windows, blocks, self.pool) {
            Ok(outcome) => {
                let late = state.late_records().saturating_sub(run.late_before);
                run.late_before = state.late_records();
                if late > 0 {
                    tracing::warn!(batch = time, records = late, "late records: their event-time windows had closed");
                    run.report.late_records += late;
                    self.metrics.late(late);
                }
                for handled in &outcome.handled {
                    let error = &handled.error;
                    let class = error.error.class().name();
                    self.metrics.events.call_failed(&error.stage, &error.plugin, &error.version, class);
                    *job.info.errors.entry(class.to_string()).or_default() += 1;
                    job.failing.insert(error.plugin.clone());
                    run.report.diverted_records += handled.records;
                    self.metrics.plugin_error(&error.plugin, class);
                    self.metrics.diverted(&error.stage, handled.action.name(), handled.records);
                }
                Some(outcome)
            }
            Err(err) => {
                job.failed = true;
                run.report.failed_batches += 1;
                job.failing.insert(err.plugin.clone());
                let class = err.error.class().name();
                self.metrics.plugin_error(&err.plugin, class);
                self.metrics.events.call_failed(&err.stage, &err.plugin, &err.version, class);
                *job.info.errors.entry(class.to_string()).or_default() += 1;
                job.info.error = Some(err.to_string());
                tracing::error!(batch = time, class = %err.error.class(), "batch failed: {err}");
                if let Some(checkpointing) = &self.checkpointing {
                    // Stages before the failing one took the batch in: put the state back.
                    *state = GraphState::import(self.graph, checkpointing.last_good.clone())
                        .expect("the last checkpoint was written from this graph");
                }
                None
            }
        }
    }

    /// Writes and commits the sinks, then the checkpoint, then lets the sources commit. Err:
    /// what could not be written after retries (the run stops without a checkpoint).
    fn commit(
        &mut self,
        run: &mut RunState,
        job: &mut Job,
        outcomes: Option<Vec<TaskOutcome>>,
    ) -> Result<(), CommitError> {
        for TaskOutcome { task, outcome, state } in outcomes.unwrap_or_default() {
            // The versions that computed it: a cluster's replayed task ran with its own time's.
            let serving = match &task {
                Some(task) => self.cluster.as_ref().and_then(|c| c.serving_at(task.batch_ms)),
                None => None,
            };
            let versions = version_names(serving.as_ref().unwrap_or(&run.serving));
            let batch = match &task {
                None => BatchRef { versions: &versions, ..job.batch },
                Some(task) if !task.owned() => {
                    tracing::warn!(batch = task.batch_ms, task = %task.name, "partition revoked: its output of this batch is not written (its next owner replays it)");
                    if let (Some(keyed), Some(states)) = (&task.keyed, self.keyed.as_mut()) {
                        states.forget(keyed);
                    }
                    continue;
                }
                Some(task) => BatchRef {
                    time_ms: task.batch_ms,
                    replayed: task.replayed,
                    task: Some(&task.name),
                    versions: &versions,
                },
            };
            if let (Some(task), Some(shuffled)) = (&task, &outcome.shuffled) {
                self.send_shuffled(task, shuffled)?;
            }
            job.outputs += self.write(batch, &outcome)?;
            if let (Some(task), Some(state)) = (&task, state) {
                self.keep_state(task, state)?;
            }
            add_figures(&mut job.info.stages, outcome.stages);
        }
        let checkpointed = self.checkpoint(job, &run.state, &run.serving)?;
        // Without checkpoints, a batch is as final as it gets once its sinks committed.
        let through = if self.checkpointing.is_none() { Some(job.batch.time_ms) } else { checkpointed };
        if let Some(through) = through {
            self.sources.commit(through);
        }
        Ok(())
    }

    /// After a batch: its figures and event, new rates, automatic rollbacks, the summary line.
    fn control(&mut self, run: &mut RunState, mut job: Job) {
        let time = job.batch.time_ms;
        let processing = crate::fields::millis(job.started.elapsed());
        let scheduling_delay = job.scheduling_delay;
        self.metrics.batch(BatchFigures {
            time_ms: time,
            records: job.records,
            scheduling_delay_ms: scheduling_delay,
            processing_ms: processing,
            failed: job.failed,
        });
        run.report.processing += job.started.elapsed();
        job.info.processing_ms = processing;
        job.info.outputs = job.outputs;
        self.metrics.events.completed(job.info);
        self.adapt_rates(time, &job.source_records, processing, scheduling_delay);
        for (index, version) in run.serving.iter().enumerate() {
            self.registry.note_served(index, version.short_hash(), time);
        }
        if job.records > 0 {
            // An empty batch calls no plugin: it proves nothing either way.
            run.report.auto_rollbacks += self.probation(run, &job.failing, job.failed, time);
        }
        tracing::info!(
            target: "sluice::batch",
            "batch {time} ms{}: {} records in {} block{}, scheduling delay {scheduling_delay} ms, processing {processing} ms, total delay {} ms, {} records out [{}]",
            if job.batch.replayed { " (replayed)" } else { "" },
            job.records,
            job.block_count,
            if job.block_count == 1 { "" } else { "s" },
            scheduling_delay + processing,
            job.outputs,
            versions(&run.serving),
        );
    }

    /// Writes a batch's streams to the sinks and its dead letters to theirs, then commits every
    /// sink; each write and commit is retried [`SINK_RETRIES`] times. Returns the records
    /// written, or what could not be written.
    fn write(&mut self, batch: BatchRef<'_>, outcome: &BatchOutcome) -> Result<u64, CommitError> {
        let time = batch.time_ms;
        let mut outputs = 0;
        for (sink, node) in self.sinks.iter_mut().zip(&self.graph.sinks) {
            // Each side of a cluster's shuffle writes the sinks of the streams it computed.
            if self.graph.shuffle.is_some() && outcome.streams[node.input].is_none() {
                continue;
            }
            let partitions = outcome.streams[node.input].as_deref().unwrap_or_default();
            let ty = &self.graph.streams[node.input].ty;
            outputs += with_retries(time, node.config.name(), || sink.write(batch, ty, partitions))
                .map_err(|source| CommitError::Write { sink: node.config.name().to_string(), batch: time, source })?;
        }
        let letter = DeadLetter::type_desc();
        let mut lettered = vec![false; self.dead_letters.len()];
        for (index, sink) in self.dead_letters.iter_mut().enumerate() {
            let parts: Vec<_> =
                outcome.dead_letters.iter().filter(|(s, _)| *s == index).map(|(_, p)| p.clone()).collect();
            if parts.is_empty() {
                continue;
            }
            lettered[index] = true;
            let name = self.graph.dead_letters[index].name();
            with_retries(time, name, || sink.write(batch, &letter, &parts))
                .map_err(|source| CommitError::WriteDeadLetters { sink: name.to_string(), batch: time, source })?;
        }
        // Every sink has written: now the batch's output becomes final everywhere.
        for (sink, node) in self.sinks.iter_mut().zip(&self.graph.sinks) {
            with_retries(time, node.config.name(), || sink.commit(batch)).map_err(|source| CommitError::Commit {
                sink: node.config.name().to_string(),
                batch: time,
                source,
            })?;
        }
        for (index, sink) in self.dead_letters.iter_mut().enumerate().filter(|(i, _)| lettered[*i]) {
            let name = self.graph.dead_letters[index].name();
            with_retries(time, name, || sink.commit(batch)).map_err(|source| CommitError::CommitDeadLetters {
                sink: name.to_string(),
                batch: time,
                source,
            })?;
        }
        Ok(outputs)
    }

    /// A cluster's source task: its records for the keyed stage to the repartition topic, all
    /// delivered before its sinks commit.
    fn send_shuffled(&self, task: &Task, shuffled: &[crate::block::Partition]) -> Result<(), CommitError> {
        let Some(writer) = &self.shuffle else { return Ok(()) };
        with_retries(task.batch_ms, "shuffle", || writer.write(&task.name, task.batch_ms, shuffled))
            .map(drop)
            .map_err(|source| CommitError::Write { sink: writer.topic().to_string(), batch: task.batch_ms, source })
    }

    /// A repartition partition's task committed: its state is kept under its log entry.
    fn keep_state(&self, task: &Task, state: Vec<u8>) -> Result<(), CommitError> {
        let (Some(keyed), Some(states)) = (&task.keyed, &self.keyed) else { return Ok(()) };
        with_retries(task.batch_ms, "keyed state", || states.save(keyed, state.clone())).map_err(|source| {
            CommitError::KeyedState { batch: task.batch_ms, task: task.name.clone(), source: Box::new(source) }
        })
    }

    /// Writes the checkpoint of a finished batch, if checkpoints are on and it is its turn.
    /// Returns the batch time it covers, if one was written.
    fn checkpoint(&mut self, job: &Job, state: &GraphState, serving: &Snapshot) -> Result<Option<u64>, CommitError> {
        let Some(checkpointing) = &mut self.checkpointing else { return Ok(None) };
        let time = job.batch.time_ms;
        let started = Instant::now();
        let stages = state.export(self.graph);
        checkpointing.since += 1;
        if checkpointing.since < checkpointing.every && !job.last {
            // Not this batch: its inputs stay logged until a later checkpoint covers them.
            checkpointing.last_good = stages;
            return Ok(None);
        }
        checkpointing.since = 0;
        let checkpoint = Checkpoint {
            pipeline: checkpointing.pipeline.clone(),
            batch_interval_ms: checkpointing.batch_interval_ms,
            batch_time: time,
            written_at_ms: now_ms(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            plugins: serving.iter().map(|v| (v.plugin.clone(), v.hash.clone())).collect(),
            sources: self.sources.positions(time),
            stages,
        };
        let bytes = checkpoint::encode(&checkpoint);
        with_retries(time, "checkpoint", || checkpoint::write(&checkpointing.dir, time, &bytes))
            .map_err(|source| CommitError::Checkpoint { batch: time, source })?;
        checkpointing.last_good = checkpoint.stages;
        self.metrics.checkpoint(started.elapsed());
        Ok(Some(time))
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
    fn probation(&self, run: &mut RunState, failing: &BTreeSet<String>, batch_failed: bool, time: u64) -> u64 {
        let mut rolled_back = 0;
        for (index, slot) in run.probation.iter_mut().enumerate() {
            let Some(trial) = slot else { continue };
            let version = &run.serving[index];
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
            if let Some(cluster) = &self.cluster {
                // Every member swaps back at one batch boundary: proposed like `sluice rollback`.
                tracing::warn!(plugin = %version.plugin, failed_batches = trial.failures,
                    "the new version keeps failing: proposing a cluster rollback");
                cluster.roll_back_detached(index);
                rolled_back += 1;
                *slot = None;
                continue;
            }
            if let Some((from, to)) = self.registry.rollback(index) {
                rolled_back += 1;
                self.registry.emit(PluginEvent::AutoRolledBack {
                    plugin: from.plugin.clone(),
                    from: from.short_hash().to_string(),
                    to: to.short_hash().to_string(),
                    failed_batches: trial.failures,
                    last_failed_batch: time,
                });
                *slot = None;
                run.restored[index] = Some(to.id);
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

/// `plugin@short hash` of each version of `snapshot`.
fn version_names(snapshot: &Snapshot) -> Vec<String> {
    snapshot.iter().map(|v| format!("{}@{}", v.plugin, v.short_hash())).collect()
}

fn versions(snapshot: &Snapshot) -> String {
    version_names(snapshot).join(" ")
}
