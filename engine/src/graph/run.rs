//! Running one batch through the graph: stage by stage, each stage's partitions in parallel on
//! the worker pool, every plugin call with the versions of the batch's snapshot.

use rayon::prelude::*;
use sluice_sdk::abi;

use super::{Graph, Operator, Partition, ops};
use crate::block::Block;
use crate::runtime::CallError;
use crate::runtime::registry::Snapshot;

/// A stage that failed in a batch, with the plugin version that failed.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` ({plugin}@{version}, function `{function}`): {error}")]
pub struct StageError {
    /// The stage.
    pub stage: String,
    /// The plugin.
    pub plugin: String,
    /// Short content hash of the version that failed.
    pub version: String,
    /// The function.
    pub function: String,
    /// What happened.
    pub error: CallError,
}

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

/// Every stream's partitions for one batch (None for streams no sink needs).
pub type BatchOutput = Vec<Option<Vec<Partition>>>;

/// Runs the stages of `graph` over `blocks` on `pool`.
pub fn run_batch(
    graph: &Graph,
    snapshot: &Snapshot,
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
    for stage in &graph.stages {
        let input = streams[stage.input].as_deref().unwrap_or_default();
        let output = match &stage.operator {
            Operator::Count => {
                let count: u64 = input.iter().map(|p| p.records).sum();
                let mut data = Vec::new();
                sluice_sdk::__private::write_frame(&mut data, &count).expect("a u64 always encodes");
                Ok(vec![Partition { data, records: 1 }])
            }
            Operator::Plugin { plugin, function, kind } => {
                let version = &snapshot[*plugin];
                pool.install(|| {
                    input
                        .par_iter()
                        .map(|partition| ops::plugin(version, function, *kind, partition))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|error| stage_error(stage, snapshot, *plugin, function, error))
            }
            Operator::ReduceByKey { plugin, function, key, fused } => {
                let version = &snapshot[*plugin];
                let buckets = pool.current_num_threads().max(1);
                pool.install(|| {
                    let routed = input
                        .par_iter()
                        .map(|partition| match fused.as_deref() {
                            None => ops::combine_and_route(version, function, key, &partition.data, buckets)
                                .map_err(Failed::Call),
                            Some(pre) => {
                                let Operator::Plugin { plugin, function: pre_function, kind } = &pre.operator else {
                                    unreachable!("only plugin stages are fused");
                                };
                                SCRATCH.with_borrow_mut(|scratch| {
                                    scratch.clear();
                                    ops::plugin_into(&snapshot[*plugin], pre_function, *kind, partition, scratch)
                                        .map_err(|error| {
                                            Failed::Stage(stage_error(pre, snapshot, *plugin, pre_function, error))
                                        })?;
                                    ops::combine_and_route(version, function, key, scratch, buckets)
                                        .map_err(Failed::Call)
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
                        .filter(|result| !matches!(result, Ok(p) if p.records == 0))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|failed| match failed {
                    Failed::Stage(error) => error,
                    Failed::Call(error) => stage_error(stage, snapshot, *plugin, function, error),
                })
            }
        }?;
        streams[stage.output] = Some(output);
    }
    Ok(streams)
}

fn stage_error(
    stage: &super::Stage,
    snapshot: &Snapshot,
    plugin: usize,
    function: &str,
    error: CallError,
) -> Box<StageError> {
    let version = &snapshot[plugin];
    Box::new(StageError {
        stage: stage.name.clone(),
        plugin: version.plugin.clone(),
        version: version.short_hash().to_string(),
        function: function.to_string(),
        error,
    })
}

/// Frames of a stream's partitions in order, for sinks.
pub fn records(partitions: &[Partition]) -> impl Iterator<Item = &[u8]> {
    partitions.iter().flat_map(|p| abi::Frames::new(&p.data))
}
