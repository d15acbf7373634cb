//! Top-k and running totals over `(String, u64)` counts.
//!
//! - `top10` (transform): the ten largest counts of a whole batch, largest first (ties by key).
//! - `running_total` (update_state): a key's total over all batches so far.
//! - `lengths` (map_partitions): the byte length of each line of a partition.
//! - `top` (transform) and `at_least` (filter): the same with parameters from the stage
//!   (`params = { k = 3 }`, `params = { min = 2 }`), so one plugin serves stages that differ.

use serde::{Deserialize, Serialize};

/// `top`'s parameters.
#[derive(Debug, Serialize, Deserialize, sluice_sdk::Describe)]
pub struct TopParams {
    /// How many counts to keep.
    pub k: u32,
    /// Leave out counts below this (default: keep all).
    pub min_count: Option<u64>,
}

/// The `k` largest counts of the batch, largest first, ties by key; none below `min_count`.
#[sluice_sdk::transform]
pub fn top(mut counts: Vec<(String, u64)>, params: &TopParams) -> Vec<(String, u64)> {
    counts.retain(|(_, count)| *count >= params.min_count.unwrap_or(0));
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(params.k as usize);
    counts
}

/// `at_least`'s parameters.
#[derive(Debug, Serialize, Deserialize, sluice_sdk::Describe)]
pub struct MinCount {
    /// The smallest count kept.
    pub min: u64,
}

/// Keeps the counts of at least `min`.
#[sluice_sdk::filter]
pub fn at_least(pair: (&str, u64), params: &MinCount) -> bool {
    pair.1 >= params.min
}

/// The ten largest counts of the batch, largest first; ties broken by key.
#[sluice_sdk::transform]
pub fn top10(mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);
    counts
}

/// Adds this batch's counts of a key to its total so far.
#[sluice_sdk::update_state]
pub fn running_total(counts: Vec<u64>, total: Option<u64>) -> Option<u64> {
    Some(total.unwrap_or(0) + counts.iter().sum::<u64>())
}

/// The length in bytes of each line of a partition, computed a partition at a time.
#[sluice_sdk::map_partitions]
pub fn lengths(lines: Vec<&str>) -> Vec<u64> {
    lines.iter().map(|line| line.len() as u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_k_counts_of_at_least_min_count() {
        let counts = vec![("a".to_string(), 1), ("b".to_string(), 5), ("c".to_string(), 3)];
        let two = top(counts.clone(), &TopParams { k: 2, min_count: None });
        assert_eq!(two, [("b".to_string(), 5), ("c".to_string(), 3)]);
        assert_eq!(top(counts, &TopParams { k: 9, min_count: Some(3) }).len(), 2);
        assert!(at_least(("x", 2), &MinCount { min: 2 }) && !at_least(("x", 1), &MinCount { min: 2 }));
    }

    #[test]
    fn parameters_come_first_in_the_input_of_a_call() {
        let mut input = Vec::new();
        sluice_sdk::abi::encode_frame(&mut input, &MinCount { min: 3 }).unwrap();
        for pair in [("a", 2u64), ("b", 3)] {
            sluice_sdk::abi::encode_frame(&mut input, &pair).unwrap();
        }
        let mut keep = Vec::new();
        (__sluice_at_least.call)(&input, &mut keep).unwrap();
        assert_eq!(keep, [0, 1]);
        let described = (__sluice_at_least.params.expect("at_least takes parameters"))();
        assert_eq!(described.rust_name(), "MinCount");
    }
}
