//! Sinks: where a stream's records go after each batch. Every sink has one shape, [`Sink`]:
//!
//! 1. [`Sink::open`] once, before the first batch (create a directory, connect);
//! 2. per batch, [`Sink::write`] the batch's records, knowing its batch time and whether it is
//!    a replay (so a sink can recognise a batch it has seen), then [`Sink::commit`] it once every
//!    sink has written — only then is the batch's output final (a file renamed into place, a
//!    transaction committed); the checkpoint follows.
//!
//! Each sink's config declares its [`SinkGuarantee`] — what a batch written again after a crash
//! does — and the [`Resource`]s it writes, so clashes are found generically at validation and
//! `sluice check` can print each source → sink path's end-to-end guarantee
//! ([`crate::sources::end_to_end`]). Records are rendered as JSON from their [`TypeDesc`] (see
//! [`render`](crate::codec::render)); a keyed record `(K, V)` is `[key, value]`. A sink without an `input` is a
//! stage's dead-letter sink.
//!
//! The scheduler retries a failing write or commit, then stops the run without a checkpoint, so
//! a restart (with `checkpoint_dir`) replays the batch: a sink never drops a batch silently.
//!
//! A sink that writes to another system is checked twice before a run: against the stream's
//! record type when the pipeline loads ([`SinkConfig::validate_input`]), and by `sluice check`
//! against the system itself when it answers ([`SinkConfig::check`]: a database's table and
//! columns); one that does not answer is a warning there, not an error.

pub mod dashboard;
pub mod file;
pub(crate) mod kafka;
pub mod postgres;
pub mod print;
pub(crate) mod shuffle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sluice_sdk::TypeDesc;

pub use dashboard::DashboardSinkConfig;
pub use file::FileSinkConfig;
pub use kafka::KafkaSinkConfig;
pub use postgres::PostgresSinkConfig;
pub use print::PrintSinkConfig;

use crate::block::Partition;
use crate::fields::ConfigError;
use crate::metrics::events::Events;

/// `[[sinks]]`, tagged by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// The first records of each batch on standard output, like Spark's `print()`.
    Print(PrintSinkConfig),
    /// One JSON-lines file per batch with output.
    File(FileSinkConfig),
    /// The latest output on the dashboard page, as a table or a bar chart.
    Dashboard(DashboardSinkConfig),
    /// Records to a Kafka topic, one transaction per batch where the brokers support them.
    Kafka(KafkaSinkConfig),
    /// Rows of a PostgreSQL table, appended or upserted, one transaction per batch.
    Postgres(PostgresSinkConfig),
}

/// What writing a batch again (a replay after a crash) does to a sink's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkGuarantee {
    /// The same batch writes the same output in the same place: a replay replaces it.
    Idempotent,
    /// A batch's output becomes visible at once, at commit, and a replayed batch is
    /// recognised and not made visible twice.
    Transactional,
    /// A replayed batch's output appears again.
    AtLeastOnce,
}

/// Something outside the engine that one component holds (a sink writes it, a source reads it);
/// no two components may hold the same one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// A directory, resolved against the pipeline file.
    Directory(PathBuf),
    /// A Kafka topic, by its brokers as written and its name.
    Topic {
        /// `brokers`.
        brokers: String,
        /// `topic`.
        topic: String,
    },
    /// A database table.
    Table {
        /// `host:port/database`.
        database: String,
        /// `schema.table`.
        table: String,
    },
    /// A local address a source listens on, as written (`host:port`).
    Address(String),
}

impl Resource {
    /// What to tell a second sink that wants the same resource.
    pub const fn clash(&self) -> &'static str {
        match self {
            Self::Directory(_) => "writes to the same directory; each file sink needs its own",
            Self::Table { .. } => "writes to the same table; a table takes the batches of one sink",
            Self::Address(_) => "listens on the same address; give each listening source its own port",
            Self::Topic { .. } => {
                "writes to the same topic; each Kafka sink needs its own (its transactions and replay detection are per sink)"
            }
        }
    }
}

/// What building a sink needs besides its config.
#[derive(Clone, Copy, Debug)]
pub struct SinkContext<'a> {
    /// The pipeline's name: transactional sinks record their batches under it.
    pub pipeline: &'a str,
    /// The type of the records it writes.
    pub ty: &'a TypeDesc,
    /// Where dashboard sinks publish.
    pub events: &'a Arc<Events>,
    /// The pipeline runs as a member of a cluster: output comes per source partition.
    pub in_cluster: bool,
}

/// What `sluice check` found asking the system a sink writes to.
#[derive(Clone, Debug, Default)]
pub struct SinkCheck {
    /// What would make the run fail (a missing table, a column of another type).
    pub errors: Vec<ConfigError>,
    /// What could not be checked (a database that did not answer).
    pub warnings: Vec<ConfigError>,
}

/// One batch as a sink sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRef<'a> {
    /// The batch time, ms since the Unix epoch: the same on a replay.
    pub time_ms: u64,
    /// Written again after a restart.
    pub replayed: bool,
    /// In a cluster, the source partition (`<topic>-<partition>`) this output is of: each
    /// partition's output of a batch is its own (a file of its own), whichever member writes it.
    pub task: Option<&'a str>,
    /// The plugin versions that computed it, `plugin@short hash` (the file sink's lineage).
    pub versions: &'a [String],
}

/// A sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// What was being written.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Kafka brokers refused or failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The PostgreSQL sink could not take the batch.
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
}

/// The shape of every sink; see the module docs.
pub trait Sink: Send + std::fmt::Debug {
    /// Prepares to write; called once before the first batch.
    fn open(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Writes one batch's records of a stream of type `ty`; returns how many it wrote. Until
    /// [`Sink::commit`], the output need not be visible. Called again for the same batch after
    /// a failure.
    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError>;

    /// Makes the written batch final. Called again after a failure.
    fn commit(&mut self, _batch: BatchRef<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}

impl SinkConfig {
    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Print(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Dashboard(c) => &c.name,
            Self::Kafka(c) => &c.name,
            Self::Postgres(c) => &c.name,
        }
    }

    /// The stream it writes; `None` for a dead-letter sink.
    pub fn input(&self) -> Option<&str> {
        match self {
            Self::Print(c) => c.input.as_deref(),
            Self::File(c) => c.input.as_deref(),
            Self::Dashboard(c) => c.input.as_deref(),
            Self::Kafka(c) => c.input.as_deref(),
            Self::Postgres(c) => c.input.as_deref(),
        }
    }

    /// The kind, as written after `type =`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Print(_) => "print",
            Self::File(_) => "file",
            Self::Dashboard(_) => "dashboard",
            Self::Kafka(_) => "kafka",
            Self::Postgres(_) => "postgres",
        }
    }

    /// What a replayed batch does to its output.
    pub const fn guarantee(&self) -> SinkGuarantee {
        match self {
            Self::File(_) => SinkGuarantee::Idempotent,
            // A batch's rows commit with its progress row; a replayed batch finds it.
            Self::Postgres(_) => SinkGuarantee::Transactional,
            // A replay prints again; a dashboard shows the latest rows again.
            Self::Print(_) | Self::Dashboard(_) => SinkGuarantee::AtLeastOnce,
            Self::Kafka(c) => c.guarantee(),
        }
    }

    /// What it will be when run, asking the services it writes where that depends on them
    /// (a Kafka sink with `delivery = "auto"`), and why if less than declared.
    pub fn probe_guarantee(&self, pipeline: &str) -> (SinkGuarantee, Option<String>) {
        match self {
            Self::Kafka(c) => c.probe(pipeline),
            _ => (self.guarantee(), None),
        }
    }

    /// What it writes, with the field that names it; relative paths resolve with `resolve`.
    pub fn resources(&self, resolve: impl Fn(&Path) -> PathBuf) -> Vec<(&'static str, Resource)> {
        match self {
            Self::File(c) => vec![("path", Resource::Directory(resolve(&c.path)))],
            Self::Kafka(c) => vec![("topic", Resource::Topic { brokers: c.brokers.clone(), topic: c.topic.clone() })],
            Self::Postgres(c) => c.resources(),
            Self::Print(_) | Self::Dashboard(_) => Vec::new(),
        }
    }

    /// Checks its own fields; every problem, each naming its field.
    pub fn validate(&self) -> Vec<ConfigError> {
        match self {
            Self::Postgres(c) => c.validate(),
            Self::Kafka(c) => c.validate(),
            Self::Print(_) | Self::File(_) | Self::Dashboard(_) => Vec::new(),
        }
    }

    /// Checks it can write records of type `ty` (a table's columns come from the type).
    pub fn validate_input(&self, ty: &TypeDesc) -> Vec<ConfigError> {
        match self {
            Self::Postgres(c) => c.validate_input(ty),
            Self::Print(_) | Self::File(_) | Self::Dashboard(_) | Self::Kafka(_) => Vec::new(),
        }
    }

    /// What `sluice check` asks the system it writes to, for records of type `ty`.
    pub fn check(&self, ty: &TypeDesc) -> SinkCheck {
        match self {
            Self::Postgres(c) => c.check(ty),
            Self::Print(_) | Self::File(_) | Self::Dashboard(_) | Self::Kafka(_) => SinkCheck::default(),
        }
    }

    /// Builds the sink; relative paths resolve with `resolve`.
    pub fn build(&self, resolve: impl Fn(&Path) -> PathBuf, context: &SinkContext<'_>) -> Box<dyn Sink> {
        match self {
            Self::Print(c) => Box::new(c.build()),
            Self::File(c) => Box::new(c.build(resolve(&c.path))),
            Self::Dashboard(c) => Box::new(c.build(context.events.clone())),
            Self::Postgres(c) => Box::new(c.build(context.pipeline, context.ty, context.in_cluster)),
            Self::Kafka(c) => Box::new(c.build(context.pipeline)),
        }
    }
}
