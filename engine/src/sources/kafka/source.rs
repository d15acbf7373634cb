//! The Kafka source at run time: assignment, taking records at each cut, the batch's offset
//! ranges, position, commits to the group and replay. See the folder's module docs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::discover::{self, Discovered, Topics};
use super::member::{Changes, Member, Owned, Rebalancer, Run};
use super::probe::{Probe, Step};
use super::{KafkaSourceConfig, OffsetRange, TopicPartition, record, shuffled};
use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::cluster::Membership;
use crate::cluster::store::{Appended, Entry, Shuffled};
use crate::kafka::{KafkaLog, REQUEST_TIMEOUT, client_config};
use crate::receiver::{PartitionStatus, Receiver};
use crate::sources::{Cut, Position, Source, SourceContext, StartError};

/// How long one cut may spend taking records (the rest waits for the next cut).
const CUT_BUDGET: Duration = Duration::from_millis(100);
/// The longest a probe's seek back waits for the consumer to take it (`probe.rs`).
const SEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a replay keeps trying to read a logged batch's ranges.
const REPLAY_PATIENCE: Duration = Duration::from_secs(120);
/// The same for a cluster's member, which must poll its group meanwhile: an entry not read
/// whole in this time is tried again at the next batch.
const MEMBER_REPLAY_PATIENCE: Duration = Duration::from_secs(15);
/// How long a stopping source waits for its last offset commit.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(3);
/// Default `discovery_interval`.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Why a Kafka source refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaStartError {
    /// librdkafka refused the client's settings.
    #[error("source `{name}`: {error}")]
    Client {
        /// The source.
        name: String,
        /// What librdkafka said.
        #[source]
        error: KafkaError,
    },
    /// The group would not take the subscription.
    #[error("source `{name}`: cannot subscribe to its topics: {error}")]
    Subscribe {
        /// The source.
        name: String,
        /// What librdkafka said.
        #[source]
        error: KafkaError,
    },
    /// The cluster's repartition topic cannot be made ready.
    #[error("source `{name}`: the cluster's shuffle: {reason}")]
    Shuffle {
        /// The source.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// `topic_pattern` is no regular expression (checked at load: not expected here).
    #[error(transparent)]
    Pattern(regex::Error),
    /// Another consumer reads with the source's group.
    #[error(
        "source `{name}`: consumer group `{group}` has {members} active member(s) (another consumer reads with \
         it); a Kafka source owns its group: set a group_id of its own"
    )]
    SharedGroup {
        /// The source.
        name: String,
        /// Its consumer group.
        group: String,
        /// Members the group has.
        members: usize,
    },
    /// The group holds an offset past this pipeline's checkpoint: another consumer commits with it.
    #[error(
        "source `{name}`: consumer group `{group}` has offset {offset} committed for {topic}/{partition}, past this \
         pipeline's checkpoint ({ours}): another consumer commits with this group id; a Kafka source owns its \
         group: set a group_id of its own"
    )]
    OffsetsAhead {
        /// The source.
        name: String,
        /// Its consumer group.
        group: String,
        /// The offset committed.
        offset: i64,
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The next offset this pipeline's checkpoint and logged batches hold.
        ours: i64,
    },
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct KafkaSource {
    config: KafkaSourceConfig,
    /// The consumer group, known at start.
    group: Option<String>,
    /// The next offset of every partition, past everything cut so far.
    next: BTreeMap<TopicPartition, i64>,
    /// The next offsets through the last commit.
    completed: BTreeMap<TopicPartition, i64>,
    /// The ranges of each batch after the last commit.
    by_batch: BTreeMap<u64, Vec<OffsetRange>>,
    started: Option<Started>,
    /// In a cluster with a keyed stage: the repartition topic it also reads (`shuffled.rs`).
    shuffle_topic: Option<String>,
}

/// One partition's records taken by the cuts of the batch being collected.
#[derive(Debug, Default)]
struct Taken {
    data: Vec<u8>,
    records: u64,
    invalid: u64,
    from: Option<i64>,
    until: i64,
}

/// One partition as a cut takes its records.
struct CutPartition {
    tp: TopicPartition,
    /// A partition of the repartition topic: its records are tagged frames.
    shuffled: bool,
    next: Option<i64>,
    /// Records of the batch so far, against the partition's share.
    count: u64,
    capped: bool,
    /// Positioned at an offset, until its first record is read (`probe.rs`).
    probe: Option<Probe>,
    taken: Taken,
    /// Past the share: for the next batch.
    carry: Taken,
}

/// The partitions one cut has taken records of, found by the last one seen (messages come
/// in runs of one partition), so a record costs no map lookup or allocation.
#[derive(Default)]
struct CutPartitions {
    parts: Vec<CutPartition>,
    last: Option<usize>,
}

impl CutPartitions {
    /// The index of `topic`/`partition`, made with `new` the first time.
    fn find(&mut self, topic: &str, partition: i32, new: impl FnOnce(TopicPartition) -> CutPartition) -> usize {
        let is = |p: &CutPartition| p.tp.partition == partition && p.tp.topic == topic;
        if let Some(last) = self.last.filter(|&at| is(&self.parts[at])) {
            return last;
        }
        let at = match self.parts.iter().position(is) {
            Some(at) => at,
            None => {
                self.parts.push(new(TopicPartition { topic: topic.to_string(), partition }));
                self.parts.len() - 1
            }
        };
        self.last = Some(at);
        at
    }
}

struct Started {
    receiver: Arc<Receiver>,
    log: Option<BatchLog>,
    consumer: Arc<BaseConsumer<KafkaLog>>,
    discovered: Arc<Mutex<Discovered>>,
    /// Partitions assigned to the consumer, and whether discovery had looked once by then.
    assigned: BTreeSet<TopicPartition>,
    first_look_assigned: bool,
    /// Blocks of the batch being collected, by partition, handed over at the cut that closes it.
    blocks: Vec<(TopicPartition, Block)>,
    /// As a cluster's member: owned partitions, their logs' next entries, replays.
    member: Option<Member>,
    /// Its ranges so far, per partition: `(from, until)`.
    ranges: BTreeMap<TopicPartition, (i64, i64)>,
    /// Records each partition took for it.
    counts: BTreeMap<TopicPartition, u64>,
    /// Records past a partition's share, for the next batch.
    carry: BTreeMap<TopicPartition, Taken>,
    /// Partitions paused at their share; every partition while the receiver is paused or held.
    capped: BTreeSet<TopicPartition>,
    /// Partitions positioned at an offset whose first record is not read yet (`probe.rs`).
    probes: BTreeMap<TopicPartition, Probe>,
    all_paused: bool,
    batch_ms: u64,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("assigned", &self.assigned)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    pub(super) fn new(config: KafkaSourceConfig) -> Self {
        Self {
            config,
            group: None,
            next: BTreeMap::new(),
            completed: BTreeMap::new(),
            by_batch: BTreeMap::new(),
            started: None,
            shuffle_topic: None,
        }
    }

    /// The client settings the source decides.
    fn own_settings(&self, group: &str, reset: &str) -> Vec<(&'static str, String)> {
        let mut own = vec![
            ("group.id", group.to_string()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("enable.partition.eof", "false".into()),
            ("auto.offset.reset", reset.to_string()),
        ];
        // Defaults the user's `properties` may change. librdkafka waits `fetch.queue.backoff.ms`
        // (1 s) before fetching again once a fetch filled its queue: a source drained at every
        // cut read at a tenth of the broker's rate (bench-kafka.sh), 10 ms keeps it fetching.
        for (key, value) in [("fetch.queue.backoff.ms", "10")] {
            if !self.config.properties.contains_key(key) {
                own.push((key, value.to_string()));
            }
        }
        own
    }

    /// Assigns every partition discovery found, at its next offset (a partition never read
    /// starts where `starting_offsets` or the group's committed offset says; one found after the
    /// first look starts at its beginning).
    fn assign_new(&mut self) {
        let Some(started) = &mut self.started else { return };
        let (partitions, looks) = {
            let found = started.discovered.lock().expect("discovery lock");
            (found.partitions.clone(), found.looks)
        };
        if partitions.is_subset(&started.assigned) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &partitions {
            let offset = match (self.next.get(tp), self.config.starting_offset(tp)) {
                (Some(next), _) => Offset::Offset(*next),
                (None, Some(start)) => Offset::Offset(start),
                (None, None) if started.first_look_assigned && !started.assigned.contains(tp) => Offset::Beginning,
                (None, None) => Offset::Stored,
            };
            positioned(&mut started.probes, &mut self.next, tp, offset);
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, offset);
        }
        match started.consumer.assign(&tpl) {
            Ok(()) => {
                let new: Vec<String> = partitions
                    .difference(&started.assigned)
                    .map(|tp| format!("{}/{}", tp.topic, tp.partition))
                    .collect();
                tracing::info!(source = %started.receiver.name, "reading partitions {}", new.join(", "));
                started.assigned = partitions;
                started.first_look_assigned |= looks > 0;
                started.capped.clear();
                started.all_paused = false;
            }
            Err(err) => started.receiver.set_error(format!("cannot assign partitions: {err}")),
        }
    }

    /// Takes what the consumer has fetched, within the cut's budget and each partition's share.
    /// A rebalance runs inside a poll: what was taken before it is folded into the batch under
    /// the assignment it came from before the group's changes are taken up, so records of a
    /// partition revoked and given back within one cut are neither dropped nor taken twice.
    fn take(&mut self, seq: u64) {
        self.follow_hold();
        let Some(consumer) = self.started.as_ref().map(|s| s.consumer.clone()) else { return };
        let mut share = self.share();
        let deadline = Instant::now() + CUT_BUDGET;
        let mut cut = CutPartitions::default();
        while Instant::now() < deadline {
            let Some(polled) = consumer.poll(Duration::ZERO) else { break };
            if self.rebalanced() {
                self.fold(std::mem::take(&mut cut), seq);
                self.apply_changes();
                share = self.share();
            }
            match polled {
                Ok(message) => self.accept(&mut cut, &message, share),
                Err(err) => {
                    if let Some(started) = &self.started {
                        report(&started.receiver, &err);
                    }
                }
            }
        }
        self.fold(cut, seq);
    }

    /// Pauses every partition while the receiver is paused or held, and resumes them after.
    fn follow_hold(&mut self) {
        let Some(started) = &mut self.started else { return };
        let hold = started.receiver.is_paused() || started.receiver.is_holding();
        if hold != started.all_paused {
            let tpl = list(&started.assigned);
            let changed = if hold { started.consumer.pause(&tpl) } else { started.consumer.resume(&tpl) };
            if changed.is_ok() {
                started.all_paused = hold;
                if !hold {
                    started.capped.clear();
                    resumed(&mut started.probes, &mut self.next, &started.assigned);
                }
            }
        }
    }

    /// Whether the group changed something during the last poll (a member's source only).
    fn rebalanced(&self) -> bool {
        let member = self.started.as_ref().and_then(|s| s.member.as_ref());
        member.is_some_and(|m| m.rebalancer.pending.load(Ordering::Acquire))
    }

    /// One fetched message into the cut: taken for this batch, or carried to the next one past
    /// its partition's share (the partition is paused then).
    fn accept(&mut self, cut: &mut CutPartitions, message: &BorrowedMessage<'_>, share: Option<u64>) {
        let Some(started) = &mut self.started else { return };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let at = cut.find(topic, partition, |tp| CutPartition {
            next: self.next.get(&tp).copied(),
            count: started.counts.get(&tp).copied().unwrap_or(0),
            capped: started.capped.contains(&tp),
            shuffled: self.shuffle_topic.as_ref() == Some(&tp.topic),
            probe: started.probes.remove(&tp),
            tp,
            taken: Taken::default(),
            carry: Taken::default(),
        });
        let part = &mut cut.parts[at];
        if probed_back(&started.consumer, &part.tp, &mut part.probe, offset) {
            return; // read again, from further back
        }
        if part.next.is_some_and(|next| offset < next) {
            return; // fetched again after a pause or a new assignment
        }
        part.next = Some(offset + 1);
        let into = if part.capped || share.is_some_and(|share| part.count >= share) {
            if !part.capped {
                part.capped = true;
                let _ = started.consumer.pause(&list([&part.tp]));
            }
            &mut part.carry
        } else {
            part.count += 1;
            &mut part.taken
        };
        into.from.get_or_insert(offset);
        into.until = offset + 1;
        let appended = match part.shuffled {
            true => super::shuffled::append(message, &mut into.data),
            false => record::append(self.config.format, message, &mut into.data),
        };
        if appended {
            into.records += 1;
        } else {
            into.invalid += 1;
        }
    }

    /// What a cut took, per partition, into the batch being collected (and the carry).
    fn fold(&mut self, cut: CutPartitions, seq: u64) {
        let Some(started) = &mut self.started else { return };
        for part in cut.parts {
            if let Some(next) = part.next {
                self.next.insert(part.tp.clone(), next);
            }
            if let Some(probe) = part.probe {
                started.probes.insert(part.tp.clone(), probe);
            }
            started.counts.insert(part.tp.clone(), part.count);
            if part.capped {
                started.capped.insert(part.tp.clone());
            }
            if part.carry.from.is_some() {
                let carry = started.carry.entry(part.tp.clone()).or_default();
                carry.from = carry.from.or(part.carry.from);
                carry.until = part.carry.until;
                carry.data.extend_from_slice(&part.carry.data);
                carry.records += part.carry.records;
                carry.invalid += part.carry.invalid;
            }
            started.add(part.tp, part.taken, seq);
        }
    }

    /// Each partition's share of one batch, records; `None`: unlimited.
    fn share(&self) -> Option<u64> {
        let started = self.started.as_ref()?;
        let partitions = started.assigned.len().max(1) as f64;
        let per_partition =
            [self.config.max_rate_per_partition.map(|r| r as f64), started.receiver.rate().map(|r| r / partitions)]
                .into_iter()
                .flatten()
                .reduce(f64::min)?;
        Some(((per_partition * started.batch_ms as f64 / 1000.0) as u64).max(1))
    }

    /// The batch this cut closes: logs its ranges, then hands over its blocks; what was carried
    /// past a partition's share starts the next batch.
    fn close(&mut self, cut: Cut) -> Vec<Block> {
        if self.started.as_ref().is_some_and(|s| s.member.is_some()) {
            return self.close_as_member(cut);
        }
        let Some(started) = &mut self.started else { return Vec::new() };
        let ranges: Vec<OffsetRange> = started
            .ranges
            .iter()
            .map(|(tp, (from, until))| OffsetRange {
                topic: tp.topic.clone(),
                partition: tp.partition,
                from: *from,
                until: *until,
            })
            .collect();
        if !ranges.is_empty()
            && let Some(log) = &started.log
        {
            let record = serde_json::to_vec(&ranges).expect("ranges encode");
            if let Err(err) = log.write_record(cut.batch, started.receiver.source, &record) {
                tracing::error!(source = %started.receiver.name, "cannot log the offsets of batch {}: {err}; they wait", cut.batch);
                started.receiver.set_error(format!("checkpoint: {err}"));
                return Vec::new();
            }
        }
        let blocks = std::mem::take(&mut started.blocks).into_iter().map(|(_, block)| block).collect();
        self.next_batch(cut);
        if !ranges.is_empty() {
            self.by_batch.insert(cut.batch, ranges);
        }
        self.report_partitions();
        blocks
    }

    /// After a closing cut: what was carried past a partition's share starts the next batch,
    /// capped partitions read again.
    fn next_batch(&mut self, cut: Cut) {
        let Some(started) = &mut self.started else { return };
        started.ranges.clear();
        started.counts.clear();
        for (tp, part) in std::mem::take(&mut started.carry) {
            *started.counts.entry(tp.clone()).or_default() += part.records + part.invalid;
            started.add(tp, part, cut.seq);
        }
        if !started.capped.is_empty() && !started.all_paused {
            if started.consumer.resume(&list(&started.capped)).is_ok() {
                resumed(&mut started.probes, &mut self.next, &started.capped);
            }
            started.capped.clear();
        }
    }

    /// Per-partition offsets and lag on the receiver row (ends as discovery last saw them).
    fn report_partitions(&self) {
        let Some(started) = &self.started else { return };
        let ends = started.discovered.lock().expect("discovery lock").ends.clone();
        let status = started
            .assigned
            .iter()
            .map(|tp| {
                let offset = self.next.get(tp).copied();
                // The end as last looked up, never behind what was read since.
                let high = ends.get(tp).map(|h| (*h).max(offset.unwrap_or(0)));
                PartitionStatus {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    high_watermark: high,
                    lag: high.map(|h| (h - offset.unwrap_or(0)).max(0)),
                }
            })
            .collect();
        started.receiver.set_partitions(status);
    }

    /// Commits the offsets through the last commit to the group, without waiting.
    fn commit_to_group(&self) {
        let Some(started) = &self.started else { return };
        if self.completed.is_empty() {
            return;
        }
        if let Err(err) = started.consumer.commit(&at_offsets(&self.completed), CommitMode::Async) {
            tracing::warn!(source = %started.receiver.name, "cannot commit offsets to the group: {err}");
        }
    }

    /// Reads `ranges` again with a consumer of their own, for at most `patience`: a block per
    /// partition, and the partitions whose range could not be read whole.
    fn read_ranges(&self, source: usize, seq: u64, ranges: &[OffsetRange], patience: Duration) -> ReadBack {
        let name = &self.config.name;
        let all: Vec<TopicPartition> =
            ranges.iter().map(|r| TopicPartition { topic: r.topic.clone(), partition: r.partition }).collect();
        let group = self.group.clone().unwrap_or_else(|| self.config.group("replay"));
        let consumer: BaseConsumer = match client_config(
            &self.config.brokers,
            &self.config.properties,
            &self.own_settings(&group, "error"),
        )
        .create()
        {
            Ok(consumer) => consumer,
            Err(err) => {
                tracing::error!(source = %name, "cannot create a consumer to replay a batch, its records are missing: {err}");
                return (Vec::new(), all);
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut wanted: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
        let mut probes = BTreeMap::new();
        for range in ranges.iter().filter(|r| r.until > r.from) {
            let _ = tpl.add_partition_offset(&range.topic, range.partition, Offset::Offset(range.from));
            let tp = TopicPartition { topic: range.topic.clone(), partition: range.partition };
            probes.extend(Probe::at(range.from).map(|probe| (tp.clone(), probe)));
            wanted.insert(tp, (range.from, range.until));
        }
        if let Err(err) = consumer.assign(&tpl) {
            tracing::error!(source = %name, "cannot assign partitions to replay a batch: {err}");
            return (Vec::new(), all);
        }
        let mut taken: BTreeMap<TopicPartition, Taken> = BTreeMap::new();
        let started = Instant::now();
        let mut warned = Instant::now();
        while !wanted.is_empty() && started.elapsed() < patience {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(err)) if warned.elapsed() > Duration::from_secs(5) => {
                    tracing::warn!(source = %name, "replaying a batch: {err}; still trying");
                    warned = Instant::now();
                }
                Some(Err(_)) => {}
                Some(Ok(message)) => {
                    let tp = TopicPartition { topic: message.topic().to_string(), partition: message.partition() };
                    let Some((from, until)) = wanted.get(&tp).copied() else { continue };
                    let offset = message.offset();
                    let mut probe = probes.remove(&tp);
                    let again = probed_back(&consumer, &tp, &mut probe, offset);
                    probes.extend(probe.map(|probe| (tp.clone(), probe)));
                    if again {
                        continue;
                    }
                    if offset >= from && offset < until {
                        let part = taken.entry(tp.clone()).or_default();
                        let appended = match self.shuffle_topic.as_ref() == Some(&tp.topic) {
                            true => super::shuffled::append(&message, &mut part.data),
                            false => record::append(self.config.format, &message, &mut part.data),
                        };
                        if appended {
                            part.records += 1;
                        } else {
                            part.invalid += 1;
                        }
                    }
                    if offset + 1 >= until {
                        wanted.remove(&tp);
                        let _ = consumer.pause(&list([&tp]));
                    }
                }
            }
        }
        for tp in wanted.keys() {
            tracing::error!(
                source = %name,
                "replaying a batch: cannot read all of {}/{} within {patience:?}; its missing records are not in the batch",
                tp.topic, tp.partition
            );
        }
        let blocks = taken
            .into_iter()
            .map(|(tp, part)| {
                (tp, Block { source, seq, records: part.records, invalid: part.invalid, data: part.data, task: None })
            })
            .collect();
        (blocks, wanted.into_keys().collect())
    }
}

impl Drop for KafkaSource {
    /// The last commit (of a graceful stop) reaches the group before the process exits: a
    /// synchronous commit, given up after [`FINAL_COMMIT_WAIT`] if the brokers do not answer.
    fn drop(&mut self) {
        let Some(started) = &self.started else { return };
        if self.completed.is_empty() {
            return;
        }
        let tpl = at_offsets(&self.completed);
        let consumer = started.consumer.clone();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(consumer.commit(&tpl, CommitMode::Sync));
        });
        match wait.recv_timeout(FINAL_COMMIT_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(source = %self.config.name, "cannot commit the last offsets to the group: {err}")
            }
            Err(_) => {
                tracing::warn!(source = %self.config.name, "the brokers did not take the last offsets within {FINAL_COMMIT_WAIT:?}")
            }
        }
    }
}

impl Started {
    /// Adds one partition's records to the batch being collected.
    fn add(&mut self, tp: TopicPartition, part: Taken, seq: u64) {
        let Some(from) = part.from else { return };
        self.receiver.count(part.records, part.invalid);
        let range = self.ranges.entry(tp.clone()).or_insert((from, part.until));
        range.0 = range.0.min(from);
        range.1 = range.1.max(part.until);
        if part.records + part.invalid > 0 {
            let block = Block {
                source: self.receiver.source,
                seq,
                records: part.records,
                invalid: part.invalid,
                data: part.data,
                task: None,
            };
            self.blocks.push((tp, block));
        }
    }
}

/// Notes that `tp` is read from `offset` now: at an offset past the start, a probe
/// (`probe.rs`) and that offset as `tp`'s next (what a probe reads before it is dropped).
fn positioned(
    probes: &mut BTreeMap<TopicPartition, Probe>,
    next: &mut BTreeMap<TopicPartition, i64>,
    tp: &TopicPartition,
    offset: Offset,
) {
    match offset {
        Offset::Offset(at) => {
            next.insert(tp.clone(), at);
            probes.extend(Probe::at(at).map(|probe| (tp.clone(), probe)));
        }
        _ => drop(probes.remove(tp)),
    }
}

/// A probe's step for the record at `offset` that `consumer` read of `tp` (`probe.rs`): true
/// if the record is dropped and `tp` read again from further back (a failed seek is tried
/// again at the next record); the probe is over (None) once a record is read on.
fn probed_back<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &TopicPartition,
    probe: &mut Option<Probe>,
    offset: i64,
) -> bool {
    let Some(looking) = probe.as_mut() else { return false };
    let from = match looking.first(offset) {
        Step::ReadOn | Step::NothingBefore => {
            *probe = None;
            return false;
        }
        Step::Back(from) => from,
    };
    // Not below the partition's first offset (retention): a seek there would reset it.
    let start = consumer.fetch_watermarks(&tp.topic, tp.partition, SEEK_TIMEOUT).map_or(0, |(low, _)| low);
    let from = from.max(start);
    match consumer.seek(&tp.topic, tp.partition, Offset::Offset(from), SEEK_TIMEOUT) {
        Ok(()) => looking.looked_back(from, start),
        Err(err) => {
            tracing::debug!(
                "{}/{}: cannot seek back to {from} to find offset {offset}'s batch: {err}",
                tp.topic,
                tp.partition
            )
        }
    }
    true
}

/// Probes at their next offsets the partitions `resumed` (librdkafka reads a resumed partition
/// from the record after the last one it gave: inside a batch, maybe).
fn resumed<'a>(
    probes: &mut BTreeMap<TopicPartition, Probe>,
    next: &mut BTreeMap<TopicPartition, i64>,
    resumed: impl IntoIterator<Item = &'a TopicPartition>,
) {
    for tp in resumed {
        if let Some(at) = next.get(tp).copied() {
            positioned(probes, next, tp, Offset::Offset(at));
        }
    }
}

/// A partition list of `partitions`, offsets unset.
fn list<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

/// A partition list of `next`, each partition at its offset.
fn at_offsets(next: &BTreeMap<TopicPartition, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in next {
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    tpl
}

/// A consumer error on the receiver row (librdkafka retries by itself).
fn report(receiver: &Receiver, err: &KafkaError) {
    tracing::warn!(source = %receiver.name, "kafka: {err}");
    receiver.set_error(format!("kafka: {err}"));
}

/// The ranges a batch logged.
fn logged_ranges(logged: &LoggedInput) -> Vec<OffsetRange> {
    logged.record.as_deref().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or_default()
}

impl Source for KafkaSource {
    fn resume(&mut self, position: Option<Position>, logged: &[(u64, &LoggedInput)]) {
        if let Some(Position::Offsets(topics)) = position {
            for (topic, partitions) in topics {
                for (partition, next) in partitions {
                    self.completed.insert(TopicPartition { topic: topic.clone(), partition }, next);
                }
            }
        }
        self.next = self.completed.clone();
        for (time, input) in logged {
            let ranges = logged_ranges(input);
            for range in &ranges {
                let next = self.next.entry(TopicPartition { topic: range.topic.clone(), partition: range.partition });
                let next = next.or_insert(range.until);
                *next = (*next).max(range.until);
            }
            self.by_batch.insert(*time, ranges);
        }
    }

    fn start(&mut self, context: SourceContext) -> Result<(), StartError> {
        if let Some(cluster) = context.cluster.clone() {
            return self.start_as_member(context, &cluster);
        }
        let group = self.config.group(&context.pipeline);
        let settings = self.own_settings(&group, self.config.reset());
        let log = KafkaLog {
            kind: "source",
            name: self.config.name.clone(),
            receiver: Some(context.receiver.clone()),
            rebalance: None,
        };
        let consumer: BaseConsumer<KafkaLog> = client_config(&self.config.brokers, &self.config.properties, &settings)
            .create_with_context(log)
            .map_err(|error| KafkaStartError::Client { name: self.config.name.clone(), error })?;
        refuse_a_shared_group(&consumer, &group, &self.config.name)?;
        refuse_offsets_past_the_checkpoint(&consumer, &group, &self.config.name, &self.next)?;
        self.start_reading(consumer, context, None)?;
        tracing::info!(source = %self.config.name, group, "kafka source started");
        self.group = Some(group);
        Ok(())
    }

    fn finished(&mut self, stopping: bool) -> bool {
        // A topic never ends: only a stop finishes the source.
        if stopping && let Some(started) = &self.started {
            started.receiver.finish();
        }
        stopping
    }

    fn cut(&mut self, cut: Cut) -> Vec<Block> {
        if self.started.as_ref().is_some_and(|s| s.member.is_some()) {
            // The group assigns; what it changed during a poll is taken up after it too.
            self.apply_changes();
            self.take(cut.seq);
            self.apply_changes();
        } else {
            self.assign_new();
            self.take(cut.seq);
        }
        if cut.closes_batch { self.close(cut) } else { Vec::new() }
    }

    fn position(&self, through: u64) -> Position {
        let mut next = self.completed.clone();
        for (_, ranges) in self.by_batch.range(..=through) {
            for range in ranges {
                let tp = TopicPartition { topic: range.topic.clone(), partition: range.partition };
                let offset = next.entry(tp).or_insert(range.until);
                *offset = (*offset).max(range.until);
            }
        }
        super::position(&next)
    }

    fn commit(&mut self, through: u64) {
        if self.started.as_ref().is_some_and(|s| s.member.is_some()) {
            self.commit_as_member(through);
            return;
        }
        if let Position::Offsets(topics) = self.position(through) {
            for (topic, partitions) in topics {
                for (partition, next) in partitions {
                    self.completed.insert(TopicPartition { topic: topic.clone(), partition }, next);
                }
            }
        }
        self.by_batch = self.by_batch.split_off(&(through + 1));
        self.commit_to_group();
    }

    fn replay(&mut self, time: u64, logged: LoggedInput) -> Vec<Block> {
        let ranges = logged_ranges(&logged);
        let source = self.started.as_ref().map_or(0, |s| s.receiver.source);
        let (read, _) = self.read_ranges(source, time, &ranges, REPLAY_PATIENCE);
        let blocks: Vec<Block> = read.into_iter().map(|(_, block)| block).collect();
        if let Some(started) = &self.started {
            started.receiver.count(blocks.iter().map(|b| b.records).sum(), blocks.iter().map(|b| b.invalid).sum());
        }
        blocks
    }
}

/// A source owns its group: it commits only offsets its checkpoints hold, so a committed offset
/// past what this pipeline has checkpointed and logged was committed by another consumer with
/// the same group id. Unknown (brokers unreachable) is no reason to refuse.
fn refuse_offsets_past_the_checkpoint(
    consumer: &BaseConsumer<KafkaLog>,
    group: &str,
    source: &str,
    next: &BTreeMap<TopicPartition, i64>,
) -> Result<(), KafkaStartError> {
    if next.is_empty() {
        return Ok(());
    }
    let Ok(committed) = consumer.committed_offsets(list(next.keys()), REQUEST_TIMEOUT) else { return Ok(()) };
    for element in committed.elements() {
        let tp = TopicPartition { topic: element.topic().to_string(), partition: element.partition() };
        if let (Offset::Offset(offset), Some(ours)) = (element.offset(), next.get(&tp))
            && offset > *ours
        {
            return Err(KafkaStartError::OffsetsAhead {
                name: source.to_string(),
                group: group.to_string(),
                offset,
                topic: tp.topic,
                partition: tp.partition,
                ours: *ours,
            });
        }
    }
    Ok(())
}

/// A source owns its group: refuses to start when the group has active members (another
/// consumer reads with it). An unreachable broker is no reason to refuse: discovery reports it.
fn refuse_a_shared_group(consumer: &BaseConsumer<KafkaLog>, group: &str, source: &str) -> Result<(), KafkaStartError> {
    let Ok(groups) = consumer.fetch_group_list(Some(group), REQUEST_TIMEOUT) else { return Ok(()) };
    if let Some(found) = groups.groups().iter().find(|g| g.name() == group)
        && !found.members().is_empty()
    {
        return Err(KafkaStartError::SharedGroup {
            name: source.to_string(),
            group: group.to_string(),
            members: found.members().len(),
        });
    }
    Ok(())
}

/// A cluster's member: see `member.rs` for the protocol.
impl KafkaSource {
    /// `topics` or `topic_pattern`, as discovery looks for them.
    fn topics(&self) -> Result<Topics, KafkaStartError> {
        Ok(match (&self.config.topics, &self.config.topic_pattern) {
            (_, Some(pattern)) => Topics::Pattern(regex::Regex::new(pattern).map_err(KafkaStartError::Pattern)?),
            (Some(topics), None) => Topics::Named(topics.clone()),
            (None, None) => Topics::Named(Vec::new()),
        })
    }

    /// Joins the cluster's group: subscribes (cooperative-sticky) with the rebalance hook that
    /// reads each gained partition's log from the store.
    fn start_as_member(&mut self, context: SourceContext, cluster: &Membership) -> Result<(), StartError> {
        let rebalancer = Arc::new(Rebalancer {
            shuffle_topic: cluster.shuffle_topic.clone(),
            shuffle_start: std::sync::OnceLock::new(),
            store: cluster.store.clone(),
            config: self.config.clone(),
            receiver: context.receiver.clone(),
            stop: context.stop.clone(),
            changes: Mutex::new(Changes::default()),
            pending: AtomicBool::new(false),
        });
        let session = crate::fields::millis(cluster.session_timeout);
        let mut settings = self.own_settings(&cluster.group_id, self.config.reset());
        settings.extend([
            ("partition.assignment.strategy", "cooperative-sticky".to_string()),
            ("session.timeout.ms", session.to_string()),
            ("heartbeat.interval.ms", (session / 4).max(100).to_string()),
            ("client.id", cluster.member.clone()),
        ]);
        let hook: Arc<dyn crate::kafka::Rebalance> = rebalancer.clone();
        let log = KafkaLog {
            kind: "source",
            name: self.config.name.clone(),
            receiver: Some(context.receiver.clone()),
            rebalance: Some(hook),
        };
        let consumer: BaseConsumer<KafkaLog> = client_config(&self.config.brokers, &self.config.properties, &settings)
            .create_with_context(log)
            .map_err(|error| KafkaStartError::Client { name: self.config.name.clone(), error })?;
        let subscription: Vec<String> = match (&self.config.topics, &self.config.topic_pattern) {
            // librdkafka takes a subscription starting with `^` as a regular expression.
            (_, Some(pattern)) => vec![format!("^(?:{pattern})$")],
            (Some(topics), None) => topics.clone(),
            (None, None) => Vec::new(),
        };
        let mut subscription = subscription;
        if let Some(topic) = &cluster.shuffle_topic {
            self.ready_shuffle_topic(&consumer, topic)?;
            let start = self.shuffle_start(&consumer, &cluster.store, topic)?;
            let _ = rebalancer.shuffle_start.set(start);
            subscription.push(topic.clone());
            self.shuffle_topic = Some(topic.clone());
        }
        let names: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|error| KafkaStartError::Subscribe { name: self.config.name.clone(), error })?;
        let member = Member {
            store: cluster.store.clone(),
            rebalancer,
            owned: BTreeMap::new(),
            replays: Vec::new(),
            ran: BTreeMap::new(),
            name: cluster.member.clone(),
        };
        self.start_reading(consumer, context, Some(member))?;
        tracing::info!(
            source = %self.config.name,
            group = %cluster.group_id,
            member = %cluster.member,
            store = %cluster.store.url(),
            "kafka source joined the cluster's group"
        );
        self.group = Some(cluster.group_id.clone());
        Ok(())
    }

    /// Creates the cluster's repartition topic with one partition per partition of the source's
    /// topics, unless it exists (with as many).
    fn ready_shuffle_topic(&self, consumer: &BaseConsumer<KafkaLog>, topic: &str) -> Result<(), StartError> {
        let failed = |reason: String| KafkaStartError::Shuffle { name: self.config.name.clone(), reason };
        let mut partitions = 0;
        for source_topic in self.config.topics.iter().flatten() {
            let metadata = consumer
                .fetch_metadata(Some(source_topic), REQUEST_TIMEOUT)
                .map_err(|err| failed(format!("cannot read topic `{source_topic}`'s partitions: {err}")))?;
            partitions += metadata.topics().iter().map(|t| t.partitions().len()).sum::<usize>();
        }
        if partitions == 0 {
            return Err(failed("the source's topics have no partitions yet (create them first)".into()).into());
        }
        crate::kafka::ensure_topic(&self.config.brokers, &self.config.properties, topic, partitions as i32)
            .map_err(|reason| failed(reason).into())
    }

    /// Where each repartition partition without a log starts: the topic's ends when the first
    /// member of this cluster (this store) started, kept in the store (`shuffle/<topic>.start`,
    /// created once; later members read it).
    fn shuffle_start(
        &self,
        consumer: &BaseConsumer<KafkaLog>,
        store: &crate::cluster::CheckpointStore,
        topic: &str,
    ) -> Result<BTreeMap<i32, i64>, StartError> {
        let failed = |reason: String| KafkaStartError::Shuffle { name: self.config.name.clone(), reason };
        let key = format!("shuffle/{topic}.start");
        let found = store.get(&key).map_err(|err| failed(err.to_string()))?;
        let bytes = match found {
            Some(bytes) => bytes,
            None => {
                let metadata =
                    consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|err| failed(err.to_string()))?;
                let mut ends = BTreeMap::new();
                for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                        .map_err(|err| failed(format!("cannot read the end of {topic}/{}: {err}", partition.id())))?;
                    ends.insert(partition.id(), high);
                }
                let bytes = serde_json::to_vec(&ends).expect("offsets encode");
                // Another member may have made it first: then its ends count.
                store.create(&key, bytes).map_err(|err| failed(err.to_string()))?;
                store.get(&key).map_err(|err| failed(err.to_string()))?.unwrap_or_default()
            }
        };
        let start: BTreeMap<i32, i64> = serde_json::from_slice(&bytes)
            .map_err(|err| failed(format!("the store's `{key}` does not decode: {err}")))?;
        if start.values().any(|offset| *offset > 0) {
            tracing::info!(source = %self.config.name, "the repartition topic `{topic}` held records before this cluster's store: its partitions start after them");
        }
        Ok(start)
    }

    /// Starts discovery (as a member: for the partitions' ends only, the group assigns) and
    /// the state cuts read through.
    fn start_reading(
        &mut self,
        consumer: BaseConsumer<KafkaLog>,
        context: SourceContext,
        member: Option<Member>,
    ) -> Result<(), StartError> {
        let consumer = Arc::new(consumer);
        let receiver = context.receiver.clone();
        receiver.set_rate(None);
        let discovered = discover::spawn(
            consumer.clone(),
            self.topics()?,
            self.config.brokers.clone(),
            self.config.discovery_interval.unwrap_or(DISCOVERY_INTERVAL),
            receiver.clone(),
            context.stop.clone(),
        );
        self.started = Some(Started {
            receiver,
            log: context.log,
            consumer,
            discovered,
            assigned: BTreeSet::new(),
            first_look_assigned: false,
            blocks: Vec::new(),
            member,
            ranges: BTreeMap::new(),
            counts: BTreeMap::new(),
            carry: BTreeMap::new(),
            capped: BTreeSet::new(),
            probes: BTreeMap::new(),
            all_paused: false,
            batch_ms: context.batch_ms,
        });
        Ok(())
    }

    /// Takes up what the group changed: a gained partition starts where its log says (its
    /// pending entries replayed first); a lost one leaves the batch being collected, and its
    /// tasks already cut are no longer owned.
    fn apply_changes(&mut self) {
        let Some(started) = self.started.as_mut() else { return };
        let Some(member) = started.member.as_mut() else { return };
        member.rebalancer.pending.store(false, Ordering::Release);
        let changes = std::mem::take(&mut *member.rebalancer.changes.lock().expect("changes lock"));
        if changes.gained.is_empty() && changes.lost.is_empty() {
            return;
        }
        for tp in changes.lost {
            if let Some(owned) = member.owned.remove(&tp) {
                owned.flag.store(false, Ordering::Release);
            }
            self.next.remove(&tp);
            self.completed.remove(&tp);
            started.ranges.remove(&tp);
            started.counts.remove(&tp);
            started.carry.remove(&tp);
            started.capped.remove(&tp);
            started.probes.remove(&tp);
            started.assigned.remove(&tp);
            started.blocks.retain(|(p, _)| *p != tp);
            member.replays.retain(|(p, _)| *p != tp);
            for entries in member.ran.values_mut() {
                entries.retain(|(p, _, _)| *p != tp);
            }
        }
        let mut gained = Vec::new();
        for (tp, loaded, offset) in changes.gained {
            gained.push(tp.clone());
            let shuffled = self.shuffle_topic.as_ref() == Some(&tp.topic);
            member.owned.insert(tp.clone(), Owned::from_log(&loaded, shuffled));
            self.next.remove(&tp);
            positioned(&mut started.probes, &mut self.next, &tp, offset);
            if shuffled && loaded.next_offset.is_none() {
                // A repartition partition without a log starts at the topic's end as the brokers
                // reported it when this cluster's store was new: what lies before is an earlier
                // cluster's. tansu reports an end inside the last batch (its base + 1), so the
                // batch holding that offset is an earlier cluster's too: no probe for it.
                started.probes.remove(&tp);
            }
            member.replays.retain(|(p, _)| *p != tp);
            member.replays.extend(loaded.pending.into_iter().map(|entry| (tp.clone(), entry)));
            started.assigned.insert(tp);
        }
        // librdkafka keeps a partition's pause across an unassign: a gained partition is set
        // to what the rest is now, explicitly (it may have been paused when this member last
        // had it).
        let gained = list(&gained);
        let _ = if started.all_paused { started.consumer.pause(&gained) } else { started.consumer.resume(&gained) };
        started.receiver.clear_error();
        self.report_partitions();
    }

    /// The closing cut of a member: appends each partition's range to its log (a partition
    /// whose entry another member wrote first drops its records and runs that entry instead),
    /// reads the entries to replay, and hands over every block as its partition's task,
    /// replays first (a repartition partition's entries run in log order, each on the state
    /// the one before left).
    fn close_as_member(&mut self, cut: Cut) -> Vec<Block> {
        let Some(started) = self.started.as_mut() else { return Vec::new() };
        let Some(member) = started.member.as_mut() else { return Vec::new() };
        let mut ran = Vec::new();
        // The entries this batch appended, for a partition whose replay must wait (below).
        let mut fresh: Vec<(TopicPartition, Entry)> = Vec::new();
        // Partitions whose records of this batch are dropped, and where they read on.
        let mut restart: Vec<(TopicPartition, i64)> = Vec::new();
        // A repartition partition's records of this batch, each taken once (`shuffled.rs`).
        let mut deduplicated: BTreeMap<TopicPartition, Block> = BTreeMap::new();
        for (tp, (from, until)) in &started.ranges {
            let Some(owned) = member.owned.get_mut(tp) else { continue };
            if owned.last_batch.is_some_and(|last| cut.batch <= last) {
                // The last entry (another member's, by its clock) is of this batch time or later:
                // an entry of the same time would take its output's name. Read these again.
                restart.push((tp.clone(), *from));
                continue;
            }
            let mut entry = Entry {
                seq: owned.next_seq,
                batch: cut.batch,
                from: *from,
                until: *until,
                member: member.name.clone(),
                shuffled: Shuffled::new(),
                shuffled_before: Shuffled::new(),
            };
            let mut taken = None;
            if let Some(table) = &owned.shuffled {
                let blocks = started.blocks.iter().filter(|(p, _)| p == tp).map(|(_, b)| b);
                let (block, after) = shuffled::take_blocks(table, blocks);
                // Kept for a replay of this entry here (its partition's replay waits, below).
                entry.shuffled_before = table.clone();
                (entry.shuffled, taken) = (after, block);
            }
            match member.store.append(&tp.topic, tp.partition, &entry) {
                Ok(Appended::Written) => {
                    tracing::debug!(source = %self.config.name, "logged entry {} of {}/{}: batch {}, offsets {}..{}", entry.seq, tp.topic, tp.partition, entry.batch, entry.from, entry.until);
                    owned.next_seq += 1;
                    owned.last_batch = Some(cut.batch);
                    if owned.shuffled.is_some() {
                        owned.shuffled = Some(entry.shuffled.clone());
                        deduplicated.extend(taken.map(|block| (tp.clone(), block)));
                    }
                    ran.push((tp.clone(), entry.seq, entry.until));
                    fresh.push((tp.clone(), entry));
                }
                Ok(Appended::Fenced(theirs)) if owned.shuffled.is_none() => {
                    tracing::warn!(
                        source = %self.config.name,
                        "{}/{}: entry {} of its log was written by `{}` first (batch {}, offsets {}..{}): this member's records of batch {} are dropped and that entry runs here",
                        tp.topic, tp.partition, theirs.seq, theirs.member, theirs.batch, theirs.from, theirs.until, cut.batch
                    );
                    owned.next_seq = theirs.seq + 1;
                    owned.last_batch = Some(theirs.batch);
                    restart.push((tp.clone(), theirs.until));
                    member.replays.push((tp.clone(), theirs));
                }
                // A repartition partition's keyed state is only right after every entry: fenced,
                // it starts again from the store, as if just gained.
                Ok(Appended::Fenced(_) | Appended::Behind) => match member.store.load(&tp.topic, tp.partition) {
                    Ok(loaded) => {
                        tracing::warn!(
                            source = %self.config.name,
                            "{}/{}: its log has moved past entry {} without this member: its records of batch {} are dropped; reading on from {:?}{}",
                            tp.topic, tp.partition, entry.seq, cut.batch, loaded.next_offset,
                            if owned.shuffled.is_some() { ", its keyed state from the store" } else { "" }
                        );
                        owned.reread(&loaded);
                        restart.push((tp.clone(), loaded.next_offset.unwrap_or(*from)));
                        // The log as read now has every entry to run again, the ones queued too.
                        member.replays.retain(|(p, _)| p != tp);
                        member.replays.extend(loaded.pending.into_iter().map(|e| (tp.clone(), e)));
                    }
                    Err(err) => {
                        tracing::error!(source = %self.config.name, "cannot read the log of {}/{}: {err}; its records are read again for the next batch", tp.topic, tp.partition);
                        restart.push((tp.clone(), *from));
                    }
                },
                Err(err) => {
                    tracing::error!(source = %self.config.name, "cannot log batch {} of {}/{}: {err}; its records are read again for the next batch", cut.batch, tp.topic, tp.partition);
                    started.receiver.set_error(format!("checkpoint store: {err}"));
                    restart.push((tp.clone(), *from));
                }
            }
        }
        for (tp, offset) in &restart {
            started.blocks.retain(|(p, _)| p != tp);
            started.carry.remove(tp);
            positioned(&mut started.probes, &mut self.next, tp, Offset::Offset(*offset));
            if let Err(err) = started.consumer.seek(&tp.topic, tp.partition, Offset::Offset(*offset), REQUEST_TIMEOUT) {
                tracing::warn!(source = %self.config.name, "cannot seek {}/{} to {offset}: {err}", tp.topic, tp.partition);
            }
        }
        let mut own_blocks = std::mem::take(&mut started.blocks);
        own_blocks.retain(|(tp, _)| member.owned.get(tp).is_none_or(|o| o.shuffled.is_none()));
        own_blocks.extend(deduplicated);
        // In the order they run: replays first.
        let mut runs: Vec<Run> = Vec::new();
        let replays = std::mem::take(&mut member.replays);
        let mut retry = Vec::new();
        for (tp, entry) in &replays {
            tracing::info!(
                source = %self.config.name,
                "replaying entry {} of {}/{}: batch {}, offsets {}..{}, logged by `{}`",
                entry.seq, tp.topic, tp.partition, entry.batch, entry.from, entry.until, entry.member
            );
        }
        for round in rounds(replays) {
            // A partition whose earlier entry could not be read waits whole: no later entry of
            // it may be written (and marked done) before that one.
            let (round, waiting): (Vec<_>, Vec<_>) =
                round.into_iter().partition(|(tp, _)| !retry.iter().any(|(p, _): &(TopicPartition, Entry)| p == tp));
            retry.extend(waiting);
            let ranges: Vec<OffsetRange> = round
                .iter()
                .map(|(tp, e)| OffsetRange {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    from: e.from,
                    until: e.until,
                })
                .collect();
            let source = self.started.as_ref().map_or(0, |s| s.receiver.source);
            let (read, short) = self.read_ranges(source, cut.seq, &ranges, MEMBER_REPLAY_PATIENCE);
            for (tp, block) in read {
                if short.contains(&tp) {
                    continue; // not whole: tried again at the next batch, never written in part
                }
                let entry = &round.iter().find(|(p, _)| *p == tp).expect("read what was asked").1;
                if let Some(started) = &self.started {
                    started.receiver.count(block.records, block.invalid);
                }
                let block = match self.shuffle_topic.as_ref() == Some(&tp.topic) {
                    true => self.replayed_shuffle(&tp, entry, block),
                    false => Some(block),
                };
                runs.extend(block.map(|block| Run {
                    tp: tp.clone(),
                    batch_ms: entry.batch,
                    replayed: true,
                    seq: entry.seq,
                    block,
                }));
            }
            for (tp, entry) in round {
                if short.contains(&tp) {
                    retry.push((tp, entry));
                } else {
                    ran.push((tp, entry.seq, entry.until));
                }
            }
        }
        for (tp, block) in own_blocks {
            if let Some((_, entry)) = fresh.iter().find(|(p, _)| *p == tp) {
                runs.push(Run { tp, batch_ms: cut.batch, replayed: false, seq: entry.seq, block });
            }
        }
        // This batch's own entry of a waiting partition waits too, after the others.
        for (tp, entry) in fresh {
            if retry.iter().any(|(p, _)| *p == tp) {
                ran.retain(|(p, seq, _)| !(*p == tp && *seq == entry.seq));
                runs.retain(|run| run.tp != tp || run.replayed);
                retry.push((tp, entry));
            }
        }
        let blocks = match self.started.as_mut().and_then(|s| s.member.as_mut()) {
            Some(member) => {
                member.ran.entry(cut.batch).or_default().extend(ran);
                member.replays.splice(0..0, retry);
                member.tasks(runs)
            }
            None => Vec::new(),
        };
        self.next_batch(cut);
        self.report_partitions();
        blocks
    }

    /// A replayed entry of a repartition partition: its records taken from the table the
    /// entry before left, exactly as its first run took them; None if none are left.
    fn replayed_shuffle(&self, tp: &TopicPartition, entry: &Entry, block: Block) -> Option<Block> {
        let (taken, after) = shuffled::take_blocks(&entry.shuffled_before, std::iter::once(&block));
        if after != entry.shuffled {
            tracing::error!(source = %self.config.name, "{}/{}: replaying entry {} took other records than its first run (the repartition topic changed under it?)", tp.topic, tp.partition, entry.seq);
        }
        taken
    }

    /// A member's batches through `through` committed: their entries are done in the store,
    /// and their offsets go to the group (for Kafka's tools; the store is what members read).
    fn commit_as_member(&mut self, through: u64) {
        let Some(started) = self.started.as_mut() else { return };
        let Some(member) = started.member.as_mut() else { return };
        let later = member.ran.split_off(&(through + 1));
        let committed = std::mem::replace(&mut member.ran, later);
        let mut last: BTreeMap<TopicPartition, (u64, i64)> = BTreeMap::new();
        for (tp, seq, until) in committed.into_values().flatten() {
            if member.owned.get(&tp).is_some_and(|o| o.flag.load(Ordering::Acquire)) {
                let at = last.entry(tp).or_insert((seq, until));
                *at = (at.0.max(seq), at.1.max(until));
            }
        }
        for (tp, (seq, until)) in last {
            if let Err(err) = member.store.done(&tp.topic, tp.partition, seq) {
                // Not fatal: the partition's next owner runs the entry again.
                tracing::warn!(source = %self.config.name, "cannot mark entry {seq} of {}/{} done: {err}", tp.topic, tp.partition);
            }
            self.completed.insert(tp, until);
        }
        self.commit_to_group();
    }
}

/// What [`KafkaSource::read_ranges`] read: a block per partition, and the partitions it could
/// not read whole.
type ReadBack = (Vec<(TopicPartition, Block)>, Vec<TopicPartition>);

/// Entries to replay in rounds that read each partition at most once, in log order.
fn rounds(entries: Vec<(TopicPartition, Entry)>) -> Vec<Vec<(TopicPartition, Entry)>> {
    let mut rounds: Vec<Vec<(TopicPartition, Entry)>> = Vec::new();
    for (tp, entry) in entries {
        match rounds.iter_mut().find(|round| !round.iter().any(|(p, _)| *p == tp)) {
            Some(round) => round.push((tp, entry)),
            None => rounds.push(vec![(tp, entry)]),
        }
    }
    rounds
}
