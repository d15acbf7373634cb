//! One shard's reader: a task that gets a shard iterator and calls `GetRecords` — at once while
//! the shard is behind, every `poll_interval` once it has caught up — into the shard's buffer,
//! until the shard is read to its end or the pipeline stops. It stops fetching while the buffer
//! is full (the cuts take it at the batch's rate). Throttling and errors back off (doubling,
//! 200 ms to 10 s) and show on the receiver row; an expired iterator is replaced by one at the
//! same place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::DateTime;

use super::client::{Failure, RETRY_MAX, RETRY_MIN};
use super::shards::{Fetched, Phase, Shared, StartAt};
use crate::receiver::Receiver;

/// A shard's buffer holds at most this many records, or bytes, before its reader waits.
const BUFFER_RECORDS: usize = 50_000;
const BUFFER_BYTES: usize = 32 << 20;

/// What every reader of a source uses.
#[derive(Clone, Debug)]
pub(super) struct Reader {
    pub(super) client: aws_sdk_kinesis::Client,
    pub(super) stream: String,
    pub(super) poll: Duration,
    pub(super) limit: i32,
    pub(super) receiver: Arc<Receiver>,
}

impl Reader {
    /// A shard iterator at `start`.
    pub(super) async fn iterator(&self, shard: &str, start: &StartAt) -> Result<Option<String>, Failure> {
        let (kind, sequence, ms) = start.iterator();
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_starting_sequence_number(sequence.map(String::from))
            .set_timestamp(ms.map(DateTime::from_millis));
        let out = request.send().await.map_err(|err| Failure::of(&err))?;
        Ok(out.shard_iterator)
    }

    /// One `GetRecords` call: the records, the next iterator (`None`: the shard's end), and
    /// how far behind the shard's latest record they are.
    pub(super) async fn records(&self, iterator: &str) -> Result<(Vec<Fetched>, Option<String>, Option<i64>), Failure> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(self.limit)
            .send()
            .await
            .map_err(|err| Failure::of(&err))?;
        let records = out
            .records
            .into_iter()
            .map(|r| Fetched {
                arrival_ms: r.approximate_arrival_timestamp.and_then(|t| t.to_millis().ok()),
                sequence: r.sequence_number,
                partition_key: r.partition_key.unwrap_or_default(),
                data: r.data.into_inner(),
            })
            .collect();
        Ok((records, out.next_shard_iterator, out.millis_behind_latest))
    }
}

/// Reads `shard` from `start` into its buffer in `shared`; see the module docs.
pub(super) async fn read(
    reader: Reader,
    shard: String,
    start: StartAt,
    shared: Arc<Mutex<Shared>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut from = start;
    let mut iterator: Option<String> = None;
    let mut delay = RETRY_MIN;
    let mut reported = false;
    while !*stop.borrow() {
        if full(&shared, &shard) {
            pause(reader.poll, &mut stop).await;
            continue;
        }
        let current = match iterator.take() {
            Some(current) => current,
            None => match reader.iterator(&shard, &from).await {
                Ok(Some(current)) => current,
                Ok(None) => return fetched(&reader, &shared, &shard),
                Err(failure) => {
                    failed(&reader, &shared, &shard, &failure, &mut delay, &mut reported, &mut stop).await;
                    continue;
                }
            },
        };
        match reader.records(&current).await {
            Ok((records, next, behind)) => {
                delay = RETRY_MIN;
                if reported {
                    reader.receiver.clear_error();
                    reported = false;
                }
                let caught_up = records.len() < reader.limit as usize;
                if let Some(last) = records.last() {
                    from = StartAt::After(last.sequence.clone());
                }
                take_in(&shared, &shard, records, behind);
                let Some(next) = next else { return fetched(&reader, &shared, &shard) };
                iterator = Some(next);
                if caught_up {
                    pause(reader.poll, &mut stop).await;
                }
            }
            // A new iterator at the same place, at once.
            Err(Failure::Expired(text)) => {
                tracing::info!(source = %reader.receiver.name, shard = %shard, "shard iterator expired ({text}); getting a new one");
            }
            Err(failure) => failed(&reader, &shared, &shard, &failure, &mut delay, &mut reported, &mut stop).await,
        }
    }
}

/// Whether the shard's buffer is full.
fn full(shared: &Mutex<Shared>, shard: &str) -> bool {
    let shared = shared.lock().expect("kinesis lock");
    shared.shards.get(shard).is_some_and(|s| s.buffer.len() >= BUFFER_RECORDS || s.buffered_bytes >= BUFFER_BYTES)
}

/// Adds fetched records to the shard's buffer.
fn take_in(shared: &Mutex<Shared>, shard: &str, records: Vec<Fetched>, behind: Option<i64>) {
    let mut shared = shared.lock().expect("kinesis lock");
    let Some(state) = shared.shards.get_mut(shard) else { return };
    state.buffered_bytes += records.iter().map(|r| r.data.len()).sum::<usize>();
    state.buffer.extend(records);
    state.millis_behind = behind.or(state.millis_behind);
}

/// The shard is read to its end: the cuts take what is left, then its children may start.
fn fetched(reader: &Reader, shared: &Mutex<Shared>, shard: &str) {
    tracing::info!(source = %reader.receiver.name, shard = %shard, "shard read to its end (closed by a reshard)");
    if let Some(state) = shared.lock().expect("kinesis lock").shards.get_mut(shard) {
        state.phase = Phase::Fetched;
        state.millis_behind = Some(0);
    }
}

/// Reports a failed call and waits its back-off.
async fn failed(
    reader: &Reader,
    shared: &Mutex<Shared>,
    shard: &str,
    failure: &Failure,
    delay: &mut Duration,
    reported: &mut bool,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let what = match failure {
        Failure::Throttled(_) => "throttled",
        _ => "cannot read",
    };
    let problem = format!("shard {shard}: {what}: {}; retrying in {delay:?}", failure.describe());
    tracing::warn!(source = %reader.receiver.name, "{problem}");
    reader.receiver.set_error(problem);
    *reported = true;
    if let Some(state) = shared.lock().expect("kinesis lock").shards.get_mut(shard) {
        state.retries += 1;
    }
    pause(*delay, stop).await;
    *delay = (*delay * 2).min(RETRY_MAX);
}

/// Waits `wait`, or until the pipeline stops.
async fn pause(wait: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        Ok(()) = stop.changed() => {}
    }
}
