//! The shards of a Kinesis source and the order they are read in: a task lists the stream's
//! shards every `discovery_interval` (with back-off while the stream cannot be listed, reported
//! on the receiver row) and starts a reader for every shard whose parents have ended — read to
//! their end and taken by a batch — so a partition key's records stay in order across a
//! reshard. The cut wakes it when a shard ends, so children start without waiting a whole
//! interval.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;

use super::InitialPosition;
use super::client::{Failure, RETRY_MAX, RETRY_MIN};
use super::reader::{self, Reader};
use crate::receiver::Receiver;

/// One record a reader fetched, waiting for a cut.
#[derive(Debug)]
pub(super) struct Fetched {
    pub(super) sequence: String,
    pub(super) partition_key: String,
    pub(super) arrival_ms: Option<i64>,
    pub(super) data: Vec<u8>,
}

/// Where a shard is in its life, as this source reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not read yet: a parent has not ended.
    Waiting,
    /// A reader fetches it.
    Reading,
    /// The reader reached its end (a closed shard); the cuts take what is left.
    Fetched,
    /// Every record taken by a batch.
    Ended,
}

impl Phase {
    /// For the receiver row.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting for its parent",
            Self::Reading => "reading",
            Self::Fetched => "read to its end",
            Self::Ended => "ended",
        }
    }
}

/// One shard.
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) parents: Vec<String>,
    pub(super) phase: Phase,
    /// Fetched and not yet cut.
    pub(super) buffer: VecDeque<Fetched>,
    pub(super) buffered_bytes: usize,
    pub(super) millis_behind: Option<i64>,
    /// Calls retried after throttling or errors.
    pub(super) retries: u64,
}

/// What the discovery task, the readers and the cuts share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) shards: BTreeMap<String, Shard>,
    /// The last sequence number taken per shard when the source started (from its position).
    pub(super) resume_after: BTreeMap<String, String>,
    pub(super) initial: InitialPosition,
    /// When the source first started (ms since the epoch), and whether this is that start.
    pub(super) started_ms: i64,
    pub(super) first_start: bool,
}

/// The discovery task's settings.
#[derive(Debug)]
pub(super) struct Discovery {
    pub(super) client: aws_sdk_kinesis::Client,
    pub(super) stream: String,
    pub(super) interval: Duration,
    pub(super) reader: Reader,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) receiver: Arc<Receiver>,
    /// The cut says a shard ended.
    pub(super) wake: Arc<tokio::sync::Notify>,
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
}

/// A shard as the listing shows it.
struct Listed {
    id: String,
    parents: Vec<String>,
}

impl Discovery {
    /// Lists and starts readers until the pipeline stops.
    pub(super) async fn run(mut self) {
        let mut delay = RETRY_MIN;
        while !*self.stop.borrow() {
            let wait = match self.list().await {
                Ok(listed) => {
                    self.receiver.clear_error();
                    delay = RETRY_MIN;
                    self.take_in(listed);
                    self.interval
                }
                Err(failure) => {
                    let problem = format!(
                        "cannot list the shards of stream `{}`: {}; retrying in {delay:?}",
                        self.stream,
                        failure.describe()
                    );
                    tracing::warn!(source = %self.receiver.name, "{problem}");
                    self.receiver.set_error(problem);
                    let wait = delay;
                    delay = (delay * 2).min(RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => self.start_ready(),
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    /// Every shard of the stream (paged).
    async fn list(&self) -> Result<Vec<Listed>, Failure> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let page = request.send().await.map_err(|err| Failure::of(&err))?;
            for shard in page.shards() {
                let parents =
                    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()].into_iter().flatten().map(String::from);
                listed.push(Listed { id: shard.shard_id().to_string(), parents: parents.collect() });
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_string()),
                None => return Ok(listed),
            }
        }
    }

    /// Adds the shards not known yet, then starts what can start.
    fn take_in(&self, listed: Vec<Listed>) {
        {
            let mut shared = self.shared.lock().expect("kinesis lock");
            for shard in listed {
                shared.shards.entry(shard.id).or_insert_with(|| Shard {
                    parents: shard.parents,
                    phase: Phase::Waiting,
                    buffer: VecDeque::new(),
                    buffered_bytes: 0,
                    millis_behind: None,
                    retries: 0,
                });
            }
        }
        self.start_ready();
    }

    /// Starts a reader for every waiting shard whose parents have all ended (or are no longer
    /// listed: past the stream's retention).
    fn start_ready(&self) {
        let mut shared = self.shared.lock().expect("kinesis lock");
        let ready: Vec<String> = shared
            .shards
            .iter()
            .filter(|(_, shard)| shard.phase == Phase::Waiting)
            .filter(|(_, shard)| {
                shard.parents.iter().all(|p| shared.shards.get(p).is_none_or(|parent| parent.phase == Phase::Ended))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            let start = start_of(&shared, &id);
            shared.shards.get_mut(&id).expect("listed").phase = Phase::Reading;
            tracing::info!(source = %self.receiver.name, shard = %id, "reading shard from {}", start.describe());
            tokio::spawn(reader::read(self.reader.clone(), id, start, self.shared.clone(), self.stop.clone()));
        }
    }
}

/// Where a reader starts a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StartAt {
    /// After the last sequence number taken.
    After(String),
    /// At this sequence number (a replay).
    At(String),
    /// The shard's oldest record.
    TrimHorizon,
    /// Records written from now.
    Latest,
    /// Records that arrived at or after this time, ms since the epoch.
    Timestamp(i64),
}

impl StartAt {
    /// The `GetShardIterator` arguments: type, sequence number, time (ms).
    pub(super) fn iterator(&self) -> (ShardIteratorType, Option<&str>, Option<i64>) {
        match self {
            Self::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq), None),
            Self::At(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq), None),
            Self::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
            Self::Latest => (ShardIteratorType::Latest, None, None),
            Self::Timestamp(ms) => (ShardIteratorType::AtTimestamp, None, Some(*ms)),
        }
    }

    /// For the log.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::After(seq) => format!("after sequence number {seq}"),
            Self::At(seq) => format!("sequence number {seq}"),
            Self::TrimHorizon => "its oldest record".into(),
            Self::Latest => "its latest record".into(),
            Self::Timestamp(ms) => format!("records since {ms} ms"),
        }
    }
}

/// Where shard `id` starts: after what the source took of it; else where `initial_position`
/// says — except that a child of a shard this source knows starts at its beginning under
/// `trim_horizon` and `latest` (all of it is newer than its parent, which was read), and
/// `latest` after a restart starts at the first start's time (nothing written while the
/// pipeline was down is skipped).
fn start_of(shared: &Shared, id: &str) -> StartAt {
    if let Some(after) = shared.resume_after.get(id) {
        return StartAt::After(after.clone());
    }
    let child = shared.shards[id].parents.iter().any(|p| shared.shards.contains_key(p));
    match shared.initial {
        InitialPosition::AtTimestamp(ms) => StartAt::Timestamp(ms),
        InitialPosition::TrimHorizon => StartAt::TrimHorizon,
        InitialPosition::Latest if child => StartAt::TrimHorizon,
        InitialPosition::Latest if shared.first_start => StartAt::Latest,
        InitialPosition::Latest => StartAt::Timestamp(shared.started_ms),
    }
}

/// The shards a set of positions says have ended, as phases for a fresh table.
pub(super) fn ended_shards(ended: &BTreeSet<String>) -> BTreeMap<String, Shard> {
    ended
        .iter()
        .map(|id| {
            let shard = Shard {
                parents: Vec::new(),
                phase: Phase::Ended,
                buffer: VecDeque::new(),
                buffered_bytes: 0,
                millis_behind: None,
                retries: 0,
            };
            (id.clone(), shard)
        })
        .collect()
}
