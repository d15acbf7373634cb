//! Word count, the "hello world" of stream processing.
//!
//! `split_words` turns a line into `(word, 1)` pairs; `reduce_by_key` with `sum` adds them up.
//! `subtract` is the inverse of `sum`, for incremental windows.

/// One `(word, 1)` per whitespace-separated word.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> Vec<(&str, u64)> {
    line.split_whitespace().map(|word| (word, 1)).collect()
}

/// Adds two counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}
