//! Event-time windows per key: tumbling, sliding and session windows, closed by a watermark.
//!
//! Each record has an event time (from a `timestamp` plugin function, or its batch time). The
//! watermark is the largest event time seen minus the allowed lateness; it only moves forward.
//! After each batch, every window whose end the watermark has reached is emitted as
//! `(K, (start, end, value))` and forgotten. A record is *late* when every window it belongs to
//! has already been emitted (its end is at or before the watermark when the record arrives): it
//! is counted and sent to the stage's `<name>.late` stream instead. On the pipeline's last batch
//! (its sources ended, or a graceful stop) every open window is emitted.
//!
//! Values are combined with the stage's reduce function (one call per batch for all windows that
//! changed), or counted (`u64`) when it has none. A session is `[first event, last event + gap)`;
//! sessions of a key that come within `gap` of each other merge.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::Frames;

use super::keyed::fold_counts;
use super::ops::{self, split};
use crate::block::Partition;
use crate::block::records as frames;
use crate::codec::{self, read_varint, write_varint};
use crate::runtime::{CallError, PluginVersion};

/// How records are assigned to windows, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assigner {
    /// `[n·len, (n+1)·len)`.
    Tumbling(u64),
    /// Windows of `len` starting every `slide`.
    Sliding(u64, u64),
    /// Per key, events less than `gap` apart share a window.
    Session(u64),
}

impl Assigner {
    /// Starts of the windows holding `ts`.
    fn starts(self, ts: u64) -> Vec<u64> {
        match self {
            Assigner::Tumbling(len) => vec![ts - ts % len],
            Assigner::Sliding(len, slide) => {
                let last = ts - ts % slide;
                (0..len / slide)
                    .map(|i| i * slide)
                    .take_while(|back| *back <= last)
                    .map(|back| last - back)
                    .filter(|s| s.checked_add(len).is_none_or(|end| end > ts))
                    .collect()
            }
            Assigner::Session(_) => vec![ts],
        }
    }

    /// The latest end of a window holding `ts`: once the watermark reaches it, `ts` is late.
    fn last_end(self, ts: u64) -> u64 {
        match self {
            Assigner::Tumbling(len) => (ts - ts % len).saturating_add(len),
            Assigner::Sliding(len, slide) => (ts - ts % slide).saturating_add(len),
            Assigner::Session(gap) => ts.saturating_add(gap),
        }
    }
}

/// How values of a window combine.
pub(super) enum Combine<'a> {
    Reduce(&'a PluginVersion, &'a str),
    Count,
}

impl Combine<'_> {
    /// The value one record contributes.
    fn value(&self, value: &[u8]) -> Vec<u8> {
        match self {
            Combine::Reduce(..) => value.to_vec(),
            Combine::Count => vec![1],
        }
    }

    /// Each group combined into one value; one call for all groups.
    fn groups(&self, groups: &[Vec<&[u8]>]) -> Result<Vec<Vec<u8>>, CallError> {
        match self {
            Combine::Reduce(version, function) => ops::reduce_groups(version, function, groups),
            Combine::Count => Ok(groups.iter().map(|g| fold_counts(g, u64::wrapping_add)).collect()),
        }
    }
}

/// New values per (key, window start), with the window's end.
type Added = BTreeMap<(Vec<u8>, u64), (u64, Vec<Vec<u8>>)>;

/// A session being merged: start, end, values.
type Span = (u64, u64, Vec<Vec<u8>>);

/// A window of one key: its end and its value so far.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Open {
    end: u64,
    value: Vec<u8>,
}

/// One event-window stage's state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct EventWindowState {
    max_event_time: Option<u64>,
    /// (key, window start) → window. For sessions, one entry per session.
    open: BTreeMap<(Vec<u8>, u64), Open>,
    /// Late records so far.
    pub late: u64,
}

impl EventWindowState {
    /// The watermark: max event time seen − allowed lateness.
    pub(crate) fn watermark(&self, lateness: u64) -> Option<u64> {
        self.max_event_time.map(|t| t.saturating_sub(lateness))
    }

    /// Takes one batch's records and their event times; returns the windows the watermark closed
    /// (all of them if `last`) and the late records. `clock`: with ingestion time (no timestamp
    /// function) the batch time, which moves the watermark even when no record arrives.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        assigner: Assigner,
        lateness: u64,
        key_ty: &TypeDesc,
        input: &[Partition],
        event_times: &[u64],
        combine: &Combine<'_>,
        clock: Option<u64>,
        last: bool,
    ) -> Result<(Vec<Partition>, Vec<Partition>), CallError> {
        let watermark = self.watermark(lateness);
        let mut late = Partition::default();
        // New values per (key, window start), with the window's end.
        let mut added = Added::new();
        for (record, &ts) in frames(input).zip(event_times) {
            if watermark.is_some_and(|w| assigner.last_end(ts) <= w) {
                codec::push_frame(&mut late.data, record);
                late.records += 1;
                continue;
            }
            let (key, value) = split(key_ty, record)?;
            for start in assigner.starts(ts) {
                let end = match assigner {
                    Assigner::Tumbling(len) | Assigner::Sliding(len, _) => start.saturating_add(len),
                    Assigner::Session(gap) => ts.saturating_add(gap),
                };
                // A sliding window the watermark already closed is not reopened.
                if watermark.is_some_and(|w| end <= w) {
                    continue;
                }
                let entry = added.entry((key.to_vec(), start)).or_insert((end, Vec::new()));
                entry.0 = entry.0.max(end);
                entry.1.push(combine.value(value));
            }
        }
        self.late += late.records;
        let max_new = event_times.iter().copied().max();
        self.max_event_time = self.max_event_time.max(max_new).max(clock);
        if let Assigner::Session(_) = assigner {
            self.merge_sessions(added, combine)?;
        } else {
            self.add_windows(added, combine)?;
        }
        let close_until = if last { u64::MAX } else { self.watermark(lateness).unwrap_or(0) };
        let mut out = Partition::default();
        let closed: Vec<(Vec<u8>, u64)> =
            self.open.iter().filter(|(_, w)| w.end <= close_until).map(|(k, _)| k.clone()).collect();
        for (key, start) in closed {
            let window = self.open.remove(&(key.clone(), start)).expect("listed above");
            let mut record = key;
            write_varint(&mut record, start);
            write_varint(&mut record, window.end);
            record.extend_from_slice(&window.value);
            codec::push_frame(&mut out.data, &record);
            out.records += 1;
        }
        Ok((vec![out], vec![late]))
    }

    fn add_windows(&mut self, added: Added, combine: &Combine<'_>) -> Result<(), CallError> {
        let groups: Vec<Vec<&[u8]>> = added
            .iter()
            .map(|(id, (_, values))| {
                let mut group: Vec<&[u8]> = self.open.get(id).map(|w| vec![w.value.as_slice()]).unwrap_or_default();
                group.extend(values.iter().map(Vec::as_slice));
                group
            })
            .collect();
        let combined = combine.groups(&groups)?;
        for ((id, (end, _)), value) in added.into_iter().zip(combined) {
            self.open.insert(id, Open { end, value });
        }
        Ok(())
    }

    /// Adds new events to each key's sessions, merging sessions that come within the gap.
    fn merge_sessions(&mut self, added: Added, combine: &Combine<'_>) -> Result<(), CallError> {
        let mut by_key: FxHashMap<Vec<u8>, Vec<Span>> = FxHashMap::default();
        for ((key, start), (end, values)) in added {
            by_key.entry(key).or_default().push((start, end, values));
        }
        // Per key: existing sessions + new events, sorted by start, merged when they overlap.
        let mut merged: Vec<(Vec<u8>, Span)> = Vec::new();
        for (key, new) in by_key {
            let mut spans: Vec<Span> = new;
            let existing: Vec<u64> =
                self.open.range((key.clone(), 0)..=(key.clone(), u64::MAX)).map(|((_, start), _)| *start).collect();
            for start in existing {
                let window = self.open.remove(&(key.clone(), start)).expect("listed above");
                spans.push((start, window.end, vec![window.value]));
            }
            spans.sort_by_key(|(start, _, _)| *start);
            let mut current: Option<Span> = None;
            for (start, end, values) in spans {
                current = match current {
                    Some((s, e, mut vs)) if start < e => {
                        vs.extend(values);
                        Some((s, e.max(end), vs))
                    }
                    Some(done) => {
                        merged.push((key.clone(), done));
                        Some((start, end, values))
                    }
                    None => Some((start, end, values)),
                };
            }
            if let Some(done) = current {
                merged.push((key.clone(), done));
            }
        }
        let groups: Vec<Vec<&[u8]>> =
            merged.iter().map(|(_, (_, _, values))| values.iter().map(Vec::as_slice).collect()).collect();
        let combined = combine.groups(&groups)?;
        for ((key, (start, end, _)), value) in merged.into_iter().zip(combined) {
            self.open.insert((key, start), Open { end, value });
        }
        Ok(())
    }
}

/// `time_field`: where in a keyed record `(K, V)` the event time is — a field of the struct V.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimeField {
    key: TypeDesc,
    /// The fields before it, skipped.
    before: Vec<TypeDesc>,
    /// Its type: `i64`/`u64` (any width), or an `Option` of one.
    ty: TypeDesc,
}

/// Why `time_field` names no event time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimeFieldError {
    /// The values are no struct.
    #[error("expected the values to be a struct with a field `{field}`, found {found}")]
    NotAStruct {
        /// The field asked for.
        field: String,
        /// The value type.
        found: TypeDesc,
    },
    /// The struct has no such field.
    #[error("{struct_name} has no field `{field}` (its fields: {})", fields.join(", "))]
    NoSuchField {
        /// The field asked for.
        field: String,
        /// The struct.
        struct_name: String,
        /// The fields it has.
        fields: Vec<String>,
    },
    /// The field holds no integer.
    #[error("`{field}` of {struct_name} is {found}: expected ms since the epoch, an integer or an Option of one")]
    NotATime {
        /// The field asked for.
        field: String,
        /// The struct.
        struct_name: String,
        /// The field's type.
        found: TypeDesc,
    },
}

impl TimeField {
    /// The field `name` of the value type, if it holds a time.
    pub(super) fn find(key: &TypeDesc, value: &TypeDesc, name: &str) -> Result<Self, TimeFieldError> {
        let TypeDesc::Struct { name: struct_name, fields } = value else {
            return Err(TimeFieldError::NotAStruct { field: name.to_string(), found: value.clone() });
        };
        let Some(at) = fields.iter().position(|(field, _)| field == name) else {
            return Err(TimeFieldError::NoSuchField {
                field: name.to_string(),
                struct_name: struct_name.clone(),
                fields: fields.iter().map(|(n, _)| n.clone()).collect(),
            });
        };
        let ty = fields[at].1.clone();
        let integer = |t: &TypeDesc| matches!(t, TypeDesc::Signed(_) | TypeDesc::Unsigned(_));
        let fits = integer(&ty) || matches!(&ty, TypeDesc::Option(inner) if integer(inner));
        if !fits {
            return Err(TimeFieldError::NotATime {
                field: name.to_string(),
                struct_name: struct_name.clone(),
                found: ty,
            });
        }
        Ok(Self { key: key.clone(), before: fields[..at].iter().map(|(_, t)| t.clone()).collect(), ty })
    }

    /// Each record's event time; `batch` for a record without one (`None`, negative, or
    /// undecodable).
    pub(super) fn times(&self, input: &[Partition], batch: u64) -> Vec<u64> {
        frames(input).map(|record| self.time(record).unwrap_or(batch)).collect()
    }

    fn time(&self, record: &[u8]) -> Option<u64> {
        let mut pos = codec::skip_value(&self.key, record)?;
        for ty in &self.before {
            pos += codec::skip_value(ty, record.get(pos..)?)?;
        }
        let mut ty = &self.ty;
        if let TypeDesc::Option(inner) = ty {
            if *record.get(pos)? == 0 {
                return None;
            }
            pos += 1;
            ty = inner;
        }
        let time = match ty {
            TypeDesc::Unsigned(8) => u64::from(*record.get(pos)?),
            TypeDesc::Signed(8) => u64::try_from(*record.get(pos)? as i8).ok()?,
            TypeDesc::Unsigned(_) => u64::try_from(read_varint(record, &mut pos)?).ok()?,
            TypeDesc::Signed(_) => {
                let zigzag = read_varint(record, &mut pos)?;
                let value = (zigzag >> 1) as i128 ^ -((zigzag & 1) as i128);
                u64::try_from(value).ok()?
            }
            _ => return None,
        };
        Some(time)
    }
}

/// Event times of records from a `timestamp` function's output: one `u64` frame per record.
pub(super) fn event_times(output: &[u8], records: u64) -> Result<Vec<u64>, CallError> {
    let mut frames = Frames::new(output);
    let times: Vec<u64> = frames.by_ref().map(|f| read_varint(f, &mut 0).unwrap_or(0) as u64).collect();
    if times.len() as u64 != records || !frames.rest().is_empty() {
        return Err(CallError::BadOutput {
            message: format!("timestamp returned {} times for {records} records", times.len()),
        });
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: &[(&str, u64)]) -> (Vec<Partition>, Vec<u64>) {
        let mut part = Partition::default();
        for (user, _) in events {
            crate::codec::write_frame(&mut part.data, &(*user, 1u64)).unwrap();
            part.records += 1;
        }
        (vec![part], events.iter().map(|(_, ts)| *ts).collect())
    }

    fn decode(parts: &[Partition]) -> Vec<(String, (u64, u64, u64))> {
        parts.iter().flat_map(|p| Frames::new(&p.data)).map(|f| postcard::from_bytes(f).unwrap()).collect()
    }

    /// The reference sessionizer: sort each user's events, split where the gap is reached.
    fn sessionize(events: &[(&str, u64)], gap: u64) -> Vec<(String, (u64, u64, u64))> {
        let mut by_user: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (user, ts) in events {
            by_user.entry(user).or_default().push(*ts);
        }
        let mut sessions = Vec::new();
        for (user, mut times) in by_user {
            times.sort();
            let (mut start, mut last, mut n) = (times[0], times[0], 0);
            for ts in times {
                if ts >= last + gap {
                    sessions.push((user.to_string(), (start, last + gap, n)));
                    start = ts;
                    n = 0;
                }
                last = ts;
                n += 1;
            }
            sessions.push((user.to_string(), (start, last + gap, n)));
        }
        sessions.sort();
        sessions
    }

    #[test]
    fn sessions_match_a_reference_sessionizer_whatever_the_batching() {
        let events: Vec<(&str, u64)> = vec![
            ("ann", 1_000),
            ("bob", 1_500),
            ("ann", 3_000),
            ("ann", 9_000),
            ("bob", 20_000),
            ("ann", 8_000),
            ("ann", 4_000),
            ("bob", 24_900),
            ("cy", 30_000),
            ("ann", 40_000),
        ];
        for split_at in [1, 3, 5, 8] {
            let mut state = EventWindowState::default();
            let mut out = Vec::new();
            let batches = [&events[..split_at], &events[split_at..]];
            for (i, chunk) in batches.iter().enumerate() {
                let (input, times) = batch(chunk);
                // No watermark progress matters with lateness this large: everything closes at the end.
                let (closed, late) = state
                    .step(
                        Assigner::Session(5_000),
                        1_000_000,
                        &TypeDesc::String,
                        &input,
                        &times,
                        &Combine::Count,
                        None,
                        i == 1,
                    )
                    .unwrap();
                assert_eq!(late[0].records, 0);
                out.extend(decode(&closed));
            }
            out.sort();
            assert_eq!(out, sessionize(&events, 5_000), "split at {split_at}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn random_sessions_match_the_reference_sessionizer(
            events in proptest::collection::vec((0usize..4, 0u64..100_000), 1..60),
            cuts in proptest::collection::vec(0usize..60, 0..5),
            gap in 1u64..20_000,
        ) {
            let users = ["ann", "bob", "cy", "dee"];
            let events: Vec<(&str, u64)> = events.iter().map(|(u, t)| (users[*u], *t)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
            cuts.push(0);
            cuts.push(events.len());
            cuts.sort();
            let mut state = EventWindowState::default();
            let mut out = Vec::new();
            for (i, w) in cuts.windows(2).enumerate() {
                let (input, times) = batch(&events[w[0]..w[1]]);
                let last = i == cuts.len() - 2;
                let (closed, late) = state
                    .step(Assigner::Session(gap), u64::MAX / 2, &TypeDesc::String, &input, &times, &Combine::Count, None, last)
                    .unwrap();
                proptest::prop_assert_eq!(late[0].records, 0);
                out.extend(decode(&closed));
            }
            out.sort();
            proptest::prop_assert_eq!(out, sessionize(&events, gap));
        }
    }

    #[test]
    fn the_watermark_closes_tumbling_windows_and_late_records_are_set_aside() {
        let mut state = EventWindowState::default();
        let (input, times) = batch(&[("a", 1_000), ("a", 4_000), ("b", 12_000)]);
        let (closed, late) = state
            .step(Assigner::Tumbling(10_000), 1_000, &TypeDesc::String, &input, &times, &Combine::Count, None, false)
            .unwrap();
        // Watermark 11s: window [0, 10s) closes.
        assert_eq!(decode(&closed), vec![("a".to_string(), (0, 10_000, 2))]);
        assert_eq!(late[0].records, 0);
        let (input, times) = batch(&[("a", 9_000), ("b", 15_000)]);
        let (closed, late) = state
            .step(Assigner::Tumbling(10_000), 1_000, &TypeDesc::String, &input, &times, &Combine::Count, None, false)
            .unwrap();
        assert!(decode(&closed).is_empty());
        assert_eq!(late[0].records, 1, "9s belongs to a window the watermark closed");
        assert_eq!(state.late, 1);
        let (closed, _) = state
            .step(Assigner::Tumbling(10_000), 1_000, &TypeDesc::String, &[], &[], &Combine::Count, None, true)
            .unwrap();
        assert_eq!(decode(&closed), vec![("b".to_string(), (10_000, 20_000, 2))]);
    }

    #[test]
    fn a_late_event_in_sliding_windows_only_joins_the_windows_still_open() {
        let mut state = EventWindowState::default();
        let slide = Assigner::Sliding(10_000, 5_000);
        let mut emitted = Vec::new();
        for (i, ts) in [6_000u64, 16_000, 11_000].into_iter().enumerate() {
            let (input, times) = batch(&[("ann", ts)]);
            let (closed, late) =
                state.step(slide, 0, &TypeDesc::String, &input, &times, &Combine::Count, None, i == 2).unwrap();
            assert_eq!(late[0].records, 0);
            emitted.extend(decode(&closed));
        }
        emitted.sort();
        let ann = |start: u64, end: u64, n: u64| ("ann".to_string(), (start, end, n));
        assert_eq!(
            emitted,
            vec![ann(0, 10_000, 1), ann(5_000, 15_000, 1), ann(10_000, 20_000, 2), ann(15_000, 25_000, 1)],
            "[5s, 15s) is emitted once, without the 11s event that came after it closed"
        );
    }

    #[test]
    fn a_time_field_reads_each_records_time_from_its_struct_value() {
        let value = TypeDesc::Struct {
            name: "Click".into(),
            fields: vec![
                ("page".into(), TypeDesc::String),
                ("at".into(), TypeDesc::Option(Box::new(TypeDesc::Signed(64)))),
            ],
        };
        let field = TimeField::find(&TypeDesc::String, &value, "at").unwrap();
        let mut data = Vec::new();
        for at in [Some(1_700_000_000_123i64), None, Some(-5)] {
            sluice_sdk::abi::encode_frame(&mut data, &("user", ("home", at))).unwrap();
        }
        let input = [Partition { data, records: 3 }];
        assert_eq!(field.times(&input, 42), [1_700_000_000_123, 42, 42]);
        assert!(TimeField::find(&TypeDesc::String, &value, "page").unwrap_err().to_string().contains("expected ms"));
        assert!(
            TimeField::find(&TypeDesc::String, &value, "nope")
                .unwrap_err()
                .to_string()
                .contains("its fields: page, at")
        );
    }

    #[test]
    fn event_times_at_the_end_of_time_do_not_overflow() {
        let (input, times) = batch(&[("bob", u64::MAX)]);
        for assigner in [Assigner::Tumbling(10_000), Assigner::Sliding(10_000, 5_000), Assigner::Session(30_000)] {
            let mut state = EventWindowState::default();
            let (closed, _) =
                state.step(assigner, 0, &TypeDesc::String, &input, &times, &Combine::Count, None, true).unwrap();
            let windows = decode(&closed);
            assert!(!windows.is_empty(), "{assigner:?} drops the event");
            for (_, (start, end, _)) in windows {
                assert!(start <= end, "{assigner:?}: [{start}, {end})");
            }
        }
    }

    #[test]
    fn ingestion_time_windows_close_on_the_clock_without_new_records() {
        let mut state = EventWindowState::default();
        let (input, times) = batch(&[("a", 1_000)]);
        let tumbling = Assigner::Tumbling(2_000);
        let (closed, _) =
            state.step(tumbling, 0, &TypeDesc::String, &input, &times, &Combine::Count, Some(1_000), false).unwrap();
        assert!(decode(&closed).is_empty());
        let (closed, _) =
            state.step(tumbling, 0, &TypeDesc::String, &[], &[], &Combine::Count, Some(2_000), false).unwrap();
        assert_eq!(decode(&closed), vec![("a".to_string(), (0, 2_000, 1))]);
    }

    #[test]
    fn sliding_windows_hold_each_event_len_over_slide_times() {
        let starts = Assigner::Sliding(10_000, 5_000).starts(12_000);
        assert_eq!(starts, vec![10_000, 5_000]);
        assert_eq!(Assigner::Sliding(10_000, 5_000).starts(3_000), vec![0]);
        assert_eq!(Assigner::Tumbling(10_000).starts(19_999), vec![10_000]);
    }
}
