//! Operators on partitions. Each plugin call gets a whole partition; the host checks the framing
//! of everything a plugin returns before passing it on.

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{self, Frames, FunctionKind};

use super::Partition;
use super::keys::skip_value;
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

/// map, flat_map or filter over one partition.
pub(super) fn plugin(
    version: &PluginVersion,
    function: &str,
    kind: FunctionKind,
    input: &Partition,
) -> Result<Partition, CallError> {
    match kind {
        FunctionKind::Filter => {
            let mut keep = Vec::with_capacity(input.records as usize);
            instance::call(version, function, &input.data, &mut keep)?;
            if keep.len() as u64 != input.records {
                return Err(bad_output(format!(
                    "filter returned {} decisions for {} records",
                    keep.len(),
                    input.records
                )));
            }
            let mut out = Partition::default();
            let mut frames = Frames::new(&input.data);
            for (&decision, frame) in keep.iter().zip(frames.by_ref()) {
                if decision != 0 {
                    abi::push_frame(&mut out.data, frame);
                    out.records += 1;
                }
            }
            Ok(out)
        }
        _ => {
            let mut data = Vec::with_capacity(input.data.len() * 2);
            instance::call(version, function, &input.data, &mut data)?;
            let records = count_frames(&data)?;
            if kind == FunctionKind::Map && records != input.records {
                return Err(bad_output(format!("map returned {records} records for {} inputs", input.records)));
            }
            Ok(Partition { data, records })
        }
    }
}

/// The partition a key belongs to among `n`. Stable across runs and processes.
pub(super) fn partition_of(key: &[u8], n: usize) -> usize {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    (hasher.finish() % n as u64) as usize
}

/// Splits a keyed record into key and value bytes.
fn split<'a>(key_ty: &TypeDesc, frame: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), CallError> {
    let at = skip_value(key_ty, frame)
        .ok_or_else(|| bad_output(format!("a keyed record does not start with a {key_ty} key")))?;
    Ok(frame.split_at(at))
}

/// Combines the values of each key of `input` with `function` (one call for all keys that have
/// more than one value; keys with one value pass through without a call, as in Spark), and hands
/// each `(key, combined value)` to `emit`.
pub(super) fn combine_by_key(
    version: &PluginVersion,
    function: &str,
    key_ty: &TypeDesc,
    inputs: &[&Partition],
    mut emit: impl FnMut(&[u8], &[u8]),
) -> Result<(), CallError> {
    let mut index: FxHashMap<&[u8], u32> = FxHashMap::default();
    let mut groups: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for input in inputs {
        let mut frames = Frames::new(&input.data);
        for frame in frames.by_ref() {
            let (key, value) = split(key_ty, frame)?;
            let group = *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                (groups.len() - 1) as u32
            });
            groups[group as usize].1.push(value);
        }
        if !frames.rest().is_empty() {
            return Err(bad_output("a partition ends with a truncated frame".into()));
        }
    }
    let mut call_input = Vec::new();
    for (_, values) in groups.iter().filter(|(_, values)| values.len() > 1) {
        call_input.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for value in values {
            abi::push_frame(&mut call_input, value);
        }
    }
    let mut reduced = Vec::new();
    if !call_input.is_empty() {
        instance::call(version, function, &call_input, &mut reduced)?;
    }
    let mut reduced_values = Frames::new(&reduced);
    for (key, values) in &groups {
        let value = if values.len() > 1 {
            reduced_values.next().ok_or_else(|| bad_output("reduce returned fewer values than groups".into()))?
        } else {
            values[0]
        };
        emit(key, value);
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
    input: &Partition,
    buckets: usize,
) -> Result<Vec<Partition>, CallError> {
    let mut out = vec![Partition::default(); buckets];
    combine_by_key(version, function, key_ty, &[input], |key, value| {
        let bucket = &mut out[partition_of(key, buckets)];
        abi::push_frame_parts(&mut bucket.data, key, value);
        bucket.records += 1;
    })?;
    Ok(out)
}

/// Reduce side of reduce_by_key: combine what every map side routed to this partition.
pub(super) fn combine(
    version: &PluginVersion,
    function: &str,
    key_ty: &TypeDesc,
    inputs: &[&Partition],
) -> Result<Partition, CallError> {
    let mut out = Partition::default();
    combine_by_key(version, function, key_ty, inputs, |key, value| {
        abi::push_frame_parts(&mut out.data, key, value);
        out.records += 1;
    })?;
    Ok(out)
}
