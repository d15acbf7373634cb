//! Batches: every `batch_interval` the blocks cut since the last batch become one batch, named by
//! its time (a multiple of the interval, in ms since the Unix epoch, like Spark's batch times).
//!
//! [`generate`] is the clock: it cuts blocks every `block_interval` and emits a batch at each batch
//! boundary. When every source has finished, it emits the batch holding their last records at the
//! next boundary and stops; the [`scheduler`] then runs what is queued and returns.

pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::block::Block;
use crate::checkpoint::pending;
use crate::config::{millis, next_multiple};
use crate::metrics::Metrics;
use crate::receiver::Receiver;
use crate::sources::directory;

/// One batch: the blocks of every source from one batch interval.
#[derive(Debug, Default)]
pub struct Batch {
    /// The batch time: the end of its interval, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its blocks (partitions), in cut order.
    pub blocks: Vec<Block>,
    /// Directory sources: the new files the batch took (source index → names).
    pub files: BTreeMap<usize, Vec<String>>,
    /// No batch follows: every source has finished (or the pipeline is stopping).
    pub last: bool,
    /// Close every event-time window: the input has ended for good (not a stop that a
    /// checkpoint will resume from).
    pub close_windows: bool,
    /// Run again from the checkpoint directory after a restart.
    pub replayed: bool,
}

/// Wall-clock now in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// A directory source as the clock sees it.
#[derive(Debug)]
pub struct DirectoryInput {
    /// Source index.
    pub source: usize,
    /// The directory.
    pub path: PathBuf,
    /// Files already taken (from the checkpoint, then by every batch).
    pub taken: BTreeSet<String>,
}

/// What the clock needs besides the receivers.
#[derive(Debug)]
pub struct Clock {
    /// Every source's receiver, by source index.
    pub receivers: Vec<Arc<Receiver>>,
    /// `[pipeline] block_interval`.
    pub block_interval: Duration,
    /// `[pipeline] batch_interval`.
    pub batch_interval: Duration,
    /// The checkpoint directory, if checkpoints are on.
    pub checkpoint_dir: Option<PathBuf>,
    /// Per source: write its blocks to the write-ahead log.
    pub wal: Vec<bool>,
    /// Directory sources.
    pub directories: Vec<DirectoryInput>,
    /// Batch times must come after this one (the last batch of an earlier run).
    pub after: u64,
    /// Counts queued batches (new files wait while more than one waits) and reports them.
    pub metrics: Arc<Metrics>,
    /// Turns true when the pipeline should stop.
    pub stop: watch::Receiver<bool>,
    /// Backpressure: hold a receiver back while two batches wait, or once the batch being
    /// received holds this many bytes of its records.
    pub hold_bytes: Option<usize>,
}

/// With backpressure, the most bytes of one source's records one batch takes in.
pub const BACKPRESSURE_BATCH_BYTES: usize = 64 << 20;

/// Cuts blocks and emits batches until every receiver has finished (or the scheduler is gone).
/// Blocks the calling thread: run it on its own.
pub fn generate(mut clock: Clock, batches: Sender<Batch>) {
    let block_ms = millis(clock.block_interval).max(1);
    let batch_ms = millis(clock.batch_interval).max(block_ms);
    let mut pending: Vec<Block> = Vec::new();
    let mut seq = 0u64;
    let mut ending = false;
    // The batch the next cut joins: strictly increasing, after the last run's batches, whatever
    // the wall clock does (a step back never reuses a batch time; a late pass never skips one:
    // blocks are logged under the batch they are then emitted in).
    // Saturating: `after` comes from a checkpoint file, whatever it holds.
    let first = next_multiple(now_ms(), batch_ms);
    let mut boundary = first.max(next_multiple(clock.after, batch_ms));
    loop {
        let now = now_ms();
        let tick = next_multiple(now, block_ms);
        std::thread::sleep(Duration::from_millis(tick.saturating_sub(now)));
        let stopping = *clock.stop.borrow();
        if stopping {
            for dir in &clock.directories {
                clock.receivers[dir.source].finish();
            }
        }
        // Read the flags before cutting: a receiver finished before the cut has all of its
        // records in this cut.
        ending |= clock.receivers.iter().all(|r| r.is_finished());
        let batch_time = boundary;
        for receiver in &clock.receivers {
            let blocks = receiver.cut(seq);
            if let (Some(dir), true) = (&clock.checkpoint_dir, clock.wal[receiver.source]) {
                log_blocks(dir, batch_time, receiver, &blocks);
            }
            pending.extend(blocks);
        }
        if let Some(cap) = clock.hold_bytes {
            let backlog = clock.metrics.waiting.load(Ordering::Relaxed) >= 2;
            for receiver in &clock.receivers {
                let bytes: usize = pending.iter().filter(|b| b.source == receiver.source).map(|b| b.data.len()).sum();
                receiver.set_held(backlog || bytes >= cap);
            }
        }
        seq += 1;
        if tick >= boundary {
            boundary = next_multiple(tick, batch_ms);
            let files = take_files(&mut clock, batch_time);
            let batch = Batch {
                time_ms: batch_time,
                blocks: std::mem::take(&mut pending),
                files,
                last: ending,
                close_windows: ending && !(stopping && clock.checkpoint_dir.is_some()),
                replayed: false,
            };
            clock.metrics.waiting.fetch_add(1, Ordering::Relaxed);
            clock.metrics.events.queued(batch_time, batch.blocks.iter().map(|b| b.records).sum());
            if batches.send(batch).is_err() || ending {
                return;
            }
        }
    }
}

/// Writes a cut's blocks to the write-ahead log, then lets the source acknowledge them.
fn log_blocks(dir: &Path, batch_time: u64, receiver: &Receiver, blocks: &[Block]) {
    let mut lines = 0;
    for (n, block) in blocks.iter().enumerate() {
        if let Err(err) = pending::write_block(dir, batch_time, n, block) {
            tracing::error!(source = %receiver.name, "cannot write the write-ahead log in {}: {err}; no more acknowledgements", dir.display());
            receiver.set_error(format!("write-ahead log: {err}"));
            receiver.wal_write_failed();
            return;
        }
        lines += block.records + block.invalid;
    }
    if lines > 0 {
        receiver.made_durable(lines);
    }
}

/// New files of every directory source for batch `time`, logged before the batch runs. While
/// batches are waiting, files wait too: the directory is the backlog.
fn take_files(clock: &mut Clock, time: u64) -> BTreeMap<usize, Vec<String>> {
    let mut taken = BTreeMap::new();
    if clock.metrics.waiting.load(Ordering::Relaxed) > 1 {
        return taken;
    }
    for dir in &mut clock.directories {
        let receiver = &clock.receivers[dir.source];
        if receiver.is_paused() {
            continue;
        }
        let files = match directory::new_files(&dir.path, &dir.taken) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(source = %receiver.name, "cannot list {}: {err}", dir.path.display());
                receiver.set_error(format!("cannot list {}: {err}", dir.path.display()));
                continue;
            }
        };
        receiver.clear_error();
        if files.is_empty() {
            continue;
        }
        if let Some(root) = &clock.checkpoint_dir
            && let Err(err) = pending::write_files(root, time, dir.source, &files)
        {
            tracing::error!(source = %receiver.name, "cannot log the files of batch {time}: {err}; they wait");
            receiver.set_error(format!("checkpoint: {err}"));
            continue;
        }
        dir.taken.extend(files.iter().cloned());
        taken.insert(dir.source, files);
    }
    taken
}
