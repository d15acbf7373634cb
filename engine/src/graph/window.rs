//! Windowed operators over processing time: the last `window` of batches, emitted when the batch
//! time is a multiple of `slide` (both multiples of the batch interval, checked at load time).
//! The output of a window ending at `T` is part of batch `T`.
//!
//! Each batch leaves a *contribution* (its records, its count, its reduced value, or its values
//! reduced per key), kept while some future window may need it. `reduce_by_key_and_window` with an
//! inverse and `count_by_value_and_window` keep a running value per key and, at each slide, add
//! the batches that entered the window and remove (inverse) those that left it — so their cost
//! per slide follows the keys of those batches, not the window's length. Each running key also
//! counts the batches of the window it appears in; at zero it is dropped rather than inverted, so
//! the result equals recomputing the window from scratch.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::Frames;

use super::keyed::{count_by_value, fold_counts};
use super::ops::{self, split};
use super::{Operator, Span};
use crate::block::Partition;
use crate::codec;
use crate::runtime::CallError;
use crate::runtime::registry::Snapshot;

/// What one batch leaves for the windows that will include it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Contribution {
    Records(Vec<Partition>),
    Count(u64),
    Value(Option<Vec<u8>>),
    /// Distinct keys with their reduced value (or count).
    ByKey(Partition),
}

/// Key → (value, number of batches holding the key).
type Running = FxHashMap<Vec<u8>, (Vec<u8>, u32)>;

/// A windowed stage's state across batches.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct WindowState {
    history: VecDeque<(u64, Contribution)>,
    last_emit: Option<u64>,
    /// Incremental windows: key → (value over the window, batches of the window holding the key).
    running: Running,
}

/// A failed call of a window, and whether it was the inverse function's.
#[derive(Debug)]
pub(super) struct WindowError {
    pub(super) error: CallError,
    pub(super) inverse: bool,
}

impl From<CallError> for WindowError {
    fn from(error: CallError) -> Self {
        Self { error, inverse: false }
    }
}

/// How values of one key combine: a plugin function, or host arithmetic on `u64` counts.
enum Combine<'a> {
    Plugin(&'a crate::runtime::PluginVersion, &'a str),
    AddCounts,
    SubtractCounts,
}

impl Combine<'_> {
    /// Each group of values combined into one (a group of two for add/remove), in one call.
    fn groups(&self, groups: &[Vec<&[u8]>]) -> Result<Vec<Vec<u8>>, CallError> {
        let arithmetic = |f| groups.iter().map(|group| fold_counts(group, f)).collect();
        match self {
            Combine::Plugin(version, function) => ops::reduce_groups(version, function, groups),
            Combine::AddCounts => Ok(arithmetic(u64::wrapping_add)),
            Combine::SubtractCounts => Ok(arithmetic(u64::wrapping_sub)),
        }
    }

    fn pairs(&self, pairs: &[(&[u8], &[u8])]) -> Result<Vec<Vec<u8>>, CallError> {
        let groups: Vec<Vec<&[u8]>> = pairs.iter().map(|(a, b)| vec![*a, *b]).collect();
        self.groups(&groups)
    }
}

impl WindowState {
    /// Takes batch `time`'s input; returns the window's output if a window ends at `time`.
    /// `operator` is one of the five windowed operators (those with a [`Operator::span`]).
    pub(super) fn step(
        &mut self,
        operator: &Operator,
        time: u64,
        input: &[Partition],
        snapshot: &Snapshot,
    ) -> Result<Vec<Partition>, WindowError> {
        let (Span { window_ms, slide_ms }, contribution) = match operator {
            Operator::Window(span) => {
                (*span, Contribution::Records(input.iter().filter(|p| p.records > 0).cloned().collect()))
            }
            Operator::CountByWindow(span) => (*span, Contribution::Count(input.iter().map(|p| p.records).sum())),
            Operator::ReduceByWindow { span, reduce: f } => {
                let version = &snapshot[f.plugin];
                let partials: Vec<Vec<u8>> = input
                    .iter()
                    .map(|p| ops::reduce_partition(version, &f.function, p))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .flatten()
                    .collect();
                let partials: Vec<&[u8]> = partials.iter().map(Vec::as_slice).collect();
                let value =
                    if partials.is_empty() { None } else { Some(ops::reduce_values(version, &f.function, &partials)?) };
                (*span, Contribution::Value(value))
            }
            Operator::ReduceByKeyAndWindow { span, reduce, key, .. } => {
                let parts: Vec<&[u8]> = input.iter().map(|p| p.data.as_slice()).collect();
                (*span, Contribution::ByKey(ops::combine(&snapshot[reduce.plugin], &reduce.function, key, &parts)?))
            }
            Operator::CountByValueAndWindow { span, .. } => (*span, Contribution::ByKey(count_by_value(input))),
            // `run_stage` calls `step` for the windowed operators only: a bug here, not input.
            other => unreachable!("`{}` is not a processing-time window", other.name()),
        };
        self.history.push_back((time, contribution));
        if !time.is_multiple_of(slide_ms) {
            return Ok(Vec::new());
        }
        let start = time.saturating_sub(window_ms); // the window is (start, time]
        let output = match operator {
            Operator::Window(_) => self
                .in_window(start)
                .flat_map(|c| match c {
                    Contribution::Records(parts) => parts.clone(),
                    _ => Vec::new(),
                })
                .collect(),
            Operator::CountByWindow(_) => {
                let count: u64 =
                    self.in_window(start).map(|c| if let Contribution::Count(n) = c { *n } else { 0 }).sum();
                let mut out = Partition { data: Vec::new(), records: 1 };
                crate::codec::write_frame(&mut out.data, &count).expect("a u64 encodes");
                vec![out]
            }
            Operator::ReduceByWindow { reduce: f, .. } => {
                let values: Vec<&[u8]> = self
                    .in_window(start)
                    .filter_map(|c| if let Contribution::Value(Some(v)) = c { Some(v.as_slice()) } else { None })
                    .collect();
                if values.is_empty() {
                    Vec::new()
                } else {
                    let value = ops::reduce_values(&snapshot[f.plugin], &f.function, &values)?;
                    let mut out = Partition { data: Vec::new(), records: 1 };
                    codec::push_frame(&mut out.data, &value);
                    vec![out]
                }
            }
            Operator::ReduceByKeyAndWindow { reduce, inverse: None, key, .. } => {
                let parts: Vec<&[u8]> = self.by_key_in_window(start);
                vec![ops::combine(&snapshot[reduce.plugin], &reduce.function, key, &parts)?]
            }
            Operator::ReduceByKeyAndWindow { reduce, inverse: Some(inverse), key, .. } => {
                let add = Combine::Plugin(&snapshot[reduce.plugin], &reduce.function);
                let remove = Combine::Plugin(&snapshot[inverse.plugin], &inverse.function);
                self.slide_incrementally(key, start, time, window_ms, &add, &remove)?;
                vec![self.running_output()]
            }
            Operator::CountByValueAndWindow { key, .. } => {
                self.slide_incrementally(key, start, time, window_ms, &Combine::AddCounts, &Combine::SubtractCounts)?;
                vec![self.running_output()]
            }
            other => unreachable!("`{}` is not a processing-time window", other.name()),
        };
        // Keep what a later window (or the next slide's removal) still needs.
        while self.history.front().is_some_and(|(t, _)| *t <= start) {
            self.history.pop_front();
        }
        self.last_emit = Some(time);
        Ok(output)
    }

    fn in_window(&self, start: u64) -> impl Iterator<Item = &Contribution> {
        self.history.iter().filter(move |(t, _)| *t > start).map(|(_, c)| c)
    }

    fn by_key_in_window(&self, start: u64) -> Vec<&[u8]> {
        self.in_window(start)
            .filter_map(|c| if let Contribution::ByKey(p) = c { Some(p.data.as_slice()) } else { None })
            .collect()
    }

    /// Adds the batches that entered the window since the last slide and removes those that left.
    /// Every call is made before anything changes, so a failing call leaves the state as it was
    /// (the batch fails; the next slide redoes the work).
    fn slide_incrementally(
        &mut self,
        key_ty: &TypeDesc,
        start: u64,
        time: u64,
        window_ms: u64,
        add: &Combine<'_>,
        remove: &Combine<'_>,
    ) -> Result<(), WindowError> {
        let adding = WindowError::from;
        let since = self.last_emit.unwrap_or(0);
        let left_after = self.last_emit.map(|t| t.saturating_sub(window_ms));
        let mut entering: Vec<&Partition> = Vec::new();
        let mut leaving: Vec<&Partition> = Vec::new();
        for (t, contribution) in &self.history {
            let Contribution::ByKey(part) = contribution else { continue };
            if *t > since.max(start) && *t <= time {
                entering.push(part);
            } else if left_after.is_some_and(|after| *t > after && *t <= start) {
                leaving.push(part);
            }
        }
        let entering = fold(key_ty, &entering, add).map_err(adding)?;
        let leaving = fold(key_ty, &leaving, add).map_err(adding)?;

        // Add: keys already running combine with what entered; new keys start with it.
        let mut changed: Running = FxHashMap::default();
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
        let mut pair_keys: Vec<&Vec<u8>> = Vec::new();
        for (key, (value, batches)) in &entering {
            match self.running.get(key) {
                Some((old, held)) => {
                    pairs.push((old.as_slice(), value.as_slice()));
                    pair_keys.push(key);
                    changed.insert(key.clone(), (Vec::new(), held + batches));
                }
                None => {
                    changed.insert(key.clone(), (value.clone(), *batches));
                }
            }
        }
        for (key, value) in pair_keys.into_iter().zip(add.pairs(&pairs).map_err(adding)?) {
            changed.get_mut(key).expect("listed above").0 = value;
        }

        // Remove: keys no batch of the window holds any more are dropped; the others inverted.
        let mut inversions: Vec<(&[u8], &[u8])> = Vec::new();
        let mut inverted_keys: Vec<(&Vec<u8>, u32)> = Vec::new();
        let mut dropped: Vec<&Vec<u8>> = Vec::new();
        for (key, (value, batches)) in &leaving {
            let Some((current, held)) = changed.get(key).or_else(|| self.running.get(key)) else { continue };
            if *held <= *batches {
                dropped.push(key);
            } else {
                inversions.push((current.as_slice(), value.as_slice()));
                inverted_keys.push((key, held - batches));
            }
        }
        let inverted = remove.pairs(&inversions).map_err(|error| WindowError { error, inverse: true })?;

        // Every call succeeded: apply.
        let inverted: Running =
            inverted_keys.into_iter().zip(inverted).map(|((key, held), value)| (key.clone(), (value, held))).collect();
        let dropped: Vec<Vec<u8>> = dropped.into_iter().cloned().collect();
        self.running.extend(changed);
        self.running.extend(inverted);
        for key in dropped {
            self.running.remove(&key);
        }
        Ok(())
    }

    /// Every running key with its value, in key order.
    fn running_output(&self) -> Partition {
        let mut keys: Vec<(&Vec<u8>, &Vec<u8>)> = self.running.iter().map(|(k, (v, _))| (k, v)).collect();
        keys.sort_unstable();
        let mut out = Partition::default();
        for (key, value) in keys {
            codec::push_frame_parts(&mut out.data, key, value);
            out.records += 1;
        }
        out
    }
}

/// Each key's values across `parts` (distinct keys per part) combined, with the number of parts
/// holding the key. One call for all keys held by more than one part.
fn fold(key_ty: &TypeDesc, parts: &[&Partition], combine: &Combine<'_>) -> Result<Running, CallError> {
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut keys: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for part in parts {
        for frame in Frames::new(&part.data) {
            let (key, value) = split(key_ty, frame)?;
            let at = *index.entry(key).or_insert_with(|| {
                keys.push((key, Vec::new()));
                keys.len() - 1
            });
            keys[at].1.push(value);
        }
    }
    let groups: Vec<Vec<&[u8]>> = keys.iter().map(|(_, values)| values.clone()).collect();
    let combined = combine.groups(&groups)?;
    Ok(keys
        .into_iter()
        .zip(combined)
        .map(|((key, values), value)| (key.to_vec(), (value, values.len() as u32)))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::graph::FunctionRef;
    use crate::runtime::PluginRuntime;

    const BATCH: u64 = 1000;

    fn snapshot() -> Snapshot {
        let version = PluginRuntime::native(
            "wordcount",
            &[wordcount::__sluice_sum, wordcount::__sluice_subtract, wordcount::__sluice_split_words],
        );
        Arc::from(vec![Arc::new(version)])
    }

    fn f(name: &str) -> FunctionRef {
        FunctionRef { plugin: 0, function: name.into() }
    }

    fn batch(words: &[u8]) -> Vec<Partition> {
        let mut part = Partition::default();
        for w in words {
            crate::codec::write_frame(&mut part.data, &(format!("k{w}"), 1u64)).unwrap();
            part.records += 1;
        }
        vec![part]
    }

    fn decode(parts: &[Partition]) -> BTreeMap<String, u64> {
        parts
            .iter()
            .flat_map(|p| Frames::new(&p.data))
            .map(|f| postcard::from_bytes::<(String, u64)>(f).unwrap())
            .collect()
    }

    /// The reference: the window recomputed from the batches, as a plain model.
    fn model(batches: &[Vec<u8>], end: usize, window: usize) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for words in &batches[end.saturating_sub(window - 1)..=end] {
            for w in words {
                *counts.entry(format!("k{w}")).or_insert(0) += 1;
            }
        }
        counts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn incremental_window_with_inverse_equals_recomputed_window(
            batches in prop::collection::vec(prop::collection::vec(0u8..12, 0..20), 1..30),
            window in 1u64..6,
            slide_seed in 1u64..6,
        ) {
            let slide = slide_seed.min(window);
            let snapshot = snapshot();
            let key = TypeDesc::String;
            let span = Span { window_ms: window * BATCH, slide_ms: slide * BATCH };
            let with_inverse =
                Operator::ReduceByKeyAndWindow { span, reduce: f("sum"), inverse: Some(f("subtract")), key: key.clone() };
            let without = Operator::ReduceByKeyAndWindow { span, reduce: f("sum"), inverse: None, key: key.clone() };
            let (mut a, mut b, mut c) = (WindowState::default(), WindowState::default(), WindowState::default());
            let counting =
                Operator::CountByValueAndWindow { span, key: TypeDesc::Tuple(vec![key.clone(), TypeDesc::Unsigned(64)]) };
            for (i, words) in batches.iter().enumerate() {
                let time = (i as u64 + 1) * BATCH;
                let input = batch(words);
                let incremental = a.step(&with_inverse, time, &input, &snapshot).unwrap();
                let recomputed = b.step(&without, time, &input, &snapshot).unwrap();
                // count_by_value_and_window over the (word, 1) records: counts of each pair.
                let by_value = c.step(&counting, time, &input, &snapshot).unwrap();
                if time.is_multiple_of(slide * BATCH) {
                    let expected = model(&batches, i, window as usize);
                    prop_assert_eq!(decode(&incremental), expected.clone());
                    prop_assert_eq!(decode(&recomputed), expected.clone());
                    let pairs: BTreeMap<String, u64> = by_value
                        .iter()
                        .flat_map(|p| Frames::new(&p.data))
                        .map(|f| postcard::from_bytes::<((String, u64), u64)>(f).unwrap())
                        .map(|((word, _), n)| (word, n))
                        .collect();
                    prop_assert_eq!(pairs, expected);
                } else {
                    prop_assert!(incremental.is_empty() && recomputed.is_empty());
                }
            }
        }
    }

    static FAIL_INVERSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// `subtract`, failing while `FAIL_INVERSE` is set. (`Result<(), String>` is the SDK's
    /// `NativeFunction::call` signature: a guest's error message.)
    fn flaky_subtract(input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if FAIL_INVERSE.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("asked to fail".into());
        }
        (wordcount::__sluice_subtract.call)(input, out)
    }

    #[test]
    fn a_failed_inverse_leaves_the_window_as_it_was() {
        let flaky = sluice_sdk::abi::NativeFunction {
            describe: wordcount::__sluice_subtract.describe,
            params: None,
            fallible: false,
            call: flaky_subtract,
        };
        let version = PluginRuntime::native("wordcount", &[wordcount::__sluice_sum, flaky]);
        let snapshot: Snapshot = Arc::from(vec![Arc::new(version)]);
        let operator = Operator::ReduceByKeyAndWindow {
            span: Span { window_ms: 3 * BATCH, slide_ms: BATCH },
            reduce: f("sum"),
            inverse: Some(f("subtract")),
            key: TypeDesc::String,
        };
        let batches: Vec<Vec<u8>> =
            vec![vec![1; 7], vec![1], vec![1, 2], vec![2], vec![2], vec![2], vec![2], vec![], vec![]];
        let mut window = WindowState::default();
        for (i, words) in batches.iter().enumerate() {
            let time = (i as u64 + 1) * BATCH;
            FAIL_INVERSE.store(i == 3, std::sync::atomic::Ordering::SeqCst);
            let result = window.step(&operator, time, &batch(words), &snapshot);
            if i == 3 {
                let failed = result.unwrap_err();
                assert!(failed.inverse, "the inverse failed, not the reduce");
                continue;
            }
            assert_eq!(decode(&result.unwrap()), model(&batches, i, 3), "window ending at batch {i}");
        }
        FAIL_INVERSE.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn count_reduce_and_records_windows_cover_the_last_batches() {
        let snapshot = snapshot();
        let mut count = WindowState::default();
        let mut records = WindowState::default();
        let batches: Vec<Vec<u8>> = vec![vec![1, 2], vec![3], vec![], vec![4, 5, 6]];
        let count_op = Operator::CountByWindow(Span { window_ms: 2 * BATCH, slide_ms: BATCH });
        let records_op = Operator::Window(Span { window_ms: 3 * BATCH, slide_ms: 3 * BATCH });
        let mut counts = Vec::new();
        for (i, words) in batches.iter().enumerate() {
            let time = (i as u64 + 1) * BATCH;
            let out = count.step(&count_op, time, &batch(words), &snapshot).unwrap();
            counts.push(postcard::from_bytes::<u64>(Frames::new(&out[0].data).next().unwrap()).unwrap());
            let out = records.step(&records_op, time, &batch(words), &snapshot).unwrap();
            if time.is_multiple_of(3 * BATCH) {
                assert_eq!(out.iter().map(|p| p.records).sum::<u64>(), 3, "batches 1..=3 hold 3 records");
            } else {
                assert!(out.is_empty());
            }
        }
        assert_eq!(counts, vec![2, 3, 1, 3]);
    }
}
