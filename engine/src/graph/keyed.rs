//! Host-only operators: no plugin call, nothing decoded but keys. Records keep their bytes;
//! the host only builds new tuples around them, in the formats of [`crate::codec`].
//!
//! They produce one partition per batch (their input is already combined or small); what follows
//! them runs on that partition. Output order is deterministic: keys in first-seen order.

use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;

use super::ops::split;
use crate::block::{Partition, records as frames};
use crate::codec::{self, push_seq, read_varint, write_varint};
use crate::config::JoinHow;
use crate::runtime::CallError;

/// Folds postcard `u64` counts with `f` (left to right) into one encoded count.
pub(super) fn fold_counts(counts: &[&[u8]], f: fn(u64, u64) -> u64) -> Vec<u8> {
    let count = |v: &[u8]| read_varint(v, &mut 0).unwrap_or(0) as u64;
    let total = counts.iter().skip(1).fold(counts.first().map_or(0, |v| count(v)), |acc, v| f(acc, count(v)));
    let mut out = Vec::new();
    write_varint(&mut out, total);
    out
}

/// Keys in first-seen order, each with its values.
struct ByKey<'a> {
    index: FxHashMap<&'a [u8], usize>,
    keys: Vec<(&'a [u8], Vec<&'a [u8]>)>,
}

impl<'a> ByKey<'a> {
    fn new() -> Self {
        Self { index: FxHashMap::default(), keys: Vec::new() }
    }

    fn add(&mut self, key: &'a [u8], value: &'a [u8]) {
        let keys = &mut self.keys;
        let at = *self.index.entry(key).or_insert_with(|| {
            keys.push((key, Vec::new()));
            keys.len() - 1
        });
        self.keys[at].1.push(value);
    }
}

/// `(record, count)` per distinct record.
pub(super) fn count_by_value(parts: &[Partition]) -> Partition {
    let mut counts: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut order: Vec<(&[u8], u64)> = Vec::new();
    for record in frames(parts) {
        let at = *counts.entry(record).or_insert_with(|| {
            order.push((record, 0));
            order.len() - 1
        });
        order[at].1 += 1;
    }
    let mut out = Partition::default();
    let mut count = Vec::new();
    for (record, n) in order {
        count.clear();
        write_varint(&mut count, n);
        codec::push_frame_parts(&mut out.data, record, &count);
        out.records += 1;
    }
    out
}

/// `(K, Vec<V>)` per key.
pub(super) fn group_by_key(key_ty: &TypeDesc, parts: &[Partition]) -> Result<Partition, CallError> {
    let mut groups = ByKey::new();
    for frame in frames(parts) {
        let (key, value) = split(key_ty, frame)?;
        groups.add(key, value);
    }
    let mut out = Partition::default();
    let mut record = Vec::new();
    for (key, values) in &groups.keys {
        record.clear();
        record.extend_from_slice(key);
        push_seq(&mut record, values);
        codec::push_frame(&mut out.data, &record);
        out.records += 1;
    }
    Ok(out)
}

/// A key with its left and right values.
type Sides<'a> = (&'a [u8], Vec<&'a [u8]>, Vec<&'a [u8]>);

/// Left and right values per key, keys in first-seen order (left side first).
fn sides<'a>(key_ty: &TypeDesc, left: &'a [Partition], right: &'a [Partition]) -> Result<Vec<Sides<'a>>, CallError> {
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut keys: Vec<Sides<'a>> = Vec::new();
    for (side, parts) in [(0, left), (1, right)] {
        for frame in frames(parts) {
            let (key, value) = split(key_ty, frame)?;
            let at = *index.entry(key).or_insert_with(|| {
                keys.push((key, Vec::new(), Vec::new()));
                keys.len() - 1
            });
            if side == 0 {
                keys[at].1.push(value);
            } else {
                keys[at].2.push(value);
            }
        }
    }
    Ok(keys)
}

/// Joins two keyed streams: one output record per matching pair (and per unmatched value on
/// the outer sides, with `None` for the missing side).
pub(super) fn join(
    how: JoinHow,
    key_ty: &TypeDesc,
    left: &[Partition],
    right: &[Partition],
) -> Result<Partition, CallError> {
    let mut out = Partition::default();
    let mut record = Vec::new();
    let (left_optional, right_optional) = match how {
        JoinHow::Inner => (false, false),
        JoinHow::Left => (false, true),
        JoinHow::Right => (true, false),
        JoinHow::Full => (true, true),
    };
    let mut emit = |key: &[u8], l: Option<&[u8]>, r: Option<&[u8]>| {
        record.clear();
        record.extend_from_slice(key);
        for (value, optional) in [(l, left_optional), (r, right_optional)] {
            match (value, optional) {
                (Some(value), false) => record.extend_from_slice(value),
                (Some(value), true) => {
                    record.push(1);
                    record.extend_from_slice(value);
                }
                (None, _) => record.push(0),
            }
        }
        codec::push_frame(&mut out.data, &record);
        out.records += 1;
    };
    for (key, lefts, rights) in sides(key_ty, left, right)? {
        match (lefts.is_empty(), rights.is_empty()) {
            (false, false) => {
                for l in &lefts {
                    for r in &rights {
                        emit(key, Some(l), Some(r));
                    }
                }
            }
            (false, true) if right_optional => lefts.iter().for_each(|l| emit(key, Some(l), None)),
            (true, false) if left_optional => rights.iter().for_each(|r| emit(key, None, Some(r))),
            _ => {}
        }
    }
    Ok(out)
}

/// `(K, (Vec<V>, Vec<W>))` per key of either side.
pub(super) fn cogroup(key_ty: &TypeDesc, left: &[Partition], right: &[Partition]) -> Result<Partition, CallError> {
    let mut out = Partition::default();
    let mut record = Vec::new();
    for (key, lefts, rights) in sides(key_ty, left, right)? {
        record.clear();
        record.extend_from_slice(key);
        push_seq(&mut record, &lefts);
        push_seq(&mut record, &rights);
        codec::push_frame(&mut out.data, &record);
        out.records += 1;
    }
    Ok(out)
}

/// Records spread round-robin over `n` partitions.
pub(super) fn repartition(parts: &[Partition], n: usize) -> Vec<Partition> {
    let mut out = vec![Partition::default(); n];
    for (i, record) in frames(parts).enumerate() {
        let part = &mut out[i % n];
        codec::push_frame(&mut part.data, record);
        part.records += 1;
    }
    out
}

/// One partition holding all records of `parts`.
pub(super) fn concat(parts: &[Partition]) -> Partition {
    let mut out = Partition { data: Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum()), records: 0 };
    for part in parts {
        out.data.extend_from_slice(&part.data);
        out.records += part.records;
    }
    out
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // the decoded types, spelled out, are the point of these tests
mod tests {
    use super::*;
    use serde::Serialize;
    use sluice_sdk::abi::Frames;

    fn part<T: Serialize>(records: &[T]) -> Partition {
        let mut p = Partition::default();
        for r in records {
            crate::codec::write_frame(&mut p.data, r).unwrap();
            p.records += 1;
        }
        p
    }

    fn decode<T: for<'a> serde::Deserialize<'a>>(p: &Partition) -> Vec<T> {
        Frames::new(&p.data).map(|f| postcard::from_bytes(f).unwrap()).collect()
    }

    #[test]
    fn joins_match_a_nested_loop_reference() {
        let left = [part(&[("a", 1u32), ("b", 2), ("a", 3)])];
        let right = [part(&[("a", "x".to_string()), ("c", "y".to_string())])];
        let inner: Vec<(String, (u32, String))> =
            decode(&join(JoinHow::Inner, &TypeDesc::String, &left, &right).unwrap());
        assert_eq!(inner, vec![("a".into(), (1, "x".into())), ("a".into(), (3, "x".into()))]);
        let full: Vec<(String, (Option<u32>, Option<String>))> =
            decode(&join(JoinHow::Full, &TypeDesc::String, &left, &right).unwrap());
        assert_eq!(
            full,
            vec![
                ("a".into(), (Some(1), Some("x".into()))),
                ("a".into(), (Some(3), Some("x".into()))),
                ("b".into(), (Some(2), None)),
                ("c".into(), (None, Some("y".into()))),
            ]
        );
        let left_join: Vec<(String, (u32, Option<String>))> =
            decode(&join(JoinHow::Left, &TypeDesc::String, &left, &right).unwrap());
        assert_eq!(left_join.len(), 3);
        let right_join: Vec<(String, (Option<u32>, String))> =
            decode(&join(JoinHow::Right, &TypeDesc::String, &left, &right).unwrap());
        assert_eq!(right_join.last().unwrap(), &("c".into(), (None, "y".into())));
    }

    #[test]
    fn cogroup_group_by_key_and_count_by_value_decode_as_their_types() {
        let left = [part(&[("a", 1u32), ("b", 2), ("a", 3)])];
        let right = [part(&[("a", 9u32)])];
        let grouped: Vec<(String, (Vec<u32>, Vec<u32>))> = decode(&cogroup(&TypeDesc::String, &left, &right).unwrap());
        assert_eq!(grouped, vec![("a".into(), (vec![1, 3], vec![9])), ("b".into(), (vec![2], vec![]))]);
        let by_key: Vec<(String, Vec<u32>)> = decode(&group_by_key(&TypeDesc::String, &left).unwrap());
        assert_eq!(by_key, vec![("a".into(), vec![1, 3]), ("b".into(), vec![2])]);
        let counts: Vec<(String, u64)> = decode(&count_by_value(&[part(&["x", "y", "x", "x"])]));
        assert_eq!(counts, vec![("x".into(), 3), ("y".into(), 1)]);
        let spread = repartition(&[part(&[1u8, 2, 3, 4, 5])], 2);
        assert_eq!((decode::<u8>(&spread[0]), decode::<u8>(&spread[1])), (vec![1, 3, 5], vec![2, 4]));
    }
}
