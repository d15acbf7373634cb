//! The operator graph: stages between sources and sinks, resolved against the loaded plugins and
//! type-checked, in an order where every stage comes after its input.
//!
//! Each stream has a [`TypeDesc`]: sources carry `String` lines; a plugin stage carries what its
//! function returns; `reduce_by_key` carries `(K, V)`; `count` carries `u64`. A stage whose function
//! takes another type than its input carries is refused at check time, as is a keyed operator on
//! an unkeyed stream. Only stages that lead to a sink are run.

mod keys;
pub(crate) use keys::varint as keys_varint;
mod ops;
mod run;

use std::collections::BTreeMap;

use sluice_sdk::TypeDesc;
use sluice_sdk::abi::FunctionKind;

use crate::config::{ConfigError, Op, PipelineFile};
use crate::runtime::PluginVersion;
use crate::sinks::SinkConfig;

pub use keys::skip_value;
pub use run::{BatchOutput, StageError, records, run_batch};

/// One partition of a stream in one batch: frames of records.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    /// The records as frames.
    pub data: Vec<u8>,
    /// How many.
    pub records: u64,
}

/// A named stream: a source's records or a stage's output.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The source or stage name.
    pub name: String,
    /// The type of its records.
    pub ty: TypeDesc,
}

/// What a stage does.
#[derive(Clone, Debug)]
pub enum Operator {
    /// Plugin function `function` of plugin `plugin` (registry index), of kind `kind`.
    Plugin {
        /// Registry index of the plugin.
        plugin: usize,
        /// Function name.
        function: String,
        /// map, flat_map or filter.
        kind: FunctionKind,
    },
    /// Combine values per key with a reduce function: within each partition, then across.
    ReduceByKey {
        /// Registry index of the plugin.
        plugin: usize,
        /// The reduce function.
        function: String,
        /// Type of the keys, to find them in records.
        key: TypeDesc,
        /// The plugin stage before it, when this stage is its only reader: both run in one task
        /// per partition and the intermediate records never become a stream.
        fused: Option<Box<Stage>>,
    },
    /// Number of records of the batch, as one `u64` record.
    Count,
}

/// A resolved stage.
#[derive(Clone, Debug)]
pub struct Stage {
    /// Its name.
    pub name: String,
    /// Index of the stream it reads.
    pub input: usize,
    /// Index of the stream it produces.
    pub output: usize,
    /// What it does.
    pub operator: Operator,
}

/// A resolved sink.
#[derive(Clone, Debug)]
pub struct SinkNode {
    /// Index of the stream it writes.
    pub input: usize,
    /// Its configuration.
    pub config: SinkConfig,
}

/// The whole resolved pipeline graph.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Every stream: first the sources, in file order, then stage outputs.
    pub streams: Vec<Stream>,
    /// Number of sources (streams `0..sources`).
    pub sources: usize,
    /// Stages that lead to a sink, each after its input.
    pub stages: Vec<Stage>,
    /// Sinks, in file order.
    pub sinks: Vec<SinkNode>,
}

impl Graph {
    /// Resolves and type-checks the stages of `file` against `plugins` (name → loaded version).
    /// `file` must have passed [`PipelineFile::validate`]. Returns every problem found.
    pub fn build(
        file: &PipelineFile,
        plugins: &BTreeMap<String, (usize, &PluginVersion)>,
    ) -> Result<Self, Vec<ConfigError>> {
        let config = &file.config;
        let mut errors = Vec::new();
        let mut streams: Vec<Stream> = config
            .sources
            .iter()
            .map(|source| Stream { name: source.name().to_string(), ty: TypeDesc::String })
            .collect();
        let sources = streams.len();
        let mut index: BTreeMap<&str, usize> = config.sources.iter().enumerate().map(|(i, s)| (s.name(), i)).collect();

        // Resolve stages in dependency order; what cannot be placed is part of a cycle.
        let mut placed: Vec<Stage> = Vec::new();
        let mut unresolved: Vec<usize> = Vec::new();
        let mut pending: Vec<&crate::config::StageConfig> = config.stages.iter().collect();
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for stage in pending {
                let Some(&input) = index.get(stage.input.as_str()) else {
                    still.push(stage);
                    continue;
                };
                let output = streams.len();
                let at = format!("stages `{}`", stage.name);
                // A stage reading a stage that failed to resolve is not checked: its input type is
                // unknown, and the one real mistake is already reported.
                let resolved = if unresolved.contains(&input) {
                    None
                } else {
                    resolve(stage, &streams[input], plugins, &at, &mut errors)
                };
                let Some((operator, ty)) = resolved else {
                    unresolved.push(output);
                    index.insert(&stage.name, output);
                    streams.push(Stream { name: stage.name.clone(), ty: TypeDesc::Unit });
                    placed.push(Stage { name: stage.name.clone(), input, output, operator: Operator::Count });
                    continue;
                };
                index.insert(&stage.name, output);
                streams.push(Stream { name: stage.name.clone(), ty });
                placed.push(Stage { name: stage.name.clone(), input, output, operator });
            }
            pending = still;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        let declared: Vec<&str> = config.stages.iter().map(|s| s.name.as_str()).collect();
        for stage in pending {
            // Inputs that are not declared anywhere were reported by `validate`.
            if declared.contains(&stage.input.as_str()) {
                errors.push(ConfigError::new(
                    format!("stages `{}`.input", stage.name),
                    format!(
                        "`{}` depends on itself through `{}`: stages must not form a cycle",
                        stage.name, stage.input
                    ),
                ));
            }
        }

        let mut sinks = Vec::new();
        for sink in &config.sinks {
            if let Some(&input) = index.get(sink.input()) {
                sinks.push(SinkNode { input, config: sink.clone() });
            }
        }
        // Run only what some sink reads.
        let mut needed = vec![false; streams.len()];
        for sink in &sinks {
            needed[sink.input] = true;
        }
        for stage in placed.iter().rev() {
            if needed[stage.output] {
                needed[stage.input] = true;
            }
        }
        let stages = fuse(placed.into_iter().filter(|stage| needed[stage.output]).collect(), &sinks);
        if errors.is_empty() { Ok(Self { streams, sources, stages, sinks }) } else { Err(errors) }
    }
}

/// Fuses each plugin stage into the `reduce_by_key` that is the only reader of its output (no
/// sink, no other stage), as Spark pipelines narrow operations into the shuffle's map side.
fn fuse(stages: Vec<Stage>, sinks: &[SinkNode]) -> Vec<Stage> {
    let readers = |stream: usize| {
        stages.iter().filter(|s| s.input == stream).count() + sinks.iter().filter(|s| s.input == stream).count()
    };
    let fusable: Vec<bool> = stages
        .iter()
        .map(|stage| {
            matches!(stage.operator, Operator::Plugin { .. })
                && readers(stage.output) == 1
                && stages.iter().any(|s| s.input == stage.output && matches!(s.operator, Operator::ReduceByKey { .. }))
        })
        .collect();
    let mut out: Vec<Stage> = Vec::with_capacity(stages.len());
    let mut pending: Vec<Option<Stage>> = stages.iter().map(|_| None).collect();
    for (index, mut stage) in stages.into_iter().enumerate() {
        if fusable[index] {
            pending[index] = Some(stage);
            continue;
        }
        if let Operator::ReduceByKey { fused, .. } = &mut stage.operator
            && let Some(slot) = pending.iter_mut().find(|p| p.as_ref().is_some_and(|p| p.output == stage.input))
        {
            let pre = slot.take().expect("found above");
            stage.input = pre.input;
            *fused = Some(Box::new(pre));
        }
        out.push(stage);
    }
    out
}

/// Resolves one stage's operator and output type, or records why it cannot be.
fn resolve(
    stage: &crate::config::StageConfig,
    input: &Stream,
    plugins: &BTreeMap<String, (usize, &PluginVersion)>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<(Operator, TypeDesc)> {
    if stage.op == Op::Count {
        return Some((Operator::Count, TypeDesc::Unsigned(64)));
    }
    // Missing plugin/function fields were reported by `validate`.
    let (&(plugin, version), function_name) = plugins.get(stage.plugin.as_deref()?).zip(stage.function.as_deref())?;
    let Some(function) = version.functions.get(function_name) else {
        errors.push(ConfigError::new(
            format!("{at}.function"),
            format!(
                "plugin `{}` ({}) has no function `{function_name}`; it exports: {}",
                version.plugin,
                version.path.display(),
                version.function_list()
            ),
        ));
        return None;
    };
    let expected = match stage.op {
        Op::Map => FunctionKind::Map,
        Op::FlatMap => FunctionKind::FlatMap,
        Op::Filter => FunctionKind::Filter,
        Op::ReduceByKey => FunctionKind::Reduce,
        Op::Count => unreachable!("handled above"),
    };
    if function.kind != expected {
        errors.push(ConfigError::new(
            format!("{at}.function"),
            format!(
                "op `{}` needs a {expected} function, but `{function_name}` is a {} function",
                stage.op.name(),
                function.kind
            ),
        ));
        return None;
    }
    if stage.op == Op::ReduceByKey {
        let Some((key, value)) = input.ty.as_pair() else {
            errors.push(ConfigError::new(
                format!("{at}.input"),
                format!("reduce_by_key needs keyed records (K, V), but `{}` carries {}", input.name, input.ty),
            ));
            return None;
        };
        if *value != function.input {
            errors.push(ConfigError::new(
                format!("{at}.function"),
                format!("`{function_name}` reduces {} but the values of `{}` are {value}", function.input, input.name),
            ));
            return None;
        }
        let ty = TypeDesc::Tuple(vec![key.clone(), function.output.clone()]);
        return Some((
            Operator::ReduceByKey { plugin, function: function_name.to_string(), key: key.clone(), fused: None },
            ty,
        ));
    }
    if function.input != input.ty {
        errors.push(ConfigError::new(
            format!("{at}.function"),
            format!("`{function_name}` takes {} but `{}` carries {}", function.input, input.name, input.ty),
        ));
        return None;
    }
    Some((Operator::Plugin { plugin, function: function_name.to_string(), kind: expected }, function.output.clone()))
}
