//! State across batches: the state stores of `update_state_by_key` and the windows of windowed
//! stages, owned by the host so they survive plugin swaps. Keys and states are kept as their
//! postcard bytes.

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::Frames;

use super::Graph;
use super::event::EventWindowState;
use super::ops::{partition_of, split};
use super::window::WindowState;
use crate::block::Partition;
use crate::block::records as frames;
use crate::codec;
use crate::runtime::{CallError, PluginVersion, instance};

/// One stage's state: what a checkpoint holds for it (keys, values and states as the postcard
/// bytes the plugins produced, so the format does not depend on any plugin's code).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum StageState {
    Window(WindowState),
    Store(StateStore),
    Mapped(MapStateStore),
    Event(EventWindowState),
}

/// The state of every stateful stage of a graph, by stage index.
#[derive(Clone, Debug, Default)]
pub struct GraphState {
    stages: FxHashMap<usize, StageState>,
}

impl GraphState {
    pub(super) fn window(&mut self, stage: usize) -> &mut WindowState {
        match self.stages.entry(stage).or_insert_with(|| StageState::Window(WindowState::default())) {
            StageState::Window(window) => window,
            _ => unreachable!("stage {stage} is a window"),
        }
    }

    pub(super) fn store(&mut self, stage: usize) -> &mut StateStore {
        match self.stages.entry(stage).or_insert_with(|| StageState::Store(StateStore::default())) {
            StageState::Store(store) => store,
            _ => unreachable!("stage {stage} is a state store"),
        }
    }

    pub(super) fn mapped(&mut self, stage: usize) -> &mut MapStateStore {
        match self.stages.entry(stage).or_insert_with(|| StageState::Mapped(MapStateStore::default())) {
            StageState::Mapped(store) => store,
            _ => unreachable!("stage {stage} is a map_with_state store"),
        }
    }

    pub(super) fn event(&mut self, stage: usize) -> &mut EventWindowState {
        match self.stages.entry(stage).or_insert_with(|| StageState::Event(EventWindowState::default())) {
            StageState::Event(state) => state,
            _ => unreachable!("stage {stage} is an event window"),
        }
    }

    /// Late records of every event-time stage so far.
    pub(crate) fn late_records(&self) -> u64 {
        self.stages.values().map(|s| if let StageState::Event(e) = s { e.late } else { 0 }).sum()
    }

    /// A copy of stage `stage`'s state, to put back if the stage fails.
    pub(super) fn save(&self, stage: usize) -> Option<StageState> {
        self.stages.get(&stage).cloned()
    }

    /// Puts back what [`GraphState::save`] returned.
    pub(super) fn restore(&mut self, stage: usize, saved: Option<StageState>) {
        match saved {
            Some(state) => self.stages.insert(stage, state),
            None => self.stages.remove(&stage),
        };
    }

    /// Every stateful stage's state, by stage name, for a checkpoint.
    pub fn export(&self, graph: &Graph) -> Vec<StageCheckpoint> {
        let mut out: Vec<StageCheckpoint> = self
            .stages
            .iter()
            .map(|(&index, state)| {
                let stage = &graph.stages[index];
                StageCheckpoint {
                    name: stage.name.clone(),
                    op: stage.operator.name().to_string(),
                    input: graph.streams[stage.inputs[0]].ty.clone(),
                    output: graph.streams[stage.output].ty.clone(),
                    state: state.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The state of a checkpoint for `graph`. Each stage must exist with the same op and the
    /// same record types; otherwise the state cannot be read, and every such stage is reported.
    pub(crate) fn import(graph: &Graph, stages: Vec<StageCheckpoint>) -> Result<Self, Vec<String>> {
        let mut state = Self::default();
        let mut problems = Vec::new();
        for saved in stages {
            let Some(index) = graph.stages.iter().position(|s| s.name == saved.name) else {
                problems.push(format!(
                    "stage `{}` ({}) has state in the checkpoint but is not in the pipeline",
                    saved.name, saved.op
                ));
                continue;
            };
            let stage = &graph.stages[index];
            let (input, output) = (&graph.streams[stage.inputs[0]].ty, &graph.streams[stage.output].ty);
            if stage.operator.name() != saved.op {
                problems.push(format!(
                    "stage `{}` was `{}` when the checkpoint was written and is `{}` now",
                    saved.name,
                    saved.op,
                    stage.operator.name()
                ));
            } else if *input != saved.input || *output != saved.output {
                problems.push(format!(
                    "stage `{}` read {} and produced {} when the checkpoint was written, and reads {} and produces {} now; its state has the old types",
                    saved.name, saved.input, saved.output, input, output
                ));
            } else {
                state.stages.insert(index, saved.state);
            }
        }
        if problems.is_empty() { Ok(state) } else { Err(problems) }
    }
}

/// One stateful stage in a checkpoint: its name, op and record types (what must still match
/// for the state to be read), and its state as data.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StageCheckpoint {
    /// The stage's name.
    pub name: String,
    /// Its op, as in the pipeline file.
    pub op: String,
    /// The type of the records it reads.
    pub input: TypeDesc,
    /// The type of the records it produces.
    pub output: TypeDesc,
    state: StageState,
}

/// `update_state_by_key`'s store: key bytes → state bytes, split by key hash into one map per
/// worker so every bucket is updated in parallel, in place.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StateStore {
    buckets: Vec<FxHashMap<Vec<u8>, Vec<u8>>>,
}

impl StateStore {
    /// Calls the update function for every key with new values or state (as Spark does), one
    /// call per bucket, buckets in parallel; keeps the states it returns, drops keys it returns
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
        if self.buckets.len() != buckets {
            // First batch, or the worker count changed: spread the keys again.
            let states: Vec<(Vec<u8>, Vec<u8>)> = self.buckets.drain(..).flatten().collect();
            self.buckets = vec![FxHashMap::default(); buckets];
            for (key, state) in states {
                self.buckets[partition_of(&key, buckets)].insert(key, state);
            }
        }
        let mut new_values: Vec<FxHashMap<&[u8], Vec<&[u8]>>> = vec![FxHashMap::default(); buckets];
        for frame in frames(input) {
            let (key, value) = split(key_ty, frame)?;
            new_values[partition_of(key, buckets)].entry(key).or_default().push(value);
        }
        pool.install(|| {
            self.buckets
                .par_iter_mut()
                .zip(new_values.par_iter())
                .map(|(states, new)| update_bucket(version, function, states, new))
                .filter(|result| !matches!(result, Ok(p) if p.records == 0))
                .collect::<Result<Vec<_>, CallError>>()
        })
    }
}

/// One bucket's update: one call for all of its keys (with state or with new values).
fn update_bucket(
    version: &PluginVersion,
    function: &str,
    states: &mut FxHashMap<Vec<u8>, Vec<u8>>,
    new: &FxHashMap<&[u8], Vec<&[u8]>>,
) -> Result<Partition, CallError> {
    let mut call_input = Vec::new();
    let mut add = |values: &[&[u8]], state: Option<&[u8]>| {
        call_input.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for value in values {
            codec::push_frame(&mut call_input, value);
        }
        match state {
            Some(state) => codec::push_frame_parts(&mut call_input, &[1], state),
            None => codec::push_frame(&mut call_input, &[0]),
        }
    };
    // Keys with state first (in the map's order), then new keys: the output follows this order.
    for (key, state) in states.iter() {
        add(new.get(key.as_slice()).map(Vec::as_slice).unwrap_or_default(), Some(state));
    }
    let new_keys: Vec<&[u8]> = new.keys().copied().filter(|key| !states.contains_key(*key)).collect();
    for key in &new_keys {
        add(&new[key], None);
    }
    let mut out = Vec::new();
    if !call_input.is_empty() {
        instance::call(version, function, &call_input, &mut out)?;
    }
    let bad = |message: &str| CallError::BadOutput { message: format!("update_state {message}") };
    let mut frames = Frames::new(&out);
    let mut next_state = || match frames.next().and_then(|f| f.split_first()) {
        Some((0, [])) => Ok(None),
        Some((1, state)) => Ok(Some(state)),
        Some(_) => Err(bad("returned something other than an Option")),
        None => Err(bad("returned fewer states than keys")),
    };
    let mut emitted = Partition::default();
    // `iter_mut` visits the keys in the order `iter` did above: the order of the call's input.
    let mut deleted = Vec::new();
    for (key, state) in states.iter_mut() {
        match next_state()? {
            Some(new_state) => {
                state.clear();
                state.extend_from_slice(new_state);
                codec::push_frame_parts(&mut emitted.data, key, state);
                emitted.records += 1;
            }
            None => deleted.push(key.clone()),
        }
    }
    for key in deleted {
        states.remove(&key);
    }
    for key in new_keys {
        if let Some(state) = next_state()? {
            codec::push_frame_parts(&mut emitted.data, key, state);
            emitted.records += 1;
            states.insert(key.to_vec(), state.to_vec());
        }
    }
    if frames.next().is_some() || !frames.rest().is_empty() {
        return Err(bad("returned more states than keys"));
    }
    Ok(emitted)
}

/// A key and its new state (`None`: delete).
type Updated = (Vec<u8>, Option<Vec<u8>>);

/// `map_with_state`'s store: key bytes → (state bytes, batch time of its last new value).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct MapStateStore {
    states: FxHashMap<Vec<u8>, (Vec<u8>, u64)>,
}

impl MapStateStore {
    /// Calls the function for keys with new values, and once more (with no values) for keys
    /// whose last value is `timeout_ms` or more before `time`, whose state is then dropped.
    /// Returns the records the function emitted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        version: &PluginVersion,
        function: &str,
        key_ty: &TypeDesc,
        input: &[Partition],
        time: u64,
        timeout_ms: Option<u64>,
        buckets: usize,
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Partition>, CallError> {
        let mut new_values: FxHashMap<&[u8], Vec<&[u8]>> = FxHashMap::default();
        for frame in frames(input) {
            let (key, value) = split(key_ty, frame)?;
            new_values.entry(key).or_default().push(value);
        }
        let mut keys: Vec<&[u8]> = new_values.keys().copied().collect();
        if let Some(timeout) = timeout_ms {
            keys.extend(
                self.states
                    .iter()
                    .filter(|(k, (_, last))| {
                        !new_values.contains_key(k.as_slice()) && time.saturating_sub(*last) >= timeout
                    })
                    .map(|(k, _)| k.as_slice()),
            );
        }
        keys.sort_unstable();
        let mut by_bucket: Vec<Vec<&[u8]>> = vec![Vec::new(); buckets];
        for key in keys {
            by_bucket[partition_of(key, buckets)].push(key);
        }
        let states = &self.states;
        let results: Vec<(Vec<Updated>, Partition)> = pool.install(|| {
            by_bucket
                .par_iter()
                .map(|keys| {
                    let mut call_input = Vec::new();
                    for key in keys {
                        codec::push_frame(&mut call_input, key);
                        let values = new_values.get(key).map(Vec::as_slice).unwrap_or_default();
                        call_input.extend_from_slice(&(values.len() as u32).to_le_bytes());
                        for value in values {
                            codec::push_frame(&mut call_input, value);
                        }
                        match states.get(*key) {
                            Some((state, _)) => codec::push_frame_parts(&mut call_input, &[1], state),
                            None => codec::push_frame(&mut call_input, &[0]),
                        }
                    }
                    let mut out = Vec::new();
                    if !keys.is_empty() {
                        instance::call(version, function, &call_input, &mut out)?;
                    }
                    let bad = |message: &str| CallError::BadOutput { message: format!("map_with_state {message}") };
                    let mut frames = Frames::new(&out);
                    let mut updated = Vec::with_capacity(keys.len());
                    let mut emitted = Partition::default();
                    for key in keys {
                        let state = match frames.next().and_then(|f| f.split_first()) {
                            Some((0, [])) => None,
                            Some((1, state)) => Some(state.to_vec()),
                            _ => return Err(bad("returned something other than an Option state")),
                        };
                        let count = frames.read_u32().ok_or_else(|| bad("returned no record count"))?;
                        for _ in 0..count {
                            let record = frames.next().ok_or_else(|| bad("returned fewer records than it counted"))?;
                            codec::push_frame(&mut emitted.data, record);
                            emitted.records += 1;
                        }
                        let timed_out = !new_values.contains_key(key);
                        updated.push((key.to_vec(), if timed_out { None } else { state }));
                    }
                    if !frames.rest().is_empty() {
                        return Err(bad("returned more than one state per key"));
                    }
                    Ok((updated, emitted))
                })
                .collect::<Result<Vec<_>, CallError>>()
        })?;
        let mut out = Vec::new();
        for (updated, emitted) in results {
            for (key, state) in updated {
                match state {
                    Some(state) => {
                        self.states.insert(key, (state, time));
                    }
                    None => {
                        self.states.remove(&key);
                    }
                }
            }
            if emitted.records > 0 {
                out.push(emitted);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PluginRuntime;

    fn clicks(users: &[&str]) -> Vec<Partition> {
        let mut part = Partition::default();
        for user in users {
            crate::codec::write_frame(&mut part.data, &(user.to_string(), 7u64)).unwrap();
            part.records += 1;
        }
        vec![part]
    }

    fn emitted(parts: &[Partition]) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> =
            parts.iter().flat_map(|p| Frames::new(&p.data)).map(|f| postcard::from_bytes(f).unwrap()).collect();
        out.sort();
        out
    }

    #[test]
    fn map_with_state_is_called_for_new_values_and_timeouts_on_a_scripted_clock() {
        let version = PluginRuntime::native("sessionize", &[sessionize::__sluice_visits]);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut store = MapStateStore::default();
        let key = TypeDesc::String;
        let mut step = |time: u64, users: &[&str]| {
            let out = store.step(&version, "visits", &key, &clicks(users), time, Some(3_000), 2, &pool).unwrap();
            emitted(&out)
        };
        assert_eq!(step(1_000, &["ann", "bob", "ann"]), vec![]);
        assert_eq!(step(2_000, &["bob"]), vec![]);
        assert_eq!(step(3_000, &[]), vec![], "nobody idle for 3 s yet");
        assert_eq!(step(4_000, &[]), vec![("ann".into(), 2)], "ann idle since 1 s");
        assert_eq!(step(5_000, &["ann"]), vec![("bob".into(), 2)], "bob idle since 2 s; ann starts over");
        assert_eq!(step(6_000, &[]), vec![]);
        assert_eq!(step(8_000, &[]), vec![("ann".into(), 1)]);
        assert_eq!(step(20_000, &[]), vec![], "timed-out keys are gone");
    }

    #[test]
    fn update_state_by_key_keeps_running_totals_and_calls_every_key_each_batch() {
        let version = PluginRuntime::native("top_k", &[top_k::__sluice_running_total]);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut store = StateStore::default();
        let batch = |pairs: &[(&str, u64)]| {
            let mut part = Partition::default();
            for pair in pairs {
                crate::codec::write_frame(&mut part.data, pair).unwrap();
                part.records += 1;
            }
            vec![part]
        };
        let mut step = |pairs: &[(&str, u64)]| {
            let out = store.step(&version, "running_total", &TypeDesc::String, &batch(pairs), 3, &pool).unwrap();
            emitted(&out)
        };
        assert_eq!(step(&[("a", 2), ("b", 1), ("a", 1)]), vec![("a".into(), 3), ("b".into(), 1)]);
        assert_eq!(step(&[("b", 5)]), vec![("a".into(), 3), ("b".into(), 6)], "a keeps its state without new values");
        assert_eq!(step(&[]), vec![("a".into(), 3), ("b".into(), 6)]);
    }
}
