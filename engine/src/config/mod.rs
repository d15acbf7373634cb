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
//! [capabilities]              # optional: what a plugin's component may use beyond the sandbox
//! wordcount = ["clocks"]      # "clocks" (the host's clocks), "random" (the host's entropy)
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

mod cluster;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::fields::{ConfigError, ConfigErrors};
use crate::fields::{MAX_INTERVAL, MAX_INTERVAL_TEXT, duration, writable_dir};
pub(crate) use stage::{
    Arity, EventWindowConfig, JoinConfig, JoinHow, MapWithStateConfig, OnError, RepartitionConfig, StageConfig, StageOp,
};

use crate::sinks::{Resource, SinkConfig};
use crate::sources::SourceConfig;

/// A whole pipeline file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineConfig {
    /// Name and clock of the pipeline.
    pub pipeline: PipelineSection,
    /// Plugin name → path of its `.wasm` file, relative to the pipeline file.
    #[serde(default)]
    pub plugins: BTreeMap<String, PathBuf>,
    /// Plugin name → what its components may use beyond the default sandbox.
    #[serde(default)]
    pub capabilities: BTreeMap<String, Vec<Capability>>,
    /// Where records come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Operators, each reading one stream (a source or a stage) and producing another.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Where streams go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Run as one member of a cluster of processes sharing the Kafka source's partitions.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// A capability `[capabilities]` may give a plugin (ABI 2 components; `runtime::Capabilities`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Capability {
    /// The host's wall and monotonic clocks.
    Clocks,
    /// Random bytes from the host's entropy (not the fixed seed).
    Random,
}

impl Capability {
    /// Its name in `[capabilities]`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Clocks => "clocks",
            Self::Random => "random",
        }
    }

    /// The WASI interfaces it serves (a prefix of their import names).
    pub(crate) const fn interface(self) -> &'static str {
        match self {
            Self::Clocks => "wasi:clocks/",
            Self::Random => "wasi:random/",
        }
    }
}

/// `[pipeline]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineSection {
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

/// A parsed pipeline file, with the directory its relative paths start from.
#[derive(Clone, Debug)]
pub struct PipelineFile {
    /// The file.
    pub(crate) path: PathBuf,
    /// Its content.
    pub(crate) config: PipelineConfig,
}

impl PipelineFile {
    /// Reads and parses `path`. A syntax error or an unknown field is one error naming the
    /// file, line and field (with at most 200 characters of the line).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors::one(path, ConfigError::new("", format!("cannot read the pipeline file: {err}")))
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the content of the pipeline file `path` (which names it in errors and
    /// resolves its relative paths), as [`PipelineFile::load`] does.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let config: PipelineConfig = toml::from_str(text)
            .map_err(|err| ConfigErrors::one(path, ConfigError::new("", crate::fields::toml_error(text, &err))))?;
        Ok(Self { path: path.to_path_buf(), config })
    }

    /// Each plugin's `[capabilities]`, as the runtime takes them.
    pub(crate) fn capabilities(&self) -> BTreeMap<String, crate::runtime::Capabilities> {
        let of = |list: &Vec<Capability>| crate::runtime::Capabilities {
            clocks: list.contains(&Capability::Clocks),
            random: list.contains(&Capability::Random),
        };
        self.config.capabilities.iter().map(|(name, list)| (name.clone(), of(list))).collect()
    }

    /// A path from the file, resolved against the file's directory.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        self.path.parent().unwrap_or(Path::new(".")).join(path)
    }

    /// Checks what can be checked without loading plugins: intervals, unique names, references
    /// between sources, stages and sinks, fields each op needs. Returns every problem found.
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
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
        for name in c.capabilities.keys().filter(|name| !c.plugins.contains_key(*name)) {
            errors.push(ConfigError::new(
                format!("capabilities.{name}"),
                format!("no plugin `{name}` in [plugins] to give capabilities to"),
            ));
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
        let late: Vec<String> = c
            .stages
            .iter()
            .filter(|s| matches!(s.op, StageOp::EventWindow(_)))
            .map(|s| format!("{}.late", s.name))
            .collect();
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
            stage.validate(c, &streams, &unknown_input, &mut errors);
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
            let dead_letter = c.stages.iter().any(|s| s.call().dead_letter.as_deref() == Some(sink.name()));
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
                SourceConfig::Kinesis(kinesis) => errors.extend(kinesis.validate()),
                SourceConfig::Flume(flume) => errors.extend(flume.validate(checkpointed)),
                SourceConfig::Directory(_) => {}
            }
        }
        for sink in &c.sinks {
            errors.extend(sink.validate());
        }
        if let Some(cluster) = &c.cluster {
            errors.extend(cluster::validate(c, cluster));
        }
        errors
    }

    /// What `sluice check` adds to [`PipelineFile::validate`]: every directory a run writes (each
    /// file sink's `path`, `checkpoint_dir`) can be created and written. Nothing is left behind:
    /// a directory made to prove it can be is removed again (the run creates it when it needs it).
    pub(crate) fn check_directories(&self) -> Vec<ConfigError> {
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
                errors.push(ConfigError::new(format!("sinks `{}`.path", file.name), problem.to_string()));
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
                        let what = if kind == "sink" || matches!(resource, Resource::Address(_)) {
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
}

/// "must be at most <bound>, found <duration>".
fn too_long(duration: Duration, bound: &str) -> String {
    format!("must be at most {bound}, found {}", humantime::format_duration(duration))
}
