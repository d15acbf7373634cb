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

mod duration;
mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};

use crate::sinks::SinkConfig;
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
    /// Every `batch_interval` the blocks received become one batch ("1s", "500ms").
    #[serde(default = "default_batch_interval", with = "duration")]
    pub batch_interval: Duration,
    /// Every `block_interval` a receiver's records are cut into a block, one partition of the
    /// batch. Must divide `batch_interval`.
    #[serde(default = "default_block_interval", with = "duration")]
    pub block_interval: Duration,
}

fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_block_interval() -> Duration {
    Duration::from_millis(200)
}

/// An operator, as in Spark's DStream API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// One record in, one out (plugin `map` function).
    Map,
    /// One record in, any number out (plugin `flat_map` function).
    FlatMap,
    /// Keep the records the plugin's `filter` function accepts.
    Filter,
    /// Combine the values of each key with the plugin's `reduce` function (input must be keyed).
    ReduceByKey,
    /// The number of records in each batch, as one record (no plugin).
    Count,
}

impl Op {
    /// The name used in pipeline files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::FlatMap => "flat_map",
            Self::Filter => "filter",
            Self::ReduceByKey => "reduce_by_key",
            Self::Count => "count",
        }
    }
}

/// `[[stages]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unique among sources, stages and sinks.
    pub name: String,
    /// The source or stage it reads.
    pub input: String,
    /// What it does.
    pub op: Op,
    /// The plugin (a key of `[plugins]`) holding its function; not for `count`.
    pub plugin: Option<String>,
    /// The function's name in the plugin; not for `count`.
    pub function: Option<String>,
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
    /// file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors::one(path, ConfigError::new("", format!("cannot read the pipeline file: {err}")))
        })?;
        let config: PipelineConfig = toml::from_str(&text)
            .map_err(|err| ConfigErrors::one(path, ConfigError::new("", err.to_string().trim_end().to_string())))?;
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
        }
        if block.is_zero() {
            errors.push(ConfigError::new("pipeline.block_interval", "must be longer than 0"));
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
        let streams: Vec<&str> =
            c.sources.iter().map(|s| s.name()).chain(c.stages.iter().map(|s| s.name.as_str())).collect();
        let unknown_input = |input: &str| {
            format!(
                "input `{input}` is not a source or stage (known: {})",
                if streams.is_empty() { "none".to_string() } else { streams.join(", ") }
            )
        };
        for stage in &c.stages {
            let at = format!("stages `{}`", stage.name);
            if !streams.contains(&stage.input.as_str()) {
                errors.push(ConfigError::new(format!("{at}.input"), unknown_input(&stage.input)));
            }
            match (stage.op, &stage.plugin, &stage.function) {
                (Op::Count, None, None) => {}
                (Op::Count, _, _) => {
                    errors.push(ConfigError::new(at.clone(), "op `count` takes no plugin or function".to_string()))
                }
                (op, plugin, function) => {
                    match plugin {
                        None => errors.push(ConfigError::new(
                            format!("{at}.plugin"),
                            format!("op `{}` needs `plugin = \"<name from [plugins]>\"`", op.name()),
                        )),
                        Some(plugin) if !c.plugins.contains_key(plugin) => errors.push(ConfigError::new(
                            format!("{at}.plugin"),
                            format!(
                                "plugin `{plugin}` is not declared in [plugins] (declared: {})",
                                if c.plugins.is_empty() {
                                    "none".to_string()
                                } else {
                                    c.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                                }
                            ),
                        )),
                        Some(_) => {}
                    }
                    if function.is_none() {
                        errors.push(ConfigError::new(
                            format!("{at}.function"),
                            format!("op `{}` needs `function = \"<exported function>\"`", op.name()),
                        ));
                    }
                }
            }
        }
        for sink in &c.sinks {
            if !streams.contains(&sink.input()) {
                errors.push(ConfigError::new(format!("sinks `{}`.input", sink.name()), unknown_input(sink.input())));
            }
        }
        errors
    }
}
