//! The operator graph: stages between sources and sinks, resolved against the loaded plugins and
//! type-checked, in an order where every stage comes after its inputs.
//!
//! Each stream has a [`TypeDesc`]: sources carry `String` lines (a Kafka source with `format = "record"`: `KafkaRecord`); a plugin stage carries what its
//! function returns; keyed operators carry `(K, V)` shapes (see `resolve`); `count` carries
//! `u64`. A stage whose function takes another type than its input carries is refused at check
//! time, as is a keyed operator on an unkeyed stream, a union of streams of different types, a
//! join on keys of different types. Only stages that lead to a sink are run.

mod event;
mod keyed;
mod ops;
mod run;
pub(crate) mod shuffle;
mod state;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{FunctionInfo, FunctionKind};

use crate::config::{
    Arity, ConfigError, EventWindowConfig, JoinConfig, JoinHow, MapWithStateConfig, OnError, PipelineFile,
    RepartitionConfig, StageConfig, StageOp,
};
use crate::runtime::PluginVersion;
use crate::sinks::SinkConfig;

pub(crate) use event::Assigner;
pub(crate) use run::DeadLetter;
pub use run::{BatchOutcome, StageError, run_batch};
pub(crate) use run::{Part, run_part};
pub(crate) use shuffle::Shuffle;
pub use state::{GraphState, StageCheckpoint};

/// A named stream: a source's records or a stage's output.
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    /// The source or stage name.
    pub name: String,
    /// The type of its records.
    pub ty: TypeDesc,
}

/// A plugin function a stage calls.
#[derive(Clone, Debug)]
pub(crate) struct FunctionRef {
    /// Registry index of the plugin.
    pub plugin: usize,
    /// Function name.
    pub function: String,
}

/// The batches a processing-time window covers: the last `window_ms` of batch time, emitted
/// when the batch time is a multiple of `slide_ms` (both multiples of the batch interval, checked
/// at load time). Every windowed [`Operator`] carries one; `window.rs` steps them all through one
/// history and one slide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Window length.
    pub window_ms: u64,
    /// Slide.
    pub slide_ms: u64,
}

/// What a stage does.
#[derive(Clone, Debug)]
pub(crate) enum Operator {
    /// A map, flat_map, filter or map_partitions function, one call per partition.
    Plugin {
        /// Registry index of the plugin.
        plugin: usize,
        /// Function name.
        function: String,
        /// Its kind.
        kind: FunctionKind,
    },
    /// A transform function: one call with the whole batch.
    Transform(FunctionRef),
    /// All records of the batch reduced to one.
    Reduce(FunctionRef),
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
    /// `(record, u64)` per distinct record.
    CountByValue,
    /// `(K, Vec<V>)` per key.
    GroupByKey {
        /// Key type.
        key: TypeDesc,
    },
    /// All records of all inputs.
    Union,
    /// Records spread round-robin over this many partitions.
    Repartition(usize),
    /// Two keyed streams joined on their keys.
    Join {
        /// Which keys are kept.
        how: JoinHow,
        /// Key type (the same on both sides).
        key: TypeDesc,
    },
    /// `(K, (Vec<V>, Vec<W>))` per key of two keyed streams.
    Cogroup {
        /// Key type.
        key: TypeDesc,
    },
    /// The records of the batches in the window (`window`).
    Window(Span),
    /// The number of records in the window, as one `u64` record (`count_by_window`).
    CountByWindow(Span),
    /// All records in the window reduced to one (`reduce_by_window`).
    ReduceByWindow {
        /// The window.
        span: Span,
        /// The reduce function.
        reduce: FunctionRef,
    },
    /// Values per key in the window reduced (`reduce_by_key_and_window`), incrementally when an
    /// inverse is given.
    ReduceByKeyAndWindow {
        /// The window.
        span: Span,
        /// The reduce function.
        reduce: FunctionRef,
        /// Its inverse, if given.
        inverse: Option<FunctionRef>,
        /// Key type.
        key: TypeDesc,
    },
    /// `(record, u64)` per distinct record in the window, incrementally
    /// (`count_by_value_and_window`).
    CountByValueAndWindow {
        /// The window.
        span: Span,
        /// The record type (the key of the counts).
        key: TypeDesc,
    },
    /// Per-key state kept across batches, updated by a plugin function every batch.
    UpdateStateByKey {
        /// The update function.
        update: FunctionRef,
        /// Key type.
        key: TypeDesc,
    },
    /// Per-key state and emitted records, for keys with new values or timing out.
    MapWithState {
        /// The function.
        function: FunctionRef,
        /// Key type.
        key: TypeDesc,
        /// Idle timeout in ms of batch time.
        timeout_ms: Option<u64>,
    },
    /// `(K, T)` per record.
    KeyBy(FunctionRef),
    /// Event-time windows per key, closed by the watermark.
    EventWindow {
        /// How events are assigned to windows.
        assigner: Assigner,
        /// Watermark lag behind the largest event time, ms.
        lateness_ms: u64,
        /// The event time of each record (else its batch time).
        timestamp: Option<FunctionRef>,
        /// Or: the value struct's field that holds it.
        time_field: Option<event::TimeField>,
        /// Combines values (else they are counted).
        reduce: Option<FunctionRef>,
        /// Key type.
        key: TypeDesc,
        /// The `<stage>.late` stream of late records.
        late: usize,
    },
}

impl Operator {
    /// The op of the pipeline file it was resolved from (what a checkpoint records and the
    /// dashboard shows).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Plugin { kind, .. } => kind.name(),
            Self::Transform(_) => "transform",
            Self::Reduce(_) => "reduce",
            Self::ReduceByKey { .. } => "reduce_by_key",
            Self::Count => "count",
            Self::CountByValue => "count_by_value",
            Self::GroupByKey { .. } => "group_by_key",
            Self::Union => "union",
            Self::Repartition(_) => "repartition",
            Self::Join { .. } => "join",
            Self::Cogroup { .. } => "cogroup",
            Self::Window(_) => "window",
            Self::CountByWindow(_) => "count_by_window",
            Self::ReduceByWindow { .. } => "reduce_by_window",
            Self::ReduceByKeyAndWindow { .. } => "reduce_by_key_and_window",
            Self::CountByValueAndWindow { .. } => "count_by_value_and_window",
            Self::UpdateStateByKey { .. } => "update_state_by_key",
            Self::MapWithState { .. } => "map_with_state",
            Self::KeyBy(_) => "key_by",
            Self::EventWindow { .. } => "event_window",
        }
    }

    /// The processing-time window of a windowed operator; `None` for every other.
    pub(crate) fn span(&self) -> Option<Span> {
        match self {
            Self::Window(span)
            | Self::CountByWindow(span)
            | Self::ReduceByWindow { span, .. }
            | Self::ReduceByKeyAndWindow { span, .. }
            | Self::CountByValueAndWindow { span, .. } => Some(*span),
            _ => None,
        }
    }
}

/// A resolved stage.
#[derive(Clone, Debug)]
pub(crate) struct Stage {
    /// Its name.
    pub name: String,
    /// Indexes of the streams it reads.
    pub inputs: Vec<usize>,
    /// Index of the stream it produces.
    pub output: usize,
    /// What it does.
    pub operator: Operator,
    /// Its error policy, retries and per-call limits.
    pub policy: StagePolicy,
    /// Its `params`, encoded for each function that takes them: per plugin (registry index),
    /// per function (they ride on the stage's copy of each version, `run.rs`).
    pub params: StageParams,
}

/// A stage's encoded parameters, per plugin and function.
pub(crate) type StageParams = BTreeMap<usize, Arc<BTreeMap<String, Arc<[u8]>>>>;

/// What a stage does when a plugin call fails, and the limits of its calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct StagePolicy {
    /// `on_error`.
    pub on_error: OnError,
    /// Extra calls with `on_error = "retry"`.
    pub retries: u32,
    /// Index of the dead-letter sink in [`Graph::dead_letters`].
    pub dead_letter: Option<usize>,
    /// Per-call deadline, if the stage sets its own.
    pub timeout: Option<std::time::Duration>,
    /// Instance memory cap, if the stage sets its own.
    pub memory_limit: Option<usize>,
}

/// A resolved sink.
#[derive(Clone, Debug)]
pub(crate) struct SinkNode {
    /// Index of the stream it writes.
    pub input: usize,
    /// Its configuration.
    pub config: SinkConfig,
}

/// The whole resolved pipeline graph.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Every stream: first the sources, in file order, then stage outputs.
    pub(crate) streams: Vec<Stream>,
    /// Number of sources (streams `0..sources`).
    pub(crate) sources: usize,
    /// Stages that lead to a sink, each after its inputs.
    pub(crate) stages: Vec<Stage>,
    /// Sinks, in file order.
    pub(crate) sinks: Vec<SinkNode>,
    /// Dead-letter sinks (sinks without an input), in file order.
    pub(crate) dead_letters: Vec<SinkConfig>,
    /// In a cluster, with a keyed stage: where the graph is split (`shuffle.rs`).
    pub(crate) shuffle: Option<Shuffle>,
}

impl Graph {
    /// Resolves and type-checks the stages of `file` against `plugins` (name → loaded version).
    /// `file` must have passed [`PipelineFile::validate`]. Returns every problem found.
    pub(crate) fn build(
        file: &PipelineFile,
        plugins: &BTreeMap<String, (usize, &PluginVersion)>,
    ) -> Result<Self, Vec<ConfigError>> {
        let config = &file.config;
        let batch_ms = crate::fields::millis(config.pipeline.batch_interval);
        let mut errors = Vec::new();
        let mut streams: Vec<Stream> = config
            .sources
            .iter()
            .map(|source| Stream { name: source.name().to_string(), ty: source.record_type() })
            .collect();
        let sources = streams.len();
        let mut index: BTreeMap<&str, usize> = config.sources.iter().enumerate().map(|(i, s)| (s.name(), i)).collect();

        // Resolve stages in dependency order; what cannot be placed is part of a cycle.
        let mut placed: Vec<Stage> = Vec::new();
        let mut unresolved: Vec<usize> = Vec::new();
        let mut late_streams: Vec<(usize, usize)> = Vec::new();
        // `<stage>.late` of every event window: readable by stages and sinks like any stream.
        let late_names: Vec<String> = config
            .stages
            .iter()
            .filter(|s| matches!(s.op, StageOp::EventWindow(_)))
            .map(|s| format!("{}.late", s.name))
            .collect();
        let mut pending: Vec<&StageConfig> = config.stages.iter().collect();
        let dead_letters: Vec<SinkConfig> = config.sinks.iter().filter(|s| s.input().is_none()).cloned().collect();
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for stage in pending {
                let names = stage.input_names();
                let inputs: Option<Vec<usize>> = names.iter().map(|name| index.get(name).copied()).collect();
                let Some(inputs) = inputs.filter(|inputs| !inputs.is_empty()) else {
                    still.push(stage);
                    continue;
                };
                let output = streams.len();
                // A stage reading a stage that failed to resolve is not checked: its input type is
                // unknown, and the one real mistake is already reported.
                let mut stage_params = StageParams::new();
                let resolved = if inputs.iter().any(|i| unresolved.contains(i)) {
                    None
                } else {
                    let input_streams: Vec<&Stream> = inputs.iter().map(|&i| &streams[i]).collect();
                    let mut context = Context {
                        stage,
                        plugins,
                        at: format!("stages `{}`", stage.name),
                        errors: &mut errors,
                        params: BTreeMap::new(),
                    };
                    let resolved = resolve(&mut context, &input_streams, batch_ms);
                    let given = stage.call.as_ref().is_some_and(|call| call.params.is_some());
                    if given && context.params.is_empty() && resolved.is_some() {
                        context.error(
                            "params",
                            format!(
                                "no function of this stage takes parameters (`{}` takes none: a function takes them as its last argument, `params: &P`)",
                                stage.function().unwrap_or("?")
                            ),
                        );
                    }
                    stage_params = context.params.into_iter().map(|(plugin, p)| (plugin, Arc::new(p))).collect();
                    resolved
                };
                index.insert(&stage.name, output);
                let (mut operator, ty) = resolved.unwrap_or_else(|| {
                    unresolved.push(output);
                    (Operator::Union, TypeDesc::Unit)
                });
                streams.push(Stream { name: stage.name.clone(), ty });
                if matches!(stage.op, StageOp::EventWindow(_)) {
                    // The side output of late records: the input's type, named `<stage>.late`.
                    let late = streams.len();
                    let late_name = late_names
                        .iter()
                        .find(|n| n.strip_suffix(".late") == Some(stage.name.as_str()))
                        .expect("listed above");
                    streams.push(Stream { name: late_name.clone(), ty: streams[inputs[0]].ty.clone() });
                    index.insert(late_name, late);
                    if let Operator::EventWindow { late: slot, .. } = &mut operator {
                        *slot = late;
                    }
                    late_streams.push((output, late));
                }
                let call = stage.call();
                let policy = StagePolicy {
                    on_error: stage.policy(),
                    retries: call.retries.unwrap_or(2),
                    dead_letter: call
                        .dead_letter
                        .as_ref()
                        .and_then(|name| dead_letters.iter().position(|sink| sink.name() == name)),
                    timeout: call.timeout,
                    memory_limit: call.memory_limit,
                };
                placed.push(Stage { name: stage.name.clone(), inputs, output, operator, policy, params: stage_params });
            }
            pending = still;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        let declared: Vec<&str> = config.stages.iter().map(|s| s.name.as_str()).collect();
        for stage in pending {
            // Inputs that are not declared anywhere were reported by `validate`.
            if let Some(input) = stage.input_names().into_iter().find(|name| declared.contains(name)) {
                errors.push(ConfigError::new(
                    format!("stages `{}`.input", stage.name),
                    format!("`{}` depends on itself through `{input}`: stages must not form a cycle", stage.name),
                ));
            }
        }

        let sinks: Vec<SinkNode> = config
            .sinks
            .iter()
            .filter_map(|sink| {
                sink.input().and_then(|name| index.get(name)).map(|&input| SinkNode { input, config: sink.clone() })
            })
            .collect();
        // Run only what some sink reads.
        let mut needed = vec![false; streams.len()];
        for sink in &sinks {
            needed[sink.input] = true;
        }
        for stage in placed.iter().rev() {
            let late = late_streams.iter().find(|(output, _)| *output == stage.output).map(|(_, late)| *late);
            if needed[stage.output] || late.is_some_and(|late| needed[late]) {
                for &input in &stage.inputs {
                    needed[input] = true;
                }
            }
        }
        let stages = fuse(placed.into_iter().filter(|stage| needed[stage.output]).collect(), &sinks);
        let mut graph = Self { streams, sources, stages, sinks, dead_letters, shuffle: None };
        if config.cluster.is_some() && errors.is_empty() {
            match Shuffle::plan(&graph, &config.pipeline.name) {
                Ok(shuffle) => graph.shuffle = shuffle,
                Err(problem) => errors.push(ConfigError::new("stages", problem)),
            }
        }
        if errors.is_empty() { Ok(graph) } else { Err(errors) }
    }
}

impl Graph {
    /// The sources (stream indexes `0..sources`) whose records reach stream `stream`.
    pub(crate) fn sources_of(&self, stream: usize) -> std::collections::BTreeSet<usize> {
        let mut found = std::collections::BTreeSet::new();
        let mut todo = vec![stream];
        let mut seen = vec![false; self.streams.len()];
        while let Some(stream) = todo.pop() {
            if std::mem::replace(&mut seen[stream], true) {
                continue;
            }
            if stream < self.sources {
                found.insert(stream);
                continue;
            }
            for stage in &self.stages {
                let late = match &stage.operator {
                    Operator::EventWindow { late, .. } => Some(*late),
                    _ => None,
                };
                if stage.output == stream || late == Some(stream) {
                    todo.extend(&stage.inputs);
                    if let Operator::ReduceByKey { fused: Some(pre), .. } = &stage.operator {
                        todo.extend(&pre.inputs);
                    }
                }
            }
        }
        found
    }

    /// The sources whose records can reach dead-letter sink `index` (through the stages that
    /// send to it).
    pub(crate) fn sources_of_dead_letter(&self, index: usize) -> std::collections::BTreeSet<usize> {
        let mut stages: Vec<&Stage> = Vec::new();
        for stage in &self.stages {
            stages.push(stage);
            if let Operator::ReduceByKey { fused: Some(pre), .. } = &stage.operator {
                stages.push(pre);
            }
        }
        stages
            .into_iter()
            .filter(|stage| stage.policy.dead_letter == Some(index))
            .flat_map(|stage| stage.inputs.iter().flat_map(|&input| self.sources_of(input)))
            .collect()
    }
}

impl Stage {
    /// Whether it calls a function of plugin `plugin` (registry index).
    pub(crate) fn calls(&self, plugin: usize) -> bool {
        let of = |f: &FunctionRef| f.plugin == plugin;
        match &self.operator {
            Operator::Plugin { plugin: p, .. } => *p == plugin,
            Operator::ReduceByKey { plugin: p, fused, .. } => {
                *p == plugin || fused.as_ref().is_some_and(|pre| pre.calls(plugin))
            }
            Operator::Transform(f) | Operator::Reduce(f) | Operator::KeyBy(f) => of(f),
            Operator::ReduceByWindow { reduce, .. } => of(reduce),
            Operator::ReduceByKeyAndWindow { reduce, inverse, .. } => of(reduce) || inverse.as_ref().is_some_and(of),
            Operator::UpdateStateByKey { update, .. } => of(update),
            Operator::MapWithState { function, .. } => of(function),
            Operator::EventWindow { timestamp, reduce, .. } => {
                timestamp.as_ref().is_some_and(of) || reduce.as_ref().is_some_and(of)
            }
            _ => false,
        }
    }
}

impl Graph {
    /// The same graph with every fused stage on its own again (its output a stream of its own),
    /// for `sluice test`, which shows each stage's output. It runs the whole graph, so a
    /// cluster's split is left out.
    pub(crate) fn unfused(&self) -> Self {
        let mut graph = self.clone();
        graph.shuffle = None;
        let mut stages = Vec::with_capacity(graph.stages.len());
        for mut stage in std::mem::take(&mut graph.stages) {
            if let Operator::ReduceByKey { fused, .. } = &mut stage.operator
                && let Some(pre) = fused.take()
            {
                stage.inputs = vec![pre.output];
                stages.push(*pre);
            }
            stages.push(stage);
        }
        graph.stages = stages;
        graph
    }
}

/// Fuses each plugin stage into the `reduce_by_key` that is the only reader of its output (no
/// sink, no other stage), as Spark pipelines narrow operations into the shuffle's map side.
fn fuse(stages: Vec<Stage>, sinks: &[SinkNode]) -> Vec<Stage> {
    let readers = |stream: usize| {
        stages.iter().filter(|s| s.inputs.contains(&stream)).count()
            + sinks.iter().filter(|s| s.input == stream).count()
    };
    let fusable: Vec<bool> = stages
        .iter()
        .map(|stage| {
            matches!(&stage.operator, Operator::Plugin { kind, .. } if *kind != FunctionKind::MapPartitions)
                // Its calls carry its own parameters, which the reduce's do not.
                && stage.params.is_empty()
                && stage.policy.on_error == OnError::Fail
                && stage.policy.timeout.is_none()
                && stage.policy.memory_limit.is_none()
                && readers(stage.output) == 1
                && stages.iter().any(|s| {
                    s.inputs == [stage.output]
                        && matches!(s.operator, Operator::ReduceByKey { .. })
                        && s.policy.timeout.is_none()
                        && s.policy.memory_limit.is_none()
                })
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
            && let Some(slot) = pending.iter_mut().find(|p| p.as_ref().is_some_and(|p| [p.output] == *stage.inputs))
        {
            let pre = slot.take().expect("found above");
            stage.inputs = pre.inputs.clone();
            *fused = Some(Box::new(pre));
        }
        out.push(stage);
    }
    out
}

/// `P { k: u64, min_len: Option<u32> }`: a parameters type with its fields, for messages.
fn describe_params(ty: &TypeDesc) -> String {
    match ty {
        TypeDesc::Struct { name, fields } => {
            let fields: Vec<String> = fields.iter().map(|(field, ty)| format!("{field}: {ty}")).collect();
            format!("{name} {{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// What [`resolve`] needs to look up functions and report problems.
struct Context<'a, 'b> {
    stage: &'a StageConfig,
    plugins: &'a BTreeMap<String, (usize, &'b PluginVersion)>,
    at: String,
    errors: &'a mut Vec<ConfigError>,
    /// The stage's `params`, encoded for each function found that takes them.
    params: BTreeMap<usize, BTreeMap<String, Arc<[u8]>>>,
}

impl Context<'_, '_> {
    fn error(&mut self, field: &str, message: String) {
        let location = if field.is_empty() { self.at.clone() } else { format!("{}.{field}", self.at) };
        self.errors.push(ConfigError::new(location, message));
    }

    /// The function named by `field` (`function` or `inverse`), checked to be of `kind`.
    fn function(&mut self, field: &str, name: Option<&str>, kind: FunctionKind) -> Option<(FunctionRef, FunctionInfo)> {
        // Missing plugin/function fields were reported by `validate`.
        let (&(plugin, version), name) = self.plugins.get(self.stage.plugin()?).zip(name)?;
        let Some(function) = version.functions.get(name) else {
            self.error(
                field,
                format!(
                    "plugin `{}` ({}) has no function `{name}`; it exports: {}",
                    version.plugin,
                    version.path.display(),
                    version.function_list()
                ),
            );
            return None;
        };
        if function.kind != kind {
            self.error(
                field,
                format!(
                    "op `{}` needs a {kind} function, but `{name}` is a {} function",
                    self.stage.op.name(),
                    function.kind
                ),
            );
            return None;
        }
        self.encode_params(plugin, version, name);
        Some((FunctionRef { plugin, function: name.to_string() }, function.clone()))
    }

    /// Checks the stage's `params` against function `name`'s parameters' type and keeps their
    /// encoding. A function that takes parameters gets `{}` when the stage gives none (which
    /// fits a type whose fields are all `Option`s).
    fn encode_params(&mut self, plugin: usize, version: &PluginVersion, name: &str) {
        let given = self.stage.call.as_ref().and_then(|call| call.params.as_ref());
        // A stage's table goes to each of its functions that takes parameters (a window's
        // `inverse` or an event window's `timestamp` may take none); one that none of them
        // takes is refused after the stage is resolved.
        let Some(ty) = version.params.get(name) else { return };
        let value = match given {
            Some(table) => serde_json::to_value(table).unwrap_or_default(),
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        let mut bytes = Vec::new();
        match crate::codec::encode_json(ty, &value, &mut bytes) {
            Ok(()) => {
                self.params.entry(plugin).or_default().insert(name.to_string(), bytes.into());
            }
            Err(misfit) => {
                let field = match misfit.at.as_str() {
                    "" => "params".to_string(),
                    at if at.starts_with('[') => format!("params{at}"),
                    at => format!("params.{at}"),
                };
                self.error(
                    &field,
                    format!("{} (function `{name}` takes parameters {})", misfit.problem, describe_params(ty)),
                );
            }
        }
    }

    /// The key and value types of a keyed input.
    fn keyed<'s>(&mut self, input: &'s Stream) -> Option<(&'s TypeDesc, &'s TypeDesc)> {
        let pair = input.ty.as_pair();
        if pair.is_none() {
            self.error(
                "input",
                format!(
                    "{} needs keyed records (K, V), but `{}` carries {}",
                    self.stage.op.name(),
                    input.name,
                    input.ty
                ),
            );
        }
        pair
    }

    fn expect_input(&mut self, function: &FunctionInfo, expected: &TypeDesc, what: &str) -> Option<()> {
        if function.input == *expected {
            return Some(());
        }
        let message = format!("`{}` takes {} but {what} {expected}", function.name, function.input);
        self.error("function", message);
        None
    }
}

/// Resolves one stage's operator and output type, or records why it cannot be.
fn resolve(cx: &mut Context<'_, '_>, inputs: &[&Stream], batch_ms: u64) -> Option<(Operator, TypeDesc)> {
    let stage = cx.stage;
    let op = &stage.op;
    // A wrong number of inputs was reported by `validate`.
    if op.arity() == Arity::Two && inputs.len() != 2 {
        return None;
    }
    let input = inputs[0];
    let carries = format!("`{}` carries", input.name);
    let pair = |k: &TypeDesc, v: TypeDesc| TypeDesc::Tuple(vec![k.clone(), v]);
    let u64_ty = TypeDesc::Unsigned(64);
    let function = |cx: &mut Context<'_, '_>| {
        let kind = op.function_kind().expect("op calls a function");
        cx.function("function", stage.function(), kind)
    };
    Some(match op {
        StageOp::Map | StageOp::FlatMap | StageOp::Filter | StageOp::MapPartitions | StageOp::Transform => {
            let (reference, info) = function(cx)?;
            cx.expect_input(&info, &input.ty, &carries)?;
            let output = if *op == StageOp::Filter { input.ty.clone() } else { info.output.clone() };
            let operator = if *op == StageOp::Transform {
                Operator::Transform(reference)
            } else {
                Operator::Plugin { plugin: reference.plugin, function: reference.function, kind: info.kind }
            };
            (operator, output)
        }
        StageOp::Reduce => {
            let (reference, info) = function(cx)?;
            cx.expect_input(&info, &input.ty, &carries)?;
            (Operator::Reduce(reference), input.ty.clone())
        }
        StageOp::ReduceByKey => {
            let (key, value) = cx.keyed(input)?;
            let (reference, info) = function(cx)?;
            cx.expect_input(&info, value, &format!("the values of `{}` are", input.name))?;
            let operator = Operator::ReduceByKey {
                plugin: reference.plugin,
                function: reference.function,
                key: key.clone(),
                fused: None,
            };
            (operator, pair(key, info.output.clone()))
        }
        StageOp::Count => (Operator::Count, u64_ty),
        StageOp::CountByValue => (Operator::CountByValue, pair(&input.ty, u64_ty)),
        StageOp::GroupByKey => {
            let (key, value) = cx.keyed(input)?;
            (Operator::GroupByKey { key: key.clone() }, pair(key, TypeDesc::Seq(Box::new(value.clone()))))
        }
        StageOp::Union => {
            for other in &inputs[1..] {
                if other.ty != input.ty {
                    cx.error(
                        "inputs",
                        format!(
                            "union needs inputs of one type, but `{}` carries {} and `{}` carries {}",
                            input.name, input.ty, other.name, other.ty
                        ),
                    );
                    return None;
                }
            }
            (Operator::Union, input.ty.clone())
        }
        StageOp::Repartition(RepartitionConfig { partitions }) => {
            (Operator::Repartition((*partitions)?), input.ty.clone())
        }
        StageOp::Join(_) | StageOp::Cogroup => {
            let (key, left) = cx.keyed(inputs[0])?;
            let (right_key, right) = cx.keyed(inputs[1])?;
            if key != right_key {
                cx.error(
                    "inputs",
                    format!(
                        "{} needs the same key type on both sides, but `{}` is keyed by {key} and `{}` by {right_key}",
                        op.name(),
                        inputs[0].name,
                        inputs[1].name
                    ),
                );
                return None;
            }
            let option = |t: &TypeDesc| TypeDesc::Option(Box::new(t.clone()));
            let seq = |t: &TypeDesc| TypeDesc::Seq(Box::new(t.clone()));
            if let StageOp::Join(JoinConfig { how }) = op {
                let how = how.unwrap_or_default();
                let value = match how {
                    JoinHow::Inner => TypeDesc::Tuple(vec![left.clone(), right.clone()]),
                    JoinHow::Left => TypeDesc::Tuple(vec![left.clone(), option(right)]),
                    JoinHow::Right => TypeDesc::Tuple(vec![option(left), right.clone()]),
                    JoinHow::Full => TypeDesc::Tuple(vec![option(left), option(right)]),
                };
                (Operator::Join { how, key: key.clone() }, pair(key, value))
            } else {
                (Operator::Cogroup { key: key.clone() }, pair(key, TypeDesc::Tuple(vec![seq(left), seq(right)])))
            }
        }
        StageOp::Window(_)
        | StageOp::CountByWindow(_)
        | StageOp::ReduceByWindow(_)
        | StageOp::ReduceByKeyAndWindow(_)
        | StageOp::CountByValueAndWindow(_) => {
            let window = op.batch_window()?;
            let span = Span {
                window_ms: crate::fields::millis(window.window?),
                slide_ms: window.slide.map_or(batch_ms, crate::fields::millis),
            };
            match op {
                StageOp::Window(_) => (Operator::Window(span), input.ty.clone()),
                StageOp::CountByWindow(_) => (Operator::CountByWindow(span), u64_ty),
                StageOp::ReduceByWindow(_) => {
                    let (reduce, info) = function(cx)?;
                    cx.expect_input(&info, &input.ty, &carries)?;
                    (Operator::ReduceByWindow { span, reduce }, input.ty.clone())
                }
                StageOp::CountByValueAndWindow(_) => {
                    (Operator::CountByValueAndWindow { span, key: input.ty.clone() }, pair(&input.ty, u64_ty))
                }
                _ => {
                    let (key, value) = cx.keyed(input)?;
                    let (reduce, info) = function(cx)?;
                    cx.expect_input(&info, value, &format!("the values of `{}` are", input.name))?;
                    let inverse = match stage.inverse() {
                        None => None,
                        Some(name) => {
                            let (inverse, inverse_info) = cx.function("inverse", Some(name), FunctionKind::Reduce)?;
                            if inverse_info.input != info.input {
                                cx.error(
                                    "inverse",
                                    format!(
                                        "`{name}` works on {} but `{}` on {}",
                                        inverse_info.input, info.name, info.input
                                    ),
                                );
                                return None;
                            }
                            Some(inverse)
                        }
                    };
                    let operator = Operator::ReduceByKeyAndWindow { span, reduce, inverse, key: key.clone() };
                    (operator, pair(key, info.output.clone()))
                }
            }
        }
        StageOp::KeyBy => {
            let (reference, info) = function(cx)?;
            cx.expect_input(&info, &input.ty, &carries)?;
            (Operator::KeyBy(reference), pair(&info.output, input.ty.clone()))
        }
        StageOp::MapWithState(MapWithStateConfig { state_timeout }) => {
            let (key, _) = cx.keyed(input)?;
            let (reference, info) = function(cx)?;
            cx.expect_input(&info, &input.ty, &carries)?;
            let timeout_ms = state_timeout.map(crate::fields::millis);
            (Operator::MapWithState { function: reference, key: key.clone(), timeout_ms }, info.output.clone())
        }
        StageOp::EventWindow(event) => {
            let EventWindowConfig { window, slide, timestamp, time_field, gap, allowed_lateness } = event;
            let (key, value) = cx.keyed(input)?;
            let timestamp = match timestamp.as_deref() {
                None => None,
                Some(name) => {
                    let (reference, info) = cx.function("timestamp", Some(name), FunctionKind::Timestamp)?;
                    cx.expect_input(&info, &input.ty, &carries)?;
                    Some(reference)
                }
            };
            let time_field = match time_field.as_deref() {
                None => None,
                Some(name) => match event::TimeField::find(key, value, name) {
                    Ok(field) => Some(field),
                    Err(problem) => {
                        cx.error("time_field", problem.to_string());
                        return None;
                    }
                },
            };
            let (reduce, value) = match stage.function() {
                None => (None, u64_ty),
                Some(name) => {
                    let (reference, info) = cx.function("function", Some(name), FunctionKind::Reduce)?;
                    cx.expect_input(&info, value, &format!("the values of `{}` are", input.name))?;
                    (Some(reference), info.output.clone())
                }
            };
            let ms = crate::fields::millis;
            let assigner = match (*window, *slide, *gap) {
                (_, _, Some(gap)) => Assigner::Session(ms(gap).max(1)),
                (Some(window), Some(slide), None) if slide != window => Assigner::Sliding(ms(window), ms(slide).max(1)),
                (Some(window), _, None) => Assigner::Tumbling(ms(window).max(1)),
                (None, _, None) => return None,
            };
            let lateness_ms = allowed_lateness.map_or(0, ms);
            let ty = pair(key, TypeDesc::Tuple(vec![TypeDesc::Unsigned(64), TypeDesc::Unsigned(64), value]));
            let late = usize::MAX;
            (Operator::EventWindow { assigner, lateness_ms, timestamp, time_field, reduce, key: key.clone(), late }, ty)
        }
        StageOp::UpdateStateByKey => {
            let (key, value) = cx.keyed(input)?;
            let (update, info) = function(cx)?;
            cx.expect_input(&info, value, &format!("the values of `{}` are", input.name))?;
            (Operator::UpdateStateByKey { update, key: key.clone() }, pair(key, info.output.clone()))
        }
    })
}
