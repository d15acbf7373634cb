//! `split_words` as in `wordcount`, except on lines holding a trigger word:
//! `panic!` panics (a trap), `loop!` never returns (a deadline), `oom!` allocates until the
//! memory cap stops it (a memory limit). Used to test that the engine contains each of them.

/// One `(word, 1)` per word, or misbehaviour on a trigger.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> Vec<(&str, u64)> {
    if line.contains("panic!") {
        panic!("asked to panic by line {line:?}");
    }
    if line.contains("loop!") {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if line.contains("oom!") {
        let mut hog: Vec<Vec<u8>> = Vec::new();
        loop {
            hog.push(vec![1; 16 << 20]);
            std::hint::black_box(&hog);
        }
    }
    line.split_whitespace().map(|word| (word, 1)).collect()
}

/// Adds two counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}
