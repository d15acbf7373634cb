//! Checkpoints: after every batch, what a restart needs to resume after it — the batch time,
//! each source's position, every stateful stage's state — written atomically to
//! `checkpoint_dir`. See `docs/CHECKPOINTS.md` for the format and the recovery procedure.
//!
//! ```text
//! <checkpoint_dir>/
//!   checkpoint-<batch ms>.bin   the last two checkpoints (temp file, fsync, rename, fsync dir)
//!   sources.txt                 the sources' names in order (logs name sources by position)
//!   batches/<batch ms>/         one per batch not yet covered by a checkpoint (see `crate::batch_log`)
//! ```
//!
//! A checkpoint file is data, not code: an 8-byte magic `SLUICECK`, the format version
//! (`FORMAT`, u32 LE), the payload length (u64 LE), the payload's SHA-256 (32 bytes), then the
//! payload: a [`Checkpoint`] in postcard. Keys, values and states inside it are the postcard
//! bytes plugins produced, tagged with their types, so a plugin upgrade that keeps the types
//! reads the state, and one that changes them is refused by name rather than misread.

pub(crate) mod resume;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch_log::{BatchLogError, forget_through, write_durably};
use crate::graph::StageCheckpoint;
use crate::sources::{Position, SourcePosition};

/// The checkpoint format this engine writes (it reads format 1 too).
pub(crate) const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"SLUICECK";
/// Bytes before the payload: magic, format, length, checksum.
pub(crate) const HEADER: usize = 8 + 4 + 8 + 32;
/// Checkpoint files kept (the newest first); older ones are deleted after each write.
pub(crate) const KEEP: usize = 2;

/// Everything a restart needs to resume after batch `batch_time`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `[pipeline] name`.
    pub pipeline: String,
    /// `[pipeline] batch_interval`, ms: windows and batch times depend on it.
    pub batch_interval_ms: u64,
    /// The last batch whose output was written and whose state this is.
    pub batch_time: u64,
    /// Wall-clock time of writing, ms since the Unix epoch.
    pub written_at_ms: u64,
    /// The engine version that wrote it.
    pub engine_version: String,
    /// `(plugin, SHA-256)` of the versions serving when it was written.
    pub plugins: Vec<(String, String)>,
    /// Each source's position.
    pub sources: Vec<SourcePosition>,
    /// Each stateful stage's state.
    pub stages: Vec<StageCheckpoint>,
}

/// Format 1 (engine 0.1 before the connector seam): positions were directory file sets. Read
/// and turned into format 2, so a checkpoint written before an upgrade still resumes.
mod v1 {
    use std::collections::BTreeSet;

    use serde::Deserialize;

    use crate::graph::StageCheckpoint;

    #[derive(Deserialize)]
    pub(super) struct Checkpoint {
        pub pipeline: String,
        pub batch_interval_ms: u64,
        pub batch_time: u64,
        pub written_at_ms: u64,
        pub engine_version: String,
        pub plugins: Vec<(String, String)>,
        pub sources: Vec<SourcePosition>,
        pub stages: Vec<StageCheckpoint>,
    }

    #[derive(Deserialize)]
    pub(super) struct SourcePosition {
        pub name: String,
        pub files: BTreeSet<String>,
    }

    impl From<Checkpoint> for super::Checkpoint {
        fn from(old: Checkpoint) -> Self {
            let sources = old
                .sources
                .into_iter()
                .map(|s| super::SourcePosition {
                    name: s.name,
                    // A socket's position was an empty set: it has none.
                    position: if s.files.is_empty() {
                        super::Position::Nothing
                    } else {
                        super::Position::Files(s.files)
                    },
                })
                .collect();
            Self {
                pipeline: old.pipeline,
                batch_interval_ms: old.batch_interval_ms,
                batch_time: old.batch_time,
                written_at_ms: old.written_at_ms,
                engine_version: old.engine_version,
                plugins: old.plugins,
                sources,
                stages: old.stages,
            }
        }
    }
}

/// A checkpoint that cannot be used: the engine refuses to start rather than start over.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is damaged: truncated, altered, not a checkpoint.
    #[error(
        "checkpoint {} is corrupted ({reason}); refusing to start. Restore the file, or start over with `sluice run --fresh` (the checkpoint directory is set aside, not deleted)",
        path.display()
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Intact, but it does not fit this engine or this pipeline.
    #[error(
        "checkpoint {} cannot be used by this pipeline: {reason}; refusing to start. Run it with the pipeline and engine that wrote it, or start over with `sluice run --fresh`",
        path.display()
    )]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

impl From<BatchLogError> for CheckpointError {
    /// The batch log is part of the checkpoint directory: its failures read as the checkpoint's.
    fn from(error: BatchLogError) -> Self {
        match error {
            BatchLogError::Io { path, source } => Self::Io { path, source },
            BatchLogError::Corrupted { path, reason } => Self::Corrupted { path, reason },
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// The bytes of a checkpoint file.
pub fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let payload = postcard::to_allocvec(checkpoint).expect("a checkpoint always encodes");
    framed(FORMAT, &payload)
}

/// A checkpoint file's bytes around `payload`: magic, `format`, length, checksum, payload.
pub(crate) fn framed(format: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&format.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads the bytes of a checkpoint file (`path` names it in errors).
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let corrupted = |reason: String| CheckpointError::Corrupted { path: path.to_path_buf(), reason };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupted(format!("it does not start with the {HEADER}-byte checkpoint header")));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != FORMAT && format != 1 {
        return Err(CheckpointError::Incompatible {
            path: path.to_path_buf(),
            reason: format!("it is in checkpoint format {format}, this engine reads formats 1 and {FORMAT}"),
        });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupted(format!("the header says {len} bytes of payload, the file holds {}", payload.len())));
    }
    if Sha256::digest(payload).as_slice() != &bytes[20..52] {
        return Err(corrupted("its content does not match its SHA-256 checksum".into()));
    }
    let decoded = if format == 1 {
        postcard::from_bytes::<v1::Checkpoint>(payload).map(Checkpoint::from)
    } else {
        postcard::from_bytes(payload)
    };
    decoded.map_err(|err| corrupted(format!("the payload does not decode: {err}")))
}

fn file_name(batch_time: u64) -> String {
    format!("checkpoint-{batch_time}.bin")
}

/// Checkpoint files in `dir`, newest first.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(io(dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(time) = name.to_str().and_then(|n| n.strip_prefix("checkpoint-")?.strip_suffix(".bin")) else {
            continue;
        };
        match time.parse::<u64>() {
            Ok(time) => found.push((time, entry.path())),
            Err(_) => {
                return Err(CheckpointError::Corrupted {
                    path: entry.path(),
                    reason: "its name does not hold a batch time".into(),
                });
            }
        }
    }
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    Ok(found)
}

/// The newest checkpoint in `dir`, if there is one. A damaged newest checkpoint is an error,
/// never a silent fall-back to an older one or to nothing.
pub(crate) fn load_latest(dir: &Path) -> Result<Option<(PathBuf, Checkpoint)>, CheckpointError> {
    let Some((time, path)) = list(dir)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let checkpoint = decode(&path, &bytes)?;
    if checkpoint.batch_time != time {
        return Err(CheckpointError::Corrupted {
            path,
            reason: format!("its name says batch {time}, its content batch {}", checkpoint.batch_time),
        });
    }
    Ok(Some((path, checkpoint)))
}

/// Writes `bytes` (an encoded checkpoint of batch `batch_time`) atomically into `dir`, then
/// deletes all but the `KEEP` newest checkpoints and the pending batches it covers.
pub fn write(dir: &Path, batch_time: u64, bytes: &[u8]) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(file_name(batch_time));
    let tmp = dir.join(format!(".{}.tmp", file_name(batch_time)));
    write_durably(&tmp, &target, bytes).map_err(io(&target))?;
    for (_, old) in list(dir)?.into_iter().skip(KEEP) {
        std::fs::remove_file(&old).map_err(io(&old))?;
    }
    forget_through(dir, batch_time).map_err(io(dir))
}

/// Moves a checkpoint directory aside (`<dir>.discarded-<ms>`), for `sluice run --fresh`.
pub(crate) fn discard(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".discarded-{}", crate::block::now_ms()));
    let aside = PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(io(dir))?;
    Ok(Some(aside))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sample(batch_time: u64) -> Checkpoint {
        Checkpoint {
            pipeline: "p".into(),
            batch_interval_ms: 1000,
            batch_time,
            written_at_ms: 5,
            engine_version: "0".into(),
            plugins: vec![("wordcount".into(), "ab".repeat(32))],
            sources: vec![SourcePosition {
                name: "files".into(),
                position: Position::Files(BTreeSet::from(["a.txt".to_string()])),
            }],
            stages: Vec::new(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_the_newest_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        for time in [1000, 2000, 3000] {
            write(dir.path(), time, &encode(&sample(time))).unwrap();
        }
        let (path, loaded) = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.batch_time, 3000);
        assert!(path.ends_with("checkpoint-3000.bin"));
        assert_eq!(loaded.sources, sample(0).sources);
        assert_eq!(list(dir.path()).unwrap().len(), KEEP, "older checkpoints are deleted");
    }

    #[test]
    fn every_damaged_byte_is_refused_never_read_as_something_else() {
        let bytes = encode(&sample(1000));
        let path = Path::new("checkpoint-1000.bin");
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            let err = decode(path, &damaged).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupted { .. } | CheckpointError::Incompatible { .. }),
                "byte {i}: {err}"
            );
        }
        for len in [0, 10, HEADER, bytes.len() - 1] {
            assert!(
                matches!(decode(path, &bytes[..len]), Err(CheckpointError::Corrupted { .. })),
                "truncated to {len}"
            );
        }
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = decode(path, &future).unwrap_err().to_string();
        assert!(err.contains("format 3") && err.contains("--fresh"), "{err}");
    }

    #[test]
    fn a_format_1_checkpoint_still_loads_with_its_files_as_a_position() {
        #[derive(Serialize)]
        struct V1 {
            pipeline: String,
            batch_interval_ms: u64,
            batch_time: u64,
            written_at_ms: u64,
            engine_version: String,
            plugins: Vec<(String, String)>,
            sources: Vec<(String, BTreeSet<String>)>,
            stages: Vec<StageCheckpoint>,
        }
        let old = V1 {
            pipeline: "p".into(),
            batch_interval_ms: 1000,
            batch_time: 1000,
            written_at_ms: 5,
            engine_version: "0".into(),
            plugins: vec![("wordcount".into(), "ab".repeat(32))],
            sources: vec![("files".into(), BTreeSet::from(["a.txt".to_string()])), ("lines".into(), BTreeSet::new())],
            stages: Vec::new(),
        };
        let bytes = framed(1, &postcard::to_allocvec(&old).unwrap());
        let loaded = decode(Path::new("checkpoint-1000.bin"), &bytes).unwrap();
        assert_eq!(loaded.sources[0], sample(0).sources[0]);
        assert_eq!(loaded.sources[1], SourcePosition { name: "lines".into(), position: Position::Nothing });
    }
}
