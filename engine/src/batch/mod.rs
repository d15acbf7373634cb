//! Batches: every `batch_interval` the blocks cut since the last batch become one batch, named by
//! its time (a multiple of the interval, in ms since the Unix epoch, like Spark's batch times).
//!
//! [`generate`] is the clock: it cuts blocks every `block_interval` and emits a batch at each batch
//! boundary. When every source has finished, it emits the batch holding their last records at the
//! next boundary and stops; the [`scheduler`] then runs what is queued and returns.

pub mod scheduler;

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::block::Block;
use crate::receiver::Receiver;

/// One batch: the blocks of every source from one batch interval.
#[derive(Debug)]
pub struct Batch {
    /// The batch time: the end of its interval, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Its blocks (partitions), in cut order.
    pub blocks: Vec<Block>,
    /// No batch follows: every source has finished (or the pipeline is stopping).
    pub last: bool,
}

/// Wall-clock now in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Cuts blocks and emits batches until every receiver has finished (or the scheduler is gone).
pub async fn generate(
    receivers: Vec<Arc<Receiver>>,
    block_interval: Duration,
    batch_interval: Duration,
    batches: Sender<Batch>,
) {
    let block_ms = (block_interval.as_millis() as u64).max(1);
    let batch_ms = (batch_interval.as_millis() as u64).max(block_ms);
    let mut pending: Vec<Block> = Vec::new();
    let mut seq = 0u64;
    let mut ending = false;
    loop {
        let now = now_ms();
        let tick = (now / block_ms + 1) * block_ms;
        tokio::time::sleep(Duration::from_millis(tick - now)).await;
        // Read the flags before cutting: a receiver finished before the cut has all of its
        // records in this cut.
        ending |= receivers.iter().all(|r| r.is_finished());
        pending.extend(receivers.iter().flat_map(|r| r.cut(seq)));
        seq += 1;
        if tick.is_multiple_of(batch_ms) {
            let batch = Batch { time_ms: tick, blocks: std::mem::take(&mut pending), last: ending };
            if batches.send(batch).is_err() || ending {
                return;
            }
        }
    }
}
