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
use crate::cluster::CheckpointStore;
use crate::cluster::store::{Entry, Loaded};
use crate::receiver::Receiver;

/// Pauses between reads of a partition's log that failed.
const BACKOFF: [u64; 6] = [200, 500, 1_000, 2_000, 5_000, 10_000];

/// What the group changed since the source last looked.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Partitions gained, with their logs.
    pub(super) gained: Vec<(TopicPartition, Loaded)>,
    /// Partitions revoked or lost.
    pub(super) lost: Vec<TopicPartition>,
}

/// The rebalance hook: reads a gained partition's log, notes the changes for the source.
pub(super) struct Rebalancer {
    pub(super) store: CheckpointStore,
    pub(super) config: KafkaSourceConfig,
    pub(super) receiver: Arc<Receiver>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) changes: Mutex<Changes>,
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
            gained.push((tp, loaded));
        }
        self.changes.lock().expect("changes lock").gained.extend(gained);
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
