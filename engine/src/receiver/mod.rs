//! Receivers: the buffer between a source task and the block generator.
//!
//! A source appends records to its [`Receiver`] as frames (see `sluice_sdk::abi`); the block
//! generator cuts whatever has accumulated into a [`Block`] every block interval. The source takes
//! the lock once per read chunk, not per record.
//!
//! A block also seals early when it reaches [`MAX_BLOCK_BYTES`], so a burst that arrives within
//! one block interval still spreads over several partitions (and cores).

pub mod rate;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::block::Block;
use crate::codec;

/// A block seals when its frames reach this size, even before the block interval ends.
pub const MAX_BLOCK_BYTES: usize = 8 << 20;

/// Records received since the last cut.
#[derive(Debug, Default)]
pub struct PendingBlock {
    /// Frames of the records.
    pub data: Vec<u8>,
    /// Number of records in `data`.
    pub records: u64,
    /// Lines dropped because they are not UTF-8.
    pub invalid: u64,
}

impl PendingBlock {
    fn with_capacity(bytes: usize) -> Self {
        Self { data: Vec::with_capacity(bytes), records: 0, invalid: 0 }
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Blocks sealed early because they reached [`MAX_BLOCK_BYTES`].
    sealed: Vec<PendingBlock>,
    /// The block being filled.
    open: PendingBlock,
}

/// The shared state of one source's receiver.
#[derive(Debug)]
pub struct Receiver {
    /// Index of the source in the pipeline.
    pub source: usize,
    /// Name of the source.
    pub name: String,
    pending: Mutex<Pending>,
    finished: AtomicBool,
    received: AtomicU64,
    invalid: AtomicU64,
    /// Lines (records and dropped invalid lines) written to the write-ahead log so far.
    durable: AtomicU64,
    /// A write to the write-ahead log failed: nothing more is acknowledged.
    wal_failed: AtomicBool,
    /// Wakes the source when records became durable (to acknowledge them).
    pub durable_changed: tokio::sync::Notify,
    /// The rate the source may read at, records/s (`f64` bits); 0: unlimited.
    rate: AtomicU64,
    /// Paused through the admin API: the source reads nothing until resumed.
    paused: AtomicBool,
    /// Held back by backpressure (batches waiting, or the batch being received is full).
    held: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Per partition, for a source with partitions (Kafka): offsets and lag.
    partitions: Mutex<Vec<PartitionStatus>>,
    /// Per shard, for a source with shards (Kinesis): phase, position and lag.
    shards: Mutex<Vec<ShardStatus>>,
    /// For a source that answers its senders (Flume): answers and connections.
    answers: Mutex<Option<Answers>>,
}

/// What a source that answers its senders (a Flume source: `OK` or not) reports on its row
/// and in `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Answers {
    /// Calls answered `OK`.
    pub ok: u64,
    /// Calls answered "try later" (paused, held back, over the rate): nothing was taken.
    pub try_later: u64,
    /// Calls answered with an error (a batch too big, the write-ahead log failing).
    pub error: u64,
    /// Records received and not yet answered (waiting for the write-ahead log).
    pub pending: u64,
    /// Connections open now.
    pub connections: u64,
    /// Connections closed for a protocol error (garbage, another protocol, a frame too big).
    pub bad_connections: u64,
}

/// One partition of a source, as its receiver row and `/metrics` show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionStatus {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the source reads, once known.
    pub offset: Option<i64>,
    /// The partition's end (the offset the next record written gets), as last fetched.
    pub high_watermark: Option<i64>,
    /// Records written and not yet read: `high_watermark - offset`.
    pub lag: Option<i64>,
}

/// One shard of a source, as its receiver row and `/metrics` show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardStatus {
    /// The shard id.
    pub shard: String,
    /// Where it is: waiting for its parent, reading, read to its end, ended.
    pub state: &'static str,
    /// The last sequence number a batch took.
    pub sequence: Option<String>,
    /// How far the last read was behind the shard's newest record, ms.
    pub millis_behind: Option<i64>,
    /// Records fetched and waiting for a batch.
    pub buffered: u64,
    /// Calls retried after throttling or errors.
    pub retries: u64,
}

impl Receiver {
    /// A receiver for source `source`.
    pub fn new(source: usize, name: &str) -> Self {
        Self {
            source,
            name: name.to_string(),
            pending: Mutex::new(Pending::default()),
            finished: AtomicBool::new(false),
            received: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            wal_failed: AtomicBool::new(false),
            durable_changed: tokio::sync::Notify::new(),
            rate: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            held: AtomicBool::new(false),
            last_error: Mutex::new(None),
            partitions: Mutex::new(Vec::new()),
            shards: Mutex::new(Vec::new()),
            answers: Mutex::new(None),
        }
    }

    /// Like [`Receiver::append`]; returns the lines (records and invalid ones) received
    /// through this append, counted under the lock: once [`Receiver::durable`] reaches it, these
    /// records are in the write-ahead log.
    pub fn append_through(&self, f: impl FnOnce(&mut PendingBlock)) -> u64 {
        let mut through = 0;
        self.append(|block| {
            let before = block.records + block.invalid;
            f(block);
            // Still under the lock: `received` and `invalid` grow by what `f` added next.
            through = self.lines() + block.records + block.invalid - before;
        });
        through
    }

    /// Appends records under the lock.
    pub fn append(&self, f: impl FnOnce(&mut PendingBlock)) {
        let mut pending = self.pending.lock().expect("receiver lock");
        let open = &mut pending.open;
        let (records, invalid) = (open.records, open.invalid);
        f(open);
        self.received.fetch_add(open.records - records, Ordering::Relaxed);
        self.invalid.fetch_add(open.invalid - invalid, Ordering::Relaxed);
        if open.data.len() >= MAX_BLOCK_BYTES {
            let full = std::mem::replace(open, PendingBlock::with_capacity(MAX_BLOCK_BYTES + (1 << 20)));
            pending.sealed.push(full);
        }
    }

    /// Takes everything received since the last cut as blocks: those sealed early for size,
    /// then the open one (none if nothing came).
    pub fn cut(&self, seq: u64) -> Vec<Block> {
        let Pending { mut sealed, open } = {
            let mut pending = self.pending.lock().expect("receiver lock");
            // The next block will likely be as big as this one: reserve once, not by doubling.
            let capacity = pending.open.data.len().min(MAX_BLOCK_BYTES + (1 << 20));
            std::mem::replace(
                &mut *pending,
                Pending { sealed: Vec::new(), open: PendingBlock::with_capacity(capacity) },
            )
        };
        if open.records > 0 || open.invalid > 0 {
            sealed.push(open);
        }
        sealed
            .into_iter()
            .map(|block| Block {
                source: self.source,
                seq,
                records: block.records,
                invalid: block.invalid,
                data: block.data,
                task: None,
            })
            .collect()
    }

    /// Counts records a source handed over without this receiver's buffer (directory files).
    pub fn count(&self, records: u64, invalid: u64) {
        self.received.fetch_add(records, Ordering::Relaxed);
        self.invalid.fetch_add(invalid, Ordering::Relaxed);
    }

    /// `lines` more (records and dropped invalid lines) were written to the write-ahead log.
    pub fn made_durable(&self, lines: u64) {
        self.durable.fetch_add(lines, Ordering::Release);
        self.durable_changed.notify_waiters();
    }

    /// A write to the write-ahead log failed: from now on nothing is acknowledged (a count
    /// would cover the lines that are not durable); the sender resends after a reconnect.
    pub fn wal_write_failed(&self) {
        self.wal_failed.store(true, Ordering::Release);
        self.durable_changed.notify_waiters();
    }

    /// Whether a write to the write-ahead log failed.
    pub fn wal_failed(&self) -> bool {
        self.wal_failed.load(Ordering::Acquire)
    }

    /// Lines written to the write-ahead log so far.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Lines received so far: records and dropped invalid lines.
    pub fn lines(&self) -> u64 {
        self.received() + self.invalid()
    }

    /// Sets the rate the source may read at (records/s); `None`: unlimited.
    pub fn set_rate(&self, rate: Option<f64>) {
        self.rate.store(rate.map_or(0, f64::to_bits), Ordering::Relaxed);
    }

    /// The rate the source may read at, if limited.
    pub fn rate(&self) -> Option<f64> {
        let bits = self.rate.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Pauses or resumes the source. Returns whether that changed anything.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::AcqRel) != paused
    }

    /// Whether the source is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Holds the source back (backpressure) or lets it read again.
    pub fn set_held(&self, held: bool) {
        self.held.store(held, Ordering::Release);
    }

    /// Whether the source should read nothing now: paused, or held back.
    pub fn is_holding(&self) -> bool {
        self.is_paused() || self.held.load(Ordering::Acquire)
    }

    /// The source has ended: no more records will come.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Whether the source has ended.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Records received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Lines dropped so far because they are not UTF-8.
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Records the source's current problem (e.g. cannot connect).
    pub fn set_error(&self, error: String) {
        *self.last_error.lock().expect("receiver lock") = Some(error);
    }

    /// Its partitions' offsets and lag, as the source last saw them.
    pub fn set_partitions(&self, partitions: Vec<PartitionStatus>) {
        *self.partitions.lock().expect("receiver lock") = partitions;
    }

    /// Its partitions' offsets and lag (none for a source without partitions).
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.partitions.lock().expect("receiver lock").clone()
    }

    /// Its shards' phase, position and lag, as the source last saw them.
    pub fn set_shards(&self, shards: Vec<ShardStatus>) {
        *self.shards.lock().expect("receiver lock") = shards;
    }

    /// Its shards (none for a source without shards).
    pub fn shards(&self) -> Vec<ShardStatus> {
        self.shards.lock().expect("receiver lock").clone()
    }

    /// Updates its answers (a source that answers its senders).
    pub fn answers_update(&self, f: impl FnOnce(&mut Answers)) {
        f(self.answers.lock().expect("receiver lock").get_or_insert_with(Answers::default));
    }

    /// Its answers, if it answers its senders.
    pub fn answers(&self) -> Option<Answers> {
        *self.answers.lock().expect("receiver lock")
    }

    /// The source recovered.
    pub fn clear_error(&self) {
        *self.last_error.lock().expect("receiver lock") = None;
    }

    /// The source's last problem, if it has one now.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("receiver lock").clone()
    }
}

/// Turns a byte stream into line records (`String` frames), carrying partial lines across chunks.
#[derive(Debug, Default)]
pub struct LineFramer {
    partial: Vec<u8>,
}

impl LineFramer {
    /// Frames every complete line of `chunk` into `block`.
    pub fn push(&mut self, chunk: &[u8], block: &mut PendingBlock) {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    self.partial.extend_from_slice(&rest[..end]);
                    let line = std::mem::take(&mut self.partial);
                    push_line(&line, block);
                    rest = &rest[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
            }
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', rest) {
            push_line(&rest[start..end], block);
            start = end + 1;
        }
        self.partial.extend_from_slice(&rest[start..]);
    }

    /// Frames the last line if the stream did not end with a newline.
    pub fn finish(&mut self, block: &mut PendingBlock) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            push_line(&line, block);
        }
    }
}

/// Appends one line as the frame of a postcard `String`: varint length, then the bytes.
fn push_line(line: &[u8], block: &mut PendingBlock) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if std::str::from_utf8(line).is_err() {
        block.invalid += 1;
        return;
    }
    let mut len = [0; codec::MAX_VARINT_U64];
    let len = codec::encode_varint(&mut len, line.len() as u64);
    codec::push_frame_parts(&mut block.data, len, line);
    block.records += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::abi::Frames;

    fn lines(block: &PendingBlock) -> Vec<String> {
        Frames::new(&block.data).map(|frame| postcard::from_bytes::<String>(frame).unwrap()).collect()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut framer = LineFramer::default();
        let mut block = PendingBlock::default();
        framer.push(b"hello wo", &mut block);
        framer.push(b"rld\r\nsecond\nthi", &mut block);
        framer.push(b"rd", &mut block);
        framer.finish(&mut block);
        assert_eq!(lines(&block), ["hello world", "second", "third"]);
        assert_eq!(block.records, 3);
    }

    #[test]
    fn invalid_utf8_is_counted_and_dropped() {
        let mut framer = LineFramer::default();
        let mut block = PendingBlock::default();
        framer.push(b"ok\n\xff\xfe bad\nfine\n", &mut block);
        assert_eq!(lines(&block), ["ok", "fine"]);
        assert_eq!(block.invalid, 1);
    }

    #[test]
    fn long_lines_get_multi_byte_length_prefixes() {
        let mut framer = LineFramer::default();
        let mut block = PendingBlock::default();
        let long = "x".repeat(70_000);
        framer.push(format!("{long}\n\n").as_bytes(), &mut block);
        assert_eq!(lines(&block), [long, String::new()]);
    }
}
