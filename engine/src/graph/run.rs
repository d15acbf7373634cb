//! Running one batch through the graph: stage by stage, each stage's partitions in parallel on
//! the worker pool, every plugin call with the versions of the batch's snapshot.

use rayon::prelude::*;
use sluice_sdk::abi::{self, FunctionKind};

use std::sync::Arc;

use sluice_sdk::TypeDesc;

use super::ops::RecordFailure;
use super::state::GraphState;
use super::{FunctionRef, Graph, Operator, Shuffle, Stage, keyed, ops};
use crate::block::Block;
use crate::block::Partition;
use crate::codec;
use crate::config::OnError;
use crate::metrics::events::StageFigures;
use crate::runtime::CallError;
use crate::runtime::registry::Snapshot;

/// A stage that failed in a batch, with the plugin version that failed.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` ({plugin}@{version}, function `{function}`): {error}")]
pub struct StageError {
    /// The stage.
    pub stage: String,
    /// The plugin (empty for host-only operators).
    pub plugin: String,
    /// Short content hash of the version that failed.
    pub version: String,
    /// The function.
    pub function: String,
    /// What happened.
    pub error: CallError,
}

/// Every stream's partitions for one batch (None for streams no sink needs).
pub(crate) type BatchOutput = Vec<Option<Vec<Partition>>>;

thread_local! {
    /// A worker's buffer for the records between two fused stages, reused across partitions.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A failure inside a fused task: of the fused stage, or of the stage itself.
enum Failed {
    Stage(Box<StageError>),
    Call(CallError),
}

impl From<CallError> for Failed {
    fn from(error: CallError) -> Self {
        Failed::Call(error)
    }
}

/// A plugin failure a stage's policy absorbed: the batch went on without those records.
#[derive(Debug)]
pub(crate) struct Handled {
    /// What failed.
    pub error: Box<StageError>,
    /// `skip` or `dead_letter`.
    pub action: OnError,
    /// Records of the input that did not go through the stage.
    pub records: u64,
}

/// A batch that ran: every stream it computed, and what policies absorbed.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Every stream's partitions (None for streams no sink needs).
    pub(crate) streams: BatchOutput,
    /// Failures skipped or sent to a dead-letter sink.
    pub(crate) handled: Vec<Handled>,
    /// Records for each dead-letter sink (index into `Graph::dead_letters`), as
    /// [`DeadLetter`] frames.
    pub(crate) dead_letters: Vec<(usize, Partition)>,
    /// Each stage's records in and out, calls and time.
    pub(crate) stages: Vec<StageFigures>,
    /// A cluster's source task: what goes to the repartition topic ([`Part::Sources`]).
    pub(crate) shuffled: Option<Vec<Partition>>,
}

/// Which stages a run covers: all, or one side of a cluster's shuffle.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Part<'a> {
    /// Every stage, the blocks into their sources' streams.
    Whole,
    /// A source partition's task: the stages before the shuffle; the records for the keyed
    /// stage come back in [`BatchOutcome::shuffled`].
    Sources(&'a Shuffle),
    /// A repartition partition's task: the blocks are the keyed stage's input; it and the
    /// stages after it run.
    Keyed(&'a Shuffle),
}

/// A record a stage could not process, as its dead-letter sink receives it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct DeadLetter {
    /// Batch time, ms.
    pub batch: u64,
    /// The stage.
    pub stage: String,
    /// The plugin.
    pub plugin: String,
    /// Short content hash of the version that failed.
    pub version: String,
    /// The function.
    pub function: String,
    /// Error class: trap, deadline, memory_limit, guest_error, bad_output.
    pub class: String,
    /// The error.
    pub error: String,
    /// The input record: a line of text as itself, anything else as JSON.
    pub record: String,
}

impl DeadLetter {
    /// The type dead-letter sinks render.
    pub(crate) fn type_desc() -> TypeDesc {
        let field = |name: &str, ty: TypeDesc| (name.to_string(), ty);
        TypeDesc::Struct {
            name: "DeadLetter".into(),
            fields: vec![
                field("batch", TypeDesc::Unsigned(64)),
                field("stage", TypeDesc::String),
                field("plugin", TypeDesc::String),
                field("version", TypeDesc::String),
                field("function", TypeDesc::String),
                field("class", TypeDesc::String),
                field("error", TypeDesc::String),
                field("record", TypeDesc::String),
            ],
        }
    }
}

/// One stage's result in one batch.
struct StageResult {
    output: Vec<Partition>,
    /// `<stage>.late` of an event window.
    late: Option<Vec<Partition>>,
    /// Input partitions (by index) whose call failed, for per-partition policies.
    failed: Vec<(usize, CallError)>,
    /// Records a fallible function failed on: input partition, record index in it, message.
    failed_records: Vec<(usize, u32, String)>,
}

impl From<Vec<Partition>> for StageResult {
    fn from(output: Vec<Partition>) -> Self {
        Self { output, late: None, failed: Vec::new(), failed_records: Vec::new() }
    }
}

/// Runs the stages of `graph` over the `blocks` of batch `time` on `pool`, updating the state of
/// stateful stages in `state`. `last`: no batch follows (event-time windows all close).
///
/// A failing plugin call follows its stage's `on_error`: `retry` calls again, `skip` and
/// `dead_letter` go on without the failing partition (the whole input, for stages that call
/// once per batch or keep state — whose state is then put back as it was); `fail` fails the
/// batch with the error.
pub fn run_batch(
    graph: &Graph,
    state: &mut GraphState,
    snapshot: &Snapshot,
    time: u64,
    last: bool,
    blocks: Vec<Block>,
    pool: &rayon::ThreadPool,
) -> Result<BatchOutcome, Box<StageError>> {
    run_part(graph, Part::Whole, state, snapshot, time, last, blocks, pool)
}

/// [`run_batch`] over `part` of the graph.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_part(
    graph: &Graph,
    part: Part<'_>,
    state: &mut GraphState,
    snapshot: &Snapshot,
    time: u64,
    last: bool,
    blocks: Vec<Block>,
    pool: &rayon::ThreadPool,
) -> Result<BatchOutcome, Box<StageError>> {
    let mut outcome = BatchOutcome { streams: vec![None; graph.streams.len()], ..BatchOutcome::default() };
    let entry: Vec<usize> = match part {
        Part::Keyed(shuffle) => vec![shuffle.received],
        Part::Whole | Part::Sources(_) => (0..graph.sources).collect(),
    };
    for &stream in &entry {
        outcome.streams[stream] = Some(Vec::new());
    }
    for block in blocks {
        let stream = match part {
            Part::Keyed(shuffle) => shuffle.received,
            Part::Whole | Part::Sources(_) => block.source,
        };
        let Some(Some(partitions)) = outcome.streams.get_mut(stream) else { continue };
        match (part, partitions.first_mut()) {
            // A source task before a shuffle runs as one partition, however its blocks were
            // cut: a replay (one block) then gives the same output, record for record, even
            // through map_partitions or a policy that drops a partition (`sinks/shuffle.rs`).
            (Part::Sources(_), Some(first)) => {
                first.data.extend_from_slice(&block.data);
                first.records += block.records;
            }
            _ if block.records > 0 => partitions.push(Partition { data: block.data, records: block.records }),
            _ => {}
        }
    }
    let stages: Vec<(usize, &Stage)> = match part {
        Part::Whole => graph.stages.iter().enumerate().collect(),
        Part::Sources(shuffle) => shuffle.before.iter().map(|&i| (i, &graph.stages[i])).collect(),
        Part::Keyed(shuffle) => std::iter::once((shuffle.stage, &shuffle.keyed))
            .chain(shuffle.after.iter().map(|&i| (i, &graph.stages[i])))
            .collect(),
    };
    for (index, stage) in stages {
        let policy = &stage.policy;
        // The stage's own limits, parameters and name (its plugin metrics' label) ride on its
        // copy of each version (same ids: same instances).
        let name: Arc<str> = Arc::from(stage.name.as_str());
        let limited: Snapshot = snapshot
            .iter()
            .enumerate()
            .map(|(plugin, version)| {
                let mut version = version.with_limits(policy.timeout, policy.memory_limit);
                if let Some(params) = stage.params.get(&plugin) {
                    version.call_params = params.clone();
                }
                version.call_stage = Some(name.clone());
                Arc::new(version)
            })
            .collect();
        let snapshot = &limited;
        let inputs: Vec<&[Partition]> =
            stage.inputs.iter().map(|&i| outcome.streams[i].as_deref().unwrap_or_default()).collect();
        let stateful = stage.operator.span().is_some()
            || matches!(
                stage.operator,
                Operator::UpdateStateByKey { .. } | Operator::MapWithState { .. } | Operator::EventWindow { .. }
            );
        let saved = (stateful && policy.on_error != OnError::Fail).then(|| state.save(index));
        let started = std::time::Instant::now();
        let records_in: u64 = inputs.iter().flat_map(|parts| parts.iter()).map(|p| p.records).sum();
        let calls = match &stage.operator {
            Operator::Plugin { .. } | Operator::KeyBy(_) | Operator::ReduceByKey { .. } => {
                inputs.iter().map(|parts| parts.len() as u64).sum()
            }
            _ => 1,
        };
        let mut attempt = 0;
        let result = loop {
            match run_stage(stage, index, &inputs, state, snapshot, time, last, pool) {
                Err(error) if policy.on_error == OnError::Retry && attempt < policy.retries => {
                    attempt += 1;
                    tracing::warn!(batch = time, stage = %stage.name, attempt, "retrying after: {error}");
                    if let Some(saved) = &saved {
                        state.restore(index, saved.clone());
                    }
                }
                result => break result,
            }
        };
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                if let Some(saved) = saved {
                    state.restore(index, saved);
                }
                // A fused stage's own failure is not this stage's to absorb.
                if error.stage != stage.name || matches!(policy.on_error, OnError::Fail | OnError::Retry) {
                    return Err(error);
                }
                let records = inputs.iter().flat_map(|parts| parts.iter()).map(|p| p.records).sum();
                let failed: Vec<(&[u8], Option<&str>)> = inputs
                    .iter()
                    .flat_map(|parts| parts.iter())
                    .flat_map(|p| abi::Frames::new(&p.data))
                    .map(|r| (r, None))
                    .collect();
                absorb(graph, stage, time, error, records, &failed, &mut outcome.handled, &mut outcome.dead_letters);
                StageResult::from(Vec::new())
            }
        };
        for (partition, error) in result.failed {
            let (Operator::Plugin { plugin, function, .. } | Operator::KeyBy(FunctionRef { plugin, function })) =
                &stage.operator
            else {
                unreachable!("only per-partition operators report failed partitions");
            };
            let error = stage_error(stage, snapshot, *plugin, function, error);
            if matches!(policy.on_error, OnError::Fail | OnError::Retry) {
                return Err(error);
            }
            let input = &inputs[0][partition];
            let failed: Vec<(&[u8], Option<&str>)> = abi::Frames::new(&input.data).map(|r| (r, None)).collect();
            absorb(graph, stage, time, error, input.records, &failed, &mut outcome.handled, &mut outcome.dead_letters);
        }
        if !result.failed_records.is_empty() {
            let (handled, letters) = (&mut outcome.handled, &mut outcome.dead_letters);
            absorb_records(graph, stage, time, snapshot, inputs[0], &result.failed_records, handled, letters)?;
        }
        if let (Operator::EventWindow { late, .. }, Some(records)) = (&stage.operator, result.late) {
            outcome.streams[*late] = Some(records.into_iter().filter(|p| p.records > 0).collect());
        }
        let output: Vec<Partition> = result.output.into_iter().filter(|p| p.records > 0).collect();
        outcome.stages.push(StageFigures {
            name: stage.name.clone(),
            records_in,
            records_out: output.iter().map(|p| p.records).sum(),
            calls,
            micros: started.elapsed().as_micros() as u64,
        });
        outcome.streams[stage.output] = Some(output);
    }
    match part {
        // A combined map side's output is partial: only the keyed tasks' is the stage's.
        Part::Sources(shuffle) => {
            outcome.shuffled = match shuffle.combined {
                true => outcome.streams[shuffle.sent].take(),
                false => outcome.streams[shuffle.sent].clone(),
            };
        }
        // What a keyed task read is a stream of the source side: its sinks are written there.
        Part::Keyed(shuffle) => outcome.streams[shuffle.received] = None,
        Part::Whole => {}
    }
    Ok(outcome)
}

/// Applies `skip` or `dead_letter` to a failure over `records` input records: `failed`, each
/// with its own error message (None: `error`'s).
#[allow(clippy::too_many_arguments)]
fn absorb(
    graph: &Graph,
    stage: &Stage,
    time: u64,
    error: Box<StageError>,
    records: u64,
    failed: &[(&[u8], Option<&str>)],
    handled: &mut Vec<Handled>,
    dead_letters: &mut Vec<(usize, Partition)>,
) {
    let action = stage.policy.on_error;
    tracing::warn!(
        batch = time,
        stage = %stage.name,
        class = %error.error.class(),
        records,
        "{} after: {error}",
        if action == OnError::Skip { "skipped the records" } else { "sent the records to the dead-letter sink" }
    );
    if let (OnError::DeadLetter, Some(sink)) = (action, stage.policy.dead_letter) {
        let ty = &graph.streams[stage.inputs[0]].ty;
        let mut out = Partition::default();
        let whole = error.error.to_string();
        for (record, message) in failed {
            let letter = DeadLetter {
                batch: time,
                stage: stage.name.clone(),
                plugin: error.plugin.clone(),
                version: error.version.clone(),
                function: error.function.clone(),
                class: error.error.class().name().to_string(),
                // `<class>: <message>`, as the whole failure's message reads.
                error: message.map_or_else(|| whole.clone(), |m| format!("{}: {m}", error.error.class().name())),
                record: shown(ty, record),
            };
            crate::codec::write_frame(&mut out.data, &letter).expect("a dead letter always encodes");
            out.records += 1;
        }
        dead_letters.push((sink, out));
    }
    handled.push(Handled { error, action, records });
}

/// A record as a dead letter or an error message shows it: a line of text as itself,
/// anything else as JSON.
fn shown(ty: &TypeDesc, record: &[u8]) -> String {
    let mut json = String::new();
    crate::codec::render(ty, record, &mut json);
    match *ty == TypeDesc::String {
        true => serde_json::from_str::<String>(&json).unwrap_or(json),
        false => json,
    }
}

/// `, and N more records failed` when N > 0.
fn and_more(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more record failed)".into(),
        n => format!(" (and {n} more records failed)"),
    }
}

/// The records a fallible function failed on, under the stage's `on_error`: `fail` (and
/// `retry`: an `Err` is the function's answer, not a fault) fails the batch naming the first;
/// `skip` and `dead_letter` take just those records out, each dead letter with its own message.
#[allow(clippy::too_many_arguments)]
fn absorb_records(
    graph: &Graph,
    stage: &Stage,
    time: u64,
    snapshot: &Snapshot,
    input: &[Partition],
    failed: &[(usize, u32, String)],
    handled: &mut Vec<Handled>,
    dead_letters: &mut Vec<(usize, Partition)>,
) -> Result<(), Box<StageError>> {
    let Operator::Plugin { plugin, function, .. } = &stage.operator else {
        unreachable!("only map, flat_map and filter report failed records");
    };
    let ty = &graph.streams[stage.inputs[0]].ty;
    let record = |partition: usize, index: u32| {
        abi::Frames::new(&input[partition].data).nth(index as usize).expect("the index was checked against the input")
    };
    let (partition, index, message) = &failed[0];
    if matches!(stage.policy.on_error, OnError::Fail | OnError::Retry) {
        let message =
            format!("record {} failed: {message}{}", shown(ty, record(*partition, *index)), and_more(failed.len() - 1));
        return Err(stage_error(stage, snapshot, *plugin, function, CallError::Guest { message }));
    }
    let summary = format!("{} records failed; the first: {message}", failed.len());
    let error = stage_error(stage, snapshot, *plugin, function, CallError::Guest { message: summary });
    let letters: Vec<(&[u8], Option<&str>)> =
        failed.iter().map(|(partition, index, message)| (record(*partition, *index), Some(message.as_str()))).collect();
    absorb(graph, stage, time, error, failed.len() as u64, &letters, handled, dead_letters);
    Ok(())
}

/// Runs one stage over its inputs.
#[allow(clippy::too_many_arguments)]
fn run_stage(
    stage: &Stage,
    index: usize,
    inputs: &[&[Partition]],
    state: &mut GraphState,
    snapshot: &Snapshot,
    time: u64,
    last: bool,
    pool: &rayon::ThreadPool,
) -> Result<StageResult, Box<StageError>> {
    let buckets = pool.current_num_threads().max(1);
    let input = inputs[0];
    let host = |error: CallError| host_error(stage, error);
    let call = |f: &FunctionRef, error: CallError| stage_error(stage, snapshot, f.plugin, &f.function, error);
    let retries = if stage.policy.on_error == OnError::Retry { stage.policy.retries } else { 0 };
    let output = match &stage.operator {
        Operator::Count => {
            let count: u64 = input.iter().map(|p| p.records).sum();
            let mut data = Vec::new();
            crate::codec::write_frame(&mut data, &count).expect("a u64 always encodes");
            vec![Partition { data, records: 1 }]
        }
        Operator::Plugin { plugin, function, kind } => {
            let version = &snapshot[*plugin];
            return Ok(per_partition(stage, input, pool, retries, |p| ops::plugin(version, function, *kind, p)));
        }
        Operator::KeyBy(f) => {
            let version = &snapshot[f.plugin];
            return Ok(per_partition(stage, input, pool, retries, |p| {
                Ok((key_by(version, &f.function, p)?, Vec::new()))
            }));
        }
        Operator::Transform(f) => {
            let all = keyed::concat(input);
            let out =
                ops::plugin(&snapshot[f.plugin], &f.function, FunctionKind::Transform, &all).map_err(|e| call(f, e))?.0;
            vec![out]
        }
        Operator::Reduce(f) => {
            let version = &snapshot[f.plugin];
            let partials = pool
                .install(|| {
                    input
                        .par_iter()
                        .map(|p| ops::reduce_partition(version, &f.function, p))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|e| call(f, e))?;
            let partials: Vec<&[u8]> = partials.iter().flatten().map(Vec::as_slice).collect();
            if partials.is_empty() {
                Vec::new()
            } else {
                let value = ops::reduce_values(version, &f.function, &partials).map_err(|e| call(f, e))?;
                let mut out = Partition { data: Vec::new(), records: 1 };
                codec::push_frame(&mut out.data, &value);
                vec![out]
            }
        }
        Operator::ReduceByKey { plugin, function, key, fused } => {
            reduce_by_key(stage, snapshot, pool, input, *plugin, function, key, fused.as_deref())?
        }
        Operator::CountByValue => vec![keyed::count_by_value(input)],
        Operator::GroupByKey { key } => vec![keyed::group_by_key(key, input).map_err(host)?],
        Operator::Union => inputs.iter().flat_map(|parts| parts.iter().cloned()).collect(),
        Operator::Repartition(n) => keyed::repartition(input, *n),
        Operator::Join { how, key } => vec![keyed::join(*how, key, inputs[0], inputs[1]).map_err(host)?],
        Operator::Cogroup { key } => vec![keyed::cogroup(key, inputs[0], inputs[1]).map_err(host)?],
        windowed @ (Operator::Window(_)
        | Operator::CountByWindow(_)
        | Operator::ReduceByWindow { .. }
        | Operator::ReduceByKeyAndWindow { .. }
        | Operator::CountByValueAndWindow { .. }) => {
            state.window(index).step(windowed, time, input, snapshot).map_err(|failed| match windowed {
                Operator::ReduceByKeyAndWindow { inverse: Some(f), .. } if failed.inverse => call(f, failed.error),
                Operator::ReduceByWindow { reduce: f, .. } | Operator::ReduceByKeyAndWindow { reduce: f, .. } => {
                    call(f, failed.error)
                }
                _ => host(failed.error),
            })?
        }
        Operator::MapWithState { function, key, timeout_ms } => state
            .mapped(index)
            .step(&snapshot[function.plugin], &function.function, key, input, time, *timeout_ms, buckets, pool)
            .map_err(|e| call(function, e))?,
        Operator::EventWindow { assigner, lateness_ms, timestamp, time_field, reduce, key, .. } => {
            let records: u64 = input.iter().map(|p| p.records).sum();
            let times = match (timestamp, time_field) {
                (None, Some(field)) => field.times(input, time),
                (None, None) => vec![time; records as usize],
                (Some(f), _) => {
                    let all = keyed::concat(input);
                    let (out, _) = ops::plugin(&snapshot[f.plugin], &f.function, FunctionKind::Timestamp, &all)
                        .map_err(|e| call(f, e))?;
                    super::event::event_times(&out.data, records).map_err(|e| call(f, e))?
                }
            };
            let combine = match reduce {
                Some(f) => super::event::Combine::Reduce(&snapshot[f.plugin], &f.function),
                None => super::event::Combine::Count,
            };
            let (closed, late_records) = state
                .event(index)
                .step(*assigner, *lateness_ms, key, input, &times, &combine, clock(timestamp, time_field, time), last)
                .map_err(|e| match reduce {
                    Some(f) => call(f, e),
                    None => host(e),
                })?;
            return Ok(StageResult { late: Some(late_records), ..StageResult::from(closed) });
        }
        Operator::UpdateStateByKey { update, key } => state
            .store(index)
            .step(&snapshot[update.plugin], &update.function, key, input, buckets, pool)
            .map_err(|e| call(update, e))?,
    };
    Ok(output.into())
}

/// A per-partition stage: each partition's call, retried `retries` times; the partitions whose
/// calls still fail are reported, not fatal here (the stage's policy decides).
fn per_partition(
    stage: &Stage,
    input: &[Partition],
    pool: &rayon::ThreadPool,
    retries: u32,
    call: impl Fn(&Partition) -> Result<(Partition, Vec<RecordFailure>), CallError> + Sync,
) -> StageResult {
    let results: Vec<Result<(Partition, Vec<RecordFailure>), CallError>> = pool.install(|| {
        input
            .par_iter()
            .map(|partition| {
                let mut attempt = 0;
                loop {
                    match call(partition) {
                        Err(error) if attempt < retries => {
                            attempt += 1;
                            tracing::warn!(stage = %stage.name, attempt, "retrying a partition after: {error}");
                        }
                        result => return result,
                    }
                }
            })
            .collect()
    });
    let mut result = StageResult::from(Vec::with_capacity(results.len()));
    for (index, outcome) in results.into_iter().enumerate() {
        match outcome {
            Ok((partition, failures)) => {
                result.output.push(partition);
                result.failed_records.extend(failures.into_iter().map(|(record, message)| (index, record, message)));
            }
            Err(error) => result.failed.push((index, error)),
        }
    }
    result
}

/// key_by over one partition: `(key, record)` per record.
fn key_by(version: &crate::runtime::PluginVersion, function: &str, input: &Partition) -> Result<Partition, CallError> {
    let (keys, _) = ops::plugin(version, function, FunctionKind::KeyBy, input)?;
    if keys.records != input.records {
        return Err(CallError::BadOutput {
            message: format!("key_by returned {} keys for {} records", keys.records, input.records),
        });
    }
    let mut out = Partition { data: Vec::with_capacity(keys.data.len() + input.data.len()), records: 0 };
    for (key, record) in abi::Frames::new(&keys.data).zip(abi::Frames::new(&input.data)) {
        codec::push_frame_parts(&mut out.data, key, record);
        out.records += 1;
    }
    Ok(out)
}

/// reduce_by_key: the map side (with a fused plugin stage before it, if any) combines each
/// partition and routes keys to `buckets` reduce partitions; the reduce side combines those.
#[allow(clippy::too_many_arguments)]
fn reduce_by_key(
    stage: &Stage,
    snapshot: &Snapshot,
    pool: &rayon::ThreadPool,
    input: &[Partition],
    plugin: usize,
    function: &str,
    key: &sluice_sdk::TypeDesc,
    fused: Option<&Stage>,
) -> Result<Vec<Partition>, Box<StageError>> {
    let version = &snapshot[plugin];
    let buckets = pool.current_num_threads().max(1);
    pool.install(|| {
        let routed = input
            .par_iter()
            .map(|partition| match fused {
                None => ops::combine_and_route(version, function, key, &partition.data, buckets).map_err(Failed::Call),
                Some(pre) => {
                    let Operator::Plugin { plugin, function: pre_function, kind } = &pre.operator else {
                        unreachable!("only plugin stages are fused");
                    };
                    SCRATCH.with_borrow_mut(|scratch| {
                        scratch.clear();
                        let pre_error = |error| Failed::Stage(stage_error(pre, snapshot, *plugin, pre_function, error));
                        let mut failures = Vec::new();
                        ops::plugin_into(&snapshot[*plugin], pre_function, *kind, partition, scratch, &mut failures)
                            .map_err(pre_error)?;
                        // A fused stage fails its batch (it is fused only with `on_error = "fail"`).
                        if let Some((record, message)) = failures.first() {
                            let more = failures.len() - 1;
                            let message = format!("record {record} of a partition: {message}{}", and_more(more));
                            return Err(pre_error(CallError::Guest { message }));
                        }
                        ops::combine_and_route(version, function, key, scratch, buckets).map_err(Failed::Call)
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        (0..buckets)
            .into_par_iter()
            .map(|bucket| {
                let parts: Vec<&[u8]> = routed
                    .iter()
                    .map(|routes| &routes[bucket])
                    .filter(|p| p.records > 0)
                    .map(|p| p.data.as_slice())
                    .collect();
                ops::combine(version, function, key, &parts).map_err(Failed::Call)
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(|failed| match failed {
        Failed::Stage(error) => error,
        Failed::Call(error) => stage_error(stage, snapshot, plugin, function, error),
    })
}

fn stage_error(stage: &Stage, snapshot: &Snapshot, plugin: usize, function: &str, error: CallError) -> Box<StageError> {
    let version = &snapshot[plugin];
    Box::new(StageError {
        stage: stage.name.clone(),
        plugin: version.plugin.clone(),
        version: version.short_hash().to_string(),
        function: function.to_string(),
        error,
    })
}

/// A failure of a host-only operator (a record that does not fit its declared type).
fn host_error(stage: &Stage, error: CallError) -> Box<StageError> {
    Box::new(StageError {
        stage: stage.name.clone(),
        plugin: "host".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        function: "-".into(),
        error,
    })
}

/// An event window on ingestion time (no `timestamp` function, no `time_field`) closes its
/// windows on the batch clock.
fn clock(timestamp: &Option<FunctionRef>, time_field: &Option<super::event::TimeField>, time: u64) -> Option<u64> {
    (timestamp.is_none() && time_field.is_none()).then_some(time)
}
