//! Batches not yet covered by a checkpoint, kept in `<checkpoint_dir>/batches/<batch ms>/`:
//!
//! - `<source>-<cut>-<n>.block`: a block of a source with `wal = true`, written (and synced)
//!   when it is cut, before it counts as received: the write-ahead log. Format: `SLBK`, u32 LE
//!   version 1, u64 LE records, u64 LE invalid lines, then the records as frames.
//! - `<source>.position`: what a replayable source took for the batch (a directory source: the
//!   file names, one per line), in the source's own format, written before the batch runs.
//!   (`<source>.files`, written by earlier versions for directory sources, reads the same.)
//!
//! A source writes here itself, through its [`BatchLog`]: the WAL is a capability of the
//! sources that need it, not a step of the clock. This room sits below `sources/` and
//! `checkpoint/` (which reads the log on resume and forgets what a checkpoint covers) and
//! depends on neither.
//!
//! After the checkpoint of batch T is written, every `batches/<t>` with t <= T is deleted. On
//! start, every remaining directory after the checkpoint's batch is a batch to run again, with
//! its own time, before new batches: the file sink then rewrites the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::io::Write as _;

use crate::block::Block;

const BLOCK_MAGIC: &[u8; 4] = b"SLBK";
const BLOCK_HEADER: usize = 4 + 4 + 8 + 8;

/// A batch found in the checkpoint directory, to run again.
#[derive(Debug, Default)]
pub struct PendingBatch {
    /// Its batch time.
    pub time: u64,
    /// What each source logged for it, by source index.
    pub inputs: BTreeMap<usize, LoggedInput>,
}

/// What one source logged for one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoggedInput {
    /// Write-ahead-logged blocks, in cut order.
    pub blocks: Vec<Block>,
    /// The source's own record of what the batch took.
    pub record: Option<Vec<u8>>,
}

/// The log of batches not yet covered by a checkpoint, in one checkpoint directory. Sources
/// write their blocks (a WAL) or records (a replayable position) here.
#[derive(Clone, Debug)]
pub struct BatchLog {
    root: PathBuf,
}

impl BatchLog {
    /// The log in checkpoint directory `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Logs `block` (of source `block.source`, cut `block.seq`, `n`th of that cut) for batch
    /// `time`, durably.
    pub fn write_block(&self, time: u64, n: usize, block: &Block) -> std::io::Result<()> {
        write_block(&self.root, time, n, block)
    }

    /// Logs, durably, what source `source` took for batch `time`.
    pub fn write_record(&self, time: u64, source: usize, record: &[u8]) -> std::io::Result<()> {
        let dir = create_batch_dir(&self.root, time)?;
        let name = format!("{source}.position");
        write_durably(&dir.join(format!(".{name}.tmp")), &dir.join(name), record)
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn batches(root: &Path) -> PathBuf {
    root.join("batches")
}

fn batch_dir(root: &Path, time: u64) -> PathBuf {
    batches(root).join(time.to_string())
}

/// Creates `batches/<time>` if needed, with the new directory entries synced into their
/// parents, so a power loss cannot keep a file while losing the directory that holds it.
fn create_batch_dir(root: &Path, time: u64) -> std::io::Result<PathBuf> {
    let dir = batch_dir(root, time);
    if !dir.is_dir() {
        let fresh_batches = !batches(root).is_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::File::open(batches(root))?.sync_all()?;
        if fresh_batches {
            std::fs::File::open(root)?.sync_all()?;
        }
    }
    Ok(dir)
}

/// Logs `block` (of source `source`, cut `seq`, `n`th of that cut) for batch `time`, durably.
fn write_block(root: &Path, time: u64, n: usize, block: &Block) -> std::io::Result<()> {
    let dir = create_batch_dir(root, time)?;
    let name = format!("{}-{:012}-{n:04}.block", block.source, block.seq);
    let mut bytes = Vec::with_capacity(BLOCK_HEADER + block.data.len());
    bytes.extend_from_slice(BLOCK_MAGIC);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&block.records.to_le_bytes());
    bytes.extend_from_slice(&block.invalid.to_le_bytes());
    bytes.extend_from_slice(&block.data);
    write_durably(&dir.join(format!(".{name}.tmp")), &dir.join(name), &bytes)
}

/// Writes `bytes` to `tmp`, syncs it, renames it to `target` and syncs the directory: after
/// this returns, `target` holds `bytes` whatever happens to the process or the machine.
pub fn write_durably(tmp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, target)?;
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A batch log that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum BatchLogError {
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A logged file is damaged.
    #[error("{} is corrupted ({reason})", path.display())]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Deletes the pending batches up to and including `time`.
pub fn forget_through(root: &Path, time: u64) -> std::io::Result<()> {
    for (t, dir) in list(root)? {
        if t <= time {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

fn list(root: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(batches(root)) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(time) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
            found.push((time, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The pending batches after `after`, oldest first. A damaged block is an error naming it.
pub fn load(root: &Path, after: u64) -> Result<Vec<PendingBatch>, BatchLogError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BatchLogError::Io { path: path.clone(), source }
    };
    let mut out = Vec::new();
    for (time, dir) in list(root).map_err(io(root))? {
        if time <= after {
            continue;
        }
        let mut batch = PendingBatch { time, ..PendingBatch::default() };
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort_by_key(|n| {
            let mut parts = n.split(['-', '.']);
            let source: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let cut: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            (cut, source, n.clone())
        });
        for name in names {
            let path = dir.join(&name);
            let corrupted = |reason: &str| BatchLogError::Corrupted { path: path.clone(), reason: reason.to_string() };
            if let Some(source) = name.strip_suffix(".position").or_else(|| name.strip_suffix(".files")) {
                let source: usize = source.parse().map_err(|_| corrupted("its name is not <source>.position"))?;
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                batch.inputs.entry(source).or_default().record = Some(bytes);
            } else if name.ends_with(".block") {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                let block = decode_block(&name, &bytes).map_err(corrupted)?;
                batch.inputs.entry(block.source).or_default().blocks.push(block);
            }
        }
        out.push(batch);
    }
    Ok(out)
}

/// The block logged as file `name` (`<source>-<cut>-<n>.block`) holding `bytes`, or what is
/// wrong with it.
pub(crate) fn decode_block(name: &str, bytes: &[u8]) -> Result<Block, &'static str> {
    if bytes.len() < BLOCK_HEADER || &bytes[..4] != BLOCK_MAGIC {
        return Err("not a write-ahead-log block");
    }
    let mut parts = name.split('-');
    let source = parts.next().and_then(|p| p.parse().ok()).ok_or("bad name")?;
    let seq = parts.next().and_then(|p| p.parse().ok()).ok_or("bad name")?;
    let records = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let invalid = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let data = bytes[BLOCK_HEADER..].to_vec();
    let frames = sluice_sdk::abi::Frames::new(&data);
    let counted = frames.count() as u64;
    if counted != records {
        return Err("its records do not match its header");
    }
    Ok(Block { source, seq, records, invalid, data, task: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_blocks_and_file_lists_come_back_per_batch_and_are_forgotten_after_a_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let block = |source, seq, text: &str| {
            let mut data = Vec::new();
            crate::codec::write_frame(&mut data, &text.to_string()).unwrap();
            Block { source, seq, records: 1, invalid: 0, data, task: None }
        };
        let log = BatchLog::new(root.path().to_path_buf());
        log.write_block(2000, 0, &block(0, 11, "b")).unwrap();
        log.write_block(2000, 0, &block(0, 10, "a")).unwrap();
        log.write_record(2000, 1, b"x.txt\ny.txt\n").unwrap();
        log.write_block(3000, 0, &block(0, 15, "c")).unwrap();
        let batches = load(root.path(), 1000).unwrap();
        assert_eq!(batches.iter().map(|b| b.time).collect::<Vec<_>>(), [2000, 3000]);
        assert_eq!(batches[0].inputs[&0].blocks.iter().map(|b| b.seq).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(batches[0].inputs[&1].record.as_deref(), Some(&b"x.txt\ny.txt\n"[..]));
        forget_through(root.path(), 2000).unwrap();
        assert_eq!(load(root.path(), 0).unwrap().len(), 1);
        assert_eq!(load(root.path(), 3000).unwrap().len(), 0);
    }
}
