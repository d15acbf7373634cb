//! Batches: every `batch_interval` the blocks cut since the last batch become one batch, named by
//! its time (a multiple of the interval, in ms since the Unix epoch, like Spark's batch times).
//!
//! [`generate`] is the clock: it cuts blocks every `block_interval` and emits a batch at each batch
//! boundary. When every source has finished, it emits the batch holding their last records at the
//! next boundary and stops; the [`scheduler`] then runs what is queued and returns.

mod cadence;
pub mod keyed;
pub mod scheduler;
mod shadow;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::batch_log::LoggedInput;
use crate::block::{Backlog, Block, now_ms};
use crate::fields::{millis, next_multiple};
use crate::metrics::events::Events;
use crate::receiver::Receiver;
use crate::sources::{Cut, Sources};

/// One batch: the blocks of every source from one batch interval.
#[derive(Debug, Default)]
pub struct Batch {
    /// The batch time: the end of its interval, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its blocks (partitions), in cut order.
    pub blocks: Vec<Block>,
    /// A batch logged by an earlier run that did not finish it: what each source logged, to
    /// replay when it runs (its blocks are empty until then).
    pub logged: Option<BTreeMap<usize, LoggedInput>>,
    /// No batch follows: every source has finished (or the pipeline is stopping).
    pub last: bool,
    /// Close every event-time window: the input has ended for good (not a stop that a
    /// checkpoint will resume from).
    pub close_windows: bool,
}

impl Batch {
    /// Run again after a restart.
    pub fn replayed(&self) -> bool {
        self.logged.is_some()
    }
}

/// What the clock works with.
#[derive(Debug)]
pub struct Clock {
    /// Every source, by index.
    pub sources: Arc<Sources>,
    /// Every source's receiver, by index (backpressure holds them).
    pub receivers: Vec<Arc<Receiver>>,
    /// `[pipeline] block_interval`.
    pub block_interval: Duration,
    /// `[pipeline] batch_interval`.
    pub batch_interval: Duration,
    /// Whether a stop will be resumed from a checkpoint (it then closes no event windows).
    pub checkpointed: bool,
    /// Batch times must come after this one (the last batch of an earlier run).
    pub after: u64,
    /// Batches waiting.
    pub backlog: Backlog,
    /// Where queued batches are reported.
    pub events: Arc<Events>,
    /// Turns true when the pipeline should stop.
    pub stop: watch::Receiver<bool>,
    /// Backpressure: hold a receiver back while two batches wait, or once the batch being
    /// received holds this many bytes of its records.
    pub hold_bytes: Option<usize>,
}

/// With backpressure, the most bytes of one source's records one batch takes in.
pub const BACKPRESSURE_BATCH_BYTES: usize = 64 << 20;

/// Cuts blocks and emits batches until every source has finished (or the scheduler is gone).
/// Blocks the calling thread: run it on its own.
pub fn generate(clock: Clock, batches: Sender<Batch>) {
    let block_ms = millis(clock.block_interval).max(1);
    let batch_ms = millis(clock.batch_interval).max(block_ms);
    let mut pending: Vec<Block> = Vec::new();
    let mut seq = 0u64;
    let mut ending = false;
    // The batch the next cut joins: strictly increasing, after the last run's batches, whatever
    // the wall clock does (`cadence.rs`; a late pass never skips one: sources log what they cut
    // under the batch it is then emitted in).
    let mut cadence = cadence::Cadence::new(now_ms(), Instant::now(), batch_ms, block_ms, clock.after);
    loop {
        let now = now_ms();
        let tick = next_multiple(now, block_ms);
        std::thread::sleep(Duration::from_millis(tick.saturating_sub(now)));
        let stopping = *clock.stop.borrow();
        // Read the flags before cutting: a source finished before the cut has all of its
        // records in this cut.
        let mut all_finished = true;
        for index in 0..clock.sources.len() {
            all_finished &= clock.sources.with(index, |source| source.finished(stopping));
        }
        ending |= all_finished;
        let cut = Cut { seq, batch: cadence.boundary(), closes_batch: cadence.closes(tick, Instant::now()) };
        for index in 0..clock.sources.len() {
            pending.extend(clock.sources.with(index, |source| source.cut(cut)));
        }
        if let Some(cap) = clock.hold_bytes {
            let backlog = clock.backlog.waiting() >= 2;
            for receiver in &clock.receivers {
                let bytes: usize = pending.iter().filter(|b| b.source == receiver.source).map(|b| b.data.len()).sum();
                receiver.set_held(backlog || bytes >= cap);
            }
        }
        seq += 1;
        if cut.closes_batch {
            cadence.advance(tick, Instant::now());
            let batch = Batch {
                time_ms: cut.batch,
                blocks: std::mem::take(&mut pending),
                logged: None,
                last: ending,
                close_windows: ending && !(stopping && clock.checkpointed),
            };
            clock.backlog.queued();
            clock.events.queued(cut.batch, batch.blocks.iter().map(|b| b.records).sum());
            if batches.send(batch).is_err() || ending {
                return;
            }
        }
    }
}
