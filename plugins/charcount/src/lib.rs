//! Character count. Its `split_words` yields `(char, u64)`, not `(String, u64)`, and it has no
//! `sum`: written over `wordcount.wasm` in a running word count, the engine must reject it and
//! keep the old version serving. Also a small example of non-string keys, and of enum and map
//! records (`shape`, `letters`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `(character, 1)` per non-whitespace character.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> Vec<(char, u64)> {
    line.chars().filter(|c| !c.is_whitespace()).map(|c| (c, 1)).collect()
}

/// Length of a line in characters.
#[sluice_sdk::map]
pub fn length(line: &str) -> u64 {
    line.chars().count() as u64
}

/// A line's shape: an enum of unit, newtype, tuple and struct variants.
#[derive(Debug, PartialEq, Serialize, Deserialize, sluice_sdk::Describe)]
pub enum Shape {
    /// Nothing but whitespace.
    Empty,
    /// One word.
    Word(String),
    /// Two words.
    Pair(String, String),
    /// More: how many, and the first.
    Many {
        /// Words in the line.
        count: u32,
        /// Its first word.
        first: String,
    },
}

/// The shape of a line.
#[sluice_sdk::map]
pub fn shape(line: &str) -> Shape {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Shape::Empty,
        [one] => Shape::Word(one.to_string()),
        [a, b] => Shape::Pair(a.to_string(), b.to_string()),
        [first, ..] => Shape::Many { count: words.len() as u32, first: first.to_string() },
    }
}

/// How often each character (whitespace aside) occurs in a line: a map record.
#[sluice_sdk::map]
pub fn letters(line: &str) -> BTreeMap<char, u32> {
    let mut counts = BTreeMap::new();
    for c in line.chars().filter(|c| !c.is_whitespace()) {
        *counts.entry(c).or_insert(0) += 1;
    }
    counts
}
