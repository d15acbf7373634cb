//! The file sink: one file per batch that has output, `<path>/batch-<batch time in ms>.jsonl`
//! (in a cluster one per batch and source partition, `batch-<ms>-<topic>-<partition>.jsonl`),
//! one JSON value per line. `write` fills and syncs a temporary file; `commit` renames it into
//! place and syncs the directory, so a reader never sees half a batch. Idempotent: a replayed
//! batch rewrites the same file with the same records.
//!
//! Lineage: beside each batch file, `<path>/.lineage/<the batch file's stem>.json` names the
//! plugin versions that computed it (`{"batch": ms, "task": ..., "versions": {"plugin":
//! "short hash"}}`), written and synced (temporary file, rename, directory) before the batch
//! file is renamed into place, so a batch file never lacks its lineage, power loss included.
//!
//! `sluice check` makes sure the directory can be created and written
//! ([`FileSinkConfig::check_writable`]); a run finds out at its first batch with output (then the
//! pipeline stops without checkpointing the batch, so a restart with checkpoints replays it).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_sdk::TypeDesc;

use super::{BatchRef, Sink, SinkError};
use crate::block::{Partition, records};
use crate::codec::render;
use crate::fields::WritableError;

/// `type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Unique name.
    pub name: String,
    /// The stream to write (none for a stage's dead-letter sink).
    pub input: Option<String>,
    /// Directory for the batch files (created if missing), relative to the pipeline file;
    /// `sluice check` makes sure it can be created and written.
    pub path: PathBuf,
}

impl FileSinkConfig {
    /// Whether the sink can write its batch files into `resolved` (its `path`, resolved): the
    /// directory exists or can be created, and files can be created in it. Made directories and
    /// the probe file are removed again. Else what stands in the way, naming the path.
    pub fn check_writable(&self, resolved: &Path) -> Result<(), NotWritable> {
        crate::fields::writable_dir(resolved).map_err(|problem| NotWritable { sink: self.name.clone(), problem })
    }

    /// The sink, writing into `dir` (the resolved `path`).
    pub fn build(&self, dir: PathBuf) -> FileSink {
        FileSink { dir, staged: None }
    }
}

/// The directory of a file sink cannot be written (what `sluice check` reports).
#[derive(Debug, thiserror::Error)]
#[error("{problem}; expected a directory sink `{sink}` can create and write its batch files in")]
pub struct NotWritable {
    /// The sink's name.
    sink: String,
    /// What stands in the way.
    #[source]
    problem: WritableError,
}

/// See the module docs.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    /// The batch (file name stem) written and not yet committed, staged in its temporary file.
    staged: Option<String>,
}

impl FileSink {
    /// `batch-<ms>`, or `batch-<ms>-<task>` for a cluster's task.
    fn stem(batch: BatchRef<'_>) -> String {
        match batch.task {
            None => format!("batch-{}", batch.time_ms),
            Some(task) => format!("batch-{}-{task}", batch.time_ms),
        }
    }

    fn target(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.jsonl"))
    }

    /// A name of this process's own: in a cluster, a zombie and the partition's new owner may
    /// write the same batch at once (into a shared directory, from containers that are all
    /// pid 1), each into a file of its own; the renames replace each other with the same records.
    fn temporary(&self, stem: &str) -> PathBuf {
        self.dir.join(format!(".{stem}.jsonl.{}.tmp", writer_id()))
    }
}

impl Sink for FileSink {
    fn open(&mut self) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| SinkError::Io { path: self.dir.display().to_string(), source })
    }

    /// Writes the batch's records, if any, to a synced temporary file.
    fn write(&mut self, batch: BatchRef<'_>, ty: &TypeDesc, partitions: &[Partition]) -> Result<u64, SinkError> {
        self.staged = None;
        let total: u64 = partitions.iter().map(|p| p.records).sum();
        if total == 0 {
            return Ok(0);
        }
        let stem = Self::stem(batch);
        let tmp = self.temporary(&stem);
        let io = |source| SinkError::Io { path: tmp.display().to_string(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
        let mut line = String::new();
        for record in records(partitions) {
            line.clear();
            render(ty, record, &mut line);
            line.push('\n');
            file.write_all(line.as_bytes()).map_err(io)?;
        }
        let file = file.into_inner().map_err(|err| io(err.into_error()))?;
        file.sync_data().map_err(io)?;
        self.staged = Some(stem);
        Ok(total)
    }

    /// Renames the staged file to `batch-<ms>.jsonl` and syncs the directory.
    fn commit(&mut self, batch: BatchRef<'_>) -> Result<(), SinkError> {
        let stem = Self::stem(batch);
        if self.staged.as_ref() != Some(&stem) {
            return Ok(()); // nothing to write for this batch
        }
        self.write_lineage(batch, &stem)?;
        let target = self.target(&stem);
        let io = |source| SinkError::Io { path: target.display().to_string(), source };
        std::fs::rename(self.temporary(&stem), &target).map_err(io)?;
        // The rename itself survives a power loss only once the directory is synced.
        std::fs::File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(io)?;
        self.staged = None;
        Ok(())
    }
}

impl FileSink {
    /// `.lineage/<stem>.json`: the versions that computed batch file `<stem>.jsonl`.
    fn write_lineage(&self, batch: BatchRef<'_>, stem: &str) -> Result<(), SinkError> {
        let dir = self.dir.join(LINEAGE_DIR);
        let target = dir.join(format!("{stem}.json"));
        let io = |source| SinkError::Io { path: target.display().to_string(), source };
        let versions: serde_json::Map<String, serde_json::Value> = batch
            .versions
            .iter()
            .filter_map(|v| v.split_once('@'))
            .map(|(plugin, hash)| (plugin.to_string(), serde_json::Value::from(hash)))
            .collect();
        let text = serde_json::json!({ "batch": batch.time_ms, "task": batch.task, "versions": versions }).to_string();
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{stem}.{}.tmp", writer_id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(io)?;
        std::fs::rename(&tmp, &target).map_err(io)?;
        // Synced before the batch file's rename: a batch file that survives a power loss has
        // its lineage.
        std::fs::File::open(&dir).and_then(|dir| dir.sync_all()).map_err(io)
    }
}

/// Where a file sink keeps each batch file's lineage, in its directory.
pub(crate) const LINEAGE_DIR: &str = ".lineage";

/// This process's writer id: its pid and the time it first wrote, ns (unique across the hosts
/// and containers of one cluster in practice).
fn writer_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos:x}", std::process::id())
    })
}
