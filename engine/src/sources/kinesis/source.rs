//! The Kinesis source at run time: taking what the readers fetched at each cut, the batch's
//! sequence-number ranges, position, commit and replay. See the folder's module docs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{self, Failure, RETRY_MAX, RETRY_MIN};
use super::reader::Reader;
use super::shards::{self, Discovery, Fetched, Phase, Shared, StartAt};
use super::{KinesisSourceConfig, RECORDS_PER_CALL, ShardPositions, ShardRange, record, seq_cmp};
use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::receiver::{Receiver, ShardStatus};
use crate::sources::{Cut, Position, Source, SourceContext, StartError};

/// Default `discovery_interval` and `poll_interval`.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a replay keeps trying to read a logged batch's ranges.
const REPLAY_PATIENCE: Duration = Duration::from_secs(120);

/// See the module docs.
#[derive(Debug)]
pub(crate) struct KinesisSource {
    config: KinesisSourceConfig,
    /// Through the last commit.
    completed: ShardPositions,
    /// Past everything cut so far.
    next: ShardPositions,
    /// The ranges of each batch after the last commit.
    by_batch: BTreeMap<u64, Vec<ShardRange>>,
    started: Option<Started>,
}

#[derive(Debug)]
struct Started {
    receiver: Arc<Receiver>,
    log: Option<BatchLog>,
    io: tokio::runtime::Handle,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<tokio::sync::Notify>,
    /// Blocks of the batch being collected, handed over at the cut that closes it.
    blocks: Vec<Block>,
    /// Its ranges so far, per shard.
    ranges: BTreeMap<String, ShardRange>,
    /// Records each shard gave it, against the shard's share.
    counts: BTreeMap<String, u64>,
    batch_ms: u64,
}

impl KinesisSource {
    pub(super) fn new(config: KinesisSourceConfig) -> Self {
        Self {
            config,
            completed: ShardPositions::default(),
            next: ShardPositions::default(),
            by_batch: BTreeMap::new(),
            started: None,
        }
    }

    /// Each shard's share of one batch, records; `None`: unlimited.
    fn share(&self, started: &Started, reading: usize) -> Option<u64> {
        let shards = reading.max(1) as f64;
        let total =
            [self.config.max_rate.map(|r| r as f64), started.receiver.rate()].into_iter().flatten().reduce(f64::min)?;
        Some(((total / shards * started.batch_ms as f64 / 1000.0) as u64).max(1))
    }

    /// Takes, per shard, what its reader fetched up to the shard's share of the batch; a shard
    /// read to its end whose buffer is now empty has ended.
    fn take(&mut self, seq: u64) {
        let Some(started) = &self.started else { return };
        if started.receiver.is_paused() || started.receiver.is_holding() {
            return;
        }
        let mut taken: Vec<(String, Vec<Fetched>, bool)> = Vec::new();
        {
            let mut shared = started.shared.lock().expect("kinesis lock");
            let reading = shared.shards.values().filter(|s| matches!(s.phase, Phase::Reading | Phase::Fetched)).count();
            let share = self.share(started, reading);
            for (id, shard) in
                shared.shards.iter_mut().filter(|(_, s)| matches!(s.phase, Phase::Reading | Phase::Fetched))
            {
                let count = started.counts.get(id).copied().unwrap_or(0);
                let room = share.map_or(usize::MAX, |share| share.saturating_sub(count) as usize);
                let n = room.min(shard.buffer.len());
                let records: Vec<Fetched> = shard.buffer.drain(..n).collect();
                shard.buffered_bytes -= records.iter().map(|r| r.data.len()).sum::<usize>();
                let ended = shard.phase == Phase::Fetched && shard.buffer.is_empty();
                if ended {
                    shard.phase = Phase::Ended;
                }
                if !records.is_empty() || ended {
                    taken.push((id.clone(), records, ended));
                }
            }
        }
        let started = self.started.as_mut().expect("started");
        let mut any_ended = false;
        for (shard, records, ended) in taken {
            any_ended |= ended;
            started.add(self.config.format, &shard, &records, ended, seq);
            if let Some(last) = records.last() {
                self.next.after.insert(shard.clone(), last.sequence.clone());
            }
            if ended {
                self.next.ended.insert(shard);
            }
        }
        if any_ended {
            started.wake.notify_one();
        }
    }

    /// The batch this cut closes: logs its ranges, then hands over its blocks.
    fn close(&mut self, cut: Cut) -> Vec<Block> {
        let Some(started) = &mut self.started else { return Vec::new() };
        let ranges: Vec<ShardRange> = started.ranges.values().cloned().collect();
        if !ranges.is_empty()
            && let Some(log) = &started.log
        {
            let record = serde_json::to_vec(&ranges).expect("ranges encode");
            if let Err(err) = log.write_record(cut.batch, started.receiver.source, &record) {
                tracing::error!(source = %started.receiver.name, "cannot log the sequence numbers of batch {}: {err}; they wait", cut.batch);
                started.receiver.set_error(format!("checkpoint: {err}"));
                return Vec::new();
            }
        }
        started.ranges.clear();
        started.counts.clear();
        let blocks = std::mem::take(&mut started.blocks);
        if !ranges.is_empty() {
            self.by_batch.insert(cut.batch, ranges);
        }
        self.report_shards();
        blocks
    }

    /// Each shard's phase, last sequence number and lag on the receiver row.
    fn report_shards(&self) {
        let Some(started) = &self.started else { return };
        let shared = started.shared.lock().expect("kinesis lock");
        let status = shared
            .shards
            .iter()
            .map(|(id, shard)| ShardStatus {
                shard: id.clone(),
                state: shard.phase.name(),
                sequence: self.next.after.get(id).cloned(),
                millis_behind: shard.millis_behind,
                buffered: shard.buffer.len() as u64,
                retries: shard.retries,
            })
            .collect();
        started.receiver.set_shards(status);
    }

    /// Reads `ranges` again.
    fn read_ranges(&self, source: usize, seq: u64, ranges: &[ShardRange]) -> Vec<Block> {
        let Some(started) = &self.started else { return Vec::new() };
        let config = &self.config;
        let receiver = started.receiver.clone();
        let read = async {
            let reader = Reader {
                client: client::connect(config).await,
                stream: config.stream.clone(),
                poll: config.poll_interval.unwrap_or(POLL_INTERVAL),
                limit: config.records_per_call.unwrap_or(RECORDS_PER_CALL),
                receiver,
            };
            let mut blocks = Vec::new();
            for range in ranges {
                let (Some(first), Some(last)) = (&range.first, &range.last) else { continue };
                let records = read_range(&reader, &range.shard, first, last).await;
                blocks.push(block(config.format, &range.shard, &records, source, seq));
            }
            blocks
        };
        // On a thread of its own: the caller may be on a thread of the runtime.
        let io = started.io.clone();
        std::thread::scope(|s| s.spawn(|| io.block_on(read)).join().expect("replay thread"))
    }
}

/// The records `first..=last` of `shard`, retried with back-off for [`REPLAY_PATIENCE`].
async fn read_range(reader: &Reader, shard: &str, first: &str, last: &str) -> Vec<Fetched> {
    let name = &reader.receiver.name;
    let deadline = Instant::now() + REPLAY_PATIENCE;
    let mut out: Vec<Fetched> = Vec::new();
    let mut delay = RETRY_MIN;
    let mut iterator: Option<String> = None;
    while Instant::now() < deadline {
        let from = match out.last() {
            Some(r) => StartAt::After(r.sequence.clone()),
            None => StartAt::At(first.to_string()),
        };
        let current = match iterator.take() {
            Some(current) => Ok(Some(current)),
            None => reader.iterator(shard, &from).await,
        };
        let result = match current {
            Ok(Some(current)) => reader.records(&current).await,
            Ok(None) => break,
            Err(failure) => Err(failure),
        };
        match result {
            Ok((records, next, _)) => {
                delay = RETRY_MIN;
                for record in records {
                    if seq_cmp(&record.sequence, last).is_gt() {
                        return out;
                    }
                    let done = record.sequence == last;
                    out.push(record);
                    if done {
                        return out;
                    }
                }
                match next {
                    Some(next) => iterator = Some(next),
                    None => break,
                }
            }
            Err(Failure::Expired(_)) => {}
            Err(failure) => {
                tracing::warn!(source = %name, shard = %shard, "replaying a batch: {}; retrying in {delay:?}", failure.describe());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
    tracing::error!(
        source = %name,
        shard,
        "replaying a batch: cannot read sequence numbers {first} to {last} (got {} records); its missing records are not in the batch",
        out.len()
    );
    out
}

/// One block of `records` of `shard`.
fn block(format: super::KinesisFormat, shard: &str, records: &[Fetched], source: usize, seq: u64) -> Block {
    let mut data = Vec::new();
    let mut valid = 0;
    for r in records {
        valid += u64::from(record::append(format, shard, r, &mut data));
    }
    Block { source, seq, records: valid, invalid: records.len() as u64 - valid, data, task: None }
}

impl Started {
    /// Adds one shard's records of a cut to the batch being collected.
    fn add(&mut self, format: super::KinesisFormat, shard: &str, records: &[Fetched], ended: bool, seq: u64) {
        let range = self.ranges.entry(shard.to_string()).or_insert_with(|| ShardRange {
            shard: shard.to_string(),
            first: None,
            last: None,
            ended: false,
        });
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            range.first.get_or_insert_with(|| first.sequence.clone());
            range.last = Some(last.sequence.clone());
        }
        range.ended |= ended;
        *self.counts.entry(shard.to_string()).or_default() += records.len() as u64;
        if records.is_empty() {
            return;
        }
        let block = block(format, shard, records, self.receiver.source, seq);
        self.receiver.count(block.records, block.invalid);
        self.blocks.push(block);
    }
}

/// The ranges a batch logged.
fn logged_ranges(logged: &LoggedInput) -> Vec<ShardRange> {
    logged.record.as_deref().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or_default()
}

/// `positions` moved past `ranges`.
fn advance(positions: &mut ShardPositions, ranges: &[ShardRange]) {
    for range in ranges {
        if let Some(last) = &range.last {
            let after = positions.after.entry(range.shard.clone()).or_insert_with(|| last.clone());
            if seq_cmp(last, after).is_gt() {
                *after = last.clone();
            }
        }
        if range.ended {
            positions.ended.insert(range.shard.clone());
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Source for KinesisSource {
    fn resume(&mut self, position: Option<Position>, logged: &[(u64, &LoggedInput)]) {
        if let Some(Position::Shards(positions)) = position {
            self.completed = positions;
        }
        self.next = self.completed.clone();
        for (time, input) in logged {
            let ranges = logged_ranges(input);
            advance(&mut self.next, &ranges);
            self.by_batch.insert(*time, ranges);
        }
    }

    fn start(&mut self, context: SourceContext) -> Result<(), StartError> {
        let first_start = self.completed.started_ms == 0;
        if first_start {
            self.completed.started_ms = now_ms();
            self.next.started_ms = self.completed.started_ms;
        }
        let shared = Arc::new(Mutex::new(Shared {
            shards: shards::ended_shards(&self.next.ended),
            resume_after: self.next.after.clone(),
            initial: self.config.initial_position,
            started_ms: self.completed.started_ms,
            first_start,
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let receiver = context.receiver.clone();
        receiver.set_rate(None);
        let config = self.config.clone();
        let (task_shared, task_wake, stop) = (shared.clone(), wake.clone(), context.stop.clone());
        context.io.spawn(async move {
            let client = client::connect(&config).await;
            let reader = Reader {
                client: client.clone(),
                stream: config.stream.clone(),
                poll: config.poll_interval.unwrap_or(POLL_INTERVAL),
                limit: config.records_per_call.unwrap_or(RECORDS_PER_CALL),
                receiver: receiver.clone(),
            };
            let discovery = Discovery {
                client,
                stream: config.stream.clone(),
                interval: config.discovery_interval.unwrap_or(DISCOVERY_INTERVAL),
                reader,
                shared: task_shared,
                receiver,
                wake: task_wake,
                stop,
            };
            discovery.run().await;
        });
        tracing::info!(source = %self.config.name, stream = %self.config.stream, "kinesis source started");
        self.started = Some(Started {
            receiver: context.receiver,
            log: context.log,
            io: context.io,
            shared,
            wake,
            blocks: Vec::new(),
            ranges: BTreeMap::new(),
            counts: BTreeMap::new(),
            batch_ms: context.batch_ms,
        });
        Ok(())
    }

    fn finished(&mut self, stopping: bool) -> bool {
        // A stream never ends: only a stop finishes the source.
        if stopping && let Some(started) = &self.started {
            started.receiver.finish();
        }
        stopping
    }

    fn cut(&mut self, cut: Cut) -> Vec<Block> {
        self.take(cut.seq);
        if cut.closes_batch { self.close(cut) } else { Vec::new() }
    }

    fn position(&self, through: u64) -> Position {
        let mut positions = self.completed.clone();
        for (_, ranges) in self.by_batch.range(..=through) {
            advance(&mut positions, ranges);
        }
        Position::Shards(positions)
    }

    fn commit(&mut self, through: u64) {
        if let Position::Shards(positions) = self.position(through) {
            self.completed = positions;
        }
        self.by_batch = self.by_batch.split_off(&(through + 1));
    }

    fn replay(&mut self, time: u64, logged: LoggedInput) -> Vec<Block> {
        let ranges = logged_ranges(&logged);
        let source = self.started.as_ref().map_or(0, |s| s.receiver.source);
        let blocks = self.read_ranges(source, time, &ranges);
        if let Some(started) = &self.started {
            started.receiver.count(blocks.iter().map(|b| b.records).sum(), blocks.iter().map(|b| b.invalid).sum());
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn range(shard: &str, last: Option<&str>, ended: bool) -> ShardRange {
        ShardRange { shard: shard.into(), first: last.map(String::from), last: last.map(String::from), ended }
    }

    #[test]
    fn positions_move_to_the_latest_sequence_number_and_keep_ended_shards() {
        let mut positions = ShardPositions::default();
        advance(&mut positions, &[range("a", Some("99"), false), range("b", None, true)]);
        advance(&mut positions, &[range("a", Some("100"), false)]);
        advance(&mut positions, &[range("a", Some("98"), false)]);
        assert_eq!(positions.after, BTreeMap::from([("a".to_string(), "100".to_string())]));
        assert_eq!(positions.ended, BTreeSet::from(["b".to_string()]));
    }
}
