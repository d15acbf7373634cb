//! Blocks: the records one receiver got during one block interval. A block is one partition of
//! the batch it falls into, and one Wasm call per stage.
//!
//! Sealing rule: the block generator cuts every receiver at each multiple of `block_interval`
//! (wall clock, aligned to the Unix epoch, as Spark aligns batch times); a receiver with nothing
//! new yields no block. A receiver seals a block early when it reaches
//! `receiver::MAX_BLOCK_BYTES`, so a burst still spreads over cores.
//!
//! Past the sources, records travel as [`Partition`]s: frames (see [`crate::codec`]) and their
//! count. A block becomes one partition of its source's stream; each stage turns partitions into
//! partitions; sinks read them with `records`.
//!
//! This is the lowest layer: the stages above share its types ([`Block`], [`Partition`], the
//! `Backlog` of batches waiting, the wall clock `now_ms`) and it imports none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_sdk::abi::Frames;

/// One receiver's records from one block interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Index of the source.
    pub source: usize,
    /// Sequence number of the cut that sealed it.
    pub seq: u64,
    /// Number of records.
    pub records: u64,
    /// Lines dropped because they were not UTF-8.
    pub invalid: u64,
    /// The records as frames.
    pub data: Vec<u8>,
    /// In a cluster: the source partition whose records these are, run as a task of its own.
    pub task: Option<Arc<Task>>,
}

/// In a cluster, a source partition's records of one batch run as a task of their own: the
/// task's output is written under its own batch time and name, so whichever member runs it
/// (the owner, or the next one after a crash, replaying its log entry) writes the same output.
#[derive(Debug)]
pub struct Task {
    /// `<topic>-<partition>`, as output names show it.
    pub name: String,
    /// The batch time it belongs to: an earlier one for a replayed log entry.
    pub batch_ms: u64,
    /// A log entry written before (by this member or another), run again.
    pub replayed: bool,
    /// Whether this member still owns the partition: a revoked task's output is not written.
    pub owned: Arc<std::sync::atomic::AtomicBool>,
    /// A repartition partition's task (it runs the keyed stage on): None for a source
    /// partition's.
    pub keyed: Option<KeyedTask>,
}

/// What a task of a cluster's repartition partition carries besides its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedTask {
    /// The repartition topic.
    pub topic: String,
    /// The partition: its keys' state is this task's.
    pub partition: i32,
    /// The log entry it runs: its state after the task is kept under this number.
    pub seq: u64,
    /// The first task of a partition this member just gained (or whose log moved on without
    /// it): its state starts from the newest one kept in the store, not from what this member
    /// held.
    pub restore: bool,
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.batch_ms, self.replayed) == (&other.name, other.batch_ms, other.replayed)
    }
}

impl Eq for Task {}

impl Task {
    /// Whether this member still owns the task's partition.
    pub fn owned(&self) -> bool {
        self.owned.load(Ordering::Acquire)
    }
}

/// One partition of a stream in one batch: frames of records.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// The records as frames.
    pub data: Vec<u8>,
    /// How many.
    pub records: u64,
}

/// The records (frames) of several partitions, in order.
pub(crate) fn records(partitions: &[Partition]) -> impl Iterator<Item = &[u8]> {
    partitions.iter().flat_map(|p| Frames::new(&p.data))
}

/// Batches emitted by the clock and not yet started by the scheduler: the backlog that
/// backpressure and pull sources (a directory takes no new files while more than one waits)
/// read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// Batches waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// The clock emitted a batch.
    pub(crate) fn queued(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The scheduler took a batch.
    pub(crate) fn started(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wall-clock now in ms since the Unix epoch: the time base of blocks, batches, checkpoints and
/// events.
pub(crate) fn now_ms() -> u64 {
    // `fields::millis`, spelled out: `block/` depends on no room but `codec/`.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
