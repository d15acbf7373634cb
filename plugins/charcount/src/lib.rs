//! Character count. Its `split_words` yields `(char, u64)`, not `(String, u64)`, and it has no
//! `sum`: written over `wordcount.wasm` in a running word count, the engine must reject it and
//! keep the old version serving. Also a small example of non-string keys.

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
