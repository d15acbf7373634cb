//! Sinks: where a stream's records go after each batch. Records are rendered as JSON from their
//! [`TypeDesc`] (see [`render`]); a keyed record `(K, V)` is `[key, value]`.

pub mod dashboard;
pub mod file;
pub mod print;
pub mod render;

use serde::Deserialize;
use sluice_sdk::TypeDesc;

pub use dashboard::{DashboardSink, DashboardSinkConfig};
pub use file::{FileSink, FileSinkConfig};
pub use print::{PrintSink, PrintSinkConfig};

use crate::graph::Partition;

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
}

impl SinkConfig {
    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Print(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Dashboard(c) => &c.name,
        }
    }

    /// The stream it writes.
    pub fn input(&self) -> &str {
        match self {
            Self::Print(c) => &c.input,
            Self::File(c) => &c.input,
            Self::Dashboard(c) => &c.input,
        }
    }

    /// Builds the sink; relative paths resolve with `resolve`; dashboard sinks publish to
    /// `events`.
    pub fn build(
        &self,
        resolve: impl Fn(&std::path::Path) -> std::path::PathBuf,
        events: &std::sync::Arc<crate::metrics::events::Events>,
    ) -> Sink {
        match self {
            Self::Print(c) => Sink::Print(c.build()),
            Self::File(c) => Sink::File(c.build(resolve(&c.path))),
            Self::Dashboard(c) => Sink::Dashboard(c.build(events.clone())),
        }
    }
}

/// A sink failed to write a batch.
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
}

/// A built sink.
#[derive(Debug)]
pub enum Sink {
    /// See [`PrintSink`].
    Print(PrintSink),
    /// See [`FileSink`].
    File(FileSink),
    /// See [`DashboardSink`].
    Dashboard(DashboardSink),
}

impl Sink {
    /// Writes one batch's records of a stream of type `ty`. Returns how many records it wrote.
    pub fn write(&mut self, batch_time_ms: u64, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        match self {
            Self::Print(sink) => sink.write(batch_time_ms, ty, partitions),
            Self::File(sink) => sink.write(batch_time_ms, ty, partitions),
            Self::Dashboard(sink) => sink.write(batch_time_ms, ty, partitions),
        }
    }
}
