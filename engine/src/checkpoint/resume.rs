//! What a run resumes from, and the rules that refuse a checkpoint directory this pipeline
//! cannot use (never a silent reset):
//!
//! - the newest checkpoint must decode (`Corrupted` otherwise) and belong to this pipeline
//!   name and batch interval (`Incompatible`);
//! - sources are logged by position, so their order must hold — checked once, against the
//!   checkpoint's sources and against `sources.txt` (written at every start, so the order is
//!   known before the first checkpoint too); new sources go at the end;
//! - a source with a position in the checkpoint must still exist;
//! - every batch logged after the checkpoint is replayed, in order, with its own time.
//!
//! The stage state in the checkpoint is imported by the caller (`topology/`), which knows the
//! graph.

use std::path::{Path, PathBuf};

use super::CheckpointError;
use crate::batch_log::{self, PendingBatch, write_durably};
use crate::graph::StageCheckpoint;
use crate::sources::{Position, SourcePosition};

/// What a run resumes from: empty on a first start.
#[derive(Debug, Default)]
pub(crate) struct Resumed {
    /// The last batch time of the earlier run (checkpointed or logged): new batches come after.
    pub after: u64,
    /// The checkpoint's file and batch time, if there is one.
    pub checkpoint: Option<(PathBuf, u64)>,
    /// Each stateful stage's state in the checkpoint.
    pub stages: Vec<StageCheckpoint>,
    /// Each source's checkpointed position, by index (None: a new source, or no checkpoint).
    pub positions: Vec<Option<Position>>,
    /// Batches logged after the checkpoint, oldest first: to run again.
    pub pending: Vec<PendingBatch>,
}

/// What a checkpoint must match.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    /// `[pipeline] name`.
    pub pipeline: &'a str,
    /// `[pipeline] batch_interval`, ms.
    pub batch_interval_ms: u64,
    /// The sources' names, in file order.
    pub sources: &'a [&'a str],
}

/// Reads `dir` (creating it) and returns what to resume from; `fresh` sets it aside first.
pub(crate) fn resume(dir: &Path, expected: &Expected<'_>, fresh: bool) -> Result<Resumed, CheckpointError> {
    if fresh && let Some(aside) = super::discard(dir)? {
        tracing::warn!(checkpoint = %dir.display(), moved_to = %aside.display(), "starting fresh: the old checkpoint was set aside");
    }
    let mut resumed = Resumed { positions: vec![None; expected.sources.len()], ..Resumed::default() };
    if let Some((path, checkpoint)) = super::load_latest(dir)? {
        let incompatible = |reason: String| CheckpointError::Incompatible { path: path.clone(), reason };
        if checkpoint.pipeline != expected.pipeline {
            return Err(incompatible(format!(
                "it belongs to pipeline `{}`, this is `{}`",
                checkpoint.pipeline, expected.pipeline
            )));
        }
        if checkpoint.batch_interval_ms != expected.batch_interval_ms {
            return Err(incompatible(format!(
                "it was written with batch_interval {} ms, the pipeline now has {} ms",
                checkpoint.batch_interval_ms, expected.batch_interval_ms
            )));
        }
        let saved: Vec<&str> = checkpoint.sources.iter().map(|s| s.name.as_str()).collect();
        check_order(&saved, expected.sources).map_err(incompatible)?;
        for SourcePosition { name, position } in checkpoint.sources {
            match expected.sources.iter().position(|n| *n == name) {
                Some(index) => resumed.positions[index] = Some(position),
                None if position == Position::Nothing => {}
                None => {
                    return Err(incompatible(format!(
                        "source `{name}` has a position in it but is not in the pipeline"
                    )));
                }
            }
        }
        tracing::info!(
            checkpoint = %path.display(),
            batch = checkpoint.batch_time,
            stages = checkpoint.stages.len(),
            "resuming after the checkpointed batch"
        );
        resumed.after = checkpoint.batch_time;
        resumed.checkpoint = Some((path, checkpoint.batch_time));
        resumed.stages = checkpoint.stages;
    }
    let manifest = dir.join("sources.txt");
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let logged: Vec<&str> = text.lines().collect();
        check_order(&logged, expected.sources)
            .map_err(|reason| CheckpointError::Incompatible { path: manifest.clone(), reason })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io { path: dir.to_path_buf(), source })?;
    let listed: String = expected.sources.iter().map(|n| format!("{n}\n")).collect();
    write_durably(&dir.join(".sources.txt.tmp"), &manifest, listed.as_bytes())
        .map_err(|source| CheckpointError::Io { path: manifest.clone(), source })?;
    resumed.pending = batch_log::load(dir, resumed.after)?;
    if let Some(last) = resumed.pending.last() {
        resumed.after = last.time;
        tracing::info!(batches = resumed.pending.len(), "replaying the batches the last run did not finish");
    }
    Ok(resumed)
}

/// Sources logged as `saved` (by position) must keep their positions among `now`; sources that
/// are gone or new at the end are fine.
// A `String`: it is the `reason` of a `CheckpointError::Incompatible`, like every refusal in `resume`.
fn check_order(saved: &[&str], now: &[&str]) -> Result<(), String> {
    for (index, name) in saved.iter().enumerate() {
        if now.get(index) != Some(name)
            && let Some(moved) = now.iter().position(|n| n == name)
        {
            return Err(format!(
                "source `{name}` was source #{} and is #{} now; keep the order of [[sources]] (add new ones at the end)",
                index + 1,
                moved + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_keep_their_positions_new_ones_at_the_end() {
        assert!(check_order(&["a", "b"], &["a", "b", "c"]).is_ok());
        assert!(check_order(&["a", "gone"], &["a"]).is_ok());
        let err = check_order(&["a", "b"], &["b", "a"]).unwrap_err();
        assert!(err.contains("source `a` was source #1 and is #2 now"), "{err}");
    }
}
