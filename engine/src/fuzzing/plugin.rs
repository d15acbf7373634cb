//! The fuzz targets' plugin: one function of every kind, written with the SDK's attributes and
//! run natively (their `__sluice_<fn>` twins), whose outputs a fuzz input edits before the host
//! reads them. The functions are the example plugins' (word count, top-k, sessionize), so the
//! example pipelines build against this plugin too.
//!
//! An edit is one chunk of the fuzz input, for one call, in call order (one worker thread, one
//! partition per stage: the order is fixed). Its first byte says what to do with the bytes the
//! function wrote, the rest is its argument:
//!
//! | byte | edit |
//! |---|---|
//! | 0 | replace them with the rest |
//! | 1 | truncate them to the length in the next two bytes (LE), modulo their length + 1 |
//! | 2 | overwrite from the offset in the next two bytes (LE) with the bytes after it |
//! | 3 | append the rest |
//! | 4 | fail the call: a guest error with the rest as its message |
//! | other | keep them |
//!
//! A call with no edit left keeps its output.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sluice_sdk::abi::NativeFunction;

use crate::runtime::{PluginRuntime, PluginVersion};

/// The edits of the calls to come.
static EDITS: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());

/// Sets the edits of the calls to come, dropping any left.
pub(super) fn script(edits: impl IntoIterator<Item = Vec<u8>>) {
    let mut queue = EDITS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    queue.clear();
    queue.extend(edits);
}

/// Runs `call` and applies the next edit to what it appended to `output`.
fn edited(
    call: fn(&[u8], &mut Vec<u8>) -> Result<(), String>,
    input: &[u8],
    output: &mut Vec<u8>,
) -> Result<(), String> {
    let start = output.len();
    call(input, output)?;
    let edit = EDITS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop_front();
    let Some((&op, rest)) = edit.as_deref().and_then(<[u8]>::split_first) else { return Ok(()) };
    let two = |bytes: &[u8]| {
        usize::from(u16::from_le_bytes([bytes.first().copied().unwrap_or(0), bytes.get(1).copied().unwrap_or(0)]))
    };
    let written = output.len() - start;
    match op {
        0 => {
            output.truncate(start);
            output.extend_from_slice(rest);
        }
        1 => output.truncate(start + two(rest) % (written + 1)),
        2 => {
            let at = start + two(rest) % (written + 1);
            for (i, &byte) in rest.get(2..).unwrap_or_default().iter().enumerate() {
                match output.get_mut(at + i) {
                    Some(old) => *old = byte,
                    None => output.push(byte),
                }
            }
        }
        3 => output.extend_from_slice(rest),
        4 => return Err(String::from_utf8_lossy(rest).into_owned()),
        _ => {}
    }
    Ok(())
}

/// `f`, with its output edited by the script.
macro_rules! scripted {
    ($f:path) => {
        NativeFunction { call: |input, output| edited($f.call, input, output), ..$f }
    };
}

/// Every function of the plugin.
pub(super) const FUNCTIONS: [NativeFunction; 18] = [
    scripted!(__sluice_split_words),
    scripted!(__sluice_sum),
    scripted!(__sluice_subtract),
    scripted!(__sluice_to_upper),
    scripted!(__sluice_non_empty),
    scripted!(__sluice_parse_number),
    scripted!(__sluice_short),
    scripted!(__sluice_letters),
    scripted!(__sluice_lengths),
    scripted!(__sluice_sorted),
    scripted!(__sluice_top),
    scripted!(__sluice_top10),
    scripted!(__sluice_first_word),
    scripted!(__sluice_running_total),
    scripted!(__sluice_visits),
    scripted!(__sluice_parse),
    scripted!(__sluice_click_time),
    scripted!(__sluice_key_by_first_word),
];

/// A version of the plugin named `name`.
pub(super) fn version(name: &str) -> PluginVersion {
    PluginRuntime::native(name, &FUNCTIONS)
}

/// One `(word, 1)` per word.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> impl Iterator<Item = (&str, u64)> {
    line.split_whitespace().map(|word| (word, 1))
}

/// Adds two counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// The inverse of `sum`.
#[sluice_sdk::reduce]
pub fn subtract(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b)
}

/// The line in capitals.
#[sluice_sdk::map]
pub fn to_upper(line: &str) -> String {
    line.to_uppercase()
}

/// Keeps lines with more than blanks.
#[sluice_sdk::filter]
pub fn non_empty(line: &str) -> bool {
    !line.trim().is_empty()
}

/// The line as a number, or its failure: a fallible map.
#[sluice_sdk::map]
pub fn parse_number(line: &str) -> Result<u64, String> {
    line.trim().parse().map_err(|err| format!("`{line}`: {err}"))
}

/// Keeps short lines; fails on lines of blanks: a fallible filter.
#[sluice_sdk::filter]
pub fn short(line: &str) -> Result<bool, String> {
    if line.trim().is_empty() { Err("a blank line".into()) } else { Ok(line.len() < 8) }
}

/// The line's letters; fails on lines with none: a fallible flat_map.
#[sluice_sdk::flat_map]
pub fn letters(line: &str) -> Result<Vec<char>, String> {
    let letters: Vec<char> = line.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.is_empty() { Err("no letters".into()) } else { Ok(letters) }
}

/// The length of each line of a partition.
#[sluice_sdk::map_partitions]
pub fn lengths(lines: Vec<&str>) -> Vec<u64> {
    lines.iter().map(|line| line.len() as u64).collect()
}

/// The batch's lines, sorted.
#[sluice_sdk::transform]
pub fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort_unstable();
    lines
}

/// `top`'s parameters.
#[derive(Debug, Serialize, Deserialize, sluice_sdk::Describe)]
pub struct TopParams {
    /// How many counts to keep.
    pub k: u32,
    /// Leave out counts below this.
    pub min_count: Option<u64>,
}

/// The `k` largest counts: a function with parameters.
#[sluice_sdk::transform]
pub fn top(mut counts: Vec<(String, u64)>, params: &TopParams) -> Vec<(String, u64)> {
    counts.retain(|(_, count)| *count >= params.min_count.unwrap_or(0));
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(params.k as usize);
    counts
}

/// The ten largest counts.
#[sluice_sdk::transform]
pub fn top10(mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);
    counts
}

/// A line's first word, its key.
#[sluice_sdk::key_by]
pub fn first_word(line: &str) -> String {
    line.split_whitespace().next().unwrap_or_default().to_string()
}

/// A key's total over all batches.
#[sluice_sdk::update_state]
pub fn running_total(counts: Vec<u64>, total: Option<u64>) -> Option<u64> {
    Some(counts.iter().fold(total.unwrap_or(0), |a, b| a.wrapping_add(*b)))
}

/// Counts a key's values; when it times out, emits `(key, total)`.
#[sluice_sdk::map_with_state]
pub fn visits(user: String, clicks: Vec<u64>, total: Option<u64>) -> (Option<u64>, Vec<(String, u64)>) {
    let total = total.unwrap_or(0);
    if clicks.is_empty() {
        return (None, vec![(user, total)]);
    }
    (Some(total.wrapping_add(clicks.len() as u64)), Vec::new())
}

/// `user time` lines as `(user, time)`.
#[sluice_sdk::flat_map]
pub fn parse(line: &str) -> Option<(String, u64)> {
    let mut parts = line.split_whitespace();
    let user = parts.next()?;
    let time = parts.next()?.parse().ok()?;
    Some((user.to_string(), time))
}

/// A click's event time.
#[sluice_sdk::timestamp]
pub fn click_time(click: (String, u64)) -> u64 {
    click.1
}

/// `(first word, line)`.
#[sluice_sdk::map]
pub fn key_by_first_word(line: &str) -> (String, String) {
    (line.split_whitespace().next().unwrap_or_default().to_string(), line.to_string())
}
