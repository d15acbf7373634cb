//! The directory source, like Spark's `textFileStream`: every new file that appears in `path`
//! is read once, as lines. At each batch boundary (the cut that closes a batch) it lists the
//! directory, logs the names of the files not taken before as that batch's record (with
//! checkpoints), and reads them into the batch's blocks. The checkpoint keeps the set of files
//! taken; after a crash a logged batch reads the same files again: replayable, and with the
//! file sink exactly once.
//!
//! - While more than one batch waits to run, no new files are taken: the directory is the
//!   backlog. A paused source takes none either.
//!
//! - Put files in place atomically (write elsewhere, then `mv`) and do not change them after:
//!   a file is taken at the boundary that first sees it and read when its batch runs (and again
//!   if that batch is replayed after a crash).
//! - Names starting with `.` or ending in `.tmp` or `._COPYING_` are in-flight and skipped.
//! - Files are taken in name order; sub-directories are ignored. A file is known by its name: a
//!   new file reusing the name of one already taken is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{Cut, Position, Source, SourceContext, StartError};
use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::receiver::{LineFramer, MAX_BLOCK_BYTES, PendingBlock, Receiver};

/// `type = "directory"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// The directory to watch, relative to the pipeline file.
    pub path: PathBuf,
}

impl DirectorySourceConfig {
    /// The source, reading `dir` (the resolved `path`).
    pub fn build(&self, dir: PathBuf) -> DirectorySource {
        DirectorySource {
            dir,
            started: None,
            taken: BTreeSet::new(),
            completed: BTreeSet::new(),
            by_batch: BTreeMap::new(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    /// Set by `start`.
    started: Option<Started>,
    /// Every file taken, by any batch so far (checkpointed, logged or cut).
    taken: BTreeSet<String>,
    /// The files of the batches through the last commit.
    completed: BTreeSet<String>,
    /// The files of each batch after the last commit.
    by_batch: BTreeMap<u64, Vec<String>>,
}

#[derive(Debug)]
struct Started {
    receiver: Arc<Receiver>,
    /// With checkpoints: where each batch's files are logged before they are read.
    log: Option<BatchLog>,
    backlog: crate::block::Backlog,
}

/// A batch's record: the names it took, one per line.
fn record(files: &[String]) -> Vec<u8> {
    files.iter().flat_map(|f| [f.as_bytes(), b"\n"]).flatten().copied().collect()
}

fn names(record: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(record).lines().map(str::to_string).collect()
}

impl DirectorySource {
    /// The new files of the batch this cut closes, logged before they are read.
    fn take(&mut self, cut: Cut) -> Vec<String> {
        let Some(Started { receiver, log, backlog }) = &self.started else { return Vec::new() };
        if receiver.is_paused() || backlog.waiting() > 1 {
            return Vec::new();
        }
        let files = match new_files(&self.dir, &self.taken) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(source = %receiver.name, "cannot list {}: {err}", self.dir.display());
                receiver.set_error(format!("cannot list {}: {err}", self.dir.display()));
                return Vec::new();
            }
        };
        receiver.clear_error();
        if files.is_empty() {
            return files;
        }
        if let Some(log) = log
            && let Err(err) = log.write_record(cut.batch, receiver.source, &record(&files))
        {
            tracing::error!(source = %receiver.name, "cannot log the files of batch {}: {err}; they wait", cut.batch);
            receiver.set_error(format!("checkpoint: {err}"));
            return Vec::new();
        }
        self.taken.extend(files.iter().cloned());
        self.by_batch.insert(cut.batch, files.clone());
        files
    }

    /// Reads `files` into blocks, counting them on the receiver.
    fn read(&self, seq: u64, files: &[String]) -> Vec<Block> {
        let Some(Started { receiver, .. }) = &self.started else { return Vec::new() };
        let index = receiver.source;
        let mut blocks = Vec::new();
        for name in files {
            let path = self.dir.join(name);
            match read_blocks(index, seq, &path) {
                Ok(read) => {
                    receiver.count(read.iter().map(|b| b.records).sum(), read.iter().map(|b| b.invalid).sum());
                    blocks.extend(read);
                }
                Err(err) => {
                    tracing::error!(file = %path.display(), "cannot read a new file, its lines are missing from the batch: {err}");
                    receiver.set_error(format!("cannot read {}: {err}", path.display()));
                }
            }
        }
        blocks
    }
}

impl Source for DirectorySource {
    fn resume(&mut self, position: Option<Position>, logged: &[(u64, &LoggedInput)]) {
        if let Some(Position::Files(files)) = position {
            self.completed = files;
        }
        self.taken = self.completed.clone();
        for (time, input) in logged {
            let files = input.record.as_deref().map(names).unwrap_or_default();
            self.taken.extend(files.iter().cloned());
            self.by_batch.insert(*time, files);
        }
    }

    fn start(&mut self, context: SourceContext) -> Result<(), StartError> {
        self.started = Some(Started { receiver: context.receiver, log: context.log, backlog: context.backlog });
        Ok(())
    }

    fn finished(&mut self, stopping: bool) -> bool {
        // A directory never ends by itself: only a stop finishes it.
        if stopping && let Some(started) = &self.started {
            started.receiver.finish();
        }
        stopping
    }

    fn cut(&mut self, cut: Cut) -> Vec<Block> {
        if !cut.closes_batch {
            return Vec::new();
        }
        let files = self.take(cut);
        self.read(cut.batch, &files)
    }

    fn position(&self, through: u64) -> Position {
        let mut files = self.completed.clone();
        for (_, batch) in self.by_batch.range(..=through) {
            files.extend(batch.iter().cloned());
        }
        Position::Files(files)
    }

    fn commit(&mut self, through: u64) {
        let later = self.by_batch.split_off(&(through + 1));
        for (_, files) in std::mem::replace(&mut self.by_batch, later) {
            self.completed.extend(files);
        }
    }

    fn replay(&mut self, time: u64, logged: LoggedInput) -> Vec<Block> {
        let files = logged.record.as_deref().map(names).unwrap_or_default();
        self.read(time, &files)
    }
}

/// Whether `name` is a file still being written by its producer.
fn in_flight(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with("._COPYING_")
}

/// Names of the complete files in `dir` not in `taken`, in name order.
pub fn new_files(dir: &Path, taken: &BTreeSet<String>) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !in_flight(&name) && !taken.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads a file's lines into blocks of at most [`MAX_BLOCK_BYTES`] of frames each.
pub fn read_blocks(source: usize, seq: u64, path: &Path) -> std::io::Result<Vec<Block>> {
    let mut file = std::fs::File::open(path)?;
    let mut framer = LineFramer::default();
    let mut chunk = vec![0u8; 1 << 20];
    let mut blocks = Vec::new();
    let mut open = PendingBlock::default();
    let seal = |open: &mut PendingBlock, blocks: &mut Vec<Block>| {
        let done = std::mem::take(open);
        if done.records > 0 || done.invalid > 0 {
            blocks.push(Block {
                source,
                seq,
                records: done.records,
                invalid: done.invalid,
                data: done.data,
                task: None,
            });
        }
    };
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            framer.finish(&mut open);
            seal(&mut open, &mut blocks);
            return Ok(blocks);
        }
        framer.push(&chunk[..n], &mut open);
        if open.data.len() >= MAX_BLOCK_BYTES {
            seal(&mut open, &mut blocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_skips_taken_and_in_flight_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", ".hidden", "c.txt.tmp", "d._COPYING_", "taken.txt"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let taken = BTreeSet::from(["taken.txt".to_string()]);
        assert_eq!(new_files(dir.path(), &taken).unwrap(), ["a.txt", "b.txt"]);
    }

    #[test]
    fn a_big_file_becomes_several_blocks_with_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        let line = "y".repeat(999);
        let lines = 20_000; // ~20 MB: three blocks
        std::fs::write(&path, format!("{line}\n").repeat(lines) + "last line without newline").unwrap();
        let blocks = read_blocks(3, 7, &path).unwrap();
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        assert!(blocks.iter().all(|b| b.source == 3 && b.data.len() <= MAX_BLOCK_BYTES + (1 << 20) + 1100));
        assert_eq!(blocks.iter().map(|b| b.records).sum::<u64>(), lines as u64 + 1);
    }
}
