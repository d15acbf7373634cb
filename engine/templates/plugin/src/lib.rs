//! {{name}}: a Sluice plugin. Each function below is an ordinary Rust function; its attribute
//! makes it callable from a pipeline stage (`plugin = "{{name}}"`, `function = "..."`), once
//! per partition of a batch. `cargo test` runs the unit tests natively; `sluice plugin build`
//! builds the `.wasm`; `sluice test pipeline.toml --input lines=input.txt --expect expected`
//! runs the sample pipeline on the sample input with the built plugin.

use serde::{Deserialize, Serialize};

/// map (one record in, one out): a line in lower case, punctuation turned into spaces.
#[sluice_sdk::map]
pub fn normalize(line: &str) -> String {
    line.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect()
}

/// flat_map (one record in, any number out): `(word, 1)` per word. Returning an iterator
/// instead of a `Vec` saves an allocation per line.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> impl Iterator<Item = (&str, u64)> {
    line.split_whitespace().map(|word| (word, 1))
}

/// filter (keep a record when true): words of three letters or more.
#[sluice_sdk::filter]
pub fn long_enough(pair: (&str, u64)) -> bool {
    pair.0.chars().count() >= 3
}

/// reduce (two values of a key in, one out; associative and commutative): adds counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}

/// A record of your own: derive serde's traits and `Describe` (which tells the host its shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sluice_sdk::Describe)]
pub struct Total {
    /// Occurrences so far.
    pub count: u64,
    /// Batches the word appeared in.
    pub batches: u32,
}

/// update_state (a key's new values of this batch and its state so far in, its new state
/// out; `None` would delete the key): a word's running total.
#[sluice_sdk::update_state]
pub fn running_total(counts: Vec<u64>, total: Option<Total>) -> Option<Total> {
    let mut total = total.unwrap_or(Total { count: 0, batches: 0 });
    if !counts.is_empty() {
        total.count += counts.iter().sum::<u64>();
        total.batches += 1;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowers_and_drops_punctuation() {
        assert_eq!(normalize("To be, or NOT!"), "to be  or not ");
    }

    #[test]
    fn split_words_pairs_each_word_with_one() {
        assert_eq!(split_words(" to  be ").collect::<Vec<_>>(), [("to", 1), ("be", 1)]);
    }

    #[test]
    fn long_enough_keeps_words_of_three_letters() {
        assert!(long_enough(("not", 1)));
        assert!(!long_enough(("to", 1)));
    }

    #[test]
    fn sum_adds() {
        assert_eq!(sum(2, 3), 5);
    }

    #[test]
    fn running_total_counts_occurrences_and_batches() {
        let first = running_total(vec![1, 2], None).unwrap();
        assert_eq!(first, Total { count: 3, batches: 1 });
        assert_eq!(running_total(vec![], Some(first.clone())), Some(first));
    }
}
