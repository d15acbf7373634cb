//! The Kafka source as one member of a cluster (`[cluster]`): it subscribes to its topics in the
//! cluster's consumer group (cooperative-sticky assignment) instead of assigning every
//! partition, and keeps each partition's batch log in the checkpoint store.
//!
//! - **Gaining a partition** (the group's rebalance, inside librdkafka's poll): its log is read
//!   from the store before it is read from Kafka; reading starts at the last entry's `until`
//!   (else `starting_offsets`, else the group's committed offset), and the entries after the
//!   last done one are replayed first, with their own batch times.
//! - **Losing one**: reading stops, what was taken for the batch being collected is dropped, and
//!   its tasks already cut are marked not owned, so their output is not written.
//! - **Each batch**: the partition's range is appended to its log before the blocks are handed
//!   over; an entry another member created first fences this one (the source takes that entry
//!   as a replay and reads on after it). Once the batch's sinks committed, its entries are
//!   marked done.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{KafkaSourceConfig, TopicPartition};
use crate::block::{Block, KeyedTask, Task};
use crate::cluster::CheckpointStore;
use crate::cluster::store::{Entry, Loaded, Shuffled};
use crate::receiver::Receiver;

/// Pauses between reads of a partition's log that failed.
const BACKOFF: [u64; 6] = [200, 500, 1_000, 2_000, 5_000, 10_000];

/// What the group changed since the source last looked.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Partitions gained, with their logs and the offset each was assigned at.
    pub(super) gained: Vec<(TopicPartition, Loaded, Offset)>,
    /// Partitions revoked or lost.
    pub(super) lost: Vec<TopicPartition>,
}

/// The rebalance hook: reads a gained partition's log, notes the changes for the source.
pub(super) struct Rebalancer {
    pub(super) store: CheckpointStore,
    /// The cluster's repartition topic, if it has a keyed stage.
    pub(super) shuffle_topic: Option<String>,
    /// Where each of its partitions starts when it has no log yet: its end when this cluster's
    /// store first saw it (what an earlier cluster of the same pipeline, with another store,
    /// sent before is not this one's).
    pub(super) shuffle_start: std::sync::OnceLock<BTreeMap<i32, i64>>,
    pub(super) config: KafkaSourceConfig,
    pub(super) receiver: Arc<Receiver>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) changes: Mutex<Changes>,
    /// Set with every change, cleared when the source takes them up: a poll that ran a
    /// rebalance is noticed before its message is taken.
    pub(super) pending: AtomicBool,
}

impl Rebalancer {
    /// The partition's log, retried with back-off while the store does not answer (nothing
    /// about the partition is known until it does); None when the pipeline stops first.
    fn load(&self, tp: &TopicPartition) -> Option<Loaded> {
        let mut pauses = BACKOFF.iter().chain(std::iter::repeat(&BACKOFF[BACKOFF.len() - 1]));
        loop {
            match self.store.load(&tp.topic, tp.partition) {
                Ok(loaded) => return Some(loaded),
                Err(err) => {
                    let pause = *pauses.next().expect("endless");
                    tracing::warn!(source = %self.config.name, "cannot read the log of {}/{}: {err}; again in {pause} ms", tp.topic, tp.partition);
                    self.receiver.set_error(format!("checkpoint store: {err}"));
                    if *self.stop.borrow() {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(pause));
                }
            }
        }
    }
}

impl crate::kafka::Rebalance for Rebalancer {
    fn assign(&self, partitions: &mut TopicPartitionList) {
        let tps: Vec<TopicPartition> = partitions
            .elements()
            .iter()
            .map(|e| TopicPartition { topic: e.topic().to_string(), partition: e.partition() })
            .collect();
        let mut gained = Vec::new();
        for tp in tps {
            let Some(loaded) = self.load(&tp) else { return };
            let offset = match (loaded.next_offset, self.config.starting_offset(&tp)) {
                (Some(next), _) => Offset::Offset(next),
                // Whatever the source starts from, nothing sent to the shuffle is skipped.
                (None, _) if self.shuffle_topic.as_ref() == Some(&tp.topic) => {
                    match self.shuffle_start.get().and_then(|start| start.get(&tp.partition)) {
                        Some(start) => Offset::Offset(*start),
                        None => Offset::Beginning,
                    }
                }
                (None, Some(start)) => Offset::Offset(start),
                (None, None) => Offset::Stored,
            };
            let _ = partitions.set_partition_offset(&tp.topic, tp.partition, offset);
            tracing::info!(
                source = %self.config.name,
                "gained partition {}/{}: from offset {}, {} logged batch(es) to replay",
                tp.topic,
                tp.partition,
                loaded.next_offset.map_or("(the group's or starting_offsets)".to_string(), |o| o.to_string()),
                loaded.pending.len()
            );
            gained.push((tp, loaded, offset));
        }
        self.changes.lock().expect("changes lock").gained.extend(gained);
        self.pending.store(true, std::sync::atomic::Ordering::Release);
    }

    fn revoke(&self, partitions: &TopicPartitionList) {
        let lost: Vec<TopicPartition> = partitions
            .elements()
            .iter()
            .map(|e| TopicPartition { topic: e.topic().to_string(), partition: e.partition() })
            .collect();
        for tp in &lost {
            tracing::info!(source = %self.config.name, "lost partition {}/{}", tp.topic, tp.partition);
        }
        self.changes.lock().expect("changes lock").lost.extend(lost);
        self.pending.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A partition this member owns.
#[derive(Debug)]
pub(super) struct Owned {
    /// The number its next log entry gets.
    pub(super) next_seq: u64,
    /// The batch time of its last entry: the next one must be later (output names are by
    /// batch time).
    pub(super) last_batch: Option<u64>,
    /// Shared with its tasks: false once revoked.
    pub(super) flag: Arc<AtomicBool>,
    /// A repartition partition's: the table of what its last entry took (`shuffled.rs`).
    pub(super) shuffled: Option<Shuffled>,
    /// A repartition partition's, until its next task is cut: that task's keyed state starts
    /// from the store (it was gained, or its log moved on without this member).
    pub(super) restore: bool,
}

impl Owned {
    /// A partition as its log was found; `shuffled` for one of the repartition topic.
    pub(super) fn from_log(loaded: &Loaded, shuffled: bool) -> Self {
        Self {
            next_seq: loaded.next_seq,
            last_batch: loaded.last_batch,
            flag: Arc::new(AtomicBool::new(true)),
            shuffled: shuffled.then(|| loaded.shuffled.clone()),
            restore: shuffled,
        }
    }

    /// Takes up the log as read again (this member was fenced or behind): where its next entry
    /// goes, and for a repartition partition, its table and a state restored from the store.
    pub(super) fn reread(&mut self, loaded: &Loaded) {
        let shuffled = self.shuffled.is_some();
        let flag = self.flag.clone();
        *self = Self { flag, ..Self::from_log(loaded, shuffled) };
    }
}

/// The source's cluster state.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) store: CheckpointStore,
    pub(super) rebalancer: Arc<Rebalancer>,
    pub(super) owned: BTreeMap<TopicPartition, Owned>,
    /// Log entries to run again (a gained partition's pending ones, or one that fenced us).
    pub(super) replays: Vec<(TopicPartition, Entry)>,
    /// Per batch, the entries it ran: marked done once it committed.
    /// Entries as `(partition, seq, until)`.
    pub(super) ran: BTreeMap<u64, Vec<(TopicPartition, u64, i64)>>,
    /// This member's name, in log entries.
    pub(super) name: String,
}

impl std::fmt::Debug for Rebalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebalancer").field("store", &self.store).finish_non_exhaustive()
    }
}

/// `<topic>-<partition>`: a task's name.
pub(super) fn task_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.topic, tp.partition)
}

/// One log entry's records as the batch runs them.
pub(super) struct Run {
    /// The partition.
    pub(super) tp: TopicPartition,
    /// The entry's batch time.
    pub(super) batch_ms: u64,
    /// Run again (logged before).
    pub(super) replayed: bool,
    /// The entry's number.
    pub(super) seq: u64,
    /// Its records (or some of them: a fresh entry's come in a block per cut).
    pub(super) block: Block,
}

impl Member {
    /// Each run's block as its partition's task, in order; runs of a partition this member no
    /// longer owns are dropped. A repartition partition's first task after a gain (or a
    /// fence) carries where its state starts.
    pub(super) fn tasks(&mut self, runs: Vec<Run>) -> Vec<Block> {
        let mut made: BTreeMap<(TopicPartition, u64, bool), Arc<Task>> = BTreeMap::new();
        let mut replayed_entries = std::collections::BTreeSet::new();
        let mut blocks = Vec::with_capacity(runs.len());
        for Run { tp, batch_ms, replayed, seq, mut block } in runs {
            let Some(owned) = self.owned.get_mut(&tp) else { continue };
            if replayed && !replayed_entries.insert((tp.clone(), seq)) {
                tracing::error!(
                    "{}/{}: entry {seq} was to be replayed twice in one batch: once is run",
                    tp.topic,
                    tp.partition
                );
                continue;
            }
            let task = made.entry((tp.clone(), batch_ms, replayed)).or_insert_with(|| {
                let keyed = owned.shuffled.is_some().then(|| KeyedTask {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    seq,
                    restore: std::mem::take(&mut owned.restore),
                });
                Arc::new(Task { name: task_name(&tp), batch_ms, replayed, owned: owned.flag.clone(), keyed })
            });
            block.task = Some(task.clone());
            blocks.push(block);
        }
        blocks
    }
}
