//! The pipeline file: TOML, parsed with unknown fields refused, then validated as a whole so that
//! every problem is reported at once, each naming the file, the field and what was expected.
//!
//! ```toml
//! [pipeline]
//! name = "network-wordcount"
//! batch_interval = "1s"       # default 1s
//! block_interval = "200ms"    # default 200ms; must divide batch_interval
//!
//! [plugins]
//! wordcount = "../../target/plugins/wordcount.wasm"   # relative to this file
//!
//! [[sources]]
//! name = "lines"
//! type = "socket"
//! address = "127.0.0.1:9999"
//!
//! [[stages]]
//! name = "words"
//! input = "lines"
//! op = "flat_map"
//! plugin = "wordcount"
//! function = "split_words"
//!
//! [[sinks]]
//! name = "out"
//! input = "words"
//! type = "print"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_sdk::abi::FunctionKind;

pub use crate::fields::{ConfigError, ConfigErrors};
use crate::fields::{MAX_INTERVAL, MAX_INTERVAL_TEXT, MAX_SPAN, MAX_SPAN_TEXT, duration, size, writable_dir};

use crate::sinks::{Resource, SinkConfig};
use crate::sources::SourceConfig;

/// A whole pipeline file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name and clock of the pipeline.
    pub pipeline: PipelineSection,
    /// Plugin name → path of its `.wasm` file, relative to the pipeline file.
    #[serde(default)]
    pub plugins: BTreeMap<String, PathBuf>,
    /// Where records come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Operators, each reading one stream (a source or a stage) and producing another.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Where streams go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// `[pipeline]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Shown in logs.
    pub name: String,
    /// Every `batch_interval` the blocks received become one batch ("1s", "500ms"; longer than 0,
    /// at most 24h).
    #[serde(default = "default_batch_interval", with = "duration")]
    pub batch_interval: Duration,
    /// Every `block_interval` a receiver's records are cut into a block, one partition of the
    /// batch. Must divide `batch_interval` (so at most 24h).
    #[serde(default = "default_block_interval", with = "duration")]
    pub block_interval: Duration,
    /// Turns checkpoints on: after every batch, source positions and all operator state are
    /// written here (relative to the pipeline file); a restart resumes from them. `sluice check`
    /// makes sure the directory can be created and written.
    pub checkpoint_dir: Option<PathBuf>,
    /// Write a checkpoint every this many batches (default 1; and always at a graceful stop).
    /// Between two, the batches' inputs stay logged; a restart replays all of them.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u32,
    /// Adapt each rate-limited receiver's rate to what the batches can process (Spark's
    /// `spark.streaming.backpressure.enabled`; a PID estimator, see `receiver::rate`).
    #[serde(default)]
    pub backpressure: bool,
    /// A plugin version swapped in that fails this many batches in a row is rolled back to the
    /// version it replaced (default 3; 0 turns automatic rollback off).
    #[serde(default = "default_rollback_after")]
    pub rollback_after: u32,
}

fn default_rollback_after() -> u32 {
    3
}

fn default_checkpoint_every() -> u32 {
    1
}

fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_block_interval() -> Duration {
    Duration::from_millis(200)
}

/// An operator, as in Spark's DStream API (snake_case names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// One record in, one out (plugin `map` function).
    Map,
    /// One record in, any number out (plugin `flat_map` function).
    FlatMap,
    /// Keep the records the plugin's `filter` function accepts.
    Filter,
    /// One call per partition with all of its records (plugin `map_partitions` function).
    MapPartitions,
    /// One call per batch with all of its records (plugin `transform` function).
    Transform,
    /// All records of several streams of one type (`inputs`).
    Union,
    /// Spread the records over `partitions` partitions.
    Repartition,
    /// Combine all records of the batch into one with a `reduce` function.
    Reduce,
    /// The number of records in each batch, as one record (no plugin).
    Count,
    /// `(record, count)` per distinct record of the batch (no plugin).
    CountByValue,
    /// Combine the values of each key with the plugin's `reduce` function (input must be keyed).
    ReduceByKey,
    /// `(K, [V...])` per key of a keyed stream (no plugin).
    GroupByKey,
    /// Join two keyed streams on their keys (`inputs`, `how`).
    Join,
    /// `(K, ([V...], [W...]))` per key of two keyed streams (`inputs`).
    Cogroup,
    /// The records of the last `window` of batches, every `slide`.
    Window,
    /// The number of records in the window, every `slide`.
    CountByWindow,
    /// All records of the window combined with a `reduce` function, every `slide`.
    ReduceByWindow,
    /// Values per key over the window combined with `function` (and `inverse`, if given).
    ReduceByKeyAndWindow,
    /// `(record, count)` per distinct record over the window, every `slide`.
    CountByValueAndWindow,
    /// Per-key state updated every batch by an `update_state` function.
    UpdateStateByKey,
    /// Per-key state and emitted records, by a `map_with_state` function called only for keys
    /// with new values or whose state timed out (`timeout`).
    MapWithState,
    /// `(K, T)` per record, the key from a `key_by` function.
    KeyBy,
    /// Event-time windows per key: tumbling (`window`), sliding (`window`, `slide`) or session
    /// (`gap`), closed when the watermark (max event time − `allowed_lateness`) passes their end.
    EventWindow,
}

/// The most partitions `repartition` may ask for.
pub const MAX_PARTITIONS: usize = 4096;

/// How many streams an op reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// `input = "..."`.
    One,
    /// `inputs = ["a", "b"]`.
    Two,
    /// `inputs = [...]`, one or more.
    Many,
}

impl Op {
    /// The name used in pipeline files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::FlatMap => "flat_map",
            Self::Filter => "filter",
            Self::MapPartitions => "map_partitions",
            Self::Transform => "transform",
            Self::Union => "union",
            Self::Repartition => "repartition",
            Self::Reduce => "reduce",
            Self::Count => "count",
            Self::CountByValue => "count_by_value",
            Self::ReduceByKey => "reduce_by_key",
            Self::GroupByKey => "group_by_key",
            Self::Join => "join",
            Self::Cogroup => "cogroup",
            Self::Window => "window",
            Self::CountByWindow => "count_by_window",
            Self::ReduceByWindow => "reduce_by_window",
            Self::ReduceByKeyAndWindow => "reduce_by_key_and_window",
            Self::CountByValueAndWindow => "count_by_value_and_window",
            Self::UpdateStateByKey => "update_state_by_key",
            Self::MapWithState => "map_with_state",
            Self::KeyBy => "key_by",
            Self::EventWindow => "event_window",
        }
    }

    /// The kind of plugin function the op calls, if it calls one.
    pub const fn function_kind(self) -> Option<FunctionKind> {
        match self {
            Self::Map => Some(FunctionKind::Map),
            Self::FlatMap => Some(FunctionKind::FlatMap),
            Self::Filter => Some(FunctionKind::Filter),
            Self::MapPartitions => Some(FunctionKind::MapPartitions),
            Self::Transform => Some(FunctionKind::Transform),
            Self::Reduce | Self::ReduceByKey | Self::ReduceByWindow | Self::ReduceByKeyAndWindow => {
                Some(FunctionKind::Reduce)
            }
            Self::UpdateStateByKey => Some(FunctionKind::UpdateState),
            Self::MapWithState => Some(FunctionKind::MapWithState),
            Self::KeyBy => Some(FunctionKind::KeyBy),
            _ => None,
        }
    }

    /// How many inputs it reads.
    pub const fn arity(self) -> Arity {
        match self {
            Self::Union => Arity::Many,
            Self::Join | Self::Cogroup => Arity::Two,
            _ => Arity::One,
        }
    }

    /// Whether it works over a window of batches (`window`, `slide`).
    pub const fn windowed(self) -> bool {
        matches!(
            self,
            Self::Window
                | Self::CountByWindow
                | Self::ReduceByWindow
                | Self::ReduceByKeyAndWindow
                | Self::CountByValueAndWindow
        )
    }
}

/// Which keys a join keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinHow {
    /// Keys on both sides: `(K, (V, W))`.
    #[default]
    Inner,
    /// Every left key: `(K, (V, Option<W>))`.
    Left,
    /// Every right key: `(K, (Option<V>, W))`.
    Right,
    /// Every key: `(K, (Option<V>, Option<W>))`.
    Full,
}

/// What a stage does when a plugin call fails (`on_error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The batch fails: no output of it is written, stage state stays as before the batch; the
    /// next batch runs.
    #[default]
    Fail,
    /// Call again (`retries` times, default 2, with a fresh instance), then fail.
    Retry,
    /// Drop the failing partition's records (counted and logged); the batch goes on.
    Skip,
    /// Send the failing partition's records with the error to the `dead_letter` sink; the batch
    /// goes on.
    DeadLetter,
}

impl OnError {
    /// The name used in pipeline files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// `[[stages]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unique among sources, stages and sinks.
    pub name: String,
    /// The source or stage it reads (ops with one input).
    pub input: Option<String>,
    /// The streams it reads (`union`: one or more; `join`, `cogroup`: two, left then right).
    pub inputs: Option<Vec<String>>,
    /// What it does.
    pub op: Op,
    /// The plugin (a key of `[plugins]`) holding its function, for ops that call one.
    pub plugin: Option<String>,
    /// The function's name in the plugin.
    pub function: Option<String>,
    /// `reduce_by_key_and_window`: the inverse of `function` (`inverse(reduce(a, b), b) == a`),
    /// so each slide only adds the batches entering the window and removes those leaving it.
    pub inverse: Option<String>,
    /// Windowed ops: the window length ("30s"), a multiple of `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// Windowed ops: how often the window is computed ("10s"), a multiple of `batch_interval`;
    /// default `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub slide: Option<Duration>,
    /// `join`: `inner` (default), `left`, `right` or `full`.
    pub how: Option<JoinHow>,
    /// `repartition`: the number of partitions.
    pub partitions: Option<usize>,
    /// `event_window`: a `timestamp` function of the plugin giving each record's event time (ms
    /// since the Unix epoch). Without it, a record's event time is its batch time.
    pub timestamp: Option<String>,
    /// `event_window`: a field of the value struct holding each record's event time, ms since the
    /// Unix epoch (`i64`, `u64` or an `Option` of one; `None` or negative: the batch time), e.g.
    /// `timestamp` of a Kafka source's `KafkaRecord`: no plugin function needed.
    pub time_field: Option<String>,
    /// `event_window`: session windows that close after this long without an event for the key
    /// (at most 365d).
    #[serde(default, with = "duration::option")]
    pub gap: Option<Duration>,
    /// `event_window`: how far behind the largest event time seen the watermark trails
    /// (default 0, at most 365d). A record whose windows the watermark has already closed is late.
    #[serde(default, with = "duration::option")]
    pub allowed_lateness: Option<Duration>,
    /// `map_with_state`: a key whose state has seen no new value for this long (in batch time)
    /// times out: the function is called once more with no values, then the state is dropped.
    /// At least 1ms, at most 365d.
    #[serde(default, with = "duration::option")]
    pub state_timeout: Option<Duration>,
    /// Deadline of each plugin call of this stage (default: `--call-timeout`); at least 10ms, at
    /// most 24h.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Memory cap of the plugin's instance while it serves this stage ("64MiB"; default:
    /// `--memory-limit-mib`).
    #[serde(default, with = "size::option")]
    pub memory_limit: Option<usize>,
    /// What a failed plugin call does (default `fail`).
    pub on_error: Option<OnError>,
    /// `on_error = "retry"`: how many more calls (default 2).
    pub retries: Option<u32>,
    /// `on_error = "dead_letter"`: the sink (with no `input`) that receives failed records.
    pub dead_letter: Option<String>,
}

impl StageConfig {
    /// The names of the streams it reads, whichever field holds them.
    pub fn input_names(&self) -> Vec<&str> {
        match (&self.input, &self.inputs) {
            (Some(input), _) => vec![input.as_str()],
            (None, Some(inputs)) => inputs.iter().map(String::as_str).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The error policy: `on_error`, or `dead_letter` when only a dead-letter sink is named.
    pub fn policy(&self) -> OnError {
        match (self.on_error, &self.dead_letter) {
            (Some(policy), _) => policy,
            (None, Some(_)) => OnError::DeadLetter,
            (None, None) => OnError::Fail,
        }
    }
}

/// A parsed pipeline file, with the directory its relative paths start from.
#[derive(Clone, Debug)]
pub struct PipelineFile {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub config: PipelineConfig,
}

impl PipelineFile {
    /// Reads and parses `path`. A syntax error or an unknown field is one error naming the
    /// file, line and field (with at most 200 characters of the line).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors::one(path, ConfigError::new("", format!("cannot read the pipeline file: {err}")))
        })?;
        let config: PipelineConfig = toml::from_str(&text)
            .map_err(|err| ConfigErrors::one(path, ConfigError::new("", crate::fields::toml_error(&text, &err))))?;
        Ok(Self { path: path.to_path_buf(), config })
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        self.path.parent().unwrap_or(Path::new(".")).join(path)
    }

    /// Checks what can be checked without loading plugins: intervals, unique names, references
    /// between sources, stages and sinks, fields each op needs. Returns every problem found.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let c = &self.config;
        let (batch, block) = (c.pipeline.batch_interval, c.pipeline.block_interval);
        if batch.is_zero() {
            errors.push(ConfigError::new("pipeline.batch_interval", "must be longer than 0"));
        } else if batch > MAX_INTERVAL {
            errors.push(ConfigError::new("pipeline.batch_interval", too_long(batch, MAX_INTERVAL_TEXT)));
        }
        if block.is_zero() {
            errors.push(ConfigError::new("pipeline.block_interval", "must be longer than 0"));
        } else if block > MAX_INTERVAL {
            errors.push(ConfigError::new("pipeline.block_interval", too_long(block, MAX_INTERVAL_TEXT)));
        } else if !batch.is_zero() && (block > batch || batch.as_nanos() % block.as_nanos() != 0) {
            errors.push(ConfigError::new(
                "pipeline.block_interval",
                format!(
                    "must divide batch_interval ({}) evenly, found {}",
                    humantime::format_duration(batch),
                    humantime::format_duration(block)
                ),
            ));
        }
        if c.sources.is_empty() {
            errors.push(ConfigError::new("sources", "a pipeline needs at least one [[sources]] entry"));
        }
        for (name, path) in &c.plugins {
            let resolved = self.resolve(path);
            if !resolved.is_file() {
                errors.push(ConfigError::new(
                    format!("plugins.{name}"),
                    format!("plugin file {} not found", resolved.display()),
                ));
            }
        }
        let mut names: BTreeMap<&str, &str> = BTreeMap::new();
        let entries = c
            .sources
            .iter()
            .map(|s| ("sources", s.name()))
            .chain(c.stages.iter().map(|s| ("stages", s.name.as_str())))
            .chain(c.sinks.iter().map(|s| ("sinks", s.name())));
        for (section, name) in entries {
            if name.is_empty() {
                errors.push(ConfigError::new(section, "a name must not be empty"));
            } else if let Some(first) = names.insert(name, section) {
                errors.push(ConfigError::new(
                    format!("{section} `{name}`"),
                    format!("the name is already used in [{first}]; names must be unique"),
                ));
            }
        }
        let late: Vec<String> =
            c.stages.iter().filter(|s| s.op == Op::EventWindow).map(|s| format!("{}.late", s.name)).collect();
        let streams: Vec<&str> = c
            .sources
            .iter()
            .map(|s| s.name())
            .chain(c.stages.iter().map(|s| s.name.as_str()))
            .chain(late.iter().map(String::as_str))
            .collect();
        let unknown_input = |input: &str| {
            format!(
                "input `{input}` is not a source or stage (known: {})",
                if streams.is_empty() { "none".to_string() } else { streams.join(", ") }
            )
        };
        for stage in &c.stages {
            self.validate_stage(stage, &streams, &unknown_input, &mut errors);
        }
        let mut names_seen: Vec<&str> = c.sources.iter().map(|s| s.name()).collect();
        names_seen.extend(c.stages.iter().map(|s| s.name.as_str()));
        names_seen.extend(c.sinks.iter().map(|s| s.name()));
        for name in &late {
            if names_seen.contains(&name.as_str()) {
                errors.push(ConfigError::new(
                    format!("`{name}`"),
                    "this name is the late-record stream of an event_window stage; choose another".to_string(),
                ));
            }
        }
        self.validate_resources(&mut errors);
        for sink in &c.sinks {
            let dead_letter = c.stages.iter().any(|s| s.dead_letter.as_deref() == Some(sink.name()));
            match sink.input() {
                None if !dead_letter => errors.push(ConfigError::new(
                    format!("sinks `{}`.input", sink.name()),
                    "missing: the stream to write (only a stage's dead_letter sink has no input)",
                )),
                None => {}
                Some(input) if !streams.contains(&input) => {
                    errors.push(ConfigError::new(format!("sinks `{}`.input", sink.name()), unknown_input(input)))
                }
                Some(_) => {}
            }
        }
        let checkpointed = c.pipeline.checkpoint_dir.is_some();
        if c.pipeline.checkpoint_every == 0 {
            errors.push(ConfigError::new("pipeline.checkpoint_every", "must be at least 1 (batches)"));
        }
        for source in &c.sources {
            match source {
                SourceConfig::Socket(socket) => errors.extend(socket.validate(checkpointed)),
                SourceConfig::Kafka(kafka) => errors.extend(kafka.validate()),
                SourceConfig::Directory(_) => {}
            }
        }
        for sink in &c.sinks {
            errors.extend(sink.validate());
        }
        errors
    }

    /// What `sluice check` adds to [`PipelineFile::validate`]: every directory a run writes (each
    /// file sink's `path`, `checkpoint_dir`) can be created and written. Nothing is left behind:
    /// a directory made to prove it can be is removed again (the run creates it when it needs it).
    pub fn check_directories(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(dir) = &self.config.pipeline.checkpoint_dir
            && let Err(problem) = writable_dir(&self.resolve(dir))
        {
            errors.push(ConfigError::new(
                "pipeline.checkpoint_dir",
                format!("{problem}; expected a directory the checkpoints can be written to"),
            ));
        }
        for sink in &self.config.sinks {
            if let crate::sinks::SinkConfig::File(file) = sink
                && let Err(problem) = file.check_writable(&self.resolve(&file.path))
            {
                errors.push(ConfigError::new(format!("sinks `{}`.path", file.name), problem));
            }
        }
        errors
    }

    /// Two components may not write the same resource (a directory, a table, later a topic).
    fn validate_resources(&self, errors: &mut Vec<ConfigError>) {
        // What holds each resource first, and what to say to the next that wants it.
        let mut owners: BTreeMap<Resource, (String, &str)> = BTreeMap::new();
        let resolve = |p: &Path| {
            let path = self.resolve(p);
            std::path::absolute(&path).unwrap_or(path)
        };
        if let Some(dir) = &self.config.pipeline.checkpoint_dir {
            owners.insert(
                Resource::Directory(resolve(dir)),
                ("the checkpoint (pipeline.checkpoint_dir)".into(), "lives in the same directory; choose another"),
            );
        }
        let sources = self.config.sources.iter().map(|s| ("sources", s.name(), s.resources(resolve), "source"));
        let sinks = self.config.sinks.iter().map(|s| ("sinks", s.name(), s.resources(resolve), "sink"));
        for (section, name, resources, kind) in sources.chain(sinks) {
            for (field, resource) in resources {
                match owners.get(&resource) {
                    Some((first, what)) => {
                        errors.push(ConfigError::new(format!("{section} `{name}`.{field}"), format!("{first} {what}")))
                    }
                    None => {
                        let what = if kind == "sink" {
                            resource.clash()
                        } else {
                            "reads the same directory; a pipeline must not read a directory twice or read what it writes"
                        };
                        owners.insert(resource, (format!("{kind} `{name}`"), what));
                    }
                }
            }
        }
    }

    fn validate_stage(
        &self,
        stage: &StageConfig,
        streams: &[&str],
        unknown_input: &dyn Fn(&str) -> String,
        errors: &mut Vec<ConfigError>,
    ) {
        let c = &self.config;
        let at = format!("stages `{}`", stage.name);
        let op = stage.op;
        let mut error = |field: &str, message: String| {
            let location = if field.is_empty() { at.clone() } else { format!("{at}.{field}") };
            errors.push(ConfigError::new(location, message));
        };
        match (op.arity(), &stage.input, &stage.inputs) {
            (Arity::One, Some(input), None) => {
                if !streams.contains(&input.as_str()) {
                    error("input", unknown_input(input));
                }
            }
            (Arity::One, _, _) => error("input", format!("op `{}` reads one stream: `input = \"<name>\"`", op.name())),
            (arity, None, Some(inputs)) => {
                let count_ok = match arity {
                    Arity::Two => inputs.len() == 2,
                    _ => !inputs.is_empty(),
                };
                if !count_ok {
                    let expected = if arity == Arity::Two {
                        "exactly two streams, left then right"
                    } else {
                        "one or more streams"
                    };
                    error("inputs", format!("op `{}` reads {expected}, found {}", op.name(), inputs.len()));
                }
                for input in inputs {
                    if !streams.contains(&input.as_str()) {
                        error("inputs", unknown_input(input));
                    }
                }
            }
            (_, _, _) => {
                error("inputs", format!("op `{}` reads several streams: `inputs = [\"a\", \"b\"]`", op.name()))
            }
        }
        let event_plugin = op == Op::EventWindow && (stage.function.is_some() || stage.timestamp.is_some());
        match (op.function_kind(), &stage.plugin, &stage.function) {
            (None, Some(_), _) if event_plugin => {}
            (None, None, _) if event_plugin => {
                error("plugin", "a timestamp or reduce function needs `plugin = \"<name from [plugins]>\"`".into())
            }
            (None, None, None) => {}
            (None, _, _) => error("", format!("op `{}` takes no plugin or function", op.name())),
            (Some(_), plugin, function) => {
                match plugin {
                    None => error("plugin", format!("op `{}` needs `plugin = \"<name from [plugins]>\"`", op.name())),
                    Some(plugin) if !c.plugins.contains_key(plugin) => error(
                        "plugin",
                        format!(
                            "plugin `{plugin}` is not declared in [plugins] (declared: {})",
                            if c.plugins.is_empty() {
                                "none".to_string()
                            } else {
                                c.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ),
                    Some(_) => {}
                }
                if function.is_none() {
                    error("function", format!("op `{}` needs `function = \"<exported function>\"`", op.name()));
                }
            }
        }
        if op != Op::EventWindow {
            for (field, set) in [
                ("timestamp", stage.timestamp.is_some()),
                ("time_field", stage.time_field.is_some()),
                ("gap", stage.gap.is_some()),
                ("allowed_lateness", stage.allowed_lateness.is_some()),
            ] {
                if set {
                    error(field, format!("only event_window takes `{field}`, not `{}`", op.name()));
                }
            }
        } else {
            match (stage.window, stage.gap) {
                (Some(_), Some(_)) => {
                    error("gap", "give `window` (tumbling/sliding) or `gap` (sessions), not both".into())
                }
                (None, None) => {
                    error("window", "event_window needs `window = \"<duration>\"` or `gap = \"<duration>\"`".into())
                }
                (None, Some(gap)) if gap.is_zero() => error("gap", "must be longer than 0".into()),
                (Some(window), _) if window.is_zero() => error("window", "must be longer than 0".into()),
                _ => {}
            }
            if let (Some(window), Some(slide)) = (stage.window, stage.slide)
                && (slide.is_zero() || slide > window || !window.as_millis().is_multiple_of(slide.as_millis().max(1)))
            {
                error("slide", "must be longer than 0 and divide the window".into());
            }
            if stage.gap.is_some() && stage.slide.is_some() {
                error("slide", "session windows do not slide".into());
            }
            if stage.timestamp.is_some() && stage.time_field.is_some() {
                error("time_field", "give a `timestamp` function or a `time_field`, not both".into());
            }
        }
        if stage.state_timeout.is_some_and(|t| t.as_millis() == 0) {
            error("state_timeout", "must be at least 1ms".into());
        }
        if stage.timeout.is_some_and(|t| t.as_millis() < 10) {
            error("timeout", "must be at least 10ms (deadlines are checked every 10ms)".into());
        }
        for (field, value, max, text) in [
            ("window", stage.window, MAX_SPAN, MAX_SPAN_TEXT),
            ("slide", stage.slide, MAX_SPAN, MAX_SPAN_TEXT),
            ("gap", stage.gap, MAX_SPAN, MAX_SPAN_TEXT),
            ("allowed_lateness", stage.allowed_lateness, MAX_SPAN, MAX_SPAN_TEXT),
            ("state_timeout", stage.state_timeout, MAX_SPAN, MAX_SPAN_TEXT),
            ("timeout", stage.timeout, MAX_INTERVAL, MAX_INTERVAL_TEXT),
        ] {
            if let Some(value) = value.filter(|v| *v > max) {
                error(field, too_long(value, text));
            }
        }
        if stage.memory_limit.is_some_and(|m| m < 1 << 16) {
            error("memory_limit", "must be at least 64KiB (one WebAssembly page)".into());
        }
        let calls_plugin = op.function_kind().is_some() || stage.plugin.is_some();
        for (field, set) in [
            ("timeout", stage.timeout.is_some()),
            ("memory_limit", stage.memory_limit.is_some()),
            ("on_error", stage.on_error.is_some()),
            ("dead_letter", stage.dead_letter.is_some()),
            ("retries", stage.retries.is_some()),
        ] {
            if set && !calls_plugin {
                error(field, format!("op `{}` calls no plugin; `{field}` applies to plugin calls", op.name()));
            }
        }
        match (stage.policy(), &stage.dead_letter) {
            (OnError::DeadLetter, None) => {
                error("dead_letter", "on_error = \"dead_letter\" needs `dead_letter = \"<sink name>\"`".into())
            }
            (OnError::DeadLetter, Some(sink)) => match c.sinks.iter().find(|s| s.name() == sink) {
                None => error(
                    "dead_letter",
                    format!(
                        "`{sink}` is not a sink (known: {})",
                        c.sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Some(target) if target.input().is_some() => error(
                    "dead_letter",
                    format!(
                        "sink `{sink}` writes stream `{}`; a dead-letter sink has no `input`",
                        target.input().unwrap_or_default()
                    ),
                ),
                Some(_) => {}
            },
            (policy, Some(_)) => error(
                "dead_letter",
                format!("only on_error = \"dead_letter\" sends records to a sink, not `{}`", policy.name()),
            ),
            (_, None) => {}
        }
        if stage.retries.is_some() && stage.policy() != OnError::Retry {
            error("retries", "only on_error = \"retry\" takes `retries`".into());
        }
        if op == Op::EventWindow {
            for (field, value) in [("window", stage.window), ("slide", stage.slide), ("gap", stage.gap)] {
                if value.is_some_and(|d| !d.is_zero() && d.as_millis() == 0) {
                    error(field, "event time is in ms: must be at least 1ms".into());
                }
            }
        }
        if stage.state_timeout.is_some() && op != Op::MapWithState {
            error("state_timeout", format!("only map_with_state takes `state_timeout`, not `{}`", op.name()));
        }
        if stage.inverse.is_some() && op != Op::ReduceByKeyAndWindow {
            error("inverse", format!("only reduce_by_key_and_window takes an inverse, not `{}`", op.name()));
        }
        if stage.how.is_some() && op != Op::Join {
            error("how", format!("only join takes `how`, not `{}`", op.name()));
        }
        match (op, stage.partitions) {
            (Op::Repartition, None) => error("partitions", "repartition needs `partitions = <n>`".into()),
            (Op::Repartition, Some(0)) => error("partitions", "must be at least 1".into()),
            (Op::Repartition, Some(n)) if n > MAX_PARTITIONS => {
                error("partitions", format!("must be at most {MAX_PARTITIONS}, found {n}"))
            }
            (Op::Repartition, Some(_)) => {}
            (_, Some(_)) => error("partitions", format!("only repartition takes `partitions`, not `{}`", op.name())),
            (_, None) => {}
        }
        let batch = c.pipeline.batch_interval;
        if op.windowed() {
            let multiple = |field: &str, d: Duration, error: &mut dyn FnMut(&str, String)| {
                if d.is_zero() || batch.is_zero() || !d.as_nanos().is_multiple_of(batch.as_nanos()) {
                    error(
                        field,
                        format!(
                            "must be a multiple of batch_interval ({}), found {}",
                            humantime::format_duration(batch),
                            humantime::format_duration(d)
                        ),
                    );
                }
            };
            match stage.window {
                None => error("window", format!("op `{}` needs `window = \"<duration>\"`", op.name())),
                Some(window) => multiple("window", window, &mut error),
            }
            if let Some(slide) = stage.slide {
                multiple("slide", slide, &mut error);
                if let Some(window) = stage.window
                    && slide > window
                {
                    error("slide", "must not be longer than the window".into());
                }
            }
        } else if op != Op::EventWindow {
            for (field, set) in [("window", stage.window.is_some()), ("slide", stage.slide.is_some())] {
                if set {
                    error(field, format!("op `{}` is not windowed", op.name()));
                }
            }
        }
    }
}

/// "must be at most <bound>, found <duration>".
fn too_long(duration: Duration, bound: &str) -> String {
    format!("must be at most {bound}, found {}", humantime::format_duration(duration))
}
