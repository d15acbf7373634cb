//! `sluice test`: a pipeline run on files instead of its sources, deterministically. Each
//! source's records come from a file (`input.rs`), cut into batches by the file, not the clock;
//! batch N's time is N × `batch_interval`; the last batch closes every event-time window. The
//! stages run as in `sluice run` — the real Wasm plugins, their `on_error` policies, state and
//! windows across batches — and what reaches each sink is printed per batch or compared with
//! golden files (`golden.rs`).
//!
//! **Owns:** test input, batch cutting and times, rendering a test's output. **Never touches:**
//! sources, sinks, checkpoints: nothing outside the golden directory is written.

pub(crate) mod golden;
pub(crate) mod input;

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::block::{Block, Partition, records};
use crate::codec::render;
use crate::graph::{DeadLetter, GraphState, run_batch};
use crate::pipeline::Pipeline;
use input::Cut;
use sluice_sdk::TypeDesc;

/// One batch of a test run, rendered.
#[derive(Debug)]
pub(crate) struct TestBatch {
    /// Its batch time, ms.
    pub(crate) time: u64,
    /// Every stream's records (None: not computed).
    pub(crate) streams: Vec<Option<Vec<String>>>,
    /// Each dead-letter sink's records.
    pub(crate) letters: Vec<Vec<String>>,
    /// Failures a stage's `on_error` absorbed.
    pub(crate) handled: Vec<String>,
}

/// Runs `pipeline` on `inputs` (source name → file), cut by `cut`. An error names the source,
/// the file and line, or the batch and stage that failed.
pub(crate) fn run(pipeline: &Pipeline, inputs: &[(String, PathBuf)], cut: Cut) -> Result<Vec<TestBatch>, String> {
    let config = &pipeline.file.config;
    let graph = &pipeline.graph.unfused();
    let mut files: Vec<Option<&PathBuf>> = vec![None; config.sources.len()];
    for (name, path) in inputs {
        let Some(index) = config.sources.iter().position(|s| s.name() == name) else {
            let known: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
            return Err(format!(
                "--input {name}=...: the pipeline has no source `{name}` (its sources: {})",
                known.join(", ")
            ));
        };
        if files[index].replace(path).is_some() {
            return Err(format!("--input {name}=...: given twice"));
        }
    }
    let mut per_source = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = config.sources[index].name();
        let Some(path) = file else {
            return Err(format!("source `{name}` has no input: add --input {name}=FILE"));
        };
        per_source.push(input::batches(path, &graph.streams[index].ty, cut)?);
    }
    let count = per_source.iter().map(Vec::len).max().unwrap_or(0);
    let interval = crate::fields::millis(config.pipeline.batch_interval);
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("sluice-test-{i}"))
        .build()
        .map_err(|err| format!("cannot start the worker threads: {err}"))?;
    let snapshot = pipeline.registry.snapshot();
    let mut state = GraphState::default();
    let mut batches = Vec::with_capacity(count);
    for index in 0..count {
        let time = interval * (index as u64 + 1);
        let blocks: Vec<Block> = per_source
            .iter_mut()
            .enumerate()
            .filter_map(|(source, batches)| {
                let batch = std::mem::replace(batches.get_mut(index)?, Partition { data: Vec::new(), records: 0 });
                Some(Block {
                    source,
                    seq: index as u64,
                    records: batch.records,
                    invalid: 0,
                    data: batch.data,
                    task: None,
                })
            })
            .collect();
        let outcome = run_batch(graph, &mut state, &snapshot, time, index + 1 == count, blocks, &pool)
            .map_err(|err| format!("batch {} (time {time} ms) failed: {err}", index + 1))?;
        let streams = outcome
            .streams
            .iter()
            .zip(&graph.streams)
            .map(|(partitions, stream)| partitions.as_ref().map(|p| rendered(&stream.ty, p)))
            .collect();
        let mut letters = vec![Vec::new(); graph.dead_letters.len()];
        for (letter, partition) in &outcome.dead_letters {
            letters[*letter].extend(rendered(&DeadLetter::type_desc(), std::slice::from_ref(partition)));
        }
        let handled = outcome
            .handled
            .iter()
            .map(|h| {
                format!(
                    "{} ({} record{} {}): {}",
                    h.error.stage,
                    h.records,
                    if h.records == 1 { "" } else { "s" },
                    h.action.name(),
                    h.error
                )
            })
            .collect();
        batches.push(TestBatch { time, streams, letters, handled });
    }
    Ok(batches)
}

fn rendered(ty: &TypeDesc, partitions: &[Partition]) -> Vec<String> {
    records(partitions)
        .map(|record| {
            let mut line = String::new();
            render(ty, record, &mut line);
            line
        })
        .collect()
}

/// What a test run prints without golden files: per batch, each stage's output.
pub(crate) fn report(pipeline: &Pipeline, batches: &[TestBatch]) -> String {
    let graph = &pipeline.graph.unfused();
    let mut text = String::new();
    for (index, batch) in batches.iter().enumerate() {
        let records: usize = (0..graph.sources).filter_map(|s| batch.streams[s].as_ref()).map(Vec::len).sum();
        let _ = writeln!(text, "=== batch {} (time {} ms): {records} records in", index + 1, batch.time);
        for stage in &graph.stages {
            let lines = batch.streams[stage.output].as_deref().unwrap_or_default();
            let name = &graph.streams[stage.output].name;
            let _ = writeln!(text, "--- {name} ({}): {} records", stage.operator.name(), lines.len());
            for line in lines {
                let _ = writeln!(text, "{line}");
            }
        }
        for (letters, sink) in batch.letters.iter().zip(&graph.dead_letters).filter(|(l, _)| !l.is_empty()) {
            let _ = writeln!(text, "--- dead letters to `{}`: {} records", sink.name(), letters.len());
            for line in letters {
                let _ = writeln!(text, "{line}");
            }
        }
        for handled in &batch.handled {
            let _ = writeln!(text, "!!! {handled}");
        }
    }
    text
}

/// Each sink's records per batch, sorted, by sink name: what golden files hold.
pub(crate) fn sink_outputs(pipeline: &Pipeline, batches: &[TestBatch]) -> Vec<(String, golden::Batches)> {
    let graph = &pipeline.graph;
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };
    let mut outputs: Vec<(String, golden::Batches)> = graph
        .sinks
        .iter()
        .map(|sink| {
            let per_batch = batches.iter().map(|b| sorted(b.streams[sink.input].clone().unwrap_or_default())).collect();
            (sink.config.name().to_string(), per_batch)
        })
        .collect();
    outputs.extend(graph.dead_letters.iter().enumerate().map(|(index, sink)| {
        (sink.name().to_string(), batches.iter().map(|b| sorted(b.letters[index].clone())).collect())
    }));
    outputs
}
