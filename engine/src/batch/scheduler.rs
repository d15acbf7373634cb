//! The job scheduler: runs one job per batch, in batch order, each job's partitions in parallel
//! on the worker pool; writes the sinks; reports each batch in one line; logs plugin swaps with
//! the first batch they serve.

use std::sync::mpsc::Receiver as Queue;
use std::time::Instant;

use crate::graph::{Graph, GraphState, run_batch};
use crate::metrics::{BatchFigures, Metrics};
use crate::runtime::registry::{PluginRegistry, Snapshot};
use crate::sinks::Sink;

use super::{Batch, now_ms};

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Batches run.
    pub batches: u64,
    /// Batches that failed (a plugin error); their output was not written.
    pub failed_batches: u64,
    /// Records received.
    pub records: u64,
    /// Lines dropped as not UTF-8.
    pub invalid_lines: u64,
    /// Plugin swaps that took effect.
    pub swaps: u64,
    /// Records that arrived after the watermark closed their event-time windows.
    pub late_records: u64,
    /// Time spent processing batches (stages and sinks), summed.
    pub processing: std::time::Duration,
}

/// Runs batches from `queue` until it closes.
pub fn run(
    graph: &Graph,
    registry: &PluginRegistry,
    sinks: &mut [Sink],
    pool: &rayon::ThreadPool,
    queue: Queue<Batch>,
    metrics: &Metrics,
) -> RunReport {
    let mut report = RunReport::default();
    let mut serving: Snapshot = registry.snapshot();
    let mut state = GraphState::default();
    while let Ok(batch) = queue.recv() {
        let started = Instant::now();
        let scheduling_delay = now_ms().saturating_sub(batch.time_ms);
        let snapshot = registry.snapshot();
        for (old, new) in serving.iter().zip(snapshot.iter()) {
            if old.id != new.id {
                report.swaps += 1;
                metrics.swap();
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
        let records: u64 = batch.blocks.iter().map(|b| b.records).sum();
        let invalid: u64 = batch.blocks.iter().map(|b| b.invalid).sum();
        let blocks = batch.blocks.len();
        report.batches += 1;
        report.records += records;
        report.invalid_lines += invalid;
        if invalid > 0 {
            tracing::warn!(batch = batch.time_ms, lines = invalid, "dropped lines that are not UTF-8");
        }
        let mut outputs = 0u64;
        let failed_before = report.failed_batches;
        match run_batch(graph, &mut state, &serving, batch.time_ms, batch.last, batch.blocks, pool) {
            Ok(streams) => {
                let late = state.late_records() - report.late_records;
                if late > 0 {
                    tracing::warn!(
                        batch = batch.time_ms,
                        records = late,
                        "late records: their event-time windows had closed"
                    );
                    report.late_records += late;
                    metrics.late(late);
                }
                for (sink, node) in sinks.iter_mut().zip(&graph.sinks) {
                    let partitions = streams[node.input].as_deref().unwrap_or_default();
                    match sink.write(batch.time_ms, &graph.streams[node.input].ty, partitions) {
                        Ok(written) => outputs += written,
                        Err(err) => {
                            tracing::error!(batch = batch.time_ms, sink = node.config.name(), "sink failed: {err}")
                        }
                    }
                }
            }
            Err(err) => {
                report.failed_batches += 1;
                metrics.plugin_error(&err.plugin, err.error.class().name());
                tracing::error!(batch = batch.time_ms, class = %err.error.class(), "batch failed: {err}");
            }
        }
        metrics.batch(BatchFigures {
            time_ms: batch.time_ms,
            records,
            scheduling_delay_ms: scheduling_delay,
            processing_ms: started.elapsed().as_millis() as u64,
            failed: failed_before != report.failed_batches,
        });
        report.processing += started.elapsed();
        let processing = started.elapsed().as_millis() as u64;
        tracing::info!(
            target: "sluice::batch",
            "batch {} ms: {records} records in {blocks} block{}, scheduling delay {scheduling_delay} ms, processing {processing} ms, total delay {} ms, {outputs} records out [{}]",
            batch.time_ms,
            if blocks == 1 { "" } else { "s" },
            scheduling_delay + processing,
            versions(&serving),
        );
    }
    report
}

fn versions(snapshot: &Snapshot) -> String {
    let list: Vec<String> = snapshot.iter().map(|v| format!("{}@{}", v.plugin, v.short_hash())).collect();
    list.join(" ")
}
