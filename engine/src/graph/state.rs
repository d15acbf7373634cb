//! State across batches: the state stores of `update_state_by_key` and the windows of windowed
//! stages, owned by the host so they survive plugin swaps. Keys and states are kept as their
//! postcard bytes.

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{self, Frames};

use super::Partition;
use super::keyed::frames;
use super::ops::{partition_of, split};
use super::window::WindowState;
use crate::runtime::{CallError, PluginVersion, instance};

/// One stage's state.
#[derive(Debug)]
pub(super) enum StageState {
    Window(WindowState),
    Store(StateStore),
}

/// The state of every stateful stage of a graph, by stage index.
#[derive(Debug, Default)]
pub struct GraphState {
    stages: FxHashMap<usize, StageState>,
}

impl GraphState {
    pub(super) fn window(&mut self, stage: usize) -> &mut WindowState {
        match self.stages.entry(stage).or_insert_with(|| StageState::Window(WindowState::default())) {
            StageState::Window(window) => window,
            StageState::Store(_) => unreachable!("stage {stage} is a window"),
        }
    }

    pub(super) fn store(&mut self, stage: usize) -> &mut StateStore {
        match self.stages.entry(stage).or_insert_with(|| StageState::Store(StateStore::default())) {
            StageState::Store(store) => store,
            StageState::Window(_) => unreachable!("stage {stage} is a state store"),
        }
    }
}

/// A key and its new state (`None`: delete).
type Updated = (Vec<u8>, Option<Vec<u8>>);

/// `update_state_by_key`'s store: key bytes → state bytes.
#[derive(Debug, Default)]
pub struct StateStore {
    states: FxHashMap<Vec<u8>, Vec<u8>>,
}

impl StateStore {
    /// Calls the update function for every key with new values or state (as Spark does), in
    /// `buckets` parallel calls by key hash; keeps the states it returns, drops keys it returns
    /// `None` for; returns every `(key, state)`.
    pub(super) fn step(
        &mut self,
        version: &PluginVersion,
        function: &str,
        key_ty: &TypeDesc,
        input: &[Partition],
        buckets: usize,
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Partition>, CallError> {
        let mut new_values: FxHashMap<&[u8], Vec<&[u8]>> = FxHashMap::default();
        for frame in frames(input) {
            let (key, value) = split(key_ty, frame)?;
            new_values.entry(key).or_default().push(value);
        }
        let mut keys: Vec<&[u8]> = self.states.keys().map(Vec::as_slice).collect();
        keys.extend(new_values.keys().filter(|k| !self.states.contains_key(**k)));
        keys.sort_unstable();
        let mut by_bucket: Vec<Vec<&[u8]>> = vec![Vec::new(); buckets];
        for key in keys {
            by_bucket[partition_of(key, buckets)].push(key);
        }
        let states = &self.states;
        let results: Vec<Vec<Updated>> = pool.install(|| {
            by_bucket
                .par_iter()
                .map(|keys| {
                    let mut call_input = Vec::new();
                    for key in keys {
                        let values = new_values.get(key).map(Vec::as_slice).unwrap_or_default();
                        call_input.extend_from_slice(&(values.len() as u32).to_le_bytes());
                        for value in values {
                            abi::push_frame(&mut call_input, value);
                        }
                        match states.get(*key) {
                            Some(state) => abi::push_frame_parts(&mut call_input, &[1], state),
                            None => abi::push_frame(&mut call_input, &[0]),
                        }
                    }
                    let mut out = Vec::new();
                    if !keys.is_empty() {
                        instance::call(version, function, &call_input, &mut out)?;
                    }
                    let mut frames = Frames::new(&out);
                    let mut updated = Vec::with_capacity(keys.len());
                    for key in keys {
                        let frame = frames.next().ok_or_else(|| CallError::BadOutput {
                            message: "update_state returned fewer states than keys".into(),
                        })?;
                        let state = match frame.split_first() {
                            Some((0, [])) => None,
                            Some((1, state)) => Some(state.to_vec()),
                            _ => {
                                return Err(CallError::BadOutput {
                                    message: "update_state returned something other than an Option".into(),
                                });
                            }
                        };
                        updated.push((key.to_vec(), state));
                    }
                    if frames.next().is_some() || !frames.rest().is_empty() {
                        return Err(CallError::BadOutput {
                            message: "update_state returned more states than keys".into(),
                        });
                    }
                    Ok(updated)
                })
                .collect::<Result<Vec<_>, CallError>>()
        })?;
        let mut out = Vec::with_capacity(buckets);
        for bucket in results {
            let mut part = Partition::default();
            for (key, state) in bucket {
                match state {
                    Some(state) => {
                        abi::push_frame_parts(&mut part.data, &key, &state);
                        part.records += 1;
                        self.states.insert(key, state);
                    }
                    None => {
                        self.states.remove(&key);
                    }
                }
            }
            if part.records > 0 {
                out.push(part);
            }
        }
        Ok(out)
    }
}
