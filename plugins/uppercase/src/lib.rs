//! A drop-in new version of `wordcount`: the same functions with the same types, but words are
//! counted in upper case. Swap it in while word count runs and the output changes case from the
//! first batch it serves, with no word lost or counted twice.
//!
//! It also exports `to_upper`, a map over lines, `non_empty`, a filter, and `key_by_first_word`, a
//! map that keys lines for joins.

/// One `(WORD, 1)` per whitespace-separated word, upper-cased.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace().map(|word| (word.to_uppercase(), 1)).collect()
}

/// Adds two counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}

/// The line in upper case.
#[sluice_sdk::map]
pub fn to_upper(line: &str) -> String {
    line.to_uppercase()
}

/// Keeps lines with something other than whitespace.
#[sluice_sdk::filter]
pub fn non_empty(line: &str) -> bool {
    !line.trim().is_empty()
}

/// `(first word, rest of the line)`: keys a line by its first word, for joins.
#[sluice_sdk::map]
pub fn key_by_first_word(line: &str) -> (String, String) {
    let line = line.trim();
    match line.split_once(' ') {
        Some((key, rest)) => (key.to_string(), rest.trim().to_string()),
        None => (line.to_string(), String::new()),
    }
}
