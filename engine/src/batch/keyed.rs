//! A cluster member's keyed state: one [`GraphState`] per repartition partition it owns (each
//! key's state lives with the partition its key hashes to), taken out for that partition's
//! task and put back after it. After each task the state is encoded (a checkpoint file of that
//! partition, format 2, with its own integrity hash) and, once the task's sinks committed,
//! kept in the checkpoint store under the task's log entry, before the entry is marked done. A
//! task that starts a gained partition loads the newest state kept instead of what this member
//! held, and tasks of entries at or before that state's are skipped: a zombie (a member the
//! group dropped that still runs) may have moved the partition on since the log was read, and
//! its states are as right as anyone's (every task's output is the same whoever runs it).
//!
//! **Owns:** the per-partition states in memory and their encoding. **Never touches:** the log
//! entries and done markers (the Kafka source's), the sinks.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::block::KeyedTask;
use crate::checkpoint::{self, Checkpoint};
use crate::cluster::CheckpointStore;
use crate::graph::{Graph, GraphState};
use crate::runtime::registry::Snapshot;

/// See the module docs.
#[derive(Debug)]
pub struct KeyedStates {
    store: CheckpointStore,
    pipeline: String,
    batch_interval_ms: u64,
    /// Per partition: the entry its state is after (None: empty, or only failed tasks), and the state.
    states: BTreeMap<(String, i32), (Option<u64>, GraphState)>,
}

impl KeyedStates {
    /// The states of pipeline `pipeline`'s repartition partitions, kept in `store`.
    pub(crate) fn new(store: CheckpointStore, pipeline: String, batch_interval_ms: u64) -> Self {
        Self { store, pipeline, batch_interval_ms, states: BTreeMap::new() }
    }

    /// The state task `keyed` runs on: its partition's, as this member left it or, for the
    /// first task after a gain, the newest the store keeps. None: the task's entry is at or
    /// before that state's (another member ran it, its output is committed): skip it. Asks
    /// the store again (back-off up to 10 s) while it fails: the task must not run on a state
    /// it does not have.
    /// With the state, the entry it is after (None: empty), for [`KeyedStates::put_back`].
    pub(crate) fn take(&mut self, graph: &Graph, keyed: &KeyedTask) -> Option<(Option<u64>, GraphState)> {
        let at = (keyed.topic.clone(), keyed.partition);
        let held = if keyed.restore {
            self.states.remove(&at);
            None
        } else {
            self.states.remove(&at)
        };
        let (through, state) = match held {
            Some(held) => held,
            None => self.restore(graph, keyed),
        };
        if through.is_some_and(|through| keyed.seq <= through) {
            tracing::info!(partition = %format!("{}/{}", keyed.topic, keyed.partition), entry = keyed.seq, "skipped: the kept state already holds this entry (another member ran it)");
            self.states.insert(at, (through, state));
            return None;
        }
        Some((through, state))
    }

    /// The newest state the store keeps of `keyed`'s partition, and the entry it is after.
    fn restore(&self, graph: &Graph, keyed: &KeyedTask) -> (Option<u64>, GraphState) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.load(graph, keyed) {
                Ok(loaded) => return loaded,
                Err(why) => {
                    tracing::error!(partition = %format!("{}/{}", keyed.topic, keyed.partition), "cannot load its keyed state: {why}; again in {}", humantime::format_duration(pause));
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn load(&self, graph: &Graph, keyed: &KeyedTask) -> Result<(Option<u64>, GraphState), String> {
        let Some((seq, bytes)) = self.store.load_state(&keyed.topic, keyed.partition).map_err(|err| err.to_string())?
        else {
            return Ok((None, GraphState::default()));
        };
        let path =
            std::path::PathBuf::from(format!("<store>/partitions/{}/{}/state/{seq}", keyed.topic, keyed.partition));
        let checkpoint = checkpoint::decode(&path, &bytes).map_err(|err| err.to_string())?;
        tracing::info!(partition = %format!("{}/{}", keyed.topic, keyed.partition), entry = seq, batch = checkpoint.batch_time, "keyed state loaded from the store");
        let state = GraphState::import(graph, checkpoint.stages)
            .map_err(|problems| format!("it does not fit this pipeline: {}", problems.join("; ")))?;
        Ok((Some(seq), state))
    }

    /// Puts task `keyed`'s partition's state back after the task: `through`, the entry it is
    /// after now (the task's if it ran, else what [`KeyedStates::take`] said).
    pub(crate) fn put_back(&mut self, keyed: &KeyedTask, through: Option<u64>, state: GraphState) {
        self.states.insert((keyed.topic.clone(), keyed.partition), (through, state));
    }

    /// Forgets the states of partitions whose tasks were revoked (their next owner has them).
    pub(crate) fn forget(&mut self, keyed: &KeyedTask) {
        self.states.remove(&(keyed.topic.clone(), keyed.partition));
    }

    /// `state` after the task of batch `time`, as it is kept.
    pub(crate) fn encode(&self, graph: &Graph, state: &GraphState, time: u64, serving: &Snapshot) -> Vec<u8> {
        checkpoint::encode(&Checkpoint {
            pipeline: self.pipeline.clone(),
            batch_interval_ms: self.batch_interval_ms,
            batch_time: time,
            written_at_ms: crate::block::now_ms(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            plugins: serving.iter().map(|v| (v.plugin.clone(), v.hash.clone())).collect(),
            sources: Vec::new(),
            stages: state.export(graph),
        })
    }

    /// Keeps task `keyed`'s encoded state in the store (its sinks committed).
    pub(crate) fn save(&self, keyed: &KeyedTask, encoded: Vec<u8>) -> Result<(), crate::cluster::store::StoreError> {
        self.store.save_state(&keyed.topic, keyed.partition, keyed.seq, encoded)
    }
}
