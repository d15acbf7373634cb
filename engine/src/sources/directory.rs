//! The directory source, like Spark's `textFileStream`: every new file that appears in `path`
//! is read once, as lines. It is not a receiver: at each batch boundary the clock lists the
//! directory and the batch takes the files not taken before; the scheduler reads them when the
//! batch runs. Which files a batch took is written to the checkpoint before the batch runs, so
//! the source is replayable and, with the file sink, exactly-once.
//!
//! - Put files in place atomically (write elsewhere, then `mv`) and do not change them after:
//!   a file is taken at the boundary that first sees it and read when its batch runs (and again
//!   if that batch is replayed after a crash).
//! - Names starting with `.` or ending in `.tmp` or `._COPYING_` are in-flight and skipped.
//! - Files are taken in name order; sub-directories are ignored. A file is known by its name: a
//!   new file reusing the name of one already taken is not read.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::block::Block;
use crate::receiver::{LineFramer, MAX_BLOCK_BYTES, PendingBlock};

/// `type = "directory"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// The directory to watch, relative to the pipeline file.
    pub path: PathBuf,
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
            blocks.push(Block { source, seq, records: done.records, invalid: done.invalid, data: done.data });
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
