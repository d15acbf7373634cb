//! Top-k and running totals over `(String, u64)` counts.
//!
//! - `top10` (transform): the ten largest counts of a whole batch, largest first (ties by key).
//! - `running_total` (update_state): a key's total over all batches so far.
//! - `lengths` (map_partitions): the byte length of each line of a partition.

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
