//! The checkpoint store: what every member of a cluster reads and writes about a partition, in
//! a shared directory (`file:///shared/dir`) or an S3 bucket (`s3://bucket/prefix`), through
//! the `object_store` crate.
//!
//! Per partition, under `<root>/<pipeline>/partitions/<topic>/<partition>/`:
//!
//! - `log/<seq>`: entry `seq` of the partition's batch log, `{batch, from, until, member}` —
//!   the offsets `[from, until)` batch `batch` takes. Entries are **created, never
//!   overwritten** (`PutMode::Create`: a hard link on a directory, `If-None-Match: *` on S3):
//!   two members that both think they own a partition cannot both write entry `seq`; the one
//!   refused is fenced and takes the winner's entry as its own.
//! - `done/<seq>`: entry `seq`'s output is committed (its sinks committed). Everything up to
//!   the highest done entry is final; a member that gains the partition replays the entries
//!   after it, with their own batch times, and reads on from the last entry's `until`.
//!
//! - `state/<seq>` (a repartition partition's only): the keyed stage's state after entry `seq`,
//!   written once the entry's output committed and before `done/<seq>`; a member that gains the
//!   partition starts from the newest state there (none: empty) and skips the entries at or
//!   before it (a zombie may have moved it past the done entry the gainer read).
//!
//! Beside the partitions, `shuffle/<topic>.start` (a cluster with a keyed stage): where each
//! repartition partition without a log starts, written once by the Kafka source of the first
//! member.
//!
//! Entries and done markers older than the last done one are deleted once it is written (and
//! states older than the newest one at or before it). A
//! member far behind (a zombie back after a long pause) could then create an old `seq` again;
//! an append that finds a done marker at or past its `seq` takes its entry back and reports
//! [`Appended::Behind`], so loaders (which read from the last done entry on) never see it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store this engine reads.
    #[error("{0}")]
    Url(String),
    /// A request failed.
    #[error("checkpoint store {at}: {source}")]
    Request {
        /// The object or prefix.
        at: String,
        /// Why.
        source: object_store::Error,
    },
    /// An object holds what no member wrote.
    #[error("checkpoint store {at}: not a batch log entry: {source}")]
    Corrupt {
        /// The object.
        at: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// One entry of a partition's batch log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The entry's number in the partition's log.
    #[serde(skip)]
    pub(crate) seq: u64,
    /// The batch time, ms.
    pub(crate) batch: u64,
    /// First offset.
    pub(crate) from: i64,
    /// One past the last offset.
    pub(crate) until: i64,
    /// The member that wrote it.
    pub(crate) member: String,
    /// A repartition partition's: per origin, the last record taken once this entry's are
    /// (`sources/kafka/shuffled.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) shuffled: Shuffled,
    /// The same table before this entry (the entry before's), filled in when the log is read.
    #[serde(skip)]
    pub(crate) shuffled_before: Shuffled,
}

/// Per origin task, the last `(batch, index)` taken from a repartition partition.
pub(crate) type Shuffled = BTreeMap<String, (u64, u64)>;

/// A partition's log as a member finds it when it gains the partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// Entries after the last done one, in order: to replay before reading on.
    pub(crate) pending: Vec<Entry>,
    /// Where reading goes on: the last entry's `until`; None when the log is empty.
    pub(crate) next_offset: Option<i64>,
    /// The number the next entry gets.
    pub(crate) next_seq: u64,
    /// The last entry's batch time.
    pub(crate) last_batch: Option<u64>,
    /// The last done entry's number.
    pub(crate) done: Option<u64>,
    /// The table after the last entry (a repartition partition's; see [`Entry::shuffled`]).
    pub(crate) shuffled: Shuffled,
}

/// What [`CheckpointStore::append`] found.
#[derive(Debug)]
pub(crate) enum Appended {
    /// The entry is written.
    Written,
    /// Another member wrote this entry first: here it is.
    Fenced(Entry),
    /// The log has moved past this entry (it was written, done and deleted since this member
    /// last read the log): nothing is written; read the log again.
    Behind,
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<pipeline>`.
    root: Path,
    /// Requests run here; callers block on a channel (they are plain threads).
    io: tokio::runtime::Handle,
    /// Keeps `io` alive.
    _runtime: Arc<tokio::runtime::Runtime>,
    /// As written in the pipeline file, for messages.
    url: String,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore").field("url", &self.url).field("root", &self.root).finish_non_exhaustive()
    }
}

/// The store and prefix a `checkpoint_store` URL names, or what is wrong with it.
pub(crate) fn parse(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), StoreError> {
    let parsed = url::Url::parse(url).map_err(|err| StoreError::Url(format!("not a URL ({err})")))?;
    match parsed.scheme() {
        "file" => {
            let dir =
                parsed.to_file_path().map_err(|()| StoreError::Url("expected file:///absolute/directory".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|err| StoreError::Url(format!("cannot create directory {}: {err}", dir.display())))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|source| StoreError::Request { at: url.to_string(), source })?;
            Ok((Arc::new(local), Path::default()))
        }
        "s3" => {
            let bucket = parsed.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(StoreError::Url("expected s3://bucket/prefix".into()));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT"));
            if endpoint.is_ok_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            let s3 = builder.build().map_err(|source| StoreError::Request { at: url.to_string(), source })?;
            Ok((Arc::new(s3), Path::from(parsed.path().trim_matches('/'))))
        }
        other => Err(StoreError::Url(format!(
            "scheme `{other}:` is not a store; expected file:///dir or s3://bucket/prefix"
        ))),
    }
}

impl CheckpointStore {
    /// The store at `url`, for pipeline `pipeline`.
    pub(crate) fn open(url: &str, pipeline: &str) -> Result<Self, StoreError> {
        let (store, prefix) = parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-store")
            .enable_all()
            .build()
            .map_err(|err| StoreError::Url(format!("cannot start the store's I/O thread: {err}")))?;
        Ok(Self {
            store,
            root: prefix.join(pipeline),
            io: runtime.handle().clone(),
            _runtime: Arc::new(runtime),
            url: url.to_string(),
        })
    }

    /// Runs `work` on the store's runtime and waits for it.
    fn block<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.io.spawn(async move {
            let _ = done.send(work.await);
        });
        wait.recv().expect("the store's runtime runs while the store lives")
    }

    fn partition(&self, topic: &str, partition: i32) -> Path {
        self.root.clone().join("partitions").join(topic).join(partition.to_string())
    }

    /// Numbers of the objects under `prefix`, sorted.
    async fn numbers(store: Arc<dyn ObjectStore>, prefix: Path) -> Result<Vec<u64>, StoreError> {
        let mut listing = store.list(Some(&prefix));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|source| StoreError::Request { at: prefix.to_string(), source })?;
            if let Some(seq) = meta.location.filename().and_then(|name| name.parse().ok()) {
                found.push(seq);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Reads a partition's log: what to replay and where to go on.
    pub(crate) fn load(&self, topic: &str, partition: i32) -> Result<Loaded, StoreError> {
        let (store, base) = (self.store.clone(), self.partition(topic, partition));
        self.block(async move {
            let done = Self::numbers(store.clone(), base.clone().join("done")).await?;
            let entries = Self::numbers(store.clone(), base.clone().join("log")).await?;
            let last_done = done.last().copied();
            // Past the last entry and the last done marker (an entry deleted by hand or by a
            // lifecycle rule does not send the log back to 0).
            let next_seq = entries.last().copied().max(last_done).map_or(0, |s| s + 1);
            let mut loaded = Loaded { next_seq, done: last_done, ..Loaded::default() };
            let wanted: Vec<u64> = match (last_done, entries.last()) {
                (_, None) => Vec::new(),
                (Some(d), Some(_)) => entries.iter().copied().filter(|s| *s >= d).collect(),
                (None, Some(_)) => entries.clone(),
            };
            for seq in wanted {
                let mut entry = Self::read(&store, &base, seq).await?;
                loaded.next_offset = Some(entry.until);
                loaded.last_batch = Some(entry.batch);
                entry.shuffled_before = std::mem::replace(&mut loaded.shuffled, entry.shuffled.clone());
                if last_done.is_none_or(|d| seq > d) {
                    loaded.pending.push(entry);
                }
            }
            Ok(loaded)
        })
    }

    async fn read(store: &Arc<dyn ObjectStore>, base: &Path, seq: u64) -> Result<Entry, StoreError> {
        let at = base.clone().join("log").join(format!("{seq:012}"));
        let bytes = store
            .get(&at)
            .await
            .map_err(|source| StoreError::Request { at: at.to_string(), source })?
            .bytes()
            .await
            .map_err(|source| StoreError::Request { at: at.to_string(), source })?;
        let mut entry: Entry =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { at: at.to_string(), source })?;
        entry.seq = seq;
        Ok(entry)
    }

    /// Creates entry `entry.seq` of the partition's log, unless another member did first.
    pub(crate) fn append(&self, topic: &str, partition: i32, entry: &Entry) -> Result<Appended, StoreError> {
        let (store, base) = (self.store.clone(), self.partition(topic, partition));
        let seq = entry.seq;
        let body = serde_json::to_vec(entry).expect("an entry encodes");
        self.block(async move {
            let at = base.clone().join("log").join(format!("{seq:012}"));
            let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match store.put_opts(&at, PutPayload::from(body), create).await {
                Ok(_) => {
                    // Entries below the last done one are deleted, so a member that read the log
                    // long ago could create one again: a done marker at or past `seq` says so.
                    // (It was written before those deletions, so it is seen here.)
                    let done = Self::numbers(store.clone(), base.clone().join("done")).await?;
                    if done.last().is_some_and(|d| *d >= seq) {
                        let _ = store.delete(&at).await;
                        return Ok(Appended::Behind);
                    }
                    Ok(Appended::Written)
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    Self::read(&store, &base, seq).await.map(Appended::Fenced)
                }
                Err(source) => Err(StoreError::Request { at: at.to_string(), source }),
            }
        })
    }

    /// Marks entry `seq` done, and deletes what it makes obsolete.
    pub(crate) fn done(&self, topic: &str, partition: i32, seq: u64) -> Result<(), StoreError> {
        let (store, base) = (self.store.clone(), self.partition(topic, partition));
        self.block(async move {
            let at = base.clone().join("done").join(format!("{seq:012}"));
            let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match store.put_opts(&at, PutPayload::default(), create).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(source) => return Err(StoreError::Request { at: at.to_string(), source }),
            }
            // Older entries and markers are history now; a failed delete is retried next time.
            let states = Self::numbers(store.clone(), base.clone().join("state")).await?;
            // The newest state at or before `seq` stays (none: nothing to delete).
            let kept_state = states.iter().copied().filter(|s| *s <= seq).max();
            for (kind, before) in [("log", Some(seq)), ("done", Some(seq)), ("state", kept_state)] {
                let Some(before) = before else { continue };
                let numbers = if kind == "state" {
                    states.clone()
                } else {
                    Self::numbers(store.clone(), base.clone().join(kind)).await?
                };
                for old in numbers.into_iter().filter(|s| *s < before) {
                    let _ = store.delete(&base.clone().join(kind).join(format!("{old:012}"))).await;
                }
            }
            Ok(())
        })
    }

    /// Writes a repartition partition's keyed state after entry `seq` (before its done marker).
    pub(crate) fn save_state(&self, topic: &str, partition: i32, seq: u64, state: Vec<u8>) -> Result<(), StoreError> {
        let at = self.partition(topic, partition).join("state").join(format!("{seq:012}"));
        let store = self.store.clone();
        self.block(async move {
            store
                .put(&at, PutPayload::from(state))
                .await
                .map(drop)
                .map_err(|source| StoreError::Request { at: at.to_string(), source })
        })
    }

    /// The newest keyed state of a repartition partition, with its entry's number; None if there
    /// is none (the state starts empty).
    pub(crate) fn load_state(&self, topic: &str, partition: i32) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (store, base) = (self.store.clone(), self.partition(topic, partition).join("state"));
        self.block(async move {
            let newest = Self::numbers(store.clone(), base.clone()).await?.into_iter().max();
            let Some(seq) = newest else { return Ok(None) };
            let at = base.join(format!("{seq:012}"));
            let fail = |source| StoreError::Request { at: at.to_string(), source };
            let bytes = store.get(&at).await.map_err(fail)?.bytes().await.map_err(fail)?;
            Ok(Some((seq, bytes.to_vec())))
        })
    }

    /// The URL as written.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `key` (`/`-separated, under the pipeline's root) as a store path.
    fn at(&self, key: &str) -> Path {
        key.split('/').filter(|part| !part.is_empty()).fold(self.root.clone(), |path, part| path.join(part))
    }

    /// Creates object `key` with `body` unless it exists: false if it did (nothing written).
    pub(crate) fn create(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError> {
        let (store, at) = (self.store.clone(), self.at(key));
        self.block(async move {
            let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match store.put_opts(&at, PutPayload::from(body), create).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(source) => Err(StoreError::Request { at: at.to_string(), source }),
            }
        })
    }

    /// Writes object `key`, replacing what was there.
    pub(crate) fn replace(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let (store, at) = (self.store.clone(), self.at(key));
        self.block(async move {
            store
                .put(&at, PutPayload::from(body))
                .await
                .map(drop)
                .map_err(|source| StoreError::Request { at: at.to_string(), source })
        })
    }

    /// Object `key`'s content; None if there is none.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (store, at) = (self.store.clone(), self.at(key));
        self.block(async move {
            let fail = |source| StoreError::Request { at: at.to_string(), source };
            match store.get(&at).await {
                Ok(found) => Ok(Some(found.bytes().await.map_err(fail)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(source) => Err(fail(source)),
            }
        })
    }

    /// The names of the objects directly under `prefix` (not in its sub-folders).
    pub(crate) fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (store, at) = (self.store.clone(), self.at(prefix));
        self.block(async move {
            let listing = match store.list_with_delimiter(Some(&at)).await {
                Ok(listing) => listing,
                Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(source) => return Err(StoreError::Request { at: at.to_string(), source }),
            };
            Ok(listing.objects.into_iter().filter_map(|meta| Some(meta.location.filename()?.to_string())).collect())
        })
    }

    /// Deletes object `key` (one already gone is not an error).
    pub(crate) fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (store, at) = (self.store.clone(), self.at(key));
        self.block(async move {
            match store.delete(&at).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(StoreError::Request { at: at.to_string(), source }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, batch: u64, from: i64, until: i64, member: &str) -> Entry {
        Entry {
            seq,
            batch,
            from,
            until,
            member: member.into(),
            shuffled: Shuffled::new(),
            shuffled_before: Shuffled::new(),
        }
    }

    #[test]
    fn a_repartition_partition_keeps_its_tables_and_its_newest_state() {
        let (_dir, store) = store();
        let table = |n: u64| Shuffled::from([("src-0".to_string(), (n * 1000, n))]);
        for seq in 0..4u64 {
            let mut e = entry(seq, 1000 * (seq + 1), seq as i64 * 10, seq as i64 * 10 + 10, "a");
            e.shuffled = table(seq);
            store.append("t", 0, &e).unwrap();
        }
        assert_eq!(store.load_state("t", 0).unwrap(), None, "no state yet: start empty");
        store.save_state("t", 0, 1, b"after 1".to_vec()).unwrap();
        store.done("t", 0, 1).unwrap();
        store.save_state("t", 0, 3, b"after 3, not done".to_vec()).unwrap();
        let loaded = store.load("t", 0).unwrap();
        assert_eq!(loaded.done, Some(1));
        let pending: Vec<(u64, Shuffled)> = loaded.pending.iter().map(|e| (e.seq, e.shuffled_before.clone())).collect();
        assert_eq!(pending, [(2, table(1)), (3, table(2))], "each replay starts from the entry before's table");
        assert_eq!(loaded.shuffled, table(3));
        // The newest, though not done: its output committed before it was written.
        assert_eq!(store.load_state("t", 0).unwrap(), Some((3, b"after 3, not done".to_vec())));
        store.done("t", 0, 3).unwrap();
        assert_eq!(store.load_state("t", 0).unwrap(), Some((3, b"after 3, not done".to_vec())));
        assert!(!_dir.path().join("p/partitions/t/0/state/000000000001").exists(), "older states are deleted");
    }

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap().to_string();
        let store = CheckpointStore::open(&url, "p").unwrap();
        (dir, store)
    }

    #[test]
    fn an_empty_log_starts_nowhere() {
        let (_dir, store) = store();
        assert_eq!(store.load("t", 0).unwrap(), Loaded::default());
    }

    #[test]
    fn entries_after_the_last_done_one_are_pending() {
        let (_dir, store) = store();
        for (seq, (from, until)) in [(0, 10), (10, 25), (25, 30)].into_iter().enumerate() {
            let written = store.append("t", 3, &entry(seq as u64, 1000 * (seq as u64 + 1), from, until, "a")).unwrap();
            assert!(matches!(written, Appended::Written));
        }
        store.done("t", 3, 0).unwrap();
        let loaded = store.load("t", 3).unwrap();
        assert_eq!(loaded.next_seq, 3);
        assert_eq!(loaded.next_offset, Some(30));
        assert_eq!(loaded.last_batch, Some(3000));
        assert_eq!(loaded.pending, vec![entry(1, 2000, 10, 25, "a"), entry(2, 3000, 25, 30, "a")]);
        store.done("t", 3, 2).unwrap();
        let loaded = store.load("t", 3).unwrap();
        assert_eq!((loaded.pending.len(), loaded.next_offset, loaded.next_seq), (0, Some(30), 3));
        // Other partitions are their own logs.
        assert_eq!(store.load("t", 4).unwrap(), Loaded::default());
    }

    #[test]
    fn a_second_writer_of_an_entry_is_fenced_and_gets_the_first() {
        let (_dir, store) = store();
        let first = entry(0, 1000, 0, 10, "a");
        assert!(matches!(store.append("t", 0, &first).unwrap(), Appended::Written));
        match store.append("t", 0, &entry(0, 2000, 0, 12, "b")).unwrap() {
            Appended::Fenced(found) => assert_eq!(found, first),
            other => panic!("the second writer was not fenced: {other:?}"),
        }
    }

    #[test]
    fn a_writer_behind_the_last_done_entry_writes_nothing() {
        let (_dir, store) = store();
        for seq in 0..3 {
            store.append("t", 0, &entry(seq, 1000 * (seq + 1), seq as i64 * 10, seq as i64 * 10 + 10, "a")).unwrap();
        }
        store.done("t", 0, 2).unwrap(); // entries 0 and 1 are deleted
        assert!(matches!(store.append("t", 0, &entry(1, 9000, 10, 50, "zombie")).unwrap(), Appended::Behind));
        let loaded = store.load("t", 0).unwrap();
        assert_eq!((loaded.next_seq, loaded.next_offset, loaded.pending.len()), (3, Some(30), 0));
        // The last entry removed by hand: the log still goes on after the last done marker.
        std::fs::remove_file(_dir.path().join("p/partitions/t/0/log/000000000002")).unwrap();
        assert_eq!(store.load("t", 0).unwrap().next_seq, 3);
    }

    #[test]
    fn urls_that_name_no_store_are_refused() {
        for url in ["http://example.com/x", "s3:///prefix", "not a url"] {
            assert!(parse(url).is_err(), "{url}");
        }
    }
}
