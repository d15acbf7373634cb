//! Sources: where records come from. Every kind is one file here that owns its config (`type =
//! "..."` in `[[sources]]`), its validation, the resources it holds, its position and its
//! guarantee, and plugs into the core through one shape, [`Source`]:
//!
//! 1. **resume** from the checkpoint's [`Position`] and the batches logged after it (so a
//!    directory does not take again a file a logged batch took);
//! 2. **start** with a [`SourceContext`]: its [`Receiver`] (rate limit, pause, status, counts),
//!    the stop signal, the I/O runtime, the write-ahead log if it keeps one, the backlog;
//! 3. at every block cut, **cut** the blocks the batch being collected takes; a replayable
//!    source logs what its batch took (files, later offset ranges) before the batch runs;
//! 4. after a batch, report its **position** through that batch for the checkpoint, and
//!    **commit** once the checkpoint is durable (later: commit Kafka offsets);
//! 5. after a crash, **replay** a logged batch: the same blocks again.
//!
//! The write-ahead log ([`crate::batch_log::BatchLog`]) is a capability a
//! non-replayable source (socket, Flume) uses from its own `cut`; the clock knows nothing
//! of WALs, files or offsets.

pub mod directory;
pub mod flume;
pub(crate) mod kafka;
pub(crate) mod kinesis;
pub mod socket;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use directory::DirectorySourceConfig;
pub use flume::FlumeSourceConfig;
pub use kafka::KafkaSourceConfig;
pub use kinesis::{KinesisSourceConfig, ShardPositions};
pub use socket::SocketSourceConfig;

use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::receiver::Receiver;

/// `[[sources]]`, tagged by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Lines of text from a TCP server (the engine connects as a client, like Spark's
    /// `socketTextStream`).
    Socket(SocketSourceConfig),
    /// Lines of the files that appear in a directory (like Spark's `textFileStream`).
    Directory(DirectorySourceConfig),
    /// Records of Kafka topics, Spark's direct stream: offset ranges per batch.
    Kafka(KafkaSourceConfig),
    /// Records of a Kinesis stream: sequence-number ranges per shard and batch.
    Kinesis(KinesisSourceConfig),
    /// Events pushed by Flume agents and clients: the engine listens as a Flume Thrift source
    /// (like Spark's reliable Flume receiver).
    Flume(FlumeSourceConfig),
}

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Socket(config) => &config.name,
            Self::Directory(config) => &config.name,
            Self::Kafka(config) => &config.name,
            Self::Kinesis(config) => &config.name,
            Self::Flume(config) => &config.name,
        }
    }

    /// The type of its records: lines (`String`), or the whole records of a Kafka, Kinesis or
    /// Flume source (`KafkaRecord`, `KinesisRecord`, `FlumeRecord`).
    pub fn record_type(&self) -> sluice_sdk::TypeDesc {
        use sluice_sdk::Describe;
        match self {
            Self::Kafka(config) if config.format == kafka::KafkaFormat::Record => sluice_sdk::KafkaRecord::describe(),
            Self::Kinesis(config) if config.format == kinesis::KinesisFormat::Record => {
                sluice_sdk::KinesisRecord::describe()
            }
            Self::Flume(config) if config.format == flume::FlumeFormat::Record => sluice_sdk::FlumeRecord::describe(),
            Self::Socket(_) | Self::Directory(_) | Self::Kafka(_) | Self::Kinesis(_) | Self::Flume(_) => {
                sluice_sdk::TypeDesc::String
            }
        }
    }

    /// A cluster's shuffle: the writer of the repartition `topic` on a Kafka source's brokers
    /// (None for any other kind, which no cluster reads).
    pub(crate) fn shuffle_writer(
        &self,
        topic: &str,
        key: sluice_sdk::TypeDesc,
    ) -> Option<Result<crate::sinks::shuffle::ShuffleWriter, crate::sinks::SinkError>> {
        match self {
            Self::Kafka(config) => {
                Some(crate::sinks::shuffle::ShuffleWriter::new(topic, key, &config.brokers, &config.properties))
            }
            Self::Socket(_) | Self::Directory(_) | Self::Kinesis(_) | Self::Flume(_) => None,
        }
    }

    /// Whether backpressure adapts its rate (it reads, or a Flume source takes calls, at a rate
    /// the receiver sets).
    pub const fn adapts_rate(&self) -> bool {
        matches!(self, Self::Socket(_) | Self::Kafka(_) | Self::Kinesis(_) | Self::Flume(_))
    }

    /// Its `max_rate`, records/s, if it has one.
    pub const fn max_rate(&self) -> Option<u64> {
        match self {
            Self::Socket(config) => config.max_rate,
            Self::Kinesis(config) => config.max_rate,
            Self::Flume(config) => config.max_rate,
            Self::Directory(_) | Self::Kafka(_) => None,
        }
    }

    /// What it holds, with the field that names it; relative paths resolve with `resolve`. No
    /// other component may hold the same (a directory read twice, or read and written).
    pub fn resources(
        &self,
        resolve: impl Fn(&std::path::Path) -> std::path::PathBuf,
    ) -> Vec<(&'static str, crate::sinks::Resource)> {
        match self {
            Self::Directory(config) => vec![("path", crate::sinks::Resource::Directory(resolve(&config.path)))],
            // A server may serve several clients.
            Self::Socket(_) => Vec::new(),
            Self::Flume(config) => vec![("address", crate::sinks::Resource::Address(config.address.clone()))],
            // Several pipelines may read a topic; each owns its group (checked at start).
            Self::Kafka(_) => Vec::new(),
            // Kinesis keeps no consumer state on the stream: several pipelines may read it.
            Self::Kinesis(_) => Vec::new(),
        }
    }

    /// Builds the source; relative paths resolve with `resolve`.
    pub fn build(&self, resolve: impl Fn(&std::path::Path) -> std::path::PathBuf) -> Box<dyn Source> {
        match self {
            Self::Socket(config) => Box::new(config.build()),
            Self::Directory(config) => Box::new(config.build(resolve(&config.path))),
            Self::Kafka(config) => Box::new(config.build()),
            Self::Kinesis(config) => Box::new(config.build()),
            Self::Flume(config) => Box::new(config.build()),
        }
    }
}

/// Where a source is, as the checkpoint keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Nothing to keep: a source whose unfinished input is in the write-ahead log.
    #[default]
    Nothing,
    /// A directory source: the files taken by the batches through the checkpoint.
    Files(BTreeSet<String>),
    /// A Kafka source: the next offset of every partition, by topic, through the checkpoint.
    Offsets(std::collections::BTreeMap<String, std::collections::BTreeMap<i32, i64>>),
    /// A Kinesis source: the last sequence number taken per shard, and the shards read to
    /// their end, through the checkpoint.
    Shards(ShardPositions),
}

/// Where a source is, by name: one entry of a checkpoint's positions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The source's name.
    pub name: String,
    /// Its position, in the form its kind keeps.
    pub position: Position,
}

/// What a source starts with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Its receiver: buffer, counts, rate limit, pause, status.
    pub receiver: Arc<Receiver>,
    /// Turns true when the pipeline stops.
    pub stop: watch::Receiver<bool>,
    /// Where its tasks run.
    pub io: tokio::runtime::Handle,
    /// The checkpoint directory's batch log, when checkpoints are on.
    pub log: Option<BatchLog>,
    /// Batches emitted and not yet started: the backlog.
    pub backlog: crate::block::Backlog,
    /// The pipeline's name.
    pub pipeline: String,
    /// Its batch interval, ms.
    pub batch_ms: u64,
    /// As a cluster's member: the group, the member's name, the checkpoint store.
    pub(crate) cluster: Option<crate::cluster::Membership>,
}

/// One block cut, as a source sees it.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    /// Sequence number of the cut (blocks carry it).
    pub seq: u64,
    /// The batch the blocks join.
    pub batch: u64,
    /// This cut closes that batch (a batch boundary).
    pub closes_batch: bool,
}

/// A source that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A task, a thread or a socket could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A Kafka source refuses to start: its client, its topics or its consumer group.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaStartError),
    /// A cluster's checkpoint store cannot be opened.
    #[error("cluster.checkpoint_store: {0}")]
    Store(#[from] crate::cluster::store::StoreError),
}

/// The shape of every source; see the module docs.
pub trait Source: Send + std::fmt::Debug {
    /// Takes up the checkpoint's position and the input of the batches logged after it (not
    /// yet run). Called once, before [`Source::start`].
    fn resume(&mut self, position: Option<Position>, logged: &[(u64, &LoggedInput)]);

    /// Starts receiving (a socket connects); a source that reads at cut time keeps the context.
    fn start(&mut self, context: SourceContext) -> Result<(), StartError>;

    /// Whether no more input will come; `stopping`: the pipeline is stopping.
    fn finished(&mut self, stopping: bool) -> bool;

    /// The blocks of this cut; a replayable source logs what the batch takes before returning.
    fn cut(&mut self, cut: Cut) -> Vec<Block>;

    /// The position after every batch through `time`, for the checkpoint of `time`.
    fn position(&self, through: u64) -> Position;

    /// The checkpoint through `time` is durable.
    fn commit(&mut self, through: u64);

    /// The blocks of logged batch `time` again, after a crash.
    fn replay(&mut self, time: u64, logged: LoggedInput) -> Vec<Block>;
}

/// Every source of a pipeline, by index, shared by the clock (cuts) and the scheduler
/// (positions, commits, replays).
#[derive(Debug)]
pub struct Sources {
    names: Vec<String>,
    sources: Vec<Mutex<Box<dyn Source>>>,
}

impl Sources {
    /// The sources, in file order.
    pub fn new(names: Vec<String>, sources: Vec<Box<dyn Source>>) -> Self {
        Self { names, sources: sources.into_iter().map(Mutex::new).collect() }
    }

    fn lock(&self, index: usize) -> std::sync::MutexGuard<'_, Box<dyn Source>> {
        self.sources[index].lock().expect("source lock")
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Runs `f` on source `index`.
    pub fn with<T>(&self, index: usize, f: impl FnOnce(&mut dyn Source) -> T) -> T {
        f(self.lock(index).as_mut())
    }

    /// Every source's position through batch `time`, for its checkpoint.
    pub fn positions(&self, through: u64) -> Vec<SourcePosition> {
        (0..self.len())
            .map(|i| SourcePosition { name: self.names[i].clone(), position: self.lock(i).position(through) })
            .collect()
    }

    /// The checkpoint through `time` is durable: every source may commit.
    pub fn commit(&self, through: u64) {
        for i in 0..self.len() {
            self.lock(i).commit(through);
        }
    }

    /// The blocks of a logged batch, source by source.
    pub fn replay(&self, time: u64, logged: std::collections::BTreeMap<usize, LoggedInput>) -> Vec<Block> {
        let mut blocks = Vec::new();
        for (source, input) in logged {
            if source < self.len() {
                blocks.extend(self.lock(source).replay(time, input));
            }
        }
        blocks
    }
}

/// What a source can do after a crash, given where it keeps its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceGuarantee {
    /// Every batch's input can be read again from its logged position (files, offsets).
    Replayable,
    /// Received records are written to the write-ahead log before they count; the sender may
    /// resend what was not acknowledged, so a record can arrive twice.
    WriteAheadLog,
    /// Records in memory when the engine stops are gone.
    None,
}

/// The guarantee of one source → sink path, as `sluice check` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndToEnd {
    /// Every record's effect appears once in the sink's output, crashes included.
    ExactlyOnce,
    /// No record is lost; after a crash some may appear twice.
    AtLeastOnce,
    /// A crash may lose records (and state) that were in flight.
    BestEffort,
}

impl EndToEnd {
    /// The words `sluice check` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly once",
            Self::AtLeastOnce => "at least once",
            Self::BestEffort => "best effort",
        }
    }
}

/// The guarantee of a path from a source to a sink. Without checkpoints nothing survives a
/// crash; with them, a replayable source replays each batch exactly, so an idempotent or
/// transactional sink shows it once.
pub fn end_to_end(source: SourceGuarantee, sink: crate::sinks::SinkGuarantee, checkpointed: bool) -> EndToEnd {
    use crate::sinks::SinkGuarantee as Sink;
    match (checkpointed, source, sink) {
        (false, _, _) | (true, SourceGuarantee::None, _) => EndToEnd::BestEffort,
        (true, SourceGuarantee::Replayable, Sink::Idempotent | Sink::Transactional) => EndToEnd::ExactlyOnce,
        (true, SourceGuarantee::Replayable, Sink::AtLeastOnce) => EndToEnd::AtLeastOnce,
        (true, SourceGuarantee::WriteAheadLog, _) => EndToEnd::AtLeastOnce,
    }
}

impl SourceConfig {
    /// The kind and the options that decide its guarantee, as `sluice check` shows them
    /// (`socket, wal`).
    pub fn describe(&self) -> String {
        match self {
            Self::Socket(c) if c.wal && c.ack => "socket, wal, ack".into(),
            Self::Socket(c) if c.wal => "socket, wal".into(),
            Self::Socket(_) => "socket".into(),
            Self::Directory(_) => "directory".into(),
            Self::Kafka(_) => "kafka".into(),
            Self::Kinesis(_) => "kinesis".into(),
            Self::Flume(c) if c.wal => "flume, wal".into(),
            Self::Flume(_) => "flume".into(),
        }
    }

    /// What `sluice check` adds to a path's guarantee about this source, if anything.
    pub const fn guarantee_note(&self) -> Option<&'static str> {
        match self {
            Self::Flume(c) => Some(c.answer_note()),
            Self::Socket(_) | Self::Directory(_) | Self::Kafka(_) | Self::Kinesis(_) => None,
        }
    }

    /// What it can do after a crash.
    pub const fn guarantee(&self) -> SourceGuarantee {
        match self {
            Self::Socket(c) if c.wal => SourceGuarantee::WriteAheadLog,
            Self::Flume(c) if c.wal => SourceGuarantee::WriteAheadLog,
            Self::Socket(_) | Self::Flume(_) => SourceGuarantee::None,
            Self::Directory(_) | Self::Kafka(_) | Self::Kinesis(_) => SourceGuarantee::Replayable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::SinkGuarantee as Sink;

    #[test]
    fn only_a_replayable_source_into_an_idempotent_or_transactional_sink_with_checkpoints_is_exactly_once() {
        use SourceGuarantee::*;
        for (source, sink, checkpointed, expected) in [
            (Replayable, Sink::Idempotent, true, EndToEnd::ExactlyOnce),
            (Replayable, Sink::Transactional, true, EndToEnd::ExactlyOnce),
            (Replayable, Sink::AtLeastOnce, true, EndToEnd::AtLeastOnce),
            (Replayable, Sink::Idempotent, false, EndToEnd::BestEffort),
            (WriteAheadLog, Sink::Idempotent, true, EndToEnd::AtLeastOnce),
            (WriteAheadLog, Sink::AtLeastOnce, true, EndToEnd::AtLeastOnce),
            (None, Sink::Transactional, true, EndToEnd::BestEffort),
        ] {
            assert_eq!(end_to_end(source, sink, checkpointed), expected, "{source:?} -> {sink:?}, {checkpointed}");
        }
    }
}
