//! Operators on partitions. Each plugin call gets a whole partition; the host checks the framing
//! of everything a plugin returns before passing it on.
//!
//! Grouping by key (the map and reduce sides of `reduce_by_key`) never decodes a value: keys are
//! sliced out with [`skip_value`], hashed (Fx) and compared as bytes; the reduce call's input is
//! laid out group by group in one pass, written straight into the guest.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{FRAME_HEADER, Frames, FunctionKind};

use crate::block::Partition;
use crate::codec::{self, skip_value};
use crate::runtime::{CallError, PluginVersion, instance};

fn bad_output(message: String) -> CallError {
    CallError::BadOutput { message }
}

/// Counts the frames of `data`, refusing a truncated buffer.
fn count_frames(data: &[u8]) -> Result<u64, CallError> {
    let mut frames = Frames::new(data);
    let count = frames.by_ref().count() as u64;
    if frames.rest().is_empty() {
        Ok(count)
    } else {
        Err(bad_output(format!("output ends with a truncated frame of {} bytes", frames.rest().len())))
    }
}

/// A record a fallible function failed on: its index in the call's input, and the message.
pub(crate) type RecordFailure = (u32, String);

/// map, flat_map or filter over one partition, appending the output frames to `out` and the
/// records a fallible function failed on to `failures`; returns the number of output records.
pub(super) fn plugin_into(
    version: &PluginVersion,
    function: &str,
    kind: FunctionKind,
    input: &Partition,
    out: &mut Vec<u8>,
    failures: &mut Vec<RecordFailure>,
) -> Result<u64, CallError> {
    let fallible = version.fallible.contains(function);
    if kind == FunctionKind::Filter {
        let mut keep = Vec::with_capacity(input.records as usize);
        instance::call(version, function, &input.data, &mut keep)?;
        let before = failures.len();
        if fallible {
            take_failures(&mut keep, input.records, failures)?;
        }
        if keep.len() as u64 != input.records {
            return Err(bad_output(format!("filter returned {} decisions for {} records", keep.len(), input.records)));
        }
        if let Some((index, _)) = failures[before..].iter().find(|(index, _)| keep[*index as usize] != 0) {
            return Err(bad_output(format!("filter kept record {index}, which it also failed")));
        }
        let mut records = 0;
        for (&decision, frame) in keep.iter().zip(Frames::new(&input.data)) {
            if decision != 0 {
                codec::push_frame(out, frame);
                records += 1;
            }
        }
        return Ok(records);
    }
    let start = out.len();
    instance::call(version, function, &input.data, out)?;
    let before = failures.len();
    if fallible {
        let mut output = out.split_off(start);
        take_failures(&mut output, input.records, failures)?;
        out.extend_from_slice(&output);
    }
    let records = count_frames(&out[start..])?;
    let failed = (failures.len() - before) as u64;
    if kind == FunctionKind::Map && records + failed != input.records {
        return Err(bad_output(format!(
            "map returned {records} records and {failed} errors for {} inputs",
            input.records
        )));
    }
    Ok(records)
}

/// Takes a fallible function's errors off the end of its `output` (see `sluice_sdk::abi`).
fn take_failures(output: &mut Vec<u8>, inputs: u64, failures: &mut Vec<RecordFailure>) -> Result<(), CallError> {
    let Some(at) = output.len().checked_sub(4) else {
        return Err(bad_output("a fallible function's output ends without its errors' length".into()));
    };
    let len = u32::from_le_bytes(output[at..].try_into().expect("4 bytes")) as usize;
    let Some(start) = at.checked_sub(len) else {
        return Err(bad_output(format!("its errors' length ({len} bytes) exceeds its output")));
    };
    let before = failures.len();
    let mut frames = Frames::new(&output[start..at]);
    for frame in frames.by_ref() {
        let (index, message): RecordFailure = postcard::from_bytes(frame)
            .map_err(|err| bad_output(format!("a record's error does not decode: {err}")))?;
        if u64::from(index) >= inputs {
            return Err(bad_output(format!("an error names record {index} of {inputs}")));
        }
        if failures[before..].last().is_some_and(|(last, _)| index <= *last) {
            return Err(bad_output(format!("its errors name record {index} out of order or twice")));
        }
        failures.push((index, message));
    }
    if !frames.rest().is_empty() {
        return Err(bad_output("its errors end with a truncated frame".into()));
    }
    output.truncate(start);
    Ok(())
}

/// map, flat_map or filter over one partition, with the records a fallible function failed on.
pub(super) fn plugin(
    version: &PluginVersion,
    function: &str,
    kind: FunctionKind,
    input: &Partition,
) -> Result<(Partition, Vec<RecordFailure>), CallError> {
    let mut data = Vec::new();
    let mut failures = Vec::new();
    let records = plugin_into(version, function, kind, input, &mut data, &mut failures)?;
    Ok((Partition { data, records }, failures))
}

#[inline]
fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    hasher.finish()
}

/// The partition a key belongs to among `n`. Stable across runs and processes. Uses the high
/// half of the hash: the low bits pick buckets in the per-partition hash tables.
pub(super) fn partition_of(key: &[u8], n: usize) -> usize {
    (((hash_key(key) >> 32) * n as u64) >> 32) as usize
}

/// Splits a keyed record into key and value bytes.
#[inline]
pub(super) fn split<'a>(key_ty: &TypeDesc, frame: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), CallError> {
    let at = skip_value(key_ty, frame)
        .ok_or_else(|| bad_output(format!("a keyed record does not start with a {key_ty} key")))?;
    Ok(frame.split_at(at))
}

/// Distinct keys of some keyed partitions, in first-seen order, with each record's group.
struct Groups<'a> {
    keys: Vec<&'a [u8]>,
    hashes: Vec<u64>,
    /// Values per group.
    counts: Vec<u32>,
    /// Bytes of the group's value frames.
    bytes: Vec<usize>,
    /// The first value of each group (all of it, for groups of one).
    first: Vec<&'a [u8]>,
    /// Group of each record, in input order.
    of_record: Vec<u32>,
}

impl<'a> Groups<'a> {
    fn build(key_ty: &TypeDesc, inputs: &[&'a [u8]]) -> Result<Self, CallError> {
        let records: usize = inputs.iter().map(|i| i.len() / 8).sum();
        let mut groups = Groups {
            keys: Vec::new(),
            hashes: Vec::new(),
            counts: Vec::new(),
            bytes: Vec::new(),
            first: Vec::new(),
            of_record: Vec::with_capacity(records),
        };
        let mut table: HashTable<u32> = HashTable::with_capacity(1024);
        for input in inputs {
            let mut frames = Frames::new(input);
            for frame in frames.by_ref() {
                let (key, value) = split(key_ty, frame)?;
                let hash = hash_key(key);
                let keys = &groups.keys;
                let group = match table.find(hash, |&g| keys[g as usize] == key) {
                    Some(&group) => group,
                    None => {
                        let group = groups.keys.len() as u32;
                        groups.keys.push(key);
                        groups.hashes.push(hash);
                        groups.counts.push(0);
                        groups.bytes.push(0);
                        groups.first.push(value);
                        let hashes = &groups.hashes;
                        table.insert_unique(hash, group, |&g| hashes[g as usize]);
                        group
                    }
                };
                groups.counts[group as usize] += 1;
                groups.bytes[group as usize] += FRAME_HEADER + value.len();
                groups.of_record.push(group);
            }
            if !frames.rest().is_empty() {
                return Err(bad_output("a partition ends with a truncated frame".into()));
            }
        }
        Ok(groups)
    }
}

/// Combines the values of each key of `inputs` with `function` (one call for all keys that have
/// more than one value; keys with one value pass through without a call, as in Spark), and hands
/// each `(key, combined value)` to `emit`.
pub(super) fn combine_by_key(
    version: &PluginVersion,
    function: &str,
    key_ty: &TypeDesc,
    inputs: &[&[u8]],
    mut emit: impl FnMut(&[u8], &[u8], u32),
) -> Result<(), CallError> {
    let groups = Groups::build(key_ty, inputs)?;
    // Lay the reduce input out group by group: u32 count, then the group's value frames.
    let mut cursor = vec![usize::MAX; groups.keys.len()];
    let mut size = 0;
    for (group, &count) in groups.counts.iter().enumerate() {
        if count > 1 {
            cursor[group] = size;
            size += 4 + groups.bytes[group];
        }
    }
    let mut reduced = Vec::new();
    if size > 0 {
        instance::call_filling(
            version,
            function,
            size,
            |buf| {
                for (group, &count) in groups.counts.iter().enumerate() {
                    if count > 1 {
                        let at = cursor[group];
                        buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
                        cursor[group] += 4;
                    }
                }
                let frames = inputs.iter().flat_map(|input| Frames::new(input));
                for (frame, &group) in frames.zip(&groups.of_record) {
                    let at = cursor[group as usize];
                    if at == usize::MAX {
                        continue;
                    }
                    // The key was found in this frame before; it is found again.
                    let key_len = skip_value(key_ty, frame).unwrap_or(0);
                    let value = &frame[key_len..];
                    buf[at..at + FRAME_HEADER].copy_from_slice(&(value.len() as u32).to_le_bytes());
                    buf[at + FRAME_HEADER..at + FRAME_HEADER + value.len()].copy_from_slice(value);
                    cursor[group as usize] = at + FRAME_HEADER + value.len();
                }
            },
            &mut reduced,
        )?;
    }
    let mut reduced_values = Frames::new(&reduced);
    for (group, key) in groups.keys.iter().enumerate() {
        let value = if groups.counts[group] > 1 {
            reduced_values.next().ok_or_else(|| bad_output("reduce returned fewer values than groups".into()))?
        } else {
            groups.first[group]
        };
        emit(key, value, groups.counts[group]);
    }
    if reduced_values.next().is_some() || !reduced_values.rest().is_empty() {
        return Err(bad_output("reduce returned more values than groups, or a truncated frame".into()));
    }
    Ok(())
}

/// Map side of reduce_by_key: combine within the partition, then route each key to one of
/// `buckets` reduce partitions.
pub(super) fn combine_and_route(
    version: &PluginVersion,
    function: &str,
    key_ty: &TypeDesc,
    input: &[u8],
    buckets: usize,
) -> Result<Vec<Partition>, CallError> {
    let mut out = vec![Partition::default(); buckets];
    combine_by_key(version, function, key_ty, &[input], |key, value, _| {
        let bucket = &mut out[partition_of(key, buckets)];
        codec::push_frame_parts(&mut bucket.data, key, value);
        bucket.records += 1;
    })?;
    Ok(out)
}

/// Reduce side of reduce_by_key: combine what every map side routed to this partition.
pub(super) fn combine(
    version: &PluginVersion,
    function: &str,
    key_ty: &TypeDesc,
    inputs: &[&[u8]],
) -> Result<Partition, CallError> {
    let mut out = Partition::default();
    combine_by_key(version, function, key_ty, inputs, |key, value, _| {
        codec::push_frame_parts(&mut out.data, key, value);
        out.records += 1;
    })?;
    Ok(out)
}

/// Reduces one partition's records to one value with one call: `None` if it has no records.
pub(super) fn reduce_partition(
    version: &PluginVersion,
    function: &str,
    input: &Partition,
) -> Result<Option<Vec<u8>>, CallError> {
    if input.records == 0 {
        return Ok(None);
    }
    let count =
        u32::try_from(input.records).map_err(|_| bad_output("a partition holds over 4 billion records".into()))?;
    let mut out = Vec::new();
    instance::call_filling(
        version,
        function,
        4 + input.data.len(),
        |buf| {
            buf[..4].copy_from_slice(&count.to_le_bytes());
            buf[4..].copy_from_slice(&input.data);
        },
        &mut out,
    )?;
    single_value(&out).map(Some)
}

/// Reduces `values` (postcard values, not frames) to one with one call.
pub(super) fn reduce_values(version: &PluginVersion, function: &str, values: &[&[u8]]) -> Result<Vec<u8>, CallError> {
    let mut reduced = reduce_groups(version, function, &[values.to_vec()])?;
    Ok(reduced.pop().expect("one value per group"))
}

/// Reduces each group of values (postcard values, not frames) to one, in one call for all groups
/// of more than one value; a group of one is its value, without a call (as in Spark).
pub(super) fn reduce_groups(
    version: &PluginVersion,
    function: &str,
    groups: &[Vec<&[u8]>],
) -> Result<Vec<Vec<u8>>, CallError> {
    let mut input = Vec::new();
    let mut several = 0;
    for group in groups.iter().filter(|g| g.len() > 1) {
        input.extend_from_slice(&(group.len() as u32).to_le_bytes());
        for value in group {
            codec::push_frame(&mut input, value);
        }
        several += 1;
    }
    let mut out = Vec::new();
    if several > 0 {
        instance::call(version, function, &input, &mut out)?;
    }
    let mut frames = Frames::new(&out);
    let reduced: Vec<&[u8]> = frames.by_ref().collect();
    if reduced.len() != several || !frames.rest().is_empty() {
        return Err(bad_output(format!("reduce returned {} values for {several} groups", reduced.len())));
    }
    let mut reduced = reduced.into_iter();
    Ok(groups
        .iter()
        .map(|group| if group.len() > 1 { reduced.next().expect("counted above") } else { group[0] }.to_vec())
        .collect())
}

fn single_value(out: &[u8]) -> Result<Vec<u8>, CallError> {
    let mut frames = Frames::new(out);
    match (frames.next(), frames.next(), frames.rest().is_empty()) {
        (Some(value), None, true) => Ok(value.to_vec()),
        _ => Err(bad_output("reduce returned other than one value for one group".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(failures: &[(u32, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for failure in failures {
            codec::write_frame(&mut out, failure).unwrap();
        }
        let len = out.len() as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    #[test]
    fn a_fallible_functions_errors_come_off_the_end_of_its_output() {
        let mut output = vec![1, 0, 1];
        output.extend(trailer(&[(1, "no")]));
        let mut failures = Vec::new();
        take_failures(&mut output, 3, &mut failures).unwrap();
        assert_eq!((output, failures), (vec![1, 0, 1], vec![(1, "no".to_string())]));
    }

    #[test]
    fn a_broken_errors_trailer_is_bad_output_not_a_panic() {
        let err =
            |mut output: Vec<u8>, inputs| take_failures(&mut output, inputs, &mut Vec::new()).unwrap_err().to_string();
        assert!(err(vec![1, 2], 1).contains("ends without its errors' length"));
        assert!(err(vec![0, 9, 0, 0, 0], 1).contains("exceeds its output"));
        assert!(err(trailer(&[(5, "x")]), 3).contains("names record 5 of 3"));
        assert!(err(trailer(&[(1, "x"), (1, "y")]), 3).contains("out of order or twice"));
        let mut garbage = vec![2, 0, 0, 0, 0xff, 0xff];
        garbage.extend_from_slice(&6u32.to_le_bytes());
        assert!(err(garbage, 3).contains("does not decode"));
    }
}
