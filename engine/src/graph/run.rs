//! Running one batch through the graph: stage by stage, each stage's partitions in parallel on
//! the worker pool, every plugin call with the versions of the batch's snapshot.

use rayon::prelude::*;
use sluice_sdk::abi::{self, FunctionKind};

use super::state::GraphState;
use super::{FunctionRef, Graph, Operator, Partition, Stage, keyed, ops};
use crate::block::Block;
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
pub type BatchOutput = Vec<Option<Vec<Partition>>>;

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

/// Runs the stages of `graph` over the `blocks` of batch `time` on `pool`, updating the state of
/// stateful stages in `state`. `last`: no batch follows (event-time windows all close).
#[allow(clippy::too_many_arguments)]
pub fn run_batch(
    graph: &Graph,
    state: &mut GraphState,
    snapshot: &Snapshot,
    time: u64,
    last: bool,
    blocks: Vec<Block>,
    pool: &rayon::ThreadPool,
) -> Result<BatchOutput, Box<StageError>> {
    let mut streams: BatchOutput = vec![None; graph.streams.len()];
    for stream in streams.iter_mut().take(graph.sources) {
        *stream = Some(Vec::new());
    }
    for block in blocks {
        if let Some(Some(partitions)) = streams.get_mut(block.source)
            && block.records > 0
        {
            partitions.push(Partition { data: block.data, records: block.records });
        }
    }
    let buckets = pool.current_num_threads().max(1);
    for (index, stage) in graph.stages.iter().enumerate() {
        let inputs: Vec<&[Partition]> =
            stage.inputs.iter().map(|&i| streams[i].as_deref().unwrap_or_default()).collect();
        let input = inputs[0];
        let host = |error: CallError| host_error(stage, error);
        let call = |f: &FunctionRef, error: CallError| stage_error(stage, snapshot, f.plugin, &f.function, error);
        let output = match &stage.operator {
            Operator::Count => {
                let count: u64 = input.iter().map(|p| p.records).sum();
                let mut data = Vec::new();
                sluice_sdk::__private::write_frame(&mut data, &count).expect("a u64 always encodes");
                vec![Partition { data, records: 1 }]
            }
            Operator::Plugin { plugin, function, kind } => {
                let version = &snapshot[*plugin];
                pool.install(|| {
                    input
                        .par_iter()
                        .map(|partition| ops::plugin(version, function, *kind, partition))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|error| stage_error(stage, snapshot, *plugin, function, error))?
            }
            Operator::Transform(f) => {
                let all = keyed::concat(input);
                let out = ops::plugin(&snapshot[f.plugin], &f.function, FunctionKind::Transform, &all)
                    .map_err(|e| call(f, e))?;
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
                    abi::push_frame(&mut out.data, &value);
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
            Operator::Window { window_ms, slide_ms, kind } => state
                .window(index)
                .step(kind, *window_ms, *slide_ms, time, input, snapshot)
                .map_err(|failed| match kind {
                    super::WindowKind::ReduceByKey { inverse: Some(f), .. } if failed.inverse => call(f, failed.error),
                    super::WindowKind::Reduce(f) | super::WindowKind::ReduceByKey { reduce: f, .. } => {
                        call(f, failed.error)
                    }
                    _ => host(failed.error),
                })?,
            Operator::KeyBy(f) => {
                let version = &snapshot[f.plugin];
                pool.install(|| {
                    input.par_iter().map(|p| key_by(version, &f.function, p)).collect::<Result<Vec<_>, _>>()
                })
                .map_err(|e| call(f, e))?
            }
            Operator::MapWithState { function, key, timeout_ms } => state
                .mapped(index)
                .step(&snapshot[function.plugin], &function.function, key, input, time, *timeout_ms, buckets, pool)
                .map_err(|e| call(function, e))?,
            Operator::EventWindow { assigner, lateness_ms, timestamp, reduce, key, late } => {
                let records: u64 = input.iter().map(|p| p.records).sum();
                let times = match timestamp {
                    None => vec![time; records as usize],
                    Some(f) => {
                        let all = keyed::concat(input);
                        let out = ops::plugin(&snapshot[f.plugin], &f.function, FunctionKind::Timestamp, &all)
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
                    .step(
                        *assigner,
                        *lateness_ms,
                        key,
                        input,
                        &times,
                        &combine,
                        timestamp.is_none().then_some(time),
                        last,
                    )
                    .map_err(|e| match reduce {
                        Some(f) => call(f, e),
                        None => host(e),
                    })?;
                streams[*late] = Some(late_records.into_iter().filter(|p| p.records > 0).collect());
                closed
            }
            Operator::UpdateStateByKey { update, key } => state
                .store(index)
                .step(&snapshot[update.plugin], &update.function, key, input, buckets, pool)
                .map_err(|e| call(update, e))?,
        };
        streams[stage.output] = Some(output.into_iter().filter(|p| p.records > 0).collect());
    }
    Ok(streams)
}

/// key_by over one partition: `(key, record)` per record.
fn key_by(version: &crate::runtime::PluginVersion, function: &str, input: &Partition) -> Result<Partition, CallError> {
    let keys = ops::plugin(version, function, FunctionKind::KeyBy, input)?;
    if keys.records != input.records {
        return Err(CallError::BadOutput {
            message: format!("key_by returned {} keys for {} records", keys.records, input.records),
        });
    }
    let mut out = Partition { data: Vec::with_capacity(keys.data.len() + input.data.len()), records: 0 };
    for (key, record) in abi::Frames::new(&keys.data).zip(abi::Frames::new(&input.data)) {
        abi::push_frame_parts(&mut out.data, key, record);
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
                        ops::plugin_into(&snapshot[*plugin], pre_function, *kind, partition, scratch)
                            .map_err(|error| Failed::Stage(stage_error(pre, snapshot, *plugin, pre_function, error)))?;
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

/// Frames of a stream's partitions in order, for sinks.
pub fn records(partitions: &[Partition]) -> impl Iterator<Item = &[u8]> {
    partitions.iter().flat_map(|p| abi::Frames::new(&p.data))
}
